//! Where the `alioth` binary under test is.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// The `alioth` binary built next to this test (`cargo xtask test` builds it first), or `ALIOTH_BIN`.
pub fn alioth_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ALIOTH_BIN") {
        return Ok(p.into());
    }
    // target/<profile>/deps/<test> -> target/<profile>/alioth
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("alioth"))
        .context("locate target dir")?;
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build -p alioth) or set ALIOTH_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

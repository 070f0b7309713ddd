//! The agent's pins on bpffs outside of a running agent: removing them (`--reset`).

use std::path::Path;

use anyhow::{Context, Result};

use super::{PINNED_MAPS, STAGING};
use crate::dataplane::attach;
use crate::dataplane::batch;

/// Detaches every pinned link and removes the agent's pins from `dir` (`alioth agent --reset`).
pub fn remove_pins(dir: &Path) -> Result<()> {
    let [xdp_links, tc_links] = attach::pin_dirs(dir);
    for sub in [xdp_links, tc_links, dir.join(STAGING)] {
        if sub.exists() {
            for entry in std::fs::read_dir(&sub)? {
                let path = entry?.path();
                // Detached at once: with the XDP link gone first, the TC link would answer
                // alone until the kernel got round to releasing it.
                if let Err(e) = batch::detach_pinned_link(&path) {
                    tracing::warn!(pin = %path.display(), "detach: {e}");
                }
                std::fs::remove_file(&path)?;
            }
            std::fs::remove_dir(&sub)?;
        }
    }
    for m in PINNED_MAPS {
        let p = dir.join(m);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("remove {}", p.display()))?;
        }
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

/// Removes the maps a load pinned in `dir`'s staging directory and never committed.
pub fn remove_staging(dir: &Path) -> Result<()> {
    let staging = dir.join(STAGING);
    if staging.exists() {
        for entry in std::fs::read_dir(&staging)? {
            let path = entry?.path();
            std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
        }
    }
    Ok(())
}

//! The agent's pins on bpffs outside of a running agent: removing them (`--reset`), and the labs'
//! pinned helper programs.

use std::path::Path;

use anyhow::{Context, Result};
use aya::programs::links::FdLink;
use aya::programs::{xdp::XdpLinkId, Xdp, XdpMode};
use aya::Ebpf;

use super::{named_program, PINNED_MAPS, STAGING};
use crate::dataplane::attach;
use crate::dataplane::batch;
use crate::dataplane::object::XDP_OBJECT;

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

/// Attaches `program` (a lab helper: pass-through or sink) to `iface` (native mode) and pins the
/// link at `pin`, so it stays attached after this process exits; removing the pin (or the
/// interface) detaches it.
pub fn attach_pinned(program: &str, iface: &str, pin: &Path) -> Result<()> {
    let mut ebpf = Ebpf::load(XDP_OBJECT).context("load the XDP object")?;
    let prog = named_program(&mut ebpf, program)?;
    prog.load()?;
    let id = prog
        .attach(iface, XdpMode::Driver)
        .with_context(|| format!("attach {program} to {iface}"))?;
    if let Some(dir) = pin.parent() {
        crate::dataplane::bpffs::ensure(pin, true)?;
        std::fs::create_dir_all(dir)?;
    }
    pin_link(prog, id, pin).map(drop)
}

/// Takes link `id` from `prog` and pins it at `pin`, so it outlives this process.
fn pin_link(prog: &mut Xdp, id: XdpLinkId, pin: &Path) -> Result<FdLink> {
    let fd = FdLink::try_from(prog.take_link(id)?).context("the kernel attached XDP without a bpf_link")?;
    let pinned = fd
        .pin(pin)
        .with_context(|| format!("pin the link at {}", pin.display()))?;
    Ok(pinned.into())
}

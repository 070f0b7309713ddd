//! The labs' pinned helper programs (`alioth xdp-pass`), from the lab object.

use std::path::Path;

use anyhow::{Context, Result};
use aya::programs::links::FdLink;
use aya::programs::{xdp::XdpLinkId, Xdp, XdpMode};
use aya::Ebpf;

use super::named_program;

/// Attaches `program` of the lab object (a lab helper: pass-through or sink) to `iface` (native mode) and pins the
/// link at `pin`, so it stays attached after this process exits; removing the pin (or the
/// interface) detaches it.
pub fn attach_pinned(program: &str, iface: &str, pin: &Path) -> Result<()> {
    let mut ebpf = Ebpf::load(crate::dataplane::object::lab_object()?).context("load the lab object")?;
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

impl super::Dataplane {
    /// Sets what the programs report to a monitor (the benchmarks measure what it costs).
    pub fn set_monitor(&mut self, config: alioth_common::monitor::Config) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(alioth_common::monitor::MONITOR)
            .context("no MONITOR map")?;
        super::monitor::set_config(&mut aya::maps::PerCpuArray::try_from(map)?, config)
    }

    /// The monitor's ring, taken once (a benchmark drains it as `alioth monitor` would).
    pub fn take_monitor_events(&mut self) -> Result<aya::maps::RingBuf<aya::maps::MapData>> {
        let map = self
            .ebpf
            .take_map(alioth_common::monitor::MONITOR_EVENTS)
            .context("no MONITOR_EVENTS map")?;
        Ok(aya::maps::RingBuf::try_from(map)?)
    }
}

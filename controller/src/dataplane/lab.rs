//! The labs' pinned helper programs (`alioth xdp-pass`), from the lab object.

use std::path::Path;

use anyhow::{Context, Result};
use aya::programs::links::FdLink;
use aya::programs::tc::TcAttachType;
use aya::programs::{SchedClassifier, XdpMode};
use aya::Ebpf;

use super::named_program;
use crate::dataplane::object::SINK_PROGRAM;

/// Attaches `program` of the lab object (a lab helper: the XDP pass-through in native mode, or the
/// sink on TC ingress) to `iface` and pins the link at `pin`, so it stays attached after this
/// process exits; removing the pin (or the interface) detaches it.
pub fn attach_pinned(program: &str, iface: &str, pin: &Path) -> Result<()> {
    let mut ebpf = Ebpf::load(crate::dataplane::object::lab_object()?).context("load the lab object")?;
    if let Some(dir) = pin.parent() {
        crate::dataplane::bpffs::ensure(pin, true)?;
        std::fs::create_dir_all(dir)?;
    }
    let link = if program == SINK_PROGRAM {
        let prog: &mut SchedClassifier = super::attach::named(&mut ebpf, program)?;
        prog.load()?;
        let id = prog
            .attach(iface, TcAttachType::Ingress)
            .with_context(|| format!("attach {program} to TC ingress of {iface}"))?;
        FdLink::try_from(prog.take_link(id)?).context("TC attached without a bpf_link (tcx)")?
    } else {
        let prog = named_program(&mut ebpf, program)?;
        prog.load()?;
        let id = prog
            .attach(iface, XdpMode::Driver)
            .with_context(|| format!("attach {program} to {iface}"))?;
        FdLink::try_from(prog.take_link(id)?).context("the kernel attached XDP without a bpf_link")?
    };
    link.pin(pin)
        .with_context(|| format!("pin the link at {}", pin.display()))?;
    Ok(())
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

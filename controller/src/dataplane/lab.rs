//! The labs' pinned helper programs (`alioth xdp-pass`), from the lab object.

use std::path::Path;

use anyhow::{Context, Result};
use aya::programs::links::FdLink;
use aya::programs::tc::TcAttachType;
use aya::programs::{SchedClassifier, XdpMode};
use aya::Ebpf;

use super::named_program;
use crate::dataplane::object::{lab_object, FORWARD_PEER_GLOBAL, FORWARD_PROGRAM, FORWARD_TO_GLOBAL, SINK_PROGRAM};

/// Attaches `program` of the lab object (a lab helper: the XDP pass-through in native mode, or the
/// sink on TC ingress) to `iface` and pins the link at `pin`, so it stays attached after this
/// process exits; removing the pin (or the interface) detaches it.
pub fn attach_pinned(program: &str, iface: &str, pin: &Path) -> Result<()> {
    let mut ebpf = Ebpf::load(lab_object()?).context("load the lab object")?;
    let link = if program == SINK_PROGRAM {
        tc_ingress(&mut ebpf, program, iface)?
    } else {
        let prog = named_program(&mut ebpf, program)?;
        prog.load()?;
        let id = prog
            .attach(iface, XdpMode::Driver)
            .with_context(|| format!("attach {program} to {iface}"))?;
        FdLink::try_from(prog.take_link(id)?).context("the kernel attached XDP without a bpf_link")?
    };
    pin_link(link, pin)
}

/// Attaches the benchmarks' bare forwarder to TC ingress of `iface`, sending every frame to
/// interface `to` (into its peer with `peer`), and pins the link at `pin` (as `attach_pinned`).
pub fn attach_forward(iface: &str, to: &str, peer: bool, pin: &Path) -> Result<()> {
    let to = crate::net::interfaces::ifindex(to).with_context(|| format!("no interface {to}"))?;
    let peer = u32::from(peer);
    let mut loader = aya::EbpfLoader::new();
    loader.override_global(FORWARD_TO_GLOBAL, &to, true);
    loader.override_global(FORWARD_PEER_GLOBAL, &peer, true);
    let mut ebpf = loader.load(lab_object()?).context("load the lab object")?;
    let link = tc_ingress(&mut ebpf, FORWARD_PROGRAM, iface)?;
    pin_link(link, pin)
}

fn tc_ingress(ebpf: &mut Ebpf, program: &str, iface: &str) -> Result<FdLink> {
    let prog: &mut SchedClassifier = super::attach::named(ebpf, program)?;
    prog.load()?;
    let id = prog
        .attach(iface, TcAttachType::Ingress)
        .with_context(|| format!("attach {program} to TC ingress of {iface}"))?;
    FdLink::try_from(prog.take_link(id)?).context("TC attached without a bpf_link (tcx)")
}

fn pin_link(link: FdLink, pin: &Path) -> Result<()> {
    if let Some(dir) = pin.parent() {
        crate::dataplane::bpffs::ensure(pin, true)?;
        std::fs::create_dir_all(dir)?;
    }
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

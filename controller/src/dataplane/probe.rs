//! The agent's side of echo probes (`alioth_common::probe`): the marker its probes carry, running
//! one through a port's program and sending what it produced, the ring of replies, and the maps as
//! the pipeline's tables (to say where a path breaks).

use alioth_common::maps::{DhcpEntry, Endpoint, EndpointKey, NextHop, Uplink};
use alioth_common::pipeline::Tables;
use alioth_common::probe;
use anyhow::{anyhow, Context, Result};
use aya::maps::{Array, MapData, RingBuf};

use super::object::PORT_TC_PROGRAM;
use super::Dataplane;

impl Dataplane {
    /// Picks this agent's probe marker: a random identifier no VM can rely on. The programs look
    /// for it only while probes are out (`arm_probes`): a guest that guessed it meanwhile can make
    /// the data plane hand nothing to the agent.
    pub(super) fn pick_probe_marker(&mut self) {
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        self.probe_marker = (random as u16).max(1);
    }

    /// Whether the programs take replies carrying the marker out of the path (while probes are
    /// out) or not.
    pub fn arm_probes(&mut self, armed: bool) -> Result<()> {
        let marker = if armed { u32::from(self.probe_marker) } else { 0 };
        let map = self.ebpf.map_mut(probe::ECHO).ok_or_else(|| anyhow!("no ECHO map"))?;
        Array::<_, u32>::try_from(map)?.set(0, marker, 0)?;
        Ok(())
    }

    /// The identifier of this agent's probes.
    pub fn probe_marker(&self) -> u16 {
        self.probe_marker
    }

    /// The ring of probe replies; taken once, by the agent's echo task.
    pub fn take_probe_replies(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(probe::ECHO_REPLIES)
            .ok_or_else(|| anyhow!("no ECHO_REPLIES map"))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Runs `frame` through the port program (BPF_PROG_TEST_RUN) as if it came in on `ifindex`:
    /// the XDP action and the frame as the program left it. (Live frames, where the kernel would
    /// carry the verdict out itself, are refused by some kernels, this machine's among them:
    /// `transmit` sends what the program produced.)
    pub fn run_as_port(&mut self, ifindex: u32, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        super::test_run::xdp(self.program()?, frame, Some(ifindex))
    }

    /// `run_as_port` on the port's skb path (the TC program): the TC action and the frame.
    pub fn run_as_port_skb(&mut self, ifindex: u32, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        super::test_run::tc(self.tc_program(PORT_TC_PROGRAM)?, frame, ifindex, 0)
    }
}

/// Sends `frame` out of interface `ifindex` (an AF_PACKET socket): to the VM behind a port's
/// interface, or onto the underlay from the uplink.
pub fn transmit(ifindex: u32, frame: &[u8]) -> Result<()> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&frame[..6.min(frame.len())]);
    // SAFETY: `frame` and `to` are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            std::ptr::addr_of!(to).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("send on ifindex {ifindex}"));
    }
    Ok(())
}

/// The data plane's maps as the pipeline's tables (DHCP is never asked of a probe).
impl Tables for Dataplane {
    fn endpoint(&self, key: &EndpointKey) -> Option<Endpoint> {
        self.endpoints.get(key, 0).ok()
    }

    fn next_hop(&self, host_ip: &[u8; 4]) -> Option<NextHop> {
        self.next_hops.get(host_ip, 0).ok()
    }

    fn uplink(&self) -> Option<Uplink> {
        self.uplink.get(&0, 0).ok().filter(Uplink::is_configured)
    }

    fn dhcp(&self, _slot: u32) -> Option<&DhcpEntry> {
        None
    }

    fn allowed_source(&self, vni: u32, mac: &alioth_common::eth::Mac, ip: [u8; 4]) -> bool {
        super::allowed_source(&self.allowed_sources, vni, mac, ip)
    }

    fn route(&self, vni: u32, gateway: [u8; 4], dst: [u8; 4]) -> Option<alioth_common::maps::Route> {
        self.routes.lookup(vni, gateway, dst)
    }

    fn port_by_mac(&self, key: &alioth_common::maps::PortMacKey) -> Option<u32> {
        self.port_macs.get(key, 0).ok()
    }
}

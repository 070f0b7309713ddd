//! `alioth echo`'s probes leaving: an ICMP echo request made up as port `port_id` would send it,
//! its verdict read from the same pipeline over the live maps (to say where a path breaks before
//! anything is sent), then run through the port's own program, whose output (switched to another
//! port, or encapsulated) the agent sends where the verdict says.

use std::net::Ipv4Addr;

use alioth_common::maps::EndpointKey;
use alioth_common::pipeline::{self, Action, Tables, Verdict};
use alioth_common::Counter;

use super::Controller;
use crate::dataplane::frames::{self, L4};
use crate::dataplane::probe;
use crate::dataplane::test_run::{TC_ACT_REDIRECT, XDP_DROP, XDP_PASS, XDP_REDIRECT};
use crate::net::interfaces::ifname;

/// What became of a probe as it left.
#[derive(Debug, PartialEq, Eq)]
pub enum Launch {
    /// On its way, by `path`; sent at `sent_ns` (CLOCK_MONOTONIC, as the replies' arrival).
    Sent { path: String, sent_ns: u64 },
    /// The data plane drops it here: why.
    Broke(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no port {0} on this host")]
    NoPort(String),
    #[error("port {0} is not attached: its interface {1} does not exist here")]
    NotAttached(String, String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Controller {
    /// Sends probe `sequence` from port `port_id` to `dst` through the port's program.
    pub fn probe(&mut self, port_id: &str, dst: Ipv4Addr, sequence: u16) -> Result<Launch, ProbeError> {
        let port = self
            .state
            .ports()
            .get(port_id)
            .ok_or_else(|| ProbeError::NoPort(port_id.to_string()))?;
        let not_attached = || ProbeError::NotAttached(port_id.to_string(), port.iface.to_string());
        let ifindex = self.dp.attached_index(&port.iface).ok_or_else(not_attached)?;
        let entry = self.dp.programmed_entry(ifindex).ok_or_else(not_attached)?;
        let key = EndpointKey {
            vni: entry.vni,
            ip: dst.octets(),
        };
        let subnet = &self.state.subnets[&*port.fixed_ips[0].subnet_id];
        let holder = Tables::endpoint(&self.dp, &key).map(|e| e.mac);
        let dst_mac = frames::first_hop_mac(subnet.cidr.contains(dst), holder, entry.gateway_mac);
        let id = self.dp.probe_marker();
        let frame = frames::build(&port.mac, &dst_mac, port.primary_ip(), dst, L4::Echo { id, sequence });
        let verdict = pipeline::port_ingress(&mut frame.clone()[..], &entry, &self.dp);
        let path = match self.path(&verdict, &key) {
            Ok(path) => path,
            Err(broke) => return Ok(Launch::Broke(broke)),
        };
        // The port's own program decides and rewrites; what it would send, the agent sends. A
        // gateway's answer is a probe reply already, which the program hands over on the ring.
        let sent_ns = monotonic_ns();
        let (action, out) = self.dp.run_as_port(ifindex, &frame)?;
        match (verdict.action, action) {
            (Action::Tx, XDP_DROP) => {}
            (_, XDP_REDIRECT) => probe::transmit(verdict.ifindex, &out)?,
            // Left to the skb path (the way out runs no XDP): the port's TC program decides.
            (Action::Redirect | Action::Encap, XDP_PASS) => match self.dp.run_as_port_skb(ifindex, &frame)? {
                (TC_ACT_REDIRECT, out) => probe::transmit(verdict.ifindex, &out)?,
                (other, _) => {
                    return Ok(Launch::Broke(format!(
                        "the kernel's program disagrees: TC action {other}"
                    )))
                }
            },
            (_, other) => {
                return Ok(Launch::Broke(format!(
                    "the kernel's program disagrees: XDP action {other}"
                )))
            }
        }
        Ok(Launch::Sent { path, sent_ns })
    }

    /// Where `verdict` sends the probe to `key`, or where it breaks.
    fn path(&self, verdict: &Verdict, key: &EndpointKey) -> Result<String, String> {
        let dst = Ipv4Addr::from(key.ip);
        let host = || {
            Tables::endpoint(&self.dp, key).map_or_else(|| "?".to_string(), |e| Ipv4Addr::from(e.host_ip).to_string())
        };
        match (verdict.action, verdict.counter) {
            (Action::Tx, _) => Ok(format!("answered by the gateway {dst} in XDP")),
            (Action::Redirect, _) => Ok(format!(
                "switched to the local port on {}",
                ifname(verdict.ifindex).unwrap_or_default()
            )),
            (Action::Encap, _) => Ok(format!(
                "encapsulated to host {} in VNI {}",
                Ipv4Addr::from(verdict.outer.dst_ip),
                key.vni
            )),
            (_, Counter::DropUnknownDestination) => Err(format!("no endpoint for {dst} in VNI {}", key.vni)),
            (_, Counter::DropNoNextHop) => Err(format!("no next hop for host {}", host())),
            (_, Counter::DropNoUplink) => Err(format!("no uplink to reach host {}", host())),
            (_, Counter::DropNoInterface) => Err(format!("{dst} is a port of this host without its interface")),
            (_, Counter::DropNoRoute) => Err(format!("no route to {dst}: no router joins it to the port's subnet")),
            (_, counter) => Err(format!("dropped: {}", counter.name())),
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes the current time into `t`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

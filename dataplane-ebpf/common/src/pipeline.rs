//! What the port program does with one frame: the decision logic, independent of where it runs.

use crate::counters::Counter;
use crate::eth::{self, ETH_P_ARP, ETH_P_IPV4};
use crate::maps::{Endpoint, EndpointKey, PortEntry};
use crate::packet::Packet;
use crate::{arp, icmp, ipv4};

/// Lookups the pipeline needs: BPF maps in the kernel, plain collections in host tests.
pub trait Tables {
    fn endpoint(&self, key: &EndpointKey) -> Option<Endpoint>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Hand the frame to the kernel stack untouched.
    Pass,
    /// Send the (rewritten) frame back out of the interface it came in on.
    Tx,
    Drop,
}

/// The action and the counter slot that accounts for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    pub counter: Counter,
}

impl Verdict {
    const fn drop(counter: Counter) -> Self {
        Verdict {
            action: Action::Drop,
            counter,
        }
    }
    const fn pass() -> Self {
        Verdict {
            action: Action::Pass,
            counter: Counter::Pass,
        }
    }
}

/// Handles a frame sent by the VM behind `port`.
#[inline(always)]
pub fn port_ingress<P: Packet + ?Sized, T: Tables>(pkt: &mut P, port: &PortEntry, tables: &T) -> Verdict {
    match eth::ether_type(pkt) {
        Some(ETH_P_ARP) => arp_request(pkt, port, tables),
        Some(ETH_P_IPV4) => ipv4_packet(pkt, port, tables),
        _ => Verdict::pass(),
    }
}

#[inline(always)]
fn arp_request<P: Packet + ?Sized, T: Tables>(pkt: &mut P, port: &PortEntry, tables: &T) -> Verdict {
    let req = match arp::parse_request(pkt) {
        Ok(req) => req,
        Err(reason) => return Verdict::drop(reason),
    };
    // Duplicate address detection: the VM asks whether anybody else holds its own address.
    if req.target_ip == port.ip {
        return Verdict::drop(Counter::DropArpSelf);
    }
    let Some(target) = tables.endpoint(&EndpointKey {
        vni: port.vni,
        ip: req.target_ip,
    }) else {
        return Verdict::drop(Counter::DropArpUnknownTarget);
    };
    if target.mac == req.sender_mac {
        return Verdict::drop(Counter::DropArpSelf);
    }
    match arp::write_reply(pkt, &req, &target.mac) {
        Some(()) => Verdict {
            action: Action::Tx,
            counter: Counter::ArpReply,
        },
        None => Verdict::drop(Counter::DropArpMalformed),
    }
}

#[inline(always)]
fn ipv4_packet<P: Packet + ?Sized, T: Tables>(pkt: &mut P, port: &PortEntry, tables: &T) -> Verdict {
    let ip = match ipv4::parse(pkt) {
        Ok(ip) => ip,
        Err(reason) => return Verdict::drop(reason),
    };
    let Some(dst) = tables.endpoint(&EndpointKey {
        vni: port.vni,
        ip: ip.dst,
    }) else {
        return Verdict::pass();
    };
    if !dst.is_gateway() {
        return Verdict::pass();
    }
    if let Err(reason) = icmp::check_echo_request(pkt, &ip) {
        return Verdict::drop(reason);
    }
    match icmp::write_echo_reply(pkt, &dst.mac) {
        Some(()) => Verdict {
            action: Action::Tx,
            counter: Counter::IcmpEchoReply,
        },
        None => Verdict::drop(Counter::DropIpMalformed),
    }
}

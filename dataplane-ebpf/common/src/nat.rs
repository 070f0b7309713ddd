//! Elastic IPs: a public address on the uplink's segment translated 1:1 to a port's private one,
//! on the host of the port, as a Neutron DVR floating IP or an OVN `dnat_and_snat` entry is.
//!
//! The uplink answers ARP for its elastic IPs and hands frames to one to the NAT program
//! (`Action::Nat`), which translates the destination ([`inbound`]) and redirects the frame to the
//! port. A port's frame that its subnet routes nowhere (no route, or `route_kind::EXTERNAL`: out
//! of the VPC) goes to the same program, which translates the source when it has an elastic IP
//! ([`outbound`]); the kernel finds the next hop on the uplink by the host's routes. NAT runs on
//! the skb path alone, where the kernel's helpers keep every kind of checksum: XDP leaves those
//! frames to it.

use crate::checksum::Covers;
use crate::counters::Counter;
use crate::eth::{self, Mac, ETH_HLEN, ETH_P_ARP, ETH_P_IPV4};
use crate::ipv4::{self, Ipv4, PROTO_ICMP, PROTO_UDP};
use crate::maps::{endpoint_kind, route_kind, EndpointKey, PortEntry, Uplink};
use crate::offload::PROTO_TCP;
use crate::packet::Packet;
use crate::pipeline::{Action, Tables, Verdict};
use crate::{arp, icmp, snat};

/// Hash map of the elastic IPs (public address -> `EndpointKey` of the private one: the port's VNI
/// and address).
pub const ELASTIC_IPS: &str = "ELASTIC_IPS";
/// Hash map of the private addresses with an elastic IP (`EndpointKey` -> public address).
pub const ELASTIC_SOURCES: &str = "ELASTIC_SOURCES";
/// Entries of each.
pub const MAX_ELASTIC_IPS: u32 = 1 << 16;
/// Slot of the NAT program in `TC_TAILS`.
pub const TAIL_NAT: u32 = 1;

/// Offsets of the addresses in a frame's IPv4 header.
pub(crate) const SRC: usize = ETH_HLEN + 12;
const DST: usize = ETH_HLEN + 16;
const IP_CSUM: usize = ETH_HLEN + 10;

/// What the uplink does with a frame that is no overlay traffic: an ARP request for an elastic
/// IP is answered with the uplink's MAC; IPv4 to one (at the uplink's MAC) goes to the NAT
/// program. `None`: neither, the host's.
#[inline(always)]
pub fn on_uplink<P: Packet + ?Sized, T: Tables>(pkt: &mut P, up: &Uplink, tables: &T) -> Option<Verdict> {
    match eth::ether_type(pkt)? {
        ETH_P_ARP => {
            // The target is looked up from the frame: a copy out of the parsed request sits at an
            // odd stack offset, which the verifier refuses to load from.
            let target = u32::from_ne_bytes(*pkt.array::<4>(ETH_HLEN + 24)?);
            tables.elastic_ip(&target.to_ne_bytes())?;
            arp::parse_request(pkt).ok()?;
            Some(match arp::reply_in_place(pkt, &up.mac) {
                Some(()) => Verdict::new(Action::Tx, Counter::ArpElasticIp),
                None => Verdict::drop_with(Counter::DropArpMalformed),
            })
        }
        ETH_P_IPV4 => {
            let dst = pkt.array::<4>(DST)?;
            if tables.elastic_ip(dst).is_none() {
                // A reply to a SNAT flow: to the host's own address and one of its SNAT ports.
                let ip = ipv4::parse(pkt).ok()?;
                tables.snat_back(&snat::way_back(pkt, &ip, up)?.0)?;
            }
            let (dst_mac, _) = eth::macs(pkt)?;
            (dst_mac == up.mac).then_some(Verdict::new(Action::Nat, Counter::NatIn))
        }
        _ => None,
    }
}

/// Translates a frame from the uplink to an elastic IP into one to its port, from the port's
/// gateway: `Redirect` to the port, or a drop.
#[inline(always)]
pub fn inbound<P: Packet + ?Sized, T: Tables>(pkt: &mut P, tables: &T) -> Verdict {
    let ip = match ipv4::parse(pkt) {
        Ok(ip) => ip,
        Err(reason) => return Verdict::drop_with(reason),
    };
    // Not an `Option<SnatBack>`: a `None`'s undefined payload ends up stored, which the verifier
    // refuses (see `pipeline::Action`).
    let (key, back, field, snat) = match tables.elastic_ip(&ip.dst) {
        Some(key) => (key, snat::SnatBack::default(), snat::Field::NONE, false),
        None => match snat::inbound_target(pkt, &ip, tables) {
            Some((key, back, field)) => (key, back, field, true),
            None => return Verdict::drop_with(Counter::DropNatNoPort),
        },
    };
    let port = match tables.endpoint(&key) {
        Some(e) if e.kind == endpoint_kind::LOCAL_PORT && e.ifindex != 0 => e,
        _ => return Verdict::drop_with(Counter::DropNatNoPort),
    };
    // The VM sees the frame routed by its gateway (the uplink's MAC when its subnet has none).
    let from: Mac = match tables.port(port.ifindex) {
        Some(p) if p.has_gateway() => p.gateway_mac,
        _ => match tables.uplink() {
            Some(up) => up.mac,
            None => return Verdict::drop_with(Counter::DropNoUplink),
        },
    };
    if snat && snat::restore_port(pkt, &field, &back).is_none() {
        return Verdict::drop_with(Counter::DropIpMalformed);
    }
    match translate(pkt, &ip, DST, key.ip).and_then(|()| eth::set_macs(pkt, &port.mac, &from)) {
        Some(()) => Verdict::to(Action::Redirect, Counter::NatIn, port.ifindex),
        None => Verdict::drop_with(Counter::DropTtlExpired),
    }
}

/// Translates a frame from `port` to leave by the uplink from its elastic IP, or by SNAT (`snat`);
/// `Ok`: its destination, for the kernel to find the next hop of (the MACs are the caller's).
#[inline(always)]
pub fn outbound<P: Packet + ?Sized, T: Tables>(pkt: &mut P, port: &PortEntry, tables: &T) -> Result<[u8; 4], Counter> {
    let ip = ipv4::parse(pkt)?;
    let key = EndpointKey {
        vni: port.vni,
        ip: ip.src,
    };
    // The port program hands on every kind of route it does not deliver: a rule whose next hop
    // is not known stays a black hole.
    let route = tables.route(port.vni, port.gateway_ip, ip.dst);
    if route.is_some_and(|r| r.kind != route_kind::EXTERNAL) {
        return Err(Counter::DropNoRoute);
    }
    match tables.elastic_source(&key) {
        Some(public) => translate(pkt, &ip, SRC, public).ok_or(Counter::DropTtlExpired)?,
        // Without one: SNAT, where a rule sends the frame out of the VPC (not merely nowhere).
        None if route.is_some() => {
            let up = tables.uplink().ok_or(Counter::DropNoUplink)?;
            snat::outbound(pkt, &ip, port, &up, tables)?;
        }
        None => return Err(Counter::DropNoRoute),
    }
    Ok(ip.dst)
}

/// Rewrites the address at `at` (`SRC` or `DST`) to `to`, with every checksum that covers it, and
/// takes one off the TTL: the host forwards the frame. For an ICMP error, the address it quotes
/// too. `None`: the TTL is spent, or the header is cut short.
#[inline(always)]
pub(crate) fn translate<P: Packet + ?Sized>(pkt: &mut P, ip: &Ipv4, at: usize, to: [u8; 4]) -> Option<()> {
    let ttl = pkt.u8_at(ETH_HLEN + 8)?;
    if ttl <= 1 {
        return None;
    }
    let from = *pkt.array::<4>(at)?;
    let l4 = ETH_HLEN + ip.header_len;
    // A later fragment carries no transport header.
    if ip.frag & 0x1fff == 0 {
        match ip.proto {
            PROTO_TCP => pkt.replace_csum4(l4 + 16, from, to, Covers::Pseudo)?,
            PROTO_UDP => pkt.replace_csum4(l4 + 6, from, to, Covers::PseudoUdp)?,
            PROTO_ICMP => quoted(pkt, l4, at, from, to)?,
            _ => {}
        }
    }
    pkt.replace_csum4(IP_CSUM, from, to, Covers::Header)?;
    *pkt.array_mut::<4>(at)? = to;
    ipv4::set_ttl(pkt, ttl - 1, ip.proto)
}

/// In an ICMP error about a datagram, the quoted header's other address is the one translated:
/// the datagram went the other way. Its header checksum changes by as much as the address, the
/// other way round, so the ICMP checksum over both stays as it is. (The quoted transport checksum
/// is left: nobody verifies a quote's.)
#[inline(always)]
fn quoted<P: Packet + ?Sized>(pkt: &mut P, l4: usize, at: usize, from: [u8; 4], to: [u8; 4]) -> Option<()> {
    // The offset through memory LLVM does not follow: else it reuses a bounds check made on
    // another pointer to the same place (SNAT's look at the ports), which the verifier cannot.
    let l4 = core::hint::black_box(l4);
    if !icmp::is_error(pkt.array::<4>(l4)?[0]) {
        return Some(());
    }
    let inner = l4 + icmp::ICMP_HLEN;
    let quoted_at = inner + if at == SRC { 16 } else { 12 };
    // Only a quote whose address is the one translated: anything else is passed on unchanged.
    match pkt.array::<4>(quoted_at) {
        Some(a) if *a == from => {}
        _ => return Some(()),
    }
    pkt.replace_csum4(inner + 10, from, to, Covers::Header)?;
    *pkt.array_mut::<4>(quoted_at)? = to;
    Some(())
}

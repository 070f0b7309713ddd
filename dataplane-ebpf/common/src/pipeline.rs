//! What the port program does with one frame: the decision logic, independent of where it runs.

use crate::counters::Counter;
use crate::eth::{self, Mac, ETH_HLEN, ETH_P_ARP, ETH_P_IPV4};
use crate::ipv4::Ipv4;
use crate::maps::{
    endpoint_kind, route_kind, DhcpEntry, Endpoint, EndpointKey, NextHop, PortEntry, PortMacKey, Route, Uplink,
};
use crate::packet::{At, Packet};
use crate::vxlan::{self, Outer};
use crate::{arp, dhcp, icmp, ipv4, nat, offload};

/// Lookups the pipeline needs: BPF maps in the kernel, plain collections in host tests.
pub trait Tables {
    fn endpoint(&self, key: &EndpointKey) -> Option<Endpoint>;
    /// Underlay next hop toward a remote tunnel endpoint.
    fn next_hop(&self, host_ip: &[u8; 4]) -> Option<NextHop>;
    /// The uplink, when the agent configured one.
    fn uplink(&self) -> Option<Uplink>;
    /// What the DHCP server answers the port whose `dhcp_slot` is `slot` (never 0).
    fn dhcp(&self, slot: u32) -> Option<&DhcpEntry>;
    /// Whether the port with `mac` in `vni` may send from `ip` by one of its allowed address
    /// pairs (`maps::ALLOWED_SOURCES`).
    fn allowed_source(&self, _vni: u32, _mac: &Mac, _ip: [u8; 4]) -> bool {
        false
    }
    /// The route to `dst` of the subnet of `vni` whose gateway is `gateway` (`maps::ROUTES`).
    fn route(&self, _vni: u32, _gateway: [u8; 4], _dst: [u8; 4]) -> Option<Route> {
        None
    }
    /// The interface of the local port with `key`'s VNI and MAC (`maps::PORT_MACS`).
    fn port_by_mac(&self, _key: &PortMacKey) -> Option<u32> {
        None
    }
    /// Whether XDP may redirect a frame into `ifindex` (it runs XDP itself: `maps::REDIRECT`). An
    /// interface on the skb path alone takes frames from the sender's skb path; only XDP asks, and
    /// only for a routed frame (see `forward`).
    fn takes_xdp(&self, _ifindex: u32) -> bool {
        true
    }
    /// The elastic IP of the private address `key` (`nat::ELASTIC_SOURCES`).
    fn elastic_source(&self, _key: &EndpointKey) -> Option<[u8; 4]> {
        None
    }
    /// The private address elastic IP `ip` translates to (`nat::ELASTIC_IPS`).
    fn elastic_ip(&self, _ip: &[u8; 4]) -> Option<EndpointKey> {
        None
    }
    /// The programmed port at `ifindex` (`maps::PORTS`).
    fn port(&self, _ifindex: u32) -> Option<PortEntry> {
        None
    }
    /// The host's port of a SNAT flow (`snat::SNAT_FLOWS`).
    fn snat_port(&self, _key: &crate::snat::SnatKey) -> Option<u16> {
        None
    }
    /// Claims the host's `port` for flow `key` if `way_back` is free (`snat::SNAT_BACK`), and
    /// remembers both ways.
    fn snat_claim(
        &self,
        _key: &crate::snat::SnatKey,
        _way_back: &crate::snat::SnatBackKey,
        _back: &crate::snat::SnatBack,
        _port: u16,
    ) -> bool {
        false
    }
    /// Where a reply to a SNAT flow goes.
    fn snat_back(&self, _key: &crate::snat::SnatBackKey) -> Option<crate::snat::SnatBack> {
        None
    }

    /// Where forwarded traffic to `key` goes. The kernel answers from a per-CPU cache in front of
    /// the two lookups below (two hash lookups were most of the cost of an encapsulation).
    #[inline(always)]
    fn destination(&self, key: &EndpointKey) -> Option<Destination> {
        look_up_destination(self, key)
    }
}

/// `Tables::destination` from the endpoint and next-hop lookups (what a cache falls back to).
#[inline(always)]
pub fn look_up_destination<T: Tables + ?Sized>(tables: &T, key: &EndpointKey) -> Option<Destination> {
    let endpoint = tables.endpoint(key)?;
    let hop = match endpoint.kind {
        endpoint_kind::REMOTE_PORT => tables.next_hop(&endpoint.host_ip).unwrap_or_default(),
        _ => NextHop::default(),
    };
    Some(Destination { endpoint, hop })
}

/// An endpoint traffic is forwarded to, with the underlay next hop toward its host when it is a
/// remote port (all zero: not resolved yet, or not remote). Not an `Option`: see `Action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    pub endpoint: Endpoint,
    pub hop: NextHop,
}

impl Destination {
    /// The next hop, when it is resolved.
    pub fn next_hop(&self) -> Option<NextHop> {
        (self.hop.mac != [0; 6]).then_some(self.hop)
    }
}

/// What to do with the frame. A plain enum: enums with payloads leave undefined bytes that LLVM
/// copies through dead registers, which the verifier refuses; the operands live in `Verdict`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Hand the frame to the kernel stack untouched.
    Pass,
    /// Send the (rewritten) frame back out of the interface it came in on.
    Tx,
    Drop,
    /// Send the frame out of `Verdict::ifindex` (a local port).
    Redirect,
    /// Prepend `Verdict::outer` (`vxlan::OUTER_LEN` bytes) and send the result out of the uplink
    /// `Verdict::ifindex`.
    Encap,
    /// Strip the outer headers and send the inner frame out of the port `Verdict::ifindex`.
    Decap,
    /// A request to the DHCP server: handed to the server's own program (`TAILS`), which answers
    /// it with [`dhcp_server`].
    Dhcp,
    /// To or from an elastic IP: handed to the NAT program on the skb path (`nat`).
    Nat,
}

/// The action, the counter slot that accounts for it, and the action's operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    pub counter: Counter,
    /// Target interface of `Redirect`, `Encap` and `Decap`; 0 otherwise.
    pub ifindex: u32,
    /// Outer headers of `Encap`; all zero otherwise.
    pub outer: Outer,
}

impl Verdict {
    pub const fn new(action: Action, counter: Counter) -> Self {
        Verdict {
            action,
            counter,
            ifindex: 0,
            outer: Outer::ZERO,
        }
    }
    pub const fn to(action: Action, counter: Counter, ifindex: u32) -> Self {
        Verdict {
            action,
            counter,
            ifindex,
            outer: Outer::ZERO,
        }
    }
    const fn drop(counter: Counter) -> Self {
        Verdict::new(Action::Drop, counter)
    }

    /// A drop, for a reason the kernel finds past the pipeline (a rate).
    pub const fn drop_with(counter: Counter) -> Self {
        Verdict::drop(counter)
    }
}

/// A frame on an interface that is not a programmed port: handed to the host, counted.
pub const fn unknown_port() -> Verdict {
    Verdict::new(Action::Pass, Counter::DropUnknownPort)
}

/// Handles a frame sent by the VM behind `port`, in XDP.
#[inline(always)]
pub fn port_ingress<P: Packet + ?Sized, T: Tables>(pkt: &mut P, port: &PortEntry, tables: &T) -> Verdict {
    port_ingress_with::<P, T, true>(pkt, port, tables)
}

/// [`port_ingress`] on the skb path (the TC program): for the frames XDP left to it (see
/// `offload`), whose checksum and segmentation the kernel finishes. Everything XDP answers itself
/// (ARP, ICMP to gateways, DHCP) never gets here.
#[inline(always)]
pub fn port_ingress_skb<P: Packet + ?Sized, T: Tables>(pkt: &mut P, port: &PortEntry, tables: &T) -> Verdict {
    port_frame::<P, T, false, true>(pkt, port, tables)
}

/// [`port_ingress`]; with `DHCP_SERVER` false, a request to the DHCP server is not answered but
/// handed on (`Action::Dhcp`): the port program leaves the server, most of what the verifier walks,
/// to a program of its own.
#[inline(always)]
pub fn port_ingress_with<P: Packet + ?Sized, T: Tables, const DHCP_SERVER: bool>(
    pkt: &mut P,
    port: &PortEntry,
    tables: &T,
) -> Verdict {
    port_frame::<P, T, DHCP_SERVER, false>(pkt, port, tables)
}

/// The port pipeline; `SKB`: running on the skb path, where offloaded frames are finished by the
/// kernel instead of being left to it.
#[inline(always)]
fn port_frame<P: Packet + ?Sized, T: Tables, const DHCP_SERVER: bool, const SKB: bool>(
    pkt: &mut P,
    port: &PortEntry,
    tables: &T,
) -> Verdict {
    let Some((dst_mac, src_mac)) = eth::macs(pkt) else {
        return Verdict::drop(Counter::DropIpMalformed);
    };
    // Anti-spoofing, first of all: a VM sends only with its own MAC.
    if src_mac != port.mac {
        return Verdict::drop(Counter::DropSpoofedMac);
    }
    match eth::ether_type(pkt) {
        Some(ETH_P_ARP) => arp_request(pkt, port, tables),
        Some(ETH_P_IPV4) => ipv4_packet::<P, T, DHCP_SERVER, SKB>(pkt, &dst_mac, port, tables),
        _ => Verdict::drop(Counter::DropUnsupported),
    }
}

/// True when `ip` is one of the addresses of the port with `port`'s MAC: its primary address, its
/// extra fixed IPs (`LOCAL_PORT` endpoints with its MAC), or one its allowed address pairs let it
/// send from.
#[inline(always)]
fn owns<T: Tables>(port: &PortEntry, ip: [u8; 4], tables: &T) -> bool {
    ip == port.ip || owns_other(port, ip, tables)
}

/// `owns` past the primary address. Each lookup is a function of its own in BPF: the verifier
/// walks it once per call, what follows sees one answer instead of a state per way to it, and
/// each needs little stack of its own beside the port program's.
#[inline(always)]
fn owns_other<T: Tables>(port: &PortEntry, ip: [u8; 4], tables: &T) -> bool {
    holds_fixed_ip(port, ip, tables) || holds_pair(port, ip, tables)
}

/// Whether `ip` is an extra fixed IP of the port (a `LOCAL_PORT` endpoint with its MAC).
#[inline(never)]
fn holds_fixed_ip<T: Tables>(port: &PortEntry, ip: [u8; 4], tables: &T) -> bool {
    tables
        .endpoint(&EndpointKey { vni: port.vni, ip })
        .is_some_and(|e| e.kind == endpoint_kind::LOCAL_PORT && e.mac == port.mac)
}

/// Whether one of the port's allowed address pairs lets it send from `ip`.
#[inline(never)]
fn holds_pair<T: Tables>(port: &PortEntry, ip: [u8; 4], tables: &T) -> bool {
    tables.allowed_source(port.vni, &port.mac, ip)
}

#[inline(always)]
fn arp_request<P: Packet + ?Sized, T: Tables>(pkt: &mut P, port: &PortEntry, tables: &T) -> Verdict {
    let req = match arp::parse_request(pkt) {
        Ok(req) => req,
        Err(reason) => return Verdict::drop(reason),
    };
    // The sender must be the port itself; 0.0.0.0 is an address probe (RFC 5227).
    if req.sender_mac != port.mac || (req.sender_ip != [0; 4] && !owns(port, req.sender_ip, tables)) {
        return Verdict::drop(Counter::DropSpoofedIp);
    }
    // Duplicate address detection: the VM asks whether anybody else holds its own address.
    if req.target_ip == port.ip {
        return Verdict::drop(Counter::DropArpSelf);
    }
    // The port's own gateway, the address asked for most, needs no hash lookup.
    let target_mac = if req.target_ip == port.gateway_ip && port.has_gateway() {
        port.gateway_mac
    } else {
        match tables.endpoint(&EndpointKey {
            vni: port.vni,
            ip: req.target_ip,
        }) {
            Some(target) => target.mac,
            None => return Verdict::drop(Counter::DropArpUnknownTarget),
        }
    };
    if target_mac == req.sender_mac {
        return Verdict::drop(Counter::DropArpSelf);
    }
    match arp::reply_in_place(pkt, &target_mac) {
        Some(()) => Verdict::new(Action::Tx, Counter::ArpReply),
        None => Verdict::drop(Counter::DropArpMalformed),
    }
}

#[inline(always)]
fn ipv4_packet<P: Packet + ?Sized, T: Tables, const DHCP_SERVER: bool, const SKB: bool>(
    pkt: &mut P,
    dst_mac: &Mac,
    port: &PortEntry,
    tables: &T,
) -> Verdict {
    let ip = match ipv4::parse(pkt) {
        Ok(ip) => ip,
        Err(reason) => return Verdict::drop(reason),
    };
    // UDP that is not a later fragment carries ports: DHCP is looked at before anything else.
    if ip.proto == ipv4::PROTO_UDP && ip.frag & 0x1fff == 0 {
        if ip.header_len != ipv4::IPV4_MIN_HLEN {
            return Verdict::drop(Counter::DropIpOptions);
        }
        let Some((src_port, dst_port)) = dhcp::udp_ports(pkt) else {
            return Verdict::drop(Counter::DropIpMalformed);
        };
        // No rogue DHCP server inside a VPC, whatever port it answers from: server traffic to a
        // client (port 67 to port 67 is a relay: looked at below), a BOOTREPLY to either DHCP
        // port, and anything to another host's client port.
        let to_dhcp = dst_port == dhcp::SERVER_PORT || dst_port == dhcp::CLIENT_PORT;
        if (src_port == dhcp::SERVER_PORT && dst_port != dhcp::SERVER_PORT)
            || (to_dhcp && pkt.u8_at(dhcp::BOOTP) == Some(dhcp::BOOTREPLY))
            || (dst_port == dhcp::CLIENT_PORT && ip.dst != port.ip)
        {
            return Verdict::drop(Counter::DropDhcpServer);
        }
        // To the DHCP server: consumed here whatever the source address (0.0.0.0 before a lease;
        // an address goal state took away when renewing, which gets the NAK that sends the
        // client back to DISCOVER), so never forwarded and never a spoofing risk.
        if dst_port == dhcp::SERVER_PORT {
            if !DHCP_SERVER {
                return Verdict::new(Action::Dhcp, Counter::Pass);
            }
            return dhcp_request(pkt, &ip, port, tables);
        }
    }
    if !owns(port, ip.src, tables) {
        return Verdict::drop(Counter::DropSpoofedIp);
    }
    let key = EndpointKey {
        vni: port.vni,
        ip: ip.dst,
    };
    // The port's own gateway needs no hash lookup (the subnet's GATEWAY endpoint says the same).
    // ICMP to the VPC's other gateways takes the plain lookup, the rest the cached one: then one
    // state per way reaches `gateway` and the verifier walks its checksum loop twice, not once per
    // outcome of the cache too.
    let gateway_mac = if ip.dst == port.gateway_ip && port.has_gateway() {
        port.gateway_mac
    } else if let Some(gw) = other_gateway(&ip, &key, tables) {
        gw.mac
    } else {
        // To the gateway's MAC: routed by the subnet's routes; else switched in the VPC.
        let (dst, routed) = if *dst_mac == port.gateway_mac && port.has_gateway() {
            let Some(r) = tables.route(port.vni, port.gateway_ip, ip.dst) else {
                return unrouted::<SKB>();
            };
            let found = match r.kind {
                route_kind::DIRECT => tables.destination(&EndpointKey { vni: r.vni, ip: ip.dst }),
                route_kind::VIA => tables.destination(&EndpointKey { vni: r.vni, ip: r.ip }),
                route_kind::TUNNEL => Some(gateway_destination(&r, tables)),
                _ => return unrouted::<SKB>(),
            };
            let Some(dst) = found else {
                return Verdict::drop(Counter::DropUnknownDestination);
            };
            let routed = Routed {
                router_mac: r.router_mac,
                vni: r.vni,
            };
            (dst, routed)
        } else {
            match tables.destination(&key) {
                Some(dst) => (dst, Routed::SWITCHED),
                None => return Verdict::drop(Counter::DropUnknownDestination),
            }
        };
        if dst.endpoint.is_gateway() {
            // Not ICMP: the gateway answers echo requests only.
            return Verdict::drop(Counter::DropGatewayUnhandled);
        }
        return forward::<P, T, SKB>(pkt, &ip, dst_mac, port, &dst, &routed, tables);
    };
    gateway(pkt, &ip, &gateway_mac)
}

/// A frame its subnet routes nowhere (no route, a black hole) or out of the VPC
/// (`route_kind::EXTERNAL`): the NAT program's, which sends what leaves the VPC on from the
/// source's elastic IP, or by SNAT (`snat`), and drops the rest as `drop_no_route` (`nat`). It runs on the skb
/// path, where XDP leaves the frame. (One arm for all three: an arm of its own for `EXTERNAL`
/// made LLVM store an undefined register in the port program, which the verifier refuses.)
#[inline(always)]
const fn unrouted<const SKB: bool>() -> Verdict {
    match SKB {
        true => Verdict::new(Action::Nat, Counter::DropNoRoute),
        false => Verdict::new(Action::Pass, Counter::SkbPath),
    }
}

/// The gateway an ICMP packet is addressed to, if it is one.
#[inline(always)]
fn other_gateway<T: Tables>(ip: &Ipv4, key: &EndpointKey, tables: &T) -> Option<Endpoint> {
    if ip.proto != ipv4::PROTO_ICMP {
        return None;
    }
    tables.endpoint(key).filter(Endpoint::is_gateway)
}

/// How a frame to a destination is rewritten: routed (from the router's MAC, into the
/// destination's VNI) or switched as it is. Not an `Option`: see `Action`.
#[derive(Clone, Copy)]
struct Routed {
    /// All zero: switched.
    router_mac: Mac,
    vni: u32,
}

impl Routed {
    const SWITCHED: Routed = Routed {
        router_mac: [0; 6],
        vni: 0,
    };
}

/// A gateway a route tunnels to, as the remote port the encapsulation goes to.
#[inline(always)]
fn gateway_destination<T: Tables>(r: &Route, tables: &T) -> Destination {
    let endpoint = Endpoint {
        mac: r.mac,
        kind: endpoint_kind::REMOTE_PORT,
        _pad: 0,
        ifindex: 0,
        host_ip: r.ip,
    };
    Destination {
        endpoint,
        hop: tables.next_hop(&r.ip).unwrap_or_default(),
    }
}

/// A frame for another port of the VPC (or of a VPC a router joins): switched or routed to a local
/// one, or encapsulated.
#[inline(always)]
fn forward<P: Packet + ?Sized, T: Tables, const SKB: bool>(
    pkt: &mut P,
    ip: &Ipv4,
    dst_mac: &Mac,
    port: &PortEntry,
    to: &Destination,
    routed: &Routed,
    tables: &T,
) -> Verdict {
    // Before anything is rewritten: the skb path runs this pipeline again on the frame as sent.
    // (A frame whose way out runs no XDP goes there too: XDP's `finish` finds that out by the
    // redirect itself, before it moves the head, but a routed frame is rewritten before then.)
    let finished = !offload::needs_skb(pkt, ip);
    let routed_off_xdp = || routed.router_mac != [0; 6] && !tables.takes_xdp(target(to, tables));
    if !SKB && (!finished || routed_off_xdp()) {
        return Verdict::new(Action::Pass, Counter::SkbPath);
    }
    // A finished checksum: never a GSO super-frame in disguise, so the frame is the datagram (an
    // answer to one left to the device would carry the skb's "finish this checksum" on to a tap).
    if finished && to.endpoint.kind == endpoint_kind::REMOTE_PORT {
        if let Some(v) = too_big(pkt, ip, port, tables) {
            return v;
        }
    }
    let dst = &to.endpoint;
    // Switched (to the MAC that owns the address), or routed.
    let vni = if routed.router_mac == [0; 6] {
        if *dst_mac != dst.mac {
            return Verdict::drop(Counter::DropUnknownDestination);
        }
        port.vni
    } else {
        if route(pkt, &routed.router_mac, &dst.mac).is_none() {
            return Verdict::drop(Counter::DropTtlExpired);
        }
        routed.vni
    };
    match dst.kind {
        endpoint_kind::LOCAL_PORT if dst.ifindex != 0 => {
            Verdict::to(Action::Redirect, Counter::ForwardLocal, dst.ifindex)
        }
        endpoint_kind::LOCAL_PORT => Verdict::drop(Counter::DropNoInterface),
        _ => encap(pkt, ip, vni, to, tables),
    }
}

/// The interface a frame for `to` leaves by: the local port's, or the uplink's (0: none).
#[inline(always)]
fn target<T: Tables>(to: &Destination, tables: &T) -> u32 {
    match to.endpoint.kind {
        endpoint_kind::LOCAL_PORT => to.endpoint.ifindex,
        _ => tables.uplink().map_or(0, |u| u.ifindex),
    }
}

/// A datagram with DF for the overlay that will not fit the uplink once encapsulated: answered with
/// ICMP "fragmentation needed" from the port's gateway (dropped without one). `None`: it fits, or
/// it is not for here to judge.
#[inline(always)]
fn too_big<P: Packet + ?Sized, T: Tables>(pkt: &mut P, ip: &Ipv4, port: &PortEntry, tables: &T) -> Option<Verdict> {
    let up = tables.uplink()?;
    let fits = (up.mtu as usize).saturating_sub(vxlan::OUTER_IP_OVERHEAD);
    // Only a datagram with DF whose frame is its IPv4 length: anything else goes on, to be judged
    // where it is encapsulated.
    const DF: u16 = 0x4000;
    if pkt.len() <= fits || ip.total_len > ipv4::MAX_IP_LEN || ip.frag & DF == 0 || pkt.len() != ETH_HLEN + ip.total_len
    {
        return None;
    }
    if ip.header_len != ipv4::IPV4_MIN_HLEN || !port.has_gateway() {
        return Some(Verdict::drop(Counter::DropOverlayTooBig));
    }
    let mtu = fits.saturating_sub(ETH_HLEN) as u16;
    Some(
        match icmp::write_frag_needed(pkt, &port.gateway_mac, &port.gateway_ip, mtu) {
            Some(()) => Verdict::new(Action::Tx, Counter::IcmpFragNeeded),
            None => Verdict::drop(Counter::DropOverlayTooBig),
        },
    )
}

/// The DHCP server's program: answers the request the port program handed on (`Action::Dhcp`),
/// which it has checked as far as that decision.
#[inline(always)]
pub fn dhcp_server<P: Packet + ?Sized, T: Tables>(pkt: &mut P, port: &PortEntry, tables: &T) -> Verdict {
    let ip = match ipv4::parse(pkt) {
        Ok(ip) => ip,
        Err(reason) => return Verdict::drop(reason),
    };
    // Checked again what the port program checked, so that the verifier knows the offsets too.
    if ip.proto != ipv4::PROTO_UDP || ip.frag & 0x1fff != 0 || ip.header_len != ipv4::IPV4_MIN_HLEN {
        return Verdict::drop(Counter::DropDhcpMalformed);
    }
    dhcp_request(pkt, &ip, port, tables)
}

/// Answers a DHCP request from the VM behind `port` (turning the frame into the reply), or
/// consumes it.
#[inline(always)]
fn dhcp_request<P: Packet + ?Sized, T: Tables>(pkt: &mut P, ip: &Ipv4, port: &PortEntry, tables: &T) -> Verdict {
    if port.dhcp_slot == 0 {
        return Verdict::drop(Counter::DropDhcpDisabled);
    }
    let Some(entry) = tables.dhcp(port.dhcp_slot) else {
        return Verdict::drop(Counter::DropDhcpDisabled);
    };
    // To us (broadcast, or unicast to our server address when renewing); never to another server.
    if ip.dst != [255; 4] && ip.dst != entry.server_ip {
        return Verdict::drop(Counter::DropDhcpOtherServer);
    }
    let req = match dhcp::parse(pkt, ip, &port.mac, &port.ip) {
        Ok(req) => req,
        Err(reason) => return Verdict::drop(reason),
    };
    let (reply, counter) = dhcp::decide(&req, entry);
    if reply == 0 {
        return Verdict::drop(counter);
    }
    let unrequested = dhcp::unrequested_words(pkt, &req, entry);
    match dhcp::write_reply(pkt, &req, entry, &port.mac, reply, unrequested) {
        Ok(()) => Verdict::new(Action::Tx, counter),
        Err(reason) => Verdict::drop(reason),
    }
}

/// Rewrites a frame the VM sent to its gateway MAC as the router forwarding it: MACs and TTL.
/// `None` when the TTL is spent (or the header is cut short).
#[inline(always)]
fn route<P: Packet + ?Sized>(pkt: &mut P, router_mac: &Mac, dst_mac: &Mac) -> Option<()> {
    let h = pkt.array::<2>(ETH_HLEN + 8)?;
    let (ttl, proto) = (h[0], h[1]);
    if ttl <= 1 {
        return None;
    }
    eth::set_macs(pkt, dst_mac, router_mac)?;
    ipv4::set_ttl(pkt, ttl - 1, proto)
}

#[inline(always)]
fn encap<P: Packet + ?Sized, T: Tables>(pkt: &P, ip: &Ipv4, vni: u32, to: &Destination, tables: &T) -> Verdict {
    let Some(up) = tables.uplink() else {
        return Verdict::drop(Counter::DropNoUplink);
    };
    let Some(hop) = to.next_hop() else {
        return Verdict::drop(Counter::DropNoNextHop);
    };
    let dst = &to.endpoint;
    // A GSO super-frame is checked by the segments it becomes.
    let wire_len = match pkt.gso_size() {
        0 => pkt.len(),
        gso => match offload::segment_len(pkt, ip, gso) {
            Some(len) => len,
            None => return Verdict::drop(Counter::DropOverlayTooBig),
        },
    };
    if wire_len + vxlan::OUTER_IP_OVERHEAD > up.mtu as usize {
        return Verdict::drop(Counter::DropOverlayTooBig);
    }
    let outer = Outer {
        src_mac: up.mac,
        dst_mac: hop.mac,
        src_ip: up.ip,
        dst_ip: dst.host_ip,
        src_port: vxlan::source_port(pkt, ip),
        dst_port: up.vxlan_port,
        vni,
    };
    Verdict {
        outer,
        ..Verdict::to(Action::Encap, Counter::Encap, up.ifindex)
    }
}

#[inline(always)]
fn gateway<P: Packet + ?Sized>(pkt: &mut P, ip: &Ipv4, gateway_mac: &Mac) -> Verdict {
    if let Err(reason) = icmp::check_echo_request(pkt, ip) {
        return Verdict::drop(reason);
    }
    match icmp::write_echo_reply(pkt, gateway_mac) {
        Some(()) => Verdict::new(Action::Tx, Counter::IcmpEchoReply),
        None => Verdict::drop(Counter::DropIpMalformed),
    }
}

/// Handles a frame that arrived on the uplink: VXLAN for a port on this host is decapsulated (the
/// caller strips `vxlan::OUTER_LEN` bytes); anything else is the host's and passes untouched.
#[inline(always)]
pub fn uplink_ingress<P: Packet + ?Sized, T: Tables>(pkt: &mut P, tables: &T) -> Verdict {
    uplink_frame::<P, T, false>(pkt, tables)
}

/// [`uplink_ingress`] on the skb path: the frames the uplink's XDP program left to it (an inner
/// checksum still to be finished, which a veth underlay passes on, or a GRO super-frame).
#[inline(always)]
pub fn uplink_ingress_skb<P: Packet + ?Sized, T: Tables>(pkt: &mut P, tables: &T) -> Verdict {
    uplink_frame::<P, T, true>(pkt, tables)
}

#[inline(always)]
fn uplink_frame<P: Packet + ?Sized, T: Tables, const SKB: bool>(pkt: &mut P, tables: &T) -> Verdict {
    let pass = Verdict::new(Action::Pass, Counter::UplinkPass);
    let Some(up) = tables.uplink() else {
        return pass;
    };
    let Some(vni) = vxlan::parse_outer(pkt, &up) else {
        // Elastic IPs: ARP answered here, the rest translated on the skb path.
        return match nat::on_uplink(pkt, &up, tables) {
            Some(v) if !SKB && v.action == Action::Nat => Verdict::new(Action::Pass, Counter::SkbPath),
            Some(v) => v,
            None => pass,
        };
    };
    let inner = At::new(pkt, vxlan::OUTER_LEN);
    if eth::ether_type(&inner) != Some(ETH_P_IPV4) {
        return pass;
    }
    let (Some((dst_mac, _)), Ok(ip)) = (eth::macs(&inner), ipv4::parse(&inner)) else {
        return Verdict::drop(Counter::DropIpMalformed);
    };
    let ifindex = match tables.destination(&EndpointKey { vni, ip: ip.dst }) {
        Some(Destination { endpoint: dst, .. }) => {
            // Only to a port of this host in that very VNI, at its own MAC: no leaking between VPCs.
            if dst.kind != endpoint_kind::LOCAL_PORT || dst.mac != dst_mac {
                return Verdict::drop(Counter::DropOverlayMisdirected);
            }
            dst.ifindex
        }
        // An address routed to a local port as its next hop (a router or NAT VM): by its MAC in
        // that VNI. Else not ours (maybe the host's own vxlan).
        None => match tables.port_by_mac(&PortMacKey {
            vni,
            mac: dst_mac,
            _pad: [0; 2],
        }) {
            Some(ifindex) => ifindex,
            None => return pass,
        },
    };
    if ifindex == 0 {
        return Verdict::drop(Counter::DropNoInterface);
    }
    if !SKB && offload::needs_skb(&inner, &ip) {
        return Verdict::new(Action::Pass, Counter::SkbPath);
    }
    Verdict::to(Action::Decap, Counter::Decap, ifindex)
}

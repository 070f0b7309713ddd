//! The vector port's subnet on a router: its routes (`ROUTES`) and the frames they route.

use alioth_common::maps::{route_key, route_kind, Endpoint, EndpointKey, Route, ROUTE_FIXED_BITS};
use alioth_common::pipeline::Action;
use alioth_common::vxlan::{self, Outer};
use alioth_common::Counter;

use super::{
    udp_from_port, Case, GW_IP, IFINDEX, PEER_MAC, REMOTE_HOST, REMOTE_HOST_MAC, UPLINK_IP, UPLINK_MAC, VM_IP, VNI,
};
use crate::frames::{self, Mac, Underlay};

/// Source MAC of routed frames: DPM's host DVR MAC.
pub const ROUTER_MAC: Mac = [0xfe, 0x16, 0x11, 0, 0, 0];
/// The gateway a rule tunnels 198.19.9.0/24 to (at `REMOTE_HOST`).
pub const GATEWAY_MAC: Mac = [0x02, 0, 0, 0, 0xee, 1];
/// A VPC the router joins (VNI 200): a port of it on the remote host.
pub const OTHER_VNI: u32 = 200;
pub const OTHER_VPC_VM_MAC: Mac = [0x02, 0, 0, 0, 5, 10];
pub const OTHER_VPC_VM_IP: [u8; 4] = [198, 18, 5, 10];

/// A `ROUTES` key of the vector subnet (VNI 100, gateway 198.18.0.1).
pub fn key(dst: [u8; 4], prefix: u32) -> (u32, [u8; 12]) {
    (ROUTE_FIXED_BITS + prefix, route_key(VNI, GW_IP, dst))
}

/// The vector subnet's routes: its own subnet and two others of its router (one in VPC 200),
/// and rules to a next-hop port, to a gateway and to nowhere.
pub fn routes() -> Vec<((u32, [u8; 12]), Route)> {
    let route = |kind, vni, ip, mac| Route {
        kind,
        vni,
        ip,
        mac,
        router_mac: ROUTER_MAC,
        ..Default::default()
    };
    let direct = |vni| route(route_kind::DIRECT, vni, [0; 4], [0; 6]);
    vec![
        (key([198, 18, 0, 0], 24), direct(VNI)),
        (key([198, 18, 1, 0], 24), direct(VNI)),
        (key([198, 18, 5, 0], 24), direct(OTHER_VNI)),
        (
            key([198, 19, 8, 0], 24),
            route(route_kind::VIA, VNI, super::PEER_IP, [0; 6]),
        ),
        (
            key([198, 19, 9, 0], 24),
            route(route_kind::TUNNEL, VNI, REMOTE_HOST, GATEWAY_MAC),
        ),
        (
            key([198, 19, 7, 0], 24),
            route(route_kind::BLACKHOLE, VNI, [0; 4], [0; 6]),
        ),
    ]
}

/// Endpoints only the routes reach: the port of VPC 200.
pub fn endpoints() -> Vec<(EndpointKey, Endpoint)> {
    vec![(
        EndpointKey {
            vni: OTHER_VNI,
            ip: OTHER_VPC_VM_IP,
        },
        Endpoint {
            mac: OTHER_VPC_VM_MAC,
            kind: alioth_common::maps::endpoint_kind::REMOTE_PORT,
            host_ip: REMOTE_HOST,
            ..Default::default()
        },
    )]
}

/// The longest prefix of `routes` that holds `data` (what the kernel's trie answers).
pub fn longest_match(routes: &std::collections::BTreeMap<(u32, [u8; 12]), Route>, data: [u8; 12]) -> Option<Route> {
    let bits = u128::from_be_bytes({
        let mut b = [0u8; 16];
        b[..12].copy_from_slice(&data);
        b
    });
    routes
        .iter()
        .filter(|((len, k), _)| {
            let mut b = [0u8; 16];
            b[..12].copy_from_slice(k);
            let mask = if *len == 0 { 0 } else { u128::MAX << (128 - len) };
            (u128::from_be_bytes(b) ^ bits) & mask == 0
        })
        .max_by_key(|((len, _), _)| *len)
        .map(|(_, r)| *r)
}

/// The frame `frame` (from the vector port, to its gateway's MAC) as routed to `dst_mac`.
fn routed(dst_mac: Mac, dst_ip: [u8; 4], len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
    frames::udp(ROUTER_MAC, dst_mac, VM_IP, dst_ip, 63, 40000, 5201, &data)
}

/// `inner` encapsulated in `vni` to the remote host.
fn tunnelled(name: &'static str, frame: Vec<u8>, inner: Vec<u8>, vni: u32) -> Case {
    let ip = alioth_common::ipv4::parse(&inner[..]).expect("IPv4");
    let sport = vxlan::source_port(&inner[..], &ip);
    let outer = Outer {
        src_mac: UPLINK_MAC,
        dst_mac: REMOTE_HOST_MAC,
        src_ip: UPLINK_IP,
        dst_ip: REMOTE_HOST,
        src_port: sport,
        dst_port: vxlan::DEFAULT_PORT,
        vni,
    };
    let underlay = Underlay {
        src_mac: outer.src_mac,
        dst_mac: outer.dst_mac,
        src: outer.src_ip,
        dst: outer.dst_ip,
        sport,
        dport: vxlan::DEFAULT_PORT,
    };
    Case {
        name,
        output: Some(frames::vxlan(&underlay, vni, &inner)),
        frame,
        action: Action::Encap,
        counter: Counter::Encap,
        ifindex: IFINDEX,
    }
}

/// Frames the vector port sends to its gateway's MAC.
pub fn cases() -> Vec<Case> {
    let gw = super::GW_MAC;
    vec![
        Case {
            name: "udp routed through the gateway MAC to a local port",
            frame: udp_from_port(gw, super::PEER_IP, 32),
            action: Action::Redirect,
            counter: Counter::ForwardLocal,
            ifindex: IFINDEX,
            output: Some(routed(PEER_MAC, super::PEER_IP, 32)),
        },
        Case {
            name: "routed by a rule to its next hop, a local port",
            frame: udp_from_port(gw, [198, 19, 8, 8], 32),
            action: Action::Redirect,
            counter: Counter::ForwardLocal,
            ifindex: IFINDEX,
            output: Some(routed(PEER_MAC, [198, 19, 8, 8], 32)),
        },
        tunnelled(
            "routed by a rule over VXLAN to a gateway",
            udp_from_port(gw, [198, 19, 9, 9], 40),
            routed(GATEWAY_MAC, [198, 19, 9, 9], 40),
            VNI,
        ),
        tunnelled(
            "routed into another VPC the router joins, in that VPC's VNI",
            udp_from_port(gw, OTHER_VPC_VM_IP, 40),
            routed(OTHER_VPC_VM_MAC, OTHER_VPC_VM_IP, 40),
            OTHER_VNI,
        ),
        // The skb path's NAT program drops both (no elastic IP): `nat_vectors`.
        Case::pass(
            "routed to where no route goes: left to the skb path's NAT program",
            udp_from_port(gw, [198, 19, 5, 5], 18),
            Counter::SkbPath,
        ),
        Case::pass(
            "routed by a rule whose next hop is unknown: left to the skb path's NAT program",
            udp_from_port(gw, [198, 19, 7, 7], 18),
            Counter::SkbPath,
        ),
        Case::drop(
            "routed to an address of a subnet of the router that nobody has",
            udp_from_port(gw, [198, 18, 1, 99], 18),
            Counter::DropUnknownDestination,
        ),
    ]
}

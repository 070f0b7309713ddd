//! Packet test vectors: one small VPC and a list of frames with the verdict and bytes expected.
//!
//! The same vectors run on the host (the `no_std` pipeline over byte slices) and in the kernel
//! (the compiled XDP object through BPF_PROG_TEST_RUN), so both must agree with etherparse.

use std::collections::BTreeMap;

use alioth_common::maps::{endpoint_kind, DhcpEntry, Endpoint, EndpointKey, NextHop, PortEntry, Uplink};
use alioth_common::pipeline::{Action, Tables, Verdict};
use alioth_common::snat::{SnatBack, SnatBackKey, SnatKey};
use alioth_common::vxlan::{self, Outer};
use alioth_common::Counter;
use etherparse::ArpOperation;

use crate::frames::{self, Mac, Underlay};

pub mod routes;

pub const VNI: u32 = 100;
pub const VM_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0a];
pub const VM_IP: [u8; 4] = [198, 18, 0, 10];
pub const PEER_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0b];
pub const PEER_IP: [u8; 4] = [198, 18, 0, 11];
pub const GW_MAC: Mac = [0x0a, 0x58, 198, 18, 0, 1];
pub const GW_IP: [u8; 4] = [198, 18, 0, 1];
/// The gateway of a second subnet of the VPC: answered through the `ENDPOINTS` lookup.
pub const GW2_MAC: Mac = [0x0a, 0x58, 198, 18, 1, 1];
pub const GW2_IP: [u8; 4] = [198, 18, 1, 1];
/// A port on another host (a neighbor): ARP for it is answered locally.
pub const REMOTE_MAC: Mac = [0x02, 0, 0, 0, 9, 0x0c];
pub const REMOTE_IP: [u8; 4] = [198, 18, 0, 12];
/// An address nobody in the VPC has.
pub const UNKNOWN_IP: [u8; 4] = [198, 18, 0, 99];
/// The same gateway address in another VPC (VNI 200) with another MAC: must never leak into VNI 100.
pub const OTHER_VPC_GW_MAC: Mac = [0x0a, 0x58, 0, 0, 0, 0x02];

/// The interface every redirect goes to: BPF_PROG_TEST_RUN needs a real device in the redirect map,
/// and the loopback device is the one every namespace has.
pub const IFINDEX: u32 = 1;
/// This host's tunnel endpoint.
pub const UPLINK_MAC: Mac = [0x02, 0, 0xc6, 0x13, 0, 1];
pub const UPLINK_IP: [u8; 4] = [198, 19, 0, 1];
/// The remote port's host, and its underlay MAC (the next hop: same segment).
pub const REMOTE_HOST: [u8; 4] = [198, 19, 0, 2];
pub const REMOTE_HOST_MAC: Mac = [0x02, 0, 0xc6, 0x13, 0, 2];
/// A remote port whose host's next hop is not resolved.
pub const UNRESOLVED_IP: [u8; 4] = [198, 18, 0, 13];
pub const UNRESOLVED_HOST: [u8; 4] = [198, 19, 0, 3];

/// The uplink of the vector host.
pub fn uplink() -> Uplink {
    Uplink {
        ifindex: IFINDEX,
        ip: UPLINK_IP,
        mac: UPLINK_MAC,
        vxlan_port: vxlan::DEFAULT_PORT,
        mtu: 1500,
    }
}

/// The resolved next hops.
pub fn next_hops() -> Vec<([u8; 4], NextHop)> {
    vec![(
        REMOTE_HOST,
        NextHop {
            mac: REMOTE_HOST_MAC,
            _pad: [0; 2],
        },
    )]
}

/// The vectors' maps as host collections, for the `no_std` pipeline on the host.
pub struct MapTables {
    pub endpoints: BTreeMap<EndpointKey, Endpoint>,
    pub next_hops: BTreeMap<[u8; 4], NextHop>,
    pub uplink: Option<Uplink>,
    pub dhcp: BTreeMap<u32, DhcpEntry>,
    pub routes: BTreeMap<(u32, [u8; 12]), alioth_common::maps::Route>,
    /// Elastic IPs (none in the vectors: `nat_test_run` adds its own).
    pub elastic_ips: BTreeMap<[u8; 4], EndpointKey>,
    /// SNAT flows both ways, as the kernel's LRU maps hold them (never full here).
    pub snat: std::cell::RefCell<Snat>,
}

/// SNAT flows on the host: `snat::SNAT_FLOWS` and `snat::SNAT_BACK`.
#[derive(Default)]
pub struct Snat {
    pub flows: BTreeMap<SnatKey, u16>,
    pub back: BTreeMap<SnatBackKey, SnatBack>,
}

impl MapTables {
    pub fn vectors() -> Self {
        MapTables {
            endpoints: endpoints().into_iter().chain(routes::endpoints()).collect(),
            next_hops: next_hops().into_iter().collect(),
            uplink: Some(uplink()),
            dhcp: [(DHCP_SLOT, dhcp_entry())].into_iter().collect(),
            routes: routes::routes().into_iter().collect(),
            elastic_ips: BTreeMap::new(),
            snat: Default::default(),
        }
    }
}

impl Tables for MapTables {
    fn endpoint(&self, key: &EndpointKey) -> Option<Endpoint> {
        self.endpoints.get(key).copied()
    }
    fn next_hop(&self, host_ip: &[u8; 4]) -> Option<NextHop> {
        self.next_hops.get(host_ip).copied()
    }
    fn uplink(&self) -> Option<Uplink> {
        self.uplink
    }
    fn dhcp(&self, slot: u32) -> Option<&DhcpEntry> {
        self.dhcp.get(&slot)
    }
    fn port_by_mac(&self, key: &alioth_common::maps::PortMacKey) -> Option<u32> {
        (key.vni == VNI && key.mac == PEER_MAC).then_some(IFINDEX)
    }
    fn route(&self, vni: u32, gateway: [u8; 4], dst: [u8; 4]) -> Option<alioth_common::maps::Route> {
        routes::longest_match(&self.routes, alioth_common::maps::route_key(vni, gateway, dst))
    }
    fn elastic_ip(&self, ip: &[u8; 4]) -> Option<EndpointKey> {
        self.elastic_ips.get(ip).copied()
    }
    fn elastic_source(&self, key: &EndpointKey) -> Option<[u8; 4]> {
        self.elastic_ips.iter().find(|(_, k)| *k == key).map(|(ip, _)| *ip)
    }
    fn port(&self, ifindex: u32) -> Option<PortEntry> {
        (ifindex == IFINDEX).then(port)
    }
    fn snat_port(&self, key: &SnatKey) -> Option<u16> {
        self.snat.borrow().flows.get(key).copied()
    }
    fn snat_claim(&self, key: &SnatKey, way_back: &SnatBackKey, back: &SnatBack, port: u16) -> bool {
        let mut snat = self.snat.borrow_mut();
        if snat.back.contains_key(way_back) {
            return false;
        }
        snat.back.insert(*way_back, *back);
        snat.flows.insert(*key, port);
        true
    }
    fn snat_back(&self, key: &SnatBackKey) -> Option<SnatBack> {
        self.snat.borrow().back.get(key).copied()
    }
}

/// What the kernel side does with a verdict's frame beyond the pipeline: outer headers written in
/// front for `Encap`, stripped for `Decap`.
pub fn finish(v: &Verdict, frame: &[u8]) -> Vec<u8> {
    match v.action {
        Action::Encap => {
            let mut out = vec![0u8; vxlan::OUTER_LEN];
            out.extend_from_slice(frame);
            vxlan::write_outer(&mut out[..], &v.outer, frame.len()).expect("room for the outer headers");
            out
        }
        Action::Decap => frame[vxlan::OUTER_LEN..].to_vec(),
        _ => frame.to_vec(),
    }
}

/// A frame on the host as the skb path sees a GSO super-frame: with the skb's segment size.
pub struct Gso<'a>(pub &'a mut [u8], pub usize);

impl alioth_common::Packet for Gso<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn array<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        self.0.array(off)
    }
    fn array_mut<const N: usize>(&mut self, off: usize) -> Option<&mut [u8; N]> {
        self.0.array_mut(off)
    }
    fn gso_size(&self) -> usize {
        self.1
    }
}

/// Loads the vectors into a data plane: the port on `IFINDEX` (where BPF_PROG_TEST_RUN frames
/// arrive), the endpoints, the uplink, the next hops, and `IFINDEX` as the redirect target.
pub fn program(dp: &mut alioth::dataplane::Dataplane) -> anyhow::Result<()> {
    let slot = dp.add_dhcp(&dhcp_entry(), None)?;
    anyhow::ensure!(
        slot == DHCP_SLOT,
        "a fresh data plane hands out DHCP slot {DHCP_SLOT} first"
    );
    dp.set_port_entry(IFINDEX, port())?;
    for (k, v) in endpoints().into_iter().chain(routes::endpoints()) {
        dp.upsert_endpoint(k, v)?;
    }
    dp.set_routes(routes::routes().into_iter().collect())?;
    dp.set_local((VNI, PEER_MAC), IFINDEX)?;
    dp.set_uplink_entry(uplink())?;
    for (host, hop) in next_hops() {
        dp.set_next_hop(host, hop.mac)?;
    }
    dp.add_redirect(IFINDEX)
}

/// Lease time of the vector subnet.
pub const LEASE_SECS: u32 = 7200;
pub const HOST_NAME: &str = "vm-a";
pub const DNS: [[u8; 4]; 2] = [[198, 18, 0, 2], [198, 18, 0, 3]];
pub const DOMAIN: &str = "tenant.example";
/// Extra options of the vector subnet: sent only when the client's request list names them.
pub const NTP: [u8; 4] = [198, 18, 0, 5];
pub const ROUTE: &str = "198.19.0.0/16";

/// The vector port's subnet as goal state describes it (DHCP on, with extra options).
pub fn dhcp_subnet() -> alioth::goalstate::model::Subnet {
    let extra = [
        ("domain-name", DOMAIN.to_string()),
        ("ntp-server", "198.18.0.5".to_string()),
        ("classless-static-route", format!("{ROUTE},198.18.0.1")),
        ("lease-time", LEASE_SECS.to_string()),
    ];
    alioth::goalstate::model::Subnet {
        id: "subnet-a".into(),
        revision: 1,
        vpc_id: "vpc-a".into(),
        cidr: "198.18.0.0/24".parse().unwrap(),
        gateway_ip: GW_IP.into(),
        gateway_mac: GW_MAC,
        gateway: true,
        dhcp_enable: true,
        dns: DNS.iter().map(|a| (*a).into()).collect(),
        dhcp_options: extra
            .iter()
            .map(|(n, v)| alioth::goalstate::dhcp::parse_extra(n, v).unwrap())
            .collect(),
    }
}

/// The vector port's `DHCP` slot: the first a fresh data plane hands out.
pub const DHCP_SLOT: u32 = 1;

/// What the agent renders for the vector port.
pub fn dhcp_entry() -> DhcpEntry {
    alioth::goalstate::dhcp::render(VM_IP.into(), &dhcp_subnet(), Some(HOST_NAME), 86_400).unwrap()
}

/// A UDP datagram from the vector port to `dst_ip` at `dst_mac`.
pub fn udp_from_port(dst_mac: Mac, dst_ip: [u8; 4], payload_len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
    frames::udp(VM_MAC, dst_mac, VM_IP, dst_ip, 64, 40000, 5201, &data)
}

/// A VXLAN packet from the remote host for the local port `PEER`.
pub fn vxlan_to_peer(vni: u32, inner: &[u8]) -> Vec<u8> {
    let u = Underlay {
        src_mac: REMOTE_HOST_MAC,
        dst_mac: UPLINK_MAC,
        src: REMOTE_HOST,
        dst: UPLINK_IP,
        sport: 51234,
        dport: vxlan::DEFAULT_PORT,
    };
    frames::vxlan(&u, vni, inner)
}

/// The port the frames arrive on.
pub fn port() -> PortEntry {
    PortEntry {
        mac: VM_MAC,
        vni: VNI,
        ip: VM_IP,
        gateway_ip: GW_IP,
        gateway_mac: GW_MAC,
        dhcp_slot: DHCP_SLOT,
        ..Default::default()
    }
}

/// The `ENDPOINTS` map contents.
pub fn endpoints() -> Vec<(EndpointKey, Endpoint)> {
    let ep = |mac, kind| Endpoint {
        mac,
        kind,
        ..Default::default()
    };
    vec![
        (EndpointKey { vni: VNI, ip: GW_IP }, ep(GW_MAC, endpoint_kind::GATEWAY)),
        (
            EndpointKey { vni: VNI, ip: GW2_IP },
            ep(GW2_MAC, endpoint_kind::GATEWAY),
        ),
        (
            EndpointKey { vni: VNI, ip: VM_IP },
            ep(VM_MAC, endpoint_kind::LOCAL_PORT),
        ),
        (
            EndpointKey { vni: VNI, ip: PEER_IP },
            Endpoint {
                ifindex: IFINDEX,
                ..ep(PEER_MAC, endpoint_kind::LOCAL_PORT)
            },
        ),
        (
            EndpointKey {
                vni: VNI,
                ip: REMOTE_IP,
            },
            Endpoint {
                host_ip: REMOTE_HOST,
                ..ep(REMOTE_MAC, endpoint_kind::REMOTE_PORT)
            },
        ),
        (
            EndpointKey {
                vni: VNI,
                ip: UNRESOLVED_IP,
            },
            Endpoint {
                host_ip: UNRESOLVED_HOST,
                ..ep([0x02, 0, 0, 0, 9, 0x0d], endpoint_kind::REMOTE_PORT)
            },
        ),
        (
            EndpointKey { vni: 200, ip: GW_IP },
            ep(OTHER_VPC_GW_MAC, endpoint_kind::GATEWAY),
        ),
        (
            EndpointKey {
                vni: 200,
                ip: UNKNOWN_IP,
            },
            ep([0x02, 0, 0, 0, 2, 99], endpoint_kind::LOCAL_PORT),
        ),
    ]
}

pub struct Case {
    pub name: &'static str,
    pub frame: Vec<u8>,
    pub action: Action,
    pub counter: Counter,
    /// Target interface of a redirect (0 for other actions).
    pub ifindex: u32,
    /// The frame after the program for Tx; for other actions the frame must come out unchanged.
    pub output: Option<Vec<u8>>,
}

impl Case {
    /// A frame that must be dropped, untouched, and counted under `counter`.
    pub fn drop(name: &'static str, frame: Vec<u8>, counter: Counter) -> Case {
        Case {
            name,
            frame,
            action: Action::Drop,
            counter,
            ifindex: 0,
            output: None,
        }
    }

    /// A frame that must pass to the host untouched, counted under `counter`.
    pub fn pass(name: &'static str, frame: Vec<u8>, counter: Counter) -> Case {
        Case {
            action: Action::Pass,
            ..Case::drop(name, frame, counter)
        }
    }
}

/// A standard 56-byte ping payload.
pub fn ping_payload() -> Vec<u8> {
    (0..56u8).collect()
}

/// Rewrites a byte of an IPv4 header and fixes the header checksum (offsets from the IPv4 header).
pub fn edit_ipv4_header(frame: &mut [u8], edit: impl FnOnce(&mut [u8])) {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    edit(&mut frame[14..14 + ihl]);
    frame[24] = 0;
    frame[25] = 0;
    let c = frames::internet_checksum(&frame[14..14 + ihl]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

pub fn cases() -> Vec<Case> {
    let tx = |name, frame, counter, out| Case {
        name,
        frame,
        action: Action::Tx,
        counter,
        ifindex: 0,
        output: Some(out),
    };
    let drop = Case::drop;
    let payload = ping_payload();
    let echo = |payload: &[u8]| frames::echo_request(VM_MAC, GW_MAC, VM_IP, GW_IP, 0x1234, 7, payload);
    let mut v = vec![
        tx(
            "arp request for the gateway",
            frames::arp_request(VM_MAC, VM_IP, GW_IP),
            Counter::ArpReply,
            frames::arp_reply(VM_MAC, VM_IP, GW_MAC, GW_IP),
        ),
        tx(
            "arp request for another port of the VPC",
            frames::arp_request(VM_MAC, VM_IP, PEER_IP),
            Counter::ArpReply,
            frames::arp_reply(VM_MAC, VM_IP, PEER_MAC, PEER_IP),
        ),
        drop(
            "arp request for an unknown address",
            frames::arp_request(VM_MAC, VM_IP, UNKNOWN_IP),
            Counter::DropArpUnknownTarget,
        ),
        drop(
            "gratuitous arp",
            frames::arp_request(VM_MAC, VM_IP, VM_IP),
            Counter::DropArpNotRequest,
        ),
        drop(
            "arp probe for the own address",
            frames::arp_request(VM_MAC, [0; 4], VM_IP),
            Counter::DropArpSelf,
        ),
        drop(
            "arp reply",
            frames::arp(ArpOperation::REPLY, GW_MAC, VM_MAC, VM_IP, GW_MAC, GW_IP),
            Counter::DropArpNotRequest,
        ),
        tx(
            "echo request to the gateway",
            echo(&payload),
            Counter::IcmpEchoReply,
            frames::echo_reply(VM_MAC, GW_MAC, VM_IP, GW_IP, 0x1234, 7, &payload),
        ),
        tx(
            "echo request with an odd payload length",
            echo(&payload[..13]),
            Counter::IcmpEchoReply,
            frames::echo_reply(VM_MAC, GW_MAC, VM_IP, GW_IP, 0x1234, 7, &payload[..13]),
        ),
        tx(
            "echo request of a full 1500-byte IPv4 packet",
            echo(&[0xa5; 1472]),
            Counter::IcmpEchoReply,
            frames::echo_reply(VM_MAC, GW_MAC, VM_IP, GW_IP, 0x1234, 7, &[0xa5; 1472]),
        ),
        drop(
            "echo request above 1500 bytes",
            echo(&[0xa5; 1473]),
            Counter::DropTooBig,
        ),
        Case {
            name: "echo request to another port on this host",
            frame: frames::echo_request(VM_MAC, PEER_MAC, VM_IP, PEER_IP, 1, 1, &payload),
            action: Action::Redirect,
            counter: Counter::ForwardLocal,
            ifindex: IFINDEX,
            output: None,
        },
        drop(
            "ipv4 to an unknown address",
            frames::echo_request(VM_MAC, GW_MAC, VM_IP, UNKNOWN_IP, 1, 1, &payload),
            Counter::DropUnknownDestination,
        ),
        drop(
            "not ipv4 or arp",
            {
                let mut f = echo(&payload);
                f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
                f
            },
            Counter::DropUnsupported,
        ),
        drop("runt frame", vec![0xff; 10], Counter::DropIpMalformed),
        drop(
            "dhcp to port 67 that is no BOOTREQUEST",
            frames::udp(VM_MAC, [0xff; 6], [0; 4], [255; 4], 64, 68, 67, &[0; 240]),
            Counter::DropDhcpMalformed,
        ),
        drop(
            "dhcp server traffic from a port",
            frames::udp(VM_MAC, PEER_MAC, VM_IP, PEER_IP, 64, 67, 68, &[0; 240]),
            Counter::DropDhcpServer,
        ),
        drop(
            "a BOOTREPLY to port 67 (a relay's or server's answer)",
            frames::udp(VM_MAC, PEER_MAC, VM_IP, GW_IP, 64, 67, 67, &{
                let mut m = [0; 240];
                m[..3].copy_from_slice(&[2, 1, 6]);
                m
            }),
            Counter::DropDhcpServer,
        ),
        drop(
            "udp from 0.0.0.0 that is not dhcp",
            frames::udp(VM_MAC, PEER_MAC, [0; 4], PEER_IP, 64, 40000, 5201, &[0; 16]),
            Counter::DropSpoofedIp,
        ),
    ];
    v.extend(overlay_cases());
    v.extend(routes::cases());
    // Path MTU: a datagram with DF that will not fit the overlay gets "fragmentation needed" from
    // the gateway, with the uplink's MTU less the encapsulation (1500 - 50).
    let big = udp_from_port(REMOTE_MAC, REMOTE_IP, 1450 - 27);
    v.push(tx(
        "a datagram with DF that would exceed the uplink MTU once encapsulated",
        big.clone(),
        Counter::IcmpFragNeeded,
        frames::frag_needed(GW_MAC, VM_MAC, GW_IP, VM_IP, 1450, &big),
    ));
    let mut bad_icmp = echo(&payload);
    let last = bad_icmp.len() - 1;
    bad_icmp[last] ^= 0x40;
    v.push(drop(
        "echo request with a bad icmp checksum",
        bad_icmp,
        Counter::DropIcmpBadChecksum,
    ));
    let mut bad_ip = echo(&payload);
    bad_ip[24] ^= 0x01;
    v.push(drop(
        "echo request with a bad ipv4 checksum",
        bad_ip,
        Counter::DropIpBadChecksum,
    ));
    let mut frag = echo(&payload);
    edit_ipv4_header(&mut frag, |h| h[6] |= 0x20);
    v.push(drop(
        "echo request fragment (more fragments)",
        frag,
        Counter::DropIpFragment,
    ));
    let mut frag = echo(&payload);
    edit_ipv4_header(&mut frag, |h| h[7] = 1);
    v.push(drop("echo request fragment (offset)", frag, Counter::DropIpFragment));
    let mut opts = echo(&payload);
    // Insert a 4-byte NOP option block: IHL 6.
    opts.splice(34..34, [1, 1, 1, 0]);
    edit_ipv4_header(&mut opts, |h| {
        h[0] = 0x46;
        let tl = u16::from_be_bytes([h[2], h[3]]) + 4;
        h[2..4].copy_from_slice(&tl.to_be_bytes());
    });
    v.push(drop("echo request with ip options", opts, Counter::DropIpOptions));
    let mut truncated = echo(&payload);
    truncated.truncate(truncated.len() - 10);
    v.push(drop("truncated echo request", truncated, Counter::DropIpMalformed));
    let mut short = echo(&payload);
    short.truncate(30);
    v.push(drop("ipv4 header cut short", short, Counter::DropIpMalformed));
    let mut arp_short = frames::arp_request(VM_MAC, VM_IP, GW_IP);
    arp_short.truncate(40);
    v.push(drop("truncated arp", arp_short, Counter::DropArpMalformed));
    let mut arp_bad = frames::arp_request(VM_MAC, VM_IP, GW_IP);
    arp_bad[18] = 8; // hlen
    v.push(drop(
        "arp with a wrong hardware length",
        arp_bad,
        Counter::DropArpMalformed,
    ));
    let mut tiny = echo(&[]);
    edit_ipv4_header(&mut tiny, |h| h[2..4].copy_from_slice(&24u16.to_be_bytes()));
    v.push(drop("icmp shorter than its header", tiny, Counter::DropIpMalformed));
    let mut not_echo = echo(&payload);
    not_echo[34] = 13; // timestamp request
    v.push(drop(
        "icmp to the gateway that is not an echo request",
        not_echo,
        Counter::DropGatewayUnhandled,
    ));
    v
}

/// A BOOTP message with `op` (1 request, 2 reply), as a rogue server in a VM would send it.
fn bootp(op: u8) -> Vec<u8> {
    let mut m = vec![0u8; 300];
    m[..4].copy_from_slice(&[op, 1, 6, 0]);
    m[236..240].copy_from_slice(&alioth_common::dhcp::MAGIC_COOKIE);
    m
}

/// Frames from the port that leave it: switched, routed, encapsulated, or refused.
fn overlay_cases() -> Vec<Case> {
    let data = |n: usize| (0..n).map(|i| i as u8).collect::<Vec<u8>>();
    let to = udp_from_port;
    let drop = Case::drop;
    let encap = |name, frame: Vec<u8>| {
        let ip = alioth_common::ipv4::parse(&frame[..]).expect("IPv4");
        let outer = Outer {
            src_mac: UPLINK_MAC,
            dst_mac: REMOTE_HOST_MAC,
            src_ip: UPLINK_IP,
            dst_ip: REMOTE_HOST,
            src_port: vxlan::source_port(&frame[..], &ip),
            dst_port: vxlan::DEFAULT_PORT,
            vni: VNI,
        };
        let underlay = Underlay {
            src_mac: UPLINK_MAC,
            dst_mac: REMOTE_HOST_MAC,
            src: UPLINK_IP,
            dst: REMOTE_HOST,
            sport: outer.src_port,
            dport: vxlan::DEFAULT_PORT,
        };
        Case {
            name,
            output: Some(frames::vxlan(&underlay, VNI, &frame)),
            frame,
            action: Action::Encap,
            counter: Counter::Encap,
            ifindex: IFINDEX,
        }
    };
    vec![
        drop(
            "routed with ttl 1",
            frames::udp(VM_MAC, GW_MAC, VM_IP, PEER_IP, 1, 40000, 5201, &data(32)),
            Counter::DropTtlExpired,
        ),
        encap("udp to a remote port", to(REMOTE_MAC, REMOTE_IP, 18)),
        encap(
            "a full 1450-byte packet to a remote port",
            to(REMOTE_MAC, REMOTE_IP, 1450 - 28),
        ),
        encap(
            "tcp with a finished checksum to a remote port",
            frames::tcp(VM_MAC, REMOTE_MAC, VM_IP, REMOTE_IP, 40000, 5201, &data(1000)),
        ),
        Case::pass(
            "tcp with its checksum left to the device, to a remote port: the skb path",
            frames::offloaded(frames::tcp(
                VM_MAC,
                REMOTE_MAC,
                VM_IP,
                REMOTE_IP,
                40000,
                5201,
                &data(1000),
            )),
            Counter::SkbPath,
        ),
        Case::pass(
            "udp with its checksum left to the device, to a local port: the skb path",
            frames::offloaded(to(PEER_MAC, PEER_IP, 100)),
            Counter::SkbPath,
        ),
        Case::pass(
            "routed udp with its checksum left to the device: the skb path, untouched",
            frames::offloaded(to(GW_MAC, PEER_IP, 100)),
            Counter::SkbPath,
        ),
        Case::pass(
            "a GSO super-frame to a remote port: the skb path",
            to(REMOTE_MAC, REMOTE_IP, 2000),
            Counter::SkbPath,
        ),
        drop(
            "a packet without DF that would exceed the uplink MTU once encapsulated",
            frames::without_df(&to(REMOTE_MAC, REMOTE_IP, 1450 - 27)),
            Counter::DropOverlayTooBig,
        ),
        drop(
            "to a remote port whose host is not resolved",
            to([0x02, 0, 0, 0, 9, 0x0d], UNRESOLVED_IP, 18),
            Counter::DropNoNextHop,
        ),
        drop(
            "to a local port's address at another MAC",
            to(REMOTE_MAC, PEER_IP, 18),
            Counter::DropUnknownDestination,
        ),
        drop(
            "to an address that exists only in another VPC",
            to([0x02, 0, 0, 0, 2, 99], UNKNOWN_IP, 18),
            Counter::DropUnknownDestination,
        ),
        drop(
            "a BOOTREPLY from the client port to another VM's client port",
            frames::udp(VM_MAC, PEER_MAC, VM_IP, PEER_IP, 64, 68, 68, &bootp(2)),
            Counter::DropDhcpServer,
        ),
        drop(
            "a BOOTREPLY from an ordinary port to another VM's client port",
            frames::udp(VM_MAC, PEER_MAC, VM_IP, PEER_IP, 64, 6767, 68, &bootp(2)),
            Counter::DropDhcpServer,
        ),
        drop(
            "anything to another VM's client port",
            frames::udp(VM_MAC, PEER_MAC, VM_IP, PEER_IP, 64, 40000, 68, &bootp(1)),
            Counter::DropDhcpServer,
        ),
        Case {
            name: "udp from the client port to an ordinary port is forwarded",
            frame: frames::udp(VM_MAC, PEER_MAC, VM_IP, PEER_IP, 64, 68, 5201, &data(32)),
            action: Action::Redirect,
            counter: Counter::ForwardLocal,
            ifindex: IFINDEX,
            output: None,
        },
        drop(
            "spoofed source MAC",
            frames::udp(PEER_MAC, REMOTE_MAC, VM_IP, REMOTE_IP, 64, 1, 2, &data(18)),
            Counter::DropSpoofedMac,
        ),
        drop(
            "spoofed source IP",
            frames::udp(VM_MAC, REMOTE_MAC, PEER_IP, REMOTE_IP, 64, 1, 2, &data(18)),
            Counter::DropSpoofedIp,
        ),
        drop(
            "arp request with a spoofed sender IP",
            frames::arp_request(VM_MAC, PEER_IP, GW_IP),
            Counter::DropSpoofedIp,
        ),
    ]
}

/// Frames arriving on the uplink.
pub fn uplink_cases() -> Vec<Case> {
    let from_remote = vxlan_to_peer;
    let inner_to = |mac, ip| frames::udp(REMOTE_MAC, mac, REMOTE_IP, ip, 64, 5201, 40000, &[7; 100]);
    let pass = |name, frame| Case::pass(name, frame, Counter::UplinkPass);
    let drop = Case::drop;
    let inner = inner_to(PEER_MAC, PEER_IP);
    let mut no_flag = from_remote(VNI, &inner);
    no_flag[42] = 0;
    let mut wrong_port = from_remote(VNI, &inner);
    wrong_port[36..38].copy_from_slice(&4790u16.to_be_bytes());
    let mut other_host = from_remote(VNI, &inner);
    edit_ipv4_header(&mut other_host, |h| h[19] = 77);
    let mut cut = from_remote(VNI, &inner);
    cut.truncate(cut.len() - 20);
    vec![
        Case {
            name: "vxlan for a local port is decapsulated",
            frame: from_remote(VNI, &inner),
            action: Action::Decap,
            counter: Counter::Decap,
            ifindex: IFINDEX,
            output: Some(inner.clone()),
        },
        Case {
            name: "vxlan for an address nobody has, at a local port's MAC: routed to that port",
            frame: from_remote(VNI, &inner_to(PEER_MAC, [198, 19, 100, 1])),
            action: Action::Decap,
            counter: Counter::Decap,
            ifindex: IFINDEX,
            output: Some(inner_to(PEER_MAC, [198, 19, 100, 1])),
        },
        pass(
            "vxlan for an address nobody has, at a MAC of no local port",
            from_remote(VNI, &inner_to(REMOTE_MAC, [198, 19, 100, 1])),
        ),
        pass(
            "vxlan for an address nobody has, at a local port's MAC in another VNI",
            from_remote(200, &inner_to(PEER_MAC, [198, 19, 100, 1])),
        ),
        pass("vxlan with an unknown vni", from_remote(4242, &inner)),
        Case::pass(
            "vxlan whose inner checksum is left to the device: the skb path",
            from_remote(VNI, &frames::offloaded(inner.clone())),
            Counter::SkbPath,
        ),
        drop(
            "vxlan for a gateway address",
            from_remote(VNI, &inner_to(GW_MAC, GW_IP)),
            Counter::DropOverlayMisdirected,
        ),
        drop(
            "vxlan for a remote port's address",
            from_remote(VNI, &inner_to(REMOTE_MAC, REMOTE_IP)),
            Counter::DropOverlayMisdirected,
        ),
        drop(
            "vxlan for a local port's address at the wrong MAC",
            from_remote(VNI, &inner_to(GW_MAC, PEER_IP)),
            Counter::DropOverlayMisdirected,
        ),
        drop(
            "vxlan for a port of another VPC without an interface",
            from_remote(200, &inner_to([0x02, 0, 0, 0, 2, 99], UNKNOWN_IP)),
            Counter::DropNoInterface,
        ),
        pass(
            "vxlan carrying arp",
            from_remote(VNI, &frames::arp_request(REMOTE_MAC, REMOTE_IP, PEER_IP)),
        ),
        pass("vxlan without the VNI flag", no_flag),
        pass("udp to another port", wrong_port),
        pass("vxlan to another host", other_host),
        pass("vxlan cut short", cut),
        pass(
            "the host's own traffic",
            frames::echo_request(REMOTE_HOST_MAC, UPLINK_MAC, REMOTE_HOST, UPLINK_IP, 1, 1, &[1; 56]),
        ),
        pass(
            "the host's arp",
            frames::arp_request(REMOTE_HOST_MAC, REMOTE_HOST, UPLINK_IP),
        ),
    ]
}

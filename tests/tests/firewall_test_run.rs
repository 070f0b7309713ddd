//! Security groups in the compiled object, through BPF_PROG_TEST_RUN: for random rule sets and
//! random first frames of flows, the kernel lets a frame from one port to another through exactly
//! when a reference model of Neutron's semantics, rule by rule, says the sender's egress rules and
//! the receiver's ingress rules both allow it.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU16, Ordering};

use alioth::dataplane::object::PORT_TC_PROGRAM;
use alioth::dataplane::{AttachMode, Dataplane};
use alioth::goalstate::secgroup::{alone, compile, Policy, Rule};
use alioth_common::maps::{endpoint_kind, Endpoint, EndpointKey, PortEntry};
use alioth_common::Counter;
use alioth_tests::frames;
use alioth_tests::kernel::{counter, run_tc};
use ipnetwork::Ipv4Network;
use proptest::prelude::*;

/// The sending port's frames come in on `lo` (a test run wants a real device there); the
/// receiving port's interface exists for the program only (a TC redirect does not look).
const LO: u32 = 1;
const OTHER: u32 = 8;
const VNI: u32 = 100;
const SENDER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 7];
const RECEIVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 8];
/// Each port's addresses (the first is its primary).
const SENDER_IPS: [[u8; 4]; 3] = [[198, 18, 0, 7], [198, 18, 1, 7], [198, 19, 3, 7]];
const RECEIVER_IPS: [[u8; 4]; 3] = [[198, 18, 0, 8], [198, 18, 1, 8], [198, 19, 4, 8]];
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// One data plane per test process (tests run in parallel: lock it); each case filters with
/// policies of its own.
fn dataplane() -> std::sync::MutexGuard<'static, Dataplane> {
    static DP: std::sync::OnceLock<std::sync::Mutex<Dataplane>> = std::sync::OnceLock::new();
    DP.get_or_init(|| {
        let (dp, _) = Dataplane::load(None, AttachMode::Auto).expect("load the XDP object (run as root)");
        std::sync::Mutex::new(dp)
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

/// A port: its MAC, addresses, rule set and zone (0: unfiltered).
#[derive(Clone, Copy)]
struct Side {
    mac: [u8; 6],
    ips: [[u8; 4]; 3],
    policy: (u16, u32),
}

/// A port with `policy` in a zone of its own (a fresh one: no flows).
fn side(dp: &mut Dataplane, mac: [u8; 6], ips: [[u8; 4]; 3], policy: Option<&Policy>) -> Side {
    static N: AtomicU16 = AtomicU16::new(0);
    let name = format!("t{}", N.fetch_add(1, Ordering::Relaxed));
    let policy = dp
        .set_policy(&name, policy.map(|p| alone(&name, p.clone())).as_ref())
        .unwrap();
    Side { mac, ips, policy }
}

/// Puts `from` on `lo` and `to` on the other interface, with their addresses.
fn place(dp: &mut Dataplane, from: &Side, to: &Side) {
    for (ifindex, s) in [(LO, from), (OTHER, to)] {
        let entry = PortEntry {
            mac: s.mac,
            vni: VNI,
            ip: s.ips[0],
            policy: s.policy.0,
            zone: s.policy.1,
            ..Default::default()
        };
        dp.set_port_entry(ifindex, entry).unwrap();
        for ip in s.ips {
            let value = Endpoint {
                mac: s.mac,
                kind: endpoint_kind::LOCAL_PORT,
                ifindex,
                ..Default::default()
            };
            dp.upsert_endpoint(EndpointKey { vni: VNI, ip }, value).unwrap();
        }
    }
}

/// Runs `frame` from the port on `lo`: the TC action.
fn send(dp: &mut Dataplane, frame: &[u8]) -> u32 {
    run_tc(dp.tc_program(PORT_TC_PROGRAM).unwrap(), frame, LO, 0).0
}

/// A policy that lets `proto` to `port` in from anywhere, and nothing else in or out.
fn allow_in(proto: u8, port: u16) -> Policy {
    let rule = Rule {
        remotes: vec!["0.0.0.0/0".parse().unwrap()],
        protocol: Some(proto),
        ports: (port, port),
    };
    Policy {
        egress: compile(&[]),
        ingress: compile(&[rule]),
    }
}

/// A first frame of a flow.
#[derive(Clone, Debug)]
enum Frame {
    Syn(u16),
    Udp(u16),
    /// ICMP type and code (echo requests, errors quoting nothing known, others).
    Icmp(u8, u8),
    Gre,
}

impl Frame {
    fn proto(&self) -> u8 {
        match self {
            Frame::Syn(_) => 6,
            Frame::Udp(_) => 17,
            Frame::Icmp(..) => 1,
            Frame::Gre => 47,
        }
    }

    /// What rules' ranges are about: the destination port, or ICMP's type and code.
    fn value(&self) -> u16 {
        match self {
            Frame::Syn(p) | Frame::Udp(p) => *p,
            Frame::Icmp(t, c) => (*t as u16) << 8 | *c as u16,
            Frame::Gre => 0,
        }
    }

    fn bytes(&self, src: [u8; 4], dst: [u8; 4], sport: u16) -> Vec<u8> {
        let (s, d) = (SENDER_MAC, RECEIVER_MAC);
        match self {
            Frame::Syn(p) => frames::tcp_syn(s, d, src, dst, sport, *p),
            Frame::Udp(p) => frames::udp(s, d, src, dst, 64, sport, *p, b"x"),
            Frame::Icmp(8, 0) => frames::echo_request(s, d, src, dst, sport, 1, b"x"),
            Frame::Icmp(t, c) => frames::icmp_of(s, d, src, dst, *t, *c),
            Frame::Gre => {
                let mut f = frames::udp(s, d, src, dst, 64, sport, 0, b"x");
                // The same datagram, declared GRE: a protocol without ports.
                f[23] = 47;
                let sum = frames::internet_checksum(&{
                    let mut h = f[14..34].to_vec();
                    h[10..12].fill(0);
                    h
                });
                f[24..26].copy_from_slice(&sum.to_be_bytes());
                f
            }
        }
    }
}

/// Neutron's semantics, rule by rule: some rule names the protocol (or any), holds the value in
/// its range (ports of TCP and UDP, type and code of ICMP; other protocols have none), and holds
/// the remote address in one of its prefixes.
fn reference(rules: &[Rule], remote: [u8; 4], frame: &Frame) -> bool {
    let remote = Ipv4Addr::from(remote);
    rules.iter().any(|r| {
        r.protocol.is_none_or(|p| p == frame.proto())
            && (r.ports.0..=r.ports.1).contains(&frame.value())
            && r.remotes.iter().any(|n| n.contains(remote))
    })
}

fn rule() -> impl Strategy<Value = Rule> {
    let addresses: Vec<[u8; 4]> = SENDER_IPS.iter().chain(&RECEIVER_IPS).copied().collect();
    let prefix = (prop::sample::select(addresses), 0u8..=32).prop_map(|(ip, len)| {
        let net = Ipv4Network::new(Ipv4Addr::from(ip), len).unwrap();
        Ipv4Network::new(net.network(), len).unwrap()
    });
    let protocol = prop::option::of(prop::sample::select(vec![1u8, 6, 17, 47]));
    let range = prop_oneof![
        Just((0u16, u16::MAX)),
        (0u16..=2100, 0u16..=2100).prop_map(|(a, b)| (a.min(b), a.max(b))),
        (0u8..=12).prop_map(|t| ((t as u16) << 8, (t as u16) << 8 | 0xff)),
    ];
    (prop::collection::vec(prefix, 0..3), protocol, range).prop_map(|(remotes, protocol, ports)| Rule {
        remotes,
        protocol,
        ports,
    })
}

fn frame() -> impl Strategy<Value = Frame> {
    // Not the DHCP ports: the data plane answers those itself.
    let port = prop_oneof![0u16..=2100, Just(8080u16)].prop_map(|p| if p == 67 || p == 68 { 69 } else { p });
    prop_oneof![
        port.clone().prop_map(Frame::Syn),
        port.prop_map(Frame::Udp),
        prop::sample::select(vec![(8u8, 0u8), (3, 1), (11, 0), (5, 2), (13, 0)]).prop_map(|(t, c)| Frame::Icmp(t, c)),
        Just(Frame::Gre),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_kernel_allows_what_neutrons_rules_allow(
        egress in prop::collection::vec(rule(), 0..6),
        ingress in prop::collection::vec(rule(), 0..6),
        filtered in (any::<bool>(), any::<bool>()),
        frames in prop::collection::vec((frame(), 0usize..3, 0usize..3), 1..6),
    ) {
        let mut dp = dataplane();
        let sender = Policy { egress: compile(&egress), ingress: compile(&[]) };
        let receiver = Policy { egress: compile(&[]), ingress: compile(&ingress) };
        let a = side(&mut dp, SENDER_MAC, SENDER_IPS, filtered.0.then_some(&sender));
        let b = side(&mut dp, RECEIVER_MAC, RECEIVER_IPS, filtered.1.then_some(&receiver));
        place(&mut dp, &a, &b);
        for (i, (f, s, d)) in frames.iter().enumerate() {
            let (src, dst) = (SENDER_IPS[*s], RECEIVER_IPS[*d]);
            // A source port (or echo identifier) of its own: every frame opens a flow.
            let action = send(&mut dp, &f.bytes(src, dst, 40000 + i as u16));
            let allowed = (!filtered.0 || reference(&egress, dst, f)) && (!filtered.1 || reference(&ingress, src, f));
            let expected = if allowed { TC_ACT_REDIRECT } else { TC_ACT_SHOT };
            prop_assert_eq!(action, expected, "{:?} from {:?} to {:?}", f, src, dst);
        }
    }
}

/// What opens a flow lets its replies through, in XDP and on the skb path alike; a stray ACK and
/// a later fragment are refused; and each refusal is counted by its reason.
#[test]
fn replies_pass_strays_do_not_and_drops_are_counted() {
    let mut dp = dataplane();
    let policy = allow_in(6, 22);
    let client = side(&mut dp, SENDER_MAC, SENDER_IPS, None);
    let server = side(&mut dp, RECEIVER_MAC, RECEIVER_IPS, Some(&policy));
    let (a, b) = (SENDER_IPS[0], RECEIVER_IPS[0]);
    let before = |dp: &Dataplane| {
        [Counter::DropSgIngress, Counter::DropSgInvalid, Counter::DropSgFragment].map(|c| counter(dp, c))
    };
    let start = before(&dp);
    let run = |dp: &mut Dataplane, from: &Side, to: &Side, frame: Vec<u8>| {
        place(dp, from, to);
        send(dp, &frame)
    };
    let (c, s) = (&client, &server);
    // A stray ACK to the allowed port: no flow, opens none.
    let ack = frames::tcp(SENDER_MAC, RECEIVER_MAC, a, b, 41000, 22, b"x");
    assert_eq!(run(&mut dp, c, s, ack.clone()), TC_ACT_SHOT, "a stray ACK");
    // A SYN to the allowed port opens the flow; the server's SYN-ACK goes back although its
    // egress rules are none; then the ACK is part of the flow.
    let syn = frames::tcp_syn(SENDER_MAC, RECEIVER_MAC, a, b, 41000, 22);
    assert_eq!(run(&mut dp, c, s, syn), TC_ACT_REDIRECT, "the SYN");
    let mut syn_ack = frames::tcp_syn(RECEIVER_MAC, SENDER_MAC, b, a, 22, 41000);
    syn_ack[47] |= 0x10;
    assert_eq!(run(&mut dp, s, c, syn_ack), TC_ACT_REDIRECT, "the SYN-ACK");
    assert_eq!(run(&mut dp, c, s, ack), TC_ACT_REDIRECT, "the handshake's ACK");
    // Another port is refused; so is a later fragment of anything.
    let other = frames::tcp_syn(SENDER_MAC, RECEIVER_MAC, a, b, 41001, 23);
    assert_eq!(run(&mut dp, c, s, other), TC_ACT_SHOT, "port 23");
    let mut fragment = frames::udp(SENDER_MAC, RECEIVER_MAC, a, b, 64, 41002, 22, b"x");
    fragment[20..22].copy_from_slice(&[0, 10]);
    let sum = frames::internet_checksum(&{
        let mut h = fragment[14..34].to_vec();
        h[10..12].fill(0);
        h
    });
    fragment[24..26].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(run(&mut dp, c, s, fragment), TC_ACT_SHOT, "a later fragment");
    let end = before(&dp);
    assert_eq!(
        [end[0] - start[0], end[1] - start[1], end[2] - start[2]],
        [1, 1, 1],
        "drop_sg_ingress, drop_sg_invalid, drop_sg_fragment"
    );
}

/// A full flow table makes room by evicting the least recently used flow, and counts it: the
/// newest flows still pass both ways, the oldest one's reply is a new flow again (refused here).
#[test]
fn a_full_flow_table_evicts_the_oldest_flows_and_counts_them() {
    let (mut dp, _) = Dataplane::load(None, AttachMode::Auto).expect("load the XDP object (run as root)");
    let policy = allow_in(17, 53);
    let client = side(&mut dp, SENDER_MAC, SENDER_IPS, None);
    let server = side(&mut dp, RECEIVER_MAC, RECEIVER_IPS, Some(&policy));
    let capacity = alioth_common::firewall::MAX_SG_FLOWS as usize;
    let flows = capacity + capacity / 8;
    // Each flow by its client address (the sender owns three) and port.
    let client_of = |i: usize| (SENDER_IPS[(i / 60000) % 3], 1024 + (i % 60000) as u16);
    let query = |i: usize| {
        let (src, sport) = client_of(i);
        frames::udp(SENDER_MAC, RECEIVER_MAC, src, RECEIVER_IPS[0], 64, sport, 53, b"q")
    };
    place(&mut dp, &client, &server);
    for i in 0..flows {
        assert_eq!(send(&mut dp, &query(i)), TC_ACT_REDIRECT, "query {i}");
    }
    let stats = dp.flow_stats().unwrap();
    assert!(stats.entries as usize <= capacity, "entries {}", stats.entries);
    assert!(
        stats.evicted as usize >= flows - capacity,
        "evicted {} of {flows} into {capacity}",
        stats.evicted
    );
    // The server answers the newest query and the oldest.
    let answer = |i: usize| {
        let (dst, dport) = client_of(i);
        frames::udp(RECEIVER_MAC, SENDER_MAC, RECEIVER_IPS[0], dst, 64, 53, dport, b"a")
    };
    place(&mut dp, &server, &client);
    assert_eq!(
        send(&mut dp, &answer(flows - 1)),
        TC_ACT_REDIRECT,
        "the newest flow's answer"
    );
    assert_eq!(send(&mut dp, &answer(0)), TC_ACT_SHOT, "the evicted flow's answer");
}

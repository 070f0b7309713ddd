//! Elastic IPs' translations (`alioth_common::nat`) against a model built with etherparse, for
//! random TCP, UDP (with and without a checksum), ICMP echo and ICMP errors quoting a datagram:
//! on the host, then the same frames through the kernel's NAT program (BPF_PROG_TEST_RUN), which
//! translates with the kernel's checksum helpers.

use std::sync::{Mutex, OnceLock};

use alioth::dataplane::object::NAT_TC_PROGRAM;
use alioth::dataplane::{AttachMode, Dataplane};
use alioth_common::maps::EndpointKey;
use alioth_common::nat;
use alioth_common::pipeline::Action;
use alioth_common::Counter;
use alioth_tests::frames::{internet_checksum, Mac};
use alioth_tests::kernel::run_tc;
use alioth_tests::vectors::{self, MapTables, GW_MAC, IFINDEX, PEER_IP, PEER_MAC, UPLINK_MAC, VM_IP, VM_MAC, VNI};
use etherparse::{Icmpv4Type, PacketBuilder};
use proptest::prelude::*;

/// The vector VM's elastic IP (what the port at `IFINDEX` sends from).
const ELASTIC_IP: [u8; 4] = [198, 19, 0, 100];
/// The vector peer's (the local port the endpoints put at `IFINDEX`: where inbound frames go).
const PEER_ELASTIC_IP: [u8; 4] = [198, 19, 0, 101];
/// The router in front of the uplink: the source MAC of what comes from outside.
const ROUTER_MAC: Mac = [0x02, 0, 0xc6, 0x13, 0, 0xfe];
/// An interface that is no port: frames from it are the uplink's.
const UPLINK_IFINDEX: u32 = 2;

/// What a frame carries, as the model builds it.
#[derive(Clone, Debug)]
enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        payload: Vec<u8>,
    },
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
        no_checksum: bool,
    },
    Echo {
        id: u16,
        seq: u16,
        payload: Vec<u8>,
    },
    EchoReply {
        id: u16,
        seq: u16,
        payload: Vec<u8>,
    },
    /// Port unreachable about a UDP datagram between these ports (its addresses: the frame's,
    /// the other way round).
    Unreachable {
        sport: u16,
        dport: u16,
    },
}

fn l4() -> impl Strategy<Value = L4> {
    let payload = || prop::collection::vec(any::<u8>(), 0..200);
    prop_oneof![
        (any::<u16>(), any::<u16>(), any::<u32>(), payload()).prop_map(|(sport, dport, seq, payload)| L4::Tcp {
            sport,
            dport,
            seq,
            payload
        }),
        (any::<u16>(), any::<u16>(), payload(), any::<bool>()).prop_map(|(sport, dport, payload, no_checksum)| {
            L4::Udp {
                sport,
                dport,
                payload,
                no_checksum,
            }
        }),
        (any::<u16>(), any::<u16>(), payload()).prop_map(|(id, seq, payload)| L4::Echo { id, seq, payload }),
        (any::<u16>(), any::<u16>()).prop_map(|(sport, dport)| L4::Unreachable { sport, dport }),
    ]
}

/// The first 28 bytes of a UDP datagram from `src` to `dst`, as an ICMP error quotes them.
fn quote(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src, dst, 64).udp(sport, dport);
    let mut out = Vec::new();
    b.write(&mut out, &[7; 16]).expect("write the quoted datagram");
    out.truncate(28);
    out
}

/// `quoted` with its address at `at` (12: source, 16: destination) set to `ip` and its header
/// checksum made right again; the quoted UDP checksum is left as it was.
fn requote(quoted: &[u8], at: usize, ip: [u8; 4]) -> Vec<u8> {
    let mut q = quoted.to_vec();
    q[at..at + 4].copy_from_slice(&ip);
    q[10..12].copy_from_slice(&[0, 0]);
    let csum = internet_checksum(&q[..20]);
    q[10..12].copy_from_slice(&csum.to_be_bytes());
    q
}

fn frame(macs: (Mac, Mac), src: [u8; 4], dst: [u8; 4], ttl: u8, l4: &L4, quoted: &[u8]) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(macs.0, macs.1).ipv4(src, dst, ttl);
    let mut out = Vec::new();
    match l4 {
        L4::Tcp {
            sport,
            dport,
            seq,
            payload,
        } => ip.tcp(*sport, *dport, *seq, 4096).write(&mut out, payload),
        L4::Udp {
            sport,
            dport,
            payload,
            no_checksum,
        } => {
            ip.udp(*sport, *dport).write(&mut out, payload).expect("write UDP");
            if *no_checksum {
                out[40..42].copy_from_slice(&[0, 0]);
            }
            Ok(())
        }
        L4::Echo { id, seq, payload } => ip.icmpv4_echo_request(*id, *seq).write(&mut out, payload),
        L4::EchoReply { id, seq, payload } => ip.icmpv4_echo_reply(*id, *seq).write(&mut out, payload),
        L4::Unreachable { .. } => ip
            .icmpv4(Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ))
            .write(&mut out, quoted),
    }
    .expect("write the frame");
    out
}

fn elastic_ips() -> [([u8; 4], EndpointKey); 2] {
    [
        (ELASTIC_IP, EndpointKey { vni: VNI, ip: VM_IP }),
        (PEER_ELASTIC_IP, EndpointKey { vni: VNI, ip: PEER_IP }),
    ]
}

/// A port address without an elastic IP, at `IFINDEX` (`SNAT_MAC`): what SNAT translates.
const SNAT_IP: [u8; 4] = [198, 18, 0, 77];
const SNAT_MAC: Mac = [0x02, 0, 0, 0, 0, 0x4d];

/// The vector subnet's rule out of the VPC (no next hop, outside it): what SNAT takes.
fn external_route() -> ((u32, [u8; 12]), alioth_common::maps::Route) {
    let key = vectors::routes::key([198, 19, 128, 0], 17);
    let route = alioth_common::maps::Route {
        kind: alioth_common::maps::route_kind::EXTERNAL,
        vni: VNI,
        router_mac: vectors::routes::ROUTER_MAC,
        ..Default::default()
    };
    (key, route)
}

fn snat_endpoint() -> (EndpointKey, alioth_common::maps::Endpoint) {
    let key = EndpointKey { vni: VNI, ip: SNAT_IP };
    let endpoint = alioth_common::maps::Endpoint {
        mac: SNAT_MAC,
        kind: alioth_common::maps::endpoint_kind::LOCAL_PORT,
        ifindex: IFINDEX,
        ..Default::default()
    };
    (key, endpoint)
}

fn tables() -> MapTables {
    let mut t = MapTables::vectors();
    t.elastic_ips.extend(elastic_ips());
    t.routes.extend([external_route()]);
    t.endpoints.extend([snat_endpoint()]);
    t
}

fn dataplane() -> &'static Mutex<Dataplane> {
    static DP: OnceLock<Mutex<Dataplane>> = OnceLock::new();
    DP.get_or_init(|| {
        let (mut dp, _) = Dataplane::load(None, AttachMode::Auto).expect("load the XDP object (run as root)");
        vectors::program(&mut dp).unwrap();
        dp.write_elastic_ips(elastic_ips().into()).unwrap();
        let routes = vectors::routes::routes().into_iter().chain([external_route()]);
        dp.set_routes(routes.collect()).unwrap();
        let (key, endpoint) = snat_endpoint();
        dp.upsert_endpoint(key, endpoint).unwrap();
        Mutex::new(dp)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// From outside to an elastic IP: to its port's address, from its gateway, one hop further.
    #[test]
    fn inbound_translations_match_the_model(l4 in l4(), remote in any::<[u8; 2]>(), ttl in 1u8..) {
        let remote = [198, 19, remote[0], remote[1]];
        let (q_in, q_out) = match &l4 {
            L4::Unreachable { sport, dport, .. } => {
                let q = quote(PEER_ELASTIC_IP, remote, *sport, *dport);
                (q.clone(), requote(&q, 12, PEER_IP))
            }
            _ => (Vec::new(), Vec::new()),
        };
        let input = frame((ROUTER_MAC, UPLINK_MAC), remote, PEER_ELASTIC_IP, ttl, &l4, &q_in);
        let mut host = input.clone();
        let verdict = nat::inbound(&mut host, &tables());
        if ttl == 1 {
            prop_assert_eq!(verdict.counter, Counter::DropTtlExpired);
        } else {
            prop_assert_eq!((verdict.action, verdict.counter, verdict.ifindex), (Action::Redirect, Counter::NatIn, IFINDEX));
            let model = frame((GW_MAC, PEER_MAC), remote, PEER_IP, ttl - 1, &l4, &q_out);
            prop_assert_eq!(&host, &model, "{:?}", l4);
        }
        let mut dp = dataplane().lock().unwrap();
        let (action, out) = run_tc(dp.tc_program(NAT_TC_PROGRAM).unwrap(), &input, UPLINK_IFINDEX, 0);
        prop_assert_eq!(action, alioth::dataplane::test_run::tc_action(verdict.action));
        prop_assert_eq!(out, host, "the kernel's translation, {:?}", l4);
    }

    /// From the VM to outside: from the elastic IP, one hop further (the MACs are the next hop's,
    /// which the kernel looks up after the translation).
    #[test]
    fn outbound_translations_match_the_model(l4 in l4(), remote in (100u8.., any::<u8>()), ttl in 1u8..) {
        // Where the vector subnet's routes go nowhere (its rules take 198.19.7-9.0/24).
        let remote = [198, 19, remote.0, remote.1];
        let (q_in, q_out) = match &l4 {
            L4::Unreachable { sport, dport, .. } => {
                let q = quote(remote, VM_IP, *sport, *dport);
                (q.clone(), requote(&q, 16, ELASTIC_IP))
            }
            _ => (Vec::new(), Vec::new()),
        };
        let input = frame((VM_MAC, GW_MAC), VM_IP, remote, ttl, &l4, &q_in);
        let mut host = input.clone();
        let result = nat::outbound(&mut host, &vectors::port(), &tables());
        if ttl == 1 {
            prop_assert_eq!(result, Err(Counter::DropTtlExpired));
        } else {
            prop_assert_eq!(result, Ok(remote));
            let model = frame((VM_MAC, GW_MAC), ELASTIC_IP, remote, ttl - 1, &l4, &q_out);
            prop_assert_eq!(&host, &model, "{:?}", l4);
        }
        let mut dp = dataplane().lock().unwrap();
        let (_, out) = run_tc(dp.tc_program(NAT_TC_PROGRAM).unwrap(), &input, IFINDEX, 0);
        prop_assert_eq!(&out[12..], &host[12..], "the kernel's translation, {:?}", l4);
    }
}

thread_local! {
    /// The host's SNAT flows across the cases, as the kernel's maps keep theirs.
    static SNAT_TABLES: MapTables = tables();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Out of the VPC by a rule, from an address without an elastic IP: from the uplink's address
    /// and a port of the host's; and the reply, or an ICMP error about it, back to the port's
    /// address and port.
    #[test]
    fn snat_matches_the_model_both_ways(l4 in l4(), remote in (128u8.., any::<u8>())) {
        let remote = [198, 19, remote.0, remote.1];
        let (sport, dport) = match &l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport, .. } => (*sport, *dport),
            L4::Echo { id, .. } => (*id, 0),
            // Errors and replies are no flows of their own.
            _ => return Ok(()),
        };
        let input = frame((SNAT_MAC, GW_MAC), SNAT_IP, remote, 64, &l4, &[]);
        let mut host = input.clone();
        let result = SNAT_TABLES.with(|t| nat::outbound(&mut host, &vectors::port(), t));
        prop_assert_eq!(result, Ok(remote));
        // The host's port, read from the translated frame: in the range; the model with it.
        let port_at = if matches!(l4, L4::Echo { .. }) { 38 } else { 34 };
        let host_port = u16::from_be_bytes([host[port_at], host[port_at + 1]]);
        prop_assert!(host_port >= alioth_common::snat::PORT_MIN);
        let model = frame((SNAT_MAC, GW_MAC), vectors::UPLINK_IP, remote, 63, &with_port(&l4, host_port), &[]);
        prop_assert_eq!(&host, &model, "{:?}", l4);
        let mut dp = dataplane().lock().unwrap();
        let (_, out) = run_tc(dp.tc_program(NAT_TC_PROGRAM).unwrap(), &input, IFINDEX, 0);
        prop_assert_eq!(&out[12..], &host[12..], "the kernel's translation, {:?}", l4);
        // The reply, to the host's address and port, goes back to the port's address and port.
        let reply = frame((ROUTER_MAC, UPLINK_MAC), remote, vectors::UPLINK_IP, 64, &reply_of(&l4, host_port, dport), &[]);
        let mut back = reply.clone();
        let verdict = SNAT_TABLES.with(|t| nat::inbound(&mut back, t));
        prop_assert_eq!((verdict.action, verdict.counter), (Action::Redirect, Counter::NatIn));
        let model = frame((GW_MAC, SNAT_MAC), remote, SNAT_IP, 63, &reply_of(&l4, sport, dport), &[]);
        prop_assert_eq!(&back, &model, "{:?}", l4);
        let (action, out) = run_tc(dp.tc_program(NAT_TC_PROGRAM).unwrap(), &reply, UPLINK_IFINDEX, 0);
        prop_assert_eq!(action, alioth::dataplane::test_run::TC_ACT_REDIRECT);
        prop_assert_eq!(out, back, "the kernel's way back, {:?}", l4);
        // An ICMP error from a router on the way about the datagram the host sent goes to the
        // port, quoting it as the port sent it: its address and port (the quoted transport
        // checksum as it was).
        let router = [198, 19, remote[2], 254];
        let sent = &host[14..42];
        let unreachable = L4::Unreachable { sport: 0, dport: 0 };
        let error = frame((ROUTER_MAC, UPLINK_MAC), router, vectors::UPLINK_IP, 64, &unreachable, sent);
        let mut back = error.clone();
        let verdict = SNAT_TABLES.with(|t| nat::inbound(&mut back, t));
        prop_assert_eq!((verdict.action, verdict.counter), (Action::Redirect, Counter::NatIn));
        let mut quote = requote(sent, 12, SNAT_IP);
        quote[port_at - 14..port_at - 12].copy_from_slice(&sport.to_be_bytes());
        let model = frame((GW_MAC, SNAT_MAC), router, SNAT_IP, 63, &unreachable, &quote);
        prop_assert_eq!(&back, &model, "the error, {:?}", l4);
        let (action, out) = run_tc(dp.tc_program(NAT_TC_PROGRAM).unwrap(), &error, UPLINK_IFINDEX, 0);
        prop_assert_eq!(action, alioth::dataplane::test_run::TC_ACT_REDIRECT);
        prop_assert_eq!(out, back, "the kernel's way back of the error, {:?}", l4);
    }
}

/// `l4` from the host's port `port` (TCP and UDP: the source port; echo: the identifier).
fn with_port(l4: &L4, port: u16) -> L4 {
    match l4.clone() {
        L4::Tcp {
            dport, seq, payload, ..
        } => L4::Tcp {
            sport: port,
            dport,
            seq,
            payload,
        },
        L4::Udp {
            dport,
            payload,
            no_checksum,
            ..
        } => L4::Udp {
            sport: port,
            dport,
            payload,
            no_checksum,
        },
        L4::Echo { seq, payload, .. } => L4::Echo { id: port, seq, payload },
        other => other,
    }
}

/// The remote end's answer to `l4` (from its port `dport`) sent to port `to` (an echo reply for
/// an echo).
fn reply_of(l4: &L4, to: u16, dport: u16) -> L4 {
    match l4.clone() {
        L4::Tcp { seq, payload, .. } => L4::Tcp {
            sport: dport,
            dport: to,
            seq,
            payload,
        },
        L4::Udp {
            payload, no_checksum, ..
        } => L4::Udp {
            sport: dport,
            dport: to,
            payload,
            no_checksum,
        },
        L4::Echo { seq, payload, .. } => L4::EchoReply { id: to, seq, payload },
        other => other,
    }
}

/// A source without an elastic IP, and a frame to an address that is none, are not translated.
#[test]
fn what_has_no_elastic_ip_is_dropped_untouched() {
    let l4 = L4::Echo {
        id: 1,
        seq: 1,
        payload: vec![0; 8],
    };
    let other = [198, 18, 0, 77];
    let from_vm = frame((VM_MAC, GW_MAC), other, [198, 19, 0, 50], 64, &l4, &[]);
    let mut host = from_vm.clone();
    let mut port = vectors::port();
    port.ip = other;
    assert_eq!(nat::outbound(&mut host, &port, &tables()), Err(Counter::DropNoRoute));
    assert_eq!(host, from_vm);
    let to_other = frame(
        (ROUTER_MAC, UPLINK_MAC),
        [198, 19, 0, 50],
        [198, 19, 0, 102],
        64,
        &l4,
        &[],
    );
    let mut host = to_other.clone();
    assert_eq!(nat::inbound(&mut host, &tables()).counter, Counter::DropNatNoPort);
    assert_eq!(host, to_other);
    let mut dp = dataplane().lock().unwrap();
    let (action, out) = run_tc(dp.tc_program(NAT_TC_PROGRAM).unwrap(), &to_other, UPLINK_IFINDEX, 0);
    assert_eq!((action, out), (alioth::dataplane::test_run::TC_ACT_SHOT, to_other));
}

//! The compiled XDP object in the real kernel, through BPF_PROG_TEST_RUN: every test vector must
//! give the same verdict, counter and bytes as on the host.

use alioth::dataplane::test_run::xdp_action;
use alioth::dataplane::{AttachMode, Dataplane};
use alioth_common::maps::{endpoint_kind, Endpoint, EndpointKey, PortEntry, MAX_DHCP};
use alioth_common::Counter;
use alioth_tests::frames;
use alioth_tests::kernel::{counter, run_program, vector_dataplane};
use alioth_tests::vectors::{self, *};
use aya::programs::{TestRun, TestRunOptions};
use proptest::prelude::*;

/// Runs one frame through the port program; returns the XDP action and the frame as the program
/// left it.
fn run(dp: &mut Dataplane, frame: &[u8]) -> (u32, Vec<u8>) {
    run_program(dp.program().unwrap(), frame)
}

#[test]
fn vectors_in_the_kernel() {
    check_cases(vectors::cases(), run);
}

#[test]
fn uplink_vectors_in_the_kernel() {
    check_cases(vectors::uplink_cases(), |dp, f| {
        run_program(dp.uplink_program().unwrap(), f)
    });
}

/// Where the way out runs no XDP (not in `REDIRECT`: a veth on the skb path alone), XDP leaves a
/// frame it would forward there to the skb path, untouched, and counts it; answers stay in XDP.
#[test]
fn frames_for_an_interface_without_xdp_are_left_to_the_skb_path() {
    use alioth::dataplane::test_run::{XDP_PASS, XDP_TX};
    let mut dp = vector_dataplane().lock().unwrap();
    let to_peer = vectors::udp_from_port(PEER_MAC, PEER_IP, 18);
    let cases = [
        ("switched to a local port", to_peer.clone(), false),
        ("encapsulated", vectors::udp_from_port(REMOTE_MAC, REMOTE_IP, 18), false),
        ("decapsulated", vectors::vxlan_to_peer(VNI, &to_peer), true),
    ];
    // Every way out of the vectors is IFINDEX.
    dp.remove_redirect(IFINDEX);
    let mut runs = Vec::new();
    for (name, frame, from_uplink) in &cases {
        let before = counter(&dp, Counter::SkbPath);
        let (action, out) = match from_uplink {
            true => run_program(dp.uplink_program().unwrap(), frame),
            false => run(&mut dp, frame),
        };
        runs.push((
            *name,
            frame.clone(),
            action,
            out,
            counter(&dp, Counter::SkbPath) - before,
        ));
    }
    let gateway = run(&mut dp, &frames::arp_request(VM_MAC, VM_IP, GW_IP)).0;
    dp.add_redirect(IFINDEX).unwrap();
    for (name, frame, action, out, counted) in runs {
        assert_eq!(action, XDP_PASS, "{name}");
        assert_eq!(out, frame, "{name}: untouched");
        assert_eq!(counted, 1, "{name}: counted as skb_path");
    }
    assert_eq!(gateway, XDP_TX, "ARP for the gateway is answered in XDP");
}

/// The skb path (the TC programs) in the kernel gives, for every vector, the verdict and bytes the
/// host's run of the same pipeline gives; and what XDP leaves to it, it forwards.
#[test]
fn skb_path_vectors_in_the_kernel() {
    use alioth::dataplane::object::{PORT_TC_PROGRAM, UPLINK_TC_PROGRAM};
    use alioth_common::pipeline::{port_ingress_skb, uplink_ingress_skb, Action};
    let mut dp = vector_dataplane().lock().unwrap();
    let tables = MapTables::vectors();
    let paths: [(&str, Vec<Case>); 2] = [
        (PORT_TC_PROGRAM, vectors::cases()),
        (UPLINK_TC_PROGRAM, vectors::uplink_cases()),
    ];
    let mut left_to_skb = 0;
    for (program, cases) in paths {
        // An skb test run refuses frames shorter than an Ethernet and an IPv4 header.
        for case in cases.into_iter().filter(|c| c.frame.len() >= 34) {
            let mut host = case.frame.clone();
            let verdict = match program {
                PORT_TC_PROGRAM => port_ingress_skb(&mut host, &vectors::port(), &tables),
                _ => uplink_ingress_skb(&mut host[..], &tables),
            };
            // What the NAT program the port program hands it to does (the vectors' sources have
            // no elastic IP: it drops them).
            let verdict = match verdict.action {
                Action::Nat => match alioth_common::nat::outbound(&mut host, &vectors::port(), &tables) {
                    Err(reason) => alioth_common::pipeline::Verdict::drop_with(reason),
                    Ok(_) => panic!("{}: no vector source has an elastic IP", case.name),
                },
                _ => verdict,
            };
            let (action, out) = alioth_tests::kernel::run_tc(dp.tc_program(program).unwrap(), &case.frame, IFINDEX, 0);
            assert_eq!(
                action,
                alioth::dataplane::test_run::tc_action(verdict.action),
                "{program}: {}: TC action",
                case.name
            );
            assert_eq!(
                out,
                vectors::finish(&verdict, &host),
                "{program}: {}: output bytes",
                case.name
            );
            // Without its segment size a super-frame is one frame too big for the overlay: below.
            if case.counter == Counter::SkbPath && verdict.counter == Counter::DropNoRoute {
                assert!(case.name.contains("NAT program"), "{}", case.name);
            } else if case.counter == Counter::SkbPath && !case.name.contains("super-frame") {
                left_to_skb += 1;
                assert!(
                    matches!(verdict.action, Action::Encap | Action::Redirect | Action::Decap),
                    "{}: the skb path forwards it ({:?})",
                    case.name,
                    verdict.action
                );
            }
        }
    }
    assert!(left_to_skb >= 4, "vectors XDP leaves to the skb path: {left_to_skb}");

    // A TCP super-frame is judged by its segments: whole (the kernel segments it later) when they
    // fit the overlay, dropped when they would not. Test runs build GSO skbs without a GSO type,
    // which bpf_skb_adjust_room refuses, so in the kernel the decision shows in the counter: an
    // encapsulation tried (and refused: drop_redirect_failed) or the frame judged too big.
    let data: Vec<u8> = (0..2800).map(|i| i as u8).collect();
    let frame = frames::offloaded(frames::tcp(VM_MAC, REMOTE_MAC, VM_IP, REMOTE_IP, 40000, 5201, &data));
    for (gso, expected, kernel_counter) in [
        (1398, Action::Encap, Counter::DropRedirectFailed),
        (1411, Action::Drop, Counter::DropOverlayTooBig),
    ] {
        let mut host = frame.clone();
        let verdict = port_ingress_skb(&mut vectors::Gso(&mut host[..], gso), &vectors::port(), &tables);
        assert_eq!(verdict.action, expected, "gso_size {gso}");
        let before = counter(&dp, kernel_counter);
        let tc = dp.tc_program(PORT_TC_PROGRAM).unwrap();
        let (action, _) = alioth_tests::kernel::run_tc(tc, &frame, IFINDEX, gso as u32);
        assert_eq!(action, 2, "gso_size {gso}: TC action");
        assert_eq!(
            counter(&dp, kernel_counter),
            before + 1,
            "gso_size {gso}: {}",
            kernel_counter.name()
        );
    }
}

fn check_cases(cases: Vec<Case>, run: impl Fn(&mut Dataplane, &[u8]) -> (u32, Vec<u8>)) {
    let mut dp = vector_dataplane().lock().unwrap();
    for case in cases {
        if case.frame.len() < 14 {
            // The kernel never hands XDP a frame shorter than an Ethernet header; test runs refuse it.
            let mut out = vec![0u8; 64];
            let opts = TestRunOptions {
                data_in: Some(&case.frame),
                data_out: Some(&mut out),
                ..Default::default()
            };
            assert!(
                dp.program().unwrap().test_run(opts).is_err(),
                "{}: the kernel refuses runts",
                case.name
            );
            continue;
        }
        let before = counter(&dp, case.counter);
        let (action, out) = run(&mut dp, &case.frame);
        assert_eq!(action, xdp_action(case.action), "{}: XDP action", case.name);
        match &case.output {
            Some(expected) => assert_eq!(&out, expected, "{}: output bytes", case.name),
            None => assert_eq!(out, case.frame, "{}: frame must be untouched", case.name),
        }
        assert_eq!(
            counter(&dp, case.counter),
            before + 1,
            "{}: counter {}",
            case.name,
            case.counter.name()
        );
    }
}

#[test]
fn unknown_ingress_interface_is_passed_and_counted() {
    let (mut dp, _) = Dataplane::load(None, AttachMode::Auto).unwrap();
    let (action, out) = run(&mut dp, &frames::arp_request(VM_MAC, VM_IP, GW_IP));
    assert_eq!(action, 2, "XDP_PASS");
    assert_eq!(out, frames::arp_request(VM_MAC, VM_IP, GW_IP));
    assert_eq!(counter(&dp, Counter::DropUnknownPort), 1);
}

#[test]
fn other_vpc_with_the_same_gateway_ip_answers_with_its_own_mac() {
    let (mut dp, _) = Dataplane::load(None, AttachMode::Auto).unwrap();
    let mut port = vectors::port();
    port.vni = 200;
    port.gateway_mac = OTHER_VPC_GW_MAC;
    dp.set_port_entry(vectors::IFINDEX, port).unwrap();
    for (k, v) in vectors::endpoints() {
        dp.upsert_endpoint(k, v).unwrap();
    }
    let (action, out) = run(&mut dp, &frames::arp_request(VM_MAC, VM_IP, GW_IP));
    assert_eq!(action, 3);
    assert_eq!(out, frames::arp_reply(VM_MAC, VM_IP, OTHER_VPC_GW_MAC, GW_IP));
    // 198.18.0.11 exists only in VNI 100.
    let (action, _) = run(&mut dp, &frames::arp_request(VM_MAC, VM_IP, PEER_IP));
    assert_eq!(action, 1, "no answer across VPCs");
}

/// A write large enough to be split across CPUs puts every entry in, and a second one replaces
/// every value.
#[test]
fn a_large_endpoint_write_reaches_every_entry() {
    let (mut dp, _) = Dataplane::load(None, AttachMode::Auto).unwrap();
    let entries = |kind: u8| {
        (0..10_000u32).map(move |i| {
            let key = EndpointKey {
                vni: 300 + i % 3,
                ip: (0xC612_0000 + i).to_be_bytes(),
            };
            let b = i.to_be_bytes();
            let value = Endpoint {
                mac: [2, 0, b[0], b[1], b[2], b[3]],
                kind,
                host_ip: [198, 19, 0, (i % 250) as u8],
                ..Default::default()
            };
            (key, value)
        })
    };
    for kind in [endpoint_kind::REMOTE_PORT, endpoint_kind::GATEWAY] {
        let failed = dp.upsert_endpoints(entries(kind));
        assert!(
            failed.is_empty(),
            "{} entries failed, first: {:#}",
            failed.len(),
            failed[0].1
        );
        for (k, v) in entries(kind) {
            assert_eq!(dp.endpoint(&k).unwrap(), Some(v), "{k:?}");
        }
    }
}

/// The programs cache destinations per CPU: every change the agent makes to an endpoint or a next
/// hop must reach the very next frame.
#[test]
fn dhcp_entries_change_through_fresh_slots() {
    let (mut dp, _) = Dataplane::load(None, AttachMode::Auto).unwrap();
    vectors::program(&mut dp).unwrap();
    let request = alioth_tests::dhcp::Request::new(dhcproto::v4::MessageType::Discover).frame();
    let yiaddr = |out: &[u8]| out[alioth_common::dhcp::BOOTP + 16..][..4].to_vec();
    let (action, out) = run(&mut dp, &request);
    assert_eq!((action, yiaddr(&out)), (3, VM_IP.to_vec()));
    // A changed entry goes to a fresh slot; the port then points at it.
    let mut moved = vectors::dhcp_entry();
    moved.ip = [198, 18, 0, 77];
    let slot = dp.add_dhcp(&moved, Some(DHCP_SLOT)).unwrap();
    assert_ne!(slot, DHCP_SLOT);
    let (_, out) = run(&mut dp, &request);
    assert_eq!(yiaddr(&out), VM_IP.to_vec(), "the old slot is untouched");
    dp.set_port_entry(
        IFINDEX,
        PortEntry {
            dhcp_slot: slot,
            ..vectors::port()
        },
    )
    .unwrap();
    let (action, out) = run(&mut dp, &request);
    assert_eq!((action, yiaddr(&out)), (3, moved.ip.to_vec()));
    // Slot 0: no DHCP.
    dp.set_port_entry(
        IFINDEX,
        PortEntry {
            dhcp_slot: 0,
            ..vectors::port()
        },
    )
    .unwrap();
    assert_eq!(run(&mut dp, &request).0, 1);
    assert_eq!(counter(&dp, Counter::DropDhcpDisabled), 1);
    // Every slot taken: a port's own slot is rewritten in place; a new port gets an error.
    for _ in 3..MAX_DHCP {
        dp.add_dhcp(&moved, None).unwrap();
    }
    assert_eq!(dp.add_dhcp(&moved, Some(slot)).unwrap(), slot);
    let err = dp.add_dhcp(&moved, None).unwrap_err();
    assert!(format!("{err:#}").contains("in use"), "{err:#}");
}

#[test]
fn destination_changes_reach_the_next_frame() {
    let (mut dp, _) = Dataplane::load(None, AttachMode::Auto).unwrap();
    vectors::program(&mut dp).unwrap();
    let frame = udp_from_port(REMOTE_MAC, REMOTE_IP, 18);
    // Outer destination MAC and IP of an encapsulated frame.
    let outer = |out: &[u8]| (out[0..6].to_vec(), out[30..34].to_vec());
    let key = EndpointKey {
        vni: VNI,
        ip: REMOTE_IP,
    };
    for _ in 0..2 {
        let (action, out) = run(&mut dp, &frame);
        assert_eq!(action, 4, "redirected to the uplink");
        assert_eq!(outer(&out), (REMOTE_HOST_MAC.to_vec(), REMOTE_HOST.to_vec()));
    }
    let new_mac = [0x02, 0, 0xc6, 0x13, 0, 0x22];
    dp.set_next_hop(REMOTE_HOST, new_mac).unwrap();
    assert_eq!(
        outer(&run(&mut dp, &frame).1),
        (new_mac.to_vec(), REMOTE_HOST.to_vec()),
        "new next hop"
    );

    // The port moves to another host.
    let other_host = [198, 19, 0, 4];
    let other_mac = [0x02, 0, 0xc6, 0x13, 0, 4];
    dp.set_next_hop(other_host, other_mac).unwrap();
    let moved = Endpoint {
        mac: REMOTE_MAC,
        kind: endpoint_kind::REMOTE_PORT,
        host_ip: other_host,
        ..Default::default()
    };
    dp.upsert_endpoint(key, moved).unwrap();
    assert_eq!(
        outer(&run(&mut dp, &frame).1),
        (other_mac.to_vec(), other_host.to_vec()),
        "moved"
    );
    dp.remove_next_hop(&other_host).unwrap();
    let before = counter(&dp, Counter::DropNoNextHop);
    assert_eq!(run(&mut dp, &frame).0, 1, "its host's next hop is gone");
    assert_eq!(counter(&dp, Counter::DropNoNextHop), before + 1);

    dp.remove_endpoint(&key).unwrap();
    let before = counter(&dp, Counter::DropUnknownDestination);
    assert_eq!(run(&mut dp, &frame).0, 1, "deleted");
    assert_eq!(counter(&dp, Counter::DropUnknownDestination), before + 1);

    // Decapsulation caches the same way: the local port's address, then gone.
    let vx = vxlan_to_peer(VNI, &udp_from_port(PEER_MAC, PEER_IP, 18));
    for _ in 0..2 {
        assert_eq!(run_program(dp.uplink_program().unwrap(), &vx).0, 4, "decapsulated");
    }
    // The port goes: its address, and its MAC, which would still take routed frames.
    dp.remove_endpoint(&EndpointKey { vni: VNI, ip: PEER_IP }).unwrap();
    dp.unset_local((VNI, PEER_MAC));
    assert_eq!(
        run_program(dp.uplink_program().unwrap(), &vx).0,
        2,
        "unknown now: passed"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn kernel_answers_any_echo_request_exactly(payload in prop::collection::vec(any::<u8>(), 0..1472), id in any::<u16>(), seq in any::<u16>()) {
        let mut dp = vector_dataplane().lock().unwrap();
        let frame = frames::echo_request(VM_MAC, GW_MAC, VM_IP, GW_IP, id, seq, &payload);
        let (action, out) = run(&mut dp, &frame);
        prop_assert_eq!(action, 3);
        prop_assert!(frames::icmp_checksums_ok(&out));
        prop_assert_eq!(out, frames::echo_reply(VM_MAC, GW_MAC, VM_IP, GW_IP, id, seq, &payload));
    }

    #[test]
    fn kernel_survives_arbitrary_bytes(mut frame in prop::collection::vec(any::<u8>(), 14..300), kind in 0u8..3) {
        match kind {
            0 => frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes()),
            1 => frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes()),
            _ => {}
        }
        let mut dp = vector_dataplane().lock().unwrap();
        let (action, out) = run(&mut dp, &frame);
        prop_assert!((1..=3).contains(&action));
        if action != 3 {
            prop_assert_eq!(out, frame);
        }
    }
}

/// The verifier gives a program a budget of 1,000,000 walked instructions; each program must keep
/// headroom, so that a new packet path or another kernel's verifier does not stop the agent from
/// loading. The port program, where new paths go, has the DHCP server (nearly all of what the
/// verifier walked when it was inline) in a program of its own, tail-called.
#[test]
fn programs_keep_verifier_headroom() {
    use alioth::dataplane::object::{DHCP_PROGRAM, DHCP_TC_PROGRAM, NAT_TC_PROGRAM, PORT_TC_PROGRAM};
    let walked = |info: Result<aya::programs::ProgramInfo, aya::programs::ProgramError>| {
        info.unwrap()
            .verified_instruction_count()
            .expect("the kernel reports verified instructions")
    };
    // Counted with the lock held, asserted after it is released: a failure here must not poison
    // the data plane the other tests share.
    let (port, dhcp, port_tc, dhcp_tc, nat) = {
        let mut dp = vector_dataplane().lock().unwrap();
        (
            walked(dp.program().unwrap().info()),
            walked(dp.loaded_program(DHCP_PROGRAM).unwrap().info()),
            walked(dp.tc_program(PORT_TC_PROGRAM).unwrap().info()),
            walked(dp.tc_program(DHCP_TC_PROGRAM).unwrap().info()),
            walked(dp.tc_program(NAT_TC_PROGRAM).unwrap().info()),
        )
    };
    eprintln!(
        "verified instructions: port program {port} (TC {port_tc}), DHCP server {dhcp} (TC {dhcp_tc}), NAT {nat}"
    );
    // The TC port program's count moves with codegen alone: the same sources built in two
    // checkouts (other paths, so other symbol hashes and inlining) walked 370k and 463k.
    for (what, walked, bound) in [
        ("port program", port, 400_000),
        ("port program (TC)", port_tc, 700_000),
        ("DHCP server", dhcp, 920_000),
        ("DHCP server (TC)", dhcp_tc, 920_000),
        ("NAT program", nat, 400_000),
    ] {
        assert!(
            walked < bound,
            "the verifier walked {walked} instructions of the {what}"
        );
    }
}

/// A port whose subnet has no gateway (the agent writes it all zero) routes nothing through a
/// gateway MAC, not even an all-zero one: in the kernel as on the host.
#[test]
fn a_port_without_a_gateway_routes_nothing() {
    use alioth_common::pipeline::port_ingress;
    let mut dp = vector_dataplane().lock().unwrap();
    let alone = PortEntry {
        gateway_ip: [0; 4],
        gateway_mac: [0; 6],
        ..vectors::port()
    };
    dp.set_port_entry(IFINDEX, alone).unwrap();
    let frames = [
        (
            "routed through the old gateway MAC",
            vectors::udp_from_port(GW_MAC, PEER_IP, 32),
        ),
        (
            "routed through an all-zero MAC",
            vectors::udp_from_port([0; 6], PEER_IP, 32),
        ),
    ];
    for (name, frame) in frames {
        let verdict = port_ingress(&mut frame.clone()[..], &alone, &MapTables::vectors());
        assert_eq!(verdict.counter, Counter::DropUnknownDestination, "host: {name}");
        let before = counter(&dp, Counter::DropUnknownDestination);
        let (action, _) = run(&mut dp, &frame);
        assert_eq!(action, xdp_action(verdict.action), "kernel: {name}");
        assert_eq!(
            counter(&dp, Counter::DropUnknownDestination),
            before + 1,
            "kernel: {name}"
        );
    }
    // Switched to the peer's own MAC, it still goes.
    let (action, _) = run(&mut dp, &vectors::udp_from_port(PEER_MAC, PEER_IP, 32));
    assert_eq!(action, 4, "redirected");
    dp.set_port_entry(IFINDEX, vectors::port()).unwrap();
}

/// "Fragmentation needed" answers are rate-limited per port in the kernel: of a burst far past
/// the rate, at most the rate (twice, should a second begin meanwhile) is answered, and the rest
/// is dropped and counted. A data plane of its own: the shared one's vectors expect an answer.
#[test]
fn frag_needed_answers_are_rate_limited_per_port() {
    let (mut dp, _log) = Dataplane::load(None, AttachMode::Auto).expect("load the object");
    vectors::program(&mut dp).expect("program the vectors");
    let big = vectors::udp_from_port(REMOTE_MAC, REMOTE_IP, 1450 - 27);
    let count = |dp: &Dataplane| {
        (
            counter(dp, Counter::IcmpFragNeeded),
            counter(dp, Counter::DropFragNeededRateLimited),
        )
    };
    let (answered, held) = count(&dp);
    for _ in 0..250 {
        let (action, _) = run(&mut dp, &big);
        assert!(action == 1 || action == 3, "XDP action {action}");
    }
    let (answered, held) = (count(&dp).0 - answered, count(&dp).1 - held);
    assert_eq!(answered + held, 250);
    assert!(answered <= 200 && held >= 50, "{answered} answered, {held} held back");
}

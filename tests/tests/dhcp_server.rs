//! The DHCP server: every request the tests can think of, through the `no_std` pipeline on the
//! host and through the compiled XDP object in the kernel (BPF_PROG_TEST_RUN). Replies must decode
//! with dhcproto and say exactly what goal state says; host and kernel must agree byte for byte.

use alioth::dataplane::test_run::xdp_action;
use alioth_common::pipeline::{port_ingress, Action};
use alioth_common::Counter;
use alioth_tests::dhcp::{check_reply, Request};
use alioth_tests::kernel::{counter, run_program, vector_dataplane};
use alioth_tests::vectors::{self, MapTables, GW_IP, VM_IP, VM_MAC};
use dhcproto::v4::MessageType;
use proptest::prelude::*;

/// The host pipeline: (action, counter, frame after).
fn host(frame: &[u8]) -> (Action, Counter, Vec<u8>) {
    let mut buf = frame.to_vec();
    let v = port_ingress(&mut buf, &vectors::port(), &MapTables::vectors());
    (v.action, v.counter, buf)
}

/// The kernel: (XDP action, counter that moved, frame after).
fn kernel(frame: &[u8]) -> (u32, Counter, Vec<u8>) {
    let mut dp = vector_dataplane().lock().unwrap();
    let before = dp.counters().unwrap();
    let (action, out) = run_program(dp.program().unwrap(), frame);
    let after = dp.counters().unwrap();
    let moved: Vec<Counter> = after
        .iter()
        .zip(&before)
        .filter(|((_, a), (_, b))| a != b)
        .map(|((c, _), _)| *c)
        // Counts the agent's events, not frames: a DECLINE right after another is held back.
        .filter(|c| *c != Counter::EventSuppressed)
        .collect();
    assert_eq!(moved.len(), 1, "exactly one counter moves per frame: {moved:?}");
    (action, moved[0], out)
}

/// Runs `req` on the host and in the kernel and checks both against the expectation.
fn check(req: &Request) {
    let frame = req.frame();
    let (want, want_counter) = req.expected();
    let (action, c, out) = host(&frame);
    assert_eq!(c, want_counter, "host counter for {req:?}");
    match want {
        Some(_) => {
            assert_eq!(action, Action::Tx, "host answers {req:?}");
            check_reply(req, &out);
        }
        None => assert_eq!(action, Action::Drop, "host consumes {req:?}"),
    }
    let (k_action, k_counter, k_out) = kernel(&frame);
    assert_eq!(k_counter, want_counter, "kernel counter for {req:?}");
    assert_eq!(k_action, xdp_action(action), "kernel action for {req:?}");
    if want.is_some() {
        assert_eq!(k_out, out, "kernel and host replies differ for {req:?}");
    } else {
        assert_eq!(k_out, frame, "a consumed frame is left as it was");
    }
}

#[test]
fn discover_gets_an_offer() {
    check(&Request::new(MessageType::Discover));
    check(&Request {
        broadcast: true,
        ..Request::new(MessageType::Discover)
    });
}

#[test]
fn every_request_state_gets_its_answer() {
    let req = Request::new(MessageType::Request);
    // SELECTING: server id and requested address.
    check(&Request {
        server_id: Some(GW_IP),
        requested_ip: Some(VM_IP),
        ..req.clone()
    });
    // INIT-REBOOT: requested address only; a wrong one is NAKed.
    check(&Request {
        requested_ip: Some(VM_IP),
        ..req.clone()
    });
    check(&Request {
        requested_ip: Some([198, 18, 0, 77]),
        ..req.clone()
    });
    // RENEWING (unicast to the server) and REBINDING (broadcast): ciaddr.
    check(&Request {
        ciaddr: VM_IP,
        server_id: Some(GW_IP),
        ..req.clone()
    });
    check(&Request {
        ciaddr: VM_IP,
        ..req.clone()
    });
    // Another server's offer was taken: no answer.
    check(&Request {
        server_id: Some([198, 18, 0, 250]),
        requested_ip: Some(VM_IP),
        ..req.clone()
    });
    // Neither an address nor ciaddr: malformed.
    check(&req);
}

#[test]
fn inform_release_decline() {
    check(&Request {
        ciaddr: VM_IP,
        ..Request::new(MessageType::Inform)
    });
    check(&Request {
        ciaddr: VM_IP,
        server_id: Some(GW_IP),
        ..Request::new(MessageType::Release)
    });
    check(&Request {
        requested_ip: Some(VM_IP),
        server_id: Some(GW_IP),
        ..Request::new(MessageType::Decline)
    });
    check(&Request::new(MessageType::Offer));
}

#[test]
fn parameter_list_selects_the_extra_options() {
    for parameters in [
        None,
        Some(vec![]),
        Some(vec![1, 3]),
        Some(vec![42]),
        Some(vec![121, 1, 42]),
    ] {
        check(&Request {
            parameters,
            ..Request::new(MessageType::Discover)
        });
    }
}

#[test]
fn overload_client_id_and_unpadded_requests() {
    check(&Request {
        overload_file: true,
        requested_ip: Some(VM_IP),
        ..Request::new(MessageType::Request)
    });
    let mut id = vec![1];
    id.extend_from_slice(&VM_MAC);
    check(&Request {
        client_id: Some(id),
        ..Request::new(MessageType::Discover)
    });
    // A DUID-style identifier is opaque; a type-1 identifier of another MAC is not this port.
    check(&Request {
        client_id: Some(vec![255, 1, 2, 3, 4, 5, 6, 7, 8]),
        ..Request::new(MessageType::Discover)
    });
    check(&Request {
        client_id: Some(vec![1, 2, 0, 0, 0, 0, 0x99]),
        ..Request::new(MessageType::Discover)
    });
    check(&Request {
        pad: false,
        parameters: None,
        ..Request::new(MessageType::Discover)
    });
}

/// A relay on the port itself (giaddr = the port's address, as perfdhcp sends) is answered at
/// its server port; a giaddr that is not the port's is spoofing.
#[test]
fn relayed_by_the_port_itself() {
    let relayed = |msg_type, giaddr| Request {
        giaddr,
        ..Request::new(msg_type)
    };
    check(&relayed(MessageType::Discover, VM_IP));
    check(&Request {
        requested_ip: Some(VM_IP),
        server_id: Some(GW_IP),
        ..relayed(MessageType::Request, VM_IP)
    });
    check(&Request {
        requested_ip: Some([198, 18, 0, 77]),
        ..relayed(MessageType::Request, VM_IP)
    });
    let spoofed = relayed(MessageType::Discover, [198, 18, 0, 77]);
    assert_eq!(spoofed.expected(), (None, Counter::DropSpoofedIp));
    check(&spoofed);
}

#[test]
fn unknown_mac_gets_nothing() {
    // chaddr is not the port's MAC (the frame's source MAC is, or anti-spoofing drops it first).
    check(&Request {
        chaddr: [0x02, 0, 0, 0, 0, 0x77],
        ..Request::new(MessageType::Discover)
    });
}

#[test]
fn dhcp_disabled_gets_nothing() {
    let mut tables = MapTables::vectors();
    tables.dhcp.clear();
    let mut frame = Request::new(MessageType::Discover).frame();
    let v = port_ingress(&mut frame, &vectors::port(), &tables);
    assert_eq!((v.action, v.counter), (Action::Drop, Counter::DropDhcpDisabled));
}

#[test]
fn decline_reaches_the_event_ring() {
    // Counted in the kernel like any consumed frame; the event itself is read by the agent's
    // event task, which the netns test sees in the agent's metrics.
    let decline = Request {
        requested_ip: Some(VM_IP),
        ..Request::new(MessageType::Decline)
    };
    check(&decline);
    // Counted under one hold of the shared data plane: other tests send DECLINEs too.
    let mut dp = vector_dataplane().lock().unwrap();
    let before = counter(&dp, Counter::DhcpDecline);
    let (action, _) = run_program(dp.program().unwrap(), &decline.frame());
    assert_eq!(action, xdp_action(Action::Drop), "consumed");
    assert_eq!(counter(&dp, Counter::DhcpDecline), before + 1);
}

fn message_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::Discover),
        Just(MessageType::Request),
        Just(MessageType::Inform),
        Just(MessageType::Release),
        Just(MessageType::Decline),
        Just(MessageType::Ack),
        (9u8..=18).prop_map(MessageType::from),
    ]
}

fn address() -> impl Strategy<Value = [u8; 4]> {
    prop_oneof![Just(VM_IP), Just(GW_IP), Just([0; 4]), Just([198, 18, 0, 77])]
}

fn request() -> impl Strategy<Value = Request> {
    (
        message_type(),
        any::<u32>(),
        any::<bool>(),
        address(),
        proptest::option::of(address().prop_filter("non-zero", |a| *a != [0; 4])),
        proptest::option::of(address().prop_filter("non-zero", |a| *a != [0; 4])),
        proptest::option::of(proptest::collection::vec(
            any::<u8>().prop_filter("no pad/end", |c| *c != 0 && *c != 255),
            0..40,
        )),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![3 => Just([0; 4]), 1 => address()],
    )
        .prop_map(
            |(msg_type, xid, broadcast, ciaddr, requested_ip, server_id, parameters, overload, pad, giaddr)| Request {
                msg_type,
                xid,
                broadcast,
                ciaddr,
                giaddr,
                requested_ip,
                server_id,
                overload_file: overload && parameters.as_ref().is_none_or(|p| p.len() < 80),
                parameters,
                pad,
                ..Request::new(MessageType::Discover)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any request: host and kernel agree, and every reply decodes and matches goal state.
    #[test]
    fn any_request(req in request()) {
        check(&req);
    }

    /// Arbitrary bytes after the magic cookie never crash either side, and both agree.
    #[test]
    fn arbitrary_options(options in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut payload = Request::new(MessageType::Discover).payload();
        payload.truncate(240);
        payload.extend_from_slice(&options);
        let frame = alioth_tests::frames::udp(VM_MAC, [0xff; 6], [0; 4], [255; 4], 64, 68, 67, &payload);
        let (action, c, out) = host(&frame);
        let (k_action, k_counter, k_out) = kernel(&frame);
        prop_assert_eq!(k_counter, c);
        prop_assert_eq!(k_action, xdp_action(action));
        if action == Action::Tx {
            prop_assert_eq!(k_out, out);
        }
    }
}

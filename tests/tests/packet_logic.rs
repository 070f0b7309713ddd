//! Host tests of the `no_std` packet logic (the same code the XDP program runs), checked against
//! etherparse and a textbook checksum.

use alioth_common::checksum;
use alioth_common::pipeline::{port_ingress, uplink_ingress, Action, Verdict};
use alioth_common::Counter;
use alioth_tests::frames;
use alioth_tests::vectors::{self, *};
use proptest::prelude::*;

/// Frames are vectors, which can change length as the kernel's can ("fragmentation needed" is
/// shorter than what it answers).
fn run(frame: &mut Vec<u8>) -> Verdict {
    port_ingress(frame, &vectors::port(), &MapTables::vectors())
}

fn check_cases(cases: Vec<Case>, pipeline: impl Fn(&mut Vec<u8>) -> Verdict) {
    assert!(cases.len() >= 10);
    for case in cases {
        let mut frame = case.frame.clone();
        let v = pipeline(&mut frame);
        assert_eq!(
            (v.action, v.counter, v.ifindex),
            (case.action, case.counter, case.ifindex),
            "{}",
            case.name
        );
        let frame = vectors::finish(&v, &frame);
        match &case.output {
            Some(out) => assert_eq!(&frame, out, "{}: output bytes", case.name),
            None => assert_eq!(frame, case.frame, "{}: frame must be untouched", case.name),
        }
    }
}

#[test]
fn vectors_on_the_host() {
    check_cases(vectors::cases(), run);
}

#[test]
fn uplink_vectors_on_the_host() {
    check_cases(vectors::uplink_cases(), |f| uplink_ingress(f, &MapTables::vectors()));
}

proptest! {
    #[test]
    fn checksum_matches_textbook(data in prop::collection::vec(any::<u8>(), 4..1600), off in 0usize..8) {
        let len = data.len() - off.min(data.len() - 4);
        let start = data.len() - len;
        let sum = alioth_common::packet::sum_range::<[u8], 1600>(&data[..], start, len).unwrap();
        prop_assert_eq!(checksum::finish(sum), frames::internet_checksum(&data[start..]));
    }

    #[test]
    fn incremental_update_matches_recompute(mut data in prop::collection::vec(any::<u8>(), 8..64), word in 0usize..4, new in any::<u16>()) {
        let c = frames::internet_checksum(&data);
        let old = u16::from_be_bytes([data[2 * word], data[2 * word + 1]]);
        data[2 * word..2 * word + 2].copy_from_slice(&new.to_be_bytes());
        let updated = checksum::update16(c, old, new);
        // Both are valid one's complement encodings; compare what they verify to.
        let mut with = data.clone();
        with.extend_from_slice(&updated.to_be_bytes());
        let mut expect = data.clone();
        expect.extend_from_slice(&frames::internet_checksum(&data).to_be_bytes());
        prop_assert_eq!(frames::internet_checksum(&with), frames::internet_checksum(&expect));
    }

    #[test]
    fn any_echo_request_to_the_gateway_is_answered(payload in prop::collection::vec(any::<u8>(), 0..1472), id in any::<u16>(), seq in any::<u16>()) {
        let mut frame = frames::echo_request(VM_MAC, GW_MAC, VM_IP, GW_IP, id, seq, &payload);
        let v = run(&mut frame);
        prop_assert_eq!((v.action, v.counter), (Action::Tx, Counter::IcmpEchoReply));
        prop_assert!(frames::icmp_checksums_ok(&frame));
        prop_assert_eq!(frame, frames::echo_reply(VM_MAC, GW_MAC, VM_IP, GW_IP, id, seq, &payload));
    }

    #[test]
    fn any_corruption_of_an_echo_request_is_never_answered_wrongly(pos in 14usize..98, bit in 0u8..8) {
        let good = frames::echo_request(VM_MAC, GW_MAC, VM_IP, GW_IP, 1, 1, &vectors::ping_payload());
        let mut frame = good.clone();
        frame[pos] ^= 1 << bit;
        let v = run(&mut frame);
        if v.action == Action::Tx {
            // Only a flip the checksums cannot see (none for single bits) could be answered, and
            // then the answer must still be a well-formed reply.
            prop_assert!(frames::icmp_checksums_ok(&frame));
        }
        prop_assert!(v.action != Action::Tx || v.counter == Counter::IcmpEchoReply);
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut frame in prop::collection::vec(any::<u8>(), 0..200), arp in any::<bool>(), ip in any::<bool>()) {
        if frame.len() >= 14 {
            if arp { frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes()); }
            else if ip { frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes()); }
        }
        let before = frame.clone();
        let v = run(&mut frame);
        // Only replies and routed frames are rewritten.
        if !matches!(v.action, Action::Tx | Action::Redirect) {
            prop_assert_eq!(frame, before);
        }
    }

    #[test]
    fn arp_for_any_known_address_gets_its_mac(target in prop::sample::select(vec![
        (GW_IP, GW_MAC), (GW2_IP, GW2_MAC), (PEER_IP, PEER_MAC), (REMOTE_IP, REMOTE_MAC),
    ])) {
        let mut frame = frames::arp_request(VM_MAC, VM_IP, target.0);
        let v = run(&mut frame);
        prop_assert_eq!(v.action, Action::Tx);
        prop_assert_eq!(frame, frames::arp_reply(VM_MAC, VM_IP, target.1, target.0));
    }

    #[test]
    fn nothing_from_another_sender_is_answered_or_forwarded(sender_mac in any::<[u8; 6]>(), sender_ip in any::<[u8; 4]>(), arp in any::<bool>()) {
        prop_assume!(sender_mac != VM_MAC);
        let mut frame = if arp {
            frames::arp_request(sender_mac, sender_ip, GW_IP)
        } else {
            frames::udp(sender_mac, REMOTE_MAC, sender_ip, REMOTE_IP, 64, 1, 2, &[0; 18])
        };
        let v = run(&mut frame);
        prop_assert_eq!((v.action, v.counter), (Action::Drop, Counter::DropSpoofedMac));
    }
}

//! Connection tracking's state machine (`alioth_common::conntrack`), on the host: what opens a
//! flow, what a handshake leads to, and, for any sequence of frames, that a TCP flow is established
//! only after the originator's SYN, the responder's SYN-ACK and the originator's ACK, in that order.

use alioth_common::conntrack::{
    tcp_flags::{ACK, FIN, RST, SYN},
    track, Entry, FlowKey, State, Track, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
};
use proptest::prelude::*;

/// Runs frames (direction from the originator's side, TCP flags) through `track`, as a table
/// would: an entry is kept when a frame opens or moves a flow, and left alone by an invalid one.
fn run(proto: u8, frames: &[(bool, u8)]) -> (Option<Entry>, Vec<Track>) {
    let mut entry = None;
    let mut seen = Vec::new();
    for (from_lo, flags) in frames {
        let t = track(entry, proto, *from_lo, *flags);
        if let Track::New(e) | Track::Flow(e) = t {
            entry = Some(e);
        }
        seen.push(t);
    }
    (entry, seen)
}

#[test]
fn a_handshake_establishes_and_fins_close() {
    // The lower endpoint connects.
    let (entry, _) = run(PROTO_TCP, &[(true, SYN), (false, SYN | ACK), (true, ACK)]);
    assert_eq!(entry.map(|e| e.state), Some(State::Established));
    let (entry, seen) = run(
        PROTO_TCP,
        &[
            (true, SYN),
            (false, SYN | ACK),
            (true, ACK),
            (false, ACK),
            (true, FIN | ACK),
            (false, FIN | ACK),
            (true, ACK),
        ],
    );
    assert!(!seen.contains(&Track::Invalid), "{seen:?}");
    assert_eq!(entry.map(|e| e.state), Some(State::Closed));
    // Closed, a new SYN from either side is a new flow the rules decide on.
    let (_, seen) = run(PROTO_TCP, &[(true, SYN), (false, RST | ACK), (false, SYN)]);
    assert!(
        matches!(
            seen[2],
            Track::New(Entry {
                state: State::SynSent,
                origin_lo: false
            })
        ),
        "{seen:?}"
    );
}

#[test]
fn udp_and_icmp_flows_open_on_the_first_frame_and_a_reply_establishes_them() {
    for proto in [PROTO_UDP, PROTO_ICMP] {
        let (entry, seen) = run(proto, &[(false, 0), (false, 0)]);
        assert!(matches!(
            seen[0],
            Track::New(Entry {
                state: State::Unreplied,
                origin_lo: false
            })
        ));
        assert_eq!(entry.map(|e| e.state), Some(State::Unreplied));
        let (entry, _) = run(proto, &[(false, 0), (true, 0)]);
        assert_eq!(entry.map(|e| e.state), Some(State::Established));
    }
}

proptest! {
    /// Nothing but a bare SYN opens a TCP flow: a stray ACK, RST, FIN or SYN-ACK opens nothing.
    #[test]
    fn only_a_bare_syn_opens_a_tcp_flow(flags in any::<u8>(), from_lo in any::<bool>()) {
        let t = track(None, PROTO_TCP, from_lo, flags);
        let bare_syn = flags & (SYN | ACK | RST | FIN) == SYN;
        prop_assert_eq!(matches!(t, Track::New(_)), bare_syn, "{:?}", t);
        prop_assert!(matches!(t, Track::New(_) | Track::Invalid));
    }

    /// Whatever the frames, a TCP flow is established only once the originator's SYN, the
    /// responder's SYN-ACK and the originator's ACK went by in that order, and frames a flow does
    /// not expect before that are invalid.
    #[test]
    fn tcp_is_established_only_after_a_whole_handshake(
        frames in prop::collection::vec((any::<bool>(), prop::sample::select(vec![
            SYN, SYN | ACK, ACK, FIN | ACK, RST, RST | ACK, FIN, 0, SYN | FIN,
        ])), 1..24),
    ) {
        let mut entry: Option<Entry> = None;
        // How far the handshake of the current flow got: 0 nothing, 1 SYN, 2 SYN-ACK, 3 ACK.
        let mut step = 0;
        for (from_lo, flags) in frames {
            let t = track(entry, PROTO_TCP, from_lo, flags);
            match t {
                Track::New(e) => {
                    prop_assert_eq!(e.state, State::SynSent);
                    step = 1;
                    entry = Some(e);
                }
                Track::Flow(e) => {
                    let from_origin = entry.is_some_and(|o| o.origin_lo == from_lo);
                    if flags & RST == 0 {
                        if step == 1 && !from_origin && flags & (SYN | ACK) == SYN | ACK {
                            step = 2;
                        } else if step == 2 && from_origin && flags & (SYN | ACK) == ACK {
                            step = 3;
                        }
                    }
                    if matches!(e.state, State::Established | State::FinFromOrigin | State::FinFromReply | State::Closing) {
                        prop_assert_eq!(step, 3, "{:?} before the handshake", e.state);
                    }
                    entry = Some(e);
                }
                Track::Invalid => {}
            }
        }
    }

    /// Both directions of a flow have one key, and say which way they go.
    #[test]
    fn a_flows_key_is_the_same_both_ways(
        zone in any::<u32>(), proto in any::<u8>(),
        a in any::<[u8; 4]>(), pa in any::<u16>(), b in any::<[u8; 4]>(), pb in any::<u16>(),
    ) {
        let (k1, f1) = FlowKey::of(zone, proto, a, pa, b, pb);
        let (k2, f2) = FlowKey::of(zone, proto, b, pb, a, pa);
        prop_assert_eq!(k1, k2);
        prop_assert!(f1 != f2 || (a, pa) == (b, pb));
        prop_assert!((k1.lo_ip, k1.lo_port) <= (k1.hi_ip, k1.hi_port));
    }
}

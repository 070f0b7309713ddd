//! Connection tracking for security groups: which flow a frame belongs to, and how it moves that
//! flow's state. Pure logic over plain values: the table (an LRU map), the clock and the rules are
//! the callers'. Security-group rules are asked only for a frame that would open a flow; the rest
//! pass or fail on the flow's state alone.
//!
//! TCP follows the handshake strictly enough that nothing but an originator's SYN opens a flow: a
//! stray ACK, RST, FIN or SYN-ACK is `Invalid` and creates no entry. UDP and ICMP echo flows are
//! opened by their first frame and live until their timeout; ICMP errors are related to the flow
//! of the datagram they quote (the caller looks that flow up).

/// TCP flags, as in the header's 13th byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// A flow's key, the same whichever direction a frame goes: the lower endpoint (address, then
/// port) first. `FlowKey::of` also says which way the frame went.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The zone of the port whose rules the flow was checked against (`PortEntry::zone`). Each
    /// port sees its flows alone: a flow one port's rules let out is checked again against the
    /// receiving port's, and flows of different VPCs never meet.
    pub zone: u32,
    pub lo_ip: [u8; 4],
    pub hi_ip: [u8; 4],
    /// Ports (TCP, UDP), or the echo identifier twice (ICMP echo), or 0.
    pub lo_port: u16,
    pub hi_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    /// The key of a frame from `src`:`sport` to `dst`:`dport`, and whether the frame goes from the
    /// lower endpoint to the higher one.
    pub fn of(zone: u32, proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> (FlowKey, bool) {
        // Addresses as big-endian numbers: their order is the bytes' order, in one comparison
        // (an array comparison is a loop over the bytes in BPF).
        let forward = (u32::from_be_bytes(src), sport) <= (u32::from_be_bytes(dst), dport);
        let ((lo_ip, lo_port), (hi_ip, hi_port)) = if forward {
            ((src, sport), (dst, dport))
        } else {
            ((dst, dport), (src, sport))
        };
        let key = FlowKey {
            zone,
            lo_ip,
            hi_ip,
            lo_port,
            hi_port,
            proto,
            _pad: [0; 3],
        };
        (key, forward)
    }
}

/// Where a flow stands.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// TCP: the originator's SYN seen.
    SynSent = 1,
    /// TCP: the responder's SYN-ACK seen.
    SynReceived = 2,
    /// TCP: the handshake's last ACK seen; UDP and ICMP: a reply seen.
    Established = 3,
    /// TCP: the originator has sent FIN.
    FinFromOrigin = 4,
    /// TCP: the responder has sent FIN.
    FinFromReply = 5,
    /// TCP: both sides have sent FIN.
    Closing = 6,
    /// TCP: closed (the last ACK after both FINs, or a RST); a new SYN opens it again.
    Closed = 7,
    /// UDP and ICMP: the first frame seen, no reply yet.
    Unreplied = 8,
}

/// A tracked flow: its state, and which endpoint opened it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub state: State,
    /// Whether the originator is the key's lower endpoint.
    pub origin_lo: bool,
}

/// What a frame is to the flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Track {
    /// It would open a flow, as this entry: the rules decide whether it may.
    New(Entry),
    /// It belongs to a flow, which is now this entry: it passes without the rules.
    Flow(Entry),
    /// It belongs to no flow and opens none (a stray ACK or RST, say): dropped.
    Invalid,
}

pub use crate::ipv4::{PROTO_ICMP, PROTO_UDP};
pub use crate::offload::PROTO_TCP;

/// Tracks a frame going the `forward` way of its key (see `FlowKey::of`) against the flow's entry,
/// if there is one. `tcp`: the TCP flags, for TCP frames.
pub fn track(entry: Option<Entry>, proto: u8, forward: bool, tcp: u8) -> Track {
    let Some(e) = entry else {
        return open(proto, forward, tcp);
    };
    let from_origin = forward == e.origin_lo;
    if proto != PROTO_TCP {
        let state = match (e.state, from_origin) {
            (State::Unreplied, false) => State::Established,
            (s, _) => s,
        };
        return Track::Flow(Entry { state, ..e });
    }
    match tcp_next(e.state, from_origin, tcp) {
        Some(state) => Track::Flow(Entry { state, ..e }),
        // A new SYN on a closed flow opens it again, the rules asked anew.
        None if e.state == State::Closed && is_syn(tcp) => open(proto, forward, tcp),
        None => Track::Invalid,
    }
}

fn is_syn(tcp: u8) -> bool {
    tcp & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST | tcp_flags::FIN) == tcp_flags::SYN
}

/// A frame with no flow: TCP opens one only with a bare SYN; anything else opens one.
fn open(proto: u8, forward: bool, tcp: u8) -> Track {
    let state = match proto {
        PROTO_TCP if is_syn(tcp) => State::SynSent,
        PROTO_TCP => return Track::Invalid,
        _ => State::Unreplied,
    };
    Track::New(Entry {
        state,
        origin_lo: forward,
    })
}

/// The TCP state after a frame with `flags` from the originator (or the responder); `None`: the
/// frame does not fit the flow.
pub fn tcp_next(state: State, from_origin: bool, flags: u8) -> Option<State> {
    use tcp_flags::{ACK, RST, SYN};
    if flags & RST != 0 {
        return Some(State::Closed);
    }
    let (syn, ack) = (flags & SYN != 0, flags & ACK != 0);
    match (state, syn, ack) {
        // The originator's SYN again (a retransmission), the responder's SYN-ACK (or again).
        (State::SynSent, true, false) if from_origin => Some(State::SynSent),
        (State::SynSent | State::SynReceived, true, true) if !from_origin => Some(State::SynReceived),
        // The handshake's last ACK (with data, or a FIN, perhaps).
        (State::SynReceived, false, true) if from_origin => Some(closing(State::Established, from_origin, flags)),
        // Nothing else before the handshake is done, and no SYN after it.
        (State::SynSent | State::SynReceived, ..) | (_, true, _) => None,
        (State::Unreplied, ..) => None,
        (State::Closed, ..) => Some(State::Closed),
        (s, ..) => Some(closing(s, from_origin, flags)),
    }
}

/// An established or closing flow after a frame: FINs, then the last ACK.
fn closing(state: State, from_origin: bool, flags: u8) -> State {
    use tcp_flags::{ACK, FIN};
    let fin = flags & FIN != 0;
    match (state, fin, from_origin) {
        (State::Established, true, true) => State::FinFromOrigin,
        (State::Established, true, false) => State::FinFromReply,
        (State::FinFromOrigin, true, false) | (State::FinFromReply, true, true) => State::Closing,
        (State::Closing, false, _) if flags & ACK != 0 => State::Closed,
        (s, ..) => s,
    }
}

/// How long an entry lives without a frame, in seconds (as Linux's conntrack defaults, but for an
/// established TCP flow: a day instead of five).
pub fn timeout_secs(proto: u8, state: State) -> u32 {
    match (proto, state) {
        (PROTO_TCP, State::SynSent | State::SynReceived) => 60,
        (PROTO_TCP, State::Established) => 86_400,
        (PROTO_TCP, State::FinFromOrigin | State::FinFromReply | State::Closing) => 120,
        (PROTO_TCP, _) => 10,
        (PROTO_UDP, State::Established) => 180,
        _ => 30,
    }
}

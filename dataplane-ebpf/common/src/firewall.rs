//! Security groups in the data plane: a frame between two ports is checked where it is, against
//! the sending port's egress rules and the receiving port's ingress rules, each port with a
//! connection-tracking zone of its own. Ports with the same groups share one rule set (`policy`).
//!
//! A frame of a tracked flow passes on the flow's state alone; only a frame that would open a flow
//! asks the rules. The rules are the agent's compiled bitmaps (`controller::goalstate::secgroup`):
//! one longest-prefix match on the remote address, one on the protocol and port (and one on the
//! rules for any protocol), then an AND. The cost does not grow with the number of rules.

use crate::conntrack::{self, Entry, FlowKey, State, Track, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::counters::Counter;
use crate::eth::ETH_HLEN;
use crate::ipv4::{Ipv4, IPV4_MIN_HLEN};
use crate::packet::Packet;

/// Directions, as Alcor's `SecurityGroupConfiguration.Direction` numbers them.
pub const EGRESS: u8 = 0;
pub const INGRESS: u8 = 1;
/// The protocol key of rules for any protocol (255 is reserved by IANA: no frame has it).
pub const ANY_PROTOCOL: u8 = 255;
/// Bits of a key before the part the prefix length is about: policy (16), direction (8) and a
/// protocol (8; zero in remote keys).
pub const KEY_FIXED_BITS: u32 = 32;

/// Longest-prefix-match trie of remote prefixes: `remote_key` -> `RuleBits`.
pub const SG_REMOTES: &str = "SG_REMOTES";
/// Longest-prefix-match trie of protocol and port (or ICMP type and code): `ports_key` -> `RuleBits`.
pub const SG_PORTS: &str = "SG_PORTS";
/// LRU map of tracked flows: `FlowKey` -> `CtValue`.
pub const SG_FLOWS: &str = "SG_FLOWS";
/// Per-CPU array of two `u64`s: flows added to `SG_FLOWS` by the programs (`FLOWS_ADDED`), and
/// removed by the agent (`FLOWS_REMOVED`, on CPU 0). What neither accounts for, the table evicted.
pub const SG_COUNTS: &str = "SG_COUNTS";
pub const FLOWS_ADDED: u32 = 0;
pub const FLOWS_REMOVED: u32 = 1;
/// The object's global holding the kernel's `HZ`, which the loader sets (flows expire in jiffies).
pub const HZ_GLOBAL: &str = "ALIOTH_HZ";
/// Entries of each trie (preallocation is not possible for tries: allocated on use).
pub const MAX_SG_ENTRIES: u32 = 1 << 20;
/// Tracked flows on one host; the least recently used goes when a new one finds the table full.
pub const MAX_SG_FLOWS: u32 = 1 << 17;
/// Rule sets, and zones (ports with security groups), on one host; 0 means unfiltered.
pub const MAX_POLICIES: u32 = 1 << 16;

/// The rules (one bit each, up to 128) a trie entry stands for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleBits {
    pub bits: [u64; 2],
}

impl RuleBits {
    pub const fn from_u128(b: u128) -> Self {
        RuleBits {
            bits: [b as u64, (b >> 64) as u64],
        }
    }

    pub const fn to_u128(self) -> u128 {
        self.bits[0] as u128 | (self.bits[1] as u128) << 64
    }
}

/// The key data of a remote prefix of `policy`'s rules in direction `dir` (the prefix length
/// counts `KEY_FIXED_BITS` plus the address's).
pub const fn remote_key(policy: u16, dir: u8, ip: [u8; 4]) -> [u8; 8] {
    let p = policy.to_be_bytes();
    [p[0], p[1], dir, 0, ip[0], ip[1], ip[2], ip[3]]
}

/// The key data of a port (or ICMP `type << 8 | code`) prefix of `policy`'s rules for `proto`.
pub const fn ports_key(policy: u16, dir: u8, proto: u8, value: u16) -> [u8; 8] {
    let p = policy.to_be_bytes();
    let v = value.to_be_bytes();
    [p[0], p[1], dir, proto, v[0], v[1], 0, 0]
}

/// A tracked flow as the table keeps it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// When it expires, in the kernel's jiffies (`SgTables::now`).
    pub expires: u64,
    /// What the rules were asked about when it opened: the responder's port, or the ICMP
    /// `type << 8 | code` (the agent re-checks flows against changed rules with it).
    pub value: u16,
    /// `conntrack::State`.
    pub state: u8,
    /// `ORIGIN_LO`, `OPENED_EGRESS`.
    pub flags: u8,
    pub _pad: u32,
}

/// `CtValue::flags`: the originator is the key's lower endpoint.
pub const ORIGIN_LO: u8 = 1;
/// `CtValue::flags`: the flow was opened by a frame leaving the port (egress rules allowed it).
pub const OPENED_EGRESS: u8 = 2;

impl CtValue {
    pub fn entry(&self) -> Option<Entry> {
        let state = match self.state {
            1 => State::SynSent,
            2 => State::SynReceived,
            3 => State::Established,
            4 => State::FinFromOrigin,
            5 => State::FinFromReply,
            6 => State::Closing,
            7 => State::Closed,
            8 => State::Unreplied,
            _ => return None,
        };
        Some(Entry {
            state,
            origin_lo: self.flags & ORIGIN_LO != 0,
        })
    }
}

/// What the firewall needs: the compiled rules and the flow table (BPF maps in the kernel).
pub trait SgTables {
    /// The rules of `policy` and `dir` whose remote prefix holds `ip`.
    fn remote_bits(&self, policy: u16, dir: u8, ip: [u8; 4]) -> u128;
    /// The rules of `policy` and `dir` for `proto` whose range holds `value`.
    fn port_bits(&self, policy: u16, dir: u8, proto: u8, value: u16) -> u128;
    fn flow(&self, key: &FlowKey) -> Option<CtValue>;
    fn set_flow(&self, key: &FlowKey, value: &CtValue);
    /// A flow was added where the table had no entry for its key.
    fn added(&self) {}
    /// The kernel's jiffies: read inline, where a clock in nanoseconds costs a helper call.
    fn now(&self) -> u64;
    /// Jiffies per second (the kernel's `HZ`).
    fn hz(&self) -> u64;
}

/// Whether `policy`'s rules in `dir` let a new flow to or from `remote` open.
#[inline(always)]
pub fn rules_allow<T: SgTables + ?Sized>(t: &T, policy: u16, dir: u8, remote: [u8; 4], proto: u8, value: u16) -> bool {
    let remotes = t.remote_bits(policy, dir, remote);
    remotes != 0
        && remotes & (t.port_bits(policy, dir, proto, value) | t.port_bits(policy, dir, ANY_PROTOCOL, value)) != 0
}

/// The fields of a frame connection tracking and the rules look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub proto: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// TCP and UDP ports; for ICMP queries and replies, the identifier (both); otherwise 0.
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// What the rules match: the destination port, or the ICMP `type << 8 | code`.
    pub value: u16,
}

/// ICMP queries and their replies, which carry an identifier: echo, timestamp, information,
/// address mask. Flows of their own, by identifier; other ICMP messages open none.
const fn is_icmp_query(icmp_type: u8) -> bool {
    matches!(icmp_type, 0 | 8 | 13..=18)
}

/// The tuple of the IPv4 packet `ip` at the front of `pkt` (a first fragment or whole).
#[inline(always)]
pub fn tuple<P: Packet + ?Sized>(pkt: &P, ip: &Ipv4) -> Result<Tuple, Counter> {
    let l4 = ETH_HLEN + ip.header_len;
    let mut t = Tuple {
        proto: ip.proto,
        src: ip.src,
        dst: ip.dst,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        value: 0,
    };
    match ip.proto {
        PROTO_TCP => {
            let h = pkt.array::<14>(l4).ok_or(Counter::DropIpMalformed)?;
            t.sport = u16::from_be_bytes([h[0], h[1]]);
            t.dport = u16::from_be_bytes([h[2], h[3]]);
            t.tcp_flags = h[13];
            t.value = t.dport;
        }
        PROTO_UDP => {
            let h = pkt.array::<4>(l4).ok_or(Counter::DropIpMalformed)?;
            t.sport = u16::from_be_bytes([h[0], h[1]]);
            t.dport = u16::from_be_bytes([h[2], h[3]]);
            t.value = t.dport;
        }
        PROTO_ICMP => {
            let h = pkt.array::<8>(l4).ok_or(Counter::DropIpMalformed)?;
            t.value = u16::from_be_bytes([h[0], h[1]]);
            // Queries and replies: one flow per identifier.
            if is_icmp_query(h[0]) {
                let id = u16::from_be_bytes([h[4], h[5]]);
                (t.sport, t.dport) = (id, id);
            }
        }
        _ => {}
    }
    Ok(t)
}

/// The flow an ICMP error quotes (`tuple` is the error's): the key of the datagram behind its
/// 8-byte header, whatever its direction. `None`: not an error, or it quotes too little.
#[inline(always)]
fn quoted_flow<P: Packet + ?Sized>(pkt: &P, ip: &Ipv4, tuple: &Tuple, zone: u32) -> Option<FlowKey> {
    if tuple.proto != PROTO_ICMP || !crate::icmp::is_error((tuple.value >> 8) as u8) {
        return None;
    }
    let inner = ETH_HLEN + ip.header_len + 8;
    // RFC 792: an error quotes the datagram's header and at least 8 bytes of its payload.
    let h = pkt.array::<{ IPV4_MIN_HLEN + 8 }>(inner)?;
    // The quoted header's own options are rare enough to be left unrelated.
    if h[0] != 0x45 {
        return None;
    }
    let proto = h[9];
    let (mut src, mut dst) = ([0u8; 4], [0u8; 4]);
    src.copy_from_slice(&h[12..16]);
    dst.copy_from_slice(&h[16..20]);
    let (sport, dport) = match proto {
        PROTO_TCP | PROTO_UDP => (u16::from_be_bytes([h[20], h[21]]), u16::from_be_bytes([h[22], h[23]])),
        PROTO_ICMP if is_icmp_query(h[20]) => {
            let id = u16::from_be_bytes([h[24], h[25]]);
            (id, id)
        }
        _ => (0, 0),
    };
    Some(FlowKey::of(zone, proto, src, sport, dst, dport).0)
}

/// When a flow of `proto` in `state` expires if no frame comes by then, from `now` (jiffies, `hz`
/// a second).
#[inline(always)]
pub fn expiry(now: u64, hz: u64, proto: u8, state: State) -> u64 {
    now + conntrack::timeout_secs(proto, state) as u64 * hz
}

/// The counter a frame the rules refuse is dropped with.
pub const fn refused(dir: u8) -> Counter {
    if dir == EGRESS {
        Counter::DropSgEgress
    } else {
        Counter::DropSgIngress
    }
}

/// Checks the IPv4 packet `ip` at the front of `pkt` against rule set `policy` in direction `dir`
/// (never called for policy 0, unfiltered), and tracks its flow in `zone`. `Err`: the reason it
/// is dropped.
#[inline(always)]
pub fn check<P: Packet + ?Sized, T: SgTables + ?Sized>(
    pkt: &P,
    ip: &Ipv4,
    (policy, zone): (u16, u32),
    dir: u8,
    t: &T,
) -> Result<(), Counter> {
    // Later fragments carry no ports: no flow to look up.
    if ip.frag & 0x1fff != 0 {
        return Err(Counter::DropSgFragment);
    }
    let tu = tuple(pkt, ip)?;
    let now = t.now();
    let live = |v: &CtValue| v.expires > now;
    let remote = if dir == EGRESS { tu.dst } else { tu.src };
    // An ICMP message that is no query is part of no flow: an error about a tracked flow passes,
    // anything else as its rules say, each time.
    if tu.proto == PROTO_ICMP && !is_icmp_query((tu.value >> 8) as u8) {
        if let Some(quoted) = quoted_flow(pkt, ip, &tu, zone) {
            if t.flow(&quoted).filter(live).is_some() {
                return Ok(());
            }
        }
        return match rules_allow(t, policy, dir, remote, tu.proto, tu.value) {
            true => Ok(()),
            false => Err(refused(dir)),
        };
    }
    let (key, forward) = FlowKey::of(zone, tu.proto, tu.src, tu.sport, tu.dst, tu.dport);
    let found = t.flow(&key);
    let held = found.filter(live);
    match conntrack::track(held.and_then(|v| v.entry()), tu.proto, forward, tu.tcp_flags) {
        Track::Invalid => Err(Counter::DropSgInvalid),
        Track::Flow(e) => {
            let Some(old) = held else { return Ok(()) };
            let expires = expiry(now, t.hz(), tu.proto, e.state);
            // One write a second per flow at most, and one per change of state.
            if e.state as u8 != old.state || expires > old.expires + t.hz() {
                let value = CtValue {
                    expires,
                    state: e.state as u8,
                    ..old
                };
                t.set_flow(&key, &value);
            }
            Ok(())
        }
        Track::New(e) => {
            if !rules_allow(t, policy, dir, remote, tu.proto, tu.value) {
                return Err(refused(dir));
            }
            let value = CtValue {
                expires: expiry(now, t.hz(), tu.proto, e.state),
                value: tu.value,
                state: e.state as u8,
                flags: if e.origin_lo { ORIGIN_LO } else { 0 } | if dir == EGRESS { OPENED_EGRESS } else { 0 },
                _pad: 0,
            };
            t.set_flow(&key, &value);
            if found.is_none() {
                t.added();
            }
            Ok(())
        }
    }
}

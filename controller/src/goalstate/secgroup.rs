//! Security-group rules compiled into lookups whose cost does not grow with the rule count: each
//! rule of a port and direction is a bit, and a frame is allowed when the bits of the rules that
//! match its remote address and the bits of those that match its protocol and port share one.
//!
//! - Remote prefixes go into a longest-prefix-match table whose entry for each rule prefix holds
//!   the bits of every rule with a prefix that contains it: the longest match alone answers. A
//!   rule naming a remote group is one rule (one bit) with a /32 per member address.
//! - Ports (TCP, UDP) and ICMP type and code (`type << 8 | code`, as Neutron puts them in
//!   `port_range_min`/`max`) go into a longest-prefix-match table per protocol, over the
//!   elementary intervals the rules' ranges cut 0..=65535 into, each interval as the fewest
//!   prefixes that cover it: any value falls in exactly one, which holds the bits of the rules
//!   whose range covers it. Rules for any protocol are in the table of `ANY_PROTOCOL`.
//!
//! The kernel side (`alioth_common::firewall`) is three trie lookups and an AND, for the first
//! frame of a flow only.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

/// Compiled rules per port and direction: one bit each. Rules of the same protocol and range are
/// one compiled rule, so this bounds a port's distinct services, not its rules.
pub const MAX_RULES: usize = 128;
pub use alioth_common::firewall::ANY_PROTOCOL;

/// One rule, as the compiler takes it (a remote group expanded into its members' prefixes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Allowed remote prefixes (none: the rule allows nobody, as a group without members).
    pub remotes: Vec<Ipv4Network>,
    /// `None`: any protocol.
    pub protocol: Option<u8>,
    /// Inclusive range of ports, or of `type << 8 | code` for ICMP; the whole range for none.
    pub ports: (u16, u16),
}

/// A port's rules for one direction, compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Compiled {
    /// Remote prefix -> the rules whose prefix contains it.
    pub remotes: BTreeMap<Ipv4Network, u128>,
    /// (protocol, value prefix, its length) -> the rules whose range covers it.
    pub ports: BTreeMap<(u8, u16, u8), u128>,
}

/// Compiles `rules` (at most `MAX_RULES`: the caller refuses more).
pub fn compile(rules: &[Rule]) -> Compiled {
    assert!(rules.len() <= MAX_RULES, "at most {MAX_RULES} rules");
    let bit = |i: usize| 1u128 << i;
    // The rules of each prefix exactly; a prefix's entry ORs those of its (at most 33) ancestors.
    let mut exact: HashMap<Ipv4Network, u128> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        for p in &r.remotes {
            *exact.entry(*p).or_default() |= bit(i);
        }
    }
    let remotes = exact
        .keys()
        .map(|p| {
            let bits = (0..=p.prefix())
                .filter_map(|len| exact.get(&ancestor(p, len)?))
                .fold(0, |acc, b| acc | b);
            (*p, bits)
        })
        .collect();
    let mut ports = BTreeMap::new();
    let mut protocols: Vec<u8> = rules.iter().map(|r| r.protocol.unwrap_or(ANY_PROTOCOL)).collect();
    protocols.sort_unstable();
    protocols.dedup();
    for proto in protocols {
        let mine: Vec<(usize, &Rule)> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.protocol.unwrap_or(ANY_PROTOCOL) == proto)
            .collect();
        // Where an elementary interval starts: 0, and after every range's end.
        let mut starts: Vec<u32> = vec![0];
        for (_, r) in &mine {
            starts.push(r.ports.0 as u32);
            starts.push(r.ports.1 as u32 + 1);
        }
        starts.sort_unstable();
        starts.dedup();
        for (k, lo) in starts.iter().enumerate().filter(|(_, lo)| **lo <= 0xffff) {
            let hi = starts.get(k + 1).map_or(0xffff, |next| next - 1).min(0xffff);
            let bits = mine
                .iter()
                .filter(|(_, r)| r.ports.0 as u32 <= *lo && hi <= r.ports.1 as u32)
                .fold(0, |acc, (i, _)| acc | bit(*i));
            if bits != 0 {
                range_prefixes(*lo as u16, hi as u16, |value, len| {
                    ports.insert((proto, value, len), bits);
                });
            }
        }
    }
    Compiled { remotes, ports }
}

/// The prefix of length `len` (at most `p`'s) that holds `p`.
fn ancestor(p: &Ipv4Network, len: u8) -> Option<Ipv4Network> {
    let mask = u32::MAX.checked_shl(32 - len as u32).unwrap_or(0);
    Ipv4Network::new(Ipv4Addr::from(u32::from(p.network()) & mask), len).ok()
}

/// The fewest prefixes (value, length in bits) of 16-bit values that cover `lo..=hi` exactly.
pub fn range_prefixes(lo: u16, hi: u16, mut out: impl FnMut(u16, u8)) {
    let (mut lo, hi) = (lo as u32, hi as u32);
    while lo <= hi {
        // The largest block aligned at `lo` that stays within the range.
        let mut size = if lo == 0 { 1 << 16 } else { 1u32 << lo.trailing_zeros() };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out(lo as u16, 16 - size.trailing_zeros() as u8);
        lo += size;
    }
}

impl Compiled {
    /// What the kernel's lookups will answer: whether a frame with remote address `remote`,
    /// protocol `proto` and port (or ICMP type and code) `value` is allowed. Each longest match
    /// probes the prefix lengths from the longest down, as a trie would find it: the agent asks
    /// this of every tracked flow of a port whose rules changed.
    pub fn allows(&self, remote: Ipv4Addr, proto: u8, value: u16) -> bool {
        let host = Ipv4Network::from(remote);
        let remote_bits = (0..=32u8)
            .rev()
            .find_map(|len| self.remotes.get(&ancestor(&host, len)?))
            .copied()
            .unwrap_or(0);
        let port_bits = |proto: u8| {
            (0..=16u8)
                .rev()
                .find_map(|len| {
                    let prefix = value & u16::MAX.checked_shl(16 - len as u32).unwrap_or(0);
                    self.ports.get(&(proto, prefix, len))
                })
                .copied()
                .unwrap_or(0)
        };
        remote_bits & (port_bits(proto) | port_bits(ANY_PROTOCOL)) != 0
    }
}

mod policy;
pub use policy::{alone, policy, Compiler, KeyedPolicy, Members, Policy, SetKey};

#[cfg(test)]
mod tests;

//! Security groups on the forwarding verdicts (`alioth_common::firewall`): the sending port's
//! egress rules for what it sends to another port, the receiving port's ingress rules for what
//! reaches it from a local port or decapsulated. Answers of the data plane itself (ARP, ICMP to a
//! gateway, DHCP) are no flows between ports and never get here.

use alioth_common::conntrack::FlowKey;
use alioth_common::firewall::{
    self, CtValue, RuleBits, SgTables, EGRESS, FLOWS_ADDED, INGRESS, KEY_FIXED_BITS, MAX_SG_ENTRIES, MAX_SG_FLOWS,
};
use alioth_common::maps::PortEntry;
use alioth_common::packet::At;
use alioth_common::pipeline::{Action, Verdict};
use alioth_common::{ipv4, vxlan, Counter, Packet};
use aya_ebpf::helpers::bpf_jiffies64;
use aya_ebpf::macros::map;
use aya_ebpf::maps::lpm_trie::LpmTrie;
use aya_ebpf::maps::{LruHashMap, PerCpuArray};
use aya_ebpf::Global;

use crate::trie::TrieKey;
use crate::{cache, PORTS};

#[map]
static SG_REMOTES: LpmTrie<[u8; 8], RuleBits> = LpmTrie::with_max_entries(MAX_SG_ENTRIES, 0);

#[map]
static SG_PORTS: LpmTrie<[u8; 8], RuleBits> = LpmTrie::with_max_entries(MAX_SG_ENTRIES, 0);

#[map]
static SG_FLOWS: LruHashMap<FlowKey, CtValue> = LruHashMap::with_max_entries(MAX_SG_FLOWS, 0);

/// The kernel's `HZ` (`firewall::HZ_GLOBAL`), set by the loader.
#[unsafe(no_mangle)]
static ALIOTH_HZ: Global<u64> = Global::new(1000);

#[map]
static SG_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Slots per CPU of the flow cache (a power of two).
const FLOW_SLOTS: u32 = 256;

/// A per-CPU, direct-mapped cache of tracked flows in front of `SG_FLOWS`, as `cache` is in front
/// of `ENDPOINTS`: a frame of a flow this CPU saw costs an array lookup, not a hash lookup. A
/// slot counts only under the generation it was filled in, which the agent bumps after removing
/// flows (a rule removed, a port gone). The table's entry is written on every change of state and
/// at least once a second of traffic, which keeps it from being the least recently used.
#[repr(C)]
#[derive(Clone, Copy)]
struct FlowSlot {
    generation: u64,
    key: FlowKey,
    _pad: u32,
    value: CtValue,
}

#[map]
static SG_FLOW_CACHE: PerCpuArray<FlowSlot> = PerCpuArray::with_max_entries(FLOW_SLOTS, 0);

/// `a == b` field by field, padding aside: the derived comparison of the 3-byte padding makes LLVM
/// load 2 bytes at an odd stack offset, which the verifier refuses.
#[inline(always)]
fn same_flow(a: &FlowKey, b: &FlowKey) -> bool {
    a.zone == b.zone
        && u32::from_ne_bytes(a.lo_ip) == u32::from_ne_bytes(b.lo_ip)
        && u32::from_ne_bytes(a.hi_ip) == u32::from_ne_bytes(b.hi_ip)
        && a.lo_port == b.lo_port
        && a.hi_port == b.hi_port
        && a.proto == b.proto
}

#[inline(always)]
fn flow_slot(key: &FlowKey) -> u32 {
    let ports = (key.lo_port as u32) << 16 | key.hi_port as u32;
    let h = key.zone.rotate_left(8)
        ^ u32::from_ne_bytes(key.lo_ip)
        ^ u32::from_ne_bytes(key.hi_ip).rotate_left(16)
        ^ ports
        ^ key.proto as u32;
    h.wrapping_mul(0x9e37_79b1) >> (32 - FLOW_SLOTS.trailing_zeros())
}

struct Sg;

impl SgTables for Sg {
    #[inline(always)]
    fn remote_bits(&self, policy: u16, dir: u8, ip: [u8; 4]) -> u128 {
        let key = TrieKey::new(KEY_FIXED_BITS + 32, firewall::remote_key(policy, dir, ip));
        SG_REMOTES.get(key.key()).map_or(0, |b| b.to_u128())
    }

    #[inline(always)]
    fn port_bits(&self, policy: u16, dir: u8, proto: u8, value: u16) -> u128 {
        let key = TrieKey::new(KEY_FIXED_BITS + 16, firewall::ports_key(policy, dir, proto, value));
        SG_PORTS.get(key.key()).map_or(0, |b| b.to_u128())
    }

    #[inline(always)]
    fn flow(&self, key: &FlowKey) -> Option<CtValue> {
        let generation = cache::generation();
        let slot = SG_FLOW_CACHE.get_ptr_mut(flow_slot(key)).filter(|_| generation != 0);
        if let Some(slot) = slot {
            // SAFETY: this CPU's own slot; programs run to completion on their CPU.
            let slot = unsafe { &*slot };
            if slot.generation == generation && same_flow(&slot.key, key) {
                return Some(slot.value);
            }
        }
        // SAFETY: the value is copied out before the map is written.
        let value = unsafe { SG_FLOWS.get(key).copied() }?;
        remember(slot, generation, key, &value);
        Some(value)
    }

    #[inline(always)]
    fn set_flow(&self, key: &FlowKey, value: &CtValue) {
        let _ = SG_FLOWS.insert(key, value, 0);
        let generation = cache::generation();
        let slot = SG_FLOW_CACHE.get_ptr_mut(flow_slot(key)).filter(|_| generation != 0);
        remember(slot, generation, key, value);
    }

    #[inline(always)]
    fn added(&self) {
        if let Some(n) = SG_COUNTS.get_ptr_mut(FLOWS_ADDED) {
            // SAFETY: this CPU's slot, which nothing else writes meanwhile.
            unsafe { *n += 1 };
        }
    }

    #[inline(always)]
    fn now(&self) -> u64 {
        // SAFETY: a helper without arguments, which the verifier turns into a load.
        unsafe { bpf_jiffies64() }
    }

    #[inline(always)]
    fn hz(&self) -> u64 {
        ALIOTH_HZ.load()
    }
}

/// Fills this CPU's cache slot with `key`'s flow as it stands under `generation`.
#[inline(always)]
fn remember(slot: Option<*mut FlowSlot>, generation: u64, key: &FlowKey, value: &CtValue) {
    if let Some(slot) = slot {
        // SAFETY: this CPU's own slot (see `flow`).
        unsafe {
            *slot = FlowSlot {
                generation,
                key: *key,
                _pad: 0,
                value: *value,
            }
        };
    }
}

/// The rule set and zone of the port behind `ifindex` (policy 0: unfiltered, or no port).
#[inline(always)]
fn policy_of(ifindex: u32) -> (u16, u32) {
    PORTS.get(ifindex).map_or((0, 0), |p| (p.policy, p.zone))
}

/// `verdict` for a frame `port` sent, once both ends' security groups had their say.
#[inline(always)]
pub fn from_port<P: Packet + ?Sized>(pkt: &mut P, port: &PortEntry, verdict: Verdict) -> Verdict {
    let to_port = verdict.action == Action::Redirect;
    if !to_port && verdict.action != Action::Encap {
        return verdict;
    }
    let receiver = if to_port { policy_of(verdict.ifindex) } else { (0, 0) };
    if port.policy == 0 && receiver.0 == 0 {
        return verdict;
    }
    let sender = (port.policy, port.zone);
    match refused(pkt, sender, EGRESS).or_else(|| refused(pkt, receiver, INGRESS)) {
        Some(reason) => Verdict::drop_with(reason),
        None => verdict,
    }
}

/// Why `port`'s egress rules refuse the frame it sends out of the VPC (by an elastic IP), if they
/// do.
#[inline(always)]
pub fn egress<P: Packet + ?Sized>(pkt: &P, port: &PortEntry) -> Option<Counter> {
    refused(pkt, (port.policy, port.zone), EGRESS)
}

/// `verdict` for a frame from the uplink translated to a port (an elastic IP's), once the
/// receiving port's security groups had their say.
#[inline(always)]
pub fn to_port<P: Packet + ?Sized>(pkt: &mut P, verdict: Verdict) -> Verdict {
    if verdict.action != Action::Redirect {
        return verdict;
    }
    match refused(pkt, policy_of(verdict.ifindex), INGRESS) {
        Some(reason) => Verdict::drop_with(reason),
        None => verdict,
    }
}

/// `verdict` for a VXLAN frame from the uplink, once the receiving port's security groups had
/// their say on the inner frame.
#[inline(always)]
pub fn from_uplink<P: Packet + ?Sized>(pkt: &mut P, verdict: Verdict) -> Verdict {
    if verdict.action != Action::Decap {
        return verdict;
    }
    let receiver = policy_of(verdict.ifindex);
    if receiver.0 == 0 {
        return verdict;
    }
    match refused(&mut At::new(pkt, vxlan::OUTER_LEN), receiver, INGRESS) {
        Some(reason) => Verdict::drop_with(reason),
        None => verdict,
    }
}

/// Why the check of rule set and zone `policy` in `dir` drops the frame, if it does (rule set 0:
/// unfiltered).
#[inline(always)]
fn refused<P: Packet + ?Sized>(pkt: &P, policy: (u16, u32), dir: u8) -> Option<Counter> {
    if policy.0 == 0 {
        return None;
    }
    // The pipeline parsed and accepted the header already: this only gives the verifier its offsets.
    let ip = match ipv4::parse(pkt) {
        Ok(ip) => ip,
        Err(reason) => return Some(reason),
    };
    firewall::check(pkt, &ip, policy, dir, &Sg).err()
}

//! The rate of "fragmentation needed" answers (`pipeline::too_big`) per port: a VM that keeps
//! sending too-big frames gets a bounded number of answers, the rest are dropped and counted.

use alioth_common::events::MAX_EVENT_GATES;
use alioth_common::monitor::Gate;
use alioth_common::pipeline::Verdict;
use alioth_common::Counter;
use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use aya_ebpf::macros::map;
use aya_ebpf::maps::LruHashMap;

/// Answers per second and port.
const PER_SECOND: u32 = 100;

#[map]
static FRAG_NEEDED_GATES: LruHashMap<u32, Gate> = LruHashMap::with_max_entries(MAX_EVENT_GATES, 0);

/// `verdict`, or a drop when it is a "fragmentation needed" answer past port `ifindex`'s rate.
#[inline(always)]
pub fn limit(ifindex: u32, verdict: Verdict) -> Verdict {
    if verdict.counter != Counter::IcmpFragNeeded {
        return verdict;
    }
    // SAFETY: the value is copied out before the map is written.
    let mut gate = unsafe { FRAG_NEEDED_GATES.get(&ifindex).copied() }.unwrap_or_default();
    // SAFETY (the clock): a helper without arguments.
    let passed = gate.pass(PER_SECOND, || unsafe { bpf_ktime_get_coarse_ns() });
    let _ = FRAG_NEEDED_GATES.insert(&ifindex, &gate, 0);
    match passed {
        Some(_) => verdict,
        None => Verdict::drop_with(Counter::DropFragNeededRateLimited),
    }
}

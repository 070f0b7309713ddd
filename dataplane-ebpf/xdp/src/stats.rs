//! The counters: `STATS`, one per `Counter` for the whole host, and `PORT_STATS`, the same per
//! port, at the port's `PortEntry::stats_slot`.

use alioth_common::counters::COUNTER_SLOTS;
use alioth_common::maps::{PortCounters, MAX_PORT_STATS};
use alioth_common::Counter;
use aya_ebpf::macros::map;
use aya_ebpf::maps::PerCpuArray;

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[map]
static PORT_STATS: PerCpuArray<PortCounters> = PerCpuArray::with_max_entries(MAX_PORT_STATS, 0);

/// A per-CPU word the counter's index passes through (see `opaque`).
#[map]
static SCRATCH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// `index`, through memory the verifier does not follow: the paths that reach `count` with
/// different counters then become one state after it instead of each being walked to the end.
#[inline(always)]
pub fn opaque(index: u32) -> u32 {
    match SCRATCH.get_ptr_mut(0) {
        // SAFETY: per-CPU word, no concurrent writer on this CPU.
        Some(p) => unsafe {
            core::ptr::write_volatile(p, index);
            core::ptr::read_volatile(p)
        },
        None => index,
    }
}

/// Counts a frame on the host and, when `slot` is not 0, on the port whose counters are there.
#[inline(always)]
pub fn count(counter: Counter, slot: u16) {
    count_index(opaque(counter.index()), slot)
}

/// `count` by the counter's index (from `opaque`).
#[inline(always)]
pub fn count_index(index: u32, slot: u16) {
    add_index(index, slot, 1)
}

/// Adds `n` to the counter at `index` (from `opaque`) as `count_index` counts one: a count that
/// depends on a value without a branch on it, which would have the verifier walk the rest of the
/// program once for each side.
#[inline(always)]
pub fn add_index(index: u32, slot: u16, n: u64) {
    let index = index & (COUNTER_SLOTS - 1);
    if let Some(c) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *c += n };
    }
    if slot == 0 {
        return;
    }
    if let Some(port) = PORT_STATS.get_ptr_mut(slot as u32) {
        // SAFETY: as above; the mask keeps the index inside the array for the verifier.
        unsafe { (*port)[index as usize] += n };
    }
}

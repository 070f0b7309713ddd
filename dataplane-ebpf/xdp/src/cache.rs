//! A per-CPU cache of forwarding destinations in front of `ENDPOINTS` and `NEXTHOPS`: a hit costs
//! two array lookups the verifier inlines, where a miss costs two hash lookups (30 to 40 ns each
//! on the machines we measure, most of an encapsulation's cost).
//!
//! Direct-mapped, filled on a miss. An entry counts only under the generation it was filled in:
//! the agent bumps `GENERATION` after every change to either map, so the first frame after the
//! bump looks the maps up again. A slot is filled from lookups that started after the generation
//! it records was read, hence after every change that generation covers.

use alioth_common::maps::{Endpoint, EndpointKey, NextHop};
use alioth_common::pipeline::Destination;
use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, PerCpuArray};

/// Slots per CPU (a power of two).
const SLOTS: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy)]
struct Slot {
    generation: u64,
    key: EndpointKey,
    endpoint: Endpoint,
    /// All zero: not resolved (`Destination::hop`).
    hop: NextHop,
    _pad: u64,
}

#[map]
static GENERATION: Array<u64> = Array::with_max_entries(1, 0);

#[map]
static DESTINATIONS: PerCpuArray<Slot> = PerCpuArray::with_max_entries(SLOTS, 0);

/// Multiplicative hashing: the top bits of the product mix every bit of the key.
#[inline(always)]
fn slot_index(key: &EndpointKey) -> u32 {
    let h = (key.vni.rotate_left(16) ^ u32::from_ne_bytes(key.ip)).wrapping_mul(0x9e37_79b1);
    h >> (32 - SLOTS.trailing_zeros())
}

/// The agent's generation: entries of per-CPU caches count only when filled under it (0: none
/// published yet, nothing cached).
#[inline(always)]
pub fn generation() -> u64 {
    GENERATION.get(0).copied().unwrap_or(0)
}

/// The destination of `key`, from this CPU's cache or else from `look_up` (then cached).
#[inline(always)]
pub fn destination(key: &EndpointKey, look_up: impl FnOnce() -> Option<Destination>) -> Option<Destination> {
    // 0: the agent has published no generation yet, so nothing is cached.
    let generation = generation();
    let Some(slot) = DESTINATIONS.get_ptr_mut(slot_index(key)).filter(|_| generation != 0) else {
        return look_up();
    };
    // SAFETY: this CPU's own slot, and XDP programs run to completion on a CPU (softirq, no
    // preemption), so nothing else touches it meanwhile.
    let slot = unsafe { &mut *slot };
    if slot.generation == generation && slot.key == *key {
        return Some(Destination {
            endpoint: slot.endpoint,
            hop: slot.hop,
        });
    }
    let found = look_up()?;
    *slot = Slot {
        generation,
        key: *key,
        endpoint: found.endpoint,
        hop: found.hop,
        _pad: 0,
    };
    Some(found)
}

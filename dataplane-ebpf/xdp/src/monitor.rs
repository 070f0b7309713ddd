//! Events for `alioth monitor` (`alioth_common::monitor`): written after a frame's verdict is
//! carried out, while a monitor listens, within the per-CPU rate limit.

use alioth_common::monitor::{
    self, MonitorEvent, Watch, DROPS, FORWARDED, KIND_DROP, KIND_FORWARDED, MONITOR_EVENTS_BYTES,
};
use alioth_common::Packet;
use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use aya_ebpf::macros::map;
use aya_ebpf::maps::{PerCpuArray, RingBuf};

#[map]
static MONITOR: PerCpuArray<Watch> = PerCpuArray::with_max_entries(1, 0);

#[map]
static MONITOR_EVENTS: RingBuf = RingBuf::with_byte_size(MONITOR_EVENTS_BYTES, 0);

/// What became of a frame, for the monitor.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Dropped,
    Forwarded,
    /// Passed to the host or answered: never reported.
    Other,
}

/// Reports the frame `pkt` (as it is now) that came in on `ifindex` and was counted at `counter`
/// (an index), if a monitor asks for it.
#[inline(always)]
pub fn watch<P: Packet + ?Sized>(pkt: &P, ifindex: u32, counter: u32, fate: Fate) {
    if fate == Fate::Other {
        return;
    }
    let Some(watch) = MONITOR.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU value, no concurrent writer on this CPU (the agent's writes are whole).
    let Watch { config, gate } = unsafe { &mut *watch };
    let kind = match fate {
        Fate::Dropped if config.flags & DROPS != 0 => KIND_DROP,
        Fate::Forwarded if config.flags & FORWARDED != 0 => KIND_FORWARDED,
        _ => return,
    };
    if kind == KIND_FORWARDED && !gate.sample(config.sample_every) {
        return;
    }
    // SAFETY (the clock): a helper without arguments.
    let Some(held) = gate.pass(config.per_second, || unsafe { bpf_ktime_get_coarse_ns() }) else {
        return;
    };
    let mut event = MonitorEvent {
        kind,
        counter: counter as u16,
        ifindex,
        held,
        ..Default::default()
    };
    monitor::describe(pkt, &mut event);
    if MONITOR_EVENTS.output::<MonitorEvent>(&event, 0).is_err() {
        // The ring is full: reported with the next event as held back.
        gate.held = gate.held.saturating_add(held + 1);
    }
}

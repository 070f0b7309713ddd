//! Rate limit of the events a port can make the data plane report to the agent: a guest that
//! floods DHCPDECLINEs must not flood the agent's log or take its CPU. One event per port per
//! interval passes; the rest are counted in the gate and reported with the next one that passes.

/// Least time between two events of one port.
pub const EVENT_INTERVAL_NS: u64 = 1_000_000_000;

/// Ports whose last event is remembered (LRU: a port forgotten gets its next event through).
pub const MAX_EVENT_GATES: u32 = 1 << 14;

/// Per-port state of the rate limit, the value of `EVENT_GATES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EventGate {
    /// When the last event passed (`bpf_ktime_get_ns`); 0: never.
    pub last_ns: u64,
    /// Events held back since then.
    pub suppressed: u32,
    pub _pad: u32,
}

impl EventGate {
    /// Whether an event at `now_ns` passes. If it does, returns how many were held back before it
    /// (and starts counting again); if not, counts it.
    #[inline(always)]
    pub fn pass(&mut self, now_ns: u64) -> Option<u32> {
        if self.last_ns != 0 && now_ns.wrapping_sub(self.last_ns) < EVENT_INTERVAL_NS {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        let held = self.suppressed;
        (self.last_ns, self.suppressed) = (now_ns.max(1), 0);
        Some(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_and_the_rest_counted() {
        let mut gate = EventGate::default();
        assert_eq!(gate.pass(5), Some(0), "the first passes");
        for t in 1..1000 {
            assert_eq!(gate.pass(5 + t * 1000), None);
        }
        assert_eq!(
            gate.pass(5 + EVENT_INTERVAL_NS),
            Some(999),
            "the next reports what it held back"
        );
        assert_eq!(gate.pass(6 + EVENT_INTERVAL_NS), None);
        assert_eq!(gate.suppressed, 1);
    }

    #[test]
    fn an_event_at_boot_time_zero_still_starts_the_interval() {
        let mut gate = EventGate::default();
        assert_eq!(gate.pass(0), Some(0));
        assert_eq!(gate.pass(10), None);
    }
}

//! `alioth monitor`: events the programs write to a ring buffer while a monitor is listening, one
//! per dropped frame and, sampled, one per forwarded frame, with the frame's headers. A per-CPU
//! gate caps them per second in the kernel, so a flood of drops costs a counter, not a ring full
//! of events nobody can read in time.

use crate::eth::{self, ETH_HLEN, ETH_P_ARP, ETH_P_IPV4};
use crate::ipv4::{IPV4_MIN_HLEN, PROTO_UDP};
use crate::offload::PROTO_TCP;
use crate::packet::Packet;

/// Pinned per-CPU one-slot array of `Watch`: what a monitor asks for (the same on every CPU; all
/// zero: nobody listens) beside that CPU's rate gate, so that one lookup finds both.
pub const MONITOR: &str = "MONITOR";
/// Pinned ring buffer of `MonitorEvent`s.
pub const MONITOR_EVENTS: &str = "MONITOR_EVENTS";
/// Size of `MONITOR_EVENTS` in bytes (a power of two pages): room for 4,096 events.
pub const MONITOR_EVENTS_BYTES: u32 = 1 << 18;

/// `Config::flags`: an event per dropped frame.
pub const DROPS: u32 = 1;
/// `Config::flags`: an event per `Config::sample_every` forwarded frames.
pub const FORWARDED: u32 = 2;

/// `MonitorEvent::kind`.
pub const KIND_DROP: u8 = 1;
pub const KIND_FORWARDED: u8 = 2;

/// What a monitor asks for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// `DROPS` | `FORWARDED`; 0: no events.
    pub flags: u32,
    /// One forwarded frame in this many is reported (0 counts as 1).
    pub sample_every: u32,
    /// Events per second and CPU; the rest are counted and reported with the next that passes.
    pub per_second: u32,
    /// The listening monitor's process id: one monitor at a time.
    pub owner: u32,
}

/// A CPU's value of `MONITOR`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Watch {
    pub config: Config,
    pub gate: Gate,
}

/// The per-CPU rate limit: a one-second window and what it let through.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Gate {
    pub window_ns: u64,
    pub passed: u32,
    /// Events held back since the last one that passed.
    pub held: u32,
    /// Forwarded frames seen since the last sample.
    pub forwarded: u32,
    pub _pad: u32,
}

const SECOND_NS: u64 = 1_000_000_000;
/// See `Gate::pass`.
pub const CLOCK_EVERY: u32 = 64;

impl Gate {
    /// Whether an event passes under `per_second`: `Some(events held back before it)`, or `None`
    /// (and it is counted as held back). Once a window's events are spent, the clock is read only
    /// for one held-back event in `CLOCK_EVERY`: a flood then costs a counter, not a clock read.
    #[inline(always)]
    pub fn pass(&mut self, per_second: u32, now_ns: impl FnOnce() -> u64) -> Option<u32> {
        if self.passed >= per_second && !self.held.wrapping_add(1).is_multiple_of(CLOCK_EVERY) {
            self.held = self.held.saturating_add(1);
            return None;
        }
        let now = now_ns();
        if now.wrapping_sub(self.window_ns) >= SECOND_NS {
            (self.window_ns, self.passed) = (now, 0);
        }
        if self.passed >= per_second {
            self.held = self.held.saturating_add(1);
            return None;
        }
        self.passed += 1;
        let held = self.held;
        self.held = 0;
        Some(held)
    }

    /// Whether this forwarded frame is the one in `every` that is reported.
    #[inline(always)]
    pub fn sample(&mut self, every: u32) -> bool {
        self.forwarded = self.forwarded.wrapping_add(1);
        if self.forwarded >= every {
            self.forwarded = 0;
            return true;
        }
        false
    }
}

/// One event: what happened to a frame, where, and its headers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MonitorEvent {
    /// `KIND_DROP` or `KIND_FORWARDED`.
    pub kind: u8,
    /// IPv4 protocol (0 for ARP and others).
    pub proto: u8,
    /// The reason or action: a `Counter` index.
    pub counter: u16,
    /// The interface it came in on.
    pub ifindex: u32,
    /// Events this CPU held back just before this one.
    pub held: u32,
    /// The frame's length.
    pub len: u32,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub ether_type: u16,
    /// TCP and UDP ports (0 otherwise).
    pub src_port: u16,
    pub dst_port: u16,
    pub _pad: u16,
    /// IPv4 source and destination; for ARP, the sender's and target's addresses.
    pub src_ip: [u8; 4],
    pub dst_ip: [u8; 4],
}

/// The event's fields read from the frame (what cannot be read stays zero).
#[inline(always)]
pub fn describe<P: Packet + ?Sized>(pkt: &P, event: &mut MonitorEvent) {
    event.len = pkt.len() as u32;
    if let Some((dst, src)) = eth::macs(pkt) {
        (event.dst_mac, event.src_mac) = (dst, src);
    }
    let Some(ether_type) = eth::ether_type(pkt) else {
        return;
    };
    event.ether_type = ether_type;
    match ether_type {
        ETH_P_ARP => {
            if let (Some(s), Some(t)) = (pkt.array::<4>(ETH_HLEN + 14), pkt.array::<4>(ETH_HLEN + 24)) {
                (event.src_ip, event.dst_ip) = (*s, *t);
            }
        }
        ETH_P_IPV4 => ipv4_fields(pkt, event),
        _ => {}
    }
}

#[inline(always)]
fn ipv4_fields<P: Packet + ?Sized>(pkt: &P, event: &mut MonitorEvent) {
    let Some(h) = pkt.array::<20>(ETH_HLEN) else {
        return;
    };
    event.proto = h[9];
    event.src_ip = [h[12], h[13], h[14], h[15]];
    event.dst_ip = [h[16], h[17], h[18], h[19]];
    let first_fragment = u16::from_be_bytes([h[6], h[7]]) & 0x1fff == 0;
    let plain = (h[0] & 0x0f) as usize * 4 == IPV4_MIN_HLEN;
    if (event.proto == PROTO_TCP || event.proto == PROTO_UDP) && first_fragment && plain {
        if let Some(p) = pkt.array::<4>(ETH_HLEN + IPV4_MIN_HLEN) {
            event.src_port = u16::from_be_bytes([p[0], p[1]]);
            event.dst_port = u16::from_be_bytes([p[2], p[3]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_passes_so_many_per_second_and_counts_the_rest() {
        let mut gate = Gate::default();
        let t0 = 5 * SECOND_NS;
        for i in 0..3 {
            assert_eq!(gate.pass(3, || t0 + i), Some(0));
        }
        for i in 0..10 {
            assert_eq!(gate.pass(3, || t0 + 10 + i), None);
        }
        // The clock is read again within `CLOCK_EVERY` held-back events.
        let held = (0..CLOCK_EVERY)
            .find_map(|_| gate.pass(3, || t0 + SECOND_NS))
            .expect("the next window lets one through");
        assert!(
            (10..10 + CLOCK_EVERY).contains(&held),
            "it reports the {held} held back"
        );
        assert_eq!(gate.pass(3, || t0 + SECOND_NS + 1), Some(0));
    }

    #[test]
    fn a_held_back_flood_reads_the_clock_once_in_clock_every() {
        let mut gate = Gate::default();
        let reads = core::cell::Cell::new(0u32);
        let clock = || {
            reads.set(reads.get() + 1);
            SECOND_NS
        };
        let _ = gate.pass(1, clock);
        for _ in 0..CLOCK_EVERY * 10 {
            assert_eq!(gate.pass(1, clock), None);
        }
        assert!(reads.get() <= 11, "{} clock reads", reads.get());
    }

    #[test]
    fn one_forwarded_frame_in_every_n_is_sampled() {
        let mut gate = Gate::default();
        let hits = (0..100).filter(|_| gate.sample(10)).count();
        assert_eq!(hits, 10);
        assert!((0..5).all(|_| gate.sample(1)), "every one");
        assert!(gate.sample(0), "0 counts as 1");
    }
}

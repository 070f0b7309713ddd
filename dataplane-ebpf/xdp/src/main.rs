//! The port program: attached to the host side of every VM port.
//!
//! All decisions live in `alioth_common::pipeline`; this file binds them to the kernel: the packet
//! accessor over the XDP frame, the maps, and the counters.
#![no_std]
#![no_main]

mod packet;

use alioth_common::counters::COUNTER_SLOTS;
use alioth_common::maps::{Endpoint, EndpointKey, PortEntry, MAX_ENDPOINTS, MAX_IFINDEX, NO_PREALLOC};
use alioth_common::pipeline::{self, Action, Tables};
use alioth_common::Counter;
use aya_ebpf::bindings::xdp_action;
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::{Array, HashMap, PerCpuArray};
use aya_ebpf::programs::XdpContext;
use aya_log_ebpf::debug;

use packet::XdpPacket;

#[map]
static PORTS: Array<PortEntry> = Array::with_max_entries(MAX_IFINDEX, 0);

#[map]
static ENDPOINTS: HashMap<EndpointKey, Endpoint> = HashMap::with_max_entries(MAX_ENDPOINTS, NO_PREALLOC);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

struct Maps;

impl Tables for Maps {
    #[inline(always)]
    fn endpoint(&self, key: &EndpointKey) -> Option<Endpoint> {
        // SAFETY: the value is copied out before any other map operation.
        unsafe { ENDPOINTS.get(key).copied() }
    }
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = STATS.get_ptr_mut(counter.index()) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += 1 };
    }
}

#[xdp]
pub fn alioth_port(ctx: XdpContext) -> u32 {
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let Some(port) = PORTS.get(ifindex).copied().filter(PortEntry::is_programmed) else {
        count(Counter::DropUnknownPort);
        debug!(&ctx, "ifindex {}: not a programmed port, passed", ifindex);
        return xdp_action::XDP_PASS;
    };
    let mut pkt = XdpPacket::new(&ctx);
    let verdict = pipeline::port_ingress(&mut pkt, &port, &Maps);
    count(verdict.counter);
    if verdict.action == Action::Drop {
        // Off unless the agent runs with --bpf-log-level debug: then one record per dropped frame.
        debug!(
            &ctx,
            "ifindex {}: dropped, counter {}",
            ifindex,
            verdict.counter.index()
        );
    }
    match verdict.action {
        Action::Pass => xdp_action::XDP_PASS,
        Action::Tx => xdp_action::XDP_TX,
        Action::Drop => xdp_action::XDP_DROP,
    }
}

/// Passes every frame. Attached to the VM side of a veth lab so that native-mode XDP_TX frames from
/// the port program are delivered (veth only flushes them to a peer that runs XDP), and the baseline
/// the benchmarks measure the port program against.
#[xdp]
pub fn alioth_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

//! The NAT program (`alioth_common::nat`): elastic IPs on the skb path, translated with the
//! kernel's checksum helpers. The port program hands it what its subnet routes nowhere; it sends
//! on what comes from a source with an elastic IP (once the port's egress rules allow it) and
//! drops the rest as the port program would have. A translated frame from a port leaves by the uplink toward the next
//! hop the host's routes give (`bpf_fib_lookup`; `bpf_redirect_neigh` while its MAC is not known).

use alioth_common::maps::PortEntry;
use alioth_common::pipeline::{Action, Tables, Verdict};
use alioth_common::{nat, Counter, Packet};
use aya_ebpf::bindings::{
    bpf_fib_lookup as FibLookup, BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
    BPF_FIB_LOOKUP_OUTPUT, TC_ACT_SHOT,
};
use aya_ebpf::helpers::{bpf_fib_lookup, bpf_redirect_neigh};
use aya_ebpf::programs::TcContext;

use crate::packet::SkbPacket;
use crate::{firewall, slot_of_target, tc, Maps};

const AF_INET: u8 = 2;

/// Translates a frame from a port (its source) or from the uplink (its destination) and sends it on.
#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    // SAFETY: the program's own context.
    let ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    let mut pkt = tc::packet(ctx);
    // By reference: an `Option<PortEntry>` leaves LLVM an undefined payload to store.
    match crate::PORTS.get(ifindex) {
        Some(port) if port.is_programmed() => outbound(ctx, &mut pkt, &{ *port }),
        _ => {
            let verdict = nat::inbound(&mut pkt, &Maps);
            let verdict = firewall::to_port(&mut pkt, verdict);
            tc::finish(ctx, verdict, slot_of_target(&verdict))
        }
    }
}

#[inline(always)]
fn outbound(ctx: &TcContext, pkt: &mut SkbPacket, port: &PortEntry) -> i32 {
    let slot = port.stats_slot;
    if let Some(reason) = firewall::egress(pkt, port) {
        return tc::finish(ctx, Verdict::drop_with(reason), slot);
    }
    let dst = match nat::outbound(pkt, port, &Maps) {
        Ok(dst) => dst,
        Err(reason) => return tc::finish(ctx, Verdict::drop_with(reason), slot),
    };
    let Some(up) = Maps.uplink() else {
        return tc::finish(ctx, Verdict::drop_with(Counter::DropNoUplink), slot);
    };
    let verdict = Verdict::to(Action::Redirect, Counter::NatOut, up.ifindex);
    // From the agent's lookup source, as a router asks (it forwards, so the lookup answers on a
    // host that does not); without one, from the uplink, as the host itself would send.
    let (from, flags) = match crate::FIB_SOURCE.get(0).copied().unwrap_or(0) {
        0 => (up.ifindex, BPF_FIB_LOOKUP_OUTPUT),
        source => (source, 0),
    };
    // SAFETY: a plain struct of integers, all zero a valid value.
    let mut fib: FibLookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.ifindex = from;
    fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
    // SAFETY: the program's own skb, and a lookup structure of the size given.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.skb.skb as *mut _,
            &mut fib,
            core::mem::size_of::<FibLookup>() as i32,
            flags,
        )
    };
    let action = match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS if fib.ifindex == up.ifindex => {
            match alioth_common::eth::set_macs(&mut SkbPacket::new(ctx), &fib.dmac, &fib.smac) {
                Some(()) => tc::redirect(up.ifindex),
                None => TC_ACT_SHOT as i32,
            }
        }
        // The next hop's MAC is not known yet, the lookup's source does not forward, or it is
        // gone (a negative answer): the kernel resolves the next hop, holding the frame meanwhile.
        BPF_FIB_LKUP_RET_NO_NEIGH | BPF_FIB_LKUP_RET_FWD_DISABLED => resolve(up.ifindex, slot),
        _ if rc < 0 => resolve(up.ifindex, slot),
        _ => return tc::finish(ctx, Verdict::drop_with(Counter::DropNatNoRoute), slot),
    };
    tc::account(ctx, &verdict, action, slot)
}

/// Out of the uplink `ifindex` by the kernel's own next-hop resolution, counted.
#[inline(always)]
fn resolve(ifindex: u32, slot: u16) -> i32 {
    crate::count(Counter::NatOutResolve, slot);
    // SAFETY: without parameters, the helper looks the next hop up itself.
    unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32 }
}

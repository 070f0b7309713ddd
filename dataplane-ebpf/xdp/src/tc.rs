//! The skb path: TC programs on the same interfaces as the XDP programs, for the frames XDP leaves
//! to them (`alioth_common::offload`). They run the same pipeline; what differs is how a verdict
//! is carried out: `bpf_skb_adjust_room` with the UDP-tunnel flags instead of moving the head, so
//! the kernel keeps a partial checksum and GSO through the encapsulation (the uplink's device, or
//! software GSO before it, finishes both), and `bpf_redirect` instead of the device map.

use alioth_common::eth::ETH_HLEN;
use alioth_common::maps::{iface_flag, TAIL_DHCP};
use alioth_common::nat::TAIL_NAT;
use alioth_common::packet::At;
use alioth_common::pipeline::{Action, Verdict};
use alioth_common::vxlan::{self, Outer};
use alioth_common::{Counter, Packet};
use aya_ebpf::bindings::{
    bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
    BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_FIXED_GSO, TC_ACT_OK, TC_ACT_REDIRECT as REDIRECTED, TC_ACT_SHOT,
};
use aya_ebpf::helpers::{bpf_redirect, bpf_redirect_peer};
use aya_ebpf::programs::TcContext;

use crate::count_index;
use crate::monitor::{self, Fate};
use crate::packet::SkbPacket;

const SHOT: i32 = TC_ACT_SHOT as i32;
const TC_ACT_REDIRECT: i32 = REDIRECTED as i32;

/// Headers the pipeline reads, outer and inner: made directly accessible before it runs.
const HEADERS: u32 = (vxlan::OUTER_LEN + ETH_HLEN + 60 + 60) as u32;

/// `BPF_F_ADJ_ROOM_ENCAP_L2(len)`: the inner MAC header's length, for the kernel's GSO.
const fn encap_l2(len: usize) -> u64 {
    (len as u64 & 0xff) << 56
}

/// The outer headers are added in front of the inner frame's MAC header, which is written again
/// behind them. The segment size stays the guest's (the port MTU leaves room for the headers).
const ENCAP_FLAGS: u64 = BPF_F_ADJ_ROOM_FIXED_GSO as u64
    | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 as u64
    | BPF_F_ADJ_ROOM_ENCAP_L4_UDP as u64
    | BPF_F_ADJ_ROOM_ENCAP_L2_ETH as u64
    | encap_l2(ETH_HLEN);

/// A super-frame's segments carry the inner frame's payload: its segment size (the sender's MSS)
/// stays as it is when the outer headers go, where the kernel would add their length to it.
const DECAP_FLAGS: u64 = BPF_F_ADJ_ROOM_FIXED_GSO as u64;

/// Makes the headers directly accessible (an skb's head may hold fewer bytes than its frame).
#[inline(always)]
pub fn packet(ctx: &TcContext) -> SkbPacket {
    pulled(ctx, ctx.len().min(HEADERS))
}

/// `packet` with the whole frame directly accessible (the DHCP server reads options anywhere in
/// a request).
#[inline(always)]
pub fn whole_packet(ctx: &TcContext) -> SkbPacket {
    pulled(ctx, ctx.len())
}

/// The frame with its first `want` bytes directly accessible.
#[inline(always)]
fn pulled(ctx: &TcContext, want: u32) -> SkbPacket {
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        let _ = ctx.pull_data(want);
    }
    SkbPacket::new(ctx)
}

/// `finish`, unless the frame is a reply to the agent's probe: then it goes to the agent.
#[inline(always)]
pub fn finish_or_take_probe(ctx: &TcContext, ifindex: u32, verdict: Verdict, slot: u16) -> i32 {
    if crate::probe::taken(&SkbPacket::new(ctx), ifindex, &verdict) {
        crate::count(Counter::EchoProbeReply, slot);
        return SHOT;
    }
    finish(ctx, verdict, slot)
}

/// Carries out a verdict of the skb path, counted on the port's counters at `slot` too, and as
/// `SkbOnly` where the frame came in by an interface that runs no XDP. A pass is counted only
/// there: elsewhere the XDP program counted it.
#[inline(always)]
pub fn finish(ctx: &TcContext, verdict: Verdict, slot: u16) -> i32 {
    let action = match verdict.action {
        Action::Pass => {
            let alone = alone(ctx);
            add(verdict.counter, slot, alone);
            add(Counter::SkbOnly, slot, alone);
            return TC_ACT_OK as i32;
        }
        Action::Drop => SHOT,
        // An answer (ARP, ICMP, DHCP) goes back by the interface it came in by.
        // SAFETY: the program's own context.
        Action::Tx => deliver(unsafe { (*ctx.skb.skb).ifindex }),
        Action::Redirect => deliver(verdict.ifindex),
        Action::Encap => match encap(ctx, &verdict.outer) {
            Some(()) => redirect(verdict.ifindex),
            None => SHOT,
        },
        Action::Decap => match decap(ctx) {
            Some(()) => deliver(verdict.ifindex),
            None => SHOT,
        },
        Action::Dhcp => {
            // SAFETY: does not return when the server's program is in place.
            let _ = unsafe { crate::TC_TAILS.tail_call(ctx, TAIL_DHCP) };
            SHOT
        }
        Action::Nat => {
            // SAFETY: as above, for the NAT program.
            let _ = unsafe { crate::TC_TAILS.tail_call(ctx, TAIL_NAT) };
            SHOT
        }
    };
    account(ctx, &verdict, action, slot)
}

/// Counts what became of a verdict (`action`, a TC action) on the port counters at `slot` too,
/// and shows it to the monitor. Returns `action`.
#[inline(always)]
pub fn account(ctx: &TcContext, verdict: &Verdict, action: i32, slot: u16) -> i32 {
    let counter = match (verdict.counter, action) {
        (_, SHOT) if verdict.action != Action::Drop => Counter::DropRedirectFailed,
        (c, _) => c,
    };
    let index = crate::stats::opaque(counter.index());
    count_index(index, slot);
    add(Counter::SkbOnly, slot, alone(ctx));
    let fate = match action {
        SHOT => Fate::Dropped,
        TC_ACT_REDIRECT => Fate::Forwarded,
        _ => Fate::Other,
    };
    let inner = match (fate, verdict.action) {
        (Fate::Forwarded, Action::Encap) => vxlan::OUTER_LEN,
        _ => 0,
    };
    // SAFETY: the program's own context.
    let ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    monitor::watch(&At::new(&mut SkbPacket::new(ctx), inner), ifindex, index, fate);
    action
}

/// The agent's `IFACE_FLAGS` for interface `ifindex` (0: none).
#[inline(always)]
fn flags(ifindex: u32) -> u8 {
    crate::IFACE_FLAGS.get(ifindex).copied().unwrap_or(0)
}

/// 1 for a frame that came in by an interface running the skb path alone, else 0: a number to
/// count by, not a branch (one would have the verifier walk what follows once for each side).
#[inline(always)]
fn alone(ctx: &TcContext) -> u64 {
    // SAFETY: the program's own context.
    let ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    u64::from((flags(ifindex) & iface_flag::SKB_ONLY) >> iface_flag::SKB_ONLY.trailing_zeros())
}

/// Counts `counter` by `n` (on the port counters at `slot` too).
#[inline(always)]
fn add(counter: Counter, slot: u16, n: u64) {
    crate::stats::add_index(crate::stats::opaque(counter.index()), slot, n);
}

/// To port `ifindex`: into its guest's side at once where the agent marked it (`iface_flag::PEER`;
/// the veth's transmit and the guest side's backlog are skipped, and so is an XDP program the
/// guest runs on its side), else out of it.
#[inline(always)]
pub fn deliver(ifindex: u32) -> i32 {
    if flags(ifindex) & iface_flag::PEER != 0 {
        // SAFETY: plain helper call; TC ingress, where the helper is allowed.
        unsafe { bpf_redirect_peer(ifindex, 0) as i32 }
    } else {
        redirect(ifindex)
    }
}

/// Out of `ifindex` (TC_ACT_REDIRECT), or TC_ACT_SHOT when the helper refuses.
#[inline(always)]
pub fn redirect(ifindex: u32) -> i32 {
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(ifindex, 0) as i32 }
}

/// Inserts room for the outer headers behind the MAC header, then writes the outer headers and,
/// behind them, the inner MAC header again.
#[inline(always)]
fn encap(ctx: &TcContext, outer: &Outer) -> Option<()> {
    let inner_eth = *SkbPacket::new(ctx).array::<ETH_HLEN>(0)?;
    ctx.adjust_room(vxlan::OUTER_LEN as i32, BPF_ADJ_ROOM_MAC, ENCAP_FLAGS)
        .ok()?;
    let mut pkt = SkbPacket::new(ctx);
    let inner_len = pkt.len().checked_sub(vxlan::OUTER_LEN)?;
    *pkt.array_mut::<ETH_HLEN>(vxlan::OUTER_LEN)? = inner_eth;
    vxlan::write_outer(&mut pkt, outer, inner_len)
}

/// Removes the outer IPv4, UDP and VXLAN headers and the inner MAC header behind the outer MAC
/// header, which then takes the inner MAC addresses (both carry IPv4).
#[inline(always)]
fn decap(ctx: &TcContext) -> Option<()> {
    let macs = *SkbPacket::new(ctx).array::<12>(vxlan::OUTER_LEN)?;
    ctx.adjust_room(-(vxlan::OUTER_LEN as i32), BPF_ADJ_ROOM_MAC, DECAP_FLAGS)
        .ok()?;
    let mut pkt = SkbPacket::new(ctx);
    let dst: &mut [u8; 12] = pkt.array_mut::<12>(0)?;
    *dst = macs;
    Some(())
}

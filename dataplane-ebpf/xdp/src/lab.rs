//! Lab and benchmark programs, only in the lab object (`--features lab`), never in the one the
//! agent loads: the benchmarks' generator, sink and steady-state variants, and the pass-through
//! program veth labs attach to a VM's side.

use alioth_common::eth::{self, ETH_P_IPV4};
use alioth_common::generator::TX_HEAD_LEN;
use alioth_common::pipeline::Verdict;
use alioth_common::{dhcp, ipv4};
use aya_ebpf::bindings::{xdp_action, TC_ACT_OK, TC_ACT_SHOT};
use aya_ebpf::helpers::{bpf_clone_redirect, bpf_redirect, bpf_redirect_peer};
use aya_ebpf::macros::{classifier, xdp};
use aya_ebpf::programs::{TcContext, XdpContext};
use aya_ebpf::Global;

use crate::{bench, finish, port_path, uplink_path, Origin};

/// Benchmarks only (never attached): the port program (which hands DHCP to its own program), then
/// its edit of the frame undone (the head put back, a reply turned back
/// into the request), so that BPF_PROG_TEST_RUN with repeat > 1 measures the encapsulation, ARP
/// and ICMP paths in steady state; the undo's cost is in the figure.
#[xdp]
#[inline(always)]
pub fn alioth_bench_port(ctx: XdpContext) -> u32 {
    let (origin, verdict) = port_path(&ctx);
    undone(&ctx, origin, verdict, true)
}

/// Benchmarks only: the uplink program with its edit undone (decapsulation in steady state).
#[xdp]
#[inline(always)]
pub fn alioth_bench_uplink(ctx: XdpContext) -> u32 {
    let (origin, verdict) = uplink_path(&ctx);
    undone(&ctx, origin, verdict, false)
}

/// `finish`, then its edit undone. The programs' bodies are inlined into the entry points the
/// macro makes (`inline(always)` above): a body LLVM leaves as a function of its own holds
/// `finish`'s tail call, which the kernel refuses in a subprogram of an object without BTF.
#[inline(always)]
fn undone(ctx: &XdpContext, origin: Origin, verdict: Verdict, port_program: bool) -> u32 {
    let action = finish(ctx, origin, verdict);
    bench::undo(ctx, verdict.action, port_program);
    action
}

/// Passes every frame. Attached to the VM side of a veth lab so that native-mode XDP_TX frames from
/// the port program are delivered (veth only flushes them to a peer that runs XDP), and the baseline
/// the benchmarks measure the port program against.
#[xdp]
pub fn alioth_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The benchmarks' packet sink on a receiving VM's interface, as a hardware tester's receive port:
/// UDP to the discard port (9) is dropped, everything else passes, so ping and TCP still reach
/// the VM. On TC ingress, which every frame reaches however it came (a frame alioth delivers
/// straight into the VM's side skips the VM's XDP); the veth counts them received. Never attached
/// by the agent.
#[classifier]
pub fn alioth_sink(ctx: TcContext) -> i32 {
    let pkt = crate::tc::packet(&ctx);
    let discard = eth::ether_type(&pkt) == Some(ETH_P_IPV4)
        && ipv4::parse(&pkt).is_ok_and(|ip| ip.proto == ipv4::PROTO_UDP && ip.header_len == ipv4::IPV4_MIN_HLEN)
        && dhcp::udp_ports(&pkt).is_some_and(|(_, dst)| dst == DISCARD_PORT);
    if discard {
        TC_ACT_SHOT as i32
    } else {
        TC_ACT_OK as i32
    }
}

/// The UDP port `alioth_sink` drops (RFC 863).
const DISCARD_PORT: u16 = 9;

/// The generator's frame head (`generator::TX_HEAD_GLOBAL`), set by the loader.
#[unsafe(no_mangle)]
static ALIOTH_TX_HEAD: Global<[u8; TX_HEAD_LEN]> = Global::new([0; TX_HEAD_LEN]);

/// Sends every frame back out of the interface it came in on, its head first restored from
/// `ALIOTH_TX_HEAD`: the benchmarks' in-kernel packet generator (BPF_PROG_RUN with live frames on
/// a VM's interface). Never attached by the agent.
#[xdp]
pub fn alioth_tx(ctx: XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + TX_HEAD_LEN > end {
        return xdp_action::XDP_ABORTED;
    }
    let head = ALIOTH_TX_HEAD.load();
    // SAFETY: the frame holds TX_HEAD_LEN bytes from `data` (checked above).
    unsafe { core::ptr::write_unaligned(data as *mut [u8; TX_HEAD_LEN], head) };
    xdp_action::XDP_TX
}

/// The benchmarks' skb generator, where the kernel refuses live frames: each run of it
/// (BPF_PROG_TEST_RUN on the VM's eth0) sends a copy of its frame out of that interface, as the VM
/// would send it (`bpf_clone_redirect`, an skb). Never attached by the agent.
#[classifier]
pub fn alioth_clone_tx(ctx: TcContext) -> i32 {
    // SAFETY: the program's own context.
    let skb = ctx.skb.skb;
    // SAFETY: as above; the helper validates the interface.
    unsafe { bpf_clone_redirect(skb, (*skb).ifindex, 0) };
    TC_ACT_SHOT as i32
}

/// Where `alioth_forward` sends every frame (an ifindex), and whether into that veth's peer
/// (`bpf_redirect_peer`) rather than out of it; set by the loader.
#[unsafe(no_mangle)]
static ALIOTH_FORWARD_TO: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static ALIOTH_FORWARD_PEER: Global<u32> = Global::new(0);

/// The benchmarks' bare forwarder on TC ingress: every frame redirected, unread and unchanged.
/// Along a bench's path it costs what moving a frame there costs with no data plane's work: the
/// floor under any data plane's figure on that path. Never attached by the agent.
#[classifier]
pub fn alioth_forward(_ctx: TcContext) -> i32 {
    let to = ALIOTH_FORWARD_TO.load();
    // SAFETY: the helpers validate the interface.
    unsafe {
        match ALIOTH_FORWARD_PEER.load() {
            0 => bpf_redirect(to, 0) as i32,
            _ => bpf_redirect_peer(to, 0) as i32,
        }
    }
}

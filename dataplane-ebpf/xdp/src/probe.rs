//! Replies to the agent's echo probes (`alioth_common::probe`), taken out of the path before a
//! verdict would deliver them to the probing VM.

use alioth_common::maps::MAX_IFINDEX;
use alioth_common::pipeline::{Action, Verdict};
use alioth_common::probe::{self, ProbeReply, ECHO_REPLIES_BYTES};
use alioth_common::{vxlan, Packet};
use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, RingBuf};

#[map]
static ECHO: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static ECHO_REPLIES: RingBuf = RingBuf::with_byte_size(ECHO_REPLIES_BYTES, 0);

/// Whether the frame is a probe reply `verdict` would deliver (answered in place, switched, or
/// decapsulated); if so, it is handed to the agent.
#[inline(always)]
pub fn taken<P: Packet>(pkt: &P, ifindex: u32, verdict: &Verdict) -> bool {
    let off = match verdict.action {
        Action::Tx | Action::Redirect => 0,
        Action::Decap => vxlan::OUTER_LEN,
        _ => return false,
    };
    let marker = || ECHO.get(0).map_or(0, |m| *m as u16);
    let Some(reply) = probe::reply(pkt, off, marker) else {
        return false;
    };
    let reply = ProbeReply {
        // SAFETY: a helper without arguments.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        ifindex: ifindex & (MAX_IFINDEX - 1),
        ..reply
    };
    let _ = ECHO_REPLIES.output::<ProbeReply>(&reply, 0);
    true
}

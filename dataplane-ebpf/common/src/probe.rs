//! The agent's echo probes (`alioth echo`): ICMP echo requests sent as if a port had sent them,
//! through its program. A reply on its way back to that port is the agent's when its identifier is
//! the agent's marker: the programs hand it to the agent (`ECHO_REPLIES`) instead of the VM.

use crate::eth::{ETH_HLEN, ETH_P_IPV4};
use crate::icmp::ECHO_REPLY;
use crate::ipv4::{IPV4_MIN_HLEN, PROTO_ICMP};
use crate::packet::Packet;

/// One-slot array of the agent's marker: the ICMP identifier of its probes (0: none).
pub const ECHO: &str = "ECHO";
/// Ring buffer of `ProbeReply`s for the agent.
pub const ECHO_REPLIES: &str = "ECHO_REPLIES";
/// Size of `ECHO_REPLIES` in bytes (a power of two pages).
pub const ECHO_REPLIES_BYTES: u32 = 1 << 14;

/// A reply to a probe, as the data plane saw it arrive.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ProbeReply {
    /// `bpf_ktime_get_ns` when it arrived (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
    /// The interface it arrived on (the uplink, another port, or the probing port for a gateway).
    pub ifindex: u32,
    pub sequence: u16,
    pub ttl: u8,
    pub _pad: u8,
    /// Who answered.
    pub src_ip: [u8; 4],
    pub _pad2: u32,
}

/// The probe reply at `off` (an Ethernet frame: IPv4 without options, an ICMP echo reply whose
/// identifier is `marker()`, asked only of an echo reply); `None` for anything else.
#[inline(always)]
pub fn reply<P: Packet + ?Sized>(pkt: &P, off: usize, marker: impl FnOnce() -> u16) -> Option<ProbeReply> {
    let h = pkt.array::<{ ETH_HLEN + IPV4_MIN_HLEN + 8 }>(off)?;
    let ip = &h[ETH_HLEN..];
    let icmp = &h[ETH_HLEN + IPV4_MIN_HLEN..];
    let ether_type = u16::from_be_bytes([h[12], h[13]]);
    if ether_type != ETH_P_IPV4 || ip[0] != 0x45 || ip[9] != PROTO_ICMP || icmp[0] != ECHO_REPLY || icmp[1] != 0 {
        return None;
    }
    let id = u16::from_be_bytes([icmp[4], icmp[5]]);
    let marker = marker();
    if marker == 0 || id != marker {
        return None;
    }
    Some(ProbeReply {
        sequence: u16::from_be_bytes([icmp[6], icmp[7]]),
        ttl: ip[8],
        src_ip: [ip[12], ip[13], ip[14], ip[15]],
        ..Default::default()
    })
}

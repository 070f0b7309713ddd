//! Frames whose offload state XDP cannot see or keep, and the sizes of GSO super-frames.
//!
//! A guest with checksum offload (every virtio guest, every veth) sends TCP and UDP with the
//! checksum left for the device: the kernel marks the skb CHECKSUM_PARTIAL and the checksum field
//! holds only the pseudo-header sum. An XDP redirect turns the frame into an `xdp_frame`, which has
//! no room for that mark, so the frame would arrive with a wrong checksum. XDP cannot read the mark
//! either, but the field tells: a partial checksum is exactly the folded pseudo-header sum, which a
//! finished one equals about once in 65,536 frames. Those frames, and GSO super-frames (which
//! generic XDP and taps hand over whole), take the skb path: the TC program on the same interface
//! runs the same pipeline on the skb, whose offload state the kernel keeps. A finished checksum
//! mistaken for a partial one costs only the slower path.

use crate::checksum;
use crate::eth::ETH_HLEN;
use crate::ipv4::{Ipv4, IPV4_MIN_HLEN, MAX_IP_LEN, PROTO_UDP};
use crate::packet::Packet;

pub const PROTO_TCP: u8 = 6;
/// Offset of the checksum field in a TCP and a UDP header.
const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;
const UDP_HLEN: usize = 8;

/// True when XDP must leave the frame to the skb path: a GSO super-frame, or TCP/UDP whose
/// checksum is left to the device (or that has IPv4 options, where it is not looked for).
#[inline(always)]
pub fn needs_skb<P: Packet + ?Sized>(pkt: &P, ip: &Ipv4) -> bool {
    if ip.total_len > MAX_IP_LEN {
        return true;
    }
    let field = match ip.proto {
        PROTO_TCP => TCP_CSUM,
        PROTO_UDP => UDP_CSUM,
        _ => return false,
    };
    // Only a whole datagram (or a first fragment, which a sender never leaves partial) has one.
    if ip.is_fragment() {
        return false;
    }
    if ip.header_len != IPV4_MIN_HLEN {
        return true;
    }
    let Some(csum) = pkt.be16_at(ETH_HLEN + IPV4_MIN_HLEN + field) else {
        return false;
    };
    // UDP without a checksum has nothing to finish.
    if ip.proto == PROTO_UDP && csum == 0 {
        return false;
    }
    csum == pseudo_header_sum(ip)
}

/// The folded (not inverted) pseudo-header sum of an option-less IPv4 TCP or UDP packet: what a
/// sender leaves in the checksum field for the device to finish.
#[inline(always)]
pub fn pseudo_header_sum(ip: &Ipv4) -> u16 {
    let l4_len = ip.total_len.saturating_sub(ip.header_len) as u64;
    let word = |b: &[u8; 4]| u16::from_be_bytes([b[0], b[1]]) as u64 + u16::from_be_bytes([b[2], b[3]]) as u64;
    checksum::fold(word(&ip.src) + word(&ip.dst) + ip.proto as u64 + l4_len)
}

/// The largest frame a GSO super-frame becomes once segmented: headers plus `gso_size` payload
/// bytes (TCP's header length read from the frame). `None` when the headers are not readable.
#[inline(always)]
pub fn segment_len<P: Packet + ?Sized>(pkt: &P, ip: &Ipv4, gso_size: usize) -> Option<usize> {
    let l4 = match ip.proto {
        PROTO_TCP if ip.header_len == IPV4_MIN_HLEN => {
            let offset = pkt.u8_at(ETH_HLEN + IPV4_MIN_HLEN + 12)?;
            ((offset >> 4) as usize) * 4
        }
        PROTO_UDP => UDP_HLEN,
        _ => return None,
    };
    Some(ETH_HLEN + ip.header_len + l4 + gso_size)
}

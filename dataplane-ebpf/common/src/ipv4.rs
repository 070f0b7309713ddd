//! IPv4 header parsing and rewriting.

use crate::checksum;
use crate::counters::Counter;
use crate::eth::ETH_HLEN;
use crate::packet::Packet;

pub const IPV4_MIN_HLEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_UDP: u8 = 17;
/// Largest IPv4 packet the data plane checksums itself (the port MTU is at most this).
pub const MAX_IP_LEN: usize = 1500;

/// The fields of an IPv4 header the data plane looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    /// Header length in bytes (IHL * 4).
    pub header_len: usize,
    /// Total length from the header: header + payload, without Ethernet padding.
    pub total_len: usize,
    /// Flags and fragment offset field.
    pub frag: u16,
    pub proto: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

impl Ipv4 {
    /// More-fragments set or a non-zero offset.
    pub const fn is_fragment(&self) -> bool {
        self.frag & 0x3fff != 0
    }
}

/// Parses the IPv4 header that follows the Ethernet header.
#[inline(always)]
pub fn parse<P: Packet + ?Sized>(pkt: &P) -> Result<Ipv4, Counter> {
    let h = pkt.array::<IPV4_MIN_HLEN>(ETH_HLEN).ok_or(Counter::DropIpMalformed)?;
    let header_len = ((h[0] & 0x0f) as usize) * 4;
    let total_len = u16::from_be_bytes([h[2], h[3]]) as usize;
    if h[0] >> 4 != 4 || header_len < IPV4_MIN_HLEN || total_len < header_len {
        return Err(Counter::DropIpMalformed);
    }
    if ETH_HLEN + total_len > pkt.len() {
        return Err(Counter::DropIpMalformed);
    }
    let mut ip = Ipv4 {
        header_len,
        total_len,
        frag: u16::from_be_bytes([h[6], h[7]]),
        proto: h[9],
        src: [0; 4],
        dst: [0; 4],
    };
    ip.src.copy_from_slice(&h[12..16]);
    ip.dst.copy_from_slice(&h[16..20]);
    Ok(ip)
}

/// True when the option-less header's checksum verifies.
#[inline(always)]
pub fn header_checksum_ok<P: Packet + ?Sized>(pkt: &P) -> bool {
    match pkt.array::<IPV4_MIN_HLEN>(ETH_HLEN) {
        Some(h) => checksum::fold(checksum::sum_bytes(h)) == 0xffff,
        None => false,
    }
}

/// Swaps source and destination and resets the TTL of a header whose checksum verified.
///
/// The swap leaves the one's complement sum unchanged, so only the TTL word updates the checksum.
#[inline(always)]
pub fn turn_around<P: Packet + ?Sized>(pkt: &mut P, ttl: u8) -> Option<()> {
    let h = pkt.array_mut::<IPV4_MIN_HLEN>(ETH_HLEN)?;
    let mut src = [0u8; 4];
    src.copy_from_slice(&h[12..16]);
    h.copy_within(16..20, 12);
    h[16..20].copy_from_slice(&src);
    let old = u16::from_be_bytes([h[8], h[9]]);
    h[8] = ttl;
    let new = u16::from_be_bytes([h[8], h[9]]);
    let csum = checksum::update16(u16::from_be_bytes([h[10], h[11]]), old, new);
    h[10..12].copy_from_slice(&csum.to_be_bytes());
    Some(())
}

/// Sets the TTL (the protocol byte shares its checksum word) and updates the header checksum.
#[inline(always)]
pub fn set_ttl<P: Packet + ?Sized>(pkt: &mut P, ttl: u8, proto: u8) -> Option<()> {
    let h = pkt.array_mut::<4>(ETH_HLEN + 8)?;
    let old = u16::from_be_bytes([h[0], h[1]]);
    let new = u16::from_be_bytes([ttl, proto]);
    let csum = checksum::update16(u16::from_be_bytes([h[2], h[3]]), old, new);
    h[0] = ttl;
    h[2..4].copy_from_slice(&csum.to_be_bytes());
    Some(())
}

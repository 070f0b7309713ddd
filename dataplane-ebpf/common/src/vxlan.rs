//! VXLAN (RFC 7348) over IPv4: the outer headers the port program prepends and the uplink program
//! recognises, byte-compatible with the Linux kernel's vxlan driver.

use crate::checksum;
use crate::eth::{Mac, ETH_HLEN, ETH_P_IPV4};
use crate::ipv4::{Ipv4, IPV4_MIN_HLEN, PROTO_UDP};
use crate::maps::Uplink;
use crate::packet::Packet;

/// IANA port, the default of `--vxlan-port`.
pub const DEFAULT_PORT: u16 = 4789;
pub const UDP_HLEN: usize = 8;
pub const VXLAN_HLEN: usize = 8;
/// Bytes prepended to the inner frame: outer Ethernet + IPv4 + UDP + VXLAN.
pub const OUTER_LEN: usize = ETH_HLEN + IPV4_MIN_HLEN + UDP_HLEN + VXLAN_HLEN;
/// Outer IPv4 bytes around an inner frame: the outer IPv4 length is inner frame + this.
pub const OUTER_IP_OVERHEAD: usize = IPV4_MIN_HLEN + UDP_HLEN + VXLAN_HLEN;
/// VXLAN flags byte with the I bit: the VNI is valid.
pub const FLAG_VNI: u8 = 0x08;
/// TTL of outer packets (the kernel's vxlan uses the route's default, 64).
pub const OUTER_TTL: u8 = 64;
/// Outer UDP source ports come from this range (as RFC 7348 recommends), picked by a flow hash.
pub const SOURCE_PORT_MIN: u16 = 49152;

/// Everything the outer headers carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outer {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src_ip: [u8; 4],
    pub dst_ip: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub vni: u32,
}

impl Outer {
    pub const ZERO: Outer = Outer {
        src_mac: [0; 6],
        dst_mac: [0; 6],
        src_ip: [0; 4],
        dst_ip: [0; 4],
        src_port: 0,
        dst_port: 0,
        vni: 0,
    };
}

/// Writes the outer headers into the first `OUTER_LEN` bytes; the `inner_len`-byte inner frame
/// follows them. DF set (an overlay packet is never fragmented), IPv4 checksum computed, UDP
/// checksum 0 as RFC 7348 allows for IPv4.
#[inline(always)]
pub fn write_outer<P: Packet + ?Sized>(pkt: &mut P, o: &Outer, inner_len: usize) -> Option<()> {
    let ip_len = (inner_len + OUTER_IP_OVERHEAD) as u16;
    let udp_len = (inner_len + UDP_HLEN + VXLAN_HLEN) as u16;
    let h = pkt.array_mut::<OUTER_LEN>(0)?;
    h[0..6].copy_from_slice(&o.dst_mac);
    h[6..12].copy_from_slice(&o.src_mac);
    h[12..14].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
    let mut ip = [0u8; IPV4_MIN_HLEN];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = OUTER_TTL;
    ip[9] = PROTO_UDP;
    ip[12..16].copy_from_slice(&o.src_ip);
    ip[16..20].copy_from_slice(&o.dst_ip);
    let csum = checksum::finish(checksum::sum_bytes(&ip));
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    h[ETH_HLEN..ETH_HLEN + IPV4_MIN_HLEN].copy_from_slice(&ip);
    let u = &mut h[ETH_HLEN + IPV4_MIN_HLEN..];
    u[0..2].copy_from_slice(&o.src_port.to_be_bytes());
    u[2..4].copy_from_slice(&o.dst_port.to_be_bytes());
    u[4..6].copy_from_slice(&udp_len.to_be_bytes());
    u[6..8].copy_from_slice(&[0, 0]);
    u[8..12].copy_from_slice(&[FLAG_VNI, 0, 0, 0]);
    u[12..16].copy_from_slice(&(o.vni << 8).to_be_bytes());
    Some(())
}

/// Outer UDP source port for an inner IPv4 packet: a hash of its addresses, protocol and (for
/// unfragmented TCP/UDP without options) ports, so ECMP and RSS spread flows but keep each in order.
#[inline(always)]
pub fn source_port<P: Packet + ?Sized>(inner: &P, ip: &Ipv4) -> u16 {
    let mut ports = 0u32;
    if (ip.proto == 6 || ip.proto == PROTO_UDP) && !ip.is_fragment() && ip.header_len == IPV4_MIN_HLEN {
        if let Some(p) = inner.array::<4>(ETH_HLEN + IPV4_MIN_HLEN) {
            ports = u32::from_ne_bytes(*p);
        }
    }
    let mut h = u32::from_ne_bytes(ip.src) ^ u32::from_ne_bytes(ip.dst).rotate_left(16) ^ ports ^ ip.proto as u32;
    // murmur3's finaliser: every input bit reaches the 14 bits kept.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    SOURCE_PORT_MIN | (h as u16 & 0x3fff)
}

/// The VNI of a VXLAN packet for this host's tunnel endpoint, or `None` when the frame is anything
/// else (which the uplink hands to the host stack untouched).
#[inline(always)]
pub fn parse_outer<P: Packet + ?Sized>(pkt: &P, up: &Uplink) -> Option<u32> {
    let h = pkt.array::<OUTER_LEN>(0)?;
    if u16::from_be_bytes([h[12], h[13]]) != ETH_P_IPV4 {
        return None;
    }
    let ip = &h[ETH_HLEN..ETH_HLEN + IPV4_MIN_HLEN];
    // Only option-less, unfragmented IPv4/UDP to our own tunnel address.
    if ip[0] != 0x45 || ip[9] != PROTO_UDP || ip[16..20] != up.ip || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if total < OUTER_IP_OVERHEAD + ETH_HLEN || ETH_HLEN + total > pkt.len() {
        return None;
    }
    let u = &h[ETH_HLEN + IPV4_MIN_HLEN..];
    if u16::from_be_bytes([u[2], u[3]]) != up.vxlan_port || u[8] & FLAG_VNI == 0 {
        return None;
    }
    Some(u32::from_be_bytes([0, u[12], u[13], u[14]]))
}

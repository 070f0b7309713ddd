//! ICMP echo responder for gateway addresses.

use crate::checksum;
use crate::counters::Counter;
use crate::eth::{self, Mac, ETH_HLEN};
use crate::ipv4::{self, Ipv4, IPV4_MIN_HLEN, MAX_IP_LEN, PROTO_ICMP};
use crate::packet::Packet;

pub const ECHO_REPLY: u8 = 0;
pub const ECHO_REQUEST: u8 = 8;
pub const ICMP_HLEN: usize = 8;
/// TTL of packets the gateway originates.
pub const REPLY_TTL: u8 = 64;

/// ICMP types whose body quotes the datagram they are about (after the 8-byte header).
#[inline(always)]
pub const fn is_error(icmp_type: u8) -> bool {
    matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
}

/// Checks that the IPv4 packet to a gateway is an echo request we answer; `Err` is the drop reason.
#[inline(always)]
pub fn check_echo_request<P: Packet + ?Sized>(pkt: &P, ip: &Ipv4) -> Result<(), Counter> {
    if ip.header_len != IPV4_MIN_HLEN {
        return Err(Counter::DropIpOptions);
    }
    if ip.is_fragment() {
        return Err(Counter::DropIpFragment);
    }
    if !ipv4::header_checksum_ok(pkt) {
        return Err(Counter::DropIpBadChecksum);
    }
    if ip.proto != PROTO_ICMP {
        return Err(Counter::DropGatewayUnhandled);
    }
    let off = ETH_HLEN + IPV4_MIN_HLEN;
    let icmp_len = ip.total_len - IPV4_MIN_HLEN;
    if icmp_len < ICMP_HLEN {
        return Err(Counter::DropIpMalformed);
    }
    let head = pkt.array::<2>(off).ok_or(Counter::DropIpMalformed)?;
    if head[0] != ECHO_REQUEST || head[1] != 0 {
        return Err(Counter::DropGatewayUnhandled);
    }
    if ip.total_len > MAX_IP_LEN {
        return Err(Counter::DropTooBig);
    }
    let sum = crate::packet::sum_range::<P, { MAX_IP_LEN - IPV4_MIN_HLEN }>(pkt, off, icmp_len)
        .ok_or(Counter::DropIpMalformed)?;
    if checksum::fold(sum) != 0xffff {
        return Err(Counter::DropIcmpBadChecksum);
    }
    Ok(())
}

/// Rewrites a checked echo request in place into the gateway's echo reply.
#[inline(always)]
pub fn write_echo_reply<P: Packet + ?Sized>(pkt: &mut P, gateway_mac: &Mac) -> Option<()> {
    let (_, client_mac) = eth::macs(pkt)?;
    eth::set_macs(pkt, &client_mac, gateway_mac)?;
    ipv4::turn_around(pkt, REPLY_TTL)?;
    set_type(pkt, ECHO_REPLY)
}

/// Sets the ICMP message type of an option-less IPv4 packet and updates the ICMP checksum.
#[inline(always)]
pub fn set_type<P: Packet + ?Sized>(pkt: &mut P, icmp_type: u8) -> Option<()> {
    let h = pkt.array_mut::<4>(ETH_HLEN + IPV4_MIN_HLEN)?;
    let old = u16::from_be_bytes([h[0], h[1]]);
    let csum = u16::from_be_bytes([h[2], h[3]]);
    h[0] = icmp_type;
    let new = u16::from_be_bytes([h[0], h[1]]);
    h[2..4].copy_from_slice(&checksum::update16(csum, old, new).to_be_bytes());
    Some(())
}

/// ICMP "destination unreachable", code "fragmentation needed and DF set" (RFC 792, RFC 1191).
pub const DEST_UNREACHABLE: u8 = 3;
pub const FRAG_NEEDED: u8 = 4;
/// What a "fragmentation needed" quotes: the IPv4 header and the first 8 bytes after it.
const QUOTED: usize = IPV4_MIN_HLEN + 8;
/// Length of a "fragmentation needed" frame: Ethernet, IPv4, ICMP, the quote.
pub const FRAG_NEEDED_LEN: usize = ETH_HLEN + IPV4_MIN_HLEN + ICMP_HLEN + QUOTED;

/// Turns an option-less IPv4 frame from a VM into the ICMP "fragmentation needed" its gateway
/// (`gateway_mac`, `gateway_ip`) sends back, with `mtu` as the next hop's MTU (RFC 1191).
#[inline(always)]
pub fn write_frag_needed<P: Packet + ?Sized>(
    pkt: &mut P,
    gateway_mac: &Mac,
    gateway_ip: &[u8; 4],
    mtu: u16,
) -> Option<()> {
    let quoted = *pkt.array::<QUOTED>(ETH_HLEN)?;
    let (_, vm_mac) = eth::macs(pkt)?;
    let mut f = [0u8; FRAG_NEEDED_LEN];
    f[..6].copy_from_slice(&vm_mac);
    f[6..12].copy_from_slice(gateway_mac);
    f[12..14].copy_from_slice(&eth::ETH_P_IPV4.to_be_bytes());
    let ip = ETH_HLEN;
    let total = (FRAG_NEEDED_LEN - ETH_HLEN) as u16;
    f[ip] = 0x45;
    f[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
    f[ip + 8] = REPLY_TTL;
    f[ip + 9] = PROTO_ICMP;
    f[ip + 12..ip + 16].copy_from_slice(gateway_ip);
    f[ip + 16..ip + 20].copy_from_slice(&quoted[12..16]);
    let icmp = ip + IPV4_MIN_HLEN;
    f[icmp] = DEST_UNREACHABLE;
    f[icmp + 1] = FRAG_NEEDED;
    f[icmp + 6..icmp + 8].copy_from_slice(&mtu.to_be_bytes());
    f[icmp + ICMP_HLEN..].copy_from_slice(&quoted);
    let icmp_sum = checksum::sum_bytes::<{ ICMP_HLEN + QUOTED }>(f[icmp..].try_into().ok()?);
    f[icmp + 2..icmp + 4].copy_from_slice(&checksum::finish(icmp_sum).to_be_bytes());
    let ip_sum = checksum::sum_bytes::<IPV4_MIN_HLEN>(f[ip..icmp].try_into().ok()?);
    f[ip + 10..ip + 12].copy_from_slice(&checksum::finish(ip_sum).to_be_bytes());
    pkt.resize(FRAG_NEEDED_LEN)?;
    *pkt.array_mut::<FRAG_NEEDED_LEN>(0)? = f;
    Some(())
}

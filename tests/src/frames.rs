//! Test frames built with etherparse: an implementation independent of the data plane's own code.

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, IcmpEchoHeader, Icmpv4Type, PacketBuilder, SlicedPacket,
};

pub type Mac = [u8; 6];

/// An ARP request from `sender` asking who has `target_ip`.
pub fn arp_request(sender_mac: Mac, sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    arp(
        ArpOperation::REQUEST,
        [0xff; 6],
        sender_mac,
        sender_ip,
        [0; 6],
        target_ip,
    )
}

/// Any ARP frame for IPv4 over Ethernet.
pub fn arp(
    op: ArpOperation,
    eth_dst: Mac,
    sender_mac: Mac,
    sender_ip: [u8; 4],
    target_mac: Mac,
    target_ip: [u8; 4],
) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        op,
        &sender_mac,
        &sender_ip,
        &target_mac,
        &target_ip,
    )
    .expect("valid ARP");
    let builder = PacketBuilder::ethernet2(sender_mac, eth_dst).arp(arp);
    let mut out = Vec::with_capacity(builder.size());
    builder.write(&mut out).expect("write ARP");
    out
}

/// The ARP reply `target_ip is at target_mac` addressed to the requester, as RFC 826 says.
pub fn arp_reply(requester_mac: Mac, requester_ip: [u8; 4], target_mac: Mac, target_ip: [u8; 4]) -> Vec<u8> {
    arp(
        ArpOperation::REPLY,
        requester_mac,
        target_mac,
        target_ip,
        requester_mac,
        requester_ip,
    )
}

/// An ICMP echo request with valid checksums.
pub fn echo_request(
    src_mac: Mac,
    dst_mac: Mac,
    src: [u8; 4],
    dst: [u8; 4],
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    icmp(
        src_mac,
        dst_mac,
        src,
        dst,
        Icmpv4Type::EchoRequest(IcmpEchoHeader { id, seq }),
        payload,
    )
}

/// The echo reply a gateway `gw` at `gw_mac` should send for the request `echo_request(..)` made.
pub fn echo_reply(
    client_mac: Mac,
    gw_mac: Mac,
    client: [u8; 4],
    gw: [u8; 4],
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    icmp(
        gw_mac,
        client_mac,
        gw,
        client,
        Icmpv4Type::EchoReply(IcmpEchoHeader { id, seq }),
        payload,
    )
}

fn icmp(src_mac: Mac, dst_mac: Mac, src: [u8; 4], dst: [u8; 4], kind: Icmpv4Type, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .icmpv4(kind);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).expect("write ICMP");
    out
}

/// True when etherparse reads the frame as Ethernet/IPv4/ICMP with correct IPv4 and ICMP checksums.
pub fn icmp_checksums_ok(frame: &[u8]) -> bool {
    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        return false;
    };
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
        return false;
    };
    let h = ip.header().to_header();
    if h.calc_header_checksum() != h.header_checksum {
        return false;
    }
    match p.transport {
        Some(etherparse::TransportSlice::Icmpv4(icmp)) => internet_checksum(icmp.slice()) == 0,
        _ => false,
    }
}

/// Textbook RFC 1071 checksum: 0 for data that carries a correct checksum.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from(chunk[0]) << 8
        };
        sum += u32::from(word);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    !(sum as u16)
}

/// A UDP datagram with a valid checksum and the given TTL.
#[allow(clippy::too_many_arguments)]
pub fn udp(
    src_mac: Mac,
    dst_mac: Mac,
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, ttl)
        .udp(sport, dport);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).expect("write UDP");
    out
}

/// A TCP segment (ACK and PSH set) with a valid checksum.
pub fn tcp(src_mac: Mac, dst_mac: Mac, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 65535)
        .ack(1)
        .psh();
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).expect("write TCP");
    out
}

/// A TCP SYN (a connection's first segment) with a valid checksum.
pub fn tcp_syn(src_mac: Mac, dst_mac: Mac, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 65535)
        .syn();
    let mut out = Vec::with_capacity(builder.size(0));
    builder.write(&mut out, &[]).expect("write TCP");
    out
}

/// An ICMP message of any type and code (8 bytes of header, the rest of it zero) with valid
/// checksums.
pub fn icmp_of(src_mac: Mac, dst_mac: Mac, src: [u8; 4], dst: [u8; 4], icmp_type: u8, code: u8) -> Vec<u8> {
    let t = Icmpv4Type::Unknown {
        type_u8: icmp_type,
        code_u8: code,
        bytes5to8: [0; 4],
    };
    icmp(src_mac, dst_mac, src, dst, t, &[0; 8])
}

/// `frame` (Ethernet, option-less IPv4, TCP or UDP) as a guest with checksum offload sends it: the
/// L4 checksum field holds only the pseudo-header sum, for the device to finish.
pub fn offloaded(mut frame: Vec<u8>) -> Vec<u8> {
    let ip = &frame[14..34];
    let (proto, total) = (ip[9], u16::from_be_bytes([ip[2], ip[3]]));
    let mut pseudo = ip[12..20].to_vec();
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(total - 20).to_be_bytes());
    let field = 34 + if proto == 6 { 16 } else { 6 };
    frame[field..field + 2].copy_from_slice(&(!internet_checksum(&pseudo)).to_be_bytes());
    frame
}

/// The outer side of a VXLAN packet.
#[derive(Clone, Copy, Debug)]
pub struct Underlay {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
}

/// `inner` in VXLAN as RFC 7348 and Linux's vxlan build it: DF, TTL 64, UDP checksum 0.
pub fn vxlan(u: &Underlay, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x08, 0, 0, 0];
    payload.extend_from_slice(&(vni << 8).to_be_bytes());
    payload.extend_from_slice(inner);
    let mut ip = etherparse::Ipv4Header::new((payload.len() + 8) as u16, 64, etherparse::IpNumber::UDP, u.src, u.dst)
        .expect("IPv4 header");
    ip.dont_fragment = true;
    let builder = PacketBuilder::ethernet2(u.src_mac, u.dst_mac)
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .udp(u.sport, u.dport);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, &payload).expect("write VXLAN");
    // RFC 7348: the UDP checksum SHOULD be transmitted as zero over IPv4.
    out[40] = 0;
    out[41] = 0;
    out
}

/// ICMP "fragmentation needed" (RFC 1191) from a gateway to a VM about `datagram` (an Ethernet
/// frame), with the next hop's `mtu`: TTL 64, no DF, the datagram's IPv4 header and first 8 bytes.
pub fn frag_needed(gw_mac: Mac, vm_mac: Mac, gw_ip: [u8; 4], vm_ip: [u8; 4], mtu: u16, datagram: &[u8]) -> Vec<u8> {
    use etherparse::icmpv4::DestUnreachableHeader;
    let quoted = &datagram[14..14 + 28];
    let kind = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu });
    let icmp = etherparse::Icmpv4Header::with_checksum(kind, quoted);
    let ip = etherparse::Ipv4Header::new(
        (icmp.header_len() + quoted.len()) as u16,
        64,
        etherparse::IpNumber::ICMP,
        gw_ip,
        vm_ip,
    )
    .expect("IPv4 header");
    let builder = PacketBuilder::ethernet2(gw_mac, vm_mac)
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .icmpv4(icmp.icmp_type);
    let mut out = Vec::with_capacity(builder.size(quoted.len()));
    builder.write(&mut out, quoted).expect("write ICMP");
    // Without DF, as Linux sends its ICMP errors (IP_PMTUDISC_DONT); the builder sets it.
    without_df(&out)
}

/// `frame` (Ethernet + IPv4) with DF cleared and the IPv4 checksum fixed.
pub fn without_df(frame: &[u8]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[20] &= !0x40;
    out[24..26].fill(0);
    let csum = internet_checksum(&out[14..34]);
    out[24..26].copy_from_slice(&csum.to_be_bytes());
    out
}

//! Frames the agent makes up: `alioth trace`'s synthetic frames and `alioth echo`'s probes.

use std::net::Ipv4Addr;

use alioth_common::checksum;

use crate::goalstate::model::Mac;

/// What an IPv4 frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// UDP from and to these ports, without a checksum.
    Udp(u16, u16),
    /// A TCP SYN from and to these ports.
    Tcp(u16, u16),
    /// An ICMP echo request.
    Echo { id: u16, sequence: u16 },
}

/// An Ethernet + IPv4 frame from `src` to `dst` (DF set, TTL 64) carrying `l4` with 18 bytes of
/// payload, every checksum it has finished.
/// The destination MAC a VM puts on a frame to an address: in its own subnet, the MAC of whoever
/// holds the address (`holder`, what ARP gives it; broadcast when nobody does, where ARP gives
/// nothing), else its gateway's.
pub fn first_hop_mac(in_subnet: bool, holder: Option<Mac>, gateway: Mac) -> Mac {
    match (in_subnet, holder) {
        (true, Some(mac)) => mac,
        (true, None) => [0xff; 6],
        (false, _) => gateway,
    }
}

pub fn build(src_mac: &Mac, dst_mac: &Mac, src: Ipv4Addr, dst: Ipv4Addr, l4: L4) -> Vec<u8> {
    let payload = [0u8; 18];
    let (number, mut body) = match l4 {
        L4::Udp(sport, dport) => {
            let len = (8 + payload.len()) as u16;
            (
                17u8,
                [sport.to_be_bytes(), dport.to_be_bytes(), len.to_be_bytes(), [0, 0]].concat(),
            )
        }
        L4::Tcp(sport, dport) => {
            let h = [
                &sport.to_be_bytes()[..],
                &dport.to_be_bytes(),
                &[0; 8],
                &[0x50, 0x02, 0xff, 0xff],
                &[0; 4],
            ];
            (6, h.concat())
        }
        L4::Echo { id, sequence } => (
            1,
            [&[8, 0, 0, 0][..], &id.to_be_bytes(), &sequence.to_be_bytes()].concat(),
        ),
    };
    body.extend_from_slice(&payload);
    match l4 {
        L4::Tcp(..) => {
            let sum = sum_be(&pseudo_header(src, dst, 6, body.len())) + sum_be(&body);
            body[16..18].copy_from_slice(&checksum::finish(sum).to_be_bytes());
        }
        L4::Echo { .. } => {
            let sum = sum_be(&body);
            body[2..4].copy_from_slice(&checksum::finish(sum).to_be_bytes());
        }
        L4::Udp(..) => {}
    }
    let total = (20 + body.len()) as u16;
    let mut ip = [
        &[0x45, 0][..],
        &total.to_be_bytes(),
        &[0, 0, 0x40, 0, 64, number, 0, 0],
        &src.octets(),
        &dst.octets(),
    ]
    .concat();
    let sum = checksum::finish(sum_be(&ip)).to_be_bytes();
    ip[10..12].copy_from_slice(&sum);
    [&dst_mac[..], src_mac, &[0x08, 0x00], &ip, &body].concat()
}

fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
    [
        &src.octets()[..],
        &dst.octets(),
        &[0, proto],
        &(len as u16).to_be_bytes(),
    ]
    .concat()
}

/// One's complement sum of `bytes` as big-endian 16-bit words.
fn sum_be(bytes: &[u8]) -> u64 {
    bytes
        .chunks(2)
        .map(|c| u64::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_parse_with_valid_checksums() {
        let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let (src, dst) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 11));
        for l4 in [L4::Udp(1000, 9), L4::Tcp(1000, 9), L4::Echo { id: 7, sequence: 3 }] {
            let f = build(&a, &b, src, dst, l4);
            assert!(alioth_common::ipv4::header_checksum_ok(&f), "{l4:?}");
            let ip = alioth_common::ipv4::parse(&f).unwrap();
            assert_eq!(ip.total_len + 14, f.len());
            // A finished checksum sums to all ones with the pseudo header (TCP) or alone (ICMP).
            let body = &f[34..];
            let pseudo = match l4 {
                L4::Tcp(..) => sum_be(&pseudo_header(src, dst, 6, body.len())),
                L4::Echo { .. } => 0,
                L4::Udp(..) => continue,
            };
            assert_eq!(checksum::fold(pseudo + sum_be(body)), 0xffff, "{l4:?}");
        }
    }
}

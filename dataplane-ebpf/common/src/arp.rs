//! ARP responder: answers requests for addresses the VPC knows, from the frame itself.

use crate::counters::Counter;
use crate::eth::{Mac, ETH_HLEN};
use crate::packet::Packet;

/// Ethernet + ARP for IPv4 over Ethernet.
pub const ARP_FRAME_LEN: usize = ETH_HLEN + 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// A well-formed ARP request for IPv4 over Ethernet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub sender_mac: Mac,
    pub sender_ip: [u8; 4],
    pub target_ip: [u8; 4],
}

/// Parses an ARP frame; `Err` carries the reason it is not a request we may answer.
#[inline(always)]
pub fn parse_request<P: Packet + ?Sized>(pkt: &P) -> Result<Request, Counter> {
    let a = pkt.array::<28>(ETH_HLEN).ok_or(Counter::DropArpMalformed)?;
    // htype Ethernet, ptype IPv4, hlen 6, plen 4.
    if a[0..6] != [0, 1, 0x08, 0x00, 6, 4] {
        return Err(Counter::DropArpMalformed);
    }
    if u16::from_be_bytes([a[6], a[7]]) != OP_REQUEST {
        return Err(Counter::DropArpNotRequest);
    }
    let mut req = Request {
        sender_mac: [0; 6],
        sender_ip: [0; 4],
        target_ip: [0; 4],
    };
    req.sender_mac.copy_from_slice(&a[8..14]);
    req.sender_ip.copy_from_slice(&a[14..18]);
    req.target_ip.copy_from_slice(&a[24..28]);
    // Gratuitous ARP announces the sender's own address; nobody answers it.
    if req.sender_ip == req.target_ip {
        return Err(Counter::DropArpNotRequest);
    }
    Ok(req)
}

/// Turns a request that `parse_request` accepted into the reply "its target is at `mac`", in
/// place, moving the frame's fields through integers: no copy of the request on the stack, whose
/// byte arrays LLVM may load at offsets the verifier refuses.
#[inline(always)]
pub fn reply_in_place<P: Packet + ?Sized>(pkt: &mut P, mac: &Mac) -> Option<()> {
    let f = pkt.array_mut::<ARP_FRAME_LEN>(0)?;
    let word = |f: &[u8; ARP_FRAME_LEN], at: usize| u32::from_ne_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]);
    let a = ETH_HLEN;
    let (sha_hi, sha_lo) = (word(f, a + 8), u16::from_ne_bytes([f[a + 12], f[a + 13]]));
    let (spa, tpa) = (word(f, a + 14), word(f, a + 24));
    let put_sha = |f: &mut [u8; ARP_FRAME_LEN], at: usize| {
        f[at..at + 4].copy_from_slice(&sha_hi.to_ne_bytes());
        f[at + 4..at + 6].copy_from_slice(&sha_lo.to_ne_bytes());
    };
    put_sha(f, 0);
    f[6..12].copy_from_slice(mac);
    f[a + 6..a + 8].copy_from_slice(&OP_REPLY.to_be_bytes());
    f[a + 8..a + 14].copy_from_slice(mac);
    f[a + 14..a + 18].copy_from_slice(&tpa.to_ne_bytes());
    put_sha(f, a + 18);
    f[a + 24..a + 28].copy_from_slice(&spa.to_ne_bytes());
    Some(())
}

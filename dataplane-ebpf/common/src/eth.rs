//! Ethernet II framing.

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const BROADCAST: [u8; 6] = [0xff; 6];

pub type Mac = [u8; 6];

/// Ether type of the frame, or `None` for a runt.
#[inline(always)]
pub fn ether_type<P: Packet + ?Sized>(pkt: &P) -> Option<u16> {
    pkt.be16_at(12)
}

use crate::packet::Packet;

/// Destination and source MAC of the frame.
#[inline(always)]
pub fn macs<P: Packet + ?Sized>(pkt: &P) -> Option<(Mac, Mac)> {
    let h = pkt.array::<12>(0)?;
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    dst.copy_from_slice(&h[..6]);
    src.copy_from_slice(&h[6..]);
    Some((dst, src))
}

/// Rewrites the destination and source MAC.
#[inline(always)]
pub fn set_macs<P: Packet + ?Sized>(pkt: &mut P, dst: &Mac, src: &Mac) -> Option<()> {
    let h = pkt.array_mut::<12>(0)?;
    h[..6].copy_from_slice(dst);
    h[6..].copy_from_slice(src);
    Some(())
}

/// True for group (multicast and broadcast) addresses.
#[inline(always)]
pub fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 1 == 1
}

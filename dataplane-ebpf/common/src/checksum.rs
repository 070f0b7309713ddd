//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

/// Folds a 32-bit one's complement accumulator to 16 bits (not inverted).
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    // Four folds always suffice for a 64-bit accumulator; a fixed count keeps the verifier happy.
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Folds a sum of the packet's 16-bit words as loaded in memory order (little-endian here) into
/// the big-endian sum the rest of this module adds up: one's complement sums are byte-order
/// independent up to a final swap.
#[inline(always)]
pub fn fold_memory_order(sum: u64) -> u16 {
    u16::from_be_bytes(fold(sum).to_ne_bytes())
}

/// One's complement sum of a fixed-size header.
#[inline(always)]
pub fn sum_bytes<const N: usize>(bytes: &[u8; N]) -> u64 {
    let mut sum: u64 = 0;
    let mut i = 0;
    while i + 1 < N {
        sum += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u64;
        i += 2;
    }
    if N % 2 == 1 {
        sum += (bytes[N - 1] as u64) << 8;
    }
    sum
}

/// One's complement sum of `bytes` as 16-bit words in memory order (little-endian here; an odd
/// tail as a word with a zero second byte): fold it and store the result as native bytes. Usable
/// in constants.
pub const fn sum_memory_order(bytes: &[u8]) -> u64 {
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let hi = if i + 1 < bytes.len() { bytes[i + 1] } else { 0 };
        sum += u16::from_le_bytes([bytes[i], hi]) as u64;
        i += 2;
    }
    sum
}

/// Checksum field value for data whose one's complement sum (with the checksum field zeroed) is `sum`.
#[inline(always)]
pub fn finish(sum: u64) -> u16 {
    !fold(sum)
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit word changes from `old` to `new`.
#[inline(always)]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let sum = (!csum) as u64 + (!old) as u64 + new as u64;
    !fold(sum)
}

/// Which checksum covers 4 rewritten bytes (an address, a port beside another), and how
/// (`Packet::replace_csum4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Covers {
    /// An IPv4 header's checksum.
    Header,
    /// A TCP checksum: through the pseudo-header.
    Pseudo,
    /// A UDP checksum: through the pseudo-header; 0 means none, and a result of 0 is sent as
    /// 0xffff.
    PseudoUdp,
    /// A TCP or ICMP checksum, over bytes of its own header (a port, an identifier).
    Transport,
    /// A UDP checksum over bytes of its own header: 0 means none, as above.
    TransportUdp,
}

/// The checksum field `csum` once 4 bytes it covers change from `from` to `to` (RFC 1624, one word
/// at a time): what `Packet::replace_csum4` writes where the checksum is finished.
#[inline(always)]
pub fn replace4(csum: u16, from: [u8; 4], to: [u8; 4], covers: Covers) -> u16 {
    let udp = matches!(covers, Covers::PseudoUdp | Covers::TransportUdp);
    if udp && csum == 0 {
        return 0;
    }
    let word = |b: [u8; 4], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let c = update16(update16(csum, word(from, 0), word(to, 0)), word(from, 2), word(to, 2));
    match (udp, c) {
        (true, 0) => 0xffff,
        _ => c,
    }
}

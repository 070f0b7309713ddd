//! Bounded access to a packet buffer.
//!
//! All packet logic reads and writes fixed-size arrays at an offset. Each access is checked against the
//! end of the packet right where it happens, which is the shape the BPF verifier can follow.

/// A packet buffer: a byte slice on the host, an XDP frame in the kernel.
pub trait Packet {
    /// Length of the frame in bytes.
    fn len(&self) -> usize;

    /// `N` bytes at `off`, or `None` when they are not all inside the packet.
    fn array<const N: usize>(&self, off: usize) -> Option<&[u8; N]>;

    /// Mutable `N` bytes at `off`, or `None` when they are not all inside the packet.
    fn array_mut<const N: usize>(&mut self, off: usize) -> Option<&mut [u8; N]>;

    /// Makes the frame `len` bytes long, growing or trimming it at either end; `None` when it
    /// cannot. Afterwards the contents are unspecified: the caller writes every byte it needs.
    fn resize(&mut self, _len: usize) -> Option<()> {
        None
    }

    /// One's complement sum of the `N` bytes at `off` taken as big-endian 16-bit words, folded to
    /// 16 bits. `N` is a multiple of 4 and at most 512: what the kernel's checksum helper takes.
    #[inline(always)]
    fn sum16<const N: usize>(&self, off: usize) -> Option<u16> {
        let bytes = self.array::<N>(off)?;
        Some(crate::checksum::fold(crate::checksum::sum_bytes(bytes)))
    }

    /// Updates the checksum field at `off` for 4 bytes it covers (an address, two ports) changing
    /// from `from` to `to`; the caller writes the bytes. Where the checksum is finished: incrementally. On the
    /// skb path the kernel's helpers, which also know a checksum left to the device and the skb's
    /// own sum.
    #[inline(always)]
    fn replace_csum4(&mut self, off: usize, from: [u8; 4], to: [u8; 4], covers: crate::checksum::Covers) -> Option<()> {
        replace_finished_csum4(self, off, from, to, covers)
    }

    /// Payload bytes per segment of a GSO super-frame (the skb's `gso_size`); 0 for a frame that
    /// goes on the wire as it is (always, in XDP).
    #[inline(always)]
    fn gso_size(&self) -> usize {
        0
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline(always)]
    fn u8_at(&self, off: usize) -> Option<u8> {
        self.array::<1>(off).map(|b| b[0])
    }

    #[inline(always)]
    fn be16_at(&self, off: usize) -> Option<u16> {
        self.array::<2>(off).map(|b| u16::from_be_bytes(*b))
    }
}

impl Packet for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn array<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        self.get(off..off.checked_add(N)?)?.try_into().ok()
    }

    fn array_mut<const N: usize>(&mut self, off: usize) -> Option<&mut [u8; N]> {
        self.get_mut(off..off.checked_add(N)?)?.try_into().ok()
    }
}

/// A frame on the host that can change length, as the kernel's can (DHCP replies grow).
#[cfg(feature = "alloc")]
impl Packet for alloc::vec::Vec<u8> {
    fn len(&self) -> usize {
        alloc::vec::Vec::len(self)
    }

    fn array<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        self.as_slice().array(off)
    }

    fn array_mut<const N: usize>(&mut self, off: usize) -> Option<&mut [u8; N]> {
        self.as_mut_slice().array_mut(off)
    }

    fn resize(&mut self, len: usize) -> Option<()> {
        // Garbage everywhere, as when the kernel grows the head: the writer relies on nothing.
        self.clear();
        alloc::vec::Vec::resize(self, len, 0xa5);
        Some(())
    }
}

/// `Packet::replace_csum4` on a finished checksum.
#[inline(always)]
pub fn replace_finished_csum4<P: Packet + ?Sized>(
    pkt: &mut P,
    off: usize,
    from: [u8; 4],
    to: [u8; 4],
    covers: crate::checksum::Covers,
) -> Option<()> {
    let field = pkt.array_mut::<2>(off)?;
    let csum = crate::checksum::replace4(u16::from_be_bytes(*field), from, to, covers);
    *field = csum.to_be_bytes();
    Some(())
}

/// The packet seen from `off` on: the inner frame of an encapsulated packet. Offsets stay
/// constants, so the inner frame is parsed by the same functions, with the same verifier shape.
pub struct At<'a, P: ?Sized> {
    pkt: &'a mut P,
    off: usize,
}

impl<'a, P: Packet + ?Sized> At<'a, P> {
    #[inline(always)]
    pub fn new(pkt: &'a mut P, off: usize) -> Self {
        At { pkt, off }
    }
}

impl<P: Packet + ?Sized> Packet for At<'_, P> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.pkt.len().saturating_sub(self.off)
    }

    #[inline(always)]
    fn array<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        self.pkt.array(self.off + off)
    }

    #[inline(always)]
    fn array_mut<const N: usize>(&mut self, off: usize) -> Option<&mut [u8; N]> {
        self.pkt.array_mut(self.off + off)
    }

    #[inline(always)]
    fn replace_csum4(&mut self, off: usize, from: [u8; 4], to: [u8; 4], covers: crate::checksum::Covers) -> Option<()> {
        self.pkt.replace_csum4(self.off + off, from, to, covers)
    }

    #[inline(always)]
    fn gso_size(&self) -> usize {
        self.pkt.gso_size()
    }
}

/// Zeroes `dst` a word at a time, one store each. A plain `fill(0)` of more than a few bytes becomes
/// a call to `memset`, which in BPF is a byte-at-a-time loop (192 iterations for a DHCP reply's
/// `sname` and `file`); a compiler fence after each store keeps LLVM from merging them back into
/// one, and emits nothing.
#[inline(always)]
pub fn clear<const N: usize>(dst: &mut [u8; N]) {
    let mut chunks = dst.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&[0; 8]);
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    }
    for b in chunks.into_remainder() {
        *b = 0;
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    }
}

/// One's complement sum of `len` bytes at `off` (odd tail padded with zero), `4 <= len <= MAX`.
///
/// Returns `None` when the range is not inside the packet or its length is out of bounds.
/// Reads are 4-byte windows only: a 1-byte read at a variable offset is compiled into a compare
/// the BPF verifier cannot turn into a packet range.
#[inline(always)]
pub fn sum_range<P: Packet + ?Sized, const MAX: usize>(pkt: &P, off: usize, len: usize) -> Option<u64> {
    if !(4..=MAX).contains(&len) {
        return None;
    }
    let mut sum: u64 = 0;
    let chunks = len / 8;
    let mut i = 0;
    // Bounded by a constant so the verifier sees a finite loop.
    while i < MAX / 8 {
        if i >= chunks {
            break;
        }
        let w = u64::from_be_bytes(*pkt.array::<8>(off + i * 8)?);
        sum += (w >> 32) + (w & 0xffff_ffff);
        i += 1;
    }
    if len % 8 >= 4 {
        sum += u32::from_be_bytes(*pkt.array::<4>(off + chunks * 8)?) as u64;
    }
    // The 1..3 trailing bytes are the last bytes of the 4-byte window that ends the range.
    let w = pkt.array::<4>(off + len - 4)?;
    let (a, b, c) = (w[1] as u64, w[2] as u64, w[3] as u64);
    sum += match len % 4 {
        1 => c << 8,
        2 => (b << 8) | c,
        3 => ((a << 8) | b) + (c << 8),
        _ => 0,
    };
    Some(sum)
}

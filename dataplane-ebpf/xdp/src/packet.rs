//! `Packet` over an XDP frame: every access is bounds-checked against `data_end` where it happens.

use alioth_common::Packet;
use aya_ebpf::programs::XdpContext;

pub struct XdpPacket {
    start: usize,
    end: usize,
}

impl XdpPacket {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        XdpPacket {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }
}

impl Packet for XdpPacket {
    #[inline(always)]
    fn len(&self) -> usize {
        // Opaque to LLVM: otherwise it uses a length comparison to delete a later pointer check,
        // and the verifier, which only trusts pointer-vs-data_end compares, rejects the access.
        core::hint::black_box(self.end - self.start)
    }

    #[inline(always)]
    fn array<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        // SAFETY: [p, p + N) was just checked to lie inside the frame.
        Some(unsafe { &*(p as *const [u8; N]) })
    }

    #[inline(always)]
    fn array_mut<const N: usize>(&mut self, off: usize) -> Option<&mut [u8; N]> {
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        // SAFETY: as above; the frame is writable for XDP programs.
        Some(unsafe { &mut *(p as *mut [u8; N]) })
    }
}

//! `Packet` over an XDP frame: every access is bounds-checked against `data_end` where it happens.

use alioth_common::Packet;
use aya_ebpf::bindings::xdp_md;
use aya_ebpf::helpers::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail};
use aya_ebpf::programs::XdpContext;

pub struct XdpPacket {
    ctx: *mut xdp_md,
    start: usize,
    end: usize,
}

impl XdpPacket {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        XdpPacket {
            ctx: ctx.ctx,
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

    #[inline(always)]
    fn resize(&mut self, len: usize) -> Option<()> {
        let delta = len as i32 - self.len() as i32;
        // The head first: XDP frames have 256 bytes of headroom (216 usable), and the kernel
        // zeroes what the tail grows by, which costs more than the helper call itself. The tail
        // when a request is too short for that.
        // SAFETY: the helpers validate the new bounds against the frame's buffer.
        if unsafe { bpf_xdp_adjust_head(self.ctx, -delta) } != 0 && unsafe { bpf_xdp_adjust_tail(self.ctx, delta) } != 0
        {
            return None;
        }
        // Every packet pointer is void after the helper: reload both ends.
        // SAFETY: ctx is the program's context.
        unsafe {
            self.start = (*self.ctx).data as usize;
            self.end = (*self.ctx).data_end as usize;
        }
        Some(())
    }

    /// The kernel's checksum helper instead of a loop of loads: one call per 512 bytes.
    #[inline(always)]
    fn sum16<const N: usize>(&self, off: usize) -> Option<u16> {
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        // SAFETY: [p, p + N) lies inside the frame; the helper only reads it.
        let sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut u32, N as u32, 0) };
        if sum < 0 {
            return None;
        }
        // The helper sums 16-bit words in memory order.
        Some(alioth_common::checksum::fold_memory_order(sum as u64))
    }
}

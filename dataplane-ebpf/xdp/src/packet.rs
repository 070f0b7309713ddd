//! `Packet` over a frame in the kernel, an XDP buffer or an skb: every access is bounds-checked
//! against the end of the directly accessible bytes where it happens.

use alioth_common::checksum::Covers;
use alioth_common::packet::replace_finished_csum4;
use alioth_common::Packet;
use aya_ebpf::bindings::{__sk_buff, xdp_md, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR};
use aya_ebpf::helpers::{
    bpf_csum_diff, bpf_l3_csum_replace, bpf_l4_csum_replace, bpf_skb_change_tail, bpf_skb_pull_data,
    bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
};
use aya_ebpf::programs::{TcContext, XdpContext};

/// What differs between the two kinds of frame.
pub trait Buffer: Copy {
    /// Start and end of the bytes the program may access directly.
    fn bounds(self) -> (usize, usize);
    /// The frame's whole length (an skb's may go on past the directly accessible bytes).
    fn total_len(self, start: usize, end: usize) -> usize;
    /// Changes the frame's length by `delta` bytes; `None` when it cannot.
    fn resize(self, delta: i32) -> Option<()>;
    fn gso_size(self) -> usize;
    /// `Packet::replace_csum4` by the kernel's helpers; `None`: the buffer has none (XDP), the
    /// checksum is updated in place.
    fn replace_csum4(self, off: usize, from: [u8; 4], to: [u8; 4], covers: Covers) -> Option<Option<()>>;
}

impl Buffer for *mut xdp_md {
    #[inline(always)]
    fn bounds(self) -> (usize, usize) {
        // SAFETY: the program's own context.
        unsafe { ((*self).data as usize, (*self).data_end as usize) }
    }

    #[inline(always)]
    fn total_len(self, start: usize, end: usize) -> usize {
        // Opaque to LLVM: otherwise it uses a length comparison to delete a later pointer check,
        // and the verifier, which only trusts pointer-vs-data_end compares, rejects the access.
        core::hint::black_box(end - start)
    }

    #[inline(always)]
    fn resize(self, delta: i32) -> Option<()> {
        // The head first: XDP frames have 256 bytes of headroom (216 usable), and the kernel
        // zeroes what the tail grows by, which costs more than the helper call itself. The tail
        // when a request is too short for that.
        // SAFETY: the helpers validate the new bounds against the frame's buffer.
        let ok = unsafe { bpf_xdp_adjust_head(self, -delta) } == 0 || unsafe { bpf_xdp_adjust_tail(self, delta) } == 0;
        ok.then_some(())
    }

    #[inline(always)]
    fn gso_size(self) -> usize {
        0
    }

    #[inline(always)]
    fn replace_csum4(self, _off: usize, _from: [u8; 4], _to: [u8; 4], _covers: Covers) -> Option<Option<()>> {
        None
    }
}

impl Buffer for *mut __sk_buff {
    #[inline(always)]
    fn bounds(self) -> (usize, usize) {
        // SAFETY: the program's own context.
        unsafe { ((*self).data as usize, (*self).data_end as usize) }
    }

    #[inline(always)]
    fn total_len(self, _start: usize, _end: usize) -> usize {
        // SAFETY: as above.
        unsafe { (*self).len as usize }
    }

    #[inline(always)]
    fn resize(self, delta: i32) -> Option<()> {
        // SAFETY: as above.
        let len = unsafe { (*self).len } as i64 + delta as i64;
        let len = u32::try_from(len).ok()?;
        // At the tail; then the whole frame directly accessible, as the writer expects.
        // SAFETY: the helpers validate the new length against the skb.
        let ok = unsafe { bpf_skb_change_tail(self, len, 0) } == 0 && unsafe { bpf_skb_pull_data(self, len) } == 0;
        ok.then_some(())
    }

    #[inline(always)]
    fn gso_size(self) -> usize {
        // SAFETY: as above.
        unsafe { (*self).gso_size as usize }
    }

    #[inline(always)]
    fn replace_csum4(self, off: usize, from: [u8; 4], to: [u8; 4], covers: Covers) -> Option<Option<()>> {
        // The helpers take the bytes as they are in the packet.
        let (from, to) = (u32::from_ne_bytes(from) as u64, u32::from_ne_bytes(to) as u64);
        let off = off as u32;
        const SIZE: u64 = 4;
        // SAFETY: the helpers validate the offset against the skb.
        let rc = unsafe {
            match covers {
                Covers::Header => bpf_l3_csum_replace(self, off, from, to, SIZE),
                Covers::Pseudo => bpf_l4_csum_replace(self, off, from, to, SIZE | BPF_F_PSEUDO_HDR as u64),
                Covers::PseudoUdp => bpf_l4_csum_replace(
                    self,
                    off,
                    from,
                    to,
                    SIZE | BPF_F_PSEUDO_HDR as u64 | BPF_F_MARK_MANGLED_0 as u64,
                ),
                Covers::Transport => bpf_l4_csum_replace(self, off, from, to, SIZE),
                Covers::TransportUdp => bpf_l4_csum_replace(self, off, from, to, SIZE | BPF_F_MARK_MANGLED_0 as u64),
            }
        };
        Some((rc == 0).then_some(()))
    }
}

pub struct Frame<B> {
    buf: B,
    start: usize,
    end: usize,
}

pub type XdpPacket = Frame<*mut xdp_md>;
pub type SkbPacket = Frame<*mut __sk_buff>;

impl<B: Buffer> Frame<B> {
    #[inline(always)]
    fn of(buf: B) -> Self {
        let (start, end) = buf.bounds();
        Frame { buf, start, end }
    }
}

impl XdpPacket {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Frame::of(ctx.ctx)
    }
}

impl SkbPacket {
    #[inline(always)]
    pub fn new(ctx: &TcContext) -> Self {
        Frame::of(ctx.skb.skb)
    }
}

impl<B: Buffer> Packet for Frame<B> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.buf.total_len(self.start, self.end)
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
        // SAFETY: as above; the frame is writable for XDP and TC programs.
        Some(unsafe { &mut *(p as *mut [u8; N]) })
    }

    #[inline(always)]
    fn resize(&mut self, len: usize) -> Option<()> {
        self.buf.resize(len as i32 - self.len() as i32)?;
        // Every packet pointer is void after the helper: reload both ends.
        (self.start, self.end) = self.buf.bounds();
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

    #[inline(always)]
    fn gso_size(&self) -> usize {
        self.buf.gso_size()
    }

    #[inline(always)]
    fn replace_csum4(&mut self, off: usize, from: [u8; 4], to: [u8; 4], covers: Covers) -> Option<()> {
        let Some(done) = self.buf.replace_csum4(off, from, to, covers) else {
            return replace_finished_csum4(self, off, from, to, covers);
        };
        // Every packet pointer is void after the helper: reload both ends.
        (self.start, self.end) = self.buf.bounds();
        done
    }
}

//! Keys of longest-prefix-match tries as the verifier accepts them.

use aya_ebpf::maps::lpm_trie::Key;

/// A trie key laid out as aya's `Key<[u8; N]>`, but not packed: LLVM writes a packed key's data
/// with 8-byte stores at a 4-byte offset, which the verifier refuses as misaligned.
#[repr(C, align(8))]
pub struct TrieKey<const N: usize> {
    prefix_len: u32,
    data: [u8; N],
}

impl<const N: usize> TrieKey<N> {
    #[inline(always)]
    pub const fn new(prefix_len: u32, data: [u8; N]) -> Self {
        TrieKey { prefix_len, data }
    }

    #[inline(always)]
    pub fn key(&self) -> &Key<[u8; N]> {
        // SAFETY: the same bytes in the same order; `Key` is packed, so any address suits it.
        unsafe { &*(self as *const TrieKey<N> as *const Key<[u8; N]>) }
    }
}

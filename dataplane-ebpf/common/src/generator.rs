//! The benchmarks' in-kernel packet generator (lab object only): what its loader and its program
//! share.

/// Bytes of the generator's frame (Ethernet, IPv4 and UDP headers, rounded up) its program writes
/// back before each run: live frames recycle their pages without copying the data again, so a
/// frame a router rewrote would come back rewritten.
pub const TX_HEAD_LEN: usize = 48;
/// The object's global holding those bytes, which the loader sets.
pub const TX_HEAD_GLOBAL: &str = "ALIOTH_TX_HEAD";

//! The XDP object, built by `build.rs` from `dataplane-ebpf/xdp` and embedded in the binary.

/// The compiled port program (ELF, with BTF).
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/alioth-xdp.o"));

/// Name of the port program inside the object.
pub const PORT_PROGRAM: &str = "alioth_port";

/// A program that passes every frame (veth peers in labs, benchmark baseline).
pub const PASS_PROGRAM: &str = "alioth_pass";

/// The uplink program: decapsulates VXLAN for local ports, passes everything else.
pub const UPLINK_PROGRAM: &str = "alioth_uplink";

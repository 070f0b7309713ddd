//! The XDP object, built by `build.rs` from `dataplane-ebpf/xdp` and embedded in the binary.

/// The compiled port program (ELF, with BTF).
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/alioth-xdp.o"));

/// Name of the port program inside the object.
pub const PORT_PROGRAM: &str = "alioth_port";

/// The port program's skb path (TC ingress of the same interface).
pub const PORT_TC_PROGRAM: &str = "alioth_port_tc";

/// A program that passes every frame (veth peers in labs, benchmark baseline).
pub const PASS_PROGRAM: &str = "alioth_pass";

/// The uplink program: decapsulates VXLAN for local ports, passes everything else.
pub const UPLINK_PROGRAM: &str = "alioth_uplink";

/// The uplink program's skb path (TC ingress of the uplink).
pub const UPLINK_TC_PROGRAM: &str = "alioth_uplink_tc";

/// Drops UDP to the discard port, passes the rest: the benchmarks' packet sink on a receiving VM.
pub const SINK_PROGRAM: &str = "alioth_sink";

/// Reflects every frame: the benchmarks' packet generator (never attached by the agent).
pub const TX_PROGRAM: &str = "alioth_tx";

/// Benchmarks only: the port and uplink programs with the frame's head restored after each run, so
/// that encap and decap can be timed in steady state (BPF_PROG_TEST_RUN, repeat > 1).
pub const BENCH_PORT_PROGRAM: &str = "alioth_bench_port";
pub const BENCH_UPLINK_PROGRAM: &str = "alioth_bench_uplink";

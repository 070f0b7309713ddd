//! The XDP object, built by `build.rs` from `dataplane-ebpf/xdp` and embedded in the binary.

/// The compiled port program (ELF, with BTF); empty in a build without the eBPF toolchain.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/alioth-xdp.o"));

/// The lab object: the same programs plus the labs' and benchmarks' (`dataplane-ebpf/xdp/src/lab.rs`).
#[cfg(feature = "lab")]
pub static LAB_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/alioth-lab.o"));

/// The object, or why this binary has none.
pub fn xdp_object() -> anyhow::Result<&'static [u8]> {
    built(XDP_OBJECT)
}

/// The lab object, or why this binary has none.
#[cfg(feature = "lab")]
pub fn lab_object() -> anyhow::Result<&'static [u8]> {
    built(LAB_OBJECT)
}

fn built(object: &'static [u8]) -> anyhow::Result<&'static [u8]> {
    anyhow::ensure!(
        !object.is_empty(),
        "this alioth was built without the eBPF toolchain, so it holds no XDP object: run `cargo xtask setup`, then build it again"
    );
    Ok(object)
}

/// Name of the port program inside the object.
pub const PORT_PROGRAM: &str = "alioth_port";

/// The DHCP server, which the port program hands requests to (`maps::TAILS`); never attached.
pub const DHCP_PROGRAM: &str = "alioth_port_dhcp";

/// The DHCP server of the skb path (`maps::TC_TAILS`); never attached.
pub const DHCP_TC_PROGRAM: &str = "alioth_port_dhcp_tc";

/// Elastic IPs' translation on the skb path (`maps::TC_TAILS`); never attached.
pub const NAT_TC_PROGRAM: &str = "alioth_nat_tc";

/// The port program's skb path (TC ingress of the same interface).
pub const PORT_TC_PROGRAM: &str = "alioth_port_tc";

/// The uplink program: decapsulates VXLAN for local ports, passes everything else.
pub const UPLINK_PROGRAM: &str = "alioth_uplink";

/// The uplink program's skb path (TC ingress of the uplink).
pub const UPLINK_TC_PROGRAM: &str = "alioth_uplink_tc";

/// A program that passes every frame (veth peers in labs, benchmark baseline). Lab object only, as
/// are the programs below it.
pub const PASS_PROGRAM: &str = "alioth_pass";

/// Drops UDP to the discard port, passes the rest: the benchmarks' packet sink on a receiving VM.
pub const SINK_PROGRAM: &str = "alioth_sink";

/// Redirects every frame to an interface set at load (`FORWARD_TO_GLOBAL`, `FORWARD_PEER_GLOBAL`):
/// the benchmarks' bare forwarder (never attached by the agent).
pub const FORWARD_PROGRAM: &str = "alioth_forward";
pub const FORWARD_TO_GLOBAL: &str = "ALIOTH_FORWARD_TO";
pub const FORWARD_PEER_GLOBAL: &str = "ALIOTH_FORWARD_PEER";

/// Reflects every frame, its head first restored (`alioth_common::generator`): the benchmarks'
/// packet generator (never attached by the agent).
pub const TX_PROGRAM: &str = "alioth_tx";

/// Sends a copy of each test run's frame out of the run's interface: the benchmarks' skb
/// generator where the kernel refuses live frames (never attached by the agent).
pub const CLONE_TX_PROGRAM: &str = "alioth_clone_tx";

/// Benchmarks only: the port and uplink programs with the frame's head restored after each run, so
/// that encap and decap can be timed in steady state (BPF_PROG_TEST_RUN, repeat > 1).
pub const BENCH_PORT_PROGRAM: &str = "alioth_bench_port";
pub const BENCH_UPLINK_PROGRAM: &str = "alioth_bench_uplink";

/// A loader of the object with its globals set for this kernel: the log level, and `HZ` (tracked
/// flows expire in jiffies, which the programs read without a helper call).
pub fn loader(log_level: &'static u8) -> anyhow::Result<aya::EbpfLoader<'static>> {
    let hz = super::clock::hz()?;
    let mut loader = aya::EbpfLoader::new();
    loader.override_global("AYA_LOG_LEVEL", log_level, false);
    loader.override_global(alioth_common::firewall::HZ_GLOBAL, hz, true);
    Ok(loader)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(object: &[u8], name: &str) -> bool {
        object.windows(name.len()).any(|w| w == name.as_bytes())
    }

    #[test]
    fn the_agents_object_holds_no_lab_program_and_the_lab_object_holds_them_all() {
        let lab = [
            PASS_PROGRAM,
            SINK_PROGRAM,
            FORWARD_PROGRAM,
            TX_PROGRAM,
            CLONE_TX_PROGRAM,
            BENCH_PORT_PROGRAM,
            BENCH_UPLINK_PROGRAM,
        ];
        let agent = [
            PORT_PROGRAM,
            DHCP_PROGRAM,
            DHCP_TC_PROGRAM,
            PORT_TC_PROGRAM,
            UPLINK_PROGRAM,
            UPLINK_TC_PROGRAM,
        ];
        let object = xdp_object().unwrap();
        for p in agent {
            assert!(names(object, p), "{p} missing");
        }
        for p in lab {
            assert!(!names(object, p), "{p} in the agent's object");
        }
        #[cfg(feature = "lab")]
        for p in lab.iter().chain(&agent) {
            assert!(names(lab_object().unwrap(), p), "{p} missing from the lab object");
        }
    }
}

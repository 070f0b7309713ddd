//! `cargo xtask bench overlay`: one VM talking to a VM on another host, over (a) the Linux kernel's
//! vxlan + bridge on both hosts and (b) alioth on both hosts, in one run on the same kind of
//! topology: two host namespaces joined by one veth (the underlay wire), a VM namespace behind each.
//!
//! Small packets come from an in-kernel generator in the sending VM (BPF_PROG_RUN live frames of a
//! program that returns XDP_TX on the VM's eth0: each frame leaves the VM as if it had sent it) on
//! one pinned CPU; the softirq work of forwarding runs on that same CPU, so the received rate is
//! what one core forwards, and the offered rate shows the generator was not the limit. Where the
//! kernel refuses live frames the generator is skb clones, whose cost both columns carry:
//! alioth's run then also measures it alone (frames from an address the VM does not own, which
//! the port's program drops at once), and the table shows both columns net of it. The receiving
//! VM's eth0 runs a packet sink on TC ingress (as a hardware tester's receive port would be) that
//! drops the generator's frames as they arrive and lets everything else in; its veth counts them
//! received, in both systems alike. TCP and UDP are iperf3 between guests with their default
//! offloads (rounds, the two systems taking turns), latency is ping.
//! alioth's small packets are measured twice, in its default mode on veths and with native XDP on
//! its ports as on taps (see `overlay::System`).
//! Then ns per packet of encap and decap through BPF_PROG_TEST_RUN.

use alioth::dataplane::object::{BENCH_PORT_PROGRAM, BENCH_UPLINK_PROGRAM, PORT_PROGRAM, UPLINK_PROGRAM};
use alioth::dataplane::{AttachMode, Dataplane};
use alioth_tests::frames;
use alioth_tests::generator::{best_of, cost_alone, Run};
use alioth_tests::overlay::{iperf3, ping_avg_us, Lab, System, Underlay, VpcSpec};
use alioth_tests::table::{gbit, us, Table};
use alioth_tests::timing;
use alioth_tests::vectors::{self, *};
use anyhow::{ensure, Context, Result};

/// Frames per generator run, and runs per measurement.
const BURST: u32 = 2_000_000;
const RUNS: usize = 3;
/// Rounds of the stream measurements, the two systems taking turns: the median of each is shown,
/// so a noisy spell on this shared VM weighs on both alike.
const ROUNDS: usize = 3;

/// Small packets in one lab.
struct Small {
    best: Run,
    /// CPU time per frame of the generator alone (alioth's run).
    generator_ns: Option<f64>,
    /// The same frames with no data plane's work (the kernel's run).
    bare: Option<Run>,
}

struct Figures {
    small: Small,
    streams: Streams,
}

/// What guests with their default offloads carry, in Gbit/s, and their ping's round trip.
#[derive(Clone, Copy, Default)]
struct Streams {
    tcp: f64,
    tcp8: f64,
    /// UDP 1400-byte datagrams at full speed: received.
    udp: f64,
    ping_us: f64,
}

impl Streams {
    /// The median of each figure over `rounds`.
    fn median(rounds: &[Streams]) -> Streams {
        let pick = |f: fn(&Streams) -> f64| {
            let mut v: Vec<f64> = rounds.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        Streams {
            tcp: pick(|s| s.tcp),
            tcp8: pick(|s| s.tcp8),
            udp: pick(|s| s.udp),
            ping_us: pick(|s| s.ping_us),
        }
    }
}

/// The two-host lab: (a) kernel vxlan on both hosts, or (b) alioth on both.
fn lab(system: System) -> Result<(Lab, String, String)> {
    let vpc = VpcSpec::new(1, 1001, 1);
    let mut lab = Lab::with_underlay(vec![vpc.clone()], Underlay::wire()?)?;
    let (a, b) = (vpc.vm(1, 10), vpc.vm(1, 20));
    let (a_id, b_id) = (a.port_id.clone(), b.port_id.clone());
    if system != System::Kernel {
        lab.add_host(vec![a])?;
        lab.add_host(vec![b])?;
        // Extra agent flags for experiments (`ALIOTH_BENCH_AGENT_ARGS="--xdp-mode skb"`).
        let extra = std::env::var("ALIOTH_BENCH_AGENT_ARGS").unwrap_or_default();
        let mut args = system.agent_args().to_vec();
        args.extend(extra.split_whitespace());
        lab.start_agents(&args)?;
        lab.push_all()?;
        lab.wait_resolved()?;
    } else {
        lab.add_kernel_host(vec![a])?;
        lab.add_kernel_host(vec![b])?;
        lab.wire_kernel_hosts()?;
    }
    Ok((lab, a_id, b_id))
}

/// 60-byte frames (64 on the wire with the FCS) from the generator in VM `a` to VM `b`'s sink:
/// the run that delivered the most. In alioth's run, also the CPU time per frame of the generator
/// and what carries its frames to the host side (the same frames from an address VM `a` does not
/// own, which its port's program drops at once); in the kernel's, the same frames along the same
/// path with no data plane's work (`Lab::bare_path`).
fn small_packets(lab: &Lab, a_id: &str, b_id: &str, alioth: bool) -> Result<Small> {
    let (src, dst) = (lab.vm(a_id), lab.vm(b_id));
    let mac = |s: &str| alioth::goalstate::model::parse_mac(s).unwrap_or_default();
    let (src_mac, dst_mac) = (mac(&lab.vpcs[0].vm(1, 10).mac), mac(&lab.vpcs[0].vm(1, 20).mac));
    // 18 bytes of UDP payload to the discard port, which the receiving VM's sink drops.
    let udp = |from: [u8; 4]| frames::udp(src_mac, dst_mac, from, [198, 18, 1, 20], 64, 40000, 9, &[0; 18]);
    let frame = udp([198, 18, 1, 10]);
    let best = best_of(&src.ns, &dst.ns, &frame, BURST, RUNS)?;
    Ok(match alioth {
        true => Small {
            best,
            generator_ns: Some(cost_alone(&src.ns, &udp([198, 18, 1, 99]), BURST, RUNS)?),
            bare: None,
        },
        false => Small {
            best,
            generator_ns: None,
            bare: Some(lab.bare_path(a_id, b_id, &frame, BURST, RUNS)?),
        },
    })
}

/// A lab, its sending and receiving VM.
struct Side {
    lab: Lab,
    a_id: String,
    b_id: String,
}

const DST_IP: &str = "198.18.1.20";

/// Small packets on `system`'s lab.
fn packets(system: System) -> Result<(Side, Small)> {
    let alioth = system != System::Kernel;
    let (mut lab, a_id, b_id) = lab(system)?;
    // The receiving VM takes the generator's frames at its interface, as a tester's port would:
    // what is measured is the overlay's forwarding, not the VM's own stack.
    lab.vm_mut(&b_id).sink()?;
    let src = lab.vm(&a_id);
    let warm = src
        .ns
        .exec_output(&["ping", "-c", "3", "-i", "0.2", "-W", "2", DST_IP])?;
    ensure!(
        String::from_utf8_lossy(&warm.stdout).contains("3 received"),
        "no connectivity: {}",
        String::from_utf8_lossy(&warm.stdout)
    );
    let best = small_packets(&lab, &a_id, &b_id, alioth)?;
    // TCP and UDP between guests as their users run them: no XDP program in either VM (the lab's
    // helper there would turn GSO off on the kernel path's host-side veth, and TSO off in its
    // guests). alioth's TCP and UDP take its skb path, which needs nothing of the guest.
    lab.vm_mut(&a_id).plain()?;
    lab.vm_mut(&b_id).plain()?;
    Ok((Side { lab, a_id, b_id }, best))
}

/// One round of TCP (1 and 8 streams), UDP and ping between the guests of `side`.
fn streams(side: &Side) -> Result<Streams> {
    let (src, dst) = (side.lab.vm(&side.a_id), side.lab.vm(&side.b_id));
    let gbps = |v: &serde_json::Value, sum: &str| v["end"][sum]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9;
    let tcp = iperf3(&dst.ns, &src.ns, DST_IP, &["-t", "3"])?;
    let tcp8 = iperf3(&dst.ns, &src.ns, DST_IP, &["-t", "3", "-P", "8"])?;
    let udp = iperf3(&dst.ns, &src.ns, DST_IP, &["-t", "3", "-u", "-b", "0", "-l", "1400"])?;
    // What arrived: the sender's rate less what was lost.
    let udp_lost = udp["end"]["sum"]["lost_percent"].as_f64().unwrap_or(100.0);
    Ok(Streams {
        tcp: gbps(&tcp, "sum_received"),
        tcp8: gbps(&tcp8, "sum_received"),
        udp: gbps(&udp, "sum") * (1.0 - udp_lost / 100.0),
        ping_us: ping_avg_us(&src.ns, DST_IP)?,
    })
}

/// Both systems measured: packets one lab after the other, streams in turns (`ROUNDS`); and
/// alioth's small packets with native XDP on its ports, in a lab of their own.
fn run() -> Result<(Figures, Figures, Small)> {
    let native = packets(System::AliothNative)
        .context("alioth with native XDP on its ports")?
        .1;
    let (kernel, k_small) = packets(System::Kernel).context("kernel vxlan + bridge")?;
    let (ours, a_small) = packets(System::Alioth).context("alioth")?;
    let (mut k_rounds, mut a_rounds) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        k_rounds.push(streams(&kernel).context("kernel vxlan + bridge")?);
        a_rounds.push(streams(&ours).context("alioth")?);
    }
    let figures = |small, rounds: &[Streams]| Figures {
        small,
        streams: Streams::median(rounds),
    };
    Ok((figures(k_small, &k_rounds), figures(a_small, &a_rounds), native))
}

fn main() -> Result<()> {
    println!("alioth bench overlay: VM -> VM on another host, two hosts on one veth wire");
    println!(
        "kernel {}; small packets: 60 B frames from a generator in the sending VM (in-kernel live frames, or skb clones where the kernel refuses those; {BURST} per run, best of {RUNS}), all on CPU 0",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()
    );
    let (kernel, ours, native) = run()?;
    println!();
    println!("streams and ping: the median of {ROUNDS} rounds, the two systems taking turns");
    let t = Table::new(34, "linux vxlan+br");
    let (k, a) = (&kernel.small.best, &ours.small.best);
    println!("small packets: the generator is {}", k.generator.name());
    if a.generator != k.generator {
        println!("  (alioth's run: {})", a.generator.name());
    }
    let n = &native.best;
    t.small_packets("small UDP, native XDP (taps)", k, n, native.generator_ns, ">= 10x");
    t.small_packets("small UDP, skb path (veths)", k, a, ours.small.generator_ns, "");
    if let Some(bare) = &kernel.small.bare {
        t.bare_forwarder(k, bare);
    }
    let (k, a) = (&kernel.streams, &ours.streams);
    t.line(
        "TCP (iperf3, 1 stream)",
        gbit(k.tcp),
        gbit(a.tcp),
        a.tcp / k.tcp,
        ">= 1x",
    );
    t.line(
        "TCP (iperf3, 8 streams)",
        gbit(k.tcp8),
        gbit(a.tcp8),
        a.tcp8 / k.tcp8,
        "",
    );
    t.line(
        "UDP 1400 B (iperf3, received)",
        gbit(k.udp),
        gbit(a.udp),
        a.udp / k.udp,
        "",
    );
    // Lower is better: the ratio printed is kernel / alioth.
    t.line(
        "ping RTT (avg)",
        us(k.ping_us),
        us(a.ping_us),
        k.ping_us / a.ping_us,
        "",
    );
    println!("(ping ratio: kernel / alioth, >= 1x when alioth's round trip is shorter)");

    in_kernel()
}

/// Encap and decap in the kernel (see `timing::in_kernel`).
fn in_kernel() -> Result<()> {
    // The logger holds the log map the programs loaded below refer to: keep it.
    let (mut dp, _logger) = Dataplane::load_lab(AttachMode::Auto)?;
    vectors::program(&mut dp)?;
    let inner = vectors::udp_from_port(REMOTE_MAC, REMOTE_IP, 18);
    let vx = vectors::vxlan_to_peer(VNI, &vectors::udp_from_port(PEER_MAC, PEER_IP, 18));
    timing::in_kernel(
        &mut dp,
        &[
            (
                "encap 60 B -> 110 B",
                PORT_PROGRAM,
                Some(BENCH_PORT_PROGRAM),
                &inner,
                "<= 60",
            ),
            (
                "decap 110 B -> 60 B",
                UPLINK_PROGRAM,
                Some(BENCH_UPLINK_PROGRAM),
                &vx,
                "<= 50",
            ),
        ],
    )
}

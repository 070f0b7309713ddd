//! `cargo xtask bench overlay`: one VM talking to a VM on another host, over (a) the Linux kernel's
//! vxlan + bridge on both hosts and (b) alioth on both hosts, in one run on the same kind of
//! topology: two host namespaces joined by one veth (the underlay wire), a VM namespace behind each.
//!
//! Small packets come from an in-kernel generator in the sending VM (BPF_PROG_RUN live frames of a
//! program that returns XDP_TX on the VM's eth0: each frame leaves the VM as if it had sent it) on
//! one pinned CPU; the softirq work of forwarding runs on that same CPU, so the received rate is
//! what one core forwards, and the offered rate shows the generator was not the limit. Received
//! frames are counted by the receiving VM's veth (rx XDP packets). TCP is iperf3, latency is ping.
//! Then ns per packet of encap and decap through BPF_PROG_TEST_RUN.

use std::time::{Duration, Instant};

use alioth::dataplane::{AttachMode, Dataplane};
use alioth::object::{BENCH_PORT_PROGRAM, BENCH_UPLINK_PROGRAM, PORT_PROGRAM, TX_PROGRAM, UPLINK_PROGRAM, XDP_OBJECT};
use alioth_tests::frames;
use alioth_tests::netns::Netns;
use alioth_tests::overlay::{iperf3, Lab, Underlay, VpcSpec};
use alioth_tests::timing::{measure, steady};
use alioth_tests::vectors::{self, *};
use anyhow::{bail, ensure, Context, Result};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp};

/// Frames per generator run, and runs per measurement.
const BURST: u32 = 2_000_000;
const RUNS: usize = 3;

struct Figures {
    offered_pps: f64,
    received_pps: f64,
    tcp_gbps: f64,
    ping_us: f64,
}

/// Frames the VM's `eth0` received (its veth counts every frame its XDP program saw).
fn rx_frames(vm: &Netns) -> Result<u64> {
    let out = vm.exec(&["ethtool", "-S", "eth0"])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            (k.starts_with("rx_queue_") && k.ends_with("_xdp_packets")).then(|| v.trim().parse::<u64>().ok())?
        })
        .sum())
}

/// Runs the generator in `vm`'s network namespace on CPU 0: `BURST` copies of `frame` out of its
/// eth0. Returns the wall time.
fn generate(vm: &Netns, frame: Vec<u8>) -> Result<Duration> {
    let path = format!("/run/netns/{}", vm.name);
    std::thread::spawn(move || -> Result<Duration> {
        let ns = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        // SAFETY: setns on this thread only (it exits afterwards); the fd is valid.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a zeroed cpu_set_t with CPU 0 set, for this thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
        let ifindex = alioth::dataplane::ifindex("eth0").context("eth0 in the VM")?;
        let mut ebpf = aya::Ebpf::load(XDP_OBJECT)?;
        let prog: &mut Xdp = ebpf.program_mut(TX_PROGRAM).context("generator program")?.try_into()?;
        prog.load()?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let t = Instant::now();
        prog.test_run(TestRunOptions {
            data_in: Some(&frame),
            ctx_in: Some(&ctx),
            repeat: BURST,
            attrs: TestRunAttrs::new().xdp_live_frames(64),
            ..Default::default()
        })
        .context("BPF_PROG_RUN live frames")?;
        Ok(t.elapsed())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("generator thread panicked"))?
}

/// The two-host lab: (a) kernel vxlan on both hosts, or (b) alioth on both.
fn lab(alioth: bool) -> Result<(Lab, String, String)> {
    let vpc = VpcSpec::new(1, 1001, 1);
    let mut lab = Lab::with_underlay(vec![vpc.clone()], Underlay::wire()?)?;
    let (a, b) = (vpc.vm(1, 10), vpc.vm(1, 20));
    let (a_id, b_id) = (a.port_id.clone(), b.port_id.clone());
    if alioth {
        lab.add_host(vec![a])?;
        lab.add_host(vec![b])?;
        lab.start_agents(&[])?;
        lab.push_all()?;
        lab.wait_resolved()?;
    } else {
        lab.add_kernel_host(vec![a])?;
        lab.add_kernel_host(vec![b])?;
        lab.wire_kernel_hosts()?;
    }
    Ok((lab, a_id, b_id))
}

fn run(alioth: bool) -> Result<Figures> {
    let (lab, a_id, b_id) = lab(alioth)?;
    let (src, dst) = (lab.vm(&a_id), lab.vm(&b_id));
    let dst_ip = "198.18.1.20";
    let warm = src
        .ns
        .exec_output(&["ping", "-c", "3", "-i", "0.2", "-W", "2", dst_ip])?;
    ensure!(
        String::from_utf8_lossy(&warm.stdout).contains("3 received"),
        "no connectivity: {}",
        String::from_utf8_lossy(&warm.stdout)
    );

    let out = src.ns.exec(&["ping", "-q", "-c", "200", "-i", "0.005", dst_ip])?;
    let ping_us = out
        .lines()
        .find(|l| l.contains("rtt"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|avg| avg.parse::<f64>().ok())
        .context("ping summary")?
        * 1000.0;

    // 60-byte frames (64 on the wire with the FCS): 18 bytes of UDP payload to the discard port.
    let dst_mac = lab.vpcs[0].vm(1, 20).mac;
    let mac = |s: &str| -> [u8; 6] {
        let v: Vec<u8> = s.split(':').map(|o| u8::from_str_radix(o, 16).unwrap_or(0)).collect();
        v.try_into().unwrap_or_default()
    };
    let src_mac = mac(&lab.vpcs[0].vm(1, 10).mac);
    let frame = frames::udp(
        src_mac,
        mac(&dst_mac),
        [198, 18, 1, 10],
        [198, 18, 1, 20],
        64,
        40000,
        9,
        &[0; 18],
    );
    let (mut offered, mut received) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let before = rx_frames(&dst.ns)?;
        let took = generate(&src.ns, frame.clone())?;
        std::thread::sleep(Duration::from_millis(200));
        let got = rx_frames(&dst.ns)? - before;
        offered.push(f64::from(BURST) / took.as_secs_f64());
        received.push(got as f64 / took.as_secs_f64());
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);

    let tcp = iperf3(&dst.ns, &src.ns, dst_ip, &["-t", "3"])?;
    let tcp_gbps = tcp["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9;
    Ok(Figures {
        offered_pps: best(&offered),
        received_pps: best(&received),
        tcp_gbps,
        ping_us,
    })
}

fn main() -> Result<()> {
    println!("alioth bench overlay: VM -> VM on another host, two hosts on one veth wire");
    println!(
        "kernel {}; small packets: 60 B frames from an in-kernel generator (live frames, {BURST} per run, best of {RUNS}), all on CPU 0",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()
    );
    let kernel = run(false).context("kernel vxlan + bridge")?;
    let ours = run(true).context("alioth")?;
    println!();
    println!(
        "{:<34} {:>16} {:>16} {:>8} {:>8}",
        "", "linux vxlan+br", "alioth", "ratio", "target"
    );
    let row = |name: &str, k: f64, a: f64, fmt: &dyn Fn(f64) -> String, target: &str| {
        println!("{name:<34} {:>16} {:>16} {:>7.2}x {target:>8}", fmt(k), fmt(a), a / k);
    };
    let mpps = |v: f64| format!("{:.3} Mpps", v / 1e6);
    row(
        "small UDP received (1 core)",
        kernel.received_pps,
        ours.received_pps,
        &mpps,
        ">= 5x",
    );
    row(
        "  offered by the generator",
        kernel.offered_pps,
        ours.offered_pps,
        &mpps,
        "",
    );
    row(
        "TCP (iperf3, 1 stream)",
        kernel.tcp_gbps,
        ours.tcp_gbps,
        &|v| format!("{v:.2} Gbit/s"),
        "",
    );
    // Lower is better: the ratio printed is kernel / alioth.
    println!(
        "{:<34} {:>16} {:>16} {:>7.2}x {:>8}",
        "ping RTT (avg)",
        format!("{:.1} us", kernel.ping_us),
        format!("{:.1} us", ours.ping_us),
        kernel.ping_us / ours.ping_us,
        ""
    );

    // Encap and decap in the kernel, net of the XDP_PASS program measured the same way: one run
    // per sample (repeat = 1, cold), and steady state (repeat = 1M) through the benchmark programs
    // that put the frame's head back after each run.
    // The logger holds the log map the programs loaded below refer to: keep it.
    let (mut dp, _logger) = Dataplane::load(None, AttachMode::Auto)?;
    vectors::program(&mut dp)?;
    let inner = vectors::udp_from_port(REMOTE_MAC, REMOTE_IP, 18);
    let vx = vectors::vxlan_to_peer(VNI, &vectors::udp_from_port(PEER_MAC, PEER_IP, 18));
    let base = measure(dp.pass_program()?, &inner, 2)?;
    let base_steady = steady(dp.pass_program()?, &inner)? as f64;
    println!();
    println!(
        "{:<28} {:>12} {:>12} {:>14} {:>14} {:>8}",
        "BPF_PROG_TEST_RUN", "repeat=1", "net of PASS", "steady (1M)", "net of PASS", "target"
    );
    println!(
        "{:<28} {base:>12.1} {:>12} {base_steady:>14.1} {:>14} {:>8}",
        "xdp_pass (baseline)", "-", "-", ""
    );
    for (name, prog, bench, frame, target) in [
        ("encap 60 B -> 110 B", PORT_PROGRAM, BENCH_PORT_PROGRAM, &inner, "<= 60"),
        (
            "decap 110 B -> 60 B",
            UPLINK_PROGRAM,
            BENCH_UPLINK_PROGRAM,
            &vx,
            "<= 50",
        ),
    ] {
        let cold = measure(dp.loaded_program(prog)?, frame, 4)?;
        let hot = steady(dp.loaded_program(bench)?, frame)? as f64;
        println!(
            "{name:<28} {cold:>12.1} {:>12.1} {hot:>14.1} {:>14.1} {target:>8}",
            cold - base,
            hot - base_steady
        );
    }
    Ok(())
}

//! `cargo xtask bench routing`: a VM sending to a VM of another subnet on another host, routed by
//! (a) the Linux kernel on both hosts — two bridges per host, each with a vxlan device (VNI 1001
//! and 1002), the host's own stack routing between them (the gateways are the bridges'
//! addresses), as a DVR host does with Linux bridges — and (b) alioth on both hosts, with a router
//! joining the two subnets; in one run, on the same topology as `bench overlay` (two host
//! namespaces on one veth wire, a VM namespace behind each).
//!
//! Small packets come from the generator in the sending VM, addressed to its gateway's MAC, and
//! are counted by the receiving VM's sink (see `bench overlay`); TCP is iperf3, latency is ping.
//!
//! alioth's small packets are measured twice: in its default mode on veths (the skb path alone,
//! which keeps the guests' TSO) and with native XDP on its ports, its default on taps and NICs. A
//! tap runs native XDP on a guest's plain frames and hands its TSO super-frames to the skb path;
//! a veth cannot do both, so the second run measures the small frames as a tap would carry them.

use alioth::dataplane::object::{BENCH_PORT_PROGRAM, PORT_PROGRAM};
use alioth::dataplane::{AttachMode, Dataplane};
use alioth_proto::schema::OperationType;
use alioth_tests::frames;
use alioth_tests::generator::{best_of, cost_alone, Run};
use alioth_tests::netns::Netns;
use alioth_tests::overlay::{bridged_vxlan, iperf3, ping_avg_us, received_bps, Lab, System, Underlay, VmSpec, VpcSpec};
use alioth_tests::routing::{gateway_ip, gateway_mac, goal_state, router, routing, subnet_of};
use alioth_tests::table::{gbit, us, Table};
use alioth_tests::timing;
use alioth_tests::vectors::{self, routes};
use anyhow::{ensure, Context, Result};

/// Frames per generator run, and runs per measurement.
const BURST: u32 = 2_000_000;
const RUNS: usize = 3;

struct Figures {
    small: Run,
    /// The same frames along the same path with no data plane's work (the kernel's run).
    bare: Option<Run>,
    /// TCP and ping (not measured for `System::AliothNative`, whose veths turn the guests' TSO
    /// off).
    tcp_gbps: Option<f64>,
    ping_us: Option<f64>,
    /// CPU time per frame of the generator alone: its frames dropped by the sending port's program
    /// at once (alioth's run only, where that program is XDP).
    generator_ns: Option<f64>,
}

/// VM `a` in subnet 198.18.1.0/24 on host 0, VM `b` in 198.18.2.0/24 on host 1.
struct Routed {
    lab: Lab,
    a: VmSpec,
    b: VmSpec,
}

fn lab(system: System) -> Result<Routed> {
    let one = VpcSpec::new(1, 1001, 1);
    let two = subnet_of(&one, 2);
    let (a, b) = (one.vm(1, 10), two.vm(2, 20));
    let mut lab = Lab::with_underlay(vec![one.clone(), two.clone()], Underlay::wire()?)?;
    if system != System::Kernel {
        lab.add_host(vec![a.clone()])?;
        lab.add_host(vec![b.clone()])?;
        lab.start_agents(system.agent_args())?;
        for i in 0..2 {
            lab.push(i, &goal_state(&lab, i))?;
            let r = router(OperationType::Info, vec![(&one.subnet, vec![]), (&two.subnet, vec![])]);
            lab.push(i, &routing(vec![r], vec![]))?;
        }
        lab.wait_resolved()?;
    } else {
        lab.add_kernel_host(vec![a.clone()])?;
        lab.add_kernel_host(vec![b.clone()])?;
        kernel_routers(&lab, &a, &b)?;
    }
    for (vm, third) in [(&a, 1), (&b, 2)] {
        let gw = gateway_ip(third);
        lab.vm(&vm.port_id)
            .ns
            .exec(&["ip", "route", "add", "default", "via", &gw])?;
    }
    Ok(Routed { lab, a, b })
}

/// The kernel hosts as routers: beside the lab's `brk` with `vx0` (VNI 1001, subnet 1), a second
/// bridge `brk2` with `vx1` (VNI 1002, subnet 2); each bridge has its subnet's gateway address and
/// MAC, the host forwards between them, and knows the other host's VM (a permanent neighbour and a
/// static FDB entry, as l2population programs them). VM `b` moves to `brk2`.
fn kernel_routers(lab: &Lab, a: &VmSpec, b: &VmSpec) -> Result<()> {
    let ips: Vec<String> = lab.kernel_hosts.iter().map(|k| k.ip.clone()).collect();
    for (i, k) in lab.kernel_hosts.iter().enumerate() {
        let ns = &k.ns;
        bridged_vxlan(ns, "vx1", "brk2", 1002, &ips[i])?;
        for (bridge, third) in [("brk", 1), ("brk2", 2)] {
            ns.exec(&["ip", "link", "set", bridge, "address", &gateway_mac(third)])?;
            ns.exec(&["ip", "addr", "add", &format!("{}/24", gateway_ip(third)), "dev", bridge])?;
        }
        ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        // The VM on the other host, in its subnet's bridge and vxlan device.
        let (remote, bridge, vx) = if i == 0 { (b, "brk2", "vx1") } else { (a, "brk", "vx0") };
        ns.exec(&[
            "ip",
            "neigh",
            "replace",
            &remote.ip,
            "lladdr",
            &remote.mac,
            "dev",
            bridge,
            "nud",
            "permanent",
        ])?;
        ns.exec(&[
            "bridge",
            "fdb",
            "add",
            &remote.mac,
            "dev",
            vx,
            "dst",
            &ips[1 - i],
            "self",
            "permanent",
        ])?;
    }
    lab.kernel_hosts[1]
        .ns
        .exec(&["ip", "link", "set", "kv0", "master", "brk2"])?;
    Ok(())
}

/// A 60-byte frame from VM `a` to its gateway's MAC, for `dst`'s discard port.
fn small_frame(a: &VmSpec, dst: [u8; 4]) -> Vec<u8> {
    frames::udp(
        mac(&a.mac),
        mac(&gateway_mac(1)),
        [198, 18, 1, 10],
        dst,
        64,
        40000,
        9,
        &[0; 18],
    )
}

fn mac(s: &str) -> [u8; 6] {
    alioth::goalstate::model::parse_mac(s).unwrap_or_default()
}

fn run(system: System) -> Result<Figures> {
    let alioth = system != System::Kernel;
    let Routed { mut lab, a, b } = lab(system)?;
    lab.vm_mut(&b.port_id).sink()?;
    let src = lab.vm(&a.port_id);
    let warm = src
        .ns
        .exec_output(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &b.ip])?;
    ensure!(
        String::from_utf8_lossy(&warm.stdout).contains("3 received"),
        "no route from {} to {}: {}",
        a.ip,
        b.ip,
        String::from_utf8_lossy(&warm.stdout)
    );
    let ping_us = ping_avg_us(&src.ns, &b.ip)?;
    let frame = small_frame(&a, [198, 18, 2, 20]);
    let small = best_of(&src.ns, &lab.vm(&b.port_id).ns, &frame, BURST, RUNS)?;
    let bare = match alioth {
        false => Some(lab.bare_path(&a.port_id, &b.port_id, &frame, BURST, RUNS)?),
        true => None,
    };
    let generator_ns = match alioth {
        true => Some(generator_alone(&src.ns, &a)?),
        false => None,
    };
    if system == System::AliothNative {
        let (tcp_gbps, ping_us) = (None, None);
        return Ok(Figures {
            small,
            bare,
            tcp_gbps,
            ping_us,
            generator_ns,
        });
    }
    lab.vm_mut(&a.port_id).plain()?;
    lab.vm_mut(&b.port_id).plain()?;
    let (src, dst) = (lab.vm(&a.port_id), lab.vm(&b.port_id));
    let tcp = iperf3(&dst.ns, &src.ns, &b.ip, &["-t", "3"])?;
    Ok(Figures {
        small,
        bare,
        tcp_gbps: Some(received_bps(&tcp) / 1e9),
        ping_us: Some(ping_us),
        generator_ns,
    })
}

/// CPU time per frame of the generator in `vm` and what carries its frames to the host side: the
/// least of `RUNS` bursts to where no route goes, which the port program drops (`drop_no_route`)
/// as soon as it has looked the route up.
fn generator_alone(vm: &Netns, a: &VmSpec) -> Result<f64> {
    cost_alone(vm, &small_frame(a, [198, 19, 5, 5]), BURST, RUNS)
}

fn main() -> Result<()> {
    println!("alioth bench routing: VM -> VM of another subnet on another host, two hosts on one veth wire");
    println!(
        "kernel {}; small packets: 60 B frames to the gateway's MAC from a generator in the sending VM ({BURST} per run, best of {RUNS}), all on CPU 0",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()
    );
    let kernel = run(System::Kernel).context("kernel routing between bridges with vxlan")?;
    let ours = run(System::Alioth).context("alioth")?;
    let native = run(System::AliothNative).context("alioth with native XDP on its ports")?;
    println!();
    let t = Table::new(34, "linux br+vxlan");
    let (k, a) = (&kernel.small, &ours.small);
    println!("small packets: the generator is {}", k.generator.name());
    if a.generator != k.generator {
        println!("  (alioth's run: {})", a.generator.name());
    }
    let line = |name: &str, k: String, a: String, ratio: f64, target: &str| t.line(name, k, a, ratio, target);
    let n = &native.small;
    t.small_packets(
        "routed small UDP, native XDP (taps)",
        k,
        n,
        native.generator_ns,
        ">= 5x",
    );
    t.small_packets("routed small UDP, skb path (veths)", k, a, ours.generator_ns, "");
    if let Some(bare) = &kernel.bare {
        t.bare_forwarder(k, bare);
    }
    let both = |f: fn(&Figures) -> Option<f64>| f(&kernel).zip(f(&ours)).context("a figure is missing");
    let (kt, at) = both(|f| f.tcp_gbps)?;
    line("routed TCP (iperf3, 1 stream)", gbit(kt), gbit(at), at / kt, "");
    let (kp, ap) = both(|f| f.ping_us)?;
    line("routed ping RTT (avg)", us(kp), us(ap), kp / ap, "");
    in_kernel()
}

/// Encapsulation switched and routed (to another VPC's port, and over a rule to a gateway), in
/// the kernel (see `timing::in_kernel`): what routing adds to a frame.
fn in_kernel() -> Result<()> {
    let (mut dp, _logger) = Dataplane::load_lab(AttachMode::Auto)?;
    vectors::program(&mut dp)?;
    let switched = vectors::udp_from_port(vectors::REMOTE_MAC, vectors::REMOTE_IP, 18);
    let routed = vectors::udp_from_port(vectors::GW_MAC, routes::OTHER_VPC_VM_IP, 18);
    let tunnelled = vectors::udp_from_port(vectors::GW_MAC, [198, 19, 9, 9], 18);
    timing::in_kernel(
        &mut dp,
        &[
            ("switched, encap", PORT_PROGRAM, Some(BENCH_PORT_PROGRAM), &switched, ""),
            ("routed, encap", PORT_PROGRAM, Some(BENCH_PORT_PROGRAM), &routed, ""),
            (
                "routed to a gateway, encap",
                PORT_PROGRAM,
                Some(BENCH_PORT_PROGRAM),
                &tunnelled,
                "",
            ),
        ],
    )
}

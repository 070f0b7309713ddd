//! `cargo xtask bench nat`: 1:1 NAT of an elastic IP between an "internet" host on the underlay's
//! segment and a VM, by (a) the Linux kernel as Neutron's DVR L3 agent sets it up for a floating
//! IP — iptables DNAT and SNAT rules (conntrack), proxy ARP for the floating IP on the external
//! interface, the host's stack forwarding between it and the VM's bridge — and (b) alioth with an
//! elastic IP; in one run, with the same generator.
//!
//! The peer collapses Neutron's qrouter and fip namespaces into the host's (one veth hop fewer
//! than Neutron: a faster peer). Small packets come from the generator in the sending namespace,
//! addressed to the next hop's MAC, and are counted by the receiver's sink (see `bench overlay`);
//! TCP is iperf3 from the internet host to the VM, latency is ping to the elastic IP.

use alioth_proto::schema::OperationType;
use alioth_tests::frames;
use alioth_tests::generator::{best_of, Run};
use alioth_tests::goalstate::elastic_ip;
use alioth_tests::netns::{Netns, Vm};
use alioth_tests::overlay::{iperf3, ping_avg_us, Lab, VmSpec, VpcSpec, UPLINK};
use alioth_tests::routing::{gateway_ip, gateway_mac, goal_state};
use alioth_tests::table::{gbit, mpps, ns, us, Table};
use anyhow::{ensure, Context, Result};

/// Frames per generator run, and runs per measurement.
const BURST: u32 = 2_000_000;
const RUNS: usize = 3;
/// On the underlay's segment (198.19.0.0/24; the host is .1).
const INTERNET_HOST: [u8; 4] = [198, 19, 0, 200];
const INTERNET_MAC: &str = "02:00:c6:13:00:c8";
const ELASTIC_IP: [u8; 4] = [198, 19, 0, 100];

struct Figures {
    inbound: Run,
    outbound: Run,
    tcp_gbps: f64,
    ping_us: f64,
}

fn dotted(ip: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(ip).to_string()
}

fn mac(s: &str) -> [u8; 6] {
    alioth::goalstate::model::parse_mac(s).unwrap_or_default()
}

/// The lab: one host with VM `a`, and the internet host plugged into the underlay's bridge.
fn lab(alioth: bool) -> Result<(Lab, VmSpec, Vm)> {
    let one = VpcSpec::new(1, 1001, 1);
    let a = one.vm(1, 10);
    let mut lab = Lab::new(vec![one])?;
    let internet = Vm::new(
        &lab.underlay.ns,
        "inet",
        INTERNET_MAC,
        &format!("{}/24", dotted(INTERNET_HOST)),
    )?;
    lab.underlay.ns.exec(&["ip", "link", "set", "inet", "master", "br0"])?;
    let eip = dotted(ELASTIC_IP);
    if alioth {
        lab.add_host(vec![a.clone()])?;
        lab.start_agents(&[])?;
        lab.push(0, &goal_state(&lab, 0))?;
        lab.push(0, &elastic_ip(OperationType::Create, "eip-1", &eip, &a.port_id, 1))?;
    } else {
        lab.add_kernel_host(vec![a.clone()])?;
        kernel_nat(&lab.kernel_hosts[0].ns, &a, &eip)?;
    }
    lab.vm(&a.port_id)
        .ns
        .exec(&["ip", "route", "add", "default", "via", &gateway_ip(1)])?;
    Ok((lab, a, internet))
}

/// Neutron DVR's floating IP on a kernel host: the VM's bridge is its subnet's gateway, the host
/// forwards, DNATs the floating IP to the VM and SNATs the VM to it, and answers ARP for it on the
/// external interface (proxy ARP, as Neutron's fip namespace does).
fn kernel_nat(ns: &Netns, a: &VmSpec, eip: &str) -> Result<()> {
    ns.exec(&["ip", "link", "set", "brk", "address", &gateway_mac(1)])?;
    ns.exec(&["ip", "addr", "add", &format!("{}/24", gateway_ip(1)), "dev", "brk"])?;
    ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    ns.exec(&["sysctl", "-qw", &format!("net.ipv4.conf.{UPLINK}.proxy_arp=1")])?;
    ns.exec(&["ip", "neigh", "add", "proxy", eip, "dev", UPLINK])?;
    // The floating IP routed toward the router's side, as the fip namespace routes it to the
    // qrouter namespace: the kernel proxies ARP only for an address routed out of another device.
    ns.exec(&["ip", "route", "add", &format!("{eip}/32"), "dev", "brk"])?;
    let nat = |args: &[&str]| -> Result<String> {
        let mut full = vec!["iptables", "-t", "nat"];
        full.extend_from_slice(args);
        ns.exec(&full)
    };
    nat(&[
        "-A",
        "PREROUTING",
        "-d",
        &format!("{eip}/32"),
        "-j",
        "DNAT",
        "--to-destination",
        &a.ip,
    ])?;
    nat(&[
        "-A",
        "POSTROUTING",
        "-s",
        &format!("{}/32", a.ip),
        "-j",
        "SNAT",
        "--to-source",
        eip,
    ])?;
    Ok(())
}

fn run(alioth: bool) -> Result<Figures> {
    let (mut lab, a, mut internet) = lab(alioth)?;
    let up_mac = {
        let host = match alioth {
            true => &lab.hosts[0].ns,
            false => &lab.kernel_hosts[0].ns,
        };
        host.exec(&["cat", &format!("/sys/class/net/{UPLINK}/address")])?
    };
    let eip = dotted(ELASTIC_IP);
    // Both ways once, so that every neighbour is resolved and the flows are tracked.
    for (from, to) in [
        (&internet.ns, eip.clone()),
        (&lab.vm(&a.port_id).ns, dotted(INTERNET_HOST)),
    ] {
        let out = from.exec_output(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &to])?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(text.contains("3 received"), "{} -> {to}: {text}", from.name);
    }
    let ping_us = ping_avg_us(&internet.ns, &eip)?;
    internet.sink()?;
    lab.vm_mut(&a.port_id).sink()?;
    let vm_ip: [u8; 4] = a.ip.parse::<std::net::Ipv4Addr>()?.octets();
    let to_eip = frames::udp(
        mac(INTERNET_MAC),
        mac(up_mac.trim()),
        INTERNET_HOST,
        ELASTIC_IP,
        64,
        40000,
        9,
        &[0; 18],
    );
    let inbound = best_of(&internet.ns, &lab.vm(&a.port_id).ns, &to_eip, BURST, RUNS)?;
    let from_vm = frames::udp(
        mac(&a.mac),
        mac(&gateway_mac(1)),
        vm_ip,
        INTERNET_HOST,
        64,
        40000,
        9,
        &[0; 18],
    );
    let outbound = best_of(&lab.vm(&a.port_id).ns, &internet.ns, &from_vm, BURST, RUNS)?;
    internet.plain()?;
    lab.vm_mut(&a.port_id).plain()?;
    let tcp = iperf3(&lab.vm(&a.port_id).ns, &internet.ns, &eip, &["-t", "3"])?;
    Ok(Figures {
        inbound,
        outbound,
        tcp_gbps: tcp["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9,
        ping_us,
    })
}

fn main() -> Result<()> {
    println!("alioth bench nat: an elastic IP (1:1 NAT) between a host on the underlay's segment and a VM");
    println!(
        "kernel {}; small packets: 60 B frames to the next hop's MAC from a generator in the sending namespace ({BURST} per run, best of {RUNS}), all on CPU 0",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()
    );
    let kernel = run(false).context("iptables DNAT/SNAT as Neutron's DVR floating IPs")?;
    let ours = run(true).context("alioth")?;
    println!();
    let t = Table::new(36, "linux iptables");
    println!("small packets: the generator is {}", kernel.inbound.generator.name());
    for (name, k, a) in [
        ("in: internet -> elastic IP (1 core)", &kernel.inbound, &ours.inbound),
        ("out: VM -> internet (1 core)", &kernel.outbound, &ours.outbound),
    ] {
        let (kr, ar) = (k.received_pps, a.received_pps);
        t.line(name, mpps(kr), mpps(ar), ar / kr, ">= 5x");
        let (ko, ao) = (k.offered_pps, a.offered_pps);
        t.line("  offered by the generator", mpps(ko), mpps(ao), ao / ko, "");
        // Lower is better: the ratio printed is kernel / alioth.
        t.line(
            "  CPU time per received frame",
            ns(k.cpu_ns),
            ns(a.cpu_ns),
            k.cpu_ns / a.cpu_ns,
            "",
        );
    }
    let (kt, at) = (kernel.tcp_gbps, ours.tcp_gbps);
    t.line("TCP internet -> VM (iperf3, 1 stream)", gbit(kt), gbit(at), at / kt, "");
    let (kp, ap) = (kernel.ping_us, ours.ping_us);
    t.line("ping to the elastic IP (avg)", us(kp), us(ap), kp / ap, "");
    println!("(SNAT through the host's address is not measured here)");
    Ok(())
}

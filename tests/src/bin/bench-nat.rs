//! `cargo xtask bench nat`: an elastic IP (1:1 NAT) and distributed SNAT between an "internet" host
//! and VMs, by (a) the Linux kernel as Neutron's DVR L3 agent sets it up for a floating IP —
//! iptables DNAT and SNAT rules (conntrack), proxy ARP for the floating IP on the external
//! interface, the host's stack forwarding between it and the VMs' bridge — with iptables SNAT to
//! the host's address for a VM without one (a router gateway's rule), and (b) alioth with an
//! elastic IP and a router rule out of the VPC; in one run, with the same generator.
//!
//! The host's uplink is a veth wire whose far end is the internet host (where the upstream router
//! would be), as the other benches join their hosts. The peer collapses Neutron's qrouter and fip
//! namespaces into the host's (one veth hop fewer than Neutron: a faster peer). Small packets come
//! from the generator in the sending namespace, addressed to the next hop's MAC, and are counted
//! by the receiver's sink (see `bench overlay`); TCP is iperf3 from the internet host to the VM,
//! latency is ping to the elastic IP.

use alioth_proto::schema::OperationType;
use alioth_tests::frames;
use alioth_tests::generator::{best_of, cost_alone, Run};
use alioth_tests::goalstate::elastic_ip;
use alioth_tests::netns::{Netns, Vm};
use alioth_tests::overlay::{iperf3, ping_avg_us, received_bps, Lab, Underlay, VmSpec, VpcSpec, UPLINK, WIRE_PEER};
use alioth_tests::routing::{gateway_ip, gateway_mac, goal_state, router, routing, rule};
use alioth_tests::table::{gbit, us, Table};
use anyhow::{ensure, Context, Result};

/// Frames per generator run, and runs per measurement.
const BURST: u32 = 2_000_000;
const RUNS: usize = 3;
/// The far end of the host's uplink (198.19.0.0/24; the host is .1).
const INTERNET_HOST: [u8; 4] = [198, 19, 0, 200];
const INTERNET_MAC: &str = "02:00:c6:13:00:c8";
const ELASTIC_IP: [u8; 4] = [198, 19, 0, 100];

struct Figures {
    inbound: Run,
    outbound: Run,
    snat: Run,
    /// CPU time per frame of the generator alone, from the internet host and from a VM (alioth's
    /// run: frames its programs drop at once).
    generator_ns: Option<(f64, f64)>,
    tcp_gbps: f64,
    ping_us: f64,
}

fn dotted(ip: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(ip).to_string()
}

fn mac(s: &str) -> [u8; 6] {
    alioth::goalstate::model::parse_mac(s).unwrap_or_default()
}

fn ip4(s: &str) -> Result<[u8; 4]> {
    Ok(s.parse::<std::net::Ipv4Addr>()?.octets())
}

/// The lab: one host with VM `a` (an elastic IP) and VM `b` (none: SNAT), and the internet host
/// at the far end of its uplink.
fn lab(alioth: bool) -> Result<(Lab, VmSpec, VmSpec, Vm)> {
    let one = VpcSpec::new(1, 1001, 1);
    let (a, b) = (one.vm(1, 10), one.vm(2, 11));
    let mut lab = Lab::with_underlay(vec![one.clone()], Underlay::wire()?)?;
    match alioth {
        true => lab.add_host(vec![a.clone(), b.clone()])?,
        false => lab.add_kernel_host(vec![a.clone(), b.clone()])?,
    };
    let internet = Vm::adopt(
        &lab.underlay.ns,
        WIRE_PEER,
        INTERNET_MAC,
        &format!("{}/24", dotted(INTERNET_HOST)),
    )?;
    let eip = dotted(ELASTIC_IP);
    if alioth {
        lab.start_agents(&[])?;
        lab.push(0, &goal_state(&lab, 0))?;
        lab.push(0, &elastic_ip(OperationType::Create, "eip-1", &eip, &a.port_id, 1))?;
        // `b` leaves by SNAT: its subnet's router sends what is not the VPC's out of it.
        let out = rule("default", "0.0.0.0/0", "", 0);
        let rules = vec![router(OperationType::Create, vec![(&one.subnet, vec![out])])];
        lab.push(0, &routing(rules, vec![]))?;
    } else {
        let host = &lab.kernel_hosts[0];
        kernel_nat(&host.ns, &a, &eip)?;
        // A router gateway's SNAT, as Neutron's L3 agent writes it: to the external address.
        let to = ["-o", UPLINK, "-j", "SNAT", "--to-source", &host.ip];
        let mut args = vec!["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", &b.ip];
        args.extend_from_slice(&to);
        host.ns.exec(&args)?;
    }
    for vm in [&a, &b] {
        lab.vm(&vm.port_id)
            .ns
            .exec(&["ip", "route", "add", "default", "via", &gateway_ip(1)])?;
    }
    Ok((lab, a, b, internet))
}

/// Neutron DVR's floating IP on a kernel host: the VMs' bridge is their subnet's gateway, the host
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
    let (eip32, vm32) = (format!("{eip}/32"), format!("{}/32", a.ip));
    nat(&[
        "-A",
        "PREROUTING",
        "-d",
        &eip32,
        "-j",
        "DNAT",
        "--to-destination",
        &a.ip,
    ])?;
    nat(&["-A", "POSTROUTING", "-s", &vm32, "-j", "SNAT", "--to-source", eip])?;
    Ok(())
}

fn run(alioth: bool) -> Result<Figures> {
    let (mut lab, a, b, mut internet) = lab(alioth)?;
    let host = match alioth {
        true => &lab.hosts[0].ns,
        false => &lab.kernel_hosts[0].ns,
    };
    let up_mac = host.exec(&["cat", &format!("/sys/class/net/{UPLINK}/address")])?;
    let up_mac = mac(up_mac.trim());
    let eip = dotted(ELASTIC_IP);
    // Each way once, so that every neighbour is resolved and the flows are tracked.
    for (from, to) in [
        (&internet.ns, eip.clone()),
        (&lab.vm(&a.port_id).ns, dotted(INTERNET_HOST)),
        (&lab.vm(&b.port_id).ns, dotted(INTERNET_HOST)),
    ] {
        let out = from.exec_output(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &to])?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(text.contains("3 received"), "{} -> {to}: {text}", from.name);
    }
    let ping_us = ping_avg_us(&internet.ns, &eip)?;
    internet.sink()?;
    lab.vm_mut(&a.port_id).sink()?;
    let udp = |src: [u8; 6], dst: [u8; 6], from: [u8; 4], to: [u8; 4]| {
        frames::udp(src, dst, from, to, 64, 40000, 9, &[0; 18])
    };
    let to_eip = udp(mac(INTERNET_MAC), up_mac, INTERNET_HOST, ELASTIC_IP);
    let inbound = best_of(&internet.ns, &lab.vm(&a.port_id).ns, &to_eip, BURST, RUNS)?;
    let gw = mac(&gateway_mac(1));
    let from_a = udp(mac(&a.mac), gw, ip4(&a.ip)?, INTERNET_HOST);
    let outbound = best_of(&lab.vm(&a.port_id).ns, &internet.ns, &from_a, BURST, RUNS)?;
    let from_b = udp(mac(&b.mac), gw, ip4(&b.ip)?, INTERNET_HOST);
    let snat = best_of(&lab.vm(&b.port_id).ns, &internet.ns, &from_b, BURST, RUNS)?;
    let generator_ns = match alioth {
        // To another MAC (the uplink's program leaves it to the stack, which drops it at once),
        // and from an address the VM does not own (the port's program drops it).
        true => Some((
            cost_alone(
                &internet.ns,
                &udp(mac(INTERNET_MAC), [2, 0, 0, 0, 0, 0x99], INTERNET_HOST, ELASTIC_IP),
                BURST,
                RUNS,
            )?,
            cost_alone(
                &lab.vm(&a.port_id).ns,
                &udp(mac(&a.mac), gw, [198, 18, 1, 99], INTERNET_HOST),
                BURST,
                RUNS,
            )?,
        )),
        false => None,
    };
    internet.plain()?;
    lab.vm_mut(&a.port_id).plain()?;
    let tcp = iperf3(&lab.vm(&a.port_id).ns, &internet.ns, &eip, &["-t", "3"])?;
    Ok(Figures {
        inbound,
        outbound,
        snat,
        generator_ns,
        tcp_gbps: received_bps(&tcp) / 1e9,
        ping_us,
    })
}

fn main() -> Result<()> {
    println!("alioth bench nat: an elastic IP (1:1 NAT) and SNAT between the host at the far end of the uplink's wire and VMs");
    println!(
        "kernel {}; small packets: 60 B frames to the next hop's MAC from a generator in the sending namespace ({BURST} per run, best of {RUNS}), all on CPU 0",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()
    );
    let kernel = run(false).context("iptables DNAT/SNAT as Neutron's DVR floating IPs")?;
    let ours = run(true).context("alioth")?;
    println!();
    let t = Table::new(40, "linux iptables");
    println!("small packets: the generator is {}", kernel.inbound.generator.name());
    let (g_in, g_out) = ours.generator_ns.unzip();
    t.small_packets(
        "in: internet -> elastic IP (1 core)",
        &kernel.inbound,
        &ours.inbound,
        g_in,
        ">= 5x",
    );
    t.small_packets(
        "out: VM -> internet, elastic IP (1 core)",
        &kernel.outbound,
        &ours.outbound,
        g_out,
        ">= 5x",
    );
    t.small_packets(
        "out: VM -> internet, SNAT (1 core)",
        &kernel.snat,
        &ours.snat,
        g_out,
        ">= 5x",
    );
    let (kt, at) = (kernel.tcp_gbps, ours.tcp_gbps);
    t.line("TCP internet -> VM (iperf3, 1 stream)", gbit(kt), gbit(at), at / kt, "");
    let (kp, ap) = (kernel.ping_us, ours.ping_us);
    t.line("ping to the elastic IP (avg)", us(kp), us(ap), kp / ap, "");
    Ok(())
}

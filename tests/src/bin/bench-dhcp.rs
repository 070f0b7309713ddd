//! `cargo xtask bench dhcp`: perfdhcp (Kea) drives full DORA exchanges against (a) dnsmasq run the
//! way Neutron's DHCP agent runs it (`--dhcp-hostsfile` with every MAC -> IP of the subnet, static
//! range, no ping check) and (b) alioth's XDP server, from the same VM namespace through the same
//! tap, in one run; then the in-kernel ns per OFFER and ACK through BPF_PROG_TEST_RUN.
//!
//! perfdhcp speaks DHCPv4 as a relay agent: from port 67 of the VM's address (giaddr), unicast to
//! the server. Both servers answer relayed requests. alioth serves a port only its own MAC (one
//! port, one MAC: anything else is spoofing), so against alioth every exchange is the port's; dnsmasq
//! is measured with that same single client and also with every client of its hosts file.
//!
//! Each load runs at a sweep of offered rates (perfdhcp's unlimited rate and fixed ones); a server's
//! figure is its best completed exchanges per second over the sweep, so an overloaded server is not
//! judged by its collapse. Latency is taken at a light fixed load that neither server drops.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::Duration;

use alioth::dataplane::object::PORT_PROGRAM;
use alioth::dataplane::{AttachMode, Dataplane};
use alioth_tests::agent::Agent;
use alioth_tests::dhcp::{parse_perfdhcp, Request};
use alioth_tests::netns::{Netns, Scratch, Vm};
use alioth_tests::timing::{cold, COLD_ROUNDS};
use alioth_tests::vectors;
use anyhow::{bail, ensure, Context, Result};
use dhcproto::v4::MessageType;

const VPC: &str = "b3c0a9d2-bdhc-4c1e-9e0f-2b4f1d7a0001";
const SUBNET: &str = "b3c0a9d2-bdhc-4c1e-9e0f-2b4f1d7a0002";
const GATEWAY: &str = "198.18.64.1";
const GATEWAY_MAC: &str = "0a:58:c6:12:40:01";
const PREFIX: u8 = 18;
/// Offered rates of the sweep (exchanges/s; 0 = perfdhcp's unlimited rate).
const RATES: [u32; 11] = [0, 250, 500, 750, 1_000, 1_500, 2_000, 4_000, 8_000, 16_000, 32_000];
/// Seconds per sweep step.
const PERIOD: u32 = 3;
/// The light load at which latency is measured.
const LATENCY_RATE: u32 = 200;

/// Client `i` of the subnet: port id, MAC, address (client 0 is the VM that runs perfdhcp).
fn client(i: usize) -> (String, String, String) {
    let n = i + 10;
    (
        // The first 11 characters name the tap: unique per port.
        format!("{:08x}-b0dc-4c1e-9e0f-{i:012x}", 0xb3c0_0000 + i),
        format!("02:00:c6:12:{:02x}:{:02x}", n >> 8, n & 0xff),
        format!("198.18.{}.{}", 64 + (n >> 8), n & 0xff),
    )
}

fn tap(port_id: &str) -> String {
    format!("tap{}", &port_id[..11])
}

/// One perfdhcp run: DO and RA figures.
#[derive(Debug, Default, Clone)]
struct Run {
    offered: u32,
    discovers: u64,
    acks: u64,
    drops: u64,
    /// min / avg / max of DISCOVER-OFFER and REQUEST-ACK, ms.
    do_delay: [f64; 3],
    ra_delay: [f64; 3],
    /// CPU seconds perfdhcp used per second of the run (its own ceiling is the machine's cores).
    generator_cpu: f64,
}

impl Run {
    fn exchanges_per_sec(&self) -> f64 {
        self.acks as f64 / PERIOD as f64
    }
}

/// CPU time of reaped children so far (user + system), seconds.
fn children_cpu() -> f64 {
    // SAFETY: rusage is plain data, for which all zeroes is a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// perfdhcp in the VM against `server`, `clients` given as perfdhcp arguments, at `rate` (0: as
/// fast as it can) for `PERIOD` seconds.
fn perfdhcp(vm: &Vm, server: &str, clients: &[&str], rate: u32) -> Result<Run> {
    let period_s = PERIOD.to_string();
    let rate_s = rate.to_string();
    let mut args = vec!["timeout", "60", "perfdhcp", "-4", "-l", "eth0", "-p", &period_s];
    if rate > 0 {
        args.extend(["-r", &rate_s]);
    }
    args.extend_from_slice(clients);
    args.push(server);
    let cpu = children_cpu();
    let out = vm.ns.exec_output(&args)?;
    let generator_cpu = (children_cpu() - cpu) / PERIOD as f64;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let sections = parse_perfdhcp(&text);
    let (Some(d), Some(r)) = (sections.get("DISCOVER-OFFER"), sections.get("REQUEST-ACK")) else {
        bail!(
            "perfdhcp printed no statistics ({}):\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let f = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    let delays = |m: &BTreeMap<String, f64>| [f(m, "min delay"), f(m, "avg delay"), f(m, "max delay")];
    Ok(Run {
        offered: rate,
        discovers: f(d, "sent packets") as u64,
        acks: f(r, "received packets") as u64,
        drops: (f(d, "drops") + f(r, "drops")) as u64,
        do_delay: delays(d),
        ra_delay: delays(r),
        generator_cpu,
    })
}

/// The sweep: every rate, then the run with the most completed exchanges per second.
fn sweep(vm: &Vm, server: &str, clients: &[&str], label: &str) -> Result<Run> {
    let mut best = Run::default();
    for rate in RATES {
        let r = perfdhcp(vm, server, clients, rate)?;
        let offered = if rate == 0 { "max".to_string() } else { rate.to_string() };
        println!(
            "  {label:<30} offered {offered:>6}/s: {:>8.0} exchanges/s, {:>7} drops, generator {:.2} CPU",
            r.exchanges_per_sec(),
            r.drops,
            r.generator_cpu
        );
        if r.exchanges_per_sec() > best.exchanges_per_sec() {
            best = r;
        }
    }
    Ok(best)
}

/// dnsmasq as Neutron's DHCP agent starts it (neutron/agent/linux/dhcp.py), DNS off, quiet (no
/// per-packet log lines: the kindest setting for it), no ping check, killed on drop.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(host: &Netns, iface: &str, scratch: &Scratch) -> Result<Self> {
        std::fs::write(scratch.path("leases"), "")?;
        let child = host
            .command("dnsmasq")
            .args([
                "--no-daemon",
                "--no-hosts",
                "--no-resolv",
                "--port=0",
                "--bind-interfaces",
                &format!("--interface={iface}"),
                "--except-interface=lo",
                "--conf-file=/dev/null",
                "--dhcp-range=set:subnet0,198.18.64.0,static,255.255.192.0,86400s",
                "--dhcp-option-force=option:mtu,1450",
                &format!("--dhcp-lease-max={}", 1u32 << (32 - PREFIX)),
                &format!("--dhcp-hostsfile={}", scratch.path("hosts")),
                &format!("--dhcp-leasefile={}", scratch.path("leases")),
                "--dhcp-match=set:ipxe,175",
                "--domain=openstacklocal",
                "--no-ping",
                "--quiet-dhcp",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start dnsmasq")?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(Dnsmasq(child))
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Goal state: the VPC, a /18 DHCP subnet, and every client as a port with its DHCP entry.
fn goal_state(clients: usize) -> String {
    let mut y = format!(
        r#"vpcStates:
  - operationType: CREATE
    configuration: {{ id: {VPC}, revisionNumber: 1, cidr: 198.18.0.0/15, tunnelId: 164 }}
subnetStates:
  - operationType: CREATE
    configuration:
      id: {SUBNET}
      revisionNumber: 1
      vpcId: {VPC}
      cidr: 198.18.64.0/{PREFIX}
      gateway: {{ ipAddress: {GATEWAY}, macAddress: "{GATEWAY_MAC}" }}
      dhcpEnable: true
      dnsEntryList: [{{ entry: 198.18.64.2 }}]
portStates:
"#
    );
    for i in 0..clients {
        let (id, mac, ip) = client(i);
        y += &format!(
            "  - operationType: CREATE\n    configuration: {{ id: {id}, revisionNumber: 1, vpcId: {VPC}, \
             macAddress: \"{mac}\", fixedIps: [{{ subnetId: {SUBNET}, ipAddress: {ip} }}] }}\n"
        );
    }
    y += "dhcpStates:\n";
    for i in 0..clients {
        let (_, mac, ip) = client(i);
        y += &format!(
            "  - operationType: CREATE\n    configuration: {{ id: dhcp-{i}, revisionNumber: 1, \
             subnetId: {SUBNET}, macAddress: \"{mac}\", ipv4Address: {ip}, portHostName: vm{i} }}\n"
        );
    }
    y
}

fn print_run(system: &str, load: &str, r: &Run) {
    let offered = if r.offered == 0 {
        "max".to_string()
    } else {
        r.offered.to_string()
    };
    println!(
        "{system:<8} {load:<24} {:>12.0} {offered:>8} {:>10} {:>10} {:>8} {:>8.2}",
        r.exchanges_per_sec(),
        r.discovers,
        r.acks,
        r.drops,
        r.generator_cpu
    );
}

fn print_latency(system: &str, r: &Run) {
    println!(
        "{system:<8} {:>8.3} {:>8.3} {:>8.3}   {:>8.3} {:>8.3} {:>8.3}   {:>6}",
        r.do_delay[0], r.do_delay[1], r.do_delay[2], r.ra_delay[0], r.ra_delay[1], r.ra_delay[2], r.drops
    );
}

/// dnsmasq on the tap, the gateway address on the host side: one client, every client, latency.
fn dnsmasq_runs(
    host: &Netns,
    vm: &Vm,
    tap: &str,
    scratch: &Scratch,
    one: &[&str],
    all: &[&str],
    clients: usize,
) -> Result<(Run, Run, Run)> {
    host.exec(&["ip", "addr", "add", &format!("{GATEWAY}/{PREFIX}"), "dev", tap])?;
    let dnsmasq = Dnsmasq::start(host, tap, scratch)?;
    let dn_one = sweep(vm, GATEWAY, one, "dnsmasq, 1 client")?;
    drop(dnsmasq);
    let dnsmasq = Dnsmasq::start(host, tap, scratch)?;
    let dn_all = sweep(vm, GATEWAY, all, &format!("dnsmasq, {clients} clients"))?;
    drop(dnsmasq);
    let dnsmasq = Dnsmasq::start(host, tap, scratch)?;
    let dn_lat = perfdhcp(vm, GATEWAY, one, LATENCY_RATE)?;
    drop(dnsmasq);
    host.exec(&["ip", "addr", "flush", "dev", tap])?;
    Ok((dn_one, dn_all, dn_lat))
}

/// alioth: the agent attaches to the tap; the gateway is answered by XDP. One client, latency,
/// and the agent's counters.
fn alioth_runs(
    host: &Netns,
    vm: &Vm,
    scratch: &Scratch,
    one: &[&str],
    clients: usize,
) -> Result<(Run, Run, serde_json::Value)> {
    let agent = Agent::start(host, &[])?;
    let file = scratch.path("goal.yaml");
    std::fs::write(&file, goal_state(clients))?;
    let out = agent.cli(&["apply", "-f", &file, "--json"])?;
    ensure!(
        out.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let al_one = sweep(vm, GATEWAY, one, "alioth, 1 client (its port)")?;
    let al_lat = perfdhcp(vm, GATEWAY, one, LATENCY_RATE)?;
    let stats = agent.stats()?;
    drop(agent);
    Ok((al_one, al_lat, stats))
}

fn main() -> Result<()> {
    let clients: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().context("usage: bench-dhcp [CLIENTS]")?,
        None => 10_000,
    };
    ensure!((1..=16_000).contains(&clients), "CLIENTS must be 1..=16000 (a /18)");
    let scratch = Scratch::new("alioth-bench-dhcp")?;
    let hosts: String = (0..clients)
        .map(|i| {
            let (_, mac, ip) = client(i);
            format!("{mac},{ip},vm{i}\n")
        })
        .collect();
    std::fs::write(scratch.path("hosts"), hosts)?;
    let macs: String = (0..clients).map(|i| client(i).1 + "\n").collect();
    std::fs::write(scratch.path("macs"), macs)?;

    let (port_id, vm_mac, vm_ip) = client(0);
    let tap = tap(&port_id);
    let host = Netns::new("albdh")?;
    let vm = Vm::new(&host, &tap, &vm_mac, &format!("{vm_ip}/{PREFIX}"))?;
    let one = ["-b", &format!("mac={vm_mac}")].map(str::to_string);
    let one: Vec<&str> = one.iter().map(String::as_str).collect();
    let macs = scratch.path("macs");
    let all = ["-M", macs.as_str()];

    println!("alioth bench dhcp: perfdhcp DORA, {clients} clients in goal state and in dnsmasq's hosts file");
    println!("sweep: offered rates {RATES:?} (0 = unlimited), {PERIOD} s each; best completed exchanges/s kept");
    println!();

    let (dn_one, dn_all, dn_lat) = dnsmasq_runs(&host, &vm, &tap, &scratch, &one, &all, clients)?;

    let (al_one, al_lat, stats) = alioth_runs(&host, &vm, &scratch, &one, clients)?;

    println!();
    println!(
        "{:<8} {:<24} {:>12} {:>8} {:>10} {:>10} {:>8} {:>8}",
        "server", "load", "exchanges/s", "offered", "DISCOVERs", "ACKs", "drops", "gen CPU"
    );
    print_run("dnsmasq", "1 client", &dn_one);
    print_run("dnsmasq", &format!("{clients} clients"), &dn_all);
    print_run("alioth", "1 client (its port)", &al_one);
    println!();
    println!("latency at {LATENCY_RATE} exchanges/s (ms):");
    println!(
        "{:<8} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}   {:>6}",
        "server", "DO min", "DO avg", "DO max", "RA min", "RA avg", "RA max", "drops"
    );
    print_latency("dnsmasq", &dn_lat);
    print_latency("alioth", &al_lat);
    println!();
    let ratio = |d: &Run| al_one.exchanges_per_sec() / d.exchanges_per_sec().max(1e-9);
    println!(
        "ratio alioth / dnsmasq (same client): {:.1}x; alioth / dnsmasq serving {clients} clients: {:.1}x (target >= 50x)",
        ratio(&dn_one),
        ratio(&dn_all)
    );
    println!(
        "alioth's counters: offers {}, acks {}, dropped as unknown client {}",
        stats["dhcp_offer"], stats["dhcp_ack"], stats["drop_dhcp_unknown_client"]
    );
    if al_one.generator_cpu > 1.5 {
        println!(
            "perfdhcp used {:.2} CPUs of 2 against alioth: the generator, not the server, sets alioth's figure",
            al_one.generator_cpu
        );
    }

    in_kernel_build()
}

/// The kernel's own cost of building each reply.
fn in_kernel_build() -> Result<()> {
    // The lab object: the XDP_PASS baseline is one of its programs. The logger holds the log map
    // the programs refer to.
    let (mut dp, _logger) = Dataplane::load_lab(AttachMode::Auto)?;
    vectors::program(&mut dp)?;
    let discover = Request::new(MessageType::Discover).frame();
    let request = Request::selecting().frame();
    let net = |(ns, base): (f64, f64)| ns - base;
    let offer = net(cold(&mut dp, PORT_PROGRAM, &discover, 3)?);
    let ack = net(cold(&mut dp, PORT_PROGRAM, &request, 3)?);
    println!();
    println!(
        "in-kernel reply build (BPF_PROG_TEST_RUN single runs, net of XDP_PASS, the least of {COLD_ROUNDS} rounds \
         alternating with it): OFFER {offer:.1} ns, ACK {ack:.1} ns (target ACK <= 200 ns); \
         that is {:.1} M exchanges/s per core of XDP time",
        1e3 / (offer + ack)
    );
    Ok(())
}

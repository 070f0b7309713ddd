//! `cargo xtask bench secgroups`: security groups, measured three ways in one run.
//!
//! 1. ns per frame in the kernel (BPF_PROG_TEST_RUN, steady state, net of XDP_PASS measured in
//!    alternation): a frame of an established flow, and the first frame of a flow the rules must
//!    decide on, with 1 to 10,000 rules (refused: every run decides anew, as a new flow does).
//! 2. pps between two VMs of one host, the receiver behind 1,000 rules, with the same generator and
//!    sink in both systems: alioth, and the way Neutron enforces groups with `iptables_hybrid`
//!    (the VMs' taps on a Linux bridge, `bridge-nf-call-iptables`, a chain per port reached by
//!    `physdev` with conntrack's ESTABLISHED first and a rule per security-group rule).
//! 3. Programming: 1,000 ports with 100 rules each in one message, and one port joining a group
//!    that all 1,000 ports' rules name, as the agent does them (validation, plan, compile, map
//!    writes), in process, without interfaces to attach to.
//! 4. The same message end to end: the real agent in a namespace with the 1,000 ports' veths,
//!    pushed by `alioth apply` over gRPC, every port attached before the reply; then a restart of
//!    the agent, which takes the 1,000 ports over.

use std::time::{Duration, Instant};

use alioth::dataplane::object::BENCH_PORT_PROGRAM;
use alioth::dataplane::{AttachMode, Dataplane};
use alioth::goalstate::model::{Change, State};
use alioth::goalstate::plan::{plan, PortOp};
use alioth::goalstate::secgroup::{alone, compile, Compiler, Policy, Rule};
use alioth::goalstate::validate::{validate, Naming};
use alioth_common::maps::PortEntry;
use alioth_proto::schema::security_group_configuration::{Direction, SecurityGroupRule};
use alioth_proto::schema::*;
use alioth_tests::agent::Agent;
use alioth_tests::demo::{apply, example, topology};
use alioth_tests::frames;
use alioth_tests::generator::{generate, rx_frames, Generator};
use alioth_tests::netns::{Netns, Scratch, Vm};
use alioth_tests::timing::steady;
use alioth_tests::vectors::{self, *};
use anyhow::{ensure, Context, Result};
use serde_json::json;

const BURST: u32 = 1_000_000;
const RUNS: usize = 3;
/// Rules in front of the receiving VM in the pps comparison.
const RULES: usize = 1000;

fn main() -> Result<()> {
    println!("alioth bench secgroups");
    println!(
        "kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()
    );
    // ALIOTH_BENCH_PARTS=13 runs parts 1 and 3 only (all by default).
    let parts = std::env::var("ALIOTH_BENCH_PARTS").unwrap_or_else(|_| "1234".into());
    if parts.contains('1') {
        per_frame()?;
    }
    if parts.contains('2') {
        pps()?;
    }
    if parts.contains('3') {
        programming()?;
    }
    if parts.contains('4') {
        end_to_end()?;
    }
    Ok(())
}

/// `n` ingress-or-egress rules that never allow UDP 9 to the vector neighbor: one names its whole
/// range for TCP 22 (so the remote lookup hits and the service lookups run), the rest name other
/// remotes, across 100 services.
fn refusing(n: usize) -> Vec<Rule> {
    let mut rules = vec![Rule {
        remotes: vec!["198.18.0.0/15".parse().unwrap()],
        protocol: Some(6),
        ports: (22, 22),
    }];
    for i in 1..n {
        let ip = std::net::Ipv4Addr::new(198, 19, (i / 250) as u8, (i % 250) as u8 + 1);
        let service = 1000 + (i % 100) as u16;
        match rules.iter_mut().find(|r| r.ports == (service, service)) {
            Some(r) => r.remotes.push(ip.into()),
            None => rules.push(Rule {
                remotes: vec![ip.into()],
                protocol: Some(17),
                ports: (service, service),
            }),
        }
    }
    rules
}

/// Part 1: ns per frame through the port program (`BENCH_PORT_PROGRAM`, which undoes the
/// encapsulation after each run), a UDP frame from the vector port to a remote port.
fn per_frame() -> Result<()> {
    let (mut dp, _logger) = Dataplane::load_lab(AttachMode::Auto)?;
    vectors::program(&mut dp)?;
    let frame = frames::udp(VM_MAC, REMOTE_MAC, VM_IP, REMOTE_IP, 64, 40000, 9, &[0; 18]);
    let filter = |dp: &mut Dataplane, name: &str, egress: &[Rule]| -> Result<()> {
        let policy = Policy {
            egress: compile(egress),
            ingress: compile(&[]),
        };
        let (set, zone) = dp.set_policy(name, Some(&alone(name, policy)))?;
        dp.set_port_entry(
            IFINDEX,
            PortEntry {
                policy: set,
                zone,
                ..vectors::port()
            },
        )
    };
    let mut rows: Vec<(String, u64, u64)> = Vec::new();
    let (plain, base) = steady(&mut dp, BENCH_PORT_PROGRAM, &frame)?;
    rows.push(("no security groups (encapsulated)".into(), plain, base));
    let open = Rule {
        remotes: vec!["0.0.0.0/0".parse().unwrap()],
        protocol: Some(17),
        ports: (9, 9),
    };
    filter(&mut dp, "established", &[open])?;
    let (hit, base) = steady(&mut dp, BENCH_PORT_PROGRAM, &frame)?;
    rows.push(("established flow (conntrack hit)".into(), hit, base));
    let mut decided = Vec::new();
    for n in [1, 100, 1000, 10_000] {
        filter(&mut dp, &format!("refusing-{n}"), &refusing(n))?;
        let (ns, base) = steady(&mut dp, BENCH_PORT_PROGRAM, &frame)?;
        rows.push((format!("new flow, {n} rules (refused)"), ns, base));
        decided.push(ns.saturating_sub(base));
    }
    println!();
    println!("1. ns per frame, BPF_PROG_TEST_RUN steady state (least of 10 runs), XDP_PASS in alternation");
    println!("{:<40} {:>8} {:>10} {:>14}", "path", "ns", "XDP_PASS", "net of pass");
    for (name, ns, base) in &rows {
        println!("{name:<40} {ns:>8} {base:>10} {:>14}", ns.saturating_sub(*base));
    }
    let firewall = hit.saturating_sub(plain);
    // The hit's own cost: the path with the flow tracked against the same path without groups,
    // each net of XDP_PASS.
    println!(
        "established-flow hit: {firewall} ns (target <= 40); the whole encapsulating path with it {} ns net of XDP_PASS",
        rows[1].1.saturating_sub(rows[1].2),
    );
    println!(
        "new flow at 10,000 rules / 1 rule: {:.2}x (target <= 1.5x)",
        decided[3] as f64 / decided[0].max(1) as f64
    );
    Ok(())
}

/// The rules of the pps comparison: `RULES - 1` for other remotes and services, then the one
/// that allows VM 1's UDP to port 9 (last: iptables walks its chain in order; alioth's cost has
/// no order).
fn pps_rules() -> Vec<(String, u16)> {
    let mut r: Vec<(String, u16)> = (1..RULES)
        .map(|i| {
            (
                format!("198.19.{}.{}/32", i / 250, i % 250 + 1),
                1000 + (i % 100) as u16,
            )
        })
        .collect();
    r.push(("198.18.0.10/32".into(), 9));
    r
}

/// Part 2: pps from VM 1 to VM 2 of one host through 1,000 rules, alioth and iptables.
fn pps() -> Result<()> {
    let frame = frames::udp(
        [2, 0, 0xc6, 0x12, 0, 0x0a],
        [2, 0, 0xc6, 0x12, 0, 0x0b],
        [198, 18, 0, 10],
        [198, 18, 0, 11],
        64,
        40000,
        9,
        &[0; 18],
    );
    let linux_last = linux_pps(&frame, false)?;
    let linux_first = linux_pps(&frame, true)?;
    let alioth = alioth_pps(&frame)?;
    println!();
    println!("2. pps, 60-byte UDP from VM 1 to VM 2 on one host, VM 2 behind {RULES} ingress rules");
    println!(
        "   generator: {} in VM 1; sink: TC drop on VM 2's eth0 (counted received by its veth); best of {RUNS} runs of {BURST}",
        alioth.1.name()
    );
    println!("{:<58} {:>12}", "system", "Mpps");
    println!(
        "{:<58} {:>12.3}",
        "Linux bridge + iptables (iptables_hybrid), rule last",
        linux_last / 1e6
    );
    println!(
        "{:<58} {:>12.3}",
        "Linux bridge + iptables (iptables_hybrid), rule first",
        linux_first / 1e6
    );
    println!("{:<58} {:>12.3}", "alioth", alioth.0 / 1e6);
    println!(
        "alioth / iptables: {:.2}x (rule last), {:.2}x (rule first); target >= 5x",
        alioth.0 / linux_last.max(1.0),
        alioth.0 / linux_first.max(1.0)
    );
    Ok(())
}

/// The received rate of the best of `RUNS` bursts from `src` to `dst`'s sink.
fn best_of(src: &Netns, dst: &Netns, frame: &[u8]) -> Result<(f64, Generator)> {
    let mut best = (0.0, Generator::default());
    for _ in 0..RUNS {
        let before = rx_frames(dst)?;
        let (took, generator) = generate(src, frame.to_vec(), BURST)?;
        std::thread::sleep(Duration::from_millis(200));
        let got = rx_frames(dst)? - before;
        let pps = got as f64 / took.as_secs_f64();
        if pps > best.0 {
            best = (pps, generator);
        }
    }
    ensure!(best.0 > 0.0, "the receiving VM's sink counted no frame");
    Ok(best)
}

fn linux_pps(frame: &[u8], rule_first: bool) -> Result<f64> {
    let host = Netns::new("alnf")?;
    host.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
    host.exec(&["ip", "link", "set", "br0", "up"])?;
    let vm1 = Vm::new(&host, "tapvm1", "02:00:c6:12:00:0a", "198.18.0.10/24")?;
    let mut vm2 = Vm::new(&host, "tapvm2", "02:00:c6:12:00:0b", "198.18.0.11/24")?;
    for tap in ["tapvm1", "tapvm2"] {
        host.exec(&["ip", "link", "set", tap, "master", "br0"])?;
    }
    host.exec(&[
        "bridge",
        "fdb",
        "add",
        "02:00:c6:12:00:0b",
        "dev",
        "tapvm2",
        "master",
        "static",
    ])?;
    host.exec(&["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"])?;
    let mut rules = pps_rules();
    if rule_first {
        rules.rotate_right(1);
    }
    // Neutron's layout: FORWARD sends what a port receives to its chain; ESTABLISHED first.
    let mut text = String::from("*filter\n:FORWARD ACCEPT [0:0]\n:neutron-i-vm2 - [0:0]\n");
    text += "-A FORWARD -m physdev --physdev-out tapvm2 --physdev-is-bridged -j neutron-i-vm2\n";
    text += "-A neutron-i-vm2 -m state --state RELATED,ESTABLISHED -j RETURN\n";
    for (prefix, port) in &rules {
        text += &format!("-A neutron-i-vm2 -s {prefix} -p udp -m udp --dport {port} -j RETURN\n");
    }
    text += "-A neutron-i-vm2 -m state --state INVALID -j DROP\n-A neutron-i-vm2 -j DROP\nCOMMIT\n";
    let scratch = Scratch::new("alnf")?;
    let path = scratch.path("rules");
    std::fs::write(&path, text)?;
    host.exec(&["sh", "-c", &format!("iptables-restore < {path}")])?;
    let listed = host.exec(&["iptables", "-S", "neutron-i-vm2"])?;
    ensure!(
        listed.lines().count() >= RULES,
        "iptables has {} rules",
        listed.lines().count()
    );
    vm2.sink()?;
    Ok(best_of(&vm1.ns, &vm2.ns, frame)?.0)
}

fn alioth_pps(frame: &[u8]) -> Result<(f64, Generator)> {
    let mut t = topology(&[])?;
    let (code, _) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0, "{}", t.agent.log_text());
    let rules: Vec<serde_json::Value> = pps_rules()
        .iter()
        .enumerate()
        .map(|(i, (prefix, port))| {
            json!({"id": format!("r{i}"), "direction": "INGRESS", "ethertype": "IPV4", "protocol": "UDP",
                   "portRangeMin": port, "portRangeMax": port, "remoteIpPrefix": prefix})
        })
        .collect();
    let msg = json!({
        "formatVersion": 101,
        "securityGroupStates": [{"operationType": "CREATE", "configuration": {
            "id": "bench", "revisionNumber": 1, "securityGroupRules": rules}}],
        "portStates": [{"operationType": "UPDATE", "configuration": {
            "id": "2a2b0d1c-4c1e-4b4f-8a4e-9b1f2e3d4c5b", "revisionNumber": 2, "updateType": "FULL",
            "vpcId": "9192a4d4-ffff-4ece-b3f0-8d36e3d88001", "macAddress": "02:00:c6:12:00:0b",
            "fixedIps": [{"subnetId": "a87e0f87-a2d9-44ef-9194-9a62f178594e", "ipAddress": "198.18.0.11"}],
            "securityGroupIds": [{"id": "bench"}]}}],
    });
    let scratch = Scratch::new("alsgb")?;
    let path = scratch.path("groups.json");
    std::fs::write(&path, serde_json::to_vec(&msg)?)?;
    let (code, statuses) = apply(&t.agent, &path)?;
    ensure!(code == 0, "{statuses:?}\n{}", t.agent.log_text());
    t.vm2.sink()?;
    let best = best_of(&t.vm1.ns, &t.vm2.ns, frame)?;
    let refused = t.agent.stats()?["drop_sg_ingress"].as_u64().unwrap_or(0);
    ensure!(
        refused == 0,
        "{refused} frames refused: the rules do not allow the flood"
    );
    Ok(best)
}

/// A VPC, a /16 subnet, 1,000 ports in group "web" (100 ingress rules: 99 TCP ports from their own
/// prefixes, and everything from the members of "cli"), "web" and "cli" themselves.
fn message(ports: usize) -> GoalState {
    let rule = |i: usize| SecurityGroupRule {
        id: format!("web-{i}"),
        direction: Direction::Ingress as i32,
        protocol: Protocol::Tcp as i32,
        port_range_min: 1000 + i as u32,
        port_range_max: 1000 + i as u32,
        remote_ip_prefix: format!("198.19.{i}.0/24"),
        ..Default::default()
    };
    let mut web: Vec<SecurityGroupRule> = (0..99).map(rule).collect();
    web.push(SecurityGroupRule {
        id: "web-cli".into(),
        direction: Direction::Ingress as i32,
        remote_group_id: "cli".into(),
        ..Default::default()
    });
    let group = |id: &str, rules| alioth_tests::goalstate::security_group(OperationType::Create, id, rules);
    let mut gs = GoalState {
        format_version: 1,
        vpc_states: vec![alioth_tests::goalstate::vpc(
            OperationType::Create,
            "vpc",
            100,
            1,
            UpdateType::Full,
        )],
        subnet_states: vec![SubnetState {
            operation_type: OperationType::Create as i32,
            configuration: Some(SubnetConfiguration {
                id: "subnet".into(),
                vpc_id: "vpc".into(),
                cidr: "198.18.0.0/16".into(),
                revision_number: 1,
                ..Default::default()
            }),
        }],
        security_group_states: vec![group("web", web), group("cli", Vec::new())],
        ..Default::default()
    };
    for i in 0..ports {
        let ip = format!("198.18.{}.{}", 10 + i / 200, i % 200 + 10);
        let mut p = alioth_tests::goalstate::port(
            OperationType::Create,
            &format!("port-{i:05}"),
            "vpc",
            "subnet",
            &ip,
            &format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256),
        );
        if let Some(c) = p.configuration.as_mut() {
            c.security_group_ids = vec![port_configuration::SecurityGroupId { id: "web".into() }];
        }
        gs.port_states.push(p);
    }
    gs
}

/// Part 3: programming, as the agent does it for a message: validate, plan, compile each port's
/// policy (ports with the same groups share it), write the rule sets and zones.
fn programming() -> Result<()> {
    let (mut dp, _) = Dataplane::load(None, AttachMode::Auto)?;
    let naming = Naming::default();
    let mut state = State::default();
    let ports = 1000;
    let msg = message(ports);
    let t = Instant::now();
    let (outcomes, changes) = validate(&mut state, &msg, &naming);
    ensure!(
        outcomes.iter().all(|o| o.reason.is_none()),
        "refused: {:?}",
        outcomes.iter().find(|o| o.reason.is_some())
    );
    let programmed = program(&mut dp, &state, &changes)?;
    let first = t.elapsed();
    ensure!(programmed == ports, "{programmed} ports programmed");
    // Port 0 joins "cli": every port's rule naming "cli" now allows it.
    let mut join = message(1);
    join.vpc_states.clear();
    join.subnet_states.clear();
    join.security_group_states.clear();
    if let Some(c) = join.port_states[0].configuration.as_mut() {
        c.security_group_ids
            .push(port_configuration::SecurityGroupId { id: "cli".into() });
        c.update_type = UpdateType::Full as i32;
    }
    join.port_states[0].operation_type = OperationType::Update as i32;
    let t = Instant::now();
    let (outcomes, changes) = validate(&mut state, &join, &naming);
    ensure!(outcomes.iter().all(|o| o.reason.is_none()), "{outcomes:?}");
    let reprogrammed = program(&mut dp, &state, &changes)?;
    let joined = t.elapsed();
    let stats = dp.flow_stats()?;
    println!();
    println!("3. programming, in process (validation, plan, compile, map writes; no interfaces to attach)");
    println!(
        "{ports} ports x 100 rules in one message: {:.1} ms (target < 1000), {} rule sets written",
        first.as_secs_f64() * 1e3,
        stats.rule_sets
    );
    println!(
        "one port joins a group all {ports} ports' rules name: {:.2} ms for {reprogrammed} ports (target <= 10)",
        joined.as_secs_f64() * 1e3
    );
    Ok(())
}

/// Puts the policies of the ports `changes` reach in place, as the agent's applier does (without
/// attaching them, nor writing their other entries).
fn program(dp: &mut Dataplane, state: &State, changes: &[Change]) -> Result<usize> {
    let mut compiler = Compiler::default();
    let mut n = 0;
    for (_, op) in &plan(state, changes).program {
        if let PortOp::Program { port_id } | PortOp::Filter { port_id } = op {
            let port = state.ports().get(port_id.as_str()).context("port")?;
            let policy = compiler.policy(state, port, false);
            dp.set_policy(&port.iface, policy.as_ref())?;
            n += 1;
        }
    }
    dp.sweep_flows();
    Ok(n)
}

/// Part 4: `message(1000)` to the real agent, whose namespace has every port's interface.
fn end_to_end() -> Result<()> {
    let ports = 1000;
    let ns = Netns::new("alsg")?;
    let scratch = Scratch::new("alioth-sg-")?;
    // The agent's default names (`tap` and the port id's first 11 characters); the peers stay in
    // the namespace, as a VM's side of a tap would be elsewhere.
    let batch: String = (0..ports)
        .map(|i| format!("link add tapport-{i:05} type veth peer name p{i}\nlink set tapport-{i:05} up\n"))
        .collect();
    let batch_file = scratch.path("links");
    std::fs::write(&batch_file, batch)?;
    alioth_tests::netns::run(&["ip", "-n", &ns.name, "-b", &batch_file])?;
    let agent = Agent::start(&ns, &["--bpf-log-level", "off"])?;
    let file = scratch.path("message.json");
    std::fs::write(&file, serde_json::to_vec(&message(ports))?)?;
    let t = Instant::now();
    let out = agent.cli(&["apply", "-f", &file, "--json"])?;
    let wall = t.elapsed();
    ensure!(
        out.status.success(),
        "apply: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: GoalStateOperationReply = serde_json::from_slice(&out.stdout)?;
    let attached = alioth_tests::goalstate::statuses(&reply)
        .iter()
        .filter(|(id, st)| id.starts_with("port-") && *st == OperationStatus::Success)
        .count();
    ensure!(
        attached == ports,
        "{attached} of {ports} ports attached (SUCCESS) in the reply"
    );
    println!();
    println!("4. end to end: the real agent in a namespace with {ports} veth ports (the skb path, tcx), `alioth apply` over gRPC");
    println!(
        "{ports} ports x 100 rules in one message, every port attached: {:.0} ms by the agent, {:.0} ms for `alioth apply` (process, file, gRPC); the agent's programming is part 3, the rest the kernel's attaches",
        reply.message_total_operation_time as f64 / 1e3,
        wall.as_secs_f64() * 1e3
    );
    // Each new tcx link waits for an RCU grace period while it holds rtnl (kernel/bpf/tcx.c), so
    // attaching is serial and costs what a grace period costs on this machine.
    let expedited = std::fs::read_to_string("/sys/kernel/rcu_expedited").unwrap_or_default();
    println!(
        "   ({:.1} ms per interface; the kernel's tcx attach waits one RCU grace period under rtnl; /sys/kernel/rcu_expedited = {})",
        reply.message_total_operation_time as f64 / 1e3 / ports as f64,
        expedited.trim()
    );
    // A restart takes the pinned links over (a link update replaces the program in place: no
    // grace period) and the record's ports with them.
    let left = agent.kill()?;
    let t = Instant::now();
    let agent = Agent::start_with(&ns, left, &["--bpf-log-level", "off"])?;
    let ready = t.elapsed();
    let log = agent.log_text();
    let restored = log
        .lines()
        .find(|l| l.contains("restored the recorded goal state"))
        .context("no restore line in the agent's log")?;
    let field = |name: &str| -> Option<u64> {
        restored
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.parse().ok())
    };
    ensure!(
        field("ports=") == Some(ports as u64) && field("pending=") == Some(0),
        "the restart did not take every port back: {restored}"
    );
    println!(
        "a restart (SIGKILL, then a new agent on the pins): ready in {:.0} ms (object loaded and verified), the {ports} ports taken over in {} ms",
        ready.as_secs_f64() * 1e3,
        field("apply_ms=").unwrap_or(0)
    );
    Ok(())
}

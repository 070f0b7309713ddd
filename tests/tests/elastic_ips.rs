//! Elastic IPs with real guests: an "internet" namespace on the underlay's segment pings and opens
//! TCP to VMs by their elastic IPs, on two hosts; the VMs reach it from their elastic IPs (the
//! internet host has no route to the VPC's addresses, so an answer proves the translation); a VM
//! of another VPC with the same private address sees none of it; re-associating an elastic IP to a
//! port on the other host moves the traffic (gratuitous ARP) within a second.

use std::time::{Duration, Instant};

use alioth_proto::schema::*;
use alioth_tests::agent::{metric, metrics, Agent};
use alioth_tests::goalstate::elastic_ip;
use alioth_tests::netns::Netns;
use alioth_tests::overlay::{Lab, VpcSpec, UPLINK};
use alioth_tests::routing::{gateway_ip, goal_state, router, routing, rule};
use alioth_tests::sockets::{round_trip, udp_refused, Peer};
use anyhow::{ensure, Context, Result};

/// On the underlay's segment (198.19.0.0/24, hosts at .1 and .2).
const INTERNET_HOST: &str = "198.19.0.200";
const EIP1: &str = "198.19.0.100";
const EIP2: &str = "198.19.0.101";

fn pings(ns: &Netns, ip: &str) -> Result<bool> {
    Ok(ns.exec_output(&["ping", "-c", "1", "-W", "1", ip])?.status.success())
}

/// Counter `name` of port `port` on host `i` (`alioth stats --port`).
fn port_counter(lab: &Lab, i: usize, port: &str, name: &str) -> Result<u64> {
    let agent = lab.hosts[i].agent.as_ref().context("agent")?;
    let out = agent.cli(&["stats", "--json", "--port", port])?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(json[name].as_u64().unwrap_or(0))
}

#[test]
fn the_internet_reaches_vms_by_their_elastic_ips_and_they_reach_it_from_them() -> Result<()> {
    let a = VpcSpec::new(1, 1001, 1);
    // Another tenant, with the same addresses.
    let b = VpcSpec::new(2, 1002, 1);
    let mut lab = Lab::new(vec![a.clone(), b.clone()])?;
    let (a1, b1, a2, a3) = (a.vm(1, 10), b.vm(2, 10), a.vm(1, 11), a.vm(1, 12));
    // No elastic IP: out by SNAT once its subnet's router says so.
    let a4 = a.vm(1, 13);
    ensure!(a1.ip == b1.ip, "the same private address in both VPCs");
    lab.add_host(vec![a1.clone(), b1.clone()])?;
    lab.add_host(vec![a2.clone(), a3.clone(), a4.clone()])?;
    let internet = Netns::new("alinet")?;
    lab.underlay.ns.veth("inet", &internet, "eth0")?;
    lab.underlay.ns.exec(&["ip", "link", "set", "inet", "master", "br0"])?;
    internet.exec(&["ip", "addr", "add", &format!("{INTERNET_HOST}/24"), "dev", "eth0"])?;
    lab.start_agents(&[])?;
    for i in 0..2 {
        lab.push(i, &goal_state(&lab, i))?;
    }
    lab.wait_resolved()?;
    for spec in [&a1, &b1, &a2, &a3, &a4] {
        let vm = &lab.vm(&spec.port_id).ns;
        vm.exec(&["ip", "route", "add", "default", "via", &gateway_ip(1)])?;
    }
    let ns = |spec: &alioth_tests::overlay::VmSpec| &lab.vm(&spec.port_id).ns;
    // Before any elastic IP: nothing answers for them, and no VM gets out.
    ensure!(!pings(&internet, EIP1)?, "{EIP1} before it exists");
    ensure!(
        !pings(ns(&a1), INTERNET_HOST)?,
        "a1 -> the internet without an elastic IP"
    );

    lab.push(0, &elastic_ip(OperationType::Create, "eip-1", EIP1, &a1.port_id, 1))?;
    lab.push(1, &elastic_ip(OperationType::Create, "eip-2", EIP2, &a2.port_id, 1))?;
    // Inbound, to a VM on either host: ping and TCP.
    for (eip, vm) in [(EIP1, &a1), (EIP2, &a2)] {
        ensure!(pings(&internet, eip)?, "the internet -> {eip}");
        let _server = Peer::serve(ns(vm), false, 8080, 30)?;
        ensure!(
            round_trip(&internet, false, eip, 8080)?,
            "TCP the internet -> {eip}:8080"
        );
    }
    // Outbound: the internet host answers only what comes from its own segment.
    for vm in [&a1, &a2] {
        ensure!(pings(ns(vm), INTERNET_HOST)?, "{} -> the internet", vm.ip);
    }
    let _server = Peer::serve(&internet, false, 8081, 30)?;
    ensure!(
        round_trip(ns(&a1), false, INTERNET_HOST, 8081)?,
        "TCP a1 -> the internet"
    );
    // The host does not forward, yet translated frames found their next hop by the program's
    // own lookup, from the agent's `alioth-fib` with forwarding on (an IFB on a kernel without
    // dummies): the kernel resolved only the first frames' (before the internet host's MAC was
    // known).
    let host = &lab.hosts[0].ns;
    let forwarding = |knob: &str| host.exec(&["cat", &format!("/proc/sys/net/ipv4/{knob}")]);
    ensure!(forwarding("ip_forward")?.trim() == "0", "the host forwards");
    ensure!(
        forwarding("conf/alioth-fib/forwarding")?.trim() == "1",
        "alioth-fib forwards"
    );
    let (out, resolved) = (lab.counter(0, "nat_out")?, lab.counter(0, "nat_out_resolve")?);
    ensure!(
        out >= 10 && resolved <= 3,
        "the kernel resolved the next hop of {resolved} of {out} frames out"
    );
    // The other tenant's VM with the same address has no elastic IP: it gets nothing in and
    // nothing out.
    let before = lab.counter(0, "drop_no_route")?;
    ensure!(!pings(ns(&b1), INTERNET_HOST)?, "b1 -> the internet");
    ensure!(lab.counter(0, "drop_no_route")? > before, "counted as drop_no_route");
    ensure!(port_counter(&lab, 0, &a1.port_id, "nat_in")? > 0, "a1's nat_in");
    ensure!(port_counter(&lab, 0, &b1.port_id, "nat_in")? == 0, "b1's nat_in");
    ensure!(port_counter(&lab, 0, &a1.port_id, "nat_out")? > 0, "a1's nat_out");
    // ARP for an elastic IP is answered by its host's uplink (and only there: the other host's
    // answer would be a second reply), from the uplink's MAC.
    let before = lab.counter(0, "arp_elastic_ip")?;
    let out = internet.exec(&["arping", "-c", "1", "-w", "2", "-I", "eth0", EIP1])?;
    ensure!(
        out.contains("1 packets received") && out.contains("(0 extra)"),
        "arping {EIP1}: {out}"
    );
    ensure!(lab.counter(0, "arp_elastic_ip")? == before + 1, "answered by host 1");
    // SNAT: a4 has no elastic IP; once its subnet's router sends 0.0.0.0/0 out of the VPC (a rule
    // with no next hop), it reaches the internet from host 2's own address and a port of the host's.
    ensure!(
        !pings(ns(&a4), INTERNET_HOST)?,
        "a4 -> the internet without a route out"
    );
    let out = rule("default", "0.0.0.0/0", "", 0);
    lab.push(
        1,
        &routing(
            vec![router(OperationType::Create, vec![(&a.subnet, vec![out])])],
            vec![],
        ),
    )?;
    ensure!(pings(ns(&a4), INTERNET_HOST)?, "a4 -> the internet by SNAT");
    ensure!(
        round_trip(ns(&a4), false, INTERNET_HOST, 8081)?,
        "TCP a4 -> the internet by SNAT"
    );
    ensure!(lab.counter(1, "snat_new")? >= 2, "SNAT flows claimed ports on host 2");
    // The internet host's port unreachable, to host 2's address about the datagram it sent,
    // reaches a4's socket.
    ensure!(
        udp_refused(ns(&a4), INTERNET_HOST, 9999)?,
        "a4 got no ICMP port unreachable back through SNAT"
    );
    ensure!(!pings(ns(&b1), INTERNET_HOST)?, "b1's VPC has no route out");

    // What the host shows: the listing and the metrics.
    let agent = lab.hosts[0].agent.as_ref().context("agent")?;
    let out = agent.cli(&["elastic-ips", "--json"])?;
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).context("elastic-ips --json")?;
    ensure!(
        listed[0]["ip"] == EIP1 && listed[0]["port"] == a1.port_id.as_str() && listed[0]["translated"] == true,
        "{listed}"
    );
    let text = metrics(&lab.hosts[0].ns)?;
    ensure!(metric(&text, "alioth_elastic_ips_translated") == Some(1), "{text}");
    ensure!(
        metric(&text, "alioth_snat_flows") == Some(0),
        "no SNAT on host 1: {text}"
    );
    // a4's ping, TCP connection and datagram: three flows (LRU: held until the table needs room).
    let text = metrics(&lab.hosts[1].ns)?;
    ensure!(
        metric(&text, "alioth_snat_flows") == Some(3),
        "SNAT flows on host 2: {text}"
    );
    // Which port each of the host's ports carries.
    let agent2 = lab.hosts[1].agent.as_ref().context("agent")?;
    let out = agent2.cli(&["snat", "--json"])?;
    let flows: serde_json::Value = serde_json::from_slice(&out.stdout).context("snat --json")?;
    let flows = flows.as_array().context("a list")?;
    let from_a4 = |f: &serde_json::Value| {
        f["port"] == a4.port_id.as_str()
            && f["private"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("{}:", a4.ip)))
            && f["host_port"].as_u64().is_some_and(|p| p >= 61000)
    };
    let to = |proto: &str, port: u16| {
        flows
            .iter()
            .any(|f| f["proto"] == proto && f["remote"] == format!("{INTERNET_HOST}:{port}"))
    };
    ensure!(
        flows.len() == 3 && flows.iter().all(from_a4) && to("tcp", 8081) && to("udp", 9999),
        "{flows:?}"
    );
    // `alioth trace` follows the frame onto the skb path and through the NAT program, and the
    // kernel agrees.
    for (vm, reason) in [(&a1, "nat_out"), (&b1, "drop_no_route")] {
        let out = agent.cli(&["trace", "--port", &vm.port_id, "--dst", INTERNET_HOST, "--json"])?;
        let traced: serde_json::Value = serde_json::from_slice(&out.stdout).context("trace --json")?;
        ensure!(traced["agree"] == true && traced["reason"] == reason, "{traced}");
    }

    // Re-association to a port on host 2 (the control plane deletes it on host 1 and creates it
    // there): the gratuitous ARP of host 2 moves the internet host's traffic at once. (Linux
    // takes an ARP update at most once a second per neighbour: the last was longer ago.)
    std::thread::sleep(Duration::from_millis(1100));
    lab.push(0, &elastic_ip(OperationType::Delete, "eip-1", EIP1, &a1.port_id, 2))?;
    lab.push(1, &elastic_ip(OperationType::Create, "eip-1", EIP1, &a3.port_id, 2))?;
    let moved = Instant::now();
    let answered = loop {
        let out = internet.exec_output(&["ping", "-c", "1", "-W", "0.1", EIP1])?;
        if out.status.success() || moved.elapsed() > Duration::from_secs(5) {
            break out.status.success();
        }
    };
    let took = moved.elapsed();
    ensure!(
        answered && took < Duration::from_secs(1),
        "{EIP1} answered again after {took:?}"
    );
    ensure!(port_counter(&lab, 1, &a3.port_id, "nat_in")? > 0, "a3 has {EIP1} now");
    let up_mac = lab.hosts[1]
        .ns
        .exec(&["cat", &format!("/sys/class/net/{UPLINK}/address")])?;
    let neigh = internet.exec(&["ip", "neigh", "show", EIP1])?;
    ensure!(neigh.contains(up_mac.trim()), "{neigh} (host 2's uplink is {up_mac})");
    ensure!(pings(ns(&a3), INTERNET_HOST)?, "a3 -> the internet from {EIP1}");
    ensure!(!pings(ns(&a1), INTERNET_HOST)?, "a1 -> the internet without it");
    // An agent restart loses no ping to an elastic IP: the pinned maps translate meanwhile.
    let steady = internet.steady_pings(EIP1)?;
    let left = lab.hosts[1].agent.take().context("agent")?.kill()?;
    lab.hosts[1].agent = Some(Agent::start_with(&lab.hosts[1].ns, left, &["--uplink", UPLINK])?);
    steady
        .all_answered()
        .context("pings to an elastic IP across a restart")?;
    Ok(())
}

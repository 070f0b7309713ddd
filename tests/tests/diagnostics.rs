//! What an operator debugs a host with: each port's own counters (`alioth stats --port`, and
//! `/metrics` by port and VPC).

use std::collections::BTreeMap;

use alioth_tests::agent::Agent;
use alioth_tests::demo::{apply, example, topology, VM1_TAP};
use alioth_tests::netns::Netns;
use anyhow::{ensure, Context, Result};

const VM1: &str = "f37810eb-7f83-45fa-a4d4-1b31e75399df";
const VM2: &str = "2a2b0d1c-4c1e-4b4f-8a4e-9b1f2e3d4c5b";
const VPC: &str = "9192a4d4-ffff-4ece-b3f0-8d36e3d88001";

/// Counters only the host has: frames from interfaces that are no port, and the uplink's own.
const HOST_ONLY: [&str; 3] = ["pass", "drop_unknown_port", "uplink_pass"];

fn counters(agent: &Agent, port: Option<&str>) -> Result<BTreeMap<String, u64>> {
    let mut args = vec!["stats", "--json"];
    if let Some(p) = port {
        args.extend(["--port", p]);
    }
    let out = agent.cli(&args)?;
    ensure!(
        out.status.success(),
        "alioth stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    json.into_iter()
        .map(|(k, v)| Ok((k.clone(), v.as_u64().with_context(|| format!("{k}: {v}"))?)))
        .collect()
}

/// Ping, ARP, DHCP, forwarding and a spoofed source from two VMs: every frame a port sent is on
/// its own counters, and the ports' counters add up to the host's (read between two readings of
/// the host's, as a VM may send a frame of its own meanwhile).
#[test]
fn per_port_counters_add_up_to_the_hosts() -> Result<()> {
    let t = topology(&[])?;
    let (code, statuses) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0, "{statuses:?}");
    let vm1 = &t.vm1.ns;
    vm1.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.18.0.1"])?;
    vm1.exec(&["ping", "-c", "4", "-i", "0.2", "-W", "2", "198.18.0.11"])?;
    vm1.exec(&["arping", "-c", "2", "-w", "5", "-I", "eth0", "198.18.0.11"])?;
    // A source address the port does not own: dropped, and counted on vm1.
    vm1.exec(&["ip", "addr", "add", "198.18.0.77/32", "dev", "eth0"])?;
    let _ = vm1.exec_output(&[
        "ping",
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "1",
        "-I",
        "198.18.0.77",
        "198.18.0.11",
    ])?;
    let lease = alioth_tests::dhcp::udhcpc_once(&t.vm2.ns)?;
    ensure!(
        lease.status.success(),
        "udhcpc: {}",
        String::from_utf8_lossy(&lease.stderr)
    );

    let before = counters(&t.agent, None)?;
    let (one, two) = (counters(&t.agent, Some(VM1))?, counters(&t.agent, Some(VM2))?);
    let after = counters(&t.agent, None)?;
    ensure!(one["icmp_echo_reply"] == 3, "vm1: {one:?}");
    ensure!(
        one["forward_local"] >= 4 && two["forward_local"] >= 4,
        "{one:?} {two:?}"
    );
    ensure!(one["drop_spoofed_ip"] == 2, "vm1: {one:?}");
    ensure!(two["dhcp_ack"] == 1 && one["dhcp_ack"] == 0, "{one:?} {two:?}");
    for (name, host) in &before {
        let ports = one[name] + two[name];
        if HOST_ONLY.contains(&name.as_str()) {
            ensure!(ports == 0, "{name}: the ports have {ports}");
            continue;
        }
        ensure!(
            (*host..=after[name]).contains(&ports),
            "{name}: the ports have {ports}, the host {host}..{}",
            after[name]
        );
    }

    // /metrics has the same, labelled by port and VPC.
    let metrics = alioth_tests::agent::metrics(&t.host)?;
    let series = format!("alioth_port_packets_total{{port=\"{VM1}\",vpc=\"{VPC}\",action=\"icmp_echo_reply\"}} 3");
    ensure!(metrics.contains(&series), "no {series} in\n{metrics}");
    let series = format!("alioth_port_drops_total{{port=\"{VM1}\",vpc=\"{VPC}\",reason=\"spoofed_ip\"}} 2");
    ensure!(metrics.contains(&series), "no {series} in\n{metrics}");

    // A port that is not in the record, or not here, is an error that says so.
    let out = t.agent.cli(&["stats", "--port", "no-such-port"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && err.contains("no port no-such-port"), "{err}");
    Ok(())
}

/// `alioth monitor --port` while VM 1 pings from an address it does not own: the drop's reason,
/// port, MACs, addresses and protocol. One monitor at a time; `--sample` adds forwarded frames.
#[test]
fn monitor_shows_a_spoofed_frames_drop_with_its_reason_and_addresses() -> Result<()> {
    let t = topology(&[])?;
    let (code, statuses) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0, "{statuses:?}");
    let vm1 = &t.vm1.ns;
    t.vm2
        .ns
        .exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])?;
    ready_to_spoof(vm1)?;
    let event = while_running(&t.agent, &["--port", VM1, "--drops"], || spoof(vm1))?;
    for (field, want) in [
        ("kind", "drop"),
        ("reason", "spoofed_ip"),
        ("port", VM1),
        ("iface", VM1_TAP),
        ("src_mac", "02:00:c6:12:00:0a"),
        ("dst_mac", "02:00:c6:12:00:0b"),
        ("src_ip", "198.18.0.77"),
        ("dst_ip", "198.18.0.11"),
        ("protocol", "ICMP"),
    ] {
        ensure!(event[field] == want, "{field} is not {want}: {event}");
    }

    // Forwarded frames, sampled: VM 1's pings of VM 2 switched to its tap.
    let ping = || vm1.exec_output(&["ping", "-c", "1", "-W", "1", "198.18.0.11"]);
    let event = while_running(&t.agent, &["--port", VM1, "--sample", "1"], ping)?;
    ensure!(
        event["kind"] == "forwarded" && event["counter"] == "forward_local" && event["dst_ip"] != "",
        "{event}"
    );

    // A second monitor beside a first is refused, and says why.
    std::thread::scope(|s| -> Result<()> {
        let first = s.spawn(|| t.agent.cli(&["monitor", "--seconds", "3"]));
        std::thread::sleep(std::time::Duration::from_millis(1000));
        let second = t.agent.cli(&["monitor", "--seconds", "1"])?;
        let err = String::from_utf8_lossy(&second.stderr);
        ensure!(
            !second.status.success() && err.contains("another alioth monitor"),
            "{err}"
        );
        let first = first.join().expect("first monitor")?;
        ensure!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
        Ok(())
    })
}

/// Readies VM 1 to send from 198.18.0.77, an address its port does not own: no IPv6 chatter
/// (dropped as unsupported) before the frames the tests look for, and VM 2's MAC resolved from
/// the port's own address first, so that the spoofed frames are ICMP.
fn ready_to_spoof(vm1: &Netns) -> Result<()> {
    vm1.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])?;
    vm1.exec(&["ping", "-c", "1", "-W", "2", "198.18.0.11"])?;
    vm1.exec(&["ip", "addr", "add", "198.18.0.77/32", "dev", "eth0"])?;
    Ok(())
}

/// One ping from VM 1's spoofed address to VM 2 (see `ready_to_spoof`).
fn spoof(vm1: &Netns) -> Result<std::process::Output> {
    vm1.exec_output(&["ping", "-c", "1", "-W", "1", "-I", "198.18.0.77", "198.18.0.11"])
}

/// Runs `alioth monitor --json --count 1` with `args`, doing `traffic` until it ends: its event.
fn while_running(
    agent: &Agent,
    args: &[&str],
    traffic: impl Fn() -> Result<std::process::Output>,
) -> Result<serde_json::Value> {
    let mut full = vec!["monitor", "--json", "--count", "1", "--seconds", "20"];
    full.extend_from_slice(args);
    let out = std::thread::scope(|s| -> Result<std::process::Output> {
        let monitor = s.spawn(|| agent.cli(&full));
        while !monitor.is_finished() {
            traffic()?;
        }
        monitor.join().expect("monitor thread")
    })?;
    ensure!(
        out.status.success(),
        "monitor: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().next().context("no event within 20 s")?).context("an event in JSON")
}

/// `alioth echo` on one host: the gateway (answered in XDP), another VM (switched to its tap and
/// answered by it) and an address nobody has; the probing VM receives none of the replies.
#[test]
fn echo_reports_round_trips_and_where_the_path_breaks_on_one_host() -> Result<()> {
    let t = topology(&[])?;
    let (code, statuses) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0, "{statuses:?}");
    for vm in [&t.vm1.ns, &t.vm2.ns] {
        vm.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])?;
    }
    // What ICMP VM 1 receives meanwhile.
    let scratch = alioth_tests::netns::Scratch::new("echo")?;
    let seen = scratch.path("icmp.txt");
    let mut tcpdump = t
        .vm1
        .ns
        .command("tcpdump")
        .args(["-l", "-nn", "-i", "eth0", "icmp"])
        .stdout(std::fs::File::create(&seen)?)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    for (to, path) in [
        ("198.18.0.1", "answered by the gateway 198.18.0.1 in XDP"),
        ("198.18.0.11", "switched to the local port on tap2a2b0d1c-4c"),
    ] {
        let (code, reply) = echo(&t.agent, to, 3)?;
        println!("echo to {to}: {reply}");
        ensure!(code == 0, "echo to {to}: {reply}");
        ensure!(reply["path"] == path, "echo to {to}: {reply}");
        let probes = reply["probes"].as_array().context("probes")?;
        ensure!(probes.len() == 3, "{reply}");
        for p in probes {
            let rtt: u64 = p["rttNs"].as_str().context("rttNs")?.parse()?;
            ensure!(p["answered"] == true && rtt > 0 && rtt < 100_000_000, "{reply}");
        }
    }
    // VM 1's own ping, which it does see: the capture works.
    t.vm1.ns.exec(&["ping", "-c", "1", "-W", "2", "198.18.0.1"])?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    tcpdump.kill()?;
    tcpdump.wait()?;
    let seen = std::fs::read_to_string(&seen)?;
    let replies = seen.lines().filter(|l| l.contains("echo reply")).count();
    ensure!(replies == 1, "VM 1 received other replies than its own ping's: {seen}");
    let (code, reply) = echo(&t.agent, "198.18.0.99", 1)?;
    ensure!(code == 1, "{reply}");
    ensure!(
        reply["probes"][0]["broke"]
            .as_str()
            .is_some_and(|b| b.starts_with("no endpoint for 198.18.0.99 in VNI")),
        "{reply}"
    );
    let out = t.agent.cli(&["echo", "--from", "no-such-port", "--to", "198.18.0.1"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1) && err.contains("no port no-such-port"),
        "{err}"
    );
    Ok(())
}

/// Across two hosts: round trips over the overlay, then the exact break once the underlay has no
/// next hop to the other host, and once the neighbor is deleted.
#[test]
fn echo_across_two_hosts_reports_round_trips_then_where_the_path_breaks() -> Result<()> {
    use alioth_proto::schema::{GoalState, OperationType};
    use alioth_tests::overlay::{neighbor, two_hosts, VpcSpec};
    let (lab, one, two_ip) = two_hosts(|_| Ok(()))?;
    let agent = lab.hosts[0].agent.as_ref().context("agent")?;
    let remote = lab.hosts[1].ip.clone();
    let (code, reply) = echo_from(agent, &one, &two_ip, 3)?;
    println!("echo across hosts: {reply}");
    ensure!(code == 0, "{reply}");
    ensure!(
        reply["path"] == format!("encapsulated to host {remote} in VNI 1001"),
        "{reply}"
    );
    for p in reply["probes"].as_array().context("probes")? {
        let rtt: u64 = p["rttNs"].as_str().context("rttNs")?.parse()?;
        ensure!(p["answered"] == true && rtt > 0 && rtt < 100_000_000, "{reply}");
    }

    // No route to the other host: the agent drops its next hop, and the probe says so.
    let host = &lab.hosts[0].ns;
    host.exec(&["ip", "route", "add", "blackhole", &format!("{remote}/32")])?;
    let want = format!("no next hop for host {remote}");
    let broke = eventually_broken(agent, &one, &two_ip, &want)?;
    ensure!(broke, "never {want}");
    host.exec(&["ip", "route", "del", "blackhole", &format!("{remote}/32")])?;
    lab.wait_resolved()?;

    // The neighbor deleted: nothing in the VNI has that address any more.
    let spec = VpcSpec::new(1, 1001, 1).vm(1, 20);
    let delete = GoalState {
        format_version: 1,
        neighbor_states: vec![neighbor(OperationType::Delete, &spec, &remote)],
        ..Default::default()
    };
    lab.push(0, &delete)?;
    let (code, reply) = echo_from(agent, &one, &two_ip, 1)?;
    ensure!(code == 1, "{reply}");
    ensure!(
        reply["probes"][0]["broke"] == format!("no endpoint for {two_ip} in VNI 1001"),
        "{reply}"
    );
    Ok(())
}

/// Probes until one breaks with `want` (the agent follows the underlay within milliseconds).
fn eventually_broken(agent: &Agent, from: &str, to: &str, want: &str) -> Result<bool> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let (_, reply) = echo_from(agent, from, to, 1)?;
        if reply["probes"][0]["broke"] == want {
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(false)
}

/// `alioth echo --json` from VM 1: its exit status and reply.
fn echo(agent: &Agent, to: &str, count: u32) -> Result<(i32, serde_json::Value)> {
    echo_from(agent, VM1, to, count)
}

/// `alioth echo --json`: its exit status and reply.
fn echo_from(agent: &Agent, from: &str, to: &str, count: u32) -> Result<(i32, serde_json::Value)> {
    let count = count.to_string();
    let out = agent.cli(&[
        "echo",
        "--from",
        from,
        "--to",
        to,
        "--count",
        &count,
        "--timeout-ms",
        "500",
        "--json",
    ])?;
    let reply = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "echo: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((out.status.code().unwrap_or(-1), reply))
}

/// A monitor started before an agent restart that fills new maps follows the agent to them: the
/// spoofed frame dropped after the restart reaches it.
#[test]
fn a_monitor_follows_an_agent_restart_that_fills_new_maps() -> Result<()> {
    let t = topology(&[])?;
    let (code, statuses) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0, "{statuses:?}");
    let vm1 = &t.vm1.ns;
    ready_to_spoof(vm1)?;
    let (pin_dir, state_dir) = (t.agent.pin_dir.clone(), t.agent.state_dir.clone());
    let bin = alioth_tests::binary::alioth_bin()?;
    let bin = bin.to_str().context("binary path")?;
    let args = [
        "monitor",
        "--json",
        "--count",
        "1",
        "--seconds",
        "30",
        "--port",
        VM1,
        "--pin-dir",
        &pin_dir,
        "--state-dir",
        &state_dir,
    ];
    let mut monitor = t
        .host
        .command(bin)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let left = t.agent.kill()?;
    left.forget_record_mark()?;
    let agent = Agent::start_with(&t.host, left, &[])?;
    ensure!(agent.log_text().contains("maps=\"filled\""), "{}", agent.log_text());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while monitor.try_wait()?.is_none() && std::time::Instant::now() < deadline {
        spoof(vm1)?;
    }
    let _ = monitor.kill();
    let out = monitor.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("listening on the new ones"), "{err}");
    let event: serde_json::Value = serde_json::from_str(text.lines().next().context("no event")?)?;
    ensure!(
        event["reason"] == "spoofed_ip" && event["src_ip"] == "198.18.0.77",
        "{event}"
    );
    Ok(())
}

/// A client that goes away mid-call (Ctrl-C) leaves the data plane disarmed: the call stops at
/// its next probe and takes the marker out of the programs, as a call that ends does.
#[test]
fn an_echo_client_that_goes_away_leaves_the_data_plane_disarmed() -> Result<()> {
    let t = topology(&[])?;
    let (code, statuses) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0, "{statuses:?}");
    // VM 2 answers no ping: each probe waits out its timeout.
    t.vm2
        .ns
        .exec(&["sysctl", "-q", "-w", "net.ipv4.icmp_echo_ignore_all=1"])?;
    let agent = t.agent.pid();
    let bin = alioth_tests::binary::alioth_bin()?;
    let server = format!("http://{}", t.agent.listen);
    let echo = [
        "timeout",
        "1",
        bin.to_str().context("binary path")?,
        "echo",
        "--from",
        VM1,
        "--to",
        "198.18.0.11",
        "--count",
        "50",
        "--server",
        &server,
    ];
    let mut client = t.host.command(echo[0]).args(&echo[1..]).spawn()?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    ensure!(echo_marker(agent)? != 0, "the data plane is not armed during the call");
    client.wait()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while echo_marker(agent)? != 0 {
        ensure!(
            std::time::Instant::now() < deadline,
            "still armed 5 s after the client went"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

/// The value of the `ECHO` map of the agent with process id `pid`: among the maps its descriptors
/// hold (`/proc/PID/fdinfo`), the one bpftool names ECHO.
fn echo_marker(pid: u32) -> Result<u64> {
    let mut held = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let info = std::fs::read_to_string(fd?.path()).unwrap_or_default();
        if let Some(id) = info.lines().find_map(|l| l.strip_prefix("map_id:")) {
            held.push(id.trim().parse::<u64>()?);
        }
    }
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output()?;
    let maps: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    let id = maps
        .iter()
        .find(|m| m["name"] == "ECHO" && m["id"].as_u64().is_some_and(|id| held.contains(&id)))
        .and_then(|m| m["id"].as_u64())
        .context("the agent's ECHO map")?;
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "lookup", "id", &id.to_string(), "key", "0", "0", "0", "0"])
        .output()?;
    let entry: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    // With BTF the value is a number; without, its bytes (little-endian, as hex strings).
    if let Some(v) = entry["value"].as_u64() {
        return Ok(v);
    }
    let bytes = entry["value"].as_array().context("value")?;
    Ok(bytes.iter().rev().fold(0, |acc, b| {
        acc << 8 | u64::from_str_radix(b.as_str().unwrap_or("0").trim_start_matches("0x"), 16).unwrap_or(0)
    }))
}

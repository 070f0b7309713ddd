//! Security groups with real sockets and `ping` between two VMs of one host (examples/demo.yaml),
//! pushed as Alcor's DPM sends them: the ports again with their `securityGroupIds`, and each group
//! with every rule, the protocol and port range left unset where they mean "any".

use std::time::{Duration, Instant};

use alioth_tests::agent::Agent;
use alioth_tests::demo::{apply, counter, example, topology, Topology};
use alioth_tests::netns::Scratch;
use alioth_tests::sockets::{round_trip, Peer};
use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

const VPC: &str = "9192a4d4-ffff-4ece-b3f0-8d36e3d88001";
const SUBNET: &str = "a87e0f87-a2d9-44ef-9194-9a62f178594e";
const VM1: (&str, &str, &str) = (
    "f37810eb-7f83-45fa-a4d4-1b31e75399df",
    "02:00:c6:12:00:0a",
    "198.18.0.10",
);
const VM2: (&str, &str, &str) = (
    "2a2b0d1c-4c1e-4b4f-8a4e-9b1f2e3d4c5b",
    "02:00:c6:12:00:0b",
    "198.18.0.11",
);

/// A port as DPM sends it (`PortService.java`): FULL, with its groups.
fn port(vm: (&str, &str, &str), groups: &[&str]) -> Value {
    json!({
        "operationType": "UPDATE",
        "configuration": {
            "id": vm.0, "revisionNumber": 1, "updateType": "FULL", "vpcId": VPC, "macAddress": vm.1,
            "fixedIps": [{"subnetId": SUBNET, "ipAddress": vm.2}],
            "securityGroupIds": groups.iter().map(|g| json!({"id": g})).collect::<Vec<_>>(),
        }
    })
}

/// A rule as DPM builds it (`SecurityGroupService.java`): what it leaves unset is not in `rule`.
fn rule(id: &str, direction: &str, rule: Value) -> Value {
    let mut r = json!({"id": id, "direction": direction, "ethertype": "IPV4"});
    r.as_object_mut().unwrap().extend(rule.as_object().unwrap().clone());
    r
}

fn group(id: &str, revision: u32, rules: Vec<Value>) -> Value {
    json!({
        "operationType": "UPDATE",
        "configuration": {"id": id, "revisionNumber": revision, "name": id, "securityGroupRules": rules}
    })
}

/// "cli" (VM 1): anything out, nothing in. "srv" (VM 2): TCP 8080 in from the subnet, UDP 5353
/// from 198.18.0.10/32, ICMP echo in from members of "cli", anything out.
fn groups(revision: u32, with_8080: bool) -> Vec<Value> {
    let mut srv = vec![
        rule("srv-out", "EGRESS", json!({})),
        rule(
            "srv-udp",
            "INGRESS",
            json!({"protocol": "UDP", "portRangeMin": 5353, "portRangeMax": 5353, "remoteIpPrefix": "198.18.0.10/32"}),
        ),
        rule(
            "srv-ping",
            "INGRESS",
            json!({"protocol": "ICMP", "portRangeMin": 8, "remoteGroupId": "cli"}),
        ),
    ];
    if with_8080 {
        srv.push(rule(
            "srv-web",
            "INGRESS",
            json!({"protocol": "TCP", "portRangeMin": 8080, "portRangeMax": 8080, "remoteIpPrefix": "198.18.0.0/24"}),
        ));
    }
    vec![
        group("cli", 1, vec![rule("cli-out", "EGRESS", json!({}))]),
        group("srv", revision, srv),
    ]
}

fn push(agent: &Agent, dir: &Scratch, name: &str, msg: Value) -> Result<()> {
    let path = dir.path(name);
    std::fs::write(&path, serde_json::to_vec(&msg)?)?;
    let (code, statuses) = apply(agent, &path)?;
    ensure!(
        code == 0 && statuses.values().all(|s| s == "SUCCESS"),
        "{name}: exit {code}, {statuses:?}\n{}",
        agent.log_text()
    );
    Ok(())
}

/// The demo's host with VM 1 in "cli" and VM 2 in "srv".
fn filtered() -> Result<(Topology, Scratch)> {
    let t = topology(&[])?;
    let dir = Scratch::new("alsg")?;
    let (code, _) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0, "{}", t.agent.log_text());
    push(&t.agent, &dir, "groups.json", grouped())?;
    Ok((t, dir))
}

/// The groups, and the VMs' ports in them.
fn grouped() -> Value {
    json!({
        "formatVersion": 101,
        "securityGroupStates": groups(1, true),
        "portStates": [port(VM1, &["cli"]), port(VM2, &["srv"])],
    })
}

fn counters(agent: &Agent) -> Result<[u64; 3]> {
    Ok([
        counter(agent, "drop_sg_ingress")?,
        counter(agent, "drop_sg_egress")?,
        counter(agent, "drop_sg_invalid")?,
    ])
}

#[test]
fn rules_allow_what_they_name_replies_pass_and_a_removed_rule_cuts_its_flows() -> Result<()> {
    let t = topology(&[])?;
    let dir = Scratch::new("alsg")?;
    let (code, _) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0, "{}", t.agent.log_text());
    let (vm1, vm2) = (&t.vm1.ns, &t.vm2.ns);
    let _web = Peer::serve(vm2, false, 8080, 25)?;
    let _other = Peer::serve(vm2, false, 8081, 25)?;
    let _dns = Peer::serve(vm2, true, 5353, 25)?;
    let _back = Peer::serve(vm1, false, 9000, 25)?;
    ensure!(round_trip(vm1, false, VM2.2, 8081)?, "without groups everything passes");

    push(&t.agent, &dir, "groups.json", grouped())?;
    let before = counters(&t.agent)?;
    // Allowed, and the replies come back although neither VM's ingress rules name them.
    ensure!(round_trip(vm1, false, VM2.2, 8080)?, "TCP 8080 is allowed in");
    ensure!(round_trip(vm1, true, VM2.2, 5353)?, "UDP 5353 from VM 1 is allowed in");
    let ping = vm1.exec_output(&["ping", "-c", "2", "-i", "0.2", "-W", "1", VM2.2])?;
    ensure!(ping.status.success(), "VM 1 is in the remote group of VM 2's ICMP rule");
    // Not allowed: another port, and anything into VM 1.
    ensure!(
        !round_trip(vm1, false, VM2.2, 8081)?,
        "TCP 8081 is not allowed into VM 2"
    );
    ensure!(!round_trip(vm2, false, VM1.2, 9000)?, "nothing is allowed into VM 1");
    let ping = vm2.exec_output(&["ping", "-c", "1", "-W", "1", VM1.2])?;
    ensure!(!ping.status.success(), "ICMP into VM 1 is not allowed");
    let after = counters(&t.agent)?;
    ensure!(after[0] >= before[0] + 3, "drop_sg_ingress: {before:?} -> {after:?}");
    // `alioth port` shows the effective rules, the remote group as its members' addresses, and
    // the flows the port's zone tracks.
    let shown: Value = serde_json::from_slice(&t.agent.cli(&["port", VM2.0, "--json"])?.stdout)?;
    let remote_group = shown["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["id"] == "srv-ping"))
        .map(|r| r["remote"]["addresses"].clone());
    ensure!(
        shown["filtered"] == true
            && remote_group == Some(json!([VM1.2]))
            && shown["dataplane"]["rule_set"].as_u64().is_some_and(|p| p > 0)
            && shown["dataplane"]["zone"].as_u64().is_some_and(|z| z > 0)
            && shown["dataplane"]["flows"].as_array().is_some_and(|f| !f.is_empty()),
        "{shown}"
    );
    // /metrics: the flow table's fill, its bound, and the ports filtered.
    let metrics = alioth_tests::agent::metrics(&t.host)?;
    let value = |name: &str| alioth_tests::agent::metric(&metrics, name);
    ensure!(
        value("alioth_sg_flows").is_some_and(|n| n >= 3)
            && value("alioth_sg_filtered_ports") == Some(2)
            && value("alioth_sg_flows_evicted_total") == Some(0)
            && value("alioth_sg_flows_capacity").is_some(),
        "{metrics}"
    );
    let text = String::from_utf8(t.agent.cli(&["port", VM2.0])?.stdout)?;
    ensure!(text.contains("srv-web") && text.contains("tracked flows"), "{text}");
    // The gateway still answers a port with groups: ARP, ICMP to it and DHCP are no flows.
    let gw = vm2.exec_output(&["ping", "-c", "1", "-W", "1", "198.18.0.1"])?;
    ensure!(gw.status.success(), "the gateway answers");

    // A connection held open across the removal of the only rule that let it in is cut.
    let flag = dir.path("removed");
    let (_held, mut out) = Peer::hold(vm1, VM2.2, 8080, &flag)?;
    let msg = json!({"formatVersion": 101, "securityGroupStates": groups(2, false)});
    let pushed = Instant::now();
    push(&t.agent, &dir, "removed.json", msg)?;
    std::fs::write(&flag, "")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line)?;
    ensure!(line.trim() == "cut", "the established flow went on: {line:?}");
    ensure!(pushed.elapsed() < Duration::from_secs(5), "took {:?}", pushed.elapsed());
    ensure!(
        !round_trip(vm1, false, VM2.2, 8080)?,
        "TCP 8080 is not allowed any more"
    );
    ensure!(round_trip(vm1, true, VM2.2, 5353)?, "UDP 5353 still is");
    let status = t.agent.cli(&["stats", "--json"])?;
    ensure!(status.status.success());
    Ok(())
}

/// A stray ACK, as a scanner or a forgotten connection sends it, opens nothing and is counted.
#[test]
fn a_stray_ack_opens_nothing() -> Result<()> {
    let (t, _dir) = filtered()?;
    let before = counters(&t.agent)?;
    // A bare ACK from VM 1 to VM 2's port 8080, which a SYN would be allowed to.
    let script = "import socket, struct\n\
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)\n\
        h = struct.pack('!HHIIBBHHH', 40000, 8080, 1, 1, 5 << 4, 0x10, 1024, 0, 0)\n\
        s.sendto(h, ('198.18.0.11', 0))\n";
    t.vm1.ns.exec(&["/usr/bin/python3", "-c", script])?;
    std::thread::sleep(Duration::from_millis(200));
    let after = counters(&t.agent)?;
    ensure!(after[2] > before[2], "drop_sg_invalid: {before:?} -> {after:?}");
    Ok(())
}

/// Flows a filtered port tracks survive the agent's SIGKILL and restart, whether the next agent
/// takes the maps over or fills new ones (its flows are carried over into the new table).
#[test]
fn tracked_flows_survive_restarts_of_the_agent() -> Result<()> {
    let (t, dir) = filtered()?;
    let _web = Peer::serve(&t.vm2.ns, false, 8080, 40)?;
    let _other = Peer::serve(&t.vm2.ns, false, 8081, 40)?;
    let (taken, filled) = (dir.path("taken-over"), dir.path("filled"));
    let (_a, mut first) = Peer::hold(&t.vm1.ns, VM2.2, 8080, &taken)?;
    let (_b, mut second) = Peer::hold(&t.vm1.ns, VM2.2, 8080, &filled)?;
    let left = t.agent.kill()?;
    // As an agent of before jiffies left them: expiries in nanoseconds, which would never come.
    let held = expiries(&left.pin_dir, Some(1 << 50))?;
    ensure!(held >= 2, "{held} tracked flows before the restart");
    let agent = Agent::start_with(&t.host, left, &[])?;
    ensure!(agent.log_text().contains("maps=\"taken over\""), "{}", agent.log_text());
    let (hz, now) = {
        let hz = *alioth::dataplane::clock::hz()?;
        (hz, alioth::dataplane::clock::jiffies_now(hz)?)
    };
    let latest = now + 86_400 * hz;
    ensure!(
        expiries(&agent.pin_dir, None)? <= latest,
        "a flow of the older agent expires after its timeout: {}",
        agent.log_text()
    );
    std::fs::write(&taken, "")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut first, &mut line)?;
    ensure!(line.trim() == "ok", "after a restart that took the maps over: {line:?}");
    let left = agent.kill()?;
    left.forget_record_mark()?;
    let agent = Agent::start_with(&t.host, left, &[])?;
    ensure!(
        agent.log_text().contains("maps=\"filled\"") && agent.log_text().contains("carried over"),
        "{}",
        agent.log_text()
    );
    std::fs::write(&filled, "")?;
    line.clear();
    std::io::BufRead::read_line(&mut second, &mut line)?;
    ensure!(line.trim() == "ok", "after a restart that filled new maps: {line:?}");
    // The rules hold as before.
    ensure!(
        round_trip(&t.vm1.ns, false, VM2.2, 8080)?,
        "TCP 8080 after the restarts"
    );
    ensure!(
        !round_trip(&t.vm1.ns, false, VM2.2, 8081)?,
        "TCP 8081 after the restarts"
    );
    Ok(())
}

/// Sets every tracked flow's expiry in the pinned table to `set` if given; returns the number of
/// flows (with `set`) or the latest expiry (without).
fn expiries(pin_dir: &str, set: Option<u64>) -> Result<u64> {
    use alioth_common::conntrack::FlowKey;
    use alioth_common::firewall::{CtValue, SG_FLOWS};
    use aya::maps::{HashMap, Map, MapData};
    let data = MapData::from_pin(format!("{pin_dir}/{SG_FLOWS}"))?;
    let mut flows: HashMap<MapData, FlowKey, CtValue> = HashMap::try_from(Map::LruHashMap(data))?;
    let all: Vec<(FlowKey, CtValue)> = flows.iter().collect::<Result<_, _>>()?;
    match set {
        Some(expires) => {
            for (key, value) in &all {
                flows.insert(key, CtValue { expires, ..*value }, 0)?;
            }
            Ok(all.len() as u64)
        }
        None => Ok(all.iter().map(|(_, v)| v.expires).max().unwrap_or(0)),
    }
}

/// With `--ports-without-groups deny`, a port that names no group gets nothing but the data
/// plane's own answers (ARP, DHCP, ICMP to its gateway) until its groups allow more.
#[test]
fn ports_without_groups_can_be_denied_everything() -> Result<()> {
    let t = topology(&["--ports-without-groups", "deny"])?;
    let dir = Scratch::new("alsg")?;
    let (code, _) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0, "{}", t.agent.log_text());
    let _web = Peer::serve(&t.vm2.ns, false, 8080, 25)?;
    let ping = t.vm1.ns.exec_output(&["ping", "-c", "1", "-W", "1", VM2.2])?;
    ensure!(!ping.status.success(), "VM 1 reached VM 2 without groups");
    ensure!(!round_trip(&t.vm1.ns, false, VM2.2, 8080)?, "TCP without groups");
    let gw = t.vm1.ns.exec_output(&["ping", "-c", "1", "-W", "1", "198.18.0.1"])?;
    ensure!(gw.status.success(), "the gateway answers");
    let lease = alioth_tests::dhcp::udhcpc_once(&t.vm1.ns)?;
    ensure!(
        lease.status.success(),
        "DHCP: {}",
        String::from_utf8_lossy(&lease.stderr)
    );
    push(&t.agent, &dir, "groups.json", grouped())?;
    ensure!(
        round_trip(&t.vm1.ns, false, VM2.2, 8080)?,
        "TCP 8080 once the groups allow it"
    );
    Ok(())
}

/// An allowed address pair: VM 1 may send from it (anti-spoofing lets it out), and it is a member
/// of VM 1's groups (VM 2's rule for "cli" members lets it in); another address is still spoofed.
#[test]
fn allowed_address_pairs_pass_anti_spoofing_and_join_remote_groups() -> Result<()> {
    let t = topology(&[])?;
    let dir = Scratch::new("alsg")?;
    let (code, _) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0, "{}", t.agent.log_text());
    let mut vm1 = port(VM1, &["cli"]);
    vm1["configuration"]["allowAddressPairs"] = json!([{"ipAddress": "198.18.0.77"}]);
    // VM 2 takes UDP 7777 from members of "cli" only.
    let mut srv = groups(1, true);
    srv[1]["configuration"]["securityGroupRules"]
        .as_array_mut()
        .context("rules")?
        .push(rule(
            "srv-cli",
            "INGRESS",
            json!({"protocol": "UDP", "portRangeMin": 7777, "portRangeMax": 7777, "remoteGroupId": "cli"}),
        ));
    let msg = json!({"formatVersion": 101, "securityGroupStates": srv, "portStates": [vm1, port(VM2, &["srv"])]});
    push(&t.agent, &dir, "pairs.json", msg)?;
    for ip in ["198.18.0.77/32", "198.18.0.78/32"] {
        t.vm1.ns.exec(&["ip", "addr", "add", ip, "dev", "eth0"])?;
    }
    // VM 2 listens for one datagram for 3 s and says where it came from.
    let heard = |from: &str| -> Result<String> {
        let listen = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('', 7777))\n\
            s.settimeout(3)\ntry:\n    print('got', s.recvfrom(64)[1][0])\nexcept socket.timeout:\n    print('nothing')\n";
        let listener = t
            .vm2
            .ns
            .command("/usr/bin/python3")
            .args(["-c", listen])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(300));
        let send = format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('{from}', 0))\n\
             s.sendto(b'x', ('{}', 7777))\n",
            VM2.2
        );
        t.vm1.ns.exec(&["/usr/bin/python3", "-c", &send])?;
        Ok(String::from_utf8_lossy(&listener.wait_with_output()?.stdout)
            .trim()
            .to_string())
    };
    ensure!(
        heard("198.18.0.77")? == "got 198.18.0.77",
        "the pair's datagram did not arrive"
    );
    let spoofed = counter(&t.agent, "drop_spoofed_ip")?;
    ensure!(
        heard("198.18.0.78")? == "nothing",
        "a datagram from an address VM 1 has no pair for arrived"
    );
    ensure!(
        counter(&t.agent, "drop_spoofed_ip")? > spoofed,
        "not counted as spoofed"
    );
    // `alioth port` shows the pair among the members of "cli".
    let shown: Value = serde_json::from_slice(&t.agent.cli(&["port", VM2.0, "--json"])?.stdout)?;
    let members = shown["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["id"] == "srv-cli"))
        .map(|r| r["remote"]["addresses"].clone());
    ensure!(members == Some(json!([VM1.2, "198.18.0.77"])), "{shown}");
    // A pair with a MAC other than the port's is refused, with its reason.
    let mut other = port(VM1, &["cli"]);
    other["configuration"]["allowAddressPairs"] =
        json!([{"ipAddress": "198.18.0.79", "macAddress": "02:00:00:00:00:99"}]);
    let path = dir.path("other-mac.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({"formatVersion": 101, "portStates": [other]}))?,
    )?;
    let (_, statuses) = apply(&t.agent, &path)?;
    ensure!(
        statuses.get(VM1.0).map(String::as_str) == Some("INVALID_ARG"),
        "{statuses:?}"
    );
    Ok(())
}

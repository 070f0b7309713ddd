//! The whole chain in network namespaces: goal state over gRPC -> agent -> BPF maps -> the XDP port
//! program answers real `arping` and `ping` in a VM namespace; no namespace holds the gateway IP.

use alioth_tests::agent::Agent;
use alioth_tests::demo::{apply, counter, example, topology, VM1_TAP, VM2_TAP};
use alioth_tests::netns::{Netns, Vm};
use anyhow::{ensure, Context, Result};

/// Veth ports get the skb path alone (native XDP on a veth would turn the guest's TSO off).
#[test]
fn arping_and_ping_to_the_gateway_are_answered_on_a_veths_skb_path() -> Result<()> {
    gateway_answers(&["--bpf-log-level", "debug"], "tc")
}

/// The same in native XDP, as on a tap or a NIC (`--xdp-mode driver` puts it on veths too).
#[test]
fn arping_and_ping_to_the_gateway_are_answered_in_native_xdp() -> Result<()> {
    gateway_answers(&["--xdp-mode", "driver"], "native")
}

/// ARP and ICMP for the gateway and the VPC's ports answered by the data plane, with the agent
/// started with `args`, whose ports then run in `mode` (`alioth status`); what `status`, `state`
/// and `ports` show.
fn gateway_answers(args: &[&str], mode: &str) -> Result<()> {
    let t = topology(args)?;
    let (code, statuses) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(
        code == 0,
        "apply exit code {code}: {statuses:?}\n{}",
        t.agent.log_text()
    );
    ensure!(
        statuses.len() == 4 && statuses.values().all(|s| s == "SUCCESS"),
        "{statuses:?}"
    );

    // Nobody holds the gateway address: only the data plane can answer.
    for ns in [&t.host, &t.vm1.ns, &t.vm2.ns] {
        ensure!(
            !ns.exec(&["ip", "-4", "addr"])?.contains("198.18.0.1/"),
            "{} has the gateway IP",
            ns.name
        );
    }

    let arp = t
        .vm1
        .ns
        .exec(&["arping", "-c", "3", "-w", "10", "-I", "eth0", "198.18.0.1"])?;
    ensure!(arp.to_lowercase().contains("0a:58:c6:12:00:01"), "arping output: {arp}");
    let ping = t
        .vm1
        .ns
        .exec(&["ping", "-c", "5", "-i", "0.2", "-W", "2", "198.18.0.1"])?;
    ensure!(ping.contains("5 received"), "ping output: {ping}");
    // Another port of the VPC is answered for too, with its own MAC.
    let arp = t
        .vm1
        .ns
        .exec(&["arping", "-c", "2", "-w", "10", "-I", "eth0", "198.18.0.11"])?;
    ensure!(arp.to_lowercase().contains("02:00:c6:12:00:0b"), "arping output: {arp}");
    // From the second VM as well.
    let ping = t
        .vm2
        .ns
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.18.0.1"])?;
    ensure!(ping.contains("3 received"), "ping output: {ping}");
    // An unknown address gets no answer.
    let silent = t
        .vm1
        .ns
        .exec_output(&["arping", "-c", "2", "-w", "3", "-I", "eth0", "198.18.0.99"])?;
    ensure!(!silent.status.success(), "arping for an unknown IP must go unanswered");

    ensure!(counter(&t.agent, "arp_reply")? >= 5, "stats: {}", t.agent.stats()?);
    ensure!(
        counter(&t.agent, "icmp_echo_reply")? >= 8,
        "stats: {}",
        t.agent.stats()?
    );
    ensure!(
        counter(&t.agent, "drop_arp_unknown_target")? >= 2,
        "stats: {}",
        t.agent.stats()?
    );
    // Which path the frames took: on the skb path alone each is counted on arrival (`skb_only`)
    // and none was left to it by XDP (`skb_path`); with XDP, none arrived on the skb path alone.
    let (skb_only, skb_path) = (counter(&t.agent, "skb_only")?, counter(&t.agent, "skb_path")?);
    let answered = counter(&t.agent, "arp_reply")? + counter(&t.agent, "icmp_echo_reply")?;
    let on_its_path = match mode {
        "tc" => skb_only >= answered + 2 && skb_path == 0,
        _ => skb_only == 0,
    };
    ensure!(on_its_path, "{mode}: stats: {}", t.agent.stats()?);

    let status = t.agent.cli(&["status", "--json"])?;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    let attached = status["attached"].to_string();
    ensure!(
        attached.contains(VM1_TAP) && attached.contains(VM2_TAP),
        "status: {status}"
    );
    ensure!(status["maps"]["ENDPOINTS"]["entries"] == 3, "status: {status}");
    ensure!(
        status["version"].is_string()
            && status["record"]["resources"] == 4
            && status["record"]["pending_ports"] == serde_json::json!([])
            && status["maps"]["NEXTHOPS"]["entries"] == 0
            && status["uplink"].is_null(),
        "status: {status}"
    );
    // The running agent and its uptime, from its state directory's lock; each port's XDP mode
    // from the kernel.
    ensure!(
        status["agent"]["pid"].as_u64().is_some_and(|p| p > 0) && status["agent"]["uptime_s"].as_u64().is_some(),
        "status: {status}"
    );
    let modes = alioth_tests::agent::hooks(&status);
    ensure!(modes == [mode, mode], "status: {status}");
    // The VMs' ends of the veths are in their own namespaces: the skb path puts frames there.
    let into_peer = status["xdp"]
        .as_array()
        .is_some_and(|a| a.iter().all(|x| x["into_peer"] == true));
    ensure!(into_peer, "status: {status}");
    let text = String::from_utf8(t.agent.cli(&["status"])?.stdout)?;
    ensure!(
        text.contains(&format!("{VM1_TAP} ({mode}, into its peer)")) && text.contains("agent:      pid "),
        "{text}"
    );
    // `state` lists the record offline; `ports` names each interface's port and VPC from it.
    let state: serde_json::Value = serde_json::from_slice(&t.agent.cli(&["state", "--json"])?.stdout)?;
    ensure!(state.as_array().map(Vec::len) == Some(4), "state: {state}");
    let table = String::from_utf8(t.agent.cli(&["state"])?.stdout)?;
    ensure!(
        table.contains("f37810eb-7f83-45fa-a4d4-1b31e75399df") && table.contains("iface tapf37810eb-7f"),
        "{table}"
    );
    let ports: serde_json::Value = serde_json::from_slice(&t.agent.cli(&["ports", "--json"])?.stdout)?;
    let vm1 = ports
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["iface"] == VM1_TAP))
        .with_context(|| format!("{ports}"))?;
    ensure!(
        vm1["port_id"] == "f37810eb-7f83-45fa-a4d4-1b31e75399df" && !vm1["vpc_id"].as_str().unwrap_or("").is_empty(),
        "{ports}"
    );

    // A clean stop leaves the data plane running; --reset removes it.
    let (stopped, left) = t.agent.stop()?;
    ensure!(stopped.success(), "agent exit: {stopped}");
    let ping = t
        .vm1
        .ns
        .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "198.18.0.1"])?;
    ensure!(
        ping.contains("2 received"),
        "the data plane forwards without its agent: {ping}"
    );
    let (pin_dir, state_dir) = (left.pin_dir.clone(), left.state_dir.clone());
    left.reset()?;
    ensure!(!std::path::Path::new(&pin_dir).exists(), "pins left in {pin_dir}");
    ensure!(
        !std::path::Path::new(&state_dir).join("record.sqlite").exists(),
        "state left in {state_dir}"
    );
    let after = t.vm1.ns.exec_output(&["ping", "-c", "1", "-W", "1", "198.18.0.1"])?;
    ensure!(!after.status.success(), "nothing answers after --reset");
    drop((t.vm1, t.vm2, t.host));
    Ok(())
}

#[test]
fn invalid_resources_are_refused_one_by_one_and_nothing_programmed_is_lost() -> Result<()> {
    let t = topology(&[])?;
    let (code, _) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0);
    // The valid port of invalid.yaml, so that it is fully applied (not waiting for its interface).
    let good = Vm::new(&t.host, "tapgood-port-0", "02:00:c6:13:01:0a", "198.19.1.10/24")?;
    let (code, statuses) = apply(&t.agent, &example("invalid.yaml"))?;
    ensure!(code == 3, "apply exits 3 when some resources were refused, got {code}");
    let invalid: Vec<&str> = statuses
        .iter()
        .filter(|(_, s)| *s != "SUCCESS")
        .map(|(id, _)| id.as_str())
        .collect();
    ensure!(
        invalid == ["bad-cidr-subnet", "bad-ip-port-001", "bad-mac-port-01"],
        "{statuses:?}"
    );
    ensure!(
        statuses.iter().filter(|(_, s)| *s == "INVALID_ARG").count() == 3,
        "{statuses:?}"
    );
    ensure!(statuses.len() == 6, "{statuses:?}");
    ensure!(
        statuses.values().filter(|s| *s == "SUCCESS").count() == 3,
        "{statuses:?}"
    );
    let ping = good
        .ns
        .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "198.19.1.1"])?;
    ensure!(
        ping.contains("2 received"),
        "the valid port of the mixed message works: {ping}"
    );
    let log = t.agent.log_text();
    ensure!(
        log.contains("must have 6 octets") && log.contains("is not a host address of subnet good-subnet"),
        "{log}"
    );
    // The reasons reach the client too (alioth's `reason` field): in the table and in JSON.
    let table = t.agent.cli(&["apply", "-f", &example("invalid.yaml")])?;
    let table = String::from_utf8_lossy(&table.stdout);
    ensure!(table.lines().next().is_some_and(|h| h.ends_with("REASON")), "{table}");
    let row = table
        .lines()
        .find(|l| l.contains("bad-mac-port-01"))
        .unwrap_or_default();
    ensure!(
        row.contains("INVALID_ARG") && row.contains("must have 6 octets"),
        "{table}"
    );
    let json = t.agent.cli(&["apply", "-f", &example("invalid.yaml"), "--json"])?;
    let reply: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    for s in reply["operationStatuses"].as_array().context("operationStatuses")? {
        let refused = s["operationStatus"] != "SUCCESS" && s["operationStatus"] != "PENDING";
        let reason = s["reason"].as_str().context("every status has a reason field")?;
        ensure!(refused != reason.is_empty(), "a reason exactly when refused: {s}");
    }

    // A file that is not a goal state is a clean client error, and the agent keeps going.
    let junk = std::env::temp_dir().join(alioth_tests::netns::unique("junk-") + ".yaml");
    std::fs::write(&junk, "vpcStates: 17\n")?;
    let out = t.agent.cli(&["apply", "-f", junk.to_str().unwrap()])?;
    std::fs::remove_file(&junk)?;
    ensure!(out.status.code() == Some(1), "junk apply: {out:?}");
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("not a valid goal state"),
        "{out:?}"
    );

    // What the first apply programmed still answers.
    let ping = t
        .vm1
        .ns
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.18.0.1"])?;
    ensure!(ping.contains("3 received"), "ping output: {ping}");
    Ok(())
}

#[test]
fn a_port_whose_attach_fails_is_undone_everywhere_and_can_be_applied_later() -> Result<()> {
    let host = Netns::new("alhost")?;
    // vm2's tap already runs someone else's XDP program: attaching ours is refused.
    let vm1 = Vm::new(&host, VM1_TAP, "02:00:c6:12:00:0a", "198.18.0.10/24")?;
    let vm2 = Vm::new(&host, VM2_TAP, "02:00:c6:12:00:0b", "198.18.0.11/24")?;
    struct Pin(String);
    impl Drop for Pin {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let foreign = Pin(format!(
        "/sys/fs/bpf/{}",
        alioth_tests::netns::unique("alioth-foreign-")
    ));
    let bin = alioth_tests::agent::alioth_bin()?;
    let out = host.net_output(&[
        bin.to_str().unwrap_or_default(),
        "xdp-pass",
        "--iface",
        VM2_TAP,
        "--pin",
        &foreign.0,
    ])?;
    ensure!(out.status.success(), "{out:?}");
    let agent = Agent::start(&host, &[])?;
    let (code, statuses) = apply(&agent, &example("demo.yaml"))?;
    ensure!(code == 3, "{statuses:?}");
    ensure!(
        statuses["2a2b0d1c-4c1e-4b4f-8a4e-9b1f2e3d4c5b"] == "FAILURE",
        "{statuses:?}"
    );
    ensure!(
        statuses.values().filter(|s| *s == "SUCCESS").count() == 3,
        "{statuses:?}"
    );
    ensure!(
        agent.log_text().contains("change undone after its programming failed"),
        "{}",
        agent.log_text()
    );
    // Undone in the maps: nobody answers for vm2's address, and only vm1 is a port.
    let silent = vm1
        .ns
        .exec_output(&["arping", "-c", "2", "-w", "3", "-I", "eth0", "198.18.0.11"])?;
    ensure!(
        !silent.status.success(),
        "the failed port's address must not be answered"
    );
    let status: serde_json::Value = serde_json::from_slice(&agent.cli(&["status", "--json"])?.stdout)?;
    ensure!(
        status["maps"]["ENDPOINTS"]["entries"] == 2 && status["attached"].as_array().map(Vec::len) == Some(1),
        "{status}"
    );
    // Once the interface is free, the same goal state applies in full.
    drop(foreign);
    let (code, statuses) = apply(&agent, &example("demo.yaml"))?;
    ensure!(code == 0 && statuses.values().all(|s| s == "SUCCESS"), "{statuses:?}");
    let arp = vm1
        .ns
        .exec(&["arping", "-c", "2", "-w", "5", "-I", "eth0", "198.18.0.11"])?;
    ensure!(arp.to_lowercase().contains("02:00:c6:12:00:0b"), "{arp}");
    drop((agent, vm1, vm2, host));
    Ok(())
}

/// `alioth apply --prune`: the file without VM 2's port. What the agent holds and the file does not
/// name is listed, then deleted; without --prune the same file deletes nothing.
#[test]
fn apply_prune_deletes_what_the_file_leaves_out_and_says_so_first() -> Result<()> {
    let t = topology(&[])?;
    let (code, _) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0);
    let alioth::cli::GoalStateFile::V1(mut msg) =
        alioth::cli::parse_goal_state_file(&std::fs::read_to_string(example("demo.yaml"))?)?
    else {
        anyhow::bail!("demo.yaml is a GoalState");
    };
    let vm2_port = "2a2b0d1c-4c1e-4b4f-8a4e-9b1f2e3d4c5b";
    msg.port_states
        .retain(|p| p.configuration.as_ref().is_some_and(|c| c.id != vm2_port));
    let scratch = alioth_tests::netns::Scratch::new("alioth-prune-")?;
    let file = scratch.path("without-vm2.json");
    std::fs::write(&file, serde_json::to_vec(&msg)?)?;
    let attached = || -> Result<usize> {
        let status: serde_json::Value = serde_json::from_slice(&t.agent.cli(&["status", "--json"])?.stdout)?;
        Ok(status["attached"].as_array().map_or(0, Vec::len))
    };
    let (code, _) = apply(&t.agent, &file)?;
    ensure!(code == 0 && attached()? == 2, "without --prune nothing is deleted");
    let out = t
        .agent
        .cli(&["apply", "-f", &file, "--prune", "--state-dir", &t.agent.state_dir])?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{said}");
    ensure!(said.contains(&format!("prune: DELETE port {vm2_port}")), "{said}");
    ensure!(!said.contains("f37810eb"), "VM 1's port is in the file: {said}");
    ensure!(attached()? == 1, "VM 2's tap is detached");
    let ping = t
        .vm1
        .ns
        .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "198.18.0.1"])?;
    ensure!(ping.contains("2 received"), "VM 1 keeps its network: {ping}");
    Ok(())
}

/// A subnet whose gateway is 0.0.0.0 (Alcor's test controller sends that) has none: nothing
/// answers ARP or ping for its first address, and its VMs still reach each other.
#[test]
fn a_subnet_with_gateway_0_0_0_0_has_no_gateway() -> Result<()> {
    use alioth_proto::schema::{subnet_configuration::Gateway, GoalState, OperationType::*, UpdateType};
    use alioth_tests::goalstate::{port, subnet, vpc};
    let t = topology(&[])?;
    let mut s = subnet(Create, "s0", "v0", 0);
    if let Some(c) = s.configuration.as_mut() {
        c.gateway = Some(Gateway {
            ip_address: "0.0.0.0".into(),
            ..Default::default()
        });
    }
    let msg = GoalState {
        vpc_states: vec![vpc(Create, "v0", 100, 0, UpdateType::Delta)],
        subnet_states: vec![s],
        port_states: vec![
            port(
                Create,
                "f37810eb-7f83-45fa-a4d4-1b31e75399df",
                "v0",
                "s0",
                "198.18.0.10",
                "02:00:c6:12:00:0a",
            ),
            port(
                Create,
                "2a2b0d1c-4c1e-4b4f-8a4e-9b1f2e3d4c5b",
                "v0",
                "s0",
                "198.18.0.11",
                "02:00:c6:12:00:0b",
            ),
        ],
        ..Default::default()
    };
    let scratch = alioth_tests::netns::Scratch::new("alioth-nogw-")?;
    let file = scratch.path("no-gateway.json");
    std::fs::write(&file, serde_json::to_vec(&msg)?)?;
    let (code, statuses) = apply(&t.agent, &file)?;
    ensure!(code == 0, "{statuses:?}");
    let arp = t
        .vm1
        .ns
        .exec_output(&["arping", "-c", "2", "-w", "3", "-I", "eth0", "198.18.0.1"])?;
    ensure!(!arp.status.success(), "nobody answers ARP for the first address");
    let ping = t.vm1.ns.exec_output(&["ping", "-c", "2", "-W", "1", "198.18.0.1"])?;
    ensure!(!ping.status.success(), "nobody answers ping for it");
    let ping = t
        .vm1
        .ns
        .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "198.18.0.11"])?;
    ensure!(ping.contains("2 received"), "VM 1 -> VM 2 still switched: {ping}");
    Ok(())
}

/// The agent raises its open-files limit to the hard one: started with a soft limit of 512, it
/// runs with the hard limit.
#[test]
fn the_agent_raises_its_open_files_limit() -> Result<()> {
    let get = || {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct given.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
        l
    };
    let ours = get();
    ensure!(ours.rlim_max > 512, "a hard limit above 512: {}", ours.rlim_max);
    // The child inherits the lowered soft limit; ours is put back at once.
    let low = libc::rlimit {
        rlim_cur: 512,
        rlim_max: ours.rlim_max,
    };
    // SAFETY: setrlimit reads the struct given.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) };
    let agent = Agent::start_local(&[]);
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &ours) };
    let agent = agent?;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.pid()))?;
    let files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("limits")?;
    let soft: Vec<&str> = files.split_whitespace().skip(3).take(2).collect();
    let hard = ours.rlim_max.to_string();
    ensure!(soft == [hard.as_str(), hard.as_str()], "raised from 512: {files}");
    Ok(())
}

/// `--log-format json` gives one JSON object per line (for log collectors); text logs carry no
/// colour codes when stderr is not a terminal.
#[test]
fn logs_are_json_lines_or_plain_text() -> Result<()> {
    let bin = alioth_tests::agent::alioth_bin()?;
    let scratch = alioth_tests::netns::Scratch::new("alioth-logs-")?;
    let (pins, state) = (
        format!("/sys/fs/bpf/{}", alioth_tests::netns::unique("alioth-logs-")),
        scratch.path("state"),
    );
    for format in ["json", "text"] {
        let out = std::process::Command::new(&bin)
            .args([
                "--log-format",
                format,
                "agent",
                "--reset",
                "--pin-dir",
                &pins,
                "--state-dir",
                &state,
            ])
            .output()?;
        ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let log = String::from_utf8(out.stderr)?;
        ensure!(!log.contains('\u{1b}') && log.contains("reset"), "{format}: {log}");
        if format == "json" {
            for line in log.lines() {
                let v: serde_json::Value = serde_json::from_str(line).with_context(|| line.to_string())?;
                ensure!(v["level"] == "INFO" && v["fields"]["message"].is_string(), "{line}");
            }
        }
    }
    Ok(())
}

/// Shell completions and the manual page come from the same command definitions as `--help`.
#[test]
fn completions_and_the_man_page_cover_every_subcommand() -> Result<()> {
    let bin = alioth_tests::agent::alioth_bin()?;
    let run = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new(&bin).args(args).output()?;
        ensure!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };
    let bash = run(&["completions", "bash"])?;
    let man = run(&["man"])?;
    ensure!(
        bash.contains("_alioth()") && man.starts_with(".ie") && man.contains(".TH alioth 1"),
        "{man}"
    );
    for sub in ["agent", "apply", "status", "ports", "stats", "state", "health"] {
        ensure!(bash.contains(sub) && man.contains(sub), "{sub} missing");
    }
    Ok(())
}

//! Restarts and reboots in network namespaces: the agent SIGKILLed and started again (the data
//! plane forwarding alone meanwhile, its maps then taken over or filled anew), taps renamed while
//! no agent runs, and VM taps deleted and created again.

use std::time::{Duration, Instant};

use alioth_tests::agent::Agent;
use alioth_tests::demo::{apply, counter, example, topology, Topology, VM1_TAP, VM2_TAP};
use alioth_tests::netns::Vm;
use anyhow::{ensure, Context, Result};

#[test]
fn sigkill_and_restart_of_the_agent_lose_no_packet() -> Result<()> {
    let t = topology(&[])?;
    let (code, _) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0);
    // 600 pings 10 ms apart (6 s) from VM 1 to the gateway (answered by the port program) and to
    // VM 2 (switched by it), while the agent is killed and a new one takes over.
    let pings = [
        t.vm1.ns.steady_pings("198.18.0.1")?,
        t.vm1.ns.steady_pings("198.18.0.11")?,
    ];
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let left = t.agent.kill()?;
    let pin_dir = left.pin_dir.clone();
    // The data plane runs alone for a while, DHCP server included (a tail the kernel would drop
    // with the last pin or descriptor of its program array), then a new agent adopts it.
    let started = std::time::Instant::now();
    let lease = alioth_tests::dhcp::udhcpc_once(&t.vm1.ns)?;
    ensure!(
        lease.status.success(),
        "no DHCP lease while no agent runs: {}",
        String::from_utf8_lossy(&lease.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(1000).saturating_sub(started.elapsed()));
    let agent = Agent::start_with(&t.host, left, &[])?;
    for pings in pings {
        pings.all_answered().with_context(|| agent.log_text())?;
    }
    // The maps held what the record does: taken over as they were, not filled anew.
    let log = agent.log_text();
    ensure!(
        log.contains("restored the recorded goal state") && log.contains("maps=\"taken over\""),
        "{log}"
    );

    // The same goal state again is an idempotent success, and the counters survived the restart.
    let (code, statuses) = apply(&agent, &example("demo.yaml"))?;
    ensure!(code == 0 && statuses.values().all(|s| s == "SUCCESS"), "{statuses:?}");
    ensure!(counter(&agent, "icmp_echo_reply")? >= 600, "stats: {}", agent.stats()?);
    ensure!(counter(&agent, "forward_local")? >= 1200, "stats: {}", agent.stats()?);
    // Nothing is left in the staging area, and both ports are attached.
    ensure!(!std::path::Path::new(&pin_dir).join("staging").exists());
    let status: serde_json::Value = serde_json::from_slice(&agent.cli(&["status", "--json"])?.stdout)?;
    ensure!(status["attached"].as_array().map(Vec::len) == Some(2), "{status}");
    Ok(())
}

/// An agent killed while it changed the maps leaves them marked as holding no record (what the
/// mark says is set here by hand, as that kill would leave it): the next agent fills new maps
/// from its record instead of taking those over, and the VMs talk as before.
#[test]
fn maps_changed_behind_the_record_are_filled_anew_at_restart() -> Result<()> {
    let t = topology(&[])?;
    let (code, _) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0);
    let left = t.agent.kill()?;
    left.forget_record_mark()?;
    let agent = Agent::start_with(&t.host, left, &[])?;
    let log = agent.log_text();
    ensure!(
        log.contains("restored the recorded goal state") && log.contains("maps=\"filled\""),
        "{log}"
    );
    let ping = t
        .vm1
        .ns
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.18.0.11"])?;
    ensure!(ping.contains("3 received"), "ping output: {ping}");
    // Marked again once filled: the restart after this one takes the maps over.
    let agent = Agent::start_with(&t.host, agent.kill()?, &[])?;
    ensure!(agent.log_text().contains("maps=\"taken over\""), "{}", agent.log_text());
    let ping = t
        .vm1
        .ns
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.18.0.11"])?;
    ensure!(ping.contains("3 received"), "ping output: {ping}");
    Ok(())
}

/// A tap renamed while no agent runs keeps its index, its program and the port's entry: the next
/// agent, taking the maps over, clears that entry, detaches the program and points the port's
/// address nowhere, so VM 1's frames for VM 2 are dropped as having no interface instead of
/// reaching a device that is no port. Named back, the tap is the port's again.
#[test]
fn a_tap_renamed_while_no_agent_runs_gets_no_frame_for_its_old_port() -> Result<()> {
    let t = topology(&[])?;
    let (code, _) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0);
    let left = t.agent.kill()?;
    let rename = |from: &str, to: &str| -> Result<()> {
        t.host.exec(&["ip", "link", "set", "dev", from, "down"])?;
        t.host.exec(&["ip", "link", "set", "dev", from, "name", to])?;
        t.host.exec(&["ip", "link", "set", "dev", to, "up"])?;
        Ok(())
    };
    rename(VM2_TAP, "notaport0")?;
    let agent = Agent::start_with(&t.host, left, &[])?;
    ensure!(agent.log_text().contains("maps=\"taken over\""), "{}", agent.log_text());
    let before = counter(&agent, "drop_no_interface")?;
    let ping = |count: &str| -> Result<String> {
        let out = t
            .vm1
            .ns
            .exec_output(&["ping", "-c", count, "-i", "0.2", "-W", "1", "198.18.0.11"])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let out = ping("3")?;
    ensure!(out.contains(" 0 received"), "ping output: {out}");
    let dropped = counter(&agent, "drop_no_interface")? - before;
    ensure!(
        dropped >= 3,
        "{dropped} frames dropped as having no interface; stats: {}",
        agent.stats()?
    );
    ensure!(
        !alioth_tests::netns::runs_alioth(&t.host.name, "notaport0")?,
        "the renamed tap still runs a program"
    );
    rename("notaport0", VM2_TAP)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = ping("1")?;
        if out.contains("1 received") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "VM 2 silent after its tap got its name back: {out}\n{}",
            agent.log_text()
        );
    }
    Ok(())
}

/// Upgrading from an agent that ran native XDP on veths (`--xdp-mode driver`, what `auto` did
/// before) to one in the default mode: the new agent takes the ports over with the skb path alone.
/// The old XDP links keep running until the new maps are complete, then go; no ping is lost, and
/// the guest gets its TSO back (the kernel turns it off in a veth's peer while XDP runs).
#[test]
fn a_restart_in_the_default_mode_moves_veth_ports_off_xdp_without_losing_a_ping() -> Result<()> {
    let t = topology(&["--xdp-mode", "driver"])?;
    let (code, _) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0);
    let tso = |vm: &Vm| -> Result<bool> {
        Ok(vm
            .ns
            .exec(&["ethtool", "-k", "eth0"])?
            .contains("tcp-segmentation-offload: on"))
    };
    ensure!(!tso(&t.vm1)?, "native XDP on the tap leaves the guest without TSO");
    let pings = [
        t.vm1.ns.steady_pings("198.18.0.1")?,
        t.vm1.ns.steady_pings("198.18.0.11")?,
    ];
    std::thread::sleep(Duration::from_millis(1500));
    let left = t.agent.kill()?;
    std::thread::sleep(Duration::from_millis(500));
    let agent = Agent::start_with(&t.host, left, &[])?;
    for pings in pings {
        pings.all_answered().with_context(|| agent.log_text())?;
    }
    let status: serde_json::Value = serde_json::from_slice(&agent.cli(&["status", "--json"])?.stdout)?;
    let modes = alioth_tests::agent::hooks(&status);
    ensure!(modes == ["tc", "tc"], "status: {status}");
    for tap in [VM1_TAP, VM2_TAP] {
        let link = t.host.exec(&["ip", "-o", "link", "show", "dev", tap])?;
        ensure!(!link.contains("prog/xdp"), "{tap} still runs XDP: {link}");
    }
    ensure!(tso(&t.vm1)?, "the guest has its TSO back");
    // The taps' frames now count as the skb path's alone: the flags followed the hook.
    let before = counter(&agent, "skb_only")?;
    let out = t
        .vm1
        .ns
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.18.0.1"])?;
    ensure!(out.contains("3 received"), "{out}");
    let after = counter(&agent, "skb_only")?;
    ensure!(after >= before + 3, "skb_only {before} -> {after}: {}", agent.stats()?);
    Ok(())
}

/// A VM reboot or migration deletes the VM's tap and creates it again under the same name (with
/// another index). The agent follows rtnetlink: twenty times in a row, while VM 2 pings VM 1, the
/// new tap carries the port program within 100 ms of appearing, and VM 1 answers again.
#[test]
fn a_rebooted_vms_new_tap_is_attached_within_100_ms_every_time() -> Result<()> {
    let Topology { agent, vm1, vm2, host } = topology(&[])?;
    let (code, _) = apply(&agent, &example("demo.yaml"))?;
    ensure!(code == 0);
    let background = vm2.ns.steady_pings("198.18.0.10")?;
    let mut vm1 = Some(vm1);
    let mut latencies = Vec::new();
    for cycle in 0..20 {
        host.exec(&["ip", "link", "del", VM1_TAP])?;
        drop(vm1.take());
        // Watched from before the tap exists: the VM's own set-up goes on meanwhile.
        let watch = watch_for_xdp(&host.name, VM1_TAP);
        let vm = Vm::new(&host, VM1_TAP, "02:00:c6:12:00:0a", "198.18.0.10/24")?;
        let (seen, attached) = watch.join().expect("watcher").with_context(|| {
            format!(
                "cycle {cycle}: no program on the new tap after 5 s:\n{}",
                agent.log_text()
            )
        })?;
        latencies.push(attached - seen);
        let out = vm2.ns.exec(&["ping", "-c", "1", "-W", "2", "198.18.0.10"])?;
        ensure!(
            out.contains("1 received"),
            "cycle {cycle}: VM 1 silent after its reboot: {out}"
        );
        vm1 = Some(vm);
    }
    latencies.sort();
    println!(
        "attach after the tap is first seen (0: attached when first seen): median {:?}, max {:?}",
        latencies[10], latencies[19]
    );
    ensure!(
        latencies[19] <= Duration::from_millis(100),
        "attach latencies: {latencies:?}"
    );
    // The pings that ran through it all: answered again at the end.
    let vm1 = vm1.context("VM 1")?;
    let out = vm1.ns.exec(&["ping", "-c", "3", "-i", "0.2", "198.18.0.1"])?;
    ensure!(out.contains("3 received"), "VM 1 to its gateway: {out}");
    ensure!(background.answered()? > 0);
    ensure!(
        agent.log_text().matches("interface appeared; port attached").count() >= 20,
        "{}",
        agent.log_text()
    );
    Ok(())
}

/// When `tap` in namespace `ns` was first seen, and when it first carried the port program (polled
/// every 2 ms for 5 s: an `ip` and a `bpftool` call, a few milliseconds, is the resolution).
fn watch_for_xdp(ns: &str, tap: &str) -> std::thread::JoinHandle<Option<(Instant, Instant)>> {
    let (ns, tap) = (ns.to_string(), tap.to_string());
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = None;
        while Instant::now() < deadline {
            let out = std::process::Command::new("ip")
                .args(["-n", &ns, "-o", "link", "show", "dev", &tap])
                .output()
                .ok()?;
            let now = Instant::now();
            if out.status.success() {
                let seen = *seen.get_or_insert(now);
                if alioth_tests::netns::runs_alioth(&ns, &tap).ok()? {
                    return Some((seen, Instant::now()));
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    })
}

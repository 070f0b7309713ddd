//! Real DHCP clients against the XDP server: `dhclient` and `udhcpc` in VM namespaces obtain
//! exactly the goal-state lease, renew it, follow an address change, a relay (`perfdhcp`) gets its
//! short requests answered, and a foreign MAC gets nothing.

use std::time::{Duration, Instant};

use alioth_tests::agent::Agent;
use alioth_tests::demo::counter;
use alioth_tests::dhcp::parse_perfdhcp;
use alioth_tests::netns::{Netns, Scratch, Vm};
use anyhow::{bail, ensure, Result};

const VPC: &str = "6f1e0c2a-dhcp-4ece-b3f0-8d36e3d88001";
const SUBNET: &str = "a87e0f87-dhcp-44ef-9194-9a62f178594e";
/// Ports: (id, tap = "tap" + the id's first 11 characters, MAC, address, host name).
const PORTS: [(&str, &str, &str, &str, &str); 3] = [
    (
        "d1c1e2a1-0001-4a4f-8a4e-9b1f2e3d4c01",
        "tapd1c1e2a1-00",
        "02:00:c6:12:05:0a",
        "198.18.5.10",
        "vm-one",
    ),
    (
        "d1c1e2a2-0002-4a4f-8a4e-9b1f2e3d4c02",
        "tapd1c1e2a2-00",
        "02:00:c6:12:05:0b",
        "198.18.5.11",
        "vm-two",
    ),
    (
        "d1c1e2a3-0003-4a4f-8a4e-9b1f2e3d4c03",
        "tapd1c1e2a3-00",
        "02:00:c6:12:05:0c",
        "198.18.5.12",
        "vm-three",
    ),
];

/// Goal state (proto3 JSON as YAML): the VPC, the DHCP subnet, the ports and their DHCP entries;
/// `vm2_ip` and `revision` let a test move the second port.
fn goal_state(vm2_ip: &str, revision: u32) -> String {
    let mut y = format!(
        r#"vpcStates:
  - operationType: CREATE
    configuration: {{ id: {VPC}, revisionNumber: 1, cidr: 198.18.0.0/16, tunnelId: 105 }}
subnetStates:
  - operationType: CREATE
    configuration:
      id: {SUBNET}
      revisionNumber: 1
      vpcId: {VPC}
      cidr: 198.18.5.0/24
      gateway: {{ ipAddress: 198.18.5.1, macAddress: "0a:58:c6:12:05:01" }}
      dhcpEnable: true
      dnsEntryList: [{{ entry: 198.18.5.2 }}, {{ entry: 198.18.5.3 }}]
      extraDhcpOptions:
        - {{ name: domain-name, value: tenant.example }}
        - {{ name: ntp-server, value: 198.18.5.4 }}
        - {{ name: lease-time, value: "3600" }}
portStates:
"#
    );
    for (i, (id, _, mac, ip, _)) in PORTS.iter().enumerate() {
        let (ip, rev) = if i == 1 { (vm2_ip, revision) } else { (*ip, 1) };
        y += &format!(
            "  - operationType: UPDATE\n    configuration: {{ id: {id}, revisionNumber: {rev}, vpcId: {VPC}, \
             macAddress: \"{mac}\", fixedIps: [{{ subnetId: {SUBNET}, ipAddress: {ip} }}] }}\n"
        );
    }
    y += "dhcpStates:\n";
    for (i, (_, _, mac, ip, name)) in PORTS.iter().enumerate() {
        let ip = if i == 1 { vm2_ip } else { ip };
        y += &format!(
            "  - operationType: UPDATE\n    configuration: {{ id: dhcp-{i}, revisionNumber: {revision}, \
             subnetId: {SUBNET}, macAddress: \"{mac}\", ipv4Address: {ip}, portHostName: {name} }}\n"
        );
    }
    y
}

fn apply(agent: &Agent, scratch: &Scratch, yaml: &str) -> Result<()> {
    let file = scratch.path("goal.yaml");
    std::fs::write(&file, yaml)?;
    let out = agent.cli(&["apply", "-f", &file])?;
    ensure!(
        out.status.success(),
        "apply failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Polls `check` until it holds, for at most `limit`.
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    loop {
        if check()? {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The interface state a lease must leave: address/prefix, MTU, default route, resolver.
fn check_interface(vm: &Vm, addr: &str) -> Result<()> {
    let a = vm.ns.exec(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])?;
    ensure!(a.contains(&format!("inet {addr}/24")), "eth0 addresses: {a}");
    let l = vm.ns.exec(&["ip", "-o", "link", "show", "dev", "eth0"])?;
    ensure!(l.contains("mtu 1450"), "eth0 link: {l}");
    let r = vm.ns.exec(&["ip", "-4", "route", "show", "default"])?;
    ensure!(r.contains("via 198.18.5.1"), "default route: {r}");
    let resolv = std::fs::read_to_string(format!("/etc/netns/{}/resolv.conf", vm.ns.name))?;
    for want in ["198.18.5.2", "198.18.5.3", "tenant.example"] {
        ensure!(resolv.contains(want), "resolv.conf lacks {want}:\n{resolv}");
    }
    Ok(())
}

#[test]
fn dhclient_and_udhcpc_get_the_goal_state_lease() -> Result<()> {
    let scratch = Scratch::new("alioth-dhcp")?;
    let host = Netns::new("aldhcp")?;
    let vms = PORTS
        .iter()
        .map(|(_, tap, mac, _, _)| Vm::new(&host, tap, mac, ""))
        .collect::<Result<Vec<_>>>()?;
    let agent = Agent::start(&host, &[])?;
    apply(&agent, &scratch, &goal_state(PORTS[1].3, 1))?;

    // dhclient (ISC), with Debian's dhclient-script; its own UTS namespace, so that the script
    // can never rename the machine.
    let lease = scratch.path("dhclient.leases");
    let pid = scratch.path("dhclient.pid");
    let got = vms[0].ns.exec(&[
        "timeout", "30", "unshare", "--uts", "dhclient", "-1", "-4", "-lf", &lease, "-pf", &pid, "eth0",
    ]);
    if let Err(e) = got {
        bail!(
            "{e:#}\nagent counters: {}\nagent log: {}",
            agent.stats()?,
            agent.log_text()
        );
    }
    check_interface(&vms[0], "198.18.5.10")?;
    let leases = std::fs::read_to_string(&lease)?;
    for want in [
        "fixed-address 198.18.5.10;",
        "option subnet-mask 255.255.255.0;",
        "option routers 198.18.5.1;",
        "option dhcp-server-identifier 198.18.5.1;",
        "option domain-name-servers 198.18.5.2,198.18.5.3;",
        "option domain-name \"tenant.example\";",
        "option host-name \"vm-one\";",
        "option interface-mtu 1450;",
        "option broadcast-address 198.18.5.255;",
        "option ntp-servers 198.18.5.4;",
        "option dhcp-lease-time 3600;",
    ] {
        ensure!(leases.contains(want), "dhclient lease lacks {want:?}:\n{leases}");
    }
    // A relay's requests (perfdhcp: giaddr = the VM's address, from port 67) are short, not
    // padded to the BOOTP minimum: each reply grows by more than a padded request's would.
    let (offers, acks) = (counter(&agent, "dhcp_offer")?, counter(&agent, "dhcp_ack")?);
    let out = vms[0].ns.exec_output(&[
        "timeout",
        "30",
        "perfdhcp",
        "-4",
        "-l",
        "eth0",
        "-n",
        "20",
        "-r",
        "50",
        "-W",
        "1000000",
        "-b",
        "mac=02:00:c6:12:05:0a",
        "198.18.5.1",
    ])?;
    let report = parse_perfdhcp(&String::from_utf8_lossy(&out.stdout));
    let acked = report
        .get("REQUEST-ACK")
        .and_then(|r| r.get("received packets"))
        .copied();
    let answered = (
        counter(&agent, "dhcp_offer")? - offers,
        counter(&agent, "dhcp_ack")? - acks,
    );
    // perfdhcp itself now and then misses one reply of its first exchanges; the server answers all.
    ensure!(
        answered == (20, 20) && acked.is_some_and(|a| a >= 18.0),
        "perfdhcp: {acked:?} of 20 exchanges; the server answered {answered:?}\n{report:?}\nagent counters: {}",
        agent.stats()?
    );

    // Release: the server takes note.
    let released = counter(&agent, "dhcp_release")?;
    vms[0]
        .ns
        .exec(&["timeout", "10", "dhclient", "-r", "-lf", &lease, "-pf", &pid, "eth0"])?;
    eventually(Duration::from_secs(5), "the RELEASE", || {
        Ok(counter(&agent, "dhcp_release")? > released)
    })?;

    // udhcpc (busybox) with its default script, kept running so that it can renew. The script's
    // environment appears whole (renamed into place): the test reads it as soon as it exists.
    let env_dump = scratch.path("udhcpc.env");
    let script = scratch.path("udhcpc.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv | sort > {env_dump}.$1.tmp\nmv {env_dump}.$1.tmp {env_dump}.$1\nexec /etc/udhcpc/default.script \"$@\"\n"
        ),
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let mut udhcpc = vms[1]
        .ns
        .command("udhcpc")
        .args([
            "-f", "-i", "eth0", "-s", &script, "-O", "mtu", "-O", "ntpsrv", "-t", "5", "-T", "1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let result = (|| -> Result<()> {
        let bound = format!("{env_dump}.bound");
        eventually(Duration::from_secs(20), "udhcpc to bind", || {
            Ok(std::path::Path::new(&bound).exists())
        })?;
        let env = std::fs::read_to_string(&bound)?;
        for want in [
            "ip=198.18.5.11",
            "subnet=255.255.255.0",
            "router=198.18.5.1",
            "dns=198.18.5.2 198.18.5.3",
            "domain=tenant.example",
            "hostname=vm-two",
            "mtu=1450",
            "ntpsrv=198.18.5.4",
            "lease=3600",
            "serverid=198.18.5.1",
        ] {
            ensure!(env.lines().any(|l| l == want), "udhcpc lacks {want:?}:\n{env}");
        }
        check_interface(&vms[1], "198.18.5.11")?;

        // Renewal (SIGUSR1: renew now): unicast REQUEST with ciaddr -> ACK.
        let acks = counter(&agent, "dhcp_ack")?;
        std::fs::remove_file(&bound)?;
        libc_kill(udhcpc.id(), "USR1")?;
        eventually(Duration::from_secs(10), "the renewal ACK", || {
            Ok(counter(&agent, "dhcp_ack")? > acks && std::fs::read_to_string(format!("{env_dump}.renew")).is_ok())
        })?;
        check_interface(&vms[1], "198.18.5.11")?;

        // Goal state moves the port: the next cycle gets a NAK, then the new address.
        apply(&agent, &scratch, &goal_state("198.18.5.21", 2))?;
        let naks = counter(&agent, "dhcp_nak")?;
        libc_kill(udhcpc.id(), "USR1")?;
        eventually(Duration::from_secs(20), "the new address", || {
            let a = vms[1].ns.exec(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])?;
            Ok(a.contains("inet 198.18.5.21/24") && !a.contains("198.18.5.11/"))
        })?;
        ensure!(counter(&agent, "dhcp_nak")? > naks, "the stale renewal was NAKed");
        check_interface(&vms[1], "198.18.5.21")
    })();
    let _ = udhcpc.kill();
    let _ = udhcpc.wait();
    result?;

    // A VM whose MAC is not its port's (so not in goal state) gets nothing.
    vms[2]
        .ns
        .exec(&["ip", "link", "set", "eth0", "address", "02:00:c6:12:05:99"])?;
    let spoofed = counter(&agent, "drop_spoofed_mac")?;
    let out = vms[2].ns.exec_output(&[
        "timeout",
        "15",
        "udhcpc",
        "-f",
        "-q",
        "-n",
        "-i",
        "eth0",
        "-s",
        "/bin/true",
        "-t",
        "2",
        "-T",
        "1",
    ])?;
    ensure!(!out.status.success(), "udhcpc got a lease for an unknown MAC");
    ensure!(
        counter(&agent, "drop_spoofed_mac")? > spoofed,
        "its DISCOVERs were dropped and counted"
    );
    let a = vms[2].ns.exec(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])?;
    ensure!(a.trim().is_empty(), "unknown MAC has an address: {a}");
    Ok(())
}

fn libc_kill(pid: u32, signal: &str) -> Result<()> {
    let out = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .output()?;
    ensure!(out.status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

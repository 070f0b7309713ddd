//! Hostile guests against a real agent: crafted frames from inside VM namespaces, sent with real
//! sockets and the VMs' default offloads.

use std::collections::BTreeMap;
use std::time::Duration;

use alioth_tests::demo::{apply, counter, example, topology, VM1_TAP};
use anyhow::{ensure, Result};

/// Two port ids whose first 11 characters agree name the same tap. The second one, in another
/// VPC, is refused with the owner named, never programmed onto the first one's VM; a DELETE of it
/// detaches nothing; ids that make no interface name are refused too.
#[test]
fn a_port_never_takes_over_another_ports_interface() -> Result<()> {
    use alioth_proto::schema::{GoalState, OperationType::*, UpdateType};
    use alioth_tests::goalstate::{port, subnet, vpc};
    let t = topology(&[])?;
    let (code, _) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0);
    let scratch = alioth_tests::netns::Scratch::new("alioth-iface-")?;
    let push = |name: &str, msg: &GoalState| -> Result<(i32, BTreeMap<String, String>)> {
        let file = scratch.path(name);
        std::fs::write(&file, serde_json::to_vec(msg)?)?;
        apply(&t.agent, &file)
    };
    // VM 1's port is f37810eb-7f83-...: this one maps to the same tapf37810eb-7f.
    let thief = "f37810eb-7fff-4000-8000-00000000beef";
    let other_vpc = |op| GoalState {
        vpc_states: vec![vpc(Create, "vpc-b", 4242, 1, UpdateType::Delta)],
        subnet_states: vec![subnet(Create, "subnet-b", "vpc-b", 0)],
        port_states: vec![
            port(op, thief, "vpc-b", "subnet-b", "198.18.0.10", "02:00:00:00:b0:0a"),
            port(
                op,
                "bad/name:port x",
                "vpc-b",
                "subnet-b",
                "198.18.0.11",
                "02:00:00:00:b0:0b",
            ),
        ],
        ..Default::default()
    };
    let (code, statuses) = push("thief.json", &other_vpc(Create))?;
    ensure!(code == 3, "{statuses:?}");
    ensure!(
        statuses[thief] == "INVALID_ARG" && statuses["bad/name:port x"] == "INVALID_ARG",
        "{statuses:?}"
    );
    let table = t.agent.cli(&["apply", "-f", &scratch.path("thief.json")])?;
    let table = String::from_utf8_lossy(&table.stdout);
    ensure!(
        table.contains("interface tapf37810eb-7f already belongs to port f37810eb-7f83-45fa-a4d4-1b31e75399df"),
        "the reason names the owner: {table}"
    );
    let ping = |what: &str| -> Result<()> {
        let out = t
            .vm1
            .ns
            .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "198.18.0.1"])?;
        ensure!(out.contains("2 received"), "VM 1 -> its gateway {what}: {out}");
        Ok(())
    };
    ping("after the refused takeover")?;
    let (code, statuses) = push(
        "thief-delete.json",
        &GoalState {
            port_states: vec![port(
                Delete,
                thief,
                "vpc-b",
                "subnet-b",
                "198.18.0.10",
                "02:00:00:00:b0:0a",
            )],
            ..Default::default()
        },
    )?;
    ensure!(code == 0, "{statuses:?}");
    ping("after a DELETE of the refused port")?;
    let status: serde_json::Value = serde_json::from_slice(&t.agent.cli(&["status", "--json"])?.stdout)?;
    ensure!(status["attached"].to_string().contains(VM1_TAP), "{status}");
    Ok(())
}

/// A VM playing DHCP server to its neighbours, with real sockets and the VMs' default offloads:
/// BOOTREPLYs to VM 2's client port, sent from port 68 and from an ordinary port, never arrive, and
/// are counted; ordinary UDP between the two still does.
#[test]
fn a_vm_cannot_answer_dhcp_for_another_vm() -> Result<()> {
    let t = topology(&[])?;
    let (code, _) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0);
    // VM 2 listens on `port` for 3 s and says what arrived.
    let listen = |port: u16| {
        let script = format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('', {port}))\n\
             s.settimeout(3)\ntry:\n    print('got', s.recvfrom(2048)[1])\nexcept socket.timeout:\n    print('nothing')\n"
        );
        t.vm2
            .ns
            .command("/usr/bin/python3")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
    };
    let send = |sport: u16, dport: u16| -> Result<()> {
        // op 2 (BOOTREPLY), Ethernet, 6-byte addresses; the magic cookie; end.
        let script = format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('198.18.0.10', {sport}))\n\
             s.sendto(bytes([2, 1, 6, 0]) + bytes(232) + bytes([99, 130, 83, 99, 255]), ('198.18.0.11', {dport}))\n"
        );
        t.vm1.ns.exec(&["/usr/bin/python3", "-c", &script]).map(drop)
    };
    let before = counter(&t.agent, "drop_dhcp_server")?;
    for sport in [68, 6767] {
        let listener = listen(68)?;
        std::thread::sleep(Duration::from_millis(300));
        send(sport, 68)?;
        let heard = String::from_utf8_lossy(&listener.wait_with_output()?.stdout).into_owned();
        ensure!(
            heard.trim() == "nothing",
            "a BOOTREPLY from port {sport} reached VM 2: {heard}"
        );
    }
    ensure!(
        counter(&t.agent, "drop_dhcp_server")? >= before + 2,
        "stats: {}",
        t.agent.stats()?
    );
    // The same datagram to an ordinary port arrives: only DHCP is refused.
    let listener = listen(5201)?;
    std::thread::sleep(Duration::from_millis(300));
    send(6767, 5201)?;
    let heard = String::from_utf8_lossy(&listener.wait_with_output()?.stdout).into_owned();
    ensure!(heard.starts_with("got"), "ordinary UDP between the VMs: {heard}");
    Ok(())
}

/// A VM flooding DHCPDECLINEs (real frames from a packet socket in the VM, for 3 s): every one is
/// counted in the kernel, but the agent hears of at most one per second (with the number held
/// back), so its log stays a few lines and its CPU time a small fraction of the flood's.
#[test]
fn a_decline_flood_costs_the_agent_a_few_log_lines() -> Result<()> {
    use alioth_tests::dhcp::Request;
    use dhcproto::v4::MessageType;
    let t = topology(&[])?;
    let (code, _) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0);
    let mac = [0x02, 0, 0xc6, 0x12, 0, 0x0a];
    let decline = Request {
        requested_ip: Some([198, 18, 0, 10]),
        server_id: Some([198, 18, 0, 1]),
        chaddr: mac,
        ..Request::new(MessageType::Decline)
    };
    let frame = alioth_tests::frames::udp(mac, [0xff; 6], [0; 4], [255; 4], 64, 68, 67, &decline.payload());
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    let (declines, cpu) = (counter(&t.agent, "dhcp_decline")?, t.agent.cpu_time()?);
    let script = format!(
        "import socket, time\ns = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\ns.bind(('eth0', 0))\n\
         f = bytes.fromhex('{hex}')\nn, end = 0, time.time() + 3\nwhile time.time() < end:\n\
         \x20   try:\n        s.send(f); n += 1\n    except BlockingIOError:\n        pass\nprint(n)\n"
    );
    let sent: u64 = t.vm1.ns.exec(&["/usr/bin/python3", "-c", &script])?.trim().parse()?;
    std::thread::sleep(Duration::from_millis(500));
    let counted = counter(&t.agent, "dhcp_decline")? - declines;
    let held = counter(&t.agent, "event_suppressed")?;
    let log = t.agent.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("DHCPDECLINE")).collect();
    ensure!(sent > 5_000 && counted > sent / 2, "sent {sent}, counted {counted}");
    ensure!(
        (1..=5).contains(&lines.len()) && held + lines.len() as u64 == counted,
        "{} log lines and {held} held back for {counted} counted",
        lines.len()
    );
    ensure!(
        lines
            .iter()
            .any(|l| l.contains("held_back=") && !l.contains("held_back=0")),
        "a report says how many it stands for: {lines:?}"
    );
    let cpu = t.agent.cpu_time()? - cpu;
    ensure!(
        cpu < Duration::from_millis(300),
        "the agent used {cpu:?} of CPU during a 3 s flood"
    );
    Ok(())
}

//! `alioth trace`: a synthetic frame from a port through the live pinned program (with counters of
//! its own) and through the host pipeline over the same maps: they agree, the verdict, the output
//! interface and the chain of lookups are the real ones, and the live counters do not move.

use alioth_tests::demo::{apply, counter, example, topology, VM2_TAP};
use anyhow::{ensure, Context, Result};

const VM1: &str = "f37810eb-7f83-45fa-a4d4-1b31e75399df";

fn trace(agent: &alioth_tests::agent::Agent, args: &[&str]) -> Result<(i32, serde_json::Value)> {
    let mut full = vec!["trace", "--port", VM1, "--json"];
    full.extend_from_slice(args);
    let out = agent.cli(&full)?;
    let code = out.status.code().unwrap_or(-1);
    let json = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((code, json))
}

#[test]
fn a_traced_frame_takes_the_real_path_and_leaves_the_counters_alone() -> Result<()> {
    let t = topology(&[])?;
    let (code, _) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0);
    let watched = [
        "forward_local",
        "drop_unknown_destination",
        "icmp_echo_reply",
        "dhcp_offer",
    ];
    let before: Vec<u64> = watched.iter().map(|c| counter(&t.agent, c)).collect::<Result<_>>()?;

    // To the other VM: redirected to its tap, found in ENDPOINTS.
    let (code, r) = trace(&t.agent, &["--dst", "198.18.0.11", "--proto", "tcp", "--dport", "22"])?;
    ensure!(code == 0 && r["agree"] == true, "{r}");
    ensure!(r["verdict"] == "Redirect" && r["out_iface"] == VM2_TAP, "{r}");
    ensure!(r["reason"] == "forward_local", "{r}");
    let chain = r["chain"].to_string();
    ensure!(
        chain.contains("198.18.0.11]: kind") && chain.contains("MAC 02:00:c6:12:00:0b"),
        "{r}"
    );

    // The same for a terminal.
    let text = t
        .agent
        .cli(&["trace", "--port", VM1, "--dst", "198.18.0.11", "--proto", "tcp"])?;
    let text = String::from_utf8(text.stdout)?;
    ensure!(
        text.contains("verdict:  Redirect (forward_local)") && text.contains(&format!("out:      {VM2_TAP}")),
        "{text}"
    );
    ensure!(
        text.contains("chain:\n  ENDPOINTS[VNI") && !text.contains("DISAGREE"),
        "{text}"
    );

    // To an address nobody holds: dropped, and the chain says which lookup failed.
    let (code, r) = trace(&t.agent, &["--dst", "198.18.0.99"])?;
    ensure!(code == 0 && r["agree"] == true && r["verdict"] == "Drop", "{r}");
    ensure!(
        r["reason"] == "drop_unknown_destination" && r["chain"].to_string().contains("198.18.0.99]: none"),
        "{r}"
    );

    // A ping of the gateway: answered in XDP, the reply in the kernel's output frame.
    let (code, r) = trace(&t.agent, &["--dst", "198.18.0.1", "--proto", "icmp"])?;
    ensure!(code == 0 && r["agree"] == true && r["verdict"] == "Tx", "{r}");
    ensure!(r["reason"] == "icmp_echo_reply", "{r}");
    // Echo reply (type 0, at byte 34) to the VM (its address at byte 30).
    let out = r["kernel"]["frame_out"].as_str().unwrap_or_default().to_string();
    ensure!(
        out.get(68..70) == Some("00") && out.get(60..68) == Some("c612000a"),
        "{r}"
    );

    // A spoofed source is dropped for what it is.
    let (code, r) = trace(&t.agent, &["--dst", "198.18.0.11", "--src", "198.18.0.77"])?;
    ensure!(
        code == 0 && r["agree"] == true && r["reason"] == "drop_spoofed_ip",
        "{r}"
    );

    // A DHCPDISCOVER: the port program hands it to the DHCP server's program (the trace's own
    // tail, counting into the trace's own counters), which offers the port its address.
    let mac = [0x02, 0, 0xc6, 0x12, 0, 0x0a];
    let mut discover = alioth_tests::dhcp::Request {
        chaddr: mac,
        ..alioth_tests::dhcp::Request::new(dhcproto::v4::MessageType::Discover)
    }
    .frame();
    discover[6..12].copy_from_slice(&mac);
    let hex: String = discover.iter().map(|b| format!("{b:02x}")).collect();
    let (code, r) = trace(&t.agent, &["--frame", &hex])?;
    ensure!(code == 0 && r["agree"] == true && r["verdict"] == "Tx", "{r}");
    ensure!(r["reason"] == "dhcp_offer", "{r}");

    let after: Vec<u64> = watched.iter().map(|c| counter(&t.agent, c)).collect::<Result<_>>()?;
    ensure!(
        before == after,
        "the traces moved live counters: {before:?} -> {after:?}"
    );

    // A port that does not exist is an error, not a trace.
    let out = t
        .agent
        .cli(&["trace", "--port", "no-such-port", "--dst", "198.18.0.11"])?;
    ensure!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no port no-such-port"));
    Ok(())
}

/// Across hosts: a frame to a VM on another host is encapsulated toward that host's tunnel
/// endpoint through the resolved next hop, as the kernel does it.
#[test]
fn a_traced_frame_to_another_host_is_encapsulated_toward_it() -> Result<()> {
    use alioth_tests::overlay::{two_hosts, UPLINK};
    let (lab, one_id, two_ip) = two_hosts(|_| Ok(()))?;
    let agent = lab.hosts[0].agent.as_ref().context("agent")?;
    let out = agent.cli(&["trace", "--port", &one_id, "--dst", &two_ip, "--json"])?;
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(out.status.success() && r["agree"] == true, "{r}");
    ensure!(
        r["verdict"] == "Encap" && r["reason"] == "encap" && r["out_iface"] == UPLINK,
        "{r}"
    );
    ensure!(
        r["outer"]["dst_ip"] == lab.hosts[1].ip.as_str() && r["outer"]["vni"] == 1001,
        "{r}"
    );
    ensure!(r["chain"].to_string().contains("NEXTHOPS["), "{r}");
    Ok(())
}

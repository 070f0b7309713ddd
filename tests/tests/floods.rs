//! The agent under floods from the network side: descriptors, connections, and large messages at
//! once. Each is bounded by a limit the agent sets itself or is configured with.

use std::net::IpAddr;
use std::time::Duration;

use alioth::agent::ServeLimits;
use alioth_proto::schema::*;
use alioth_tests::agent::Agent;
use alioth_tests::goalstate::{port, statuses, subnet, vpc};
use alioth_tests::grpc::Server;
use alioth_tests::netns::Netns;
use anyhow::{ensure, Context, Result};

/// Four concurrent 6 MiB messages against a budget of 16 MiB: two are taken in, two wait (held
/// back by flow control, costing no memory) until the first are answered; all four are answered
/// in full, and the bytes in flight never exceed the budget.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_large_messages_wait_for_the_byte_budget() -> Result<()> {
    const MIB: usize = 1 << 20;
    let limits = ServeLimits {
        max_message_bytes: 8 * MIB,
        bytes_in_flight: 16 * MIB as u64,
        ..ServeLimits::for_messages(8 * MIB)
    };
    let server = Server::start_with(vec!["198.18.200.1".parse::<IpAddr>()?], None, limits).await?;
    let message = |k: usize| {
        let mut msg = GoalState {
            vpc_states: vec![vpc(
                OperationType::Create,
                &format!("vpc-{k}"),
                100 + k as u32,
                1,
                UpdateType::Delta,
            )],
            subnet_states: vec![subnet(
                OperationType::Create,
                &format!("subnet-{k}"),
                &format!("vpc-{k}"),
                0,
            )],
            ..Default::default()
        };
        let mut len = prost::Message::encoded_len(&msg);
        while len < 6 * MIB {
            let i = msg.port_states.len();
            let id = format!("port-{k}-{i:06}-padded-to-look-like-a-uuid-0000000000");
            let (vpc, subnet) = (format!("vpc-{k}"), format!("subnet-{k}"));
            let p = port(
                OperationType::Create,
                &id,
                &vpc,
                &subnet,
                "198.18.0.10",
                "02:00:00:00:00:0a",
            );
            // A repeated field's element costs its length, its length's varint and a tag byte.
            len += prost::Message::encoded_len(&p) + 4;
            msg.port_states.push(p);
        }
        msg
    };
    let messages: Vec<GoalState> = (0..4).map(message).collect();
    // Read directly: `/metrics` would wait for the controller this test holds.
    let stats = server.admission.clone();
    let metric = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let held = server.controller.clone().lock_owned().await;
    let mut sent = Vec::new();
    for msg in messages {
        let mut client = server.client().await?.max_decoding_message_size(usize::MAX);
        let resources = msg.port_states.len() + 2;
        sent.push(tokio::spawn(async move {
            let reply = client.push_network_resource_states(msg).await?.into_inner();
            anyhow::Ok((resources, statuses(&reply).len()))
        }));
    }
    // Two messages in, two waiting, while the controller is held.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while metric(&stats.messages_waited) < 2 {
        ensure!(tokio::time::Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let in_flight = metric(&stats.bytes_in_flight);
    ensure!(
        in_flight > 10 * MIB as u64 && in_flight <= 16 * MIB as u64,
        "{in_flight} bytes in flight"
    );
    drop(held);
    for s in sent {
        let (resources, answered) = s.await??;
        ensure!(answered == resources, "{answered} answers for {resources} resources");
    }
    ensure!(metric(&stats.bytes_in_flight_peak) <= 16 * MIB as u64, "{stats:?}");
    ensure!(metric(&stats.bytes_in_flight) == 0, "all given back: {stats:?}");
    server.stop().await
}

/// 300 connections that send nothing, against an agent capped at 16 connections with a 2 s idle
/// timeout: those beyond the cap are closed on arrival, the rest after 2 s, the agent's descriptors
/// and CPU stay flat meanwhile, and then a real client is served.
#[test]
fn a_connection_flood_is_capped_and_idle_connections_close() -> Result<()> {
    let host = Netns::new("alflood")?;
    let agent = Agent::start(
        &host,
        &[
            "--max-connections",
            "16",
            "--grpc-idle-timeout",
            "2",
            "--metrics-listen",
            "127.0.0.1:9464",
        ],
    )?;
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", agent.pid())).map(|d| d.count());
    let (fds_before, cpu_before) = (fds()?, agent.cpu_time()?);
    // Opens the connections, then after 1 s and 4 s counts those the agent has closed.
    let script = "import socket, time\n\
        socks = [socket.create_connection(('127.0.0.1', 50001)) for _ in range(300)]\n\
        for s in socks: s.setblocking(False)\n\
        shut = set()\n\
        def closed():\n\
        \x20   for i, s in enumerate(socks):\n\
        \x20       try:\n\
        \x20           while s.recv(65536) != b'': pass\n\
        \x20           shut.add(i)\n\
        \x20       except BlockingIOError:\n\
        \x20           pass\n\
        \x20       except OSError:\n\
        \x20           shut.add(i)\n\
        \x20   return len(shut)\n\
        time.sleep(1)\nprint(closed(), flush=True)\ntime.sleep(3)\nprint(closed())\n";
    let flood = host
        .command("timeout")
        .args(["20", "/usr/bin/python3", "-c", script])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(1500));
    let fds_during = fds()?;
    let out = String::from_utf8(flood.wait_with_output()?.stdout)?;
    let counts: Vec<u64> = out.lines().map(str::parse).collect::<Result<_, _>>()?;
    ensure!(counts.len() == 2, "{out}");
    ensure!(
        counts[0] >= 284 && counts[1] == 300,
        "closed after 1 s and 4 s: {counts:?}"
    );
    ensure!(
        fds_during <= fds_before + 20,
        "descriptors {fds_before} -> {fds_during}"
    );
    let cpu = agent.cpu_time()? - cpu_before;
    ensure!(
        cpu < Duration::from_millis(400),
        "the agent used {cpu:?} of CPU in 4 s of flood"
    );
    let health = agent.cli(&["health"])?;
    ensure!(health.status.success(), "{}", String::from_utf8_lossy(&health.stderr));
    let metrics = alioth_tests::agent::metrics(&host)?;
    for (name, least) in [
        ("alioth_grpc_connections_refused_total", 200),
        ("alioth_grpc_connections_idle_closed_total", 1),
    ] {
        let value = alioth_tests::agent::metric(&metrics, name).with_context(|| format!("{name} in {metrics}"))?;
        ensure!(value >= least, "{name} {value}: {metrics}");
    }
    Ok(())
}

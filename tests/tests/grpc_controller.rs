//! The agent's gRPC surface with a real tonic client: unary and streaming goal state, ordering,
//! revisions, FULL vs DELTA, host_resources, health, reflection, malformed input.

use std::net::IpAddr;

use alioth_proto::schema::*;
use alioth_tests::goalstate::*;
use alioth_tests::grpc::Server;
use anyhow::{ensure, Result};
use tokio_stream::StreamExt;
use OperationStatus::*;
use OperationType::*;

const HOST: &str = "198.18.200.1";

async fn server() -> Result<Server> {
    Server::start(vec![HOST.parse::<IpAddr>()?]).await
}

fn ids(st: &[(String, OperationStatus)]) -> Vec<&str> {
    st.iter().map(|(id, _)| id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_answers_every_message_in_order() -> Result<()> {
    let server = server().await?;
    let mut client = server.client().await?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut replies = client
        .push_goal_states_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    const N: u32 = 40;
    // Many messages in flight: all are sent before any reply is read.
    for i in 0..N {
        let id = format!("vpc-{i}");
        let msg = GoalStateV2 {
            vpc_states: [(id.clone(), vpc(Create, &id, 1000 + i, 1, UpdateType::Delta))].into(),
            ..Default::default()
        };
        tx.send(msg).await?;
    }
    drop(tx);
    let mut n = 0;
    while let Some(reply) = replies.next().await {
        let st = statuses(&reply?);
        ensure!(st == [(format!("vpc-{n}"), Success)], "reply {n}: {st:?}");
        n += 1;
    }
    ensure!(n == N, "{n} replies for {N} messages");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_message_resolves_dependencies_whatever_the_order() -> Result<()> {
    let server = server().await?;
    let mut client = server.client().await?;
    let msg = GoalStateV2 {
        port_states: [(
            "p1".into(),
            port(Create, "p1", "v1", "s1", "198.18.1.10", "02:00:00:00:01:0a"),
        )]
        .into(),
        subnet_states: [("s1".into(), subnet(Create, "s1", "v1", 1))].into(),
        vpc_states: [("v1".into(), vpc(Create, "v1", 1001, 1, UpdateType::Delta))].into(),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(msg).await?;
    drop(tx);
    let mut replies = client
        .push_goal_states_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let st = statuses(&replies.next().await.expect("a reply")?);
    // The port's interface does not exist on this machine: programmed, waiting for it.
    ensure!(
        st == [("v1".into(), Success), ("s1".into(), Success), ("p1".into(), Pending)],
        "{st:?}"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn older_revisions_are_out_of_order_and_replays_are_idempotent() -> Result<()> {
    let server = server().await?;
    let mut c = server.client().await?;
    let push = |states: Vec<VpcState>| GoalState {
        vpc_states: states,
        ..Default::default()
    };
    let mut send = async |m: GoalState| -> Result<Vec<(String, OperationStatus)>> {
        Ok(statuses(&c.push_network_resource_states(m).await?.into_inner()))
    };
    ensure!(send(push(vec![vpc(Create, "v", 1001, 5, UpdateType::Delta)])).await?[0].1 == Success);
    ensure!(send(push(vec![vpc(Update, "v", 1002, 3, UpdateType::Delta)])).await?[0].1 == OutOfOrder);
    ensure!(
        send(push(vec![vpc(Create, "v", 1001, 5, UpdateType::Delta)])).await?[0].1 == Success,
        "replay"
    );
    ensure!(send(push(vec![vpc(Delete, "v", 1001, 6, UpdateType::Delta)])).await?[0].1 == Success);
    ensure!(
        send(push(vec![vpc(Create, "v", 1001, 4, UpdateType::Delta)])).await?[0].1 == OutOfOrder,
        "late create"
    );
    ensure!(send(push(vec![vpc(Create, "v", 1001, 7, UpdateType::Delta)])).await?[0].1 == Success);
    ensure!(
        send(push(vec![vpc(Get, "v", 0, 0, UpdateType::Delta)])).await?[0].1 == Success,
        "GET is a no-op"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn full_and_delta_touch_only_what_they_name() -> Result<()> {
    let server = server().await?;
    let mut c = server.client().await?;
    let mut send = async |m: GoalState| -> Result<Vec<(String, OperationStatus)>> {
        Ok(statuses(&c.push_network_resource_states(m).await?.into_inner()))
    };
    let v = |id: &str, vni, u| vpc(Create, id, vni, 0, u);
    let st = send(GoalState {
        vpc_states: vec![
            v("a", 1001, UpdateType::Delta),
            v("b", 1002, UpdateType::Delta),
            v("c", 1003, UpdateType::Delta),
        ],
        subnet_states: vec![subnet(Create, "sb", "b", 2)],
        ..Default::default()
    })
    .await?;
    ensure!(st.iter().all(|(_, s)| *s == Success), "{st:?}");
    // DELTA naming only a: b and c stay.
    let st = send(GoalState {
        vpc_states: vec![v("a", 1001, UpdateType::Delta)],
        ..Default::default()
    })
    .await?;
    ensure!(ids(&st) == ["a"], "{st:?}");
    // FULL naming only a: a's configuration is complete; b and c stay (Alcor's DPM marks every
    // port FULL, one port per message: absence is never a deletion).
    let st = send(GoalState {
        vpc_states: vec![v("a", 1001, UpdateType::Full)],
        ..Default::default()
    })
    .await?;
    ensure!(st == [("a".into(), Success)], "{st:?}");
    // b and c are still held: their VNIs are taken, and a DELETE of c finds it.
    let st = send(GoalState {
        vpc_states: vec![
            v("d", 1003, UpdateType::Full),
            vpc(Delete, "c", 1003, 0, UpdateType::Delta),
        ],
        ..Default::default()
    })
    .await?;
    ensure!(
        st == [("d".into(), InvalidArg), ("c".into(), Success)],
        "c was kept, so d may not take its VNI until c's DELETE: {st:?}"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn host_resources_select_what_this_host_applies() -> Result<()> {
    let server = server().await?;
    let mut client = server.client().await?;
    let listed = |ip: &str| -> (String, HostResources) {
        let r = ResourceIdType {
            r#type: ResourceType::Port as i32,
            id: "p1".into(),
        };
        (ip.into(), HostResources { resources: vec![r] })
    };
    let msg = |hosts: Vec<(String, HostResources)>| GoalStateV2 {
        host_resources: hosts.into_iter().collect(),
        vpc_states: [
            ("v1".into(), vpc(Create, "v1", 1001, 0, UpdateType::Delta)),
            ("v9".into(), vpc(Create, "v9", 1009, 0, UpdateType::Delta)),
        ]
        .into(),
        subnet_states: [("s1".into(), subnet(Create, "s1", "v1", 1))].into(),
        port_states: [(
            "p1".into(),
            port(Create, "p1", "v1", "s1", "198.18.1.10", "02:00:00:00:01:0a"),
        )]
        .into(),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(msg(vec![listed("198.18.201.1")])).await?;
    tx.send(msg(vec![listed(HOST)])).await?;
    drop(tx);
    let mut replies = client
        .push_goal_states_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let other = statuses(&replies.next().await.expect("reply 1")?);
    ensure!(
        other.is_empty(),
        "resources for another host are not applied: {other:?}"
    );
    let mine = statuses(&replies.next().await.expect("reply 2")?);
    // The port, plus the VPC and subnet it references; not the unrelated VPC v9.
    ensure!(ids(&mine) == ["v1", "s1", "p1"], "{mine:?}");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_reflection_answer() -> Result<()> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let server = server().await?;
    let mut health = HealthClient::new(server.channel().await?);
    for service in ["", "alcor.schema.GoalStateProvisioner"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await?
            .into_inner();
        ensure!(r.status == 1, "{service:?} is not SERVING: {r:?}");
    }
    // Both versions of reflection list the services.
    macro_rules! services {
        ($version:ident) => {{
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::$version::ServerReflectionRequest;
            let mut reflection = ServerReflectionClient::new(server.channel().await?);
            let req = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut resp = reflection
                .server_reflection_info(tokio_stream::iter([req]))
                .await?
                .into_inner();
            let Some(MessageResponse::ListServicesResponse(list)) =
                resp.next().await.expect("a response")?.message_response
            else {
                anyhow::bail!("not a service list");
            };
            list.service.into_iter().map(|s| s.name).collect::<Vec<String>>()
        }};
    }
    for names in [services!(v1), services!(v1alpha)] {
        ensure!(
            names.iter().any(|n| n == "alcor.schema.GoalStateProvisioner"),
            "{names:?}"
        );
        ensure!(names.iter().any(|n| n == "grpc.health.v1.Health"), "{names:?}");
    }
    server.stop().await
}

/// Field 2 of GoalState (vpc_states) is a message; sending a varint there is malformed protobuf.
#[derive(Clone, PartialEq, prost::Message)]
struct Malformed {
    #[prost(uint64, tag = "2")]
    vpc_states: u64,
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_protobuf_is_a_clean_error_and_the_agent_carries_on() -> Result<()> {
    let server = server().await?;
    let mut grpc = tonic::client::Grpc::new(server.channel().await?);
    grpc.ready().await?;
    let codec = tonic_prost::ProstCodec::<Malformed, GoalStateOperationReply>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/alcor.schema.GoalStateProvisioner/PushNetworkResourceStates",
    );
    let err = grpc
        .unary(tonic::Request::new(Malformed { vpc_states: 7 }), path, codec)
        .await
        .expect_err("must be refused");
    ensure!(
        matches!(err.code(), tonic::Code::Internal | tonic::Code::InvalidArgument),
        "{err:?}"
    );
    // The same bytes as a GoalStateV2 (field 2: host_resources, a map) on the stream.
    grpc.ready().await?;
    let codec = tonic_prost::ProstCodec::<Malformed, GoalStateOperationReply>::default();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/alcor.schema.GoalStateProvisioner/PushGoalStatesStream");
    let outbound = tokio_stream::iter([Malformed { vpc_states: 7 }]);
    let err = match grpc.streaming(tonic::Request::new(outbound), path, codec).await {
        Ok(replies) => replies.into_inner().message().await.expect_err("must be refused"),
        Err(status) => status,
    };
    ensure!(
        matches!(err.code(), tonic::Code::Internal | tonic::Code::InvalidArgument),
        "{err:?}"
    );
    let mut client = server.client().await?;
    let ok = client
        .push_network_resource_states(GoalState {
            vpc_states: vec![vpc(Create, "v", 1001, 0, UpdateType::Delta)],
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(statuses(&ok) == [("v".into(), Success)]);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_report_resources_latency_outcomes_and_packet_counters() -> Result<()> {
    let server = server().await?;
    let mut c = server.client().await?;
    let msg = GoalState {
        vpc_states: vec![
            vpc(Create, "v", 1001, 0, UpdateType::Delta),
            vpc(Create, "bad", 0, 0, UpdateType::Delta),
        ],
        ..Default::default()
    };
    c.push_network_resource_states(msg).await?;
    let (status, body) = server.http_get("/metrics").await?;
    ensure!(status.contains("200"), "{status}");
    for line in [
        "alioth_resources{type=\"vpc\"} 1",
        "alioth_apply_seconds_count 1",
        "alioth_resource_operations_total{status=\"SUCCESS\"} 1",
        "alioth_resource_operations_total{status=\"INVALID_ARG\"} 1",
        "alioth_packets_total{action=\"arp_reply\"} 0",
        "alioth_drops_total{reason=\"arp_unknown_target\"} 0",
        "alioth_build_info{version=\"0.1.0\"} 1",
        "alioth_grpc_connections 1",
    ] {
        ensure!(body.lines().any(|l| l == line), "missing {line:?} in:\n{body}");
    }
    // The process metrics every exporter has, and OpenMetrics' end marker.
    for prefix in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
    ] {
        ensure!(
            body.lines().any(|l| l.starts_with(prefix)),
            "missing {prefix:?} in:\n{body}"
        );
    }
    ensure!(body.ends_with("# EOF\n"), "{body}");
    // A port whose tap does not exist waits for it, and says so.
    let msg = GoalState {
        subnet_states: vec![subnet(Create, "s", "v", 1)],
        port_states: vec![port(Create, "p-waits", "v", "s", "198.18.1.10", "02:00:c6:12:01:0a")],
        ..Default::default()
    };
    c.push_network_resource_states(msg).await?;
    let (_, body) = server.http_get("/metrics").await?;
    ensure!(body.lines().any(|l| l == "alioth_pending_ports 1"), "{body}");
    let (status, body) = server.http_get("/healthz").await?;
    ensure!(status.contains("200") && body == "ok\n", "{status} {body}");
    let (status, _) = server.http_get("/nope").await?;
    ensure!(status.contains("404"), "{status}");
    server.stop().await
}

/// A message large enough for its record rows to be encoded beside its map writes: recorded,
/// it survives a SIGKILL, so the restarted agent takes it again as an idempotent replay and still
/// knows its revisions.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_message_is_recorded_and_survives_sigkill() -> Result<()> {
    let neighbor = |n: u32, revision: u32| NeighborState {
        operation_type: Create as i32,
        configuration: Some(NeighborConfiguration {
            id: format!("big-n{n}"),
            vpc_id: "big".into(),
            mac_address: format!("02:00:00:00:{:02x}:{:02x}", n >> 8, n & 0xff),
            host_ip_address: "198.19.0.2".into(),
            revision_number: revision,
            fixed_ips: vec![neighbor_configuration::FixedIp {
                subnet_id: "big-s".into(),
                ip_address: format!("198.18.{}.{}", 20 + n / 200, 10 + n % 200),
                ..Default::default()
            }],
            ..Default::default()
        }),
    };
    let mut big = GoalState {
        vpc_states: vec![vpc(Create, "big", 1900, 1, UpdateType::Delta)],
        subnet_states: vec![SubnetState {
            operation_type: Create as i32,
            configuration: Some(SubnetConfiguration {
                id: "big-s".into(),
                vpc_id: "big".into(),
                cidr: "198.18.0.0/15".into(),
                ..Default::default()
            }),
        }],
        ..Default::default()
    };
    big.neighbor_states = (0..1000).map(|n| neighbor(n, 5)).collect();
    let agent = alioth_tests::agent::Agent::start_local(&["--bpf-log-level", "off"])?;
    let push = async |agent: &alioth_tests::agent::Agent, m: GoalState| -> Result<Vec<(String, OperationStatus)>> {
        let channel = alioth::cli::connect(&agent.listen, &alioth::cli::ClientTls::default()).await?;
        let mut c = alioth_proto::schema::goal_state_provisioner_client::GoalStateProvisionerClient::new(channel)
            .max_decoding_message_size(64 << 20);
        Ok(statuses(&c.push_network_resource_states(m).await?.into_inner()))
    };
    let first = push(&agent, big.clone()).await?;
    ensure!(
        first.len() == 1002 && first.iter().all(|(_, s)| *s == Success),
        "{first:?}"
    );
    let agent = alioth_tests::agent::Agent::restart_local(agent.kill()?, &["--bpf-log-level", "off"])?;
    // Asked first, before anything is pushed again: only the record can know revision 5.
    let older = GoalState {
        neighbor_states: vec![neighbor(999, 4)],
        ..Default::default()
    };
    let older = push(&agent, older).await?;
    ensure!(older[0].1 == OutOfOrder, "the record kept revision 5: {older:?}");
    let again = push(&agent, big).await?;
    ensure!(
        again.iter().all(|(_, s)| *s == Success),
        "replay after the restart: {again:?}"
    );
    Ok(())
}

/// `--listen unix:PATH`: goal state, health and the CLI over a unix socket that only root may
/// use; a socket a killed agent left is taken over, and a bad address is refused up front.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_serves_goal_state_on_a_unix_socket() -> Result<()> {
    use alioth_tests::agent::Agent;
    use std::os::unix::fs::PermissionsExt;

    let dir = alioth_tests::netns::Scratch::new("alioth-uds-")?;
    let listen = format!("unix:{}", dir.path("run/grpc.sock"));
    let args = [
        "--listen",
        listen.as_str(),
        "--bpf-log-level",
        "off",
        "--metrics-listen",
        "off",
    ];
    let agent = Agent::start_local(&args)?;
    let socket = std::path::Path::new(&listen["unix:".len()..]).to_path_buf();
    let mode = std::fs::metadata(&socket)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "socket mode {mode:o}");

    let channel = alioth::cli::connect(&listen, &alioth::cli::ClientTls::default()).await?;
    let mut client = alioth_proto::schema::goal_state_provisioner_client::GoalStateProvisionerClient::new(channel);
    let msg = GoalState {
        vpc_states: vec![vpc(Create, "uds", 1950, 1, UpdateType::Delta)],
        ..Default::default()
    };
    let reply = statuses(&client.push_network_resource_states(msg.clone()).await?.into_inner());
    ensure!(reply == [("uds".to_string(), Success)], "{reply:?}");
    let health = agent.cli(&["health"])?;
    ensure!(health.status.success(), "{}", String::from_utf8_lossy(&health.stderr));

    // Killed, the agent leaves its socket behind; the next one replaces it and answers.
    let agent = Agent::restart_local(agent.kill()?, &args)?;
    ensure!(socket.exists());
    let file = dir.path("vpc.json");
    std::fs::write(&file, serde_json::to_vec(&msg)?)?;
    let out = agent.cli(&["apply", "-f", &file])?;
    ensure!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Stopped, it removes the socket.
    let (status, left) = agent.stop()?;
    ensure!(
        status.success() && !socket.exists(),
        "{status}; socket left: {}",
        socket.exists()
    );
    left.reset()?;

    // Neither an empty path nor a file that is not a socket is listened on.
    let bin = alioth_tests::agent::alioth_bin()?;
    let plain = dir.path("not-a-socket");
    std::fs::write(&plain, "keep me")?;
    for (listen, expect) in [
        ("unix:", "needs a socket path"),
        (&*format!("unix:{plain}"), "not a socket"),
    ] {
        let out = alioth_tests::netns::run_output(&[bin.to_str().unwrap_or_default(), "agent", "--listen", listen])?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && err.contains(expect),
            "--listen {listen}: {err}"
        );
    }
    ensure!(std::fs::read_to_string(&plain)? == "keep me");
    Ok(())
}

/// Neighbors against this host's ports: one of our own ports named as a neighbor (DPM V2 lists
/// them) is a no-op, a DELETE of it included; a local port's MAC with other addresses, and a host
/// that cannot be a tunnel endpoint, are refused; no host at all is accepted as unresolved.
#[tokio::test(flavor = "multi_thread")]
async fn neighbors_are_checked_against_this_hosts_ports() -> Result<()> {
    let server = server().await?;
    let mut c = server.client().await?;
    let mut send = async |m: GoalState| -> Result<Vec<(String, OperationStatus)>> {
        Ok(statuses(&c.push_network_resource_states(m).await?.into_inner()))
    };
    let mac = "02:00:00:00:01:0a";
    let st = send(GoalState {
        vpc_states: vec![vpc(Create, "v", 1001, 0, UpdateType::Delta)],
        subnet_states: vec![subnet(Create, "s", "v", 1)],
        port_states: vec![port(Create, "p1", "v", "s", "198.18.1.10", mac)],
        ..Default::default()
    })
    .await?;
    // No tap here: the port waits for its interface, and is held all the same.
    ensure!(
        st == [("v".into(), Success), ("s".into(), Success), ("p1".into(), Pending)],
        "{st:?}"
    );
    let n = |op: OperationType, id: &str, mac: &str, host: &str, ip: &str| NeighborState {
        operation_type: op as i32,
        configuration: Some(NeighborConfiguration {
            id: id.into(),
            vpc_id: "v".into(),
            mac_address: mac.into(),
            host_ip_address: host.into(),
            fixed_ips: vec![neighbor_configuration::FixedIp {
                subnet_id: "s".into(),
                ip_address: ip.into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
    };
    let st = send(GoalState {
        neighbor_states: vec![
            n(Create, "p1", mac, "198.19.0.1", "198.18.1.10"),
            n(Create, "p1-by-mac", mac, "198.19.0.1", "198.18.1.10"),
            n(Create, "mac-thief", mac, "198.19.0.2", "198.18.1.30"),
            n(Create, "any-host", "02:00:00:00:01:31", "0.0.0.0", "198.18.1.31"),
            n(
                Create,
                "all-hosts",
                "02:00:00:00:01:32",
                "255.255.255.255",
                "198.18.1.32",
            ),
            n(Create, "no-host-yet", "02:00:00:00:01:33", "", "198.18.1.33"),
            n(Delete, "p1", mac, "198.19.0.1", "198.18.1.10"),
        ],
        ..Default::default()
    })
    .await?;
    let want = [
        ("p1", Success),
        ("p1-by-mac", Success),
        ("mac-thief", InvalidArg),
        ("any-host", InvalidArg),
        ("all-hosts", InvalidArg),
        ("no-host-yet", Success),
        ("p1", Success),
    ];
    ensure!(st.iter().map(|(i, s)| (i.as_str(), *s)).eq(want), "{st:?}");
    // The port outlived the DELETE of its neighbor twin: its subnet is still in use.
    let st = send(GoalState {
        subnet_states: vec![subnet(Delete, "s", "v", 1)],
        ..Default::default()
    })
    .await?;
    ensure!(st == [("s".to_string(), Failure)], "{st:?}");
    server.stop().await
}

/// DELTA completes a held resource with what it leaves unset, and replaces what it sets (a list
/// whole); FULL replaces the whole configuration. What the agent then holds shows in what later
/// messages may do.
#[tokio::test(flavor = "multi_thread")]
async fn delta_merges_into_what_is_held_and_full_replaces_it() -> Result<()> {
    let server = server().await?;
    let mut c = server.client().await?;
    let mut send = async |m: GoalState| -> Result<Vec<(String, OperationStatus)>> {
        Ok(statuses(&c.push_network_resource_states(m).await?.into_inner()))
    };
    let mac = "02:00:00:00:01:0a";
    let mut s1 = subnet(Create, "s", "v", 1);
    if let Some(cfg) = s1.configuration.as_mut() {
        cfg.gateway = Some(subnet_configuration::Gateway {
            ip_address: "198.18.1.1".into(),
            mac_address: "0a:58:c6:12:01:01".into(),
        });
    }
    let st = send(GoalState {
        vpc_states: vec![vpc(Create, "v", 1001, 0, UpdateType::Delta)],
        subnet_states: vec![s1],
        port_states: vec![port(Create, "p1", "v", "s", "198.18.1.10", mac)],
        ..Default::default()
    })
    .await?;
    ensure!(st.iter().all(|(_, s)| matches!(s, Success | Pending)), "{st:?}");
    // A DELTA that names only the port's addresses: it moves to .11 and keeps its VPC and MAC.
    let moved = PortState {
        operation_type: Update as i32,
        configuration: Some(PortConfiguration {
            id: "p1".into(),
            fixed_ips: vec![port_configuration::FixedIp {
                subnet_id: "s".into(),
                ip_address: "198.18.1.11".into(),
            }],
            ..Default::default()
        }),
    };
    let st = send(GoalState {
        port_states: vec![moved],
        ..Default::default()
    })
    .await?;
    ensure!(matches!(st[0].1, Success | Pending), "{st:?}");
    let st = send(GoalState {
        port_states: vec![
            port(Create, "p2", "v", "s", "198.18.1.10", "02:00:00:00:01:0b"),
            port(Create, "p3", "v", "s", "198.18.1.11", "02:00:00:00:01:0c"),
            port(Create, "p4", "v", "s", "198.18.1.12", mac),
        ],
        ..Default::default()
    })
    .await?;
    let got: Vec<(&str, bool)> = st.iter().map(|(i, s)| (i.as_str(), *s == InvalidArg)).collect();
    ensure!(
        got == [("p2", false), ("p3", true), ("p4", true)],
        ".10 is free, .11 and the MAC are p1's: {st:?}"
    );
    // A DELTA subnet that names only its DNS keeps its gateway; a FULL one without a gateway has
    // none, and its address is free for a port.
    let gateway_port = || port(Create, "p5", "v", "s", "198.18.1.1", "02:00:00:00:01:0d");
    let mut dns_only = subnet(Update, "s", "v", 1);
    if let Some(cfg) = dns_only.configuration.as_mut() {
        cfg.cidr = String::new();
        cfg.dns_entry_list = vec![subnet_configuration::DnsEntry {
            entry: "198.18.1.2".into(),
        }];
    }
    let st = send(GoalState {
        subnet_states: vec![dns_only],
        port_states: vec![gateway_port()],
        ..Default::default()
    })
    .await?;
    // (A subnet whose ports wait for their taps answers PENDING.)
    ensure!(
        matches!(st[0].1, Success | Pending) && st[1].1 == InvalidArg,
        "the gateway stays: {st:?}"
    );
    let mut full = subnet(Update, "s", "v", 1);
    if let Some(cfg) = full.configuration.as_mut() {
        cfg.update_type = UpdateType::Full as i32;
    }
    let st = send(GoalState {
        subnet_states: vec![full],
        port_states: vec![gateway_port()],
        ..Default::default()
    })
    .await?;
    ensure!(
        matches!(st[0].1, Success | Pending) && matches!(st[1].1, Success | Pending),
        "no gateway any more: {st:?}"
    );
    server.stop().await
}

/// A VPC's VNI is its tunnel_id, else the one its subnets in the message carry (DPM's shape); any
/// disagreement is refused. INFO states define what the agent does not hold.
#[tokio::test(flavor = "multi_thread")]
async fn a_vpcs_vni_comes_from_itself_or_its_subnets_and_a_conflict_is_refused() -> Result<()> {
    let server = server().await?;
    let mut c = server.client().await?;
    let mut send = async |m: GoalState| -> Result<Vec<(String, OperationStatus)>> {
        Ok(statuses(&c.push_network_resource_states(m).await?.into_inner()))
    };
    let info_vpc = |id: &str, vni| vpc(Info, id, vni, 1, UpdateType::Delta);
    let info_subnet = |id: &str, vpc_id: &str, third, vni: u64| {
        let mut s = subnet(Info, id, vpc_id, third);
        if let Some(c) = s.configuration.as_mut() {
            c.tunnel_id = vni;
            c.revision_number = 1;
        }
        s
    };
    let msg = |vpcs, subnets| GoalState {
        vpc_states: vpcs,
        subnet_states: subnets,
        ..Default::default()
    };
    // From the subnet.
    let st = send(msg(vec![info_vpc("a", 0)], vec![info_subnet("sa", "a", 1, 3001)])).await?;
    ensure!(st == [("a".into(), Success), ("sa".into(), Success)], "{st:?}");
    // The VPC's own and its subnet's disagree; two subnets disagree; neither has one.
    let st = send(msg(vec![info_vpc("b", 3002)], vec![info_subnet("sb", "b", 2, 3003)])).await?;
    ensure!(st[0] == ("b".into(), InvalidArg), "{st:?}");
    let st = send(msg(
        vec![info_vpc("c", 0)],
        vec![info_subnet("sc1", "c", 3, 3004), info_subnet("sc2", "c", 4, 3005)],
    ))
    .await?;
    ensure!(st[0] == ("c".into(), InvalidArg), "{st:?}");
    let st = send(msg(vec![info_vpc("d", 0)], vec![])).await?;
    ensure!(st == [("d".into(), InvalidArg)], "{st:?}");
    // The VNI taken from a subnet is the VPC's: another VPC may not have it.
    let st = send(msg(vec![vpc(Create, "e", 3001, 0, UpdateType::Delta)], vec![])).await?;
    ensure!(st == [("e".into(), InvalidArg)], "3001 is a's: {st:?}");
    server.stop().await
}

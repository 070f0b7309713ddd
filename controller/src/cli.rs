//! Client subcommands: `apply` (gRPC), and `status`, `ports`, `stats` (read the pinned maps).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use alioth_common::maps::{self, Endpoint, EndpointKey, PortEntry};
use alioth_common::Counter;
use alioth_proto::schema::goal_state_provisioner_client::GoalStateProvisionerClient;
use alioth_proto::schema::{
    GoalState, GoalStateOperationReply, GoalStateV2, OperationStatus, OperationType, ResourceType,
};
use anyhow::{bail, Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use serde_json::json;

use crate::agent::DEFAULT_PIN_DIR;
use crate::dataplane::sum_counters;
use crate::goalstate::model::format_mac;
use crate::net::interfaces::{ifname, interfaces};

/// Exit code of `apply` when the agent refused some resources.
pub const EXIT_NOT_ALL_APPLIED: i32 = 3;

#[derive(Clone, Debug, clap::Args)]
pub struct ApplyArgs {
    /// Goal-state file (YAML or JSON, proto3 JSON mapping of alcor.schema.GoalState); `-` reads stdin.
    #[arg(short, long)]
    pub file: PathBuf,
    /// Agent address: host:port, a URL, or unix:PATH.
    #[arg(long, default_value = "http://127.0.0.1:50001", env = "ALIOTH_SERVER")]
    pub server: String,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also delete what the agent holds and the file does not name (a V1 file), listed before it
    /// is sent. Goal state itself never deletes what a message leaves out.
    #[arg(long)]
    pub prune: bool,
    /// The agent's state directory, where --prune reads what it holds (nothing is written).
    #[arg(long, default_value = crate::agent::DEFAULT_STATE_DIR, env = "ALIOTH_STATE_DIR")]
    pub state_dir: PathBuf,
    #[command(flatten)]
    pub tls: ClientTls,
}

/// TLS towards an agent started with --tls-cert (https:// addresses imply TLS too).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClientTls {
    /// CA (PEM) that issued the agent's certificate.
    #[arg(long, env = "ALIOTH_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), for agents that verify clients.
    #[arg(long, env = "ALIOTH_TLS_CLIENT_CERT", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-client-cert.
    #[arg(long, env = "ALIOTH_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
    /// Name to verify the agent's certificate against (default: the address's host).
    #[arg(long)]
    pub tls_domain: Option<String>,
}

/// A channel to the agent at `server` (host:port, URL or unix:PATH), over TLS when asked for.
pub async fn connect(server: &str, tls: &ClientTls) -> Result<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let secure = server.starts_with("https://") || tls.tls_ca.is_some() || tls.tls_client_cert.is_some();
    let scheme = if secure { "https" } else { "http" };
    let socket = server.strip_prefix("unix:").map(PathBuf::from);
    let url = match (&socket, server.split_once("://")) {
        // The URL only names the HTTP/2 authority; the connector below dials the socket.
        (Some(_), _) => format!("{scheme}://localhost"),
        (None, Some((_, rest))) => format!("{scheme}://{rest}"),
        (None, None) => format!("{scheme}://{server}"),
    };
    let mut endpoint = Endpoint::from_shared(url.clone())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(crate::agent::H2_WINDOW)
        .initial_connection_window_size(2 * crate::agent::H2_WINDOW);
    if secure {
        let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("read {}", p.display()));
        let mut cfg = ClientTlsConfig::new();
        if let Some(ca) = &tls.tls_ca {
            cfg = cfg.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&tls.tls_client_cert, &tls.tls_client_key) {
            cfg = cfg.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(domain) = &tls.tls_domain {
            cfg = cfg.domain_name(domain.clone());
        }
        endpoint = endpoint.tls_config(cfg).context("TLS configuration")?;
    }
    match socket {
        Some(path) => {
            let dial = path.clone();
            endpoint
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let path = dial.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await
                .with_context(|| format!("connect to the agent at unix:{}", path.display()))
        }
        None => endpoint
            .connect()
            .await
            .with_context(|| format!("connect to the agent at {url}")),
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct InspectArgs {
    /// The agent's bpffs pin directory.
    #[arg(long, default_value = DEFAULT_PIN_DIR, env = "ALIOTH_PIN_DIR")]
    pub pin_dir: PathBuf,
    /// The agent's state directory (`status` lists damaged records kept there).
    #[arg(long, default_value = crate::agent::DEFAULT_STATE_DIR, env = "ALIOTH_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Reads a goal-state file: YAML or JSON in the proto3 JSON mapping.
/// A goal-state file: `GoalState` (V1, resources in lists, sent unary) or `GoalStateV2` (maps
/// keyed by id and `host_resources`, sent over the stream, as Alcor's DPM V2 and NCM do).
#[derive(Debug)]
pub enum GoalStateFile {
    V1(GoalState),
    V2(GoalStateV2),
}

pub fn read_goal_state(path: &Path) -> Result<GoalStateFile> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("read goal state from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?
    };
    parse_goal_state_file(&text).with_context(|| format!("{} is not a valid goal state", path.display()))
}

/// V2 when the document has `host_resources` or any resource field shaped as a map.
pub fn parse_goal_state_file(text: &str) -> Result<GoalStateFile> {
    // YAML is a superset of JSON, so one parser reads both.
    let value: serde_json::Value = serde_norway::from_str(text).context("not YAML/JSON")?;
    let v2 = value.as_object().is_some_and(|o| {
        o.iter().any(|(k, v)| {
            matches!(k.as_str(), "hostResources" | "host_resources") || (k.ends_with("tates") && v.is_object())
        })
    });
    if v2 {
        let msg = schema_value(value).context("does not match alcor.schema.GoalStateV2")?;
        return Ok(GoalStateFile::V2(msg));
    }
    schema_value(value)
        .map(GoalStateFile::V1)
        .context("does not match alcor.schema.GoalState")
}

/// `value` as a message, an error naming the field's path (`portStates[2].configuration.macAddress`).
fn schema_value<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| anyhow::anyhow!("at {}: {}", e.path(), e.inner()))
}

pub async fn apply(args: ApplyArgs) -> Result<i32> {
    let mut msg = read_goal_state(&args.file)?;
    if args.prune {
        let GoalStateFile::V1(m) = &mut msg else {
            bail!("--prune takes a GoalState (V1) file: a GoalStateV2 names only what it changes");
        };
        let held = crate::store::Store::read(&args.state_dir)
            .with_context(|| format!("read what the agent holds in {}", args.state_dir.display()))?;
        let deletions = crate::goalstate::prune::deletions(&held, m);
        for line in crate::goalstate::prune::describe(&deletions) {
            // Before the reply, and out of the way of --json's output.
            eprintln!("prune: DELETE {line}");
        }
        crate::goalstate::prune::append(m, deletions);
    }
    let server = args.server.clone();
    let mut client = GoalStateProvisionerClient::new(connect(&server, &args.tls).await?)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let reply = match msg {
        GoalStateFile::V1(msg) => client
            .push_network_resource_states(msg)
            .await
            .with_context(|| format!("PushNetworkResourceStates to {server}"))?
            .into_inner(),
        // One message on a stream of its own, as NCM sends it, and its one reply.
        GoalStateFile::V2(msg) => {
            let mut replies = client
                .push_goal_states_stream(tokio_stream::iter([msg]))
                .await
                .with_context(|| format!("PushGoalStatesStream to {server}"))?
                .into_inner();
            replies
                .message()
                .await
                .with_context(|| format!("PushGoalStatesStream to {server}"))?
                .context("the stream closed without a reply")?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        print!("{}", reply_table(&reply));
    }
    let all_ok = reply.operation_statuses.iter().all(|s| {
        matches!(
            OperationStatus::try_from(s.operation_status),
            Ok(OperationStatus::Success | OperationStatus::Pending)
        )
    });
    Ok(if all_ok { 0 } else { EXIT_NOT_ALL_APPLIED })
}

pub fn reply_table(reply: &GoalStateOperationReply) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<40} {:<8} {:<12} {:>9} {:>9} {:>9}  REASON",
        "TYPE", "ID", "OP", "STATUS", "DP_US", "NET_US", "TOTAL_US"
    );
    for s in &reply.operation_statuses {
        let t = ResourceType::try_from(s.resource_type)
            .map(|t| t.as_str_name())
            .unwrap_or("?");
        let op = OperationType::try_from(s.operation_type)
            .map(|t| t.as_str_name())
            .unwrap_or("?");
        let st = OperationStatus::try_from(s.operation_status)
            .map(|t| t.as_str_name())
            .unwrap_or("?");
        let line = format!(
            "{t:<10} {:<40} {op:<8} {st:<12} {:>9} {:>9} {:>9}  {}",
            s.resource_id, s.dataplane_programming_time, s.network_configuration_time, s.state_elapse_time, s.reason
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let _ = writeln!(out, "message total: {} us", reply.message_total_operation_time);
    out
}

fn open_map(pin_dir: &Path, name: &str) -> Result<MapData> {
    // The agent's pins are on the machine's bpffs, also when this runs under `ip netns exec`.
    crate::dataplane::bpffs::ensure(pin_dir, false)?;
    let path = pin_dir.join(name);
    if !path.exists() {
        bail!(
            "{} does not exist: is the agent running with --pin-dir {}?",
            path.display(),
            pin_dir.display()
        );
    }
    MapData::from_pin(&path).with_context(|| format!("open pinned map {}", path.display()))
}

/// Summed per-CPU counters, in `Counter::ALL` order.
pub fn read_stats(pin_dir: &Path) -> Result<Vec<(Counter, u64)>> {
    let map: PerCpuArray<_, u64> = PerCpuArray::try_from(Map::PerCpuArray(open_map(pin_dir, maps::STATS)?))?;
    sum_counters(&map)
}

pub fn stats(args: InspectArgs) -> Result<()> {
    let stats = read_stats(&args.pin_dir)?;
    if args.json {
        let obj: serde_json::Map<String, serde_json::Value> =
            stats.iter().map(|(c, v)| (c.name().to_string(), json!(v))).collect();
        println!("{}", serde_json::Value::Object(obj));
    } else {
        println!("{:<28} {:>14}", "COUNTER", "PACKETS");
        for (c, v) in stats {
            println!("{:<28} {:>14}", c.name(), v);
        }
    }
    Ok(())
}

/// Programmed ports among this network namespace's interfaces.
fn read_ports(pin_dir: &Path) -> Result<Vec<(u32, PortEntry)>> {
    let map: Array<_, PortEntry> = Array::try_from(Map::Array(open_map(pin_dir, maps::PORTS)?))?;
    let mut ports = Vec::new();
    for (index, _) in interfaces() {
        if index < maps::MAX_IFINDEX {
            let entry = map.get(&index, 0)?;
            if entry.is_programmed() {
                ports.push((index, entry));
            }
        }
    }
    Ok(ports)
}

pub fn ports(args: InspectArgs) -> Result<()> {
    let ports = read_ports(&args.pin_dir)?;
    // Which port and VPC each interface is, from the agent's record (when it can be read here).
    let owners: std::collections::HashMap<String, (String, String)> = args
        .state_dir
        .exists()
        .then(|| crate::store::Store::read(&args.state_dir).ok())
        .flatten()
        .map(|state| {
            state
                .ports()
                .values()
                .map(|p| (p.iface.clone(), (p.id.to_string(), p.vpc_id.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let rows: Vec<serde_json::Value> = ports
        .iter()
        .map(|(i, p)| {
            let iface = ifname(*i).unwrap_or_default();
            let (port, vpc) = owners.get(&iface).cloned().unwrap_or_default();
            json!({
                "ifindex": i,
                "iface": iface,
                "port_id": port,
                "vpc_id": vpc,
                "mac": format_mac(&p.mac),
                "ip": std::net::Ipv4Addr::from(p.ip).to_string(),
                "vni": p.vni,
            })
        })
        .collect();
    if args.json {
        println!("{}", serde_json::Value::Array(rows));
    } else {
        println!(
            "{:<8} {:<16} {:<38} {:<24} {:<18} {:<16} {:>8}",
            "IFINDEX", "IFACE", "PORT", "VPC", "MAC", "IP", "VNI"
        );
        let text = |r: &serde_json::Value, k: &str| r[k].as_str().filter(|s| !s.is_empty()).unwrap_or("-").to_string();
        for r in rows {
            println!(
                "{:<8} {:<16} {:<38} {:<24} {:<18} {:<16} {:>8}",
                r["ifindex"],
                text(&r, "iface"),
                text(&r, "port_id"),
                text(&r, "vpc_id"),
                text(&r, "mac"),
                text(&r, "ip"),
                r["vni"]
            );
        }
    }
    Ok(())
}

pub fn status(args: InspectArgs) -> Result<()> {
    let ports = read_ports(&args.pin_dir)?;
    let endpoints: BpfHashMap<_, EndpointKey, Endpoint> =
        BpfHashMap::try_from(Map::HashMap(open_map(&args.pin_dir, maps::ENDPOINTS)?))?;
    let n_endpoints = endpoints.keys().count();
    let ifaces: Vec<String> = ports
        .iter()
        .map(|(i, _)| ifname(*i).unwrap_or_else(|| format!("ifindex {i}")))
        .collect();
    let damaged = crate::store::damaged_copies(&args.state_dir);
    if args.json {
        println!(
            "{}",
            json!({
                "pin_dir": args.pin_dir.display().to_string(),
                "attached": ifaces,
                "maps": { "PORTS": { "entries": ports.len(), "max_ifindex": maps::MAX_IFINDEX },
                          "ENDPOINTS": { "entries": n_endpoints, "max": maps::MAX_ENDPOINTS } },
                "record": { "state_dir": args.state_dir.display().to_string(), "damaged_copies": damaged },
            })
        );
    } else {
        println!("pin dir:    {}", args.pin_dir.display());
        println!(
            "attached:   {}",
            if ifaces.is_empty() {
                "-".to_string()
            } else {
                ifaces.join(", ")
            }
        );
        println!("PORTS:      {} (ifindex < {})", ports.len(), maps::MAX_IFINDEX);
        println!("ENDPOINTS:  {} / {}", n_endpoints, maps::MAX_ENDPOINTS);
        if !damaged.is_empty() {
            println!(
                "RECORD:     DAMAGED: the agent started from what it could read and kept the data plane as \
                 it was; entries it lacks stay until goal state replaces them or `alioth agent --reset`. \
                 Copies: {}",
                damaged.join(", ")
            );
        }
    }
    Ok(())
}

#[derive(Clone, Debug, clap::Args)]
pub struct HealthArgs {
    /// Agent address: host:port, a URL, or unix:PATH.
    #[arg(long, default_value = "http://127.0.0.1:50001", env = "ALIOTH_SERVER")]
    pub server: String,
    /// Service to check; empty = the whole server.
    #[arg(long, default_value = "")]
    pub service: String,
    #[command(flatten)]
    pub tls: ClientTls,
}

/// The standard gRPC health check (what the DaemonSet's probes ask); exits 0 only when SERVING.
pub async fn health(args: HealthArgs) -> Result<i32> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
    let server = args.server.clone();
    let channel = connect(&server, &args.tls).await?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: args.service.clone(),
        })
        .await
        .with_context(|| format!("health check of {server}"))?
        .into_inner();
    let status = ServingStatus::try_from(reply.status).unwrap_or(ServingStatus::Unknown);
    println!("{}", status.as_str_name());
    Ok(if status == ServingStatus::Serving { 0 } else { 2 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goalstate::model::State;
    use crate::goalstate::validate::{validate, Naming};

    fn example(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every resource of a message accepted by a fresh agent.
    fn all_accepted(msg: &GoalState) {
        let (outcomes, _) = validate(&mut State::default(), msg, &Naming::default());
        assert!(!outcomes.is_empty());
        for o in &outcomes {
            assert_eq!(
                o.status,
                OperationStatus::Success,
                "{} {:?}: {:?}",
                o.id,
                o.resource_type,
                o.reason
            );
        }
    }

    /// The DPM-shaped examples read as the message versions they are, and a fresh agent accepts all
    /// of them (the V2 one through its host's share of `host_resources`).
    #[test]
    fn dpm_examples_are_read_as_their_version_and_accepted() {
        let GoalStateFile::V1(v1) = parse_goal_state_file(&example("alcor-dpm-v1.yaml")).unwrap() else {
            panic!("alcor-dpm-v1.yaml is a GoalState");
        };
        assert!(v1
            .dhcp_states
            .iter()
            .all(|d| d.configuration.as_ref().unwrap().id.is_empty()));
        all_accepted(&v1);
        let GoalStateFile::V2(v2) = parse_goal_state_file(&example("alcor-dpm-v2.yaml")).unwrap() else {
            panic!("alcor-dpm-v2.yaml is a GoalStateV2");
        };
        let host = ["198.19.0.1".parse().unwrap()];
        let msg = crate::api::hosts::for_host(v2.into(), &host);
        assert_eq!(
            msg.neighbor_states.len(),
            2,
            "both L2 entries, this host's own port included"
        );
        all_accepted(&msg);
        for file in ["demo.yaml", "invalid.yaml"] {
            assert!(
                matches!(parse_goal_state_file(&example(file)), Ok(GoalStateFile::V1(_))),
                "{file}"
            );
        }
    }

    /// A mistake deep in a file is reported with the path to it, as the file spells it.
    #[test]
    fn a_wrong_field_is_named_by_its_path() {
        let yaml = "portStates:\n  - operationType: CREATE\n    configuration: {id: p1}\n  - operationType: CREATE\n    configuration:\n      id: p2\n      macAddress: [1, 2]\n";
        let e = format!("{:#}", parse_goal_state_file(yaml).unwrap_err());
        assert!(e.contains("portStates[1].configuration.macAddress"), "{e}");
    }
}

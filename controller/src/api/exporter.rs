//! The Prometheus exporter: `/metrics` (OpenMetrics text, by `prometheus-client`) and `/healthz`
//! over HTTP (axum). A scrape reads what the controller holds and counts, the data plane's
//! counters, the gRPC server's admission gates, and this process.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use crate::api::admission::AdmissionStats;
use crate::controller::metrics::Label;
use crate::controller::Controller;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A gauge of `v`.
fn gauge(v: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    g
}

/// A counter standing at `v`.
fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

/// The exposition text for `controller` and the gRPC server's `admission` gates.
pub fn render(controller: &mut Controller, admission: &AdmissionStats) -> Result<String> {
    let mut root = Registry::default();
    process(&mut root);
    let r = root.sub_registry_with_prefix("alioth");
    let version = vec![("version", env!("CARGO_PKG_VERSION"))];
    let build = Family::<Label, Gauge>::default();
    build.get_or_create(&version).set(1);
    r.register("build_info", "The running agent's version", build);
    let state = controller.state();
    let resources = Family::<Label, Gauge>::default();
    for (t, n) in [
        ("vpc", state.vpcs.len()),
        ("subnet", state.subnets.len()),
        ("port", state.ports().len()),
        ("neighbor", state.neighbors().len()),
        ("dhcp", state.dhcp_hosts().len()),
    ] {
        resources.get_or_create(&vec![("type", t)]).set(n as i64);
    }
    r.register("resources", "Resources the agent holds, by type", resources);
    let pending = controller.pending_ports() as u64;
    r.register("pending_ports", "Ports waiting for their interface", gauge(pending));
    let m = controller.metrics();
    r.register(
        "apply_seconds",
        "Time to validate, plan and apply one goal-state message",
        m.apply_seconds.clone(),
    );
    r.register(
        "resource_operations",
        "Answers to goal-state resources, by status",
        m.operations.clone(),
    );
    r.register(
        "dhcp_declines",
        "DHCPDECLINEs: a VM found its address in use",
        m.dhcp_declines.clone(),
    );
    let damage = Family::<Label, Gauge>::default();
    for (kind, n) in [
        ("rows", m.record.rows),
        ("files", m.record.unreadable.len()),
        ("orphans", m.record.orphans),
    ] {
        damage.get_or_create(&vec![("kind", kind)]).set(n as i64);
    }
    r.register(
        "record_damage",
        "What the record read at start lacked (lines: damaged lines skipped; files: files that could not be read; orphans: resources without their parents)",
        damage,
    );
    r.register(
        "dataplane_adopted",
        "1: the record was damaged, so the pinned data plane was kept as it was",
        gauge(u64::from(m.adopted)),
    );
    admitted(r, admission);
    let counters = controller.dataplane().counters().context("read the packet counters")?;
    let (packets, drops) = (Family::<Label, Counter>::default(), Family::<Label, Counter>::default());
    for (c, n) in counters {
        match c.name().strip_prefix("drop_") {
            Some(reason) => drops.get_or_create(&vec![("reason", reason)]).inc_by(n),
            None => packets.get_or_create(&vec![("action", c.name())]).inc_by(n),
        };
    }
    r.register("packets", "Frames the programs handled, by action", packets);
    r.register(
        "drops",
        "Frames the programs dropped or did not answer, by reason",
        drops,
    );
    port_counters(r, controller)?;
    flows(r, controller)?;
    routing(r, controller);
    snat(r, controller)?;
    let mut out = String::new();
    encode(&mut out, &root)?;
    Ok(out)
}

/// Routers and elastic IPs: what they hold and what the data plane has of them.
fn routing(r: &mut Registry, controller: &mut Controller) {
    let state = controller.state();
    let (routers, gateways) = (state.routers.len() as u64, state.gateways.len() as u64);
    let elastic_ips = state.elastic_ips.len() as u64;
    r.register("routers", "Routers held", gauge(routers));
    r.register("gateways", "Gateways held", gauge(gateways));
    let routes = controller.dataplane().route_count() as u64;
    r.register(
        "routes",
        "Entries of ROUTES: each routed subnet's routes to its router's subnets and its rules",
        gauge(routes),
    );
    r.register("elastic_ips", "Elastic IPs held", gauge(elastic_ips));
    let translated = controller.dataplane().elastic_ip_count() as u64;
    r.register(
        "elastic_ips_translated",
        "Entries of ELASTIC_IPS: elastic IPs whose port is on this host",
        gauge(translated),
    );
}

/// The distributed SNAT's flows.
fn snat(r: &mut Registry, controller: &mut Controller) -> Result<()> {
    let flows = controller
        .dataplane()
        .snat_flow_count()
        .context("count the SNAT flows")?;
    r.register(
        "snat_flows",
        "Flows the distributed SNAT holds (ports without an elastic IP leaving by the host's address)",
        gauge(flows),
    );
    r.register(
        "snat_flows_capacity",
        "Flows the SNAT table holds at most (the least recently used goes for a new one)",
        gauge(u64::from(alioth_common::snat::MAX_SNAT_FLOWS)),
    );
    Ok(())
}

/// The security groups' connection tracking.
fn flows(r: &mut Registry, controller: &mut Controller) -> Result<()> {
    let f = controller.dataplane().flow_stats().context("read the flow table")?;
    r.register("sg_flows", "Flows the security groups track", gauge(f.entries));
    r.register(
        "sg_flows_capacity",
        "Flows the table holds at most (the least recently used goes for a new one)",
        gauge(u64::from(alioth_common::firewall::MAX_SG_FLOWS)),
    );
    r.register(
        "sg_flows_evicted",
        "Flows the full table evicted for new ones",
        counter(f.evicted),
    );
    r.register(
        "sg_filtered_ports",
        "Ports filtered by security groups",
        gauge(f.filtered_ports),
    );
    r.register(
        "sg_rule_sets",
        "Compiled rule sets in the data plane (ports with the same groups share one)",
        gauge(f.rule_sets),
    );
    Ok(())
}

/// Each port's own counters that are not zero, labelled by port and VPC: at most
/// `maps::MAX_PORT_STATS` ports, each with at most one series per counter.
fn port_counters(r: &mut Registry, controller: &mut Controller) -> Result<()> {
    type PortLabel = Vec<(&'static str, String)>;
    let (packets, drops) = (
        Family::<PortLabel, Counter>::default(),
        Family::<PortLabel, Counter>::default(),
    );
    let ifaces: Vec<String> = controller.dataplane().counted_ports().map(str::to_string).collect();
    let state = controller.state();
    let owners: Vec<(String, String, String)> = ifaces
        .into_iter()
        .filter_map(|iface| {
            let id = state.iface_owner(&iface)?;
            let vpc = state.ports().get(&**id)?.vpc_id.to_string();
            Some((iface, id.to_string(), vpc))
        })
        .collect();
    for (iface, port, vpc) in owners {
        let Some(counters) = controller.dataplane().port_counters(&iface)? else {
            continue;
        };
        for (c, n) in counters.into_iter().filter(|(_, n)| *n > 0) {
            let (family, key, value) = match c.name().strip_prefix("drop_") {
                Some(reason) => (&drops, "reason", reason),
                None => (&packets, "action", c.name()),
            };
            let labels = vec![("port", port.clone()), ("vpc", vpc.clone()), (key, value.to_string())];
            family.get_or_create(&labels).inc_by(n);
        }
    }
    r.register("port_packets", "Frames each port sent or was sent, by action", packets);
    r.register(
        "port_drops",
        "Frames each port sent that were dropped, by reason",
        drops,
    );
    Ok(())
}

/// The gRPC server's connections and message bytes.
fn admitted(r: &mut Registry, a: &AdmissionStats) {
    let load = |v: &AtomicU64| v.load(Relaxed);
    r.register("grpc_connections", "gRPC connections held", gauge(load(&a.connections)));
    r.register(
        "grpc_connections_refused",
        "gRPC connections closed on arrival: at --max-connections",
        counter(load(&a.refused)),
    );
    r.register(
        "grpc_connections_idle_closed",
        "gRPC connections closed after --grpc-idle-timeout without a byte",
        counter(load(&a.idle_closed)),
    );
    r.register(
        "grpc_accept_errors",
        "Failed accepts of gRPC connections (out of descriptors...)",
        counter(load(&a.accept_errors)),
    );
    r.register(
        "grpc_bytes_in_flight",
        "Goal-state bytes received and not yet answered",
        gauge(load(&a.bytes_in_flight)),
    );
    r.register(
        "grpc_bytes_in_flight_peak",
        "Most goal-state bytes in flight at once since the start",
        gauge(load(&a.bytes_in_flight_peak)),
    );
    r.register(
        "grpc_messages_waited",
        "Messages that waited for --max-bytes-in-flight",
        counter(load(&a.messages_waited)),
    );
}

/// The usual process metrics, from /proc/self.
fn process(r: &mut Registry) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // The fields after the command name, which may hold spaces and parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').map_or(0, |i| i + 1)..]
        .split_whitespace()
        .collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let (hz, page) = (
        rustix::param::clock_ticks_per_second().max(1) as f64,
        rustix::param::page_size() as u64,
    );
    let cpu = Counter::<f64, AtomicU64>::default();
    cpu.inc_by((field(11) + field(12)) as f64 / hz);
    r.register("process_cpu_seconds", "User and system CPU time spent", cpu);
    r.register(
        "process_resident_memory_bytes",
        "Resident memory size",
        gauge(field(21) * page),
    );
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    r.register("process_open_fds", "Open file descriptors", gauge(fds));
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let start = Gauge::<f64, AtomicU64>::default();
    start.set(boot as f64 + field(19) as f64 / hz);
    r.register("process_start_time_seconds", "Start time since the Unix epoch", start);
}

/// Serves `/metrics` and `/healthz` on `listener`.
pub async fn serve(
    listener: TcpListener,
    controller: Arc<Mutex<Controller>>,
    admission: Arc<AdmissionStats>,
) -> Result<()> {
    let metrics = move || {
        let (controller, admission) = (controller.clone(), admission.clone());
        async move {
            match render(&mut *controller.lock().await, &admission) {
                Ok(text) => (axum::http::StatusCode::OK, [(CONTENT_TYPE, OPENMETRICS)], text),
                Err(e) => {
                    tracing::warn!("metrics: {e:#}");
                    let text = format!("{e:#}\n");
                    (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        [(CONTENT_TYPE, "text/plain")],
                        text,
                    )
                }
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }));
    axum::serve(listener, app).await.context("metrics server")
}

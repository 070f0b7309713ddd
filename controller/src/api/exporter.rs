//! The Prometheus exporter: `/metrics` over HTTP, rendered from the controller's state, metrics
//! and the data plane's counters.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use alioth_proto::schema::OperationStatus;
use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use crate::api::admission::AdmissionStats;
use crate::controller::metrics::BUCKETS;
use crate::controller::Controller;

/// The exposition text for `controller` and the gRPC server's `admission` gates.
pub fn render(controller: &mut Controller, admission: &AdmissionStats) -> String {
    let mut out = String::new();
    let state = controller.state();
    let _ = writeln!(
        out,
        "# HELP alioth_resources Resources the agent holds, by type.\n# TYPE alioth_resources gauge"
    );
    for (t, n) in [
        ("vpc", state.vpcs.len()),
        ("subnet", state.subnets.len()),
        ("port", state.ports().len()),
        ("neighbor", state.neighbors().len()),
        ("dhcp", state.dhcp_hosts().len()),
    ] {
        let _ = writeln!(out, "alioth_resources{{type=\"{t}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP alioth_pending_ports Ports waiting for their interface.\n# TYPE alioth_pending_ports gauge"
    );
    let _ = writeln!(out, "alioth_pending_ports {}", controller.pending_ports());
    let m = controller.metrics();
    let _ = writeln!(
        out,
        "# HELP alioth_dhcp_declines_total DHCPDECLINEs: a VM found its address in use.\n# TYPE alioth_dhcp_declines_total counter\nalioth_dhcp_declines_total {}",
        m.dhcp_declines
    );
    admitted(&mut out, admission);
    let r = &m.record;
    let _ = writeln!(
        out,
        "# HELP alioth_record_damage What the record read at start lacked, by kind (lines: damaged lines \
         skipped; files: files that could not be read; orphans: resources without their parents).\n\
         # TYPE alioth_record_damage gauge\n\
         alioth_record_damage{{kind=\"lines\"}} {}\nalioth_record_damage{{kind=\"files\"}} {}\n\
         alioth_record_damage{{kind=\"orphans\"}} {}\n\
         # HELP alioth_dataplane_adopted 1: the record was damaged, so the pinned data plane was kept as it was.\n\
         # TYPE alioth_dataplane_adopted gauge\nalioth_dataplane_adopted {}",
        r.lines,
        r.unreadable.len(),
        r.orphans,
        u8::from(m.adopted)
    );
    let _ = writeln!(
        out,
        "# HELP alioth_apply_seconds Time to validate, plan and apply one goal-state message."
    );
    let _ = writeln!(out, "# TYPE alioth_apply_seconds histogram");
    for (le, n) in BUCKETS.iter().zip(m.buckets) {
        let _ = writeln!(out, "alioth_apply_seconds_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "alioth_apply_seconds_bucket{{le=\"+Inf\"}} {}", m.count);
    let _ = writeln!(
        out,
        "alioth_apply_seconds_sum {}\nalioth_apply_seconds_count {}",
        m.sum, m.count
    );
    let _ = writeln!(
        out,
        "# HELP alioth_resource_operations_total Answers to goal-state resources, by status."
    );
    let _ = writeln!(out, "# TYPE alioth_resource_operations_total counter");
    for (i, n) in m.outcomes.iter().enumerate() {
        if let Ok(s) = OperationStatus::try_from(i as i32) {
            let _ = writeln!(
                out,
                "alioth_resource_operations_total{{status=\"{}\"}} {n}",
                s.as_str_name()
            );
        }
    }
    match controller.dataplane().counters() {
        Ok(counters) => {
            let _ = writeln!(
                out,
                "# HELP alioth_packets_total Frames the port program handled, by action."
            );
            let _ = writeln!(out, "# TYPE alioth_packets_total counter");
            for (c, n) in counters.iter().filter(|(c, _)| !c.name().starts_with("drop_")) {
                let _ = writeln!(out, "alioth_packets_total{{action=\"{}\"}} {n}", c.name());
            }
            let _ = writeln!(
                out,
                "# HELP alioth_drops_total Frames the port program dropped or did not answer, by reason."
            );
            let _ = writeln!(out, "# TYPE alioth_drops_total counter");
            for (c, n) in &counters {
                if let Some(reason) = c.name().strip_prefix("drop_") {
                    let _ = writeln!(out, "alioth_drops_total{{reason=\"{reason}\"}} {n}");
                }
            }
        }
        Err(e) => tracing::warn!("metrics: reading the packet counters failed: {e:#}"),
    }
    out
}

/// The gRPC server's connections and message bytes.
fn admitted(out: &mut String, a: &AdmissionStats) {
    use std::sync::atomic::Ordering::Relaxed;
    for (name, kind, help, value) in [
        ("grpc_connections", "gauge", "gRPC connections held.", &a.connections),
        (
            "grpc_connections_refused_total",
            "counter",
            "gRPC connections closed on arrival: at --max-connections.",
            &a.refused,
        ),
        (
            "grpc_connections_idle_closed_total",
            "counter",
            "gRPC connections closed after --grpc-idle-timeout without a byte.",
            &a.idle_closed,
        ),
        (
            "grpc_accept_errors_total",
            "counter",
            "Failed accepts of gRPC connections (out of descriptors...).",
            &a.accept_errors,
        ),
        (
            "grpc_bytes_in_flight",
            "gauge",
            "Goal-state bytes received and not yet answered.",
            &a.bytes_in_flight,
        ),
        (
            "grpc_bytes_in_flight_peak",
            "gauge",
            "Most goal-state bytes in flight at once since the start.",
            &a.bytes_in_flight_peak,
        ),
        (
            "grpc_messages_waited_total",
            "counter",
            "Messages that waited for --max-bytes-in-flight.",
            &a.messages_waited,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP alioth_{name} {help}\n# TYPE alioth_{name} {kind}\nalioth_{name} {}",
            value.load(Relaxed)
        );
    }
}

/// Serves `GET /metrics` on `listener` (a deliberately small HTTP/1.1 responder).
pub async fn serve(
    listener: TcpListener,
    controller: Arc<Mutex<Controller>>,
    admission: Arc<AdmissionStats>,
) -> Result<()> {
    loop {
        let (mut conn, _) = listener.accept().await?;
        let (controller, admission) = (controller.clone(), admission.clone());
        tokio::spawn(async move {
            let mut req = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            // Read the request head, bounded in size and time.
            let head = tokio::time::timeout(Duration::from_secs(5), async {
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await;
            if !matches!(head, Ok(true)) {
                return;
            }
            let line = String::from_utf8_lossy(&req);
            let (status, body) = if line.starts_with("GET /metrics ") || line.starts_with("GET /metrics?") {
                ("200 OK", render(&mut *controller.lock().await, &admission))
            } else {
                ("404 Not Found", "try /metrics\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
        });
    }
}

//! `health`: the standard gRPC health check, for probes and scripts.

use anyhow::{Context, Result};

use super::*;

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

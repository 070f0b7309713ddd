//! `echo`: the agent's probes from a port to an address, through the live data plane
//! (`alioth.v1.Diagnostics/Echo`).

use alioth_proto::alioth::v1::diagnostics_client::DiagnosticsClient;
use alioth_proto::alioth::v1::EchoRequest;
use anyhow::{Context, Result};

use super::{connect, ClientTls};

#[derive(Clone, Debug, clap::Args)]
pub struct EchoArgs {
    /// The port the probes come from (its id in goal state).
    #[arg(long = "from")]
    pub port: String,
    /// The IPv4 address to probe.
    #[arg(long = "to")]
    pub destination: std::net::Ipv4Addr,
    /// Probes to send (at most 100).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub count: u32,
    /// How long to wait for each reply, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub timeout_ms: u32,
    /// The agent's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50001", env = "ALIOTH_SERVER")]
    pub server: String,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tls: ClientTls,
}

/// Exit status: 0 when every probe was answered, 1 otherwise.
pub async fn echo(args: EchoArgs) -> Result<i32> {
    let mut client = DiagnosticsClient::new(connect(&args.server, &args.tls).await?);
    let reply = client
        .echo(EchoRequest {
            port_id: args.port.clone(),
            destination: args.destination.to_string(),
            count: args.count,
            timeout_ms: args.timeout_ms,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))
        .with_context(|| format!("echo from {} to {}", args.port, args.destination))?
        .into_inner();
    let answered = reply.probes.iter().filter(|p| p.answered).count();
    if args.json {
        println!("{}", serde_json::to_string(&reply)?);
    } else {
        let path = if reply.path.is_empty() {
            "no path"
        } else {
            reply.path.as_str()
        };
        println!("echo from {} to {}: {path}", args.port, args.destination);
        for p in &reply.probes {
            match p.answered {
                true => println!("  seq {}: {:.3} ms", p.sequence, p.rtt_ns as f64 / 1e6),
                false => println!("  seq {}: {}", p.sequence, p.broke),
            }
        }
        println!("{} probes, {answered} answered", reply.probes.len());
    }
    Ok(if answered == reply.probes.len() { 0 } else { 1 })
}

//! `apply`: a goal-state file to the agent, and its reply as a table or JSON.

use std::fmt::Write as _;
use std::path::PathBuf;

use alioth_proto::schema::goal_state_provisioner_client::GoalStateProvisionerClient;
use alioth_proto::schema::{GoalStateOperationReply, OperationStatus, OperationType, ResourceType};
use anyhow::{bail, Context, Result};

use super::*;

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

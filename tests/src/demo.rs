//! The host of examples/demo.yaml: an agent in a host namespace and its two VMs, with the helpers
//! the tests that drive it share.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::agent::Agent;
use crate::netns::{Netns, Vm};

pub fn example(name: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "examples", name].iter().collect();
    p.to_string_lossy().into_owned()
}

pub const VM1_TAP: &str = "tapf37810eb-7f";
pub const VM2_TAP: &str = "tap2a2b0d1c-4c";

/// Host namespace with the agent, and the two VMs of examples/demo.yaml.
pub struct Topology {
    pub agent: Agent,
    pub vm1: Vm,
    pub vm2: Vm,
    pub host: Netns,
}

pub fn topology(agent_args: &[&str]) -> Result<Topology> {
    let host = Netns::new("alhost")?;
    let vm1 = Vm::new(&host, VM1_TAP, "02:00:c6:12:00:0a", "198.18.0.10/24")?;
    let vm2 = Vm::new(&host, VM2_TAP, "02:00:c6:12:00:0b", "198.18.0.11/24")?;
    let agent = Agent::start(&host, agent_args)?;
    Ok(Topology { agent, vm1, vm2, host })
}

/// `alioth apply --json`: resource id -> status name (every field is printed, SUCCESS included).
pub fn apply(agent: &Agent, file: &str) -> Result<(i32, BTreeMap<String, String>)> {
    let out = agent.cli(&["apply", "-f", file, "--json"])?;
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "apply output: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let statuses = reply["operationStatuses"].as_array().context("operationStatuses")?;
    let map = statuses
        .iter()
        .map(|s| {
            let status = s["operationStatus"].as_str().unwrap_or("(missing)").to_string();
            (s["resourceId"].as_str().unwrap_or_default().to_string(), status)
        })
        .collect();
    Ok((out.status.code().unwrap_or(-1), map))
}

pub fn counter(agent: &Agent, name: &str) -> Result<u64> {
    agent.stats()?[name].as_u64().with_context(|| format!("counter {name}"))
}

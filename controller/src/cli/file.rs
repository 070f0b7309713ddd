//! Goal-state files: YAML or JSON in the proto3 JSON mapping, V1 or V2.

use std::path::Path;

use alioth_proto::schema::{GoalState, GoalStateV2};
use anyhow::{Context, Result};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goalstate::model::State;
    use crate::goalstate::validate::{validate, Naming};
    use alioth_proto::schema::OperationStatus;

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
        let GoalStateFile::V1(routed) = parse_goal_state_file(&example("alcor-dpm-router.yaml")).unwrap() else {
            panic!("alcor-dpm-router.yaml is a GoalState");
        };
        assert_eq!((routed.router_states.len(), routed.gateway_states.len()), (1, 1));
        all_accepted(&routed);
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

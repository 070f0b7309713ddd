//! `alioth apply --prune`: whole-set reconciliation, explicit and on the client's side. Goal state
//! never deletes what a message leaves out (Alcor's semantics); an operator who wants the agent to
//! hold exactly a file asks for it, and sees the deletions before they are sent. What the agent
//! holds is read from its state directory, without writing to it.

use std::collections::BTreeSet;

use alioth_proto::schema::{
    DhcpConfiguration, DhcpState, GoalState, NeighborConfiguration, NeighborState, OperationType, PortConfiguration,
    PortState, SubnetConfiguration, SubnetState, VpcConfiguration, VpcState,
};

use crate::model::{format_mac, parse_mac, Mac, State};

/// DELETEs for what `held` has and `msg` does not name, of each type msg could name. The agent
/// validates them after the message's other resources, children before parents.
pub fn deletions(held: &State, msg: &GoalState) -> GoalState {
    let ids =
        |it: &mut dyn Iterator<Item = Option<&str>>| -> BTreeSet<String> { it.flatten().map(str::to_string).collect() };
    let vpcs = ids(&mut msg
        .vpc_states
        .iter()
        .map(|s| s.configuration.as_ref().map(|c| c.id.as_str())));
    let subnets = ids(&mut msg
        .subnet_states
        .iter()
        .map(|s| s.configuration.as_ref().map(|c| c.id.as_str())));
    let ports = ids(&mut msg
        .port_states
        .iter()
        .map(|s| s.configuration.as_ref().map(|c| c.id.as_str())));
    let neighbors = ids(&mut msg
        .neighbor_states
        .iter()
        .map(|s| s.configuration.as_ref().map(|c| c.id.as_str())));
    // DHCP entries are their (subnet, MAC), whatever id the file gives them.
    let dhcp: BTreeSet<(String, Mac)> = msg
        .dhcp_states
        .iter()
        .filter_map(|s| s.configuration.as_ref())
        .filter_map(|c| Some((c.subnet_id.clone(), parse_mac(&c.mac_address).ok()?)))
        .collect();
    let delete = OperationType::Delete as i32;
    let mut out = GoalState::default();
    for id in held.vpcs.keys().filter(|id| !vpcs.contains(*id)) {
        out.vpc_states.push(VpcState {
            operation_type: delete,
            configuration: Some(VpcConfiguration {
                id: id.clone(),
                ..Default::default()
            }),
        });
    }
    for id in held.subnets.keys().filter(|id| !subnets.contains(*id)) {
        out.subnet_states.push(SubnetState {
            operation_type: delete,
            configuration: Some(SubnetConfiguration {
                id: id.clone(),
                ..Default::default()
            }),
        });
    }
    let mut held_ports: Vec<&str> = held
        .ports()
        .keys()
        .map(|k| &**k)
        .filter(|id| !ports.contains(*id))
        .collect();
    held_ports.sort_unstable();
    for id in held_ports {
        out.port_states.push(PortState {
            operation_type: delete,
            configuration: Some(PortConfiguration {
                id: id.into(),
                ..Default::default()
            }),
        });
    }
    let mut held_neighbors: Vec<&str> = held
        .neighbors()
        .keys()
        .map(|k| &**k)
        .filter(|id| !neighbors.contains(*id))
        .collect();
    held_neighbors.sort_unstable();
    for id in held_neighbors {
        out.neighbor_states.push(NeighborState {
            operation_type: delete,
            configuration: Some(NeighborConfiguration {
                id: id.into(),
                ..Default::default()
            }),
        });
    }
    let mut held_dhcp: Vec<_> = held
        .dhcp_hosts()
        .values()
        .filter(|d| !dhcp.contains(&(d.subnet_id.clone(), d.mac)))
        .collect();
    held_dhcp.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    for d in held_dhcp {
        out.dhcp_states.push(DhcpState {
            operation_type: delete,
            configuration: Some(DhcpConfiguration {
                subnet_id: d.subnet_id.clone(),
                mac_address: format_mac(&d.mac),
                ..Default::default()
            }),
        });
    }
    out
}

/// One line per deletion, for the operator to see before it is sent.
pub fn describe(d: &GoalState) -> Vec<String> {
    let id = |c: Option<&str>| c.unwrap_or_default().to_string();
    let mut lines = Vec::new();
    lines.extend(
        d.vpc_states
            .iter()
            .map(|s| format!("vpc {}", id(s.configuration.as_ref().map(|c| c.id.as_str())))),
    );
    lines.extend(
        d.subnet_states
            .iter()
            .map(|s| format!("subnet {}", id(s.configuration.as_ref().map(|c| c.id.as_str())))),
    );
    lines.extend(
        d.port_states
            .iter()
            .map(|s| format!("port {}", id(s.configuration.as_ref().map(|c| c.id.as_str())))),
    );
    lines.extend(
        d.neighbor_states
            .iter()
            .map(|s| format!("neighbor {}", id(s.configuration.as_ref().map(|c| c.id.as_str())))),
    );
    lines.extend(
        d.dhcp_states
            .iter()
            .filter_map(|s| s.configuration.as_ref())
            .map(|c| format!("dhcp {}/{}", c.subnet_id, c.mac_address)),
    );
    lines
}

/// `msg` with `deletions` appended.
pub fn append(msg: &mut GoalState, deletions: GoalState) {
    msg.vpc_states.extend(deletions.vpc_states);
    msg.subnet_states.extend(deletions.subnet_states);
    msg.port_states.extend(deletions.port_states);
    msg.neighbor_states.extend(deletions.neighbor_states);
    msg.dhcp_states.extend(deletions.dhcp_states);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse_goal_state_file, GoalStateFile};
    use crate::validate::{validate, Naming};

    /// What a fresh agent holds after `yaml`.
    fn held_after(yaml: &str) -> State {
        let Ok(GoalStateFile::V1(msg)) = parse_goal_state_file(yaml) else {
            panic!("a GoalState")
        };
        let mut state = State::default();
        validate(&mut state, &msg, &Naming::default());
        state
    }

    /// Everything not named goes, DHCP entries by (subnet, MAC) whatever id the file gives them;
    /// what the file names stays.
    #[test]
    fn deletes_what_is_not_named_and_matches_dhcp_by_subnet_and_mac() {
        let all = r#"
vpcStates: [{operationType: CREATE, configuration: {id: v, tunnelId: 7}}]
subnetStates: [{operationType: CREATE, configuration: {id: s, vpcId: v, cidr: 198.18.9.0/24}}]
portStates:
  - {operationType: CREATE, configuration: {id: p1, vpcId: v, macAddress: "02:00:00:00:09:01", fixedIps: [{subnetId: s, ipAddress: 198.18.9.10}]}}
  - {operationType: CREATE, configuration: {id: p2, vpcId: v, macAddress: "02:00:00:00:09:02", fixedIps: [{subnetId: s, ipAddress: 198.18.9.11}]}}
dhcpStates:
  - {operationType: CREATE, configuration: {subnetId: s, macAddress: "02:00:00:00:09:01"}}
  - {operationType: CREATE, configuration: {subnetId: s, macAddress: "02:00:00:00:09:02"}}
"#;
        let held = held_after(all);
        let Ok(GoalStateFile::V1(keep_p1)) = parse_goal_state_file(
            r#"
vpcStates: [{operationType: INFO, configuration: {id: v}}]
subnetStates: [{operationType: INFO, configuration: {id: s}}]
portStates: [{operationType: CREATE, configuration: {id: p1}}]
dhcpStates: [{operationType: CREATE, configuration: {id: fresh-random-id, subnetId: s, macAddress: "02:00:00:00:09:01"}}]
"#,
        ) else {
            panic!("a GoalState")
        };
        let d = deletions(&held, &keep_p1);
        assert_eq!(describe(&d), ["port p2", "dhcp s/02:00:00:00:09:02"]);
    }
}

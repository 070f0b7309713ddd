//! `alioth apply --prune`: whole-set reconciliation, explicit and on the client's side. Goal state
//! never deletes what a message leaves out (Alcor's semantics); an operator who wants the agent to
//! hold exactly a file asks for it, and sees the deletions before they are sent. What the agent
//! holds is read from its state directory, without writing to it.

use std::collections::BTreeSet;

use alioth_proto::schema::{
    DhcpConfiguration, DhcpState, GoalState, NeighborConfiguration, NeighborState, OperationType, PortConfiguration,
    PortState, SecurityGroupConfiguration, SecurityGroupState, SubnetConfiguration, SubnetState, VpcConfiguration,
    VpcState,
};

use crate::goalstate::model::{format_mac, parse_mac, Mac, State};

/// A goal-state entry kept by its id: the id it names, and the DELETE of an id.
trait ById: Sized {
    const KIND: &'static str;
    fn id(&self) -> Option<&str>;
    fn delete(id: &str) -> Self;
}

macro_rules! by_id {
    ($($state:ident / $config:ident: $kind:literal),*) => {$(
        impl ById for $state {
            const KIND: &'static str = $kind;
            fn id(&self) -> Option<&str> {
                self.configuration.as_ref().map(|c| c.id.as_str())
            }
            fn delete(id: &str) -> Self {
                $state {
                    operation_type: OperationType::Delete as i32,
                    configuration: Some($config { id: id.to_string(), ..Default::default() }),
                }
            }
        }
    )*};
}

by_id!(
    VpcState / VpcConfiguration: "vpc",
    SubnetState / SubnetConfiguration: "subnet",
    PortState / PortConfiguration: "port",
    NeighborState / NeighborConfiguration: "neighbor",
    SecurityGroupState / SecurityGroupConfiguration: "security group"
);

/// DELETEs, in id order, for the `held` ids that `named` leaves out.
fn absent<'a, S: ById>(named: &[S], held: impl Iterator<Item = &'a str>) -> Vec<S> {
    let named: BTreeSet<&str> = named.iter().filter_map(S::id).collect();
    let mut gone: Vec<&str> = held.filter(|id| !named.contains(id)).collect();
    gone.sort_unstable();
    gone.into_iter().map(S::delete).collect()
}

/// DELETEs for what `held` has and `msg` does not name, of each type msg could name. The agent
/// validates them after the message's other resources, children before parents.
pub fn deletions(held: &State, msg: &GoalState) -> GoalState {
    // DHCP entries are their (subnet, MAC), whatever id the file gives them.
    let dhcp: BTreeSet<(&str, Mac)> = msg
        .dhcp_states
        .iter()
        .filter_map(|s| s.configuration.as_ref())
        .filter_map(|c| Some((c.subnet_id.as_str(), parse_mac(&c.mac_address).ok()?)))
        .collect();
    let mut dhcp_gone: Vec<_> = held
        .dhcp_hosts()
        .values()
        .filter(|d| !dhcp.contains(&(d.subnet_id.as_str(), d.mac)))
        .collect();
    dhcp_gone.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    GoalState {
        vpc_states: absent(&msg.vpc_states, held.vpcs.keys().map(String::as_str)),
        subnet_states: absent(&msg.subnet_states, held.subnets.keys().map(String::as_str)),
        port_states: absent(&msg.port_states, held.ports().keys().map(|k| &**k)),
        neighbor_states: absent(&msg.neighbor_states, held.neighbors().keys().map(|k| &**k)),
        security_group_states: absent(
            &msg.security_group_states,
            held.security_groups.keys().map(String::as_str),
        ),
        dhcp_states: dhcp_gone
            .into_iter()
            .map(|d| DhcpState {
                operation_type: OperationType::Delete as i32,
                configuration: Some(DhcpConfiguration {
                    subnet_id: d.subnet_id.clone(),
                    mac_address: format_mac(&d.mac),
                    ..Default::default()
                }),
            })
            .collect(),
        ..Default::default()
    }
}

/// One line per deletion, for the operator to see before it is sent.
pub fn describe(d: &GoalState) -> Vec<String> {
    fn lines<S: ById>(states: &[S]) -> impl Iterator<Item = String> + '_ {
        states
            .iter()
            .map(|s| format!("{} {}", S::KIND, s.id().unwrap_or_default()))
    }
    let dhcp = d
        .dhcp_states
        .iter()
        .filter_map(|s| s.configuration.as_ref())
        .map(|c| format!("dhcp {}/{}", c.subnet_id, c.mac_address));
    lines(&d.vpc_states)
        .chain(lines(&d.subnet_states))
        .chain(lines(&d.port_states))
        .chain(lines(&d.neighbor_states))
        .chain(lines(&d.security_group_states))
        .chain(dhcp)
        .collect()
}

/// `msg` with `deletions` appended.
pub fn append(msg: &mut GoalState, deletions: GoalState) {
    msg.vpc_states.extend(deletions.vpc_states);
    msg.subnet_states.extend(deletions.subnet_states);
    msg.port_states.extend(deletions.port_states);
    msg.neighbor_states.extend(deletions.neighbor_states);
    msg.dhcp_states.extend(deletions.dhcp_states);
    msg.security_group_states.extend(deletions.security_group_states);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse_goal_state_file, GoalStateFile};
    use crate::goalstate::validate::{validate, Naming};

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

use std::collections::{BTreeMap, BTreeSet};

use alioth_proto::schema::*;
use proptest::prelude::*;

use super::*;
use crate::goalstate::validate::{validate, Naming};

pub(crate) fn vpc(op: OperationType, id: &str, vni: u32) -> VpcState {
    VpcState {
        operation_type: op as i32,
        configuration: Some(VpcConfiguration {
            id: id.into(),
            tunnel_id: vni,
            ..Default::default()
        }),
    }
}

pub(crate) fn subnet(op: OperationType, id: &str, vpc: &str, third: u8) -> SubnetState {
    SubnetState {
        operation_type: op as i32,
        configuration: Some(SubnetConfiguration {
            id: id.into(),
            vpc_id: vpc.into(),
            cidr: format!("198.18.{third}.0/24"),
            gateway: Some(subnet_configuration::Gateway {
                ip_address: format!("198.18.{third}.1"),
                mac_address: String::new(),
            }),
            ..Default::default()
        }),
    }
}

pub(crate) fn port(op: OperationType, id: &str, vpc: &str, sub: &str, third: u8, host: u8) -> PortState {
    PortState {
        operation_type: op as i32,
        configuration: Some(PortConfiguration {
            id: id.into(),
            vpc_id: vpc.into(),
            mac_address: format!("02:00:00:00:{third:02x}:{host:02x}"),
            fixed_ips: vec![port_configuration::FixedIp {
                subnet_id: sub.into(),
                ip_address: format!("198.18.{third}.{host}"),
            }],
            ..Default::default()
        }),
    }
}

/// VPC v1 (VNI 100), subnet s1 198.18.0.0/24, port p1 198.18.0.10.
fn one_port() -> GoalState {
    GoalState {
        vpc_states: vec![vpc(OperationType::Create, "v1", 100)],
        subnet_states: vec![subnet(OperationType::Create, "s1", "v1", 0)],
        port_states: vec![port(OperationType::Create, "p1", "v1", "s1", 0, 10)],
        ..Default::default()
    }
}

pub(crate) fn neighbor(op: OperationType, id: &str, vpc: &str, sub: &str, third: u8, host: u8) -> NeighborState {
    NeighborState {
        operation_type: op as i32,
        configuration: Some(NeighborConfiguration {
            id: id.into(),
            vpc_id: vpc.into(),
            mac_address: format!("02:00:00:01:{third:02x}:{host:02x}"),
            host_ip_address: format!("198.19.0.{host}"),
            fixed_ips: vec![neighbor_configuration::FixedIp {
                subnet_id: sub.into(),
                ip_address: format!("198.18.{third}.{host}"),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

/// Applies a plan to a simulated `ENDPOINTS` map.
fn apply(map: &mut BTreeMap<EndpointKey, Endpoint>, plan: &Plan) {
    for (_, op) in &plan.endpoints {
        match op {
            EndpointOp::Upsert(k, v) => {
                map.insert(*k, *v);
            }
            EndpointOp::Remove(k) => {
                map.remove(k);
            }
        }
    }
}

fn step(
    state: &mut State,
    map: &mut BTreeMap<EndpointKey, Endpoint>,
    msg: &GoalState,
) -> (Vec<crate::goalstate::validate::Outcome>, Plan) {
    let (outcomes, changes) = validate(state, msg, &Naming::default());
    let plan = plan(state, &changes);
    apply(map, &plan);
    (outcomes, plan)
}

#[test]
fn create_then_replay_is_a_no_op() {
    let mut state = State::default();
    let mut map = BTreeMap::new();
    let msg = GoalState {
        // Out of dependency order on purpose: the validator orders VPC -> subnet -> port.
        port_states: vec![port(OperationType::Create, "p1", "v1", "s1", 0, 10)],
        subnet_states: vec![subnet(OperationType::Create, "s1", "v1", 0)],
        vpc_states: vec![vpc(OperationType::Create, "v1", 100)],
        ..Default::default()
    };
    let (outcomes, plan) = step(&mut state, &mut map, &msg);
    assert!(
        outcomes.iter().all(|o| o.status == OperationStatus::Success),
        "{outcomes:?}"
    );
    assert_eq!(plan.endpoints.len(), 2);
    assert_eq!(plan.program, vec![(2, PortOp::Program { port_id: "p1".into() })]);
    assert_eq!(map, render(&state));
    let (_, replay) = step(&mut state, &mut map, &msg);
    assert!(
        replay.endpoints.is_empty(),
        "replaying the same goal state rewrites nothing: {replay:?}"
    );
}

#[test]
fn vni_change_rekeys_the_whole_vpc() {
    let mut state = State::default();
    let mut map = BTreeMap::new();
    step(&mut state, &mut map, &one_port());
    let msg = GoalState {
        vpc_states: vec![vpc(OperationType::Update, "v1", 200)],
        ..Default::default()
    };
    let (_, plan) = step(&mut state, &mut map, &msg);
    assert_eq!(map, render(&state));
    assert!(map.keys().all(|k| k.vni == 200));
    assert_eq!(plan.program.len(), 1, "the port's PORTS entry carries the VNI");
}

#[test]
fn deleting_a_used_subnet_is_refused_and_changes_nothing() {
    let mut state = State::default();
    let mut map = BTreeMap::new();
    step(&mut state, &mut map, &one_port());
    let before = state.clone();
    let msg = GoalState {
        subnet_states: vec![subnet(OperationType::Delete, "s1", "v1", 0)],
        ..Default::default()
    };
    let (outcomes, plan) = step(&mut state, &mut map, &msg);
    assert_eq!(outcomes[0].status, OperationStatus::Failure);
    assert!(outcomes[0].reason.as_deref().unwrap().contains("used by port p1"));
    assert_eq!(plan, Plan::default());
    assert_eq!(state, before);
}

fn op() -> impl Strategy<Value = OperationType> {
    prop_oneof![
        3 => Just(OperationType::Create),
        2 => Just(OperationType::Update),
        2 => Just(OperationType::Delete),
        1 => Just(OperationType::Info),
    ]
}

fn message() -> impl Strategy<Value = GoalState> {
    let vpcs = prop::collection::vec((op(), 0..2usize, 1..4u32), 0..3);
    let subnets = prop::collection::vec((op(), 0..3usize, 0..2usize, 0..3u8), 0..3);
    let ports = prop::collection::vec((op(), 0..4usize, 0..2usize, 0..3usize, 0..3u8, 10..13u8), 0..4);
    let neighbors = prop::collection::vec((op(), 0..3usize, 0..2usize, 0..3usize, 0..3u8, 11..14u8), 0..3);
    let full = prop::array::uniform3(prop::bool::weighted(0.15));
    let revisions = prop::collection::vec(0..4u32, 10);
    let msg = (vpcs, subnets, ports, neighbors).prop_map(|(vpcs, subnets, ports, neighbors)| GoalState {
        neighbor_states: neighbors
            .into_iter()
            .map(|(o, n, v, s, third, host)| {
                // Some neighbors are named after a port (as Alcor's DPM names them): one of our
                // own ports, or a VM that moves here and takes its entry over.
                let id = if n == 2 { "p0".to_string() } else { format!("n{n}") };
                neighbor(o, &id, &format!("v{v}"), &format!("s{s}"), third, host)
            })
            .collect(),
        vpc_states: vpcs
            .into_iter()
            .map(|(o, v, vni)| vpc(o, &format!("v{v}"), vni * 100))
            .collect(),
        subnet_states: subnets
            .into_iter()
            .map(|(o, s, v, third)| subnet(o, &format!("s{s}"), &format!("v{v}"), third))
            .collect(),
        port_states: ports
            .into_iter()
            .map(|(o, p, v, s, third, host)| port(o, &format!("p{p}"), &format!("v{v}"), &format!("s{s}"), third, host))
            .collect(),
        ..Default::default()
    });
    // Some messages reconcile a type (FULL); resources carry small, sometimes stale, revisions.
    (msg, full, revisions).prop_map(|(mut m, full, revs)| {
        let mut r = revs.into_iter().cycle();
        for c in m.vpc_states.iter_mut().filter_map(|s| s.configuration.as_mut()) {
            c.revision_number = r.next().unwrap();
            c.update_type = full[0] as i32;
        }
        for c in m.subnet_states.iter_mut().filter_map(|s| s.configuration.as_mut()) {
            c.revision_number = r.next().unwrap();
            c.update_type = full[1] as i32;
        }
        for c in m.port_states.iter_mut().filter_map(|s| s.configuration.as_mut()) {
            c.revision_number = r.next().unwrap();
            c.update_type = full[2] as i32;
        }
        m
    })
}

proptest! {
    /// Whatever sequence of messages arrives, valid or not, the simulated map always equals the full
    /// rendering of the accepted state, and the state stays referentially consistent.
    #[test]
    fn incremental_plans_match_full_render(msgs in prop::collection::vec(message(), 1..8)) {
        let mut state = State::default();
        let mut map = BTreeMap::new();
        for msg in &msgs {
            let (outcomes, _) = step(&mut state, &mut map, msg);
            let n = msg.vpc_states.len() + msg.subnet_states.len() + msg.port_states.len() + msg.neighbor_states.len();
            // One answer per resource named, FULL or not: nothing is deleted for being absent.
            prop_assert_eq!(outcomes.len(), n);
            prop_assert_eq!(&map, &render(&state));
            // What a restarted agent writes into empty maps is the same, and programs every port.
            let all = everything(&state);
            let mut fresh = BTreeMap::new();
            apply(&mut fresh, &all);
            prop_assert_eq!(&fresh, &map);
            let programmed: BTreeSet<&str> = all.program.iter().map(|(_, op)| match op {
                PortOp::Program { port_id } => port_id.as_str(),
                PortOp::Detach { iface } | PortOp::Filter { port_id: iface } => panic!("detaches or filters {iface}"),
            }).collect();
            prop_assert!(programmed.iter().copied().eq(state.ports().keys().map(|k| &**k).collect::<BTreeSet<_>>()));
            prop_assert!(state.indexes_match_contents(), "indexes drifted from the contents");
            // Built at once from its resources (a record read back), it is the same state.
            let mut parts = crate::goalstate::model::Parts::default();
            state.resources().for_each(|r| parts.push(r));
            let mut rebuilt = parts.into_state();
            rebuilt.tombstones = state.tombstones.clone();
            prop_assert_eq!(&rebuilt, &state);
            prop_assert!(!rebuilt.lacks_a_parent());
            for s in state.subnets.values() {
                prop_assert!(state.vpcs.contains_key(&s.vpc_id));
            }
            for p in state.ports().values() {
                prop_assert!(state.vpcs.contains_key(&*p.vpc_id));
                for f in &p.fixed_ips {
                    prop_assert!(state.subnets[&*f.subnet_id].cidr.contains(f.ip));
                }
            }
        }
    }
}

/// A neighbor hosted at this host's own tunnel endpoint, and none of its ports, is refused: its
/// traffic would be tunnelled to this host itself.
#[test]
fn a_neighbor_at_this_hosts_tunnel_endpoint_is_refused() {
    use OperationType::Create;
    let naming = Naming {
        tunnel_endpoint: Some("198.19.0.7".parse().unwrap()),
        ..Naming::default()
    };
    let msg = GoalState {
        vpc_states: vec![vpc(Create, "v", 1)],
        subnet_states: vec![subnet(Create, "s", "v", 0)],
        neighbor_states: vec![
            neighbor(Create, "here", "v", "s", 0, 7),
            neighbor(Create, "there", "v", "s", 0, 8),
        ],
        ..Default::default()
    };
    let (outcomes, _) = validate(&mut State::default(), &msg, &naming);
    let status = |id: &str| outcomes.iter().find(|o| o.id == id).map(|o| o.status);
    assert_eq!(status("here"), Some(OperationStatus::InvalidArg), "{outcomes:?}");
    assert_eq!(status("there"), Some(OperationStatus::Success), "{outcomes:?}");
}

/// Security groups reach the ports they filter: a change of a group's rules gives every port in it
/// a `Filter`, and so does a change of who is in a group other groups' rules name; a port's own
/// change programs it (never twice).
#[test]
fn group_changes_refilter_the_ports_they_reach() {
    use security_group_configuration::{Direction, SecurityGroupRule};
    let group = |id: &str, rules: Vec<SecurityGroupRule>| SecurityGroupState {
        operation_type: OperationType::Create as i32,
        configuration: Some(SecurityGroupConfiguration {
            id: id.into(),
            security_group_rules: rules,
            ..Default::default()
        }),
    };
    let from_cli = SecurityGroupRule {
        direction: Direction::Ingress as i32,
        remote_group_id: "cli".into(),
        ..Default::default()
    };
    let in_group = |mut p: PortState, g: &str| {
        if let Some(c) = p.configuration.as_mut() {
            c.security_group_ids = vec![port_configuration::SecurityGroupId { id: g.into() }];
        }
        p
    };
    let mut state = State::default();
    let first = GoalState {
        vpc_states: vec![vpc(OperationType::Create, "v", 100)],
        subnet_states: vec![subnet(OperationType::Create, "s", "v", 1)],
        security_group_states: vec![group("web", vec![from_cli]), group("cli", vec![])],
        port_states: vec![
            in_group(port(OperationType::Create, "w1", "v", "s", 1, 10), "web"),
            in_group(port(OperationType::Create, "w2", "v", "s", 1, 11), "web"),
            port(OperationType::Create, "c1", "v", "s", 1, 12),
        ],
        ..Default::default()
    };
    let (_, changes) = validate(&mut state, &first, &Naming::default());
    let ops = |p: &Plan| -> BTreeSet<String> {
        p.program
            .iter()
            .map(|(_, op)| match op {
                PortOp::Program { port_id } => format!("program {port_id}"),
                PortOp::Filter { port_id } => format!("filter {port_id}"),
                PortOp::Detach { iface } => format!("detach {iface}"),
            })
            .collect()
    };
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        ops(&plan(&state, &changes)),
        names(&["program w1", "program w2", "program c1"])
    );
    // c1 joins "cli": the ports whose rules name "cli" are filtered anew; c1 is programmed.
    let join = GoalState {
        port_states: vec![in_group(port(OperationType::Update, "c1", "v", "s", 1, 12), "cli")],
        ..Default::default()
    };
    let (_, changes) = validate(&mut state, &join, &Naming::default());
    assert_eq!(
        ops(&plan(&state, &changes)),
        names(&["program c1", "filter w1", "filter w2"])
    );
    // "web"'s rules change: its ports are filtered anew, no one else.
    let rules = GoalState {
        security_group_states: vec![group("web", vec![])],
        ..Default::default()
    };
    let (_, changes) = validate(&mut state, &rules, &Naming::default());
    assert_eq!(ops(&plan(&state, &changes)), names(&["filter w1", "filter w2"]));
}

//! Goal state fuzzed against the real controller on the real XDP object's maps: random sequences of
//! messages mixing valid and broken VPCs, subnets and neighbors (creates, updates, deletes, moves
//! between VPCs). After every message the controller's state and the ENDPOINTS map must agree with
//! a model built from the replies alone, and a resource built to be invalid is never SUCCESS nor
//! programmed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use alioth::controller::Controller;
use alioth::dataplane::{AttachMode, Dataplane};
use alioth::goalstate::validate::Naming;
use alioth_common::maps::{endpoint_kind, EndpointKey};
use alioth_proto::schema::*;
use alioth_tests::goalstate::{statuses, subnet, vpc};
use proptest::prelude::*;

const VPCS: usize = 2;
const NEIGHBORS: usize = 6;
const VNI: u32 = 100;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Flaw {
    BadMac,
    IpInAnotherSubnet,
    HostZero,
    UnknownSubnet,
    BadIp,
}

#[derive(Clone, Debug)]
enum Act {
    Vpc(usize, OperationType),
    Subnet(usize, OperationType),
    /// Neighbor k in VPC `vpc` (its subnet is that VPC's), with a MAC and host from small sets.
    Neighbor {
        k: usize,
        vpc: usize,
        mac: u8,
        host: u8,
        op: OperationType,
        flaw: Option<Flaw>,
    },
}

impl Act {
    fn key(&self) -> (ResourceType, String) {
        match self {
            Act::Vpc(k, _) => (ResourceType::Vpc, format!("v{k}")),
            Act::Subnet(k, _) => (ResourceType::Subnet, format!("s{k}")),
            Act::Neighbor { k, .. } => (ResourceType::Neighbor, format!("n{k}")),
        }
    }
}

/// What a neighbor is, as the model holds it.
#[derive(Clone, Debug, PartialEq)]
struct Held {
    vpc: usize,
    mac: [u8; 6],
    host: [u8; 4],
}

impl Held {
    fn ip(&self, k: usize) -> [u8; 4] {
        [198, 18, self.vpc as u8, 10 + k as u8]
    }
}

#[derive(Default, Debug)]
struct Model {
    vpcs: Vec<bool>,
    subnets: Vec<bool>,
    neighbors: BTreeMap<usize, Held>,
}

fn op() -> impl Strategy<Value = OperationType> {
    prop_oneof![
        Just(OperationType::Create),
        Just(OperationType::Update),
        Just(OperationType::Delete)
    ]
}

fn act() -> impl Strategy<Value = Act> {
    let flaw = prop_oneof![
        6 => Just(None),
        1 => Just(Some(Flaw::BadMac)),
        1 => Just(Some(Flaw::IpInAnotherSubnet)),
        1 => Just(Some(Flaw::HostZero)),
        1 => Just(Some(Flaw::UnknownSubnet)),
        1 => Just(Some(Flaw::BadIp)),
    ];
    prop_oneof![
        1 => (0..VPCS, op()).prop_map(|(k, op)| Act::Vpc(k, op)),
        1 => (0..VPCS, op()).prop_map(|(k, op)| Act::Subnet(k, op)),
        4 => (0..NEIGHBORS, 0..VPCS, 1u8..4, 1u8..4, op(), flaw).prop_map(|(k, vpc, mac, host, op, flaw)| {
            // A deletion names only the id: there is nothing to get wrong in it.
            let flaw = flaw.filter(|_| op != OperationType::Delete);
            Act::Neighbor { k, vpc, mac, host, op, flaw }
        }),
    ]
}

/// A message of distinct resources (the first of each id), at `revision`.
fn message(acts: &[Act], revision: u32) -> (GoalState, Vec<Act>) {
    let mut msg = GoalState::default();
    let mut kept: Vec<Act> = Vec::new();
    for a in acts {
        if kept.iter().any(|k| k.key() == a.key()) {
            continue;
        }
        kept.push(a.clone());
        match a {
            Act::Vpc(k, op) => {
                msg.vpc_states
                    .push(vpc(*op, &format!("v{k}"), VNI + *k as u32, revision, UpdateType::Delta));
            }
            Act::Subnet(k, op) => {
                let mut s = subnet(*op, &format!("s{k}"), &format!("v{k}"), *k as u8);
                if let Some(c) = s.configuration.as_mut() {
                    c.gateway = Some(subnet_configuration::Gateway {
                        ip_address: format!("198.18.{k}.1"),
                        mac_address: format!("aa:bb:cc:00:0{k}:01"),
                    });
                    c.revision_number = revision;
                }
                msg.subnet_states.push(s);
            }
            Act::Neighbor {
                k,
                vpc,
                mac,
                host,
                op,
                flaw,
            } => {
                let held = Held {
                    vpc: *vpc,
                    mac: [2, 0, 0, 0, *vpc as u8, *mac],
                    host: [198, 19, 0, *host],
                };
                let [a, b, c, d] = held.ip(*k);
                let mut ip = format!("{a}.{b}.{c}.{d}");
                let mut mac = alioth::goalstate::model::format_mac(&held.mac);
                let mut host = format!("198.19.0.{}", held.host[3]);
                let mut subnet_id = format!("s{vpc}");
                match flaw {
                    Some(Flaw::BadMac) => mac = "02:00:zz:00:00:01".into(),
                    Some(Flaw::IpInAnotherSubnet) => ip = format!("198.18.{}.{}", 1 - vpc, 10 + k),
                    Some(Flaw::HostZero) => host = "0.0.0.0".into(),
                    Some(Flaw::UnknownSubnet) => subnet_id = "s9".into(),
                    Some(Flaw::BadIp) => ip = format!("198.18.{vpc}.3{k}0"),
                    None => {}
                }
                msg.neighbor_states.push(NeighborState {
                    operation_type: *op as i32,
                    configuration: Some(NeighborConfiguration {
                        revision_number: revision,
                        id: format!("n{k}"),
                        vpc_id: format!("v{vpc}"),
                        mac_address: mac,
                        host_ip_address: host,
                        fixed_ips: vec![neighbor_configuration::FixedIp {
                            subnet_id,
                            ip_address: ip,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                });
            }
        }
    }
    (msg, kept)
}

/// Applies the answers to the model: what succeeded happened, nothing else did.
fn follow(model: &mut Model, acts: &[Act], reply: &GoalStateOperationReply) -> Result<(), TestCaseError> {
    let answered: BTreeMap<(i32, String), OperationStatus> = reply
        .operation_statuses
        .iter()
        .zip(statuses(reply))
        .map(|(s, (id, st))| ((s.resource_type, id), st))
        .collect();
    for a in acts {
        let (kind, id) = a.key();
        let status = answered.get(&(kind as i32, id.clone()));
        prop_assert!(status.is_some(), "no answer for {id}: {reply:?}");
        if status != Some(&OperationStatus::Success) {
            continue;
        }
        match a {
            Act::Vpc(k, op) => model.vpcs[*k] = *op != OperationType::Delete,
            Act::Subnet(k, op) => model.subnets[*k] = *op != OperationType::Delete,
            Act::Neighbor { flaw: Some(f), .. } => prop_assert!(false, "{id} with {f:?} was accepted"),
            Act::Neighbor {
                k,
                op: OperationType::Delete,
                ..
            } => drop(model.neighbors.remove(k)),
            Act::Neighbor { k, vpc, mac, host, .. } => {
                let held = Held {
                    vpc: *vpc,
                    mac: [2, 0, 0, 0, *vpc as u8, *mac],
                    host: [198, 19, 0, *host],
                };
                model.neighbors.insert(*k, held);
            }
        }
    }
    Ok(())
}

/// The controller's state and the ENDPOINTS map against the model.
fn agree(c: &mut Controller, model: &Model) -> Result<(), TestCaseError> {
    let state = c.state();
    let ids = |present: &[bool], p: &str| -> Vec<String> {
        (0..present.len())
            .filter(|k| present[*k])
            .map(|k| format!("{p}{k}"))
            .collect()
    };
    let sorted = |keys: Vec<String>| {
        let mut keys = keys;
        keys.sort();
        keys
    };
    prop_assert_eq!(sorted(state.vpcs.keys().cloned().collect()), ids(&model.vpcs, "v"));
    prop_assert_eq!(
        sorted(state.subnets.keys().cloned().collect()),
        ids(&model.subnets, "s")
    );
    let mut held: Vec<String> = state.neighbors().keys().map(|k| k.to_string()).collect();
    held.sort();
    let modelled: Vec<String> = model.neighbors.keys().map(|k| format!("n{k}")).collect();
    prop_assert_eq!(held, modelled);
    for vpc in 0..VPCS {
        for last in std::iter::once(1).chain(10..10 + NEIGHBORS as u8) {
            let key = EndpointKey {
                vni: VNI + vpc as u32,
                ip: [198, 18, vpc as u8, last],
            };
            let found = c
                .dataplane()
                .endpoint(&key)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let expected = match last {
                1 => model.subnets[vpc].then_some((endpoint_kind::GATEWAY, None)),
                _ => model
                    .neighbors
                    .get(&usize::from(last - 10))
                    .filter(|n| n.vpc == vpc)
                    .map(|n| (endpoint_kind::REMOTE_PORT, Some((n.mac, n.host)))),
            };
            match (expected, found) {
                (None, None) => {}
                (Some((kind, None)), Some(e)) => prop_assert_eq!(e.kind, kind),
                (Some((kind, Some((mac, host)))), Some(e)) => {
                    prop_assert_eq!((e.kind, e.mac, e.host_ip), (kind, mac, host))
                }
                (expected, found) => prop_assert!(false, "{key:?}: expected {expected:?}, found {found:?}"),
            }
        }
    }
    Ok(())
}

/// One controller for every case (loading the object takes a second): each case starts from
/// an empty state, and revisions keep growing across cases, so no tombstone of one case refuses
/// the next.
fn controller() -> &'static Mutex<Controller> {
    static CONTROLLER: OnceLock<Mutex<Controller>> = OnceLock::new();
    CONTROLLER.get_or_init(|| {
        let (dp, _) = Dataplane::load(None, AttachMode::Skb).expect("load the XDP object");
        let naming = Naming {
            iface_template: "zz{id11}".into(),
            ..Default::default()
        };
        Mutex::new(Controller::new(dp, naming))
    })
}

static REVISION: AtomicU32 = AtomicU32::new(1);

/// Deletes everything the controller holds; the maps must be left empty.
fn clear(c: &mut Controller) -> Result<(), TestCaseError> {
    let revision = REVISION.fetch_add(1, Ordering::Relaxed);
    let mut model = Model {
        vpcs: vec![false; VPCS],
        subnets: vec![false; VPCS],
        ..Model::default()
    };
    let mut acts: Vec<Act> = Vec::new();
    for id in c.state().neighbors().keys() {
        let k = id[1..]
            .parse()
            .map_err(|_| TestCaseError::fail(format!("neighbor {id}")))?;
        let delete = OperationType::Delete;
        acts.push(Act::Neighbor {
            k,
            vpc: 0,
            mac: 1,
            host: 1,
            op: delete,
            flaw: None,
        });
    }
    for k in 0..VPCS {
        acts.extend([
            Act::Subnet(k, OperationType::Delete),
            Act::Vpc(k, OperationType::Delete),
        ]);
    }
    let (msg, acts) = message(&acts, revision);
    let reply = c.push(&msg);
    follow(&mut model, &acts, &reply)?;
    agree(c, &model)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn replies_state_and_maps_agree_with_a_model(
        messages in proptest::collection::vec(proptest::collection::vec(act(), 1..8), 1..16),
    ) {
        let mut c = controller().lock().unwrap_or_else(|e| e.into_inner());
        clear(&mut c)?;
        let mut model = Model { vpcs: vec![false; VPCS], subnets: vec![false; VPCS], ..Model::default() };
        for acts in &messages {
            let (msg, acts) = message(acts, REVISION.fetch_add(1, Ordering::Relaxed));
            let reply = c.push(&msg);
            follow(&mut model, &acts, &reply)?;
            agree(&mut c, &model)?;
        }
    }
}

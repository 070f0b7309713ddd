//! The pure planner: (state, accepted changes) -> the BPF map operations that realise them.
//!
//! Each resource renders to a set of `ENDPOINTS` entries; a change removes what its old version
//! rendered and writes what its new version renders. Operations are merged by key, so a key that is
//! removed by one resource and written by another in the same message is just written, and a key
//! whose value does not change is not touched at all.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use smallvec::SmallVec;

use alioth_common::maps::{endpoint_kind, Endpoint, EndpointKey};

use alioth_proto::schema::ResourceType;

use crate::goalstate::model::{Change, Resource};
use crate::goalstate::model::{HashMap, HashSet, Neighbor, Port, State, Subnet};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointOp {
    Upsert(EndpointKey, Endpoint),
    Remove(EndpointKey),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortOp {
    /// Remove the port program and the `PORTS` entry from this interface.
    Detach { iface: String },
    /// Write the port's `PORTS` entry and make sure the program is attached to its interface.
    Program { port_id: String },
}

/// Map operations in the order the applier performs them: detaches, endpoint upserts, endpoint
/// removals, port programming. Each operation carries the index of the outcome it is timed against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub detach: Vec<(usize, PortOp)>,
    pub endpoints: Vec<(usize, EndpointOp)>,
    pub program: Vec<(usize, PortOp)>,
}

pub fn subnet_entries(s: &Subnet, vni: u32) -> Vec<(EndpointKey, Endpoint)> {
    if !s.gateway {
        return Vec::new();
    }
    let key = EndpointKey {
        vni,
        ip: s.gateway_ip.octets(),
    };
    let value = Endpoint {
        mac: s.gateway_mac,
        kind: endpoint_kind::GATEWAY,
        ..Default::default()
    };
    vec![(key, value)]
}

pub fn port_entries(p: &Port, vni: u32) -> Vec<(EndpointKey, Endpoint)> {
    p.fixed_ips
        .iter()
        .map(|f| {
            let key = EndpointKey { vni, ip: f.ip.octets() };
            (
                key,
                Endpoint {
                    mac: p.mac,
                    kind: endpoint_kind::LOCAL_PORT,
                    ..Default::default()
                },
            )
        })
        .collect()
}

/// Everything `state` renders to: what `ENDPOINTS` holds once every plan has been applied.
pub fn render(state: &State) -> BTreeMap<EndpointKey, Endpoint> {
    let vni = |vpc: &str| state.vpcs[vpc].vni;
    let subnets = state.subnets.values().flat_map(|s| subnet_entries(s, vni(&s.vpc_id)));
    let ports = state.ports().values().flat_map(|p| port_entries(p, vni(&p.vpc_id)));
    let neighbors = state
        .neighbors()
        .values()
        .flat_map(|n| neighbor_entries(n, vni(&n.vpc_id)));
    subnets.chain(ports).chain(neighbors).collect()
}

pub fn neighbor_entries(n: &Neighbor, vni: u32) -> impl Iterator<Item = (EndpointKey, Endpoint)> + '_ {
    n.fixed_ips.iter().map(move |f| {
        let key = EndpointKey { vni, ip: f.ip.octets() };
        let value = Endpoint {
            mac: n.mac,
            kind: endpoint_kind::REMOTE_PORT,
            host_ip: n.host_ip.octets(),
            ..Default::default()
        };
        (key, value)
    })
}

/// The plan that fills empty maps with everything `state` renders and programs every port: a
/// restarted agent's, whose every operation answers outcome 0. Written straight from the state
/// (a valid state renders each key once), not replayed through `plan` as creations: at a million
/// resources that replay took seconds of hash-map bookkeeping that has nothing to reconcile.
pub fn everything(state: &State) -> Plan {
    let vni = |vpc: &str| state.vpcs.get(vpc).map(|v| v.vni);
    let subnets = state
        .subnets
        .values()
        .filter_map(|s| Some(subnet_entries(s, vni(&s.vpc_id)?)))
        .flatten();
    let ports = state
        .ports()
        .values()
        .filter_map(|p| Some(port_entries(p, vni(&p.vpc_id)?)))
        .flatten();
    let neighbors = state
        .neighbors()
        .values()
        .filter_map(|n| Some(neighbor_entries(n, vni(&n.vpc_id)?)))
        .flatten();
    Plan {
        detach: Vec::new(),
        endpoints: subnets
            .chain(ports)
            .chain(neighbors)
            .map(|(k, v)| (0, EndpointOp::Upsert(k, v)))
            .collect(),
        program: state
            .ports()
            .keys()
            .map(|id| {
                (
                    0,
                    PortOp::Program {
                        port_id: id.to_string(),
                    },
                )
            })
            .collect(),
    }
}

/// True when a subnet's change reaches its ports' `PORTS` or `DHCP` entries.
fn serves_differently(b: &Subnet, a: &Subnet) -> bool {
    let served = |s: &Subnet| {
        (
            s.cidr,
            s.gateway_ip,
            s.gateway_mac,
            s.gateway,
            s.dhcp_enable,
            s.dns.clone(),
            s.dhcp_options.clone(),
        )
    };
    served(b) != served(a)
}

/// What one resource renders: almost always one entry, kept inline.
type Entries = SmallVec<[(EndpointKey, Endpoint); 1]>;

/// What a message does to one `ENDPOINTS` key.
struct KeyOp {
    /// The outcome of the last change to touch the key.
    owner: usize,
    /// The key's value once the message is applied (`None`: removed).
    now: Option<Endpoint>,
    /// What the map held before the message.
    original: Option<Endpoint>,
}

/// A resource that renders entries: (kind, id), borrowed from the changes or the state.
type Owner<'a> = (ResourceType, &'a str);

fn owner_of(r: &Resource) -> Option<Owner<'_>> {
    match r {
        Resource::Vpc(_) => None,
        r => Some(r.kind_id()),
    }
}

fn vpc_of(r: &Resource) -> &str {
    match r {
        Resource::Vpc(v) => &v.id,
        Resource::Subnet(s) => &s.vpc_id,
        Resource::Port(p) => &p.vpc_id,
        Resource::Neighbor(n) => &n.vpc_id,
        // Renders no entries: keyed by nothing of a VPC.
        Resource::Dhcp(_) => "",
    }
}

fn entries(r: &Resource, vni: u32) -> Entries {
    match r {
        Resource::Subnet(s) => subnet_entries(s, vni).into_iter().collect(),
        Resource::Port(p) => port_entries(p, vni).into_iter().collect(),
        Resource::Neighbor(n) => neighbor_entries(n, vni).collect(),
        Resource::Vpc(_) | Resource::Dhcp(_) => Entries::new(),
    }
}

/// Plans `changes` (in validation order), which `state` already reflects.
///
/// The changes are replayed in order against what the map holds: the entries of every resource
/// touched so far are tracked, so a resource changed twice in one message, or re-keyed by a VNI
/// change and then changed itself, ends at exactly its final rendering.
pub fn plan(state: &State, changes: &[Change]) -> Plan {
    // Versions and VNIs as they were before the message, and how many changes each resource has.
    let mut pre: HashMap<Owner, (Option<&Resource>, usize)> =
        HashMap::with_capacity_and_hasher(changes.len(), Default::default());
    let mut pre_vni: BTreeMap<&str, Option<u32>> = BTreeMap::new();
    for c in changes {
        let r = c.before.as_ref().or(c.after.as_ref()).expect("a change has a side");
        match r {
            Resource::Vpc(v) => {
                let vni = match &c.before {
                    Some(Resource::Vpc(b)) => Some(b.vni),
                    _ => None,
                };
                pre_vni.entry(&*v.id).or_insert(vni);
            }
            _ => {
                pre.entry(owner_of(r).expect("not a VPC"))
                    .or_insert((c.before.as_ref(), 0))
                    .1 += 1;
            }
        }
    }
    // A VNI change re-keys what its VPC has in the map, reading what each member holds there.
    let rekeys = changes.iter().any(|c| match (&c.before, &c.after) {
        (Some(Resource::Vpc(b)), Some(Resource::Vpc(a))) => b.vni != a.vni,
        _ => false,
    });
    let vni_pre = |vpc: &str| {
        pre_vni
            .get(vpc)
            .copied()
            .unwrap_or_else(|| state.vpcs.get(vpc).map(|v| v.vni))
    };
    let pre_version = |o: &Owner| -> Option<Resource> {
        match pre.get(o) {
            Some((v, _)) => v.cloned(),
            None => match o.0 {
                ResourceType::Port => state.ports().get(o.1).cloned().map(Resource::Port),
                ResourceType::Neighbor => state.neighbors().get(o.1).cloned().map(Resource::Neighbor),
                ResourceType::Dhcp => state.dhcp_hosts().get(o.1).cloned().map(Resource::from),
                _ => state.subnets.get(o.1).cloned().map(Resource::from),
            },
        }
    };

    // What each touched resource has in the map right now, in replay order.
    let mut current: HashMap<Owner, Entries> = HashMap::with_capacity_and_hasher(changes.len(), Default::default());
    let mut vni_now: BTreeMap<String, Option<u32>> = BTreeMap::new();
    let in_map = |current: &HashMap<Owner, Entries>, o: &Owner| -> Entries {
        match current.get(o) {
            Some(e) => e.clone(),
            None => pre_version(o)
                .and_then(|r| vni_pre(vpc_of(&r)).map(|vni| entries(&r, vni)))
                .unwrap_or_default(),
        }
    };

    // Last word per key wins; `original` is what the key held before the message. Keys are kept
    // in the order first touched (the changes' order), which makes the plan deterministic without
    // sorting it: sorting 10,000 keys was a third of planning them.
    let mut ops: Vec<(EndpointKey, KeyOp)> = Vec::with_capacity(changes.len());
    let mut op_of: HashMap<EndpointKey, usize> = HashMap::with_capacity_and_hasher(changes.len(), Default::default());
    let mut replace = |owner: usize, old: Entries, new: &[(EndpointKey, Endpoint)]| {
        let mut word = |k: EndpointKey, original: Option<Endpoint>, now: Option<Endpoint>| match op_of.entry(k) {
            Entry::Occupied(e) => {
                let op = &mut ops[*e.get()].1;
                (op.owner, op.now) = (owner, now);
            }
            Entry::Vacant(e) => {
                e.insert(ops.len());
                ops.push((k, KeyOp { owner, now, original }));
            }
        };
        for (k, v) in old {
            word(k, Some(v), None);
        }
        for (k, v) in new {
            word(*k, None, Some(*v));
        }
    };
    let mut out = Plan::default();
    // Ports this message programs anyway (their own change); a subnet change need not add them.
    let programmed: HashSet<&str> = changes
        .iter()
        .filter_map(|c| match &c.after {
            Some(Resource::Port(p)) => Some(&*p.id),
            _ => None,
        })
        .collect();

    for c in changes {
        let o = c.outcome;
        match (&c.before, &c.after) {
            (_, Some(Resource::Vpc(a))) | (Some(Resource::Vpc(a)), None) => {
                let old = vni_now.get(&*a.id).copied().unwrap_or_else(|| vni_pre(&a.id));
                let new = match &c.after {
                    Some(Resource::Vpc(a)) => Some(a.vni),
                    _ => None,
                };
                vni_now.insert(a.id.to_string(), new);
                let (Some(old), Some(new)) = (old, new) else {
                    continue;
                };
                if old == new {
                    continue;
                }
                // Re-key everything of the VPC that is in the map under the old VNI.
                let members = state
                    .subnets
                    .values()
                    .filter(|s| s.vpc_id == *a.id)
                    .map(|s| (ResourceType::Subnet, &*s.id))
                    .chain(
                        state
                            .ports()
                            .values()
                            .filter(|p| p.vpc_id == a.id)
                            .map(|p| (ResourceType::Port, &*p.id)),
                    )
                    .chain(
                        state
                            .neighbors()
                            .values()
                            .filter(|n| n.vpc_id == a.id)
                            .map(|n| (ResourceType::Neighbor, &*n.id)),
                    )
                    .chain(
                        pre.iter()
                            .filter(|(_, (r, _))| r.is_some_and(|r| vpc_of(r) == &*a.id))
                            .map(|(k, _)| *k),
                    )
                    .collect::<BTreeSet<Owner>>();
                for m in members {
                    let old_entries = in_map(&current, &m);
                    let Some(r) = pre_version(&m).filter(|r| vpc_of(r) == &*a.id) else {
                        continue;
                    };
                    let new_entries = entries(&r, new);
                    replace(o, old_entries, &new_entries);
                    current.insert(m, new_entries);
                    if m.0 == ResourceType::Port && state.ports().contains_key(m.1) {
                        out.program.push((
                            o,
                            PortOp::Program {
                                port_id: m.1.to_string(),
                            },
                        ));
                    }
                }
            }
            (before, after) => {
                let r = after.as_ref().or(before.as_ref()).expect("a change has a side");
                let owner = owner_of(r).expect("not a VPC");
                // The usual message changes each resource once and no VNI: what the resource has
                // in the map is then what its version before the message renders, and nothing
                // reads back what this change renders.
                let once = !rekeys && pre.get(&owner).is_none_or(|(_, n)| *n <= 1);
                let old_entries = match (once, before) {
                    (true, None) => Entries::new(),
                    _ => in_map(&current, &owner),
                };
                let new_entries = match after {
                    Some(a) => match vni_now.get(vpc_of(a)).copied().unwrap_or_else(|| vni_pre(vpc_of(a))) {
                        Some(vni) => entries(a, vni),
                        None => Entries::new(),
                    },
                    None => Entries::new(),
                };
                replace(o, old_entries, &new_entries);
                if !once {
                    current.insert(owner, new_entries);
                }
                // A port's PORTS entry carries its primary subnet's gateway, and its DHCP entry
                // what its subnet serves: reprogram the subnet's ports when either changed.
                if let (Some(Resource::Subnet(b)), Some(Resource::Subnet(a))) = (before, after) {
                    if serves_differently(b, a) {
                        for id in state.subnet_users(&a.id).filter(|id| !programmed.contains(&***id)) {
                            if state.ports().contains_key(id) {
                                out.program.push((
                                    o,
                                    PortOp::Program {
                                        port_id: id.to_string(),
                                    },
                                ));
                            }
                        }
                    }
                }
                // A DHCP entry changes what its MAC's port is told.
                if let Some(Resource::Dhcp(d)) = after.as_ref().or(before.as_ref()) {
                    let port = state
                        .subnets
                        .get(&d.subnet_id)
                        .and_then(|s| state.mac_owner(&s.vpc_id, &d.mac));
                    if let Some(id) = port.filter(|id| !programmed.contains(id)) {
                        out.program.push((
                            o,
                            PortOp::Program {
                                port_id: id.to_string(),
                            },
                        ));
                    }
                }
                match (before, after) {
                    (Some(Resource::Port(b)), Some(Resource::Port(a))) => {
                        if b.iface != a.iface {
                            out.detach.push((o, PortOp::Detach { iface: b.iface.clone() }));
                        }
                        out.program.push((
                            o,
                            PortOp::Program {
                                port_id: a.id.to_string(),
                            },
                        ));
                    }
                    (None, Some(Resource::Port(a))) => out.program.push((
                        o,
                        PortOp::Program {
                            port_id: a.id.to_string(),
                        },
                    )),
                    (Some(Resource::Port(b)), None) => out.detach.push((o, PortOp::Detach { iface: b.iface.clone() })),
                    _ => {}
                }
            }
        }
    }

    // Writes, then removals, each in the order their keys were first touched.
    let mut removals: Vec<(usize, EndpointOp)> = Vec::new();
    out.endpoints.reserve(ops.len());
    for (k, op) in ops {
        match op.now {
            Some(v) if op.original != Some(v) => out.endpoints.push((op.owner, EndpointOp::Upsert(k, v))),
            None if op.original.is_some() => removals.push((op.owner, EndpointOp::Remove(k))),
            _ => {}
        }
    }
    out.endpoints.append(&mut removals);
    out
}

#[cfg(test)]
pub(crate) mod tests;

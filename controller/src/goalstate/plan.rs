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
    /// Put the port's security-group rules in place again: its groups' rules or members changed.
    Filter { port_id: String },
}

/// Map operations in the order the applier performs them: detaches, endpoint upserts, endpoint
/// removals, port programming. Each operation carries the index of the outcome it is timed against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub detach: Vec<(usize, PortOp)>,
    pub endpoints: Vec<(usize, EndpointOp)>,
    pub program: Vec<(usize, PortOp)>,
    /// Outcomes of the router and gateway changes, timed against rewriting `ROUTES` (which the
    /// applier renders whole: see `routes`).
    pub routes: Vec<usize>,
    /// Outcomes of the elastic IP changes, timed against rewriting the NAT maps (rendered whole
    /// too: see `nat`).
    pub elastic_ips: Vec<usize>,
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
        routes: Vec::new(),
        elastic_ips: Vec::new(),
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
        // Render no entries: keyed by nothing of a VPC.
        Resource::Dhcp(_)
        | Resource::SecurityGroup(_)
        | Resource::Router(_)
        | Resource::Gateway(_)
        | Resource::ElasticIp(_) => "",
    }
}

fn entries(r: &Resource, vni: u32) -> Entries {
    match r {
        Resource::Subnet(s) => subnet_entries(s, vni).into_iter().collect(),
        Resource::Port(p) => port_entries(p, vni).into_iter().collect(),
        Resource::Neighbor(n) => neighbor_entries(n, vni).collect(),
        _ => Entries::new(),
    }
}

/// Plans `changes` (in validation order), which `state` already reflects.
///
/// The changes are replayed in order against what the map holds: the entries of every resource
/// touched so far are tracked, so a resource changed twice in one message, or re-keyed by a VNI
/// change and then changed itself, ends at exactly its final rendering.
pub fn plan<'a>(state: &'a State, changes: &'a [Change]) -> Plan {
    let mut p = Planner::new(state, changes);
    for c in changes {
        match (&c.before, &c.after) {
            (_, Some(Resource::Vpc(a))) | (Some(Resource::Vpc(a)), None) => {
                let new = match &c.after {
                    Some(Resource::Vpc(a)) => Some(a.vni),
                    _ => None,
                };
                p.vpc(c.outcome, &a.id, new);
            }
            (before, after) => p.resource(c.outcome, before.as_ref(), after.as_ref()),
        }
    }
    p.finish()
}

/// Planning one message: what the map held before it, and what each touched key and resource
/// holds as its changes are replayed.
struct Planner<'a> {
    state: &'a State,
    /// Each resource's version before the message, and how many changes it has in it.
    pre: HashMap<Owner<'a>, (Option<&'a Resource>, usize)>,
    /// VNIs of the VPCs the message changes, as they were before it.
    pre_vni: BTreeMap<&'a str, Option<u32>>,
    /// Whether a VNI changes (which re-keys what its VPC has in the map).
    rekeys: bool,
    /// What each touched resource has in the map right now, in replay order.
    current: HashMap<Owner<'a>, Entries>,
    vni_now: BTreeMap<String, Option<u32>>,
    /// Last word per key; keys in the order first touched (the changes' order), which makes the
    /// plan deterministic without sorting it: sorting 10,000 keys was a third of planning them.
    ops: Vec<(EndpointKey, KeyOp)>,
    op_of: HashMap<EndpointKey, usize>,
    /// Ports this message programs anyway (their own change); a subnet change need not add them.
    programmed: HashSet<&'a str>,
    /// Security groups whose rules change, and those whose members (or their addresses) do, with
    /// the outcome of the first change that did: the ports they filter compile their rules anew.
    sg_rules: BTreeMap<&'a str, usize>,
    sg_members: BTreeMap<&'a str, usize>,
    out: Plan,
}

impl<'a> Planner<'a> {
    fn new(state: &'a State, changes: &'a [Change]) -> Self {
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
        let rekeys = changes.iter().any(|c| match (&c.before, &c.after) {
            (Some(Resource::Vpc(b)), Some(Resource::Vpc(a))) => b.vni != a.vni,
            _ => false,
        });
        let programmed = changes
            .iter()
            .filter_map(|c| match &c.after {
                Some(Resource::Port(p)) => Some(&*p.id),
                _ => None,
            })
            .collect();
        Planner {
            state,
            pre,
            pre_vni,
            rekeys,
            current: HashMap::with_capacity_and_hasher(changes.len(), Default::default()),
            vni_now: BTreeMap::new(),
            ops: Vec::with_capacity(changes.len()),
            op_of: HashMap::with_capacity_and_hasher(changes.len(), Default::default()),
            programmed,
            sg_rules: BTreeMap::new(),
            sg_members: BTreeMap::new(),
            out: Plan::default(),
        }
    }

    fn vni_pre(&self, vpc: &str) -> Option<u32> {
        self.pre_vni
            .get(vpc)
            .copied()
            .unwrap_or_else(|| self.state.vpcs.get(vpc).map(|v| v.vni))
    }

    fn vni_now(&self, vpc: &str) -> Option<u32> {
        self.vni_now.get(vpc).copied().unwrap_or_else(|| self.vni_pre(vpc))
    }

    fn pre_version(&self, o: &Owner) -> Option<Resource> {
        let state = self.state;
        match self.pre.get(o) {
            Some((v, _)) => v.cloned(),
            None => match o.0 {
                ResourceType::Port => state.ports().get(o.1).cloned().map(Resource::Port),
                ResourceType::Neighbor => state.neighbors().get(o.1).cloned().map(Resource::Neighbor),
                ResourceType::Dhcp => state.dhcp_hosts().get(o.1).cloned().map(Resource::from),
                ResourceType::Securitygroup => None,
                _ => state.subnets.get(o.1).cloned().map(Resource::from),
            },
        }
    }

    /// What `o` has in the map now.
    fn in_map(&self, o: &Owner) -> Entries {
        match self.current.get(o) {
            Some(e) => e.clone(),
            None => self
                .pre_version(o)
                .and_then(|r| self.vni_pre(vpc_of(&r)).map(|vni| entries(&r, vni)))
                .unwrap_or_default(),
        }
    }

    /// `old` entries give way to `new` ones, on behalf of outcome `owner`; `original` is what a
    /// key held before the message.
    fn replace(&mut self, owner: usize, old: Entries, new: &[(EndpointKey, Endpoint)]) {
        let (ops, op_of) = (&mut self.ops, &mut self.op_of);
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
    }

    fn program(&mut self, o: usize, port_id: &str) {
        let port_id = port_id.to_string();
        self.out.program.push((o, PortOp::Program { port_id }));
    }

    /// A VPC's change (`new`: its VNI after, `None`: deleted): a new VNI re-keys everything of the
    /// VPC that is in the map under the old one.
    fn vpc(&mut self, o: usize, id: &'a str, new: Option<u32>) {
        let old = self.vni_now(id);
        self.vni_now.insert(id.to_string(), new);
        let (Some(old), Some(new)) = (old, new) else {
            return;
        };
        if old == new {
            return;
        }
        let state = self.state;
        let members = state
            .subnets
            .values()
            .filter(|s| *s.vpc_id == *id)
            .map(|s| (ResourceType::Subnet, &*s.id))
            .chain(
                state
                    .ports()
                    .values()
                    .filter(|p| *p.vpc_id == *id)
                    .map(|p| (ResourceType::Port, &*p.id)),
            )
            .chain(
                state
                    .neighbors()
                    .values()
                    .filter(|n| *n.vpc_id == *id)
                    .map(|n| (ResourceType::Neighbor, &*n.id)),
            )
            .chain(
                self.pre
                    .iter()
                    .filter(|(_, (r, _))| r.is_some_and(|r| vpc_of(r) == id))
                    .map(|(k, _)| *k),
            )
            .collect::<BTreeSet<Owner>>();
        for m in members {
            let old_entries = self.in_map(&m);
            let Some(r) = self.pre_version(&m).filter(|r| vpc_of(r) == id) else {
                continue;
            };
            let new_entries = entries(&r, new);
            self.replace(o, old_entries, &new_entries);
            self.current.insert(m, new_entries);
            if m.0 == ResourceType::Port && state.ports().contains_key(m.1) {
                self.program(o, m.1);
            }
        }
    }

    /// A change of anything but a VPC.
    fn resource(&mut self, o: usize, before: Option<&'a Resource>, after: Option<&'a Resource>) {
        let r = after.or(before).expect("a change has a side");
        let owner = owner_of(r).expect("not a VPC");
        // The usual message changes each resource once and no VNI: what the resource has in the
        // map is then what its version before the message renders, and nothing reads back what
        // this change renders.
        let once = !self.rekeys && self.pre.get(&owner).is_none_or(|(_, n)| *n <= 1);
        let old_entries = match (once, before) {
            (true, None) => Entries::new(),
            _ => self.in_map(&owner),
        };
        let new_entries = match after.and_then(|a| Some((a, self.vni_now(vpc_of(a))?))) {
            Some((a, vni)) => entries(a, vni),
            None => Entries::new(),
        };
        self.replace(o, old_entries, &new_entries);
        if !once {
            self.current.insert(owner, new_entries);
        }
        self.dependent_ports(o, before, after);
        self.group_changes(o, before, after);
        if matches!(r, Resource::Router(_) | Resource::Gateway(_)) {
            self.out.routes.push(o);
        }
        if matches!(r, Resource::ElasticIp(_)) {
            self.out.elastic_ips.push(o);
        }
        match (before, after) {
            (Some(Resource::Port(b)), Some(Resource::Port(a))) => {
                if b.iface != a.iface {
                    self.out.detach.push((
                        o,
                        PortOp::Detach {
                            iface: b.iface.to_string(),
                        },
                    ));
                }
                self.program(o, &a.id);
            }
            (None, Some(Resource::Port(a))) => self.program(o, &a.id),
            (Some(Resource::Port(b)), None) => self.out.detach.push((
                o,
                PortOp::Detach {
                    iface: b.iface.to_string(),
                },
            )),
            _ => {}
        }
    }

    /// Ports a subnet or DHCP change reprograms: a port's PORTS entry carries its primary subnet's
    /// gateway and its DHCP entry what its subnet serves and what its MAC is told.
    fn dependent_ports(&mut self, o: usize, before: Option<&'a Resource>, after: Option<&'a Resource>) {
        let state = self.state;
        if let (Some(Resource::Subnet(b)), Some(Resource::Subnet(a))) = (before, after) {
            if serves_differently(b, a) {
                let users: Vec<_> = state
                    .subnet_users(&a.id)
                    .filter(|id| !self.programmed.contains(&***id) && state.ports().contains_key(*id))
                    .collect();
                for id in users {
                    self.program(o, id);
                }
            }
        }
        if let Some(Resource::Dhcp(d)) = after.or(before) {
            let port = state
                .subnets
                .get(&d.subnet_id)
                .and_then(|s| state.mac_owner(&s.vpc_id, &d.mac));
            if let Some(id) = port.filter(|id| !self.programmed.contains(id)) {
                self.program(o, id);
            }
        }
    }

    /// Notes what a change does to security groups: their rules, or who is in them.
    fn group_changes(&mut self, o: usize, before: Option<&'a Resource>, after: Option<&'a Resource>) {
        let membership = |r: Option<&'a Resource>| match r {
            Some(Resource::Port(p)) => Some((&p.security_groups, &p.fixed_ips, &p.vpc_id, &p.allowed_pairs)),
            Some(Resource::Neighbor(n)) => Some((&n.security_groups, &n.fixed_ips, &n.vpc_id, &n.allowed_pairs)),
            _ => None,
        };
        if let Some(Resource::SecurityGroup(g)) = after.or(before) {
            self.sg_rules.entry(&g.id).or_insert(o);
            self.sg_members.entry(&g.id).or_insert(o);
            return;
        }
        let (b, a) = (membership(before), membership(after));
        if b == a {
            return;
        }
        for (groups, ..) in [b, a].into_iter().flatten() {
            for g in groups {
                self.sg_members.entry(g).or_insert(o);
            }
        }
    }

    /// Ports whose compiled rules a security-group change reaches: those in a group whose rules
    /// changed, and those with a rule naming a group whose members changed.
    fn filtered_ports(&mut self) {
        if self.sg_rules.is_empty() && self.sg_members.is_empty() {
            return;
        }
        let state = self.state;
        let mut recompile = self.sg_rules.clone();
        for g in state.security_groups.values() {
            let named = g.rules.iter().find_map(|r| match &r.remote {
                crate::goalstate::model::Remote::Group(m) => self.sg_members.get(&**m),
                _ => None,
            });
            if let Some(o) = named {
                recompile.entry(&g.id).or_insert(*o);
            }
        }
        if recompile.is_empty() {
            return;
        }
        let ports: Vec<(usize, &str)> = state
            .ports()
            .values()
            .filter(|p| !self.programmed.contains(&*p.id))
            .filter_map(|p| {
                let o = p.security_groups.iter().find_map(|g| recompile.get(&**g))?;
                Some((*o, &*p.id))
            })
            .collect();
        for (o, id) in ports {
            let port_id = id.to_string();
            self.out.program.push((o, PortOp::Filter { port_id }));
        }
    }

    /// Writes, then removals, each in the order their keys were first touched.
    fn finish(mut self) -> Plan {
        self.filtered_ports();
        let mut removals: Vec<(usize, EndpointOp)> = Vec::new();
        self.out.endpoints.reserve(self.ops.len());
        for (k, op) in self.ops {
            match op.now {
                Some(v) if op.original != Some(v) => self.out.endpoints.push((op.owner, EndpointOp::Upsert(k, v))),
                None if op.original.is_some() => removals.push((op.owner, EndpointOp::Remove(k))),
                _ => {}
            }
        }
        self.out.endpoints.append(&mut removals);
        self.out
    }
}

#[cfg(test)]
pub(crate) mod tests;

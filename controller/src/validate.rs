//! Goal-state message -> validated changes to the controller's `State`.
//!
//! A message is validated as a whole, in dependency order (VPCs, subnets, ports; deletions in the
//! reverse order), against the state as it will be once the earlier valid resources of the same
//! message are applied. Invalid resources are answered and skipped; nothing is written here.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alioth_proto::schema::{
    GoalState, OperationStatus, OperationType, PortState, ResourceType, SubnetState, UpdateType, VpcConfiguration,
    VpcState,
};

use crate::dhcp;

mod delta;
mod dhcp_entry;
mod neighbor;
use crate::model::{self, DhcpHost, FixedIp, FixedIps, Id, Neighbor, Owner, Port, State, Subnet, Vpc, MAX_VNI};

/// A resource as stored in `State`. Ports and neighbors are shared with the state; the rest, few
/// and larger, are boxed, so that a change stays a few words however large its resource.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Resource {
    Vpc(Box<Vpc>),
    Subnet(Box<Subnet>),
    Port(Arc<Port>),
    Neighbor(Arc<Neighbor>),
    Dhcp(Box<DhcpHost>),
}

impl State {
    /// Every resource, in dependency order (VPCs, subnets, ports, neighbors).
    pub fn resources(&self) -> impl Iterator<Item = Resource> + '_ {
        let vpcs = self.vpcs.values().cloned().map(Resource::from);
        let subnets = self.subnets.values().cloned().map(Resource::from);
        let ports = self.ports().values().cloned().map(Resource::Port);
        vpcs.chain(subnets)
            .chain(ports)
            .chain(self.neighbors().values().cloned().map(Resource::Neighbor))
            .chain(self.dhcp_hosts().values().cloned().map(Resource::from))
    }

    /// A copy of resource `id` of type `kind`, if the state has it.
    pub fn get(&self, kind: ResourceType, id: &str) -> Option<Resource> {
        match kind {
            ResourceType::Vpc => self.vpcs.get(id).cloned().map(Resource::from),
            ResourceType::Subnet => self.subnets.get(id).cloned().map(Resource::from),
            ResourceType::Port => self.ports().get(id).cloned().map(Resource::Port),
            ResourceType::Neighbor => self.neighbors().get(id).cloned().map(Resource::Neighbor),
            ResourceType::Dhcp => self.dhcp_hosts().get(id).cloned().map(Resource::from),
            _ => None,
        }
    }

    pub fn put(&mut self, r: Resource) {
        match r {
            Resource::Vpc(v) => drop(self.vpcs.insert(v.id.to_string(), *v)),
            Resource::Subnet(s) => drop(self.subnets.insert(s.id.to_string(), *s)),
            Resource::Port(p) => drop(self.put_port(p)),
            Resource::Neighbor(n) => drop(self.put_neighbor(n)),
            Resource::Dhcp(d) => drop(self.put_dhcp(*d)),
        }
    }

    /// Forgets the tombstone of resource `id` of type `kind` (it exists again). Free when there
    /// are no tombstones, the common case.
    pub fn forget_tombstone(&mut self, kind: ResourceType, id: &str) {
        if !self.tombstones.is_empty() {
            self.tombstones.remove(&(kind as i32, id.to_string()));
        }
    }

    pub fn delete(&mut self, kind: ResourceType, id: &str) {
        match kind {
            ResourceType::Vpc => drop(self.vpcs.remove(id)),
            ResourceType::Subnet => drop(self.subnets.remove(id)),
            ResourceType::Port => drop(self.remove_port(id)),
            ResourceType::Neighbor => drop(self.remove_neighbor(id)),
            ResourceType::Dhcp => drop(self.remove_dhcp(id)),
            _ => {}
        }
    }
}

macro_rules! resource_from {
    ($($variant:ident($ty:ty) by $wrap:ident),*) => {$(
        impl From<$ty> for Resource {
            fn from(r: $ty) -> Self {
                Resource::$variant($wrap::new(r))
            }
        }
    )*};
}

resource_from!(
    Vpc(Vpc) by Box,
    Subnet(Subnet) by Box,
    Port(Port) by Arc,
    Neighbor(Neighbor) by Arc,
    Dhcp(DhcpHost) by Box
);

impl Resource {
    pub fn revision(&self) -> u32 {
        match self {
            Resource::Vpc(v) => v.revision,
            Resource::Subnet(s) => s.revision,
            Resource::Port(p) => p.revision,
            Resource::Neighbor(n) => n.revision,
            Resource::Dhcp(d) => d.revision,
        }
    }

    pub fn kind_id(&self) -> (ResourceType, &str) {
        match self {
            Resource::Vpc(v) => (ResourceType::Vpc, &v.id),
            Resource::Subnet(s) => (ResourceType::Subnet, &s.id),
            Resource::Port(p) => (ResourceType::Port, &p.id),
            Resource::Neighbor(n) => (ResourceType::Neighbor, &n.id),
            Resource::Dhcp(d) => (ResourceType::Dhcp, &d.id),
        }
    }
}

/// One accepted change: the resource before and after (None = absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub before: Option<Resource>,
    pub after: Option<Resource>,
    /// Index of the outcome this change answers.
    pub outcome: usize,
}

/// The answer for one resource of the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub id: String,
    pub resource_type: ResourceType,
    pub operation: OperationType,
    pub status: OperationStatus,
    /// Why it was refused; `None` on success.
    pub reason: Option<String>,
    /// Time spent validating it.
    pub validation: Duration,
}

/// How the agent names a port's host interface.
#[derive(Clone, Debug)]
pub struct Naming {
    /// `{id11}` is the first 11 characters of the port id, `{id}` the whole id, `{name}` the port name.
    pub iface_template: String,
}

impl Default for Naming {
    fn default() -> Self {
        Naming {
            iface_template: "tap{id11}".into(),
        }
    }
}

impl Naming {
    pub fn iface(&self, id: &str, name: &str) -> String {
        let id11: String = id.chars().take(11).collect();
        self.iface_template
            .replace("{id11}", &id11)
            .replace("{id}", id)
            .replace("{name}", name)
    }
}

/// Validates `msg` against `state`, applying the valid changes to `state` in memory.
pub fn validate(state: &mut State, msg: &GoalState, naming: &Naming) -> (Vec<Outcome>, Vec<Change>) {
    let named = msg.vpc_states.len()
        + msg.subnet_states.len()
        + msg.port_states.len()
        + msg.neighbor_states.len()
        + msg.dhcp_states.len();
    // Room for the usual answer (every resource accepted) at once: growing a vector of 10,000
    // changes by doubling moved each of them about twice.
    let mut v = Validator {
        state,
        naming,
        outcomes: Vec::with_capacity(named),
        changes: Vec::with_capacity(named),
        clock: Instant::now(),
        recent: RefCell::default(),
    };
    let is_delete = |op: i32| op == OperationType::Delete as i32;
    v.state.reserve(msg.port_states.len(), msg.neighbor_states.len());
    // `update_type` is per resource and deletes nothing: FULL says this resource's configuration
    // is complete, DELTA (the default) that it carries what changed. Alcor's DPM marks every port
    // and router FULL (alcor `services/data_plane_manager/.../service/impl/PortService.java`,
    // `RouterService.java`), and ACA only prints the field (alcor-control-agent
    // `src/comm/aca_comm_mgr.cpp`): a resource is deleted by its DELETE, never for being absent.
    let subnet_vnis = subnet_tunnel_ids(&msg.subnet_states);
    for s in msg.vpc_states.iter().filter(|s| !is_delete(s.operation_type)) {
        v.vpc(s, &subnet_vnis);
    }
    // ACA takes a VPC's VNI from its subnets and its own tests send no VPC state at all
    // (alcor-control-agent `test/gtest/aca_test_ovs_l2.cpp`, `aca_test_ovs_util.cpp`): a subnet
    // with a tunnel id whose VPC is neither held nor in the message defines it, answered as the
    // VPC's INFO.
    for s in implied_vpcs(msg, &subnet_vnis, v.state) {
        v.vpc(&s, &subnet_vnis);
    }
    for s in msg.subnet_states.iter().filter(|s| !is_delete(s.operation_type)) {
        v.subnet(s);
    }
    for s in msg.port_states.iter().filter(|s| !is_delete(s.operation_type)) {
        v.port(s);
    }
    for s in msg.neighbor_states.iter().filter(|s| !is_delete(s.operation_type)) {
        v.neighbor(s);
    }
    for s in msg.dhcp_states.iter().filter(|s| !is_delete(s.operation_type)) {
        v.dhcp(s);
    }
    for s in msg.dhcp_states.iter().filter(|s| is_delete(s.operation_type)) {
        v.dhcp(s);
    }
    for s in msg.neighbor_states.iter().filter(|s| is_delete(s.operation_type)) {
        v.neighbor(s);
    }
    for s in msg.port_states.iter().filter(|s| is_delete(s.operation_type)) {
        v.port(s);
    }
    for s in msg.subnet_states.iter().filter(|s| is_delete(s.operation_type)) {
        v.subnet(s);
    }
    for s in msg.vpc_states.iter().filter(|s| is_delete(s.operation_type)) {
        v.vpc(s, &subnet_vnis);
    }
    v.unsupported(
        ResourceType::Securitygroup,
        msg.security_group_states
            .iter()
            .map(|s| (s.operation_type, s.configuration.as_ref().map(|c| c.id.as_str()))),
    );
    v.unsupported(
        ResourceType::Router,
        msg.router_states
            .iter()
            .map(|s| (s.operation_type, s.configuration.as_ref().map(|c| c.id.as_str()))),
    );
    v.unsupported(
        ResourceType::Gateway,
        msg.gateway_states
            .iter()
            .map(|s| (s.operation_type, s.configuration.as_ref().map(|c| c.id.as_str()))),
    );
    (v.outcomes, v.changes)
}

/// The `tunnel_id`s (deprecated, but what Alcor's DPM fills) that a message's subnets give their
/// VPCs: by VPC id, without repeats.
fn subnet_tunnel_ids(subnets: &[SubnetState]) -> BTreeMap<&str, BTreeSet<u64>> {
    let mut out: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for c in subnets.iter().filter_map(|s| s.configuration.as_ref()) {
        if c.tunnel_id != 0 {
            out.entry(c.vpc_id.as_str()).or_default().insert(c.tunnel_id);
        }
    }
    out
}

/// INFO states for the VPCs that only the message's subnets name (with a tunnel id) and the agent
/// does not hold.
fn implied_vpcs(msg: &GoalState, subnet_vnis: &BTreeMap<&str, BTreeSet<u64>>, state: &State) -> Vec<VpcState> {
    let named: BTreeSet<&str> = msg
        .vpc_states
        .iter()
        .filter_map(|s| s.configuration.as_ref())
        .map(|c| c.id.as_str())
        .collect();
    subnet_vnis
        .keys()
        .filter(|id| !id.is_empty() && !named.contains(*id) && !state.vpcs.contains_key(**id))
        .map(|id| VpcState {
            operation_type: OperationType::Info as i32,
            configuration: Some(VpcConfiguration {
                id: id.to_string(),
                ..Default::default()
            }),
        })
        .collect()
}

fn is_delta(update_type: i32) -> bool {
    update_type == UpdateType::Delta as i32
}

/// The configuration to validate: under DELTA, `c` completed from the resource held (`delta`).
fn merged<'a, C: Clone, H>(
    c: &'a C,
    update_type: i32,
    held: Option<H>,
    complete: impl FnOnce(&'a C, H) -> Cow<'a, C>,
) -> Cow<'a, C> {
    match held.filter(|_| is_delta(update_type)) {
        Some(h) => complete(c, h),
        None => Cow::Borrowed(c),
    }
}

enum Op {
    Upsert,
    Delete,
    Nothing,
}

fn op_of(raw: i32) -> Result<(OperationType, Op), String> {
    let op = OperationType::try_from(raw).map_err(|_| format!("unknown operation_type {raw}"))?;
    let kind = match op {
        OperationType::Create | OperationType::Update => Op::Upsert,
        OperationType::Delete => Op::Delete,
        OperationType::Info | OperationType::Get => Op::Nothing,
    };
    Ok((op, kind))
}

struct Validator<'a> {
    state: &'a mut State,
    naming: &'a Naming,
    outcomes: Vec<Outcome>,
    changes: Vec<Change>,
    /// When the previous resource's validation ended: the next one's starts there (one clock
    /// read per resource).
    clock: Instant,
    /// The VPC and subnet the previous port or neighbor named.
    recent: RefCell<Recent>,
}

/// Copies of the VPC and subnet a port or neighbor named last: a large message names the same
/// ones thousands of times, where a search-tree lookup compares long ids several times. Emptied
/// whenever a VPC or subnet is validated.
#[derive(Default)]
struct Recent {
    vpc: Option<Rc<Vpc>>,
    subnet: Option<Rc<Subnet>>,
}

/// What `slot` holds if `hit` accepts it, else a copy of what `load` finds, kept in `slot`.
fn remembered<'a, T: Clone + 'a>(
    slot: &mut Option<Rc<T>>,
    hit: impl Fn(&T) -> bool,
    load: impl FnOnce() -> Option<&'a T>,
) -> Option<Rc<T>> {
    if let Some(t) = slot.as_ref().filter(|t| hit(t)) {
        return Some(t.clone());
    }
    let t = Rc::new(load()?.clone());
    *slot = Some(t.clone());
    Some(t)
}

type Checked<T> = Result<T, (OperationStatus, String)>;

fn invalid<T>(reason: impl Into<String>) -> Checked<T> {
    Err((OperationStatus::InvalidArg, reason.into()))
}

fn refused<T>(reason: impl Into<String>) -> Checked<T> {
    Err((OperationStatus::Failure, reason.into()))
}

impl Validator<'_> {
    /// Refuses a revision older than the one applied (or deleted); 0 means unversioned.
    fn check_revision(&self, kind: ResourceType, id: &str, current: Option<u32>, incoming: u32) -> Checked<()> {
        if incoming == 0 {
            return Ok(());
        }
        let tombstone = || match self.state.tombstones.is_empty() {
            true => None,
            false => self.state.tombstones.get(&(kind as i32, id.to_string())).copied(),
        };
        let applied = current.or_else(tombstone);
        match applied {
            Some(applied) if incoming < applied => Err((
                OperationStatus::OutOfOrder,
                format!("revision {incoming} is older than the applied revision {applied}"),
            )),
            _ => Ok(()),
        }
    }

    /// Remembers a deletion's revision, or forgets it when the resource is created again.
    fn tombstone(&mut self, kind: ResourceType, id: &str, revision: Option<u32>) {
        match revision {
            Some(r) if r > 0 => {
                self.state.tombstones.insert((kind as i32, id.to_string()), r);
            }
            Some(_) => {}
            None => self.state.forget_tombstone(kind, id),
        }
    }

    /// Runs `check` for one resource and records its outcome (and change, when it is one).
    fn record(
        &mut self,
        resource_type: ResourceType,
        raw_op: i32,
        id: &str,
        check: impl FnOnce(&mut Self, Op) -> Checked<Option<Change>>,
    ) {
        let outcome = self.outcomes.len();
        let (operation, result) = match op_of(raw_op) {
            Ok((operation, op)) if id.is_empty() => {
                let _ = op;
                (operation, invalid("resource id is empty"))
            }
            Ok((operation, op)) => (operation, check(self, op)),
            Err(e) => (OperationType::Info, invalid(e)),
        };
        let (status, reason) = match result {
            Ok(change) => {
                if let Some(mut change) = change {
                    change.outcome = outcome;
                    self.changes.push(change);
                }
                (OperationStatus::Success, None)
            }
            Err((status, reason)) => {
                tracing::warn!(resource_id = id, ?resource_type, ?operation, ?status, "{reason}");
                (status, Some(reason))
            }
        };
        let now = Instant::now();
        self.outcomes.push(Outcome {
            id: id.to_string(),
            resource_type,
            operation,
            status,
            reason,
            validation: now - self.clock,
        });
        self.clock = now;
    }

    fn unsupported<'s>(&mut self, resource_type: ResourceType, states: impl Iterator<Item = (i32, Option<&'s str>)>) {
        for (raw_op, id) in states {
            self.record(resource_type, raw_op, id.unwrap_or(""), |_, op| match op {
                Op::Nothing => Ok(None),
                _ => refused(format!(
                    "{resource_type:?} resources are not implemented by this agent yet"
                )),
            });
        }
    }

    /// One resource of any type: its revision is checked, then a DELETE removes it once
    /// `may_delete` agrees and leaves a tombstone, and a CREATE or UPDATE stores what `build`
    /// validated; INFO and GET change nothing. `(operation, id, revision)` come from the message.
    fn resource(
        &mut self,
        kind: ResourceType,
        (raw_op, id, revision): (i32, &str, u32),
        may_delete: impl FnOnce(&Self) -> Checked<()>,
        build: impl FnOnce(&Self) -> Checked<Resource>,
    ) {
        if matches!(kind, ResourceType::Vpc | ResourceType::Subnet) {
            *self.recent.borrow_mut() = Recent::default();
        }
        self.record(kind, raw_op, id, |v, op| {
            let before = v.state.get(kind, id);
            // INFO VPCs and subnets are the context of the message's ports and neighbors (how
            // Alcor's DPM sends them: data_plane_manager `VpcService.java`, `SubnetService.java`):
            // they define what the agent does not hold yet, or holds at an older revision.
            let op = match op {
                Op::Nothing
                    if raw_op == OperationType::Info as i32
                        && matches!(kind, ResourceType::Vpc | ResourceType::Subnet)
                        && before.as_ref().is_none_or(|b| b.revision() < revision) =>
                {
                    Op::Upsert
                }
                op => op,
            };
            if !matches!(op, Op::Nothing) {
                v.check_revision(kind, id, before.as_ref().map(Resource::revision), revision)?;
            }
            match op {
                Op::Nothing => Ok(None),
                Op::Delete => {
                    may_delete(v)?;
                    v.state.delete(kind, id);
                    let applied = before.as_ref().map_or(0, Resource::revision);
                    v.tombstone(kind, id, Some(applied.max(revision)));
                    Ok(before.map(|b| Change {
                        before: Some(b),
                        after: None,
                        outcome: 0,
                    }))
                }
                Op::Upsert => {
                    let after = build(v)?;
                    v.state.put(after.clone());
                    v.tombstone(kind, id, None);
                    Ok(Some(Change {
                        before,
                        after: Some(after),
                        outcome: 0,
                    }))
                }
            }
        });
    }

    fn no_configuration(&mut self, kind: ResourceType, raw_op: i32) {
        self.record(kind, raw_op, "", |_, _| invalid("no configuration"));
    }

    /// `subnet_vnis`: the tunnel ids the message's subnets give their VPCs.
    fn vpc(&mut self, s: &VpcState, subnet_vnis: &BTreeMap<&str, BTreeSet<u64>>) {
        let Some(c) = &s.configuration else {
            return self.no_configuration(ResourceType::Vpc, s.operation_type);
        };
        let from_subnets = subnet_vnis.get(c.id.as_str());
        self.resource(
            ResourceType::Vpc,
            (s.operation_type, &c.id, c.revision_number),
            |v| v.may_delete_vpc(&c.id),
            |v| {
                let c = merged(c, c.update_type, v.state.vpcs.get(&c.id), delta::vpc);
                v.check_vpc(&c, from_subnets).map(Resource::from)
            },
        );
    }

    /// The VPC's VNI: its own `tunnel_id`, else the one its subnets in the same message carry
    /// (DPM leaves the VPC's unset and fills the subnets' deprecated field). Any disagreement is
    /// refused rather than guessed.
    fn vni(c: &VpcConfiguration, from_subnets: Option<&BTreeSet<u64>>) -> Checked<u32> {
        let subnets: Vec<u64> = from_subnets.into_iter().flatten().copied().collect();
        let vni = match (c.tunnel_id, subnets.as_slice()) {
            (0, []) => return invalid("no tunnel_id: neither the VPC nor a subnet of it in this message has one"),
            (0, [one]) => *one,
            (0, many) => return invalid(format!("its subnets give conflicting tunnel_ids {many:?}")),
            (own, subs) if subs.iter().all(|s| *s == u64::from(own)) => u64::from(own),
            (own, subs) => return invalid(format!("tunnel_id {own} conflicts with its subnets' {subs:?}")),
        };
        match u32::try_from(vni) {
            Ok(vni) if (1..=MAX_VNI).contains(&vni) => Ok(vni),
            _ => invalid(format!("tunnel_id {vni} is not a VNI (1..={MAX_VNI})")),
        }
    }

    fn may_delete_vpc(&self, id: &str) -> Checked<()> {
        if let Some(sub) = self.state.subnets.values().find(|x| x.vpc_id == id) {
            return refused(format!("VPC {id} is still used by subnet {}", sub.id));
        }
        if self.state.vpc_in_use(id) {
            return refused(format!("VPC {id} is still used by ports or neighbors"));
        }
        Ok(())
    }

    fn check_vpc(&self, c: &VpcConfiguration, from_subnets: Option<&BTreeSet<u64>>) -> Checked<Vpc> {
        let vni = Self::vni(c, from_subnets)?;
        let cidr = match c.cidr.trim() {
            "" => None,
            s => Some(model::parse_cidr("VPC cidr", s).or_else(invalid)?),
        };
        if let Some(s) = cidr.and_then(|net| {
            self.state
                .subnets
                .values()
                .find(|s| s.vpc_id == c.id && !net.contains(&s.cidr))
        }) {
            return invalid(format!(
                "VPC cidr {} would leave subnet {} ({}) outside",
                c.cidr, s.id, s.cidr
            ));
        }
        if let Some(other) = self.state.vpcs.values().find(|x| x.vni == vni && *x.id != *c.id) {
            return invalid(format!("tunnel_id {vni} is already used by VPC {}", other.id));
        }
        Ok(Vpc {
            id: c.id.as_str().into(),
            revision: c.revision_number,
            vni,
            cidr,
        })
    }

    fn subnet(&mut self, s: &SubnetState) {
        let Some(c) = &s.configuration else {
            return self.no_configuration(ResourceType::Subnet, s.operation_type);
        };
        self.resource(
            ResourceType::Subnet,
            (s.operation_type, &c.id, c.revision_number),
            |v| match v.subnet_users(&c.id).first() {
                Some((user, _, _)) => refused(format!("subnet {} is still used by {user}", c.id)),
                None => match v.state.dhcp_hosts().values().find(|d| d.subnet_id == c.id) {
                    Some(d) => refused(format!("subnet {} is still used by DHCP entry {}", c.id, d.id)),
                    None => Ok(()),
                },
            },
            |v| {
                let held = v.state.subnets.get(&c.id).filter(|_| is_delta(c.update_type));
                let c = merged(c, c.update_type, held, delta::subnet);
                v.check_subnet(&c, held).map(Resource::from)
            },
        );
    }

    /// The ports and neighbors with an address in `subnet`: (who, VPC, addresses).
    fn subnet_users(&self, subnet: &str) -> Vec<(Owner, &str, &[FixedIp])> {
        self.state
            .subnet_users(subnet)
            .filter_map(
                |id| match (self.state.ports().get(id), self.state.neighbors().get(id)) {
                    (Some(p), _) => Some((Owner::Port(p.id.clone()), &*p.vpc_id, p.fixed_ips.as_slice())),
                    (None, Some(n)) => Some((Owner::Neighbor(n.id.clone()), &*n.vpc_id, n.fixed_ips.as_slice())),
                    _ => None,
                },
            )
            .collect()
    }

    /// `held`: the subnet a DELTA completes, whose extra DHCP options it keeps when it names none.
    fn check_subnet(&self, c: &alioth_proto::schema::SubnetConfiguration, held: Option<&Subnet>) -> Checked<Subnet> {
        let Some(vpc) = self.state.vpcs.get(&c.vpc_id) else {
            return invalid(format!("vpc_id {:?} is not a known VPC", c.vpc_id));
        };
        let users = self.subnet_users(&c.id);
        if let Some((user, _, _)) = users.iter().find(|(_, vpc, _)| *vpc != c.vpc_id) {
            return invalid(format!(
                "subnet {} cannot move to VPC {}: {user} uses it",
                c.id, c.vpc_id
            ));
        }
        let cidr = model::parse_cidr("subnet cidr", &c.cidr).or_else(invalid)?;
        if cidr.prefix_len() > 30 {
            return invalid(format!("subnet cidr {cidr} leaves no room for a gateway and ports"));
        }
        if let Some(vpc_cidr) = vpc.cidr {
            if !vpc_cidr.contains(&cidr) {
                return invalid(format!("subnet cidr {cidr} is outside VPC cidr {vpc_cidr}"));
            }
        }
        if let Some(other) = self
            .state
            .subnets
            .values()
            .find(|x| x.vpc_id == c.vpc_id && *x.id != *c.id && (x.cidr.contains(&cidr) || cidr.contains(&x.cidr)))
        {
            return invalid(format!(
                "subnet cidr {cidr} overlaps subnet {} ({})",
                other.id, other.cidr
            ));
        }
        // No gateway: none given, or 0.0.0.0 (Alcor's test controller, pseudo_controller
        // `ncm_test.java`). The first address of the subnet is then the DHCP server's only.
        let gw = c
            .gateway
            .as_ref()
            .filter(|g| !matches!(g.ip_address.trim(), "" | "0.0.0.0"));
        let gateway = gw.is_some();
        let gateway_ip = match gw {
            Some(g) => model::parse_ipv4("gateway ip", &g.ip_address).or_else(invalid)?,
            None => cidr.hosts().next().expect("prefix <= 30 has hosts"),
        };
        if !cidr.contains(&gateway_ip) || gateway_ip == cidr.network() || gateway_ip == cidr.broadcast() {
            return invalid(format!("gateway ip {gateway_ip} is not a host address of {cidr}"));
        }
        let gateway_mac = match gw.map(|g| g.mac_address.trim()).filter(|m| !m.is_empty()) {
            Some(m) => model::parse_unicast_mac(m).or_else(invalid)?,
            None => model::derived_gateway_mac(gateway_ip),
        };
        if let Some(owner) = self.state.addr_owner(&c.vpc_id, gateway_ip).filter(|_| gateway) {
            return invalid(format!("gateway ip {gateway_ip} is used by {owner}"));
        }
        for (user, _, ips) in &users {
            if ips.iter().any(|f| *f.subnet_id == *c.id && !cidr.contains(&f.ip)) {
                return invalid(format!("cidr {cidr} would leave {user} outside its subnet"));
            }
        }
        let dns = c
            .dns_entry_list
            .iter()
            .map(|d| model::parse_ipv4("dns entry", &d.entry))
            .collect::<Result<Vec<_>, _>>()
            .or_else(invalid)?;
        let dhcp_options = match held.filter(|_| c.extra_dhcp_options.is_empty()) {
            Some(h) => h.dhcp_options.clone(),
            None => c
                .extra_dhcp_options
                .iter()
                .map(|o| dhcp::parse_extra(&o.name, &o.value))
                .collect::<Result<Vec<_>, _>>()
                .or_else(invalid)?,
        };
        let subnet = Subnet {
            id: c.id.as_str().into(),
            revision: c.revision_number,
            vpc_id: c.vpc_id.clone(),
            cidr,
            gateway_ip,
            gateway_mac,
            gateway,
            dhcp_enable: c.dhcp_enable,
            dns,
            dhcp_options,
        };
        dhcp::check_subnet(&subnet).or_else(invalid)?;
        Ok(subnet)
    }

    fn port(&mut self, s: &PortState) {
        let Some(c) = &s.configuration else {
            return self.no_configuration(ResourceType::Port, s.operation_type);
        };
        // A VM that moved to this host: its port comes while the neighbor DPM named after it
        // (`NeighborService.buildNeighborState` uses the port's id) is still held. The local port
        // wins: the neighbor goes, as part of the port's change, before the port takes its
        // addresses (the plan applies changes in order, so the endpoints end up the port's).
        let upsert = matches!(op_of(s.operation_type), Ok((_, Op::Upsert)));
        let moved = upsert
            .then(|| self.state.neighbors().get(c.id.as_str()).cloned())
            .flatten();
        let (outcome, at) = (self.outcomes.len(), self.changes.len());
        if moved.is_some() {
            self.state.delete(ResourceType::Neighbor, &c.id);
        }
        self.resource(
            ResourceType::Port,
            (s.operation_type, &c.id, c.revision_number),
            |_| Ok(()),
            |v| {
                let c = merged(c, c.update_type, v.state.ports().get(c.id.as_str()), |c, h| {
                    delta::port(c, h)
                });
                v.check_port(&c).map(Resource::from)
            },
        );
        let Some(neighbor) = moved else { return };
        if self.outcomes[outcome].status == OperationStatus::Success {
            let gone = Change {
                before: Some(Resource::Neighbor(neighbor)),
                after: None,
                outcome,
            };
            self.changes.insert(at, gone);
        } else {
            // The port was refused: the neighbor stays what it was.
            self.state.put(Resource::Neighbor(neighbor));
        }
    }

    /// The VPC `id` names, if known (through `recent`).
    fn known_vpc(&self, id: &str) -> Option<Rc<Vpc>> {
        remembered(
            &mut self.recent.borrow_mut().vpc,
            |v| &*v.id == id,
            || self.state.vpcs.get(id),
        )
    }

    /// The subnet `id` names, if known (through `recent`).
    fn known_subnet(&self, id: &str) -> Option<Rc<Subnet>> {
        remembered(
            &mut self.recent.borrow_mut().subnet,
            |s| &*s.id == id,
            || self.state.subnets.get(id),
        )
    }

    /// Addresses of a port or neighbor: each in a known subnet of `vpc`, a host address that is not
    /// the gateway, and held by nobody else in the VPC.
    fn check_fixed_ips<'s>(
        &self,
        vpc: &str,
        owner: &Owner,
        ips: impl Iterator<Item = (&'s str, &'s str)>,
    ) -> Checked<FixedIps> {
        let mut out = FixedIps::new();
        for (subnet_id, ip) in ips {
            let Some(subnet) = self.known_subnet(subnet_id) else {
                return invalid(format!("fixed ip subnet_id {subnet_id:?} is not a known subnet"));
            };
            if subnet.vpc_id != vpc {
                return invalid(format!(
                    "subnet {} belongs to VPC {}, not {vpc}",
                    subnet.id, subnet.vpc_id
                ));
            }
            let ip = model::parse_ipv4("fixed ip", ip).or_else(invalid)?;
            if !subnet.cidr.contains(&ip) || ip == subnet.cidr.network() || ip == subnet.cidr.broadcast() {
                return invalid(format!(
                    "fixed ip {ip} is not a host address of subnet {} ({})",
                    subnet.id, subnet.cidr
                ));
            }
            if subnet.gateway && ip == subnet.gateway_ip {
                return invalid(format!("fixed ip {ip} is the gateway of subnet {}", subnet.id));
            }
            if let Some(other) = self.state.addr_owner(vpc, ip).filter(|o| *o != owner) {
                return invalid(format!("fixed ip {ip} is already used by {other}"));
            }
            if out.iter().any(|f| f.ip == ip) {
                return invalid(format!("fixed ip {ip} is listed twice"));
            }
            out.push(FixedIp {
                subnet_id: subnet.id.clone(),
                ip,
            });
        }
        if out.is_empty() {
            return invalid("no fixed_ips");
        }
        Ok(out)
    }

    fn check_port(&self, c: &alioth_proto::schema::PortConfiguration) -> Checked<Port> {
        let Some(vpc) = self.known_vpc(&c.vpc_id) else {
            return invalid(format!("vpc_id {:?} is not a known VPC", c.vpc_id));
        };
        let mac = model::parse_unicast_mac(&c.mac_address).or_else(invalid)?;
        let ips = c
            .fixed_ips
            .iter()
            .map(|f| (f.subnet_id.as_str(), f.ip_address.as_str()));
        let id: Id = c.id.as_str().into();
        let fixed_ips = self.check_fixed_ips(&c.vpc_id, &Owner::Port(id.clone()), ips)?;
        if let Some(other) = self.state.mac_owner(&c.vpc_id, &mac).filter(|o| *o != c.id) {
            return invalid(format!("MAC {} is already used by port {other}", c.mac_address));
        }
        let iface = self.naming.iface(&c.id, &c.name);
        // What the kernel's dev_valid_name refuses: such a port could never be attached.
        let refused = |b: u8| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace();
        if iface.is_empty() || iface.len() > 15 || iface == "." || iface == ".." || iface.bytes().any(refused) {
            return invalid(format!("interface name {iface:?} is not a valid Linux interface name"));
        }
        // One port per interface: two ids whose first 11 characters agree name the same tap, and
        // the second would take over the first one's VM, whatever their VPCs.
        if let Some(owner) = self.state.iface_owner(&iface).filter(|o| ***o != *c.id) {
            return invalid(format!("interface {iface} already belongs to port {owner}"));
        }
        Ok(Port {
            id,
            revision: c.revision_number,
            vpc_id: vpc.id.clone(),
            mac,
            fixed_ips,
            iface,
        })
    }
}

//! Goal-state message -> validated changes to the controller's `State`.
//!
//! A message is validated as a whole, in dependency order (VPCs, subnets, ports; deletions in the
//! reverse order), against the state as it will be once the earlier valid resources of the same
//! message are applied. Invalid resources are answered and skipped; nothing is written here.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use alioth_proto::schema::{
    GoalState, OperationStatus, OperationType, PortState, ResourceType, SubnetState, UpdateType, VpcConfiguration,
    VpcState,
};

use crate::goalstate::dhcp;

mod delta;
mod dhcp_entry;
pub(crate) mod elastic_ip;
mod neighbor;
mod network;
mod port;
pub(crate) mod router;
mod secgroup;
use crate::goalstate::model::{
    self, Change, FixedIp, FixedIps, Id, Owner, Port, Resource, State, Subnet, Vpc, MAX_VNI,
};

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

/// How the agent names a port's host interface, and where this host is on the underlay.
#[derive(Clone, Debug)]
pub struct Naming {
    /// `{id11}` is the first 11 characters of the port id, `{id}` the whole id, `{name}` the port name.
    pub iface_template: String,
    /// This host's tunnel endpoint (the uplink's address): a neighbor hosted there would be
    /// tunnelled to this host itself.
    pub tunnel_endpoint: Option<std::net::Ipv4Addr>,
}

impl Default for Naming {
    fn default() -> Self {
        Naming {
            iface_template: "tap{id11}".into(),
            tunnel_endpoint: None,
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
        + msg.dhcp_states.len()
        + msg.security_group_states.len()
        + msg.router_states.len()
        + msg.gateway_states.len()
        + msg.elastic_ip_states.len();
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
    // Groups first: the message's ports name them.
    for s in msg
        .security_group_states
        .iter()
        .filter(|s| !is_delete(s.operation_type))
    {
        v.security_group(s);
    }
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
    // Routers name subnets, and their rules gateways and ports.
    for s in msg.gateway_states.iter().filter(|s| !is_delete(s.operation_type)) {
        v.gateway(s);
    }
    for s in msg.router_states.iter().filter(|s| !is_delete(s.operation_type)) {
        v.router(s);
    }
    // Elastic IPs name ports.
    for s in msg.elastic_ip_states.iter().filter(|s| !is_delete(s.operation_type)) {
        v.elastic_ip(s);
    }
    // Deletions in the reverse order: what depends on a resource goes before it.
    v.deletions(msg, &subnet_vnis);
    (v.outcomes, v.changes)
}

impl<'a> Validator<'a> {
    /// The message's DELETEs, dependents first.
    fn deletions(&mut self, msg: &GoalState, subnet_vnis: &BTreeMap<&str, BTreeSet<u64>>) {
        let is_delete = |op: i32| op == OperationType::Delete as i32;
        for s in msg.elastic_ip_states.iter().filter(|s| is_delete(s.operation_type)) {
            self.elastic_ip(s);
        }
        for s in msg.router_states.iter().filter(|s| is_delete(s.operation_type)) {
            self.router(s);
        }
        for s in msg.gateway_states.iter().filter(|s| is_delete(s.operation_type)) {
            self.gateway(s);
        }
        for s in msg.dhcp_states.iter().filter(|s| is_delete(s.operation_type)) {
            self.dhcp(s);
        }
        for s in msg.neighbor_states.iter().filter(|s| is_delete(s.operation_type)) {
            self.neighbor(s);
        }
        for s in msg.port_states.iter().filter(|s| is_delete(s.operation_type)) {
            self.port(s);
        }
        for s in msg.subnet_states.iter().filter(|s| is_delete(s.operation_type)) {
            self.subnet(s);
        }
        for s in msg.vpc_states.iter().filter(|s| is_delete(s.operation_type)) {
            self.vpc(s, subnet_vnis);
        }
        for s in msg.security_group_states.iter().filter(|s| is_delete(s.operation_type)) {
            self.security_group(s);
        }
    }
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
                        && matches!(kind, ResourceType::Vpc | ResourceType::Subnet | ResourceType::Gateway)
                        && before.as_ref().is_none_or(|b| b.revision() < revision) =>
                {
                    Op::Upsert
                }
                // DPM's routers are INFO, each message with other subnets' tables (at the same
                // revision): merged in.
                Op::Nothing if raw_op == OperationType::Info as i32 && kind == ResourceType::Router => Op::Upsert,
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
}

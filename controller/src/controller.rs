//! Goal-state messages in, replies out: validate -> plan -> apply, with per-resource timings.

use std::time::{Duration, Instant};

use alioth_common::maps::{DhcpEntry, PortEntry};
use alioth_proto::schema::{
    goal_state_operation_reply::GoalStateOperationStatus, GoalState, GoalStateOperationReply, OperationStatus,
};
use anyhow::Result;

use crate::background_drop;
use crate::controller::metrics::Metrics;
use crate::controller::overlay::Overlay;
use crate::dataplane::Dataplane;
use crate::goalstate::model::{Change, Resource};
use crate::goalstate::model::{FixedIp, Id, Port, State};
use crate::goalstate::plan::{self, EndpointOp, Plan, PortOp};
use crate::goalstate::secgroup::{Compiler, KeyedPolicy};
use crate::goalstate::validate::{self, Naming, Outcome};
use crate::goalstate::{dhcp, routes};
use crate::net::interfaces::interfaces;
use crate::store::Store;

mod echo;
mod follow;
mod options;
pub use echo::{Launch, ProbeError};
pub use options::{Options, PortsWithoutGroups};
pub mod metrics;
pub mod overlay;
mod restore;

/// The agent's core: the goal state held, the data plane, the record. The agent keeps it behind
/// one mutex, and that lock is what orders everything that changes goal state or the maps (a
/// message, an interface event, a retry, the overlay's refresh): Alcor's revisions and DELTA
/// merges are judged against what earlier messages left, one message's map writes must not
/// interleave with another's, and the record must hold changes in the order they were applied.
/// What needs none of that (admission, decoding, host selection, reply encoding, freeing large
/// messages, the snapshot of a compaction) runs outside it; see ARCHITECTURE.md.
pub struct Controller {
    state: State,
    dp: Dataplane,
    naming: Naming,
    /// The record of applied goal state (agents); none in tests that need no restart.
    store: Option<Store>,
    metrics: Metrics,
    /// The uplink and underlay next hops (agents started with --uplink).
    overlay: Option<Overlay>,
    /// Default DHCP lease time in seconds.
    dhcp_lease: u32,
    /// Group members and compiled policies, kept between messages that change none of them.
    compiler: Compiler,
    /// Whether ports that name no security group are filtered as having none that allow anything.
    deny_ungrouped: bool,
    /// When the last message was applied.
    last_push: Instant,
    /// Whether a change failed half-way in the maps: they are then never marked as holding the
    /// record again (a restart fills new ones).
    tainted: bool,
}

/// Changes in a message from which its record rows are written beside its map writes (a thread
/// costs more than encoding a few).
const STAGE_AHEAD: usize = 512;
/// Resources in a message from which what it leaves behind is freed on another thread (a hand-over
/// costs more than freeing a few).
pub const FREE_LATER: usize = 512;

/// One operation of a plan, as `apply_plan` reports it: how long it took and how it went.
enum Applied {
    /// A BPF map write.
    Dataplane(Duration, Result<()>),
    /// Attaching or detaching; `Ok(false)`: the port's interface does not exist yet.
    Network(Duration, Result<bool>),
}

#[derive(Clone, Copy, Default)]
struct Timing {
    dataplane: Duration,
    network: Duration,
}

/// What applying a plan reports, per operation, into the resource's answer and timing: a failure
/// fails that resource only, so the reporter never stops the plan.
fn reporter<'o>(
    outcomes: &'o mut [Outcome],
    timing: &'o mut [Timing],
) -> impl FnMut(usize, Applied) -> Result<()> + 'o {
    move |o: usize, applied: Applied| {
        let result = match applied {
            Applied::Dataplane(took, result) => {
                timing[o].dataplane += took;
                result.map(|()| true)
            }
            Applied::Network(took, result) => {
                timing[o].network += took;
                result
            }
        };
        match result {
            Ok(true) => {}
            Ok(false) if outcomes[o].status == OperationStatus::Success => {
                outcomes[o].status = OperationStatus::Pending
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(resource_id = outcomes[o].id, "programming failed: {e:#}");
                outcomes[o].status = OperationStatus::Failure;
                outcomes[o].reason = Some(format!("{e:#}"));
            }
        }
        Ok(())
    }
}

/// The reply's answers; they take the outcomes' ids: no second copy of 10,000 ids.
fn answers(outcomes: Vec<Outcome>, timing: &[Timing]) -> Vec<GoalStateOperationStatus> {
    outcomes
        .into_iter()
        .zip(timing)
        .map(|(out, t)| {
            if out.status == OperationStatus::Success || out.status == OperationStatus::Pending {
                tracing::trace!(resource_id = out.id, resource_type = ?out.resource_type, operation = ?out.operation, status = ?out.status, "applied");
            }
            GoalStateOperationStatus {
                resource_type: out.resource_type as i32,
                operation_type: out.operation as i32,
                operation_status: out.status as i32,
                dataplane_programming_time: micros(t.dataplane),
                network_configuration_time: micros(t.network),
                state_elapse_time: micros(out.validation + t.dataplane + t.network),
                reason: out.reason.unwrap_or_default(),
                resource_id: out.id,
            }
        })
        .collect()
}

/// Whether a change may name a new remote tunnel endpoint: a neighbor's host, a gateway.
fn may_name_a_tunnel_endpoint(c: &Change) -> bool {
    let remote = |r: &Option<Resource>| matches!(r, Some(Resource::Neighbor(_) | Resource::Gateway(_)));
    remote(&c.before) || remote(&c.after)
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Controller {
    pub fn new(dp: Dataplane, naming: Naming) -> Self {
        Controller {
            state: State::default(),
            dp,
            naming,
            store: None,
            metrics: Metrics::default(),
            overlay: None,
            dhcp_lease: dhcp::DEFAULT_LEASE_SECS,
            compiler: Compiler::default(),
            deny_ungrouped: false,
            last_push: Instant::now(),
            tainted: false,
        }
    }

    /// Brings the uplink entry and the next hops of every remote host up to date; returns how
    /// many hosts still wait for their next hop to resolve.
    pub fn refresh_overlay(&mut self) -> usize {
        let Some(overlay) = self.overlay.as_mut() else {
            return 0;
        };
        overlay.refresh(&mut self.dp, self.state.remote_hosts())
    }

    /// Marks again which ports take their frames straight into their guest's side: a veth's peer
    /// moved between namespaces (`Change::Peers`).
    pub fn refresh_iface_flags(&mut self) {
        if let Err(e) = self.dp.refresh_iface_flags() {
            tracing::warn!("interface flags not refreshed: {e:#}");
        }
    }

    pub fn overlay(&self) -> Option<&Overlay> {
        self.overlay.as_ref()
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Logs and counts what the data plane reported: at most one event per port per second comes
    /// through, with the number held back before it.
    pub fn event(&mut self, e: &alioth_common::maps::Event) {
        if e.counter == alioth_common::Counter::DhcpDecline.index() {
            self.metrics.dhcp_declines.inc_by(1 + u64::from(e.suppressed));
            let iface = crate::net::interfaces::ifname(e.ifindex).unwrap_or_else(|| e.ifindex.to_string());
            tracing::warn!(
                iface,
                mac = crate::goalstate::model::format_mac(&e.mac),
                ip = %std::net::Ipv4Addr::from(e.ip),
                held_back = e.suppressed,
                "DHCPDECLINE: the VM found its address in use (duplicate address in the VPC?)"
            );
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Ports waiting for their interface: the ports of the state whose interface carries no port
    /// program (not there yet, or its attach failed). Kept by nothing but the state and the
    /// attachments, so that a million waiting ports cost no table of their own.
    pub fn pending_ports(&self) -> usize {
        self.state.ports().len().saturating_sub(self.dp.attached_ports())
    }

    /// The port waiting for interface `iface`, if one is.
    fn waiting_for(&self, iface: &str) -> Option<Id> {
        let id = self.state.iface_owner(iface)?;
        self.dp.attached_index(iface).is_none().then(|| id.clone())
    }

    pub fn dataplane(&mut self) -> &mut Dataplane {
        &mut self.dp
    }

    /// Applies one v1 goal-state message and answers for each of its resources.
    pub fn push(&mut self, msg: &GoalState) -> GoalStateOperationReply {
        let started = Instant::now();
        let (mut outcomes, changes) = validate::validate(&mut self.state, msg, &self.naming);
        let t_validate = started.elapsed();
        if !changes.is_empty() {
            self.mark_changing();
            self.compiler = Compiler::default();
        }
        let mut timing = vec![Timing::default(); outcomes.len()];
        let report = reporter(&mut outcomes, &mut timing);
        // A large message's record rows are written on another thread, in a transaction left
        // open, while it is planned and its map writes run (for 10,000 neighbors the rows take
        // about as long as the writes); it is committed unless a change failed.
        let store = self.store.as_mut().filter(|_| changes.len() >= STAGE_AHEAD);
        let mut applier = Applier {
            state: &self.state,
            dp: &mut self.dp,
            dhcp_lease: self.dhcp_lease,
            compiler: &mut self.compiler,
            deny_ungrouped: self.deny_ungrouped,
        };
        let state = applier.state;
        let (plan, t_plan, staged) = std::thread::scope(|s| {
            // Without a thread (the process is out of them), the rows are written when recorded.
            let ahead = store.and_then(|store| {
                std::thread::Builder::new()
                    .name("alioth-record".into())
                    .spawn_scoped(s, || store.stage(state, &changes))
                    .ok()
            });
            let plan = plan::plan(state, &changes);
            let t_plan = started.elapsed();
            let _ = applier.apply_plan(&plan, report);
            (plan, t_plan, ahead.and_then(|a| a.join().ok()))
        });
        let t_apply = started.elapsed();
        let before = changes.len();
        let changes = self.revert_failed(changes, &outcomes);
        let whole = changes.len() == before;
        if changes.iter().any(may_name_a_tunnel_endpoint) {
            // New remote hosts: ask the kernel to resolve their next hops right away.
            self.refresh_overlay();
        }
        let changes = self.record_or_undo(changes, staged.is_some_and(|s| s.is_ok()) && whole, &mut outcomes);
        self.tainted |= outcomes.iter().any(|o| o.status == OperationStatus::Failure);
        self.mark_recorded();
        let t_record = started.elapsed();
        tracing::debug!(
            resources = outcomes.len(),
            validate_us = t_validate.as_micros() as u64,
            plan_us = (t_plan - t_validate).as_micros() as u64,
            apply_us = (t_apply - t_plan).as_micros() as u64,
            record_us = (t_record - t_apply).as_micros() as u64,
            "message applied"
        );
        let resources = outcomes.len();
        let applied = outcomes.iter().filter(|o| o.status == OperationStatus::Success).count();
        let pending = outcomes.iter().filter(|o| o.status == OperationStatus::Pending).count();
        self.metrics
            .observe(started.elapsed(), outcomes.iter().map(|o| o.status));
        let statuses = answers(outcomes, &timing);
        tracing::info!(
            resources,
            applied,
            pending,
            refused = resources - applied - pending,
            micros = micros(started.elapsed()),
            "goal state applied"
        );
        if resources >= FREE_LATER {
            background_drop::free_later((changes, plan, timing));
        }
        self.last_push = Instant::now();
        GoalStateOperationReply {
            format_version: msg.format_version,
            operation_statuses: statuses,
            message_total_operation_time: micros(started.elapsed()),
        }
    }

    /// Records `changes` before the reply (`staged`: the transaction `Store::stage` left open
    /// holds them, as they still stand): an acknowledged change survives a crash of the agent.
    /// What cannot be recorded (a full disk) is answered FAILURE and undone, in state and maps: a
    /// restart would forget it.
    fn record_or_undo(&mut self, changes: Vec<Change>, staged: bool, outcomes: &mut [Outcome]) -> Vec<Change> {
        let recorded = match self.store.as_mut() {
            None => Ok(()),
            Some(store) if staged => store.commit_staged(),
            Some(store) => {
                // Staged before a change failed: written again without it.
                store.rollback_staged();
                store.record(&self.state, &changes)
            }
        };
        let Err(e) = recorded else {
            return changes;
        };
        tracing::error!("recording applied goal state failed, its changes are undone: {e:#}");
        for c in &changes {
            let o = &mut outcomes[c.outcome];
            o.status = OperationStatus::Failure;
            o.reason = Some(format!("not recorded ({e:#}): undone"));
        }
        self.revert_failed(changes, outcomes)
    }

    /// Applies `plan` in its order: see `Applier::apply_plan`.
    fn apply_plan(&mut self, plan: &Plan, report: impl FnMut(usize, Applied) -> Result<()>) -> Result<()> {
        self.applier().apply_plan(plan, report)
    }

    /// The fields applying a plan reads and writes, borrowed apart from the rest (the record can
    /// be encoded from the state meanwhile).
    fn applier(&mut self) -> Applier<'_> {
        Applier {
            state: &self.state,
            dp: &mut self.dp,
            dhcp_lease: self.dhcp_lease,
            compiler: &mut self.compiler,
            deny_ungrouped: self.deny_ungrouped,
        }
    }

    /// Undoes, in state and maps, the changes whose programming failed, so that what the agent
    /// holds, what the maps hold and what the record holds stay the same; returns the rest.
    fn revert_failed(&mut self, changes: Vec<Change>, outcomes: &[Outcome]) -> Vec<Change> {
        // The usual case, and a large vector of large values to move otherwise.
        if changes
            .iter()
            .all(|c| outcomes[c.outcome].status != OperationStatus::Failure)
        {
            return changes;
        }
        let (failed, kept): (Vec<Change>, Vec<Change>) = changes
            .into_iter()
            .partition(|c| outcomes[c.outcome].status == OperationStatus::Failure);
        for c in failed.into_iter().rev() {
            let Some(r) = c.after.as_ref().or(c.before.as_ref()) else {
                continue;
            };
            let (kind, id) = r.kind_id();
            match &c.before {
                Some(b) => self.state.put(b.clone()),
                None => self.state.delete(kind, id),
            }
            let undo = [Change {
                before: c.after.clone(),
                after: c.before.clone(),
                outcome: c.outcome,
            }];
            let plan = plan::plan(&self.state, &undo);
            let _ = self.apply_plan(&plan, |_, applied| {
                if let Applied::Dataplane(_, Err(e)) | Applied::Network(_, Err(e)) = applied {
                    tracing::error!(resource_id = id, "undoing a failed change: {e:#}");
                }
                Ok(())
            });
            tracing::warn!(resource_id = id, "change undone after its programming failed");
        }
        kept
    }

    /// Writes `PORTS` and attaches for one port. `Ok(false)` when its interface does not exist yet.
    fn program_port(&mut self, port_id: &str) -> Result<bool> {
        self.applier().program_port(port_id)
    }

    /// The maps are about to change (see `dataplane::record`).
    fn mark_changing(&mut self) {
        if let Err(e) = self.dp.mark_changing() {
            tracing::error!("the data plane's record mark stays as it was: {e:#}");
        }
    }

    /// The maps hold what the record does again, unless a change failed half-way in them.
    fn mark_recorded(&mut self) {
        let Some(sequence) = self.store.as_ref().map(Store::sequence) else {
            return;
        };
        if self.tainted {
            return;
        }
        if let Err(e) = self.dp.mark_recorded(sequence) {
            tracing::warn!("the maps are not marked as holding the record (a restart fills new ones): {e:#}");
        }
    }

    /// Takes the agent's settings (before any port is programmed: `restore` does).
    pub fn configure(&mut self, o: &Options) {
        self.dhcp_lease = o.dhcp_lease;
        self.deny_ungrouped = o.ports_without_groups == PortsWithoutGroups::Deny;
    }

    /// Attaches ports whose interface has appeared since they were pushed. One interface listing,
    /// then a lookup per interface: the cost does not grow with the number of waiting ports.
    pub fn retry_pending(&mut self) {
        if self.pending_ports() == 0 {
            return;
        }
        let ids: Vec<Id> = interfaces()
            .into_iter()
            .filter_map(|(_, name)| self.waiting_for(&name))
            .collect();
        if ids.is_empty() {
            return;
        }
        self.mark_changing();
        for id in ids {
            match self.program_port(&id) {
                Ok(true) => tracing::info!(resource_id = &*id, "interface appeared; port attached"),
                Ok(false) => {}
                Err(e) => tracing::warn!(resource_id = &*id, "attach failed: {e:#}"),
            }
        }
        self.dp.sweep_flows();
        self.mark_recorded();
    }
}

/// What applying a plan needs of the controller: the state it reads, the data plane and the ports
/// waiting for their interface, which it writes.
struct Applier<'a> {
    state: &'a State,
    dp: &'a mut Dataplane,
    dhcp_lease: u32,
    compiler: &'a mut Compiler,
    deny_ungrouped: bool,
}

impl Applier<'_> {
    /// Applies `plan` in its order — detaches, endpoint writes, port programming — and reports each
    /// operation, with the outcome it belongs to, to `report`, which may stop the rest with an error.
    fn apply_plan(&mut self, plan: &Plan, mut report: impl FnMut(usize, Applied) -> Result<()>) -> Result<()> {
        for (o, op) in &plan.detach {
            if let PortOp::Detach { iface } = op {
                let t = Instant::now();
                let result = self.dp.detach(iface).map(|()| true);
                report(*o, Applied::Network(t.elapsed(), result))?;
            }
        }
        // Runs of writes go to the kernel in batches; each write is reported with its share of
        // its batch's time. Removals (few, and in order with the writes) go one by one.
        let mut ops = &plan.endpoints[..];
        while let Some((o, op)) = ops.first() {
            if let EndpointOp::Remove(k) = op {
                let t = Instant::now();
                let result = self.dp.remove_endpoint(k);
                report(*o, Applied::Dataplane(t.elapsed(), result))?;
                ops = &ops[1..];
                continue;
            }
            let run = ops
                .iter()
                .take_while(|(_, op)| matches!(op, EndpointOp::Upsert(..)))
                .count();
            let t = Instant::now();
            let failed = self
                .dp
                .upsert_endpoints(ops[..run].iter().filter_map(|(_, op)| match op {
                    EndpointOp::Upsert(k, v) => Some((*k, *v)),
                    EndpointOp::Remove(_) => None,
                }));
            let share = t.elapsed() / run as u32;
            let mut failed = failed.into_iter().peekable();
            for (i, (o, _)) in ops[..run].iter().enumerate() {
                let result = match failed.next_if(|(at, _)| *at == i) {
                    Some((_, e)) => Err(e),
                    None => Ok(()),
                };
                report(*o, Applied::Dataplane(share, result))?;
            }
            ops = &ops[run..];
        }
        for (o, op) in &plan.program {
            let t = Instant::now();
            let result = match op {
                PortOp::Program { port_id } => self.program_port(port_id),
                PortOp::Filter { port_id } => self.filter_port(port_id),
                PortOp::Detach { .. } => continue,
            };
            report(*o, Applied::Network(t.elapsed(), result))?;
        }
        self.write_routes(&plan.routes, &mut report)?;
        self.write_elastic_ips(&plan.elastic_ips, &mut report)?;
        self.dp.sweep_flows();
        Ok(())
    }

    /// Rewrites `ROUTES` from the state's routers: any change may have moved a rule's next hop
    /// (a port created or deleted, a subnet changed), so it is rendered whole, which costs nothing
    /// without routers. Timed against the router and gateway changes.
    fn write_routes(
        &mut self,
        outcomes: &[usize],
        report: &mut impl FnMut(usize, Applied) -> Result<()>,
    ) -> Result<()> {
        let idle = self.state.routers.is_empty() && self.dp.route_count() == 0;
        rewritten(outcomes, report, "routes", idle, || {
            self.dp.set_routes(routes::render(self.state))
        })
    }

    /// Rewrites the NAT maps from the state's elastic IPs, whole for the same reason (a port
    /// deleted or back). Timed against the elastic IP changes.
    fn write_elastic_ips(
        &mut self,
        outcomes: &[usize],
        report: &mut impl FnMut(usize, Applied) -> Result<()>,
    ) -> Result<()> {
        let idle = self.state.elastic_ips.is_empty() && self.dp.elastic_ip_count() == 0;
        rewritten(outcomes, report, "elastic IPs", idle, || {
            self.dp.set_elastic_ips(crate::goalstate::nat::render(self.state))
        })
    }

    /// Writes `PORTS` and attaches for one port. `Ok(false)` when its interface does not exist yet.
    fn program_port(&mut self, port_id: &str) -> Result<bool> {
        let Some(port) = self.state.ports().get(port_id) else {
            return Ok(true);
        };
        let vni = self.state.vpcs[&*port.vpc_id].vni;
        let primary = &self.state.subnets[&*port.fixed_ips[0].subnet_id];
        let entry = PortEntry {
            mac: port.mac,
            vni,
            ip: port.primary_ip().octets(),
            // No gateway: nothing answered for it or routed through it (all zero).
            gateway_ip: if primary.gateway {
                primary.gateway_ip.octets()
            } else {
                [0; 4]
            },
            gateway_mac: if primary.gateway { primary.gateway_mac } else { [0; 6] },
            ..Default::default()
        };
        let iface = port.iface.clone();
        let ips: Vec<[u8; 4]> = port.fixed_ips.iter().map(|f| f.ip.octets()).collect();
        let dhcp = self.dhcp_entry(port);
        let policy = self.policy(port);
        let present = self
            .dp
            .program_port(&iface, entry, &ips, dhcp.as_ref(), policy.as_ref(), &port.allowed_pairs)?;
        if !present {
            tracing::debug!(
                resource_id = port_id,
                "interface not present yet; the port is programmed when it appears"
            );
        }
        Ok(present)
    }

    /// `port`'s security-group policy and what it is the rules of (`None`: unfiltered).
    fn policy(&mut self, port: &Port) -> Option<KeyedPolicy> {
        self.compiler.policy(self.state, port, self.deny_ungrouped)
    }

    /// Puts one port's security-group rules in place again (`PortOp::Filter`); a port whose
    /// interface does not exist yet gets them when it is programmed.
    fn filter_port(&mut self, port_id: &str) -> Result<bool> {
        let Some(port) = self.state.ports().get(port_id) else {
            return Ok(true);
        };
        let policy = self.policy(port);
        self.dp.refilter(&port.iface, policy.as_ref())?;
        Ok(true)
    }

    /// What the DHCP server answers `port`: its address in a DHCP-enabled subnet (the one its DHCP
    /// entry names, else the first), with the entry's host name. `None`: no DHCP for this port.
    fn dhcp_entry(&self, port: &Port) -> Option<DhcpEntry> {
        let host = self.state.dhcp_host(&port.mac);
        let enabled = |f: &&FixedIp| self.state.subnets.get(&*f.subnet_id).is_some_and(|s| s.dhcp_enable);
        let fixed = host
            .and_then(|h| {
                port.fixed_ips
                    .iter()
                    .filter(enabled)
                    .find(|f| *f.subnet_id == *h.subnet_id)
            })
            .or_else(|| port.fixed_ips.iter().find(enabled))?;
        if let Some(h) = host.filter(|h| h.ip.is_some_and(|ip| ip != fixed.ip)) {
            tracing::warn!(
                resource_id = &*port.id,
                dhcp_id = h.id,
                "DHCP entry names {:?}, the port has {}: handing out the port's address",
                h.ip,
                fixed.ip
            );
        }
        let subnet = &self.state.subnets[&*fixed.subnet_id];
        let name = host.and_then(|h| h.host_name.as_deref());
        match dhcp::render(fixed.ip, subnet, name, self.dhcp_lease) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::error!(resource_id = &*port.id, "no DHCP for this port: {e}");
                None
            }
        }
    }
}

/// Rewrites a map the state renders whole (`write` unless `idle`: nothing to hold, nothing held),
/// each of `outcomes` answered with a share of the time it took.
fn rewritten(
    outcomes: &[usize],
    report: &mut impl FnMut(usize, Applied) -> Result<()>,
    what: &str,
    idle: bool,
    write: impl FnOnce() -> Result<()>,
) -> Result<()> {
    if idle {
        return outcomes
            .iter()
            .try_for_each(|o| report(*o, Applied::Dataplane(Duration::ZERO, Ok(()))));
    }
    let t = Instant::now();
    let result = write();
    let share = t.elapsed() / outcomes.len().max(1) as u32;
    if let Err(e) = &result {
        tracing::error!("{what} not written: {e:#}");
    }
    let msg = result.err().map(|e| format!("{e:#}"));
    outcomes.iter().try_for_each(|o| {
        let result = match &msg {
            None => Ok(()),
            Some(m) => Err(anyhow::anyhow!("{m}")),
        };
        report(*o, Applied::Dataplane(share, result))
    })
}

//! A restarted agent's data plane, from its record: maps filled afresh with everything the state
//! renders, or, when the pinned maps still hold what the record does (`Dataplane::holds_record`),
//! taken over as they are, with only what depends on the host's interfaces done again.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use alioth_common::maps::PortEntry;
use anyhow::Result;

use super::{Applied, Controller, Options};
use crate::controller::metrics::Metrics;
use crate::controller::overlay::Overlay;
use crate::dataplane::Dataplane;
use crate::goalstate::dhcp;
use crate::goalstate::model::{Change, Id, Resource, State};
use crate::goalstate::plan;
use crate::goalstate::validate::Naming;
use crate::net::interfaces::interfaces;
use crate::store::Store;

impl Controller {
    /// Rebuilds the data plane of a restarted agent from its record (see the module), swaps the
    /// new program onto the links the previous agent left (or attaches), puts the maps in place
    /// and marks them as holding the record.
    pub fn restore(
        dp: Dataplane,
        naming: Naming,
        state: State,
        store: Store,
        overlay: Option<Overlay>,
        options: &Options,
    ) -> Result<Self> {
        let started = Instant::now();
        let mut metrics = Metrics::default();
        (metrics.record, metrics.adopted) = (store.damage().clone(), dp.adopted());
        let mut naming = naming;
        naming.tunnel_endpoint = overlay.as_ref().map(|o| o.info().ip);
        let mut c = Controller {
            state,
            dp,
            naming,
            store: Some(store),
            metrics,
            overlay,
            dhcp_lease: dhcp::DEFAULT_LEASE_SECS,
            compiler: Default::default(),
            deny_ungrouped: false,
            last_push: Instant::now(),
            tainted: false,
        };
        c.configure(options);
        // Maps taken over for a record that then changed as it was opened (an earlier agent's,
        // carried over) are written over in full, as for a damaged record.
        let taken_over = c.store.as_ref().is_some_and(|s| c.dp.holds_record(s.sequence()));
        // Maps kept for a damaged record hold what it lacks too: their DHCP slots stay taken, and
        // they are never marked as holding it, so the next restart fills new ones. (Maps taken
        // over get their slots back port by port in `reattach`.)
        c.tainted = c.dp.adopted() && !taken_over;
        if c.tainted {
            c.dp.keep_written_slots();
        }
        // Until the restore is done: an agent killed meanwhile leaves maps the next one refills.
        c.mark_changing();
        c.dp.list_interfaces();
        // A map that cannot be written stops the restore before any link runs the new program.
        let filled = if taken_over { c.reattach() } else { c.fill() };
        c.dp.unlist_interfaces();
        let t_plan = filled?;
        let t_apply = started.elapsed();
        // Next hops the kernel already knows go in before the new program takes over the links.
        c.refresh_overlay();
        c.dp.commit()?;
        c.mark_recorded();
        tracing::info!(
            vpcs = c.state.vpcs.len(),
            subnets = c.state.subnets.len(),
            ports = c.state.ports().len(),
            neighbors = c.state.neighbors().len(),
            pending = c.pending_ports(),
            maps = if taken_over { "taken over" } else { "filled" },
            plan_ms = t_plan.as_millis() as u64,
            apply_ms = (t_apply - t_plan).as_millis() as u64,
            commit_ms = (started.elapsed() - t_apply).as_millis() as u64,
            "restored the recorded goal state"
        );
        Ok(c)
    }

    /// Fills fresh maps with everything the state renders; returns how long planning took.
    fn fill(&mut self) -> Result<Duration> {
        let started = Instant::now();
        let plan = plan::everything(&self.state);
        let t_plan = started.elapsed();
        self.apply_plan(&plan, |_, applied| match applied {
            Applied::Dataplane(_, result) => result,
            Applied::Network(_, result) => {
                if let Err(e) = result {
                    tracing::warn!("port not re-attached: {e:#}");
                }
                Ok(())
            }
        })?;
        Ok(t_plan)
    }

    /// For maps that hold the record: ports whose interface is there are programmed again (their
    /// entries and DHCP slots reclaimed first, their addresses pointed at today's index), the rest
    /// wait for it. An entry a port left at an index another interface has now is cleared, and
    /// that port's addresses point nowhere again.
    fn reattach(&mut self) -> Result<Duration> {
        let (mut present, mut moved): (Vec<Id>, Vec<Id>) = (Vec::new(), Vec::new());
        let mut indexes: HashSet<u32> = HashSet::new();
        for (id, p) in self.state.ports() {
            let Some(index) = self.dp.interface_index(&p.iface) else {
                continue;
            };
            let vni = self.state.vpcs[&*p.vpc_id].vni;
            if !self.dp.reclaim_port(&p.iface, index, (vni, p.mac)) {
                // Another port's entry at this index (its interface renamed, say): that port's
                // addresses still point here.
                moved.extend(self.dp.programmed_entry(index).and_then(|e| self.owner_of(&e)));
            }
            indexes.insert(index);
            present.push(id.clone());
        }
        self.dp.free_unclaimed_slots();
        for (index, _) in interfaces().into_iter().filter(|(i, _)| !indexes.contains(i)) {
            let Some(entry) = self.dp.programmed_entry(index) else {
                continue;
            };
            self.dp.clear_port_entry(index)?;
            moved.extend(self.owner_of(&entry));
        }
        for id in moved {
            let Some(p) = self.state.ports().get(&id).cloned() else {
                continue;
            };
            let change = [Change {
                before: None,
                after: Some(Resource::Port(p)),
                outcome: 0,
            }];
            let plan = plan::plan(&self.state, &change);
            self.apply_plan(&plan, |_, applied| match applied {
                Applied::Dataplane(_, result) => result,
                Applied::Network(_, result) => result.map(drop),
            })?;
        }
        for id in present {
            if let Err(e) = self.program_port(&id) {
                tracing::warn!(resource_id = &*id, "port not re-attached: {e:#}");
            }
        }
        self.dp.free_unclaimed_policies();
        self.dp.sweep_flows();
        Ok(Duration::ZERO)
    }

    /// The port a `PORTS` entry was written for, by its VNI and MAC.
    fn owner_of(&self, entry: &PortEntry) -> Option<Id> {
        let vpc = self.state.vpcs.values().find(|v| v.vni == entry.vni)?;
        self.state.mac_owner(&vpc.id, &entry.mac).map(Id::from)
    }
}

//! Each port's own counters: a `PORT_STATS` slot per attached port, named in its `PORTS` entry.

use alioth_common::counters::COUNTER_SLOTS;
use alioth_common::maps::{self, PortCounters};
use alioth_common::Counter;
use anyhow::Result;
use aya::maps::PerCpuValues;

use super::Dataplane;

impl Dataplane {
    /// The port's counters' slot: the one it has, or a free one, zeroed (0 when all are taken:
    /// then it is counted on the host only).
    pub(super) fn stats_slot(&mut self, iface: &str) -> u16 {
        if let Some(slot) = self.stats_slots.get(iface) {
            return *slot;
        }
        let Some(slot) = self.stats_free.pop_first() else {
            tracing::warn!(
                iface,
                "all {} port counter slots are in use: this port is counted on the host only",
                maps::MAX_PORT_STATS - 1
            );
            return 0;
        };
        if let Err(e) = self.zero_port_counters(slot) {
            tracing::warn!(iface, "port counters not cleared: {e:#}");
        }
        self.stats_slots.insert(iface.to_string(), slot);
        slot
    }

    fn zero_port_counters(&mut self, slot: u16) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let zero: PortCounters = [0; COUNTER_SLOTS as usize];
        self.port_stats
            .set(slot as u32, PerCpuValues::try_from(vec![zero; cpus])?, 0)?;
        Ok(())
    }

    /// Gives the slot of a port that is no longer attached back.
    pub(super) fn free_stats_slot(&mut self, iface: &str) {
        if let Some(slot) = self.stats_slots.remove(iface) {
            self.stats_free.insert(slot);
        }
    }

    /// For maps taken over: the port at `iface` keeps the slot its entry names.
    pub(super) fn reclaim_stats_slot(&mut self, iface: &str, slot: u16) {
        if slot != 0 && self.stats_free.remove(&slot) {
            self.stats_slots.insert(iface.to_string(), slot);
        }
    }

    /// The interfaces of the ports that have counters of their own.
    pub fn counted_ports(&self) -> impl Iterator<Item = &str> {
        self.stats_slots.keys().map(String::as_str)
    }

    /// The counters of the port at `iface`, summed over the CPUs (`None`: it has no slot).
    pub fn port_counters(&self, iface: &str) -> Result<Option<Vec<(Counter, u64)>>> {
        let Some(slot) = self.stats_slots.get(iface) else {
            return Ok(None);
        };
        Ok(Some(sum_port_counters(&self.port_stats.get(&(*slot as u32), 0)?)))
    }
}

/// Sums a port's per-CPU counters.
pub fn sum_port_counters(per_cpu: &PerCpuValues<PortCounters>) -> Vec<(Counter, u64)> {
    Counter::ALL
        .iter()
        .map(|c| (*c, per_cpu.iter().map(|v| v[c.index() as usize]).sum()))
        .collect()
}

/// Every slot but 0.
pub(super) fn all_slots() -> std::collections::BTreeSet<u16> {
    (1..maps::MAX_PORT_STATS as u16).collect()
}

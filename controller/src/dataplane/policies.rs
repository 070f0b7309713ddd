//! Ports' security-group policies in the data plane: a policy number per filtered port (its
//! `PortEntry::policy`), its compiled rules in the `SG_REMOTES` and `SG_PORTS` tries under that
//! number, and the tracked flows of its zone in `SG_FLOWS`, swept when its rules change.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use alioth_common::conntrack::FlowKey;
use alioth_common::firewall::{
    self, CtValue, RuleBits, EGRESS, INGRESS, KEY_FIXED_BITS, MAX_POLICIES, OPENED_EGRESS, ORIGIN_LO,
};
use anyhow::{bail, Context, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues};

use crate::goalstate::secgroup::{Compiled, Policy};

/// A trie's entries of one policy: key (prefix length, data) -> rules.
type Entries = HashMap<(u32, [u8; 8]), u128>;

/// The tries and flows, and who holds which policy number.
pub struct Policies {
    remotes: LpmTrie<MapData, [u8; 8], RuleBits>,
    ports: LpmTrie<MapData, [u8; 8], RuleBits>,
    flows: BpfHashMap<MapData, FlowKey, CtValue>,
    /// `SG_COUNTS`: flows the programs added, flows the sweeps removed.
    counts: PerCpuArray<MapData, u64>,
    /// Interface -> its policy number, and what was written for it (`None`: an earlier agent's
    /// entries, not known until read back).
    held: HashMap<String, (u16, Option<Policy>)>,
    free: BTreeSet<u16>,
    /// Zones whose flows are to be checked again: against the policy now in place, or (`None`)
    /// all dropped (a number freed, or given to another port).
    sweeps: HashMap<u16, Option<Policy>>,
}

/// The flow table's fill and evictions (`/metrics`).
pub struct FlowStats {
    pub entries: u64,
    pub evicted: u64,
    pub filtered_ports: u64,
}

/// The trie entries `policy` renders under number `id`.
fn render(id: u16, policy: &Policy) -> (Entries, Entries) {
    let (mut remotes, mut ports) = (Entries::new(), Entries::new());
    for (dir, c) in [(EGRESS, &policy.egress), (INGRESS, &policy.ingress)] {
        for (net, bits) in &c.remotes {
            let data = firewall::remote_key(id, dir, net.network().octets());
            remotes.insert((KEY_FIXED_BITS + net.prefix() as u32, data), *bits);
        }
        for ((proto, value, len), bits) in &c.ports {
            let data = firewall::ports_key(id, dir, *proto, *value);
            ports.insert((KEY_FIXED_BITS + *len as u32, data), *bits);
        }
    }
    (remotes, ports)
}

/// The policy number a trie key belongs to.
fn owner(data: &[u8; 8]) -> u16 {
    u16::from_be_bytes([data[0], data[1]])
}

impl Policies {
    pub fn new(
        remotes: LpmTrie<MapData, [u8; 8], RuleBits>,
        ports: LpmTrie<MapData, [u8; 8], RuleBits>,
        flows: BpfHashMap<MapData, FlowKey, CtValue>,
        counts: PerCpuArray<MapData, u64>,
    ) -> Self {
        Policies {
            remotes,
            ports,
            flows,
            counts,
            held: HashMap::new(),
            free: (1..=(MAX_POLICIES - 1) as u16).collect(),
            sweeps: HashMap::new(),
        }
    }

    /// Puts `policy` in place for the port on `iface` (`None`: unfiltered) and returns the number
    /// its `PortEntry` names.
    pub fn set(&mut self, iface: &str, policy: Option<&Policy>) -> Result<u16> {
        let Some(policy) = policy else {
            self.release(iface)?;
            return Ok(0);
        };
        let (id, old) = match self.held.get(iface) {
            Some((id, Some(old))) if old == policy => return Ok(*id),
            Some((id, old)) => (*id, old.clone()),
            None => {
                let Some(id) = self.free.pop_first() else {
                    bail!("all {} policy numbers are in use", MAX_POLICIES - 1);
                };
                // The flows of the port that had the number go before any of this one's come.
                if self.sweeps.get(&id) == Some(&None) {
                    self.sweep()?;
                }
                (id, Some(Policy::default()))
            }
        };
        let (remotes, ports) = render(id, policy);
        let (old_remotes, old_ports) = match &old {
            Some(old) => render(id, old),
            None => self.written(id),
        };
        write(&mut self.remotes, &remotes, &old_remotes).context("write SG_REMOTES")?;
        write(&mut self.ports, &ports, &old_ports).context("write SG_PORTS")?;
        self.held.insert(iface.to_string(), (id, Some(policy.clone())));
        self.sweeps.insert(id, Some(policy.clone()));
        Ok(id)
    }

    /// Takes the port on `iface` out of filtering: its number, entries and flows go.
    pub fn release(&mut self, iface: &str) -> Result<()> {
        let Some((id, old)) = self.held.remove(iface) else {
            return Ok(());
        };
        let (old_remotes, old_ports) = match &old {
            Some(old) => render(id, old),
            None => self.written(id),
        };
        write(&mut self.remotes, &Entries::new(), &old_remotes)?;
        write(&mut self.ports, &Entries::new(), &old_ports)?;
        self.sweeps.insert(id, None);
        self.free.insert(id);
        Ok(())
    }

    /// For maps taken over: the port on `iface` holds number `id` again, with entries an earlier
    /// agent wrote.
    pub fn reclaim(&mut self, iface: &str, id: u16) {
        if id != 0 && self.free.remove(&id) {
            self.held.insert(iface.to_string(), (id, None));
        }
    }

    /// Once every port is reclaimed: entries and flows of numbers no port holds go.
    pub fn free_unclaimed(&mut self) {
        let held: BTreeSet<u16> = self.held.values().map(|(id, _)| *id).collect();
        for trie in [&mut self.remotes, &mut self.ports] {
            let stale: Vec<Key<[u8; 8]>> = trie
                .keys()
                .filter_map(Result::ok)
                .filter(|k| !held.contains(&owner(&k.data())))
                .collect();
            for k in stale {
                let _ = trie.remove(&k);
            }
        }
        self.sweeps.extend(self.free.iter().map(|id| (*id, None)));
        let _ = self.sweep();
    }

    /// What the tries hold under number `id` (an earlier agent's entries).
    fn written(&self, id: u16) -> (Entries, Entries) {
        let read = |trie: &LpmTrie<MapData, [u8; 8], RuleBits>| {
            trie.iter()
                .filter_map(Result::ok)
                .filter(|(k, _)| owner(&k.data()) == id)
                .map(|(k, v)| ((k.prefix_len(), k.data()), v.to_u128()))
                .collect()
        };
        (read(&self.remotes), read(&self.ports))
    }

    /// Checks the flows of the zones whose rules changed: a flow the rules in place would not
    /// open any more goes (the next frame of it is a new flow, refused), as do all flows of a
    /// number freed or given to another port. Returns how many went.
    pub fn sweep(&mut self) -> Result<usize> {
        if self.sweeps.is_empty() {
            return Ok(0);
        }
        let sweeps = std::mem::take(&mut self.sweeps);
        let keys: Vec<FlowKey> = self.flows.keys().filter_map(Result::ok).collect();
        let mut gone = 0;
        for key in keys {
            let Ok(zone) = u16::try_from(key.zone) else { continue };
            let Some(now) = sweeps.get(&zone) else { continue };
            let keep = match (now, self.flows.get(&key, 0)) {
                (Some(policy), Ok(v)) => still_allowed(policy, &key, &v),
                _ => false,
            };
            if !keep && self.flows.remove(&key).is_ok() {
                gone += 1;
            }
        }
        self.count_removed(gone as u64)?;
        Ok(gone)
    }

    fn count_removed(&mut self, n: u64) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let mut values = self.counts.get(&firewall::FLOWS_REMOVED, 0)?;
        let mut all: Vec<u64> = values.iter().copied().collect();
        all[0] += n;
        values = PerCpuValues::try_from(all)?;
        self.counts.set(firewall::FLOWS_REMOVED, values, 0)?;
        Ok(())
    }

    /// Tracks `key` as `value` (a flow carried over from the previous agent's table).
    pub fn carry_flow(&mut self, key: &FlowKey, value: &CtValue) -> Result<()> {
        self.flows.insert(key, value, 0)?;
        Ok(())
    }

    /// Flows the table tracks (live or expired, until reused), and how many it evicted to make
    /// room for new ones since the maps were made.
    pub fn flow_stats(&self) -> Result<FlowStats> {
        let sum = |slot: u32| -> Result<u64> { Ok(self.counts.get(&slot, 0)?.iter().sum()) };
        let entries = self.flows.keys().count() as u64;
        let (added, removed) = (sum(firewall::FLOWS_ADDED)?, sum(firewall::FLOWS_REMOVED)?);
        Ok(FlowStats {
            entries,
            evicted: added.saturating_sub(removed).saturating_sub(entries),
            filtered_ports: self.held.len() as u64,
        })
    }
}

/// Whether `policy` would open the flow `key` as it was opened (`value`).
fn still_allowed(policy: &Policy, key: &FlowKey, value: &CtValue) -> bool {
    let (lo, hi) = (Ipv4Addr::from(key.lo_ip), Ipv4Addr::from(key.hi_ip));
    let originator_lo = value.flags & ORIGIN_LO != 0;
    let (originator, responder) = if originator_lo { (lo, hi) } else { (hi, lo) };
    let (rules, remote): (&Compiled, Ipv4Addr) = if value.flags & OPENED_EGRESS != 0 {
        (&policy.egress, responder)
    } else {
        (&policy.ingress, originator)
    };
    rules.allows(remote, key.proto, value.value)
}

/// Makes a trie's entries of one policy `new`, where they were `old`: writes first, then removals.
fn write(trie: &mut LpmTrie<MapData, [u8; 8], RuleBits>, new: &Entries, old: &Entries) -> Result<()> {
    for (k, bits) in new.iter().filter(|(k, b)| old.get(k) != Some(b)) {
        trie.insert(&Key::new(k.0, k.1), RuleBits::from_u128(*bits), 0)?;
    }
    for k in old.keys().filter(|k| !new.contains_key(k)) {
        let _ = trie.remove(&Key::new(k.0, k.1));
    }
    Ok(())
}

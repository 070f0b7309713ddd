//! Ports' security-group policies in the data plane. Ports with the same groups in one VPC share a
//! rule set: a number (`PortEntry::policy`) under which the compiled rules are in the `SG_REMOTES`
//! and `SG_PORTS` tries, written once however many ports use it, and rewritten in place (by what
//! changed) when the groups' rules or members change, so their ports' entries stay as they are.
//! Each filtered port has a zone of its own (`PortEntry::zone`), the key space of its tracked flows
//! in `SG_FLOWS`, which are checked again when its rules change.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use alioth_common::conntrack::FlowKey;
use alioth_common::firewall::{
    self, CtValue, RuleBits, EGRESS, INGRESS, KEY_FIXED_BITS, MAX_POLICIES, OPENED_EGRESS, ORIGIN_LO,
};
use anyhow::{bail, Context, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues};

use crate::goalstate::secgroup::{Compiled, KeyedPolicy, Policy, SetKey};

/// A trie's entries of one rule set: key (prefix length, data) -> rules.
type Entries = HashMap<(u32, [u8; 8]), RuleBits>;

/// Numbers 1..`MAX_POLICIES`, handed out lowest first.
struct Numbers(BTreeSet<u32>);

impl Numbers {
    fn all() -> Self {
        Numbers((1..MAX_POLICIES).collect())
    }

    fn take(&mut self, what: &str) -> Result<u32> {
        match self.0.pop_first() {
            Some(n) => Ok(n),
            None => bail!("all {} {what} numbers are in use", MAX_POLICIES - 1),
        }
    }
}

/// A port's place: its rule set (`None`: an earlier agent's, unknown here) and zone.
struct Held {
    set: Option<SetKey>,
    zone: u32,
}

/// A rule set written: its number, what is written, and the zones of the ports that use it.
struct RuleSet {
    number: u16,
    policy: Arc<Policy>,
    users: BTreeSet<u32>,
}

/// The tries and flows, the rule sets written, and each port's place.
pub struct Policies {
    remotes: LpmTrie<MapData, [u8; 8], RuleBits>,
    ports: LpmTrie<MapData, [u8; 8], RuleBits>,
    flows: BpfHashMap<MapData, FlowKey, CtValue>,
    /// `SG_COUNTS`: flows the programs added, flows the sweeps removed.
    counts: PerCpuArray<MapData, u64>,
    /// Rule sets written, by what they are the rules of.
    sets: HashMap<SetKey, RuleSet>,
    /// Interface -> its rule set and zone.
    held: HashMap<String, Held>,
    free_sets: Numbers,
    free_zones: Numbers,
    /// Zones whose flows are to be checked again: against the rules now in place, or (`None`) all
    /// dropped (a zone freed).
    sweeps: HashMap<u32, Option<Arc<Policy>>>,
}

/// The flow table's fill and evictions, and the filtering's size (`/metrics`).
pub struct FlowStats {
    pub entries: u64,
    pub evicted: u64,
    pub filtered_ports: u64,
    pub rule_sets: u64,
}

/// The trie entries `policy` renders under rule-set number `id`.
fn render(id: u16, policy: &Policy) -> (Entries, Entries) {
    let (mut remotes, mut ports) = (Entries::new(), Entries::new());
    for (dir, c) in [(EGRESS, &policy.egress), (INGRESS, &policy.ingress)] {
        for (net, bits) in &c.remotes {
            let data = firewall::remote_key(id, dir, net.network().octets());
            remotes.insert((KEY_FIXED_BITS + net.prefix() as u32, data), RuleBits::from_u128(*bits));
        }
        for ((proto, value, len), bits) in &c.ports {
            let data = firewall::ports_key(id, dir, *proto, *value);
            ports.insert((KEY_FIXED_BITS + *len as u32, data), RuleBits::from_u128(*bits));
        }
    }
    (remotes, ports)
}

/// The rule set a trie key belongs to.
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
            sets: HashMap::new(),
            held: HashMap::new(),
            free_sets: Numbers::all(),
            free_zones: Numbers::all(),
            sweeps: HashMap::new(),
        }
    }

    /// Puts `policy`, the rules of `key`, in place for the port on `iface` (`None`: unfiltered)
    /// and returns the rule set and zone its `PortEntry` names.
    pub fn set(&mut self, iface: &str, policy: Option<&KeyedPolicy>) -> Result<(u16, u32)> {
        let Some((key, policy)) = policy else {
            self.release(iface)?;
            return Ok((0, 0));
        };
        let number = self.write_set(key, policy)?;
        let (zone, before) = match self.held.get(iface) {
            Some(h) if h.set.as_ref() == Some(key) => return Ok((number, h.zone)),
            Some(h) => (h.zone, h.set.clone()),
            None => {
                let zone = self.free_zones.take("zone")?;
                // The flows of the port that had the zone go before any of this one's come.
                if self.sweeps.get(&zone).is_some_and(Option::is_none) {
                    self.sweep()?;
                }
                (zone, None)
            }
        };
        self.held.insert(
            iface.to_string(),
            Held {
                set: Some(key.clone()),
                zone,
            },
        );
        if let Some(set) = self.sets.get_mut(key) {
            set.users.insert(zone);
        }
        if let Some(old) = before {
            self.leave_set(&old, zone)?;
        }
        self.sweeps.insert(zone, Some(policy.clone()));
        Ok((number, zone))
    }

    /// Writes `key`'s rule set as `policy`: new, or in place of what it was (its users' flows
    /// are checked against it again). Returns its number.
    fn write_set(&mut self, key: &SetKey, policy: &Arc<Policy>) -> Result<u16> {
        let (number, old) = match self.sets.get(key) {
            Some(set) if Arc::ptr_eq(&set.policy, policy) || *set.policy == **policy => return Ok(set.number),
            Some(set) => (set.number, render(set.number, &set.policy)),
            None => (
                self.free_sets.take("rule set")? as u16,
                (Entries::new(), Entries::new()),
            ),
        };
        let (remotes, ports) = render(number, policy);
        // New entries first, then the stale ones: for a moment the union of both applies.
        write(&mut self.remotes, &remotes, &old.0).context("write SG_REMOTES")?;
        write(&mut self.ports, &ports, &old.1).context("write SG_PORTS")?;
        let set = self.sets.entry(key.clone()).or_insert_with(|| RuleSet {
            number,
            policy: policy.clone(),
            users: BTreeSet::new(),
        });
        set.policy = policy.clone();
        for zone in &set.users {
            self.sweeps.insert(*zone, Some(policy.clone()));
        }
        Ok(number)
    }

    /// Zone `zone` no longer uses rule set `key`; its entries go with its last user.
    fn leave_set(&mut self, key: &SetKey, zone: u32) -> Result<()> {
        let Some(set) = self.sets.get_mut(key) else {
            return Ok(());
        };
        set.users.remove(&zone);
        if !set.users.is_empty() {
            return Ok(());
        }
        let Some(set) = self.sets.remove(key) else {
            return Ok(());
        };
        let (remotes, ports) = render(set.number, &set.policy);
        write(&mut self.remotes, &Entries::new(), &remotes)?;
        write(&mut self.ports, &Entries::new(), &ports)?;
        self.free_sets.0.insert(set.number as u32);
        Ok(())
    }

    /// Takes the port on `iface` out of filtering: its zone and its flows go, and its rule set
    /// with its last user.
    pub fn release(&mut self, iface: &str) -> Result<()> {
        let Some(h) = self.held.remove(iface) else {
            return Ok(());
        };
        if let Some(set) = &h.set {
            self.leave_set(set, h.zone)?;
        }
        self.sweeps.insert(h.zone, None);
        self.free_zones.0.insert(h.zone);
        Ok(())
    }

    /// For maps taken over: the port on `iface` has zone `zone` again (its flows stay); its rule
    /// set, an earlier agent's, is replaced when the port is programmed.
    pub fn reclaim(&mut self, iface: &str, zone: u32) {
        if zone != 0 && self.free_zones.0.remove(&zone) {
            self.held.insert(iface.to_string(), Held { set: None, zone });
        }
    }

    /// Once every port is programmed after a take-over: the tries' entries of rule sets no port
    /// uses, and the flows of zones no port has, go.
    pub fn free_unclaimed(&mut self) {
        let used: BTreeSet<u16> = self.sets.values().map(|s| s.number).collect();
        for trie in [&mut self.remotes, &mut self.ports] {
            let stale: Vec<Key<[u8; 8]>> = trie
                .keys()
                .filter_map(Result::ok)
                .filter(|k| !used.contains(&owner(&k.data())))
                .collect();
            for k in stale {
                let _ = trie.remove(&k);
            }
        }
        self.sweeps.extend(self.free_zones.0.iter().map(|z| (*z, None)));
        let _ = self.sweep();
    }

    /// Checks the flows of the zones whose rules changed: a flow the rules in place would not
    /// open any more goes (the next frame of it is a stray, refused), as do all flows of a zone
    /// freed. Returns how many went.
    pub fn sweep(&mut self) -> Result<usize> {
        if self.sweeps.is_empty() {
            return Ok(0);
        }
        let sweeps = std::mem::take(&mut self.sweeps);
        let mut gone = 0;
        for (key, value) in self.all_flows()? {
            let Some(now) = sweeps.get(&key.zone) else { continue };
            let keep = now.as_ref().is_some_and(|policy| still_allowed(policy, &key, &value));
            if !keep && self.flows.remove(&key).is_ok() {
                gone += 1;
            }
        }
        self.count_removed(gone as u64)?;
        Ok(gone)
    }

    /// Every tracked flow, read in batches: one bpf() call per entry made a table of 100,000
    /// flows cost a tenth of a second under the controller's lock.
    fn all_flows(&self) -> Result<Vec<(FlowKey, CtValue)>> {
        use aya::maps::IterableMap;
        use std::os::fd::AsFd;
        Ok(super::batch::read_all(self.flows.map().fd().as_fd())?)
    }

    fn count_removed(&mut self, n: u64) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let values = self.counts.get(&firewall::FLOWS_REMOVED, 0)?;
        let mut all: Vec<u64> = values.iter().copied().collect();
        all[0] += n;
        self.counts
            .set(firewall::FLOWS_REMOVED, PerCpuValues::try_from(all)?, 0)?;
        Ok(())
    }

    /// Tracks `key` as `value` (a flow carried over from the previous agent's table), expiring no
    /// later than its timeout from now (`bounded`).
    pub fn carry_flow(&mut self, key: &FlowKey, value: &CtValue, now: (u64, u64)) -> Result<()> {
        self.flows.insert(key, bounded(key, value, now), 0)?;
        Ok(())
    }

    /// Bounds the expiry of every flow of a table taken over in place to its timeout from now
    /// (`bounded`): those an agent of before jiffies wrote in nanoseconds would never expire.
    /// Returns how many were rewritten.
    pub fn bound_expiries(&mut self) -> Result<usize> {
        let now = now()?;
        let mut n = 0;
        for (key, value) in self.all_flows()? {
            let fixed = bounded(&key, &value, now);
            if fixed != value {
                // A flow gone meanwhile is no error.
                let _ = self.flows.insert(key, fixed, BPF_EXIST);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Flows the table tracks (live or expired, until reused), and how many it evicted to make
    /// room for new ones since the maps were made.
    pub fn flow_stats(&self) -> Result<FlowStats> {
        let sum = |slot: u32| -> Result<u64> { Ok(self.counts.get(&slot, 0)?.iter().sum()) };
        let entries = {
            use aya::maps::IterableMap;
            use std::os::fd::AsFd;
            super::batch::count::<FlowKey, CtValue>(self.flows.map().fd().as_fd())?
        };
        let (added, removed) = (sum(firewall::FLOWS_ADDED)?, sum(firewall::FLOWS_REMOVED)?);
        Ok(FlowStats {
            entries,
            evicted: added.saturating_sub(removed).saturating_sub(entries),
            filtered_ports: self.held.len() as u64,
            rule_sets: self.sets.len() as u64,
        })
    }
}

/// `BPF_EXIST`: update an entry only if it is there.
const BPF_EXIST: u64 = 2;

/// The kernel's jiffies now and its `HZ`.
pub fn now() -> Result<(u64, u64)> {
    let hz = *super::clock::hz()?;
    Ok((super::clock::jiffies_now(hz)?, hz))
}

/// `value`, expiring no later than its timeout from `now` (jiffies and `HZ`); a flow in no state
/// expires now.
fn bounded(key: &FlowKey, value: &CtValue, (now, hz): (u64, u64)) -> CtValue {
    let latest = value
        .entry()
        .map_or(now, |e| firewall::expiry(now, hz, key.proto, e.state));
    CtValue {
        expires: value.expires.min(latest),
        ..*value
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

/// Makes a trie's entries of one owner `new`, where they were `old`: writes first, then removals.
pub(super) fn write<const N: usize, V: aya::Pod + PartialEq>(
    trie: &mut LpmTrie<MapData, [u8; N], V>,
    new: &HashMap<(u32, [u8; N]), V>,
    old: &HashMap<(u32, [u8; N]), V>,
) -> Result<()> {
    for (k, v) in new.iter().filter(|(k, v)| old.get(k) != Some(v)) {
        trie.insert(&Key::new(k.0, k.1), v, 0)?;
    }
    for k in old.keys().filter(|k| !new.contains_key(k)) {
        let _ = trie.remove(&Key::new(k.0, k.1));
    }
    Ok(())
}

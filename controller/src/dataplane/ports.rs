//! A port's place in the data plane: its `PORTS` entry, DHCP slot, redirect target and the
//! programs on its interface.

use alioth_common::maps::{self, endpoint_kind, iface_flag, DhcpEntry, Endpoint, EndpointKey, PortEntry, PortMacKey};
use std::os::fd::AsFd;

use anyhow::{bail, Context, Result};
use aya::maps::IterableMap;

use super::Dataplane;
use super::SourceKeys;
use crate::dataplane::attach::{Attachment, Links};
use crate::dataplane::batch;
use crate::dataplane::object::PORT_PROGRAM;
use crate::goalstate::model::Mac;
use crate::goalstate::secgroup::KeyedPolicy;
use ipnetwork::Ipv4Network;

impl Dataplane {
    /// Writes a `PORTS` entry directly, without attaching (BPF_PROG_TEST_RUN frames arrive on `lo`).
    pub fn set_port_entry(&mut self, ifindex: u32, entry: PortEntry) -> Result<()> {
        if ifindex >= maps::MAX_IFINDEX {
            bail!(
                "ifindex {ifindex} is beyond the {} interfaces the data plane indexes",
                maps::MAX_IFINDEX
            );
        }
        self.ports.set(ifindex, entry, 0).context("write PORTS")
    }

    /// Makes `ifindex` a redirect target.
    pub fn add_redirect(&mut self, ifindex: u32) -> Result<()> {
        self.redirect
            .set(ifindex, ifindex, None, 0)
            .with_context(|| format!("add interface {ifindex} to REDIRECT"))
    }

    /// Makes `iface` (at `ifindex`) a redirect target if it runs XDP: frames for an interface on
    /// the skb path alone are passed to the sender's skb path instead.
    pub(super) fn set_redirect(&mut self, iface: &str, ifindex: u32) -> Result<()> {
        match self.attached.get(iface) {
            Some((_, a)) if !a.takes_xdp_frames() => {
                self.remove_redirect(ifindex);
                Ok(())
            }
            _ => self.add_redirect(ifindex),
        }
    }

    /// Writes the `IFACE_FLAGS` of attached interface `iface` at `ifindex`: whether it runs the
    /// skb path alone, and for a port, whether its frames enter its guest's side directly (a veth
    /// whose peer is in another network namespace; an interface the kernel cannot tell about is
    /// not marked, and its frames go the longer way).
    pub(super) fn set_iface_flags(&mut self, iface: &str, ifindex: u32, port: bool) -> Result<()> {
        let Some((_, attachment)) = self.attached.get(iface) else {
            return Ok(());
        };
        let peer = port
            && self
                .names
                .peer_elsewhere(ifindex)
                .unwrap_or_else(|| crate::net::links::peer_elsewhere(ifindex).unwrap_or(false));
        let flags = iface_flags(attachment, peer);
        self.iface_flags.set(ifindex, flags, 0).context("write IFACE_FLAGS")
    }

    /// `set_iface_flags` for every attached interface again, from one listing of them: a veth's
    /// peer may have moved between namespaces since its port was attached (into a guest's, or
    /// back here, where the direct way would lose every frame).
    pub fn refresh_iface_flags(&mut self) -> Result<()> {
        let links = crate::net::links::links()?;
        for (index, attachment) in self.attached.values() {
            let peer = attachment.program == PORT_PROGRAM && links.get(index).is_some_and(|l| l.peer_elsewhere);
            self.iface_flags
                .set(*index, iface_flags(attachment, peer), 0)
                .context("write IFACE_FLAGS")?;
        }
        Ok(())
    }

    /// Clears the `IFACE_FLAGS` of an interface no longer attached.
    fn clear_iface_flags(&mut self, ifindex: u32) {
        let _ = self.iface_flags.set(ifindex, 0, 0);
    }

    /// Takes `ifindex` out of the redirect targets (an interface on the skb path alone).
    pub fn remove_redirect(&mut self, ifindex: u32) {
        // aya's array device map has no remove; a slot already empty is as good as removed.
        let _ = batch::delete(self.redirect.map().fd().as_fd(), &ifindex);
    }

    /// Writes the port's entry, attaches the program to `iface`, makes it a redirect target (if it
    /// runs XDP) and points the port's addresses (`ips`, in its VNI) at it. `Ok(false)`: no such
    /// interface yet.
    pub fn program_port(
        &mut self,
        iface: &str,
        entry: PortEntry,
        ips: &[[u8; 4]],
        dhcp: Option<&DhcpEntry>,
        policy: Option<&KeyedPolicy>,
        pairs: &[Ipv4Network],
    ) -> Result<bool> {
        let Some(index) = self.names.index(iface) else {
            return Ok(false);
        };
        let mut entry = entry;
        entry.stats_slot = self.stats_slot(iface);
        (entry.policy, entry.zone) = self.policies.set(iface, policy)?;
        // Before the entry: the port may send from its pairs as soon as it is programmed.
        self.set_allowed_sources(iface, &entry, pairs)?;
        let old = self.dhcp_slots.get(iface).copied();
        entry.dhcp_slot = match (dhcp, old) {
            (None, _) => 0,
            (Some(e), Some((slot, written))) if *e == written => slot,
            (Some(e), _) => self.add_dhcp(e, old.map(|(slot, _)| slot))?,
        };
        // The entry goes first so that the first packet the program sees finds it.
        if let Err(e) = self.set_port_entry(index, entry) {
            if entry.dhcp_slot != 0 && old.map(|(slot, _)| slot) != Some(entry.dhcp_slot) {
                self.dhcp_free.push_front(entry.dhcp_slot);
            }
            return Err(e);
        }
        self.dhcp_slots.remove(iface);
        if let Some(e) = dhcp {
            self.dhcp_slots.insert(iface.to_string(), (entry.dhcp_slot, *e));
        }
        if let Some((slot, _)) = old.filter(|(slot, _)| *slot != entry.dhcp_slot) {
            self.dhcp_free.push_back(slot);
        }
        match self.attached.get(iface) {
            Some((i, _)) if *i == index => {}
            // Same name, new interface (the old one was deleted): the old link died with it.
            Some(_) => {
                self.forget(iface);
                self.attach_port(iface, index)?;
            }
            None => self.attach_port(iface, index)?,
        }
        self.set_redirect(iface, index)?;
        self.set_iface_flags(iface, index, true)?;
        let key = (entry.vni, entry.mac);
        if let Some(old) = self.port_keys.insert(iface.to_string(), key).filter(|old| *old != key) {
            self.unset_local(old);
        }
        self.set_local(key, index)?;
        for ip in ips {
            let value = Endpoint {
                mac: entry.mac,
                kind: endpoint_kind::LOCAL_PORT,
                ifindex: index,
                ..Default::default()
            };
            self.upsert_endpoint(
                EndpointKey {
                    vni: entry.vni,
                    ip: *ip,
                },
                value,
            )?;
        }
        Ok(true)
    }

    pub(super) fn attach_port(&mut self, iface: &str, index: u32) -> Result<()> {
        match self.links().attach(iface, PORT_PROGRAM) {
            Ok(link) => {
                self.attached.insert(iface.to_string(), (index, link));
                Ok(())
            }
            Err(e) => {
                // Not ours after all: leave no entry behind for that interface.
                let _ = self.set_port_entry(index, PortEntry::default());
                Err(e)
            }
        }
    }

    /// The links of this agent's object.
    pub(super) fn links(&mut self) -> Links<'_> {
        Links {
            ebpf: &mut self.ebpf,
            pin_dir: self.pin_dir.as_deref(),
            mode: self.mode,
            committed: self.committed,
        }
    }

    /// Looks interfaces up in one listing of them until `unlist_interfaces` (a restore: a million
    /// port names, most of which name no interface yet, cost one listing instead of an ioctl each).
    pub fn list_interfaces(&mut self) {
        self.names.list();
    }

    pub fn unlist_interfaces(&mut self) {
        self.names.unlist();
    }

    /// The index of the interface `iface` the programs were attached to, if they are.
    pub fn attached_index(&self, iface: &str) -> Option<u32> {
        self.attached.get(iface).map(|(i, _)| *i)
    }

    /// How many interfaces carry the port program.
    pub fn attached_ports(&self) -> usize {
        self.attached
            .values()
            .filter(|(_, a)| a.program == PORT_PROGRAM)
            .count()
    }

    /// Attached interfaces that are gone, or whose name now has another index.
    pub fn stale_attachments(&self) -> Vec<String> {
        self.attached
            .iter()
            .filter(|(name, (index, _))| self.names.index(name) != Some(*index))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The port with `key`'s VNI and MAC is on interface `index`: for the endpoints written
    /// later, and in `PORT_MACS`.
    pub fn set_local(&mut self, key: (u32, Mac), index: u32) -> Result<()> {
        self.local.insert(key, index);
        self.port_macs
            .insert(port_mac_key(key), index, 0)
            .context("write PORT_MACS")
    }

    pub fn unset_local(&mut self, key: (u32, Mac)) {
        self.local.remove(&key);
        let _ = self.port_macs.remove(&port_mac_key(key));
    }

    /// Detaches from `iface` and clears its `PORTS` entry. Missing interfaces are not an error.
    pub fn detach(&mut self, iface: &str) -> Result<()> {
        let Some(index) = self.attached.get(iface).map(|(i, _)| *i) else {
            return Ok(());
        };
        self.forget(iface);
        self.remove_redirect(index);
        self.clear_iface_flags(index);
        if let Some(key) = self.port_keys.remove(iface) {
            self.unset_local(key);
        }
        self.set_port_entry(index, PortEntry::default())?;
        if let Some((slot, _)) = self.dhcp_slots.remove(iface) {
            self.dhcp_free.push_back(slot);
        }
        self.free_stats_slot(iface);
        let _ = self.set_allowed_sources(iface, &PortEntry::default(), &[]);
        self.policies.release(iface)
    }

    /// Makes `pairs` the sources the port on `iface` (with `entry`'s VNI and MAC) may send from
    /// beyond its fixed IPs, in `ALLOWED_SOURCES`.
    fn set_allowed_sources(&mut self, iface: &str, entry: &PortEntry, pairs: &[Ipv4Network]) -> Result<()> {
        let new: SourceKeys = pairs
            .iter()
            .map(|p| {
                let data = maps::allowed_source_key(entry.vni, &entry.mac, p.network().octets());
                ((maps::ALLOWED_SOURCE_FIXED_BITS + p.prefix() as u32, data), 1)
            })
            .collect();
        let old = self.allowed.remove(iface).unwrap_or_default();
        super::policies::write(&mut self.allowed_sources, &new, &old).context("write ALLOWED_SOURCES")?;
        if !new.is_empty() {
            self.allowed.insert(iface.to_string(), new);
        }
        Ok(())
    }

    /// For maps taken over with the record (`adopt_recorded`): whether `PORTS` at `index` is the
    /// entry of the port with `key` (VNI, MAC), whose interface `iface` now has that index. Its DHCP
    /// slot is then the port's again, so that programming it anew keeps the slot.
    pub fn reclaim_port(&mut self, iface: &str, index: u32, key: (u32, [u8; 6])) -> bool {
        let Some(entry) = self.programmed_entry(index) else {
            return false;
        };
        if (entry.vni, entry.mac) != key {
            return false;
        }
        if entry.dhcp_slot != 0 {
            if let Ok(written) = self.dhcp.get(&entry.dhcp_slot, 0) {
                self.dhcp_slots.insert(iface.to_string(), (entry.dhcp_slot, written));
            }
        }
        self.reclaim_stats_slot(iface, entry.stats_slot);
        self.policies.reclaim(iface, entry.zone);
        true
    }

    /// Once every port is reclaimed: the DHCP slots no port holds are free.
    pub fn free_unclaimed_slots(&mut self) {
        let held: std::collections::HashSet<u32> = self.dhcp_slots.values().map(|(slot, _)| *slot).collect();
        self.dhcp_free = (1..maps::MAX_DHCP).filter(|s| !held.contains(s)).collect();
    }

    /// Once every port taken over is programmed again: rule sets and zones no port uses go, and
    /// so do the `PORT_MACS` entries of ports gone meanwhile.
    pub fn free_unclaimed_policies(&mut self) {
        self.policies.free_unclaimed();
        let stale: Vec<PortMacKey> = self
            .port_macs
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !self.local.contains_key(&(k.vni, k.mac)))
            .collect();
        for k in stale {
            let _ = self.port_macs.remove(&k);
        }
        // The programs' per-CPU copies of the flows that went count no more.
        if let Err(e) = self.changed() {
            tracing::warn!("{e:#}");
        }
    }

    /// Puts `policy` in place for `iface` as `program_port` does, and returns the rule set and
    /// zone, without a port (tests and benchmarks: BPF_PROG_TEST_RUN frames come from
    /// interfaces that are no ports).
    pub fn set_policy(&mut self, iface: &str, policy: Option<&KeyedPolicy>) -> Result<(u16, u32)> {
        self.policies.set(iface, policy)
    }

    /// Puts a port's policy in place when only its rules (or their members) changed: its rule
    /// set is rewritten in place, and its `PORTS` entry only when its set or zone is another. A
    /// port not attached yet gets its policy when it is.
    pub fn refilter(&mut self, iface: &str, policy: Option<&KeyedPolicy>) -> Result<()> {
        let Some(index) = self.attached_index(iface) else {
            return Ok(());
        };
        let (set, zone) = self.policies.set(iface, policy)?;
        let Some(entry) = self.programmed_entry(index) else {
            return Ok(());
        };
        if (entry.policy, entry.zone) != (set, zone) {
            self.set_port_entry(
                index,
                PortEntry {
                    policy: set,
                    zone,
                    ..entry
                },
            )?;
        }
        Ok(())
    }

    /// Drops the tracked flows that the rules changed since the last sweep no longer allow.
    pub fn sweep_flows(&mut self) {
        match self.policies.sweep() {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!("{n} tracked flows no longer allowed by their ports' rules: dropped");
                // The programs' per-CPU copies of those flows count no more.
                if let Err(e) = self.changed() {
                    tracing::warn!("{e:#}");
                }
            }
            Err(e) => tracing::warn!("sweep the tracked flows: {e:#}"),
        }
    }

    /// The security groups' flow table: fill and evictions.
    pub fn flow_stats(&self) -> Result<super::FlowStats> {
        self.policies.flow_stats()
    }

    /// The index of interface `iface`, if there is one.
    pub fn interface_index(&self, iface: &str) -> Option<u32> {
        self.names.index(iface)
    }

    /// The `PORTS` entry at `index`, if one is programmed there.
    pub fn programmed_entry(&self, index: u32) -> Option<PortEntry> {
        self.ports.get(&index, 0).ok().filter(PortEntry::is_programmed)
    }

    /// Clears what a port left at `index` (its entry and redirect target) when no port of the
    /// record is there any more.
    pub fn clear_port_entry(&mut self, index: u32) -> Result<()> {
        self.remove_redirect(index);
        self.set_port_entry(index, PortEntry::default())
    }

    /// Writes a DHCP entry to a free slot and returns the slot, for a `PortEntry::dhcp_slot`.
    /// With every slot taken, `current` (the port's own slot) is rewritten in place.
    pub fn add_dhcp(&mut self, entry: &DhcpEntry, current: Option<u32>) -> Result<u32> {
        let (slot, fresh) = match (self.dhcp_free.pop_front(), current) {
            (Some(slot), _) => (slot, true),
            (None, Some(slot)) => (slot, false),
            (None, None) => bail!(
                "all {} DHCP slots are in use: no DHCP for more ports on this host",
                maps::MAX_DHCP - 1
            ),
        };
        if let Err(e) = self.dhcp.set(slot, *entry, 0) {
            if fresh {
                self.dhcp_free.push_front(slot);
            }
            return Err(e).context("write DHCP");
        }
        Ok(slot)
    }

    pub(super) fn forget(&mut self, iface: &str) {
        if let Some((_, attachment)) = self.attached.remove(iface) {
            self.links().forget(iface, attachment);
        }
    }
}

/// The `IFACE_FLAGS` of an interface attached as `attachment`, whose frames enter its peer
/// directly when `peer`.
fn iface_flags(attachment: &Attachment, peer: bool) -> u8 {
    let skb_only = if attachment.takes_xdp_frames() {
        0
    } else {
        iface_flag::SKB_ONLY
    };
    skb_only | if peer { iface_flag::PEER } else { 0 }
}

fn port_mac_key((vni, mac): (u32, Mac)) -> PortMacKey {
    PortMacKey { vni, mac, _pad: [0; 2] }
}

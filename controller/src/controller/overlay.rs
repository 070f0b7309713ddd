//! The overlay's view of the underlay, kept fresh in the maps: the uplink entry (address, MAC, MTU)
//! and the next-hop MAC toward every remote host that neighbors live on.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::dataplane::Dataplane;
use crate::goalstate::model::{format_mac, Mac};
use crate::net::route::RouteQuery;
use crate::net::underlay::{self, UplinkInfo};

/// How often resolved next hops are re-confirmed (the kernel lets unused neighbour entries go
/// stale, and our traffic bypasses its stack).
const RECONFIRM: Duration = Duration::from_secs(15);

/// `alioth agent --uplink ...`.
#[derive(Clone, Debug)]
pub struct OverlayConfig {
    pub uplink: String,
    /// Tunnel endpoint address; default: the uplink's first IPv4 address.
    pub ip: Option<Ipv4Addr>,
    pub vxlan_port: u16,
}

pub struct Overlay {
    cfg: OverlayConfig,
    info: UplinkInfo,
    /// Remote host -> next-hop MAC, as written to `NEXTHOPS`.
    next_hops: HashMap<Ipv4Addr, Mac>,
    /// Hosts the uplink has no route to (warned about once, until that changes).
    unreachable: HashSet<Ipv4Addr>,
    last_reconfirm: Instant,
    /// The kernel's route lookups, in the agent's network namespace.
    routes: RouteQuery,
}

impl Overlay {
    /// Checks the uplink (before anything is loaded: a bad start must not touch the data plane).
    pub fn check(cfg: OverlayConfig) -> Result<(OverlayConfig, UplinkInfo)> {
        let info = underlay::uplink_info(&cfg.uplink, cfg.ip)?;
        Ok((cfg, info))
    }

    /// Attaches the uplink program and writes the uplink entry. The next hops a previous agent
    /// knew are carried over: the kernel may have forgotten some while no agent kept them
    /// confirmed, and they stay in use until it resolves them again (`refresh` corrects them,
    /// and drops those of hosts no longer in goal state).
    pub fn start(cfg: OverlayConfig, info: UplinkInfo, dp: &mut Dataplane) -> Result<Overlay> {
        dp.set_uplink(&info, cfg.vxlan_port)?;
        tracing::info!(uplink = info.name, ip = %info.ip, mac = format_mac(&info.mac), mtu = info.mtu, vxlan_port = cfg.vxlan_port, "overlay uplink attached");
        let mut next_hops = HashMap::new();
        match dp.previous_next_hops() {
            Ok(previous) => {
                for (host, mac) in previous {
                    match dp.set_next_hop(host, mac) {
                        Ok(()) => drop(next_hops.insert(Ipv4Addr::from(host), mac)),
                        Err(e) => tracing::warn!(host = %Ipv4Addr::from(host), "next hop not carried over: {e:#}"),
                    }
                }
                if !next_hops.is_empty() {
                    tracing::info!(
                        hosts = next_hops.len(),
                        "underlay next hops carried over from the previous agent"
                    );
                }
            }
            Err(e) => tracing::warn!("next hops of the previous agent not carried over: {e:#}"),
        }
        Ok(Overlay {
            cfg,
            info,
            next_hops,
            unreachable: HashSet::new(),
            last_reconfirm: Instant::now(),
            routes: RouteQuery::new()?,
        })
    }

    pub fn info(&self) -> &UplinkInfo {
        &self.info
    }

    /// Re-reads the uplink and the kernel's routes and neighbours, and updates the maps for
    /// `hosts`. Returns how many hosts have no resolved next hop yet (their resolution was asked
    /// for: call again soon).
    pub fn refresh<'a>(&mut self, dp: &mut Dataplane, hosts: impl Iterator<Item = &'a Ipv4Addr>) -> usize {
        match underlay::uplink_info(&self.cfg.uplink, self.cfg.ip) {
            Ok(info) if info != self.info => {
                tracing::info!(ifindex = info.ifindex, mtu = info.mtu, mac = format_mac(&info.mac), ip = %info.ip, "uplink changed");
                // Another index: the interface was created again, without the program.
                let updated = match info.ifindex == self.info.ifindex {
                    true => dp.update_uplink(&info, self.cfg.vxlan_port),
                    false => dp.set_uplink(&info, self.cfg.vxlan_port),
                };
                if let Err(e) = updated {
                    tracing::error!("uplink entry not updated: {e:#}");
                } else {
                    self.info = info;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("uplink unreadable: {e:#}"),
        }
        let tables = match underlay::Tables::read() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("neighbour table unreadable: {e:#}");
                return 0;
            }
        };
        let reconfirm = self.last_reconfirm.elapsed() >= RECONFIRM;
        if reconfirm {
            self.last_reconfirm = Instant::now();
        }
        let mut wanted: HashSet<Ipv4Addr> = HashSet::new();
        let mut unresolved = 0;
        for host in hosts {
            wanted.insert(*host);
            let hop = match self.routes.get(*host) {
                Ok(route) => tables.next_hop(&self.info, *host, route),
                Err(e) => Err(format!("{e:#}")),
            };
            if hop.is_ok() {
                self.unreachable.remove(host);
            }
            match hop {
                Ok((_, Some(mac))) => {
                    if self.next_hops.get(host) != Some(&mac) {
                        match dp.set_next_hop(host.octets(), mac) {
                            Ok(()) => {
                                tracing::info!(host = %host, mac = format_mac(&mac), "underlay next hop resolved");
                                self.next_hops.insert(*host, mac);
                            }
                            Err(e) => tracing::error!(host = %host, "next hop not written: {e:#}"),
                        }
                    }
                    if reconfirm {
                        underlay::solicit(*host);
                    }
                }
                Ok((hop, None)) => {
                    // The last known MAC (if any) stays in use while the kernel re-resolves.
                    tracing::debug!(host = %host, next_hop = %hop, "resolving the underlay next hop");
                    underlay::solicit(*host);
                    unresolved += 1;
                }
                Err(reason) => {
                    if self.next_hops.remove(host).is_some() {
                        let _ = dp.remove_next_hop(&host.octets());
                    }
                    if self.unreachable.insert(*host) {
                        tracing::warn!(host = %host, "remote host unreachable over the uplink: {reason}");
                    }
                }
            }
        }
        let gone: Vec<Ipv4Addr> = self.next_hops.keys().filter(|h| !wanted.contains(h)).copied().collect();
        self.unreachable.retain(|h| wanted.contains(h));
        for host in gone {
            self.next_hops.remove(&host);
            let _ = dp.remove_next_hop(&host.octets());
        }
        unresolved
    }
}

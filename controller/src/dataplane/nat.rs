//! `ELASTIC_IPS` and `ELASTIC_SOURCES`: written from what the elastic IPs render
//! (`goalstate::nat`), by difference with what they hold; and the gratuitous ARP that tells the
//! uplink's segment where an elastic IP is now.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use alioth_common::eth::{BROADCAST, ETH_P_ARP};
use alioth_common::maps::{EndpointKey, Uplink};
use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData};

use crate::goalstate::nat::ElasticIps as Wanted;

pub struct ElasticIps {
    ips: HashMap<MapData, [u8; 4], EndpointKey>,
    sources: HashMap<MapData, EndpointKey, [u8; 4]>,
    /// What `ips` holds.
    held: Wanted,
}

impl ElasticIps {
    /// Over the maps as they are: maps taken over from a previous agent hold its elastic IPs.
    pub fn new(ips: HashMap<MapData, [u8; 4], EndpointKey>, sources: HashMap<MapData, EndpointKey, [u8; 4]>) -> Self {
        let held = ips.iter().filter_map(Result::ok).collect();
        ElasticIps { ips, sources, held }
    }

    /// Makes the maps hold `wanted`: new and moved elastic IPs first (their private side before
    /// their public one), then the ones gone. Returns the public addresses that are new or moved,
    /// to be announced.
    pub fn write(&mut self, wanted: Wanted) -> Result<Vec<[u8; 4]>> {
        // Private addresses that keep an elastic IP (maybe another one): their reverse entries
        // are overwritten, never removed.
        let sources: BTreeSet<&EndpointKey> = wanted.values().collect();
        let mut moved = Vec::new();
        for (ip, key) in &wanted {
            if self.held.get(ip) == Some(key) {
                continue;
            }
            if let Some(old) = self.held.get(ip).filter(|old| !sources.contains(old)) {
                let _ = self.sources.remove(old);
            }
            self.sources.insert(key, ip, 0).context("write ELASTIC_SOURCES")?;
            self.ips.insert(ip, key, 0).context("write ELASTIC_IPS")?;
            self.held.insert(*ip, *key);
            moved.push(*ip);
        }
        let gone: Vec<([u8; 4], EndpointKey)> = self
            .held
            .iter()
            .filter(|(ip, _)| !wanted.contains_key(*ip))
            .map(|(ip, key)| (*ip, *key))
            .collect();
        for (ip, key) in gone {
            self.ips.remove(&ip).context("remove from ELASTIC_IPS")?;
            if !sources.contains(&key) {
                let _ = self.sources.remove(&key);
            }
            self.held.remove(&ip);
        }
        Ok(moved)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }
}

impl super::Dataplane {
    /// Makes the NAT maps hold `wanted` (`goalstate::nat::render`) and announces the elastic IPs
    /// that are new or moved on the uplink's segment (a failed announcement is logged: the next
    /// ARP request finds the address anyway).
    pub fn set_elastic_ips(&mut self, wanted: Wanted) -> Result<()> {
        let moved = self.write_elastic_ips(wanted)?;
        let uplink = self.uplink.get(&0, 0).ok();
        if let Some(up) = uplink.filter(|_| !moved.is_empty()) {
            if let Err(e) = announce(&up, &moved) {
                tracing::warn!("elastic IPs not announced: {e:#}");
            }
        }
        Ok(())
    }

    /// `set_elastic_ips` without the announcement: returns the elastic IPs that are new or moved.
    pub fn write_elastic_ips(&mut self, wanted: Wanted) -> Result<Vec<[u8; 4]>> {
        self.elastic_ips.write(wanted)
    }

    /// Entries of `ELASTIC_IPS`.
    pub fn elastic_ip_count(&self) -> usize {
        self.elastic_ips.len()
    }

    /// Flows the distributed SNAT holds (`SNAT_FLOWS`, counted a chunk at a time).
    pub fn snat_flow_count(&self) -> Result<u64> {
        use alioth_common::snat::{SnatKey, SNAT_FLOWS};
        use std::os::fd::AsFd;
        let map = self.ebpf.map(SNAT_FLOWS).context("no SNAT_FLOWS map")?;
        let fd = match map {
            aya::maps::Map::LruHashMap(data) => data.fd().as_fd(),
            _ => anyhow::bail!("SNAT_FLOWS is no LRU hash map"),
        };
        Ok(super::batch::count::<SnatKey, u16>(fd)?)
    }
}

/// Sends a gratuitous ARP request for each of `ips` out of the uplink: "`ip` is at the uplink's
/// MAC", so that the segment's neighbours (its router, a host that held the address before)
/// update their caches at once, as a Neutron FIP namespace does when a floating IP moves.
pub fn announce(uplink: &Uplink, ips: &[[u8; 4]]) -> Result<()> {
    if ips.is_empty() || !uplink.is_configured() {
        return Ok(());
    }
    // SAFETY: plain socket call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("open a packet socket for gratuitous ARP");
    }
    // SAFETY: a descriptor just opened and owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = uplink.ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&BROADCAST);
    for ip in ips {
        let frame = gratuitous_arp(&uplink.mac, *ip);
        // SAFETY: the frame and address outlive the call, with their lengths given.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error()).context("send gratuitous ARP");
        }
    }
    Ok(())
}

/// A broadcast ARP request from `mac` whose sender and target are both `ip`.
pub fn gratuitous_arp(mac: &[u8; 6], ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame is what `arping -U` sends, and the data plane's ARP parser reads it as a
    /// gratuitous ARP (answered by nobody).
    #[test]
    fn a_gratuitous_arp_announces_the_address_from_the_uplink() {
        let f = gratuitous_arp(&[2, 0, 0, 0, 0, 1], [198, 19, 0, 10]);
        assert_eq!(f.len(), alioth_common::arp::ARP_FRAME_LEN);
        assert_eq!(
            alioth_common::arp::parse_request(&f[..]),
            Err(alioth_common::Counter::DropArpNotRequest)
        );
        assert_eq!(&f[22..32], &[2, 0, 0, 0, 0, 1, 198, 19, 0, 10]);
        assert_eq!(&f[38..42], &[198, 19, 0, 10]);
    }
}

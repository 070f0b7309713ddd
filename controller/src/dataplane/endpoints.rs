//! Writes to `ENDPOINTS`, `UPLINK` and `NEXTHOPS`, and the generation that tells the programs'
//! caches a destination changed.

use std::os::fd::{AsFd, BorrowedFd};

use alioth_common::maps::{self, endpoint_kind, Endpoint, EndpointKey, NextHop, Uplink};
use anyhow::{anyhow, Context, Result};
use aya::maps::HashMap as BpfHashMap;
use aya::maps::{Array, IterableMap, MapData};

use super::Dataplane;
use crate::dataplane::batch;
use crate::dataplane::object::UPLINK_PROGRAM;
use crate::goalstate::model::Mac;
use crate::net::underlay::UplinkInfo;

impl Dataplane {
    /// Writes an endpoint; a local port's entry gets its interface's index once it is attached.
    pub fn upsert_endpoint(&mut self, key: EndpointKey, value: Endpoint) -> Result<()> {
        let value = self.with_local_ifindex(&key, value);
        self.endpoints.insert(key, value, 0).context("write ENDPOINTS")?;
        self.changed()
    }

    /// The `ENDPOINTS` entry of `key`, if any.
    pub fn endpoint(&self, key: &EndpointKey) -> Result<Option<Endpoint>> {
        match self.endpoints.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e).context("read ENDPOINTS"),
        }
    }

    /// Publishes a new generation after a change to `ENDPOINTS` or `NEXTHOPS`: the XDP programs'
    /// caches of destinations drop what they filled before it.
    pub(super) fn changed(&mut self) -> Result<()> {
        let (map, last) = &mut self.generation;
        *last += 1;
        map.set(0, *last, 0).context("write GENERATION")
    }

    /// Writes many endpoints with as few bpf() calls as possible. Returns the entries that failed
    /// (by position in `entries`) with their errors; empty when all were written.
    pub fn upsert_endpoints(
        &mut self,
        entries: impl IntoIterator<Item = (EndpointKey, Endpoint)>,
    ) -> Vec<(usize, anyhow::Error)> {
        let (mut keys, mut values) = std::mem::take(&mut self.batch);
        keys.clear();
        values.clear();
        for (k, v) in entries {
            values.push(self.with_local_ifindex(&k, v));
            keys.push(k);
        }
        let fd = self.endpoints.map().fd().as_fd();
        // The kernel's hash map inserts (about half a microsecond each, under per-bucket locks)
        // are most of a large write: its parts go in on several CPUs at once. The keys are
        // distinct (one operation per key in a plan), so the parts do not race on an entry.
        let parts = if keys.len() >= PARALLEL_WRITES {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_WRITERS)
        } else {
            1
        };
        let chunk = keys.len().div_ceil(parts).max(1);
        let mut failed = std::thread::scope(|s| {
            // A part whose thread cannot be had (the process is out of threads) is written here:
            // its closure holds only references and indices, so a copy is still at hand.
            let others: Vec<_> = keys
                .chunks(chunk)
                .zip(values.chunks(chunk))
                .enumerate()
                .skip(1)
                .map(|(i, (k, v))| {
                    let write = move || write_endpoints(fd, k, v, i * chunk);
                    std::thread::Builder::new()
                        .name("alioth-write".into())
                        .spawn_scoped(s, write)
                        .map_err(|_| write)
                })
                .collect();
            let first = chunk.min(keys.len());
            let mut failed = write_endpoints(fd, &keys[..first], &values[..first], 0);
            for part in others {
                match part {
                    Ok(thread) => match thread.join() {
                        Ok(f) => failed.extend(f),
                        Err(panic) => std::panic::resume_unwind(panic),
                    },
                    Err(write) => failed.extend(write()),
                }
            }
            failed
        });
        if let Err(e) = self.changed() {
            // The entries are written, but the data plane may keep using what it cached before.
            let e = format!("{e:#}");
            let mut prior = failed.into_iter().peekable();
            failed = (0..keys.len())
                .map(|i| prior.next_if(|(at, _)| *at == i).unwrap_or_else(|| (i, anyhow!("{e}"))))
                .collect();
        }
        self.batch = (keys, values);
        failed
    }

    /// A local port's endpoint carries the interface it is redirected to, once attached.
    pub(super) fn with_local_ifindex(&self, key: &EndpointKey, mut value: Endpoint) -> Endpoint {
        if value.kind == endpoint_kind::LOCAL_PORT {
            if let Some(i) = self.local.get(&(key.vni, value.mac)) {
                value.ifindex = *i;
            }
        }
        value
    }

    pub fn remove_endpoint(&mut self, key: &EndpointKey) -> Result<()> {
        absent_is_removed(self.endpoints.remove(key)).context("remove from ENDPOINTS")?;
        self.changed()
    }

    /// Writes `FIB_SOURCE`: the interface the NAT program's next-hop lookups start from (0: none).
    pub fn set_fib_source(&mut self, ifindex: u32) -> Result<()> {
        let map = self.ebpf.map_mut(maps::FIB_SOURCE).context("no FIB_SOURCE map")?;
        let mut source: Array<&mut MapData, u32> = Array::try_from(map)?;
        source.set(0, ifindex, 0).context("write FIB_SOURCE")
    }

    /// Writes the `UPLINK` entry directly, without attaching (BPF_PROG_TEST_RUN).
    pub fn set_uplink_entry(&mut self, entry: Uplink) -> Result<()> {
        self.uplink.set(0, entry, 0).context("write UPLINK")
    }

    /// Attaches the uplink program to the underlay interface and configures the overlay endpoint.
    pub fn set_uplink(&mut self, info: &UplinkInfo, vxlan_port: u16) -> Result<()> {
        self.update_uplink(info, vxlan_port)?;
        if self.attached.get(&info.name).is_none_or(|(i, _)| *i != info.ifindex) {
            if let Some((_, old)) = self.attached.remove(&info.name) {
                // Same name, new interface: the old links died with the old one.
                self.links().forget(&info.name, old);
            }
            let link = self.links().attach(&info.name, UPLINK_PROGRAM)?;
            self.attached.insert(info.name.clone(), (info.ifindex, link));
        }
        self.set_iface_flags(&info.name, info.ifindex, false)?;
        self.set_redirect(&info.name, info.ifindex)
    }

    /// Rewrites the `UPLINK` entry (the uplink's MAC or MTU changed).
    pub fn update_uplink(&mut self, info: &UplinkInfo, vxlan_port: u16) -> Result<()> {
        self.set_uplink_entry(Uplink {
            ifindex: info.ifindex,
            ip: info.ip.octets(),
            mac: info.mac,
            vxlan_port,
            mtu: info.mtu,
        })
    }

    /// The next hops the previous agent left pinned, before `commit` replaces its maps: the last
    /// MAC it knew for each remote host. Empty when there is no previous agent.
    pub fn previous_next_hops(&self) -> Result<Vec<([u8; 4], Mac)>> {
        let Some(dir) = self.pin_dir.as_ref().filter(|_| !self.committed) else {
            return Ok(Vec::new());
        };
        let pin = dir.join(maps::NEXTHOPS);
        if !pin.exists() {
            return Ok(Vec::new());
        }
        let data = MapData::from_pin(&pin).with_context(|| format!("open {}", pin.display()))?;
        let old: BpfHashMap<_, [u8; 4], NextHop> = BpfHashMap::try_from(aya::maps::Map::HashMap(data))?;
        old.iter()
            .map(|e| e.map(|(host, hop)| (host, hop.mac)).context("read NEXTHOPS"))
            .collect()
    }

    pub fn set_next_hop(&mut self, host: [u8; 4], mac: Mac) -> Result<()> {
        self.next_hops
            .insert(host, NextHop { mac, _pad: [0; 2] }, 0)
            .context("write NEXTHOPS")?;
        self.changed()
    }

    pub fn remove_next_hop(&mut self, host: &[u8; 4]) -> Result<()> {
        absent_is_removed(self.next_hops.remove(host)).context("remove from NEXTHOPS")?;
        self.changed()
    }
}

/// Batch writes from this many entries are split across CPUs (a thread costs tens of
/// microseconds; 4,096 inserts a few milliseconds).
const PARALLEL_WRITES: usize = 4096;

/// At most this many writers: the buckets' locks and the memory allocator are shared.
const MAX_WRITERS: usize = 4;

/// Writes `keys[i]` -> `values[i]` into `ENDPOINTS` (`fd`); returns the entries that failed, by
/// position plus `offset`, with their errors.
fn write_endpoints(
    fd: BorrowedFd<'_>,
    keys: &[EndpointKey],
    values: &[Endpoint],
    offset: usize,
) -> Vec<(usize, anyhow::Error)> {
    let write_error = |e: std::io::Error| anyhow::Error::new(e).context("write ENDPOINTS");
    let mut failed = Vec::new();
    let mut at = 0;
    while at < keys.len() {
        match batch::update(fd, &keys[at..], &values[at..]) {
            Ok(()) => break,
            Err((written, err)) if at + written < keys.len() => {
                // The entries before `written` are in; the next one failed: its own error, then
                // the batch goes on after it.
                failed.push((offset + at + written, write_error(err)));
                at += written + 1;
            }
            Err((_, err)) => {
                // Refused as a whole (no entry named: a kernel without batch updates for this
                // map, say): one write per entry, each with its own result.
                tracing::debug!("ENDPOINTS batch update refused ({err}); writing one by one");
                for (i, (k, v)) in keys.iter().zip(values).enumerate().skip(at) {
                    if let Err(e) = batch::update_one(fd, k, v) {
                        failed.push((offset + i, write_error(e)));
                    }
                }
                break;
            }
        }
    }
    failed
}

/// A map delete whose key was not there is done: aya reports that as the syscall's ENOENT (its
/// `KeyNotFound` is for lookups), so both mean success.
fn absent_is_removed(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failures are reported at their position in the whole write, whatever part they were in.
    #[test]
    pub(super) fn failed_entries_keep_their_position() {
        let map = crate::dataplane::batch::tests::hash_map(8, 16, 4);
        let keys: Vec<EndpointKey> = (1..=6u32)
            .map(|i| EndpointKey {
                vni: 1,
                ip: i.to_be_bytes(),
            })
            .collect();
        let values = vec![Endpoint::default(); keys.len()];
        // The map holds 4: the last two fail, each with its own error.
        let failed = write_endpoints(map.as_fd(), &keys, &values, 100);
        let at: Vec<usize> = failed.iter().map(|(i, _)| *i).collect();
        assert_eq!(at, [104, 105]);
        assert!(format!("{:#}", failed[0].1).contains("write ENDPOINTS"));
    }
}

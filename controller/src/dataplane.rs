//! The loaded XDP object: its pinned maps and its attachments to port interfaces.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use alioth_common::maps::{self, endpoint_kind, DhcpEntry, Endpoint, EndpointKey, NextHop, PortEntry, Uplink};
use alioth_common::Counter;
use anyhow::{anyhow, bail, Context, Result};
use aya::maps::xdp::DevMap;
use aya::maps::{Array, HashMap as BpfHashMap, IterableMap, MapData, PerCpuArray};
use aya::programs::links::FdLink;
use aya::programs::{xdp::XdpLinkId, SchedClassifier, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use crate::attach::{self, Attachment, Links};
use crate::batch;
use crate::model::Mac;
use crate::object::{PASS_PROGRAM, PORT_PROGRAM, PORT_TC_PROGRAM, UPLINK_PROGRAM, UPLINK_TC_PROGRAM, XDP_OBJECT};
use crate::underlay::UplinkInfo;

/// Names of the maps the agent pins (and `status`/`stats` read).
pub const PINNED_MAPS: [&str; 7] = [
    maps::PORTS,
    maps::ENDPOINTS,
    maps::STATS,
    maps::UPLINK,
    maps::NEXTHOPS,
    maps::REDIRECT,
    maps::DHCP,
];

/// Level of the XDP program's own log records (aya-log), fixed when the object is loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BpfLogLevel {
    Off = 0,
    Error = 1,
    #[default]
    Warn = 2,
    Info = 3,
    /// One record per dropped frame: for debugging only.
    Debug = 4,
    Trace = 5,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Native (driver) XDP, falling back to generic when the driver refuses.
    Auto,
    /// Native XDP only.
    Driver,
    /// Generic (SKB) XDP only.
    Skb,
}

/// Reader of the XDP program's log records; keep it alive while the program is loaded.
pub type Logger = aya_log::EbpfLogger<&'static dyn log::Log>;

pub struct Dataplane {
    ebpf: Ebpf,
    ports: Array<MapData, PortEntry>,
    endpoints: BpfHashMap<MapData, EndpointKey, Endpoint>,
    uplink: Array<MapData, Uplink>,
    next_hops: BpfHashMap<MapData, [u8; 4], NextHop>,
    redirect: DevMap<MapData>,
    dhcp: Array<MapData, DhcpEntry>,
    /// Free `DHCP` slots, the least recently freed first. A changed entry is written to a fresh
    /// slot before the port points at it, and a freed slot is reused last, so a program still
    /// building a reply from a slot never has it rewritten under it.
    dhcp_free: VecDeque<u32>,
    /// Interface -> its `DHCP` slot and what was written there.
    dhcp_slots: HashMap<String, (u32, DhcpEntry)>,
    /// `GENERATION`, and the value last published in it.
    generation: (Array<MapData, u64>, u64),
    /// (VNI, MAC) of each attached port -> its ifindex: filled into the port's `ENDPOINTS` entries
    /// (the planner renders them without, as it knows nothing of interfaces).
    local: HashMap<(u32, Mac), u32>,
    /// Interface -> the (VNI, MAC) it was programmed with, to drop stale `local` entries.
    port_keys: HashMap<String, (u32, Mac)>,
    mode: AttachMode,
    /// Interface name -> (ifindex, link).
    attached: HashMap<String, (u32, Attachment)>,
    pin_dir: Option<PathBuf>,
    /// Interface indexes in the data plane's network namespace.
    names: Names,
    /// Whether `commit` has put this object in place (always, without a pin directory). Until
    /// then, links a previous agent pinned keep running its program.
    committed: bool,
    /// Whether this object took over the pinned maps in place (`adopt`) instead of filling new ones.
    adopted: bool,
    /// Keys and values of the last batch write, kept for the next: a large message then writes
    /// from memory already in place instead of fresh pages.
    batch: (Vec<EndpointKey>, Vec<Endpoint>),
}

/// Where a loaded object's maps are pinned until `commit` puts them in place (bpffs names may not
/// contain dots).
const STAGING: &str = "staging";

/// Interface index of `name` in the calling thread's network namespace, or `None` if there is no
/// such interface.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Interface indexes in the network namespace this was made in (the data plane's), by one ioctl
/// on a socket kept for the purpose: glibc's `if_nametoindex` opens and closes a socket on every
/// call, which was a quarter of restoring a million ports (about 2.4 s). A socket answers for the
/// namespace it was created in, whichever the caller's is now.
struct Names {
    socket: Option<OwnedFd>,
}

impl Names {
    fn new() -> Names {
        // SAFETY: plain socket(2); the descriptor is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        Names {
            // SAFETY: fd is a fresh descriptor nothing else owns.
            socket: (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }),
        }
    }

    /// `ifindex`, in this one's namespace.
    fn index(&self, name: &str) -> Option<u32> {
        let Some(socket) = &self.socket else {
            return ifindex(name);
        };
        // The kernel's limit, NUL included; names with a NUL are no interface's.
        if name.is_empty() || name.len() >= libc::IF_NAMESIZE || name.contains('\0') {
            return None;
        }
        // SAFETY: ifreq is plain data; all zeroes is a valid value (and NUL-terminates the name).
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: SIOCGIFINDEX reads ifr_name and writes ifr_ifindex of the ifreq it is given.
        let r = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFINDEX as _, &mut req) };
        // SAFETY: on success the kernel wrote the index into this member of the union.
        let idx = unsafe { req.ifr_ifru.ifru_ifindex };
        (r == 0 && idx > 0).then_some(idx as u32)
    }
}

/// (index, name) of every interface of the current network namespace, by index.
pub fn interfaces() -> Vec<(u32, String)> {
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below; names are
    // NUL-terminated C strings owned by that array.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut p = list;
        while (*p).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*p).if_name).to_string_lossy().into_owned();
            out.push(((*p).if_index, name));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
        out.sort_unstable();
        out
    }
}

/// Name of interface `index`, if it exists.
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

impl Dataplane {
    /// Loads the object with the default log level; see `load_with_log`. Without `pin_dir` the maps
    /// live as long as this value (tests, benchmarks).
    pub fn load(pin_dir: Option<&Path>, mode: AttachMode) -> Result<(Self, Option<Logger>)> {
        Self::load_with_log(pin_dir, mode, BpfLogLevel::default())
    }

    /// With `pin_dir`, the new maps are pinned in a staging directory first; `commit` swaps the new
    /// program onto any links a previous agent left and moves the maps into place. Until then the
    /// previous agent's program and maps keep forwarding.
    pub fn load_with_log(pin_dir: Option<&Path>, mode: AttachMode, log: BpfLogLevel) -> Result<(Self, Option<Logger>)> {
        Self::load_object(pin_dir, mode, log, false)
    }

    /// Loads the object onto the maps pinned in `pin_dir` as they are (created if there are none),
    /// for an agent whose record is damaged: what the data plane holds may be all there is, so it
    /// is kept, and goal state is written over it. `commit` then leaves every link and entry it
    /// does not know in place (until goal state replaces them or `--reset` removes them).
    pub fn adopt_with_log(pin_dir: &Path, mode: AttachMode, log: BpfLogLevel) -> Result<(Self, Option<Logger>)> {
        let (mut dp, logger) = Self::load_object(Some(pin_dir), mode, log, true)?;
        // DHCP slots in use by entries the record does not know are not handed out again.
        let used: std::collections::HashSet<u32> = (1..maps::MAX_DHCP)
            .filter(|slot| dp.dhcp.get(slot, 0).is_ok_and(|e| e != DhcpEntry::default()))
            .collect();
        dp.dhcp_free.retain(|slot| !used.contains(slot));
        Ok((dp, logger))
    }

    /// Whether this object adopted the pinned maps (see `adopt_with_log`).
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    fn load_object(
        pin_dir: Option<&Path>,
        mode: AttachMode,
        log: BpfLogLevel,
        adopt: bool,
    ) -> Result<(Self, Option<Logger>)> {
        let mut loader = EbpfLoader::new();
        let level = log as u8;
        loader.override_global("AYA_LOG_LEVEL", &level, false);
        let mut paths: Vec<(&str, PathBuf)> = Vec::new();
        if let Some(dir) = pin_dir {
            crate::bpffs::ensure(dir, true)?;
            let staging = dir.join(STAGING);
            std::fs::create_dir_all(&staging).with_context(|| format!("create pin directory {}", staging.display()))?;
            for links in attach::pin_dirs(dir) {
                std::fs::create_dir_all(&links).with_context(|| format!("create {}", links.display()))?;
            }
            for m in PINNED_MAPS {
                if adopt {
                    paths.push((m, dir.join(m)));
                    continue;
                }
                let path = staging.join(m);
                // Left by an agent that died while starting: never in use.
                if path.exists() {
                    std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
                }
                paths.push((m, path));
            }
        }
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(XDP_OBJECT).context("load the XDP object")?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::debug!("no eBPF log map: {e}");
                None
            }
        };
        let prog: &mut Xdp = program(&mut ebpf)?;
        prog.load().context("verifier rejected the port program")?;
        named_program(&mut ebpf, PASS_PROGRAM)?
            .load()
            .context("load the pass-through program")?;
        named_program(&mut ebpf, UPLINK_PROGRAM)?
            .load()
            .context("verifier rejected the uplink program")?;
        for tc in [PORT_TC_PROGRAM, UPLINK_TC_PROGRAM] {
            attach::named::<SchedClassifier>(&mut ebpf, tc)?
                .load()
                .with_context(|| format!("verifier rejected {tc}"))?;
        }
        let ports = Array::try_from(ebpf.take_map(maps::PORTS).ok_or_else(|| anyhow!("no PORTS map"))?)?;
        let endpoints = BpfHashMap::try_from(
            ebpf.take_map(maps::ENDPOINTS)
                .ok_or_else(|| anyhow!("no ENDPOINTS map"))?,
        )?;
        let mut take = |name: &str| ebpf.take_map(name).ok_or_else(|| anyhow!("no {name} map"));
        let uplink = Array::try_from(take(maps::UPLINK)?)?;
        let next_hops = BpfHashMap::try_from(take(maps::NEXTHOPS)?)?;
        let redirect = DevMap::try_from(take(maps::REDIRECT)?)?;
        let dhcp = Array::try_from(take(maps::DHCP)?)?;
        let generation = Array::try_from(take(maps::GENERATION)?)?;
        let mut dp = Dataplane {
            ebpf,
            ports,
            endpoints,
            uplink,
            next_hops,
            redirect,
            dhcp,
            dhcp_free: (1..maps::MAX_DHCP).collect(),
            dhcp_slots: HashMap::new(),
            generation: (generation, 0),
            local: HashMap::new(),
            port_keys: HashMap::new(),
            mode,
            attached: HashMap::new(),
            pin_dir: pin_dir.map(Path::to_path_buf),
            names: Names::new(),
            committed: pin_dir.is_none(),
            adopted: adopt,
            batch: Default::default(),
        };
        dp.changed()?;
        Ok((dp, logger))
    }

    /// Swaps this agent's program onto the links a previous agent left, puts this object's maps in
    /// place of the previous agent's, carrying its counters over, and detaches links of interfaces
    /// that are no longer ports. Call once every port is programmed: the maps are complete, so no
    /// frame meets a port, neighbor or next hop that is not written yet.
    pub fn commit(&mut self) -> Result<()> {
        let Some(dir) = self.pin_dir.clone() else { return Ok(()) };
        self.committed = true;
        let inherited: Vec<(String, &'static str)> = self
            .attached
            .iter()
            .filter(|(_, (_, a))| a.inherited())
            .map(|(iface, (_, a))| (iface.clone(), a.program))
            .collect();
        for (iface, program) in inherited {
            let link = self.links().attach(&iface, program)?;
            if let Some((_, a)) = self.attached.get_mut(&iface) {
                *a = link;
            }
        }
        if self.adopted {
            // The maps are in place already, and links of ports the record lacks stay.
            return Ok(());
        }
        for links in attach::pin_dirs(&dir) {
            for entry in std::fs::read_dir(&links)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !self.attached.keys().any(|iface| attach::pin_name(iface) == name) {
                    tracing::info!(iface = name, "detaching a link no port needs any more");
                    std::fs::remove_file(entry.path())?;
                }
            }
        }
        let old_stats = dir.join(maps::STATS);
        if old_stats.exists() {
            if let Err(e) = self.add_counters_from(&old_stats) {
                tracing::warn!("counters of the previous agent not carried over: {e:#}");
            }
        }
        for m in PINNED_MAPS {
            std::fs::rename(dir.join(STAGING).join(m), dir.join(m))
                .with_context(|| format!("move the {m} pin in place"))?;
        }
        let _ = std::fs::remove_dir(dir.join(STAGING));
        Ok(())
    }

    fn add_counters_from(&mut self, pin: &Path) -> Result<()> {
        let old: PerCpuArray<_, u64> = PerCpuArray::try_from(aya::maps::Map::PerCpuArray(MapData::from_pin(pin)?))?;
        let map = self.ebpf.map_mut(maps::STATS).ok_or_else(|| anyhow!("no STATS map"))?;
        let mut new: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        for i in 0..old.len().min(new.len()) {
            let (o, n) = (old.get(&i, 0)?, new.get(&i, 0)?);
            let sum: Vec<u64> = o.iter().zip(n.iter()).map(|(a, b)| a + b).collect();
            new.set(i, aya::maps::PerCpuValues::try_from(sum)?, 0)?;
        }
        Ok(())
    }

    /// The port program, for BPF_PROG_TEST_RUN.
    pub fn program(&mut self) -> Result<&mut Xdp> {
        program(&mut self.ebpf)
    }

    /// The pass-through program (the benchmarks' baseline).
    pub fn pass_program(&mut self) -> Result<&mut Xdp> {
        named_program(&mut self.ebpf, PASS_PROGRAM)
    }

    /// Any program of the object, loaded on first use (the benchmarks' programs).
    pub fn loaded_program(&mut self, name: &str) -> Result<&mut Xdp> {
        let prog = named_program(&mut self.ebpf, name)?;
        if prog.fd().is_err() {
            prog.load().with_context(|| format!("load {name}"))?;
        }
        Ok(prog)
    }

    /// A TC (skb path) program of the object, for BPF_PROG_TEST_RUN.
    pub fn tc_program(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        attach::named(&mut self.ebpf, name)
    }

    /// The uplink program, for BPF_PROG_TEST_RUN.
    pub fn uplink_program(&mut self) -> Result<&mut Xdp> {
        named_program(&mut self.ebpf, UPLINK_PROGRAM)
    }

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
    fn changed(&mut self) -> Result<()> {
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
    fn with_local_ifindex(&self, key: &EndpointKey, mut value: Endpoint) -> Endpoint {
        if value.kind == endpoint_kind::LOCAL_PORT {
            if let Some(i) = self.local.get(&(key.vni, value.mac)) {
                value.ifindex = *i;
            }
        }
        value
    }

    /// Writes the `UPLINK` entry directly, without attaching (BPF_PROG_TEST_RUN).
    pub fn set_uplink_entry(&mut self, entry: Uplink) -> Result<()> {
        self.uplink.set(0, entry, 0).context("write UPLINK")
    }

    /// Makes `ifindex` a redirect target.
    pub fn add_redirect(&mut self, ifindex: u32) -> Result<()> {
        self.redirect
            .set(ifindex, ifindex, None, 0)
            .with_context(|| format!("add interface {ifindex} to REDIRECT"))
    }

    fn remove_redirect(&mut self, ifindex: u32) {
        // aya's array device map has no remove; a slot already empty is as good as removed.
        let _ = batch::delete(self.redirect.map().fd().as_fd(), &ifindex);
    }

    /// Attaches the uplink program to the underlay interface and configures the overlay endpoint.
    pub fn set_uplink(&mut self, info: &UplinkInfo, vxlan_port: u16) -> Result<()> {
        self.add_redirect(info.ifindex)?;
        self.update_uplink(info, vxlan_port)?;
        if self.attached.get(&info.name).is_some_and(|(i, _)| *i == info.ifindex) {
            return Ok(());
        }
        if let Some((_, old)) = self.attached.remove(&info.name) {
            // Same name, new interface: the old links died with the old one.
            self.links().forget(&info.name, old);
        }
        let link = self.links().attach(&info.name, UPLINK_PROGRAM)?;
        self.attached.insert(info.name.clone(), (info.ifindex, link));
        Ok(())
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

    pub fn remove_endpoint(&mut self, key: &EndpointKey) -> Result<()> {
        absent_is_removed(self.endpoints.remove(key)).context("remove from ENDPOINTS")?;
        self.changed()
    }

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

    /// Summed per-CPU packet counters.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>> {
        let map = self.ebpf.map(maps::STATS).ok_or_else(|| anyhow!("no STATS map"))?;
        sum_counters(&PerCpuArray::try_from(map)?)
    }

    /// Writes the port's entry, attaches the program to `iface`, makes it a redirect target and
    /// points the port's addresses (`ips`, in its VNI) at it. `Ok(false)`: no such interface yet.
    pub fn program_port(
        &mut self,
        iface: &str,
        entry: PortEntry,
        ips: &[[u8; 4]],
        dhcp: Option<&DhcpEntry>,
    ) -> Result<bool> {
        let Some(index) = self.names.index(iface) else {
            return Ok(false);
        };
        let mut entry = entry;
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
        self.add_redirect(index)?;
        let key = (entry.vni, entry.mac);
        if let Some(old) = self.port_keys.insert(iface.to_string(), key).filter(|old| *old != key) {
            self.local.remove(&old);
        }
        self.local.insert(key, index);
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

    fn attach_port(&mut self, iface: &str, index: u32) -> Result<()> {
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
    fn links(&mut self) -> Links<'_> {
        Links {
            ebpf: &mut self.ebpf,
            pin_dir: self.pin_dir.as_deref(),
            mode: self.mode,
            committed: self.committed,
        }
    }

    /// The index of the interface `iface` the programs were attached to, if they are.
    pub fn attached_index(&self, iface: &str) -> Option<u32> {
        self.attached.get(iface).map(|(i, _)| *i)
    }

    /// Attached interfaces that are gone, or whose name now has another index.
    pub fn stale_attachments(&self) -> Vec<String> {
        self.attached
            .iter()
            .filter(|(name, (index, _))| self.names.index(name) != Some(*index))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Detaches from `iface` and clears its `PORTS` entry. Missing interfaces are not an error.
    pub fn detach(&mut self, iface: &str) -> Result<()> {
        let Some(index) = self.attached.get(iface).map(|(i, _)| *i) else {
            return Ok(());
        };
        self.forget(iface);
        self.remove_redirect(index);
        if let Some(key) = self.port_keys.remove(iface) {
            self.local.remove(&key);
        }
        self.set_port_entry(index, PortEntry::default())?;
        if let Some((slot, _)) = self.dhcp_slots.remove(iface) {
            self.dhcp_free.push_back(slot);
        }
        Ok(())
    }

    /// The ring of data-plane events (`Event`); taken once, by the agent's event task.
    pub fn take_events(&mut self) -> Result<aya::maps::RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(maps::EVENTS)
            .ok_or_else(|| anyhow!("no EVENTS map"))?;
        Ok(aya::maps::RingBuf::try_from(map)?)
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

    fn forget(&mut self, iface: &str) {
        if let Some((_, attachment)) = self.attached.remove(iface) {
            self.links().forget(iface, attachment);
        }
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

/// Sums each counter over the CPUs.
pub fn sum_counters<T: std::borrow::Borrow<MapData>>(map: &PerCpuArray<T, u64>) -> Result<Vec<(Counter, u64)>> {
    Counter::ALL
        .iter()
        .map(|c| Ok((*c, map.get(&c.index(), 0)?.iter().sum())))
        .collect()
}

/// Detaches every pinned link and removes the agent's pins from `dir` (`alioth agent --reset`).
pub fn remove_pins(dir: &Path) -> Result<()> {
    let [xdp_links, tc_links] = attach::pin_dirs(dir);
    for sub in [xdp_links, tc_links, dir.join(STAGING)] {
        if sub.exists() {
            for entry in std::fs::read_dir(&sub)? {
                let path = entry?.path();
                // Detached at once: with the XDP link gone first, the TC link would answer
                // alone until the kernel got round to releasing it.
                if let Err(e) = batch::detach_pinned_link(&path) {
                    tracing::warn!(pin = %path.display(), "detach: {e}");
                }
                std::fs::remove_file(&path)?;
            }
            std::fs::remove_dir(&sub)?;
        }
    }
    for m in PINNED_MAPS {
        let p = dir.join(m);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("remove {}", p.display()))?;
        }
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    named_program(ebpf, PORT_PROGRAM)
}

fn named_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    attach::named(ebpf, name)
}

/// Attaches `program` (a lab helper: pass-through or sink) to `iface` (native mode) and pins the
/// link at `pin`, so it stays attached after this process exits; removing the pin (or the
/// interface) detaches it.
pub fn attach_pinned(program: &str, iface: &str, pin: &Path) -> Result<()> {
    let mut ebpf = Ebpf::load(XDP_OBJECT).context("load the XDP object")?;
    let prog = named_program(&mut ebpf, program)?;
    prog.load()?;
    let id = prog
        .attach(iface, XdpMode::Driver)
        .with_context(|| format!("attach {program} to {iface}"))?;
    if let Some(dir) = pin.parent() {
        crate::bpffs::ensure(pin, true)?;
        std::fs::create_dir_all(dir)?;
    }
    pin_link(prog, id, pin).map(drop)
}

/// Takes link `id` from `prog` and pins it at `pin`, so it outlives this process.
fn pin_link(prog: &mut Xdp, id: XdpLinkId, pin: &Path) -> Result<FdLink> {
    let fd = FdLink::try_from(prog.take_link(id)?).context("the kernel attached XDP without a bpf_link")?;
    let pinned = fd
        .pin(pin)
        .with_context(|| format!("pin the link at {}", pin.display()))?;
    Ok(pinned.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ioctl gives what glibc's if_nametoindex gives, for every interface and for names that
    /// are no interface's.
    #[test]
    fn names_agree_with_if_nametoindex() {
        let names = Names::new();
        assert!(names.socket.is_some());
        let all = interfaces();
        assert!(all.iter().any(|(_, n)| n == "lo"));
        for (index, name) in &all {
            assert_eq!(names.index(name), Some(*index), "{name}");
            assert_eq!(ifindex(name), Some(*index), "{name}");
        }
        let long = "x".repeat(libc::IF_NAMESIZE);
        for name in ["", "alioth-none0", "lo\0", &long] {
            assert_eq!(names.index(name), None, "{name:?}");
        }
    }

    /// Failures are reported at their position in the whole write, whatever part they were in.
    #[test]
    fn failed_entries_keep_their_position() {
        let map = crate::batch::tests::hash_map(8, 16, 4);
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

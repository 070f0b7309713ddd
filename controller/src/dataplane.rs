//! The loaded XDP object: its pinned maps and its attachments to port interfaces.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use alioth_common::maps::{self, DhcpEntry, Endpoint, EndpointKey, NextHop, PortCounters, PortEntry, Uplink};
use alioth_common::{firewall, Counter};
use anyhow::{anyhow, Context, Result};
use aya::maps::lpm_trie::LpmTrie;
use aya::maps::xdp::DevMap;
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, ProgramArray};
use aya::programs::{SchedClassifier, Xdp};
use aya::Ebpf;

pub use crate::dataplane::attach::AttachMode;
use crate::dataplane::object::{
    DHCP_PROGRAM, DHCP_TC_PROGRAM, NAT_TC_PROGRAM, PORT_PROGRAM, PORT_TC_PROGRAM, UPLINK_PROGRAM, UPLINK_TC_PROGRAM,
};
use crate::goalstate::model::Mac;
use crate::net::interfaces::Names;
use attach::Attachment;

pub mod attach;
pub mod batch;
pub mod bpffs;
pub mod clock;
mod endpoints;
pub mod frames;
#[cfg(feature = "lab")]
mod lab;
pub mod monitor;
mod nat;
pub mod object;
mod pins;
mod policies;
mod port_stats;
mod ports;
pub mod probe;
mod record;
mod routes;
pub mod test_run;

#[cfg(feature = "lab")]
pub use lab::{attach_forward, attach_pinned};
pub use pins::{remove_pins, remove_staging};
pub use policies::FlowStats;
pub use port_stats::sum_port_counters;
pub use record::recorded_sequence;

/// Names of the maps the agent pins (and `status`/`stats` read).
pub const PINNED_MAPS: [&str; 24] = [
    maps::PORTS,
    maps::ENDPOINTS,
    maps::STATS,
    maps::PORT_STATS,
    maps::UPLINK,
    maps::NEXTHOPS,
    maps::REDIRECT,
    maps::DHCP,
    maps::RECORD,
    maps::TAILS,
    maps::TC_TAILS,
    alioth_common::monitor::MONITOR,
    alioth_common::monitor::MONITOR_EVENTS,
    alioth_common::firewall::SG_REMOTES,
    alioth_common::firewall::SG_PORTS,
    alioth_common::firewall::SG_FLOWS,
    alioth_common::firewall::SG_COUNTS,
    maps::ALLOWED_SOURCES,
    maps::ROUTES,
    maps::PORT_MACS,
    alioth_common::nat::ELASTIC_IPS,
    alioth_common::nat::ELASTIC_SOURCES,
    alioth_common::snat::SNAT_FLOWS,
    alioth_common::snat::SNAT_BACK,
];

/// A port's `ALLOWED_SOURCES` entries: (prefix length, data) -> 1.
type SourceKeys = HashMap<(u32, [u8; 16]), u8>;

/// Whether `ALLOWED_SOURCES` lets the port with `mac` in `vni` send from `ip` (the lookup the
/// programs make).
pub fn allowed_source(map: &LpmTrie<MapData, [u8; 16], u8>, vni: u32, mac: &Mac, ip: [u8; 4]) -> bool {
    let key = aya::maps::lpm_trie::Key::new(
        maps::ALLOWED_SOURCE_FIXED_BITS + 32,
        maps::allowed_source_key(vni, mac, ip),
    );
    map.get(&key, 0).is_ok()
}

/// The route `ROUTES` gives the subnet of `vni` with gateway `gateway` to `dst` (the lookup the
/// programs make).
pub fn route(
    map: &LpmTrie<MapData, [u8; 12], maps::Route>,
    vni: u32,
    gateway: [u8; 4],
    dst: [u8; 4],
) -> Option<maps::Route> {
    let key = aya::maps::lpm_trie::Key::new(maps::ROUTE_FIXED_BITS + 32, maps::route_key(vni, gateway, dst));
    map.get(&key, 0).ok()
}

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

impl BpfLogLevel {
    /// The level as the object's global holds it, for a loader that borrows it.
    fn as_static(self) -> &'static u8 {
        const LEVELS: [u8; 6] = [0, 1, 2, 3, 4, 5];
        &LEVELS[self as usize]
    }
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
    /// `IFACE_FLAGS` (this object's own, not pinned).
    iface_flags: Array<MapData, u8>,
    dhcp: Array<MapData, DhcpEntry>,
    /// Free `DHCP` slots, the least recently freed first. A changed entry is written to a fresh
    /// slot before the port points at it, and a freed slot is reused last, so a program still
    /// building a reply from a slot never has it rewritten under it.
    dhcp_free: VecDeque<u32>,
    /// Interface -> its `DHCP` slot and what was written there.
    dhcp_slots: HashMap<String, (u32, DhcpEntry)>,
    /// `PORT_STATS`, its slots' owners (by interface) and its free slots.
    port_stats: PerCpuArray<MapData, PortCounters>,
    stats_slots: HashMap<String, u16>,
    stats_free: std::collections::BTreeSet<u16>,
    /// `GENERATION`, and the value last published in it.
    generation: (Array<MapData, u64>, u64),
    /// (VNI, MAC) of each attached port -> its ifindex: filled into the port's `ENDPOINTS` entries
    /// (the planner renders them without, as it knows nothing of interfaces).
    local: HashMap<(u32, Mac), u32>,
    /// `PORT_MACS`: `local` for the programs.
    port_macs: BpfHashMap<MapData, maps::PortMacKey, u32>,
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
    /// `RECORD`, and the record sequence it holds (none while the maps change).
    record: Array<MapData, u64>,
    recorded: Option<u64>,
    /// Whether this object wrote its fingerprint into `RECORD`.
    object_marked: bool,
    /// Whether the maps taken over hold what the record does (`adopt_recorded`).
    matches_record: bool,
    /// The identifier of this agent's echo probes (`probe`).
    probe_marker: u16,
    /// Security-group policies of the filtered ports.
    policies: policies::Policies,
    /// `ALLOWED_SOURCES`, and what each interface's port has there.
    allowed_sources: LpmTrie<MapData, [u8; 16], u8>,
    allowed: HashMap<String, SourceKeys>,
    /// `ROUTES` and what it holds.
    routes: routes::Routes,
    /// `ELASTIC_IPS` and `ELASTIC_SOURCES`, and what they hold.
    elastic_ips: nat::ElasticIps,
    /// Keys and values of the last batch write, kept for the next: a large message then writes
    /// from memory already in place instead of fresh pages.
    batch: (Vec<EndpointKey>, Vec<Endpoint>),
}

/// Where the maps of an object to load are pinned: in the staging directory (`commit` moves them
/// in place), or, to adopt the pinned data plane, where they are.
fn pin_paths(dir: &Path, adopt: bool) -> Result<Vec<(&'static str, PathBuf)>> {
    crate::dataplane::bpffs::ensure(dir, true)?;
    let staging = dir.join(STAGING);
    if !adopt {
        std::fs::create_dir_all(&staging).with_context(|| format!("create pin directory {}", staging.display()))?;
    }
    for links in attach::pin_dirs(dir) {
        std::fs::create_dir_all(&links).with_context(|| format!("create {}", links.display()))?;
    }
    let mut paths = Vec::new();
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
    Ok(paths)
}

/// Loads the object (its maps pinned under `pin_dir`, see `pin_paths`) and its programs into the
/// kernel, each through the verifier.
fn load_programs(
    object: &[u8],
    pin_dir: Option<&Path>,
    log: BpfLogLevel,
    adopt: bool,
) -> Result<(Ebpf, Option<Logger>)> {
    let mut loader = object::loader(log.as_static())?;
    let paths = match pin_dir {
        Some(dir) => pin_paths(dir, adopt)?,
        None => Vec::new(),
    };
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(object).context("load the XDP object")?;
    let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::debug!("no eBPF log map: {e}");
            None
        }
    };
    program(&mut ebpf)?
        .load()
        .context("verifier rejected the port program")?;
    named_program(&mut ebpf, UPLINK_PROGRAM)?
        .load()
        .context("verifier rejected the uplink program")?;
    for tc in [PORT_TC_PROGRAM, UPLINK_TC_PROGRAM] {
        attach::named::<SchedClassifier>(&mut ebpf, tc)?
            .load()
            .with_context(|| format!("verifier rejected {tc}"))?;
    }
    fill_tails(&mut ebpf)?;
    Ok((ebpf, logger))
}

/// Loads the programs the port program hands frames to and puts them in `TAILS`. Maps taken over
/// get this object's programs there at once: the object is the same (or the maps are kept as
/// they are, `adopt_with_log`), so the programs attached meanwhile call a twin of their own tail.
pub fn fill_tails(ebpf: &mut Ebpf) -> Result<()> {
    let dhcp = named_program(ebpf, DHCP_PROGRAM)?;
    dhcp.load().context("verifier rejected the DHCP server program")?;
    let fd = dhcp.fd()?.try_clone()?;
    let map = ebpf.map_mut(maps::TAILS).ok_or_else(|| anyhow!("no TAILS map"))?;
    ProgramArray::try_from(map)?
        .set(maps::TAIL_DHCP, &fd, 0)
        .context("put the DHCP server in TAILS")?;
    let dhcp = attach::named::<SchedClassifier>(ebpf, DHCP_TC_PROGRAM)?;
    dhcp.load()
        .context("verifier rejected the DHCP server program of the skb path")?;
    let dhcp_fd = dhcp.fd()?.try_clone()?;
    let nat = attach::named::<SchedClassifier>(ebpf, NAT_TC_PROGRAM)?;
    nat.load().context("verifier rejected the NAT program")?;
    let nat_fd = nat.fd()?.try_clone()?;
    let map = ebpf.map_mut(maps::TC_TAILS).ok_or_else(|| anyhow!("no TC_TAILS map"))?;
    let mut tails = ProgramArray::try_from(map)?;
    tails
        .set(maps::TAIL_DHCP, &dhcp_fd, 0)
        .context("put the DHCP server in TC_TAILS")?;
    tails
        .set(alioth_common::nat::TAIL_NAT, &nat_fd, 0)
        .context("put the NAT program in TC_TAILS")
}

/// Where a loaded object's maps are pinned until `commit` puts them in place (bpffs names may not
/// contain dots).
const STAGING: &str = "staging";

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
        Self::load_object(object::xdp_object()?, pin_dir, mode, log, false)
    }

    /// The lab object, unpinned, for the benchmarks: the agent's programs on the same maps as the
    /// benchmarks' (`object::BENCH_PORT_PROGRAM`...), which `loaded_program` loads.
    #[cfg(feature = "lab")]
    pub fn load_lab(mode: AttachMode) -> Result<(Self, Option<Logger>)> {
        Self::load_object(object::lab_object()?, None, mode, BpfLogLevel::default(), false)
    }

    /// Loads the object onto the maps pinned in `pin_dir` as they are (created if there are none),
    /// for an agent whose record is damaged: what the data plane holds may be all there is, so it
    /// is kept, and goal state is written over it. `commit` then leaves every link and entry it
    /// does not know in place (until goal state replaces them or `--reset` removes them).
    pub fn adopt_with_log(pin_dir: &Path, mode: AttachMode, log: BpfLogLevel) -> Result<(Self, Option<Logger>)> {
        Self::load_object(object::xdp_object()?, Some(pin_dir), mode, log, true)
    }

    /// For maps kept without holding the record (a damaged one, or one that changed as it was
    /// opened): DHCP slots written by entries the record may not know are not handed out again.
    pub fn keep_written_slots(&mut self) {
        let used: std::collections::HashSet<u32> = (1..maps::MAX_DHCP)
            .filter(|slot| self.dhcp.get(slot, 0).is_ok_and(|e| e != DhcpEntry::default()))
            .collect();
        self.dhcp_free.retain(|slot| !used.contains(slot));
    }

    /// Loads the object onto the pinned maps, which hold what the agent's record does (their
    /// `RECORD` has the record's sequence, for this object: see `recorded_sequence`). Nothing is
    /// written: the restore reattaches ports (`reclaim_port`) and the previous agent's links
    /// swap to this object's programs at `commit`.
    pub fn adopt_recorded(pin_dir: &Path, mode: AttachMode, log: BpfLogLevel) -> Result<(Self, Option<Logger>)> {
        let (mut dp, logger) = Self::load_object(object::xdp_object()?, Some(pin_dir), mode, log, true)?;
        dp.matches_record = true;
        Ok((dp, logger))
    }

    /// Whether this object adopted the pinned maps (see `adopt_with_log`).
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    fn load_object(
        object: &[u8],
        pin_dir: Option<&Path>,
        mode: AttachMode,
        log: BpfLogLevel,
        adopt: bool,
    ) -> Result<(Self, Option<Logger>)> {
        let (mut ebpf, logger) = load_programs(object, pin_dir, log, adopt)?;
        let ports = Array::try_from(ebpf.take_map(maps::PORTS).ok_or_else(|| anyhow!("no PORTS map"))?)?;
        let endpoints = BpfHashMap::try_from(
            ebpf.take_map(maps::ENDPOINTS)
                .ok_or_else(|| anyhow!("no ENDPOINTS map"))?,
        )?;
        let mut take = |name: &str| ebpf.take_map(name).ok_or_else(|| anyhow!("no {name} map"));
        let uplink = Array::try_from(take(maps::UPLINK)?)?;
        let next_hops = BpfHashMap::try_from(take(maps::NEXTHOPS)?)?;
        let redirect = DevMap::try_from(take(maps::REDIRECT)?)?;
        let iface_flags = Array::try_from(take(maps::IFACE_FLAGS)?)?;
        let dhcp = Array::try_from(take(maps::DHCP)?)?;
        let port_stats = PerCpuArray::try_from(take(maps::PORT_STATS)?)?;
        let generation = Array::try_from(take(maps::GENERATION)?)?;
        let record: Array<MapData, u64> = Array::try_from(take(maps::RECORD)?)?;
        let policies = policies::Policies::new(
            LpmTrie::try_from(take(firewall::SG_REMOTES)?)?,
            LpmTrie::try_from(take(firewall::SG_PORTS)?)?,
            BpfHashMap::try_from(take(firewall::SG_FLOWS)?)?,
            PerCpuArray::try_from(take(firewall::SG_COUNTS)?)?,
        );
        let allowed_sources = LpmTrie::try_from(take(maps::ALLOWED_SOURCES)?)?;
        let routes = routes::Routes::new(LpmTrie::try_from(take(maps::ROUTES)?)?);
        let port_macs = BpfHashMap::try_from(take(maps::PORT_MACS)?)?;
        let elastic_ips = nat::ElasticIps::new(
            BpfHashMap::try_from(take(alioth_common::nat::ELASTIC_IPS)?)?,
            BpfHashMap::try_from(take(alioth_common::nat::ELASTIC_SOURCES)?)?,
        );
        let recorded = record.get(&maps::RECORD_SEQUENCE, 0).ok().filter(|s| *s != 0);
        let mut dp = Dataplane {
            ebpf,
            ports,
            endpoints,
            uplink,
            next_hops,
            redirect,
            iface_flags,
            dhcp,
            dhcp_free: (1..maps::MAX_DHCP).collect(),
            dhcp_slots: HashMap::new(),
            port_stats,
            stats_slots: HashMap::new(),
            stats_free: port_stats::all_slots(),
            generation: (generation, 0),
            local: HashMap::new(),
            port_macs,
            port_keys: HashMap::new(),
            mode,
            attached: HashMap::new(),
            pin_dir: pin_dir.map(Path::to_path_buf),
            names: Names::new(),
            committed: pin_dir.is_none(),
            adopted: adopt,
            record,
            recorded,
            object_marked: false,
            matches_record: false,
            batch: Default::default(),
            probe_marker: 0,
            policies,
            allowed_sources,
            allowed: HashMap::new(),
            routes,
            elastic_ips,
        };
        dp.pick_probe_marker();
        dp.changed()?;
        if adopt {
            match dp.policies.bound_expiries() {
                Ok(0) => {}
                Ok(n) => tracing::info!("{n} tracked flows of an older agent set to expire within their timeout"),
                Err(e) => tracing::warn!("tracked flows' expiries not checked: {e:#}"),
            }
        }
        Ok((dp, logger))
    }

    /// Swaps this agent's program onto the links a previous agent left, puts this object's maps in
    /// place of the previous agent's, carrying its counters over, and detaches links of interfaces
    /// that are no longer ports. Call once every port is programmed: the maps are complete, so no
    /// frame meets a port, neighbor or next hop that is not written yet.
    pub fn commit(&mut self) -> Result<()> {
        let Some(dir) = self.pin_dir.clone() else { return Ok(()) };
        self.committed = true;
        // Before the links run this object: the flows the previous agent's programs tracked are
        // tracked here too, or their next frames would be strays.
        if !self.adopted && dir.join(firewall::SG_FLOWS).exists() {
            match self.carry_flows_from(&dir) {
                Ok(n) => tracing::info!("{n} tracked flows carried over from the previous agent's maps"),
                Err(e) => tracing::warn!("tracked flows of the previous agent not carried over: {e:#}"),
            }
        }
        let inherited: Vec<(String, &'static str)> = self
            .attached
            .iter()
            .filter(|(_, (_, a))| a.inherited())
            .map(|(iface, (_, a))| (iface.clone(), a.program))
            .collect();
        for (iface, program) in inherited {
            let link = self.links().attach(&iface, program)?;
            if let Some((index, a)) = self.attached.get_mut(&iface) {
                *a = link;
                let index = *index;
                self.set_redirect(&iface, index)?;
                // Its hook may be another now (an older agent's XDP link on a veth goes).
                self.set_iface_flags(&iface, index, program == PORT_PROGRAM)?;
            }
        }
        if self.adopted && !self.matches_record {
            // The maps are in place already, and links of ports a damaged record lacks stay.
            return Ok(());
        }
        self.drop_unneeded_links(&dir)?;
        if self.adopted {
            return Ok(());
        }
        self.move_in_place(&dir)
    }

    /// Detaches the links of interfaces that are no longer ports.
    fn drop_unneeded_links(&self, dir: &Path) -> Result<()> {
        for links in attach::pin_dirs(dir) {
            for entry in std::fs::read_dir(&links)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !self.attached.keys().any(|iface| attach::pin_name(iface) == name) {
                    tracing::info!(iface = name, "detaching a link no port needs any more");
                    std::fs::remove_file(entry.path())?;
                }
            }
        }
        Ok(())
    }

    /// Completes `commit` for maps filled fresh: the previous agent's counters carried over, the
    /// maps moved in place.
    fn move_in_place(&mut self, dir: &Path) -> Result<()> {
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

    /// Copies the previous agent's tracked flows (pinned in `dir`) of ports attached here into
    /// this object's table, each into the zone its port has now.
    fn carry_flows_from(&mut self, dir: &Path) -> Result<usize> {
        use alioth_common::conntrack::FlowKey;
        use alioth_common::firewall::CtValue;
        let old_ports: Array<_, PortEntry> =
            Array::try_from(aya::maps::Map::Array(MapData::from_pin(dir.join(maps::PORTS))?))?;
        let old_flows = MapData::from_pin(dir.join(firewall::SG_FLOWS))?;
        let zones: HashMap<u32, u32> = self
            .attached
            .values()
            .filter_map(|(index, _)| {
                let (old, new) = (old_ports.get(index, 0).ok()?, self.ports.get(index, 0).ok()?);
                (old.zone != 0 && new.zone != 0).then_some((old.zone, new.zone))
            })
            .collect();
        if zones.is_empty() {
            return Ok(0);
        }
        let mut carried = 0;
        let old_flows: Vec<(FlowKey, CtValue)> = batch::read_all(std::os::fd::AsFd::as_fd(old_flows.fd()))?;
        let now = policies::now()?;
        for (key, value) in old_flows {
            if let Some(zone) = zones.get(&key.zone) {
                self.policies.carry_flow(&FlowKey { zone: *zone, ..key }, &value, now)?;
                carried += 1;
            }
        }
        Ok(carried)
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

    /// Makes `ROUTES` hold `wanted` (`goalstate::routes::render`).
    pub fn set_routes(&mut self, wanted: crate::goalstate::routes::Routes) -> Result<()> {
        self.routes.write(wanted)
    }

    /// Entries of `ROUTES`.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// The port program, for BPF_PROG_TEST_RUN.
    pub fn program(&mut self) -> Result<&mut Xdp> {
        program(&mut self.ebpf)
    }

    /// The pass-through program (the benchmarks' baseline), from the lab object (`load_lab`).
    #[cfg(feature = "lab")]
    pub fn pass_program(&mut self) -> Result<&mut Xdp> {
        self.loaded_program(object::PASS_PROGRAM)
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

    /// Summed per-CPU packet counters.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>> {
        let map = self.ebpf.map(maps::STATS).ok_or_else(|| anyhow!("no STATS map"))?;
        sum_counters(&PerCpuArray::try_from(map)?)
    }

    /// The ring of data-plane events (`Event`); taken once, by the agent's event task.
    pub fn take_events(&mut self) -> Result<aya::maps::RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(maps::EVENTS)
            .ok_or_else(|| anyhow!("no EVENTS map"))?;
        Ok(aya::maps::RingBuf::try_from(map)?)
    }
}

/// Sums each counter over the CPUs.
pub fn sum_counters<T: std::borrow::Borrow<MapData>>(map: &PerCpuArray<T, u64>) -> Result<Vec<(Counter, u64)>> {
    Counter::ALL
        .iter()
        .map(|c| Ok((*c, map.get(&c.index(), 0)?.iter().sum())))
        .collect()
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    named_program(ebpf, PORT_PROGRAM)
}

fn named_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    attach::named(ebpf, name)
}

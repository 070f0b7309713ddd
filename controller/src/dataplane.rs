//! The loaded XDP object: its pinned maps and its attachments to port interfaces.

use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use alioth_common::maps::{self, Endpoint, EndpointKey, PortEntry};
use alioth_common::Counter;
use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::{links::FdLink, xdp::XdpLinkId, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use crate::object::{PASS_PROGRAM, PORT_PROGRAM, XDP_OBJECT};

/// Names of the maps the agent pins (and `status`/`stats` read).
pub const PINNED_MAPS: [&str; 3] = [maps::PORTS, maps::ENDPOINTS, maps::STATS];

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
    mode: AttachMode,
    /// Interface name -> (ifindex, link).
    attached: HashMap<String, (u32, XdpLinkId)>,
    pin_dir: Option<PathBuf>,
}

/// Interface index of `name`, or `None` if there is no such interface.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
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
    /// Loads the object. With `pin_dir`, its maps are pinned there (stale pins are replaced);
    /// without, they live as long as this value (tests, benchmarks).
    pub fn load(pin_dir: Option<&Path>, mode: AttachMode) -> Result<(Self, Option<Logger>)> {
        Self::load_with_log(pin_dir, mode, BpfLogLevel::default())
    }

    pub fn load_with_log(pin_dir: Option<&Path>, mode: AttachMode, log: BpfLogLevel) -> Result<(Self, Option<Logger>)> {
        let mut loader = EbpfLoader::new();
        let level = log as u8;
        loader.override_global("AYA_LOG_LEVEL", &level, false);
        let paths: Vec<(&str, PathBuf)> = match pin_dir {
            Some(dir) => {
                ensure_bpffs(dir)?;
                std::fs::create_dir_all(dir).with_context(|| format!("create pin directory {}", dir.display()))?;
                PINNED_MAPS.iter().map(|m| (*m, dir.join(m))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &paths {
            // A fresh agent starts from empty maps; state is re-pushed by the controller.
            if path.exists() {
                std::fs::remove_file(path).with_context(|| format!("remove stale pin {}", path.display()))?;
            }
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
        let ports = Array::try_from(ebpf.take_map(maps::PORTS).ok_or_else(|| anyhow!("no PORTS map"))?)?;
        let endpoints = BpfHashMap::try_from(
            ebpf.take_map(maps::ENDPOINTS)
                .ok_or_else(|| anyhow!("no ENDPOINTS map"))?,
        )?;
        let dp = Dataplane {
            ebpf,
            ports,
            endpoints,
            mode,
            attached: HashMap::new(),
            pin_dir: pin_dir.map(Path::to_path_buf),
        };
        Ok((dp, logger))
    }

    /// The port program, for BPF_PROG_TEST_RUN.
    pub fn program(&mut self) -> Result<&mut Xdp> {
        program(&mut self.ebpf)
    }

    /// The pass-through program (the benchmarks' baseline).
    pub fn pass_program(&mut self) -> Result<&mut Xdp> {
        named_program(&mut self.ebpf, PASS_PROGRAM)
    }

    pub fn ebpf(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub fn upsert_endpoint(&mut self, key: EndpointKey, value: Endpoint) -> Result<()> {
        self.endpoints.insert(key, value, 0).context("write ENDPOINTS")
    }

    pub fn remove_endpoint(&mut self, key: &EndpointKey) -> Result<()> {
        match self.endpoints.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).context("remove from ENDPOINTS"),
        }
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

    /// Writes the port's entry and attaches the program to `iface`. `Ok(false)`: no such interface yet.
    pub fn program_port(&mut self, iface: &str, entry: PortEntry) -> Result<bool> {
        let Some(index) = ifindex(iface) else {
            return Ok(false);
        };
        // The entry goes first so that the first packet the program sees finds it.
        self.set_port_entry(index, entry)?;
        match self.attached.get(iface) {
            Some((i, _)) if *i == index => return Ok(true),
            // Same name, new interface (the old one was deleted): the old link died with it.
            Some(_) => {
                self.forget(iface);
            }
            None => {}
        }
        let link = self.attach(iface)?;
        self.attached.insert(iface.to_string(), (index, link));
        Ok(true)
    }

    fn attach(&mut self, iface: &str) -> Result<XdpLinkId> {
        let mode = self.mode;
        let prog = self.program()?;
        let result = match mode {
            AttachMode::Driver => prog.attach(iface, XdpMode::Driver),
            AttachMode::Skb => prog.attach(iface, XdpMode::Skb),
            AttachMode::Auto => prog.attach(iface, XdpMode::Driver).or_else(|e| {
                tracing::info!(iface, "native XDP refused ({e}); using generic XDP");
                prog.attach(iface, XdpMode::Skb)
            }),
        };
        result.with_context(|| format!("attach the port program to {iface}"))
    }

    /// Detaches from `iface` and removes its `PORTS` entry. Missing interfaces are not an error.
    pub fn detach(&mut self, iface: &str) -> Result<()> {
        let Some(index) = self.attached.get(iface).map(|(i, _)| *i) else {
            return Ok(());
        };
        self.forget(iface);
        self.set_port_entry(index, PortEntry::default())
    }

    fn forget(&mut self, iface: &str) {
        if let Some((_, link)) = self.attached.remove(iface) {
            if let Ok(prog) = self.program() {
                // The interface may be gone already, taking the link with it.
                let _ = prog.detach(link);
            }
        }
    }

    pub fn attached(&self) -> impl Iterator<Item = (&str, u32)> {
        self.attached.iter().map(|(n, (i, _))| (n.as_str(), *i))
    }

    /// Detaches everything and removes the pins.
    pub fn shutdown(mut self) -> Result<()> {
        let ifaces: Vec<String> = self.attached.keys().cloned().collect();
        for iface in ifaces {
            self.detach(&iface)?;
        }
        if let Some(dir) = &self.pin_dir {
            remove_pins(dir)?;
        }
        Ok(())
    }
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct; c is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Mounts bpffs at /sys/fs/bpf when the pin directory lives there and nothing is mounted yet.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<()> {
    let root = Path::new("/sys/fs/bpf");
    if !pin_dir.starts_with(root) || is_bpffs(root) {
        return Ok(());
    }
    tracing::info!("mounting bpffs at /sys/fs/bpf");
    let (src, target, fstype) = (c"bpf", c"/sys/fs/bpf", c"bpf");
    // SAFETY: all pointers are valid NUL-terminated strings.
    let rc = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        bail!("mount bpffs at /sys/fs/bpf: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sums each counter over the CPUs.
pub fn sum_counters<T: std::borrow::Borrow<MapData>>(map: &PerCpuArray<T, u64>) -> Result<Vec<(Counter, u64)>> {
    Counter::ALL
        .iter()
        .map(|c| Ok((*c, map.get(&c.index(), 0)?.iter().sum())))
        .collect()
}

/// Removes the agent's pins from `dir` (and `dir` itself when it is left empty).
pub fn remove_pins(dir: &Path) -> Result<()> {
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
    let Some(p) = ebpf.program_mut(name) else {
        bail!("the object has no program {name}");
    };
    Ok(p.try_into()?)
}

/// Attaches the pass-through program to `iface` (native mode) and pins the link at `pin`, so it
/// stays attached after this process exits; removing the pin (or the interface) detaches it.
pub fn attach_pass_pinned(iface: &str, pin: &Path) -> Result<()> {
    let mut ebpf = Ebpf::load(XDP_OBJECT).context("load the XDP object")?;
    let prog = named_program(&mut ebpf, PASS_PROGRAM)?;
    prog.load()?;
    let id = prog
        .attach(iface, XdpMode::Driver)
        .with_context(|| format!("attach {PASS_PROGRAM} to {iface}"))?;
    let link: FdLink = prog.take_link(id)?.try_into().context("XDP link is not a bpf_link")?;
    if let Some(dir) = pin.parent() {
        ensure_bpffs(pin)?;
        std::fs::create_dir_all(dir)?;
    }
    link.pin(pin)
        .with_context(|| format!("pin the link at {}", pin.display()))?;
    Ok(())
}

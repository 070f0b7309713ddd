//! `monitor`: the data plane's drop events (and, sampled, forwarded frames) as they happen, read
//! from the pinned ring the programs write while a monitor listens (`alioth_common::monitor`).
//! One monitor at a time: the ring has one reader.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use alioth_common::monitor::{self, Config, MonitorEvent, Watch, DROPS, FORWARDED, KIND_DROP};
use alioth_common::Counter;
use anyhow::{bail, Context, Result};
use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use serde_json::json;

use super::inspect::{open_map, port_entry, port_owners, InspectArgs};
use crate::dataplane::monitor::{config, set_config};
use crate::goalstate::model::format_mac;
use crate::net::interfaces::ifname;

#[derive(Clone, Debug, clap::Args)]
pub struct MonitorArgs {
    #[command(flatten)]
    pub inspect: InspectArgs,
    /// Only frames from or to this port (its id in goal state).
    #[arg(long)]
    pub port: Option<String>,
    /// Drop events (the default unless --sample is given alone).
    #[arg(long)]
    pub drops: bool,
    /// Forwarded frames too: one in N, per CPU.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub sample: Option<u32>,
    /// Events per second and CPU the kernel lets through; the rest are counted ("held back").
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub seconds: Option<f64>,
}

/// The events of a port: frames it sent (on its interface) and frames to its MAC.
struct Filter {
    ifindex: u32,
    mac: [u8; 6],
}

/// The pinned switch and ring this monitor listens on, and which ring that is (its map id).
struct Tap {
    switch: PerCpuArray<MapData, Watch>,
    ring: RingBuf<MapData>,
    id: u32,
}

impl Tap {
    /// Opens the agent's pins and switches the events on as `wanted` says (refused while another
    /// monitor listens).
    fn open(pin_dir: &Path, wanted: Config) -> Result<Tap> {
        let mut switch: PerCpuArray<MapData, Watch> =
            PerCpuArray::try_from(Map::PerCpuArray(open_map(pin_dir, monitor::MONITOR)?))?;
        let ring_map = open_map(pin_dir, monitor::MONITOR_EVENTS)?;
        let id = ring_map.info()?.id();
        let mut ring = RingBuf::try_from(Map::RingBuf(ring_map))?;
        let current = config(&switch)?;
        let owner = current.owner;
        if owner != 0 && owner != wanted.owner && Path::new(&format!("/proc/{owner}")).exists() {
            bail!("another alioth monitor (pid {owner}) is listening: one at a time");
        }
        // Whatever an earlier monitor left unread.
        while ring.next().is_some() {}
        set_config(&mut switch, wanted).context("switch the events on")?;
        Ok(Tap { switch, ring, id })
    }

    /// Switches the events off, unless another monitor took over meanwhile.
    fn close(mut self, me: u32) -> Result<()> {
        if config(&self.switch).is_ok_and(|c| c.owner == me) {
            set_config(&mut self.switch, Config::default()).context("switch the events off")?;
        }
        Ok(())
    }
}

/// The id of the ring pinned now (another one once an agent restart filled new maps).
fn pinned_ring(pin_dir: &Path) -> Option<u32> {
    aya::maps::MapInfo::from_pin(pin_dir.join(monitor::MONITOR_EVENTS))
        .ok()
        .map(|i| i.id())
}

pub async fn monitor(args: MonitorArgs) -> Result<()> {
    let filter = args
        .port
        .as_deref()
        .map(|id| port_filter(&args.inspect, id))
        .transpose()?;
    let flags =
        if args.drops || args.sample.is_none() { DROPS } else { 0 } | if args.sample.is_some() { FORWARDED } else { 0 };
    let wanted = Config {
        flags,
        sample_every: args.sample.unwrap_or(1),
        per_second: args.rate,
        owner: std::process::id(),
    };
    let mut tap = Tap::open(&args.inspect.pin_dir, wanted)?;
    eprintln!("listening (Ctrl-C to stop)");
    let result = listen(&args, &mut tap, wanted, filter.as_ref()).await;
    tap.close(wanted.owner)?;
    result
}

async fn listen(args: &MonitorArgs, tap: &mut Tap, wanted: Config, filter: Option<&Filter>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    let until = args.seconds.map(|s| Instant::now() + Duration::from_secs_f64(s));
    let mut names = Names::new(&args.inspect.state_dir);
    let (mut seen, mut checked) = (0u64, Instant::now());
    loop {
        while let Some(item) = tap.ring.next() {
            if item.len() < size_of::<MonitorEvent>() {
                continue;
            }
            // SAFETY: the ring holds whole `MonitorEvent`s (checked length; any bit pattern is one).
            let event: MonitorEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            if filter.is_some_and(|f| event.ifindex != f.ifindex && event.dst_mac != f.mac) {
                continue;
            }
            print(&event, &mut names, args.inspect.json);
            seen += 1;
            if args.count.is_some_and(|n| seen >= n) {
                return Ok(());
            }
        }
        if until.is_some_and(|t| Instant::now() >= t) {
            return Ok(());
        }
        // An agent restart that filled new maps pinned another ring: follow it.
        if checked.elapsed() >= FOLLOW_EVERY {
            checked = Instant::now();
            if pinned_ring(&args.inspect.pin_dir).is_some_and(|id| id != tap.id) {
                eprintln!("the agent's maps were replaced: listening on the new ones");
                *tap = Tap::open(&args.inspect.pin_dir, wanted)?;
            }
        }
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

/// How often the monitor looks for a new ring.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

fn port_filter(args: &InspectArgs, id: &str) -> Result<Filter> {
    let owners = port_owners(&args.state_dir);
    let iface = owners
        .iter()
        .find(|(_, (port, _))| port == id)
        .map(|(iface, _)| iface.clone())
        .with_context(|| format!("no port {id} in the agent's record"))?;
    let (ifindex, entry) = port_entry(&args.pin_dir, id, &iface)?;
    Ok(Filter {
        ifindex,
        mac: entry.mac,
    })
}

/// Interface indexes to names and ports, looked up once each.
struct Names {
    owners: std::collections::HashMap<String, (String, String)>,
    known: std::collections::HashMap<u32, (String, String)>,
}

impl Names {
    fn new(state_dir: &Path) -> Names {
        Names {
            owners: port_owners(state_dir),
            known: Default::default(),
        }
    }

    /// (interface, port id) of `ifindex`; empty when unknown.
    fn of(&mut self, ifindex: u32) -> &(String, String) {
        self.known.entry(ifindex).or_insert_with(|| {
            let iface = ifname(ifindex).unwrap_or_default();
            let port = self.owners.get(&iface).map(|(p, _)| p.clone()).unwrap_or_default();
            (iface, port)
        })
    }
}

fn print(e: &MonitorEvent, names: &mut Names, as_json: bool) {
    let counter = Counter::ALL.get(e.counter as usize).copied();
    let name = counter.map_or("unknown", Counter::name);
    let kind = if e.kind == KIND_DROP { "drop" } else { "forwarded" };
    let (iface, port) = names.of(e.ifindex).clone();
    let proto = match (e.ether_type, e.proto) {
        (0x0806, _) => "ARP".to_string(),
        (0x0800, 1) => "ICMP".to_string(),
        (0x0800, 6) => "TCP".to_string(),
        (0x0800, 17) => "UDP".to_string(),
        (0x0800, p) => format!("IP proto {p}"),
        (t, _) => format!("ethertype {t:#06x}"),
    };
    let (src, dst) = (Ipv4Addr::from(e.src_ip), Ipv4Addr::from(e.dst_ip));
    if as_json {
        let v = json!({
            "kind": kind,
            "reason": name.strip_prefix("drop_").unwrap_or(name),
            "counter": name,
            "ifindex": e.ifindex,
            "iface": iface,
            "port": port,
            "src_mac": format_mac(&e.src_mac),
            "dst_mac": format_mac(&e.dst_mac),
            "ether_type": e.ether_type,
            "protocol": proto,
            "src_ip": src.to_string(),
            "dst_ip": dst.to_string(),
            "src_port": e.src_port,
            "dst_port": e.dst_port,
            "len": e.len,
            "held_back": e.held,
        });
        println!("{v}");
        return;
    }
    let ports = match e.src_port | e.dst_port {
        0 => String::new(),
        _ => format!(" {} > {}", e.src_port, e.dst_port),
    };
    let held = match e.held {
        0 => String::new(),
        n => format!(" (+{n} held back)"),
    };
    let who = if port.is_empty() {
        iface
    } else {
        format!("port {port} ({iface})")
    };
    println!(
        "{} {name} {who}: {} > {} {src} > {dst} {proto}{ports} len {}{held}",
        kind.to_uppercase(),
        format_mac(&e.src_mac),
        format_mac(&e.dst_mac),
        e.len
    );
}

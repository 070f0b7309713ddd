//! `status`, `ports`, `stats`: what the pinned maps hold (and the agent's record, for names).

use std::path::{Path, PathBuf};

use alioth_common::maps::{self, Endpoint, EndpointKey, NextHop, PortEntry, Uplink};
use alioth_common::Counter;
use anyhow::{bail, Context, Result};
use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use serde_json::json;

use crate::agent::DEFAULT_PIN_DIR;
use crate::dataplane::sum_counters;
use crate::goalstate::model::format_mac;
use crate::net::interfaces::{ifname, interfaces};

#[derive(Clone, Debug, clap::Args)]
pub struct InspectArgs {
    /// The agent's bpffs pin directory.
    #[arg(long, default_value = DEFAULT_PIN_DIR, env = "ALIOTH_PIN_DIR")]
    pub pin_dir: PathBuf,
    /// The agent's state directory (`status` lists damaged records kept there).
    #[arg(long, default_value = crate::agent::DEFAULT_STATE_DIR, env = "ALIOTH_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn open_map(pin_dir: &Path, name: &str) -> Result<MapData> {
    // The agent's pins are on the machine's bpffs, also when this runs under `ip netns exec`.
    crate::dataplane::bpffs::ensure(pin_dir, false)?;
    let path = pinned_path(pin_dir, name)?;
    MapData::from_pin(&path).with_context(|| format!("open pinned map {}", path.display()))
}

/// The path of the agent's pin `name`, which must exist.
pub(super) fn pinned_path(pin_dir: &Path, name: &str) -> Result<PathBuf> {
    let path = pin_dir.join(name);
    if !path.exists() {
        bail!(
            "{} does not exist: is the agent running with --pin-dir {}?",
            path.display(),
            pin_dir.display()
        );
    }
    Ok(path)
}

/// The agent's pinned array `name`.
pub(super) fn pinned_array<V: aya::Pod>(pin_dir: &Path, name: &str) -> Result<Array<MapData, V>> {
    Ok(Array::try_from(Map::Array(open_map(pin_dir, name)?))?)
}

/// Summed per-CPU counters, in `Counter::ALL` order.
pub fn read_stats(pin_dir: &Path) -> Result<Vec<(Counter, u64)>> {
    let map: PerCpuArray<_, u64> = PerCpuArray::try_from(Map::PerCpuArray(open_map(pin_dir, maps::STATS)?))?;
    sum_counters(&map)
}

#[derive(Clone, Debug, clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub inspect: InspectArgs,
    /// One port's own counters (its id in goal state) instead of the host's.
    #[arg(long)]
    pub port: Option<String>,
}

pub fn stats(args: StatsArgs) -> Result<()> {
    let stats = match &args.port {
        Some(id) => read_port_stats(&args.inspect, id)?,
        None => read_stats(&args.inspect.pin_dir)?,
    };
    if args.inspect.json {
        let obj: serde_json::Map<String, serde_json::Value> =
            stats.iter().map(|(c, v)| (c.name().to_string(), json!(v))).collect();
        println!("{}", serde_json::Value::Object(obj));
    } else {
        println!("{:<28} {:>14}", "COUNTER", "PACKETS");
        for (c, v) in stats {
            println!("{:<28} {:>14}", c.name(), v);
        }
    }
    Ok(())
}

/// Port `id`'s interface `iface` here: its index and what `PORTS` holds there.
pub(super) fn port_entry(pin_dir: &Path, id: &str, iface: &str) -> Result<(u32, PortEntry)> {
    let index =
        crate::net::interfaces::ifindex(iface).with_context(|| format!("port {id} has no interface {iface} here"))?;
    let entry = pinned_array::<PortEntry>(pin_dir, maps::PORTS)?.get(&index, 0)?;
    Ok((index, entry))
}

/// The counters of port `id` (found in the agent's record), summed over the CPUs.
fn read_port_stats(args: &InspectArgs, id: &str) -> Result<Vec<(Counter, u64)>> {
    let state =
        crate::store::Store::read(&args.state_dir).with_context(|| format!("read {}", args.state_dir.display()))?;
    let port = state
        .ports()
        .get(id)
        .with_context(|| format!("no port {id} in the agent's record"))?;
    let (_, entry) = port_entry(&args.pin_dir, id, &port.iface)?;
    if !entry.is_programmed() {
        bail!("port {id} ({}) is not attached", port.iface);
    }
    if entry.stats_slot == 0 {
        bail!("port {id} has no counters of its own: all port counter slots were taken");
    }
    let map = open_map(&args.pin_dir, maps::PORT_STATS)?;
    let per_cpu: PerCpuArray<_, maps::PortCounters> = PerCpuArray::try_from(Map::PerCpuArray(map))?;
    Ok(crate::dataplane::sum_port_counters(
        &per_cpu.get(&(entry.stats_slot as u32), 0)?,
    ))
}

/// A listing's text cell: the string at `key` of a JSON row, `-` when it is missing or empty.
pub(super) fn cell(row: &serde_json::Value, key: &str) -> String {
    row[key].as_str().filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

/// The agent's record, when there is one this command can read (listings name what they show from
/// it, and do without).
pub(super) fn readable_record(state_dir: &Path) -> Option<crate::goalstate::model::State> {
    state_dir
        .exists()
        .then(|| crate::store::Store::read(state_dir).ok())
        .flatten()
}

/// Which port and VPC each interface is (interface -> (port id, VPC id)), from the agent's record
/// when it can be read here.
pub(super) fn port_owners(state_dir: &Path) -> std::collections::HashMap<String, (String, String)> {
    readable_record(state_dir)
        .map(|state| {
            state
                .ports()
                .values()
                .map(|p| (p.iface.to_string(), (p.id.to_string(), p.vpc_id.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Programmed ports among this network namespace's interfaces.
fn read_ports(pin_dir: &Path) -> Result<Vec<(u32, PortEntry)>> {
    let map = pinned_array::<PortEntry>(pin_dir, maps::PORTS)?;
    let mut ports = Vec::new();
    for (index, _) in interfaces() {
        if index < maps::MAX_IFINDEX {
            let entry = map.get(&index, 0)?;
            if entry.is_programmed() {
                ports.push((index, entry));
            }
        }
    }
    Ok(ports)
}

pub fn ports(args: InspectArgs) -> Result<()> {
    let ports = read_ports(&args.pin_dir)?;
    let owners = port_owners(&args.state_dir);
    let rows: Vec<serde_json::Value> = ports
        .iter()
        .map(|(i, p)| {
            let iface = ifname(*i).unwrap_or_default();
            let (port, vpc) = owners.get(&iface).cloned().unwrap_or_default();
            json!({
                "ifindex": i,
                "iface": iface,
                "port_id": port,
                "vpc_id": vpc,
                "mac": format_mac(&p.mac),
                "ip": std::net::Ipv4Addr::from(p.ip).to_string(),
                "vni": p.vni,
            })
        })
        .collect();
    if args.json {
        println!("{}", serde_json::Value::Array(rows));
    } else {
        println!(
            "{:<8} {:<16} {:<38} {:<24} {:<18} {:<16} {:>8}",
            "IFINDEX", "IFACE", "PORT", "VPC", "MAC", "IP", "VNI"
        );
        for r in rows {
            println!(
                "{:<8} {:<16} {:<38} {:<24} {:<18} {:<16} {:>8}",
                r["ifindex"],
                cell(&r, "iface"),
                cell(&r, "port_id"),
                cell(&r, "vpc_id"),
                cell(&r, "mac"),
                cell(&r, "ip"),
                r["vni"]
            );
        }
    }
    Ok(())
}

pub fn status(args: InspectArgs) -> Result<()> {
    let ports = read_ports(&args.pin_dir)?;
    let endpoints: BpfHashMap<_, EndpointKey, Endpoint> =
        BpfHashMap::try_from(Map::HashMap(open_map(&args.pin_dir, maps::ENDPOINTS)?))?;
    let n_endpoints = endpoints.keys().count();
    let next_hops: BpfHashMap<_, [u8; 4], NextHop> =
        BpfHashMap::try_from(Map::HashMap(open_map(&args.pin_dir, maps::NEXTHOPS)?))?;
    let n_next_hops = next_hops.keys().count();
    let uplink_map = pinned_array::<Uplink>(&args.pin_dir, maps::UPLINK)?;
    let uplink = uplink_map.get(&0, 0).ok().filter(Uplink::is_configured).map(|u| {
        json!({
            "iface": ifname(u.ifindex).unwrap_or_else(|| format!("ifindex {}", u.ifindex)),
            "tunnel_endpoint": std::net::Ipv4Addr::from(u.ip).to_string(),
            "mtu": u.mtu,
            "vxlan_port": u.vxlan_port,
        })
    });
    let ifaces: Vec<String> = ports
        .iter()
        .map(|(i, _)| ifname(*i).unwrap_or_else(|| format!("ifindex {i}")))
        .collect();
    let record = record_summary(&args.state_dir, &ifaces);
    let agent = crate::agent::instance::running(&args.state_dir)
        .map(|i| json!({ "pid": i.pid, "version": i.version, "listen": i.listen, "uptime_s": i.uptime().as_secs() }));
    let xdp = xdp_modes(&ports, uplink.as_ref().and_then(|_| uplink_map.get(&0, 0).ok()))?;
    let status = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "agent": agent,
        "pin_dir": args.pin_dir.display().to_string(),
        "attached": ifaces,
        "xdp": xdp,
        "uplink": uplink,
        "maps": { "PORTS": { "entries": ports.len(), "max_ifindex": maps::MAX_IFINDEX },
                  "ENDPOINTS": { "entries": n_endpoints, "max": maps::MAX_ENDPOINTS },
                  "NEXTHOPS": { "entries": n_next_hops, "max": maps::MAX_NEXTHOPS } },
        "record": record,
    });
    if args.json {
        println!("{status}");
    } else {
        print_status(&status, &args.state_dir);
    }
    Ok(())
}

/// `status` for a terminal, from its JSON.
fn print_status(status: &serde_json::Value, state_dir: &Path) {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    println!("version:    {}", env!("CARGO_PKG_VERSION"));
    match &status["agent"] {
        serde_json::Value::Null => println!("agent:      not running on state dir {}", state_dir.display()),
        a => println!(
            "agent:      pid {}, up {}, serving {}",
            a["pid"],
            duration(a["uptime_s"].as_u64().unwrap_or(0)),
            text(&a["listen"])
        ),
    }
    println!("pin dir:    {}", text(&status["pin_dir"]));
    let xdp = status["xdp"].as_array().cloned().unwrap_or_default();
    let attached: Vec<String> = xdp
        .iter()
        .map(|x| {
            let peer = if x["into_peer"] == true { ", into its peer" } else { "" };
            format!("{} ({}{peer})", text(&x["iface"]), text(&x["xdp"]))
        })
        .collect();
    println!(
        "attached:   {}",
        if attached.is_empty() {
            "-".to_string()
        } else {
            attached.join(", ")
        }
    );
    match &status["uplink"] {
        serde_json::Value::Null => println!("uplink:     - (local switching only)"),
        u => println!(
            "uplink:     {} (tunnel endpoint {}, MTU {}, VXLAN port {})",
            text(&u["iface"]),
            text(&u["tunnel_endpoint"]),
            u["mtu"],
            u["vxlan_port"]
        ),
    }
    let m = &status["maps"];
    println!(
        "PORTS:      {} (ifindex < {})",
        m["PORTS"]["entries"],
        maps::MAX_IFINDEX
    );
    println!("ENDPOINTS:  {} / {}", m["ENDPOINTS"]["entries"], maps::MAX_ENDPOINTS);
    println!(
        "NEXTHOPS:   {} / {} (remote hosts with a resolved next hop)",
        m["NEXTHOPS"]["entries"],
        maps::MAX_NEXTHOPS
    );
    let r = &status["record"];
    println!(
        "record:     {} ({} bytes; {} resources, {} ports pending: {})",
        text(&r["state_dir"]),
        r["bytes"],
        r["resources"],
        r["pending_ports"].as_array().map_or(0, Vec::len),
        text(&r["pending_ports"])
    );
    if let Some(damaged) = r["damaged_copies"].as_array().filter(|d| !d.is_empty()) {
        println!(
            "RECORD:     DAMAGED: the agent started from what it could read and kept the data plane as \
             it was; entries it lacks stay until goal state replaces them or `alioth agent --reset`. \
             Copies: {}",
            damaged.iter().map(text).collect::<Vec<_>>().join(", ")
        );
    }
}

/// `3d 4h 5m 6s`, leading zero units left out.
fn duration(secs: u64) -> String {
    let units = [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ];
    let shown: Vec<String> = units
        .iter()
        .skip_while(|(n, unit)| *n == 0 && *unit != "s")
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    shown.join(" ")
}

/// How the programs run on the uplink and on each programmed port, as the kernel reports it: the
/// XDP mode (native, generic), "tc" where the skb path runs alone (tcx, no XDP: veths), "none"
/// where nothing is attached; and whether the skb path puts a port's frames straight into its
/// peer (a veth whose peer is in another namespace, as the agent marks it in `IFACE_FLAGS`).
fn xdp_modes(ports: &[(u32, PortEntry)], uplink: Option<Uplink>) -> Result<Vec<serde_json::Value>> {
    let links = crate::net::links::links().context("list the interfaces")?;
    let row = |index: u32, role: &str| {
        let iface = ifname(index).unwrap_or_else(|| format!("ifindex {index}"));
        let xdp = links.get(&index).and_then(|l| l.xdp);
        let (mode, prog) = match xdp {
            Some((m, p)) => (m.name(), p),
            None => crate::dataplane::attach::tc_program_on(&iface).map_or(("none", 0), |p| ("tc", p)),
        };
        let into_peer = role == "port" && links.get(&index).is_some_and(|l| l.peer_elsewhere);
        json!({
            "iface": iface,
            "role": role,
            "xdp": mode,
            "prog_id": prog,
            "into_peer": into_peer,
        })
    };
    let mut rows: Vec<_> = uplink.map(|u| row(u.ifindex, "uplink")).into_iter().collect();
    rows.extend(ports.iter().map(|(i, _)| row(*i, "port")));
    Ok(rows)
}

/// The agent's record as this command can read it: its size, what it holds, the ports whose
/// interface is not attached (pending), and copies of damaged records.
fn record_summary(dir: &Path, attached: &[String]) -> serde_json::Value {
    let bytes = crate::store::Store::size(dir);
    let held = readable_record(dir);
    let (resources, pending) = held.map_or((0, Vec::new()), |s| {
        let pending: Vec<String> = s
            .ports()
            .values()
            .filter(|p| !attached.iter().any(|a| **a == *p.iface))
            .map(|p| p.id.to_string())
            .collect();
        (s.resources().count(), pending)
    });
    json!({
        "state_dir": dir.display().to_string(),
        "bytes": bytes,
        "resources": resources,
        "pending_ports": pending,
        "damaged_copies": crate::store::damaged_copies(dir),
    })
}

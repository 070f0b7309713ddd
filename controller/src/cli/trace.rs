//! `trace`: one synthetic frame from a port through the live data plane, twice. The kernel's run
//! is the port program of this binary's object, loaded onto the agent's pinned maps and run once
//! with BPF_PROG_TEST_RUN (then its skb path, where it leaves the frame there), with a counter map of its own: the live counters, and everything else
//! the program could write (its caches, the event gates), stay as they were. The host's run is the
//! same `no_std` pipeline over the same pinned maps, which records every lookup it makes: the
//! chain of decisions. Both must agree on the verdict and its reason.

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use alioth_common::maps::{self, DhcpEntry, Endpoint, EndpointKey, NextHop, Uplink};
use alioth_common::pipeline::{self, Action, Tables, Verdict};
use alioth_common::Counter;
use anyhow::{bail, Context, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use aya::programs::{SchedClassifier, Xdp};
use serde_json::json;

use crate::agent::{DEFAULT_PIN_DIR, DEFAULT_STATE_DIR};
use crate::dataplane::frames::{self, L4};
use crate::dataplane::object::{xdp_object, PORT_PROGRAM, PORT_TC_PROGRAM};
use crate::dataplane::{attach, sum_counters, test_run, PINNED_MAPS};
use crate::goalstate::model::format_mac;
use crate::store::Store;

use super::inspect::{open_map, pinned_array, pinned_path, port_entry};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    Udp,
    Tcp,
    Icmp,
}

#[derive(Clone, Debug, clap::Args)]
pub struct TraceArgs {
    /// The port the frame comes from (its id in goal state).
    #[arg(long)]
    pub port: String,
    /// The whole frame, in hex, instead of one built from the options below.
    #[arg(long, conflicts_with_all = ["dst", "src", "sport", "dport", "dst_mac"])]
    pub frame: Option<String>,
    /// Destination address.
    #[arg(long, required_unless_present = "frame")]
    pub dst: Option<Ipv4Addr>,
    /// Source address (default: the port's own).
    #[arg(long)]
    pub src: Option<Ipv4Addr>,
    /// UDP (no checksum), TCP (a SYN) or ICMP (an echo request).
    #[arg(long, value_enum, default_value = "udp")]
    pub proto: Proto,
    /// Source port (UDP, TCP).
    #[arg(long, default_value_t = 40000)]
    pub sport: u16,
    /// Destination port (UDP, TCP).
    #[arg(long, default_value_t = 9)]
    pub dport: u16,
    /// Destination MAC (default: the destination's in the port's subnet, else its gateway's).
    #[arg(long)]
    pub dst_mac: Option<String>,
    /// The agent's bpffs pin directory.
    #[arg(long, default_value = DEFAULT_PIN_DIR, env = "ALIOTH_PIN_DIR")]
    pub pin_dir: PathBuf,
    /// The agent's state directory (where the port is looked up).
    #[arg(long, default_value = DEFAULT_STATE_DIR, env = "ALIOTH_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Exit code when the kernel and the host disagree.
pub const EXIT_DISAGREE: i32 = 2;

pub fn trace(args: TraceArgs) -> Result<i32> {
    crate::dataplane::bpffs::ensure(&args.pin_dir, false)?;
    let state = Store::read(&args.state_dir).with_context(|| format!("read {}", args.state_dir.display()))?;
    let port = state
        .ports()
        .get(args.port.as_str())
        .cloned()
        .with_context(|| format!("no port {} in the agent's record", args.port))?;
    let (ifindex, entry) = port_entry(&args.pin_dir, &args.port, &port.iface)?;
    if !entry.is_programmed() {
        bail!("{} (ifindex {ifindex}) is not attached", port.iface);
    }
    let subnet = state.subnets.get(&*port.fixed_ips[0].subnet_id);
    let tables = PinnedTables::open(&args.pin_dir, entry.dhcp_slot)?;
    let frame = match &args.frame {
        Some(hex) => decode_hex(hex)?,
        None => {
            let dst = args.dst.context("--dst")?;
            let in_subnet = subnet.is_some_and(|s| s.cidr.contains(dst));
            let dst_mac = match &args.dst_mac {
                Some(m) => crate::goalstate::model::parse_mac(m).map_err(anyhow::Error::msg)?,
                // Looked up apart from the chain, which lists the pipeline's lookups only.
                None => {
                    let key = EndpointKey {
                        vni: entry.vni,
                        ip: dst.octets(),
                    };
                    let holder = tables.endpoints.get(&key, 0).ok().map(|e| e.mac);
                    frames::first_hop_mac(in_subnet, holder, entry.gateway_mac)
                }
            };
            let src = args.src.unwrap_or(port.primary_ip());
            let l4 = match args.proto {
                Proto::Udp => L4::Udp(args.sport, args.dport),
                Proto::Tcp => L4::Tcp(args.sport, args.dport),
                Proto::Icmp => L4::Echo {
                    id: 0x1234,
                    sequence: 1,
                },
            };
            frames::build(&port.mac, &dst_mac, src, dst, l4)
        }
    };
    let mut host_frame = frame.clone();
    let mut verdict = pipeline::port_ingress_with::<_, _, true>(&mut host_frame, &entry, &tables);
    if verdict.action == Action::Pass && verdict.counter == Counter::SkbPath {
        verdict = skb_path(&mut host_frame, &entry, &tables);
    }
    let kernel = run_in_kernel(&args.pin_dir, ifindex, &frame)?;
    let action = match kernel.path {
        Hook::Xdp => test_run::xdp_action(verdict.action),
        Hook::Skb => test_run::tc_action(verdict.action),
    };
    let agree = kernel.action == action && kernel.counters == [(verdict.counter, 1)];
    let report = json!({
        "port": args.port,
        "iface": port.iface,
        "vni": entry.vni,
        "frame": hex(&frame),
        "verdict": format!("{:?}", verdict.action),
        "reason": verdict.counter.name(),
        "out_ifindex": verdict.ifindex,
        "out_iface": crate::net::interfaces::ifname(verdict.ifindex),
        "outer": (verdict.action == Action::Encap).then(|| outer(&verdict)),
        "chain": tables.chain.take(),
        "kernel": {
            "path": kernel.path.name(),
            "action": kernel.action,
            "counters": kernel.counters.iter().map(|(c, n)| json!({ "counter": c.name(), "packets": n })).collect::<Vec<_>>(),
            "frame_out": hex(&kernel.frame),
        },
        "agree": agree,
    });
    if args.json {
        println!("{report}");
    } else {
        print(&report);
    }
    Ok(if agree { 0 } else { EXIT_DISAGREE })
}

fn print(r: &serde_json::Value) {
    let text = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    println!(
        "port:     {} ({}, VNI {})",
        text(&r["port"]),
        text(&r["iface"]),
        r["vni"]
    );
    println!("verdict:  {} ({})", text(&r["verdict"]), text(&r["reason"]));
    if r["out_ifindex"] != 0 {
        println!("out:      {} (ifindex {})", text(&r["out_iface"]), r["out_ifindex"]);
    }
    if !r["outer"].is_null() {
        let o = &r["outer"];
        println!(
            "outer:    {} -> {}, {} -> {}, UDP {} -> {}, VNI {}",
            text(&o["src_mac"]),
            text(&o["dst_mac"]),
            text(&o["src_ip"]),
            text(&o["dst_ip"]),
            o["src_port"],
            o["dst_port"],
            o["vni"]
        );
    }
    println!("chain:");
    for step in r["chain"].as_array().into_iter().flatten() {
        println!("  {}", text(step));
    }
    println!(
        "kernel:   {} action {} {}",
        text(&r["kernel"]["path"]),
        r["kernel"]["action"],
        r["kernel"]["counters"]
    );
    println!("frame:    {}", text(&r["frame"]));
    println!("out:      {}", text(&r["kernel"]["frame_out"]));
    if r["agree"] != true {
        println!("DISAGREE: the kernel's verdict is not the host pipeline's");
    }
}

fn outer(v: &Verdict) -> serde_json::Value {
    let o = &v.outer;
    json!({
        "src_mac": format_mac(&o.src_mac),
        "dst_mac": format_mac(&o.dst_mac),
        "src_ip": Ipv4Addr::from(o.src_ip).to_string(),
        "dst_ip": Ipv4Addr::from(o.dst_ip).to_string(),
        "src_port": o.src_port,
        "dst_port": o.dst_port,
        "vni": o.vni,
    })
}

/// Where the kernel decided: in XDP, or on the skb path (the TC program) XDP left the frame to.
#[derive(Clone, Copy)]
enum Hook {
    Xdp,
    Skb,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::Skb => "skb",
        }
    }
}

struct KernelRun {
    path: Hook,
    /// XDP's action, or TC's when XDP left the frame to the skb path.
    action: u32,
    frame: Vec<u8>,
    /// The counters the run moved, from its own counter map.
    counters: Vec<(Counter, u64)>,
}

/// What the port's skb path decides for a frame XDP left to it, with the NAT program it hands
/// frames its subnet routes nowhere to (`alioth_common::nat`).
fn skb_path(frame: &mut Vec<u8>, entry: &maps::PortEntry, tables: &PinnedTables) -> Verdict {
    let verdict = pipeline::port_ingress_skb(frame, entry, tables);
    if verdict.action != Action::Nat {
        return verdict;
    }
    match alioth_common::nat::outbound(frame, entry, tables) {
        Ok(_) => Verdict::to(
            Action::Redirect,
            Counter::NatOut,
            tables.uplink.map_or(0, |u| u.ifindex),
        ),
        Err(reason) => Verdict::drop_with(reason),
    }
}

/// Runs the port program once on `frame` as if it came in on `ifindex`, and its skb path after it
/// where it leaves the frame there: the agent's pinned maps, except the counters, which are the
/// run's own.
fn run_in_kernel(pin_dir: &Path, ifindex: u32, frame: &[u8]) -> Result<KernelRun> {
    let mut loader = crate::dataplane::object::loader(&0)?;
    // Its own counters, its own tails (which count into them), and no monitor.
    let own = [
        maps::STATS,
        maps::PORT_STATS,
        maps::TAILS,
        maps::TC_TAILS,
        // A synthetic flow claims no port of the host's.
        alioth_common::snat::SNAT_FLOWS,
        alioth_common::snat::SNAT_BACK,
        alioth_common::monitor::MONITOR,
        alioth_common::monitor::MONITOR_EVENTS,
    ];
    for name in PINNED_MAPS.iter().filter(|m| !own.contains(*m)) {
        // Only existing pins: the loader would create and pin a map that is not there, and a
        // trace must leave nothing.
        loader.map_pin_path(name, pinned_path(pin_dir, name)?);
    }
    let mut ebpf = loader
        .load(xdp_object()?)
        .context("load the XDP object onto the pinned maps")?;
    crate::dataplane::fill_tails(&mut ebpf)?;
    let prog: &mut Xdp = ebpf.program_mut(PORT_PROGRAM).context("no port program")?.try_into()?;
    prog.load().context("verifier rejected the port program")?;
    let (mut action, mut out) = test_run::xdp(prog, frame, Some(ifindex))?;
    let moved = |ebpf: &aya::Ebpf| -> Result<Vec<(Counter, u64)>> {
        let stats: PerCpuArray<_, u64> = PerCpuArray::try_from(ebpf.map(maps::STATS).context("no STATS map")?)?;
        Ok(sum_counters(&stats)?.into_iter().filter(|(_, n)| *n > 0).collect())
    };
    let mut counters = moved(&ebpf)?;
    let mut path = Hook::Xdp;
    if action == test_run::XDP_PASS && counters == [(Counter::SkbPath, 1)] {
        let prog: &mut SchedClassifier = attach::named(&mut ebpf, PORT_TC_PROGRAM)?;
        prog.load().context("verifier rejected the port program's skb path")?;
        (action, out) = test_run::tc(prog, frame, ifindex, 0)?;
        // What the skb path counted, without the pass that took the frame there, or how a
        // translated frame's next hop was found (this object has no lookup source).
        counters = moved(&ebpf)?
            .into_iter()
            .filter(|(c, _)| !matches!(c, Counter::SkbPath | Counter::NatOutResolve))
            .collect();
        path = Hook::Skb;
    }
    Ok(KernelRun {
        path,
        action,
        frame: out,
        counters,
    })
}

/// The pinned maps as the pipeline's tables, noting every lookup.
struct PinnedTables {
    endpoints: BpfHashMap<MapData, EndpointKey, Endpoint>,
    next_hops: BpfHashMap<MapData, [u8; 4], NextHop>,
    allowed_sources: aya::maps::lpm_trie::LpmTrie<MapData, [u8; 16], u8>,
    /// `None`: pinned by an agent from before routers.
    routes: Option<aya::maps::lpm_trie::LpmTrie<MapData, [u8; 12], maps::Route>>,
    /// `None`: pinned by an agent from before elastic IPs.
    elastic_sources: Option<BpfHashMap<MapData, EndpointKey, [u8; 4]>>,
    uplink: Option<Uplink>,
    /// The port's DHCP entry (the only one its frames can read).
    dhcp: Option<(u32, DhcpEntry)>,
    chain: RefCell<Vec<String>>,
}

impl PinnedTables {
    fn open(pin_dir: &Path, dhcp_slot: u32) -> Result<PinnedTables> {
        let uplink = pinned_array::<Uplink>(pin_dir, maps::UPLINK)?
            .get(&0, 0)
            .ok()
            .filter(Uplink::is_configured);
        let dhcp = match dhcp_slot {
            0 => None,
            slot => Some((slot, pinned_array::<DhcpEntry>(pin_dir, maps::DHCP)?.get(&slot, 0)?)),
        };
        Ok(PinnedTables {
            endpoints: BpfHashMap::try_from(Map::HashMap(open_map(pin_dir, maps::ENDPOINTS)?))?,
            next_hops: BpfHashMap::try_from(Map::HashMap(open_map(pin_dir, maps::NEXTHOPS)?))?,
            allowed_sources: aya::maps::lpm_trie::LpmTrie::try_from(Map::LpmTrie(open_map(
                pin_dir,
                maps::ALLOWED_SOURCES,
            )?))?,
            routes: open_map(pin_dir, maps::ROUTES)
                .ok()
                .and_then(|m| aya::maps::lpm_trie::LpmTrie::try_from(Map::LpmTrie(m)).ok()),
            elastic_sources: open_map(pin_dir, alioth_common::nat::ELASTIC_SOURCES)
                .ok()
                .and_then(|m| BpfHashMap::try_from(Map::HashMap(m)).ok()),
            uplink,
            dhcp,
            chain: RefCell::new(Vec::new()),
        })
    }

    fn note(&self, step: String) {
        self.chain.borrow_mut().push(step);
    }
}

impl Tables for PinnedTables {
    /// The kernel's run has SNAT maps of its own, empty: a new flow claims its first port.
    fn snat_claim(
        &self,
        _key: &alioth_common::snat::SnatKey,
        way_back: &alioth_common::snat::SnatBackKey,
        _back: &alioth_common::snat::SnatBack,
        port: u16,
    ) -> bool {
        self.note(format!(
            "SNAT: the host's port {port} for the flow (to {})",
            Ipv4Addr::from(way_back.remote)
        ));
        true
    }

    fn elastic_source(&self, key: &EndpointKey) -> Option<[u8; 4]> {
        let found = self.elastic_sources.as_ref().and_then(|m| m.get(key, 0).ok());
        let private = Ipv4Addr::from(key.ip);
        self.note(match found {
            Some(ip) => format!("ELASTIC_SOURCES[VNI {}, {private}]: {}", key.vni, Ipv4Addr::from(ip)),
            None => format!("ELASTIC_SOURCES[VNI {}, {private}]: none (no elastic IP)", key.vni),
        });
        found
    }

    fn route(&self, vni: u32, gateway: [u8; 4], dst: [u8; 4]) -> Option<maps::Route> {
        let found = self
            .routes
            .as_ref()
            .and_then(|m| crate::dataplane::route(m, vni, gateway, dst));
        let (gw, to) = (Ipv4Addr::from(gateway), Ipv4Addr::from(dst));
        self.note(match &found {
            Some(r) => format!(
                "ROUTES[VNI {vni}, subnet of {gw}, {to}]: {} in VNI {}, next hop {}, MAC {}, from {}",
                maps::route_kind::name(r.kind),
                r.vni,
                Ipv4Addr::from(r.ip),
                format_mac(&r.mac),
                format_mac(&r.router_mac)
            ),
            None => format!("ROUTES[VNI {vni}, subnet of {gw}, {to}]: none (no router routes it)"),
        });
        found
    }

    fn allowed_source(&self, vni: u32, mac: &alioth_common::eth::Mac, ip: [u8; 4]) -> bool {
        let allowed = crate::dataplane::allowed_source(&self.allowed_sources, vni, mac, ip);
        self.note(format!(
            "ALLOWED_SOURCES[VNI {vni}, {}, {}]: {}",
            format_mac(mac),
            Ipv4Addr::from(ip),
            if allowed { "an allowed address pair" } else { "none" }
        ));
        allowed
    }

    fn endpoint(&self, key: &EndpointKey) -> Option<Endpoint> {
        let found = self.endpoints.get(key, 0).ok();
        let ip = Ipv4Addr::from(key.ip);
        self.note(match &found {
            Some(e) => format!(
                "ENDPOINTS[VNI {}, {ip}]: kind {}, MAC {}, host {}",
                key.vni,
                e.kind,
                format_mac(&e.mac),
                Ipv4Addr::from(e.host_ip)
            ),
            None => format!("ENDPOINTS[VNI {}, {ip}]: none", key.vni),
        });
        found
    }

    fn next_hop(&self, host_ip: &[u8; 4]) -> Option<NextHop> {
        let found = self.next_hops.get(host_ip, 0).ok();
        let host = Ipv4Addr::from(*host_ip);
        self.note(match &found {
            Some(h) => format!("NEXTHOPS[{host}]: MAC {}", format_mac(&h.mac)),
            None => format!("NEXTHOPS[{host}]: none (not resolved)"),
        });
        found
    }

    fn uplink(&self) -> Option<Uplink> {
        self.note(match &self.uplink {
            Some(u) => format!(
                "UPLINK: ifindex {}, tunnel endpoint {}",
                u.ifindex,
                Ipv4Addr::from(u.ip)
            ),
            None => "UPLINK: none (local switching only)".into(),
        });
        self.uplink
    }

    fn dhcp(&self, slot: u32) -> Option<&DhcpEntry> {
        self.note(format!("DHCP[{slot}]"));
        self.dhcp.as_ref().filter(|(s, _)| *s == slot).map(|(_, e)| e)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Result<Vec<u8>> {
    let digits: Vec<char> = text.chars().filter(|c| !c.is_whitespace() && *c != ':').collect();
    if !digits.len().is_multiple_of(2) {
        bail!("--frame has an odd number of hex digits");
    }
    digits
        .chunks(2)
        .map(|p| {
            let s: String = p.iter().collect();
            u8::from_str_radix(&s, 16).with_context(|| format!("--frame: {s:?} is not a hex byte"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decodes_with_separators_and_refuses_odd_or_bad_digits() {
        assert_eq!(decode_hex("0a:0B ff").unwrap(), [10, 11, 255]);
        assert!(decode_hex("0").is_err() && decode_hex("zz").is_err());
    }
}

//! The port program: attached to the host side of every VM port.
//!
//! All decisions live in `alioth_common::pipeline`; this file binds them to the kernel: the packet
//! accessor over the XDP frame, the maps, and the counters. Every entry point is
//! `#[inline(always)]` into the wrapper its macro makes: the kernel refuses a tail call that ends
//! up in a subprogram.
#![no_std]
#![no_main]

#[cfg(feature = "lab")]
mod bench;
mod cache;
mod firewall;
#[cfg(feature = "lab")]
mod lab;
mod monitor;
mod nat_tc;
mod packet;
mod pmtu;
mod probe;
mod stats;
mod tc;
mod trie;

use alioth_common::eth::Mac;
use alioth_common::events::{EventGate, MAX_EVENT_GATES};
use alioth_common::maps::{
    allowed_source_key, route_key, DhcpEntry, Endpoint, EndpointKey, Event, NextHop, PortEntry, PortMacKey, Route,
    Uplink, ALLOWED_SOURCE_FIXED_BITS, EVENTS_BYTES, MAX_ALLOWED_SOURCES, MAX_DHCP, MAX_ENDPOINTS, MAX_IFINDEX,
    MAX_NEXTHOPS, MAX_PORT_MACS, MAX_ROUTES, NO_PREALLOC, ROUTE_FIXED_BITS, TAIL_DHCP, TAIL_SLOTS,
};
use alioth_common::nat::MAX_ELASTIC_IPS;
use alioth_common::packet::At;
use alioth_common::pipeline::{self, Action, Destination, Tables, Verdict};
use alioth_common::snat::{SnatBack, SnatBackKey, SnatKey, MAX_SNAT_FLOWS};
use alioth_common::vxlan::{self, Outer};
use alioth_common::{Counter, Packet};
use aya_ebpf::bindings::xdp_action;
use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_xdp_adjust_head};
use aya_ebpf::macros::{classifier, map, xdp};
use aya_ebpf::maps::lpm_trie::LpmTrie;
use aya_ebpf::maps::{Array, DevMap, HashMap, LruHashMap, ProgramArray, RingBuf};
use aya_ebpf::programs::{TcContext, XdpContext};
use aya_log_ebpf::debug;

use monitor::Fate;
use packet::XdpPacket;
pub(crate) use stats::{count, count_index};
use trie::TrieKey;

#[map]
pub(crate) static PORTS: Array<PortEntry> = Array::with_max_entries(MAX_IFINDEX, 0);

#[map]
static ENDPOINTS: HashMap<EndpointKey, Endpoint> = HashMap::with_max_entries(MAX_ENDPOINTS, NO_PREALLOC);

#[map]
static UPLINK: Array<Uplink> = Array::with_max_entries(1, 0);

#[map]
static NEXTHOPS: HashMap<[u8; 4], NextHop> = HashMap::with_max_entries(MAX_NEXTHOPS, 0);

#[map]
pub(crate) static IFACE_FLAGS: Array<u8> = Array::with_max_entries(MAX_IFINDEX, 0);

#[map]
pub(crate) static FIB_SOURCE: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static REDIRECT: DevMap = DevMap::with_max_entries(MAX_IFINDEX, 0);

#[map]
static DHCP: Array<DhcpEntry> = Array::with_max_entries(MAX_DHCP, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// The agent's alone (`maps::RECORD`): no program reads it.
#[map]
static RECORD: Array<u64> = Array::with_max_entries(2, 0);

#[map]
static EVENT_GATES: LruHashMap<u32, EventGate> = LruHashMap::with_max_entries(MAX_EVENT_GATES, 0);

#[map]
static TAILS: ProgramArray = ProgramArray::with_max_entries(TAIL_SLOTS, 0);

#[map]
static ALLOWED_SOURCES: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(MAX_ALLOWED_SOURCES, 0);

#[map]
static TC_TAILS: ProgramArray = ProgramArray::with_max_entries(TAIL_SLOTS, 0);

#[map]
static ROUTES: LpmTrie<[u8; 12], Route> = LpmTrie::with_max_entries(MAX_ROUTES, NO_PREALLOC);

#[map]
static PORT_MACS: HashMap<PortMacKey, u32> = HashMap::with_max_entries(MAX_PORT_MACS, NO_PREALLOC);

#[map]
static ELASTIC_IPS: HashMap<[u8; 4], EndpointKey> = HashMap::with_max_entries(MAX_ELASTIC_IPS, NO_PREALLOC);

#[map]
static ELASTIC_SOURCES: HashMap<EndpointKey, [u8; 4]> = HashMap::with_max_entries(MAX_ELASTIC_IPS, NO_PREALLOC);

#[map]
static SNAT_FLOWS: LruHashMap<SnatKey, u16> = LruHashMap::with_max_entries(MAX_SNAT_FLOWS, 0);

#[map]
static SNAT_BACK: LruHashMap<SnatBackKey, SnatBack> = LruHashMap::with_max_entries(MAX_SNAT_FLOWS, 0);

struct Maps;

impl Tables for Maps {
    #[inline(always)]
    fn endpoint(&self, key: &EndpointKey) -> Option<Endpoint> {
        // SAFETY: the value is copied out before any other map operation.
        unsafe { ENDPOINTS.get(key).copied() }
    }

    #[inline(always)]
    fn next_hop(&self, host_ip: &[u8; 4]) -> Option<NextHop> {
        // SAFETY: as above.
        unsafe { NEXTHOPS.get(host_ip).copied() }
    }

    #[inline(always)]
    fn uplink(&self) -> Option<Uplink> {
        UPLINK.get(0).copied().filter(Uplink::is_configured)
    }

    #[inline(always)]
    fn dhcp(&self, slot: u32) -> Option<&DhcpEntry> {
        // The agent writes a changed entry to a fresh slot before pointing the port at it, and
        // reuses a freed slot last: the slot read here is never rewritten under the reply.
        DHCP.get(slot)
    }

    #[inline(always)]
    fn destination(&self, key: &EndpointKey) -> Option<Destination> {
        cache::destination(key, || pipeline::look_up_destination(self, key))
    }

    #[inline(always)]
    fn allowed_source(&self, vni: u32, mac: &Mac, ip: [u8; 4]) -> bool {
        let key = TrieKey::new(ALLOWED_SOURCE_FIXED_BITS + 32, allowed_source_key(vni, mac, ip));
        ALLOWED_SOURCES.get(key.key()).is_some()
    }

    #[inline(always)]
    fn route(&self, vni: u32, gateway: [u8; 4], dst: [u8; 4]) -> Option<Route> {
        let key = TrieKey::new(ROUTE_FIXED_BITS + 32, route_key(vni, gateway, dst));
        ROUTES.get(key.key()).copied()
    }

    #[inline(always)]
    fn port_by_mac(&self, key: &PortMacKey) -> Option<u32> {
        // SAFETY: the value is copied out before any other map operation.
        unsafe { PORT_MACS.get(key).copied() }
    }

    #[inline(always)]
    fn takes_xdp(&self, ifindex: u32) -> bool {
        REDIRECT.get(ifindex).is_some()
    }

    #[inline(always)]
    fn elastic_source(&self, key: &EndpointKey) -> Option<[u8; 4]> {
        // SAFETY: the value is copied out before any other map operation.
        unsafe { ELASTIC_SOURCES.get(key).copied() }
    }

    #[inline(always)]
    fn elastic_ip(&self, ip: &[u8; 4]) -> Option<EndpointKey> {
        // SAFETY: as above.
        unsafe { ELASTIC_IPS.get(ip).copied() }
    }

    #[inline(always)]
    fn port(&self, ifindex: u32) -> Option<PortEntry> {
        PORTS.get(ifindex).copied().filter(PortEntry::is_programmed)
    }

    #[inline(always)]
    fn snat_port(&self, key: &SnatKey) -> Option<u16> {
        // SAFETY: the value is copied out before any other map operation.
        unsafe { SNAT_FLOWS.get(key).copied() }
    }

    #[inline(always)]
    fn snat_claim(&self, key: &SnatKey, way_back: &SnatBackKey, back: &SnatBack, port: u16) -> bool {
        // BPF_NOEXIST: only a port no flow to that remote end holds.
        if SNAT_BACK.insert(way_back, back, 1).is_err() {
            return false;
        }
        let _ = SNAT_FLOWS.insert(key, &port, 0);
        count(Counter::SnatNew, 0);
        true
    }

    #[inline(always)]
    fn snat_back(&self, key: &SnatBackKey) -> Option<SnatBack> {
        // SAFETY: as above.
        unsafe { SNAT_BACK.get(key).copied() }
    }
}

/// Where a frame is counted: the interface it came in on, and the port counters it goes to.
#[derive(Clone, Copy)]
pub(crate) struct Origin {
    ifindex: u32,
    /// `PortEntry::stats_slot` of the port it comes from or is decapsulated for; 0: none.
    slot: u16,
}

#[xdp]
#[inline(always)]
pub fn alioth_port(ctx: XdpContext) -> u32 {
    let (origin, verdict) = port_path(&ctx);
    finish_or_take_probe(&ctx, origin, verdict)
}

/// The DHCP server: the port program hands requests to it (`TAILS`), so that each is verified on
/// its own budget. Never attached.
#[xdp]
#[inline(always)]
pub fn alioth_port_dhcp(ctx: XdpContext) -> u32 {
    let (ifindex, port) = port_of(&ctx);
    let Some(port) = port else {
        return finish(&ctx, Origin { ifindex, slot: 0 }, pipeline::unknown_port());
    };
    let mut pkt = XdpPacket::new(&ctx);
    let verdict = dhcp_server(&mut pkt, ifindex, &port);
    let slot = port.stats_slot;
    finish(&ctx, Origin { ifindex, slot }, verdict)
}

/// The DHCP server on the skb path, for ports on it alone: `alioth_port_tc` hands requests to it
/// (`TC_TAILS`). Never attached.
#[classifier]
#[inline(always)]
pub fn alioth_port_dhcp_tc(ctx: TcContext) -> i32 {
    let (ifindex, port) = tc_port(&ctx);
    let Some(port) = port else {
        return tc::finish(&ctx, pipeline::unknown_port(), 0);
    };
    // The server reads options anywhere in the request.
    let mut pkt = tc::whole_packet(&ctx);
    let verdict = dhcp_server(&mut pkt, ifindex, &port);
    tc::finish(&ctx, verdict, port.stats_slot)
}

/// Answers a DHCP request from `port` at `ifindex` (see `pipeline::dhcp_server`).
#[inline(always)]
fn dhcp_server<P: alioth_common::Packet>(pkt: &mut P, ifindex: u32, port: &PortEntry) -> Verdict {
    let verdict = pipeline::dhcp_server(pkt, port, &Maps);
    if verdict.counter == Counter::DhcpDecline {
        // The VM says its address is taken: worth a line in the agent's log, once a second.
        report(ifindex, port, Counter::DhcpDecline);
    }
    verdict
}

/// The uplink program: attached to the underlay interface, decapsulates VXLAN for local ports.
#[xdp]
#[inline(always)]
pub fn alioth_uplink(ctx: XdpContext) -> u32 {
    let (origin, verdict) = uplink_path(&ctx);
    finish_or_take_probe(&ctx, origin, verdict)
}

/// The port program's skb path: TC ingress on the same interface, for the frames `alioth_port`
/// passed to it (a checksum left to the device, a GSO super-frame), or for every frame where the
/// port runs no XDP (veths: see `controller/src/dataplane/attach.rs`).
#[classifier]
#[inline(always)]
pub fn alioth_port_tc(ctx: TcContext) -> i32 {
    let (ifindex, port) = tc_port(&ctx);
    let Some(port) = port else {
        return tc::finish(&ctx, pipeline::unknown_port(), 0);
    };
    let mut pkt = tc::packet(&ctx);
    let verdict = pipeline::port_ingress_skb(&mut pkt, &port, &Maps);
    let verdict = firewall::from_port(&mut pkt, &port, verdict);
    tc::finish_or_take_probe(&ctx, ifindex, pmtu::limit(ifindex, verdict), port.stats_slot)
}

/// The uplink program's skb path: decapsulation of what `alioth_uplink` passed to it.
#[classifier]
#[inline(always)]
pub fn alioth_uplink_tc(ctx: TcContext) -> i32 {
    // SAFETY: the program's own context.
    let ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    let mut pkt = tc::packet(&ctx);
    let verdict = pipeline::uplink_ingress_skb(&mut pkt, &Maps);
    let verdict = firewall::from_uplink(&mut pkt, verdict);
    tc::finish_or_take_probe(&ctx, ifindex, verdict, slot_of_target(&verdict))
}

/// Elastic IPs on the skb path: the port and uplink programs hand it the frames to and from one
/// (`TC_TAILS`; XDP leaves them to those). Never attached.
#[classifier]
#[inline(always)]
pub fn alioth_nat_tc(ctx: TcContext) -> i32 {
    nat_tc::run(&ctx)
}

/// The counters' slot of the port a frame from the uplink goes to, decapsulated or translated (0
/// for anything else).
#[inline(always)]
fn slot_of_target(verdict: &Verdict) -> u16 {
    if !matches!(verdict.action, Action::Decap | Action::Redirect) {
        return 0;
    }
    PORTS.get(verdict.ifindex).map_or(0, |p| p.stats_slot)
}

/// `port_of` for an skb.
#[inline(always)]
fn tc_port(ctx: &TcContext) -> (u32, Option<PortEntry>) {
    // SAFETY: the program's own context.
    let ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    (ifindex, Maps.port(ifindex))
}

/// The frame's ingress interface, and its port if it is a programmed one.
#[inline(always)]
fn port_of(ctx: &XdpContext) -> (u32, Option<PortEntry>) {
    // SAFETY: the program's own context.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    (ifindex, Maps.port(ifindex))
}

#[inline(always)]
fn port_path(ctx: &XdpContext) -> (Origin, Verdict) {
    let (ifindex, port) = port_of(ctx);
    let Some(port) = port else {
        return (Origin { ifindex, slot: 0 }, pipeline::unknown_port());
    };
    let mut pkt = XdpPacket::new(ctx);
    let slot = port.stats_slot;
    // DHCP is left to `alioth_port_dhcp`.
    let verdict = pipeline::port_ingress_with::<_, _, false>(&mut pkt, &port, &Maps);
    let verdict = firewall::from_port(&mut pkt, &port, verdict);
    (Origin { ifindex, slot }, pmtu::limit(ifindex, verdict))
}

/// Reports `counter` on port `ifindex` to the agent, unless the port's gate holds it back.
#[inline(always)]
fn report(ifindex: u32, port: &PortEntry, counter: Counter) {
    // SAFETY: the value is copied out before the map is written.
    let mut gate = unsafe { EVENT_GATES.get(&ifindex).copied() }.unwrap_or_default();
    // SAFETY: a helper without arguments.
    let passed = gate.pass(unsafe { bpf_ktime_get_ns() });
    let _ = EVENT_GATES.insert(&ifindex, &gate, 0);
    let Some(suppressed) = passed else {
        count(Counter::EventSuppressed, port.stats_slot);
        return;
    };
    let event = Event {
        ifindex,
        counter: counter.index(),
        mac: port.mac,
        _pad: [0; 2],
        ip: port.ip,
        suppressed,
    };
    let _ = EVENTS.output::<Event>(&event, 0);
}

#[inline(always)]
fn uplink_path(ctx: &XdpContext) -> (Origin, Verdict) {
    // SAFETY: the program's own context.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let mut pkt = XdpPacket::new(ctx);
    let verdict = pipeline::uplink_ingress(&mut pkt, &Maps);
    let verdict = firewall::from_uplink(&mut pkt, verdict);
    let slot = slot_of_target(&verdict);
    (Origin { ifindex, slot }, verdict)
}

/// `finish`, unless the frame is a reply to the agent's probe: then it goes to the agent.
#[inline(always)]
fn finish_or_take_probe(ctx: &XdpContext, origin: Origin, verdict: Verdict) -> u32 {
    if probe::taken(&XdpPacket::new(ctx), origin.ifindex, &verdict) {
        count(Counter::EchoProbeReply, origin.slot);
        return xdp_action::XDP_DROP;
    }
    finish(ctx, origin, verdict)
}

/// Carries out a verdict: counts it, and does the head adjustment and redirect it asks for.
#[inline(always)]
fn finish(ctx: &XdpContext, origin: Origin, verdict: Verdict) -> u32 {
    // The redirect first, before the head moves: a way out that runs no XDP (not in `REDIRECT`)
    // leaves the frame, untouched, to the skb path.
    let forward = matches!(verdict.action, Action::Redirect | Action::Encap | Action::Decap);
    let to_skb_path = forward && REDIRECT.redirect(verdict.ifindex, xdp_action::XDP_PASS as u64).is_err();
    let action = match verdict.action {
        _ if to_skb_path => xdp_action::XDP_PASS,
        // The pipeline leaves NAT to the skb path in XDP (`nat`): never here.
        Action::Pass | Action::Nat => xdp_action::XDP_PASS,
        Action::Tx => xdp_action::XDP_TX,
        Action::Drop => xdp_action::XDP_DROP,
        Action::Redirect => xdp_action::XDP_REDIRECT,
        Action::Encap => match encap(ctx, &verdict.outer) {
            Some(()) => xdp_action::XDP_REDIRECT,
            None => xdp_action::XDP_DROP,
        },
        Action::Decap => {
            // SAFETY: the helper validates the adjustment against the frame.
            match unsafe { bpf_xdp_adjust_head(ctx.ctx, vxlan::OUTER_LEN as i32) } {
                0 => xdp_action::XDP_REDIRECT,
                _ => xdp_action::XDP_DROP,
            }
        }
        Action::Dhcp => {
            // SAFETY: does not return when the server's program is in place.
            unsafe { TAILS.tail_call(ctx, TAIL_DHCP) };
            xdp_action::XDP_DROP
        }
    };
    let counter = match (verdict.counter, action) {
        _ if to_skb_path => Counter::SkbPath,
        (_, xdp_action::XDP_DROP) if verdict.action != Action::Drop => Counter::DropRedirectFailed,
        (c, _) => c,
    };
    // From here on, one state for the verifier whatever the counter (see `stats::opaque`).
    let index = stats::opaque(counter.index());
    count_index(index, origin.slot);
    let fate = match action {
        xdp_action::XDP_DROP => Fate::Dropped,
        xdp_action::XDP_REDIRECT => Fate::Forwarded,
        _ => Fate::Other,
    };
    if fate == Fate::Dropped {
        // Off unless the agent runs with --bpf-log-level debug: then one record per dropped frame.
        debug!(ctx, "ifindex {}: dropped, counter {}", origin.ifindex, index);
    }
    // An encapsulated frame is shown by its inner headers.
    let inner = match (fate, verdict.action) {
        (Fate::Forwarded, Action::Encap) => vxlan::OUTER_LEN,
        _ => 0,
    };
    monitor::watch(&At::new(&mut XdpPacket::new(ctx), inner), origin.ifindex, index, fate);
    action
}

/// Grows the frame at the front and writes the outer headers there.
#[inline(always)]
fn encap(ctx: &XdpContext, outer: &Outer) -> Option<()> {
    // SAFETY: the helper validates the adjustment against the headroom.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(vxlan::OUTER_LEN as i32)) } != 0 {
        return None;
    }
    let mut pkt = XdpPacket::new(ctx);
    let inner_len = pkt.len().checked_sub(vxlan::OUTER_LEN)?;
    vxlan::write_outer(&mut pkt, outer, inner_len)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

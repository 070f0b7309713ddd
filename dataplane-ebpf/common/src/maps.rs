//! Keys and values of the BPF maps, laid out identically in the kernel and the controller.
//!
//! IPv4 addresses are stored as their four network-order bytes, so no side has to think about
//! endianness; integers are native-endian (both sides run on the same host).

use crate::eth::Mac;

/// Array of ports indexed by the ifindex of the port's host-side interface (an array lookup is
/// inlined by the verifier: no hash on the per-packet path).
pub const PORTS: &str = "PORTS";
/// Map of addresses known inside a VPC (gateways and ports), keyed by `EndpointKey`.
pub const ENDPOINTS: &str = "ENDPOINTS";
/// Per-CPU array of `u64` packet counters indexed by `Counter`.
pub const STATS: &str = "STATS";
/// One-slot array: the underlay interface and this host's tunnel endpoint (`Uplink`).
pub const UPLINK: &str = "UPLINK";
/// Underlay next hop (its MAC) per remote tunnel endpoint IP, resolved and refreshed by the agent.
pub const NEXTHOPS: &str = "NEXTHOPS";
/// Array indexed by ifindex, the agent's alone to write: how the skb path treats each attached
/// interface (`iface_flag`). Not pinned: each agent fills its own object's copy as it attaches
/// the interfaces, and an interface without flags is treated as before they existed.
pub const IFACE_FLAGS: &str = "IFACE_FLAGS";

/// One-slot array, the agent's alone to write: the interface the NAT program's next-hop lookups
/// (`bpf_fib_lookup`) start from, as a router's would from where a frame came in. It has
/// forwarding on and receives nothing (`alioth-fib`, a dummy or an IFB), so the lookup answers on
/// a host that does not forward, without the host forwarding anything more. 0: the lookup starts
/// from the uplink, and on such a host the kernel resolves each frame's next hop itself. Not
/// pinned, as `IFACE_FLAGS`.
pub const FIB_SOURCE: &str = "FIB_SOURCE";

/// Bits of an `IFACE_FLAGS` entry.
pub mod iface_flag {
    /// A port whose frames enter its guest's side directly (`bpf_redirect_peer`): a veth whose
    /// peer is in another network namespace. Without it, they are sent out of the port.
    pub const PEER: u8 = 1;
    /// The interface runs the skb path alone (no XDP): its TC program counts what it sees as
    /// `Counter::SkbOnly`.
    pub const SKB_ONLY: u8 = 2;
}

/// Device map of redirect targets indexed by ifindex: every port and uplink that runs XDP (XDP
/// leaves frames for the others to its skb path, which redirects skbs). An array
/// (2 MiB of pointers for `MAX_IFINDEX` slots): its lookup is about 10 ns cheaper per encapsulated
/// frame than the hash device map's.
pub const REDIRECT: &str = "REDIRECT";
/// Array of what the DHCP server answers local ports (`DhcpEntry`), at the slot a port's
/// `PortEntry::dhcp_slot` names (an array lookup is inlined: a hash lookup costs 40 ns here).
pub const DHCP: &str = "DHCP";
/// Ring buffer of `Event`s the agent logs and counts (a DHCPDECLINE, say).
pub const EVENTS: &str = "EVENTS";
/// One-slot array of a `u64` the agent bumps after every change to `ENDPOINTS` or `NEXTHOPS`
/// (0: not set yet). The XDP programs' per-CPU cache of destinations trusts only entries it
/// filled under the current value.
pub const GENERATION: &str = "GENERATION";
/// Array of `u64`s, read and written by the agent only: which record the maps hold
/// (`RECORD_SEQUENCE`: the record's sequence number, 0 while the maps are being changed) and for
/// which object (`RECORD_OBJECT`: its fingerprint). A restarted agent whose record has that
/// sequence takes the maps over as they are instead of filling new ones.
pub const RECORD: &str = "RECORD";
pub const RECORD_SEQUENCE: u32 = 0;
pub const RECORD_OBJECT: u32 = 1;
/// LRU map of an `events::EventGate` per port ifindex: the rate limit of `EVENTS`.
pub const EVENT_GATES: &str = "EVENT_GATES";
/// Program array of the programs the port program hands a frame to, each verified on its own
/// budget (`TAIL_DHCP`). Pinned: the kernel empties a program array no descriptor or pin holds,
/// which would cut the attached programs off their tails while no agent runs.
pub const TAILS: &str = "TAILS";
/// `TAILS` of the skb path (a program array holds programs of one type): the DHCP server on TC
/// (`alioth_port_dhcp_tc`) for ports on the skb path alone. Pinned, as `TAILS` is.
pub const TC_TAILS: &str = "TC_TAILS";
/// Slot of the DHCP server (`alioth_port_dhcp`, `alioth_port_dhcp_tc`) in `TAILS` and `TC_TAILS`.
pub const TAIL_DHCP: u32 = 0;
/// Size of `TAILS`.
pub const TAIL_SLOTS: u32 = 4;

/// Size of `PORTS`: interfaces with a larger ifindex cannot be ports (the agent refuses them).
pub const MAX_IFINDEX: u32 = 1 << 18;
/// Capacity of `ENDPOINTS` (gateways + local ports + remote neighbors). Allocated on use
/// (`BPF_F_NO_PREALLOC`), so an idle agent does not pay for it.
pub const MAX_ENDPOINTS: u32 = 1 << 21;
/// Capacity of `NEXTHOPS` (distinct remote hosts).
pub const MAX_NEXTHOPS: u32 = 1 << 16;
/// Slots of `DHCP` (preallocated, 392 bytes each; slot 0 means none): local ports with DHCP, and
/// room for an entry to be rewritten into a fresh slot.
pub const MAX_DHCP: u32 = 1 << 14;
/// Per-CPU array of each port's counters (`PortCounters`, indexed like `STATS`), at the slot its
/// `PortEntry::stats_slot` names: every frame a port sends, and every frame decapsulated for it,
/// is counted there as well as in `STATS`.
pub const PORT_STATS: &str = "PORT_STATS";
/// Slots of `PORT_STATS` (slot 0 means none): ports with counters of their own on one host, the
/// bound on the series `/metrics` has per port.
pub const MAX_PORT_STATS: u32 = 1 << 10;
/// One port's counters: one per `Counter`, as in `STATS`.
pub type PortCounters = [u64; crate::counters::COUNTER_SLOTS as usize];

/// Longest-prefix-match trie of the sources a port may send from beyond its fixed IPs (its allowed
/// address pairs): `allowed_source_key` -> 1.
pub const ALLOWED_SOURCES: &str = "ALLOWED_SOURCES";
/// Entries of `ALLOWED_SOURCES` (allocated on use).
pub const MAX_ALLOWED_SOURCES: u32 = 1 << 16;
/// Bits of an `ALLOWED_SOURCES` key before the address: the VNI (32), the port's MAC (48), padding
/// (16).
pub const ALLOWED_SOURCE_FIXED_BITS: u32 = 96;

/// The key data of address `ip` (or a prefix of it) allowed to the port with `mac` in `vni`.
pub const fn allowed_source_key(vni: u32, mac: &Mac, ip: [u8; 4]) -> [u8; 16] {
    let v = vni.to_be_bytes();
    [
        v[0], v[1], v[2], v[3], mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0, ip[0], ip[1], ip[2], ip[3],
    ]
}

/// Longest-prefix-match trie of the routes of subnets attached to routers (`route_key` ->
/// `Route`): what a frame a port sends to its gateway's MAC is routed by. A subnet is named by its
/// VPC's VNI and its gateway's address, which the port's entry carries already.
pub const ROUTES: &str = "ROUTES";
/// Entries of `ROUTES` (allocated on use).
pub const MAX_ROUTES: u32 = 1 << 16;
/// Bits of a `ROUTES` key before the destination: the VNI (32) and the subnet's gateway (32).
pub const ROUTE_FIXED_BITS: u32 = 64;

/// The key data of destination `dst` (or a prefix of it) in the routes of the subnet of `vni`
/// whose gateway is `gateway`.
pub const fn route_key(vni: u32, gateway: [u8; 4], dst: [u8; 4]) -> [u8; 12] {
    let v = vni.to_be_bytes();
    let g = gateway;
    [
        v[0], v[1], v[2], v[3], g[0], g[1], g[2], g[3], dst[0], dst[1], dst[2], dst[3],
    ]
}

/// Where a route sends a frame.
pub mod route_kind {
    /// To the port or neighbor that holds the destination address (in `Route::vni`).
    pub const DIRECT: u8 = 1;
    /// To the port or neighbor that holds `Route::ip` (in `Route::vni`): a router or NAT VM.
    pub const VIA: u8 = 2;
    /// Over VXLAN (`Route::vni`) to the tunnel endpoint `Route::ip`, at inner MAC `Route::mac`: a
    /// gateway.
    pub const TUNNEL: u8 = 3;
    /// Nowhere: a rule whose next hop is not known (dropped, counted as `drop_no_route`).
    pub const BLACKHOLE: u8 = 4;
    /// Out of the VPC by the host: a rule with no next hop to where no subnet of the router is.
    /// Taken by a source with an elastic IP (`nat`); dropped, as `drop_no_route`, from any other.
    pub const EXTERNAL: u8 = 5;

    /// How `alioth routes` and `trace` name a kind.
    pub const fn name(kind: u8) -> &'static str {
        match kind {
            DIRECT => "direct",
            VIA => "via",
            TUNNEL => "tunnel",
            BLACKHOLE => "blackhole",
            EXTERNAL => "external",
            _ => "unknown",
        }
    }
}

/// One route of `ROUTES`. The MACs first, each on an 8-byte boundary: the verifier refuses the
/// 4-byte loads LLVM copies them with at any offset not a multiple of 4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Route {
    /// Source MAC of routed frames: the router's host DVR MAC.
    pub router_mac: Mac,
    pub _pad: [u8; 2],
    /// `TUNNEL`: the gateway's MAC, the inner destination.
    pub mac: Mac,
    /// One of `route_kind`.
    pub kind: u8,
    pub _pad2: u8,
    /// VNI of the destination: the VPC of the subnet routed to (a router joins subnets of several).
    pub vni: u32,
    /// `VIA`: the next hop's address; `TUNNEL`: the gateway's tunnel endpoint.
    pub ip: [u8; 4],
}

/// Hash map of the local ports by VNI and MAC (`PortMacKey` -> ifindex): where the uplink
/// delivers a frame routed to a port as the next hop of a rule (a router or NAT VM), whose
/// destination address is none of the port's.
pub const PORT_MACS: &str = "PORT_MACS";
/// Entries of `PORT_MACS`.
pub const MAX_PORT_MACS: u32 = 1 << 16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PortMacKey {
    pub vni: u32,
    pub mac: Mac,
    pub _pad: [u8; 2],
}

/// Size of `EVENTS` in bytes (a power of two pages).
pub const EVENTS_BYTES: u32 = 1 << 16;
/// `BPF_F_NO_PREALLOC`.
pub const NO_PREALLOC: u32 = 1;

/// A local port as the XDP program sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortEntry {
    /// The VM's MAC address.
    pub mac: Mac,
    /// Slot of the port's own counters in `PORT_STATS`; 0: none (every slot taken).
    pub stats_slot: u16,
    /// VNI (tunnel id) of the port's VPC: the key space of `ENDPOINTS`.
    pub vni: u32,
    /// The port's primary IPv4 address.
    pub ip: [u8; 4],
    /// Gateway of the primary address's subnet, answered without a hash lookup.
    pub gateway_ip: [u8; 4],
    pub gateway_mac: Mac,
    /// The rule set of the port's security groups (`firewall`), shared by the ports with the
    /// same groups; 0: unfiltered.
    pub policy: u16,
    /// Slot of the port's `DhcpEntry` in `DHCP`; 0: no DHCP (its subnet has it disabled).
    pub dhcp_slot: u32,
    /// The port's connection-tracking zone (its own, whatever rule set it shares); 0 when
    /// unfiltered.
    pub zone: u32,
}

impl PortEntry {
    /// Array slots of interfaces that are not ports are all zero; a programmed port has a VNI.
    pub const fn is_programmed(&self) -> bool {
        self.vni != 0
    }

    /// Whether the port's subnet has a gateway: the agent writes an all-zero one when it has none
    /// (nothing is answered for it or routed through it).
    #[inline(always)]
    pub fn has_gateway(&self) -> bool {
        self.gateway_ip != [0; 4]
    }
}

/// An address inside a VPC.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EndpointKey {
    pub vni: u32,
    pub ip: [u8; 4],
}

/// What kind of thing owns an address.
pub mod endpoint_kind {
    /// A subnet's gateway, answered by the data plane itself.
    pub const GATEWAY: u8 = 1;
    /// A port on this host.
    pub const LOCAL_PORT: u8 = 2;
    /// A port on another host, reached over the overlay.
    pub const REMOTE_PORT: u8 = 3;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Endpoint {
    pub mac: Mac,
    /// One of `endpoint_kind`.
    pub kind: u8,
    pub _pad: u8,
    /// For a local port: its interface (0 while it has none; the agent fills it in when it attaches
    /// the port, the planner always renders 0); unused otherwise.
    pub ifindex: u32,
    /// For a remote port: the underlay address of its host.
    pub host_ip: [u8; 4],
}

impl Endpoint {
    pub const fn is_gateway(&self) -> bool {
        self.kind == endpoint_kind::GATEWAY
    }
}

/// The underlay side of this host, as the agent configured it (all zero: no overlay).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Uplink {
    /// Interface that carries VXLAN; 0 while no uplink is configured.
    pub ifindex: u32,
    /// This host's tunnel endpoint address (outer source IP, and the only outer destination decapsulated).
    pub ip: [u8; 4],
    pub mac: Mac,
    /// VXLAN UDP destination port (host order).
    pub vxlan_port: u16,
    /// MTU of the uplink: encapsulated packets larger than this are dropped.
    pub mtu: u32,
}

impl Uplink {
    pub const fn is_configured(&self) -> bool {
        self.ifindex != 0
    }
}

/// Underlay next hop toward a remote tunnel endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NextHop {
    pub mac: Mac,
    pub _pad: [u8; 2],
}

/// Options the server sends only when the client's parameter request list names them.
pub const DHCP_MAX_OPTIONAL: usize = 8;
/// Bytes of a reply's options field for the subnet's and port's options (whole 8-byte words). With
/// the per-message options, the longest reply is 212 bytes longer than a request of the BOOTP
/// minimum: what XDP's headroom has room for (256 bytes less the kernel's 40-byte frame header),
/// so replies grow at the front, which the kernel does without zeroing the new bytes first.
pub const DHCP_OPTIONS_LEN: usize = 240;
/// Bytes before them for the per-message options (`dhcp::message_options`).
pub const DHCP_MESSAGE_OPTIONS_LEN: usize = 32;
/// The whole options field of a reply.
pub const DHCP_REPLY_OPTIONS_LEN: usize = DHCP_MESSAGE_OPTIONS_LEN + DHCP_OPTIONS_LEN;

/// Everything a DHCP reply to one port says, rendered by the agent: the XDP program copies it and
/// fills in the per-message fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DhcpEntry {
    /// For optional option `i`: bit `w` set when 8-byte word `w` of `options` belongs to it (each
    /// optional option starts on a word boundary and is padded with PAD to the next one).
    pub optional_words: [u64; DHCP_MAX_OPTIONAL],
    /// The reply's options field: the per-message options (message type 0: filled in per reply),
    /// then the subnet's and the port's, END, PAD to the end. Right after the u64s, so 8-byte
    /// aligned: the program copies it a word per load.
    pub options: [u8; DHCP_REPLY_OPTIONS_LEN],
    /// The address handed out (yiaddr).
    pub ip: [u8; 4],
    /// Server identifier and reply source: the subnet's gateway.
    pub server_ip: [u8; 4],
    pub server_mac: Mac,
    /// 8-byte words of `options` in use (up to and including END).
    pub words: u8,
    pub _pad: u8,
    /// `dhcp::options_sum` of `options`: the program never sums the words it copies.
    pub options_sum: u32,
    /// Codes of the optional options (0: unused slot).
    pub optional_codes: [u8; DHCP_MAX_OPTIONAL],
    pub _pad2: [u8; 4],
}

impl DhcpEntry {
    /// Word `w` (< `DHCP_REPLY_OPTIONS_LEN / 8`) of `options`, in memory order.
    #[inline(always)]
    pub fn option_word(&self, w: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.options[w * 8..w * 8 + 8]);
        u64::from_ne_bytes(b)
    }
}

impl Default for DhcpEntry {
    fn default() -> Self {
        DhcpEntry {
            optional_words: [0; DHCP_MAX_OPTIONAL],
            options: [0; DHCP_REPLY_OPTIONS_LEN],
            ip: [0; 4],
            server_ip: [0; 4],
            server_mac: [0; 6],
            words: 0,
            _pad: 0,
            options_sum: 0,
            optional_codes: [0; DHCP_MAX_OPTIONAL],
            _pad2: [0; 4],
        }
    }
}

/// Something the data plane tells the agent: which counter fired, on which interface, about which
/// address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Event {
    pub ifindex: u32,
    /// `Counter` index.
    pub counter: u32,
    pub mac: Mac,
    pub _pad: [u8; 2],
    pub ip: [u8; 4],
    /// Events of this port held back by its `EventGate` since the last one reported.
    pub suppressed: u32,
}

#[cfg(feature = "user")]
mod pod {
    // What makes each of these `Pod`: a plain `repr(C)` struct of integers and byte arrays whose
    // padding is spelled out as fields, so every byte is initialized and any bit pattern is valid.
    // SAFETY: see above.
    unsafe impl aya::Pod for super::PortEntry {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::EndpointKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Endpoint {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Uplink {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::NextHop {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Route {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::PortMacKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::DhcpEntry {}
    // SAFETY: see above.
    unsafe impl aya::Pod for crate::events::EventGate {}
    // SAFETY: see above.
    unsafe impl aya::Pod for crate::monitor::Watch {}
    // SAFETY: see above.
    unsafe impl aya::Pod for crate::probe::ProbeReply {}
    // SAFETY: see above.
    unsafe impl aya::Pod for crate::firewall::RuleBits {}
    // SAFETY: see above.
    unsafe impl aya::Pod for crate::firewall::CtValue {}
    // SAFETY: see above.
    unsafe impl aya::Pod for crate::conntrack::FlowKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for crate::snat::SnatKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for crate::snat::SnatBackKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for crate::snat::SnatBack {}
}

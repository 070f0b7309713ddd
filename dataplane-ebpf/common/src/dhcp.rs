//! The DHCP server (RFC 2131/2132): a BOOTREQUEST from a port is parsed, answered from the port's
//! pre-rendered `DhcpEntry`, and the frame is rewritten in place into the reply.
//!
//! Every reply has one layout (the entry's options field, whose per-message options are filled in,
//! up to its END): all but the options past the BOOTP minimum are written into one bounds-checked
//! array of the frame, and the checksum is summed from the values written plus the sum the agent
//! stored with the options. The only variable reads are the request's options, walked by a bounded
//! loop in 4-byte windows.

use crate::checksum;
use crate::counters::Counter;
use crate::eth::{Mac, BROADCAST, ETH_HLEN, ETH_P_IPV4};
use crate::ipv4::{Ipv4, IPV4_MIN_HLEN, PROTO_UDP};
use crate::maps::{DhcpEntry, DHCP_MAX_OPTIONAL, DHCP_MESSAGE_OPTIONS_LEN, DHCP_REPLY_OPTIONS_LEN};
use crate::packet::{clear, Packet};

mod reply;
pub use reply::{reply_len, write_reply};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// `op` of a server's or relay's answer.
pub const BOOTREPLY: u8 = 2;

/// Frame offsets (requests with IP options are not served, so the UDP header has a fixed place).
pub const UDP: usize = ETH_HLEN + IPV4_MIN_HLEN;
pub const BOOTP: usize = UDP + 8;
const XID_SECS: usize = BOOTP + 4;
const CHADDR: usize = BOOTP + 28;
const SNAME: usize = BOOTP + 44;
const SNAME_LEN: usize = 64;
const FILE: usize = BOOTP + 108;
const FILE_LEN: usize = 128;
const MAGIC: usize = BOOTP + 236;
/// Where the options start.
pub const OPTIONS: usize = BOOTP + 240;
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Longest reply frame: the whole options field of a `DhcpEntry`. An IP datagram of 540 bytes:
/// under the 576 every client takes.
pub const MAX_REPLY_LEN: usize = OPTIONS + DHCP_REPLY_OPTIONS_LEN;
/// It grows from a request of the BOOTP minimum within XDP's usable headroom (256 bytes less the
/// kernel's 40-byte frame header): at the front, which the kernel does not zero.
const _: () = assert!(MAX_REPLY_LEN - (BOOTP + 300) <= 256 - 40);
/// 8-byte words of a reply's options field, of its per-message options, and of every reply (300
/// bytes of message, the BOOTP minimum, and a NAK's length).
const OPTION_WORDS: usize = DHCP_REPLY_OPTIONS_LEN / 8;
const MESSAGE_WORDS: usize = DHCP_MESSAGE_OPTIONS_LEN / 8;
const MIN_WORDS: usize = (BOOTP + 300 - OPTIONS).div_ceil(8);
/// Layout of the per-message options (`message_options`): the message type's value, then 54, then
/// the lease times from `LEASE_AT` to `LEASE_END`, PAD after.
const TYPE_AT: usize = 2;
const LEASE_AT: usize = 9;
const LEASE_END: usize = LEASE_AT + 3 * 6;
/// The word the lease times start in, the bytes of it before them, and END right after 54 (a NAK).
const LEASE_WORD: usize = LEASE_AT / 8;
const LEASE_KEEP: u64 = (1 << ((LEASE_AT % 8) * 8)) - 1;
const NAK_END: u64 = (opt::END as u64) << ((LEASE_AT % 8) * 8);
const _: () = assert!(LEASE_END <= DHCP_MESSAGE_OPTIONS_LEN && TYPE_AT.is_multiple_of(2));
/// Broadcast bit of `flags`.
const FLAG_BROADCAST: u8 = 0x80;

/// Message types (option 53).
pub mod msg {
    pub const DISCOVER: u8 = 1;
    pub const OFFER: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const DECLINE: u8 = 4;
    pub const ACK: u8 = 5;
    pub const NAK: u8 = 6;
    pub const RELEASE: u8 = 7;
    pub const INFORM: u8 = 8;
}

/// Option codes.
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOST_NAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const MTU: u8 = 26;
    pub const BROADCAST: u8 = 28;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_LIST: u8 = 55;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const END: u8 = 255;
}

/// Most options read per field (options, file, sname); the rest of a field is ignored.
const MAX_OPTIONS: usize = 48;
/// Most codes of a parameter request list looked at.
const MAX_PARAMETERS: usize = 64;
/// No option of a frame the port MTU allows starts beyond this (bounds the walk for the verifier).
const MAX_OFFSET: usize = 1600;

/// What the server needs of a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub xid: [u8; 4],
    pub flags: [u8; 2],
    /// The whole client hardware address field (the MAC and its padding).
    /// As two words in memory order: byte by byte, it would take 16 stack slots in BPF.
    pub chaddr: [u64; 2],
    pub msg_type: u8,
    /// Option 52: 1 = `file` holds options, 2 = `sname`, 3 = both.
    pub overload: u8,
    /// A client identifier of hardware type 1 that names another MAC than `chaddr`.
    pub foreign_client_id: bool,
    pub ciaddr: [u8; 4],
    /// The relay agent's address: non-zero only when the port relays its own requests (a relay
    /// agent on the VM, or a load generator such as perfdhcp); the reply goes back to it.
    pub giaddr: [u8; 4],
    /// Option 50; 0.0.0.0 when absent.
    pub requested_ip: [u8; 4],
    /// Option 54; 0.0.0.0 when absent.
    pub server_id: [u8; 4],
    /// Frame offset and length of the parameter request list (length 0: the client sent none).
    pub parameters_off: usize,
    pub parameters_len: usize,
}

/// Source and destination port of the UDP header after an option-less IPv4 header, or `None`
/// when it is cut short.
#[inline(always)]
pub fn udp_ports<P: Packet + ?Sized>(pkt: &P) -> Option<(u16, u16)> {
    let p = pkt.array::<4>(UDP)?;
    Some((u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]])))
}

/// Parses the BOOTREQUEST of a UDP datagram to port 67 sent by the VM with `mac` and address
/// `port_ip`.
#[inline(always)]
pub fn parse<P: Packet + ?Sized>(pkt: &P, ip: &Ipv4, mac: &Mac, port_ip: &[u8; 4]) -> Result<Request, Counter> {
    if ip.proto != PROTO_UDP || ip.header_len != IPV4_MIN_HLEN || ip.is_fragment() {
        return Err(Counter::DropDhcpMalformed);
    }
    let fixed = pkt.array::<4>(BOOTP).ok_or(Counter::DropDhcpMalformed)?;
    // A BOOTREPLY to port 67 is a relay's or server's answer: no server inside a VPC.
    if fixed[0] == BOOTREPLY {
        return Err(Counter::DropDhcpServer);
    }
    // BOOTREQUEST, Ethernet, 6-byte addresses.
    if fixed[0] != 1 || fixed[1] != 1 || fixed[2] != 6 {
        return Err(Counter::DropDhcpMalformed);
    }
    if pkt.array::<4>(MAGIC) != Some(&MAGIC_COOKIE) {
        return Err(Counter::DropDhcpMalformed);
    }
    if pkt.array::<6>(CHADDR) != Some(mac) {
        return Err(Counter::DropDhcpUnknownClient);
    }
    let head = pkt.array::<{ 44 - 4 }>(XID_SECS).ok_or(Counter::DropDhcpMalformed)?;
    let mut req = Request::default();
    req.xid.copy_from_slice(&head[..4]);
    req.flags.copy_from_slice(&head[6..8]);
    req.ciaddr.copy_from_slice(&head[8..12]);
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&head[i..i + 8]);
        u64::from_ne_bytes(w)
    };
    req.chaddr = [word(24), word(32)];
    let end = ETH_HLEN + ip.total_len;
    if !options(pkt, OPTIONS, end, mac, &mut req) {
        return Err(Counter::DropDhcpMalformed);
    }
    // RFC 2131 4.1: the file field first, then sname.
    if req.overload & 1 != 0 && !options(pkt, FILE, FILE + FILE_LEN, mac, &mut req) {
        return Err(Counter::DropDhcpMalformed);
    }
    if req.overload & 2 != 0 && !options(pkt, SNAME, SNAME + SNAME_LEN, mac, &mut req) {
        return Err(Counter::DropDhcpMalformed);
    }
    // Relayed: only by the port itself, for its own MAC; the reply goes to the port's address, so
    // nobody else's traffic can be steered with it. Read after the options walks: a value the
    // verifier knows two ways would double the states it explores there.
    let giaddr = *pkt.array::<4>(BOOTP + 24).ok_or(Counter::DropDhcpMalformed)?;
    if giaddr != [0; 4] && giaddr != *port_ip {
        return Err(Counter::DropSpoofedIp);
    }
    req.giaddr = giaddr;
    if req.foreign_client_id {
        return Err(Counter::DropDhcpUnknownClient);
    }
    if req.msg_type == 0 {
        return Err(Counter::DropDhcpMalformed);
    }
    Ok(req)
}

/// Walks the options in `[start, end)` into `req`; false when an option overruns the field.
#[inline(always)]
fn options<P: Packet + ?Sized>(pkt: &P, start: usize, end: usize, mac: &Mac, req: &mut Request) -> bool {
    // Opaque to LLVM: it would otherwise prove some reads in bounds from the field's end and an
    // earlier length check and drop their pointer checks, which the verifier needs to see.
    let end = core::hint::black_box(end);
    let mut off = start;
    let mut n = 0;
    while n < MAX_OPTIONS {
        n += 1;
        // A no-op on the value, but the verifier's bounds for it become [0, 2047] whatever path led
        // here, so the states of later iterations are covered by earlier ones and the walk is not
        // explored once per combination of option lengths.
        off &= 0x7ff;
        if off >= end || off > MAX_OFFSET {
            return true;
        }
        // A 4-byte window: code, length and up to two bytes of value. Fewer than four bytes left
        // in the frame can hold no option we read (END, PAD and runts end the walk).
        let Some(w) = pkt.array::<4>(off) else {
            return true;
        };
        let (code, len) = (w[0], w[1] as usize);
        if code == opt::PAD {
            off += 1;
            continue;
        }
        if code == opt::END {
            return true;
        }
        let value = off + 2;
        if value + len > end {
            return false;
        }
        match (code, len) {
            (opt::MESSAGE_TYPE, 1) => req.msg_type = w[2],
            (opt::OVERLOAD, 1) => req.overload |= w[2],
            (opt::REQUESTED_IP, 4) => {
                if let Some(v) = pkt.array::<4>(value) {
                    req.requested_ip = *v;
                }
            }
            (opt::SERVER_ID, 4) => {
                if let Some(v) = pkt.array::<4>(value) {
                    req.server_id = *v;
                }
            }
            (opt::PARAMETER_LIST, _) => {
                req.parameters_off = value;
                req.parameters_len = len;
            }
            // Type 1 (Ethernet) + MAC: must be the port's; other forms (DUIDs...) are opaque.
            (opt::CLIENT_ID, 7) => {
                if let Some(v) = pkt.array::<8>(off + 1) {
                    if v[1] == 1 && v[2..8] != mac[..] {
                        req.foreign_client_id = true;
                    }
                }
            }
            _ => {}
        }
        off = value + len;
    }
    true
}

/// The server's decision: the reply's message type (0: none) and the counter that accounts for it.
#[inline(always)]
pub fn decide(req: &Request, entry: &DhcpEntry) -> (u8, Counter) {
    match req.msg_type {
        msg::DISCOVER => (msg::OFFER, Counter::DhcpOffer),
        msg::REQUEST => {
            // SELECTING names the chosen server; another one's offer was taken.
            if req.server_id != [0; 4] && req.server_id != entry.server_ip {
                return (0, Counter::DropDhcpOtherServer);
            }
            // SELECTING and INIT-REBOOT ask with option 50, RENEWING and REBINDING with ciaddr.
            let asked = if req.requested_ip != [0; 4] {
                req.requested_ip
            } else {
                req.ciaddr
            };
            match asked {
                [0, 0, 0, 0] => (0, Counter::DropDhcpMalformed),
                a if a == entry.ip => (msg::ACK, Counter::DhcpAck),
                _ => (msg::NAK, Counter::DhcpNak),
            }
        }
        msg::INFORM => (msg::ACK, Counter::DhcpInform),
        msg::RELEASE => (0, Counter::DhcpRelease),
        msg::DECLINE => (0, Counter::DhcpDecline),
        _ => (0, Counter::DropDhcpUnsupported),
    }
}

/// Words of the rendered options to blank (turn into PAD): the optional options the client's
/// parameter request list does not name. A client that sends no list gets everything.
///
/// The list becomes a 256-bit set first: no value in the loop depends on which codes matched, so
/// the verifier's walk of it does not fork per combination of options.
#[inline(always)]
pub fn unrequested_words<P: Packet + ?Sized>(pkt: &P, req: &Request, entry: &DhcpEntry) -> u64 {
    let len = core::hint::black_box(req.parameters_len);
    let start = core::hint::black_box(req.parameters_off);
    if len == 0 || start > MAX_OFFSET {
        return 0;
    }
    let mut set = [0u64; 4];
    let mut i = 0;
    while i < MAX_PARAMETERS / 4 {
        if i * 4 >= len {
            break;
        }
        // Clients pad their requests (to the BOOTP minimum of 300 bytes), so the list's last
        // window is inside the frame. A runt that ends within 3 bytes of the list's end gets
        // every option rather than lose the ones its last codes name (any read that makes up
        // for it costs the verifier a walk per list length).
        let Some(w) = pkt.array::<4>(start + i * 4) else {
            return 0;
        };
        let mut j = 0;
        while j < 4 {
            if i * 4 + j < len {
                add(&mut set, w[j]);
            }
            j += 1;
        }
        i += 1;
    }
    let mut words = 0;
    let mut k = 0;
    while k < DHCP_MAX_OPTIONAL {
        let code = entry.optional_codes[k];
        if code != 0 && !contains(&set, code) {
            words |= entry.optional_words[k];
        }
        k += 1;
    }
    words
}

/// Adds `code` to a 256-bit set (constant indexes only: one branch per word).
#[inline(always)]
fn add(set: &mut [u64; 4], code: u8) {
    let bit = 1u64 << (code & 63);
    match code >> 6 {
        0 => set[0] |= bit,
        1 => set[1] |= bit,
        2 => set[2] |= bit,
        _ => set[3] |= bit,
    }
}

#[inline(always)]
fn contains(set: &[u64; 4], code: u8) -> bool {
    let word = match code >> 6 {
        0 => set[0],
        1 => set[1],
        2 => set[2],
        _ => set[3],
    };
    (word >> (code & 63)) & 1 != 0
}

/// The per-message options at the start of every reply's options field, as the agent renders them
/// into a `DhcpEntry`: 53 (its value, the message type, filled in per reply), 54, the lease times
/// 51, 58 and 59 (`lease`: seconds), then PAD to a whole word.
pub fn message_options(server_ip: [u8; 4], lease: [u32; 3]) -> [u8; DHCP_MESSAGE_OPTIONS_LEN] {
    let mut m = [opt::PAD; DHCP_MESSAGE_OPTIONS_LEN];
    m[..TYPE_AT + 1].copy_from_slice(&[opt::MESSAGE_TYPE, 1, 0]);
    m[TYPE_AT + 1..TYPE_AT + 3].copy_from_slice(&[opt::SERVER_ID, 4]);
    m[TYPE_AT + 3..LEASE_AT].copy_from_slice(&server_ip);
    let mut at = LEASE_AT;
    for (code, secs) in [opt::LEASE_TIME, opt::RENEWAL_TIME, opt::REBINDING_TIME]
        .into_iter()
        .zip(lease)
    {
        m[at..at + 2].copy_from_slice(&[code, 4]);
        m[at + 2..at + 6].copy_from_slice(&secs.to_be_bytes());
        at += 6;
    }
    debug_assert_eq!(at, LEASE_END);
    m
}

/// The one's complement sum of a `DhcpEntry`'s options field (in memory order, folded), which the
/// agent stores beside it so that the program copies the options without summing them.
pub fn options_sum(options: &[u8; DHCP_REPLY_OPTIONS_LEN]) -> u32 {
    checksum::fold(checksum::sum_memory_order(options)) as u32
}

/// The two 32-bit halves of a word, added (a step of a one's complement sum).
#[inline(always)]
fn halves(word: u64) -> u64 {
    (word & 0xffff_ffff) + (word >> 32)
}

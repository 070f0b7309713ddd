//! The DHCP server (RFC 2131/2132): a BOOTREQUEST from a port is parsed, answered from the port's
//! pre-rendered `DhcpEntry`, and the frame is rewritten in place into the reply.
//!
//! Every offset the reply is written at is a constant: the reply has one fixed layout (per-message
//! options, then the rendered options), so the verifier sees no variable packet writes. The only
//! variable reads are the request's options, walked by a bounded loop in 4-byte windows.

use crate::checksum;
use crate::counters::Counter;
use crate::eth::{Mac, BROADCAST, ETH_HLEN, ETH_P_IPV4};
use crate::ipv4::{Ipv4, IPV4_MIN_HLEN, PROTO_UDP};
use crate::maps::{DhcpEntry, DHCP_MAX_OPTIONAL, DHCP_OPTIONS_LEN};
use crate::packet::{clear, Packet};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

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
/// Room for the per-message options: 53, 54, 51, 58, 59, then PAD.
pub const MESSAGE_OPTIONS_LEN: usize = 32;
/// Where the rendered options of the `DhcpEntry` go.
pub const RENDERED: usize = OPTIONS + MESSAGE_OPTIONS_LEN;
/// Longest OFFER or ACK frame (an IP datagram of 564 bytes: under the 576 every client takes).
pub const MAX_REPLY_LEN: usize = RENDERED + DHCP_OPTIONS_LEN;
/// Length of a NAK frame: the BOOTP minimum of 300 bytes of message.
pub const NAK_LEN: usize = BOOTP + 300;
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
    if fixed[0] == 2 {
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

/// Length of an OFFER or ACK frame: as many option words as the entry uses, at least the BOOTP
/// minimum of 300 bytes of message. Replies barely larger than requests need little room to
/// grow into (veth frames have about 200 bytes in front and often nothing behind).
#[inline(always)]
pub fn reply_len(entry: &DhcpEntry) -> usize {
    let min = (NAK_LEN - RENDERED).div_ceil(8);
    let words = (entry.words as usize).clamp(min, DHCP_OPTIONS_LEN / 8);
    RENDERED + words * 8
}

/// Turns the request in `pkt` into the server's `reply` (OFFER, ACK or NAK) to the client `mac`.
/// `unrequested`: words of the rendered options to leave out (`unrequested_words`).
///
/// Everything is written from `req` and `entry`: the frame may grow at either end (veth leaves
/// little tailroom but always 256 bytes of headroom), which moves the request's bytes.
#[inline(always)]
pub fn write_reply<P: Packet + ?Sized>(
    pkt: &mut P,
    req: &Request,
    entry: &DhcpEntry,
    mac: &Mac,
    reply: u8,
    unrequested: u64,
) -> Result<(), Counter> {
    let len = if reply == msg::NAK { NAK_LEN } else { reply_len(entry) };
    if pkt.resize(len).is_none() {
        return Err(Counter::DropDhcpNoRoom);
    }
    build(pkt, req, entry, mac, reply, unrequested, len).ok_or(Counter::DropDhcpMalformed)
}

#[inline(always)]
fn build<P: Packet + ?Sized>(
    pkt: &mut P,
    req: &Request,
    entry: &DhcpEntry,
    mac: &Mac,
    reply: u8,
    unrequested: u64,
    len: usize,
) -> Option<()> {
    let nak = reply == msg::NAK;
    let inform = req.msg_type == msg::INFORM;

    let yiaddr = if nak || inform { [0; 4] } else { entry.ip };
    let ciaddr = if reply == msg::ACK { req.ciaddr } else { [0; 4] };
    // RFC 2131 4.1: a relayed request is answered to the relay's server port (a NAK with the
    // broadcast bit, so the relay broadcasts it); else NAKs are broadcast; a client with an
    // address gets it unicast; one without, broadcast if it asks, else unicast to the offered
    // address at its MAC.
    let relayed = req.giaddr != [0; 4];
    let broadcast = req.flags[0] & FLAG_BROADCAST != 0;
    let mut flags = req.flags;
    if relayed && nak {
        flags[0] |= FLAG_BROADCAST;
    }
    let dst_port = if relayed { SERVER_PORT } else { CLIENT_PORT };
    let (dst_mac, dst_ip) = if relayed {
        (*mac, req.giaddr)
    } else if nak || (req.ciaddr == [0; 4] && (broadcast || yiaddr == [0; 4])) {
        (BROADCAST, [255; 4])
    } else if req.ciaddr != [0; 4] {
        (*mac, req.ciaddr)
    } else {
        (*mac, yiaddr)
    };
    let e = pkt.array_mut::<ETH_HLEN>(0)?;
    e[..6].copy_from_slice(&dst_mac);
    e[6..12].copy_from_slice(&entry.server_mac);
    e[12..].copy_from_slice(&ETH_P_IPV4.to_be_bytes());

    let ip_len = ((len - ETH_HLEN) as u16).to_be_bytes();
    let mut h = [0u8; IPV4_MIN_HLEN];
    h[0] = 0x45;
    h[2] = ip_len[0];
    h[3] = ip_len[1];
    h[8] = 64;
    h[9] = PROTO_UDP;
    h[12..16].copy_from_slice(&entry.server_ip);
    h[16..20].copy_from_slice(&dst_ip);
    let csum = checksum::finish(checksum::sum_bytes(&h)).to_be_bytes();
    h[10] = csum[0];
    h[11] = csum[1];
    *pkt.array_mut::<IPV4_MIN_HLEN>(ETH_HLEN)? = h;

    let udp_len = ((len - UDP) as u16).to_be_bytes();
    let udp = [0, SERVER_PORT as u8, 0, dst_port as u8, udp_len[0], udp_len[1], 0, 0];
    *pkt.array_mut::<8>(UDP)? = udp;

    // op, htype, hlen, hops, xid, secs 0, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr.
    let op = [2, 1, 6, 0];
    let b = pkt.array_mut::<{ CHADDR + 16 - BOOTP }>(BOOTP)?;
    b[..4].copy_from_slice(&op);
    b[4..8].copy_from_slice(&req.xid);
    b[8..10].copy_from_slice(&[0, 0]);
    b[10..12].copy_from_slice(&flags);
    b[12..16].copy_from_slice(&ciaddr);
    b[16..20].copy_from_slice(&yiaddr);
    b[20..24].copy_from_slice(&[0; 4]);
    b[24..28].copy_from_slice(&req.giaddr);
    b[28..36].copy_from_slice(&req.chaddr[0].to_ne_bytes());
    b[36..].copy_from_slice(&req.chaddr[1].to_ne_bytes());
    // No server name or boot file (the request's may have carried overloaded options).
    clear(pkt.array_mut::<{ SNAME_LEN + FILE_LEN }>(SNAME)?);
    *pkt.array_mut::<4>(MAGIC)? = MAGIC_COOKIE;

    let mut m = [0u8; MESSAGE_OPTIONS_LEN];
    m[..3].copy_from_slice(&[opt::MESSAGE_TYPE, 1, reply]);
    m[3..5].copy_from_slice(&[opt::SERVER_ID, 4]);
    m[5..9].copy_from_slice(&entry.server_ip);
    if nak {
        m[9] = opt::END;
    } else if !inform {
        // An INFORM gets configuration, never a lease.
        m[9..11].copy_from_slice(&[opt::LEASE_TIME, 4]);
        m[11..15].copy_from_slice(&entry.lease[..4]);
        m[15..17].copy_from_slice(&[opt::RENEWAL_TIME, 4]);
        m[17..21].copy_from_slice(&entry.lease[4..8]);
        m[21..23].copy_from_slice(&[opt::REBINDING_TIME, 4]);
        m[23..27].copy_from_slice(&entry.lease[8..]);
    }
    *pkt.array_mut::<MESSAGE_OPTIONS_LEN>(OPTIONS)? = m;

    // The checksum is summed from what was written, never read back from the packet.
    let mut sum = checksum::sum_bytes(&udp) + checksum::sum_bytes(&op) + checksum::sum_bytes(&req.xid);
    sum += checksum::sum_bytes(&flags) + checksum::sum_bytes(&ciaddr) + checksum::sum_bytes(&yiaddr);
    sum += checksum::sum_bytes(&req.giaddr) + checksum::sum_bytes(&MAGIC_COOKIE) + checksum::sum_bytes(&m);
    // Words in memory order are summed as 32-bit halves, which fold to the byte-swapped 16-bit
    // sum of the same bytes.
    let mut native = halves(req.chaddr[0]) + halves(req.chaddr[1]);
    if nak {
        clear(pkt.array_mut::<{ NAK_LEN - RENDERED }>(RENDERED)?);
    } else {
        // The rendered options, a word per load and store (an unrequested one's words as PAD).
        let words = (len - RENDERED) / 8;
        let mut w = 0;
        while w < DHCP_OPTIONS_LEN / 8 {
            if w >= words {
                break;
            }
            let word = if unrequested & (1 << w) == 0 {
                entry.option_word(w)
            } else {
                0
            };
            *pkt.array_mut::<8>(RENDERED + w * 8)? = word.to_ne_bytes();
            native += halves(word);
            w += 1;
        }
    }
    sum += checksum::fold_memory_order(native) as u64;
    // Pseudo-header: addresses, protocol, UDP length.
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&entry.server_ip);
    pseudo[4..8].copy_from_slice(&dst_ip);
    pseudo[9] = PROTO_UDP;
    pseudo[10] = udp_len[0];
    pseudo[11] = udp_len[1];
    let csum = match checksum::finish(sum + checksum::sum_bytes(&pseudo)) {
        // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
        0 => 0xffff,
        c => c,
    };
    pkt.array_mut::<2>(UDP + 6)?.copy_from_slice(&csum.to_be_bytes());
    Some(())
}

/// The two 32-bit halves of a word, added (a step of a one's complement sum).
#[inline(always)]
fn halves(word: u64) -> u64 {
    (word & 0xffff_ffff) + (word >> 32)
}

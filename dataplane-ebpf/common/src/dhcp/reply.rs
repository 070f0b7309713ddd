//! The reply, written over the request: its headers, then the entry's options (see the parent).

use super::*;

/// Length of a reply frame: the options field up to the entry's END (at least the BOOTP minimum
/// of 300 bytes of message; a NAK is that long).
#[inline(always)]
pub fn reply_len(entry: &DhcpEntry, reply: u8) -> usize {
    let words = if reply == msg::NAK {
        MIN_WORDS
    } else {
        (entry.words as usize).clamp(MIN_WORDS, OPTION_WORDS)
    };
    OPTIONS + words * 8
}

/// Turns the request in `pkt` into the server's `reply` (OFFER, ACK or NAK) to the client `mac`.
/// `unrequested`: words of the entry's options to leave out (`unrequested_words`).
///
/// Everything is written from `req` and `entry`: the frame may grow at either end, which moves the
/// request's bytes.
#[inline(always)]
pub fn write_reply<P: Packet + ?Sized>(
    pkt: &mut P,
    req: &Request,
    entry: &DhcpEntry,
    mac: &Mac,
    reply: u8,
    unrequested: u64,
) -> Result<(), Counter> {
    let len = reply_len(entry, reply);
    if pkt.resize(len).is_none() {
        return Err(Counter::DropDhcpNoRoom);
    }
    build(pkt, req, entry, mac, reply, unrequested, len).ok_or(Counter::DropDhcpNoRoom)
}

/// The shortest reply: up to the options words every reply has.
const MIN_LEN: usize = OPTIONS + MIN_WORDS * 8;

/// Writes `v` at the constant offset `off` (one store per field once inlined).
#[inline(always)]
fn put<const W: usize>(f: &mut [u8; MIN_LEN], off: usize, v: [u8; W]) {
    f[off..off + W].copy_from_slice(&v);
}

/// The 16-bit words of the IP header that are the same in every reply but for the length, and of
/// the UDP checksum's part that is (source port, BOOTP op..hops, secs, siaddr, magic cookie;
/// pseudo-header protocol): summed at compile time, in memory order.
const IP_FIXED: [u8; 12] = [0x45, 0, 0, 0, 0, 0, 0, 0, 64, PROTO_UDP, 0, 0];
const IP_FIXED_SUM: u64 = checksum::sum_memory_order(&IP_FIXED);
const OP: [u8; 4] = [2, 1, 6, 0];
const UDP_FIXED_SUM: u64 = checksum::sum_memory_order(&[0, SERVER_PORT as u8])
    + checksum::sum_memory_order(&OP)
    + checksum::sum_memory_order(&MAGIC_COOKIE)
    + checksum::sum_memory_order(&[0, PROTO_UDP]);

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
    let sum = headers(pkt, req, entry, mac, reply, len)? + reply_options(pkt, req, entry, reply, unrequested, len)?;
    let csum = match !checksum::fold(sum) {
        // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
        0 => 0xffff,
        c => c,
    };
    *pkt.array_mut::<2>(UDP + 6)? = csum.to_ne_bytes();
    Some(())
}

/// Writes the reply's Ethernet, IPv4, UDP and BOOTP headers, up to the magic cookie; returns their
/// part of the UDP checksum's sum (pseudo-header included).
#[inline(always)]
fn headers<P: Packet + ?Sized>(
    pkt: &mut P,
    req: &Request,
    entry: &DhcpEntry,
    mac: &Mac,
    reply: u8,
    len: usize,
) -> Option<u64> {
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
    // Everything up to the options words every reply has: one bounds check, constant offsets.
    let f = pkt.array_mut::<MIN_LEN>(0)?;
    put(f, 0, dst_mac);
    put(f, 6, entry.server_mac);
    put(f, 12, ETH_P_IPV4.to_be_bytes());

    // Checksums are summed from the values written, in memory order (16-bit words as loaded), and
    // never read back from the packet. Every field below starts at an even offset.
    let ne32 = |b: [u8; 4]| u32::from_ne_bytes(b) as u64;
    let ip_len = ((len - ETH_HLEN) as u16).to_be_bytes();
    let udp_len = ((len - UDP) as u16).to_be_bytes();
    let addresses = ne32(entry.server_ip) + ne32(dst_ip);
    put(f, ETH_HLEN, IP_FIXED);
    put(f, ETH_HLEN + 2, ip_len);
    put(f, ETH_HLEN + 12, entry.server_ip);
    put(f, ETH_HLEN + 16, dst_ip);
    let ip_sum = IP_FIXED_SUM + u16::from_ne_bytes(ip_len) as u64 + addresses;
    put(f, ETH_HLEN + 10, (!checksum::fold(ip_sum)).to_ne_bytes());

    put(
        f,
        UDP,
        [0, SERVER_PORT as u8, 0, dst_port as u8, udp_len[0], udp_len[1], 0, 0],
    );
    // op, htype, hlen, hops, xid, secs 0, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr.
    put(f, BOOTP, OP);
    put(f, BOOTP + 4, req.xid);
    put(f, BOOTP + 8, [0, 0]);
    put(f, BOOTP + 10, flags);
    put(f, BOOTP + 12, ciaddr);
    put(f, BOOTP + 16, yiaddr);
    put(f, BOOTP + 20, [0; 4]);
    put(f, BOOTP + 24, req.giaddr);
    put(f, CHADDR, req.chaddr[0].to_ne_bytes());
    put(f, CHADDR + 8, req.chaddr[1].to_ne_bytes());
    // No server name or boot file (the request's may have carried overloaded options).
    clear(f[SNAME..].first_chunk_mut::<{ SNAME_LEN + FILE_LEN }>()?);
    put(f, MAGIC, MAGIC_COOKIE);
    // The UDP length is in the header and in the pseudo-header.
    let mut sum = UDP_FIXED_SUM + 2 * u16::from_ne_bytes(udp_len) as u64 + addresses + ((dst_port as u64) << 8);
    sum += ne32(req.xid) + u16::from_ne_bytes(flags) as u64 + ne32(ciaddr) + ne32(yiaddr) + ne32(req.giaddr);
    sum += halves(req.chaddr[0]) + halves(req.chaddr[1]);
    Some(sum)
}

/// Writes the options field: the entry's, with the message type filled in (its sum precomputed by
/// the agent, the type byte at an even offset), a word per load and store; returns its part of the
/// UDP checksum's sum. Words after the entry's END are PAD and add nothing to the sum.
#[inline(always)]
fn reply_options<P: Packet + ?Sized>(
    pkt: &mut P,
    req: &Request,
    entry: &DhcpEntry,
    reply: u8,
    unrequested: u64,
    len: usize,
) -> Option<u64> {
    let nak = reply == msg::NAK;
    let inform = req.msg_type == msg::INFORM;
    let f = pkt.array_mut::<MIN_LEN>(0)?;
    let mut w = 0;
    while w < MIN_WORDS {
        let mut word = entry.option_word(w);
        if w == 0 {
            word |= (reply as u64) << (TYPE_AT * 8);
        }
        put(f, OPTIONS + w * 8, word.to_ne_bytes());
        w += 1;
    }
    let words = (len - OPTIONS) / 8;
    while w < OPTION_WORDS {
        if w >= words {
            break;
        }
        *pkt.array_mut::<8>(OPTIONS + w * 8)? = entry.option_word(w).to_ne_bytes();
        w += 1;
    }
    let mut options_sum = entry.options_sum as u64 + reply as u64;
    // Rarely: a client's parameter request list leaves options out (their words become PAD); an
    // INFORM gets no lease times; a NAK keeps only 53 and 54.
    if unrequested != 0 && !nak {
        let mut removed = 0;
        let mut w = MESSAGE_WORDS;
        while w < OPTION_WORDS {
            if w >= words {
                break;
            }
            let old = entry.option_word(w);
            // All ones to keep the word, zero to blank it: no branch per word for the verifier.
            let keep = ((unrequested >> w) & 1).wrapping_sub(1);
            *pkt.array_mut::<8>(OPTIONS + w * 8)? = (old & keep).to_ne_bytes();
            removed += halves(old & !keep);
            w += 1;
        }
        // One's complement subtraction: adding the complement.
        options_sum += (!checksum::fold(removed)) as u64;
    }
    if nak || inform {
        let f = pkt.array_mut::<MIN_LEN>(0)?;
        let old = entry.option_word(LEASE_WORD);
        let first = (old & LEASE_KEEP) | if nak { NAK_END } else { 0 };
        put(f, OPTIONS + LEASE_WORD * 8, first.to_ne_bytes());
        let mut removed = halves(old);
        let mut w = LEASE_WORD + 1;
        while w < MESSAGE_WORDS {
            put(f, OPTIONS + w * 8, [0; 8]);
            removed += halves(entry.option_word(w));
            w += 1;
        }
        if nak {
            clear(f[OPTIONS + MESSAGE_WORDS * 8..].first_chunk_mut::<{ (MIN_WORDS - MESSAGE_WORDS) * 8 }>()?);
            // Nothing but 53 and 54 (words before the lease times are whole).
            const _: () = assert!(LEASE_WORD == 1);
            options_sum = halves(entry.option_word(0)) + reply as u64 + halves(first);
        } else {
            options_sum += halves(first) + (!checksum::fold(removed)) as u64;
        }
    }
    Some(options_sum)
}

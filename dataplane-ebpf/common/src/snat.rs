//! Distributed SNAT: a frame from a port without an elastic IP that its subnet's rules send out of
//! the VPC (`route_kind::EXTERNAL`) leaves from the host's uplink address and a port of the host's
//! own, as OVN's distributed SNAT does; the reply comes back by that port. Flows are kept in two
//! LRU maps (bounded: the least recently used goes first), ports claimed by a few probes.

use crate::checksum::Covers;
use crate::eth::ETH_HLEN;
use crate::ipv4::{Ipv4, PROTO_ICMP, PROTO_UDP};
use crate::maps::{EndpointKey, PortEntry, Uplink};
use crate::offload::PROTO_TCP;
use crate::packet::Packet;
use crate::pipeline::Tables;
use crate::Counter;

/// LRU hash map of the flows going out (`SnatKey` -> the host's port).
pub const SNAT_FLOWS: &str = "SNAT_FLOWS";
/// LRU hash map of the way back (`SnatBackKey` -> `SnatBack`).
pub const SNAT_BACK: &str = "SNAT_BACK";
/// Flows each holds.
pub const MAX_SNAT_FLOWS: u32 = 1 << 16;
/// The host's ports for SNAT: above Linux's default ephemeral range (32768-60999), so that the
/// host's own connections never meet them.
pub const PORT_MIN: u16 = 61000;
pub const PORT_COUNT: u32 = 65536 - PORT_MIN as u32;
/// Ports tried for a new flow before it is refused (`drop_snat_exhausted`).
pub const PROBES: u32 = 8;

/// A flow going out: the port's VNI and address, the remote address, and their ports (for ICMP
/// echo, the identifier and 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SnatKey {
    pub vni: u32,
    pub private: [u8; 4],
    pub remote: [u8; 4],
    pub private_port: u16,
    pub remote_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// The way back: the remote end, the host's port, the protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SnatBackKey {
    pub remote: [u8; 4],
    pub host_port: u16,
    pub remote_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Where the way back leads: the port's VNI, address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SnatBack {
    pub vni: u32,
    pub private: [u8; 4],
    pub private_port: u16,
    pub _pad: [u8; 2],
}

/// The port field a translation rewrites: the 4-byte window holding it and the field beside it
/// (the port first, or second), which the transport checksum at `csum` covers.
#[derive(Clone, Copy)]
pub struct Field {
    window: usize,
    first: bool,
    csum: usize,
    covers: Covers,
}

impl Field {
    /// No field: a placeholder where there is nothing to rewrite.
    pub const NONE: Field = Field {
        window: 0,
        first: false,
        csum: 0,
        covers: Covers::Transport,
    };
}

/// The ports of a first fragment or whole datagram: (source, destination) for TCP and UDP, (the
/// identifier, 0) for an ICMP echo request (`outbound`) or reply, with the field that is the
/// host's side of the flow: the source going out, the destination coming back.
#[inline(always)]
fn ports<P: Packet + ?Sized>(pkt: &P, ip: &Ipv4, outbound: bool) -> Option<(u16, u16, Field)> {
    if ip.frag & 0x1fff != 0 {
        return None;
    }
    let l4 = ETH_HLEN + ip.header_len;
    // 4-byte reads only at this variable offset: a shorter one compiles to a bounds check the
    // verifier cannot follow.
    let head = *pkt.array::<4>(l4)?;
    match ip.proto {
        PROTO_TCP | PROTO_UDP => {
            let (src, dst) = (
                u16::from_be_bytes([head[0], head[1]]),
                u16::from_be_bytes([head[2], head[3]]),
            );
            let (csum, covers) = match ip.proto {
                PROTO_TCP => (l4 + 16, Covers::Transport),
                _ => (l4 + 6, Covers::TransportUdp),
            };
            let (ours, theirs) = if outbound { (src, dst) } else { (dst, src) };
            Some((
                ours,
                theirs,
                Field {
                    window: l4,
                    first: outbound,
                    csum,
                    covers,
                },
            ))
        }
        PROTO_ICMP => {
            let want = if outbound {
                crate::icmp::ECHO_REQUEST
            } else {
                crate::icmp::ECHO_REPLY
            };
            if head[0] != want {
                return None;
            }
            let id = pkt.array::<4>(l4 + 4)?;
            let field = Field {
                first: true,
                window: l4 + 4,
                csum: l4 + 2,
                covers: Covers::Transport,
            };
            Some((u16::from_be_bytes([id[0], id[1]]), 0, field))
        }
        _ => None,
    }
}

/// Rewrites the port at `f` to `to`, with the transport checksum.
#[inline(always)]
fn set_port<P: Packet + ?Sized>(pkt: &mut P, f: &Field, to: u16) -> Option<()> {
    let old = *pkt.array::<4>(f.window)?;
    let [hi, lo] = to.to_be_bytes();
    let new = match f.first {
        true => [hi, lo, old[2], old[3]],
        false => [old[0], old[1], hi, lo],
    };
    pkt.replace_csum4(f.csum, old, new, f.covers)?;
    *pkt.array_mut::<4>(f.window)? = new;
    Some(())
}

/// Translates a frame from `port` (whose source the pipeline checked) to leave from the uplink's
/// address and a port of the host's: the flow's, or one claimed for it.
#[inline(always)]
pub fn outbound<P: Packet + ?Sized, T: Tables>(
    pkt: &mut P,
    ip: &Ipv4,
    port: &PortEntry,
    up: &Uplink,
    tables: &T,
) -> Result<(), Counter> {
    let (private_port, remote_port, field) = ports(pkt, ip, true).ok_or(Counter::DropNoRoute)?;
    let key = SnatKey {
        vni: port.vni,
        private: ip.src,
        remote: ip.dst,
        private_port,
        remote_port,
        proto: ip.proto,
        _pad: [0; 3],
    };
    let host_port = match tables.snat_port(&key) {
        Some(p) => p,
        None => claim(&key, tables).ok_or(Counter::DropSnatExhausted)?,
    };
    crate::nat::translate(pkt, ip, crate::nat::SRC, up.ip).ok_or(Counter::DropTtlExpired)?;
    set_port(pkt, &field, host_port).ok_or(Counter::DropIpMalformed)
}

/// A free port of the host's for a new flow: probes from a hash of the flow.
#[inline(always)]
fn claim<T: Tables>(key: &SnatKey, tables: &T) -> Option<u16> {
    let h = u32::from_ne_bytes(key.private)
        ^ u32::from_ne_bytes(key.remote).rotate_left(7)
        ^ (key.private_port as u32) << 16
        ^ key.remote_port as u32
        ^ key.vni.rotate_left(13);
    let h = h.wrapping_mul(0x9e37_79b1);
    let back = SnatBack {
        vni: key.vni,
        private: key.private,
        private_port: key.private_port,
        _pad: [0; 2],
    };
    let mut i = 0;
    while i < PROBES {
        let port = PORT_MIN + (h.wrapping_add(i.wrapping_mul(7919)) % PORT_COUNT) as u16;
        let way_back = SnatBackKey {
            remote: key.remote,
            host_port: port,
            remote_port: key.remote_port,
            proto: key.proto,
            _pad: [0; 3],
        };
        if tables.snat_claim(key, &way_back, &back, port) {
            return Some(port);
        }
        i += 1;
    }
    None
}

/// An ICMP error to the host's address (`ip.dst`) about a datagram it sent by SNAT: the quoted
/// flow's way back, and the quoted port of the host's, which the error's checksum covers. A quote
/// with IP options is none of ours (the host sends none).
#[inline(always)]
fn quoted<P: Packet + ?Sized>(pkt: &P, ip: &Ipv4) -> Option<(SnatBackKey, Field)> {
    if ip.frag & 0x1fff != 0 || ip.proto != PROTO_ICMP {
        return None;
    }
    // Through memory, as in `nat::quoted`: LLVM would reuse a bounds check made on another
    // pointer to the same place.
    let l4 = core::hint::black_box(ETH_HLEN + ip.header_len);
    if !crate::icmp::is_error(pkt.array::<4>(l4)?[0]) {
        return None;
    }
    let inner = l4 + crate::icmp::ICMP_HLEN;
    if pkt.array::<4>(inner)?[0] != 0x45 || *pkt.array::<4>(inner + 12)? != ip.dst {
        return None;
    }
    let proto = pkt.array::<4>(inner + 8)?[1];
    let remote = *pkt.array::<4>(inner + 16)?;
    let at = inner + 20;
    let head = *pkt.array::<4>(at)?;
    let (host_port, remote_port, window) = match proto {
        PROTO_TCP | PROTO_UDP => (
            u16::from_be_bytes([head[0], head[1]]),
            u16::from_be_bytes([head[2], head[3]]),
            at,
        ),
        PROTO_ICMP if head[0] == crate::icmp::ECHO_REQUEST => {
            let id = pkt.array::<4>(at + 4)?;
            (u16::from_be_bytes([id[0], id[1]]), 0, at + 4)
        }
        _ => return None,
    };
    let key = SnatBackKey {
        remote,
        host_port,
        remote_port,
        proto,
        _pad: [0; 3],
    };
    let field = Field {
        window,
        first: true,
        csum: l4 + 2,
        covers: Covers::Transport,
    };
    (host_port >= PORT_MIN).then_some((key, field))
}

/// The way back of a frame from the uplink to the host's own address and one of its SNAT ports,
/// or of an ICMP error about a datagram the host sent from one; with the field that holds the
/// host's port (in the quote, for an error), which the translation back rewrites.
#[inline(always)]
pub fn way_back<P: Packet + ?Sized>(pkt: &P, ip: &Ipv4, up: &Uplink) -> Option<(SnatBackKey, Field)> {
    if ip.dst != up.ip {
        return None;
    }
    let Some((host_port, remote_port, field)) = ports(pkt, ip, false) else {
        return quoted(pkt, ip);
    };
    let key = SnatBackKey {
        remote: ip.src,
        host_port,
        remote_port,
        proto: ip.proto,
        _pad: [0; 3],
    };
    (host_port >= PORT_MIN).then_some((key, field))
}

/// Where a reply to a SNAT flow goes: the port's address, in its VNI; with the field `restore_port`
/// rewrites.
#[inline(always)]
pub fn inbound_target<P: Packet + ?Sized, T: Tables>(
    pkt: &P,
    ip: &Ipv4,
    tables: &T,
) -> Option<(EndpointKey, SnatBack, Field)> {
    let up = tables.uplink()?;
    let (key, field) = way_back(pkt, ip, &up)?;
    let back = tables.snat_back(&key)?;
    Some((
        EndpointKey {
            vni: back.vni,
            ip: back.private,
        },
        back,
        field,
    ))
}

/// Gives a reply the port it was sent from, or an ICMP error's quote the port its datagram was
/// sent from, at `field` (from `inbound_target`; the addresses are translated by the caller, the
/// quoted one too).
#[inline(always)]
pub fn restore_port<P: Packet + ?Sized>(pkt: &mut P, field: &Field, back: &SnatBack) -> Option<()> {
    set_port(pkt, field, back.private_port)
}

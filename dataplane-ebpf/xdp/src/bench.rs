//! Benchmark-only undo of what the port program did to a frame, so that BPF_PROG_TEST_RUN with
//! repeat > 1 (which runs the program again on the same, edited buffer) meets the same input every
//! time and measures the path in steady state. What the undo costs is part of the figure.

use aya_ebpf::helpers::bpf_xdp_adjust_head;
use aya_ebpf::programs::XdpContext;

use alioth_common::arp::{self, ARP_FRAME_LEN};
use alioth_common::eth::{self, ETH_HLEN, ETH_P_ARP, ETH_P_IPV4};
use alioth_common::ipv4::{self, IPV4_MIN_HLEN};
use alioth_common::maps::PortEntry;
use alioth_common::pipeline::Action;
use alioth_common::{icmp, vxlan, Packet};

use crate::packet::XdpPacket;

/// Puts back what the program did to the frame; `port_program`: it was the port program's, which
/// may also have routed it.
#[inline(always)]
pub fn undo(ctx: &XdpContext, action: Action, port_program: bool) {
    let delta = match action {
        Action::Encap => vxlan::OUTER_LEN as i32,
        Action::Decap => -(vxlan::OUTER_LEN as i32),
        Action::Tx => {
            let _ = undo_reply(&mut XdpPacket::new(ctx));
            return;
        }
        Action::Redirect => 0,
        _ => return,
    };
    if delta != 0 {
        // SAFETY: reverses the adjustment `finish` made; the helper validates it.
        unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) };
    }
    if !port_program || !matches!(action, Action::Encap | Action::Redirect) {
        return;
    }
    // SAFETY: the program's own context.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    // Read in the map, not copied: the port program left no stack for a copy.
    if let Some(port) = crate::PORTS.get(ifindex) {
        let _ = undo_route(&mut XdpPacket::new(ctx), port);
    }
}

/// Turns a frame the port program routed back into the one the port sent: from the port's MAC to
/// its gateway's, with the TTL it had. A switched frame (from the port's MAC) is left alone.
#[inline(always)]
fn undo_route(pkt: &mut XdpPacket, port: &PortEntry) -> Option<()> {
    let (_, src) = eth::macs(pkt)?;
    if src == port.mac {
        return Some(());
    }
    eth::set_macs(pkt, &port.gateway_mac, &port.mac)?;
    let h = pkt.array::<2>(ETH_HLEN + 8)?;
    let (ttl, proto) = (h[0], h[1]);
    ipv4::set_ttl(pkt, ttl.wrapping_add(1), proto)
}

/// Turns an ARP or ICMP echo reply back into the request it answered (DHCP replies change length
/// and content too much to turn back). What to undo is read from the frame, not from the verdict:
/// a branch on the verdict's counter would make the verifier walk the undo once per counter value
/// of every path before it, which is past its limit.
#[inline(always)]
fn undo_reply(pkt: &mut XdpPacket) -> Option<()> {
    match (eth::ether_type(pkt)?, pkt.u8_at(ETH_HLEN + IPV4_MIN_HLEN)?) {
        (ETH_P_ARP, _) => {
            let f = pkt.array_mut::<ARP_FRAME_LEN>(0)?;
            // The reply's target (the asker) is the sender again, asking the reply's sender, to
            // its MAC. Copies of 6 and 4 bytes become word moves; a 10-byte one goes byte by byte.
            let (mut asker_mac, mut asker_ip, mut answer_mac, mut answer_ip) = ([0u8; 6], [0u8; 4], [0u8; 6], [0u8; 4]);
            let a = &mut f[ETH_HLEN..];
            answer_mac.copy_from_slice(&a[8..14]);
            answer_ip.copy_from_slice(&a[14..18]);
            asker_mac.copy_from_slice(&a[18..24]);
            asker_ip.copy_from_slice(&a[24..28]);
            a[6..8].copy_from_slice(&arp::OP_REQUEST.to_be_bytes());
            a[8..14].copy_from_slice(&asker_mac);
            a[14..18].copy_from_slice(&asker_ip);
            a[18..24].copy_from_slice(&answer_mac);
            a[24..28].copy_from_slice(&answer_ip);
            f[0..6].copy_from_slice(&answer_mac);
            f[6..12].copy_from_slice(&asker_mac);
        }
        (ETH_P_IPV4, icmp::ECHO_REPLY) => {
            let (dst, src) = eth::macs(pkt)?;
            eth::set_macs(pkt, &src, &dst)?;
            // Swapped back; the TTL stays the reply's (the gateway does not check it).
            ipv4::turn_around(pkt, icmp::REPLY_TTL)?;
            icmp::set_type(pkt, icmp::ECHO_REQUEST)?;
        }
        _ => {}
    }
    Some(())
}

//! Packet test vectors: one small VPC and a list of frames with the verdict and bytes expected.
//!
//! The same vectors run on the host (the `no_std` pipeline over byte slices) and in the kernel
//! (the compiled XDP object through BPF_PROG_TEST_RUN), so both must agree with etherparse.

use alioth_common::maps::{endpoint_kind, Endpoint, EndpointKey, PortEntry};
use alioth_common::pipeline::Action;
use alioth_common::Counter;
use etherparse::ArpOperation;

use crate::frames::{self, Mac};

pub const VNI: u32 = 100;
pub const VM_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0a];
pub const VM_IP: [u8; 4] = [198, 18, 0, 10];
pub const PEER_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0b];
pub const PEER_IP: [u8; 4] = [198, 18, 0, 11];
pub const GW_MAC: Mac = [0x0a, 0x58, 198, 18, 0, 1];
pub const GW_IP: [u8; 4] = [198, 18, 0, 1];
/// The gateway of a second subnet of the VPC: answered through the `ENDPOINTS` lookup.
pub const GW2_MAC: Mac = [0x0a, 0x58, 198, 18, 1, 1];
pub const GW2_IP: [u8; 4] = [198, 18, 1, 1];
/// A port on another host (a neighbor): ARP for it is answered locally.
pub const REMOTE_MAC: Mac = [0x02, 0, 0, 0, 9, 0x0c];
pub const REMOTE_IP: [u8; 4] = [198, 18, 0, 12];
/// An address nobody in the VPC has.
pub const UNKNOWN_IP: [u8; 4] = [198, 18, 0, 99];
/// The same gateway address in another VPC (VNI 200) with another MAC: must never leak into VNI 100.
pub const OTHER_VPC_GW_MAC: Mac = [0x0a, 0x58, 0, 0, 0, 0x02];

/// The port the frames arrive on.
pub fn port() -> PortEntry {
    PortEntry {
        mac: VM_MAC,
        vni: VNI,
        ip: VM_IP,
        ..Default::default()
    }
}

/// The `ENDPOINTS` map contents.
pub fn endpoints() -> Vec<(EndpointKey, Endpoint)> {
    let ep = |mac, kind| Endpoint {
        mac,
        kind,
        ..Default::default()
    };
    vec![
        (EndpointKey { vni: VNI, ip: GW_IP }, ep(GW_MAC, endpoint_kind::GATEWAY)),
        (
            EndpointKey { vni: VNI, ip: GW2_IP },
            ep(GW2_MAC, endpoint_kind::GATEWAY),
        ),
        (
            EndpointKey { vni: VNI, ip: VM_IP },
            ep(VM_MAC, endpoint_kind::LOCAL_PORT),
        ),
        (
            EndpointKey { vni: VNI, ip: PEER_IP },
            ep(PEER_MAC, endpoint_kind::LOCAL_PORT),
        ),
        (
            EndpointKey { vni: 200, ip: GW_IP },
            ep(OTHER_VPC_GW_MAC, endpoint_kind::GATEWAY),
        ),
        (
            EndpointKey {
                vni: 200,
                ip: UNKNOWN_IP,
            },
            ep([0x02, 0, 0, 0, 2, 99], endpoint_kind::LOCAL_PORT),
        ),
    ]
}

pub struct Case {
    pub name: &'static str,
    pub frame: Vec<u8>,
    pub action: Action,
    pub counter: Counter,
    /// The frame after the program for Tx; for other actions the frame must come out unchanged.
    pub output: Option<Vec<u8>>,
}

/// A standard 56-byte ping payload.
pub fn ping_payload() -> Vec<u8> {
    (0..56u8).collect()
}

/// Rewrites a byte of an IPv4 header and fixes the header checksum (offsets from the IPv4 header).
pub fn edit_ipv4_header(frame: &mut [u8], edit: impl FnOnce(&mut [u8])) {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    edit(&mut frame[14..14 + ihl]);
    frame[24] = 0;
    frame[25] = 0;
    let c = frames::internet_checksum(&frame[14..14 + ihl]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

pub fn cases() -> Vec<Case> {
    let tx = |name, frame, counter, out| Case {
        name,
        frame,
        action: Action::Tx,
        counter,
        output: Some(out),
    };
    let drop = |name, frame, counter| Case {
        name,
        frame,
        action: Action::Drop,
        counter,
        output: None,
    };
    let pass = |name, frame| Case {
        name,
        frame,
        action: Action::Pass,
        counter: Counter::Pass,
        output: None,
    };
    let payload = ping_payload();
    let echo = |payload: &[u8]| frames::echo_request(VM_MAC, GW_MAC, VM_IP, GW_IP, 0x1234, 7, payload);
    let mut v = vec![
        tx(
            "arp request for the gateway",
            frames::arp_request(VM_MAC, VM_IP, GW_IP),
            Counter::ArpReply,
            frames::arp_reply(VM_MAC, VM_IP, GW_MAC, GW_IP),
        ),
        tx(
            "arp request for another port of the VPC",
            frames::arp_request(VM_MAC, VM_IP, PEER_IP),
            Counter::ArpReply,
            frames::arp_reply(VM_MAC, VM_IP, PEER_MAC, PEER_IP),
        ),
        drop(
            "arp request for an unknown address",
            frames::arp_request(VM_MAC, VM_IP, UNKNOWN_IP),
            Counter::DropArpUnknownTarget,
        ),
        drop(
            "gratuitous arp",
            frames::arp_request(VM_MAC, VM_IP, VM_IP),
            Counter::DropArpNotRequest,
        ),
        drop(
            "arp probe for the own address",
            frames::arp_request(VM_MAC, [0; 4], VM_IP),
            Counter::DropArpSelf,
        ),
        drop(
            "arp reply",
            frames::arp(ArpOperation::REPLY, GW_MAC, VM_MAC, VM_IP, GW_MAC, GW_IP),
            Counter::DropArpNotRequest,
        ),
        tx(
            "echo request to the gateway",
            echo(&payload),
            Counter::IcmpEchoReply,
            frames::echo_reply(VM_MAC, GW_MAC, VM_IP, GW_IP, 0x1234, 7, &payload),
        ),
        tx(
            "echo request with an odd payload length",
            echo(&payload[..13]),
            Counter::IcmpEchoReply,
            frames::echo_reply(VM_MAC, GW_MAC, VM_IP, GW_IP, 0x1234, 7, &payload[..13]),
        ),
        tx(
            "echo request of a full 1500-byte IPv4 packet",
            echo(&[0xa5; 1472]),
            Counter::IcmpEchoReply,
            frames::echo_reply(VM_MAC, GW_MAC, VM_IP, GW_IP, 0x1234, 7, &[0xa5; 1472]),
        ),
        drop(
            "echo request above 1500 bytes",
            echo(&[0xa5; 1473]),
            Counter::DropTooBig,
        ),
        pass(
            "echo request to another port",
            frames::echo_request(VM_MAC, PEER_MAC, VM_IP, PEER_IP, 1, 1, &payload),
        ),
        pass(
            "ipv4 to an unknown address",
            frames::echo_request(VM_MAC, GW_MAC, VM_IP, UNKNOWN_IP, 1, 1, &payload),
        ),
        pass("not ipv4 or arp", {
            let mut f = echo(&payload);
            f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            f
        }),
        pass("runt frame", vec![0xff; 10]),
    ];
    let mut bad_icmp = echo(&payload);
    let last = bad_icmp.len() - 1;
    bad_icmp[last] ^= 0x40;
    v.push(drop(
        "echo request with a bad icmp checksum",
        bad_icmp,
        Counter::DropIcmpBadChecksum,
    ));
    let mut bad_ip = echo(&payload);
    bad_ip[24] ^= 0x01;
    v.push(drop(
        "echo request with a bad ipv4 checksum",
        bad_ip,
        Counter::DropIpBadChecksum,
    ));
    let mut frag = echo(&payload);
    edit_ipv4_header(&mut frag, |h| h[6] |= 0x20);
    v.push(drop(
        "echo request fragment (more fragments)",
        frag,
        Counter::DropIpFragment,
    ));
    let mut frag = echo(&payload);
    edit_ipv4_header(&mut frag, |h| h[7] = 1);
    v.push(drop("echo request fragment (offset)", frag, Counter::DropIpFragment));
    let mut opts = echo(&payload);
    // Insert a 4-byte NOP option block: IHL 6.
    opts.splice(34..34, [1, 1, 1, 0]);
    edit_ipv4_header(&mut opts, |h| {
        h[0] = 0x46;
        let tl = u16::from_be_bytes([h[2], h[3]]) + 4;
        h[2..4].copy_from_slice(&tl.to_be_bytes());
    });
    v.push(drop("echo request with ip options", opts, Counter::DropIpOptions));
    let mut truncated = echo(&payload);
    truncated.truncate(truncated.len() - 10);
    v.push(drop("truncated echo request", truncated, Counter::DropIpMalformed));
    let mut short = echo(&payload);
    short.truncate(30);
    v.push(drop("ipv4 header cut short", short, Counter::DropIpMalformed));
    let mut arp_short = frames::arp_request(VM_MAC, VM_IP, GW_IP);
    arp_short.truncate(40);
    v.push(drop("truncated arp", arp_short, Counter::DropArpMalformed));
    let mut arp_bad = frames::arp_request(VM_MAC, VM_IP, GW_IP);
    arp_bad[18] = 8; // hlen
    v.push(drop(
        "arp with a wrong hardware length",
        arp_bad,
        Counter::DropArpMalformed,
    ));
    let mut tiny = echo(&[]);
    edit_ipv4_header(&mut tiny, |h| h[2..4].copy_from_slice(&24u16.to_be_bytes()));
    v.push(drop("icmp shorter than its header", tiny, Counter::DropIpMalformed));
    let mut not_echo = echo(&payload);
    not_echo[34] = 13; // timestamp request
    v.push(drop(
        "icmp to the gateway that is not an echo request",
        not_echo,
        Counter::DropGatewayUnhandled,
    ));
    v
}

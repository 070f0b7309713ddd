//! DHCP test requests built, and replies checked, with `dhcproto`: a maintained implementation
//! independent of the data plane's own parser and builder.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use alioth_common::Counter;
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

use crate::frames::{self, Mac};
use crate::vectors::{DNS, DOMAIN, GW_IP, GW_MAC, HOST_NAME, LEASE_SECS, NTP, ROUTE, VM_IP, VM_MAC};

/// A client request, as the tests vary it.
#[derive(Clone, Debug)]
pub struct Request {
    pub msg_type: MessageType,
    pub xid: u32,
    pub broadcast: bool,
    pub ciaddr: [u8; 4],
    /// Relayed by this address (from port 67, unicast to the server); 0.0.0.0: not relayed.
    pub giaddr: [u8; 4],
    pub requested_ip: Option<[u8; 4]>,
    pub server_id: Option<[u8; 4]>,
    /// Option 55; `None`: no list (the client gets every option).
    pub parameters: Option<Vec<u8>>,
    pub client_id: Option<Vec<u8>>,
    /// Put the options after the message type in the `file` field (option 52 = 1).
    pub overload_file: bool,
    /// Pad the message to the BOOTP minimum of 300 bytes, as real clients do.
    pub pad: bool,
    /// chaddr (the port's MAC unless a test says otherwise).
    pub chaddr: Mac,
}

impl Request {
    pub fn new(msg_type: MessageType) -> Self {
        Request {
            msg_type,
            xid: 0x1234_5678,
            broadcast: false,
            ciaddr: [0; 4],
            giaddr: [0; 4],
            requested_ip: None,
            server_id: None,
            parameters: Some(vec![1, 3, 6, 12, 15, 26, 28, 42, 121]),
            client_id: None,
            overload_file: false,
            pad: true,
            chaddr: VM_MAC,
        }
    }

    /// The REQUEST of a client in SELECTING that takes our offer of its address.
    pub fn selecting() -> Self {
        Request {
            requested_ip: Some(VM_IP),
            server_id: Some(GW_IP),
            ..Request::new(MessageType::Request)
        }
    }

    /// The DHCP message (UDP payload).
    pub fn payload(&self) -> Vec<u8> {
        let mut m = Message::new_with_id(
            self.xid,
            self.ciaddr.into(),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            self.giaddr.into(),
            &self.chaddr,
        );
        m.set_opcode(Opcode::BootRequest);
        if self.broadcast {
            m.set_flags(Flags::default().set_broadcast());
        }
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(self.msg_type));
        let mut rest = Vec::new();
        if let Some(ip) = self.requested_ip {
            rest.push(DhcpOption::RequestedIpAddress(ip.into()));
        }
        if let Some(ip) = self.server_id {
            rest.push(DhcpOption::ServerIdentifier(ip.into()));
        }
        if let Some(p) = &self.parameters {
            rest.push(DhcpOption::ParameterRequestList(
                p.iter().map(|c| OptionCode::from(*c)).collect(),
            ));
        }
        if let Some(id) = &self.client_id {
            rest.push(DhcpOption::ClientIdentifier(id.clone()));
        }
        if !self.overload_file {
            for opt in rest {
                o.insert(opt);
            }
            let mut out = m.to_vec().expect("encode a DHCP request");
            if self.pad && out.len() < 300 {
                out.resize(300, 0);
            }
            return out;
        }
        // Overloaded: the `file` field carries the other options (RFC 2132 9.3).
        o.insert(DhcpOption::OptionOverload(1));
        let mut file = Vec::new();
        for opt in rest {
            let mut e = Vec::new();
            opt.encode(&mut dhcproto::Encoder::new(&mut e))
                .expect("encode an option");
            file.extend_from_slice(&e);
        }
        file.push(255);
        assert!(file.len() <= 128, "options do not fit the file field");
        let mut out = m.to_vec().expect("encode a DHCP request");
        out[108..108 + file.len()].copy_from_slice(&file);
        if self.pad && out.len() < 300 {
            out.resize(300, 0);
        }
        out
    }

    /// The frame the VM sends: from 0.0.0.0 (or its address when it has one) to broadcast.
    pub fn frame(&self) -> Vec<u8> {
        let (src, dst) = self.addresses();
        let dst_mac = if dst == [255; 4] { [0xff; 6] } else { GW_MAC };
        let src_port = if self.relayed() { 67 } else { 68 };
        frames::udp(VM_MAC, dst_mac, src, dst, 64, src_port, 67, &self.payload())
    }

    fn relayed(&self) -> bool {
        self.giaddr != [0; 4]
    }

    /// IP source and destination: a relay sends from its address to the server; a client with
    /// an address sends from it, and unicasts to the server it knows (RENEWING); without one,
    /// from 0.0.0.0 to broadcast.
    fn addresses(&self) -> ([u8; 4], [u8; 4]) {
        if self.relayed() {
            return (self.giaddr, GW_IP);
        }
        match (self.ciaddr, self.server_id) {
            ([0, 0, 0, 0], _) => ([0; 4], [255; 4]),
            (c, Some(s)) => (c, s),
            (c, None) => (c, [255; 4]),
        }
    }

    /// What a correct server does with it: the reply's message type (or none) and the counter.
    pub fn expected(&self) -> (Option<MessageType>, Counter) {
        let (_, dst) = self.addresses();
        if dst != [255; 4] && dst != GW_IP {
            return (None, Counter::DropDhcpOtherServer);
        }
        if self.relayed() && self.giaddr != VM_IP {
            return (None, Counter::DropSpoofedIp);
        }
        if self.chaddr != VM_MAC {
            return (None, Counter::DropDhcpUnknownClient);
        }
        if let Some(id) = self.client_id.as_ref().filter(|id| id.len() == 7 && id[0] == 1) {
            if id[1..] != VM_MAC {
                return (None, Counter::DropDhcpUnknownClient);
            }
        }
        match self.msg_type {
            MessageType::Discover => (Some(MessageType::Offer), Counter::DhcpOffer),
            MessageType::Request => {
                if self.server_id.is_some_and(|s| s != GW_IP) {
                    return (None, Counter::DropDhcpOtherServer);
                }
                match self.requested_ip.unwrap_or(self.ciaddr) {
                    [0, 0, 0, 0] => (None, Counter::DropDhcpMalformed),
                    ip if ip == VM_IP => (Some(MessageType::Ack), Counter::DhcpAck),
                    _ => (Some(MessageType::Nak), Counter::DhcpNak),
                }
            }
            MessageType::Inform => (Some(MessageType::Ack), Counter::DhcpInform),
            MessageType::Release => (None, Counter::DhcpRelease),
            MessageType::Decline => (None, Counter::DhcpDecline),
            _ => (None, Counter::DropDhcpUnsupported),
        }
    }

    fn requested(&self, code: u8) -> bool {
        // An empty list is no list; an unpadded runt whose list's last 4-byte window runs past
        // the frame's end gets every option (the server reads the list a window at a time).
        self.parameters
            .as_ref()
            .is_none_or(|p| p.is_empty() || p.contains(&code) || self.list_cut_short())
    }

    /// Whether the parameter list's last 4-byte window (from the list's start) ends past the
    /// message's end.
    fn list_cut_short(&self) -> bool {
        if self.overload_file {
            return false; // in the 128-byte `file` field, followed by more of the message
        }
        let m = self.payload();
        let mut at = 240;
        while at + 1 < m.len() {
            match m[at] {
                0 => at += 1,
                255 => break,
                code => {
                    let len = usize::from(m[at + 1]);
                    if code == 55 {
                        return at + 2 + len.next_multiple_of(4) > m.len();
                    }
                    at += 2 + len;
                }
            }
        }
        false
    }
}

/// Checks `reply` against RFC 2131 and the vector goal state for `req`; panics with the reason.
pub fn check_reply(req: &Request, reply: &[u8]) {
    let (want, _) = req.expected();
    let want = want.expect("a request that gets a reply");
    let p = SlicedPacket::from_ethernet(reply).expect("reply parses as Ethernet");
    let (eth_dst, eth_src) = (&reply[..6], &reply[6..12]);
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.calc_header_checksum(), h.header_checksum, "IPv4 header checksum");
    assert_eq!(h.source, GW_IP, "reply source is the gateway");
    assert_eq!(eth_src, GW_MAC, "reply source MAC is the gateway's");
    let Some(TransportSlice::Udp(udp)) = &p.transport else {
        panic!("not UDP")
    };
    let relayed = req.relayed();
    let client_port = if relayed { 67 } else { 68 };
    assert_eq!((udp.source_port(), udp.destination_port()), (67, client_port));
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&h.source);
    pseudo.extend_from_slice(&h.destination);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&udp.length().to_be_bytes());
    pseudo.extend_from_slice(udp.slice());
    assert_ne!(udp.checksum(), 0, "the UDP checksum is filled in");
    assert_eq!(frames::internet_checksum(&pseudo), 0, "UDP checksum");

    let m = Message::decode(&mut dhcproto::Decoder::new(udp.payload())).expect("dhcproto decodes the reply");
    assert_eq!(m.opcode(), Opcode::BootReply);
    assert_eq!(m.xid(), req.xid);
    assert_eq!(m.giaddr(), Ipv4Addr::from(req.giaddr), "giaddr echoed");
    assert_eq!(&m.chaddr()[..6], &VM_MAC);
    let o = m.opts();
    assert_eq!(o.msg_type(), Some(want), "message type");
    assert_eq!(
        o.get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(GW_IP.into()))
    );
    // Where the reply goes (RFC 2131 4.1).
    let (dst_mac, dst_ip) = if relayed {
        (VM_MAC, req.giaddr)
    } else if want == MessageType::Nak || (req.ciaddr == [0; 4] && req.broadcast) {
        ([0xff; 6], [255; 4])
    } else if req.ciaddr != [0; 4] {
        (VM_MAC, req.ciaddr)
    } else if req.msg_type == MessageType::Inform {
        ([0xff; 6], [255; 4])
    } else {
        (VM_MAC, VM_IP)
    };
    assert_eq!((eth_dst, h.destination), (&dst_mac[..], dst_ip), "reply destination");
    if want == MessageType::Nak {
        if relayed {
            assert!(m.flags().broadcast(), "a relayed NAK asks the relay to broadcast it");
        }
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(o.get(OptionCode::AddressLeaseTime).is_none() && o.get(OptionCode::SubnetMask).is_none());
        return;
    }
    let inform = req.msg_type == MessageType::Inform;
    let yiaddr = if inform { Ipv4Addr::UNSPECIFIED } else { VM_IP.into() };
    assert_eq!(m.yiaddr(), yiaddr, "yiaddr");
    let ciaddr = if want == MessageType::Ack { req.ciaddr } else { [0; 4] };
    assert_eq!(m.ciaddr(), Ipv4Addr::from(ciaddr), "ciaddr");
    let lease = [
        (OptionCode::AddressLeaseTime, DhcpOption::AddressLeaseTime(LEASE_SECS)),
        (OptionCode::Renewal, DhcpOption::Renewal(LEASE_SECS / 2)),
        (OptionCode::Rebinding, DhcpOption::Rebinding(LEASE_SECS / 8 * 7)),
    ];
    for (code, value) in lease {
        match inform {
            true => assert!(o.get(code).is_none(), "an INFORM gets no {code:?}"),
            false => assert_eq!(o.get(code), Some(&value)),
        }
    }
    let standard = [
        DhcpOption::SubnetMask([255, 255, 255, 0].into()),
        DhcpOption::Router(vec![GW_IP.into()]),
        DhcpOption::DomainNameServer(DNS.iter().map(|a| (*a).into()).collect()),
        DhcpOption::DomainName(DOMAIN.into()),
        DhcpOption::Hostname(HOST_NAME.into()),
        DhcpOption::InterfaceMtu(1450),
        DhcpOption::BroadcastAddr([198, 18, 0, 255].into()),
    ];
    for opt in standard {
        assert_eq!(o.get(OptionCode::from(&opt)), Some(&opt));
    }
    // Extra options: only when asked for.
    let ntp = o.get(OptionCode::NtpServers);
    assert_eq!(ntp.is_some(), req.requested(42), "NTP servers sent iff requested");
    if let Some(ntp) = ntp {
        assert_eq!(ntp, &DhcpOption::NtpServers(vec![NTP.into()]));
    }
    let routes = o.get(OptionCode::ClasslessStaticRoute);
    assert_eq!(
        routes.is_some(),
        req.requested(121),
        "classless routes sent iff requested"
    );
    if let Some(routes) = routes {
        let want = vec![
            ("0.0.0.0/0".parse().unwrap(), GW_IP.into()),
            (ROUTE.parse().unwrap(), GW_IP.into()),
        ];
        assert_eq!(routes, &DhcpOption::ClasslessStaticRoute(want));
    }
}

/// perfdhcp's report: "***Statistics for: NAME***" sections of "key: number [unit]" lines.
pub fn parse_perfdhcp(text: &str) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut section = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("***Statistics for: ") {
            section = Some(name.trim_end_matches('*').to_string());
            continue;
        }
        let (Some(s), Some((k, v))) = (&section, line.split_once(':')) else {
            continue;
        };
        if let Some(v) = v.split_whitespace().next().and_then(|v| v.parse().ok()) {
            out.entry(s.clone()).or_default().insert(k.trim().to_string(), v);
        }
    }
    out
}

/// One DHCP exchange by busybox `udhcpc` in `ns`: it quits once leased and configures nothing.
pub fn udhcpc_once(ns: &crate::netns::Netns) -> anyhow::Result<std::process::Output> {
    ns.exec_output(&[
        "timeout",
        "10",
        "udhcpc",
        "-n",
        "-q",
        "-f",
        "-i",
        "eth0",
        "-s",
        "/bin/true",
        "-t",
        "3",
        "-T",
        "1",
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_perfdhcp_report() {
        let text = "***Statistics for: DISCOVER-OFFER***\nsent packets: 10\nreceived packets: 8\ndrops: 2\n\
                    min delay: 0.100 ms\navg delay: 1.5 ms\n***Statistics for: REQUEST-ACK***\nreceived packets: 7\n";
        let s = parse_perfdhcp(text);
        assert_eq!(s["DISCOVER-OFFER"]["drops"], 2.0);
        assert_eq!(s["DISCOVER-OFFER"]["avg delay"], 1.5);
        assert_eq!(s["REQUEST-ACK"]["received packets"], 7.0);
    }
}

//! Per-CPU packet counters: one slot per action and per drop reason.

/// Index into the `STATS` per-CPU array. Every frame a program sees bumps exactly one slot for what
/// became of it; `SkbPath` and `SkbOnly` count, besides, the frames that take the skb path.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Passed to the kernel stack untouched (not ours to handle).
    Pass = 0,
    /// ARP request answered with XDP_TX.
    ArpReply,
    /// ICMP echo request to a gateway answered with XDP_TX.
    IcmpEchoReply,
    /// Frame arrived on an interface the controller has not programmed.
    DropUnknownPort,
    /// ARP that is not an Ethernet/IPv4 request of the right size.
    DropArpMalformed,
    /// ARP reply or gratuitous ARP: never answered.
    DropArpNotRequest,
    /// ARP request for an address nobody in the VPC has.
    DropArpUnknownTarget,
    /// ARP request for the sender's own address (duplicate address detection).
    DropArpSelf,
    /// IPv4 header that is not version 4, shorter than its fields claim, or truncated.
    DropIpMalformed,
    /// IPv4 header checksum does not verify.
    DropIpBadChecksum,
    /// IPv4 header with options (IHL > 5) addressed to a gateway.
    DropIpOptions,
    /// IPv4 fragment addressed to a gateway.
    DropIpFragment,
    /// ICMP checksum does not verify.
    DropIcmpBadChecksum,
    /// Packet to a gateway that the gateway does not answer (not an echo request).
    DropGatewayUnhandled,
    /// Larger than the gateway answers (above the maximum IPv4 length we checksum).
    DropTooBig,
    /// Frame to another port on this host, redirected to its interface.
    ForwardLocal,
    /// Frame to a port on another host, encapsulated in VXLAN and redirected to the uplink.
    Encap,
    /// VXLAN from the uplink for a local port, decapsulated and redirected to it.
    Decap,
    /// Uplink traffic that is not overlay traffic for us, passed to the host stack untouched.
    UplinkPass,
    /// Frame from a port whose source MAC is not the port's.
    DropSpoofedMac,
    /// IPv4 or ARP from a port whose source address is not one of the port's.
    DropSpoofedIp,
    /// Frame from a port that is neither IPv4 nor ARP (IPv6 and others are not carried).
    DropUnsupported,
    /// IPv4 to an address the VPC does not know, or to a MAC that does not own the address.
    DropUnknownDestination,
    /// To a local port whose interface does not exist (yet).
    DropNoInterface,
    /// To a remote port while the agent has no uplink.
    DropNoUplink,
    /// To a remote port whose host's underlay next hop is not resolved (yet).
    DropNoNextHop,
    /// Would exceed the uplink MTU once encapsulated (the port MTU must leave 50 bytes), and may
    /// not be answered with "fragmentation needed" (no DF, a GSO super-frame, no gateway).
    DropOverlayTooBig,
    /// Routed through the gateway with a TTL of 1 or less.
    DropTtlExpired,
    /// The target interface is not in the redirect map (gone meanwhile), or the program a frame
    /// is handed to is missing from `TAILS`.
    DropRedirectFailed,
    /// VXLAN for an address of that VNI that is not a port on this host, or to the wrong MAC.
    DropOverlayMisdirected,
    /// DHCPDISCOVER answered with a DHCPOFFER.
    DhcpOffer,
    /// DHCPREQUEST answered with a DHCPACK.
    DhcpAck,
    /// DHCPREQUEST for an address that is not the port's, answered with a DHCPNAK.
    DhcpNak,
    /// DHCPINFORM answered with a DHCPACK (configuration only, no lease).
    DhcpInform,
    /// DHCPRELEASE taken note of (addresses are static: nothing to free).
    DhcpRelease,
    /// DHCPDECLINE: the VM found its address in use; also reported to the agent as an event.
    DhcpDecline,
    /// DHCP from a port whose subnet does not serve DHCP.
    DropDhcpDisabled,
    /// DHCP whose client hardware address (or client identifier) is not the port's MAC.
    DropDhcpUnknownClient,
    /// DHCP that is not a well-formed Ethernet BOOTREQUEST (bad magic, no message type, relayed...).
    DropDhcpMalformed,
    /// DHCP server traffic from a port (from port 67 to a client, a BOOTREPLY, anything to another
    /// host's port 68): no rogue servers inside a VPC.
    DropDhcpServer,
    /// DHCPREQUEST that selects another server.
    DropDhcpOtherServer,
    /// A DHCP message type a server does not answer.
    DropDhcpUnsupported,
    /// No room to grow the request's frame into the reply (the driver left too little head- and
    /// tailroom).
    DropDhcpNoRoom,
    /// Left by XDP to the TC program on the same interface: a checksum the device was to finish
    /// or a GSO super-frame (see `offload`). Counted again there by what it does.
    SkbPath,
    /// An event (a DHCPDECLINE) not reported to the agent: its port had one reported within
    /// `events::EVENT_INTERVAL_NS`. The frame itself is counted as usual.
    EventSuppressed,
    /// A reply to the agent's echo probe (`alioth echo`) on its way to the probing port: handed to
    /// the agent instead, so the VM never sees it.
    EchoProbeReply,
    /// A frame too big for the overlay once encapsulated, with DF set: answered with ICMP
    /// "fragmentation needed" from the port's gateway (the next hop's MTU: the uplink's less the
    /// encapsulation), so the VM's path MTU discovery finds it.
    IcmpFragNeeded,
    /// As `IcmpFragNeeded`, but past the port's rate of those answers: dropped.
    DropFragNeededRateLimited,
    /// A new flow the sending port's security groups do not allow out.
    DropSgEgress,
    /// A new flow the receiving port's security groups do not allow in.
    DropSgIngress,
    /// To or from a port with security groups, a frame that fits no tracked flow and opens none
    /// (a stray ACK or RST, a SYN-ACK nobody asked for).
    DropSgInvalid,
    /// A later IPv4 fragment to or from a port with security groups: it carries no ports to
    /// track it by.
    DropSgFragment,
    /// A frame to the port's gateway MAC that no route of its subnet takes: its subnet is on no
    /// router, or the route's next hop is not known.
    DropNoRoute,
    /// From the uplink to an elastic IP: translated to its port's private address and redirected
    /// to the port.
    NatIn,
    /// From a port with an elastic IP to outside the VPC: translated to the elastic IP and sent
    /// out of the uplink.
    NatOut,
    /// ARP request on the uplink for an elastic IP, answered with the uplink's MAC.
    ArpElasticIp,
    /// To or from an elastic IP, a frame the host's routes send anywhere but out of the uplink, or
    /// nowhere.
    DropNatNoRoute,
    /// To an elastic IP whose port has no interface on this host (yet), or to a SNAT port of the
    /// host's that no flow holds.
    DropNatNoPort,
    /// A new SNAT flow: it claimed a port of the host's.
    SnatNew,
    /// A new SNAT flow that found no free port of the host's (every probe taken).
    DropSnatExhausted,
    /// A frame that came in by an interface running the skb path alone (no XDP: veths by
    /// default), counted besides what became of it, as `SkbPath` counts what XDP leaves to the
    /// skb path.
    SkbOnly,
    /// A frame translated out whose next hop the kernel resolved (`bpf_redirect_neigh`): its MAC
    /// not known yet, or no lookup source (`maps::FIB_SOURCE`) on a host that does not forward.
    NatOutResolve,
}

/// Number of counter slots (size of the `STATS` map).
pub const COUNTER_SLOTS: u32 = 64;

impl Counter {
    pub const ALL: [Counter; 62] = [
        Counter::Pass,
        Counter::ArpReply,
        Counter::IcmpEchoReply,
        Counter::DropUnknownPort,
        Counter::DropArpMalformed,
        Counter::DropArpNotRequest,
        Counter::DropArpUnknownTarget,
        Counter::DropArpSelf,
        Counter::DropIpMalformed,
        Counter::DropIpBadChecksum,
        Counter::DropIpOptions,
        Counter::DropIpFragment,
        Counter::DropIcmpBadChecksum,
        Counter::DropGatewayUnhandled,
        Counter::DropTooBig,
        Counter::ForwardLocal,
        Counter::Encap,
        Counter::Decap,
        Counter::UplinkPass,
        Counter::DropSpoofedMac,
        Counter::DropSpoofedIp,
        Counter::DropUnsupported,
        Counter::DropUnknownDestination,
        Counter::DropNoInterface,
        Counter::DropNoUplink,
        Counter::DropNoNextHop,
        Counter::DropOverlayTooBig,
        Counter::DropTtlExpired,
        Counter::DropRedirectFailed,
        Counter::DropOverlayMisdirected,
        Counter::DhcpOffer,
        Counter::DhcpAck,
        Counter::DhcpNak,
        Counter::DhcpInform,
        Counter::DhcpRelease,
        Counter::DhcpDecline,
        Counter::DropDhcpDisabled,
        Counter::DropDhcpUnknownClient,
        Counter::DropDhcpMalformed,
        Counter::DropDhcpServer,
        Counter::DropDhcpOtherServer,
        Counter::DropDhcpUnsupported,
        Counter::DropDhcpNoRoom,
        Counter::SkbPath,
        Counter::EventSuppressed,
        Counter::EchoProbeReply,
        Counter::IcmpFragNeeded,
        Counter::DropFragNeededRateLimited,
        Counter::DropSgEgress,
        Counter::DropSgIngress,
        Counter::DropSgInvalid,
        Counter::DropSgFragment,
        Counter::DropNoRoute,
        Counter::NatIn,
        Counter::NatOut,
        Counter::ArpElasticIp,
        Counter::DropNatNoRoute,
        Counter::DropNatNoPort,
        Counter::SnatNew,
        Counter::DropSnatExhausted,
        Counter::SkbOnly,
        Counter::NatOutResolve,
    ];

    /// Stable name used by `alioth stats` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Pass => "pass",
            Counter::ArpReply => "arp_reply",
            Counter::IcmpEchoReply => "icmp_echo_reply",
            Counter::DropUnknownPort => "drop_unknown_port",
            Counter::DropArpMalformed => "drop_arp_malformed",
            Counter::DropArpNotRequest => "drop_arp_not_request",
            Counter::DropArpUnknownTarget => "drop_arp_unknown_target",
            Counter::DropArpSelf => "drop_arp_self",
            Counter::DropIpMalformed => "drop_ip_malformed",
            Counter::DropIpBadChecksum => "drop_ip_bad_checksum",
            Counter::DropIpOptions => "drop_ip_options",
            Counter::DropIpFragment => "drop_ip_fragment",
            Counter::DropIcmpBadChecksum => "drop_icmp_bad_checksum",
            Counter::DropGatewayUnhandled => "drop_gateway_unhandled",
            Counter::DropTooBig => "drop_too_big",
            Counter::ForwardLocal => "forward_local",
            Counter::Encap => "encap",
            Counter::Decap => "decap",
            Counter::UplinkPass => "uplink_pass",
            Counter::DropSpoofedMac => "drop_spoofed_mac",
            Counter::DropSpoofedIp => "drop_spoofed_ip",
            Counter::DropUnsupported => "drop_unsupported",
            Counter::DropUnknownDestination => "drop_unknown_destination",
            Counter::DropNoInterface => "drop_no_interface",
            Counter::DropNoUplink => "drop_no_uplink",
            Counter::DropNoNextHop => "drop_no_next_hop",
            Counter::DropOverlayTooBig => "drop_overlay_too_big",
            Counter::DropTtlExpired => "drop_ttl_expired",
            Counter::DropRedirectFailed => "drop_redirect_failed",
            Counter::DropOverlayMisdirected => "drop_overlay_misdirected",
            Counter::DhcpOffer => "dhcp_offer",
            Counter::DhcpAck => "dhcp_ack",
            Counter::DhcpNak => "dhcp_nak",
            Counter::DhcpInform => "dhcp_inform",
            Counter::DhcpRelease => "dhcp_release",
            Counter::DhcpDecline => "dhcp_decline",
            Counter::DropDhcpDisabled => "drop_dhcp_disabled",
            Counter::DropDhcpUnknownClient => "drop_dhcp_unknown_client",
            Counter::DropDhcpMalformed => "drop_dhcp_malformed",
            Counter::DropDhcpServer => "drop_dhcp_server",
            Counter::DropDhcpOtherServer => "drop_dhcp_other_server",
            Counter::DropDhcpUnsupported => "drop_dhcp_unsupported",
            Counter::DropDhcpNoRoom => "drop_dhcp_no_room",
            Counter::SkbPath => "skb_path",
            Counter::EchoProbeReply => "echo_probe_reply",
            Counter::IcmpFragNeeded => "icmp_frag_needed",
            Counter::DropFragNeededRateLimited => "drop_frag_needed_rate_limited",
            Counter::EventSuppressed => "event_suppressed",
            Counter::DropSgEgress => "drop_sg_egress",
            Counter::DropSgIngress => "drop_sg_ingress",
            Counter::DropSgInvalid => "drop_sg_invalid",
            Counter::DropSgFragment => "drop_sg_fragment",
            Counter::DropNoRoute => "drop_no_route",
            Counter::NatIn => "nat_in",
            Counter::NatOut => "nat_out",
            Counter::ArpElasticIp => "arp_elastic_ip",
            Counter::DropNatNoRoute => "drop_nat_no_route",
            Counter::DropNatNoPort => "drop_nat_no_port",
            Counter::SnatNew => "snat_new",
            Counter::DropSnatExhausted => "drop_snat_exhausted",
            Counter::SkbOnly => "skb_only",
            Counter::NatOutResolve => "nat_out_resolve",
        }
    }

    pub const fn index(self) -> u32 {
        self as u32
    }
}

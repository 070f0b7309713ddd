//! Per-CPU packet counters: one slot per action and per drop reason.

/// Index into the `STATS` per-CPU array. Every packet the port program sees bumps exactly one slot.
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
}

/// Number of counter slots (size of the `STATS` map).
pub const COUNTER_SLOTS: u32 = 32;

impl Counter {
    pub const ALL: [Counter; 15] = [
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
        }
    }

    pub const fn index(self) -> u32 {
        self as u32
    }
}

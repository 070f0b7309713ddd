//! Routers and gateways as the state holds them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::{Id, Mac};

/// A router (Alcor's `RouterConfiguration`): the subnets attached to it, each with its routing
/// rules. Subnets attached to one router are routed to each other.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Router {
    pub id: Id,
    pub revision: u32,
    /// Source MAC of the frames it routes (`host_dvr_mac_address`); `None`: the gateway MAC of
    /// the subnet a frame is routed into.
    pub dvr_mac: Option<Mac>,
    /// Subnet id -> its routing rules, by rule id.
    pub subnets: BTreeMap<String, BTreeMap<String, RoutingRule>>,
}

/// One routing rule of a subnet.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoutingRule {
    pub destination: Ipv4Network,
    /// `None` (absent or 0.0.0.0): delivered in the VPC to whoever holds the destination (Alcor's
    /// LOCAL target).
    pub next_hop: Option<Ipv4Addr>,
    /// Breaks ties between rules of one destination: the higher wins.
    pub priority: u32,
    /// `destination_type` VPC_GW; else INTERNET.
    pub to_gateway: bool,
    pub next_hop_mac: Option<Mac>,
}

/// A gateway (Alcor's `GatewayConfiguration`): the tunnel endpoints routing rules reach it by.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gateway {
    pub id: Id,
    pub revision: u32,
    /// `GatewayType` (ZETA, TGW, IGW, NGW, ARION; 0: DEFAULT).
    pub kind: i32,
    /// (tunnel endpoint, inner MAC) of each destination.
    pub destinations: Vec<(Ipv4Addr, Mac)>,
    /// The type's extra information (`zeta_info`, `arion_info`), kept as text: nothing in the
    /// data plane reads it.
    pub extra: Option<String>,
}

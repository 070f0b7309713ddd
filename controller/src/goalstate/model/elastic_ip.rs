//! Elastic IPs (alioth's extension of Alcor's schema, `elasticip.proto`).

use std::net::Ipv4Addr;

use super::Id;

/// A public address translated 1:1 to one private address of a port.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ElasticIp {
    pub id: Id,
    pub revision: u32,
    /// The public address, on the uplink's segment.
    pub ip: Ipv4Addr,
    pub port_id: Id,
    /// One of the port's fixed IPs.
    pub private_ip: Ipv4Addr,
}

//! Security groups as the state holds them, and the groups a port or neighbor is in.

use ipnetwork::Ipv4Network;

use super::Id;

/// Security-group ids a port or neighbor is in: almost always none or one.
pub type Groups = smallvec::SmallVec<[Id; 1]>;

/// The groups `ids` name, without empty ids or repeats, in order.
pub fn groups<'a>(ids: impl Iterator<Item = &'a str>) -> Groups {
    let mut out = Groups::new();
    for id in ids.map(str::trim).filter(|id| !id.is_empty()) {
        if !out.iter().any(|g| &**g == id) {
            out.push(id.into());
        }
    }
    out
}

/// A security group (Alcor's `SecurityGroupConfiguration`): its rules.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecurityGroup {
    pub id: Id,
    pub revision: u32,
    pub rules: Vec<SgRule>,
}

/// One rule of a security group.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SgRule {
    pub id: String,
    /// Traffic into the port; else out of it.
    pub ingress: bool,
    /// IPv6 rules are kept for dual stack, not enforced: the data plane carries IPv4 only.
    pub ipv6: bool,
    /// IP protocol number; `None`: any protocol.
    pub protocol: Option<u8>,
    /// Inclusive range of destination ports, or of ICMP `type << 8 | code`.
    pub ports: (u16, u16),
    pub remote: Remote,
}

/// Whom a rule is about.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Remote {
    Prefix(Ipv4Network),
    /// The fixed IPs of every port and neighbor in that group, in the port's VPC.
    Group(Id),
    /// The text of an IPv6 rule's prefix (kept, not enforced).
    Ipv6(String),
}

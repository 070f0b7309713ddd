//! Validated resources: what the controller keeps once a goal-state resource passed validation.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub type Mac = [u8; 6];

/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Vpc {
    pub id: String,
    pub revision: u32,
    pub vni: u32,
    pub cidr: Option<Ipv4Net>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subnet {
    pub id: String,
    pub revision: u32,
    pub vpc_id: String,
    pub cidr: Ipv4Net,
    pub gateway_ip: Ipv4Addr,
    pub gateway_mac: Mac,
    pub dhcp_enable: bool,
    pub dns: Vec<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FixedIp {
    pub subnet_id: String,
    pub ip: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Port {
    pub id: String,
    pub revision: u32,
    pub vpc_id: String,
    pub mac: Mac,
    pub fixed_ips: Vec<FixedIp>,
    /// Host-side interface the port program attaches to.
    pub iface: String,
}

impl Port {
    /// The address the data plane treats as the port's own (the first fixed IP).
    pub fn primary_ip(&self) -> Ipv4Addr {
        self.fixed_ips[0].ip
    }
}

/// Everything the agent has accepted, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub vpcs: BTreeMap<String, Vpc>,
    pub subnets: BTreeMap<String, Subnet>,
    pub ports: BTreeMap<String, Port>,
    /// Revision of deleted resources by (resource type, id): a late, older CREATE is out of order.
    pub tombstones: BTreeMap<(i32, String), u32>,
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Result<Mac, String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(format!("MAC address {s:?} must have 6 octets, has {}", parts.len()));
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(&parts) {
        if p.len() != 2 {
            return Err(format!("MAC address {s:?}: octet {p:?} is not two hex digits"));
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("MAC address {s:?}: octet {p:?} is not hex"))?;
    }
    Ok(mac)
}

/// A MAC a VM may own: unicast and not all zero.
pub fn parse_unicast_mac(s: &str) -> Result<Mac, String> {
    let mac = parse_mac(s)?;
    if mac[0] & 1 == 1 {
        return Err(format!("MAC address {s:?} is a multicast address"));
    }
    if mac == [0; 6] {
        return Err(format!("MAC address {s:?} is all zero"));
    }
    Ok(mac)
}

pub fn format_mac(mac: &Mac) -> String {
    let m = mac;
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

pub fn parse_ipv4(what: &str, s: &str) -> Result<Ipv4Addr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{what} {s:?} is not an IPv4 address"))
}

/// A network in CIDR notation with no host bits set.
pub fn parse_cidr(what: &str, s: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = s
        .trim()
        .parse()
        .map_err(|_| format!("{what} {s:?} is not an IPv4 CIDR"))?;
    if net.trunc() != net {
        return Err(format!("{what} {s:?} has host bits set (network is {})", net.trunc()));
    }
    Ok(net)
}

/// A stable gateway MAC for subnets that do not name one: locally administered, derived from the IP.
pub fn derived_gateway_mac(ip: Ipv4Addr) -> Mac {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:00:00:00:0a").unwrap(), [2, 0, 0, 0, 0, 10]);
        assert_eq!(parse_mac("02-00-00-00-00-0A").unwrap(), [2, 0, 0, 0, 0, 10]);
        assert!(parse_mac("02:00:00:00:00").unwrap_err().contains("6 octets"));
        assert!(parse_mac("02:00:00:00:00:0g").is_err());
        assert!(parse_mac("02:00:00:00:00:100").is_err());
        assert!(parse_unicast_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .contains("multicast"));
        assert!(parse_unicast_mac("00:00:00:00:00:00").is_err());
        assert_eq!(format_mac(&[2, 0, 0, 0, 0, 10]), "02:00:00:00:00:0a");
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("cidr", "198.18.0.0/24").unwrap().prefix_len(), 24);
        assert!(parse_cidr("cidr", "198.18.0.1/24").unwrap_err().contains("host bits"));
        assert!(parse_cidr("cidr", "198.18.0.0/33").is_err());
        assert!(parse_cidr("cidr", "not-a-cidr").is_err());
    }
}

//! `update_type` DELTA on a resource the agent holds: the message carries what changed, so every
//! field it leaves unset (proto3's default: empty, zero, false, absent) is taken from what is held,
//! and every field it sets replaces the held one. A repeated field that is not empty replaces the
//! held list as a whole (a list states its full membership: fixed IPs, DNS servers); an empty one
//! keeps it. A consequence of proto3: DELTA cannot clear a field or set a flag to false (DHCP
//! off, no gateway): a FULL configuration does that. When the message leaves nothing unset, it
//! is used as it is, without a copy: replays of large messages cost nothing more.

use std::borrow::Cow;

use alioth_proto::schema::{
    neighbor_configuration, port_configuration, subnet_configuration, DhcpConfiguration, NeighborConfiguration,
    PortConfiguration, SubnetConfiguration, VpcConfiguration,
};

use crate::goalstate::model::{format_mac, DhcpHost, FixedIp, Neighbor, Port, Subnet, Vpc};

/// `c` with what it leaves unset taken from `held`, copied only when something is unset.
fn fill<'a, C: Clone>(c: &'a C, unset: bool, complete: impl FnOnce(&mut C)) -> Cow<'a, C> {
    if !unset {
        return Cow::Borrowed(c);
    }
    let mut m = c.clone();
    complete(&mut m);
    Cow::Owned(m)
}

fn addresses<T>(held: &[FixedIp], make: impl Fn(&FixedIp) -> T) -> Vec<T> {
    held.iter().map(make).collect()
}

pub fn vpc<'a>(c: &'a VpcConfiguration, held: &Vpc) -> Cow<'a, VpcConfiguration> {
    let unset = c.tunnel_id == 0 || (c.cidr.trim().is_empty() && held.cidr.is_some());
    fill(c, unset, |m| {
        if m.tunnel_id == 0 {
            m.tunnel_id = held.vni;
        }
        if m.cidr.trim().is_empty() {
            m.cidr = held.cidr.map(|n| n.to_string()).unwrap_or_default();
        }
    })
}

/// The subnet's extra DHCP options are kept by `check_subnet` (encoded, they do not go back into
/// the message's text form).
pub fn subnet<'a>(c: &'a SubnetConfiguration, held: &Subnet) -> Cow<'a, SubnetConfiguration> {
    let unset = c.vpc_id.is_empty()
        || c.cidr.trim().is_empty()
        || (c.gateway.is_none() && held.gateway)
        || (!c.dhcp_enable && held.dhcp_enable)
        || (c.dns_entry_list.is_empty() && !held.dns.is_empty());
    fill(c, unset, |m| {
        if m.vpc_id.is_empty() {
            m.vpc_id = held.vpc_id.clone();
        }
        if m.cidr.trim().is_empty() {
            m.cidr = held.cidr.to_string();
        }
        if m.gateway.is_none() && held.gateway {
            m.gateway = Some(subnet_configuration::Gateway {
                ip_address: held.gateway_ip.to_string(),
                mac_address: format_mac(&held.gateway_mac),
            });
        }
        m.dhcp_enable |= held.dhcp_enable;
        if m.dns_entry_list.is_empty() {
            m.dns_entry_list = held
                .dns
                .iter()
                .map(|d| subnet_configuration::DnsEntry { entry: d.to_string() })
                .collect();
        }
    })
}

pub fn port<'a>(c: &'a PortConfiguration, held: &Port) -> Cow<'a, PortConfiguration> {
    let unset = c.vpc_id.is_empty()
        || c.mac_address.trim().is_empty()
        || c.fixed_ips.is_empty()
        || (c.security_group_ids.is_empty() && !held.security_groups.is_empty())
        || (c.allow_address_pairs.is_empty() && !held.allowed_pairs.is_empty());
    fill(c, unset, |m| {
        if m.security_group_ids.is_empty() {
            m.security_group_ids = held
                .security_groups
                .iter()
                .map(|g| port_configuration::SecurityGroupId { id: g.to_string() })
                .collect();
        }
        if m.allow_address_pairs.is_empty() {
            m.allow_address_pairs = held
                .allowed_pairs
                .iter()
                .map(|p| port_configuration::AllowAddressPair {
                    ip_address: p.to_string(),
                    mac_address: String::new(),
                })
                .collect();
        }
        if m.vpc_id.is_empty() {
            m.vpc_id = held.vpc_id.to_string();
        }
        if m.mac_address.trim().is_empty() {
            m.mac_address = format_mac(&held.mac);
        }
        if m.fixed_ips.is_empty() {
            m.fixed_ips = addresses(&held.fixed_ips, |f| port_configuration::FixedIp {
                subnet_id: f.subnet_id.to_string(),
                ip_address: f.ip.to_string(),
            });
        }
    })
}

pub fn neighbor<'a>(c: &'a NeighborConfiguration, held: &Neighbor) -> Cow<'a, NeighborConfiguration> {
    let unset = c.vpc_id.is_empty()
        || c.mac_address.trim().is_empty()
        || (c.host_ip_address.trim().is_empty() && !held.host_ip.is_unspecified())
        || c.fixed_ips.is_empty()
        || (c.security_group_ids.is_empty() && !held.security_groups.is_empty())
        || (c.allow_address_pairs.is_empty() && !held.allowed_pairs.is_empty());
    fill(c, unset, |m| {
        if m.security_group_ids.is_empty() {
            m.security_group_ids = held
                .security_groups
                .iter()
                .map(|g| neighbor_configuration::SecurityGroupId { id: g.to_string() })
                .collect();
        }
        if m.allow_address_pairs.is_empty() {
            m.allow_address_pairs = held
                .allowed_pairs
                .iter()
                .map(|p| neighbor_configuration::AllowAddressPair {
                    ip_address: p.to_string(),
                    mac_address: String::new(),
                })
                .collect();
        }
        if m.vpc_id.is_empty() {
            m.vpc_id = held.vpc_id.to_string();
        }
        if m.mac_address.trim().is_empty() {
            m.mac_address = format_mac(&held.mac);
        }
        if m.host_ip_address.trim().is_empty() && !held.host_ip.is_unspecified() {
            m.host_ip_address = held.host_ip.to_string();
        }
        if m.fixed_ips.is_empty() {
            m.fixed_ips = addresses(&held.fixed_ips, |f| neighbor_configuration::FixedIp {
                subnet_id: f.subnet_id.to_string(),
                ip_address: f.ip.to_string(),
                ..Default::default()
            });
        }
    })
}

/// Subnet and MAC are the entry's identity (they chose `held`).
pub fn dhcp<'a>(c: &'a DhcpConfiguration, held: &DhcpHost) -> Cow<'a, DhcpConfiguration> {
    let unset = (c.ipv4_address.trim().is_empty() && held.ip.is_some())
        || (c.port_host_name.trim().is_empty() && held.host_name.is_some());
    fill(c, unset, |m| {
        if m.ipv4_address.trim().is_empty() {
            m.ipv4_address = held.ip.map(|ip| ip.to_string()).unwrap_or_default();
        }
        if m.port_host_name.trim().is_empty() {
            m.port_host_name = held.host_name.clone().unwrap_or_default();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_port() -> Port {
        Port {
            id: "p".into(),
            revision: 1,
            vpc_id: "v".into(),
            mac: [2, 0, 0, 0, 0, 10],
            fixed_ips: [FixedIp {
                subnet_id: "s".into(),
                ip: "198.18.0.10".parse().unwrap(),
            }]
            .into_iter()
            .collect(),
            iface: "tapp".into(),
            security_groups: Default::default(),
            allowed_pairs: Default::default(),
        }
    }

    /// Unset fields come from what is held; set ones, lists included (whole), replace it; a
    /// message that sets everything is not copied.
    #[test]
    fn delta_fills_what_is_unset_and_replaces_what_is_set() {
        let held = held_port();
        let only_ips = PortConfiguration {
            id: "p".into(),
            fixed_ips: vec![port_configuration::FixedIp {
                subnet_id: "s".into(),
                ip_address: "198.18.0.11".into(),
            }],
            ..Default::default()
        };
        let merged = port(&only_ips, &held);
        assert!(matches!(merged, Cow::Owned(_)));
        assert_eq!(
            (merged.vpc_id.as_str(), merged.mac_address.as_str()),
            ("v", "02:00:00:00:00:0a")
        );
        assert_eq!(
            merged.fixed_ips, only_ips.fixed_ips,
            "a list replaces the held one whole"
        );
        let only_mac = PortConfiguration {
            mac_address: "02:00:00:00:00:0b".into(),
            ..Default::default()
        };
        let merged = port(&only_mac, &held);
        assert_eq!(merged.mac_address, "02:00:00:00:00:0b");
        assert_eq!(merged.fixed_ips.len(), 1, "an empty list keeps the held one");
        assert_eq!(merged.fixed_ips[0].ip_address, "198.18.0.10");
        let complete = PortConfiguration {
            vpc_id: "w".into(),
            ..only_mac.clone()
        };
        let complete = PortConfiguration {
            fixed_ips: only_ips.fixed_ips.clone(),
            ..complete
        };
        assert!(matches!(port(&complete, &held), Cow::Borrowed(_)));
    }
}

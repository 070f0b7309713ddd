//! DHCP entries: what a port's DHCP server hands out, keyed by the (subnet, MAC) they serve.

use alioth_proto::schema::{DhcpConfiguration, DhcpState, ResourceType};

use super::{delta, invalid, merged, Checked, Resource, Validator};
use crate::goalstate::dhcp;
use crate::goalstate::model::{self, DhcpHost};

impl Validator<'_> {
    /// A DHCP entry is the (subnet, MAC) it serves: ACA keys its entries by MAC and never reads
    /// the id (alcor-control-agent `src/dhcp/aca_dhcp_server.cpp`, `add_dhcp_entry`), and Alcor's
    /// DPM V1 sends no id, V2 a fresh random one on every build (data_plane_manager
    /// `DhcpService.java`). So the entry is stored under the
    /// key of the one already held for that MAC in that subnet, else under `<subnet>/<mac>`, and a
    /// message's entry replaces (or deletes) it whatever its id. The answer carries the id the
    /// message gave, or that key.
    pub(super) fn dhcp(&mut self, s: &DhcpState) {
        let Some(c) = &s.configuration else {
            return self.no_configuration(ResourceType::Dhcp, s.operation_type);
        };
        let key = match model::parse_unicast_mac(&c.mac_address) {
            Ok(mac) => match self.state.dhcp_host(&mac).filter(|d| d.subnet_id == c.subnet_id) {
                Some(held) => held.id.clone(),
                None => format!("{}/{}", c.subnet_id, model::format_mac(&mac)),
            },
            // Refused by `check_dhcp`, under the id the message gave.
            Err(_) if !c.id.is_empty() => c.id.clone(),
            Err(_) => format!("{}/{}", c.subnet_id, c.mac_address),
        };
        self.resource(
            ResourceType::Dhcp,
            (s.operation_type, &key, c.revision_number),
            |_| Ok(()),
            |v| {
                let c = merged(c, c.update_type, v.state.dhcp_hosts().get(&key), delta::dhcp);
                v.check_dhcp(&c, &key).map(Resource::from)
            },
        );
        if !c.id.is_empty() {
            if let Some(answer) = self.outcomes.last_mut() {
                answer.id = c.id.clone();
            }
        }
    }

    fn check_dhcp(&self, c: &DhcpConfiguration, key: &str) -> Checked<DhcpHost> {
        let Some(subnet) = self.state.subnets.get(&c.subnet_id) else {
            return invalid(format!("subnet_id {:?} is not a known subnet", c.subnet_id));
        };
        let mac = model::parse_unicast_mac(&c.mac_address).or_else(invalid)?;
        let ip = match c.ipv4_address.trim() {
            "" => None,
            a => {
                let ip = model::parse_ipv4("ipv4_address", a).or_else(invalid)?;
                if !subnet.cidr.contains(ip) {
                    return invalid(format!(
                        "ipv4_address {ip} is outside subnet {} ({})",
                        subnet.id, subnet.cidr
                    ));
                }
                Some(ip)
            }
        };
        let host_name = match c.port_host_name.trim() {
            "" => None,
            h if h.len() > dhcp::MAX_HOST_NAME => {
                return invalid(format!(
                    "port_host_name {h:?} is longer than {} bytes",
                    dhcp::MAX_HOST_NAME
                ))
            }
            h if !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') => {
                return invalid(format!(
                    "port_host_name {h:?} is not a host name (letters, digits, '-', '.')"
                ))
            }
            h => Some(h.to_string()),
        };
        if let Some(other) = self.state.dhcp_host(&mac).filter(|d| d.id != key) {
            return invalid(format!(
                "MAC {} already has DHCP entry {} in subnet {}",
                c.mac_address, other.id, other.subnet_id
            ));
        }
        Ok(DhcpHost {
            id: key.to_string(),
            revision: c.revision_number,
            subnet_id: c.subnet_id.clone(),
            mac,
            ip,
            host_name,
        })
    }
}

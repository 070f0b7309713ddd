//! Neighbors: ports on other hosts, checked against this host's own ports.

use alioth_proto::schema::{NeighborConfiguration, NeighborState, ResourceType};

use super::{delta, invalid, merged, Checked, Resource, Validator};
use crate::goalstate::model::{self, Id, Neighbor, Owner};

impl Validator<'_> {
    pub(super) fn neighbor(&mut self, s: &NeighborState) {
        let Some(c) = &s.configuration else {
            return self.no_configuration(ResourceType::Neighbor, s.operation_type);
        };
        // Alcor's DPM V2 lists this host's own ports in its L2 neighbor map (data_plane_manager
        // `NeighborService.buildNeighborStatesL2`). The local port is what forwards to them:
        // such a neighbor is accepted and changes nothing, a DELETE of it included.
        if self.is_own_port(c) {
            return self.record(ResourceType::Neighbor, s.operation_type, &c.id, |_, _| Ok(None));
        }
        self.resource(
            ResourceType::Neighbor,
            (s.operation_type, &c.id, c.revision_number),
            |_| Ok(()),
            |v| {
                let held = v.state.neighbors().get(c.id.as_str());
                let c = merged(c, c.update_type, held, |c, h| delta::neighbor(c, h));
                v.check_neighbor(&c).map(Resource::from)
            },
        );
    }

    /// Whether neighbor `c` is one of this host's ports: the same id, or a port of that VPC with
    /// the same MAC holding every one of its addresses.
    fn is_own_port(&self, c: &NeighborConfiguration) -> bool {
        if self.state.ports().contains_key(c.id.as_str()) {
            return true;
        }
        let Ok(mac) = model::parse_unicast_mac(&c.mac_address) else {
            return false;
        };
        let Some(port) = self
            .state
            .mac_owner(&c.vpc_id, &mac)
            .and_then(|id| self.state.ports().get(id))
        else {
            return false;
        };
        let held = |ip: &str| {
            ip.trim()
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| port.fixed_ips.iter().any(|p| p.ip == ip))
        };
        !c.fixed_ips.is_empty() && c.fixed_ips.iter().all(|f| held(&f.ip_address))
    }

    fn check_neighbor(&self, c: &NeighborConfiguration) -> Checked<Neighbor> {
        let Some(vpc) = self.known_vpc(&c.vpc_id) else {
            return invalid(format!("vpc_id {:?} is not a known VPC", c.vpc_id));
        };
        let mac = model::parse_unicast_mac(&c.mac_address).or_else(invalid)?;
        // One of our ports under its own MAC is taken care of before (`is_own_port`); any other
        // neighbor with that MAC would shadow the port in the VPC's ARP answers.
        if let Some(port) = self.state.mac_owner(&c.vpc_id, &mac) {
            return invalid(format!("MAC {} is port {port}'s, on this host", c.mac_address));
        }
        // No host yet (DPM sends one when it lacks the node's information): stored as unresolved
        // (the unspecified address, which has no next hop), so its traffic is dropped and counted
        // (drop_no_next_hop) until a later message names the host.
        let host_ip = match c.host_ip_address.trim() {
            "" => std::net::Ipv4Addr::UNSPECIFIED,
            a => {
                let ip = model::parse_ipv4("host_ip_address", a).or_else(invalid)?;
                if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
                    return invalid(format!("host_ip_address {ip} is not a unicast address"));
                }
                if Some(ip) == self.naming.tunnel_endpoint {
                    return invalid(format!(
                        "host_ip_address {ip} is this host, and the neighbor is none of its ports"
                    ));
                }
                ip
            }
        };
        if let Some(f) = c.fixed_ips.iter().find(|f| f.tunnel_id != 0 && f.tunnel_id != vpc.vni) {
            return invalid(format!(
                "fixed ip {} has tunnel_id {}, but VPC {} has VNI {}",
                f.ip_address, f.tunnel_id, vpc.id, vpc.vni
            ));
        }
        let ips = c
            .fixed_ips
            .iter()
            .map(|f| (f.subnet_id.as_str(), f.ip_address.as_str()));
        let id: Id = c.id.as_str().into();
        let fixed_ips = self.check_fixed_ips(&c.vpc_id, &Owner::Neighbor(id.clone()), ips)?;
        Ok(Neighbor {
            id,
            revision: c.revision_number,
            vpc_id: vpc.id.clone(),
            mac,
            host_ip,
            fixed_ips,
            security_groups: model::groups(c.security_group_ids.iter().map(|g| g.id.as_str())),
            allowed_pairs: model::parse_pairs(c.allow_address_pairs.iter().map(|p| p.ip_address.as_str()))
                .or_else(invalid)?,
        })
    }
}

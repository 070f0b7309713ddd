//! Ports: their VPC, subnets and fixed IPs, MAC, and the interface they are named after.

use super::*;

impl Validator<'_> {
    pub(super) fn port(&mut self, s: &PortState) {
        let Some(c) = &s.configuration else {
            return self.no_configuration(ResourceType::Port, s.operation_type);
        };
        // A VM that moved to this host: its port comes while the neighbor DPM named after it
        // (`NeighborService.buildNeighborState` uses the port's id) is still held. The local port
        // wins: the neighbor goes, as part of the port's change, before the port takes its
        // addresses (the plan applies changes in order, so the endpoints end up the port's).
        let upsert = matches!(op_of(s.operation_type), Ok((_, Op::Upsert)));
        let moved = upsert
            .then(|| self.state.neighbors().get(c.id.as_str()).cloned())
            .flatten();
        let (outcome, at) = (self.outcomes.len(), self.changes.len());
        if moved.is_some() {
            self.state.delete(ResourceType::Neighbor, &c.id);
        }
        self.resource(
            ResourceType::Port,
            (s.operation_type, &c.id, c.revision_number),
            |_| Ok(()),
            |v| {
                let c = merged(c, c.update_type, v.state.ports().get(c.id.as_str()), |c, h| {
                    delta::port(c, h)
                });
                v.check_port(&c).map(Resource::from)
            },
        );
        let Some(neighbor) = moved else { return };
        if self.outcomes[outcome].status == OperationStatus::Success {
            let gone = Change {
                before: Some(Resource::Neighbor(neighbor)),
                after: None,
                outcome,
            };
            self.changes.insert(at, gone);
        } else {
            // The port was refused: the neighbor stays what it was.
            self.state.put(Resource::Neighbor(neighbor));
        }
    }

    /// The VPC `id` names, if known (through `recent`).
    pub(super) fn known_vpc(&self, id: &str) -> Option<Rc<Vpc>> {
        remembered(
            &mut self.recent.borrow_mut().vpc,
            |v| &*v.id == id,
            || self.state.vpcs.get(id),
        )
    }

    /// The subnet `id` names, if known (through `recent`).
    pub(super) fn known_subnet(&self, id: &str) -> Option<Rc<Subnet>> {
        remembered(
            &mut self.recent.borrow_mut().subnet,
            |s| &*s.id == id,
            || self.state.subnets.get(id),
        )
    }

    /// Addresses of a port or neighbor: each in a known subnet of `vpc`, a host address that is not
    /// the gateway, and held by nobody else in the VPC.
    pub(super) fn check_fixed_ips<'s>(
        &self,
        vpc: &str,
        owner: &Owner,
        ips: impl Iterator<Item = (&'s str, &'s str)>,
    ) -> Checked<FixedIps> {
        let mut out = FixedIps::new();
        for (subnet_id, ip) in ips {
            let Some(subnet) = self.known_subnet(subnet_id) else {
                return invalid(format!("fixed ip subnet_id {subnet_id:?} is not a known subnet"));
            };
            if subnet.vpc_id != vpc {
                return invalid(format!(
                    "subnet {} belongs to VPC {}, not {vpc}",
                    subnet.id, subnet.vpc_id
                ));
            }
            let ip = model::parse_ipv4("fixed ip", ip).or_else(invalid)?;
            if !subnet.cidr.contains(ip) || ip == subnet.cidr.network() || ip == subnet.cidr.broadcast() {
                return invalid(format!(
                    "fixed ip {ip} is not a host address of subnet {} ({})",
                    subnet.id, subnet.cidr
                ));
            }
            if subnet.gateway && ip == subnet.gateway_ip {
                return invalid(format!("fixed ip {ip} is the gateway of subnet {}", subnet.id));
            }
            if let Some(other) = self.state.addr_owner(vpc, ip).filter(|o| *o != owner) {
                return invalid(format!("fixed ip {ip} is already used by {other}"));
            }
            if out.iter().any(|f| f.ip == ip) {
                return invalid(format!("fixed ip {ip} is listed twice"));
            }
            out.push(FixedIp {
                subnet_id: subnet.id.clone(),
                ip,
            });
        }
        if out.is_empty() {
            return invalid("no fixed_ips");
        }
        Ok(out)
    }

    pub(super) fn check_port(&self, c: &alioth_proto::schema::PortConfiguration) -> Checked<Port> {
        let Some(vpc) = self.known_vpc(&c.vpc_id) else {
            return invalid(format!("vpc_id {:?} is not a known VPC", c.vpc_id));
        };
        let mac = model::parse_unicast_mac(&c.mac_address).or_else(invalid)?;
        let ips = c
            .fixed_ips
            .iter()
            .map(|f| (f.subnet_id.as_str(), f.ip_address.as_str()));
        let id: Id = c.id.as_str().into();
        let fixed_ips = self.check_fixed_ips(&c.vpc_id, &Owner::Port(id.clone()), ips)?;
        if let Some(other) = self.state.mac_owner(&c.vpc_id, &mac).filter(|o| *o != c.id) {
            return invalid(format!("MAC {} is already used by port {other}", c.mac_address));
        }
        // Pairs with another MAC would need frames from that MAC let out, which the data plane
        // does not do: refused rather than half honoured.
        if let Some(p) = c
            .allow_address_pairs
            .iter()
            .find(|p| !p.mac_address.trim().is_empty() && model::parse_mac(&p.mac_address).ok() != Some(mac))
        {
            return invalid(format!(
                "allowed address pair {} has MAC {}: only pairs with the port's own MAC are supported",
                p.ip_address, p.mac_address
            ));
        }
        let allowed_pairs =
            model::parse_pairs(c.allow_address_pairs.iter().map(|p| p.ip_address.as_str())).or_else(invalid)?;
        let iface = self.naming.iface(&c.id, &c.name);
        // What the kernel's dev_valid_name refuses: such a port could never be attached.
        let refused = |b: u8| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace();
        if iface.is_empty() || iface.len() > 15 || iface == "." || iface == ".." || iface.bytes().any(refused) {
            return invalid(format!("interface name {iface:?} is not a valid Linux interface name"));
        }
        // One port per interface: two ids whose first 11 characters agree name the same tap, and
        // the second would take over the first one's VM, whatever their VPCs.
        if let Some(owner) = self.state.iface_owner(&iface).filter(|o| ***o != *c.id) {
            return invalid(format!("interface {iface} already belongs to port {owner}"));
        }
        Ok(Port {
            id,
            revision: c.revision_number,
            vpc_id: vpc.id.clone(),
            mac,
            fixed_ips,
            iface: iface.into(),
            security_groups: model::groups(c.security_group_ids.iter().map(|g| g.id.as_str())),
            allowed_pairs,
        })
    }
}

//! VPCs and subnets: their VNIs (their own, or their subnets'), CIDRs, gateways, and what may
//! delete them.

use super::*;

impl Validator<'_> {
    /// `subnet_vnis`: the tunnel ids the message's subnets give their VPCs.
    pub(super) fn vpc(&mut self, s: &VpcState, subnet_vnis: &BTreeMap<&str, BTreeSet<u64>>) {
        let Some(c) = &s.configuration else {
            return self.no_configuration(ResourceType::Vpc, s.operation_type);
        };
        let from_subnets = subnet_vnis.get(c.id.as_str());
        self.resource(
            ResourceType::Vpc,
            (s.operation_type, &c.id, c.revision_number),
            |v| v.may_delete_vpc(&c.id),
            |v| {
                let c = merged(c, c.update_type, v.state.vpcs.get(&c.id), delta::vpc);
                v.check_vpc(&c, from_subnets).map(Resource::from)
            },
        );
    }

    /// The VPC's VNI: its own `tunnel_id`, else the one its subnets in the same message carry
    /// (DPM leaves the VPC's unset and fills the subnets' deprecated field). Any disagreement is
    /// refused rather than guessed.
    pub(super) fn vni(c: &VpcConfiguration, from_subnets: Option<&BTreeSet<u64>>) -> Checked<u32> {
        let subnets: Vec<u64> = from_subnets.into_iter().flatten().copied().collect();
        let vni = match (c.tunnel_id, subnets.as_slice()) {
            (0, []) => return invalid("no tunnel_id: neither the VPC nor a subnet of it in this message has one"),
            (0, [one]) => *one,
            (0, many) => return invalid(format!("its subnets give conflicting tunnel_ids {many:?}")),
            (own, subs) if subs.iter().all(|s| *s == u64::from(own)) => u64::from(own),
            (own, subs) => return invalid(format!("tunnel_id {own} conflicts with its subnets' {subs:?}")),
        };
        match u32::try_from(vni) {
            Ok(vni) if (1..=MAX_VNI).contains(&vni) => Ok(vni),
            _ => invalid(format!("tunnel_id {vni} is not a VNI (1..={MAX_VNI})")),
        }
    }

    pub(super) fn may_delete_vpc(&self, id: &str) -> Checked<()> {
        if let Some(sub) = self.state.subnets.values().find(|x| x.vpc_id == id) {
            return refused(format!("VPC {id} is still used by subnet {}", sub.id));
        }
        if self.state.vpc_in_use(id) {
            return refused(format!("VPC {id} is still used by ports or neighbors"));
        }
        Ok(())
    }

    pub(super) fn check_vpc(&self, c: &VpcConfiguration, from_subnets: Option<&BTreeSet<u64>>) -> Checked<Vpc> {
        let vni = Self::vni(c, from_subnets)?;
        let cidr = match c.cidr.trim() {
            "" => None,
            s => Some(model::parse_cidr("VPC cidr", s).or_else(invalid)?),
        };
        if let Some(s) = cidr.and_then(|net| {
            self.state
                .subnets
                .values()
                .find(|s| s.vpc_id == c.id && !s.cidr.is_subnet_of(net))
        }) {
            return invalid(format!(
                "VPC cidr {} would leave subnet {} ({}) outside",
                c.cidr, s.id, s.cidr
            ));
        }
        if let Some(other) = self.state.vpcs.values().find(|x| x.vni == vni && *x.id != *c.id) {
            return invalid(format!("tunnel_id {vni} is already used by VPC {}", other.id));
        }
        Ok(Vpc {
            id: c.id.as_str().into(),
            revision: c.revision_number,
            vni,
            cidr,
        })
    }

    pub(super) fn subnet(&mut self, s: &SubnetState) {
        let Some(c) = &s.configuration else {
            return self.no_configuration(ResourceType::Subnet, s.operation_type);
        };
        self.resource(
            ResourceType::Subnet,
            (s.operation_type, &c.id, c.revision_number),
            |v| match v.subnet_users(&c.id).first() {
                Some((user, _, _)) => refused(format!("subnet {} is still used by {user}", c.id)),
                None => match v.state.dhcp_hosts().values().find(|d| d.subnet_id == c.id) {
                    Some(d) => refused(format!("subnet {} is still used by DHCP entry {}", c.id, d.id)),
                    None => Ok(()),
                },
            },
            |v| {
                let held = v.state.subnets.get(&c.id).filter(|_| is_delta(c.update_type));
                let c = merged(c, c.update_type, held, delta::subnet);
                v.check_subnet(&c, held).map(Resource::from)
            },
        );
    }

    /// The ports and neighbors with an address in `subnet`: (who, VPC, addresses).
    pub(super) fn subnet_users(&self, subnet: &str) -> Vec<(Owner, &str, &[FixedIp])> {
        self.state
            .subnet_users(subnet)
            .filter_map(
                |id| match (self.state.ports().get(id), self.state.neighbors().get(id)) {
                    (Some(p), _) => Some((Owner::Port(p.id.clone()), &*p.vpc_id, p.fixed_ips.as_slice())),
                    (None, Some(n)) => Some((Owner::Neighbor(n.id.clone()), &*n.vpc_id, n.fixed_ips.as_slice())),
                    _ => None,
                },
            )
            .collect()
    }

    /// The subnet's CIDR: room for a gateway and ports, inside its VPC's, overlapping no other
    /// subnet of the VPC.
    fn subnet_cidr(
        &self,
        c: &alioth_proto::schema::SubnetConfiguration,
        vpc_cidr: Option<ipnetwork::Ipv4Network>,
    ) -> Checked<ipnetwork::Ipv4Network> {
        let cidr = model::parse_cidr("subnet cidr", &c.cidr).or_else(invalid)?;
        if cidr.prefix() > 30 {
            return invalid(format!("subnet cidr {cidr} leaves no room for a gateway and ports"));
        }
        if let Some(vpc_cidr) = vpc_cidr.filter(|v| !cidr.is_subnet_of(*v)) {
            return invalid(format!("subnet cidr {cidr} is outside VPC cidr {vpc_cidr}"));
        }
        if let Some(other) = self
            .state
            .subnets
            .values()
            .find(|x| x.vpc_id == c.vpc_id && *x.id != *c.id && (x.cidr.overlaps(cidr)))
        {
            return invalid(format!(
                "subnet cidr {cidr} overlaps subnet {} ({})",
                other.id, other.cidr
            ));
        }
        Ok(cidr)
    }

    /// `held`: the subnet a DELTA completes, whose extra DHCP options it keeps when it names none.
    pub(super) fn check_subnet(
        &self,
        c: &alioth_proto::schema::SubnetConfiguration,
        held: Option<&Subnet>,
    ) -> Checked<Subnet> {
        let Some(vpc) = self.state.vpcs.get(&c.vpc_id) else {
            return invalid(format!("vpc_id {:?} is not a known VPC", c.vpc_id));
        };
        let users = self.subnet_users(&c.id);
        if let Some((user, _, _)) = users.iter().find(|(_, vpc, _)| *vpc != c.vpc_id) {
            return invalid(format!(
                "subnet {} cannot move to VPC {}: {user} uses it",
                c.id, c.vpc_id
            ));
        }
        let cidr = self.subnet_cidr(c, vpc.cidr)?;
        // No gateway: none given, or 0.0.0.0 (Alcor's test controller, pseudo_controller
        // `ncm_test.java`). The first address of the subnet is then the DHCP server's only.
        let gw = c
            .gateway
            .as_ref()
            .filter(|g| !matches!(g.ip_address.trim(), "" | "0.0.0.0"));
        let gateway = gw.is_some();
        let gateway_ip = match gw {
            Some(g) => model::parse_ipv4("gateway ip", &g.ip_address).or_else(invalid)?,
            None => std::net::Ipv4Addr::from(u32::from(cidr.network()) + 1),
        };
        if !cidr.contains(gateway_ip) || gateway_ip == cidr.network() || gateway_ip == cidr.broadcast() {
            return invalid(format!("gateway ip {gateway_ip} is not a host address of {cidr}"));
        }
        let gateway_mac = match gw.map(|g| g.mac_address.trim()).filter(|m| !m.is_empty()) {
            Some(m) => model::parse_unicast_mac(m).or_else(invalid)?,
            None => model::derived_gateway_mac(gateway_ip),
        };
        if let Some(owner) = self.state.addr_owner(&c.vpc_id, gateway_ip).filter(|_| gateway) {
            return invalid(format!("gateway ip {gateway_ip} is used by {owner}"));
        }
        for (user, _, ips) in &users {
            if ips.iter().any(|f| *f.subnet_id == *c.id && !cidr.contains(f.ip)) {
                return invalid(format!("cidr {cidr} would leave {user} outside its subnet"));
            }
        }
        let dns = c
            .dns_entry_list
            .iter()
            .map(|d| model::parse_ipv4("dns entry", &d.entry))
            .collect::<Result<Vec<_>, _>>()
            .or_else(invalid)?;
        let dhcp_options = match held.filter(|_| c.extra_dhcp_options.is_empty()) {
            Some(h) => h.dhcp_options.clone(),
            None => c
                .extra_dhcp_options
                .iter()
                .map(|o| dhcp::parse_extra(&o.name, &o.value))
                .collect::<Result<Vec<_>, _>>()
                .or_else(invalid)?,
        };
        let subnet = Subnet {
            id: c.id.as_str().into(),
            revision: c.revision_number,
            vpc_id: c.vpc_id.clone(),
            cidr,
            gateway_ip,
            gateway_mac,
            gateway,
            dhcp_enable: c.dhcp_enable,
            dns,
            dhcp_options,
        };
        dhcp::check_subnet(&subnet).or_else(invalid)?;
        Ok(subnet)
    }
}

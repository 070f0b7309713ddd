//! Routers and gateways. Routers are read as Alcor's DPM builds them (alcor
//! `services/data_plane_manager/.../service/impl/RouterService.java`): INFO (no operation set),
//! one state per router carrying the routing tables of the message's ports' subnets only, so the
//! tables of one router arrive over several messages; and kept as ACA keeps them
//! (alcor-control-agent `src/ovs/aca_ovs_l3_programmer.cpp`): tables merge by subnet, rules by id,
//! a rule's DELETE removes it.

use std::collections::BTreeMap;

use alioth_proto::schema::gateway_configuration::ExtraInfo;
use alioth_proto::schema::router_configuration::{RoutingRule as WireRule, SubnetRoutingTable};
use alioth_proto::schema::{
    DestinationType, GatewayConfiguration, GatewayState, OperationType, ResourceType, RouterConfiguration, RouterState,
    UpdateType,
};

use super::{invalid, Checked, Resource, Validator};
use crate::goalstate::model::{self, Gateway, Router, RoutingRule};

/// Rules one router may hold, over all its subnets: each is an entry of `ROUTES` in every
/// attached subnet's table.
pub const MAX_ROUTER_RULES: usize = 4096;

impl Validator<'_> {
    pub(super) fn router(&mut self, s: &RouterState) {
        let Some(c) = &s.configuration else {
            return self.no_configuration(ResourceType::Router, s.operation_type);
        };
        self.resource(
            ResourceType::Router,
            (s.operation_type, &c.id, c.revision_number),
            |_| Ok(()),
            |v| v.check_router(c).map(Resource::from),
        );
    }

    pub(super) fn gateway(&mut self, s: &GatewayState) {
        let Some(c) = &s.configuration else {
            return self.no_configuration(ResourceType::Gateway, s.operation_type);
        };
        self.resource(
            ResourceType::Gateway,
            (s.operation_type, &c.id, c.revision_number),
            |_| Ok(()),
            |_| check_gateway(c).map(Resource::from),
        );
    }

    fn check_router(&self, c: &RouterConfiguration) -> Checked<Router> {
        let dvr_mac = match c.host_dvr_mac_address.trim() {
            "" => None,
            mac => Some(model::parse_unicast_mac(mac).or_else(|e| invalid(format!("host_dvr_mac_address: {e}")))?),
        };
        let mut subnets = self
            .state
            .routers
            .get(&c.id)
            .map(|r| r.subnets.clone())
            .unwrap_or_default();
        for t in &c.subnet_routing_tables {
            let id = t.subnet_id.trim();
            if id.is_empty() {
                return invalid("a subnet routing table names no subnet");
            }
            if !self.state.subnets.contains_key(id) {
                return invalid(format!("subnet {id:?} is not known"));
            }
            let rules = subnets.entry(id.to_string()).or_default();
            // FULL: the table given is the subnet's whole table.
            if c.update_type == UpdateType::Full as i32 {
                rules.clear();
            }
            merge_rules(rules, t).or_else(|e| invalid(format!("subnet {id}: {e}")))?;
        }
        let total: usize = subnets.values().map(BTreeMap::len).sum();
        if total > MAX_ROUTER_RULES {
            return invalid(format!(
                "{total} routing rules; a router holds at most {MAX_ROUTER_RULES}"
            ));
        }
        Ok(Router {
            id: c.id.as_str().into(),
            revision: c.revision_number,
            dvr_mac,
            subnets,
        })
    }
}

/// Applies one table's rules to the rules held for its subnet: each rule's own operation says
/// whether it is put (CREATE, UPDATE, INFO) or removed (DELETE).
fn merge_rules(rules: &mut BTreeMap<String, RoutingRule>, t: &SubnetRoutingTable) -> Result<(), String> {
    for (i, r) in t.routing_rules.iter().enumerate() {
        let key = match r.id.trim() {
            "" => r.destination.trim().to_string(),
            id => id.to_string(),
        };
        if r.operation_type == OperationType::Delete as i32 {
            rules.remove(&key);
            continue;
        }
        let rule = rule(r).map_err(|e| format!("rule {i} ({key:?}): {e}"))?;
        rules.insert(key, rule);
    }
    Ok(())
}

fn rule(r: &WireRule) -> Result<RoutingRule, String> {
    let text = r.destination.trim();
    let destination: ipnetwork::Ipv4Network = match text.contains('/') {
        true => text
            .parse()
            .map_err(|_| format!("destination {text:?} is not an IPv4 CIDR"))?,
        false => model::parse_ipv4("destination", text)?.into(),
    };
    let destination =
        ipnetwork::Ipv4Network::new(destination.network(), destination.prefix()).map_err(|e| e.to_string())?;
    let next_hop = match r.next_hop_ip.trim() {
        "" => None,
        ip => Some(model::parse_ipv4("next_hop_ip", ip)?).filter(|ip| !ip.is_unspecified()),
    };
    let extra = r.routing_rule_extra_info.clone().unwrap_or_default();
    let to_gateway = match DestinationType::try_from(extra.destination_type) {
        Ok(t) => t == DestinationType::VpcGw,
        Err(_) => return Err(format!("unknown destination_type {}", extra.destination_type)),
    };
    let next_hop_mac = match extra.next_hop_mac.trim() {
        "" => None,
        mac => Some(model::parse_unicast_mac(mac)?),
    };
    Ok(RoutingRule {
        destination,
        next_hop,
        priority: r.priority,
        to_gateway,
        next_hop_mac,
    })
}

fn check_gateway(c: &GatewayConfiguration) -> Checked<Gateway> {
    let mut destinations = Vec::new();
    for (i, d) in c.destinations.iter().enumerate() {
        let ip = model::parse_ipv4("destination ip_address", &d.ip_address)
            .or_else(|e| invalid(format!("destination {i}: {e}")))?;
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return invalid(format!("destination {i}: {ip} is no tunnel endpoint"));
        }
        let mac = model::parse_unicast_mac(&d.mac_address).or_else(|e| invalid(format!("destination {i}: {e}")))?;
        destinations.push((ip, mac));
    }
    let extra = c.extra_info.as_ref().map(|e| match e {
        ExtraInfo::ZetaInfo(z) => format!("zeta port_inband_operation {}", z.port_inband_operation),
        ExtraInfo::ArionInfo(a) => format!(
            "arion vpc {} vni {} subnet {} port_inband_operation {}",
            a.vpc_id, a.vni, a.subnet_id, a.port_inband_operation
        ),
    });
    Ok(Gateway {
        id: c.id.as_str().into(),
        revision: c.revision_number,
        kind: c.gateway_type,
        destinations,
        extra,
    })
}

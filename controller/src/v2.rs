//! GoalStateV2 (maps keyed by id, plus `host_resources`) -> the resource lists the validator takes.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use alioth_proto::schema::{GoalState, GoalStateV2, ResourceType};

/// The part of `msg` meant for a host with addresses `host_ips`.
///
/// Without `host_resources` every resource is taken (as Alcor's own agent does). With it, only the
/// resources listed under one of `host_ips`, plus the VPCs and subnets those reference when the
/// message carries them, so that a sender listing only ports still gets them applied.
pub fn for_host(msg: &GoalStateV2, host_ips: &[IpAddr]) -> GoalState {
    let mut out = GoalState {
        format_version: msg.format_version,
        ..Default::default()
    };
    let wanted: Option<BTreeSet<(i32, &str)>> = (!msg.host_resources.is_empty()).then(|| {
        msg.host_resources
            .iter()
            .filter(|(ip, _)| ip.parse::<IpAddr>().is_ok_and(|ip| host_ips.contains(&ip)))
            .flat_map(|(_, r)| r.resources.iter().map(|r| (r.r#type, r.id.as_str())))
            .collect()
    });
    let take = |t: ResourceType, id: &str| wanted.as_ref().is_none_or(|w| w.contains(&(t as i32, id)));

    let ports = select(&msg.port_states, |id| take(ResourceType::Port, id));
    let neighbors = select(&msg.neighbor_states, |id| take(ResourceType::Neighbor, id));
    let mut subnets: BTreeSet<&str> = msg
        .subnet_states
        .keys()
        .filter(|id| take(ResourceType::Subnet, id))
        .map(String::as_str)
        .collect();
    let mut vpcs: BTreeSet<&str> = msg
        .vpc_states
        .keys()
        .filter(|id| take(ResourceType::Vpc, id))
        .map(String::as_str)
        .collect();
    if wanted.is_some() {
        // Pull in what the selected ports, neighbors and subnets reference.
        for c in ports.iter().filter_map(|p| p.configuration.as_ref()) {
            vpcs.insert(&c.vpc_id);
            subnets.extend(c.fixed_ips.iter().map(|f| f.subnet_id.as_str()));
        }
        for c in neighbors.iter().filter_map(|n| n.configuration.as_ref()) {
            vpcs.insert(&c.vpc_id);
            subnets.extend(c.fixed_ips.iter().map(|f| f.subnet_id.as_str()));
        }
        for id in subnets.clone() {
            if let Some(c) = msg.subnet_states.get(id).and_then(|s| s.configuration.as_ref()) {
                vpcs.insert(&c.vpc_id);
            }
        }
    }
    out.vpc_states = vpcs.iter().filter_map(|id| msg.vpc_states.get(*id).cloned()).collect();
    out.subnet_states = subnets
        .iter()
        .filter_map(|id| msg.subnet_states.get(*id).cloned())
        .collect();
    out.port_states = ports;
    out.neighbor_states = neighbors;
    out.dhcp_states = select(&msg.dhcp_states, |id| take(ResourceType::Dhcp, id));
    out.security_group_states = select(&msg.security_group_states, |id| take(ResourceType::Securitygroup, id));
    out.router_states = select(&msg.router_states, |id| take(ResourceType::Router, id));
    out.gateway_states = select(&msg.gateway_states, |id| take(ResourceType::Gateway, id));
    out
}

/// The states of `m` whose id `keep` accepts, sorted by id.
fn select<S: Clone>(m: &HashMap<String, S>, keep: impl Fn(&str) -> bool) -> Vec<S> {
    let mut v: Vec<(&String, &S)> = m.iter().filter(|(id, _)| keep(id)).collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v.into_iter().map(|(_, s)| s.clone()).collect()
}

/// IPv4 and IPv6 addresses of this network namespace's interfaces.
pub fn local_addresses() -> Vec<IpAddr> {
    crate::underlay::addresses().into_iter().map(|(_, a)| a).collect()
}

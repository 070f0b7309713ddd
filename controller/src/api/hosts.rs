//! GoalStateV2 (maps keyed by id, plus `host_resources`) -> the resource lists the validator takes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use alioth_proto::schema::{GoalState, ResourceType, SubnetState, VpcState};
use alioth_proto::wire::{self, by_id};

/// The part of `msg` meant for a host with addresses `host_ips`.
///
/// Without `host_resources` every resource is taken (as Alcor's own agent does). With it, only the
/// resources listed under one of `host_ips`, plus the VPCs and subnets those reference when the
/// message carries them, so that a sender listing only ports still gets them applied. The states
/// are moved, not copied: a message can carry 100,000 of them. Each map's states come out in id
/// order, each id once (the last entry of an id wins, as in a decoded map).
pub fn for_host(msg: wire::GoalStateV2, host_ips: &[IpAddr]) -> GoalState {
    let host_resources = by_id(msg.host_resources);
    let wanted: Option<BTreeSet<(i32, &str)>> = (!host_resources.is_empty()).then(|| {
        host_resources
            .iter()
            .filter(|(ip, _)| ip.parse::<IpAddr>().is_ok_and(|ip| host_ips.contains(&ip)))
            .flat_map(|(_, r)| r.resources.iter().map(|r| (r.r#type, r.id.as_str())))
            .collect()
    });
    let take = |t: ResourceType, id: &str| wanted.as_ref().is_none_or(|w| w.contains(&(t as i32, id)));

    let ports = select(by_id(msg.port_states), |id| take(ResourceType::Port, id));
    let neighbors = select(by_id(msg.neighbor_states), |id| take(ResourceType::Neighbor, id));
    // Few: by id, to pick what the selected resources reference.
    let mut subnet_states: BTreeMap<String, SubnetState> = by_id(msg.subnet_states).into_iter().collect();
    let mut vpc_states: BTreeMap<String, VpcState> = by_id(msg.vpc_states).into_iter().collect();
    let mut subnets: BTreeSet<String> = subnet_states
        .keys()
        .filter(|id| take(ResourceType::Subnet, id))
        .cloned()
        .collect();
    let mut vpcs: BTreeSet<String> = vpc_states
        .keys()
        .filter(|id| take(ResourceType::Vpc, id))
        .cloned()
        .collect();
    if wanted.is_some() {
        // Pull in what the selected ports, neighbors and subnets reference.
        let mut pull = |vpc: &String, subnet_ids: &mut dyn Iterator<Item = &String>| {
            if !vpcs.contains(vpc) {
                vpcs.insert(vpc.clone());
            }
            for id in subnet_ids {
                if !subnets.contains(id) {
                    subnets.insert(id.clone());
                }
            }
        };
        for c in ports.iter().filter_map(|p| p.configuration.as_ref()) {
            pull(&c.vpc_id, &mut c.fixed_ips.iter().map(|f| &f.subnet_id));
        }
        for c in neighbors.iter().filter_map(|n| n.configuration.as_ref()) {
            pull(&c.vpc_id, &mut c.fixed_ips.iter().map(|f| &f.subnet_id));
        }
        for id in &subnets {
            if let Some(c) = subnet_states.get(id).and_then(|s| s.configuration.as_ref()) {
                vpcs.insert(c.vpc_id.clone());
            }
        }
    }
    GoalState {
        format_version: msg.format_version,
        vpc_states: vpcs.iter().filter_map(|id| vpc_states.remove(id)).collect(),
        subnet_states: subnets.iter().filter_map(|id| subnet_states.remove(id)).collect(),
        port_states: ports,
        neighbor_states: neighbors,
        dhcp_states: select(by_id(msg.dhcp_states), |id| take(ResourceType::Dhcp, id)),
        security_group_states: select(by_id(msg.security_group_states), |id| {
            take(ResourceType::Securitygroup, id)
        }),
        router_states: select(by_id(msg.router_states), |id| take(ResourceType::Router, id)),
        gateway_states: select(by_id(msg.gateway_states), |id| take(ResourceType::Gateway, id)),
        elastic_ip_states: select(by_id(msg.elastic_ip_states), |id| take(ResourceType::ElasticIp, id)),
    }
}

/// The states whose id `keep` accepts, in order.
fn select<S>(pairs: Vec<(String, S)>, keep: impl Fn(&str) -> bool) -> Vec<S> {
    let mut out = Vec::with_capacity(pairs.len());
    out.extend(pairs.into_iter().filter(|(id, _)| keep(id)).map(|(_, s)| s));
    out
}

/// IPv4 and IPv6 addresses of this network namespace's interfaces.
pub fn local_addresses() -> Vec<IpAddr> {
    match crate::net::links::addresses() {
        Ok(all) => all.into_iter().map(|(_, a)| a).collect(),
        Err(e) => {
            tracing::warn!("cannot list this host's addresses: {e:#}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use alioth_proto::schema::{self, HostResources, ResourceIdType, RouterConfiguration, RouterState};

    use super::*;

    /// DPM V2 (`DataPlaneClientImplV2.java`) keys a host's router `HOST_IP/ROUTER_ID` in the map
    /// and in `host_resources`; the state keeps the router's own id.
    #[test]
    fn dpm_v2_routers_are_taken_by_their_host_keyed_entries() {
        let router = |subnet: &str| RouterState {
            operation_type: 0,
            configuration: Some(RouterConfiguration {
                id: "r1".into(),
                subnet_routing_tables: vec![schema::router_configuration::SubnetRoutingTable {
                    subnet_id: subnet.into(),
                    routing_rules: vec![],
                }],
                ..Default::default()
            }),
        };
        let mut msg = schema::GoalStateV2::default();
        for (host, subnet) in [("198.19.0.1", "s1"), ("198.19.0.2", "s2")] {
            let key = format!("{host}/r1");
            msg.router_states.insert(key.clone(), router(subnet));
            let listed = ResourceIdType {
                r#type: ResourceType::Router as i32,
                id: key,
            };
            msg.host_resources.insert(
                host.into(),
                HostResources {
                    resources: vec![listed],
                },
            );
        }
        let mine = for_host(msg.into(), &["198.19.0.2".parse().unwrap()]);
        assert_eq!(mine.router_states.len(), 1);
        let c = mine.router_states[0].configuration.as_ref().unwrap();
        assert_eq!(
            (c.id.as_str(), c.subnet_routing_tables[0].subnet_id.as_str()),
            ("r1", "s2")
        );
    }
}

//! Routers -> the `ROUTES` trie: for every subnet attached to a router, a route to each subnet of
//! that router (connected, delivered in its VPC) and its routing rules, each resolved to where its
//! next hop is.

use std::collections::BTreeMap;

use alioth_common::maps::{route_key, route_kind, Route, ROUTE_FIXED_BITS};
use ipnetwork::Ipv4Network;

use crate::goalstate::model::{Mac, RoutingRule, State, Subnet};

/// A `ROUTES` key: (prefix length over the whole key, key data).
pub type RouteKey = (u32, [u8; 12]);

/// Every route the state's routers make.
pub fn render(state: &State) -> BTreeMap<RouteKey, Route> {
    let mut out = BTreeMap::new();
    for router in state.routers.values() {
        let attached: Vec<(&Subnet, u32)> = router
            .subnets
            .keys()
            .filter_map(|id| {
                let s = state.subnets.get(id)?;
                Some((s, state.vpcs.get(&s.vpc_id)?.vni))
            })
            .collect();
        // Only a subnet with a gateway has frames routed: those sent to its gateway's MAC.
        for (from, vni) in attached.iter().filter(|(s, _)| s.gateway) {
            let key = |to: Ipv4Network| -> RouteKey {
                let data = route_key(*vni, from.gateway_ip.octets(), to.network().octets());
                (ROUTE_FIXED_BITS + u32::from(to.prefix()), data)
            };
            let router_mac = router.dvr_mac.unwrap_or(from.gateway_mac);
            for rule in by_precedence(&router.subnets[&*from.id]) {
                out.insert(key(rule.destination), resolve(state, from, *vni, router_mac, rule));
            }
            // Connected subnets over the rules: a rule never takes a subnet of the router away.
            for (to, to_vni) in &attached {
                let route = Route {
                    kind: route_kind::DIRECT,
                    vni: *to_vni,
                    router_mac: router.dvr_mac.unwrap_or(to.gateway_mac),
                    ..Default::default()
                };
                out.insert(key(to.cidr), route);
            }
        }
    }
    out
}

/// The rules of one subnet, the one that wins each destination last: the highest priority, and
/// among equals the first by id.
fn by_precedence(rules: &BTreeMap<String, RoutingRule>) -> Vec<&RoutingRule> {
    let mut out: Vec<(&String, &RoutingRule)> = rules.iter().collect();
    out.sort_by(|(ia, a), (ib, b)| a.priority.cmp(&b.priority).then(ib.cmp(ia)));
    out.into_iter().map(|(_, r)| r).collect()
}

/// Where `rule` of subnet `from` (in `vni`) sends frames: delivered in the VPC (no next hop), to
/// the port or neighbor holding its next hop, over VXLAN to the gateway destination that is its
/// next hop, or nowhere while its next hop is none of these.
fn resolve(state: &State, from: &Subnet, vni: u32, router_mac: Mac, rule: &RoutingRule) -> Route {
    let route = Route {
        vni,
        router_mac,
        ..Default::default()
    };
    let Some(hop) = rule.next_hop else {
        return Route {
            kind: route_kind::DIRECT,
            ..route
        };
    };
    if state.addr_owner(&from.vpc_id, hop).is_some() {
        return Route {
            kind: route_kind::VIA,
            ip: hop.octets(),
            ..route
        };
    }
    let gateway = state
        .gateways
        .values()
        .flat_map(|g| g.destinations.iter())
        .find(|(ip, _)| *ip == hop);
    match gateway {
        Some((ip, mac)) => Route {
            kind: route_kind::TUNNEL,
            ip: ip.octets(),
            mac: rule.next_hop_mac.unwrap_or(*mac),
            ..route
        },
        None => Route {
            kind: route_kind::BLACKHOLE,
            ..route
        },
    }
}

//! Routers -> the `ROUTES` trie: for every subnet attached to a router, a route to each subnet of
//! that router (connected, delivered in its VPC) and its routing rules, each resolved to where its
//! next hop is.

use std::collections::{BTreeMap, HashMap};

use alioth_common::maps::{route_key, route_kind, Route, ROUTE_FIXED_BITS};
use ipnetwork::Ipv4Network;

use crate::goalstate::model::{Mac, RoutingRule, State, Subnet};

/// A `ROUTES` key: (prefix length over the whole key, key data).
pub type RouteKey = (u32, [u8; 12]);

/// Entries of `ROUTES`.
pub type Routes = HashMap<RouteKey, Route>;

/// Every route the state's routers make.
pub fn render(state: &State) -> Routes {
    let mut out = Routes::new();
    if state.routers.is_empty() {
        return out;
    }
    let inside = vpc_networks(state);
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
                let inside = inside.get(&*from.vpc_id).map_or(&[][..], Vec::as_slice);
                out.insert(
                    key(rule.destination),
                    resolve(state, from, inside, *vni, router_mac, rule),
                );
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

/// Each VPC's networks: its CIDR and its subnets' (what a rule without a next hop delivers in).
/// Gathered once per render: DPM sends a rule without a next hop for every subnet.
fn vpc_networks(state: &State) -> HashMap<&str, Vec<Ipv4Network>> {
    let mut out: HashMap<&str, Vec<Ipv4Network>> = HashMap::new();
    for (id, vpc) in &state.vpcs {
        out.entry(id.as_str()).or_default().extend(vpc.cidr);
    }
    for s in state.subnets.values() {
        out.entry(&*s.vpc_id).or_default().push(s.cidr);
    }
    out
}

/// Where `rule` of subnet `from` (in `vni`) sends frames: delivered in the VPC (`inside`, its
/// networks) or out of it (no next hop), to the port or neighbor holding its next hop, over VXLAN
/// to the gateway destination that is its next hop, or nowhere while its next hop is none of these.
fn resolve(
    state: &State,
    from: &Subnet,
    inside: &[Ipv4Network],
    vni: u32,
    router_mac: Mac,
    rule: &RoutingRule,
) -> Route {
    let route = Route {
        vni,
        router_mac,
        ..Default::default()
    };
    // No next hop: delivered in the VPC when the destination lies inside one of its subnets;
    // else out of it by the host (an elastic IP's, `nat`).
    let Some(hop) = rule.next_hop else {
        let kind = if inside.iter().any(|cidr| rule.destination.is_subnet_of(*cidr)) {
            route_kind::DIRECT
        } else {
            route_kind::EXTERNAL
        };
        return Route { kind, ..route };
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

#[cfg(test)]
mod tests {
    use alioth_common::maps::route_kind::{BLACKHOLE, DIRECT, EXTERNAL, TUNNEL, VIA};
    use alioth_proto::schema::{GoalState, OperationType, UpdateType};

    use super::*;
    use crate::goalstate::plan::tests::port;
    use crate::goalstate::validate::router::tests::{router, rule, two_subnets};
    use crate::goalstate::validate::{validate, Naming};

    const DVR: Mac = [0xfe, 0x16, 0x11, 0, 0, 0];

    /// s1's route to `dst`/`len` (s1: VNI 100, gateway 198.18.0.1).
    fn s1_route(routes: &Routes, dst: [u8; 4], len: u32) -> Option<Route> {
        routes
            .get(&(ROUTE_FIXED_BITS + len, route_key(100, [198, 18, 0, 1], dst)))
            .copied()
    }

    #[test]
    fn routes_are_the_routers_subnets_and_their_rules_resolved() {
        use OperationType::Create;
        let mut state = two_subnets();
        let gs = GoalState {
            port_states: vec![port(Create, "p1", "v1", "s1", 0, 10)],
            gateway_states: vec![alioth_proto::schema::GatewayState {
                operation_type: Create as i32,
                configuration: Some(alioth_proto::schema::GatewayConfiguration {
                    id: "g1".into(),
                    destinations: vec![alioth_proto::schema::gateway_configuration::Destination {
                        ip_address: "198.19.0.9".into(),
                        mac_address: "02:00:00:00:00:09".into(),
                    }],
                    ..Default::default()
                }),
            }],
            router_states: vec![router(
                Create,
                UpdateType::Delta,
                vec![
                    (
                        "s1",
                        vec![
                            rule(Create, "default", "0.0.0.0/0", "198.19.0.9", 0),
                            rule(Create, "via", "198.20.0.0/16", "198.18.0.10", 0),
                            rule(Create, "lost", "198.21.0.0/16", "198.18.0.99", 0),
                            rule(Create, "local", "198.22.0.0/16", "", 0),
                            // One destination thrice: the highest priority wins, then the first id.
                            rule(Create, "b-high", "198.23.0.0/16", "198.18.0.10", 9),
                            rule(Create, "a-high", "198.23.0.0/16", "", 9),
                            rule(Create, "low", "198.23.0.0/16", "198.19.0.9", 1),
                            // A rule for a subnet of the router never takes it away.
                            rule(Create, "shadow", "198.18.1.0/24", "198.19.0.9", 99),
                        ],
                    ),
                    ("s2", vec![]),
                ],
            )],
            ..Default::default()
        };
        let (outcomes, _) = validate(&mut state, &gs, &Naming::default());
        assert!(outcomes.iter().all(|o| o.reason.is_none()), "{outcomes:?}");
        let routes = render(&state);
        let kind = |dst, len| s1_route(&routes, dst, len).map(|r| (r.kind, r.ip));
        assert_eq!(kind([0, 0, 0, 0], 0), Some((TUNNEL, [198, 19, 0, 9])));
        assert_eq!(s1_route(&routes, [0; 4], 0).unwrap().mac, [2, 0, 0, 0, 0, 9]);
        assert_eq!(kind([198, 20, 0, 0], 16), Some((VIA, [198, 18, 0, 10])));
        assert_eq!(kind([198, 21, 0, 0], 16), Some((BLACKHOLE, [0; 4])));
        // No next hop, and in no subnet of the VPC: out of it (by an elastic IP).
        assert_eq!(kind([198, 22, 0, 0], 16), Some((EXTERNAL, [0; 4])));
        assert_eq!(kind([198, 23, 0, 0], 16), Some((EXTERNAL, [0; 4])), "a-high");
        assert_eq!(kind([198, 18, 1, 0], 24), Some((DIRECT, [0; 4])), "connected");
        assert_eq!(kind([198, 18, 0, 0], 24), Some((DIRECT, [0; 4])), "its own subnet");
        assert!(routes.values().all(|r| r.router_mac == DVR && r.vni == 100));
        // s2 routes to both subnets and nowhere else; DELETE of the router takes all.
        assert_eq!(routes.len(), 7 + 2);
        let gone = GoalState {
            router_states: vec![router(OperationType::Delete, UpdateType::Delta, vec![])],
            ..Default::default()
        };
        validate(&mut state, &gone, &Naming::default());
        assert!(render(&state).is_empty());
    }
}

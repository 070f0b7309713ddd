//! Routers and gateways. Routers are read as Alcor's DPM builds them (alcor
//! `services/data_plane_manager/.../service/impl/RouterService.java`): INFO (no operation set),
//! one state per router carrying the routing tables of the subnets of the message's ports and L3
//! neighbors only (`DpmServiceImpl.constructRouterState`), so the tables of one router arrive over
//! several messages; and kept as ACA keeps them
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

#[cfg(test)]
pub(crate) mod tests {
    use alioth_proto::schema::router_configuration::RoutingRuleExtraInfo;
    use alioth_proto::schema::{GoalState, OperationStatus};
    use proptest::prelude::*;

    use super::*;
    use crate::goalstate::model::State;
    use crate::goalstate::plan::tests::{subnet, vpc};
    use crate::goalstate::validate::{validate, Naming};

    pub(crate) fn rule(op: OperationType, id: &str, destination: &str, next_hop: &str, priority: u32) -> WireRule {
        WireRule {
            operation_type: op as i32,
            id: id.into(),
            destination: destination.into(),
            next_hop_ip: next_hop.into(),
            priority,
            ..Default::default()
        }
    }

    pub(crate) fn router(op: OperationType, update: UpdateType, tables: Vec<(&str, Vec<WireRule>)>) -> RouterState {
        RouterState {
            operation_type: op as i32,
            configuration: Some(RouterConfiguration {
                revision_number: 1,
                id: "r1".into(),
                update_type: update as i32,
                host_dvr_mac_address: "fe:16:11:00:00:00".into(),
                subnet_routing_tables: tables
                    .into_iter()
                    .map(|(subnet_id, routing_rules)| SubnetRoutingTable {
                        subnet_id: subnet_id.into(),
                        routing_rules,
                    })
                    .collect(),
                ..Default::default()
            }),
        }
    }

    /// VPC v1 with subnets s1 (198.18.0.0/24) and s2 (198.18.1.0/24).
    pub(crate) fn two_subnets() -> State {
        let mut state = State::default();
        let gs = GoalState {
            vpc_states: vec![vpc(OperationType::Create, "v1", 100)],
            subnet_states: vec![
                subnet(OperationType::Create, "s1", "v1", 0),
                subnet(OperationType::Create, "s2", "v1", 1),
            ],
            ..Default::default()
        };
        validate(&mut state, &gs, &Naming::default());
        state
    }

    fn push(state: &mut State, r: RouterState) -> OperationStatus {
        let gs = GoalState {
            router_states: vec![r],
            ..Default::default()
        };
        let (outcomes, _) = validate(state, &gs, &Naming::default());
        outcomes[0].status
    }

    fn rule_ids(state: &State, subnet: &str) -> Vec<String> {
        state.routers["r1"].subnets[subnet].keys().cloned().collect()
    }

    /// DPM's routers: INFO, each message with some subnets' tables; they add up, rules by id.
    #[test]
    fn tables_and_rules_merge_as_aca_keeps_them() {
        use OperationType::{Create, Delete, Info};
        let mut state = two_subnets();
        let r = router(
            Info,
            UpdateType::Delta,
            vec![("s1", vec![rule(Create, "a", "0.0.0.0/0", "", 0)])],
        );
        assert_eq!(push(&mut state, r), OperationStatus::Success);
        let r = router(Info, UpdateType::Delta, vec![("s2", vec![])]);
        assert_eq!(push(&mut state, r), OperationStatus::Success);
        assert_eq!(state.routers["r1"].subnets.len(), 2, "s1's table kept");
        assert_eq!(state.routers["r1"].dvr_mac, Some([0xfe, 0x16, 0x11, 0, 0, 0]));
        let r = router(
            Info,
            UpdateType::Delta,
            vec![("s1", vec![rule(Create, "b", "198.19.0.0/16", "198.18.0.9", 5)])],
        );
        assert_eq!(push(&mut state, r), OperationStatus::Success);
        assert_eq!(rule_ids(&state, "s1"), ["a", "b"]);
        let r = router(
            Info,
            UpdateType::Delta,
            vec![("s1", vec![rule(Delete, "a", "", "", 0)])],
        );
        assert_eq!(push(&mut state, r), OperationStatus::Success);
        assert_eq!(rule_ids(&state, "s1"), ["b"]);
        // FULL: the tables given are whole; the others stay.
        let r = router(
            Info,
            UpdateType::Full,
            vec![("s1", vec![rule(Create, "c", "198.20.0.0/16", "", 0)])],
        );
        assert_eq!(push(&mut state, r), OperationStatus::Success);
        assert_eq!(rule_ids(&state, "s1"), ["c"]);
        assert!(state.routers["r1"].subnets.contains_key("s2"));
        // A destination with host bits is its network; an address is a /32.
        let r = router(
            Info,
            UpdateType::Delta,
            vec![(
                "s2",
                vec![
                    rule(Create, "h", "198.19.3.7", "", 0),
                    rule(Create, "n", "198.19.3.7/24", "", 0),
                ],
            )],
        );
        assert_eq!(push(&mut state, r), OperationStatus::Success);
        let rules = &state.routers["r1"].subnets["s2"];
        assert_eq!(rules["h"].destination.to_string(), "198.19.3.7/32");
        assert_eq!(rules["n"].destination.to_string(), "198.19.3.0/24");
        assert_eq!(
            push(&mut state, router(Delete, UpdateType::Delta, vec![])),
            OperationStatus::Success
        );
        assert!(state.routers.is_empty());
    }

    #[test]
    fn what_cannot_be_a_router_is_refused_with_a_reason() {
        use OperationType::{Create, Info};
        let mut state = two_subnets();
        let unknown = router(Info, UpdateType::Delta, vec![("s9", vec![])]);
        let mut bad_mac = router(Create, UpdateType::Delta, vec![]);
        bad_mac.configuration.as_mut().unwrap().host_dvr_mac_address = "01:00:5e:00:00:01".into();
        let bad_rule = router(
            Create,
            UpdateType::Delta,
            vec![("s1", vec![rule(Create, "x", "nowhere", "", 0)])],
        );
        let bad_hop = router(
            Create,
            UpdateType::Delta,
            vec![("s1", vec![rule(Create, "x", "0.0.0.0/0", "1.2.3", 0)])],
        );
        let mut bad_type = rule(Create, "x", "0.0.0.0/0", "", 0);
        bad_type.routing_rule_extra_info = Some(RoutingRuleExtraInfo {
            destination_type: 7,
            next_hop_mac: String::new(),
        });
        let bad_type = router(Create, UpdateType::Delta, vec![("s1", vec![bad_type])]);
        for r in [unknown, bad_mac, bad_rule, bad_hop, bad_type] {
            assert_eq!(push(&mut state, r), OperationStatus::InvalidArg);
        }
        assert!(state.routers.is_empty(), "nothing held");
    }

    #[test]
    fn gateways_keep_their_destinations() {
        let mut state = State::default();
        let gateway = |ip: &str, mac: &str| GatewayState {
            operation_type: OperationType::Create as i32,
            configuration: Some(GatewayConfiguration {
                id: "g1".into(),
                gateway_type: alioth_proto::schema::GatewayType::Igw as i32,
                destinations: vec![alioth_proto::schema::gateway_configuration::Destination {
                    ip_address: ip.into(),
                    mac_address: mac.into(),
                }],
                ..Default::default()
            }),
        };
        for (ip, mac, status) in [
            ("198.19.0.9", "02:00:00:00:00:09", OperationStatus::Success),
            ("0.0.0.0", "02:00:00:00:00:09", OperationStatus::InvalidArg),
            ("198.19.0.9", "ff:ff:ff:ff:ff:ff", OperationStatus::InvalidArg),
        ] {
            let gs = GoalState {
                gateway_states: vec![gateway(ip, mac)],
                ..Default::default()
            };
            let (outcomes, _) = validate(&mut state, &gs, &Naming::default());
            assert_eq!(outcomes[0].status, status, "{ip} {mac}");
        }
        assert_eq!(
            state.gateways["g1"].destinations,
            [("198.19.0.9".parse().unwrap(), [2, 0, 0, 0, 0, 9])]
        );
        let hosts: Vec<_> = state.remote_hosts().collect();
        assert_eq!(
            hosts,
            [&"198.19.0.9".parse::<std::net::Ipv4Addr>().unwrap()],
            "a tunnel endpoint to resolve"
        );
    }

    proptest! {
        /// Any router message: an answer, no panic, and rules held only for subnets held.
        #[test]
        fn any_router_is_answered(
            op in 0i32..6,
            update in 0i32..3,
            mac in "[0-9a-f:]{0,17}",
            rules in prop::collection::vec(
                (0i32..6, "[a-c]{0,1}", "[0-9./]{0,18}", "[0-9.]{0,15}", 0u32..3, 0i32..3),
                0..6,
            ),
            subnet in prop::sample::select(vec!["s1", "s2", "s3", ""]),
        ) {
            let mut state = two_subnets();
            let rules = rules
                .into_iter()
                .map(|(op, id, dst, hop, priority, kind)| WireRule {
                    operation_type: op,
                    id,
                    destination: dst,
                    next_hop_ip: hop,
                    priority,
                    routing_rule_extra_info: Some(RoutingRuleExtraInfo { destination_type: kind, next_hop_mac: String::new() }),
                    ..Default::default()
                })
                .collect();
            let mut r = router(OperationType::Create, UpdateType::Full, vec![(subnet, rules)]);
            r.operation_type = op;
            let c = r.configuration.as_mut().unwrap();
            c.update_type = update;
            c.host_dvr_mac_address = mac;
            let gs = GoalState { router_states: vec![r], ..Default::default() };
            let (outcomes, _) = validate(&mut state, &gs, &Naming::default());
            prop_assert_eq!(outcomes.len(), 1);
            for r in state.routers.values() {
                prop_assert!(r.subnets.keys().all(|s| state.subnets.contains_key(s)));
            }
        }
    }
}

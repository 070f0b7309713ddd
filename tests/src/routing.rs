//! Routed labs: the subnets of a lab's VPCs with gateways, routers and their rules as goal state,
//! shared by the routing tests and `cargo xtask bench routing`.

use alioth_proto::schema::router_configuration::{RoutingRule, RoutingRuleExtraInfo, SubnetRoutingTable};
use alioth_proto::schema::subnet_configuration::Gateway;
use alioth_proto::schema::*;

use crate::overlay::{Lab, VpcSpec};

/// DPM's host DVR MAC (alcor `services/data_plane_manager/.../service/impl/ResourceService.java`).
pub const DVR_MAC: &str = "fe:16:11:00:00:00";

/// Subnet `third` of `a`'s VPC: 198.18.`third`.0/24.
pub fn subnet_of(a: &VpcSpec, third: u8) -> VpcSpec {
    VpcSpec {
        subnet: format!("subnet-{third}"),
        third,
        ..a.clone()
    }
}

pub fn gateway_ip(third: u8) -> String {
    format!("198.18.{third}.1")
}

pub fn gateway_mac(third: u8) -> String {
    format!("0a:58:c6:12:{third:02x}:01")
}

/// Host `i`'s goal state with one state per VPC and a gateway in every subnet.
pub fn goal_state(lab: &Lab, i: usize) -> GoalState {
    let mut gs = lab.goal_state(i);
    let mut seen = std::collections::BTreeSet::new();
    gs.vpc_states
        .retain(|v| seen.insert(v.configuration.as_ref().map(|c| c.id.clone())));
    for c in gs.subnet_states.iter_mut().filter_map(|s| s.configuration.as_mut()) {
        let third: u8 = c.cidr.split('.').nth(2).and_then(|t| t.parse().ok()).unwrap_or(0);
        c.gateway = Some(Gateway {
            ip_address: gateway_ip(third),
            mac_address: gateway_mac(third),
        });
    }
    gs
}

pub fn rule(id: &str, destination: &str, next_hop: &str, priority: u32) -> RoutingRule {
    RoutingRule {
        operation_type: OperationType::Create as i32,
        id: id.into(),
        destination: destination.into(),
        next_hop_ip: next_hop.into(),
        priority,
        routing_rule_extra_info: Some(RoutingRuleExtraInfo {
            destination_type: DestinationType::Internet as i32,
            next_hop_mac: String::new(),
        }),
        ..Default::default()
    }
}

/// Router "router-1" with DPM's revision and DVR MAC, and `tables` by subnet id.
pub fn router(op: OperationType, tables: Vec<(&str, Vec<RoutingRule>)>) -> RouterState {
    RouterState {
        operation_type: op as i32,
        configuration: Some(RouterConfiguration {
            revision_number: 1,
            id: "router-1".into(),
            host_dvr_mac_address: DVR_MAC.into(),
            subnet_routing_tables: tables
                .into_iter()
                .map(|(subnet, rules)| SubnetRoutingTable {
                    subnet_id: subnet.into(),
                    routing_rules: rules,
                })
                .collect(),
            ..Default::default()
        }),
    }
}

/// A message with only `routers` and `gateways`.
pub fn routing(routers: Vec<RouterState>, gateways: Vec<GatewayState>) -> GoalState {
    GoalState {
        format_version: 1,
        router_states: routers,
        gateway_states: gateways,
        ..Default::default()
    }
}

//! Security groups: their rules, read as Neutron defines them, from messages shaped as Alcor's
//! DPM builds them (alcor `services/data_plane_manager/.../service/impl/SecurityGroupService.java`):
//! no `vpc_id`, the protocol unset for "any", port ranges unset for "all", the group's operation
//! that of the port it comes with (a port's DELETE brings its group's DELETE).

use alioth_proto::schema::security_group_configuration::{Direction, SecurityGroupRule};
use alioth_proto::schema::{
    EtherType, OperationType, Protocol, ResourceType, SecurityGroupConfiguration, SecurityGroupState,
};

use super::{invalid, is_delta, Checked, Resource, Validator};
use crate::goalstate::model::{self, Remote, SecurityGroup, SgRule};
use crate::goalstate::secgroup::MAX_RULES;

impl Validator<'_> {
    pub(super) fn security_group(&mut self, s: &SecurityGroupState) {
        let Some(c) = &s.configuration else {
            return self.no_configuration(ResourceType::Securitygroup, s.operation_type);
        };
        // DPM sends a port's groups with the port's operation: a DELETE that comes with one port's
        // deletion while other ports still name the group leaves the group to them.
        if s.operation_type == OperationType::Delete as i32 && self.group_in_use(&c.id) {
            tracing::info!(resource_id = c.id, "security group still named by ports: kept");
            return self.record(ResourceType::Securitygroup, s.operation_type, &c.id, |_, _| Ok(None));
        }
        self.resource(
            ResourceType::Securitygroup,
            (s.operation_type, &c.id, c.revision_number),
            |_| Ok(()),
            |v| v.check_security_group(c).map(Resource::from),
        );
    }

    fn group_in_use(&self, id: &str) -> bool {
        self.state
            .ports()
            .values()
            .any(|p| p.security_groups.iter().any(|g| &**g == id))
    }

    fn check_security_group(&self, c: &SecurityGroupConfiguration) -> Checked<SecurityGroup> {
        let held = self.state.security_groups.get(&c.id);
        let mut rules = Vec::new();
        for (i, r) in c.security_group_rules.iter().enumerate() {
            if r.operation_type == OperationType::Delete as i32 {
                continue;
            }
            let rule = rule(r).or_else(|e| invalid(format!("rule {i} ({:?}): {e}", r.id)))?;
            if !rules.iter().any(|o: &SgRule| same_effect(o, &rule)) {
                rules.push(rule);
            }
        }
        // DELTA with no rules keeps the held ones; a list of rules is the group's whole list.
        if rules.is_empty() && is_delta(c.update_type) && c.security_group_rules.is_empty() {
            if let Some(h) = held {
                rules = h.rules.clone();
            }
        }
        // Rules of one protocol and range share a bit however many remotes they name.
        for ingress in [false, true] {
            let mut services: Vec<(Option<u8>, (u16, u16))> = rules
                .iter()
                .filter(|r| r.ingress == ingress && !r.ipv6)
                .map(|r| (r.protocol, r.ports))
                .collect();
            services.sort_unstable();
            services.dedup();
            if services.len() > MAX_RULES {
                return invalid(format!(
                    "{} IPv4 {} services (protocol and port range); a port has room for {MAX_RULES} per direction",
                    services.len(),
                    if ingress { "ingress" } else { "egress" }
                ));
            }
        }
        Ok(SecurityGroup {
            id: c.id.as_str().into(),
            revision: c.revision_number,
            rules,
        })
    }
}

/// Two rules that allow the same (their ids aside).
fn same_effect(a: &SgRule, b: &SgRule) -> bool {
    (a.ingress, a.ipv6, a.protocol, a.ports, &a.remote) == (b.ingress, b.ipv6, b.protocol, b.ports, &b.remote)
}

/// IP protocol numbers.
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

/// One rule, as Neutron means it.
fn rule(r: &SecurityGroupRule) -> Result<SgRule, String> {
    let ingress = match Direction::try_from(r.direction) {
        Ok(Direction::Ingress) => true,
        Ok(Direction::Egress) => false,
        Err(_) => return Err(format!("unknown direction {}", r.direction)),
    };
    let ipv6 = match EtherType::try_from(r.ethertype) {
        Ok(EtherType::Ipv4) => false,
        Ok(EtherType::Ipv6) => true,
        Err(_) => return Err(format!("unknown ethertype {}", r.ethertype)),
    };
    let (min, max) = (r.port_range_min, r.port_range_max);
    let protocol = protocol(r)?;
    let ports = match protocol {
        Some(TCP | UDP) => match (min, max) {
            (0, 0) => (0, 0xffff),
            (lo, hi) if lo <= hi && hi <= 0xffff => (lo as u16, hi as u16),
            _ => return Err(format!("port range {min}-{max} is not a range of ports")),
        },
        // Neutron's ICMP type in `port_range_min` and code in `port_range_max`. Unset (0) reads as
        // "any": Alcor's messages cannot tell an unset field from 0.
        Some(ICMP) => match (min, max) {
            (0, 0) => (0, 0xffff),
            (t, 0) if t <= 0xff => ((t as u16) << 8, (t as u16) << 8 | 0xff),
            (t, c) if t <= 0xff && c <= 0xff => {
                let v = (t as u16) << 8 | c as u16;
                (v, v)
            }
            _ => return Err(format!("ICMP type {min} and code {max} are not ICMP's")),
        },
        _ if min != 0 || max != 0 => return Err("a port range needs TCP, UDP or ICMP".into()),
        _ => (0, 0xffff),
    };
    let remote = match (r.remote_ip_prefix.trim(), r.remote_group_id.trim()) {
        ("", "") if ipv6 => Remote::Ipv6("::/0".into()),
        ("", "") => Remote::Prefix(model::DEFAULT_ROUTE),
        ("", group) => Remote::Group(group.into()),
        (prefix, "") if ipv6 => Remote::Ipv6(prefix.to_string()),
        (prefix, "") => {
            let net: ipnetwork::Ipv4Network = prefix
                .parse()
                .map_err(|_| format!("remote_ip_prefix {prefix:?} is not an IPv4 CIDR"))?;
            // As Neutron stores it: the network the prefix names.
            Remote::Prefix(ipnetwork::Ipv4Network::new(net.network(), net.prefix()).map_err(|e| e.to_string())?)
        }
        _ => return Err("both remote_ip_prefix and remote_group_id".into()),
    };
    Ok(SgRule {
        id: r.id.clone(),
        ingress,
        ipv6,
        protocol,
        ports,
        remote,
    })
}

/// The rule's IP protocol (`None`: any). alioth's `protocol_number` says it exactly (0: any);
/// without it, Alcor's enum, where TCP is 0 and DPM leaves the field unset for "any": TCP with
/// no port range reads as any protocol.
fn protocol(r: &SecurityGroupRule) -> Result<Option<u8>, String> {
    if let Some(n) = r.protocol_number {
        return match n {
            0 => Ok(None),
            1..=254 => Ok(Some(n as u8)),
            _ => Err(format!("protocol_number {n} is not an IP protocol")),
        };
    }
    match Protocol::try_from(r.protocol) {
        Ok(Protocol::Tcp) if r.port_range_min == 0 && r.port_range_max == 0 => Ok(None),
        Ok(Protocol::Tcp | Protocol::Http) => Ok(Some(TCP)),
        Ok(Protocol::Udp) => Ok(Some(UDP)),
        Ok(Protocol::Icmp) => Ok(Some(ICMP)),
        Ok(Protocol::Arp) => Err("ARP is no IP protocol (ARP always passes)".into()),
        Err(_) => Err(format!("unknown protocol {}", r.protocol)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goalstate::model::State;
    use crate::goalstate::validate::{validate, Naming};
    use alioth_proto::schema::{GoalState, OperationStatus};
    use proptest::prelude::*;

    fn any_rule() -> impl Strategy<Value = SecurityGroupRule> {
        let text = prop_oneof![
            Just(String::new()),
            Just("198.18.0.0/24".to_string()),
            Just("198.18.0.7".to_string()),
            Just("::/0".to_string()),
            "[0-9./a-z:]{0,20}",
        ];
        (
            (-1i32..3, -1i32..3, -1i32..6, 0u32..70_000, 0u32..70_000),
            (text.clone(), prop_oneof![Just(String::new()), "[a-z]{1,3}"]),
            (prop::option::of(0u32..300), 0i32..5),
        )
            .prop_map(
                |((direction, ethertype, protocol, min, max), (prefix, group), (number, op))| SecurityGroupRule {
                    direction,
                    ethertype,
                    protocol,
                    port_range_min: min,
                    port_range_max: max,
                    remote_ip_prefix: prefix,
                    remote_group_id: group,
                    protocol_number: number,
                    operation_type: op,
                    ..Default::default()
                },
            )
    }

    proptest! {
        /// Any group, however broken its rules: an answer for it, no panic, and what is accepted
        /// holds only well-formed rules.
        #[test]
        fn any_group_is_answered_and_only_well_formed_rules_are_held(
            rules in prop::collection::vec(any_rule(), 0..8),
            op in 0i32..6,
        ) {
            let msg = GoalState {
                security_group_states: vec![SecurityGroupState {
                    operation_type: op,
                    configuration: Some(SecurityGroupConfiguration {
                        id: "g".into(),
                        security_group_rules: rules,
                        ..Default::default()
                    }),
                }],
                ..Default::default()
            };
            let mut state = State::default();
            let (outcomes, _) = validate(&mut state, &msg, &Naming::default());
            prop_assert_eq!(outcomes.len(), 1);
            let held = state.security_groups.get("g");
            // CREATE (1) and UPDATE (2) put the group; INFO, GET and DELETE of a group not held
            // leave nothing.
            let puts = matches!(op, 1 | 2);
            prop_assert_eq!(held.is_some(), outcomes[0].status == OperationStatus::Success && puts);
            for r in held.map(|g| g.rules.as_slice()).unwrap_or_default() {
                prop_assert!(r.ports.0 <= r.ports.1, "{:?}", r);
                match r.protocol {
                    Some(6 | 17 | 1) | None => {}
                    Some(_) => prop_assert_eq!(r.ports, (0, 0xffff)),
                }
                if let Remote::Prefix(p) = &r.remote {
                    prop_assert_eq!(p.ip(), p.network());
                }
            }
        }
    }

    fn tcp(min: u32, max: u32) -> SecurityGroupRule {
        SecurityGroupRule {
            direction: Direction::Ingress as i32,
            protocol: Protocol::Tcp as i32,
            port_range_min: min,
            port_range_max: max,
            ..Default::default()
        }
    }

    #[test]
    fn alcor_rules_read_as_neutron_means_them() {
        // DPM leaves protocol and ports unset for "any": TCP 0-0.
        let any = rule(&tcp(0, 0)).unwrap();
        assert_eq!((any.protocol, any.ports, any.ingress), (None, (0, 0xffff), true));
        assert_eq!(any.remote, Remote::Prefix(model::DEFAULT_ROUTE));
        assert_eq!(rule(&tcp(22, 22)).unwrap().protocol, Some(TCP));
        let exact = SecurityGroupRule {
            protocol_number: Some(6),
            ..tcp(0, 0)
        };
        assert_eq!(rule(&exact).unwrap().ports, (0, 0xffff));
        assert_eq!(rule(&exact).unwrap().protocol, Some(TCP));
        let echo = SecurityGroupRule {
            protocol: Protocol::Icmp as i32,
            port_range_min: 8,
            ..tcp(0, 0)
        };
        assert_eq!(rule(&echo).unwrap().ports, (0x800, 0x8ff));
        assert!(rule(&tcp(30, 20)).is_err());
        assert!(rule(&tcp(1, 70000)).is_err());
        let both = SecurityGroupRule {
            remote_ip_prefix: "198.18.0.0/24".into(),
            remote_group_id: "g".into(),
            ..tcp(0, 0)
        };
        assert!(rule(&both).is_err());
        let prefix = SecurityGroupRule {
            remote_ip_prefix: "198.18.0.7/24".into(),
            ..tcp(0, 0)
        };
        assert_eq!(
            rule(&prefix).unwrap().remote,
            Remote::Prefix("198.18.0.0/24".parse().unwrap())
        );
    }
}

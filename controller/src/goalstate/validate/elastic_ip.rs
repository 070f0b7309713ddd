//! Elastic IPs (alioth's extension, `proto/proto/elasticip.proto`): a public address translated to
//! one of a port's fixed IPs. The port must be this host's when the elastic IP is created or
//! moved; a port deleted later leaves its elastic IP held but translating nothing until the port
//! is back.

use alioth_proto::schema::{ElasticIpConfiguration, ElasticIpState, ResourceType};

use super::{invalid, Checked, Resource, Validator};
use crate::goalstate::model::{self, ElasticIp};

/// Elastic IPs a host holds (the size of the data plane's maps).
pub const MAX_ELASTIC_IPS: usize = alioth_common::nat::MAX_ELASTIC_IPS as usize;

impl Validator<'_> {
    pub(super) fn elastic_ip(&mut self, s: &ElasticIpState) {
        let Some(c) = &s.configuration else {
            return self.no_configuration(ResourceType::ElasticIp, s.operation_type);
        };
        self.resource(
            ResourceType::ElasticIp,
            (s.operation_type, &c.id, c.revision_number),
            |_| Ok(()),
            |v| v.check_elastic_ip(c).map(Resource::from),
        );
    }

    fn check_elastic_ip(&self, c: &ElasticIpConfiguration) -> Checked<ElasticIp> {
        let ip = model::parse_ipv4("ip_address", &c.ip_address).or_else(invalid)?;
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
            return invalid(format!("ip_address {ip} is no unicast address"));
        }
        // The host's own address would take its traffic (SSH, the overlay) to the VM.
        if Some(ip) == self.naming.tunnel_endpoint {
            return invalid(format!("ip_address {ip} is this host's tunnel endpoint"));
        }
        let port_id = c.port_id.trim();
        if port_id.is_empty() {
            return invalid("port_id is empty");
        }
        let Some(port) = self.state.ports().get(port_id) else {
            return invalid(format!("port {port_id:?} is not known on this host"));
        };
        let private_ip = match c.private_ip_address.trim() {
            "" => port.primary_ip(),
            text => {
                let ip = model::parse_ipv4("private_ip_address", text).or_else(invalid)?;
                if !port.fixed_ips.iter().any(|f| f.ip == ip) {
                    return invalid(format!("private_ip_address {ip} is none of port {port_id}'s fixed IPs"));
                }
                ip
            }
        };
        let others = self.state.elastic_ips.values().filter(|e| *e.id != *c.id);
        for e in others {
            if e.ip == ip {
                return invalid(format!("{ip} is elastic IP {}'s address", e.id));
            }
            if e.port_id.as_ref() == port_id && e.private_ip == private_ip {
                return invalid(format!(
                    "{private_ip} of port {port_id} has elastic IP {} already",
                    e.id
                ));
            }
        }
        let held = self.state.elastic_ips.len() + usize::from(!self.state.elastic_ips.contains_key(&c.id));
        if held > MAX_ELASTIC_IPS {
            return invalid(format!("a host holds at most {MAX_ELASTIC_IPS} elastic IPs"));
        }
        Ok(ElasticIp {
            id: c.id.as_str().into(),
            revision: c.revision_number,
            ip,
            port_id: port_id.into(),
            private_ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use alioth_proto::schema::{GoalState, OperationStatus, OperationType};

    use super::*;
    use crate::goalstate::model::State;
    use crate::goalstate::plan::tests::port;
    use crate::goalstate::validate::router::tests::two_subnets;
    use crate::goalstate::validate::{validate, Naming};

    fn eip(op: OperationType, id: &str, ip: &str, port_id: &str, private: &str, revision: u32) -> ElasticIpState {
        ElasticIpState {
            operation_type: op as i32,
            configuration: Some(ElasticIpConfiguration {
                revision_number: revision,
                id: id.into(),
                ip_address: ip.into(),
                port_id: port_id.into(),
                private_ip_address: private.into(),
                ..Default::default()
            }),
        }
    }

    /// Two ports of subnet s1: p1 at 198.18.0.10, p2 at 198.18.0.11.
    fn two_ports() -> State {
        let mut state = two_subnets();
        let gs = GoalState {
            port_states: vec![
                port(OperationType::Create, "p1", "v1", "s1", 0, 10),
                port(OperationType::Create, "p2", "v1", "s1", 0, 11),
            ],
            ..Default::default()
        };
        validate(&mut state, &gs, &Naming::default());
        state
    }

    fn push(state: &mut State, e: ElasticIpState) -> (OperationStatus, String) {
        let gs = GoalState {
            elastic_ip_states: vec![e],
            ..Default::default()
        };
        let naming = Naming {
            tunnel_endpoint: Some("198.19.0.1".parse().unwrap()),
            ..Default::default()
        };
        let (outcomes, _) = validate(state, &gs, &naming);
        (outcomes[0].status, outcomes[0].reason.clone().unwrap_or_default())
    }

    #[test]
    fn an_elastic_ip_names_a_held_port_and_one_of_its_addresses() {
        use OperationType::{Create, Delete, Update};
        let mut state = two_ports();
        let ok = |r: (OperationStatus, String)| r.0 == OperationStatus::Success;
        assert!(ok(push(&mut state, eip(Create, "e1", "198.19.0.100", "p1", "", 1))));
        assert_eq!(
            state.elastic_ips["e1"].private_ip,
            "198.18.0.10".parse::<std::net::Ipv4Addr>().unwrap()
        );
        for (bad, why) in [
            (
                eip(Create, "e2", "198.19.0.100", "p2", "", 1),
                "elastic IP e1's address",
            ),
            (
                eip(Create, "e2", "198.19.0.101", "p1", "", 1),
                "has elastic IP e1 already",
            ),
            (eip(Create, "e2", "198.19.0.101", "p9", "", 1), "not known on this host"),
            (
                eip(Create, "e2", "198.19.0.101", "p2", "198.18.0.99", 1),
                "none of port p2's fixed IPs",
            ),
            (
                eip(Create, "e2", "198.19.0.1", "p2", "", 1),
                "this host's tunnel endpoint",
            ),
            (eip(Create, "e2", "255.255.255.255", "p2", "", 1), "no unicast address"),
            (eip(Create, "e2", "not an address", "p2", "", 1), "not an IPv4 address"),
        ] {
            let (status, reason) = push(&mut state, bad);
            assert_eq!(status, OperationStatus::InvalidArg, "{why}");
            assert!(reason.contains(why), "{reason:?} should say {why:?}");
        }
        assert_eq!(state.elastic_ips.len(), 1, "nothing refused is held");
        // Re-association, then an older revision is out of order, then DELETE.
        assert!(ok(push(&mut state, eip(Update, "e1", "198.19.0.100", "p2", "", 2))));
        assert_eq!(&*state.elastic_ips["e1"].port_id, "p2");
        let (status, _) = push(&mut state, eip(Update, "e1", "198.19.0.100", "p1", "", 1));
        assert_eq!(status, OperationStatus::OutOfOrder);
        assert!(ok(push(&mut state, eip(Delete, "e1", "198.19.0.100", "p2", "", 3))));
        assert!(state.elastic_ips.is_empty());
    }
}

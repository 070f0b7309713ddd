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

//! Bodies of the record's format 1, before ports and neighbors had security groups: read back as
//! resources without any.

use std::net::Ipv4Addr;

use crate::goalstate::model::{DhcpHost, FixedIps, Id, Mac, Neighbor, Port, Resource, Subnet, Vpc};

#[derive(serde::Deserialize)]
struct Port1 {
    id: Id,
    revision: u32,
    vpc_id: Id,
    mac: Mac,
    fixed_ips: FixedIps,
    iface: Id,
}

#[derive(serde::Deserialize)]
struct Neighbor1 {
    id: Id,
    revision: u32,
    vpc_id: Id,
    mac: Mac,
    host_ip: Ipv4Addr,
    fixed_ips: FixedIps,
}

/// `Resource` as format 1 numbered its variants.
#[derive(serde::Deserialize)]
enum Resource1 {
    Vpc(Box<Vpc>),
    Subnet(Box<Subnet>),
    Port(Port1),
    Neighbor(Neighbor1),
    Dhcp(Box<DhcpHost>),
}

/// A format-1 body as a resource.
pub fn decode(body: &[u8]) -> Option<Resource> {
    Some(match postcard::from_bytes::<Resource1>(body).ok()? {
        Resource1::Vpc(v) => Resource::Vpc(v),
        Resource1::Subnet(s) => Resource::Subnet(s),
        Resource1::Dhcp(d) => Resource::Dhcp(d),
        Resource1::Port(p) => Resource::from(Port {
            id: p.id,
            revision: p.revision,
            vpc_id: p.vpc_id,
            mac: p.mac,
            fixed_ips: p.fixed_ips,
            iface: p.iface,
            security_groups: Default::default(),
            allowed_pairs: Default::default(),
        }),
        Resource1::Neighbor(n) => Resource::from(Neighbor {
            id: n.id,
            revision: n.revision,
            vpc_id: n.vpc_id,
            mac: n.mac,
            host_ip: n.host_ip,
            fixed_ips: n.fixed_ips,
            security_groups: Default::default(),
            allowed_pairs: Default::default(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goalstate::model::FixedIp;

    /// What a format-1 agent wrote for a port: the same fields, without groups.
    #[derive(serde::Serialize)]
    enum Written {
        _Vpc,
        _Subnet,
        Port(Id, u32, Id, Mac, FixedIps, Id),
    }

    #[test]
    fn a_format_1_port_reads_back_without_groups() {
        let ips: FixedIps = [FixedIp {
            subnet_id: "s".into(),
            ip: "198.18.0.10".parse().unwrap(),
        }]
        .into_iter()
        .collect();
        let body = postcard::to_stdvec(&Written::Port(
            "p".into(),
            3,
            "v".into(),
            [2, 0, 0, 0, 0, 1],
            ips.clone(),
            "tapp".into(),
        ))
        .unwrap();
        assert!(
            postcard::from_bytes::<Resource>(&body).is_err(),
            "format 2 cannot read it"
        );
        let Some(Resource::Port(p)) = decode(&body) else {
            panic!("not read back as a port")
        };
        assert_eq!(
            (&*p.id, p.revision, &*p.iface, p.fixed_ips.clone()),
            ("p", 3, "tapp", ips)
        );
        assert!(p.security_groups.is_empty());
    }
}

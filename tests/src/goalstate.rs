//! Goal-state builders for tests: VPC v{n} = VNI 1000+n, subnet 198.18.n.0/24, ports .10 and up.

use alioth_proto::schema::*;

pub fn vpc(op: OperationType, id: &str, vni: u32, revision: u32, update: UpdateType) -> VpcState {
    VpcState {
        operation_type: op as i32,
        configuration: Some(VpcConfiguration {
            id: id.into(),
            tunnel_id: vni,
            revision_number: revision,
            update_type: update as i32,
            ..Default::default()
        }),
    }
}

pub fn subnet(op: OperationType, id: &str, vpc: &str, third: u8) -> SubnetState {
    SubnetState {
        operation_type: op as i32,
        configuration: Some(SubnetConfiguration {
            id: id.into(),
            vpc_id: vpc.into(),
            cidr: format!("198.18.{third}.0/24"),
            ..Default::default()
        }),
    }
}

pub fn port(op: OperationType, id: &str, vpc: &str, subnet: &str, ip: &str, mac: &str) -> PortState {
    PortState {
        operation_type: op as i32,
        configuration: Some(PortConfiguration {
            id: id.into(),
            vpc_id: vpc.into(),
            mac_address: mac.into(),
            fixed_ips: vec![port_configuration::FixedIp {
                subnet_id: subnet.into(),
                ip_address: ip.into(),
            }],
            ..Default::default()
        }),
    }
}

/// (resource id, status) of every answer in a reply, in order.
pub fn statuses(reply: &GoalStateOperationReply) -> Vec<(String, OperationStatus)> {
    reply
        .operation_statuses
        .iter()
        .map(|s| {
            (
                s.resource_id.clone(),
                OperationStatus::try_from(s.operation_status).unwrap_or(OperationStatus::Failure),
            )
        })
        .collect()
}

/// A security group `id` with `rules`, at revision 1.
pub fn security_group(
    op: OperationType,
    id: &str,
    rules: Vec<security_group_configuration::SecurityGroupRule>,
) -> SecurityGroupState {
    SecurityGroupState {
        operation_type: op as i32,
        configuration: Some(SecurityGroupConfiguration {
            id: id.into(),
            revision_number: 1,
            security_group_rules: rules,
            ..Default::default()
        }),
    }
}

/// A message with one elastic IP (alioth's extension): `ip` for port `port_id`'s first address.
pub fn elastic_ip(op: OperationType, id: &str, ip: &str, port_id: &str, revision: u32) -> GoalState {
    GoalState {
        format_version: 1,
        elastic_ip_states: vec![ElasticIpState {
            operation_type: op as i32,
            configuration: Some(ElasticIpConfiguration {
                revision_number: revision,
                id: id.into(),
                ip_address: ip.into(),
                port_id: port_id.into(),
                ..Default::default()
            }),
        }],
        ..Default::default()
    }
}

//! Goal state as alcor-control-agent's own tests build it (`test/gtest/aca_test_ovs_l2.cpp`,
//! `2_ports_CREATE_test_traffic`, with `aca_test_create_default_subnet_state` from
//! `test/gtest/aca_test_ovs_util.cpp`), field for field; only the addresses are moved into the
//! test range (198.18.0.0/15) and the ids come from the lab.

use alioth_proto::schema::*;

use crate::overlay::{VmSpec, VpcSpec};

/// `aca_test_create_default_subnet_state`: INFO, revision 1, the VPC id, a tunnel id, the
/// gateway; there is no VPC state in these messages.
pub fn subnet_info(v: &VpcSpec) -> SubnetState {
    SubnetState {
        operation_type: OperationType::Info as i32,
        configuration: Some(SubnetConfiguration {
            revision_number: 1,
            vpc_id: v.id.clone(),
            id: v.subnet.clone(),
            cidr: format!("198.18.{}.0/24", v.third),
            tunnel_id: u64::from(v.vni),
            gateway: Some(subnet_configuration::Gateway {
                ip_address: format!("198.18.{}.1", v.third),
                mac_address: "fa:16:3e:d7:f2:00".into(),
            }),
            ..Default::default()
        }),
    }
}

/// A port as the test fills it: CREATE, revision 1, FULL, name, MAC, admin up, one fixed IP, and
/// security group "1".
pub fn port(vm: &VmSpec) -> PortState {
    PortState {
        operation_type: OperationType::Create as i32,
        configuration: Some(PortConfiguration {
            revision_number: 1,
            update_type: UpdateType::Full as i32,
            id: vm.port_id.clone(),
            vpc_id: vm.vpc.clone(),
            name: format!("tap{}", &vm.port_id[..11.min(vm.port_id.len())]),
            mac_address: vm.mac.clone(),
            admin_state_up: true,
            fixed_ips: vec![port_configuration::FixedIp {
                subnet_id: vm.subnet.clone(),
                ip_address: vm.ip.clone(),
            }],
            security_group_ids: vec![port_configuration::SecurityGroupId { id: "1".into() }],
            ..Default::default()
        }),
    }
}

/// One of the test's messages: a port and the subnet, nothing else.
pub fn message(v: &VpcSpec, vm: &VmSpec) -> GoalState {
    GoalState {
        port_states: vec![port(vm)],
        subnet_states: vec![subnet_info(v)],
        ..Default::default()
    }
}

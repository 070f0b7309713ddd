//! Goal state shaped as Alcor's Data Plane Manager builds it for the V1 (unary) path, field for
//! field, from `futurewei-cloud/alcor` `services/data_plane_manager/src/main/java/com/futurewei/
//! alcor/dataplane/service/impl/` (the file is named on each builder). What DPM leaves unset stays
//! unset: that is the point of these messages.

use alioth_proto::schema::*;

use crate::overlay::{VmSpec, VpcSpec};

/// `DpmServiceImpl.java` sets the message's format version from its configuration (101).
pub const FORMAT_VERSION: u32 = 101;
/// `ResourceService.FORMAT_REVISION_NUMBER`: every resource's revision.
const REVISION: u32 = 1;

/// `VpcService.java`: INFO, no tunnel id (the subnet carries it).
pub fn vpc_info(v: &VpcSpec) -> VpcState {
    VpcState {
        operation_type: OperationType::Info as i32,
        configuration: Some(VpcConfiguration {
            revision_number: REVISION,
            id: v.id.clone(),
            project_id: "3dda2801-d675-4688-a63f-dcda8d327f61".into(),
            name: format!("net-{}", v.id),
            cidr: "198.18.0.0/16".into(),
            ..Default::default()
        }),
    }
}

/// `SubnetService.java`: INFO, VXLAN, the VNI in the (deprecated) subnet tunnel id, the gateway
/// port's IP and MAC, DHCP on.
pub fn subnet_info(v: &VpcSpec) -> SubnetState {
    SubnetState {
        operation_type: OperationType::Info as i32,
        configuration: Some(SubnetConfiguration {
            revision_number: REVISION,
            id: v.subnet.clone(),
            network_type: NetworkType::Vxlan as i32,
            vpc_id: v.id.clone(),
            name: format!("sub-{}", v.subnet),
            cidr: format!("198.18.{}.0/24", v.third),
            tunnel_id: u64::from(v.vni),
            gateway: Some(subnet_configuration::Gateway {
                ip_address: format!("198.18.{}.1", v.third),
                mac_address: format!("aa:bb:cc:00:{:02x}:01", v.third),
            }),
            dhcp_enable: true,
            ..Default::default()
        }),
    }
}

/// `PortService.java`: the port's operation, `update_type` FULL, the binding host in `host_info`.
pub fn port(op: OperationType, vm: &VmSpec, host_ip: &str) -> PortState {
    PortState {
        operation_type: op as i32,
        configuration: Some(PortConfiguration {
            revision_number: REVISION,
            id: vm.port_id.clone(),
            update_type: UpdateType::Full as i32,
            vpc_id: vm.vpc.clone(),
            name: format!("port-{}", vm.port_id),
            device_id: "8182a4d4-ffff-4ece-b3f0-8d36e3d00001".into(),
            device_owner: "compute:nova".into(),
            mac_address: vm.mac.clone(),
            admin_state_up: true,
            host_info: Some(port_configuration::HostInfo {
                ip_address: host_ip.into(),
                ..Default::default()
            }),
            fixed_ips: vec![port_configuration::FixedIp {
                subnet_id: vm.subnet.clone(),
                ip_address: vm.ip.clone(),
            }],
            ..Default::default()
        }),
    }
}

/// `DhcpService.java` (V1): one entry per fixed IP of the port, with the port's operation and no
/// id.
pub fn dhcp(op: OperationType, vm: &VmSpec) -> DhcpState {
    DhcpState {
        operation_type: op as i32,
        configuration: Some(DhcpConfiguration {
            revision_number: REVISION,
            mac_address: vm.mac.clone(),
            ipv4_address: vm.ip.clone(),
            subnet_id: vm.subnet.clone(),
            ..Default::default()
        }),
    }
}

/// `NeighborService.java` (`buildNeighborState`): the port id as the neighbor's, its host, an L2
/// fixed IP.
pub fn neighbor(op: OperationType, vm: &VmSpec, host_ip: &str) -> NeighborState {
    NeighborState {
        operation_type: op as i32,
        configuration: Some(NeighborConfiguration {
            revision_number: REVISION,
            id: vm.port_id.clone(),
            vpc_id: vm.vpc.clone(),
            mac_address: vm.mac.clone(),
            host_ip_address: host_ip.into(),
            fixed_ips: vec![neighbor_configuration::FixedIp {
                neighbor_type: NeighborType::L2 as i32,
                subnet_id: vm.subnet.clone(),
                ip_address: vm.ip.clone(),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

/// A V1 message as `DpmServiceImpl.java` sends it to one host: the VPC and subnet as INFO
/// context, then what changed.
pub fn message(vpc: &VpcSpec, ports: Vec<PortState>, dhcp: Vec<DhcpState>, neighbors: Vec<NeighborState>) -> GoalState {
    GoalState {
        format_version: FORMAT_VERSION,
        vpc_states: vec![vpc_info(vpc)],
        subnet_states: vec![subnet_info(vpc)],
        port_states: ports,
        dhcp_states: dhcp,
        neighbor_states: neighbors,
        ..Default::default()
    }
}

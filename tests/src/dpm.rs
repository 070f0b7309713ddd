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

/// `NeighborService.java` for a port in another subnet than the host's ports: an L3 fixed IP.
pub fn l3_neighbor(op: OperationType, vm: &VmSpec, host_ip: &str) -> NeighborState {
    let mut n = neighbor(op, vm, host_ip);
    for f in n.configuration.iter_mut().flat_map(|c| c.fixed_ips.iter_mut()) {
        f.neighbor_type = NeighborType::L3 as i32;
    }
    n
}

/// `ResourceService.HOST_DVR_MAC`.
pub const HOST_DVR_MAC: &str = "fe:16:11:00:00:00";

/// `RouterService.java` (`buildRouterState`) and `DpmServiceImpl.java` (`constructRouterState`,
/// which adds the subnets of L3 neighbors): no operation (INFO), DPM's revision and DVR MAC, one
/// routing table per subnet, without rules (a Neutron router without extra routes).
pub fn router_info(id: &str, subnets: &[&VpcSpec]) -> RouterState {
    RouterState {
        operation_type: 0,
        configuration: Some(RouterConfiguration {
            revision_number: REVISION,
            id: id.into(),
            host_dvr_mac_address: HOST_DVR_MAC.into(),
            subnet_routing_tables: subnets
                .iter()
                .map(|s| router_configuration::SubnetRoutingTable {
                    subnet_id: s.subnet.clone(),
                    routing_rules: Vec::new(),
                })
                .collect(),
            ..Default::default()
        }),
    }
}

/// `SecurityGroupService.java` (`buildSecurityGroupStates`) for Neutron's default group `id`: the
/// port's operation, no VPC id, each rule with its group's id, the direction and ethertype, and
/// what Neutron leaves null (protocol, port range, remote prefix) left unset. The rules are
/// Neutron's defaults: anything out (IPv4 and IPv6), anything in from the group's members.
pub fn default_security_group(op: OperationType, id: &str) -> SecurityGroupState {
    use security_group_configuration::{Direction, SecurityGroupRule};
    let rule = |n: u32, direction: Direction, ethertype: EtherType, remote_group: &str| SecurityGroupRule {
        security_group_id: id.into(),
        id: format!("{id}-rule-{n}"),
        direction: direction as i32,
        ethertype: ethertype as i32,
        remote_group_id: remote_group.into(),
        ..Default::default()
    };
    SecurityGroupState {
        operation_type: op as i32,
        configuration: Some(SecurityGroupConfiguration {
            revision_number: REVISION,
            id: id.into(),
            name: "default".into(),
            security_group_rules: vec![
                rule(1, Direction::Egress, EtherType::Ipv4, ""),
                rule(2, Direction::Egress, EtherType::Ipv6, ""),
                rule(3, Direction::Ingress, EtherType::Ipv4, id),
                rule(4, Direction::Ingress, EtherType::Ipv6, id),
            ],
            ..Default::default()
        }),
    }
}

/// `port_message` for a port in security group `group` (Neutron's default), which DPM sends
/// along with the port.
pub fn port_message_in_group(vpc: &VpcSpec, op: OperationType, vm: &VmSpec, host_ip: &str, group: &str) -> GoalState {
    let mut p = port(op, vm, host_ip);
    if let Some(c) = p.configuration.as_mut() {
        c.security_group_ids = vec![port_configuration::SecurityGroupId { id: group.into() }];
    }
    let mut msg = message(vpc, vec![p], vec![dhcp(op, vm)], vec![]);
    msg.security_group_states = vec![default_security_group(op, group)];
    msg
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

/// DPM's message to the host of `vm`'s port when that port changes by `op`: the port and its DHCP
/// entry, and `neighbors` the host learns at the same time.
pub fn port_message(
    vpc: &VpcSpec,
    op: OperationType,
    vm: &VmSpec,
    host_ip: &str,
    neighbors: Vec<NeighborState>,
) -> GoalState {
    message(vpc, vec![port(op, vm, host_ip)], vec![dhcp(op, vm)], neighbors)
}

/// DPM's message to a host that learns of `vm`, on `vm_host`, as a neighbor.
pub fn neighbor_message(vpc: &VpcSpec, op: OperationType, vm: &VmSpec, vm_host: &str) -> GoalState {
    message(vpc, vec![], vec![], vec![neighbor(op, vm, vm_host)])
}

/// GoalStateV2 as DPM V2 builds it (`DataPlaneClientImplV2.java`, `NeighborService.java`): maps by
/// id, the host's resources in `host_resources` under its IP.
pub const FORMAT_VERSION_V2: u32 = 102;

/// A DHCP entry's map key and id: `DhcpService.java` (V2) makes a new random UUID on every build.
pub fn fresh_dhcp_id() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{n:08x}-{:04x}-4000-8000-{:012x}", std::process::id() & 0xffff, n)
}

/// One host's V2 message: VPC and subnet as INFO, the ports and their DHCP entries (fresh ids),
/// and the neighbors under `L2/<port id>` keys (`NeighborService.buildNeighborStatesL2`, which
/// lists the host's own ports too); `host_resources` names all of it under `host_ip`.
pub fn message_v2(host_ip: &str, vpc: &VpcSpec, ports: Vec<PortState>, neighbors: Vec<NeighborState>) -> GoalStateV2 {
    let mut m = GoalStateV2 {
        format_version: FORMAT_VERSION_V2,
        ..Default::default()
    };
    let mut listed = Vec::new();
    let mut list = |t: ResourceType, id: &str| {
        listed.push(ResourceIdType {
            r#type: t as i32,
            id: id.to_string(),
        })
    };
    list(ResourceType::Vpc, &vpc.id);
    m.vpc_states.insert(vpc.id.clone(), vpc_info(vpc));
    list(ResourceType::Subnet, &vpc.subnet);
    m.subnet_states.insert(vpc.subnet.clone(), subnet_info(vpc));
    for p in ports {
        let c = p.configuration.clone().unwrap_or_default();
        let mut d = dhcp(
            OperationType::try_from(p.operation_type).unwrap_or_default(),
            &vm_of(&c),
        );
        let id = fresh_dhcp_id();
        if let Some(dc) = d.configuration.as_mut() {
            dc.id = id.clone();
        }
        list(ResourceType::Dhcp, &id);
        m.dhcp_states.insert(id, d);
        list(ResourceType::Port, &c.id);
        m.port_states.insert(c.id.clone(), p);
    }
    for n in neighbors {
        let key = format!(
            "L2/{}",
            n.configuration.as_ref().map(|c| c.id.as_str()).unwrap_or_default()
        );
        list(ResourceType::Neighbor, &key);
        m.neighbor_states.insert(key, n);
    }
    m.host_resources
        .insert(host_ip.to_string(), HostResources { resources: listed });
    m
}

/// The lab VM a port configuration describes (for its DHCP entry).
fn vm_of(c: &PortConfiguration) -> VmSpec {
    let fixed = c.fixed_ips.first().cloned().unwrap_or_default();
    VmSpec {
        port_id: c.id.clone(),
        vpc: c.vpc_id.clone(),
        subnet: fixed.subnet_id,
        ip: fixed.ip_address,
        mac: c.mac_address.clone(),
    }
}

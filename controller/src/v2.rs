//! GoalStateV2 (maps keyed by id, plus `host_resources`) -> the resource lists the validator takes.

use std::collections::BTreeSet;
use std::net::IpAddr;

use alioth_proto::schema::{GoalState, GoalStateV2, ResourceType};

/// The part of `msg` meant for a host with addresses `host_ips`.
///
/// Without `host_resources` every resource is taken (as Alcor's own agent does). With it, only the
/// resources listed under one of `host_ips`, plus the VPCs and subnets those reference when the
/// message carries them, so that a sender listing only ports still gets them applied.
pub fn for_host(msg: &GoalStateV2, host_ips: &[IpAddr]) -> GoalState {
    let mut out = GoalState {
        format_version: msg.format_version,
        ..Default::default()
    };
    let wanted: Option<BTreeSet<(i32, &str)>> = (!msg.host_resources.is_empty()).then(|| {
        msg.host_resources
            .iter()
            .filter(|(ip, _)| ip.parse::<IpAddr>().is_ok_and(|ip| host_ips.contains(&ip)))
            .flat_map(|(_, r)| r.resources.iter().map(|r| (r.r#type, r.id.as_str())))
            .collect()
    });
    let take = |t: ResourceType, id: &str| wanted.as_ref().is_none_or(|w| w.contains(&(t as i32, id)));

    // Sorted by id so that the order inside a type does not depend on map iteration.
    fn sorted<V>(m: &std::collections::HashMap<String, V>) -> Vec<(&String, &V)> {
        let mut v: Vec<_> = m.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }
    let ports: Vec<_> = sorted(&msg.port_states)
        .into_iter()
        .filter(|(id, _)| take(ResourceType::Port, id))
        .collect();
    let mut subnets: BTreeSet<&str> = msg
        .subnet_states
        .keys()
        .filter(|id| take(ResourceType::Subnet, id))
        .map(String::as_str)
        .collect();
    let mut vpcs: BTreeSet<&str> = msg
        .vpc_states
        .keys()
        .filter(|id| take(ResourceType::Vpc, id))
        .map(String::as_str)
        .collect();
    if wanted.is_some() {
        // Pull in what the selected ports and subnets reference.
        for (_, p) in &ports {
            if let Some(c) = &p.configuration {
                vpcs.insert(&c.vpc_id);
                subnets.extend(c.fixed_ips.iter().map(|f| f.subnet_id.as_str()));
            }
        }
        for id in subnets.clone() {
            if let Some(c) = msg.subnet_states.get(id).and_then(|s| s.configuration.as_ref()) {
                vpcs.insert(&c.vpc_id);
            }
        }
    }
    out.vpc_states = vpcs.iter().filter_map(|id| msg.vpc_states.get(*id).cloned()).collect();
    out.subnet_states = subnets
        .iter()
        .filter_map(|id| msg.subnet_states.get(*id).cloned())
        .collect();
    out.port_states = ports.into_iter().map(|(_, p)| p.clone()).collect();
    let pick = |t: ResourceType, id: &String| take(t, id);
    out.neighbor_states = sorted(&msg.neighbor_states)
        .into_iter()
        .filter(|(id, _)| pick(ResourceType::Neighbor, id))
        .map(|(_, s)| s.clone())
        .collect();
    out.dhcp_states = sorted(&msg.dhcp_states)
        .into_iter()
        .filter(|(id, _)| pick(ResourceType::Dhcp, id))
        .map(|(_, s)| s.clone())
        .collect();
    out.security_group_states = sorted(&msg.security_group_states)
        .into_iter()
        .filter(|(id, _)| pick(ResourceType::Securitygroup, id))
        .map(|(_, s)| s.clone())
        .collect();
    out.router_states = sorted(&msg.router_states)
        .into_iter()
        .filter(|(id, _)| pick(ResourceType::Router, id))
        .map(|(_, s)| s.clone())
        .collect();
    out.gateway_states = sorted(&msg.gateway_states)
        .into_iter()
        .filter(|(id, _)| pick(ResourceType::Gateway, id))
        .map(|(_, s)| s.clone())
        .collect();
    out
}

/// IPv4 and IPv6 addresses of this network namespace's interfaces.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs fills a list that freeifaddrs releases; entries are read before that.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut p = list;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if !a.is_null() {
                match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        out.push(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(a as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

//! A state built at once from resources known to fit together (a record read back): no id twice,
//! every parent there. Its indexes are sized up front and built on two threads, instead of one
//! resource at a time as validation puts them.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{DhcpHost, ElasticIp, Gateway, Neighbor, Port, Resource, Router, SecurityGroup, State, Subnet, Vpc};

/// The resources of a state, before its indexes exist.
#[derive(Default)]
pub struct Parts {
    pub vpcs: BTreeMap<String, Vpc>,
    pub subnets: BTreeMap<String, Subnet>,
    ports: Vec<Arc<Port>>,
    neighbors: Vec<Arc<Neighbor>>,
    dhcp: Vec<DhcpHost>,
    security_groups: BTreeMap<String, SecurityGroup>,
    routers: BTreeMap<String, Router>,
    gateways: BTreeMap<String, Gateway>,
    elastic_ips: BTreeMap<String, ElasticIp>,
}

impl Parts {
    pub fn push(&mut self, r: Resource) {
        match r {
            Resource::Vpc(v) => drop(self.vpcs.insert(v.id.to_string(), *v)),
            Resource::Subnet(s) => drop(self.subnets.insert(s.id.to_string(), *s)),
            Resource::Port(p) => self.ports.push(p),
            Resource::Neighbor(n) => self.neighbors.push(n),
            Resource::Dhcp(d) => self.dhcp.push(*d),
            Resource::SecurityGroup(g) => drop(self.security_groups.insert(g.id.to_string(), *g)),
            Resource::Router(r) => drop(self.routers.insert(r.id.to_string(), *r)),
            Resource::Gateway(g) => drop(self.gateways.insert(g.id.to_string(), *g)),
            Resource::ElasticIp(e) => drop(self.elastic_ips.insert(e.id.to_string(), *e)),
        }
    }

    /// The state of these resources, with its indexes: by id, MAC, interface and DHCP entry on one
    /// thread; by address, subnet, VPC and host on this one.
    pub fn into_state(self) -> State {
        let Parts {
            vpcs,
            subnets,
            ports,
            neighbors,
            dhcp,
            security_groups,
            routers,
            gateways,
            elastic_ips,
        } = self;
        let names = || {
            let mut st = State::default();
            st.ports.reserve(ports.len());
            st.ifaces.reserve(ports.len());
            st.neighbors.reserve(neighbors.len());
            for p in &ports {
                st.ports.insert(p.id.clone(), p.clone());
                st.index_port_names(p);
            }
            for n in &neighbors {
                st.neighbors.insert(n.id.clone(), n.clone());
            }
            for d in &dhcp {
                st.put_dhcp(d.clone());
            }
            st
        };
        let addrs = || {
            let mut st = State::default();
            ports.iter().for_each(|p| st.index_port_addrs(p));
            neighbors.iter().for_each(|n| st.index_neighbor(n));
            st
        };
        let (by_name, by_addr) = std::thread::scope(|s| {
            match std::thread::Builder::new()
                .name("alioth-index".into())
                .spawn_scoped(s, names)
            {
                Ok(named) => {
                    let by_addr = addrs();
                    (named.join().expect("indexing panicked"), by_addr)
                }
                // No thread to be had: one after the other.
                Err(_) => (names(), addrs()),
            }
        });
        State {
            vpcs,
            subnets,
            ports: by_name.ports,
            neighbors: by_name.neighbors,
            tombstones: BTreeMap::new(),
            addrs: by_addr.addrs,
            macs: by_name.macs,
            ifaces: by_name.ifaces,
            subnet_users: by_addr.subnet_users,
            vpc_users: by_addr.vpc_users,
            hosts: by_addr.hosts,
            dhcp: by_name.dhcp,
            dhcp_macs: by_name.dhcp_macs,
            security_groups,
            routers,
            gateways,
            elastic_ips,
        }
    }
}

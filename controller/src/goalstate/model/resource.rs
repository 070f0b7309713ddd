//! A resource as the state holds it, the state's operations on resources, and a change to one:
//! what validation produces, planning reads, and the record stores.

use std::sync::Arc;

use alioth_proto::schema::ResourceType;

use super::{DhcpHost, ElasticIp, Gateway, Neighbor, Port, Router, SecurityGroup, State, Subnet, Vpc};

/// A resource as stored in `State`. Ports and neighbors are shared with the state; the rest, few
/// and larger, are boxed, so that a change stays a few words however large its resource.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Resource {
    Vpc(Box<Vpc>),
    Subnet(Box<Subnet>),
    Port(Arc<Port>),
    Neighbor(Arc<Neighbor>),
    Dhcp(Box<DhcpHost>),
    /// The record's bodies number the variants: new ones go last.
    SecurityGroup(Box<SecurityGroup>),
    Router(Box<Router>),
    Gateway(Box<Gateway>),
    ElasticIp(Box<ElasticIp>),
}

impl State {
    /// Every resource, in dependency order (VPCs, security groups, subnets, ports, neighbors, DHCP
    /// entries, gateways, routers, elastic IPs).
    pub fn resources(&self) -> impl Iterator<Item = Resource> + '_ {
        let vpcs = self.vpcs.values().cloned().map(Resource::from);
        let vpcs = vpcs.chain(self.security_groups.values().cloned().map(Resource::from));
        let subnets = self.subnets.values().cloned().map(Resource::from);
        let ports = self.ports().values().cloned().map(Resource::Port);
        vpcs.chain(subnets)
            .chain(ports)
            .chain(self.neighbors().values().cloned().map(Resource::Neighbor))
            .chain(self.dhcp_hosts().values().cloned().map(Resource::from))
            .chain(self.gateways.values().cloned().map(Resource::from))
            .chain(self.routers.values().cloned().map(Resource::from))
            .chain(self.elastic_ips.values().cloned().map(Resource::from))
    }

    /// How many resources there are (what `resources` would yield, without copying any).
    pub fn len(&self) -> usize {
        self.vpcs.len()
            + self.subnets.len()
            + self.ports().len()
            + self.neighbors().len()
            + self.dhcp_hosts().len()
            + self.security_groups.len()
            + self.routers.len()
            + self.gateways.len()
            + self.elastic_ips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of resource `id` of type `kind`, if the state has it.
    pub fn get(&self, kind: ResourceType, id: &str) -> Option<Resource> {
        match kind {
            ResourceType::Vpc => self.vpcs.get(id).cloned().map(Resource::from),
            ResourceType::Subnet => self.subnets.get(id).cloned().map(Resource::from),
            ResourceType::Port => self.ports().get(id).cloned().map(Resource::Port),
            ResourceType::Neighbor => self.neighbors().get(id).cloned().map(Resource::Neighbor),
            ResourceType::Dhcp => self.dhcp_hosts().get(id).cloned().map(Resource::from),
            ResourceType::Securitygroup => self.security_groups.get(id).cloned().map(Resource::from),
            ResourceType::Router => self.routers.get(id).cloned().map(Resource::from),
            ResourceType::Gateway => self.gateways.get(id).cloned().map(Resource::from),
            ResourceType::ElasticIp => self.elastic_ips.get(id).cloned().map(Resource::from),
        }
    }

    pub fn put(&mut self, r: Resource) {
        match r {
            Resource::Vpc(v) => drop(self.vpcs.insert(v.id.to_string(), *v)),
            Resource::Subnet(s) => drop(self.subnets.insert(s.id.to_string(), *s)),
            Resource::Port(p) => drop(self.put_port(p)),
            Resource::Neighbor(n) => drop(self.put_neighbor(n)),
            Resource::Dhcp(d) => drop(self.put_dhcp(*d)),
            Resource::SecurityGroup(g) => drop(self.security_groups.insert(g.id.to_string(), *g)),
            Resource::Router(r) => drop(self.routers.insert(r.id.to_string(), *r)),
            Resource::Gateway(g) => drop(self.gateways.insert(g.id.to_string(), *g)),
            Resource::ElasticIp(e) => drop(self.elastic_ips.insert(e.id.to_string(), *e)),
        }
    }

    /// Forgets the tombstone of resource `id` of type `kind` (it exists again). Free when there
    /// are no tombstones, the common case.
    pub fn forget_tombstone(&mut self, kind: ResourceType, id: &str) {
        if !self.tombstones.is_empty() {
            self.tombstones.remove(&(kind as i32, id.to_string()));
        }
    }

    pub fn delete(&mut self, kind: ResourceType, id: &str) {
        match kind {
            ResourceType::Vpc => drop(self.vpcs.remove(id)),
            ResourceType::Subnet => drop(self.subnets.remove(id)),
            ResourceType::Port => drop(self.remove_port(id)),
            ResourceType::Neighbor => drop(self.remove_neighbor(id)),
            ResourceType::Dhcp => drop(self.remove_dhcp(id)),
            ResourceType::Securitygroup => drop(self.security_groups.remove(id)),
            ResourceType::Router => drop(self.routers.remove(id)),
            ResourceType::Gateway => drop(self.gateways.remove(id)),
            ResourceType::ElasticIp => drop(self.elastic_ips.remove(id)),
        }
    }
}

macro_rules! resource_from {
    ($($variant:ident($ty:ty) by $wrap:ident),*) => {$(
        impl From<$ty> for Resource {
            fn from(r: $ty) -> Self {
                Resource::$variant($wrap::new(r))
            }
        }
    )*};
}

resource_from!(
    Vpc(Vpc) by Box,
    Subnet(Subnet) by Box,
    Port(Port) by Arc,
    Neighbor(Neighbor) by Arc,
    Dhcp(DhcpHost) by Box,
    SecurityGroup(SecurityGroup) by Box,
    Router(Router) by Box,
    Gateway(Gateway) by Box,
    ElasticIp(ElasticIp) by Box
);

impl Resource {
    pub fn revision(&self) -> u32 {
        match self {
            Resource::Vpc(v) => v.revision,
            Resource::Subnet(s) => s.revision,
            Resource::Port(p) => p.revision,
            Resource::Neighbor(n) => n.revision,
            Resource::Dhcp(d) => d.revision,
            Resource::SecurityGroup(g) => g.revision,
            Resource::Router(r) => r.revision,
            Resource::Gateway(g) => g.revision,
            Resource::ElasticIp(e) => e.revision,
        }
    }

    pub fn kind_id(&self) -> (ResourceType, &str) {
        match self {
            Resource::Vpc(v) => (ResourceType::Vpc, &v.id),
            Resource::Subnet(s) => (ResourceType::Subnet, &s.id),
            Resource::Port(p) => (ResourceType::Port, &p.id),
            Resource::Neighbor(n) => (ResourceType::Neighbor, &n.id),
            Resource::Dhcp(d) => (ResourceType::Dhcp, &d.id),
            Resource::SecurityGroup(g) => (ResourceType::Securitygroup, &g.id),
            Resource::Router(r) => (ResourceType::Router, &r.id),
            Resource::Gateway(g) => (ResourceType::Gateway, &g.id),
            Resource::ElasticIp(e) => (ResourceType::ElasticIp, &e.id),
        }
    }
}

/// One accepted change: the resource before and after (None = absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub before: Option<Resource>,
    pub after: Option<Resource>,
    /// Index of the outcome this change answers.
    pub outcome: usize,
}

//! Validated resources: what the controller keeps once a goal-state resource passed validation.

use std::collections::BTreeMap;

mod bulk;
mod elastic_ip;
mod resource;
mod router;
mod secgroup;

pub use bulk::Parts;
pub use elastic_ip::ElasticIp;
pub use resource::{Change, Resource};
pub use router::{Gateway, Router, RoutingRule};
pub use secgroup::{groups, Groups, Remote, SecurityGroup, SgRule};
use std::sync::Arc;

/// Hash maps of ids and addresses. foldhash: SipHash on every id and address was a tenth of
/// applying a large goal state. Its `quality` flavour: with `fast`, ids that differ only in their
/// last digits ("1004-n000000001"...) shared the bits hashbrown tags entries with, and a lookup
/// compared strings three times as long (41 ns against 13 for 20,000 ids).
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;
pub type HashSet<K> = std::collections::HashSet<K, foldhash::quality::RandomState>;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

pub type Mac = [u8; 6];

/// A port's or neighbor's id: shared by the resource, the state's indexes and the changes that
/// name it, which a large message would otherwise copy half a dozen times per resource.
pub type Id = Arc<str>;

/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Vpc {
    /// Shared with the ports and neighbors in it.
    pub id: Id,
    pub revision: u32,
    pub vni: u32,
    pub cidr: Option<Ipv4Network>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subnet {
    /// Shared with the addresses in it.
    pub id: Id,
    pub revision: u32,
    pub vpc_id: String,
    pub cidr: Ipv4Network,
    pub gateway_ip: Ipv4Addr,
    pub gateway_mac: Mac,
    /// Whether `gateway_ip` is a gateway: answered for (ARP, ICMP), routed through, the DHCP
    /// router. A subnet without one (gateway 0.0.0.0 or none) keeps the address only as its DHCP
    /// server's identity.
    #[serde(default = "has_gateway")]
    pub gateway: bool,
    pub dhcp_enable: bool,
    pub dns: Vec<Ipv4Addr>,
    /// Extra DHCP options, encoded (`dhcp::parse_extra`).
    #[serde(default)]
    pub dhcp_options: Vec<DhcpOption>,
}

/// Subnets recorded before the flag existed all had a gateway.
fn has_gateway() -> bool {
    true
}

/// One DHCP option as it goes on the wire.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DhcpOption {
    pub code: u8,
    pub value: Vec<u8>,
}

/// A DHCP entry (Alcor's DHCPState): what the server tells the port with that MAC beyond the
/// port's own address, i.e. its host name.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DhcpHost {
    pub id: String,
    pub revision: u32,
    pub subnet_id: String,
    pub mac: Mac,
    /// The address the entry names; the port's fixed IP is what is handed out (they should agree).
    pub ip: Option<Ipv4Addr>,
    pub host_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FixedIp {
    pub subnet_id: Id,
    pub ip: Ipv4Addr,
}

/// A port's or neighbor's addresses: almost always one, kept inline.
pub type FixedIps = smallvec::SmallVec<[FixedIp; 1]>;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Port {
    pub id: Id,
    pub revision: u32,
    pub vpc_id: Id,
    pub mac: Mac,
    pub fixed_ips: FixedIps,
    /// Host-side interface the port program attaches to (shared with the state's indexes).
    pub iface: Id,
    /// The security groups that filter the port (`security_group_ids`); none: unfiltered.
    pub security_groups: Groups,
    /// IPv4 prefixes of its allowed address pairs: it may send from them, and they are members
    /// of its groups.
    pub allowed_pairs: Pairs,
}

/// Allowed address pairs' IPv4 prefixes: almost always none.
pub type Pairs = Box<[Ipv4Network]>;

impl Port {
    /// The address the data plane treats as the port's own (the first fixed IP).
    pub fn primary_ip(&self) -> Ipv4Addr {
        self.fixed_ips[0].ip
    }
}

/// A port on another host, reached over the overlay.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Neighbor {
    pub id: Id,
    pub revision: u32,
    pub vpc_id: Id,
    pub mac: Mac,
    /// Underlay address of the host carrying the port (the tunnel endpoint).
    pub host_ip: Ipv4Addr,
    pub fixed_ips: FixedIps,
    /// The security groups of the neighbor's port (alioth's extension), for rules that name
    /// them as remote groups.
    pub security_groups: Groups,
    /// IPv4 prefixes of its allowed address pairs, members of its groups.
    pub allowed_pairs: Pairs,
}

/// Who holds an address inside a VPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    Port(Id),
    Neighbor(Id),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Port(id) => write!(f, "port {id}"),
            Owner::Neighbor(id) => write!(f, "neighbor {id}"),
        }
    }
}

/// Everything the agent has accepted, by id.
///
/// Ports and neighbors change only through the `put_*`/`remove_*` methods, which keep the indexes
/// the validator needs to stay O(resources in the message) whatever the size of the state. They
/// are shared (`Arc`) with the changes that put them there: a change costs no copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub vpcs: BTreeMap<String, Vpc>,
    pub subnets: BTreeMap<String, Subnet>,
    ports: HashMap<Id, Arc<Port>>,
    neighbors: HashMap<Id, Arc<Neighbor>>,
    /// Revision of deleted resources by (resource type, id): a late, older CREATE is out of order.
    pub tombstones: BTreeMap<(i32, String), u32>,
    /// VPC -> address -> who holds it (nested, so lookups by `&str` allocate nothing). Keyed by
    /// the ids the resources share, so adding to an entry is one lookup and no allocation.
    addrs: HashMap<Id, HashMap<Ipv4Addr, Owner>>,
    /// VPC -> MAC -> port.
    macs: HashMap<Id, HashMap<Mac, Id>>,
    /// Host interface -> the port it belongs to: one port per interface, whatever the VPC.
    ifaces: HashMap<Id, Id>,
    /// Subnet -> ports and neighbors with an address in it.
    subnet_users: HashMap<Id, HashSet<Id>>,
    /// VPC -> number of ports and neighbors in it.
    vpc_users: HashMap<Id, usize>,
    /// Remote host (tunnel endpoint) -> number of neighbors on it.
    hosts: HashMap<Ipv4Addr, usize>,
    dhcp: HashMap<String, DhcpHost>,
    pub security_groups: BTreeMap<String, SecurityGroup>,
    pub routers: BTreeMap<String, Router>,
    pub gateways: BTreeMap<String, Gateway>,
    pub elastic_ips: BTreeMap<String, ElasticIp>,
    /// MAC -> DHCP entry.
    dhcp_macs: HashMap<Mac, String>,
}

impl State {
    pub fn ports(&self) -> &HashMap<Id, Arc<Port>> {
        &self.ports
    }

    pub fn neighbors(&self) -> &HashMap<Id, Arc<Neighbor>> {
        &self.neighbors
    }

    pub fn dhcp_hosts(&self) -> &HashMap<String, DhcpHost> {
        &self.dhcp
    }

    /// The DHCP entry of `mac`, if goal state has one.
    pub fn dhcp_host(&self, mac: &Mac) -> Option<&DhcpHost> {
        self.dhcp.get(self.dhcp_macs.get(mac)?)
    }

    pub fn put_dhcp(&mut self, d: DhcpHost) -> Option<DhcpHost> {
        let old = self.remove_dhcp(&d.id);
        self.dhcp_macs.insert(d.mac, d.id.clone());
        self.dhcp.insert(d.id.clone(), d);
        old
    }

    pub fn remove_dhcp(&mut self, id: &str) -> Option<DhcpHost> {
        let old = self.dhcp.remove(id)?;
        if self.dhcp_macs.get(&old.mac).map(String::as_str) == Some(id) {
            self.dhcp_macs.remove(&old.mac);
        }
        Some(old)
    }

    /// The port whose host interface is `iface`.
    pub fn iface_owner(&self, iface: &str) -> Option<&Id> {
        self.ifaces.get(iface)
    }

    pub fn addr_owner(&self, vpc: &str, ip: Ipv4Addr) -> Option<&Owner> {
        self.addrs.get(vpc)?.get(&ip)
    }

    pub fn mac_owner(&self, vpc: &str, mac: &Mac) -> Option<&str> {
        self.macs.get(vpc)?.get(mac).map(|id| &**id)
    }

    /// Ids of the ports and neighbors with an address in `subnet`.
    pub fn subnet_users(&self, subnet: &str) -> impl Iterator<Item = &Id> {
        self.subnet_users.get(subnet).into_iter().flatten()
    }

    /// The remote tunnel endpoints: the hosts the neighbors live on (not the unspecified address
    /// of neighbors whose host is not known yet) and the gateways' destinations.
    pub fn remote_hosts(&self) -> impl Iterator<Item = &Ipv4Addr> {
        let gateways = self
            .gateways
            .values()
            .flat_map(|g| g.destinations.iter().map(|(ip, _)| ip));
        self.hosts.keys().filter(|h| !h.is_unspecified()).chain(gateways)
    }

    /// Whether a subnet, port, neighbor or DHCP entry names a VPC or subnet the state lacks (what
    /// only a damaged record leaves), from the indexes: without visiting every resource.
    pub fn lacks_a_parent(&self) -> bool {
        self.vpc_users.keys().any(|v| !self.vpcs.contains_key(&**v))
            || self.subnet_users.keys().any(|s| !self.subnets.contains_key(&**s))
            || self.subnets.values().any(|s| !self.vpcs.contains_key(&s.vpc_id))
            || self.dhcp.values().any(|d| !self.subnets.contains_key(&d.subnet_id))
    }

    pub fn vpc_in_use(&self, vpc: &str) -> bool {
        self.vpc_users.get(vpc).is_some_and(|n| *n > 0)
    }

    fn index(&mut self, vpc: &Id, ips: &[FixedIp], owner: &Owner, add: bool) {
        let (Owner::Port(id) | Owner::Neighbor(id)) = owner;
        for f in ips {
            if add {
                self.addrs.entry(vpc.clone()).or_default().insert(f.ip, owner.clone());
                self.subnet_users
                    .entry(f.subnet_id.clone())
                    .or_default()
                    .insert(id.clone());
                continue;
            }
            if let Some(addrs) = self.addrs.get_mut(&**vpc) {
                if addrs.get(&f.ip) == Some(owner) {
                    addrs.remove(&f.ip);
                }
                if addrs.is_empty() {
                    self.addrs.remove(&**vpc);
                }
            }
            if let Some(users) = self.subnet_users.get_mut(&*f.subnet_id) {
                users.remove(&**id);
                if users.is_empty() {
                    self.subnet_users.remove(&*f.subnet_id);
                }
            }
        }
        if add {
            *self.vpc_users.entry(vpc.clone()).or_default() += 1;
        } else if let Some(n) = self.vpc_users.get_mut(&**vpc) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.vpc_users.remove(&**vpc);
            }
        }
    }

    /// True when the indexes equal ones rebuilt from the ports and neighbors (property tests).
    #[cfg(test)]
    pub fn indexes_match_contents(&self) -> bool {
        let mut fresh = State::default();
        self.ports.values().for_each(|p| drop(fresh.put_port(p.clone())));
        self.neighbors
            .values()
            .for_each(|n| drop(fresh.put_neighbor(n.clone())));
        (
            fresh.addrs,
            fresh.macs,
            fresh.ifaces,
            fresh.subnet_users,
            fresh.vpc_users,
            fresh.hosts,
        ) == (
            self.addrs.clone(),
            self.macs.clone(),
            self.ifaces.clone(),
            self.subnet_users.clone(),
            self.vpc_users.clone(),
            self.hosts.clone(),
        )
    }

    /// Stores `p`, replacing the port of the same id; one lookup of the id (the old port's
    /// index entries go before the new one's are made, which may name the same addresses).
    pub fn put_port(&mut self, p: Arc<Port>) -> Option<Arc<Port>> {
        let old = self.ports.insert(p.id.clone(), p.clone());
        if let Some(old) = &old {
            self.unindex_port(old);
        }
        self.index_port_addrs(&p);
        self.index_port_names(&p);
        old
    }

    /// The port's addresses, subnets and VPC in the indexes.
    fn index_port_addrs(&mut self, p: &Port) {
        self.index(&p.vpc_id, &p.fixed_ips, &Owner::Port(p.id.clone()), true);
    }

    /// The port's MAC and interface in the indexes.
    fn index_port_names(&mut self, p: &Port) {
        self.macs
            .entry(p.vpc_id.clone())
            .or_default()
            .insert(p.mac, p.id.clone());
        self.ifaces.insert(p.iface.clone(), p.id.clone());
    }

    pub fn remove_port(&mut self, id: &str) -> Option<Arc<Port>> {
        let old = self.ports.remove(id)?;
        self.unindex_port(&old);
        Some(old)
    }

    fn unindex_port(&mut self, old: &Port) {
        self.index(&old.vpc_id, &old.fixed_ips, &Owner::Port(old.id.clone()), false);
        if self.ifaces.get(&old.iface) == Some(&old.id) {
            self.ifaces.remove(&old.iface);
        }
        if let Some(macs) = self.macs.get_mut(&*old.vpc_id) {
            if macs.get(&old.mac) == Some(&old.id) {
                macs.remove(&old.mac);
            }
            if macs.is_empty() {
                self.macs.remove(&*old.vpc_id);
            }
        }
    }

    /// Room for `ports` and `neighbors` more: one table growth for a large message instead of a
    /// dozen doublings, each moving every entry.
    pub fn reserve(&mut self, ports: usize, neighbors: usize) {
        self.ports.reserve(ports);
        self.neighbors.reserve(neighbors);
    }

    /// Stores `n`, replacing the neighbor of the same id; one lookup of the id, as `put_port`.
    pub fn put_neighbor(&mut self, n: Arc<Neighbor>) -> Option<Arc<Neighbor>> {
        let old = self.neighbors.insert(n.id.clone(), n.clone());
        if let Some(old) = &old {
            self.unindex_neighbor(old);
        }
        self.index_neighbor(&n);
        old
    }

    fn index_neighbor(&mut self, n: &Neighbor) {
        self.index(&n.vpc_id, &n.fixed_ips, &Owner::Neighbor(n.id.clone()), true);
        *self.hosts.entry(n.host_ip).or_default() += 1;
    }

    pub fn remove_neighbor(&mut self, id: &str) -> Option<Arc<Neighbor>> {
        let old = self.neighbors.remove(id)?;
        self.unindex_neighbor(&old);
        Some(old)
    }

    fn unindex_neighbor(&mut self, old: &Neighbor) {
        self.index(&old.vpc_id, &old.fixed_ips, &Owner::Neighbor(old.id.clone()), false);
        if let Some(n) = self.hosts.get_mut(&old.host_ip) {
            *n -= 1;
            if *n == 0 {
                self.hosts.remove(&old.host_ip);
            }
        }
    }
}

/// The IPv4 prefixes of allowed address pairs (`ip_address`, an address or a CIDR, as Neutron
/// takes them): each as its network, without repeats; IPv6 pairs are left out (the data plane
/// carries IPv4 only).
pub fn parse_pairs<'a>(pairs: impl Iterator<Item = &'a str>) -> Result<Pairs, String> {
    let mut out: Vec<Ipv4Network> = Vec::new();
    for text in pairs.map(str::trim) {
        if text.contains(':') {
            continue;
        }
        let net: Ipv4Network = text
            .parse()
            .map_err(|_| format!("allowed address pair {text:?} is not an IPv4 address or CIDR"))?;
        let net = Ipv4Network::new(net.network(), net.prefix()).map_err(|e| e.to_string())?;
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out.into_boxed_slice())
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Result<Mac, String> {
    // The usual form, without splitting into substrings; anything else takes the general path,
    // which also explains what is wrong.
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    if b.len() == 17 {
        let mut mac = [0u8; 6];
        let well_formed = mac.iter_mut().enumerate().all(|(i, m)| {
            let sep = i == 5 || matches!(b[3 * i + 2], b':' | b'-');
            match (hex(b[3 * i]), hex(b[3 * i + 1])) {
                (Some(h), Some(l)) if sep => {
                    *m = h << 4 | l;
                    true
                }
                _ => false,
            }
        });
        if well_formed {
            return Ok(mac);
        }
    }
    let mut mac = [0u8; 6];
    let mut n = 0;
    for p in s.split([':', '-']) {
        if n < 6 {
            if p.len() != 2 {
                return Err(format!("MAC address {s:?}: octet {p:?} is not two hex digits"));
            }
            mac[n] = u8::from_str_radix(p, 16).map_err(|_| format!("MAC address {s:?}: octet {p:?} is not hex"))?;
        }
        n += 1;
    }
    if n != 6 {
        return Err(format!("MAC address {s:?} must have 6 octets, has {n}"));
    }
    Ok(mac)
}

/// A MAC a VM may own: unicast and not all zero.
pub fn parse_unicast_mac(s: &str) -> Result<Mac, String> {
    let mac = parse_mac(s)?;
    if mac[0] & 1 == 1 {
        return Err(format!("MAC address {s:?} is a multicast address"));
    }
    if mac == [0; 6] {
        return Err(format!("MAC address {s:?} is all zero"));
    }
    Ok(mac)
}

pub fn format_mac(mac: &Mac) -> String {
    let m = mac;
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

pub fn parse_ipv4(what: &str, s: &str) -> Result<Ipv4Addr, String> {
    if let Some(ip) = dotted_quad(s.as_bytes()) {
        return Ok(ip);
    }
    s.trim()
        .parse()
        .map_err(|_| format!("{what} {s:?} is not an IPv4 address"))
}

/// `a.b.c.d` in its usual form, without the general parser: a port or neighbor has two addresses,
/// and `FromStr` took a tenth of validating one. Anything else (spaces, leading zeros, garbage)
/// is `None` and takes the general path, which decides exactly as before.
fn dotted_quad(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut value = 0u32;
        // At most four digits are read: enough to refuse a fourth, never enough to overflow.
        while let Some(d @ b'0'..=b'9') = s.get(i).copied().filter(|_| i - start < 4) {
            value = value * 10 + u32::from(d - b'0');
            i += 1;
        }
        let digits = i - start;
        let canonical = digits == 1 || (matches!(digits, 2..=3) && s[start] != b'0');
        if !canonical || value > 255 {
            return None;
        }
        *octet = value as u8;
    }
    (i == s.len()).then(|| Ipv4Addr::from(octets))
}

/// 0.0.0.0/0.
pub const DEFAULT_ROUTE: Ipv4Network = match Ipv4Network::new_checked(Ipv4Addr::UNSPECIFIED, 0) {
    Some(net) => net,
    None => unreachable!(),
};

/// A network in CIDR notation with no host bits set.
pub fn parse_cidr(what: &str, s: &str) -> Result<Ipv4Network, String> {
    let net: Ipv4Network = s
        .trim()
        .parse()
        .map_err(|_| format!("{what} {s:?} is not an IPv4 CIDR"))?;
    if net.ip() != net.network() {
        return Err(format!(
            "{what} {s:?} has host bits set (network is {}/{})",
            net.network(),
            net.prefix()
        ));
    }
    Ok(net)
}

/// A stable gateway MAC for subnets that do not name one: locally administered, derived from the IP.
pub fn derived_gateway_mac(ip: Ipv4Addr) -> Mac {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:00:00:00:0a").unwrap(), [2, 0, 0, 0, 0, 10]);
        assert_eq!(parse_mac("02-00-00-00-00-0A").unwrap(), [2, 0, 0, 0, 0, 10]);
        assert!(parse_mac("02:00:00:00:00").unwrap_err().contains("6 octets"));
        assert!(parse_mac("02:00:00:00:00:0g").is_err());
        assert!(parse_mac("02:00:00:00:00:100").is_err());
        assert!(parse_unicast_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .contains("multicast"));
        assert!(parse_unicast_mac("00:00:00:00:00:00").is_err());
        assert_eq!(format_mac(&[2, 0, 0, 0, 0, 10]), "02:00:00:00:00:0a");
    }

    proptest::proptest! {
        /// The fast path decides as `FromStr` does: on every address's text, and on anything.
        #[test]
        fn addresses_parse_as_from_str_does(
            ip in proptest::prelude::any::<u32>(),
            near in "[0-9]{1,4}(\\.[0-9]{0,4}){2,4}",
            s in "[0-9. a]{0,20}",
        ) {
            let text = Ipv4Addr::from(ip).to_string();
            proptest::prop_assert_eq!(parse_ipv4("ip", &text), Ok(Ipv4Addr::from(ip)));
            for s in [near, s] {
                proptest::prop_assert_eq!(parse_ipv4("ip", &s).ok(), s.trim().parse::<Ipv4Addr>().ok());
            }
        }
    }

    #[test]
    fn addresses() {
        for ok in ["0.0.0.0", "198.18.0.1", "255.255.255.255", " 198.18.0.1 "] {
            assert_eq!(parse_ipv4("ip", ok), Ok(ok.trim().parse().unwrap()), "{ok}");
        }
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "256.0.0.1",
            "01.2.3.4",
            "1..2.3",
            "1.2.3.4a",
            "-1.2.3.4",
            "1.2.3.99999999999999999999",
        ] {
            assert!(
                parse_ipv4("ip", bad).unwrap_err().contains("not an IPv4 address"),
                "{bad}"
            );
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("cidr", "198.18.0.0/24").unwrap().prefix(), 24);
        assert!(parse_cidr("cidr", "198.18.0.1/24").unwrap_err().contains("host bits"));
        assert!(parse_cidr("cidr", "198.18.0.0/33").is_err());
        assert!(parse_cidr("cidr", "not-a-cidr").is_err());
    }
}

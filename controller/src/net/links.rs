//! Interfaces, addresses and IPv4 neighbours as the kernel reports them (RTM_GETLINK, RTM_GETADDR
//! and RTM_GETNEIGH dumps): the uplink's MAC and MTU, this host's addresses, each interface's XDP
//! attachment, and the resolved next hops.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use anyhow::Result;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage, LinkXdp, XdpAttached};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::net::route::RouteQuery;

/// How XDP runs on one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (native).
    Driver,
    /// On the skb, after the driver (generic).
    Generic,
    /// On the NIC.
    Offloaded,
    /// More than one program in different modes.
    Multiple,
}

impl XdpMode {
    pub fn name(self) -> &'static str {
        match self {
            XdpMode::Driver => "native",
            XdpMode::Generic => "generic",
            XdpMode::Offloaded => "offloaded",
            XdpMode::Multiple => "multiple",
        }
    }
}

/// One interface of this network namespace.
#[derive(Clone, Debug, Default)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The hardware address, where it is an Ethernet one.
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// The XDP mode and program id, where a program is attached.
    pub xdp: Option<(XdpMode, u32)>,
    /// A veth whose peer is in another network namespace (`peer_elsewhere`).
    pub peer_elsewhere: bool,
}

/// Every interface of this network namespace, by index.
pub fn links() -> Result<BTreeMap<u32, Link>> {
    let mut out = BTreeMap::new();
    RouteQuery::new()?.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), |m| {
        let RouteNetlinkMessage::NewLink(msg) = m else { return };
        let mut link = Link {
            index: msg.header.index,
            ..Default::default()
        };
        for a in &msg.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(a) => link.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                LinkAttribute::Mtu(m) => link.mtu = *m,
                LinkAttribute::Xdp(x) => link.xdp = xdp(x),
                _ => {}
            }
        }
        link.peer_elsewhere = is_peer_elsewhere(&msg);
        out.insert(link.index, link);
    })?;
    Ok(out)
}

/// The XDP mode and program of interface `index`, if one is attached.
pub fn xdp_of(index: u32) -> Result<Option<(XdpMode, u32)>> {
    let msg = RouteQuery::new()?.link(index)?;
    Ok(msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Xdp(x) => xdp(x.as_slice()),
        _ => None,
    }))
}

/// Whether interface `index` is a veth whose peer is in another network namespace (a guest's):
/// frames for it may then enter the peer directly (`bpf_redirect_peer`, which drops them when the
/// peer is in the same namespace).
pub fn peer_elsewhere(index: u32) -> Result<bool> {
    Ok(is_peer_elsewhere(&RouteQuery::new()?.link(index)?))
}

/// `peer_elsewhere` of the interface `msg` describes.
pub fn is_peer_elsewhere(msg: &LinkMessage) -> bool {
    let elsewhere = msg
        .attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::LinkNetNsId(_)));
    is_veth(msg) && elsewhere
}

/// Whether the interface `msg` describes is a veth.
pub fn is_veth(msg: &LinkMessage) -> bool {
    kind(msg) == Some(&InfoKind::Veth)
}

/// The kind of interface `msg` describes (veth, dummy...), where the kernel says.
pub fn kind(msg: &LinkMessage) -> Option<&InfoKind> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}

fn xdp(attrs: &[LinkXdp]) -> Option<(XdpMode, u32)> {
    let mode = attrs.iter().find_map(|x| match x {
        LinkXdp::Attached(XdpAttached::Driver) => Some(XdpMode::Driver),
        LinkXdp::Attached(XdpAttached::SocketBuffer) => Some(XdpMode::Generic),
        LinkXdp::Attached(XdpAttached::Hardware) => Some(XdpMode::Offloaded),
        LinkXdp::Attached(XdpAttached::Multiple) => Some(XdpMode::Multiple),
        _ => None,
    })?;
    let prog = attrs.iter().find_map(|x| match x {
        LinkXdp::ProgId(id) => Some(*id),
        _ => None,
    });
    Some((mode, prog.unwrap_or(0)))
}

/// (interface index, address) of every address of this network namespace.
pub fn addresses() -> Result<Vec<(u32, IpAddr)>> {
    let mut out = Vec::new();
    RouteQuery::new()?.dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()), |m| {
        let RouteNetlinkMessage::NewAddress(msg) = m else {
            return;
        };
        // IPv4's own address is IFA_LOCAL (IFA_ADDRESS is the peer's on point-to-point links).
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let address = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = local.or(address) {
            out.push((msg.header.index, ip));
        }
    })?;
    Ok(out)
}

/// The resolved IPv4 neighbours (reachable, stale, probing, permanent...: not incomplete or
/// failed): address -> (interface index, MAC).
pub fn neighbours() -> Result<HashMap<Ipv4Addr, (u32, [u8; 6])>> {
    let mut out = HashMap::new();
    let mut dump = NeighbourMessage::default();
    dump.header.family = AddressFamily::Inet;
    RouteQuery::new()?.dump(RouteNetlinkMessage::GetNeighbour(dump), |m| {
        let RouteNetlinkMessage::NewNeighbour(msg) = m else {
            return;
        };
        let h = &msg.header;
        if matches!(
            h.state,
            NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
        ) {
            return;
        }
        let ip = msg.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        let mac = msg.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(m) => <[u8; 6]>::try_from(m.as_slice()).ok(),
            _ => None,
        });
        if let (Some(ip), Some(mac)) = (ip, mac) {
            out.insert(ip, (h.ifindex, mac));
        }
    })?;
    Ok(out)
}

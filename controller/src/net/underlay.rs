//! The underlay as the kernel sees it: the uplink's address, MAC and MTU, and the next hop (with its
//! MAC) toward each remote tunnel endpoint, read from this network namespace's routing and
//! neighbour tables.
//!
//! Everything is read through rtnetlink, which answers for the agent's network namespace: the agent
//! may run under `nsenter --net`, where /sys still shows another namespace.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};

use anyhow::{Context, Result};

use crate::goalstate::model::Mac;
use crate::net::route::RouteTo;

/// The uplink interface and this host's tunnel endpoint on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UplinkInfo {
    pub name: String,
    pub ifindex: u32,
    pub mac: Mac,
    pub mtu: u32,
    pub ip: Ipv4Addr,
}

/// The uplink's facts now (from the kernel's own description of it); `ip` overrides its address
/// (default: its first IPv4 address).
pub fn uplink_info(name: &str, ip: Option<Ipv4Addr>) -> Result<UplinkInfo> {
    let link = crate::net::links::links()?
        .into_values()
        .find(|l| l.name == name)
        .with_context(|| format!("uplink {name}: no such interface"))?;
    let mac = link
        .mac
        .with_context(|| format!("uplink {name} has no Ethernet address"))?;
    let ip = match ip {
        Some(ip) => ip,
        None => crate::net::links::addresses()?
            .into_iter()
            .find_map(|(index, a)| match a {
                IpAddr::V4(v4) if index == link.index => Some(v4),
                _ => None,
            })
            .with_context(|| format!("uplink {name} has no IPv4 address (give one with --uplink-ip)"))?,
    };
    Ok(UplinkInfo {
        name: name.to_string(),
        ifindex: link.index,
        mac,
        mtu: link.mtu,
        ip,
    })
}

/// The neighbour table, read once per refresh; routes are the kernel's answers (`net::route`).
pub struct Tables {
    /// Resolved IPv4 neighbours: address -> (interface index, MAC).
    neighbours: HashMap<Ipv4Addr, (u32, Mac)>,
}

impl Tables {
    pub fn read() -> Result<Tables> {
        let neighbours = crate::net::links::neighbours().context("read the neighbour table")?;
        Ok(Tables { neighbours })
    }

    /// The next hop toward `host` when the kernel routes it by `route`: its address, and its MAC
    /// once resolved. `Err` when the route leaves through another interface than the `uplink`
    /// (the overlay cannot reach `host`).
    pub fn next_hop(
        &self,
        uplink: &UplinkInfo,
        host: Ipv4Addr,
        route: RouteTo,
    ) -> Result<(Ipv4Addr, Option<Mac>), String> {
        if route.oif != uplink.ifindex {
            let dev = crate::net::interfaces::ifname(route.oif).unwrap_or_else(|| format!("ifindex {}", route.oif));
            return Err(format!(
                "the route to {host} leaves through {dev}, not the uplink {}",
                uplink.name
            ));
        }
        let hop = route.gateway.unwrap_or(host);
        let mac = self
            .neighbours
            .get(&hop)
            .filter(|(index, _)| *index == uplink.ifindex)
            .map(|(_, m)| *m);
        Ok((hop, mac))
    }
}

/// Makes the kernel resolve (or re-confirm) its neighbour entry for the next hop toward `host`: one
/// empty datagram to the discard port of `host`.
pub fn solicit(host: Ipv4Addr) {
    if let Ok(sock) = UdpSocket::bind("0.0.0.0:0") {
        let _ = sock.send_to(&[], SocketAddrV4::new(host, 9));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops_follow_the_route_and_the_neighbours() {
        // Resolved entries on the uplink (7); an entry on another interface is not the uplink's.
        let t = Tables {
            neighbours: HashMap::from([
                (Ipv4Addr::new(198, 19, 0, 2), (7, [2, 0, 0xc6, 0x13, 0, 2])),
                (Ipv4Addr::new(198, 19, 0, 3), (8, [2, 0, 0xc6, 0x13, 0, 3])),
                (Ipv4Addr::new(198, 19, 0, 1), (7, [2, 0, 0xc6, 0x13, 0, 1])),
            ]),
        };
        let uplink = UplinkInfo {
            name: "up0".into(),
            ifindex: 7,
            mac: [2, 0, 0, 0, 0, 7],
            mtu: 1500,
            ip: Ipv4Addr::new(198, 19, 0, 9),
        };
        let on_link = Ipv4Addr::new(198, 19, 0, 2);
        let direct = RouteTo { oif: 7, gateway: None };
        assert_eq!(
            t.next_hop(&uplink, on_link, direct),
            Ok((on_link, Some([2, 0, 0xc6, 0x13, 0, 2])))
        );
        // Known on another interface only: not resolved on the uplink.
        assert_eq!(
            t.next_hop(&uplink, Ipv4Addr::new(198, 19, 0, 3), direct).unwrap().1,
            None
        );
        // Off-link: through the route's gateway.
        let via = RouteTo {
            oif: 7,
            gateway: Some(Ipv4Addr::new(198, 19, 0, 1)),
        };
        assert_eq!(
            t.next_hop(&uplink, Ipv4Addr::new(198, 18, 9, 9), via),
            Ok((Ipv4Addr::new(198, 19, 0, 1), Some([2, 0, 0xc6, 0x13, 0, 1])))
        );
        let elsewhere = RouteTo { oif: 8, gateway: None };
        assert!(t
            .next_hop(&uplink, Ipv4Addr::new(198, 19, 1, 5), elsewhere)
            .unwrap_err()
            .contains("not the uplink up0"));
    }
}

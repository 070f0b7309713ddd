//! The underlay as the kernel sees it: the uplink's address, MAC and MTU, and the next hop (with its
//! MAC) toward each remote tunnel endpoint, read from this network namespace's routing and
//! neighbour tables.
//!
//! Everything is read through netns-aware interfaces (ioctl, getifaddrs, /proc/self/net): the agent
//! may run under `nsenter --net`, where /sys still shows another namespace.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};

use anyhow::{bail, Context, Result};

use crate::goalstate::model::Mac;
use crate::net::interfaces::ifindex;
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

/// (interface name, address) of every address of this network namespace.
pub fn addresses() -> Vec<(String, IpAddr)> {
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
            let name = std::ffi::CStr::from_ptr((*p).ifa_name).to_string_lossy().into_owned();
            if !a.is_null() {
                match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        out.push((name, IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(a as *const libc::sockaddr_in6);
                        out.push((name, IpAddr::from(sin6.sin6_addr.s6_addr)));
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

/// An `ifreq` for `name`, as the SIOCGIF* ioctls take it.
fn ifreq(name: &str) -> Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.is_empty() || name.len() >= req.ifr_name.len() {
        bail!("{name:?} is not a valid interface name");
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(req)
}

fn ioctl(name: &str, request: libc::c_ulong) -> Result<libc::ifreq> {
    let sock = UdpSocket::bind("0.0.0.0:0").context("socket for interface ioctls")?;
    let mut req = ifreq(name)?;
    // SAFETY: the socket is open and `req` is a valid ifreq for this request.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&sock), request, &mut req) };
    if rc != 0 {
        bail!("interface {name}: {}", std::io::Error::last_os_error());
    }
    Ok(req)
}

/// The uplink's facts now; `ip` overrides its address (default: its first IPv4 address).
pub fn uplink_info(name: &str, ip: Option<Ipv4Addr>) -> Result<UplinkInfo> {
    let index = ifindex(name).with_context(|| format!("uplink {name}: no such interface"))?;
    let hw = ioctl(name, libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let data = unsafe { hw.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    let mtu = ioctl(name, libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU filled the mtu member.
    let mtu = unsafe { mtu.ifr_ifru.ifru_mtu } as u32;
    let ip = match ip {
        Some(ip) => ip,
        None => addresses()
            .into_iter()
            .find_map(|(n, a)| match a {
                IpAddr::V4(v4) if n == name => Some(v4),
                _ => None,
            })
            .with_context(|| format!("uplink {name} has no IPv4 address (give one with --uplink-ip)"))?,
    };
    Ok(UplinkInfo {
        name: name.to_string(),
        ifindex: index,
        mac,
        mtu,
        ip,
    })
}

/// Parses /proc/net/arp: complete entries as address -> (device, MAC).
pub fn parse_arp(text: &str) -> HashMap<Ipv4Addr, (String, Mac)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 {
                return None;
            }
            let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
            // ATF_COM: the entry is resolved (reachable, stale, permanent...).
            if flags & 0x2 == 0 {
                return None;
            }
            let mac = crate::goalstate::model::parse_mac(f[3]).ok()?;
            Some((f[0].parse().ok()?, (f[5].to_string(), mac)))
        })
        .collect()
}

/// The neighbour table, read once per refresh; routes are the kernel's answers (`net::route`).
pub struct Tables {
    arp: HashMap<Ipv4Addr, (String, Mac)>,
}

impl Tables {
    pub fn read() -> Result<Tables> {
        let arp = std::fs::read_to_string("/proc/self/net/arp").context("read /proc/self/net/arp")?;
        Ok(Tables { arp: parse_arp(&arp) })
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
            .arp
            .get(&hop)
            .filter(|(dev, _)| *dev == uplink.name)
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

    const ARP: &str = "IP address       HW type     Flags       HW address            Mask     Device
198.19.0.2       0x1         0x2         02:00:c6:13:00:02     *        up0
198.19.0.3       0x1         0x0         00:00:00:00:00:00     *        up0
198.19.0.1       0x1         0x2         02:00:c6:13:00:01     *        up0
";

    #[test]
    fn next_hops_follow_the_route_and_the_neighbours() {
        let t = Tables { arp: parse_arp(ARP) };
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
        // Incomplete entries are not resolved.
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

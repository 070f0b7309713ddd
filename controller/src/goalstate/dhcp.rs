//! The DHCP server's configuration: goal state -> the `DhcpEntry` the XDP program answers from.
//!
//! The agent renders every option of a port's replies once, when the port (or its subnet or DHCP
//! entry) changes; the data plane only copies them and fills in the per-message fields.

use std::net::Ipv4Addr;

use alioth_common::dhcp::opt;
use alioth_common::dhcp::{message_options, options_sum};
use alioth_common::maps::{
    DhcpEntry, DHCP_MAX_OPTIONAL, DHCP_MESSAGE_OPTIONS_LEN, DHCP_OPTIONS_LEN, DHCP_REPLY_OPTIONS_LEN,
};
use ipnetwork::Ipv4Network;

use crate::goalstate::model::{self, DhcpOption, Subnet};

/// Interface MTU handed to VMs unless a subnet overrides it: 1500 minus VXLAN's 50 bytes.
pub const DEFAULT_MTU: u16 = 1450;
/// Lease time unless the agent or a subnet says otherwise.
pub const DEFAULT_LEASE_SECS: u32 = 86_400;
/// Longest host name accepted (one DNS label), so that every subnet's options keep room for it.
pub const MAX_HOST_NAME: usize = 63;
/// Room a subnet's options may take: the reply's option space less a host name and END.
pub const SUBNET_OPTIONS_ROOM: usize = DHCP_OPTIONS_LEN - (MAX_HOST_NAME + 2) - 1 - 8;

/// How an option's value is written in goal state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ip,
    IpList,
    U8,
    U16,
    U32,
    Bool,
    Text,
    /// 121: `network/prefix,router,...` (dnsmasq's form).
    Routes,
    /// 119: comma-separated domains (RFC 3397, uncompressed).
    Domains,
}

/// Neutron (dnsmasq) option names, and how their values are written.
const NAMES: &[(&str, u8, Kind)] = &[
    ("netmask", 1, Kind::Ip),
    ("time-offset", 2, Kind::U32),
    ("router", 3, Kind::IpList),
    ("dns-server", 6, Kind::IpList),
    ("log-server", 7, Kind::IpList),
    ("lpr-server", 9, Kind::IpList),
    ("hostname", 12, Kind::Text),
    ("domain-name", 15, Kind::Text),
    ("root-path", 17, Kind::Text),
    ("ip-forward-enable", 19, Kind::Bool),
    ("default-ttl", 23, Kind::U8),
    ("mtu", 26, Kind::U16),
    ("interface-mtu", 26, Kind::U16),
    ("broadcast", 28, Kind::Ip),
    ("router-discovery", 31, Kind::Bool),
    ("arp-timeout", 35, Kind::U32),
    ("tcp-ttl", 37, Kind::U8),
    ("tcp-keepalive", 38, Kind::U32),
    ("nis-domain", 40, Kind::Text),
    ("nis-server", 41, Kind::IpList),
    ("ntp-server", 42, Kind::IpList),
    ("netbios-ns", 44, Kind::IpList),
    ("netbios-nodetype", 46, Kind::U8),
    ("lease-time", 51, Kind::U32),
    ("T1", 58, Kind::U32),
    ("T2", 59, Kind::U32),
    ("tftp-server", 66, Kind::Text),
    ("bootfile-name", 67, Kind::Text),
    ("smtp-server", 69, Kind::IpList),
    ("pop3-server", 70, Kind::IpList),
    ("domain-search", 119, Kind::Domains),
    ("classless-static-route", 121, Kind::Routes),
    ("server-ip-address", 150, Kind::IpList),
];

/// Options that every reply carries from goal state; an extra option of the same code replaces
/// the derived value. Any other option goes out only when the client's request list names it.
const STANDARD: [u8; 7] = [
    opt::SUBNET_MASK,
    opt::ROUTER,
    opt::DNS,
    opt::DOMAIN_NAME,
    opt::HOST_NAME,
    opt::MTU,
    opt::BROADCAST,
];
/// Options only the server itself sets, per message.
const RESERVED: [u8; 8] = [0, 50, 52, 53, 54, 55, 57, 255];

/// Parses one of a subnet's `extra_dhcp_options` (a Neutron name or a number, and its value).
pub fn parse_extra(name: &str, value: &str) -> Result<DhcpOption, String> {
    let name = name.trim();
    let name = name.strip_prefix("option:").unwrap_or(name);
    let (code, kind) = match name.parse::<u8>() {
        Ok(code) => (code, None),
        Err(_) => {
            let found = NAMES.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(name));
            let (_, code, kind) = found.ok_or_else(|| format!("unknown DHCP option name {name:?}"))?;
            (*code, Some(*kind))
        }
    };
    if RESERVED.contains(&code) {
        return Err(format!("DHCP option {code} is set by the server itself"));
    }
    let kind = kind.or_else(|| NAMES.iter().find(|(_, c, _)| *c == code).map(|(_, _, k)| *k));
    let value = encode(code, kind, value.trim()).map_err(|e| format!("DHCP option {name:?}: {e}"))?;
    if value.len() > 255 {
        return Err(format!(
            "DHCP option {name:?} is {} bytes long, more than 255",
            value.len()
        ));
    }
    Ok(DhcpOption { code, value })
}

fn encode(code: u8, kind: Option<Kind>, v: &str) -> Result<Vec<u8>, String> {
    let ip = |s: &str| model::parse_ipv4("address", s);
    let list = || v.split(',').map(str::trim).filter(|s| !s.is_empty());
    let number = |max: u64| -> Result<u64, String> {
        let n: u64 = v.parse().map_err(|_| format!("{v:?} is not a number"))?;
        (n <= max)
            .then_some(n)
            .ok_or_else(|| format!("{n} is larger than {max}"))
    };
    Ok(match kind {
        Some(Kind::Ip) => ip(v)?.octets().to_vec(),
        Some(Kind::IpList) => list()
            .map(ip)
            .collect::<Result<Vec<_>, _>>()?
            .iter()
            .flat_map(|a| a.octets())
            .collect(),
        Some(Kind::U8) => vec![number(u8::MAX as u64)? as u8],
        Some(Kind::U16) => {
            let n = number(u16::MAX as u64)? as u16;
            if code == opt::MTU && n < 576 {
                return Err(format!("MTU {n} is below the IPv4 minimum of 576"));
            }
            n.to_be_bytes().to_vec()
        }
        Some(Kind::U32) => (number(u32::MAX as u64)? as u32).to_be_bytes().to_vec(),
        Some(Kind::Bool) => match v {
            "1" | "true" | "yes" => vec![1],
            "0" | "false" | "no" => vec![0],
            _ => return Err(format!("{v:?} is not a boolean")),
        },
        Some(Kind::Text) if v.is_empty() => return Err("empty value".into()),
        Some(Kind::Text) => v.as_bytes().to_vec(),
        Some(Kind::Routes) => {
            let parts: Vec<&str> = list().collect();
            if parts.is_empty() || !parts.len().is_multiple_of(2) {
                return Err("routes are pairs of network/prefix,router".into());
            }
            let mut routes = Vec::new();
            for pair in parts.chunks(2) {
                routes.push((model::parse_cidr("route destination", pair[0])?, ip(pair[1])?));
            }
            classless_routes(&routes)
        }
        Some(Kind::Domains) => {
            let mut out = Vec::new();
            for domain in list() {
                for label in domain.trim_end_matches('.').split('.') {
                    if label.is_empty() || label.len() > 63 {
                        return Err(format!("{domain:?} is not a domain name"));
                    }
                    out.push(label.len() as u8);
                    out.extend_from_slice(label.as_bytes());
                }
                out.push(0);
            }
            out
        }
        // A number with no known type: addresses, hex bytes (`01:02:ff`), or text.
        None => {
            if let Ok(addrs) = list().map(|s| s.parse::<Ipv4Addr>()).collect::<Result<Vec<_>, _>>() {
                if !addrs.is_empty() {
                    return Ok(addrs.iter().flat_map(|a| a.octets()).collect());
                }
            }
            let hex: Result<Vec<u8>, _> = v.split(':').map(|b| u8::from_str_radix(b, 16)).collect();
            match hex {
                Ok(bytes) if v.contains(':') || v.len() == 2 => bytes,
                _ if v.is_empty() => return Err("empty value".into()),
                _ => v.as_bytes().to_vec(),
            }
        }
    })
}

/// RFC 3442 encoding: prefix length, the significant octets of the destination, the router.
pub fn classless_routes(routes: &[(Ipv4Network, Ipv4Addr)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (net, router) in routes {
        let len = net.prefix();
        out.push(len);
        out.extend_from_slice(&net.network().octets()[..len.div_ceil(8) as usize]);
        out.extend_from_slice(&router.octets());
    }
    out
}

/// Checks that a subnet's options leave room in the reply for a host name.
pub fn check_subnet(subnet: &Subnet) -> Result<(), String> {
    let (standard, optional) = options(subnet, None, DEFAULT_LEASE_SECS).1;
    let used = standard.iter().map(|o| o.value.len() + 2).sum::<usize>()
        + optional
            .iter()
            .map(|o| (o.value.len() + 2).div_ceil(8) * 8)
            .sum::<usize>();
    if optional.len() > DHCP_MAX_OPTIONAL {
        return Err(format!(
            "{} optional DHCP options, more than the {DHCP_MAX_OPTIONAL} the server carries",
            optional.len()
        ));
    }
    if used > SUBNET_OPTIONS_ROOM {
        return Err(format!(
            "the DHCP options take {used} bytes, more than the {SUBNET_OPTIONS_ROOM} a reply has room for"
        ));
    }
    Ok(())
}

type Options = (Vec<DhcpOption>, Vec<DhcpOption>);

/// Lease time and the (standard, optional) options of a port of `subnet` with `host_name`.
fn options(subnet: &Subnet, host_name: Option<&str>, default_lease: u32) -> ([u32; 3], Options) {
    let extra = |code: u8| {
        subnet
            .dhcp_options
            .iter()
            .find(|o| o.code == code)
            .map(|o| o.value.clone())
    };
    let mut standard = Vec::new();
    let mut push = |code: u8, derived: Option<Vec<u8>>| {
        if let Some(value) = extra(code).or(derived).filter(|v| !v.is_empty()) {
            standard.push(DhcpOption { code, value });
        }
    };
    let net = subnet.cidr;
    push(opt::SUBNET_MASK, Some(net.mask().octets().to_vec()));
    push(opt::ROUTER, subnet.gateway.then(|| subnet.gateway_ip.octets().to_vec()));
    push(opt::DNS, Some(subnet.dns.iter().flat_map(|a| a.octets()).collect()));
    push(opt::DOMAIN_NAME, None);
    push(opt::HOST_NAME, host_name.map(|h| h.as_bytes().to_vec()));
    push(opt::MTU, Some(DEFAULT_MTU.to_be_bytes().to_vec()));
    push(opt::BROADCAST, Some(net.broadcast().octets().to_vec()));

    let u32_of = |code: u8| {
        extra(code)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(u32::from_be_bytes)
    };
    let lease = u32_of(opt::LEASE_TIME).unwrap_or(default_lease);
    let infinite = lease == u32::MAX;
    let t1 = u32_of(opt::RENEWAL_TIME).unwrap_or(if infinite { lease } else { lease / 2 });
    let t2 = u32_of(opt::REBINDING_TIME).unwrap_or(if infinite { lease } else { (lease as u64 * 7 / 8) as u32 });

    let optional = subnet
        .dhcp_options
        .iter()
        .filter(|o| !STANDARD.contains(&o.code) && ![51, 58, 59].contains(&o.code))
        .map(|o| {
            let mut o = o.clone();
            // With classless routes the client ignores option 3 (RFC 3442): the default route
            // goes in them too.
            if o.code == opt::CLASSLESS_ROUTES && subnet.gateway && !o.value.starts_with(&[0]) {
                let mut v = classless_routes(&[(model::DEFAULT_ROUTE, subnet.gateway_ip)]);
                v.extend_from_slice(&o.value);
                o.value = v;
            }
            o
        })
        .collect();
    ([lease, t1, t2], (standard, optional))
}

/// The entry the data plane answers a port's DHCP from: the port's address `ip` in `subnet`.
pub fn render(ip: Ipv4Addr, subnet: &Subnet, host_name: Option<&str>, default_lease: u32) -> Result<DhcpEntry, String> {
    let host_name = host_name.filter(|h| !h.is_empty() && h.len() <= MAX_HOST_NAME);
    let ([lease, t1, t2], (standard, optional)) = options(subnet, host_name, default_lease);
    let server_ip = subnet.gateway_ip.octets();
    let mut e = DhcpEntry {
        ip: ip.octets(),
        server_ip,
        server_mac: subnet.gateway_mac,
        ..Default::default()
    };
    if optional.len() > DHCP_MAX_OPTIONAL {
        return Err(format!("more than {DHCP_MAX_OPTIONAL} optional DHCP options"));
    }
    let mut out: Vec<u8> = Vec::with_capacity(DHCP_REPLY_OPTIONS_LEN);
    out.extend_from_slice(&message_options(server_ip, [lease, t1, t2]));
    let put = |out: &mut Vec<u8>, o: &DhcpOption| {
        out.push(o.code);
        out.push(o.value.len() as u8);
        out.extend_from_slice(&o.value);
    };
    for o in &standard {
        put(&mut out, o);
    }
    // Each optional option on whole words, so that leaving it out blanks words, never bytes.
    let pad_to_word = |out: &mut Vec<u8>| out.resize(out.len().div_ceil(8) * 8, opt::PAD);
    for (k, o) in optional.iter().enumerate() {
        pad_to_word(&mut out);
        let first = out.len() / 8;
        put(&mut out, o);
        let last = out.len().div_ceil(8);
        e.optional_codes[k] = o.code;
        e.optional_words[k] = (first..last).fold(0u64, |m, w| m | (1 << w));
    }
    if !optional.is_empty() {
        pad_to_word(&mut out);
    }
    out.push(opt::END);
    if out.len() > DHCP_REPLY_OPTIONS_LEN {
        return Err(format!(
            "the DHCP options take {} bytes, more than the {DHCP_OPTIONS_LEN} a reply has room for",
            out.len() - DHCP_MESSAGE_OPTIONS_LEN
        ));
    }
    e.options[..out.len()].copy_from_slice(&out);
    e.options_sum = options_sum(&e.options);
    e.words = out.len().div_ceil(8) as u8;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(extra: &[(&str, &str)]) -> Subnet {
        Subnet {
            id: "s".into(),
            revision: 1,
            vpc_id: "v".into(),
            cidr: "198.18.0.0/24".parse().unwrap(),
            gateway_ip: "198.18.0.1".parse().unwrap(),
            gateway_mac: [0x0a, 0x58, 198, 18, 0, 1],
            gateway: true,
            dhcp_enable: true,
            dns: vec!["198.18.0.2".parse().unwrap()],
            dhcp_options: extra.iter().map(|(n, v)| parse_extra(n, v).unwrap()).collect(),
        }
    }

    #[test]
    fn extra_options_parse() {
        assert_eq!(parse_extra("mtu", "9000").unwrap().value, 9000u16.to_be_bytes());
        assert_eq!(parse_extra("26", "1400").unwrap().value, 1400u16.to_be_bytes());
        assert_eq!(
            parse_extra("ntp-server", "198.18.0.5, 198.18.0.6").unwrap().value.len(),
            8
        );
        assert_eq!(parse_extra("option:150", "198.18.0.7").unwrap().value, [198, 18, 0, 7]);
        assert_eq!(parse_extra("option:66", "boot.example").unwrap().value, b"boot.example");
        assert_eq!(parse_extra("224", "01:02:ff").unwrap().value, [1, 2, 255]);
        assert_eq!(parse_extra("225", "hello").unwrap().value, b"hello");
        assert_eq!(
            parse_extra("domain-search", "a.example, b").unwrap().value,
            b"\x01a\x07example\x00\x01b\x00"
        );
        assert_eq!(
            parse_extra("classless-static-route", "198.19.0.0/16,198.18.0.1")
                .unwrap()
                .value,
            [16, 198, 19, 198, 18, 0, 1]
        );
        assert!(parse_extra("nonsense", "1").unwrap_err().contains("unknown"));
        assert!(parse_extra("53", "1").unwrap_err().contains("server itself"));
        assert!(parse_extra("mtu", "100").unwrap_err().contains("576"));
        assert!(parse_extra("mtu", "x").is_err());
        assert!(parse_extra("classless-static-route", "198.19.0.0/16").is_err());
    }

    #[test]
    fn render_places_optional_options_on_words() {
        let s = subnet(&[
            ("classless-static-route", "198.19.0.0/16,198.18.0.1"),
            ("ntp-server", "198.18.0.5"),
        ]);
        let e = render("198.18.0.10".parse().unwrap(), &s, Some("vm1"), 3600).unwrap();
        assert_eq!(e.ip, [198, 18, 0, 10]);
        // 53 (type filled in per reply), 54 (the gateway), then lease, renewal and rebinding times.
        assert_eq!(e.options[..9], [53, 1, 0, 54, 4, 198, 18, 0, 1]);
        assert_eq!(
            e.options[9..27],
            [51, 4, 0, 0, 14, 16, 58, 4, 0, 0, 7, 8, 59, 4, 0, 0, 12, 78]
        );
        assert_eq!(e.options_sum, options_sum(&e.options));
        assert_eq!(e.optional_codes[..3], [121, 42, 0]);
        for k in 0..2 {
            let first = e.optional_words[k].trailing_zeros() as usize;
            assert_eq!(e.options[first * 8], e.optional_codes[k]);
        }
        // The default route leads the classless routes.
        let w = e.optional_words[0].trailing_zeros() as usize * 8;
        assert_eq!(e.options[w..w + 7], [121, 12, 0, 198, 18, 0, 1]);
        assert!(e.options.contains(&opt::END));
    }

    #[test]
    fn extra_options_replace_standard_ones() {
        let s = subnet(&[("mtu", "1400"), ("lease-time", "120"), ("domain-name", "example.org")]);
        let e = render("198.18.0.10".parse().unwrap(), &s, None, 3600).unwrap();
        let o = &e.options;
        let at = o.windows(2).position(|w| w == [26, 2]).unwrap();
        assert_eq!(o[at + 2..at + 4], 1400u16.to_be_bytes());
        assert_eq!(e.options[11..15], 120u32.to_be_bytes());
        assert_eq!(e.optional_codes, [0; DHCP_MAX_OPTIONAL]);
    }

    /// A subnet without a gateway tells its ports of no router: no option 3, and classless
    /// routes without the default route through it.
    #[test]
    fn no_gateway_no_router() {
        let codes = |s: &Subnet| {
            let (_, (standard, optional)) = options(s, None, 3600);
            let routes = optional
                .iter()
                .find(|o| o.code == opt::CLASSLESS_ROUTES)
                .map(|o| o.value.clone());
            (standard.iter().map(|o| o.code).collect::<Vec<u8>>(), routes)
        };
        let routed = subnet(&[("classless-static-route", "198.19.0.0/16,198.18.0.1")]);
        let (with, with_routes) = codes(&routed);
        assert!(with.contains(&opt::ROUTER));
        let alone = Subnet {
            gateway: false,
            ..routed.clone()
        };
        let (without, without_routes) = codes(&alone);
        assert!(!without.contains(&opt::ROUTER), "{without:?}");
        let (with_routes, without_routes) = (with_routes.unwrap(), without_routes.unwrap());
        // The default route (prefix length 0) first only when there is a gateway.
        assert_eq!(with_routes[0], 0);
        assert_eq!(without_routes[0], 16);
        assert!(with_routes.ends_with(&without_routes));
    }

    #[test]
    fn too_many_options_are_refused() {
        let dns: Vec<String> = (1..=60).map(|i| format!("198.18.1.{i}")).collect();
        let s = subnet(&[("dns-server", &dns.join(","))]);
        assert!(check_subnet(&s).unwrap_err().contains("room"));
        assert!(check_subnet(&subnet(&[])).is_ok());
    }
}

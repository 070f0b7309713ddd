//! Journal lines of ports and neighbors written by hand: byte for byte what serde_json writes for
//! `{"Put": resource}`, which the store reads back with serde.
//!
//! serde_json escapes every string a byte at a time, keys included, and formats addresses through
//! `Display`: 3,000 instructions per neighbor, as many as validating it. Here a string that needs
//! no escape is copied whole, and numbers and addresses go through `itoa`.

use std::net::Ipv4Addr;

use crate::goalstate::model::Resource;
use crate::goalstate::model::{FixedIp, Mac, Neighbor, Port};

/// Appends the journal line body `{"Put":{...}}` of `r` (no newline) and returns true, for the
/// resources it knows; false, with nothing written, for the others (serde writes those).
pub fn put(out: &mut Vec<u8>, r: &Resource) -> bool {
    match r {
        Resource::Neighbor(n) => neighbor(out, n),
        Resource::Port(p) => port(out, p),
        Resource::Vpc(_) | Resource::Subnet(_) | Resource::Dhcp(_) => return false,
    }
    true
}

fn neighbor(out: &mut Vec<u8>, n: &Neighbor) {
    out.extend_from_slice(br#"{"Put":{"Neighbor":{"id":"#);
    string(out, &n.id);
    out.extend_from_slice(br#","revision":"#);
    number(out, n.revision);
    out.extend_from_slice(br#","vpc_id":"#);
    string(out, &n.vpc_id);
    out.extend_from_slice(br#","mac":"#);
    mac(out, &n.mac);
    out.extend_from_slice(br#","host_ip":"#);
    ip(out, n.host_ip);
    out.extend_from_slice(br#","fixed_ips":"#);
    fixed_ips(out, &n.fixed_ips);
    out.extend_from_slice(b"}}}");
}

fn port(out: &mut Vec<u8>, p: &Port) {
    out.extend_from_slice(br#"{"Put":{"Port":{"id":"#);
    string(out, &p.id);
    out.extend_from_slice(br#","revision":"#);
    number(out, p.revision);
    out.extend_from_slice(br#","vpc_id":"#);
    string(out, &p.vpc_id);
    out.extend_from_slice(br#","mac":"#);
    mac(out, &p.mac);
    out.extend_from_slice(br#","fixed_ips":"#);
    fixed_ips(out, &p.fixed_ips);
    out.extend_from_slice(br#","iface":"#);
    string(out, &p.iface);
    out.extend_from_slice(b"}}}");
}

fn fixed_ips(out: &mut Vec<u8>, ips: &[FixedIp]) {
    out.push(b'[');
    for (i, f) in ips.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"subnet_id":"#);
        string(out, &f.subnet_id);
        out.extend_from_slice(br#","ip":"#);
        ip(out, f.ip);
        out.push(b'}');
    }
    out.push(b']');
}

/// A JSON string. What serde_json would escape (quotes, backslashes, control characters) is left
/// to serde_json, so that the rare id that needs it is written exactly as before.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| ESCAPED[usize::from(b)]) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// The bytes serde_json escapes in a string.
static ESCAPED: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

fn number(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A MAC as serde writes `[u8; 6]`: an array of numbers.
fn mac(out: &mut Vec<u8>, mac: &Mac) {
    out.push(b'[');
    for (i, b) in mac.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        byte(out, *b);
    }
    out.push(b']');
}

/// An address as serde writes it for JSON: its dotted text, quoted.
fn ip(out: &mut Vec<u8>, ip: Ipv4Addr) {
    out.push(b'"');
    for (i, b) in ip.octets().iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        byte(out, *b);
    }
    out.push(b'"');
}

/// A byte in decimal, from a table: a MAC and an address are ten of them per resource.
fn byte(out: &mut Vec<u8>, b: u8) {
    let (digits, len) = &DECIMAL[usize::from(b)];
    out.extend_from_slice(&digits[..usize::from(*len)]);
}

/// The decimal text of every byte value, and its length.
static DECIMAL: [([u8; 3], u8); 256] = {
    let mut t = [([0u8; 3], 0u8); 256];
    let mut n = 0;
    while n < 256 {
        let (h, d, u) = ((n / 100) as u8, (n / 10 % 10) as u8, (n % 10) as u8);
        t[n] = match n {
            0..=9 => ([b'0' + u, 0, 0], 1),
            10..=99 => ([b'0' + d, b'0' + u, 0], 2),
            _ => ([b'0' + h, b'0' + d, b'0' + u], 3),
        };
        n += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    fn serde_line(r: &Resource) -> String {
        format!(r#"{{"Put":{}}}"#, serde_json::to_string(r).unwrap())
    }

    fn written(r: &Resource) -> String {
        let mut out = Vec::new();
        assert!(put(&mut out, r));
        String::from_utf8(out).unwrap()
    }

    fn fixed_ip() -> impl Strategy<Value = FixedIp> {
        (any::<String>(), any::<u32>()).prop_map(|(s, ip)| FixedIp {
            subnet_id: s.into(),
            ip: ip.into(),
        })
    }

    proptest! {
        /// Any ids (quotes, backslashes, control characters, any Unicode), any numbers and
        /// addresses: the same bytes as serde_json.
        #[test]
        fn neighbors_are_written_as_serde_writes_them(
            id in any::<String>(), revision in any::<u32>(), vpc in any::<String>(),
            mac in any::<[u8; 6]>(), host in any::<u32>(),
            ips in proptest::collection::vec(fixed_ip(), 0..3),
        ) {
            let r = Resource::Neighbor(Arc::new(Neighbor {
                id: id.into(),
                revision,
                vpc_id: vpc.into(),
                mac,
                host_ip: host.into(),
                fixed_ips: ips.into_iter().collect(),
            }));
            prop_assert_eq!(written(&r), serde_line(&r));
        }

        #[test]
        fn ports_are_written_as_serde_writes_them(
            id in any::<String>(), revision in any::<u32>(), vpc in any::<String>(),
            mac in any::<[u8; 6]>(), iface in any::<String>(),
            ips in proptest::collection::vec(fixed_ip(), 0..3),
        ) {
            let r = Resource::Port(Arc::new(Port {
                id: id.into(),
                revision,
                vpc_id: vpc.into(),
                mac,
                fixed_ips: ips.into_iter().collect(),
                iface,
            }));
            prop_assert_eq!(written(&r), serde_line(&r));
        }
    }

    #[test]
    fn every_byte_in_decimal() {
        for b in 0..=u8::MAX {
            let mut out = Vec::new();
            byte(&mut out, b);
            assert_eq!(out, b.to_string().into_bytes());
        }
    }

    #[test]
    fn escapes_and_the_common_case() {
        let n = Resource::Neighbor(Arc::new(Neighbor {
            id: "n-\"1\"\\\n\u{1}é".into(),
            revision: 7,
            vpc_id: "1004-vpc".into(),
            mac: [2, 0x80, 0, 0, 0, 255],
            host_ip: Ipv4Addr::new(198, 19, 0, 1),
            fixed_ips: [FixedIp {
                subnet_id: "s".into(),
                ip: Ipv4Addr::new(198, 18, 0, 11),
            }]
            .into_iter()
            .collect(),
        }));
        assert_eq!(written(&n), serde_line(&n));
        assert_eq!(
            written(&n),
            r#"{"Put":{"Neighbor":{"id":"n-\"1\"\\\n\u0001é","revision":7,"vpc_id":"1004-vpc","mac":[2,128,0,0,0,255],"host_ip":"198.19.0.1","fixed_ips":[{"subnet_id":"s","ip":"198.18.0.11"}]}}}"#
        );
        let vpc = Resource::Vpc(Box::new(crate::goalstate::model::Vpc {
            id: "v".into(),
            revision: 1,
            vni: 1,
            cidr: None,
        }));
        let mut out = Vec::new();
        assert!(!put(&mut out, &vpc));
        assert!(out.is_empty());
    }
}

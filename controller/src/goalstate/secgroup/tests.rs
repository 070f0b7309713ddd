use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use proptest::prelude::*;

use super::*;

/// What the rules mean, one by one: the reference the compiled lookups must agree with.
fn naive(rules: &[Rule], remote: Ipv4Addr, proto: u8, value: u16) -> bool {
    rules.iter().any(|r| {
        r.remotes.iter().any(|p| p.contains(remote))
            && r.protocol.is_none_or(|p| p == proto)
            && (r.ports.0..=r.ports.1).contains(&value)
    })
}

fn rule() -> impl Strategy<Value = Rule> {
    // Few distinct addresses, protocols and ports, so that rules overlap and frames hit them.
    let prefix = (
        prop::sample::select(vec![[198, 18, 0, 0], [198, 18, 1, 0], [198, 19, 0, 0], [0, 0, 0, 0]]),
        0u8..=32,
    )
        .prop_map(|(ip, len)| {
            let net = Ipv4Network::new(Ipv4Addr::from(ip), len).expect("prefix length");
            Ipv4Network::new(net.network(), len).expect("prefix length")
        });
    let remote = prop::collection::vec(prefix, 0..3);
    let protocol = prop::option::of(prop::sample::select(vec![1u8, 6, 17, 47]));
    let ports = (0u16..=1024, 0u16..=2048).prop_map(|(a, b)| (a.min(b), a.max(b)));
    let whole = Just((0u16, u16::MAX));
    (remote, protocol, prop_oneof![ports, whole]).prop_map(|(remotes, protocol, ports)| Rule {
        remotes,
        protocol,
        ports,
    })
}

#[test]
fn no_rule_allows_nothing_and_an_open_rule_everything() {
    let none = compile(&[]);
    assert!(!none.allows(Ipv4Addr::new(198, 18, 0, 1), 6, 22));
    let open = compile(&[Rule {
        remotes: vec!["0.0.0.0/0".parse().unwrap()],
        protocol: None,
        ports: (0, u16::MAX),
    }]);
    assert!(open.allows(Ipv4Addr::new(198, 19, 7, 7), 47, 0));
    assert!(open.allows(Ipv4Addr::new(198, 18, 0, 1), 6, 65535));
}

proptest! {
    /// The prefixes of a range cover it exactly, without overlap, and are at most 30.
    #[test]
    fn a_range_is_covered_exactly_by_its_prefixes(a in any::<u16>(), b in any::<u16>()) {
        let (lo, hi) = (a.min(b), a.max(b));
        let mut covered = 0u32;
        let mut count = 0;
        let mut next = lo as u32;
        range_prefixes(lo, hi, |value, len| {
            let size = 1u32 << (16 - len as u32);
            assert_eq!(value as u32, next, "prefixes in order, without gaps");
            assert_eq!(value as u32 % size, 0, "aligned");
            next += size;
            covered += size;
            count += 1;
        });
        prop_assert_eq!(next, hi as u32 + 1);
        prop_assert_eq!(covered, hi as u32 - lo as u32 + 1);
        prop_assert!(count <= 30);
    }

    /// Whatever the rules and the frame, the compiled lookups (a longest match per table and an
    /// AND) answer what the rules say one by one.
    #[test]
    fn compiled_rules_allow_exactly_what_the_rules_do(
        rules in prop::collection::vec(rule(), 0..24),
        frames in prop::collection::vec((any::<[u8; 2]>(), prop::sample::select(vec![1u8, 6, 17, 47, 50]), 0u16..=2100), 1..32),
    ) {
        let compiled = compile(&rules);
        for (low, proto, value) in frames {
            for remote in [Ipv4Addr::new(198, 18, low[0] % 2, low[1]), Ipv4Addr::new(198, 19, 0, low[1]), Ipv4Addr::new(203, 0, 113, low[0])] {
                prop_assert_eq!(
                    compiled.allows(remote, proto, value),
                    naive(&rules, remote, proto, value),
                    "{} proto {} value {} against {:?}", remote, proto, value, rules
                );
            }
        }
    }
}

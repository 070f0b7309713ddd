//! Security groups across hosts: ingress rules checked after decapsulation, remote groups whose
//! members are neighbors (alioth's `security_group_ids` extension on neighbors), and two VPCs with
//! the same addresses, where a remote group's members are those of the port's own VPC.

use alioth_proto::schema::security_group_configuration::{Direction, SecurityGroupRule};
use alioth_proto::schema::{
    neighbor_configuration, port_configuration, OperationType, Protocol, SecurityGroupState, UpdateType,
};
use alioth_tests::overlay::{Lab, VpcSpec};
use alioth_tests::sockets::{round_trip, Peer};
use anyhow::{ensure, Result};

fn rule(id: &str, direction: Direction, protocol: Protocol, port: u32, remote: (&str, &str)) -> SecurityGroupRule {
    SecurityGroupRule {
        id: id.into(),
        direction: direction as i32,
        protocol: protocol as i32,
        port_range_min: port,
        port_range_max: port,
        remote_ip_prefix: remote.0.into(),
        remote_group_id: remote.1.into(),
        ..Default::default()
    }
}

fn group(id: &str, rules: Vec<SecurityGroupRule>) -> SecurityGroupState {
    alioth_tests::goalstate::security_group(OperationType::Create, id, rules)
}

/// "srv": TCP 8080 in from members of "cli", UDP 5353 in from 198.18.1.10/32, anything out.
/// "cli": anything out, nothing in.
fn groups() -> Vec<SecurityGroupState> {
    let any_out = |id: &str| rule(id, Direction::Egress, Protocol::Tcp, 0, ("", ""));
    vec![
        group(
            "srv",
            vec![
                any_out("srv-out"),
                rule("srv-web", Direction::Ingress, Protocol::Tcp, 8080, ("", "cli")),
                rule(
                    "srv-dns",
                    Direction::Ingress,
                    Protocol::Udp,
                    5353,
                    ("198.18.1.10/32", ""),
                ),
            ],
        ),
        group("cli", vec![any_out("cli-out")]),
    ]
}

#[test]
fn remote_groups_reach_across_hosts_and_stay_within_their_vpc() -> Result<()> {
    let (a, b) = (VpcSpec::new(1, 1001, 1), VpcSpec::new(2, 1002, 1));
    let mut lab = Lab::new(vec![a.clone(), b.clone()])?;
    // The same addresses in both VPCs: a1 and b1 (198.18.1.10) on host 0, a2 and b2 (.11) on 1.
    let (a1, b1, a2, b2) = (a.vm(1, 10), b.vm(2, 10), a.vm(1, 11), b.vm(2, 11));
    // a1 is in "cli", b1 in no group; a2 and b2 are in "srv".
    let member_of = |id: &str| match id {
        i if i == a1.port_id => vec!["cli"],
        i if i == a2.port_id || i == b2.port_id => vec!["srv"],
        _ => vec![],
    };
    let ids = [&a1, &b1, &a2, &b2].map(|s| s.port_id.clone());
    lab.add_host(vec![a1.clone(), b1.clone()])?;
    lab.add_host(vec![a2.clone(), b2.clone()])?;
    lab.start_agents(&[])?;
    for i in 0..2 {
        let mut gs = lab.goal_state(i);
        gs.security_group_states = groups();
        for p in gs.port_states.iter_mut().filter_map(|p| p.configuration.as_mut()) {
            p.security_group_ids = member_of(&p.id)
                .into_iter()
                .map(|g| port_configuration::SecurityGroupId { id: g.into() })
                .collect();
        }
        for n in gs.neighbor_states.iter_mut().filter_map(|n| n.configuration.as_mut()) {
            n.security_group_ids = member_of(&n.id)
                .into_iter()
                .map(|g| neighbor_configuration::SecurityGroupId { id: g.into() })
                .collect();
        }
        lab.push(i, &gs)?;
    }
    lab.wait_resolved()?;
    let ns = |id: &String| &lab.vm(id).ns;
    let _servers = [
        Peer::serve(ns(&ids[2]), false, 8080, 25)?,
        Peer::serve(ns(&ids[3]), false, 8080, 25)?,
        Peer::serve(ns(&ids[2]), true, 5353, 25)?,
        Peer::serve(ns(&ids[3]), true, 5353, 25)?,
        Peer::serve(ns(&ids[0]), false, 9000, 25)?,
    ];
    let drops = |i: usize| lab.counter(i, "drop_sg_ingress");
    let before = drops(1)?;
    // a1 is a member of "cli" on host 1 only as a neighbor.
    ensure!(round_trip(ns(&ids[0]), false, "198.18.1.11", 8080)?, "a1 -> a2:8080");
    // b1 has a1's address but is in no group: b2's rule names "cli" members of VPC B only.
    ensure!(!round_trip(ns(&ids[1]), false, "198.18.1.11", 8080)?, "b1 -> b2:8080");
    ensure!(drops(1)? > before, "host 1 counts the refusal after decapsulation");
    // A prefix is an address, whatever the VPC (as in Neutron).
    ensure!(round_trip(ns(&ids[0]), true, "198.18.1.11", 5353)?, "a1 -> a2 UDP 5353");
    ensure!(round_trip(ns(&ids[1]), true, "198.18.1.11", 5353)?, "b1 -> b2 UDP 5353");
    // Nothing into a1: checked by host 0 after decapsulation, although a2 may send anything.
    let before = drops(0)?;
    ensure!(!round_trip(ns(&ids[2]), false, "198.18.1.10", 9000)?, "a2 -> a1:9000");
    ensure!(drops(0)? > before, "host 0 counts the refusal");
    // a1 leaves "cli" (its neighbor entry on host 1 says so, FULL: under DELTA an empty list
    // keeps the held one): a2 refuses it from then on.
    let mut gs = lab.goal_state(1);
    gs.port_states.clear();
    gs.vpc_states.clear();
    gs.subnet_states.clear();
    gs.neighbor_states
        .retain(|n| n.configuration.as_ref().is_some_and(|c| c.id == ids[0]));
    for n in &mut gs.neighbor_states {
        n.operation_type = OperationType::Update as i32;
        if let Some(c) = n.configuration.as_mut() {
            c.update_type = UpdateType::Full as i32;
        }
    }
    lab.push(1, &gs)?;
    ensure!(
        !round_trip(ns(&ids[0]), false, "198.18.1.11", 8080)?,
        "a1 out of cli -> a2:8080"
    );
    Ok(())
}

//! Alcor's control plane as it drives a host: goal state shaped as its Data Plane Manager builds it
//! (`alioth_tests::dpm`, V1 unary), in the order a cloud produces it, across two hosts. After every
//! step the replies must be all SUCCESS and the data plane must forward what should be there.

use alioth_proto::schema::OperationType::{Create, Delete};
use alioth_tests::dpm;
use alioth_tests::overlay::{Lab, VmSpec, VpcSpec};
use anyhow::{ensure, Result};

fn answers(lab: &Lab, from: &str, to: &str) -> Result<bool> {
    let out = lab
        .vm(from)
        .ns
        .exec_output(&["ping", "-c", "2", "-i", "0.2", "-W", "2", to])?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("2 received"))
}

/// One VPC, VM 1 on host 0 and VM 2 on host 1, agents started, nothing pushed yet.
struct TwoHosts {
    lab: Lab,
    v: VpcSpec,
    vm1: VmSpec,
    vm2: VmSpec,
    /// The hosts' underlay addresses.
    h0: String,
    h1: String,
}

fn two_hosts() -> Result<TwoHosts> {
    let v = VpcSpec::new(1, 1001, 1);
    let mut lab = Lab::new(vec![v.clone()])?;
    let (vm1, vm2) = (v.vm(1, 10), v.vm(1, 20));
    lab.add_host(vec![vm1.clone()])?;
    lab.add_host(vec![vm2.clone()])?;
    lab.start_agents(&[])?;
    let (h0, h1) = (lab.hosts[0].ip.clone(), lab.hosts[1].ip.clone());
    Ok(TwoHosts {
        lab,
        v,
        vm1,
        vm2,
        h0,
        h1,
    })
}

#[test]
fn a_dpm_v1_sequence_leaves_every_live_port_programmed_and_forwarding() -> Result<()> {
    let TwoHosts {
        lab,
        v,
        vm1,
        vm2,
        h0,
        h1,
    } = two_hosts()?;
    let gateway = "198.18.1.1";

    // 1. VM 1's port is created on host 0: VPC and subnet come as INFO context (the VNI only in
    //    the subnet), the port FULL, its DHCP entry without an id.
    lab.push(0, &dpm::port_message(&v, Create, &vm1, &h0, vec![]))?;
    ensure!(answers(&lab, &vm1.port_id, gateway)?, "VM 1 -> its gateway");

    // 2. VM 2's port comes to host 1 in a later FULL message, with VM 1 as its neighbor; host 0
    //    learns VM 2. FULL deletes nothing: VM 1's port stays.
    let vm1_there = vec![dpm::neighbor(Create, &vm1, &h0)];
    lab.push(1, &dpm::port_message(&v, Create, &vm2, &h1, vm1_there))?;
    lab.push(0, &dpm::neighbor_message(&v, Create, &vm2, &h1))?;
    lab.wait_resolved()?;
    for (from, to) in [
        (&vm1.port_id, gateway),
        (&vm1.port_id, vm2.ip.as_str()),
        (&vm2.port_id, vm1.ip.as_str()),
        (&vm2.port_id, gateway),
    ] {
        ensure!(answers(&lab, from, to)?, "{from} -> {to} after step 2");
    }

    // 3. VM 1 is deleted: its port and DHCP entry on host 0, its neighbor on host 1.
    lab.push(0, &dpm::port_message(&v, Delete, &vm1, &h0, vec![]))?;
    lab.push(1, &dpm::neighbor_message(&v, Delete, &vm1, &h0))?;
    ensure!(
        answers(&lab, &vm2.port_id, gateway)?,
        "VM 2 -> its gateway after VM 1 went"
    );
    ensure!(
        !answers(&lab, &vm1.port_id, gateway)?,
        "VM 1's port is deleted: nothing answers it"
    );

    // 4. Everything is sent again (a controller that restarted): all SUCCESS, nothing changes.
    lab.push(1, &dpm::port_message(&v, Create, &vm2, &h1, vec![]))?;
    lab.push(0, &dpm::neighbor_message(&v, Create, &vm2, &h1))?;
    ensure!(
        answers(&lab, &vm2.port_id, gateway)?,
        "VM 2 -> its gateway after the replay"
    );
    let ports = lab.hosts[1].agent.as_ref().map(|a| a.cli(&["ports"])).transpose()?;
    let ports = String::from_utf8_lossy(&ports.map(|o| o.stdout).unwrap_or_default()).into_owned();
    ensure!(ports.contains(&vm2.mac), "host 1 still programs VM 2: {ports}");
    Ok(())
}

/// The same over the stream, shaped as DPM V2 builds it: maps by id, `host_resources`, DHCP
/// entries under a fresh random id each time, the host's own ports in the L2 neighbor map. A
/// neighbor that first comes without its host is accepted and forwarded to once its host is known.
#[test]
fn a_dpm_v2_sequence_over_the_stream_leaves_every_live_port_forwarding() -> Result<()> {
    let TwoHosts {
        lab,
        v,
        vm1,
        vm2,
        h0,
        h1,
    } = two_hosts()?;
    let gateway = "198.18.1.1";
    let own = |vm, host: &str| dpm::neighbor(Create, vm, host);

    // 1. Host 0: VM 1's port, itself in the L2 map, and VM 2 as a neighbor whose host DPM does
    //    not know yet.
    lab.push(
        0,
        &dpm::message_v2(
            &h0,
            &v,
            vec![dpm::port(Create, &vm1, &h0)],
            vec![own(&vm1, &h0), own(&vm2, "")],
        ),
    )?;
    ensure!(answers(&lab, &vm1.port_id, gateway)?, "VM 1 -> its gateway");
    let unresolved = || lab.counter(0, "drop_no_next_hop");
    let before = unresolved()?;
    ensure!(!answers(&lab, &vm1.port_id, &vm2.ip)?, "no host for VM 2 yet");
    ensure!(
        unresolved()? >= before + 2,
        "VM 2's traffic is dropped and counted meanwhile"
    );
    // 2. Host 1: VM 2's port and both L2 entries; host 0 learns VM 2's host. The same ports come
    //    again with fresh DHCP ids: they replace the entries.
    lab.push(
        1,
        &dpm::message_v2(
            &h1,
            &v,
            vec![dpm::port(Create, &vm2, &h1)],
            vec![own(&vm2, &h1), own(&vm1, &h0)],
        ),
    )?;
    lab.push(
        0,
        &dpm::message_v2(
            &h0,
            &v,
            vec![dpm::port(Create, &vm1, &h0)],
            vec![own(&vm1, &h0), own(&vm2, &h1)],
        ),
    )?;
    lab.wait_resolved()?;
    for (from, to) in [
        (&vm1.port_id, vm2.ip.as_str()),
        (&vm2.port_id, vm1.ip.as_str()),
        (&vm2.port_id, gateway),
    ] {
        ensure!(answers(&lab, from, to)?, "{from} -> {to}");
    }
    Ok(())
}

/// ACA's own test of two ports (`aca_test_ovs_l2.cpp`, `2_ports_CREATE_test_traffic`): each port
/// comes in a message of its own with the subnet as INFO and no VPC state (the VNI is the
/// subnet's); then the two ports ping each other, as the test does.
#[test]
fn acas_two_ports_test_messages_create_two_ports_that_talk() -> Result<()> {
    let v = VpcSpec::new(1, 1001, 1);
    let mut lab = Lab::new(vec![v.clone()])?;
    let (vm1, vm2) = (v.vm(1, 10), v.vm(1, 11));
    lab.add_host(vec![vm1.clone(), vm2.clone()])?;
    lab.start_agents(&[])?;
    lab.push(0, &alioth_tests::aca::message(&v, &vm1))?;
    lab.push(0, &alioth_tests::aca::message(&v, &vm2))?;
    ensure!(answers(&lab, &vm1.port_id, &vm2.ip)?, "port 1 -> port 2");
    ensure!(answers(&lab, &vm2.port_id, &vm1.ip)?, "port 2 -> port 1");
    Ok(())
}

/// DPM's port pushes carrying Neutron's default security group: every resource is applied, the
/// group's members talk to each other, and a port outside the group gets nothing in. A port's
/// DELETE brings its group's DELETE, which leaves the group to the ports still in it.
#[test]
fn dpm_port_pushes_with_the_default_security_group_filter_as_neutron_does() -> Result<()> {
    let v = VpcSpec::new(1, 1001, 1);
    let mut lab = Lab::new(vec![v.clone()])?;
    let (vm1, vm2, vm3) = (v.vm(1, 10), v.vm(1, 20), v.vm(1, 30));
    lab.add_host(vec![vm1.clone(), vm2.clone(), vm3.clone()])?;
    lab.start_agents(&[])?;
    let h0 = lab.hosts[0].ip.clone();
    let group = "3dda2801-d675-4688-a63f-dcda8d720001";
    // `Lab::push` fails unless every resource is answered SUCCESS.
    lab.push(0, &dpm::port_message_in_group(&v, Create, &vm1, &h0, group))?;
    lab.push(0, &dpm::port_message_in_group(&v, Create, &vm2, &h0, group))?;
    lab.push(0, &dpm::port_message(&v, Create, &vm3, &h0, vec![]))?;
    ensure!(answers(&lab, &vm1.port_id, &vm2.ip)?, "VM 1 -> VM 2, both in the group");
    ensure!(answers(&lab, &vm2.port_id, &vm1.ip)?, "VM 2 -> VM 1, both in the group");
    // VM 3 has no group: it may send (VM 1 lets anything out and replies in), not be reached.
    ensure!(!answers(&lab, &vm3.port_id, &vm1.ip)?, "VM 3 is no member: nothing in");
    ensure!(answers(&lab, &vm1.port_id, &vm3.ip)?, "VM 1 -> unfiltered VM 3");
    // VM 2 goes: DPM sends the group's DELETE with it, and VM 1 keeps its group and rules.
    lab.push(0, &dpm::port_message_in_group(&v, Delete, &vm2, &h0, group))?;
    ensure!(
        answers(&lab, &vm1.port_id, &vm3.ip)?,
        "VM 1 -> VM 3 after VM 2's deletion"
    );
    ensure!(!answers(&lab, &vm3.port_id, &vm1.ip)?, "VM 1 is still filtered");
    Ok(())
}

/// A Neutron router between two subnets of a VPC, as DPM sends it: each host's message has its
/// port, the other VM as an L3 neighbor with that neighbor's subnet as INFO context, and the
/// router (INFO) with a table for both subnets (`constructRouterState` adds the neighbor's).
#[test]
fn a_dpm_router_routes_its_subnets_across_hosts() -> Result<()> {
    let a = VpcSpec::new(1, 1001, 1);
    let b = VpcSpec {
        subnet: "subnet-2".into(),
        third: 2,
        ..a.clone()
    };
    let mut lab = Lab::new(vec![a.clone(), b.clone()])?;
    let (vm1, vm2) = (a.vm(1, 10), b.vm(2, 10));
    lab.add_host(vec![vm1.clone()])?;
    lab.add_host(vec![vm2.clone()])?;
    lab.start_agents(&[])?;
    let hosts = [lab.hosts[0].ip.clone(), lab.hosts[1].ip.clone()];
    for (i, (mine, theirs, vm, other)) in [(&a, &b, &vm1, &vm2), (&b, &a, &vm2, &vm1)].into_iter().enumerate() {
        let there = dpm::l3_neighbor(Create, other, &hosts[1 - i]);
        let mut msg = dpm::port_message(mine, Create, vm, &hosts[i], vec![there]);
        msg.subnet_states.push(dpm::subnet_info(theirs));
        msg.router_states = vec![dpm::router_info("router-1", &[mine, theirs])];
        lab.push(i, &msg)?;
        let gateway = format!("198.18.{}.1", mine.third);
        lab.vm(&vm.port_id)
            .ns
            .exec(&["ip", "route", "add", "default", "via", &gateway])?;
    }
    lab.wait_resolved()?;
    ensure!(answers(&lab, &vm1.port_id, &vm2.ip)?, "VM 1 -> VM 2 across the router");
    ensure!(answers(&lab, &vm2.port_id, &vm1.ip)?, "VM 2 -> VM 1 across the router");
    Ok(())
}

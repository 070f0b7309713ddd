//! Routers and gateways with real guests: two subnets of a VPC routed to each other by a router
//! (pushed as Alcor's DPM builds it: INFO, the tables of the message's ports' subnets), on one host
//! and across hosts; a default route to a gateway that is a namespace with Linux's own vxlan,
//! masquerading to an "internet" namespace; longest-prefix match and priorities; the router's
//! DELETE.

use alioth_proto::schema::router_configuration::RoutingRule;
use alioth_proto::schema::*;
use alioth_tests::agent::Agent;
use alioth_tests::netns::Netns;
use alioth_tests::overlay::{iperf3, received_bps, Lab, VpcSpec, UPLINK};
use alioth_tests::routing::{gateway_ip, goal_state, router, routing, rule, subnet_of};
use alioth_tests::sockets::{round_trip, Peer};
use anyhow::{ensure, Context, Result};

/// The output of one ping from `ns` to `ip` (1 s), when it was answered.
fn ping(ns: &Netns, ip: &str) -> Result<Option<String>> {
    let out = ns.exec_output(&["ping", "-c", "1", "-W", "1", ip])?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Behind the router VM c1: a network its rule sends to it.
const BEHIND_C1: &str = "198.19.100.0/24";
const BEHIND_C1_HOST: &str = "198.19.100.1";

#[test]
fn a_router_routes_its_subnets_on_one_host_and_across_hosts() -> Result<()> {
    let a = VpcSpec::new(1, 1001, 1);
    let b = subnet_of(&a, 2);
    let mut lab = Lab::new(vec![a.clone(), b.clone()])?;
    let (a1, b1, a2, b2) = (a.vm(1, 10), b.vm(2, 10), a.vm(1, 11), b.vm(2, 11));
    // c1, on a third host, is a router VM: BEHIND_C1 is its own, and an allowed address pair of
    // its port lets it answer from there.
    let c1 = a.vm(1, 12);
    lab.add_host(vec![a1.clone(), b1.clone()])?;
    lab.add_host(vec![a2.clone(), b2.clone()])?;
    lab.add_host(vec![c1.clone()])?;
    lab.start_agents(&[])?;
    for i in 0..3 {
        let mut gs = goal_state(&lab, i);
        for p in gs.port_states.iter_mut().filter_map(|p| p.configuration.as_mut()) {
            if p.id == c1.port_id {
                p.allow_address_pairs = vec![port_configuration::AllowAddressPair {
                    ip_address: BEHIND_C1.into(),
                    mac_address: c1.mac.clone(),
                }];
            }
        }
        lab.push(i, &gs)?;
    }
    lab.wait_resolved()?;
    let c1_ns = &lab.vm(&c1.port_id).ns;
    c1_ns.exec(&["ip", "addr", "add", &format!("{BEHIND_C1_HOST}/32"), "dev", "lo"])?;
    for spec in [&a1, &b1, &a2, &b2, &c1] {
        let gw = gateway_ip(if spec.subnet == a.subnet { 1 } else { 2 });
        lab.vm(&spec.port_id)
            .ns
            .exec(&["ip", "route", "add", "default", "via", &gw])?;
    }
    let ns = |spec: &alioth_tests::overlay::VmSpec| &lab.vm(&spec.port_id).ns;
    // No router: subnets of one VPC are not routed to each other (as with ACA and Neutron).
    let before = lab.counter(0, "drop_no_route")?;
    ensure!(ping(ns(&a1), &b1.ip)?.is_none(), "a1 -> b1 without a router");
    ensure!(lab.counter(0, "drop_no_route")? > before, "counted as drop_no_route");
    // The router, as DPM sends it: INFO, one message per subnet's table here, which add up (DPM
    // names the subnets of the host's ports and of its L3 neighbors: host 2 learns subnet-2 from
    // b1 and b2, and routes c1's answers to them).
    let to_c1 = || vec![rule("behind-c1", BEHIND_C1, &c1.ip, 0)];
    for subnet in [&a.subnet, &b.subnet] {
        for i in 0..3 {
            let r = router(OperationType::Info, vec![(subnet, to_c1())]);
            lab.push(i, &routing(vec![r], vec![]))?;
        }
    }
    for (from, to) in [(&a1, &b1), (&a1, &b2), (&b2, &a1), (&a2, &b1)] {
        let out = ping(ns(from), &to.ip)?.with_context(|| format!("{} -> {}", from.ip, to.ip))?;
        // Routed once each way: the reply's TTL is one less than the guest sent.
        ensure!(out.contains("ttl=63"), "{} -> {}: {out}", from.ip, to.ip);
    }
    // A rule whose next hop is a port on another host: delivered to that port by its MAC. c1
    // answers a1, in its own subnet, directly; b1 and b2 through the router.
    for (from, ttl) in [(&a1, "ttl=64"), (&b1, "ttl=63"), (&b2, "ttl=63")] {
        let out = ping(ns(from), BEHIND_C1_HOST)?.with_context(|| format!("{} -> c1's network", from.ip))?;
        ensure!(out.contains(ttl), "{} -> {BEHIND_C1_HOST}: {out}", from.ip);
    }
    // What the data plane decides, from which entries: the same in the kernel and on the host.
    let agent = lab.hosts[0].agent.as_ref().context("agent")?;
    let out = agent.cli(&["trace", "--port", &a1.port_id, "--dst", &b2.ip, "--json"])?;
    let traced: serde_json::Value = serde_json::from_slice(&out.stdout).context("trace --json")?;
    ensure!(traced["agree"] == true && traced["verdict"] == "Encap", "{traced}");
    ensure!(traced["chain"].to_string().contains("ROUTES[VNI 1001"), "{traced}");
    let metrics = alioth_tests::agent::metrics(&lab.hosts[0].ns)?;
    // Subnets 1 and 2 each route to both, and to c1's network.
    ensure!(
        alioth_tests::agent::metric(&metrics, "alioth_routes") == Some(6),
        "{metrics}"
    );
    let out = agent.cli(&["routes", "--json"])?;
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).context("routes --json")?;
    let rows = listed.as_array().context("a list")?;
    ensure!(rows.len() == 6, "{listed}");
    let via_c1 = |r: &&serde_json::Value| r["kind"] == "via" && r["next_hop"] == c1.ip.as_str();
    ensure!(rows.iter().filter(via_c1).count() == 2, "{listed}");
    ensure!(
        rows.iter().all(|r| r["router_mac"] == alioth_tests::routing::DVR_MAC),
        "{listed}"
    );
    let text = String::from_utf8(agent.cli(&["routes"])?.stdout)?;
    ensure!(text.contains("subnet-2") && text.contains("198.19.100.0/24"), "{text}");
    let _server = Peer::serve(ns(&b2), false, 8080, 30)?;
    ensure!(round_trip(ns(&a1), false, &b2.ip, 8080)?, "TCP a1 -> b2:8080");
    // A stream with the guests' default offloads, routed across hosts.
    let report = iperf3(ns(&b2), ns(&a1), &b2.ip, &["-t", "1"])?;
    let bps = received_bps(&report);
    ensure!(bps > 1e6, "iperf3 a1 -> b2 carried {bps} bit/s");
    // A restart loses no routed ping: the pinned ROUTES route while no agent runs, and the next
    // agent takes them over.
    let pings = lab.vm(&a1.port_id).ns.steady_pings(&b2.ip)?;
    let left = lab.hosts[0].agent.take().context("agent")?.kill()?;
    lab.hosts[0].agent = Some(Agent::start_with(&lab.hosts[0].ns, left, &["--uplink", UPLINK])?);
    pings.all_answered().context("routed pings across a restart")?;
    let ns = |spec: &alioth_tests::overlay::VmSpec| &lab.vm(&spec.port_id).ns;
    // The router's DELETE stops routing on the host it is sent to.
    let gone = router(OperationType::Delete, vec![]);
    lab.push(0, &routing(vec![gone], vec![]))?;
    ensure!(ping(ns(&a1), &b2.ip)?.is_none(), "a1 -> b2 after the router's DELETE");
    ensure!(ping(ns(&a1), &b1.ip)?.is_none(), "a1 -> b1 after the router's DELETE");
    ensure!(ping(ns(&a1), &a2.ip)?.is_some(), "a1 -> a2 is switched, router or not");
    Ok(())
}

/// The MAC of the gateway namespace's bridge: the inner destination of what is tunnelled to it.
const GW_MAC: &str = "02:00:ee:00:00:01";
const INTERNET_HOST: &str = "198.19.200.2";

#[test]
fn a_default_route_reaches_the_internet_through_a_gateway() -> Result<()> {
    let a = VpcSpec::new(1, 1001, 1);
    let mut lab = Lab::new(vec![a.clone()])?;
    let a1 = a.vm(1, 10);
    lab.add_host(vec![a1.clone()])?;
    // The gateway: Linux's vxlan (VNI 1001) in a bridge with an address in the VPC, routing and
    // masquerading to the "internet" behind it.
    let g = lab.add_kernel_host(vec![])?;
    let gw = &lab.kernel_hosts[g];
    let internet = Netns::new("alinet")?;
    gw.ns.exec(&["ip", "link", "set", "brk", "address", GW_MAC])?;
    gw.ns.exec(&["ip", "addr", "add", "198.18.1.254/24", "dev", "brk"])?;
    gw.ns.veth("inet0", &internet, "eth0")?;
    gw.ns.exec(&["ip", "addr", "add", "198.19.200.1/24", "dev", "inet0"])?;
    internet.exec(&["ip", "addr", "add", &format!("{INTERNET_HOST}/24"), "dev", "eth0"])?;
    gw.ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    gw.ns.exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        "inet0",
        "-j",
        "MASQUERADE",
    ])?;
    let host_ip = lab.hosts[0].ip.clone();
    gw.ns.exec(&[
        "ip",
        "neigh",
        "replace",
        &a1.ip,
        "lladdr",
        &a1.mac,
        "dev",
        "brk",
        "nud",
        "permanent",
    ])?;
    gw.ns.exec(&[
        "bridge",
        "fdb",
        "add",
        &a1.mac,
        "dev",
        "vx0",
        "dst",
        &host_ip,
        "self",
        "permanent",
    ])?;
    let gw_ip = gw.ip.clone();
    lab.start_agents(&[])?;
    lab.push(0, &goal_state(&lab, 0))?;
    let igw = GatewayState {
        operation_type: OperationType::Create as i32,
        configuration: Some(GatewayConfiguration {
            revision_number: 1,
            id: "igw-1".into(),
            gateway_type: GatewayType::Igw as i32,
            destinations: vec![gateway_configuration::Destination {
                ip_address: gw_ip.clone(),
                mac_address: GW_MAC.into(),
            }],
            ..Default::default()
        }),
    };
    let default = rule("default", "0.0.0.0/0", &gw_ip, 0);
    let r = router(OperationType::Create, vec![(&a.subnet, vec![default])]);
    lab.push(0, &routing(vec![r], vec![igw]))?;
    lab.wait_resolved()?;
    let vm = &lab.vm(&a1.port_id).ns;
    vm.exec(&["ip", "route", "add", "default", "via", &gateway_ip(1)])?;
    ensure!(ping(vm, INTERNET_HOST)?.is_some(), "a1 -> the internet host");
    let _server = Peer::serve(&internet, false, 8081, 30)?;
    ensure!(round_trip(vm, false, INTERNET_HOST, 8081)?, "TCP a1 -> internet:8081");
    // Longest prefix first: a /32 to a next hop nobody holds is a black hole.
    let push_rules = |rules: Vec<RoutingRule>| -> Result<()> {
        let r = router(OperationType::Update, vec![(&a.subnet, rules)]);
        lab.push(0, &routing(vec![r], vec![]))
    };
    push_rules(vec![rule("host", &format!("{INTERNET_HOST}/32"), "198.18.1.99", 0)])?;
    let before = lab.counter(0, "drop_no_route")?;
    ensure!(
        ping(vm, INTERNET_HOST)?.is_none(),
        "the /32 to an unknown next hop wins"
    );
    ensure!(lab.counter(0, "drop_no_route")? > before, "counted as drop_no_route");
    // A rule's DELETE removes it alone: the default route is back in charge.
    let mut delete = rule("host", &format!("{INTERNET_HOST}/32"), "", 0);
    delete.operation_type = OperationType::Delete as i32;
    push_rules(vec![delete])?;
    ensure!(ping(vm, INTERNET_HOST)?.is_some(), "the /32 deleted");
    // One destination, two rules: the higher priority wins.
    let to_gateway = |p| rule("via-gw", "198.19.200.0/24", &gw_ip, p);
    let nowhere = |p| rule("nowhere", "198.19.200.0/24", "198.18.1.99", p);
    push_rules(vec![to_gateway(20), nowhere(10)])?;
    ensure!(ping(vm, INTERNET_HOST)?.is_some(), "priority 20 to the gateway over 10");
    push_rules(vec![to_gateway(10), nowhere(20)])?;
    ensure!(ping(vm, INTERNET_HOST)?.is_none(), "priority 20 to nowhere over 10");
    Ok(())
}

/// A router joins subnets of two VPCs (as a Neutron router joins two networks): each VPC keeps its
/// VNI, routed frames cross into the other's; without the router, nothing crosses.
#[test]
fn a_router_joins_subnets_of_two_vpcs() -> Result<()> {
    let (a, b) = (VpcSpec::new(1, 1001, 1), VpcSpec::new(2, 1002, 2));
    let mut lab = Lab::new(vec![a.clone(), b.clone()])?;
    let (a1, b1, b2) = (a.vm(1, 10), b.vm(2, 10), b.vm(2, 11));
    lab.add_host(vec![a1.clone(), b1.clone()])?;
    lab.add_host(vec![b2.clone()])?;
    lab.start_agents(&[])?;
    for i in 0..2 {
        lab.push(i, &goal_state(&lab, i))?;
    }
    lab.wait_resolved()?;
    for (spec, third) in [(&a1, 1), (&b1, 2), (&b2, 2)] {
        lab.vm(&spec.port_id)
            .ns
            .exec(&["ip", "route", "add", "default", "via", &gateway_ip(third)])?;
    }
    let ns = |spec: &alioth_tests::overlay::VmSpec| &lab.vm(&spec.port_id).ns;
    ensure!(ping(ns(&a1), &b2.ip)?.is_none(), "VPC 1 -> VPC 2 without a router");
    for i in 0..2 {
        let r = router(OperationType::Create, vec![(&a.subnet, vec![]), (&b.subnet, vec![])]);
        lab.push(i, &routing(vec![r], vec![]))?;
    }
    for (from, to) in [(&a1, &b1), (&a1, &b2), (&b2, &a1)] {
        let out = ping(ns(from), &to.ip)?.with_context(|| format!("{} -> {}", from.ip, to.ip))?;
        ensure!(out.contains("ttl=63"), "{} -> {}: {out}", from.ip, to.ip);
    }
    // Across hosts the frame goes in the destination's VNI: host 1 takes it for b2.
    let decap = lab.counter(1, "decap")?;
    ensure!(ping(ns(&a1), &b2.ip)?.is_some(), "a1 -> b2 again");
    ensure!(lab.counter(1, "decap")? > decap, "decapsulated on host 1");
    Ok(())
}

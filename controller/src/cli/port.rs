//! `alioth port PORT_ID`: one port as the agent holds it, with its security groups' effective
//! rules (remote groups as the member addresses they stand for in the port's VPC) and, from the
//! pinned maps, its rule set, its zone and the flows the zone tracks.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;

use alioth_common::conntrack::FlowKey;
use alioth_common::firewall::{self, CtValue};
use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::inspect::{open_map, port_entry, InspectArgs};
use crate::goalstate::model::{format_mac, Port, Remote, SgRule, State};
use crate::goalstate::secgroup::{policy, Members};

#[derive(Clone, Debug, clap::Args)]
pub struct PortArgs {
    /// The port's id in goal state.
    pub id: String,
    #[command(flatten)]
    pub inspect: InspectArgs,
}

pub fn port(args: PortArgs) -> Result<()> {
    let state = crate::store::Store::read(&args.inspect.state_dir)
        .with_context(|| format!("read the record in {}", args.inspect.state_dir.display()))?;
    let port = state
        .ports()
        .get(args.id.as_str())
        .with_context(|| format!("the record has no port {}", args.id))?;
    let members = Members::of(&state);
    let filtered = policy(&state, &members, port, false).is_some();
    let rules = effective_rules(&state, &members, port);
    let kernel = kernel_side(&args.inspect, port).unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
    let out = json!({
        "port_id": &*port.id,
        "vpc_id": &*port.vpc_id,
        "iface": &*port.iface,
        "mac": format_mac(&port.mac),
        "ips": port.fixed_ips.iter().map(|f| f.ip.to_string()).collect::<Vec<_>>(),
        "security_groups": port.security_groups.iter().map(|g| json!({
            "id": &**g,
            "known": state.security_groups.contains_key(&**g),
        })).collect::<Vec<_>>(),
        "filtered": filtered,
        "rules": rules,
        "dataplane": kernel,
    });
    if args.inspect.json {
        println!("{out}");
        return Ok(());
    }
    print_text(&out);
    Ok(())
}

/// The rules of the port's groups, each with the addresses it allows.
fn effective_rules(state: &State, members: &Members, port: &Port) -> Vec<Value> {
    let mut out = Vec::new();
    for g in port.security_groups.iter() {
        let Some(group) = state.security_groups.get(&**g) else {
            continue;
        };
        for r in &group.rules {
            out.push(rule_json(&group.id, r, members, port));
        }
    }
    out
}

fn rule_json(group: &str, r: &SgRule, members: &Members, port: &Port) -> Value {
    let remote = match &r.remote {
        Remote::Prefix(p) => json!({"prefix": p.to_string()}),
        Remote::Group(g) => json!({
            "group": &**g,
            "addresses": members.of_group(g, &port.vpc_id).iter().map(|n| n.ip().to_string()).collect::<Vec<_>>(),
        }),
        Remote::Ipv6(p) => json!({"ipv6_prefix": p, "enforced": false}),
    };
    json!({
        "group": group,
        "id": r.id,
        "direction": if r.ingress { "ingress" } else { "egress" },
        "protocol": r.protocol.map_or("any".to_string(), |p| p.to_string()),
        "range": [r.ports.0, r.ports.1],
        "remote": remote,
    })
}

/// The port's policy number and tracked flows, from the pinned maps.
fn kernel_side(args: &InspectArgs, port: &Port) -> Result<Value> {
    let (index, entry) = port_entry(&args.pin_dir, &port.id, &port.iface)?;
    let flows = open_map(&args.pin_dir, firewall::SG_FLOWS)?;
    let flows: Vec<(FlowKey, CtValue)> = crate::dataplane::batch::read_all(flows.fd().as_fd())?;
    let mine: Vec<Value> = flows
        .into_iter()
        .filter(|(k, _)| entry.zone != 0 && k.zone == entry.zone)
        .map(|(k, v)| {
            json!({
                "proto": k.proto,
                "a": format!("{}:{}", Ipv4Addr::from(k.lo_ip), k.lo_port),
                "b": format!("{}:{}", Ipv4Addr::from(k.hi_ip), k.hi_port),
                "state": v.entry().map(|e| format!("{:?}", e.state)).unwrap_or_default(),
                "opened": if v.flags & firewall::OPENED_EGRESS != 0 { "egress" } else { "ingress" },
            })
        })
        .collect();
    Ok(json!({
        "ifindex": index,
        "programmed": entry.is_programmed(),
        "rule_set": entry.policy,
        "zone": entry.zone,
        "flows": mine,
    }))
}

fn print_text(out: &Value) {
    println!("port:      {}", out["port_id"].as_str().unwrap_or("-"));
    println!("vpc:       {}", out["vpc_id"].as_str().unwrap_or("-"));
    println!(
        "interface: {}  mac {}",
        out["iface"].as_str().unwrap_or("-"),
        out["mac"].as_str().unwrap_or("-")
    );
    let groups: Vec<String> = out["security_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| match g["known"].as_bool() {
            Some(true) => g["id"].as_str().unwrap_or("").to_string(),
            _ => format!("{} (never sent: filters nothing)", g["id"].as_str().unwrap_or("")),
        })
        .collect();
    println!(
        "groups:    {}",
        if groups.is_empty() {
            "-".to_string()
        } else {
            groups.join(", ")
        }
    );
    println!(
        "filtered:  {}",
        if out["filtered"] == true {
            "yes (default deny, stateful)"
        } else {
            "no"
        }
    );
    println!(
        "{:<8} {:<10} {:<12} {:<8} {:<13} REMOTE",
        "DIR", "GROUP", "RULE", "PROTO", "RANGE"
    );
    for r in out["rules"].as_array().into_iter().flatten() {
        let remote = &r["remote"];
        let remote = if let Some(p) = remote["prefix"].as_str() {
            p.to_string()
        } else if let Some(g) = remote["group"].as_str() {
            format!("group {g}: {}", remote["addresses"])
        } else {
            format!("{} (IPv6, not enforced)", remote["ipv6_prefix"].as_str().unwrap_or(""))
        };
        println!(
            "{:<8} {:<10} {:<12} {:<8} {:<13} {remote}",
            r["direction"].as_str().unwrap_or(""),
            r["group"].as_str().unwrap_or(""),
            r["id"].as_str().unwrap_or(""),
            r["protocol"].as_str().unwrap_or(""),
            format!("{}-{}", r["range"][0], r["range"][1]),
        );
    }
    let dp = &out["dataplane"];
    match dp["error"].as_str() {
        Some(e) => println!("data plane: {e}"),
        None => println!(
            "data plane: ifindex {}, rule set {}, zone {}, {} tracked flows",
            dp["ifindex"],
            dp["rule_set"],
            dp["zone"],
            dp["flows"].as_array().map_or(0, Vec::len)
        ),
    }
}

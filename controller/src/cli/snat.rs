//! `alioth snat`: the distributed SNAT's flows (`SNAT_FLOWS`), by the host's port each leaves
//! from: which port's address and port it carries, to where. What an operator asks when a remote
//! reports traffic from the host's address and a port.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use alioth_common::snat::{SnatKey, SNAT_FLOWS};
use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use serde_json::json;

use super::inspect::{cell, open_map, readable_record, InspectArgs};

pub fn snat(args: InspectArgs) -> Result<()> {
    let map: BpfHashMap<MapData, SnatKey, u16> =
        BpfHashMap::try_from(Map::LruHashMap(open_map(&args.pin_dir, SNAT_FLOWS)?))
            .context("SNAT_FLOWS is not the map this agent pins")?;
    let mut flows: Vec<(SnatKey, u16)> = Vec::new();
    for entry in map.iter() {
        flows.push(entry?);
    }
    flows.sort_by_key(|(k, port)| (*port, k.proto, k.remote));
    let owners = owners(&args);
    let rows: Vec<serde_json::Value> = flows
        .iter()
        .map(|(k, host_port)| {
            json!({
                "host_port": host_port,
                "proto": proto(k.proto),
                "vni": k.vni,
                "private": format!("{}:{}", Ipv4Addr::from(k.private), k.private_port),
                "remote": format!("{}:{}", Ipv4Addr::from(k.remote), k.remote_port),
                "port": owners.get(&(k.vni, Ipv4Addr::from(k.private))).cloned().unwrap_or_default(),
            })
        })
        .collect();
    if args.json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:>9} {:<5} {:>8} {:<21} {:<21} PORT",
        "HOST PORT", "PROTO", "VNI", "PRIVATE", "REMOTE"
    );
    for r in rows {
        println!(
            "{:>9} {:<5} {:>8} {:<21} {:<21} {}",
            r["host_port"],
            cell(&r, "proto"),
            r["vni"],
            cell(&r, "private"),
            cell(&r, "remote"),
            cell(&r, "port")
        );
    }
    Ok(())
}

/// (VNI, address) -> port id, from the agent's record when it can be read here.
fn owners(args: &InspectArgs) -> HashMap<(u32, Ipv4Addr), String> {
    let Some(state) = readable_record(&args.state_dir) else {
        return HashMap::new();
    };
    let mut out = HashMap::new();
    for port in state.ports().values() {
        let Some(vpc) = state.vpcs.get(&*port.vpc_id) else {
            continue;
        };
        for ip in port.fixed_ips.iter() {
            out.insert((vpc.vni, ip.ip), port.id.to_string());
        }
    }
    out
}

/// The protocol's name (for ICMP echo the ports are the identifier and 0).
fn proto(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        other => other.to_string(),
    }
}

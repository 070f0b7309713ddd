//! `alioth routes`: what `ROUTES` holds, by subnet (named from the agent's record when it can be
//! read), as the programs look it up.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use alioth_common::maps::{self, Route};
use anyhow::{Context, Result};
use aya::maps::lpm_trie::LpmTrie;
use aya::maps::{Map, MapData};
use serde_json::json;

use super::inspect::{cell, open_map, readable_record, InspectArgs};
use crate::goalstate::model::format_mac;

pub fn routes(args: InspectArgs) -> Result<()> {
    let trie: LpmTrie<MapData, [u8; 12], Route> =
        LpmTrie::try_from(Map::LpmTrie(open_map(&args.pin_dir, maps::ROUTES)?))
            .context("ROUTES is not the trie this agent pins")?;
    let subnets = subnet_names(&args.state_dir);
    let mut rows = Vec::new();
    for entry in trie.iter() {
        let (key, r) = entry?;
        let (len, data) = (key.prefix_len(), key.data());
        let vni = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        let gateway = Ipv4Addr::new(data[4], data[5], data[6], data[7]);
        let dst = Ipv4Addr::new(data[8], data[9], data[10], data[11]);
        let prefix = len.saturating_sub(maps::ROUTE_FIXED_BITS);
        let next_hop = match r.kind {
            maps::route_kind::VIA | maps::route_kind::TUNNEL => Ipv4Addr::from(r.ip).to_string(),
            _ => String::new(),
        };
        rows.push(json!({
            "subnet": subnets.get(&(vni, gateway)).cloned().unwrap_or_default(),
            "vni": vni,
            "gateway": gateway.to_string(),
            "destination": format!("{dst}/{prefix}"),
            "kind": maps::route_kind::name(r.kind),
            "to_vni": r.vni,
            "next_hop": next_hop,
            "mac": if r.kind == maps::route_kind::TUNNEL { format_mac(&r.mac) } else { String::new() },
            "router_mac": format_mac(&r.router_mac),
        }));
    }
    if args.json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:<38} {:<20} {:<10} {:>8} {:<16} {:<18} {:<18}",
        "SUBNET", "DESTINATION", "KIND", "TO VNI", "NEXT HOP", "NEXT HOP MAC", "ROUTER MAC"
    );
    for r in rows {
        let subnet = match cell(&r, "subnet").as_str() {
            "-" => format!("VNI {} gw {}", r["vni"], cell(&r, "gateway")),
            name => name.to_string(),
        };
        println!(
            "{subnet:<38} {:<20} {:<10} {:>8} {:<16} {:<18} {:<18}",
            cell(&r, "destination"),
            cell(&r, "kind"),
            r["to_vni"],
            cell(&r, "next_hop"),
            cell(&r, "mac"),
            cell(&r, "router_mac")
        );
    }
    Ok(())
}

/// (VNI, gateway address) -> subnet id, from the record (empty when it cannot be read).
fn subnet_names(state_dir: &std::path::Path) -> HashMap<(u32, Ipv4Addr), String> {
    let Some(state) = readable_record(state_dir) else {
        return HashMap::new();
    };
    state
        .subnets
        .values()
        .filter_map(|s| Some(((state.vpcs.get(&s.vpc_id)?.vni, s.gateway_ip), s.id.to_string())))
        .collect()
}

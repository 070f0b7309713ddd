//! `alioth elastic-ips`: each elastic IP the record holds, its port and private address, and
//! whether the data plane translates it (`ELASTIC_IPS`); and what the map holds that the record
//! does not name.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use alioth_common::maps::EndpointKey;
use alioth_common::nat::ELASTIC_IPS;
use anyhow::{Context, Result};
use aya::maps::{HashMap, Map, MapData};
use serde_json::json;

use super::inspect::{cell, open_map, readable_record, InspectArgs};

pub fn elastic_ips(args: InspectArgs) -> Result<()> {
    let map: HashMap<MapData, [u8; 4], EndpointKey> =
        HashMap::try_from(Map::HashMap(open_map(&args.pin_dir, ELASTIC_IPS)?))
            .context("ELASTIC_IPS is not the map this agent pins")?;
    let mut held: BTreeMap<Ipv4Addr, EndpointKey> = BTreeMap::new();
    for entry in map.iter() {
        let (ip, key) = entry?;
        held.insert(Ipv4Addr::from(ip), key);
    }
    let mut rows = Vec::new();
    if let Some(state) = readable_record(&args.state_dir) {
        for e in state.elastic_ips.values() {
            let translated = held.remove(&e.ip);
            rows.push(json!({
                "id": &*e.id,
                "ip": e.ip.to_string(),
                "port": &*e.port_id,
                "private_ip": e.private_ip.to_string(),
                "vni": translated.map(|k| k.vni),
                // False while the port is not on this host.
                "translated": translated.is_some_and(|k| Ipv4Addr::from(k.ip) == e.private_ip),
            }));
        }
    }
    for (ip, key) in held {
        rows.push(json!({
            "id": "", "ip": ip.to_string(), "port": "", "private_ip": Ipv4Addr::from(key.ip).to_string(),
            "vni": key.vni, "translated": true,
        }));
    }
    if args.json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:<16} {:<38} {:<38} {:<16} {:>8} {:<10}",
        "ELASTIC IP", "ID", "PORT", "PRIVATE IP", "VNI", "TRANSLATED"
    );
    for r in rows {
        println!(
            "{:<16} {:<38} {:<38} {:<16} {:>8} {:<10}",
            cell(&r, "ip"),
            cell(&r, "id"),
            cell(&r, "port"),
            cell(&r, "private_ip"),
            r["vni"].as_u64().map_or("-".to_string(), |v| v.to_string()),
            if r["translated"] == true { "yes" } else { "no" }
        );
    }
    Ok(())
}

//! `ROUTES`: written from what the routers render (`goalstate::routes`), by difference with what
//! it holds.

use alioth_common::maps::Route;
use anyhow::{Context, Result};
use aya::maps::lpm_trie::LpmTrie;
use aya::maps::MapData;

use crate::goalstate::routes::{RouteKey, Routes as Wanted};

pub struct Routes {
    map: LpmTrie<MapData, [u8; 12], Route>,
    /// What the map holds.
    held: Wanted,
}

impl Routes {
    /// Over `map` as it is: maps taken over from a previous agent hold its routes.
    pub fn new(map: LpmTrie<MapData, [u8; 12], Route>) -> Self {
        let held = read(&map);
        Routes { map, held }
    }

    /// Makes the map hold `wanted`, as `policies::write` does a rule set's entries: new and changed
    /// routes first, then the ones gone (a route replaced by a shorter one never leaves a gap).
    pub fn write(&mut self, wanted: Wanted) -> Result<()> {
        let written = super::policies::write(&mut self.map, &wanted, &self.held).context("write ROUTES");
        // Part of it written: what the map holds is read back, so the next write knows it.
        self.held = match written {
            Ok(()) => wanted,
            Err(_) => read(&self.map),
        };
        written
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// The route the programs find for `dst` in the subnet of `vni` with gateway `gateway`.
    pub fn lookup(&self, vni: u32, gateway: [u8; 4], dst: [u8; 4]) -> Option<Route> {
        super::route(&self.map, vni, gateway, dst)
    }
}

/// Every entry of `map`.
fn read(map: &LpmTrie<MapData, [u8; 12], Route>) -> Wanted {
    map.iter()
        .filter_map(Result::ok)
        .map(|(k, v)| -> (RouteKey, Route) { ((k.prefix_len(), k.data()), v) })
        .collect()
}

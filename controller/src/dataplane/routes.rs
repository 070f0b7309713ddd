//! `ROUTES`: written from what the routers render (`goalstate::routes`), by difference with what
//! it holds.

use std::collections::BTreeMap;

use alioth_common::maps::Route;
use anyhow::{Context, Result};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::MapData;

use crate::goalstate::routes::RouteKey;

pub struct Routes {
    map: LpmTrie<MapData, [u8; 12], Route>,
    /// What the map holds.
    held: BTreeMap<RouteKey, Route>,
}

impl Routes {
    /// Over `map` as it is: maps taken over from a previous agent hold its routes.
    pub fn new(map: LpmTrie<MapData, [u8; 12], Route>) -> Self {
        let held = map
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| ((k.prefix_len(), k.data()), v))
            .collect();
        Routes { map, held }
    }

    /// Makes the map hold `wanted`: new and changed routes first, then the ones gone (a route
    /// replaced by a shorter one never leaves a gap). Returns how many entries were written.
    pub fn write(&mut self, wanted: BTreeMap<RouteKey, Route>) -> Result<usize> {
        let mut written = 0;
        for (k, v) in &wanted {
            if self.held.get(k) == Some(v) {
                continue;
            }
            self.map
                .insert(&Key::new(k.0, k.1), v, 0)
                .with_context(|| format!("write route {k:?}"))?;
            self.held.insert(*k, *v);
            written += 1;
        }
        let gone: Vec<RouteKey> = self.held.keys().filter(|k| !wanted.contains_key(*k)).copied().collect();
        for k in gone {
            self.map
                .remove(&Key::new(k.0, k.1))
                .with_context(|| format!("remove route {k:?}"))?;
            self.held.remove(&k);
            written += 1;
        }
        Ok(written)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// The route the programs find for `dst` in the subnet of `vni` with gateway `gateway`.
    pub fn lookup(&self, vni: u32, gateway: [u8; 4], dst: [u8; 4]) -> Option<Route> {
        super::route(&self.map, vni, gateway, dst)
    }
}

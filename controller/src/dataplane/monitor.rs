//! The monitor's switch (`alioth_common::monitor::MONITOR`): the same `Config` on every CPU.

use std::borrow::{Borrow, BorrowMut};

use alioth_common::monitor::{Config, Watch};
use anyhow::Result;
use aya::maps::{MapData, PerCpuArray, PerCpuValues};

/// What the programs report now (as CPU 0 has it).
pub fn config<T: Borrow<MapData>>(map: &PerCpuArray<T, Watch>) -> Result<Config> {
    Ok(map.get(&0, 0)?.first().map(|w| w.config).unwrap_or_default())
}

/// Sets `config` on every CPU (and starts each CPU's rate gate anew).
pub fn set_config<T: BorrowMut<MapData>>(map: &mut PerCpuArray<T, Watch>, config: Config) -> Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let watch = Watch {
        config,
        gate: Default::default(),
    };
    map.set(0, PerCpuValues::try_from(vec![watch; cpus])?, 0)?;
    Ok(())
}

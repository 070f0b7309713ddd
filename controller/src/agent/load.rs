//! What a starting agent loads: its record, and the data plane to fill from it (or, for a damaged
//! record, the pinned one to adopt).

use std::path::Path;

use anyhow::Result;

use crate::dataplane::{AttachMode, BpfLogLevel, Dataplane};
use crate::goalstate::model::State;
use crate::store::Store;

type Loaded = (Dataplane, Option<crate::dataplane::Logger>);

/// Where and how: the agent's settings for its record and data plane.
pub struct Places<'a> {
    pub state_dir: &'a Path,
    pub pin_dir: &'a Path,
    pub mode: AttachMode,
    pub log: BpfLogLevel,
}

/// Reads the record while the programs go through the verifier (each about a second at a million
/// resources, on different CPUs). The programs go onto the pinned maps when those hold what the
/// record does (`maps_hold_the_record`), else onto fresh maps, to fill. A damaged record discards
/// those and adopts the pinned data plane as it is instead (`adopt_dataplane`).
pub fn record_and_dataplane(args: &Places<'_>) -> Result<((Store, State), Loaded)> {
    let taken_over = maps_hold_the_record(args);
    let (opened, fresh) = std::thread::scope(|s| {
        let opened = std::thread::Builder::new()
            .name("alioth-record".into())
            .spawn_scoped(s, || Store::open(args.state_dir));
        let fresh = match taken_over {
            true => Dataplane::adopt_recorded(args.pin_dir, args.mode, args.log).or_else(|e| {
                tracing::warn!("the pinned maps cannot be taken over ({e:#}); filling new ones");
                Dataplane::load_with_log(Some(args.pin_dir), args.mode, args.log)
            }),
            false => Dataplane::load_with_log(Some(args.pin_dir), args.mode, args.log),
        };
        let opened = match opened {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("reading the record panicked"))),
            // No thread to be had: read it here.
            Err(_) => Store::open(args.state_dir),
        };
        (opened, fresh)
    });
    let (store, state) = opened?;
    if !store.damage().any() {
        return Ok(((store, state), fresh?));
    }
    drop(fresh);
    crate::dataplane::remove_staging(args.pin_dir)?;
    let loaded = adopt_dataplane(args, &store)?;
    Ok(((store, state), loaded))
}

/// Whether the pinned maps hold what the record does: their `RECORD` mark has the record's
/// sequence, for this object. The mark is cleared before the maps change and set again once the
/// change is committed, so a previous agent killed in between leaves maps that are filled anew.
fn maps_hold_the_record(args: &Places<'_>) -> bool {
    let pinned = crate::dataplane::recorded_sequence(args.pin_dir);
    let recorded = crate::store::peek_sequence(args.state_dir);
    let matches = pinned.is_some() && pinned == recorded;
    tracing::info!(
        ?pinned,
        ?recorded,
        "{}",
        if matches {
            "the pinned maps hold the record: taking them over"
        } else {
            "the pinned maps are filled anew from the record"
        }
    );
    matches
}

/// For a damaged record, which may lack what the data plane has: adopts the pinned data plane as
/// it is, to write goal state over.
fn adopt_dataplane(args: &Places<'_>, store: &Store) -> Result<Loaded> {
    let damage = store.damage();
    tracing::error!(
        state_dir = %args.state_dir.display(),
        damaged_rows = damage.rows,
        unreadable = ?damage.unreadable,
        orphans = damage.orphans,
        kept = ?damage.kept,
        "the record is damaged: starting from what could be read, on the pinned data plane as it is \
         (entries the record lacks stay until goal state replaces them or `alioth agent --reset`)"
    );
    Dataplane::adopt_with_log(args.pin_dir, args.mode, args.log)
}

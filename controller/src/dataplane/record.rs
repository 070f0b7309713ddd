//! Whether the pinned maps hold what the record does (`maps::RECORD`): the record's sequence
//! number goes in once a change is both in the maps and committed, and 0 before the maps change
//! again. A restarted agent whose record has that sequence, with the same object, takes the maps
//! over as they are (`Dataplane::adopt_recorded`) instead of filling new ones from the record.

use std::path::Path;

use alioth_common::maps::{self, RECORD_OBJECT, RECORD_SEQUENCE};
use anyhow::{Context, Result};
use aya::maps::{Array, Map, MapData};

use super::Dataplane;

/// The object the maps were laid out by: another build may lay them out otherwise. Summed once.
fn fingerprint() -> u64 {
    static FINGERPRINT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *FINGERPRINT.get_or_init(|| {
        let object = super::object::xdp_object().unwrap_or_default();
        (object.len() as u64) << 32 | crc32fast::hash(object) as u64
    })
}

/// The record sequence the maps pinned in `pin_dir` hold, if they hold one whole and were written
/// for this object.
pub fn recorded_sequence(pin_dir: &Path) -> Option<u64> {
    let pin = pin_dir.join(maps::RECORD);
    let map: Array<MapData, u64> = Array::try_from(Map::Array(MapData::from_pin(&pin).ok()?)).ok()?;
    let sequence = map.get(&RECORD_SEQUENCE, 0).ok()?;
    (sequence != 0 && map.get(&RECORD_OBJECT, 0).ok()? == fingerprint()).then_some(sequence)
}

impl Dataplane {
    /// The maps are about to change: until `mark_recorded`, they hold no record.
    pub fn mark_changing(&mut self) -> Result<()> {
        if self.recorded.take().is_some() {
            self.record.set(RECORD_SEQUENCE, 0, 0).context("write RECORD")?;
        }
        Ok(())
    }

    /// The maps hold what the record at `sequence` does (its last transaction committed).
    pub fn mark_recorded(&mut self, sequence: u64) -> Result<()> {
        if self.recorded == Some(sequence) {
            return Ok(());
        }
        // The object once per object loaded; always before the sequence that vouches for it.
        if !self.object_marked {
            self.record
                .set(RECORD_OBJECT, fingerprint(), 0)
                .context("write RECORD")?;
            self.object_marked = true;
        }
        self.record.set(RECORD_SEQUENCE, sequence, 0).context("write RECORD")?;
        self.recorded = Some(sequence);
        Ok(())
    }

    /// Whether this object took over maps that hold the record at `sequence` (see
    /// `adopt_recorded`): a restore then only reattaches ports.
    pub fn holds_record(&self, sequence: u64) -> bool {
        self.matches_record && self.recorded == Some(sequence)
    }
}

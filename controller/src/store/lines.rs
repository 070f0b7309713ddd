//! The record's lines, in the snapshot and the journals alike: one entry as JSON, a tab, and the
//! CRC-32 of the JSON in 8 hex digits. A line whose checksum does not match is damaged and costs
//! that entry only; a line without a checksum is one an earlier agent wrote, read as it is.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use alioth_proto::schema::ResourceType;

use super::shared_ids;
use crate::goalstate::model::Resource;
use crate::goalstate::model::State;
use crate::store::jsonl;

/// One line: a resource's new version (which forgets its tombstone), or its deletion and the
/// tombstone that leaves.
#[derive(Deserialize)]
pub(super) enum Entry {
    Put(Resource),
    Delete {
        kind: i32,
        id: String,
    },
    Tombstone {
        kind: i32,
        id: String,
        revision: Option<u32>,
    },
}

/// `Entry` as it is written: borrowed, so no resource is copied to be written. Same variant and
/// field names, hence the same JSON, as the `Entry` that reads it back.
#[derive(Serialize)]
pub(super) enum EntryRef<'a> {
    Put(&'a Resource),
    Delete {
        kind: i32,
        id: &'a str,
    },
    Tombstone {
        kind: i32,
        id: &'a str,
        revision: Option<u32>,
    },
}

/// Appends `entry` as a sealed line.
pub(super) fn write(out: &mut Vec<u8>, entry: &EntryRef<'_>) -> Result<()> {
    let start = out.len();
    match entry {
        // Ports and neighbors, most of a large state, are written by hand (`jsonl`).
        EntryRef::Put(r) if jsonl::put(out, r) => {}
        _ => serde_json::to_writer(&mut *out, entry)?,
    }
    seal(out, start);
    Ok(())
}

/// Ends the line that starts at `start` with its checksum.
fn seal(out: &mut Vec<u8>, start: usize) {
    let sum = checksum(&out[start..]);
    out.push(b'\t');
    out.extend_from_slice(&sum);
    out.push(b'\n');
}

/// The CRC-32 of `json` in lowercase hex.
fn checksum(json: &[u8]) -> [u8; 8] {
    let crc = crc32fast::hash(json);
    std::array::from_fn(|i| b"0123456789abcdef"[((crc >> ((7 - i) * 4)) & 0xf) as usize])
}

/// The entry of one line (without its newline); `None`: damaged.
fn open(line: &[u8]) -> Option<Entry> {
    let json = match line.len().checked_sub(9).map(|at| line.split_at(at)) {
        Some((json, sum)) if sum[0] == b'\t' => {
            if sum[1..] != checksum(json) {
                return None;
            }
            json
        }
        _ => line,
    };
    serde_json::from_slice(json).ok()
}

/// What reading one file of the record found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub entries: usize,
    /// Lines skipped: their checksum or their JSON is wrong.
    pub damaged: usize,
}

/// Replays the lines of `path` onto `state`. A damaged line is skipped: the ones after it are
/// whole records of their own. A torn last line (killed mid-write) was never acknowledged, so it
/// costs nothing and is not counted as damage.
pub(super) fn replay(state: &mut State, path: &Path) -> Result<Replayed> {
    let mut reader = BufReader::with_capacity(
        1 << 20,
        File::open(path).with_context(|| format!("open {}", path.display()))?,
    );
    let (mut line, mut n, mut replayed) = (Vec::new(), 0usize, Replayed::default());
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("read {} after line {n}", path.display()))?;
        if read == 0 {
            return Ok(replayed);
        }
        n += 1;
        let whole = line.last() == Some(&b'\n');
        if whole {
            line.pop();
        }
        if line.is_empty() {
            continue;
        }
        let Some(entry) = open(&line) else {
            match whole {
                false => tracing::warn!(record = %path.display(), "line {n} is torn; ignoring it"),
                true => {
                    tracing::error!(record = %path.display(), "line {n} is damaged; skipping it");
                    replayed.damaged += 1;
                }
            }
            continue;
        };
        replayed.entries += 1;
        apply(state, entry);
    }
}

fn apply(state: &mut State, entry: Entry) {
    match entry {
        Entry::Put(r) => {
            // A resource put again is no longer deleted (as the validator does).
            let (kind, id) = r.kind_id();
            state.forget_tombstone(kind, id);
            let r = shared_ids(state, r);
            state.put(r)
        }
        Entry::Delete { kind, id } => state.delete(ResourceType::try_from(kind).unwrap_or(ResourceType::Gateway), &id),
        Entry::Tombstone {
            kind,
            id,
            revision: Some(r),
        } => drop(state.tombstones.insert((kind, id), r)),
        Entry::Tombstone {
            kind,
            id,
            revision: None,
        } => drop(state.tombstones.remove(&(kind, id))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(kind: i32, id: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, &EntryRef::Delete { kind, id }).unwrap();
        out
    }

    #[test]
    fn a_sealed_line_opens_and_any_flipped_bit_is_caught() {
        let sealed = line(3, "198.18.0.5");
        let body = &sealed[..sealed.len() - 1];
        assert!(matches!(open(body), Some(Entry::Delete { kind: 3, .. })));
        for i in 0..body.len() {
            for bit in 0..8 {
                let mut damaged = body.to_vec();
                damaged[i] ^= 1 << bit;
                assert!(open(&damaged).is_none(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn a_line_of_an_earlier_agent_without_a_checksum_is_read() {
        let plain = serde_json::to_vec(&EntryRef::Delete { kind: 3, id: "x" }).unwrap();
        assert!(matches!(open(&plain), Some(Entry::Delete { kind: 3, .. })));
    }
}

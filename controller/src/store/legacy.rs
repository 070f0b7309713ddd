//! The record as agents before the database kept it, read once to carry it over: a snapshot
//! (`state.jsonl`, or `state.json` before that) and journals of changes, all made of lines of one
//! entry as JSON, a tab, and the CRC-32 of the JSON in 8 hex digits. A line whose checksum does not
//! match is damaged and costs that entry only; a line without a checksum is read as it is.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use alioth_proto::schema::ResourceType;

use super::damage::Damage;
use super::read::shared_ids;
use crate::goalstate::model::Resource;
use crate::goalstate::model::State;

pub(super) const SNAPSHOT: &str = "state.jsonl";
/// The snapshot before checksummed lines (one JSON document).
pub(super) const OLD_SNAPSHOT: &str = "state.json";
pub(super) const JOURNAL: &str = "journal.jsonl";
/// Journals retired by a compaction: `journal-<n>.jsonl`, read in the order of n.
const RETIRED: (&str, &str) = ("journal-", ".jsonl");

#[derive(Deserialize)]
struct OldSnapshot {
    resources: Vec<Resource>,
    tombstones: Vec<(i32, String, u32)>,
}

/// The files of a record an earlier agent left in `dir`, in the order they are read.
pub(super) fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = [SNAPSHOT, OLD_SNAPSHOT].iter().map(|f| dir.join(f)).collect();
    let mut retired: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name();
            let n = name
                .to_str()?
                .strip_prefix(RETIRED.0)?
                .strip_suffix(RETIRED.1)?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    retired.sort_unstable();
    out.extend(retired.into_iter().map(|(_, p)| p));
    out.push(dir.join(JOURNAL));
    out.retain(|p| p.exists());
    out
}

/// Reads an earlier agent's record in `dir` onto `state`, noting damage; false if there is none.
pub(super) fn read(dir: &Path, state: &mut State, damage: &mut Damage) -> bool {
    let files = files(dir);
    let snapshot_lines = files.iter().any(|p| p.ends_with(SNAPSHOT));
    for path in &files {
        if path.ends_with(OLD_SNAPSHOT) {
            // Superseded by a snapshot of lines, when one is there.
            if !snapshot_lines {
                read_old_snapshot(path, state, damage);
            }
            continue;
        }
        match replay(state, path) {
            Ok(r) if r.damaged > 0 => damage.damaged_rows(path, r.damaged),
            Ok(_) => {}
            Err(e) => damage.unreadable_file(path, e),
        }
    }
    !files.is_empty()
}

fn read_old_snapshot(path: &Path, state: &mut State, damage: &mut Damage) {
    let read = File::open(path)
        .map_err(anyhow::Error::from)
        .and_then(|f| Ok(serde_json::from_reader::<_, OldSnapshot>(BufReader::new(f))?));
    match read {
        Ok(s) => {
            for r in s.resources {
                state.put(shared_ids(&state.vpcs, &state.subnets, r));
            }
            state.tombstones = s.tombstones.into_iter().map(|(k, id, r)| ((k, id), r)).collect();
        }
        Err(e) => damage.unreadable_file(path, e),
    }
}

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

/// Ends the line that starts at `start` with its checksum.
#[cfg(test)]
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
struct Replayed {
    pub entries: usize,
    /// Lines skipped: their checksum or their JSON is wrong.
    pub damaged: usize,
}

/// Replays the lines of `path` onto `state`. A damaged line is skipped: the ones after it are
/// whole records of their own. A torn last line (killed mid-write) was never acknowledged, so it
/// costs nothing and is not counted as damage.
fn replay(state: &mut State, path: &Path) -> Result<Replayed> {
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
            let r = shared_ids(&state.vpcs, &state.subnets, r);
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
        let mut out = format!(r#"{{"Delete":{{"kind":{kind},"id":"{id}"}}}}"#).into_bytes();
        seal(&mut out, 0);
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
        let plain = br#"{"Delete":{"kind":3,"id":"x"}}"#;
        assert!(matches!(open(plain), Some(Entry::Delete { kind: 3, .. })));
    }
}

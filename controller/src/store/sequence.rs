//! The record's sequence number: one more with every committed transaction, from a random start
//! when the database is made. The data plane's pinned `RECORD` map holds the number of the record
//! its maps were written from, so that a restarted agent can tell whether they still match
//! (`Dataplane::recorded_sequence`), whichever record this is.

use std::path::Path;

use anyhow::Result;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

/// The sequence `db` is at; a database without one (new, or from an earlier agent) gets one.
pub(super) fn read_or_start(db: &Connection) -> Result<u64> {
    if let Some(n) = read(db)? {
        return Ok(n);
    }
    let start = random_start();
    write(db, start)?;
    Ok(start)
}

/// The sequence of the record in `dir`, read without writing anything; `None` when it has none or
/// cannot be read (the agent then reads it in full, and finds out why).
pub fn peek(dir: &Path) -> Option<u64> {
    let path = dir.join(super::DB);
    if !path.exists() {
        return None;
    }
    let db = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    db.busy_timeout(std::time::Duration::from_secs(5)).ok()?;
    read(&db).ok().flatten()
}

fn read(db: &Connection) -> Result<Option<u64>> {
    let n: Option<i64> = db
        .query_row("SELECT value FROM meta WHERE key = 'sequence'", [], |r| r.get(0))
        .optional()?;
    Ok(n.map(|n| n as u64))
}

/// Writes `n` (in the open transaction, if there is one).
pub(super) fn write(db: &Connection, n: u64) -> Result<()> {
    db.prepare_cached("INSERT OR REPLACE INTO meta VALUES ('sequence', ?1)")?
        .execute([n as i64])?;
    Ok(())
}

/// The number after `n`: never 0, which the data plane's map reads as "being changed".
pub(super) fn next(n: u64) -> u64 {
    match (n + 1) & START_MASK {
        0 => 1,
        n => n,
    }
}

/// Sequences stay below 2^62: stored as SQLite integers, never near their sign.
const START_MASK: u64 = (1 << 62) - 1;

/// A start no other record is likely to share: a state directory swapped for another never looks
/// like the one the maps were written from.
fn random_start() -> u64 {
    use std::hash::BuildHasher;
    let now = std::time::SystemTime::now();
    next(std::collections::hash_map::RandomState::new().hash_one((now, std::process::id())) & START_MASK)
}

//! The agent's record of applied goal state: an SQLite database, `record.sqlite` in the state
//! directory (rusqlite, with SQLite compiled in).
//!
//! Why SQLite: in WAL mode with `synchronous=FULL` a commit is durable once one fsync of the log
//! returns; its behaviour under power loss is tested like no other embedded store's; recovery after
//! a crash replays the log, with no rebuild that grows with the database; and an operator can query
//! the record with the `sqlite3` shell as well as list it with `alioth state`.
//!
//! Two tables: resources (kind, id -> the resource in postcard, serde's compact binary format, and
//! the CRC-32 of those bytes) and tombstones (kind, id -> the revision of a deleted resource).
//! Postcard rather than JSON: a row is encoded and decoded about four times faster, which is most
//! of the record's share of a 10,000-neighbor message and of a restart. Its encoding follows the
//! model's field order, so a change to the model's fields bumps `FORMAT`. Every accepted message is one
//! transaction, committed before the reply goes out: an agent killed at any point, or a machine
//! that loses power, restarts with exactly the messages it acknowledged (and possibly the one it
//! was committing). A change that leaves its resource as it was (a replayed message) writes
//! nothing.
//!
//! SQLite checks its own structure, not the bytes of a value: the CRC catches a value a bad disk
//! changed, and such a row costs that row only. A database that cannot be read at all costs the
//! database. Either way the damage is reported (`Damage`), a copy of each damaged file is kept
//! beside the record (`<name>.damaged-<unix time>`), and the agent keeps what is pinned rather than
//! trust what it read (see `Dataplane::adopt_with_log`).
//!
//! An earlier agent's record (snapshot and journals of checksummed lines, `legacy`) is read once
//! and carried over into the database, in the same transaction that marks it carried over.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

mod damage;
mod format1;
mod legacy;
mod read;
mod sequence;

pub use damage::{damaged_copies, Damage};

use read::{drop_orphans, read_db};
pub use sequence::peek as peek_sequence;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::goalstate::model::State;
use crate::goalstate::model::{Change, Resource};

/// The database, and the files SQLite keeps beside it in WAL mode.
const DB: &str = "record.sqlite";
const DB_FILES: [&str; 3] = [DB, "record.sqlite-wal", "record.sqlite-shm"];
/// The layout of the tables and of the bodies (SQLite's `user_version`): a database of a later
/// format is refused rather than misread. Format 1 had no security groups: its bodies are read
/// as well (`format1`), and rewritten as they change. Format 2 had no routers and gateways: its
/// bodies are format 3's.
const FORMAT: i64 = 3;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS resources (
        kind INTEGER NOT NULL, id TEXT NOT NULL, body BLOB NOT NULL, crc INTEGER NOT NULL,
        PRIMARY KEY (kind, id)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS tombstones (
        kind INTEGER NOT NULL, id TEXT NOT NULL, revision INTEGER NOT NULL,
        PRIMARY KEY (kind, id)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;";

/// The rows one message changes, made by `Store::encode` (off the controller's lock if need be)
/// and written by `Store::append`.
#[derive(Debug, Default)]
pub struct Rows(Vec<Row>);

#[derive(Debug)]
enum Row {
    /// A resource's new version; it forgets the resource's tombstone.
    Put { kind: i32, id: String, body: Vec<u8> },
    /// A deletion, and the tombstone it leaves (none: the tombstone goes too).
    Delete {
        kind: i32,
        id: String,
        tombstone: Option<u32>,
    },
}

pub struct Store {
    dir: PathBuf,
    db: Connection,
    /// What was wrong with the record at `open`.
    damage: Damage,
    /// The tombstones the database holds, so that a put deletes one only where there is one.
    tombs: HashSet<TombKey>,
    /// The tombstone changes of the transaction `stage` left open.
    staged: Option<TombChanges>,
    /// The record's sequence number (`sequence`), as last committed.
    sequence: u64,
}

type TombKey = (i32, String);
/// Tombstones a transaction adds (true) or removes (false), applied to `Store::tombs` once it
/// commits.
type TombChanges = HashMap<TombKey, bool>;

impl Store {
    /// Opens (creating) the record in `dir` and returns the state it holds; what was damaged is in
    /// `damage()`. An earlier agent's record is carried over.
    pub fn open(dir: &Path) -> Result<(Store, State)> {
        fs::create_dir_all(dir).with_context(|| format!("create state directory {}", dir.display()))?;
        let started = std::time::Instant::now();
        let mut damage = Damage::default();
        let (db, mut state) = match open_db(dir).and_then(|db| read_db(&db).map(|s| (db, s))) {
            Ok((db, (state, bad))) => {
                if bad > 0 {
                    damage.rows += bad;
                    damage
                        .files
                        .extend(DB_FILES.map(|f| dir.join(f)).into_iter().filter(|p| p.exists()));
                }
                (db, state)
            }
            // Anything but damage (a later format, a permission, an I/O error) stops the start,
            // and the record stays as it is.
            Err(e) if !is_damage(&e) => return Err(e),
            Err(e) => {
                // Kept aside, and replaced by an empty database: the agent starts with nothing
                // rather than not at all, and keeps what is pinned.
                for f in DB_FILES.map(|f| dir.join(f)).into_iter().filter(|p| p.exists()) {
                    damage.unreadable_file(&f, anyhow::anyhow!("{e:#}"));
                }
                damage.keep();
                for f in DB_FILES {
                    let _ = fs::remove_file(dir.join(f));
                }
                (open_db(dir)?, State::default())
            }
        };
        let mut store = Store {
            dir: dir.to_path_buf(),
            db,
            damage,
            tombs: HashSet::new(),
            staged: None,
            sequence: 0,
        };
        store.sequence = sequence::read_or_start(&store.db)?;
        store.carry_over(&mut state)?;
        store.tombs = state.tombstones.keys().cloned().collect();
        store.damage.orphans = drop_orphans(&mut state);
        store.damage.keep();
        tracing::info!(
            resources = state.len(),
            orphans = store.damage.orphans,
            damaged_rows = store.damage.rows,
            unreadable_files = store.damage.unreadable.len(),
            millis = started.elapsed().as_millis() as u64,
            "record read"
        );
        Ok((store, state))
    }

    /// The record's sequence number: one more with every committed transaction.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// What was wrong with the record `open` read.
    pub fn damage(&self) -> &Damage {
        &self.damage
    }

    /// The state recorded in `dir`, read without writing anything (also while the agent runs):
    /// what `alioth state`, `status` and `apply --prune` show. Damage is logged and skipped.
    pub fn read(dir: &Path) -> Result<State> {
        let mut damage = Damage::default();
        let path = dir.join(DB);
        let (mut state, carried) = if path.exists() {
            let db = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .with_context(|| format!("open {}", path.display()))?;
            db.busy_timeout(std::time::Duration::from_secs(5))?;
            let state = read_db(&db).with_context(|| format!("read {}", path.display()))?.0;
            (state, carried_over(&db)?)
        } else {
            (State::default(), false)
        };
        if !carried {
            legacy::read(dir, &mut state, &mut damage);
        }
        drop_orphans(&mut state);
        Ok(state)
    }

    /// Carries an earlier agent's record over into the database (once: the transaction that
    /// writes it also marks it done), then removes it.
    fn carry_over(&mut self, state: &mut State) -> Result<()> {
        if !carried_over(&self.db)? {
            let mut old = State::default();
            if legacy::read(&self.dir, &mut old, &mut self.damage) {
                self.damage.keep();
                let rows = Rows(
                    old.resources()
                        .map(|r| put(&r))
                        .chain(old.tombstones.iter().map(|((kind, id), rev)| {
                            Ok(Row::Delete {
                                kind: *kind,
                                id: id.clone(),
                                tombstone: Some(*rev),
                            })
                        }))
                        .collect::<Result<_>>()?,
                );
                self.write(&rows, true)?;
                tracing::info!(
                    resources = rows.0.len(),
                    "the record of an earlier agent is carried over into {DB}"
                );
                *state = old;
            } else {
                self.db.execute("INSERT INTO meta VALUES ('carried_over', 1)", [])?;
            }
        }
        for f in legacy::files(&self.dir) {
            fs::remove_file(&f).with_context(|| format!("remove {}", f.display()))?;
        }
        Ok(())
    }

    /// Records `changes` (as `state` now has them).
    pub fn record(&mut self, state: &State, changes: &[Change]) -> Result<()> {
        self.append(&Store::encode(state, changes)?)
    }

    /// The rows of `changes` (as `state` now has them): `append` writes them. Needs no store, so
    /// it can run on another thread while the changes are being programmed.
    pub fn encode(state: &State, changes: &[Change]) -> Result<Rows> {
        let mut rows = Vec::with_capacity(changes.len());
        for c in changes {
            let Some(r) = c.after.as_ref().or(c.before.as_ref()) else {
                continue;
            };
            // Replayed as it was: the record already says so (and it had no tombstone).
            if c.before.is_some() && c.before == c.after {
                continue;
            }
            let (kind, id) = r.kind_id();
            let kind = kind as i32;
            rows.push(match &c.after {
                Some(a) => put(a)?,
                None => Row::Delete {
                    kind,
                    id: id.to_string(),
                    tombstone: state.tombstones.get(&(kind, id.to_string())).copied(),
                },
            });
        }
        Ok(Rows(rows))
    }

    /// Writes `rows` in one transaction, on disk when this returns. A failed one leaves nothing.
    pub fn append(&mut self, rows: &Rows) -> Result<()> {
        if rows.0.is_empty() {
            return Ok(());
        }
        self.write(rows, false)
            .with_context(|| format!("write the record in {}", self.dir.display()))
    }

    /// One transaction of `rows` (and the carried-over mark, with `carried_over`).
    fn write(&mut self, rows: &Rows, carried_over: bool) -> Result<()> {
        self.db.execute_batch("BEGIN IMMEDIATE")?;
        let written = self.write_rows(rows).and_then(|tombs| {
            if carried_over {
                self.db
                    .execute("INSERT OR REPLACE INTO meta VALUES ('carried_over', 1)", [])?;
            }
            self.db.execute_batch("COMMIT")?;
            Ok(tombs)
        });
        self.ended(written)
    }

    /// Writes the rows of `changes` (as `state` now has them) in a transaction left open, which
    /// `commit_staged` commits or `rollback_staged` drops: a large message's rows are written
    /// while its map writes run. A failure leaves nothing open.
    pub fn stage(&mut self, state: &State, changes: &[Change]) -> Result<()> {
        self.rollback_staged();
        let rows = Store::encode(state, changes)?;
        self.db.execute_batch("BEGIN IMMEDIATE")?;
        match self.write_rows(&rows) {
            Ok(tombs) => {
                self.staged = Some(tombs);
                Ok(())
            }
            Err(e) => self.ended(Err(e)).map(drop),
        }
    }

    /// Commits what `stage` wrote; on disk when this returns.
    pub fn commit_staged(&mut self) -> Result<()> {
        let tombs = self.staged.take().context("no transaction staged")?;
        let committed = self
            .db
            .execute_batch("COMMIT")
            .map(|()| tombs)
            .map_err(anyhow::Error::from);
        self.ended(committed)
            .with_context(|| format!("write the record in {}", self.dir.display()))
    }

    /// Drops what `stage` wrote, if anything.
    pub fn rollback_staged(&mut self) {
        if self.staged.take().is_some() {
            let _ = self.db.execute_batch("ROLLBACK");
        }
    }

    /// Ends a transaction: its tombstone changes count once it committed; a failed one is rolled
    /// back (a failed COMMIT can leave it open).
    fn ended(&mut self, result: Result<TombChanges>) -> Result<()> {
        match result {
            Ok(tombs) => {
                self.sequence = sequence::next(self.sequence);
                for (key, present) in tombs {
                    match present {
                        true => self.tombs.insert(key),
                        false => self.tombs.remove(&key),
                    };
                }
                Ok(())
            }
            Err(e) => {
                if !self.db.is_autocommit() {
                    let _ = self.db.execute_batch("ROLLBACK");
                }
                Err(e)
            }
        }
    }

    /// The statements of `rows`, in the open transaction; returns the tombstones they add and
    /// remove.
    fn write_rows(&self, rows: &Rows) -> Result<TombChanges> {
        let db = &self.db;
        let mut put = db.prepare_cached("INSERT OR REPLACE INTO resources VALUES (?1, ?2, ?3, ?4)")?;
        let mut gone = db.prepare_cached("DELETE FROM resources WHERE kind = ?1 AND id = ?2")?;
        let mut tomb = db.prepare_cached("INSERT OR REPLACE INTO tombstones VALUES (?1, ?2, ?3)")?;
        let mut untomb = db.prepare_cached("DELETE FROM tombstones WHERE kind = ?1 AND id = ?2")?;
        let mut tombs = TombChanges::new();
        sequence::write(db, sequence::next(self.sequence))?;
        for row in &rows.0 {
            let (kind, id, tombstone) = match row {
                Row::Put { kind, id, body } => {
                    put.execute(params![kind, id, body, crc32fast::hash(body)])?;
                    (kind, id, None)
                }
                Row::Delete { kind, id, tombstone } => {
                    gone.execute(params![kind, id])?;
                    (kind, id, *tombstone)
                }
            };
            let key = (*kind, id.clone());
            let present = tombs.get(&key).copied().unwrap_or_else(|| self.tombs.contains(&key));
            match tombstone {
                Some(rev) => {
                    tomb.execute(params![kind, id, rev])?;
                    tombs.insert(key, true);
                }
                None if present => {
                    untomb.execute(params![kind, id])?;
                    tombs.insert(key, false);
                }
                None => {}
            }
        }
        Ok(tombs)
    }

    /// Bytes the record takes on disk (database and log).
    pub fn size(dir: &Path) -> u64 {
        DB_FILES
            .iter()
            .filter_map(|f| fs::metadata(dir.join(f)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Removes the record, and the copies of damaged ones (for `--reset`).
    pub fn remove(dir: &Path) -> Result<()> {
        let files = DB_FILES
            .iter()
            .map(|f| dir.join(f))
            .chain(legacy::files(dir))
            .chain(damaged_copies(dir).into_iter().map(|n| dir.join(n)));
        for p in files {
            if p.exists() {
                fs::remove_file(&p).with_context(|| format!("remove {}", p.display()))?;
            }
        }
        let _ = fs::remove_dir(dir);
        Ok(())
    }
}

/// Whether `e` says the database is damaged (SQLite found its structure corrupt, or the file is
/// not a database at all), as opposed to unreachable or of a later format.
fn is_damage(e: &anyhow::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(f, _)) if matches!(f.code, DatabaseCorrupt | NotADatabase)
        )
    })
}

/// The row that puts `r`.
fn put(r: &Resource) -> Result<Row> {
    let (kind, id) = r.kind_id();
    Ok(Row::Put {
        kind: kind as i32,
        id: id.to_string(),
        body: postcard::to_stdvec(r)?,
    })
}

/// Opens (creating) the database in `dir`: WAL, and a commit is durable when it returns.
fn open_db(dir: &Path) -> Result<Connection> {
    let path = dir.join(DB);
    let db = Connection::open(&path).with_context(|| format!("open {}", path.display()))?;
    db.busy_timeout(std::time::Duration::from_secs(5))?;
    let mode: String = db.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    anyhow::ensure!(mode == "wal", "{} cannot use WAL (journal mode {mode})", path.display());
    // Temporary tables in memory: a read-only root filesystem (the DaemonSet's) has no /tmp.
    db.execute_batch("PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;")?;
    let format: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    match format {
        0 => db.execute_batch(&format!("{SCHEMA} PRAGMA user_version = {FORMAT};"))?,
        FORMAT => {}
        1 | 2 => db.execute_batch(&format!("PRAGMA user_version = {FORMAT};"))?,
        later => anyhow::bail!(
            "{} is of format {later}, which only a later agent reads (this one reads {FORMAT})",
            path.display()
        ),
    }
    Ok(db)
}

/// Whether `db` holds an earlier agent's record already (or was made with nothing to carry over).
fn carried_over(db: &Connection) -> Result<bool> {
    Ok(db
        .query_row("SELECT 1 FROM meta WHERE key = 'carried_over'", [], |_| Ok(()))
        .optional()?
        .is_some())
}

#[cfg(test)]
mod tests;

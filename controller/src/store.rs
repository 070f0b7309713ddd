//! The agent's record of applied goal state: a snapshot plus an append-only journal of changes,
//! both made of checksummed lines (`lines`).
//!
//! Every accepted change is appended and synced to disk (fdatasync) before the reply goes out, so
//! an agent killed at any point, or a machine that loses power, restarts with exactly what it had
//! acknowledged. At start the journal is replayed onto the snapshot and compacted into a new
//! snapshot, and so it is while the agent runs once the journal outgrows the snapshot: the record
//! stays proportional to the state, however long the agent runs. A change that leaves its resource
//! as it was (a replayed message) is not recorded.
//!
//! A compaction retires the journal (renamed `journal-<n>.jsonl`; new lines go to a fresh one) and
//! writes the snapshot on another thread, from the resources as they were then, so neither a
//! message nor the start waits for it; the retired journals it covers go once the snapshot is in
//! place. Reading back replays the snapshot, the retired journals in order, then the journal: a
//! crash at any point of a compaction reads back the same state (replaying lines the snapshot
//! already holds changes nothing).
//!
//! A damaged line costs that line; a file that cannot be read costs that file. Either way the
//! damage is reported (`Damage`), and a copy of each damaged file is kept beside the record
//! (`<name>.damaged-<unix time>`) before a compaction replaces it.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};

pub mod jsonl;
mod lines;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use alioth_proto::schema::ResourceType;

use crate::goalstate::model::{Change, Resource};
use crate::goalstate::model::{FixedIps, Id, State};
use lines::EntryRef;

const SNAPSHOT: &str = "state.jsonl";
/// Infix of the copies of damaged record files: `<name>.damaged-<unix time>`.
const DAMAGED: &str = ".damaged-";
/// The snapshot as agents before checksummed lines wrote it (one JSON document): read if present,
/// removed by the next compaction.
const LEGACY_SNAPSHOT: &str = "state.json";
const JOURNAL: &str = "journal.jsonl";
/// A journal retired by a compaction: `journal-<n>.jsonl`, read back in the order of n.
const RETIRED: (&str, &str) = ("journal-", ".jsonl");

#[derive(Deserialize)]
struct LegacySnapshot {
    resources: Vec<Resource>,
    tombstones: Vec<(i32, String, u32)>,
}

/// What a compaction writes: the resources and tombstones as they were when it started.
struct Snapshot {
    resources: Vec<Resource>,
    tombstones: Vec<(i32, String, u32)>,
}

/// What reading the record found wrong. Any of it means the record may lack what the data plane
/// still has, so the agent keeps what is pinned instead of replacing it (see `Dataplane::adopt`).
#[derive(Debug, Default, Clone)]
pub struct Damage {
    /// Lines skipped (a checksum or JSON that is wrong).
    pub lines: usize,
    /// Files that could not be read at all, with why.
    pub unreadable: Vec<String>,
    /// Resources left out for want of their parents.
    pub orphans: usize,
    /// The damaged files, whose copies are kept.
    files: Vec<PathBuf>,
    /// Where copies of the damaged files were kept.
    pub kept: Vec<PathBuf>,
}

impl Damage {
    pub fn any(&self) -> bool {
        self.lines > 0 || !self.unreadable.is_empty() || self.orphans > 0
    }

    /// Replays the file at `path` onto `state`, noting what is wrong with it.
    fn replay(&mut self, state: &mut State, path: &Path) {
        match lines::replay(state, path) {
            Ok(r) if r.damaged > 0 => {
                self.lines += r.damaged;
                self.files.push(path.to_path_buf());
            }
            Ok(_) => {}
            Err(e) => self.unreadable_file(path, e),
        }
    }

    fn unreadable_file(&mut self, path: &Path, e: anyhow::Error) {
        tracing::error!(record = %path.display(), "cannot be read: {e:#}");
        self.unreadable.push(format!("{}: {e:#}", path.display()));
        self.files.push(path.to_path_buf());
    }

    /// Keeps a copy of each damaged file (moves it if it cannot be read): the compaction that
    /// follows replaces them.
    fn keep(&mut self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for path in std::mem::take(&mut self.files) {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let kept = path.with_file_name(format!("{name}{DAMAGED}{now}"));
            match fs::copy(&path, &kept).map(drop).or_else(|_| fs::rename(&path, &kept)) {
                Ok(()) => {
                    tracing::error!(kept = %kept.display(), "a copy of the damaged record is kept");
                    self.kept.push(kept);
                }
                Err(e) => tracing::error!(record = %path.display(), "the damaged record could not be kept: {e}"),
            }
        }
    }
}

pub struct Store {
    dir: PathBuf,
    journal: BufWriter<File>,
    /// Bytes appended to the journal since the last compaction.
    appended: u64,
    /// Size of the snapshot the last compaction wrote.
    snapshot: u64,
    /// The journal is compacted once it holds this much and more than twice the snapshot.
    compact_after: u64,
    /// The compaction writing a snapshot on another thread, if one is: the snapshot's size.
    compacting: Option<std::thread::JoinHandle<Result<u64>>>,
    /// The number the next retired journal gets.
    next_retired: u64,
    /// What was wrong with the record at `open`.
    damage: Damage,
}

/// Journal size from which a running agent compacts by default: a compaction rewrites the whole
/// state (about a second per million resources here), so it waits until the journal is worth it,
/// and its cost per byte recorded stays constant.
pub const COMPACT_AFTER: u64 = 64 << 20;

impl Store {
    /// Opens (creating) `dir`, returns the recorded state, and compacts the journal into a snapshot.
    /// What was damaged in the record is in `damage()`.
    pub fn open(dir: &Path) -> Result<(Store, State)> {
        fs::create_dir_all(dir).with_context(|| format!("create state directory {}", dir.display()))?;
        let (state, mut damage) = Self::read_checked(dir)?;
        damage.keep();
        let (snap, journal) = (dir.join(SNAPSHOT), dir.join(JOURNAL));
        let retired = retired_journals(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal)
            .with_context(|| format!("open {}", journal.display()))?;
        let mut store = Store {
            dir: dir.to_path_buf(),
            appended: file.metadata()?.len(),
            journal: BufWriter::new(file),
            snapshot: fs::metadata(&snap).map_or(0, |m| m.len()),
            compact_after: COMPACT_AFTER,
            compacting: None,
            next_retired: retired.last().map_or(1, |(n, _)| n + 1),
            damage,
        };
        // What was read is compacted while the agent starts. The journal is retired in any case:
        // new lines never follow a line torn by a kill.
        if store.appended > 0 || !retired.is_empty() || dir.join(LEGACY_SNAPSHOT).exists() {
            store.compact(&state)?;
        }
        Ok((store, state))
    }

    /// What was wrong with the record `open` read.
    pub fn damage(&self) -> &Damage {
        &self.damage
    }

    /// The state recorded in `dir` (snapshot, retired journals, journal), read without writing
    /// anything: what `alioth apply --prune` compares with. Damage is logged and skipped.
    pub fn read(dir: &Path) -> Result<State> {
        Ok(Self::read_checked(dir)?.0)
    }

    /// The state recorded in `dir` and what was wrong with the record. Fails only if `dir` cannot
    /// be listed.
    fn read_checked(dir: &Path) -> Result<(State, Damage)> {
        let started = std::time::Instant::now();
        let (mut state, mut damage) = (State::default(), Damage::default());
        let (snap, legacy) = (dir.join(SNAPSHOT), dir.join(LEGACY_SNAPSHOT));
        if snap.exists() {
            damage.replay(&mut state, &snap);
        } else if legacy.exists() {
            let read = File::open(&legacy)
                .map_err(anyhow::Error::from)
                .and_then(|f| Ok(serde_json::from_reader::<_, LegacySnapshot>(BufReader::new(f))?));
            match read {
                Ok(s) => {
                    for r in s.resources {
                        state.put(shared_ids(&state, r));
                    }
                    state.tombstones = s.tombstones.into_iter().map(|(k, id, r)| ((k, id), r)).collect();
                }
                Err(e) => damage.unreadable_file(&legacy, e),
            }
        }
        let retired = retired_journals(dir)?;
        for (_, path) in &retired {
            damage.replay(&mut state, path);
        }
        let journal = dir.join(JOURNAL);
        if journal.exists() {
            damage.replay(&mut state, &journal);
        }
        damage.orphans = drop_orphans(&mut state);
        tracing::info!(
            retired = retired.len(),
            orphans = damage.orphans,
            damaged_lines = damage.lines,
            unreadable_files = damage.unreadable.len(),
            millis = started.elapsed().as_millis() as u64,
            "journal replayed"
        );
        Ok((state, damage))
    }

    /// Sets the journal size from which `compact_if_due` compacts (`COMPACT_AFTER` by default).
    pub fn set_compact_after(&mut self, bytes: u64) {
        self.compact_after = bytes;
    }

    /// Compacts the journal into a new snapshot of `state` (which must be what the journal leads
    /// to) once the journal has grown past its threshold and twice the snapshot, and either the
    /// agent is `idle` or the journal is four times past that (a bulk load is not held up by
    /// compactions it would soon make moot, and a busy agent's journal is bounded all the same).
    /// One compaction at a time.
    pub fn compact_if_due(&mut self, state: &State, idle: bool) -> Result<()> {
        self.reap(false);
        let due = self.compact_after.max(2 * self.snapshot);
        if self.compacting.is_some() || self.appended < due || (!idle && self.appended < 4 * due) {
            return Ok(());
        }
        self.compact(state)
    }

    /// Retires the journal and writes a snapshot of `state` on another thread (here when there is
    /// none to be had), which removes the retired journals once it is in place.
    fn compact(&mut self, state: &State) -> Result<()> {
        self.reap(true);
        let n = self.next_retired;
        let retired = self.dir.join(format!("{}{n:010}{}", RETIRED.0, RETIRED.1));
        self.journal.flush()?;
        match fs::rename(self.dir.join(JOURNAL), &retired) {
            // A journal that could not be read was moved aside (`Damage::keep`).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            r => r.with_context(|| format!("retire the journal as {}", retired.display()))?,
        }
        self.next_retired += 1;
        let path = self.dir.join(JOURNAL);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        // The new journal's name must be on disk before a line in it is acknowledged.
        sync_dir(&self.dir)?;
        (self.journal, self.appended) = (BufWriter::new(file), 0);
        // The resources as they are now (shared, not copied): later messages go to the new journal.
        let snapshot = Snapshot {
            resources: state.resources().collect(),
            tombstones: state
                .tombstones
                .iter()
                .map(|((k, id), r)| (*k, id.clone(), *r))
                .collect(),
        };
        let snapshot = std::sync::Arc::new(snapshot);
        let (dir, theirs) = (self.dir.clone(), snapshot.clone());
        let spawned = std::thread::Builder::new()
            .name("alioth-compact".into())
            .spawn(move || {
                // Background work: messages (and the restore at a start) go first on a busy host.
                // SAFETY: sched_setscheduler on this thread (0) with a valid sched_param.
                unsafe {
                    let param = libc::sched_param { sched_priority: 0 };
                    libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
                }
                finish_compaction(&dir, &theirs, n)
            });
        match spawned {
            Ok(handle) => self.compacting = Some(handle),
            // The process cannot have another thread: the start or the message waits for it.
            Err(_) => self.compacted(finish_compaction(&self.dir, &snapshot, n)),
        }
        Ok(())
    }

    /// Notes how a compaction ended. A failed one is logged; its retired journals stay, read back
    /// until the next one succeeds.
    fn compacted(&mut self, result: Result<u64>) {
        match result {
            Ok(size) => self.snapshot = size,
            Err(e) => tracing::error!("compacting the journal failed (the record stays valid): {e:#}"),
        }
    }

    /// Takes the result of the compaction on the other thread once it is done (`wait`: waits for
    /// it).
    fn reap(&mut self, wait: bool) {
        if !self.compacting.as_ref().is_some_and(|h| wait || h.is_finished()) {
            return;
        }
        if let Some(handle) = self.compacting.take() {
            let result = handle
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the compacting thread panicked")));
            self.compacted(result);
        }
    }

    /// Appends `changes` (as `state` now has them) to the journal.
    pub fn record(&mut self, state: &State, changes: &[Change]) -> Result<()> {
        self.append(&Store::encode(state, changes)?)
    }

    /// The journal lines of `changes` (as `state` now has them): `append` writes them. Needs no
    /// store, so it can run on another thread while the changes are being programmed.
    pub fn encode(state: &State, changes: &[Change]) -> Result<Vec<u8>> {
        // A neighbor's line is about 200 bytes; pages reserved and not written cost nothing.
        let mut out = Vec::with_capacity(changes.len() * 256);
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
            // A put also forgets the resource's tombstone when read back; a deletion is followed by
            // the tombstone it leaves.
            match &c.after {
                Some(a) => lines::write(&mut out, &EntryRef::Put(a))?,
                None => {
                    lines::write(&mut out, &EntryRef::Delete { kind, id })?;
                    let revision = state.tombstones.get(&(kind, id.to_string())).copied();
                    lines::write(&mut out, &EntryRef::Tombstone { kind, id, revision })?;
                }
            }
        }
        Ok(out)
    }

    /// Appends lines from `encode` to the journal, on disk when this returns.
    pub fn append(&mut self, lines: &[u8]) -> Result<()> {
        let written = self
            .journal
            .write_all(lines)
            .and_then(|()| self.journal.flush())
            .and_then(|()| self.journal.get_ref().sync_data());
        if let Err(e) = written {
            // Nothing of a failed write may stay (a full disk takes part of it): lines written
            // later would follow a torn one, and a restart would stop reading there.
            self.discard_unwritten();
            return Err(e).with_context(|| format!("write the journal in {}", self.dir.display()));
        }
        self.appended += lines.len() as u64;
        Ok(())
    }

    /// Drops what the journal's buffer still holds and cuts the file back to what was recorded.
    fn discard_unwritten(&mut self) {
        let Ok(file) = self.journal.get_ref().try_clone() else {
            return;
        };
        let old = std::mem::replace(&mut self.journal, BufWriter::new(file));
        drop(old.into_parts());
        if let Err(e) = self.journal.get_ref().set_len(self.appended) {
            tracing::error!("cutting the journal back after a failed write: {e}");
        }
    }

    /// Removes the record, and the copies of damaged ones (for `--reset`).
    pub fn remove(dir: &Path) -> Result<()> {
        let retired = if dir.exists() {
            retired_journals(dir)?
        } else {
            Vec::new()
        };
        let files = [SNAPSHOT, LEGACY_SNAPSHOT, &format!("{SNAPSHOT}.tmp"), JOURNAL].map(|f| dir.join(f));
        let damaged = damaged_copies(dir).into_iter().map(|n| dir.join(n));
        for p in files
            .into_iter()
            .chain(retired.into_iter().map(|(_, p)| p))
            .chain(damaged)
        {
            if p.exists() {
                fs::remove_file(&p).with_context(|| format!("remove {}", p.display()))?;
            }
        }
        let _ = fs::remove_dir(dir);
        Ok(())
    }
}

impl Drop for Store {
    /// A compaction under way is finished first: a store opened next on the same directory must
    /// not read retired journals as they are being removed.
    fn drop(&mut self) {
        self.reap(true);
    }
}

/// Removes what a damaged record left without its parents (a subnet without its VPC, a port or
/// neighbor without its VPC or a subnet, a DHCP entry without its subnet), reporting each: the
/// agent starts with the rest rather than not at all.
fn drop_orphans(state: &mut State) -> usize {
    let mut orphans: Vec<(ResourceType, String)> = Vec::new();
    for s in state.subnets.values().filter(|s| !state.vpcs.contains_key(&s.vpc_id)) {
        orphans.push((ResourceType::Subnet, s.id.to_string()));
    }
    let subnet_gone = |id: &str| orphans.iter().any(|(k, o)| *k == ResourceType::Subnet && o == id);
    let lost = |vpc: &str, ips: &[crate::goalstate::model::FixedIp]| {
        !state.vpcs.contains_key(vpc)
            || ips
                .iter()
                .any(|f| !state.subnets.contains_key(&*f.subnet_id) || subnet_gone(&f.subnet_id))
    };
    let mut found: Vec<(ResourceType, String)> = Vec::new();
    found.extend(
        state
            .ports()
            .values()
            .filter(|p| lost(&p.vpc_id, &p.fixed_ips))
            .map(|p| (ResourceType::Port, p.id.to_string())),
    );
    found.extend(
        state
            .neighbors()
            .values()
            .filter(|n| lost(&n.vpc_id, &n.fixed_ips))
            .map(|n| (ResourceType::Neighbor, n.id.to_string())),
    );
    found.extend(
        state
            .dhcp_hosts()
            .values()
            .filter(|d| !state.subnets.contains_key(&d.subnet_id) || subnet_gone(&d.subnet_id))
            .map(|d| (ResourceType::Dhcp, d.id.clone())),
    );
    orphans.extend(found);
    for (kind, id) in &orphans {
        tracing::error!(
            ?kind,
            resource_id = id,
            "the record has it without its parent; left out"
        );
        state.delete(*kind, id);
    }
    orphans.len()
}

/// The retired journals in `dir`, in order.
fn retired_journals(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let e = e?;
        let name = e.file_name();
        let n = name
            .to_str()
            .and_then(|n| n.strip_prefix(RETIRED.0)?.strip_suffix(RETIRED.1)?.parse::<u64>().ok());
        if let Some(n) = n {
            out.push((n, e.path()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Puts `snapshot` in place, then removes the retired journals up to the `n`-th, which it holds;
/// returns the snapshot's size.
fn finish_compaction(dir: &Path, snapshot: &Snapshot, n: u64) -> Result<u64> {
    let started = std::time::Instant::now();
    let size = write_snapshot(dir, snapshot)?;
    for (m, path) in retired_journals(dir)? {
        if m <= n {
            fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
        }
    }
    tracing::info!(
        resources = snapshot.resources.len(),
        snapshot_bytes = size,
        millis = started.elapsed().as_millis() as u64,
        "journal compacted"
    );
    Ok(size)
}

/// `r` with its VPC and subnet ids shared with the state's own VPC and subnet, as validation makes
/// them: read back, every port and neighbor would otherwise keep copies of its own (a restarted
/// agent with 1M ports used 744 MiB instead of 489).
fn shared_ids(state: &State, mut r: Resource) -> Resource {
    let share_all = |vpc_id: &mut Id, fixed_ips: &mut FixedIps| {
        if let Some(v) = state.vpcs.get(&**vpc_id) {
            *vpc_id = v.id.clone();
        }
        for f in fixed_ips.iter_mut() {
            if let Some(s) = state.subnets.get(&*f.subnet_id) {
                f.subnet_id = s.id.clone();
            }
        }
    };
    match &mut r {
        Resource::Port(p) => {
            if let Some(p) = std::sync::Arc::get_mut(p) {
                share_all(&mut p.vpc_id, &mut p.fixed_ips);
            }
        }
        Resource::Neighbor(n) => {
            if let Some(n) = std::sync::Arc::get_mut(n) {
                share_all(&mut n.vpc_id, &mut n.fixed_ips);
            }
        }
        Resource::Vpc(_) | Resource::Subnet(_) | Resource::Dhcp(_) => {}
    }
    r
}

/// Writes `snapshot` atomically and durably; returns its size.
fn write_snapshot(dir: &Path, snapshot: &Snapshot) -> Result<u64> {
    let tmp = dir.join(format!("{SNAPSHOT}.tmp"));
    let mut w = BufWriter::with_capacity(
        1 << 20,
        File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?,
    );
    let mut line = Vec::with_capacity(4096);
    for r in &snapshot.resources {
        line.clear();
        lines::write(&mut line, &EntryRef::Put(r))?;
        w.write_all(&line)?;
    }
    for (kind, id, revision) in &snapshot.tombstones {
        line.clear();
        let revision = Some(*revision);
        lines::write(
            &mut line,
            &EntryRef::Tombstone {
                kind: *kind,
                id,
                revision,
            },
        )?;
        w.write_all(&line)?;
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let size = file.metadata()?.len();
    drop(file);
    // Atomic replace: a crash leaves either the old or the new snapshot.
    fs::rename(&tmp, dir.join(SNAPSHOT))?;
    sync_dir(dir)?;
    // Superseded by the snapshot just written (and never read once that exists).
    let _ = fs::remove_file(dir.join(LEGACY_SNAPSHOT));
    Ok(size)
}

/// The copies of damaged records `open` kept in `dir` (for `alioth status`), by name.
pub fn damaged_copies(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(DAMAGED))
        .collect();
    names.sort();
    names
}

/// Makes the names in `dir` (a rename, a new file) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("sync {}", dir.display()))
}

#[cfg(test)]
mod tests;

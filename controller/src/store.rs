//! The agent's record of applied goal state: a snapshot plus an append-only journal of changes.
//!
//! Every accepted change is appended (one JSON line) before the reply goes out, so an agent killed
//! at any point restarts with exactly what it had acknowledged. At start the journal is replayed
//! onto the snapshot and compacted into a new snapshot, and so it is while the agent runs once the
//! journal outgrows the snapshot: the record stays proportional to the state, however long the
//! agent runs. A change that leaves its resource as it was (a replayed message) is not recorded.
//!
//! A compaction retires the journal (renamed `journal-<n>.jsonl`; new lines go to a fresh one) and
//! writes the snapshot on another thread, from the resources as they were then, so neither a
//! message nor the start waits for it; the retired journals it covers go once the snapshot is in
//! place. Reading back replays the snapshot, the retired journals in order, then the journal: a
//! crash at any point of a compaction reads back the same state (replaying lines the snapshot
//! already holds changes nothing). No fsync: a process crash keeps the page cache, and a machine
//! crash loses the BPF maps as well.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use alioth_proto::schema::ResourceType;

use crate::jsonl;
use crate::model::{FixedIps, Id, State};
use crate::validate::{Change, Resource};

const SNAPSHOT: &str = "state.json";
const JOURNAL: &str = "journal.jsonl";
/// A journal retired by a compaction: `journal-<n>.jsonl`, read back in the order of n.
const RETIRED: (&str, &str) = ("journal-", ".jsonl");

#[derive(Serialize, Deserialize)]
struct Snapshot {
    resources: Vec<Resource>,
    tombstones: Vec<(i32, String, u32)>,
}

/// One journal line: a resource's new version (which forgets its tombstone), or its deletion and
/// the tombstone that leaves.
#[derive(Deserialize)]
enum Entry {
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

/// `Entry` as `record` writes it: borrowed, so no resource is copied to be written. Same variant
/// and field names, hence the same JSON, as the `Entry` that reads it back.
#[derive(Serialize)]
enum EntryRef<'a> {
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
}

/// Journal size from which a running agent compacts by default: a compaction rewrites the whole
/// state (about a second per million resources here), so it waits until the journal is worth it,
/// and its cost per byte recorded stays constant.
pub const COMPACT_AFTER: u64 = 64 << 20;

impl Store {
    /// Opens (creating) `dir`, returns the recorded state, and compacts the journal into a snapshot.
    pub fn open(dir: &Path) -> Result<(Store, State)> {
        fs::create_dir_all(dir).with_context(|| format!("create state directory {}", dir.display()))?;
        let state = Self::read(dir)?;
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
        };
        // What was read is compacted while the agent starts. The journal is retired in any case:
        // new lines never follow a line torn by a kill.
        if store.appended > 0 || !retired.is_empty() {
            store.compact(&state)?;
        }
        Ok((store, state))
    }

    /// The state recorded in `dir` (snapshot, retired journals, journal), read without writing
    /// anything: what `open` starts from, and what `alioth apply --prune` compares with.
    pub fn read(dir: &Path) -> Result<State> {
        let started = std::time::Instant::now();
        let mut state = State::default();
        let snap = dir.join(SNAPSHOT);
        if snap.exists() {
            let s: Snapshot = serde_json::from_reader(BufReader::new(File::open(&snap)?))
                .with_context(|| format!("read {}", snap.display()))?;
            for r in s.resources {
                state.put(shared_ids(&state, r));
            }
            state.tombstones = s.tombstones.into_iter().map(|(k, id, r)| ((k, id), r)).collect();
        }
        let retired = retired_journals(dir)?;
        for (_, path) in &retired {
            replay(&mut state, path)?;
        }
        let journal = dir.join(JOURNAL);
        if journal.exists() {
            replay(&mut state, &journal)?;
        }
        let orphans = drop_orphans(&mut state);
        tracing::info!(
            retired = retired.len(),
            orphans,
            millis = started.elapsed().as_millis() as u64,
            "journal replayed"
        );
        Ok(state)
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
        fs::rename(self.dir.join(JOURNAL), &retired)
            .with_context(|| format!("retire the journal as {}", retired.display()))?;
        self.next_retired += 1;
        let path = self.dir.join(JOURNAL);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
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
            // Ports and neighbors, most of a large message, are written by hand (`jsonl`).
            match &c.after {
                Some(a) if jsonl::put(&mut out, a) => {}
                Some(a) => serde_json::to_writer(&mut out, &EntryRef::Put(a))?,
                None => serde_json::to_writer(&mut out, &EntryRef::Delete { kind, id })?,
            }
            out.push(b'\n');
            if c.after.is_none() {
                let revision = state.tombstones.get(&(kind, id.to_string())).copied();
                serde_json::to_writer(&mut out, &EntryRef::Tombstone { kind, id, revision })?;
                out.push(b'\n');
            }
        }
        Ok(out)
    }

    /// Appends lines from `encode` to the journal.
    pub fn append(&mut self, lines: &[u8]) -> Result<()> {
        let written = self.journal.write_all(lines).and_then(|()| self.journal.flush());
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

    /// Removes the record (for `--reset`).
    pub fn remove(dir: &Path) -> Result<()> {
        let retired = if dir.exists() {
            retired_journals(dir)?
        } else {
            Vec::new()
        };
        let files = [SNAPSHOT, &format!("{SNAPSHOT}.tmp"), JOURNAL].map(|f| dir.join(f));
        for p in files.into_iter().chain(retired.into_iter().map(|(_, p)| p)) {
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

/// Replays the journal at `path` onto `state`. A torn last line (killed mid-write) was never
/// acknowledged: reading stops there.
fn replay(state: &mut State, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut bytes))
        .with_context(|| format!("read {}", path.display()))?;
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let last = lines.len().saturating_sub(1);
    for (n, line) in lines.into_iter().enumerate().filter(|(_, l)| !l.is_empty()) {
        // A damaged line costs that line only: the ones after it are whole records of their own.
        // The last one may be torn by a kill in the middle of a write, which loses nothing
        // acknowledged (a change is answered once its line is written).
        let Ok(entry) = serde_json::from_slice::<Entry>(line) else {
            match n == last {
                true => tracing::warn!(journal = %path.display(), "journal line {} is torn; ignoring it", n + 1),
                false => tracing::error!(journal = %path.display(), "journal line {} is damaged; skipping it", n + 1),
            }
            continue;
        };
        match entry {
            Entry::Put(r) => {
                // A resource put again is no longer deleted (as the validator does).
                let (kind, id) = r.kind_id();
                state.forget_tombstone(kind, id);
                let r = shared_ids(state, r);
                state.put(r)
            }
            Entry::Delete { kind, id } => {
                state.delete(ResourceType::try_from(kind).unwrap_or(ResourceType::Gateway), &id)
            }
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
    Ok(())
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
    let lost = |vpc: &str, ips: &[crate::model::FixedIp]| {
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

/// Writes `snapshot` atomically; returns its size.
fn write_snapshot(dir: &Path, snapshot: &Snapshot) -> Result<u64> {
    let tmp = dir.join(format!("{SNAPSHOT}.tmp"));
    let mut w = BufWriter::new(File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?);
    serde_json::to_writer(&mut w, snapshot)?;
    w.flush()?;
    drop(w);
    let size = fs::metadata(&tmp)?.len();
    // Atomic replace: a crash leaves either the old or the new snapshot.
    fs::rename(&tmp, dir.join(SNAPSHOT))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{validate, Naming};
    use alioth_proto::schema::*;

    /// A scratch state directory, removed when dropped (also when the test fails).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("alioth-store-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            Scratch(dir)
        }
    }

    impl std::ops::Deref for Scratch {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Validates `msg`, which must be accepted whole, and records it.
    fn accept(store: &mut Store, state: &mut State, msg: &GoalState) {
        let (outcomes, changes) = validate(state, msg, &Naming::default());
        assert!(
            outcomes.iter().all(|o| o.status == OperationStatus::Success),
            "{outcomes:?}"
        );
        store.record(state, &changes).unwrap();
    }

    #[test]
    fn journal_replays_to_the_same_state_and_survives_a_torn_line() {
        let dir = Scratch::new("torn");
        let (mut store, mut state) = Store::open(&dir).unwrap();
        let vpc = |op: OperationType, id: &str, rev| VpcState {
            operation_type: op as i32,
            configuration: Some(VpcConfiguration {
                id: id.into(),
                tunnel_id: 7,
                revision_number: rev,
                ..Default::default()
            }),
        };
        for msg in [
            GoalState {
                vpc_states: vec![vpc(OperationType::Create, "a", 1)],
                ..Default::default()
            },
            GoalState {
                vpc_states: vec![vpc(OperationType::Delete, "a", 2)],
                ..Default::default()
            },
            GoalState {
                vpc_states: vec![vpc(OperationType::Create, "b", 1)],
                ..Default::default()
            },
            GoalState {
                vpc_states: vec![vpc(OperationType::Delete, "b", 2)],
                ..Default::default()
            },
            // Created again: its tombstone goes.
            GoalState {
                vpc_states: vec![vpc(OperationType::Create, "a", 3)],
                ..Default::default()
            },
        ] {
            accept(&mut store, &mut state, &msg);
        }
        drop(store);
        // A write cut short by SIGKILL.
        let mut j = OpenOptions::new().append(true).open(dir.join(JOURNAL)).unwrap();
        j.write_all(b"{\"Put\":{\"Vpc\":{\"id\":").unwrap();
        drop(j);
        let (_, replayed) = Store::open(&dir).unwrap();
        assert_eq!(replayed, state);
        assert_eq!(
            replayed.tombstones.get(&(ResourceType::Vpc as i32, "b".into())),
            Some(&2)
        );
        assert_eq!(replayed.tombstones.get(&(ResourceType::Vpc as i32, "a".into())), None);
        assert!(replayed.vpcs.contains_key("a"));
        // Compacted: a second open reads the snapshot alone.
        let (_, again) = Store::open(&dir).unwrap();
        assert_eq!(again, state);
    }

    /// Read back from the journal and then from the snapshot, ports and neighbors share their
    /// VPC's and subnet's ids, as validated ones do.
    /// A damaged byte in one journal line (here one that is not even UTF-8) costs that record only:
    /// the lines after it are read.
    #[test]
    fn a_damaged_line_costs_that_record_only() {
        use crate::plan::tests::vpc;
        let dir = Scratch::new("damaged");
        let (mut store, mut state) = Store::open(&dir).unwrap();
        for (id, vni) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
            let msg = GoalState {
                vpc_states: vec![vpc(OperationType::Create, id, vni)],
                ..Default::default()
            };
            accept(&mut store, &mut state, &msg);
        }
        drop(store);
        let journal = dir.join(JOURNAL);
        let mut bytes = fs::read(&journal).unwrap();
        let second = bytes.iter().position(|b| *b == b'\n').unwrap() + 5;
        bytes[second] = 0xff;
        fs::write(&journal, bytes).unwrap();
        let read = Store::read(&dir).unwrap();
        let ids: Vec<&str> = read.vpcs.keys().map(String::as_str).collect();
        assert_eq!(ids, ["a", "c", "d"]);
    }

    /// A record that deletes a VPC under its subnet and port (inconsistent) reads back without
    /// them, instead of keeping the agent from starting.
    #[test]
    fn an_inconsistent_record_reads_back_without_its_orphans() {
        use crate::plan::tests::{neighbor, port, subnet, vpc};
        let dir = Scratch::new("orphans");
        let (mut store, mut state) = Store::open(&dir).unwrap();
        let msg = GoalState {
            vpc_states: vec![vpc(OperationType::Create, "v", 1), vpc(OperationType::Create, "w", 2)],
            subnet_states: vec![
                subnet(OperationType::Create, "s", "v", 1),
                subnet(OperationType::Create, "t", "w", 2),
            ],
            port_states: vec![
                port(OperationType::Create, "p", "v", "s", 1, 10),
                port(OperationType::Create, "q", "w", "t", 2, 10),
            ],
            neighbor_states: vec![neighbor(OperationType::Create, "n", "v", "s", 1, 11)],
            ..Default::default()
        };
        accept(&mut store, &mut state, &msg);
        let mut line = serde_json::to_vec(&EntryRef::Delete {
            kind: ResourceType::Vpc as i32,
            id: "v",
        })
        .unwrap();
        line.push(b'\n');
        store.append(&line).unwrap();
        drop(store);
        let read = Store::read(&dir).unwrap();
        assert!(!read.vpcs.contains_key("v") && !read.subnets.contains_key("s"));
        assert!(
            read.ports().keys().map(|k| &**k).eq(["q"]),
            "p went with its VPC, q stays"
        );
        assert!(read.neighbors().is_empty());
        assert!(read.indexes_match_contents());
    }

    #[test]
    fn replayed_ports_and_neighbors_share_their_vpc_and_subnet_ids() {
        let dir = Scratch::new("ids");
        let (mut store, mut state) = Store::open(&dir).unwrap();
        use crate::plan::tests::{neighbor, port, subnet, vpc};
        use OperationType::Create;
        let msg = GoalState {
            vpc_states: vec![vpc(Create, "v", 7)],
            subnet_states: vec![subnet(Create, "s", "v", 0)],
            port_states: vec![port(Create, "p", "v", "s", 0, 10)],
            neighbor_states: vec![neighbor(Create, "n", "v", "s", 0, 11)],
            ..Default::default()
        };
        accept(&mut store, &mut state, &msg);
        drop(store);
        // From the journal, then (compacted) from the snapshot.
        for _ in 0..2 {
            let (_, replayed) = Store::open(&dir).unwrap();
            assert_eq!(replayed, state);
            let (vpc, subnet) = (&replayed.vpcs["v"].id, &replayed.subnets["s"].id);
            let (p, n) = (&replayed.ports()["p"], &replayed.neighbors()["n"]);
            for (vpc_id, fixed_ips) in [(&p.vpc_id, &p.fixed_ips), (&n.vpc_id, &n.fixed_ips)] {
                assert!(std::sync::Arc::ptr_eq(vpc_id, vpc));
                assert!(std::sync::Arc::ptr_eq(&fixed_ips[0].subnet_id, subnet));
            }
        }
    }

    /// A message replayed as it was adds nothing to the journal; one that changes a resource does.
    #[test]
    fn a_replayed_message_is_not_recorded_again() {
        use crate::plan::tests::{subnet, vpc};
        use OperationType::{Create, Update};
        let dir = Scratch::new("replay");
        let (mut store, mut state) = Store::open(&dir).unwrap();
        let journal = || fs::metadata(dir.join(JOURNAL)).unwrap().len();
        let msg = GoalState {
            vpc_states: vec![vpc(Create, "v", 7)],
            subnet_states: vec![subnet(Create, "s", "v", 0)],
            ..Default::default()
        };
        accept(&mut store, &mut state, &msg);
        let once = journal();
        assert!(once > 0);
        accept(&mut store, &mut state, &msg);
        assert_eq!(journal(), once, "the replay was recorded");
        accept(
            &mut store,
            &mut state,
            &GoalState {
                vpc_states: vec![vpc(Update, "v", 8)],
                ..Default::default()
            },
        );
        assert!(journal() > once, "the VNI change was not recorded");
        drop(store);
        assert_eq!(Store::open(&dir).unwrap().1, state);
    }

    /// A running agent's journal is compacted once it outgrows the snapshot (later while messages
    /// keep coming): it stays bounded, and what is read back is what was recorded, tombstones
    /// included.
    #[test]
    fn a_running_journal_is_compacted_and_stays_bounded() {
        use crate::plan::tests::vpc;
        use OperationType::{Create, Delete, Update};
        let dir = Scratch::new("compact");
        let (mut store, mut state) = Store::open(&dir).unwrap();
        store.set_compact_after(4096);
        let journal = || fs::metadata(dir.join(JOURNAL)).unwrap().len();
        let (mut largest_idle, mut largest_busy) = (0, 0);
        for i in 1..=600u32 {
            // VPC "a" changes VNI every time; "b" comes and goes, leaving tombstones.
            let mut a = vpc(Update, "a", 1 + i % 50);
            a.configuration.as_mut().unwrap().revision_number = i;
            let mut b = vpc(if i % 2 == 1 { Create } else { Delete }, "b", 1000);
            b.configuration.as_mut().unwrap().revision_number = i;
            let msg = GoalState {
                vpc_states: vec![a, b],
                ..Default::default()
            };
            accept(&mut store, &mut state, &msg);
            let idle = i <= 300;
            store.compact_if_due(&state, idle).unwrap();
            store.reap(true);
            let largest = if idle { &mut largest_idle } else { &mut largest_busy };
            *largest = (*largest).max(journal());
        }
        assert!(
            largest_idle < 4096 + 1024,
            "idle, the journal grew to {largest_idle} bytes"
        );
        assert!(
            (4096 + 1024..4 * 4096 + 1024).contains(&largest_busy),
            "busy, the journal grew to {largest_busy} bytes"
        );
        assert!(state
            .tombstones
            .contains_key(&(ResourceType::Vpc as i32, "b".to_string())));
        drop(store);
        assert_eq!(Store::open(&dir).unwrap().1, state);
    }

    /// A crash at any point of a compaction reads back the same state: before its snapshot is in
    /// place (the old snapshot, the retired and the current journal), and after it but before the
    /// retired journal it holds is removed.
    #[test]
    fn a_crash_during_a_compaction_reads_back_the_same_state() {
        use crate::plan::tests::{port, subnet, vpc};
        use OperationType::{Create, Delete, Update};
        let (dir, before) = (Scratch::new("crash"), Scratch::new("crash-before"));
        let (mut store, mut state) = Store::open(&dir).unwrap();
        let steps = [
            GoalState {
                vpc_states: vec![vpc(Create, "v", 7)],
                subnet_states: vec![subnet(Create, "s", "v", 0)],
                port_states: vec![port(Create, "p1", "v", "s", 0, 10), port(Create, "p2", "v", "s", 0, 11)],
                ..Default::default()
            },
            GoalState {
                port_states: vec![port(Update, "p1", "v", "s", 0, 12), port(Delete, "p2", "v", "s", 0, 11)],
                ..Default::default()
            },
            GoalState {
                vpc_states: vec![vpc(Update, "v", 8)],
                port_states: vec![port(Create, "p3", "v", "s", 0, 11)],
                ..Default::default()
            },
        ];
        accept(&mut store, &mut state, &steps[0]);
        accept(&mut store, &mut state, &steps[1]);
        let retired = fs::read(dir.join(JOURNAL)).unwrap();
        store.compact(&state).unwrap();
        store.reap(true);
        accept(&mut store, &mut state, &steps[2]);
        drop(store);
        let current = fs::read(dir.join(JOURNAL)).unwrap();
        let name = format!("{}{:010}{}", RETIRED.0, 1, RETIRED.1);

        // After: the new snapshot, its retired journal still there, the current journal.
        fs::write(dir.join(&name), &retired).unwrap();
        assert_eq!(Store::open(&dir).unwrap().1, state);
        // Before: no snapshot yet, the retired journal, the current journal.
        fs::create_dir_all(&*before).unwrap();
        fs::write(before.join(&name), &retired).unwrap();
        fs::write(before.join(JOURNAL), &current).unwrap();
        assert_eq!(Store::open(&before).unwrap().1, state);
        // Both compacted what they read: no retired journal is left.
        for d in [&dir, &before] {
            assert!(retired_journals(d).unwrap().is_empty());
            assert_eq!(Store::open(d).unwrap().1, state);
        }
    }

    /// A compaction whose snapshot cannot be written leaves a valid record, read back in full (a
    /// start that cannot compact still starts); the next one that can puts everything in its
    /// snapshot and removes the retired journals.
    #[test]
    fn a_failed_compaction_leaves_a_valid_record_and_a_later_one_completes() {
        use crate::plan::tests::vpc;
        use OperationType::Create;
        let dir = Scratch::new("fail");
        let (mut store, mut state) = Store::open(&dir).unwrap();
        let msg = |id: &str, vni| GoalState {
            vpc_states: vec![vpc(Create, id, vni)],
            ..Default::default()
        };
        accept(&mut store, &mut state, &msg("a", 1));
        // The snapshot's temporary file cannot be created where a directory stands.
        let blocker = dir.join(format!("{SNAPSHOT}.tmp"));
        fs::create_dir(&blocker).unwrap();
        store.compact(&state).unwrap();
        store.reap(true);
        assert_eq!(retired_journals(&dir).unwrap().len(), 1);
        assert!(!dir.join(SNAPSHOT).exists());
        accept(&mut store, &mut state, &msg("b", 2));
        drop(store);
        // Restarted while it still fails: everything is read back.
        assert_eq!(Store::open(&dir).unwrap().1, state);
        fs::remove_dir(&blocker).unwrap();
        // Restarted once it can: compacted, nothing retired left, the same state.
        assert_eq!(Store::open(&dir).unwrap().1, state);
        assert!(retired_journals(&dir).unwrap().is_empty());
        assert!(dir.join(SNAPSHOT).exists());
        assert_eq!(Store::open(&dir).unwrap().1, state);
    }
}

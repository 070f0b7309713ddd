//! The agent's record of applied goal state: a snapshot plus an append-only journal of changes.
//!
//! Every accepted change is appended (one JSON line) before the reply goes out, so an agent killed
//! at any point restarts with exactly what it had acknowledged. At start the journal is replayed
//! onto the snapshot and compacted into a new snapshot, and so it is while the agent runs once the
//! journal outgrows the snapshot: the record stays proportional to the state, however long the
//! agent runs. A change that leaves its resource as it was (a replayed message) is not recorded.
//! No fsync: a process crash keeps the page cache, and a machine crash loses the BPF maps as well.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use alioth_proto::schema::ResourceType;

use crate::jsonl;
use crate::model::{FixedIps, Id, State};
use crate::validate::{Change, Resource};

const SNAPSHOT: &str = "state.json";
const JOURNAL: &str = "journal.jsonl";

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
}

/// Journal size from which a running agent compacts by default: a compaction rewrites the whole
/// state (about a second per million resources here), so it waits until the journal is worth it,
/// and its cost per byte recorded stays constant.
pub const COMPACT_AFTER: u64 = 64 << 20;

impl Store {
    /// Opens (creating) `dir`, returns the recorded state, and compacts the journal into a snapshot.
    pub fn open(dir: &Path) -> Result<(Store, State)> {
        let started = std::time::Instant::now();
        fs::create_dir_all(dir).with_context(|| format!("create state directory {}", dir.display()))?;
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
        let journal = dir.join(JOURNAL);
        if journal.exists() {
            for (n, line) in BufReader::new(File::open(&journal)?).lines().enumerate() {
                let line = line?;
                // A torn last line (killed mid-write) was never acknowledged: stop there.
                let Ok(entry) = serde_json::from_str::<Entry>(&line) else {
                    tracing::warn!("journal line {} is incomplete; ignoring it and what follows", n + 1);
                    break;
                };
                match entry {
                    Entry::Put(r) => {
                        // A resource put again is no longer deleted (as the validator does).
                        let (kind, id) = r.kind_id();
                        state.forget_tombstone(kind, id);
                        state.put(shared_ids(&state, r))
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
        }
        let replayed = started.elapsed();
        let (snapshot, journal) = compact(dir, &state)?;
        tracing::info!(
            replay_ms = replayed.as_millis() as u64,
            snapshot_ms = (started.elapsed() - replayed).as_millis() as u64,
            "journal replayed and compacted"
        );
        let store = Store {
            dir: dir.to_path_buf(),
            journal,
            appended: 0,
            snapshot,
            compact_after: COMPACT_AFTER,
        };
        Ok((store, state))
    }

    /// Sets the journal size from which `compact_if_due` compacts (`COMPACT_AFTER` by default).
    pub fn set_compact_after(&mut self, bytes: u64) {
        self.compact_after = bytes;
    }

    /// Compacts the journal into a new snapshot of `state` (which must be what the journal leads
    /// to) once the journal has grown past its threshold and twice the snapshot, and either the
    /// agent is `idle` or the journal is four times past that (a bulk load is not held up by
    /// compactions it would soon make moot, and a busy agent's journal is bounded all the same).
    pub fn compact_if_due(&mut self, state: &State, idle: bool) -> Result<()> {
        let due = self.compact_after.max(2 * self.snapshot);
        if self.appended < due || (!idle && self.appended < 4 * due) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let journal = std::mem::take(&mut self.appended);
        // On failure (a full disk) the journal stands as it was, still valid, and the next try
        // waits until as much again has been appended.
        (self.snapshot, self.journal) = compact(&self.dir, state)?;
        tracing::info!(
            journal_bytes = journal,
            snapshot_bytes = self.snapshot,
            millis = started.elapsed().as_millis() as u64,
            "journal compacted"
        );
        Ok(())
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
        self.journal
            .write_all(lines)
            .and_then(|()| self.journal.flush())
            .with_context(|| format!("write the journal in {}", self.dir.display()))?;
        self.appended += lines.len() as u64;
        Ok(())
    }

    /// Removes the record (for `--reset`).
    pub fn remove(dir: &Path) -> Result<()> {
        for f in [SNAPSHOT, JOURNAL] {
            let p = dir.join(f);
            if p.exists() {
                fs::remove_file(&p).with_context(|| format!("remove {}", p.display()))?;
            }
        }
        let _ = fs::remove_dir(dir);
        Ok(())
    }
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

/// Writes the snapshot of `state`, then empties the journal: (snapshot size, the journal to append
/// to). A crash between the two replays the journal onto the snapshot it led to, which changes
/// nothing.
fn compact(dir: &Path, state: &State) -> Result<(u64, BufWriter<File>)> {
    let size = write_snapshot(dir, state)?;
    let path = dir.join(JOURNAL);
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("truncate {}", path.display()))?;
    Ok((size, BufWriter::new(file)))
}

/// Writes the snapshot of `state` atomically; returns its size.
fn write_snapshot(dir: &Path, state: &State) -> Result<u64> {
    let resources = state.resources().collect();
    let tombstones = state
        .tombstones
        .iter()
        .map(|((k, id), r)| (*k, id.clone(), *r))
        .collect();
    let tmp = dir.join(format!("{SNAPSHOT}.tmp"));
    let mut w = BufWriter::new(File::create(&tmp)?);
    serde_json::to_writer(&mut w, &Snapshot { resources, tombstones })?;
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
        let dir = std::env::temp_dir().join(format!("alioth-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
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
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Read back from the journal and then from the snapshot, ports and neighbors share their
    /// VPC's and subnet's ids, as validated ones do.
    #[test]
    fn replayed_ports_and_neighbors_share_their_vpc_and_subnet_ids() {
        let dir = std::env::temp_dir().join(format!("alioth-store-ids-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
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
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A message replayed as it was adds nothing to the journal; one that changes a resource does.
    #[test]
    fn a_replayed_message_is_not_recorded_again() {
        use crate::plan::tests::{subnet, vpc};
        use OperationType::{Create, Update};
        let dir = std::env::temp_dir().join(format!("alioth-store-replay-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
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
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A running agent's journal is compacted once it outgrows the snapshot (later while messages
    /// keep coming): it stays bounded, and what is read back is what was recorded, tombstones
    /// included.
    #[test]
    fn a_running_journal_is_compacted_and_stays_bounded() {
        use crate::plan::tests::vpc;
        use OperationType::{Create, Delete, Update};
        let dir = std::env::temp_dir().join(format!("alioth-store-compact-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
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
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! The record on a real filesystem: replay, damage, compaction, crashes.
use super::*;
use crate::goalstate::validate::{validate, Naming};
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

/// Accepts one message per VPC (id, VNI), each a journal line of its own.
fn accept_vpcs(store: &mut Store, state: &mut State, vpcs: &[(&str, u32)]) {
    for (id, vni) in vpcs {
        let msg = GoalState {
            vpc_states: vec![crate::goalstate::plan::tests::vpc(OperationType::Create, id, *vni)],
            ..Default::default()
        };
        accept(store, state, &msg);
    }
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
    let dir = Scratch::new("damaged");
    let (mut store, mut state) = Store::open(&dir).unwrap();
    accept_vpcs(&mut store, &mut state, &[("a", 1), ("b", 2), ("c", 3), ("d", 4)]);
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
    use crate::goalstate::plan::tests::{neighbor, port, subnet, vpc};
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
    let mut line = Vec::new();
    let delete = EntryRef::Delete {
        kind: ResourceType::Vpc as i32,
        id: "v",
    };
    lines::write(&mut line, &delete).unwrap();
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
    use crate::goalstate::plan::tests::{neighbor, port, subnet, vpc};
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
    use crate::goalstate::plan::tests::{subnet, vpc};
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
    use crate::goalstate::plan::tests::vpc;
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
    use crate::goalstate::plan::tests::{port, subnet, vpc};
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
    use crate::goalstate::plan::tests::vpc;
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

/// A change that leaves the line valid JSON (a digit of a VNI) is caught by the line's checksum:
/// that VPC is left out, the damage reported, and a copy of the damaged journal kept.
#[test]
fn a_line_that_still_parses_but_changed_is_caught() {
    let dir = Scratch::new("flipped");
    let (mut store, mut state) = Store::open(&dir).unwrap();
    assert!(!store.damage().any());
    accept_vpcs(&mut store, &mut state, &[("a", 1001), ("b", 2002), ("c", 3003)]);
    drop(store);
    let journal = dir.join(JOURNAL);
    let text = fs::read_to_string(&journal).unwrap();
    assert_eq!(text.matches("2002").count(), 1, "{text}");
    fs::write(&journal, text.replace("2002", "2009")).unwrap();
    let (store, read) = Store::open(&dir).unwrap();
    assert_eq!(read.vpcs.keys().map(String::as_str).collect::<Vec<_>>(), ["a", "c"]);
    let damage = store.damage();
    assert!(damage.any() && damage.lines == 1 && damage.unreadable.is_empty());
    assert_eq!(damage.kept.len(), 1);
    assert!(
        fs::read_to_string(&damage.kept[0]).unwrap().contains("2009"),
        "the copy is as it was found"
    );
}

/// A snapshot of garbage costs the snapshot, not the start: what the journal holds is read, the
/// damage reported, and the garbage kept for whoever looks into it.
#[test]
fn an_unreadable_snapshot_is_reported_and_kept() {
    use crate::goalstate::plan::tests::vpc;
    let dir = Scratch::new("garbage");
    let (mut store, mut state) = Store::open(&dir).unwrap();
    let msg = GoalState {
        vpc_states: vec![vpc(OperationType::Create, "a", 1)],
        ..Default::default()
    };
    accept(&mut store, &mut state, &msg);
    drop(store);
    drop(Store::open(&dir).unwrap());
    fs::write(dir.join(SNAPSHOT), b"\x00\x01 not a record at all \xff\n").unwrap();
    let (store, read) = Store::open(&dir).unwrap();
    assert!(read.vpcs.is_empty());
    assert!(
        store.damage().any() && store.damage().lines == 1,
        "{:?}",
        store.damage()
    );
    assert_eq!(store.damage().kept.len(), 1);
}

/// The snapshot earlier agents wrote (one JSON document) is read, and the next compaction
/// replaces it with checksummed lines.
#[test]
fn a_snapshot_of_an_earlier_agent_is_read_and_replaced() {
    let dir = Scratch::new("legacy");
    fs::create_dir_all(&*dir).unwrap();
    let legacy = r#"{"resources":[{"Vpc":{"id":"v","vni":7,"revision":1}}],"tombstones":[[1,"gone",3]]}"#;
    fs::write(dir.join(LEGACY_SNAPSHOT), legacy).unwrap();
    let (store, read) = Store::open(&dir).unwrap();
    assert!(!store.damage().any(), "{:?}", store.damage());
    assert_eq!(read.vpcs["v"].vni, 7);
    assert_eq!(read.tombstones.get(&(1, "gone".to_string())), Some(&3));
    drop(store);
    assert!(!dir.join(LEGACY_SNAPSHOT).exists() && dir.join(SNAPSHOT).exists());
    let (_, again) = Store::open(&dir).unwrap();
    assert_eq!(again, read);
}

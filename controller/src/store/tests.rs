//! The record on a real filesystem: read back, damage, an earlier agent's record.
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

/// Accepts one message per VPC (id, VNI), each a transaction of its own.
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
fn the_record_reads_back_the_same_state_tombstones_included() {
    let dir = Scratch::new("back");
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
    for (op, id, rev) in [
        (OperationType::Create, "a", 1),
        (OperationType::Delete, "a", 2),
        (OperationType::Create, "b", 1),
        (OperationType::Delete, "b", 2),
        // Created again: its tombstone goes.
        (OperationType::Create, "a", 3),
    ] {
        let msg = GoalState {
            vpc_states: vec![vpc(op, id, rev)],
            ..Default::default()
        };
        accept(&mut store, &mut state, &msg);
    }
    drop(store);
    let (store, read) = Store::open(&dir).unwrap();
    assert!(!store.damage().any(), "{:?}", store.damage());
    assert_eq!(read, state);
    assert_eq!(read.tombstones.get(&(ResourceType::Vpc as i32, "b".into())), Some(&2));
    assert_eq!(read.tombstones.get(&(ResourceType::Vpc as i32, "a".into())), None);
    assert!(read.vpcs.contains_key("a"));
    drop(store);
    assert_eq!(Store::read(&dir).unwrap(), state);
}

/// A value a bad disk changed so that it still decodes (the VNI one higher) is caught by its
/// checksum: that VPC is left out, the damage reported, and a copy of the database kept.
#[test]
fn a_row_that_still_parses_but_changed_is_caught_and_costs_that_row_only() {
    let dir = Scratch::new("flipped");
    let (mut store, mut state) = Store::open(&dir).unwrap();
    assert!(!store.damage().any());
    accept_vpcs(&mut store, &mut state, &[("a", 1001), ("b", 2002), ("c", 3003)]);
    // The VNI one higher, where postcard wrote it (a varint: 2002 is d2 0f).
    let mut body: Vec<u8> = store
        .db
        .query_row("SELECT body FROM resources WHERE id = 'b'", [], |r| r.get(0))
        .unwrap();
    let at = body.windows(2).position(|w| w == [0xd2, 0x0f]).unwrap();
    body[at] = 0xd3;
    let changed = store
        .db
        .execute("UPDATE resources SET body = ?1 WHERE id = 'b'", [&body])
        .unwrap();
    assert_eq!(changed, 1);
    drop(store);
    let (store, read) = Store::open(&dir).unwrap();
    assert_eq!(read.vpcs.keys().map(String::as_str).collect::<Vec<_>>(), ["a", "c"]);
    let damage = store.damage();
    assert!(
        damage.any() && damage.rows == 1 && damage.unreadable.is_empty(),
        "{damage:?}"
    );
    assert!(
        damage
            .kept
            .iter()
            .any(|k| k.to_string_lossy().contains("record.sqlite.damaged-")),
        "{damage:?}"
    );
}

/// A database of garbage costs the database, not the start: the damage is reported, the garbage
/// kept for whoever looks into it, and a new record takes what comes next.
#[test]
fn an_unreadable_database_is_reported_kept_and_replaced() {
    let dir = Scratch::new("garbage");
    let (mut store, mut state) = Store::open(&dir).unwrap();
    accept_vpcs(&mut store, &mut state, &[("a", 1)]);
    drop(store);
    for f in DB_FILES {
        let _ = fs::remove_file(dir.join(f));
    }
    fs::write(dir.join(DB), b"\x00\x01 not a record at all \xff\n".repeat(200)).unwrap();
    let (mut store, mut read) = Store::open(&dir).unwrap();
    assert!(read.vpcs.is_empty());
    assert!(
        store.damage().any() && !store.damage().unreadable.is_empty(),
        "{:?}",
        store.damage()
    );
    assert_eq!(store.damage().kept.len(), 1);
    assert_eq!(damaged_copies(&dir).len(), 1);
    accept_vpcs(&mut store, &mut read, &[("b", 2)]);
    drop(store);
    let (store, again) = Store::open(&dir).unwrap();
    assert!(!store.damage().any());
    assert_eq!(again, read);
}

/// A message replayed as it was writes nothing; one that changes a resource does.
#[test]
fn a_replayed_message_is_not_recorded_again() {
    use crate::goalstate::plan::tests::{subnet, vpc};
    use OperationType::{Create, Update};
    let dir = Scratch::new("replay");
    let (mut store, mut state) = Store::open(&dir).unwrap();
    let log = || fs::metadata(dir.join(DB_FILES[1])).unwrap().len();
    let msg = GoalState {
        vpc_states: vec![vpc(Create, "v", 7)],
        subnet_states: vec![subnet(Create, "s", "v", 0)],
        ..Default::default()
    };
    accept(&mut store, &mut state, &msg);
    let once = log();
    assert!(once > 0);
    accept(&mut store, &mut state, &msg);
    assert_eq!(log(), once, "the replay was recorded");
    accept(
        &mut store,
        &mut state,
        &GoalState {
            vpc_states: vec![vpc(Update, "v", 8)],
            ..Default::default()
        },
    );
    assert!(log() > once, "the VNI change was not recorded");
    drop(store);
    assert_eq!(Store::open(&dir).unwrap().1, state);
}

/// An earlier agent's record (a snapshot of lines, a retired journal, the journal; a damaged line
/// in it) is carried over into the database once, then removed; the damaged line is reported.
#[test]
fn an_earlier_agents_record_is_carried_over_once() {
    let dir = Scratch::new("legacy");
    fs::create_dir_all(&*dir).unwrap();
    let sealed = |json: &str| {
        let mut out = json.as_bytes().to_vec();
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(format!("\t{crc:08x}\n").as_bytes());
        out
    };
    let vpc = |id: &str, vni: u32| format!(r#"{{"Put":{{"Vpc":{{"id":"{id}","vni":{vni},"revision":1}}}}}}"#);
    fs::write(dir.join(legacy::SNAPSHOT), sealed(&vpc("a", 1))).unwrap();
    fs::write(dir.join("journal-0000000001.jsonl"), sealed(&vpc("b", 2))).unwrap();
    let mut journal = sealed(&vpc("c", 3));
    journal.extend(b"{\"Put\": damaged\t00000000\n");
    journal.extend(sealed(r#"{"Tombstone":{"kind":0,"id":"gone","revision":4}}"#));
    fs::write(dir.join(legacy::JOURNAL), journal).unwrap();
    let (store, read) = Store::open(&dir).unwrap();
    assert_eq!(
        read.vpcs.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(read.tombstones.get(&(0, "gone".to_string())), Some(&4));
    assert_eq!(store.damage().rows, 1, "{:?}", store.damage());
    assert!(legacy::files(&dir).is_empty(), "the old files are gone");
    drop(store);
    let (store, again) = Store::open(&dir).unwrap();
    assert!(!store.damage().any());
    assert_eq!(again, read);
}

/// The snapshot agents before checksummed lines wrote (one JSON document) is carried over too.
#[test]
fn a_snapshot_of_an_older_agent_is_carried_over() {
    let dir = Scratch::new("older");
    fs::create_dir_all(&*dir).unwrap();
    let old = r#"{"resources":[{"Vpc":{"id":"v","vni":7,"revision":1}}],"tombstones":[[1,"gone",3]]}"#;
    fs::write(dir.join(legacy::OLD_SNAPSHOT), old).unwrap();
    assert_eq!(
        Store::read(&dir).unwrap().vpcs["v"].vni,
        7,
        "read before it is carried over"
    );
    let (store, read) = Store::open(&dir).unwrap();
    assert!(!store.damage().any(), "{:?}", store.damage());
    assert_eq!(read.vpcs["v"].vni, 7);
    assert_eq!(read.tombstones.get(&(1, "gone".to_string())), Some(&3));
    drop(store);
    assert!(!dir.join(legacy::OLD_SNAPSHOT).exists());
    assert_eq!(Store::read(&dir).unwrap(), read);
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
    store
        .append(&Rows(vec![Row::Delete {
            kind: ResourceType::Vpc as i32,
            id: "v".into(),
            tombstone: None,
        }]))
        .unwrap();
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
    // Read back twice: the second start reads what the first left.
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

/// Rows staged beside the map writes are committed as they are, or dropped and written again
/// without the changes that failed; a staged delete's tombstone, and a re-create's removal of it,
/// count only once committed.
#[test]
fn a_staged_transaction_commits_or_rolls_back_whole() {
    use crate::goalstate::plan::tests::vpc;
    use OperationType::{Create, Delete};
    let dir = Scratch::new("staged");
    let (mut store, mut state) = Store::open(&dir).unwrap();
    accept_vpcs(&mut store, &mut state, &[("a", 1), ("b", 2)]);
    let staged = |store: &mut Store, state: &mut State, msg: GoalState| {
        let (_, changes) = validate(state, &msg, &Naming::default());
        store.stage(state, &changes).unwrap();
        changes
    };
    // Deleted and committed: a tombstone.
    staged(
        &mut store,
        &mut state,
        GoalState {
            vpc_states: vec![vpc(Delete, "a", 1)],
            ..Default::default()
        },
    );
    store.commit_staged().unwrap();
    let before = state.clone();
    // Staged, then dropped: the record is as before, tombstone included.
    let mut attempt = state.clone();
    staged(
        &mut store,
        &mut attempt,
        GoalState {
            vpc_states: vec![vpc(Create, "a", 5), vpc(Delete, "b", 2)],
            ..Default::default()
        },
    );
    store.rollback_staged();
    assert_eq!(Store::read(&dir).unwrap(), before);
    // Re-created for real: its tombstone goes.
    let changes = staged(
        &mut store,
        &mut state,
        GoalState {
            vpc_states: vec![vpc(Create, "a", 5)],
            ..Default::default()
        },
    );
    assert_eq!(changes.len(), 1);
    store.commit_staged().unwrap();
    drop(store);
    let (_, read) = Store::open(&dir).unwrap();
    assert_eq!(read, state);
    assert!(read.tombstones.is_empty() && read.vpcs.contains_key("a"));
}

/// A record only a later agent reads is refused, not treated as damage: it stays as it is.
#[test]
fn a_record_of_a_later_format_stops_the_start_and_stays() {
    let dir = Scratch::new("later");
    let (mut store, mut state) = Store::open(&dir).unwrap();
    accept_vpcs(&mut store, &mut state, &[("a", 1)]);
    store.db.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(store);
    let err = Store::open(&dir).err().unwrap();
    assert!(format!("{err:#}").contains("only a later agent reads"), "{err:#}");
    assert!(damaged_copies(&dir).is_empty());
    assert!(dir.join(DB).exists());
}

//! Reading the record back: the state a database holds, shared ids, and what a damaged record
//! left without its parents.

use std::collections::BTreeMap;

use alioth_proto::schema::ResourceType;
use anyhow::Result;
use rusqlite::{Connection, OpenFlags};

use crate::goalstate::model::{FixedIps, Id, Parts, Resource, State, Subnet, Vpc};

/// Rows decoded per hand-over from the decoding thread.
const BATCH: usize = 4096;

/// The state `db` holds, and how many rows were skipped: their checksum or body is wrong. Parents
/// come first (kinds in the order VPC, subnet, port, neighbor, DHCP), so that ports and neighbors
/// share their ids. Rows are read and decoded on one thread while this one collects them; the
/// state's indexes are then built at once (`Parts::into_state`).
pub(super) fn read_db(db: &Connection) -> Result<(State, usize)> {
    let mut parts = Parts::default();
    let mut bad = 0;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Option<Resource>>>(4);
    // The decoding thread reads through a connection of its own (read-only; WAL lets it).
    let path = db.path().filter(|p| !p.is_empty()).map(std::path::PathBuf::from);
    let spawned = path.and_then(|path| {
        std::thread::Builder::new()
            .name("alioth-decode".into())
            .spawn(move || {
                let reader = Connection::open_with_flags(
                    &path,
                    // This thread's alone: SQLite need not lock around every step.
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                decode(&reader, |batch| tx.send(batch).is_ok())
            })
            .ok()
    });
    match spawned {
        Some(decoder) => {
            for batch in rx.iter() {
                bad += collect(&mut parts, batch);
            }
            decoder
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("decoding the record panicked")))?;
        }
        // No thread to be had: decode and collect here, batch by batch.
        None => decode(db, |batch| {
            bad += collect(&mut parts, batch);
            true
        })?,
    }
    let mut state = parts.into_state();
    let mut tombs = db.prepare("SELECT kind, id, revision FROM tombstones")?;
    for t in tombs.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))? {
        let (key, rev): ((i32, String), u32) = t?;
        state.tombstones.insert(key, rev);
    }
    Ok((state, bad))
}

/// Reads and decodes every resource row, in batches handed to `out` (which says whether to go
/// on); a damaged row is `None`.
fn decode(db: &Connection, mut out: impl FnMut(Vec<Option<Resource>>) -> bool) -> Result<()> {
    let mut rows = db.prepare("SELECT kind, id, body, crc FROM resources ORDER BY kind")?;
    let mut rows = rows.query([])?;
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(row) = rows.next()? {
        let body = row.get_ref(2)?.as_blob()?;
        let crc: u32 = row.get(3)?;
        let resource = (crc32fast::hash(body) == crc)
            .then(|| {
                postcard::from_bytes::<Resource>(body)
                    .ok()
                    .or_else(|| super::format1::decode(body))
            })
            .flatten()
            .filter(|r| {
                let (kind, id) = r.kind_id();
                row.get::<_, i32>(0).is_ok_and(|k| k == kind as i32)
                    && row.get_ref(1).is_ok_and(|i| i.as_str() == Ok(id))
            });
        if resource.is_none() {
            let id: String = row.get(1).unwrap_or_default();
            tracing::error!(resource_id = id, "a row of the record is damaged; skipping it");
        }
        batch.push(resource);
        if batch.len() == BATCH && !out(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))) {
            return Ok(());
        }
    }
    if !batch.is_empty() {
        out(batch);
    }
    Ok(())
}

/// Adds one batch of decoded resources to `parts`; returns how many rows were damaged.
fn collect(parts: &mut Parts, batch: Vec<Option<Resource>>) -> usize {
    let mut bad = 0;
    for r in batch {
        match r {
            Some(r) => {
                let r = shared_ids(&parts.vpcs, &parts.subnets, r);
                parts.push(r);
            }
            None => bad += 1,
        }
    }
    bad
}

/// Removes what a damaged record left without its parents (a subnet without its VPC, a port or
/// neighbor without its VPC or a subnet, a DHCP entry without its subnet), reporting each: the
/// agent starts with the rest rather than not at all.
pub(super) fn drop_orphans(state: &mut State) -> usize {
    // What the indexes name tells whether any resource lost its parent, without visiting each.
    if !state.lacks_a_parent() {
        return 0;
    }
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

/// `r` with its VPC and subnet ids shared with the state's own VPC and subnet, as validation makes
/// them: read back, every port and neighbor would otherwise keep copies of its own (a restarted
/// agent with 1M ports used 744 MiB instead of 489).
pub(super) fn shared_ids(
    vpcs: &BTreeMap<String, Vpc>,
    subnets: &BTreeMap<String, Subnet>,
    mut r: Resource,
) -> Resource {
    let share_all = |vpc_id: &mut Id, fixed_ips: &mut FixedIps| {
        if let Some(v) = vpcs.get(&**vpc_id) {
            *vpc_id = v.id.clone();
        }
        for f in fixed_ips.iter_mut() {
            if let Some(s) = subnets.get(&*f.subnet_id) {
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
        _ => {}
    }
    r
}

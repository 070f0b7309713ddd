//! BPF_MAP_UPDATE_BATCH and BPF_MAP_LOOKUP_BATCH, which aya 0.14 does not wrap: one bpf() call
//! writes (or reads) many hash map entries, where one call per entry made the syscalls the largest
//! part of programming 10,000 neighbors, and of reading a flow table of 100,000. Also a plain
//! delete for the map types aya gives no `remove`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd};

use aya::Pod;

/// `enum bpf_cmd` value of BPF_MAP_UPDATE_BATCH (linux/bpf.h, stable ABI since 5.6).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Writes `keys[i]` -> `values[i]` (BPF_ANY) into the hash map `fd`. On failure, the entries
/// before the returned count were written and the error is the next one's.
pub fn update<K: Pod, V: Pod>(fd: BorrowedFd<'_>, keys: &[K], values: &[V]) -> Result<(), (usize, io::Error)> {
    let len = keys.len().min(values.len());
    if len == 0 {
        return Ok(());
    }
    let count = u32::try_from(len).map_err(|_| (0, io::Error::from(io::ErrorKind::InvalidInput)))?;
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: attr is a valid bpf_attr prefix; keys and values hold at least `count` entries each
    // (the packed arrays the kernel reads) and outlive the call; the kernel writes back only
    // `attr.count`.
    unsafe { bpf(BPF_MAP_UPDATE_BATCH, &mut attr) }.map_err(|err| ((attr.count as usize).min(len), err))
}

/// `enum bpf_cmd` value of BPF_MAP_LOOKUP_BATCH (linux/bpf.h, since 5.6).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Entries one BPF_MAP_LOOKUP_BATCH call reads at most.
const READ_CHUNK: usize = 4096;

/// Every entry of the hash map `fd` (plain or LRU), a few thousand per bpf() call. Entries that
/// come and go meanwhile may be missed or seen, as with any walk of a live map.
pub fn read_all<K: Pod + Default + Clone, V: Pod + Default + Clone>(fd: BorrowedFd<'_>) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    walk::<K, V>(fd, |keys, values| {
        out.extend(keys.iter().cloned().zip(values.iter().cloned()))
    })?;
    Ok(out)
}

/// How many entries the hash map `fd` holds, walked as `read_all` walks it but in buffers of one
/// chunk: a table of any size costs the memory of a few thousand entries.
pub fn count<K: Pod + Default + Clone, V: Pod + Default + Clone>(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut n = 0;
    walk::<K, V>(fd, |keys, _| n += keys.len() as u64)?;
    Ok(n)
}

/// Hands each chunk of the map's entries to `chunk`.
fn walk<K: Pod + Default + Clone, V: Pod + Default + Clone>(
    fd: BorrowedFd<'_>,
    mut chunk: impl FnMut(&[K], &[V]),
) -> io::Result<()> {
    let (mut keys, mut values) = (vec![K::default(); READ_CHUNK], vec![V::default(); READ_CHUNK]);
    // The position token: a bucket index for hash maps, room to spare.
    let (mut token, mut first) = ([0u64; 8], true);
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_ptr() as u64 },
            out_batch: token.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: READ_CHUNK as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: attr is a valid bpf_attr prefix; keys and values have room for `count` entries
        // each and the token for the kernel's position, all alive for the call.
        let result = unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        let n = (attr.count as usize).min(READ_CHUNK);
        chunk(&keys[..n], &values[..n]);
        match result {
            Ok(()) => first = false,
            // The last entries came with ENOENT: the walk is over.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// `enum bpf_cmd` values of BPF_MAP_UPDATE_ELEM and BPF_MAP_DELETE_ELEM.
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;

/// The `elem` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Writes `key` -> `value` (BPF_ANY) into the map `fd`: one entry, for kernels that refuse batches.
pub fn update_one<K: Pod, V: Pod>(fd: BorrowedFd<'_>, key: &K, value: &V) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: key as *const K as u64,
        value: value as *const V as u64,
        ..Default::default()
    };
    // SAFETY: attr is a valid bpf_attr prefix; key and value outlive the call and are only read.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }
}

/// Deletes `key` from the map `fd` (for maps whose aya type has no `remove`, the array device map).
pub fn delete<K: Pod>(fd: BorrowedFd<'_>, key: &K) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: key as *const K as u64,
        ..Default::default()
    };
    // SAFETY: attr is a valid bpf_attr prefix; the key outlives the call; nothing is written back.
    unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) }
}

/// Detaches the link pinned at `pin` now (BPF_OBJ_GET, then BPF_LINK_DETACH), whoever else holds
/// it. Unpinning alone leaves the detach to a kernel work queue, some milliseconds later.
pub fn detach_pinned_link(pin: &std::path::Path) -> io::Result<()> {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let path = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes())?;
    // bpf_attr's obj_get: pathname (a pointer), bpf_fd, file_flags.
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let mut get = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: a valid obj_get prefix; the path outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &mut get as *mut ObjGet,
            size_of::<ObjGet>() as u32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor the kernel just gave us.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let mut detach = [fd.as_raw_fd() as u32, 0, 0, 0];
    // SAFETY: `link_detach.link_fd` is the first word of bpf_attr for this command.
    unsafe { bpf(BPF_LINK_DETACH, &mut detach) }
}

/// bpf(2) with `attr` as its `union bpf_attr`.
///
/// # Safety
/// `attr` is a valid prefix of `union bpf_attr` for `cmd`, and every pointer in it is valid for
/// what the kernel does with it during the call.
unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<()> {
    // SAFETY: as the caller promises.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, std::mem::size_of::<A>() as u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    /// A 4-entry BPF hash map of u32 -> u64.
    fn small_hash_map() -> OwnedFd {
        hash_map(4, 8, 4)
    }

    /// A BPF hash map of `max_entries`, made with a raw BPF_MAP_CREATE.
    pub(crate) fn hash_map(key_size: u32, value_size: u32, max_entries: u32) -> OwnedFd {
        #[repr(C)]
        struct CreateAttr {
            map_type: u32,
            key_size: u32,
            value_size: u32,
            max_entries: u32,
            map_flags: u32,
        }
        let attr = CreateAttr {
            map_type: 1, // BPF_MAP_TYPE_HASH
            key_size,
            value_size,
            max_entries,
            map_flags: 0,
        };
        // SAFETY: a valid bpf_attr prefix for BPF_MAP_CREATE (cmd 0).
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                0,
                &attr as *const CreateAttr,
                size_of::<CreateAttr>() as u32,
            )
        };
        assert!(fd >= 0, "BPF_MAP_CREATE: {}", io::Error::last_os_error());
        // SAFETY: a new descriptor this test owns.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    }

    fn lookup(fd: BorrowedFd<'_>, key: u32) -> Option<u64> {
        let mut value = 0u64;
        let attr = ElemAttr {
            map_fd: fd.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u32 as u64,
            value: &mut value as *mut u64 as u64,
            flags: 0,
        };
        // SAFETY: BPF_MAP_LOOKUP_ELEM (cmd 1) with pointers to a live key and value.
        let r = unsafe { libc::syscall(libc::SYS_bpf, 1, &attr as *const ElemAttr, size_of::<ElemAttr>() as u32) };
        (r == 0).then_some(value)
    }

    #[test]
    fn writes_every_entry_in_one_call() {
        let map = small_hash_map();
        let keys: Vec<u32> = (1..=4).collect();
        let values: Vec<u64> = keys.iter().map(|k| u64::from(*k) * 10).collect();
        update(map.as_fd(), &keys, &values).expect("batch update");
        for (k, v) in keys.into_iter().zip(values) {
            assert_eq!(lookup(map.as_fd(), k), Some(v));
        }
    }

    #[test]
    fn a_failure_says_how_many_were_written() {
        let map = small_hash_map();
        let keys: Vec<u32> = (1..=6).collect();
        let values: Vec<u64> = keys.iter().map(|k| u64::from(*k)).collect();
        let (written, err) = update(map.as_fd(), &keys, &values).expect_err("the map holds 4");
        assert_eq!(written, 4);
        assert_eq!(err.raw_os_error(), Some(libc::E2BIG));
        assert_eq!(lookup(map.as_fd(), 4), Some(4));
        assert_eq!(lookup(map.as_fd(), 5), None);
    }

    #[test]
    fn reads_every_entry_across_calls() {
        let map = hash_map(4, 8, 10_000);
        let keys: Vec<u32> = (1..=9_000).collect();
        let values: Vec<u64> = keys.iter().map(|k| u64::from(*k) * 3).collect();
        update(map.as_fd(), &keys, &values).expect("batch update");
        let mut all: Vec<(u32, u64)> = read_all(map.as_fd()).expect("batch lookup");
        all.sort_unstable();
        assert_eq!(all, keys.into_iter().zip(values).collect::<Vec<_>>());
        let empty = hash_map(4, 8, 4);
        assert!(read_all::<u32, u64>(empty.as_fd()).expect("batch lookup").is_empty());
    }

    #[test]
    fn writes_and_deletes_one_entry_and_says_when_it_is_absent() {
        let map = small_hash_map();
        update(map.as_fd(), &[1u32, 2], &[10u64, 20]).expect("batch update");
        update_one(map.as_fd(), &3u32, &30u64).expect("one update");
        assert_eq!(lookup(map.as_fd(), 3), Some(30));
        delete(map.as_fd(), &1u32).expect("delete");
        assert_eq!(lookup(map.as_fd(), 1), None);
        assert_eq!(lookup(map.as_fd(), 2), Some(20));
        let err = delete(map.as_fd(), &1u32).expect_err("already gone");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }
}

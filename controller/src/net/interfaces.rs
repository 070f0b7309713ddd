//! Interfaces of the data plane's network namespace by name and index: glibc's lookups, and one
//! kept socket for the lookups a large restore makes by the million.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Interface index of `name` in the calling thread's network namespace, or `None` if there is no
/// such interface.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Interface indexes in the network namespace this was made in (the data plane's), by one ioctl
/// on a socket kept for the purpose: glibc's `if_nametoindex` opens and closes a socket on every
/// call, which was a quarter of restoring a million ports (about 2.4 s). A socket answers for the
/// namespace it was created in, whichever the caller's is now.
pub(crate) struct Names {
    socket: Option<OwnedFd>,
}

impl Names {
    pub(crate) fn new() -> Names {
        // SAFETY: plain socket(2); the descriptor is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        Names {
            // SAFETY: fd is a fresh descriptor nothing else owns.
            socket: (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }),
        }
    }

    /// `ifindex`, in this one's namespace.
    pub(crate) fn index(&self, name: &str) -> Option<u32> {
        let Some(socket) = &self.socket else {
            return ifindex(name);
        };
        // The kernel's limit, NUL included; names with a NUL are no interface's.
        if name.is_empty() || name.len() >= libc::IF_NAMESIZE || name.contains('\0') {
            return None;
        }
        // SAFETY: ifreq is plain data; all zeroes is a valid value (and NUL-terminates the name).
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: SIOCGIFINDEX reads ifr_name and writes ifr_ifindex of the ifreq it is given.
        let r = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFINDEX as _, &mut req) };
        // SAFETY: on success the kernel wrote the index into this member of the union.
        let idx = unsafe { req.ifr_ifru.ifru_ifindex };
        (r == 0 && idx > 0).then_some(idx as u32)
    }
}

/// (index, name) of every interface of the current network namespace, by index.
pub fn interfaces() -> Vec<(u32, String)> {
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below; names are
    // NUL-terminated C strings owned by that array.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut p = list;
        while (*p).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*p).if_name).to_string_lossy().into_owned();
            out.push(((*p).if_index, name));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
        out.sort_unstable();
        out
    }
}

/// Name of interface `index`, if it exists.
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ioctl gives what glibc's if_nametoindex gives, for every interface and for names that
    /// are no interface's.
    #[test]
    fn names_agree_with_if_nametoindex() {
        let names = Names::new();
        assert!(names.socket.is_some());
        let all = interfaces();
        assert!(all.iter().any(|(_, n)| n == "lo"));
        for (index, name) in &all {
            assert_eq!(names.index(name), Some(*index), "{name}");
            assert_eq!(ifindex(name), Some(*index), "{name}");
        }
        let long = "x".repeat(libc::IF_NAMESIZE);
        for name in ["", "alioth-none0", "lo\0", &long] {
            assert_eq!(names.index(name), None, "{name:?}");
        }
    }
}

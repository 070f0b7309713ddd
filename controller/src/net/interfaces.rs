//! Interfaces of the data plane's network namespace by name and index: glibc's lookups, and one
//! kept socket for the lookups a large restore makes by the million.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::OwnedFd;

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
/// namespace it was created in, whichever the caller's is now. While `listed`, lookups are
/// answered from one listing of the interfaces instead (a restore's million names, most of which
/// name no interface yet).
pub(crate) struct Names {
    socket: Option<OwnedFd>,
    listed: Option<HashMap<String, u32>>,
    /// With `listed`: the veths among them whose peer is in another namespace.
    peers_elsewhere: Option<std::collections::HashSet<u32>>,
}

impl Names {
    pub(crate) fn new() -> Names {
        let socket = rustix::net::socket_with(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::DGRAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        );
        Names {
            socket: socket.ok(),
            listed: None,
            peers_elsewhere: None,
        }
    }

    /// Answers from one listing of the interfaces until `unlist` (rtnetlink's, which also tells
    /// where veths' peers are; else the C library's).
    pub(crate) fn list(&mut self) {
        match crate::net::links::links() {
            Ok(links) => {
                self.peers_elsewhere = Some(links.values().filter(|l| l.peer_elsewhere).map(|l| l.index).collect());
                self.listed = Some(links.into_values().map(|l| (l.name, l.index)).collect());
            }
            Err(_) => self.listed = Some(interfaces().into_iter().map(|(index, name)| (name, index)).collect()),
        }
    }

    pub(crate) fn unlist(&mut self) {
        self.listed = None;
        self.peers_elsewhere = None;
    }

    /// Whether interface `index` is a veth whose peer is in another namespace, from the listing
    /// (`None` without one).
    pub(crate) fn peer_elsewhere(&self, index: u32) -> Option<bool> {
        self.peers_elsewhere.as_ref().map(|s| s.contains(&index))
    }

    /// `ifindex`, in this one's namespace.
    pub(crate) fn index(&self, name: &str) -> Option<u32> {
        if let Some(listed) = &self.listed {
            return listed.get(name).copied();
        }
        let Some(socket) = &self.socket else {
            return ifindex(name);
        };
        // The kernel's limit, NUL included; names with a NUL are no interface's.
        if name.is_empty() || name.len() >= libc::IF_NAMESIZE || name.contains('\0') {
            return None;
        }
        rustix::net::netdevice::name_to_index(socket, name)
            .ok()
            .filter(|i| *i > 0)
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

/// The kernel driver behind interface `name` (`veth`, `tun`, `virtio_net`...), by the ethtool
/// ioctl, which answers for the caller's network namespace (sysfs may show another one's).
pub fn driver(name: &str) -> Option<String> {
    /// `struct ethtool_drvinfo`.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 32 * 4 + 12 + 4 * 5],
    }
    const ETHTOOL_GDRVINFO: u32 = 3;
    if name.is_empty() || name.len() >= libc::IF_NAMESIZE || name.contains('\0') {
        return None;
    }
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 32 * 4 + 12 + 4 * 5],
    };
    // SAFETY: a zeroed ifreq is valid; the name fits with its NUL (checked above).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: plain socket call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: req names the interface and points at a drvinfo the kernel fills in.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL as _, &mut req) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return None;
    }
    let len = info.driver.iter().position(|&b| b == 0).unwrap_or(info.driver.len());
    Some(String::from_utf8_lossy(&info.driver[..len]).into_owned())
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
        assert_eq!(driver("lo").as_deref(), None, "lo has no ethtool driver info");
        assert_eq!(driver("alioth-none0"), None);
        let long = "x".repeat(libc::IF_NAMESIZE);
        for name in ["", "alioth-none0", "lo\0", &long] {
            assert_eq!(names.index(name), None, "{name:?}");
        }
    }
}

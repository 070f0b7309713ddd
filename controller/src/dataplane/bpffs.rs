//! The machine's bpffs, wherever the agent was started from. Pins must live there: a bpffs that
//! only this process's mount namespace sees dies with the process, and with it every link and map
//! a restarted agent would take over (the VMs lose their network until it has refilled them).
//!
//! `ip netns exec` gives its command a private mount namespace with /sys mounted again for the
//! network namespace, which hides the machine's /sys/fs/bpf (a bpffs mounted there anew would be
//! another, private instance). Nothing in alioth needs that namespace (interfaces are read through
//! netns-aware calls, as under `nsenter --net`), so a process that finds itself in one joins the
//! mount namespace it came from (process 1's, else its parent's) before it starts any thread.

use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::mount::{mount, MountFlags};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const ROOT: &str = "/sys/fs/bpf";

pub fn is_bpffs(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|st| st.f_type == BPF_FS_MAGIC)
}

/// Our parent's pid, as /proc names it.
fn parent() -> String {
    rustix::process::getppid()
        .map_or(0, |p| p.as_raw_nonzero().get())
        .to_string()
}

/// The mount namespace of a process, as its /proc link reads.
fn mount_namespace(pid: &str) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

/// A process (1, else our parent) in another mount namespace than ours whose /sys/fs/bpf is a
/// bpffs: where `ip netns exec` came from.
fn machine_process() -> Option<String> {
    let ours = mount_namespace("self")?;
    ["1".to_string(), parent()].into_iter().find(|pid| {
        mount_namespace(pid).is_some_and(|theirs| theirs != ours)
            && is_bpffs(&Path::new("/proc").join(pid).join("root/sys/fs/bpf"))
    })
}

/// Leaves a private mount namespace that hides the machine's bpffs (see the module comment) for
/// the one it came from. Call before any thread starts: a threaded process cannot change its
/// mount namespace. The working directory is kept where the same path exists.
pub fn leave_private_mount_namespace() -> Result<()> {
    if is_bpffs(Path::new(ROOT)) {
        return Ok(());
    }
    let Some(pid) = machine_process() else {
        return Ok(());
    };
    let cwd = std::env::current_dir().ok();
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))?;
    move_into_link_name_space(std::os::fd::AsFd::as_fd(&ns), Some(LinkNameSpaceType::Mount))
        .with_context(|| format!("join the mount namespace of process {pid}, where the machine's bpffs is"))?;
    if let Some(cwd) = cwd {
        let _ = std::env::set_current_dir(cwd);
    }
    tracing::info!(
        pid,
        "left a private mount namespace (ip netns exec?) for the machine's, where its bpffs is"
    );
    Ok(())
}

/// Makes sure /sys/fs/bpf is the machine's bpffs when `pin_dir` lives there: as it is when
/// mounted; mounted when the machine has none and `mount` allows (the agent; never a reading
/// command). Refuses, with what to do, when the pins could only go to a bpffs that dies with this
/// process (a private mount namespace that `leave_private_mount_namespace` could not leave).
pub fn ensure(pin_dir: &Path, mount: bool) -> Result<()> {
    let root = Path::new(ROOT);
    if !pin_dir.starts_with(root) || is_bpffs(root) {
        return Ok(());
    }
    let parent = parent();
    let private = mount_namespace("self").is_some_and(|ours| {
        ["1", parent.as_str()]
            .iter()
            .any(|pid| mount_namespace(pid).is_some_and(|theirs| theirs != ours))
    });
    if private {
        bail!(
            "{ROOT} is not bpffs in this process's mount namespace (ip netns exec mounts /sys anew), and the \
             machine's could not be reached: pins would die with this process. Mount bpffs on the machine \
             (mount -t bpf bpf {ROOT}), start the agent with `nsenter --net=/run/netns/NAME` instead, or give \
             its container the host's {ROOT}"
        );
    }
    if !mount {
        bail!("no bpffs at {ROOT}: is an agent running on this machine?");
    }
    tracing::info!("mounting bpffs at {ROOT}");
    mount_bpffs()
}

fn mount_bpffs() -> Result<()> {
    mount("bpf", ROOT, "bpf", MountFlags::empty(), None).with_context(|| format!("mount bpffs at {ROOT}"))
}

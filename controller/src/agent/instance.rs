//! One agent per state directory: the running agent holds an exclusive lock on `agent.lock` there,
//! which also says when it started, so that `alioth status` can tell whether it runs and since
//! when. A second agent on the same directory would interleave its commits with the first's.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use rustix::fs::{flock, FlockOperation};
use serde::{Deserialize, Serialize};

pub const LOCK_FILE: &str = "agent.lock";

/// What the running agent writes into its lock file.
#[derive(Debug, Serialize, Deserialize)]
pub struct Instance {
    pub pid: u32,
    /// Unix time of the start, in seconds.
    pub started: u64,
    pub version: String,
    pub listen: String,
}

impl Instance {
    pub fn uptime(&self) -> Duration {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        now.saturating_sub(Duration::from_secs(self.started))
    }
}

/// The lock, held until this is dropped (the kernel also lets go when the process dies).
pub struct Held {
    _file: File,
}

/// Takes the state directory's lock, or says which agent holds it.
pub fn take(dir: &Path, listen: &str) -> Result<Held> {
    std::fs::create_dir_all(dir).with_context(|| format!("create state dir {}", dir.display()))?;
    let path = lock_path(dir);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
        let other = read(dir).map(|i| format!("pid {}, serving {}", i.pid, i.listen));
        bail!(
            "another agent uses state dir {} ({}): give each agent its own --state-dir",
            dir.display(),
            other.unwrap_or_else(|| "unknown pid".into())
        );
    }
    let me = Instance {
        pid: std::process::id(),
        started: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
        version: env!("CARGO_PKG_VERSION").into(),
        listen: listen.into(),
    };
    file.set_len(0)?;
    file.write_all(&serde_json::to_vec(&me)?)?;
    Ok(Held { _file: file })
}

/// The agent that holds `dir`'s lock now, if one does.
pub fn running(dir: &Path) -> Option<Instance> {
    let file = File::open(lock_path(dir)).ok()?;
    // A shared lock is refused only while the agent holds its exclusive one.
    if flock(&file, FlockOperation::NonBlockingLockShared).is_ok() {
        return None;
    }
    read(dir)
}

fn read(dir: &Path) -> Option<Instance> {
    serde_json::from_slice(&std::fs::read(lock_path(dir)).ok()?).ok()
}

fn lock_path(dir: &Path) -> PathBuf {
    dir.join(LOCK_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_agent_on_one_state_dir_is_refused_and_the_first_is_seen_running() {
        let dir = std::env::temp_dir().join(format!("alioth-lock-{}", std::process::id()));
        let held = take(&dir, "127.0.0.1:1").unwrap();
        let err = take(&dir, "127.0.0.1:2").err().unwrap().to_string();
        assert!(err.contains("another agent") && err.contains("127.0.0.1:1"), "{err}");
        let me = running(&dir).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.uptime() < Duration::from_secs(5));
        drop(held);
        assert!(running(&dir).is_none());
        take(&dir, "127.0.0.1:2").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

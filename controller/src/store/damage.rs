//! What reading the record found wrong, and the copies of damaged files kept beside it.

use std::fs;
use std::path::{Path, PathBuf};

/// Infix of the copies of damaged record files: `<name>.damaged-<unix time>`.
const DAMAGED: &str = ".damaged-";

/// What reading the record found wrong. Any of it means the record may lack what the data plane
/// still has, so the agent keeps what is pinned instead of replacing it (see `Dataplane::adopt`).
#[derive(Debug, Default, Clone)]
pub struct Damage {
    /// Rows (or an earlier agent's lines) skipped: their checksum or their JSON is wrong.
    pub rows: usize,
    /// Files that could not be read at all, with why.
    pub unreadable: Vec<String>,
    /// Resources left out for want of their parents.
    pub orphans: usize,
    /// The damaged files, whose copies are kept.
    pub(super) files: Vec<PathBuf>,
    /// Where copies of the damaged files were kept.
    pub kept: Vec<PathBuf>,
}

impl Damage {
    pub fn any(&self) -> bool {
        self.rows > 0 || !self.unreadable.is_empty() || self.orphans > 0
    }

    pub(super) fn damaged_rows(&mut self, path: &Path, n: usize) {
        self.rows += n;
        self.files.push(path.to_path_buf());
    }

    pub(super) fn unreadable_file(&mut self, path: &Path, e: anyhow::Error) {
        tracing::error!(record = %path.display(), "cannot be read: {e:#}");
        self.unreadable.push(format!("{}: {e:#}", path.display()));
        self.files.push(path.to_path_buf());
    }

    /// Keeps a copy of each damaged file (moves it if it cannot be copied).
    pub(super) fn keep(&mut self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for path in std::mem::take(&mut self.files) {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let kept = path.with_file_name(format!("{name}{DAMAGED}{now}"));
            match fs::copy(&path, &kept).map(drop).or_else(|_| fs::rename(&path, &kept)) {
                Ok(()) => {
                    tracing::error!(kept = %kept.display(), "a copy of the damaged record is kept");
                    self.kept.push(kept);
                }
                Err(e) => tracing::error!(record = %path.display(), "the damaged record could not be kept: {e}"),
            }
        }
    }
}

/// The copies of damaged records `open` kept in `dir` (for `alioth status`), by name.
pub fn damaged_copies(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(DAMAGED))
        .collect();
    names.sort();
    names
}

//! What this node knows of each release: `<var>/release/<version>/status.json`, the answer
//! to lir-svc's GetStatus. It is rewritten atomically (temp file, fsync, rename) at each step
//! and at most every half second for percent changes, so a reader (`tenet release status`,
//! the collector) always sees a whole document.
//!
//! The status of a present release is also its record: the images (with the manifest digest
//! each tag must resolve to) and files (with size and sha256) that `check` verifies on every
//! registry and file store, and that `absent` removes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::FileEntry;
use crate::progress::Step;

/// Where a release is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseState {
    /// An add or remove is queued.
    Queued,
    /// Being added.
    Adding,
    /// On every registry and file store.
    Present,
    /// Being removed.
    Removing,
    /// Removed everywhere.
    Absent,
    /// The last operation failed (`last_error` says why); nothing is presented as present.
    Failed,
}

impl ReleaseState {
    /// The word.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseState::Queued => "queued",
            ReleaseState::Adding => "adding",
            ReleaseState::Present => "present",
            ReleaseState::Removing => "removing",
            ReleaseState::Absent => "absent",
            ReleaseState::Failed => "failed",
        }
    }
}

/// One image of a release as pushed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PushedImage {
    /// Repository.
    pub name: String,
    /// The release's tag (`v3.26.1`).
    pub tag: String,
    /// The version tag (`<version>-<tag>`).
    pub version_tag: String,
    /// The manifest digest both tags resolve to (the index's, for a multi-platform image).
    pub digest: String,
    /// For a multi-platform image: the manifests its index lists, each under its own tag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PushedPlatform>,
}

/// One manifest of a multi-platform image's index, as pushed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PushedPlatform {
    /// `os/architecture[/variant]`, when the index says.
    #[serde(default)]
    pub platform: Option<String>,
    /// Its tag (`<version>-<tag>-linux-arm64`), which keeps it from garbage collection.
    pub tag: String,
    /// Its manifest digest.
    pub digest: String,
}

/// A release's status and record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseStatus {
    /// The version.
    pub version: String,
    /// Where it is.
    pub state: ReleaseState,
    /// `add` or `remove`: the last operation.
    pub operation: String,
    /// The current (or last) step.
    pub step: Option<Step>,
    /// Percent of the current step, for transfers.
    pub percent: Option<u8>,
    /// One line: `AddRelease: Downloading (42%)`.
    pub message: String,
    /// Why the last operation failed (cleared when one succeeds).
    pub last_error: Option<String>,
    /// The source URL (credentials removed).
    pub source: Option<String>,
    /// The squashfs sha256, once verified.
    pub sha256: Option<String>,
    /// Images, once pushed.
    #[serde(default)]
    pub images: Vec<PushedImage>,
    /// Files, once synced.
    #[serde(default)]
    pub files: Vec<FileEntry>,
    /// Registries it was pushed to.
    #[serde(default)]
    pub registries: Vec<String>,
    /// File stores it was synced to.
    #[serde(default)]
    pub file_stores: Vec<String>,
    /// When the last operation started (RFC 3339, UTC).
    pub started_at: Option<String>,
    /// When this record was written.
    pub updated_at: String,
}

impl ReleaseStatus {
    /// A fresh status for an operation.
    pub fn new(version: &str, operation: &str, state: ReleaseState) -> ReleaseStatus {
        ReleaseStatus {
            version: version.to_string(),
            state,
            operation: operation.to_string(),
            step: None,
            percent: None,
            message: String::new(),
            last_error: None,
            source: None,
            sha256: None,
            images: Vec::new(),
            files: Vec::new(),
            registries: Vec::new(),
            file_stores: Vec::new(),
            started_at: None,
            updated_at: now_text(),
        }
    }
}

/// The directory holding every release's status.
pub fn status_root(var_dir: &Path) -> PathBuf {
    var_dir.join("release/status")
}

fn status_path(var_dir: &Path, version: &str) -> PathBuf {
    status_root(var_dir).join(format!("{version}.json"))
}

/// Reads a release's status (None: this node never handled that version).
pub fn load(var_dir: &Path, version: &str) -> Result<Option<ReleaseStatus>> {
    let path = status_path(var_dir, version);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Rule(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Every release status on this node, sorted by version.
pub fn load_all(var_dir: &Path) -> Result<Vec<ReleaseStatus>> {
    let dir = status_root(var_dir);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let name = entry.file_name();
        let Some(version) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if let Some(s) = load(var_dir, version)? {
            out.push(s);
        }
    }
    out.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(out)
}

/// Writes a release's status atomically.
pub fn save(var_dir: &Path, status: &ReleaseStatus) -> Result<()> {
    let dir = status_root(var_dir);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = status_path(var_dir, &status.version);
    let bytes = serde_json::to_vec_pretty(status).expect("status serializes");
    tenet_fsutil::atomic_write(&path, &bytes, tenet_fsutil::DEFAULT_MODE, true)
        .map_err(|e| Error::io(&path, e))
}

/// Removes a release's status (a queued mark the daemon then refused).
pub fn forget(var_dir: &Path, version: &str) -> Result<()> {
    let path = status_path(var_dir, version);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Holds `<var>/release/lock`: one release operation at a time on a node, whoever starts it
/// (the daemon's task, a compliance fix, `--foreground`).
pub struct OperationLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl OperationLock {
    /// Takes the lock, waiting for a running operation to end.
    pub fn acquire(var_dir: &Path) -> Result<OperationLock> {
        let dir = var_dir.join("release");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io(&path, std::io::Error::from(e)))?;
        Ok(OperationLock { _lock: lock })
    }
}

/// Now, RFC 3339 UTC with seconds.
pub fn now_text() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

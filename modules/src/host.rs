//! The host a class acts on: every path goes through the root prefix, every write through the
//! atomic helpers here, every command through one runner.
//!
//! A class's `check` receives a [`HostView`], which only reads; `fix` receives a [`Host`], which
//! derefs to the view and adds the writes. That split is what "check has no side effects"
//! rests on: a check cannot reach a write helper.
//!
//! # Staged writes
//!
//! [`Host::write_atomic`] does not replace the file at once: it writes a temporary file next
//! to it (`.NAME.tenet-PID.tmp`, no fsync) and records a pending rename. [`Host::sync`] (the
//! engine calls it after a module's fix, the object command at its end) commits the batch:
//! the temporary files are fsynced, concurrently, then renamed over their targets, then each
//! directory that received a rename is fsynced, concurrently too. Fixing a thousand files
//! then waits for a few disk cache flushes instead of a thousand in a row; the rename still
//! makes each file change atomic, so a process killed at any point leaves every target wholly
//! old or wholly new, and a crash after a rename cannot expose a file whose data is not on
//! disk.
//!
//! Until the commit, the host and its views read through the batch: `read`, `read_to_string`,
//! `metadata`, `read_dir_names`, `set_mode`, `set_owner` and a second `write_atomic` of a
//! path with a pending write act on its temporary file, so later rules of the same module
//! see what earlier ones wrote. Anything else (a command, `std::fs`) sees the real files
//! only; [`Host::run_change`] commits first, and the engine commits before the fix of a class
//! that does not declare [`crate::class::Class::STAGED_WRITES`].
//!
//! Dropping the last handle on a host (clones and views share the batch) commits what is
//! still staged, logging a failure (call [`Host::sync`] to get the error). Temporary files of a
//! process killed before its commit stay behind; the next `write_atomic` into the same
//! directory removes those whose process is gone.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};

/// How many fsyncs of a commit are in flight at once. The block layer merges the disk cache
/// flushes of concurrent fsyncs, so a batch costs a few flush latencies instead of one per
/// file (1,200 small files on the benchmark VM under load: 3.7 s one after the other, 0.1 s
/// with 16 in flight). `syncfs` would flush once too, but it also writes back every other
/// process's dirty data on the file system (0.25 to 0.55 s there under the same load).
const FLUSH_THREADS: usize = 16;

/// Read-only access to the managed system under a root prefix.
#[derive(Debug, Clone)]
pub struct HostView {
    root: PathBuf,
    var_dir: PathBuf,
    session: String,
    hostname: String,
    node_config: PathBuf,
    package_dir: Option<PathBuf>,
    os_vendor: Option<String>,
    /// The writes not yet committed, shared with the [`Host`] and its clones: reads see them.
    stage: Arc<Mutex<Stage>>,
}

/// Read-write access: a [`HostView`] plus the write helpers `fix` uses.
#[derive(Debug, Clone)]
pub struct Host {
    view: HostView,
}

/// The batch of writes [`Host::sync`] commits.
#[derive(Debug, Default)]
struct Stage {
    /// Pending renames by target (root-prefixed path).
    pending: HashMap<PathBuf, Pending>,
    /// The targets of `pending` by directory, for listings (a module can stage thousands).
    pending_by_dir: HashMap<PathBuf, BTreeSet<OsString>>,
    /// Staging order: renames happen in the order the fixes wrote.
    next_seq: u64,
    /// Directories holding renamed files whose directory entry is not yet durable. A rename
    /// is atomic without it; the directory flush only makes the new entry survive a crash.
    renamed_dirs: BTreeSet<PathBuf>,
    /// Directories this process already cleaned of stale temporary files.
    cleaned_dirs: HashSet<PathBuf>,
}

/// One staged write.
#[derive(Debug)]
struct Pending {
    seq: u64,
    tmp: PathBuf,
}

impl Drop for Stage {
    fn drop(&mut self) {
        // Losing staged writes silently would report fixes that never happened.
        if let Err(e) = self.commit() {
            tracing::error!("committing staged writes when the host was dropped: {e}");
        }
    }
}

impl Stage {
    /// Makes the staged files durable, renames them over their targets, then makes the
    /// directories durable. When the files cannot be made durable nothing is renamed (and the
    /// temporary files are removed); a failed rename does not stop the others. Returns the
    /// first error.
    fn commit(&mut self) -> Result<()> {
        self.pending_by_dir.clear();
        let mut pending: Vec<(PathBuf, Pending)> = self.pending.drain().collect();
        if pending.is_empty() && self.renamed_dirs.is_empty() {
            return Ok(());
        }
        pending.sort_by_key(|(_, p)| p.seq);
        let started = std::time::Instant::now();
        let temps: Vec<&Path> = pending.iter().map(|(_, p)| p.tmp.as_path()).collect();
        let files = temps.len();
        if let Err(e) = fsync_all(&temps) {
            for tmp in temps {
                let _ = fs::remove_file(tmp);
            }
            return Err(e);
        }
        let synced = started.elapsed();
        let mut first_error = None;
        for (target, p) in pending {
            match fs::rename(&p.tmp, &target) {
                Ok(()) => {
                    if let Some(dir) = target.parent() {
                        self.renamed_dirs.insert(dir.to_path_buf());
                    }
                }
                Err(e) => {
                    let _ = fs::remove_file(&p.tmp);
                    first_error.get_or_insert(Error::io(&target, e));
                }
            }
        }
        let renamed = started.elapsed();
        let dirs = std::mem::take(&mut self.renamed_dirs);
        let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        if let Err(e) = fsync_all(&dirs) {
            first_error.get_or_insert(e);
        }
        tracing::debug!(
            files,
            dirs = dirs.len(),
            fsync_files_ms = synced.as_millis() as u64,
            rename_ms = (renamed - synced).as_millis() as u64,
            fsync_dirs_ms = (started.elapsed() - renamed).as_millis() as u64,
            "committed staged writes"
        );
        first_error.map_or(Ok(()), Err)
    }

    /// Forgets the pending write to `path`.
    fn unstage(&mut self, path: &Path) {
        self.pending.remove(path);
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name())
            && let Some(names) = self.pending_by_dir.get_mut(dir)
        {
            names.remove(name);
        }
    }

    /// The temporary file of a pending write to `path`.
    fn tmp_of(&self, path: &Path) -> Option<&Path> {
        self.pending.get(path).map(|p| p.tmp.as_path())
    }

    /// Removes the temporary files a killed run left in `dir` (once per directory): those
    /// named after a process that is gone, or after this one but not pending. A live
    /// process's files are left alone (a process in another PID namespace writing into the
    /// same directory would look gone: Tenet does not support that).
    fn clean_stale_temps(&mut self, dir: &Path) {
        if !self.cleaned_dirs.insert(dir.to_path_buf()) {
            return;
        }
        let Ok(rd) = fs::read_dir(dir) else { return };
        let me = std::process::id() as i32;
        for entry in rd.flatten() {
            let Some(pid) = temp_pid(&entry.file_name()) else {
                continue;
            };
            let path = entry.path();
            let ours_pending = pid == me && self.pending.values().any(|p| p.tmp == path);
            let stale = if pid == me {
                !ours_pending
            } else {
                !process_alive(pid)
            };
            let removable = entry
                .file_type()
                .is_ok_and(|t| t.is_file() || t.is_symlink());
            if stale && removable {
                match fs::remove_file(&path) {
                    Ok(()) => tracing::info!(
                        "removed {}, left by an interrupted run (process {pid})",
                        path.display()
                    ),
                    Err(e) => tracing::warn!("cannot remove stale {}: {e}", path.display()),
                }
            }
        }
    }
}

/// The PID in a temporary file name `.NAME.tenet-PID.tmp`.
fn temp_pid(name: &OsStr) -> Option<i32> {
    let rest = name.to_str()?.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, pid) = rest.rsplit_once(".tenet-")?;
    pid.parse().ok().filter(|p| *p > 0)
}

/// Whether a process exists (a process of another user counts: EPERM is not ESRCH).
fn process_alive(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// The temporary file a write to `target` (in `dir`) goes through.
fn temp_path(dir: &Path, target: &Path) -> PathBuf {
    let name = target.file_name().unwrap_or(OsStr::new("file"));
    dir.join(format!(
        ".{}.tenet-{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ))
}

/// Fsyncs files or directories, [`FLUSH_THREADS`] at a time; returns the first error. A
/// file is reopened for it: a writeback error nobody has seen yet is still reported to a
/// descriptor opened after it (errseq), and keeping a descriptor per staged file could
/// exhaust the 1,024 a process gets by default.
fn fsync_all(paths: &[&Path]) -> Result<()> {
    let fsync = |p: &Path| {
        File::open(p)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(p, e))
    };
    if paths.len() <= 1 {
        return paths.iter().try_for_each(|p| fsync(p));
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let first_error = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..FLUSH_THREADS.min(paths.len()) {
            scope.spawn(|| {
                while let Some(p) =
                    paths.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    if let Err(e) = fsync(p) {
                        let mut first = first_error.lock().unwrap_or_else(|e| e.into_inner());
                        first.get_or_insert(e);
                    }
                }
            });
        }
    });
    first_error
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .map_or(Ok(()), Err)
}

impl std::ops::Deref for Host {
    type Target = HostView;
    fn deref(&self) -> &HostView {
        &self.view
    }
}

impl Host {
    /// A host rooted at `root` (`/` for the real system). The var dir (backups) defaults to
    /// `<root>/var/lib/tenet`, the agent's node config to `<root>/etc/tenet/node.toml`.
    pub fn new(root: impl Into<PathBuf>) -> Host {
        let root: PathBuf = root.into();
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        Host {
            view: HostView {
                var_dir: root.join("var/lib/tenet"),
                node_config: root.join("etc/tenet/node.toml"),
                session: uuid::Uuid::new_v4().to_string(),
                root,
                hostname,
                package_dir: None,
                os_vendor: None,
                stage: Default::default(),
            },
        }
    }

    /// Commits the staged writes (see the module documentation) and makes every rename done
    /// so far durable. Returns the first error; a file whose rename failed keeps its old
    /// content.
    pub fn sync(&self) -> Result<()> {
        self.view.stage().commit()
    }

    /// Records that `dir` received a rename to make durable at the next [`Host::sync`].
    pub fn defer_dir_sync(&self, dir: &Path) {
        self.view.stage().renamed_dirs.insert(dir.to_path_buf());
    }

    /// Sets where backups and agent state go (a real path, not under the root prefix).
    pub fn with_var_dir(mut self, dir: impl Into<PathBuf>) -> Host {
        self.view.var_dir = dir.into();
        self
    }

    /// Sets the session id backups are grouped under (OpenSVC's `OSVC_SESSION_UUID`).
    pub fn with_session(mut self, session: impl Into<String>) -> Host {
        self.view.session = session.into();
        self
    }

    /// Sets the node name `%%HOSTNAME%%` expands to.
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Host {
        self.view.hostname = hostname.into();
        self
    }

    /// Sets the agent's node config file (a real path) the `nodeconf` class manages.
    pub fn with_node_config(mut self, path: impl Into<PathBuf>) -> Host {
        self.view.node_config = path.into();
        self
    }

    /// Sets a folder of local package files (`.deb`, `.rpm`) the `package` class installs from.
    pub fn with_package_dir(mut self, dir: Option<PathBuf>) -> Host {
        self.view.package_dir = dir;
        self
    }

    /// Sets the OS vendor (OpenSVC spelling: `Debian`, `Ubuntu`, `Red Hat`, ...) used to pick
    /// the package backend.
    pub fn with_os_vendor(mut self, vendor: Option<String>) -> Host {
        self.view.os_vendor = vendor;
        self
    }

    /// The read-only view, for checks.
    pub fn view(&self) -> &HostView {
        &self.view
    }

    /// Stages `content` for `path` (already root-prefixed): a temporary file in the same
    /// directory gets the content, mode and owner, and [`Host::sync`] renames it over the
    /// target, so a reader (or a crash) sees the old file or the new one, never a mix. Until
    /// then this host's reads of `path` see the new file. The file being replaced, if any, is
    /// backed up now. Parent directories are created. Mode and owner not given are kept from
    /// the file being replaced.
    pub fn write_atomic(
        &self,
        path: &Path,
        content: &[u8],
        mode: Option<u32>,
        owner: Option<(Option<u32>, Option<u32>)>,
    ) -> Result<()> {
        let parent = path
            .parent()
            .ok_or_else(|| Error::io(path, io::Error::other("no parent directory")))?;
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let mut stage = self.view.stage();
        stage.clean_stale_temps(parent);
        let on_disk = fs::symlink_metadata(path).ok();
        if on_disk.as_ref().is_some_and(|m| m.is_file()) {
            // The file on disk is still the one from before the run, even when a write of it
            // is already staged.
            self.backup(path)?;
        }
        let restaged = stage.tmp_of(path).map(Path::to_path_buf);
        let existing = match &restaged {
            Some(tmp) => fs::symlink_metadata(tmp).ok(),
            None => on_disk,
        };
        let mode = mode
            .or_else(|| existing.as_ref().map(|m| m.mode() & 0o7777))
            .unwrap_or(0o644);
        let (uid, gid) = match owner {
            Some((u, g)) => (
                u.or(existing.as_ref().map(|m| m.uid())),
                g.or(existing.as_ref().map(|m| m.gid())),
            ),
            None => (
                existing.as_ref().map(|m| m.uid()),
                existing.as_ref().map(|m| m.gid()),
            ),
        };
        let tmp = restaged.clone().unwrap_or_else(|| temp_path(parent, path));
        let result = (|| -> io::Result<()> {
            let mut f = if restaged.is_some() {
                // Nobody sees a staged file but this host: rewriting it in place is safe. Not
                // with O_TRUNC: ext4 (auto_da_alloc) writes out a file truncated to zero when it
                // is closed, one synchronous write per rewrite; the length is set after.
                OpenOptions::new().write(true).open(&tmp)?
            } else {
                let create = || {
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&tmp)
                };
                match create() {
                    // Not staged, named after this process: left by a failed attempt.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        fs::remove_file(&tmp)?;
                        create()?
                    }
                    other => other?,
                }
            };
            f.write_all(content)?;
            if restaged.is_some() {
                f.set_len(content.len() as u64)?;
            }
            // chown before chmod: chown clears setuid/setgid bits.
            if uid.is_some() || gid.is_some() {
                nix::unistd::fchown(
                    &f,
                    uid.map(nix::unistd::Uid::from_raw),
                    gid.map(nix::unistd::Gid::from_raw),
                )
                .map_err(io::Error::from)?;
            }
            f.set_permissions(fs::Permissions::from_mode(mode))
        })();
        if let Err(e) = result {
            // A failed rewrite leaves a torn temporary file: drop the staged write with it.
            stage.unstage(path);
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(path, e));
        }
        let seq = match stage.pending.get(path) {
            Some(p) => p.seq,
            None => {
                stage.next_seq += 1;
                stage.next_seq
            }
        };
        if let Some(name) = path.file_name() {
            stage
                .pending_by_dir
                .entry(parent.to_path_buf())
                .or_default()
                .insert(name.to_os_string());
        }
        stage
            .pending
            .insert(path.to_path_buf(), Pending { seq, tmp });
        Ok(())
    }

    /// Saves `path` (root-prefixed) as `<var_dir>/backup/<session>/<path relative to root>`,
    /// once per session (the first one is the state before the run). A hard link when it can
    /// be: files are replaced by rename, which leaves the old inode untouched, so the link is a
    /// free and exact backup (mode, owner and times included). A copy when the file has other
    /// links (they could change it in place) or the var dir is on another file system. (Should
    /// the commit fail, the file and its backup stay one inode until the file is replaced.)
    pub fn backup(&self, path: &Path) -> Result<Option<PathBuf>> {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        let dest = self.var_dir.join("backup").join(&self.session).join(rel);
        if fs::symlink_metadata(&dest).is_ok() {
            return Ok(Some(dest));
        }
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
        }
        let single_link = fs::symlink_metadata(path).is_ok_and(|m| m.nlink() == 1);
        if !(single_link && fs::hard_link(path, &dest).is_ok()) {
            fs::copy(path, &dest).map_err(|e| Error::io(&dest, e))?;
        }
        Ok(Some(dest))
    }

    /// Creates a directory and its parents (root-prefixed path).
    pub fn create_dir_all(&self, path: &Path) -> Result<()> {
        fs::create_dir_all(path).map_err(|e| Error::io(path, e))
    }

    /// Sets the permission bits of a root-prefixed path (of its staged file when a write of it
    /// is pending). Symlinks ARE followed (chmod has no lchmod on Linux): callers refuse
    /// symlinks before calling this.
    pub fn set_mode(&self, path: &Path, mode: u32) -> Result<()> {
        let real = self.view.staged_or(path);
        fs::set_permissions(&real, fs::Permissions::from_mode(mode)).map_err(|e| Error::io(path, e))
    }

    /// Sets owner and/or group of a root-prefixed path (of its staged file when a write of it
    /// is pending; symlinks are not followed).
    pub fn set_owner(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        let real = self.view.staged_or(path);
        std::os::unix::fs::lchown(&real, uid, gid).map_err(|e| Error::io(path, e))
    }

    /// Writes a value into a kernel file (`/proc/sys`, `/sys`): those are not regular files,
    /// so no temporary file and rename, one plain write, not staged.
    pub fn write_kernel_file(&self, path: &Path, value: &str) -> Result<()> {
        // No O_TRUNC: a kernel file takes the value written at offset 0 whatever its size. A
        // test root's stand-in is a regular file, cut to length after the write instead:
        // truncated to zero, ext4 would write it out synchronously when it is closed.
        let mut f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        f.write_all(value.as_bytes())
            .map_err(|e| Error::io(path, e))?;
        let len = value.len() as u64;
        if f.metadata().is_ok_and(|m| m.len() > len) {
            f.set_len(len).map_err(|e| Error::io(path, e))?;
        }
        Ok(())
    }

    /// Removes a symbolic link (root-prefixed path); anything else is refused. The directory
    /// is fsynced at the next [`Host::sync`].
    pub fn remove_link(&self, path: &Path) -> Result<()> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {}
            Ok(_) => {
                return Err(Error::io(
                    path,
                    io::Error::other("not a symbolic link; refusing to remove it"),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(path, e)),
        }
        fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        if let Some(parent) = path.parent() {
            self.defer_dir_sync(parent);
        }
        Ok(())
    }

    /// Runs a command that changes the system (package install, ...), capturing its output.
    /// The staged writes are committed first: the command sees the real files.
    pub fn run_change(&self, cmd: &mut Command) -> Result<Output> {
        self.sync()?;
        self.run_query(cmd)
    }
}

impl HostView {
    fn stage(&self) -> MutexGuard<'_, Stage> {
        // A panic while holding the lock leaves the batch as consistent as any other moment.
        self.stage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The path to act on for `path`: its staged file when a write of it is pending.
    fn staged_or(&self, path: &Path) -> PathBuf {
        self.stage()
            .tmp_of(path)
            .map_or_else(|| path.to_path_buf(), Path::to_path_buf)
    }

    /// The root prefix (`/` for the real system).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the root prefix is the real `/`.
    pub fn is_real_root(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Maps an absolute path of the managed system to the real path under the root prefix.
    /// Relative paths and `..` components are refused: nothing may escape the root.
    pub fn path(&self, abs: impl AsRef<Path>) -> Result<PathBuf> {
        let abs = abs.as_ref();
        if !abs.is_absolute() {
            return Err(Error::Rule(format!(
                "path {:?} is not absolute",
                abs.display().to_string()
            )));
        }
        let mut out = self.root.clone();
        for c in abs.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(p) => out.push(p),
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(Error::Rule(format!(
                        "path {:?} contains '..'",
                        abs.display().to_string()
                    )));
                }
            }
        }
        Ok(out)
    }

    /// The paths of the managed system matching the shell glob `pattern` (`*`, `?`, `[...]`
    /// within one path component; `**` is `*`; a name starting with `.` is matched only by a
    /// pattern component starting with `.`), sorted, as absolute paths of the managed system.
    /// The pattern must be absolute and without `..`; a match reached through a symlinked
    /// directory that leaves the root prefix is an error.
    pub fn glob(&self, pattern: &str) -> Result<Vec<String>> {
        let refuse = |why: &str| Error::Rule(format!("glob pattern {pattern:?}: {why}"));
        if !pattern.starts_with('/') {
            return Err(refuse("not absolute"));
        }
        // One pattern component per path component, so that matches and components pair up
        // for the hidden-name rule below.
        let parts: Vec<String> = pattern
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .map(|p| {
                let mut out = String::with_capacity(p.len());
                for c in p.chars() {
                    if !(c == '*' && out.ends_with('*')) {
                        out.push(c);
                    }
                }
                out
            })
            .collect();
        if parts.iter().any(|p| p == "..") {
            return Err(refuse("contains '..'"));
        }
        let root = self
            .root
            .to_str()
            .ok_or_else(|| refuse("the root prefix is not valid UTF-8"))?
            .trim_end_matches('/');
        // The glob crate's `require_literal_leading_dot` also hides dot files from `.*`, so
        // hidden names are filtered below instead.
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        let full = format!("{}/{}", glob::Pattern::escape(root), parts.join("/"));
        let walk = glob::glob_with(&full, options).map_err(|e| refuse(&e.to_string()))?;
        let real_root = fs::canonicalize(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let mut out = Vec::new();
        // Unreadable directories are skipped, as a shell does.
        for path in walk.flatten() {
            let shown = path
                .to_str()
                .and_then(|p| p.strip_prefix(root))
                .filter(|p| p.starts_with('/'))
                .map(str::to_owned)
                .ok_or_else(|| refuse(&format!("unexpected match {}", path.display())))?;
            let hidden = shown
                .split('/')
                .filter(|n| !n.is_empty())
                .zip(&parts)
                .any(|(name, part)| name.starts_with('.') && !part.starts_with('.'));
            if hidden {
                continue;
            }
            let inside = path
                .parent()
                .and_then(|p| fs::canonicalize(p).ok())
                .is_some_and(|p| p.starts_with(&real_root));
            if !inside {
                return Err(refuse(&format!(
                    "matches {shown} through a symlinked directory leading outside the root prefix"
                )));
            }
            out.push(shown);
        }
        out.sort();
        Ok(out)
    }

    /// Where backups and agent state go.
    pub fn var_dir(&self) -> &Path {
        &self.var_dir
    }

    /// The session id.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The node name.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The agent's node config file (real path).
    pub fn node_config(&self) -> &Path {
        &self.node_config
    }

    /// The folder of local package files, if configured.
    pub fn package_dir(&self) -> Option<&Path> {
        self.package_dir.as_deref()
    }

    /// The OS vendor, if known.
    pub fn os_vendor(&self) -> Option<&str> {
        self.os_vendor.as_deref()
    }

    /// Reads a root-prefixed file as text (staged content included); `None` when it does not
    /// exist.
    pub fn read_to_string(&self, path: &Path) -> Result<Option<String>> {
        match fs::read_to_string(self.staged_or(path)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Reads a root-prefixed file as bytes (staged content included); `None` when it does not
    /// exist.
    pub fn read(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        match fs::read(self.staged_or(path)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// `lstat` of a root-prefixed path (of its staged file when a write is pending); `None`
    /// when it does not exist.
    pub fn metadata(&self, path: &Path) -> Result<Option<fs::Metadata>> {
        match fs::symlink_metadata(self.staged_or(path)) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// The names in a root-prefixed directory, sorted, as they will be once the staged writes
    /// are committed (their temporary files hidden, their targets listed); `None` when it does
    /// not exist or is not a directory.
    pub fn read_dir_names(&self, dir: &Path) -> Result<Option<Vec<OsString>>> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(Error::io(dir, e)),
        };
        let mut names = BTreeSet::new();
        for entry in rd {
            names.insert(entry.map_err(|e| Error::io(dir, e))?.file_name());
        }
        let stage = self.stage();
        for name in stage.pending_by_dir.get(dir).into_iter().flatten() {
            if let Some(tmp) = stage.tmp_of(&dir.join(name)).and_then(Path::file_name) {
                names.remove(tmp);
            }
            names.insert(name.clone());
        }
        Ok(Some(names.into_iter().collect()))
    }

    /// Resolves a user name through `<root>/etc/passwd` (numbers pass through).
    pub fn uid_of(&self, user: &str) -> Result<u32> {
        self.lookup_id(user, "etc/passwd", "user")
    }

    /// Resolves a group name through `<root>/etc/group` (numbers pass through).
    pub fn gid_of(&self, group: &str) -> Result<u32> {
        self.lookup_id(group, "etc/group", "group")
    }

    fn lookup_id(&self, name: &str, db: &str, what: &str) -> Result<u32> {
        if let Ok(n) = name.parse::<u32>() {
            return Ok(n);
        }
        let path = self.root.join(db);
        let text = self.read_to_string(&path)?.unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut f = l.split(':');
                let n = f.next()?;
                let id = f.nth(1)?;
                (n == name).then(|| id.parse::<u32>().ok()).flatten()
            })
            .next()
            .ok_or_else(|| {
                Error::Rule(format!(
                    "unknown {what} {name:?} (not in {})",
                    path.display()
                ))
            })
    }

    /// Runs a command that only reads (package queries, ...), capturing its output. The command
    /// sees the files on disk, not the writes still staged: a class whose check runs commands on
    /// files it writes must not declare [`crate::class::Class::STAGED_WRITES`].
    pub fn run_query(&self, cmd: &mut Command) -> Result<Output> {
        tracing::debug!(?cmd, "run");
        cmd.output()
            .map_err(|e| Error::Command(format!("{:?}: {e}", cmd.get_program())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_stays_under_the_root_and_sorts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r[1]");
        for p in ["srv/b2", "srv/a1", "srv/.a0", "srv/c3"] {
            fs::create_dir_all(root.join(p)).unwrap();
        }
        let outside = dir.path().join("outside");
        fs::create_dir_all(outside.join("x1")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("srv/link")).unwrap();
        let h = Host::new(&root);
        // The root's own glob characters are taken literally.
        assert_eq!(h.glob("/srv/[ab]*").unwrap(), ["/srv/a1", "/srv/b2"]);
        assert_eq!(h.glob("/srv/.a*").unwrap(), ["/srv/.a0"]);
        assert!(h.glob("/srv/none*").unwrap().is_empty());
        let e = h.glob("/srv/link/x*").unwrap_err().to_string();
        assert!(e.contains("outside the root prefix"), "{e}");
        assert!(
            h.glob("srv/*")
                .unwrap_err()
                .to_string()
                .contains("not absolute")
        );
        assert!(
            h.glob("/srv/../*")
                .unwrap_err()
                .to_string()
                .contains("'..'")
        );
    }

    #[test]
    fn paths_stay_under_the_root() {
        let h = Host::new("/tmp/r");
        assert_eq!(h.path("/etc/x").unwrap(), PathBuf::from("/tmp/r/etc/x"));
        assert!(h.path("/etc/../../x").is_err());
        assert!(h.path("etc/x").is_err());
        assert_eq!(
            Host::new("/").path("/etc/x").unwrap(),
            PathBuf::from("/etc/x")
        );
    }

    #[test]
    fn atomic_write_backs_up_and_keeps_mode() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path()).with_var_dir(d.path().join("var"));
        let p = h.path("/etc/a.conf").unwrap();
        h.write_atomic(&p, b"one\n", Some(0o640), None).unwrap();
        h.sync().unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
        let original_ino = fs::metadata(&p).unwrap().ino();
        h.write_atomic(&p, b"two\n", None, None).unwrap();
        h.sync().unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two\n");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
        let b = d
            .path()
            .join("var/backup")
            .join(h.session())
            .join("etc/a.conf");
        assert_eq!(fs::read_to_string(&b).unwrap(), "one\n");
        // The replaced inode itself is the backup: no copy was made.
        assert_eq!(fs::metadata(&b).unwrap().ino(), original_ino);
    }

    fn temp_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn reads_see_staged_writes_until_the_commit_renames_them() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path()).with_var_dir(d.path().join("var"));
        let etc = h.path("/etc").unwrap();
        let old = h.path("/etc/old.conf").unwrap();
        let new = h.path("/etc/new.conf").unwrap();
        fs::create_dir_all(&etc).unwrap();
        fs::write(&old, "before\n").unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o600)).unwrap();

        h.write_atomic(&old, b"after\n", None, None).unwrap();
        h.write_atomic(&new, b"created\n", Some(0o644), None)
            .unwrap();
        // On disk: nothing replaced yet, only temporary files.
        assert_eq!(fs::read_to_string(&old).unwrap(), "before\n");
        assert!(!new.exists());
        assert_eq!(temp_files(&etc).len(), 2);
        // Through the host (and a view of it): the staged state.
        let v = h.view().clone();
        assert_eq!(v.read_to_string(&old).unwrap().unwrap(), "after\n");
        assert_eq!(v.read(&new).unwrap().unwrap(), b"created\n");
        let m = v.metadata(&new).unwrap().unwrap();
        assert!(m.is_file());
        assert_eq!(m.mode() & 0o7777, 0o644);
        assert_eq!(
            v.metadata(&old).unwrap().unwrap().mode() & 0o7777,
            0o600,
            "a staged rewrite keeps the replaced file's mode"
        );
        assert_eq!(
            v.read_dir_names(&etc).unwrap().unwrap(),
            vec![OsString::from("new.conf"), OsString::from("old.conf")],
            "listed as after the commit, temporary files hidden"
        );
        // Attribute changes and rewrites act on the staged file, not on the one on disk.
        h.set_mode(&new, 0o640).unwrap();
        h.set_owner(&new, Some(0), None).unwrap();
        h.write_atomic(&old, b"after again\n", None, None).unwrap();
        assert_eq!(v.metadata(&new).unwrap().unwrap().mode() & 0o7777, 0o640);
        assert_eq!(fs::metadata(&old).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(v.read_to_string(&old).unwrap().unwrap(), "after again\n");
        assert_eq!(
            temp_files(&etc).len(),
            2,
            "a rewrite reuses its staged file"
        );

        h.sync().unwrap();
        assert_eq!(fs::read_to_string(&old).unwrap(), "after again\n");
        assert_eq!(fs::read_to_string(&new).unwrap(), "created\n");
        assert_eq!(fs::metadata(&new).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(fs::metadata(&old).unwrap().mode() & 0o7777, 0o600);
        assert!(temp_files(&etc).is_empty());
        let backup = d
            .path()
            .join("var/backup")
            .join(h.session())
            .join("etc/old.conf");
        assert_eq!(
            fs::read_to_string(backup).unwrap(),
            "before\n",
            "the backup is the file from before the run, not the first staged version"
        );
        // Nothing left to commit.
        h.sync().unwrap();
    }

    #[test]
    fn a_large_batch_is_committed_whole() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path()).with_var_dir(d.path().join("var"));
        let n = FLUSH_THREADS * 3 + 5;
        for i in 0..n {
            let p = h.path(format!("/srv/d{}/f{i}", i % 3)).unwrap();
            h.write_atomic(&p, format!("{i}\n").as_bytes(), None, None)
                .unwrap();
        }
        h.sync().unwrap();
        for i in 0..n {
            let p = h.path(format!("/srv/d{}/f{i}", i % 3)).unwrap();
            assert_eq!(fs::read_to_string(p).unwrap(), format!("{i}\n"));
        }
        for dir in 0..3 {
            assert!(temp_files(&d.path().join(format!("srv/d{dir}"))).is_empty());
        }
    }

    #[test]
    fn dropping_the_host_commits_what_is_staged() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("etc/motd");
        {
            let h = Host::new(d.path()).with_var_dir(d.path().join("var"));
            let clone = h.clone();
            h.write_atomic(&p, b"hello\n", None, None).unwrap();
            drop(h);
            // A clone shares the batch: nothing is committed while one is alive.
            assert!(!p.exists());
            assert_eq!(clone.read(&p).unwrap().unwrap(), b"hello\n");
        }
        assert_eq!(fs::read_to_string(&p).unwrap(), "hello\n");
        assert!(temp_files(&d.path().join("etc")).is_empty());
    }

    #[test]
    fn a_failed_commit_reports_the_file_and_keeps_the_old_one() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path()).with_var_dir(d.path().join("var"));
        let good = h.path("/etc/good").unwrap();
        let bad = h.path("/etc/bad").unwrap();
        h.write_atomic(&good, b"new\n", None, None).unwrap();
        h.write_atomic(&bad, b"new\n", None, None).unwrap();
        // Something else puts a non-empty directory where the file goes: its rename fails.
        fs::create_dir_all(bad.join("sub")).unwrap();
        let err = h.sync().unwrap_err().to_string();
        assert!(err.contains("/etc/bad"), "{err}");
        assert_eq!(fs::read_to_string(&good).unwrap(), "new\n");
        assert!(bad.join("sub").is_dir());
        assert!(temp_files(&d.path().join("etc")).is_empty());
    }

    #[test]
    fn stale_temporary_files_of_dead_processes_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path()).with_var_dir(d.path().join("var"));
        let etc = d.path().join("etc");
        fs::create_dir_all(&etc).unwrap();
        let mut child = Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        // This process, but not a pending write of it: left by a failed attempt.
        let live = std::process::id();
        fs::write(etc.join(format!(".a.conf.tenet-{dead}.tmp")), "torn").unwrap();
        fs::write(etc.join(format!(".b.conf.tenet-{live}.tmp")), "torn").unwrap();
        fs::write(etc.join(".c.conf.tenet-1.tmp"), "pid 1 is alive").unwrap();
        fs::write(etc.join(".d.conf.tenet-x.tmp"), "not ours").unwrap();
        h.write_atomic(&etc.join("e.conf"), b"e\n", None, None)
            .unwrap();
        assert_eq!(
            temp_files(&etc),
            vec![
                ".c.conf.tenet-1.tmp".to_string(),
                ".d.conf.tenet-x.tmp".to_string(),
                format!(".e.conf.tenet-{live}.tmp"),
            ]
        );
        h.sync().unwrap();
        assert_eq!(fs::read_to_string(etc.join("e.conf")).unwrap(), "e\n");
    }

    #[test]
    fn a_change_command_sees_staged_writes() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path()).with_var_dir(d.path().join("var"));
        let p = h.path("/etc/x").unwrap();
        h.write_atomic(&p, b"x\n", None, None).unwrap();
        let out = h.run_change(Command::new("cat").arg(&p)).unwrap();
        assert_eq!(out.stdout, b"x\n");
    }
}

//! The host a class acts on: every path goes through the root prefix, every write through the
//! atomic helpers here, every command through one runner.
//!
//! A class's `check` receives a [`HostView`], which only reads; `fix` receives a [`Host`], which
//! derefs to the view and adds the writes. That split is what "check has no side effects"
//! rests on: a check cannot reach a write helper.
//!
//! # Paths stay inside the root prefix
//!
//! Every helper takes a [`RootedPath`], which only [`HostView::path`] makes (absolute, no
//! `..`). None opens it as a host path: each resolves it from a descriptor of the root prefix
//! with symbolic links interpreted as if the root prefix were `/` (see [`crate::rooted`]), and
//! acts on the final object through a descriptor (the object, or its directory and name with
//! `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW`). A link, even one planted while Tenet runs, cannot
//! make a read or a write reach outside the root prefix. Directories are never created through
//! a link that leads nowhere inside the root prefix: the write is refused, naming the link.
//! With the root prefix `/` this is ordinary path resolution.
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
//! disk. The rename replaces the directory entry: other hard links to the old file keep the
//! old content ([`Written::other_links`] says how many there were).
//!
//! Until the commit, the host and its views read through the batch: `read`, `read_to_string`,
//! `open`, `metadata`, `read_dir_names`, `set_mode`, `set_owner` and a second `write_atomic`
//! of a path with a pending write act on its temporary file, so later rules of the same module
//! see what earlier ones wrote. Anything else (a command) sees the real files only;
//! [`Host::run_change`] commits first, and the engine commits before the fix of a class that
//! does not declare [`crate::class::Class::STAGED_WRITES`].
//!
//! Dropping the last handle on a host (clones and views share the batch) commits what is
//! still staged, logging a failure (call [`Host::sync`] to get the error). Temporary files of a
//! process killed before its commit stay behind; the next `write_atomic` into the same
//! directory removes those whose process is gone.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

use crate::error::{Error, Result};
use crate::rooted::missing;
pub use crate::rooted::{Resolver, RootedPath};

/// How many fsyncs of a commit are in flight at once. The block layer merges the disk cache
/// flushes of concurrent fsyncs, so a batch costs a few flush latencies instead of one per
/// file (1,200 small files on the benchmark VM under load: 3.7 s one after the other, 0.1 s
/// with 16 in flight). `syncfs` would flush once too, but it also writes back every other
/// process's dirty data on the file system (0.25 to 0.55 s there under the same load).
const FLUSH_THREADS: usize = 16;

/// Read-only access to the managed system under a root prefix.
#[derive(Debug, Clone)]
pub struct HostView {
    root: Arc<PathBuf>,
    resolver: Resolver,
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

/// What [`Host::write_atomic`] replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Whether a regular file was there (and is now backed up).
    pub replaced: bool,
    /// How many other hard links the replaced file had. The new file is a new inode: those
    /// links keep the previous content.
    pub other_links: u64,
}

impl Written {
    /// The line a fix logs when the replaced file had other hard links (`None` otherwise).
    pub fn hard_link_note(&self, shown: &str) -> Option<String> {
        (self.other_links > 0).then(|| {
            format!(
                "{shown}: the replaced file had {} other hard link(s); they keep the previous \
                 content (files are replaced atomically by a new file, not rewritten in place)",
                self.other_links
            )
        })
    }
}

/// The batch of writes [`Host::sync`] commits.
#[derive(Debug, Default)]
struct Stage {
    /// Pending renames by target.
    pending: HashMap<RootedPath, Pending>,
    /// The targets of `pending` by directory, for listings (a module can stage thousands).
    pending_by_dir: HashMap<RootedPath, BTreeSet<OsString>>,
    /// Staging order: renames happen in the order the fixes wrote.
    next_seq: u64,
    /// Directories holding renamed files whose directory entry is not yet durable. A rename
    /// is atomic without it; the directory flush only makes the new entry survive a crash.
    renamed_dirs: HashSet<RootedPath>,
    /// Directories this process already cleaned of stale temporary files.
    cleaned_dirs: HashSet<RootedPath>,
}

/// One staged write: `dir/tmp` is renamed to `dir/name`.
#[derive(Debug)]
struct Pending {
    seq: u64,
    dir: RootedPath,
    name: OsString,
    tmp: OsString,
}

impl Pending {
    fn tmp_path(&self) -> RootedPath {
        self.dir
            .child(&self.tmp)
            .expect("a temporary file name is one component")
    }
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
        let mut pending: Vec<(RootedPath, Pending)> = self.pending.drain().collect();
        if pending.is_empty() && self.renamed_dirs.is_empty() {
            return Ok(());
        }
        pending.sort_by_key(|(_, p)| p.seq);
        let started = std::time::Instant::now();
        let temps: Vec<RootedPath> = pending.iter().map(|(_, p)| p.tmp_path()).collect();
        let files = temps.len();
        if let Err(e) = fsync_all(&temps, false) {
            for (_, p) in &pending {
                let _ = unlink_in(&p.dir, &p.tmp);
            }
            return Err(e);
        }
        let synced = started.elapsed();
        let mut first_error = None;
        for (target, p) in pending {
            let renamed = p
                .dir
                .open(OFlag::O_PATH | OFlag::O_DIRECTORY, true)
                .and_then(|dir| {
                    nix::fcntl::renameat(&dir, p.tmp.as_os_str(), &dir, p.name.as_os_str())
                        .map_err(io::Error::from)
                });
            match renamed {
                Ok(()) => {
                    self.renamed_dirs.insert(p.dir.clone());
                }
                Err(e) => {
                    let _ = unlink_in(&p.dir, &p.tmp);
                    first_error.get_or_insert(Error::io(&target.real(), e));
                }
            }
        }
        let renamed = started.elapsed();
        let dirs: Vec<RootedPath> = std::mem::take(&mut self.renamed_dirs).into_iter().collect();
        if let Err(e) = fsync_all(&dirs, true) {
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
    fn unstage(&mut self, path: &RootedPath) {
        if let Some(p) = self.pending.remove(path)
            && let Some(names) = self.pending_by_dir.get_mut(&p.dir)
        {
            names.remove(&p.name);
        }
    }

    /// The temporary file of a pending write to `path`.
    fn tmp_of(&self, path: &RootedPath) -> Option<RootedPath> {
        self.pending.get(path).map(Pending::tmp_path)
    }

    /// Removes the temporary files a killed run left in `dir` (once per directory): those
    /// named after a process that is gone, or after this one but not pending. A live
    /// process's files are left alone (a process in another PID namespace writing into the
    /// same directory would look gone: Tenet does not support that).
    fn clean_stale_temps(&mut self, dir: &RootedPath, fd: &OwnedFd) {
        if !self.cleaned_dirs.insert(dir.clone()) {
            return;
        }
        let Ok(names) = list_dir(fd) else { return };
        let me = std::process::id() as i32;
        for name in names {
            let Some(pid) = temp_pid(&name) else {
                continue;
            };
            let ours_pending = pid == me
                && self
                    .pending
                    .values()
                    .any(|p| p.dir == *dir && p.tmp == name);
            let stale = if pid == me {
                !ours_pending
            } else {
                !process_alive(pid)
            };
            let removable = stat_at(fd, &name)
                .ok()
                .flatten()
                .is_some_and(|st| is(&st, SFlag::S_IFREG) || is(&st, SFlag::S_IFLNK));
            if stale && removable {
                let shown = dir.real().join(&name);
                match nix::unistd::unlinkat(
                    fd,
                    name.as_os_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                ) {
                    Ok(()) => tracing::info!(
                        "removed {}, left by an interrupted run (process {pid})",
                        shown.display()
                    ),
                    Err(e) => tracing::warn!("cannot remove stale {}: {e}", shown.display()),
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

/// The temporary file name a write to `name` goes through.
fn temp_name(name: &OsStr) -> OsString {
    OsString::from(format!(
        ".{}.tenet-{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ))
}

/// Whether `st` is of the file type `kind`.
fn is(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind
}

/// `lstat` of `name` in the directory `dir`; `None` when it does not exist.
fn stat_at(dir: &OwnedFd, name: &OsStr) -> io::Result<Option<FileStat>> {
    match nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The names in the directory `fd` (an `O_PATH` descriptor is fine), `.` and `..` left out.
fn list_dir(fd: &OwnedFd) -> io::Result<Vec<OsString>> {
    let dir = nix::fcntl::openat(
        fd,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in nix::dir::Dir::from_fd(dir)?.iter() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(&name).to_os_string());
        }
    }
    Ok(names)
}

/// Unlinks `dir/name` (not a directory), resolved inside the root prefix.
fn unlink_in(dir: &RootedPath, name: &OsStr) -> io::Result<()> {
    let fd = dir.open(OFlag::O_PATH | OFlag::O_DIRECTORY, true)?;
    nix::unistd::unlinkat(&fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
        .map_err(io::Error::from)
}

/// Fsyncs files (never following a link) or directories, [`FLUSH_THREADS`] at a time;
/// returns the first error. A file is reopened for it: a writeback error nobody has seen yet
/// is still reported to a descriptor opened after it (errseq), and keeping a descriptor per
/// staged file could exhaust the 1,024 a process gets by default.
fn fsync_all(paths: &[RootedPath], dirs: bool) -> Result<()> {
    let fsync = |p: &RootedPath| {
        let opened = if dirs {
            p.open(OFlag::O_RDONLY | OFlag::O_DIRECTORY, true)
        } else {
            p.open(OFlag::O_RDONLY, false)
        };
        opened
            .and_then(|fd| File::from(fd).sync_all())
            .map_err(|e| Error::io(&p.real(), e))
    };
    if paths.len() <= 1 {
        return paths.iter().try_for_each(fsync);
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

/// Copies `name` in `src` to `dest_name` in `dest`, never following links: a file's bytes, a
/// directory's tree, a link as a link, a FIFO or device node as a node (sockets are skipped).
/// Modes are kept; owners too when allowed.
fn copy_tree(src: &OwnedFd, name: &OsStr, dest: &OwnedFd, dest_name: &OsStr) -> io::Result<()> {
    let Some(st) = stat_at(src, name)? else {
        return Ok(());
    };
    let perm = Mode::from_bits_truncate(st.st_mode & 0o7777);
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let owner = || {
        let _ = nix::unistd::fchownat(
            dest,
            dest_name,
            Some(nix::unistd::Uid::from_raw(st.st_uid)),
            Some(nix::unistd::Gid::from_raw(st.st_gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        );
    };
    match kind {
        SFlag::S_IFREG => {
            let from = nix::fcntl::openat(
                src,
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            let to = nix::fcntl::openat(
                dest,
                dest_name,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )?;
            let (mut from, mut to) = (File::from(from), File::from(to));
            io::copy(&mut from, &mut to)?;
            owner();
            to.set_permissions(fs::Permissions::from_mode(perm.bits()))?;
        }
        SFlag::S_IFDIR => {
            nix::sys::stat::mkdirat(dest, dest_name, Mode::from_bits_truncate(0o700))?;
            let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let from = nix::fcntl::openat(src, name, flags, Mode::empty())?;
            let to = nix::fcntl::openat(dest, dest_name, flags, Mode::empty())?;
            for entry in list_dir(&from)? {
                copy_tree(&from, &entry, &to, &entry)?;
            }
            owner();
            nix::sys::stat::fchmodat(
                dest,
                dest_name,
                perm,
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )?;
        }
        SFlag::S_IFLNK => {
            let target = nix::fcntl::readlinkat(src, name)?;
            nix::unistd::symlinkat(target.as_os_str(), dest, dest_name)?;
            owner();
        }
        SFlag::S_IFSOCK => {
            tracing::warn!("not backing up a socket");
        }
        _ => {
            nix::sys::stat::mknodat(dest, dest_name, kind, perm, st.st_rdev)?;
            owner();
        }
    }
    Ok(())
}

/// Removes `name` in `dir`, a directory with everything in it, never following a link.
fn remove_tree(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let Some(st) = stat_at(dir, name)? else {
        return Ok(());
    };
    if is(&st, SFlag::S_IFDIR) {
        let sub = nix::fcntl::openat(
            dir,
            name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        for entry in list_dir(&sub)? {
            remove_tree(&sub, &entry)?;
        }
        nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::RemoveDir)?;
    } else {
        match nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl std::ops::Deref for Host {
    type Target = HostView;
    fn deref(&self) -> &HostView {
        &self.view
    }
}

impl Host {
    /// A host rooted at `root` (`/` for the real system). The var dir (backups) defaults to
    /// `<root>/var/lib/tenet`, the agent's node config to `<root>/etc/tenet/node.toml`. Paths
    /// are resolved with [`Resolver::from_env`].
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
                root: Arc::new(root),
                resolver: Resolver::from_env(),
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

    /// Records that `dir` received a rename or an unlink to make durable at the next
    /// [`Host::sync`].
    pub fn defer_dir_sync(&self, dir: &RootedPath) {
        self.view.stage().renamed_dirs.insert(dir.clone());
    }

    /// Sets how paths are resolved inside the root prefix (tests force the component walk).
    pub fn with_resolver(mut self, resolver: Resolver) -> Host {
        self.view.resolver = resolver;
        self
    }

    /// Sets where backups and agent state go (a real path; resolved inside the root prefix
    /// when it lies under it).
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

    /// Sets the agent's node config file (a real path; resolved inside the root prefix when
    /// it lies under it) the `nodeconf` class manages.
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

    /// Stages `content` for `path`: a temporary file in the same directory gets the content,
    /// mode and owner, and [`Host::sync`] renames it over the target, so a reader (or a crash)
    /// sees the old file or the new one, never a mix. Until then this host's reads of `path`
    /// see the new file. The file being replaced, if any, is backed up now. Parent directories
    /// are created (never through a link leading nowhere). Mode and owner not given are kept
    /// from the file being replaced.
    pub fn write_atomic(
        &self,
        path: &RootedPath,
        content: &[u8],
        mode: Option<u32>,
        owner: Option<(Option<u32>, Option<u32>)>,
    ) -> Result<Written> {
        let fail = |e: io::Error| Error::io(&path.real(), e);
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(fail(io::Error::other("no parent directory")));
        };
        let name = name.to_os_string();
        self.create_dir_all(&parent)?;
        let dir = parent
            .open(OFlag::O_PATH | OFlag::O_DIRECTORY, true)
            .map_err(|e| Error::io(&parent.real(), e))?;
        let mut stage = self.view.stage();
        stage.clean_stale_temps(&parent, &dir);
        let on_disk = stat_at(&dir, &name).map_err(fail)?;
        let restaged = stage.pending.get(path).map(|p| p.tmp.clone());
        let mut written = Written::default();
        if let Some(st) = on_disk.filter(|st| is(st, SFlag::S_IFREG)) {
            // The file on disk is still the one from before the run, even when a write of it
            // is already staged (then its links were reported when it was first staged).
            if restaged.is_none() {
                // nlink_t is u64 here, u32 on other targets (aarch64).
                #[allow(clippy::unnecessary_cast)]
                let links = st.st_nlink as u64;
                written = Written {
                    replaced: true,
                    other_links: links.saturating_sub(1),
                };
            }
            self.backup(path)?;
        }
        let existing = match &restaged {
            Some(tmp) => stat_at(&dir, tmp).map_err(fail)?,
            None => on_disk,
        };
        let mode = mode
            .or_else(|| existing.as_ref().map(|m| m.st_mode & 0o7777))
            .unwrap_or(0o644);
        let (uid, gid) = match owner {
            Some((u, g)) => (
                u.or(existing.as_ref().map(|m| m.st_uid)),
                g.or(existing.as_ref().map(|m| m.st_gid)),
            ),
            None => (
                existing.as_ref().map(|m| m.st_uid),
                existing.as_ref().map(|m| m.st_gid),
            ),
        };
        let tmp = restaged.clone().unwrap_or_else(|| temp_name(&name));
        let result = (|| -> io::Result<()> {
            let open = |flags: OFlag| {
                nix::fcntl::openat(
                    &dir,
                    tmp.as_os_str(),
                    flags | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
            };
            let fd = if restaged.is_some() {
                // Nobody sees a staged file but this host: rewriting it in place is safe. Not
                // with O_TRUNC: ext4 (auto_da_alloc) writes out a file truncated to zero when it
                // is closed, one synchronous write per rewrite; the length is set after.
                open(OFlag::empty())?
            } else {
                let create = || open(OFlag::O_CREAT | OFlag::O_EXCL);
                match create() {
                    // Not staged, named after this process: left by a failed attempt.
                    Err(Errno::EEXIST) => {
                        nix::unistd::unlinkat(
                            &dir,
                            tmp.as_os_str(),
                            nix::unistd::UnlinkatFlags::NoRemoveDir,
                        )?;
                        create()?
                    }
                    other => other?,
                }
            };
            let mut f = File::from(fd);
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
            let _ = nix::unistd::unlinkat(
                &dir,
                tmp.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
            return Err(fail(e));
        }
        let seq = match stage.pending.get(path) {
            Some(p) => p.seq,
            None => {
                stage.next_seq += 1;
                stage.next_seq
            }
        };
        stage
            .pending_by_dir
            .entry(parent.clone())
            .or_default()
            .insert(name.clone());
        stage.pending.insert(
            path.clone(),
            Pending {
                seq,
                dir: parent,
                name,
                tmp,
            },
        );
        Ok(written)
    }

    /// Saves the regular file `path` as `<var_dir>/backup/<session>/<path>`, once per session
    /// (the first one is the state before the run); `None` when there is no regular file. A
    /// hard link when it can be: files are replaced by rename, which leaves the old inode
    /// untouched, so the link is a free and exact backup (mode, owner and times included). A
    /// copy when the file has other links (they could change it in place) or the var dir is
    /// on another file system. (Should the commit fail, the file and its backup stay one inode
    /// until the file is replaced.)
    pub fn backup(&self, path: &RootedPath) -> Result<Option<PathBuf>> {
        let fail = |e: io::Error| Error::io(&path.real(), e);
        let dest = self.backup_dest(path)?;
        let (src, name) = match path.open_parent() {
            Ok(x) => x,
            Err(e) if missing(&e) => return Ok(None),
            Err(e) => return Err(fail(e)),
        };
        let Some(st) = stat_at(&src, &name).map_err(fail)? else {
            return Ok(None);
        };
        if !is(&st, SFlag::S_IFREG) {
            return Ok(None);
        }
        if dest
            .lstat()
            .map_err(|e| Error::io(&dest.real(), e))?
            .is_some()
        {
            return Ok(Some(dest.real()));
        }
        let (dest_dir, dest_name) = self.backup_dir_of(&dest)?;
        let dest_fail = |e: io::Error| Error::io(&dest.real(), e);
        let linked = st.st_nlink == 1
            && nix::unistd::linkat(
                &src,
                name.as_os_str(),
                &dest_dir,
                dest_name.as_os_str(),
                AtFlags::empty(),
            )
            .is_ok();
        if !linked {
            copy_tree(&src, &name, &dest_dir, &dest_name).map_err(dest_fail)?;
        }
        Ok(Some(dest.real()))
    }

    /// Where `path` is backed up this session.
    fn backup_dest(&self, path: &RootedPath) -> Result<RootedPath> {
        let base = self
            .view
            .anchored(&self.view.var_dir.join("backup").join(&self.view.session));
        let mut dest = base;
        for c in path.rel().components() {
            dest = dest
                .child(c.as_os_str())
                .map_err(|e| Error::io(&path.real(), e))?;
        }
        Ok(dest)
    }

    /// Creates the directory of a backup and opens it.
    fn backup_dir_of(&self, dest: &RootedPath) -> Result<(OwnedFd, OsString)> {
        let parent = dest
            .parent()
            .ok_or_else(|| Error::io(&dest.real(), io::Error::other("no parent directory")))?;
        self.create_dir_all(&parent)?;
        dest.open_parent().map_err(|e| Error::io(&dest.real(), e))
    }

    /// Removes `path` (a file, a link, a special file, or a directory with everything in it;
    /// a link is removed, never followed) after saving it under
    /// `<var_dir>/backup/<session>/<path>` (moved there when the var dir is on the same file
    /// system, else copied first), unless this session already saved that path. Returns
    /// whether something was removed.
    pub fn remove(&self, path: &RootedPath) -> Result<bool> {
        let fail = |e: io::Error| Error::io(&path.real(), e);
        let Some(parent) = path.parent() else {
            return Err(fail(io::Error::other("refusing to remove the root prefix")));
        };
        let (dir, name) = match path.open_parent() {
            Ok(x) => x,
            Err(e) if missing(&e) => return Ok(false),
            Err(e) => return Err(fail(e)),
        };
        if stat_at(&dir, &name).map_err(fail)?.is_none() {
            return Ok(false);
        }
        let dest = self.backup_dest(path)?;
        if dest
            .lstat()
            .map_err(|e| Error::io(&dest.real(), e))?
            .is_none()
        {
            let (dest_dir, dest_name) = self.backup_dir_of(&dest)?;
            match nix::fcntl::renameat2(
                &dir,
                name.as_os_str(),
                &dest_dir,
                dest_name.as_os_str(),
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => {
                    self.defer_dir_sync(&parent);
                    return Ok(true);
                }
                Err(Errno::EXDEV) => copy_tree(&dir, &name, &dest_dir, &dest_name)
                    .map_err(|e| Error::io(&dest.real(), e))?,
                Err(e) => return Err(fail(e.into())),
            }
        }
        remove_tree(&dir, &name).map_err(fail)?;
        self.defer_dir_sync(&parent);
        Ok(true)
    }

    /// Creates a directory and its parents. A link on the way is followed inside the root
    /// prefix; one that leads nowhere is not created through: the error names it.
    pub fn create_dir_all(&self, path: &RootedPath) -> Result<()> {
        let fail = |e: io::Error| Error::io(&path.real(), e);
        match path.open(OFlag::O_PATH | OFlag::O_DIRECTORY, true) {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(Errno::ENOENT as i32) => {}
            Err(e) => return Err(self.explained(path, fail(e))),
        }
        let Some(parent) = path.parent() else {
            // The root prefix itself: the operator's path, created as the host resolves it.
            return fs::create_dir_all(path.anchor()).map_err(fail);
        };
        self.create_dir_all(&parent)?;
        let (dir, name) = path.open_parent().map_err(fail)?;
        match nix::sys::stat::mkdirat(&dir, name.as_os_str(), Mode::from_bits_truncate(0o777)) {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) => match stat_at(&dir, &name).map_err(fail)? {
                Some(st) if is(&st, SFlag::S_IFDIR) => Ok(()),
                Some(st) if is(&st, SFlag::S_IFLNK) => {
                    let target = nix::fcntl::readlinkat(&dir, name.as_os_str())
                        .map(|t| PathBuf::from(t).display().to_string())
                        .unwrap_or_default();
                    let why = path.dangling_link().unwrap_or_else(|| {
                        format!(
                            "{} is a symbolic link to {target}, which does not lead to a \
                             directory under the root prefix {}",
                            path.abs().display(),
                            path.anchor().display()
                        )
                    });
                    Err(Error::Rule(format!(
                        "{}: {why}; refusing to create directories through it",
                        path.real().display()
                    )))
                }
                _ => Err(fail(io::Error::other("exists and is not a directory"))),
            },
            Err(e) => Err(fail(e.into())),
        }
    }

    /// Sets the permission bits of `path` (of its staged file when a write of it is
    /// pending). A symbolic link is refused, never followed.
    pub fn set_mode(&self, path: &RootedPath, mode: u32) -> Result<()> {
        let target = self.view.staged_or(path);
        let fail = |e: io::Error| Error::io(&path.real(), e);
        let (dir, name) = target.open_parent().map_err(fail)?;
        let st = stat_at(&dir, &name)
            .map_err(fail)?
            .ok_or_else(|| fail(io::Error::from(io::ErrorKind::NotFound)))?;
        if is(&st, SFlag::S_IFLNK) {
            return Err(fail(io::Error::other(
                "is a symbolic link; refusing to change a mode through it",
            )));
        }
        let perm = Mode::from_bits_truncate(mode);
        if is(&st, SFlag::S_IFREG) || is(&st, SFlag::S_IFDIR) {
            let opened = nix::fcntl::openat(
                &dir,
                name.as_os_str(),
                OFlag::O_RDONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_NONBLOCK
                    | OFlag::O_NOCTTY
                    | OFlag::O_CLOEXEC,
                Mode::empty(),
            );
            if let Ok(fd) = opened {
                return nix::sys::stat::fchmod(&fd, perm).map_err(|e| fail(e.into()));
            }
        }
        // Unreadable, or a special file (not opened: opening a device may act on it).
        nix::sys::stat::fchmodat(
            &dir,
            name.as_os_str(),
            perm,
            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
        )
        .map_err(|e| fail(e.into()))
    }

    /// Sets owner and/or group of `path` (of its staged file when a write of it is pending;
    /// symlinks are not followed).
    pub fn set_owner(&self, path: &RootedPath, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        let target = self.view.staged_or(path);
        let fail = |e: io::Error| Error::io(&path.real(), e);
        let (dir, name) = target.open_parent().map_err(fail)?;
        nix::unistd::fchownat(
            &dir,
            name.as_os_str(),
            uid.map(nix::unistd::Uid::from_raw),
            gid.map(nix::unistd::Gid::from_raw),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| fail(e.into()))
    }

    /// Writes a value into a kernel file (`/proc/sys`, `/sys`): those are not regular files,
    /// so no temporary file and rename, one plain write, not staged.
    pub fn write_kernel_file(&self, path: &RootedPath, value: &str) -> Result<()> {
        let fail = |e: io::Error| Error::io(&path.real(), e);
        // No O_TRUNC: a kernel file takes the value written at offset 0 whatever its size. A
        // test root's stand-in is a regular file, cut to length after the write instead:
        // truncated to zero, ext4 would write it out synchronously when it is closed.
        let mut f = File::from(path.open(OFlag::O_WRONLY, true).map_err(fail)?);
        f.write_all(value.as_bytes()).map_err(fail)?;
        let len = value.len() as u64;
        if f.metadata().is_ok_and(|m| m.is_file() && m.len() > len) {
            f.set_len(len).map_err(fail)?;
        }
        Ok(())
    }

    /// Removes a symbolic link; anything else is refused. The directory is fsynced at the
    /// next [`Host::sync`].
    pub fn remove_link(&self, path: &RootedPath) -> Result<()> {
        let fail = |e: io::Error| Error::io(&path.real(), e);
        let (dir, name) = match path.open_parent() {
            Ok(x) => x,
            Err(e) if missing(&e) => return Ok(()),
            Err(e) => return Err(fail(e)),
        };
        match stat_at(&dir, &name).map_err(fail)? {
            None => return Ok(()),
            Some(st) if is(&st, SFlag::S_IFLNK) => {}
            Some(_) => {
                return Err(fail(io::Error::other(
                    "not a symbolic link; refusing to remove it",
                )));
            }
        }
        nix::unistd::unlinkat(
            &dir,
            name.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )
        .map_err(|e| fail(e.into()))?;
        if let Some(parent) = path.parent() {
            self.defer_dir_sync(&parent);
        }
        Ok(())
    }

    /// Makes `path` a symbolic link to `target` (written as given, not root-prefixed): a
    /// temporary link in the same directory renamed over `path`, so an existing link is
    /// replaced in one step; the directory is fsynced at the next [`Host::sync`]. Parent
    /// directories are created. Anything but a link at `path` is refused.
    pub fn symlink(&self, path: &RootedPath, target: impl AsRef<OsStr>) -> Result<()> {
        let fail = |e: io::Error| Error::io(&path.real(), e);
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(fail(io::Error::other("not a valid link path")));
        };
        self.create_dir_all(&parent)?;
        let dir = parent
            .open(OFlag::O_PATH | OFlag::O_DIRECTORY, true)
            .map_err(fail)?;
        if let Some(st) = stat_at(&dir, name).map_err(fail)?
            && !is(&st, SFlag::S_IFLNK)
        {
            return Err(fail(io::Error::other(
                "exists and is not a symbolic link; refusing to replace it",
            )));
        }
        let tmp = temp_name(name);
        // A leftover from an interrupted run is ours to remove, but only if it is a link.
        if stat_at(&dir, &tmp)
            .map_err(fail)?
            .is_some_and(|st| is(&st, SFlag::S_IFLNK))
        {
            nix::unistd::unlinkat(
                &dir,
                tmp.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            )
            .map_err(|e| fail(e.into()))?;
        }
        nix::unistd::symlinkat(target.as_ref(), &dir, tmp.as_os_str())
            .map_err(|e| fail(e.into()))?;
        if let Err(e) = nix::fcntl::renameat(&dir, tmp.as_os_str(), &dir, name) {
            let _ = nix::unistd::unlinkat(
                &dir,
                tmp.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
            return Err(fail(e.into()));
        }
        self.defer_dir_sync(&parent);
        Ok(())
    }

    /// Runs a command that changes the system (package install, ...), capturing its output.
    /// The staged writes are committed first: the command sees the real files.
    pub fn run_change(&self, cmd: &mut Command) -> Result<Output> {
        self.sync()?;
        self.run_query(cmd)
    }

    /// Runs a command that starts or stops something (a daemon's start command), waiting at
    /// most `timeout` for it to exit. Its output goes to an unnamed temporary file rather than
    /// pipes, so a daemon it leaves behind holding them neither blocks the wait nor dies of
    /// SIGPIPE later; stdin is `/dev/null`. The staged writes are committed first.
    pub fn start_change(&self, cmd: &mut Command, timeout: std::time::Duration) -> Result<Started> {
        self.sync()?;
        let name = format!("{:?}", cmd.get_program());
        let fail = |e: io::Error| Error::Command(format!("{name}: {e}"));
        let tmp = std::env::temp_dir();
        let fd = nix::fcntl::open(
            &tmp,
            OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| Error::io(&tmp, e.into()))?;
        let mut out = File::from(fd);
        tracing::debug!(?cmd, "start");
        let mut child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().map_err(fail)?)
            .stderr(out.try_clone().map_err(fail)?)
            .spawn()
            .map_err(fail)?;
        let deadline = std::time::Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child.try_wait().map_err(fail)? {
                break Some(st);
            }
            if std::time::Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        const MAX_OUTPUT: u64 = 64 * 1024;
        use std::io::Seek;
        out.seek(io::SeekFrom::Start(0)).map_err(fail)?;
        let mut output = Vec::new();
        out.take(MAX_OUTPUT)
            .read_to_end(&mut output)
            .map_err(fail)?;
        Ok(Started {
            status,
            output: String::from_utf8_lossy(&output).into_owned(),
        })
    }
}

/// What [`Host::start_change`] saw.
#[derive(Debug)]
pub struct Started {
    /// The exit status; `None` when the command was still running at the deadline (it is
    /// left running).
    pub status: Option<std::process::ExitStatus>,
    /// Its stdout and stderr, interleaved (the first 64 KiB).
    pub output: String,
}

/// A program of the machine Tenet runs on (not of the managed system): the first executable
/// regular file `name` in `dirs`.
pub fn find_program(name: &str, dirs: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// A scratch file on the machine Tenet runs on (its temporary directory, not the managed
/// system), private to this user, removed when dropped: input for a validating command.
#[derive(Debug)]
pub struct ScratchFile {
    path: PathBuf,
}

impl ScratchFile {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl HostView {
    fn stage(&self) -> MutexGuard<'_, Stage> {
        // A panic while holding the lock leaves the batch as consistent as any other moment.
        self.stage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The path to act on for `path`: its staged file when a write of it is pending.
    fn staged_or(&self, path: &RootedPath) -> RootedPath {
        self.stage().tmp_of(path).unwrap_or_else(|| path.clone())
    }

    /// `err`, with the dangling link that caused it when there is one.
    fn explained(&self, path: &RootedPath, err: Error) -> Error {
        match path.dangling_link() {
            Some(why) => Error::Rule(format!("{}: {why}", path.real().display())),
            None => err,
        }
    }

    /// A real path given by the operator (var dir, node config) as a [`RootedPath`]: under
    /// the root prefix it is resolved inside it like any path of the managed system; outside,
    /// as the host resolves it (the operator chose it).
    fn anchored(&self, real: &Path) -> RootedPath {
        let (anchor, rest) = match real.strip_prefix(self.root.as_path()) {
            Ok(rest) if !self.is_real_root() => (self.root.clone(), rest),
            _ => (
                Arc::new(PathBuf::from("/")),
                real.strip_prefix("/").unwrap_or(real),
            ),
        };
        let mut rel = PathBuf::new();
        for c in rest.components() {
            match c {
                Component::Normal(n) => rel.push(n),
                Component::ParentDir => {
                    rel.pop();
                }
                _ => {}
            }
        }
        RootedPath::new(anchor, rel, self.resolver)
    }

    /// The root prefix (`/` for the real system).
    pub fn root(&self) -> &Path {
        self.root.as_path()
    }

    /// Whether the root prefix is the real `/`.
    pub fn is_real_root(&self) -> bool {
        self.root.as_path() == Path::new("/")
    }

    /// An absolute path of the managed system, to be resolved inside the root prefix.
    /// Relative paths and `..` components are refused.
    pub fn path(&self, abs: impl AsRef<Path>) -> Result<RootedPath> {
        let abs = abs.as_ref();
        if !abs.is_absolute() {
            return Err(Error::Rule(format!(
                "path {:?} is not absolute",
                abs.display().to_string()
            )));
        }
        let mut rel = PathBuf::new();
        for c in abs.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(p) => rel.push(p),
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(Error::Rule(format!(
                        "path {:?} contains '..'",
                        abs.display().to_string()
                    )));
                }
            }
        }
        Ok(RootedPath::new(self.root.clone(), rel, self.resolver))
    }

    /// The paths of the managed system matching the shell glob `pattern` (`*`, `?`, `[...]`
    /// within one path component; `**` is `*`; a name starting with `.` is matched only by a
    /// pattern component starting with `.`), sorted, as absolute paths of the managed system.
    /// As in Python's glob, a pattern ending with `/` (or `/.`) matches directories only (links
    /// to directories included). The pattern must be absolute and without `..`. Directories are listed inside the root
    /// prefix, symbolic links to directories followed as the managed system would (absolute
    /// targets under the root prefix); unreadable directories are skipped, as a shell does.
    pub fn glob(&self, pattern: &str) -> Result<Vec<String>> {
        let refuse = |why: &str| Error::Rule(format!("glob pattern {pattern:?}: {why}"));
        if !pattern.starts_with('/') {
            return Err(refuse("not absolute"));
        }
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
        let dirs_only = pattern.ends_with('/') || pattern.trim_end_matches('/').ends_with("/.");
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        let mut current: Vec<RootedPath> = vec![self.path("/")?];
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let magic = part.contains(['*', '?', '[']);
            let matcher = if magic {
                Some(glob::Pattern::new(part).map_err(|e| refuse(&e.to_string()))?)
            } else {
                None
            };
            let mut next = Vec::new();
            for dir in &current {
                let candidates: Vec<RootedPath> = match &matcher {
                    None => vec![dir.child(part).map_err(|e| refuse(&e.to_string()))?],
                    Some(m) => {
                        let Ok(Some(names)) = self.read_dir_names(dir) else {
                            continue;
                        };
                        names
                            .iter()
                            .filter_map(|n| n.to_str())
                            // Hidden names only for a pattern starting with `.`, as Python's glob.
                            .filter(|n| !n.starts_with('.') || part.starts_with('.'))
                            .filter(|n| m.matches_with(n, options))
                            .filter_map(|n| dir.child(n).ok())
                            .collect()
                    }
                };
                for c in candidates {
                    let keep = if last && !dirs_only {
                        matcher.is_some() || c.lstat().is_ok_and(|s| s.is_some())
                    } else {
                        // A directory, or a link to one (followed inside the root prefix).
                        c.open(OFlag::O_PATH | OFlag::O_DIRECTORY, true).is_ok()
                    };
                    if keep {
                        next.push(c);
                    }
                }
            }
            current = next;
        }
        if parts.is_empty() {
            return Ok(vec!["/".into()]);
        }
        let mut out: Vec<String> = current
            .iter()
            .map(|p| p.abs().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out.dedup();
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

    /// The agent's node config file (real path), for messages.
    pub fn node_config(&self) -> &Path {
        &self.node_config
    }

    /// The agent's node config file, to read or write it.
    pub fn node_config_file(&self) -> RootedPath {
        self.anchored(&self.node_config)
    }

    /// The folder of local package files, if configured.
    pub fn package_dir(&self) -> Option<&Path> {
        self.package_dir.as_deref()
    }

    /// The regular files of the package folder whose name ends with `.ext`, sorted.
    pub fn package_files(&self, ext: &str) -> Result<Vec<PathBuf>> {
        let Some(dir) = &self.package_dir else {
            return Ok(Vec::new());
        };
        let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == ext) && p.is_file())
            .collect();
        paths.sort();
        Ok(paths)
    }

    /// The OS vendor, if known.
    pub fn os_vendor(&self) -> Option<&str> {
        self.os_vendor.as_deref()
    }

    /// A scratch file holding `content` on the machine Tenet runs on (not the managed
    /// system), removed when the returned guard is dropped.
    pub fn scratch_file(&self, prefix: &str, content: &[u8]) -> Result<ScratchFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let guard = ScratchFile { path };
        f.write_all(content)
            .map_err(|e| Error::io(&guard.path, e))?;
        Ok(guard)
    }

    /// Opens a file for reading (staged content included), following a link at the end
    /// inside the root prefix; `None` when it does not exist. For content too large to hold.
    pub fn open(&self, path: &RootedPath) -> Result<Option<File>> {
        let target = self.staged_or(path);
        match target.open(OFlag::O_RDONLY | OFlag::O_NONBLOCK, true) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(self.explained(path, Error::io(&path.real(), e))),
        }
    }

    /// Reads a file as text (staged content included); `None` when it does not exist.
    pub fn read_to_string(&self, path: &RootedPath) -> Result<Option<String>> {
        let Some(mut f) = self.open(path)? else {
            return Ok(None);
        };
        let mut text = String::new();
        f.read_to_string(&mut text)
            .map_err(|e| Error::io(&path.real(), e))?;
        Ok(Some(text))
    }

    /// Reads a file as bytes (staged content included); `None` when it does not exist.
    pub fn read(&self, path: &RootedPath) -> Result<Option<Vec<u8>>> {
        let Some(mut f) = self.open(path)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path.real(), e))?;
        Ok(Some(bytes))
    }

    /// `lstat` of `path` (of its staged file when a write is pending); `None` when it does
    /// not exist.
    pub fn metadata(&self, path: &RootedPath) -> Result<Option<fs::Metadata>> {
        let target = self.staged_or(path);
        match target.open(OFlag::O_PATH, false) {
            Ok(fd) => File::from(fd)
                .metadata()
                .map(Some)
                .map_err(|e| Error::io(&path.real(), e)),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(self.explained(path, Error::io(&path.real(), e))),
        }
    }

    /// The content of the symbolic link `path`; `None` when nothing is there. Anything but a
    /// link is an error.
    pub fn read_link(&self, path: &RootedPath) -> Result<Option<PathBuf>> {
        let fail = |e: io::Error| Error::io(&path.real(), e);
        let fd = match path.open(OFlag::O_PATH, false) {
            Ok(fd) => fd,
            Err(e) if missing(&e) => return Ok(None),
            Err(e) => return Err(fail(e)),
        };
        match nix::fcntl::readlinkat(&fd, "") {
            Ok(t) => Ok(Some(PathBuf::from(t))),
            Err(Errno::EINVAL | Errno::ENOENT) => {
                Err(fail(io::Error::other("not a symbolic link")))
            }
            Err(e) => Err(fail(e.into())),
        }
    }

    /// When `path` does not exist because a symbolic link on the way leads nowhere inside
    /// the root prefix: a sentence naming the link and its target (for "missing" messages).
    pub fn dangling_link(&self, path: &RootedPath) -> Option<String> {
        path.dangling_link()
    }

    /// The host path of `path` with its links resolved inside the root prefix, for code that
    /// opens the path itself (another crate, a command); see [`RootedPath::resolved_real`].
    pub fn resolved_real(&self, path: &RootedPath) -> Result<PathBuf> {
        path.resolved_real().map_err(|e| Error::io(&path.real(), e))
    }

    /// The names in a directory, sorted, as they will be once the staged writes are committed
    /// (their temporary files hidden, their targets listed); `None` when it does not exist or
    /// is not a directory.
    pub fn read_dir_names(&self, dir: &RootedPath) -> Result<Option<Vec<OsString>>> {
        let fd = match dir.open(OFlag::O_PATH | OFlag::O_DIRECTORY, true) {
            Ok(fd) => fd,
            Err(e) if missing(&e) => return Ok(None),
            Err(e) => return Err(Error::io(&dir.real(), e)),
        };
        let mut names: BTreeSet<OsString> = list_dir(&fd)
            .map_err(|e| Error::io(&dir.real(), e))?
            .into_iter()
            .collect();
        let stage = self.stage();
        for name in stage.pending_by_dir.get(dir).into_iter().flatten() {
            if let Ok(target) = dir.child(name)
                && let Some(p) = stage.pending.get(&target)
            {
                names.remove(&p.tmp);
            }
            names.insert(name.clone());
        }
        Ok(Some(names.into_iter().collect()))
    }

    /// Whether systemd runs the managed system: the root prefix is `/` and
    /// `/run/systemd/system` is a directory (what `sd_booted()` tests). `Err` says why not.
    pub fn systemd_booted(&self) -> std::result::Result<(), String> {
        if !self.is_real_root() {
            return Err(format!(
                "the root prefix is {}, not /: the running systemd does not manage it",
                self.root.display()
            ));
        }
        let booted = self
            .path("/run/systemd/system")
            .and_then(|p| self.metadata(&p))
            .is_ok_and(|m| m.is_some_and(|m| m.is_dir()));
        if !booted {
            let pid1 = self
                .path("/proc/1/comm")
                .and_then(|p| self.read_to_string(&p))
                .ok()
                .flatten()
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|| "unknown".into());
            return Err(format!(
                "systemd is not running (PID 1 is {pid1}, /run/systemd/system is missing)"
            ));
        }
        Ok(())
    }

    /// Resolves a user name through `<root>/etc/passwd` (numbers pass through).
    pub fn uid_of(&self, user: &str) -> Result<u32> {
        self.lookup_id(user, "/etc/passwd", "user")
    }

    /// Resolves a group name through `<root>/etc/group` (numbers pass through).
    pub fn gid_of(&self, group: &str) -> Result<u32> {
        self.lookup_id(group, "/etc/group", "group")
    }

    fn lookup_id(&self, name: &str, db: &str, what: &str) -> Result<u32> {
        if let Ok(n) = name.parse::<u32>() {
            return Ok(n);
        }
        let path = self.path(db)?;
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
                    path.real().display()
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
    use crate::testing::{diff_snapshots, snapshot};
    use std::os::unix::fs::MetadataExt;

    const RESOLVERS: [Resolver; 2] = [Resolver::Auto, Resolver::Walk];

    fn host_in(root: &Path, resolver: Resolver) -> Host {
        Host::new(root)
            .with_var_dir(root.join("var/lib/tenet"))
            .with_resolver(resolver)
    }

    #[test]
    fn glob_stays_under_the_root_and_sorts() {
        for resolver in RESOLVERS {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("r[1]");
            for p in ["srv/b2", "srv/a1", "srv/.a0", "srv/c3"] {
                fs::create_dir_all(root.join(p)).unwrap();
            }
            let outside = dir.path().join("outside");
            fs::create_dir_all(outside.join("x1")).unwrap();
            std::os::unix::fs::symlink(&outside, root.join("srv/link")).unwrap();
            std::os::unix::fs::symlink("../../../..", root.join("srv/up")).unwrap();
            let h = host_in(&root, resolver);
            // The root's own glob characters are taken literally.
            assert_eq!(h.glob("/srv/[ab]*").unwrap(), ["/srv/a1", "/srv/b2"]);
            assert_eq!(h.glob("/srv/.a*").unwrap(), ["/srv/.a0"]);
            assert!(h.glob("/srv/none*").unwrap().is_empty());
            // The link's absolute target is taken inside the root: nothing there yet.
            assert!(h.glob("/srv/link/x*").unwrap().is_empty());
            fs::create_dir_all(root.join(outside.strip_prefix("/").unwrap()).join("x2")).unwrap();
            assert_eq!(h.glob("/srv/link/x*").unwrap(), ["/srv/link/x2"]);
            // `..` stops at the root prefix.
            assert_eq!(h.glob("/srv/up/sr?").unwrap(), ["/srv/up/srv"]);
            // A trailing `/` keeps directories (and links to them) only.
            fs::write(root.join("srv/file"), "").unwrap();
            assert_eq!(h.glob("/srv/[fl]i*").unwrap(), ["/srv/file", "/srv/link"]);
            assert_eq!(h.glob("/srv/[fl]i*/").unwrap(), ["/srv/link"]);
            assert!(h.glob("/srv/file/").unwrap().is_empty());
            assert!(h.glob("/srv/file/.").unwrap().is_empty());
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
    }

    #[test]
    fn paths_stay_under_the_root() {
        let h = Host::new("/tmp/r");
        assert_eq!(
            h.path("/etc/x").unwrap().real(),
            PathBuf::from("/tmp/r/etc/x")
        );
        assert_eq!(h.path("/etc/./x/").unwrap().abs(), PathBuf::from("/etc/x"));
        assert!(h.path("/etc/../../x").is_err());
        assert!(h.path("etc/x").is_err());
        assert_eq!(
            Host::new("/").path("/etc/x").unwrap().real(),
            PathBuf::from("/etc/x")
        );
        let p = h.path("/etc").unwrap();
        assert!(p.child("..").is_err() && p.child("a/b").is_err() && p.child("").is_err());
        assert_eq!(p.child("x").unwrap(), h.path("/etc/x").unwrap());
    }

    /// A root whose `etc` is a symbolic link out of it (the issue's reproduction), with a
    /// relative link climbing out with `..`, a chain of links and a final link out.
    struct Escapes {
        _dir: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    fn escapes() -> Escapes {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("secret"), "outside\n").unwrap();
        fs::set_permissions(outside.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::create_dir_all(root.join("srv")).unwrap();
        let link = |target: &Path, at: &str| {
            std::os::unix::fs::symlink(target, root.join(at)).unwrap();
        };
        link(&outside, "etc");
        link(Path::new("../../outside"), "srv/rel");
        link(Path::new("/srv/rel"), "srv/chain");
        link(&outside.join("secret"), "srv/file");
        link(Path::new("srv/../../../../outside"), "up");
        Escapes {
            _dir: dir,
            root,
            outside,
        }
    }

    #[test]
    fn links_out_of_the_root_are_resolved_inside_it() {
        for resolver in RESOLVERS {
            let e = escapes();
            let h = host_in(&e.root, resolver);
            let before = snapshot(&e.outside);
            for abs in [
                "/etc/secret",
                "/srv/rel/secret",
                "/srv/chain/secret",
                "/srv/file",
                "/up/secret",
            ] {
                let p = h.path(abs).unwrap();
                assert_eq!(h.read(&p).unwrap(), None, "{resolver:?} {abs}");
                assert!(h.open(&p).unwrap().is_none(), "{resolver:?} {abs}");
                assert_eq!(h.read_to_string(&p).unwrap(), None, "{resolver:?} {abs}");
            }
            // lstat: the link itself, never what it points to.
            let etc = h.path("/etc").unwrap();
            assert!(h.metadata(&etc).unwrap().unwrap().file_type().is_symlink());
            assert_eq!(h.read_link(&etc).unwrap().unwrap(), e.outside);
            assert!(
                h.metadata(&h.path("/etc/secret").unwrap())
                    .unwrap()
                    .is_none()
            );
            assert_eq!(h.read_dir_names(&etc).unwrap(), None);
            // The same links, resolved as the managed system sees them.
            let inside = e.root.join(e.outside.strip_prefix("/").unwrap());
            assert_eq!(
                h.resolved_real(&h.path("/etc/secret").unwrap()).unwrap(),
                inside.join("secret")
            );
            assert_eq!(
                h.resolved_real(&h.path("/srv/chain/x").unwrap()).unwrap(),
                e.root.join("outside/x"),
                "`..` stops at the root prefix"
            );
            let why = h.dangling_link(&h.path("/etc/secret").unwrap()).unwrap();
            assert!(
                why.contains(&format!(
                    "/etc is a symbolic link to {}",
                    e.outside.display()
                )),
                "{why}"
            );
            let why = h
                .dangling_link(&h.path("/srv/chain/secret").unwrap())
                .unwrap();
            assert!(
                why.contains("/srv/rel is a symbolic link to ../../outside"),
                "{why}"
            );
            assert_eq!(h.dangling_link(&h.path("/srv/none").unwrap()), None);
            // Once the targets exist inside the root, they are what is read.
            fs::create_dir_all(&inside).unwrap();
            fs::write(inside.join("secret"), "inside\n").unwrap();
            fs::create_dir_all(e.root.join("outside/sub")).unwrap();
            fs::write(e.root.join("outside/secret"), "inside too\n").unwrap();
            let read = |abs: &str| h.read_to_string(&h.path(abs).unwrap()).unwrap();
            assert_eq!(read("/etc/secret").as_deref(), Some("inside\n"));
            assert_eq!(read("/srv/file").as_deref(), Some("inside\n"));
            assert_eq!(read("/srv/rel/secret").as_deref(), Some("inside too\n"));
            assert_eq!(read("/srv/chain/secret").as_deref(), Some("inside too\n"));
            assert_eq!(read("/up/secret").as_deref(), Some("inside too\n"));
            assert!(diff_snapshots(&before, &snapshot(&e.outside)).is_empty());
        }
    }

    #[test]
    fn writes_never_leave_the_root() {
        for resolver in RESOLVERS {
            let e = escapes();
            let h = host_in(&e.root, resolver);
            let before = snapshot(&e.outside);
            let root_before = snapshot(&e.root);
            let p = |abs: &str| h.path(abs).unwrap();
            let err = h
                .write_atomic(&p("/etc/secret"), b"pwned\n", Some(0o666), None)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("/etc is a symbolic link to")
                    && err.contains("refusing to create directories through it"),
                "{resolver:?}: {err}"
            );
            let err = h
                .write_atomic(&p("/etc/new/deeper"), b"x", None, None)
                .unwrap_err()
                .to_string();
            assert!(err.contains("/etc is a symbolic link to"), "{err}");
            assert!(h.create_dir_all(&p("/srv/rel/sub2")).is_err());
            assert!(h.create_dir_all(&p("/srv/chain/d")).is_err());
            assert!(h.symlink(&p("/etc/l"), "/x").is_err());
            assert!(h.write_kernel_file(&p("/srv/file"), "1").is_err());
            assert!(h.write_kernel_file(&p("/etc/secret"), "1").is_err());
            // The final link is neither followed nor chmod-ed through.
            let err = h.set_mode(&p("/srv/file"), 0o777).unwrap_err().to_string();
            assert!(err.contains("symbolic link"), "{err}");
            assert!(h.set_mode(&p("/etc/secret"), 0o777).is_err());
            // chown of a link changes the link, not its target.
            h.set_owner(&p("/srv/file"), Some(4321), None).unwrap();
            assert_eq!(
                fs::symlink_metadata(e.root.join("srv/file")).unwrap().uid(),
                4321
            );
            assert!(!h.remove(&p("/etc/secret")).unwrap());
            assert!(!h.remove(&p("/srv/chain/sub")).unwrap());
            assert!(h.remove_link(&p("/up/secret")).is_ok());
            h.sync().unwrap();
            assert!(
                diff_snapshots(&before, &snapshot(&e.outside)).is_empty(),
                "{resolver:?}: something outside the root changed"
            );
            let changed = diff_snapshots(&root_before, &snapshot(&e.root));
            assert!(
                changed.len() == 1 && changed[0].starts_with("changed srv/file"),
                "only the chown of the link itself: {changed:?}"
            );
            // Removing the link removes (saves) the link, never its target.
            assert!(h.remove(&p("/etc")).unwrap());
            assert!(fs::symlink_metadata(e.root.join("etc")).is_err());
            let saved = e
                .root
                .join("var/lib/tenet/backup")
                .join(h.session())
                .join("etc");
            assert_eq!(fs::read_link(saved).unwrap(), e.outside);
            assert!(diff_snapshots(&before, &snapshot(&e.outside)).is_empty());
        }
    }

    #[test]
    fn openat2_and_the_walk_agree() {
        let e = escapes();
        fs::create_dir_all(e.root.join("data/d")).unwrap();
        fs::write(e.root.join("data/d/f"), "f\n").unwrap();
        std::os::unix::fs::symlink("/data/d", e.root.join("srv/abs")).unwrap();
        std::os::unix::fs::symlink("d/f", e.root.join("data/flink")).unwrap();
        std::os::unix::fs::symlink("../data/./d/../d/f", e.root.join("data/dotted")).unwrap();
        std::os::unix::fs::symlink("loop2", e.root.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", e.root.join("loop2")).unwrap();
        let hosts = RESOLVERS.map(|r| host_in(&e.root, r));
        for abs in [
            "/",
            "/data",
            "/data/d/f",
            "/data/flink",
            "/srv/abs/f",
            "/data/dotted",
            "/etc",
            "/etc/secret",
            "/srv/file",
            "/srv/chain",
            "/up",
            "/loop1",
            "/loop1/x",
            "/data/d/f/x",
            "/nothing",
        ] {
            let answers: Vec<String> = hosts
                .iter()
                .map(|h| {
                    let p = h.path(abs).unwrap();
                    let follow = p.open(OFlag::O_PATH, true).map(|fd| {
                        let m = File::from(fd).metadata().unwrap();
                        (m.ino(), m.file_type())
                    });
                    let nofollow = h.metadata(&p).map(|m| m.map(|m| (m.ino(), m.len())));
                    format!(
                        "{:?} {:?} {:?}",
                        follow.map_err(|e| e.raw_os_error()),
                        nofollow.map_err(|e| e.to_string()),
                        h.read(&p).map_err(|e| e.to_string()),
                    )
                })
                .collect();
            assert_eq!(answers[0], answers[1], "{abs}");
        }
        let h = &hosts[1];
        assert_eq!(
            h.read(&h.path("/data/dotted").unwrap()).unwrap().unwrap(),
            b"f\n"
        );
        let err = h.read(&h.path("/loop1").unwrap()).unwrap_err().to_string();
        assert!(err.contains("too many levels"), "{err}");
        // This kernel (5.6+) has openat2: the automatic resolver used it, not the walk.
        assert!(crate::rooted::openat2_available());
    }

    #[test]
    fn the_real_root_resolves_as_the_host_does() {
        // Read-only use of `/`: a temporary tree reached by its host path.
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("a")).unwrap();
        fs::write(d.path().join("a/f"), "f\n").unwrap();
        std::os::unix::fs::symlink(d.path().join("a"), d.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("a/f", d.path().join("rel")).unwrap();
        for resolver in RESOLVERS {
            let h = Host::new("/").with_resolver(resolver);
            for via in ["abs/f", "rel", "a/./f"] {
                let p = h.path(d.path().join(via)).unwrap();
                assert_eq!(p.real(), d.path().join(via));
                assert_eq!(h.read(&p).unwrap().unwrap(), b"f\n", "{via}");
            }
            let abs = h.path(d.path().join("abs/f")).unwrap();
            assert_eq!(h.resolved_real(&abs).unwrap(), d.path().join("a/f"));
        }
    }

    #[test]
    fn proc_self_is_readable_under_the_real_root() {
        // `/proc/self` is an ordinary link (not a magic one RESOLVE_NO_MAGICLINKS refuses):
        // the mount class reads `/proc/self/mountinfo`.
        for resolver in RESOLVERS {
            let h = Host::new("/").with_resolver(resolver);
            let text = h
                .read_to_string(&h.path("/proc/self/mountinfo").unwrap())
                .unwrap()
                .unwrap();
            assert!(text.lines().any(|l| l.contains(" / ")), "{resolver:?}");
            // Magic links are refused by the kernel's resolver, and are links to the walk.
            let fd_link = h.path("/proc/self/fd/0").unwrap();
            if resolver == Resolver::Auto {
                assert!(h.read(&fd_link).is_err());
            }
        }
    }

    #[test]
    fn atomic_write_backs_up_and_keeps_mode() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path()).with_var_dir(d.path().join("var"));
        let p = h.path("/etc/a.conf").unwrap();
        let w = h.write_atomic(&p, b"one\n", Some(0o640), None).unwrap();
        assert_eq!(w, Written::default());
        h.sync().unwrap();
        assert_eq!(fs::metadata(p.real()).unwrap().mode() & 0o7777, 0o640);
        let original_ino = fs::metadata(p.real()).unwrap().ino();
        let w = h.write_atomic(&p, b"two\n", None, None).unwrap();
        assert_eq!(
            w,
            Written {
                replaced: true,
                other_links: 0
            }
        );
        h.sync().unwrap();
        assert_eq!(fs::read_to_string(p.real()).unwrap(), "two\n");
        assert_eq!(fs::metadata(p.real()).unwrap().mode() & 0o7777, 0o640);
        let b = d
            .path()
            .join("var/backup")
            .join(h.session())
            .join("etc/a.conf");
        assert_eq!(fs::read_to_string(&b).unwrap(), "one\n");
        // The replaced inode itself is the backup: no copy was made.
        assert_eq!(fs::metadata(&b).unwrap().ino(), original_ino);
    }

    #[test]
    fn a_replaced_hard_link_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path()).with_var_dir(d.path().join("var"));
        let p = h.path("/etc/a.conf").unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(p.real(), "old\n").unwrap();
        fs::hard_link(p.real(), d.path().join("etc/other")).unwrap();
        let w = h.write_atomic(&p, b"new\n", None, None).unwrap();
        assert_eq!(w.other_links, 1);
        let note = w.hard_link_note("/etc/a.conf").unwrap();
        assert!(note.contains("1 other hard link(s)"), "{note}");
        // A second write of the same staged file does not report them again.
        let again = h.write_atomic(&p, b"newer\n", None, None).unwrap();
        assert_eq!(again.hard_link_note("/etc/a.conf"), None);
        h.sync().unwrap();
        assert_eq!(fs::read_to_string(p.real()).unwrap(), "newer\n");
        assert_eq!(
            fs::read_to_string(d.path().join("etc/other")).unwrap(),
            "old\n",
            "the other link keeps the old content"
        );
        // The backup is a copy (the file had another link that could change it in place).
        let b = d
            .path()
            .join("var/backup")
            .join(h.session())
            .join("etc/a.conf");
        assert_eq!(fs::read_to_string(&b).unwrap(), "old\n");
        assert_eq!(fs::metadata(&b).unwrap().nlink(), 1);
    }

    #[test]
    fn remove_saves_what_it_removes() {
        for resolver in RESOLVERS {
            let d = tempfile::tempdir().unwrap();
            let h = host_in(d.path(), resolver);
            let tree = d.path().join("srv/tree");
            fs::create_dir_all(tree.join("sub")).unwrap();
            fs::write(tree.join("sub/f"), "f\n").unwrap();
            fs::set_permissions(tree.join("sub"), fs::Permissions::from_mode(0o750)).unwrap();
            std::os::unix::fs::symlink("/etc/passwd", tree.join("link")).unwrap();
            fs::write(d.path().join("srv/file"), "file\n").unwrap();
            let before = snapshot(&tree);
            assert!(h.remove(&h.path("/srv/tree").unwrap()).unwrap());
            assert!(h.remove(&h.path("/srv/file").unwrap()).unwrap());
            assert!(!h.remove(&h.path("/srv/none").unwrap()).unwrap());
            assert!(!h.remove(&h.path("/none/x").unwrap()).unwrap());
            assert!(!tree.exists() && !d.path().join("srv/file").exists());
            let saved = d.path().join("var/lib/tenet/backup").join(h.session());
            assert!(diff_snapshots(&before, &snapshot(&saved.join("srv/tree"))).is_empty());
            assert_eq!(
                fs::read_to_string(saved.join("srv/file")).unwrap(),
                "file\n"
            );
            // Removed again in the same session: the first save (before the run) is kept.
            fs::write(d.path().join("srv/file"), "second\n").unwrap();
            assert!(h.remove(&h.path("/srv/file").unwrap()).unwrap());
            assert_eq!(
                fs::read_to_string(saved.join("srv/file")).unwrap(),
                "file\n"
            );
            assert!(h.remove(&h.path("/").unwrap()).is_err());
            h.sync().unwrap();
        }
    }

    #[test]
    fn copy_and_remove_trees_never_follow_links() {
        // What `remove` does when the var dir is on another file system (EXDEV).
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let victim = d.path().join("victim");
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::create_dir_all(&victim).unwrap();
        fs::write(victim.join("keep"), "keep\n").unwrap();
        fs::write(src.join("a/b/f"), "f\n").unwrap();
        fs::set_permissions(src.join("a/b/f"), fs::Permissions::from_mode(0o604)).unwrap();
        std::os::unix::fs::symlink(&victim, src.join("a/out")).unwrap();
        nix::unistd::mkfifo(&src.join("a/fifo"), Mode::from_bits_truncate(0o640)).unwrap();
        let open = |p: &Path| {
            nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap()
        };
        let (from, to) = (open(d.path()), open(d.path()));
        let before = snapshot(&src);
        copy_tree(&from, OsStr::new("src"), &to, OsStr::new("copy")).unwrap();
        let copy = snapshot(&d.path().join("copy"));
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            copy.keys().collect::<Vec<_>>()
        );
        for (k, a) in &before {
            let b = &copy[k];
            assert_eq!(
                (&a.kind, a.mode, &a.content),
                (&b.kind, b.mode, &b.content),
                "{k:?}"
            );
        }
        remove_tree(&from, OsStr::new("src")).unwrap();
        assert!(!src.exists());
        assert_eq!(fs::read_to_string(victim.join("keep")).unwrap(), "keep\n");
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
        fs::create_dir_all(etc.real()).unwrap();
        fs::write(old.real(), "before\n").unwrap();
        fs::set_permissions(old.real(), fs::Permissions::from_mode(0o600)).unwrap();

        h.write_atomic(&old, b"after\n", None, None).unwrap();
        h.write_atomic(&new, b"created\n", Some(0o644), None)
            .unwrap();
        // On disk: nothing replaced yet, only temporary files.
        assert_eq!(fs::read_to_string(old.real()).unwrap(), "before\n");
        assert!(!new.real().exists());
        assert_eq!(temp_files(&etc.real()).len(), 2);
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
        assert_eq!(fs::metadata(old.real()).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(v.read_to_string(&old).unwrap().unwrap(), "after again\n");
        assert_eq!(
            temp_files(&etc.real()).len(),
            2,
            "a rewrite reuses its staged file"
        );

        h.sync().unwrap();
        assert_eq!(fs::read_to_string(old.real()).unwrap(), "after again\n");
        assert_eq!(fs::read_to_string(new.real()).unwrap(), "created\n");
        assert_eq!(fs::metadata(new.real()).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(fs::metadata(old.real()).unwrap().mode() & 0o7777, 0o600);
        assert!(temp_files(&etc.real()).is_empty());
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
            assert_eq!(fs::read_to_string(p.real()).unwrap(), format!("{i}\n"));
        }
        for dir in 0..3 {
            assert!(temp_files(&d.path().join(format!("srv/d{dir}"))).is_empty());
        }
    }

    #[test]
    fn dropping_the_host_commits_what_is_staged() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("etc/motd");
        {
            let h = Host::new(d.path()).with_var_dir(d.path().join("var"));
            let p = h.path("/etc/motd").unwrap();
            let clone = h.clone();
            h.write_atomic(&p, b"hello\n", None, None).unwrap();
            drop(h);
            // A clone shares the batch: nothing is committed while one is alive.
            assert!(!real.exists());
            assert_eq!(clone.read(&p).unwrap().unwrap(), b"hello\n");
        }
        assert_eq!(fs::read_to_string(&real).unwrap(), "hello\n");
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
        fs::create_dir_all(bad.real().join("sub")).unwrap();
        let err = h.sync().unwrap_err().to_string();
        assert!(err.contains("/etc/bad"), "{err}");
        assert_eq!(fs::read_to_string(good.real()).unwrap(), "new\n");
        assert!(bad.real().join("sub").is_dir());
        assert!(temp_files(&d.path().join("etc")).is_empty());
    }

    #[test]
    fn a_directory_swapped_for_a_link_before_the_commit_does_not_redirect_it() {
        for resolver in RESOLVERS {
            let d = tempfile::tempdir().unwrap();
            let outside = tempfile::tempdir().unwrap();
            let root = d.path().join("root");
            let h = host_in(&root, resolver);
            let p = h.path("/etc/app/conf").unwrap();
            h.write_atomic(&p, b"new\n", None, None).unwrap();
            // An attacker moves the directory away and plants a link out of the root.
            fs::rename(root.join("etc/app"), root.join("etc/moved")).unwrap();
            std::os::unix::fs::symlink(outside.path(), root.join("etc/app")).unwrap();
            assert!(h.sync().is_err());
            assert_eq!(
                fs::read_dir(outside.path()).unwrap().count(),
                0,
                "{resolver:?}"
            );
        }
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
        h.write_atomic(&h.path("/etc/e.conf").unwrap(), b"e\n", None, None)
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
        let out = h.run_change(Command::new("cat").arg(p.real())).unwrap();
        assert_eq!(out.stdout, b"x\n");
    }

    #[test]
    fn symlinks_are_placed_atomically_and_only_over_links() {
        for resolver in RESOLVERS {
            let d = tempfile::tempdir().unwrap();
            let h = host_in(d.path(), resolver);
            let l = h.path("/opt/app/current").unwrap();
            h.symlink(&l, "releases/1").unwrap();
            h.symlink(&l, "releases/2").unwrap();
            assert_eq!(h.read_link(&l).unwrap().unwrap(), Path::new("releases/2"));
            let f = h.path("/opt/app/file").unwrap();
            fs::write(f.real(), "keep").unwrap();
            assert!(h.symlink(&f, "x").is_err());
            assert!(h.read_link(&f).is_err());
            assert_eq!(fs::read_to_string(f.real()).unwrap(), "keep");
            h.sync().unwrap();
        }
    }
}

//! The host a class acts on: every path goes through the root prefix, every write through the
//! atomic helpers here, every command through one runner.
//!
//! A class's `check` receives a [`HostView`], which only reads; `fix` receives a [`Host`], which
//! derefs to the view and adds the writes. That split is what "check has no side effects"
//! rests on: a check cannot reach a write helper.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output};

use crate::error::{Error, Result};

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
}

/// Read-write access: a [`HostView`] plus the write helpers `fix` uses.
#[derive(Debug, Clone)]
pub struct Host {
    view: HostView,
    /// Directories holding renamed files whose directory entry is not yet on disk. A rename
    /// is atomic without it (a reader or a crash sees the old file or the new one); the
    /// directory fsync only makes the new entry durable, so it is done once per directory
    /// per batch ([`Host::sync`]) rather than once per file.
    unsynced_dirs: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<PathBuf>>>,
}

impl Drop for Host {
    fn drop(&mut self) {
        // The last clone makes sure nothing written is left undurable.
        if std::sync::Arc::strong_count(&self.unsynced_dirs) == 1 {
            let _ = self.sync();
        }
    }
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
            },
            unsynced_dirs: Default::default(),
        }
    }

    /// Makes every rename done so far durable: fsyncs each directory that received one.
    pub fn sync(&self) -> Result<()> {
        let dirs = match self.unsynced_dirs.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => return Ok(()),
        };
        for dir in dirs {
            File::open(&dir)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&dir, e))?;
        }
        Ok(())
    }

    /// Records that `dir` received a rename to fsync at the next [`Host::sync`].
    pub fn defer_dir_sync(&self, dir: &Path) {
        if let Ok(mut d) = self.unsynced_dirs.lock() {
            d.insert(dir.to_path_buf());
        }
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

    /// Writes `content` to `path` (already root-prefixed) atomically: a temporary file in the
    /// same directory, fsync, mode and owner set, rename over the target; the directory is
    /// fsynced at the next [`Host::sync`]. A reader (or a crash) sees the old file or the new one, never a mix.
    /// The replaced file, if any, is backed up first. Parent directories are created.
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
        let existing = fs::symlink_metadata(path).ok();
        if existing.as_ref().is_some_and(|m| m.is_file()) {
            self.backup(path)?;
        }
        // Keep the replaced file's mode and owner unless the rule says otherwise.
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
        let file_name = path.file_name().unwrap_or(OsStr::new("file"));
        let tmp = parent.join(format!(
            ".{}.tenet-{}.tmp",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        let result = (|| -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(content)?;
            f.sync_all()?;
            // chown before chmod: chown clears setuid/setgid bits.
            if uid.is_some() || gid.is_some() {
                nix::unistd::fchown(
                    &f,
                    uid.map(nix::unistd::Uid::from_raw),
                    gid.map(nix::unistd::Gid::from_raw),
                )
                .map_err(io::Error::from)?;
            }
            f.set_permissions(fs::Permissions::from_mode(mode))?;
            drop(f);
            fs::rename(&tmp, path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(path, e));
        }
        self.defer_dir_sync(parent);
        Ok(())
    }

    /// Copies `path` (root-prefixed) to `<var_dir>/backup/<session>/<path relative to root>`,
    /// once per session (the first copy is the state before the run).
    pub fn backup(&self, path: &Path) -> Result<Option<PathBuf>> {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        let dest = self.var_dir.join("backup").join(&self.session).join(rel);
        if dest.exists() {
            return Ok(Some(dest));
        }
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
        }
        fs::copy(path, &dest).map_err(|e| Error::io(&dest, e))?;
        Ok(Some(dest))
    }

    /// Creates a directory and its parents (root-prefixed path).
    pub fn create_dir_all(&self, path: &Path) -> Result<()> {
        fs::create_dir_all(path).map_err(|e| Error::io(path, e))
    }

    /// Sets the permission bits of a root-prefixed path. Symlinks ARE followed (chmod has no
    /// lchmod on Linux): callers refuse symlinks before calling this.
    pub fn set_mode(&self, path: &Path, mode: u32) -> Result<()> {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| Error::io(path, e))
    }

    /// Sets owner and/or group of a root-prefixed path (symlinks are not followed).
    pub fn set_owner(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        std::os::unix::fs::lchown(path, uid, gid).map_err(|e| Error::io(path, e))
    }

    /// Writes a value into a kernel file (`/proc/sys`, `/sys`): those are not regular files,
    /// so no temporary file and rename, one plain write.
    pub fn write_kernel_file(&self, path: &Path, value: &str) -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        f.write_all(value.as_bytes())
            .map_err(|e| Error::io(path, e))
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
    pub fn run_change(&self, cmd: &mut Command) -> Result<Output> {
        self.run_query(cmd)
    }
}

impl HostView {
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

    /// Reads a root-prefixed file as text; `None` when it does not exist.
    pub fn read_to_string(&self, path: &Path) -> Result<Option<String>> {
        match fs::read_to_string(path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Reads a root-prefixed file as bytes; `None` when it does not exist.
    pub fn read(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        match fs::read(path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// `lstat` of a root-prefixed path; `None` when it does not exist.
    pub fn metadata(&self, path: &Path) -> Result<Option<fs::Metadata>> {
        match fs::symlink_metadata(path) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
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

    /// Runs a command that only reads (package queries, ...), capturing its output.
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
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
        h.write_atomic(&p, b"two\n", None, None).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two\n");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
        let b = d
            .path()
            .join("var/backup")
            .join(h.session())
            .join("etc/a.conf");
        assert_eq!(fs::read_to_string(b).unwrap(), "one\n");
    }
}

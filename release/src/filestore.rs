//! File stores: where a release's `files/` go, as `<store>/<version>/<path>`. A store is a
//! local directory (often an NFS or a web server's root) or an rsync daemon module.
//!
//! - A directory store receives a copy in `<dir>/.<version>.partial` renamed to
//!   `<dir>/<version>` when complete, so readers never see half a version.
//! - An `rsync://` store is synced with `rsync -rt --delete --checksum` and then proved
//!   identical with a checksum dry run (`rsync -rcn`) that must list nothing.
//!
//! Checks: a directory store's files are checked by size and sha256. The hashes are cached
//! in a sidecar `<dir>/.<version>.sha256-cache` keyed by (path, size, mtime, ctime, inode),
//! so a repeated check of a 1 GB release reads metadata only (and writes nothing: the cache
//! is rewritten only when a file changed); any write to a file changes
//! its ctime (which user space cannot set back), so a corrupted file is hashed again.
//!
//! An `rsync://` store is checked by size (`rsync --list-only`), then by content: the daemon
//! cannot hash its files with sha256, so they are compared with rsync's own checksums
//! (`rsync -rcn`, a dry run that lists every file whose checksum differs) against a local
//! reference tree whose sha256s are verified first: the kept files of the release (see
//! `keep` in the converge module), or, without one, a copy pulled into a temporary directory
//! and hashed (every byte crosses the network then).
//!
//! Invariants: the version is validated ([`validate_version`]: no `/`, no `..`) before it is
//! joined to any path or URL; an rsync password is only ever passed as `--password-file`,
//! and never appears in errors or logs.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::{FileEntry, safe_relative, sha256_file, validate_version};
use crate::progress::{Progress, Step, percent_of};

/// Where a release's files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStore {
    /// A local directory (absolute path).
    Dir(PathBuf),
    /// An rsync daemon module, `rsync://[user@]host[:port]/module[/path]`.
    Rsync {
        /// The URL, without a trailing `/`.
        url: String,
        /// The daemon password, in a file (`rsync --password-file`; mode 0600).
        password_file: Option<PathBuf>,
    },
}

impl fmt::Display for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileStore::Dir(p) => write!(f, "{}", p.display()),
            FileStore::Rsync { url, .. } => f.write_str(url),
        }
    }
}

impl FileStore {
    /// A store from an absolute directory path or `rsync://[user@]host[:port]/module[/path]`.
    pub fn parse(spec: &str) -> Result<FileStore> {
        let bad = |why: &str| Error::Rule(format!("file store {spec:?}: {why}"));
        if let Some(rest) = spec.strip_prefix("rsync://") {
            let rest = rest.trim_end_matches('/');
            let (authority, path) = rest
                .split_once('/')
                .ok_or_else(|| bad("expected rsync://[user@]host[:port]/module[/path]"))?;
            let host = match authority.rsplit_once('@') {
                Some((user, host)) => {
                    if user.is_empty() || user.contains(':') {
                        return Err(bad(
                            "a user, never a password, in the URL (use password_file)",
                        ));
                    }
                    host
                }
                None => authority,
            };
            if host.is_empty() {
                return Err(bad("no host"));
            }
            if let Some((_, port)) = host.rsplit_once(':')
                && !host.ends_with(']')
                && port.parse::<u16>().is_err()
            {
                return Err(bad("the port is not a number"));
            }
            if path.is_empty() {
                return Err(bad("no module"));
            }
            if path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(bad("empty, `.` or `..` path component"));
            }
            if spec.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad("whitespace in the URL"));
            }
            return Ok(FileStore::Rsync {
                url: format!("rsync://{rest}"),
                password_file: None,
            });
        }
        let path = Path::new(spec);
        if !path.is_absolute() {
            return Err(bad("an absolute directory or an rsync:// URL"));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(bad("contains `..`"));
        }
        Ok(FileStore::Dir(path.to_path_buf()))
    }

    /// The same store using `password_file` for the rsync daemon (ignored for a directory).
    pub fn with_password_file(self, password_file: Option<PathBuf>) -> FileStore {
        match self {
            FileStore::Rsync { url, .. } => FileStore::Rsync { url, password_file },
            dir => dir,
        }
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::FileStore {
            store: self.to_string(),
            message: message.into(),
        }
    }

    fn check_version(&self, version: &str) -> Result<()> {
        validate_version(version).map_err(|e| self.error(format!("version {version:?}: {e}")))
    }

    /// Makes `<store>/<version>/` hold exactly the files of `src_dir`.
    pub fn sync(&self, src_dir: &Path, version: &str, progress: &dyn Progress) -> Result<()> {
        self.check_version(version)?;
        progress.step(Step::SyncingFiles, &format!("{version} to {self}"));
        match self {
            FileStore::Dir(dir) => self.sync_dir(dir, src_dir, version, progress),
            FileStore::Rsync { url, .. } => self.sync_rsync(url, src_dir, version),
        }?;
        progress.percent(Step::SyncingFiles, 100, &self.to_string());
        progress.info(&format!("files of {version} synced to {self}"));
        Ok(())
    }

    fn sync_dir(
        &self,
        dir: &Path,
        src_dir: &Path,
        version: &str,
        progress: &dyn Progress,
    ) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let partial = dir.join(format!(".{version}.partial"));
        let old = dir.join(format!(".{version}.old"));
        for leftover in [&partial, &old] {
            remove_tree_if_present(leftover)?;
        }
        let files = crate::manifest::walk_files(src_dir)?;
        let mut sizes = Vec::with_capacity(files.len());
        for rel in &files {
            let p = src_dir.join(rel);
            sizes.push(std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?.len());
        }
        let total: u64 = sizes.iter().sum();
        let mut done = 0u64;
        std::fs::create_dir(&partial).map_err(|e| Error::io(&partial, e))?;
        for (rel, size) in files.iter().zip(sizes) {
            let to = partial.join(rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            std::fs::copy(src_dir.join(rel), &to).map_err(|e| Error::io(&to, e))?;
            done += size;
            progress.percent(
                Step::SyncingFiles,
                percent_of(done, total),
                &self.to_string(),
            );
        }
        let target = dir.join(version);
        let replacing = std::fs::symlink_metadata(&target).is_ok();
        if replacing {
            std::fs::rename(&target, &old).map_err(|e| Error::io(&target, e))?;
        }
        std::fs::rename(&partial, &target).map_err(|e| Error::io(&target, e))?;
        if replacing {
            remove_tree_if_present(&old)?;
        }
        let _ = std::fs::remove_file(cache_path(dir, version));
        Ok(())
    }

    fn sync_rsync(&self, url: &str, src_dir: &Path, version: &str) -> Result<()> {
        let mut src: OsString = src_dir.as_os_str().to_owned();
        src.push("/");
        let dest = format!("{url}/{version}/");
        self.rsync(&[
            "-rt".into(),
            "--delete".into(),
            "--checksum".into(),
            "--mkpath".into(),
            src.clone(),
            dest.clone().into(),
        ])?;
        // The proof: a checksum comparison that would change nothing.
        let out = self.rsync(&[
            "-rcn".into(),
            "--delete".into(),
            "--out-format=%n".into(),
            src,
            dest.into(),
        ])?;
        let differing: Vec<&str> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && *l != "./")
            .collect();
        if !differing.is_empty() {
            return Err(self.error(format!(
                "{version}: still differs after the sync: {}",
                differing.join(", ")
            )));
        }
        Ok(())
    }

    /// Runs rsync with the store's password file; returns stdout.
    fn rsync(&self, args: &[OsString]) -> Result<String> {
        let mut cmd = Command::new("rsync");
        cmd.arg("--contimeout=30").arg("--timeout=600");
        if let FileStore::Rsync {
            password_file: Some(pf),
            ..
        } = self
        {
            let mut a = OsString::from("--password-file=");
            a.push(pf);
            cmd.arg(a);
        }
        cmd.args(args).stdin(Stdio::null());
        let out = cmd
            .output()
            .map_err(|e| self.error(format!("cannot run rsync: {e}")))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().collect();
            return Err(self.error(format!(
                "rsync {}: {}",
                out.status,
                lines[lines.len().saturating_sub(5)..].join(" / ")
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Checks that `<store>/<version>/` holds `files` (see the module doc for how deeply).
    /// Returns the problems, one message each; empty means all is there.
    pub fn check(&self, version: &str, files: &[FileEntry]) -> Result<Vec<String>> {
        self.check_with_reference(version, files, None)
    }

    /// [`FileStore::check`], an `rsync://` store's content compared with `reference` (a
    /// local tree holding the release's files, verified by sha256 first).
    pub fn check_with_reference(
        &self,
        version: &str,
        files: &[FileEntry],
        reference: Option<&Path>,
    ) -> Result<Vec<String>> {
        self.check_version(version)?;
        match self {
            FileStore::Dir(dir) => self.check_dir(dir, version, files),
            FileStore::Rsync { url, .. } => self.check_rsync(url, version, files, reference),
        }
    }

    fn check_dir(&self, dir: &Path, version: &str, files: &[FileEntry]) -> Result<Vec<String>> {
        let root = dir.join(version);
        if !root.is_dir() {
            return Ok(vec![format!("{self}: {version} missing")]);
        }
        verify_tree(
            &root,
            &cache_path(dir, version),
            files,
            &format!("{self}: {version}"),
            true,
        )
    }

    fn check_rsync(
        &self,
        url: &str,
        version: &str,
        files: &[FileEntry],
        reference: Option<&Path>,
    ) -> Result<Vec<String>> {
        let listing = match self.rsync(&[
            "--list-only".into(),
            "-r".into(),
            "--no-h".into(),
            format!("{url}/{version}/").into(),
        ]) {
            Ok(l) => l,
            Err(e) if e.to_string().contains("No such file or directory") => {
                return Ok(vec![format!("{self}: {version} missing")]);
            }
            Err(e) => return Err(e),
        };
        let remote: HashMap<String, (char, u64)> = parse_listing(&listing)
            .into_iter()
            .map(|(kind, size, name)| (name, (kind, size)))
            .collect();
        let mut problems = Vec::new();
        for f in files {
            match remote.get(f.path.as_str()) {
                None => problems.push(format!("{self}: {version}/{} missing", f.path)),
                Some((kind, _)) if *kind != '-' => {
                    problems.push(format!("{self}: {version}/{} is not a file", f.path))
                }
                Some((_, size)) if *size != f.size => problems.push(format!(
                    "{self}: {version}/{}: size {size} instead of {}",
                    f.path, f.size
                )),
                Some(_) => {}
            }
        }
        if problems.is_empty() {
            problems = self.check_rsync_content(url, version, files, reference)?;
        }
        Ok(problems)
    }

    /// The content check of an `rsync://` store whose listing is right: rsync's checksums
    /// against a verified local reference (see the module documentation).
    fn check_rsync_content(
        &self,
        url: &str,
        version: &str,
        files: &[FileEntry],
        reference: Option<&Path>,
    ) -> Result<Vec<String>> {
        let remote = format!("{url}/{version}/");
        if let Some(reference) = reference {
            let cache = with_suffix(reference, ".sha256-cache");
            let label = format!("{} (reference)", reference.display());
            if verify_tree(reference, &cache, files, &label, false)?.is_empty() {
                let mut src: OsString = reference.as_os_str().to_owned();
                src.push("/");
                // Only the release's files are compared: the dry run lists a file when
                // its checksum (or its absence) would make rsync send it.
                let mut args: Vec<OsString> = vec![
                    "-rcn".into(),
                    "--out-format=%n".into(),
                    "--include=*/".into(),
                ];
                for f in files {
                    args.push(format!("--include=/{}", rsync_pattern(&f.path)).into());
                }
                args.extend(["--exclude=*".into(), src, remote.into()]);
                let out = self.rsync(&args)?;
                let mut problems: Vec<String> = out
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.ends_with('/'))
                    .map(|l| format!("{self}: {version}/{l}: content differs (rsync checksum)"))
                    .collect();
                problems.sort();
                return Ok(problems);
            }
        }
        // No usable reference: the store's copy is pulled and hashed.
        let scratch =
            tempfile::tempdir().map_err(|e| self.error(format!("temporary directory: {e}")))?;
        let mut dest: OsString = scratch.path().as_os_str().to_owned();
        dest.push("/");
        self.rsync(&["-r".into(), remote.into(), dest])?;
        verify_tree(
            scratch.path(),
            &scratch.path().join(".no-cache"),
            files,
            &format!("{self}: {version}"),
            false,
        )
    }

    /// Removes `<store>/<version>/`. Returns whether it existed.
    pub fn remove(&self, version: &str) -> Result<bool> {
        self.check_version(version)?;
        match self {
            FileStore::Dir(dir) => {
                let target = dir.join(version);
                let existed = std::fs::symlink_metadata(&target).is_ok();
                remove_tree_if_present(&target)?;
                for leftover in [
                    dir.join(format!(".{version}.partial")),
                    dir.join(format!(".{version}.old")),
                ] {
                    remove_tree_if_present(&leftover)?;
                }
                let _ = std::fs::remove_file(cache_path(dir, version));
                Ok(existed)
            }
            FileStore::Rsync { url, .. } => {
                if !self.rsync_has(url, version)? {
                    return Ok(false);
                }
                // Delete with an empty source and a filter selecting only the version's
                // tree: rsync removes what the source lacks, and nothing else is selected.
                let empty =
                    tempfile::tempdir().map_err(|e| self.error(format!("temp dir: {e}")))?;
                let mut src: OsString = empty.path().as_os_str().to_owned();
                src.push("/");
                self.rsync(&[
                    "-r".into(),
                    "--delete".into(),
                    format!("--include=/{version}/***").into(),
                    "--exclude=*".into(),
                    src,
                    format!("{url}/").into(),
                ])?;
                if self.rsync_has(url, version)? {
                    return Err(self.error(format!("{version} is still there after removal")));
                }
                Ok(true)
            }
        }
    }

    /// Whether `<store>/<version>` exists (what an absent release must not have).
    pub fn holds(&self, version: &str) -> Result<bool> {
        self.check_version(version)?;
        match self {
            FileStore::Dir(dir) => Ok(std::fs::symlink_metadata(dir.join(version)).is_ok()),
            FileStore::Rsync { url, .. } => self.rsync_has(url, version),
        }
    }

    /// Whether the store's top directory lists `version`.
    fn rsync_has(&self, url: &str, version: &str) -> Result<bool> {
        let listing = match self.rsync(&[
            "--list-only".into(),
            "--no-h".into(),
            format!("{url}/").into(),
        ]) {
            Ok(l) => l,
            Err(e) if e.to_string().contains("No such file or directory") => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(parse_listing(&listing)
            .iter()
            .any(|(_, _, name)| name == version))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CachedHash {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
    sha256: String,
}

impl CachedHash {
    fn same_file(&self, other: &CachedHash) -> bool {
        self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.ctime_ns == other.ctime_ns
            && self.inode == other.inode
    }
}

/// Checks that the tree at `root` holds `files` with their sizes and sha256s; problems are
/// named `<label>/<path>`. Hashes are cached in `cache_file` by (size, mtime, ctime, inode);
/// the cache is rewritten only when `write_cache` and something changed.
pub fn verify_tree(
    root: &Path,
    cache_file: &Path,
    files: &[FileEntry],
    label: &str,
    write_cache: bool,
) -> Result<Vec<String>> {
    let cached_bytes = std::fs::read(cache_file).ok();
    let mut cache: HashMap<String, CachedHash> = cached_bytes
        .as_deref()
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default();
    let unchanged = cache.clone();
    let mut fresh = HashMap::new();
    let mut problems = Vec::new();
    for f in files {
        if let Err(e) = safe_relative(&f.path) {
            problems.push(format!("{label}/{}: {e}", f.path));
            continue;
        }
        let path = root.join(&f.path);
        let md = match std::fs::metadata(&path) {
            Ok(md) if md.is_file() => md,
            Ok(_) => {
                problems.push(format!("{label}/{} is not a file", f.path));
                continue;
            }
            Err(_) => {
                problems.push(format!("{label}/{} missing", f.path));
                continue;
            }
        };
        if md.len() != f.size {
            problems.push(format!(
                "{label}/{}: size {} instead of {}",
                f.path,
                md.len(),
                f.size
            ));
            continue;
        }
        let key = CachedHash {
            size: md.len(),
            mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
            ctime_ns: md.ctime() as i128 * 1_000_000_000 + md.ctime_nsec() as i128,
            inode: md.ino(),
            sha256: String::new(),
        };
        let sha = match cache.remove(&f.path) {
            Some(c) if c.same_file(&key) => c.sha256,
            _ => sha256_file(&path)?,
        };
        if sha != f.sha256 {
            problems.push(format!(
                "{label}/{}: sha256 {sha} instead of {}",
                f.path, f.sha256
            ));
            continue; // a bad hash is not cached: the next check looks again
        }
        fresh.insert(f.path.clone(), CachedHash { sha256: sha, ..key });
    }
    // The cache is an optimisation: a tree we cannot write to is checked in full. It is
    // written only when the files changed since the last check, so checking a compliant
    // tree leaves it untouched.
    if write_cache && fresh != unchanged {
        let bytes = serde_json::to_vec(&fresh).expect("JSON");
        let _ = tenet_fsutil::atomic_write(cache_file, &bytes, tenet_fsutil::DEFAULT_MODE, false);
    }
    Ok(problems)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// A release file's path as an rsync filter pattern matching it alone (wildcards escaped).
fn rsync_pattern(path: &str) -> String {
    // rsync reads a backslash as an escape only in a pattern that has a wildcard.
    if !path.contains(['*', '?', '[']) {
        return path.to_string();
    }
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn cache_path(dir: &Path, version: &str) -> PathBuf {
    dir.join(format!(".{version}.sha256-cache"))
}

fn remove_tree_if_present(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(path).map_err(|e| Error::io(path, e)),
        Ok(_) => std::fs::remove_file(path).map_err(|e| Error::io(path, e)),
    }
}

/// `rsync --list-only --no-h` lines: `-rw-r--r--   4120 2024/01/01 12:00:00 dir/name` →
/// (type character, size, name). The `.` entry and unparsable lines are skipped.
fn parse_listing(listing: &str) -> Vec<(char, u64, String)> {
    let mut out = Vec::new();
    for line in listing.lines() {
        let mut rest = line;
        let mut fields = Vec::new();
        for _ in 0..4 {
            rest = rest.trim_start();
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        let name = rest.trim_start();
        let (Some(kind), Ok(size)) = (
            fields[0].chars().next(),
            fields[1].replace(',', "").parse::<u64>(),
        ) else {
            continue;
        };
        if name.is_empty() || name == "." {
            continue;
        }
        let name = if kind == 'l' {
            name.split(" -> ").next().unwrap_or(name)
        } else {
            name
        };
        out.push((kind, size, name.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoProgress;
    use crate::manifest::sha256_file;
    use crate::testing::RsyncDaemon;

    fn release_files(dir: &Path) -> Vec<FileEntry> {
        std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
        std::fs::write(dir.join("install-control.yaml"), "kind: Control\n").unwrap();
        std::fs::write(dir.join("sub/deeper/data.bin"), vec![7u8; 100_000]).unwrap();
        std::fs::write(dir.join("with space.txt"), "x").unwrap();
        crate::manifest::walk_files(dir)
            .unwrap()
            .into_iter()
            .map(|rel| {
                let p = dir.join(&rel);
                FileEntry {
                    path: rel.display().to_string(),
                    size: std::fs::metadata(&p).unwrap().len(),
                    sha256: sha256_file(&p).unwrap(),
                }
            })
            .collect()
    }

    #[test]
    fn specs_parse_and_display() {
        assert_eq!(
            FileStore::parse("/srv/files").unwrap(),
            FileStore::Dir("/srv/files".into())
        );
        let s = FileStore::parse("rsync://lir@host:873/files/sub/").unwrap();
        assert_eq!(s.to_string(), "rsync://lir@host:873/files/sub");
        for bad in [
            "relative/dir",
            "/srv/../etc",
            "rsync://host",
            "rsync://u:pw@host/m",
            "rsync://host/m/../x",
            "rsync://host:x/m",
            "ftp://host/m",
        ] {
            assert!(FileStore::parse(bad).is_err(), "{bad}");
        }
        let err = FileStore::parse("rsync://u:secret@host/m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("password_file"), "{err}");
    }

    #[test]
    fn listing_lines_parse() {
        let l = "drwxr-xr-x          4096 2026/11/22 10:00:00 .\n\
                 -rw-r--r--        100000 2026/11/22 10:00:00 sub/deeper/data.bin\n\
                 -rw-r--r--             1 2026/11/22 10:00:00 with space.txt\n\
                 lrwxrwxrwx             3 2026/11/22 10:00:00 link -> abc\n";
        assert_eq!(
            parse_listing(l),
            vec![
                ('-', 100000, "sub/deeper/data.bin".to_string()),
                ('-', 1, "with space.txt".to_string()),
                ('l', 3, "link".to_string()),
            ]
        );
    }

    #[test]
    fn a_directory_store_syncs_checks_and_removes() {
        let src = tempfile::tempdir().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let files = release_files(src.path());
        let store = FileStore::Dir(store_dir.path().join("store"));
        let v = "9999.0.0.0-1";
        assert_eq!(
            store.check(v, &files).unwrap(),
            vec![format!("{store}: {v} missing")]
        );
        store.sync(src.path(), v, &NoProgress).unwrap();
        assert!(store.check(v, &files).unwrap().is_empty());
        assert!(cache_path(&store_dir.path().join("store"), v).is_file());
        assert!(store.check(v, &files).unwrap().is_empty(), "from the cache");

        // Same size, mtime put back: the ctime still gives the corruption away.
        let victim = store_dir
            .path()
            .join("store")
            .join(v)
            .join("sub/deeper/data.bin");
        let before = std::fs::metadata(&victim).unwrap();
        let mut data = std::fs::read(&victim).unwrap();
        data[500] ^= 1;
        std::fs::write(&victim, &data).unwrap();
        let f = std::fs::File::options().write(true).open(&victim).unwrap();
        f.set_modified(before.modified().unwrap()).unwrap();
        drop(f);
        let problems = store.check(v, &files).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("sub/deeper/data.bin: sha256"),
            "{problems:?}"
        );

        // A re-sync replaces the version and repairs it.
        store.sync(src.path(), v, &NoProgress).unwrap();
        assert!(store.check(v, &files).unwrap().is_empty());
        assert!(
            !store_dir
                .path()
                .join("store")
                .join(format!(".{v}.partial"))
                .exists()
        );

        assert!(store.remove(v).unwrap());
        assert!(!store_dir.path().join("store").join(v).exists());
        assert!(!store.remove(v).unwrap());
        assert!(store.remove("../x").is_err());
    }

    #[test]
    fn an_rsync_store_syncs_checks_and_removes() {
        let daemon = RsyncDaemon::start().unwrap();
        let src = tempfile::tempdir().unwrap();
        let files = release_files(src.path());
        let store = FileStore::parse(&format!("{}/releases", daemon.url())).unwrap();
        let other = "1.0.0";
        let v = "9999.0.0.0-1";
        assert_eq!(
            store.check(v, &files).unwrap(),
            vec![format!("{store}: {v} missing")]
        );
        assert!(!store.remove(v).unwrap());
        store.sync(src.path(), other, &NoProgress).unwrap();
        store.sync(src.path(), v, &NoProgress).unwrap();
        let on_disk = daemon.module_dir().join("releases").join(v);
        assert_eq!(
            std::fs::read(on_disk.join("sub/deeper/data.bin")).unwrap(),
            vec![7u8; 100_000]
        );
        assert!(store.check(v, &files).unwrap().is_empty());

        // A stray file and a changed file are replaced by the next sync.
        std::fs::write(on_disk.join("stray"), "x").unwrap();
        std::fs::write(on_disk.join("install-control.yaml"), "kind: Other\n").unwrap();
        let problems = store.check(v, &files).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("install-control.yaml: size"),
            "{problems:?}"
        );
        store.sync(src.path(), v, &NoProgress).unwrap();
        assert!(!on_disk.join("stray").exists());
        assert_eq!(
            std::fs::read_to_string(on_disk.join("install-control.yaml")).unwrap(),
            "kind: Control\n"
        );

        // A same-size change is found by content: against a local reference, and without
        // one (the store's copy is pulled and hashed).
        let victim = on_disk.join("sub/deeper/data.bin");
        let mut data = std::fs::read(&victim).unwrap();
        data[70_000] ^= 0x55;
        std::fs::write(&victim, &data).unwrap();
        let with_reference = store
            .check_with_reference(v, &files, Some(src.path()))
            .unwrap();
        assert_eq!(
            with_reference,
            vec![format!(
                "{store}: {v}/sub/deeper/data.bin: content differs (rsync checksum)"
            )]
        );
        let without = store.check(v, &files).unwrap();
        assert_eq!(without.len(), 1, "{without:?}");
        assert!(
            without[0].starts_with(&format!("{store}: {v}/sub/deeper/data.bin: sha256")),
            "{without:?}"
        );
        // A reference that is itself damaged is not trusted: the pulled copy decides.
        let reference = tempfile::tempdir().unwrap();
        release_files(reference.path());
        std::fs::write(reference.path().join("with space.txt"), "y").unwrap();
        store.sync(src.path(), v, &NoProgress).unwrap();
        assert!(
            store
                .check_with_reference(v, &files, Some(reference.path()))
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .check_with_reference(v, &files, Some(src.path()))
                .unwrap()
                .is_empty()
        );

        assert!(store.remove(v).unwrap());
        assert!(!on_disk.exists());
        assert_eq!(
            store.check(v, &files).unwrap(),
            vec![format!("{store}: {v} missing")]
        );
        // The other version is untouched.
        assert!(store.check(other, &files).unwrap().is_empty());
    }
}

//! # tenet-fsutil: the one durable file write, the one tree-escape check
//!
//! Role: [`atomic_write`], the write every tenet crate uses for a file that must be either the
//! old content or the new one, never a torn mix (configuration, policy exports, status and
//! marker files, the daemon's journal); and [`tree::resolve_in_tree`], the walk that decides
//! whether a link of an unpacked tree (a release image, a `tar` class archive) stays inside it.
//!
//! Why a crate of its own: `tenet-rulesets`, `tenet-templates` and `tenet-release` depend on
//! no other tenet crate (they are the bottom of the dependency graph, see ARCHITECTURE.md),
//! yet `rulesets` (policy folders) and `release` (status files) write atomically, as do the
//! agent and the collector. The lowest place all of them can reach is a crate below them all,
//! depending on std only. (`tenet-modules`' `Host::write_atomic` is a different write: through
//! descriptors resolved inside a root prefix, with backups; it does not use this one.)
//!
//! Must not depend on: any tenet crate, any crate but std.
//!
//! Invariant: after `atomic_write` returns `Ok`, the file holds exactly the bytes given
//! (fsynced); on `Err`, the file is as it was and no temporary file is left.

pub mod tree;

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// The mode `File::create` uses (before the umask): pass it for an ordinary file.
pub const DEFAULT_MODE: u32 = 0o666;

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, created with
/// `mode` (so a secret is never readable by others, even briefly; the umask applies), written,
/// fsynced, then renamed over `path`. With `sync_dir`, the directory is fsynced too, so that
/// the rename itself survives a crash. The directory must exist.
///
/// The temporary file is `.<name>.<pid>.tmp`; one left by a killed process of the same pid is
/// replaced, and a failed write removes its own.
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32, sync_dir: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A stale temporary file would keep its own mode: start from a new one.
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if sync_dir {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn replaces_the_content_with_the_mode_and_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secret.toml");
        std::fs::write(&p, "old contents, longer than the new\n").unwrap();
        atomic_write(&p, b"new\n", 0o600, true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(leftovers(d.path()).is_empty());
    }

    #[test]
    fn a_stale_temporary_file_does_not_lend_its_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let tmp = d.path().join(format!(".f.{}.tmp", std::process::id()));
        std::fs::write(&tmp, "stale").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        atomic_write(&p, b"x", 0o600, false).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(leftovers(d.path()).is_empty());
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails after the temporary file is made.
        let p = d.path().join("busy");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("inside"), "kept").unwrap();
        assert!(atomic_write(&p, b"x", DEFAULT_MODE, true).is_err());
        assert_eq!(std::fs::read(p.join("inside")).unwrap(), b"kept");
        assert!(leftovers(d.path()).is_empty());
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let e = atomic_write(&d.path().join("no/such/f"), b"x", DEFAULT_MODE, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}

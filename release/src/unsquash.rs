//! Safe unpacking of a release squashfs into the work dir (backhand, no `unsquashfs`).
//!
//! Two passes. The scan reads the whole directory tree and refuses the image (nothing is
//! written) if any entry could write or point outside the tree or is not plain data:
//! - names that are empty, `.`, `..`, contain `/` or NUL, and duplicate paths (backhand
//!   itself already rejects names with `/` and `.`/`..` when it reads the directory table;
//!   the checks here do not rely on that);
//! - symlinks with an absolute target, or whose relative target, resolved from the link's
//!   directory *through the image's own symlinks* (as the kernel would), leaves the tree;
//!   this is stricter than a lexical check, which `x -> .` plus `y -> x/x/../..` passes;
//! - character and block devices, fifos and sockets.
//!
//! Only then is the tree extracted into `<dest>.partial` and renamed to `dest`, so `dest`
//! either does not exist or is complete. Entries are created relative to directory file
//! descriptors opened with `O_NOFOLLOW`, files with `O_CREAT | O_EXCL | O_NOFOLLOW`, so no
//! symlink is ever followed while writing.
//!
//! Metadata: file modes are `mode & 0o777` (setuid, setgid and sticky bits are dropped: a
//! release carries data, not programs to run with privileges); directories additionally get
//! `u+rwx` so the owner can always walk and remove the work dir. No chown: the work dir
//! belongs to the agent. Modification times of files, directories and symlinks are kept.
//! Hard links become separate copies (backhand does not expose inode numbers).

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use backhand::{FilesystemReader, InnerNode, Node, SquashfsFileReader};
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, UtimensatFlags, fchmod, futimens, mkdirat, utimensat};
use nix::sys::time::TimeSpec;

use tenet_fsutil::tree::{Escape, resolve_in_tree};

use crate::error::{Error, Result};
use crate::progress::{Progress, Step, percent_of};

/// What was unpacked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnsquashStats {
    /// Regular files.
    pub files: u64,
    /// Directories (the root not counted).
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Bytes of file data written.
    pub bytes: u64,
}

/// Unpacks `image` into `dest` (a work dir: an existing `dest` is replaced).
pub fn unsquash(image: &Path, dest: &Path, progress: &dyn Progress) -> Result<UnsquashStats> {
    progress.step(Step::Unsquashing, &image.display().to_string());
    let file = File::open(image).map_err(|e| Error::io(image, e))?;
    let fs = FilesystemReader::from_reader(BufReader::new(file)).map_err(|e| Error::Unsquash {
        entry: image.to_path_buf(),
        reason: format!("not a readable squashfs image: {e}"),
    })?;
    let plan = scan(&fs)?;

    let partial = partial_path(dest);
    remove_any(&partial)?;
    std::fs::create_dir(&partial).map_err(|e| Error::io(&partial, e))?;
    let stats = match extract(&fs, &plan, &partial, progress) {
        Ok(stats) => stats,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    remove_any(dest)?;
    std::fs::rename(&partial, dest).map_err(|e| Error::io(dest, e))?;
    progress.info(&format!(
        "unpacked {} files, {} directories, {} symlinks ({} bytes) into {}",
        stats.files,
        stats.dirs,
        stats.symlinks,
        stats.bytes,
        dest.display()
    ));
    Ok(stats)
}

/// `<dest>.partial`, next to `dest`.
fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(OsStr::to_os_string)
        .unwrap_or_default();
    name.push(".partial");
    dest.with_file_name(name)
}

/// Removes a file, symlink or directory tree at `path` (never following a symlink).
fn remove_any(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(path).map_err(|e| Error::io(path, e)),
        Ok(_) => std::fs::remove_file(path).map_err(|e| Error::io(path, e)),
    }
}

/// One entry to create, by its path relative to the root.
struct Planned<'n> {
    rel: PathBuf,
    node: &'n Node<SquashfsFileReader>,
}

struct Scanned<'n> {
    root: Option<&'n Node<SquashfsFileReader>>,
    entries: Vec<Planned<'n>>,
    total_bytes: u64,
}

fn refuse(entry: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
    Error::Unsquash {
        entry: entry.into(),
        reason: reason.into(),
    }
}

/// Checks every entry; returns them sorted so parents come before their children.
fn scan<'n>(fs: &'n FilesystemReader<'_>) -> Result<Scanned<'n>> {
    let mut root = None;
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    let mut links: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut total_bytes = 0u64;
    for node in fs.files() {
        let full = node.fullpath.as_os_str().as_bytes();
        if full == b"/" {
            if root.is_some() || !matches!(node.inner, InnerNode::Dir(_)) {
                return Err(refuse(
                    "/",
                    "a second root entry (an entry named `/`) is not allowed",
                ));
            }
            root = Some(node);
            continue;
        }
        let Some(rel_bytes) = full.strip_prefix(b"/") else {
            return Err(refuse(
                &node.fullpath,
                "the entry's path is not under the root",
            ));
        };
        for name in rel_bytes.split(|&b| b == b'/') {
            let reason = match name {
                b"" => "an empty name component",
                b"." => "a `.` name component",
                b".." => "a `..` name component",
                n if n.contains(&0) => "a NUL byte in the name",
                _ => continue,
            };
            return Err(refuse(&node.fullpath, reason));
        }
        let rel = PathBuf::from(OsStr::from_bytes(rel_bytes));
        if !seen.insert(rel.clone()) {
            return Err(refuse(&rel, "the path occurs twice in the image"));
        }
        match &node.inner {
            InnerNode::Dir(_) => {
                dirs.insert(rel.clone());
            }
            InnerNode::File(f) => total_bytes += f.file_len() as u64,
            InnerNode::Symlink(s) => {
                links.insert(rel.clone(), s.link.clone());
            }
            InnerNode::CharacterDevice(_) => {
                return Err(refuse(&rel, "character devices are not allowed"));
            }
            InnerNode::BlockDevice(_) => {
                return Err(refuse(&rel, "block devices are not allowed"));
            }
            InnerNode::NamedPipe => return Err(refuse(&rel, "fifos are not allowed")),
            InnerNode::Socket => return Err(refuse(&rel, "sockets are not allowed")),
        }
        entries.push(Planned { rel, node });
    }
    for e in &entries {
        if let Some(parent) = e.rel.parent()
            && !parent.as_os_str().is_empty()
            && !dirs.contains(parent)
        {
            return Err(refuse(&e.rel, "its parent is not a directory of the image"));
        }
    }
    for (link, target) in &links {
        check_symlink(link, target, &links).map_err(|reason| {
            refuse(
                link,
                format!("symlink to {:?} {reason}", target.as_os_str()),
            )
        })?;
    }
    entries.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(Scanned {
        root,
        entries,
        total_bytes,
    })
}

fn check_symlink(
    link: &Path,
    target: &Path,
    links: &HashMap<PathBuf, PathBuf>,
) -> Result<(), String> {
    if target.as_os_str().is_empty() {
        return Err("has an empty target".into());
    }
    if target.as_os_str().as_bytes().contains(&0) {
        return Err("has a NUL byte in its target".into());
    }
    let dir = link.parent().unwrap_or(Path::new("")).to_path_buf();
    resolve_in_tree(dir, target, links)
        .map(|_| ())
        .map_err(|e| {
            match e {
                Escape::Absolute => "is absolute",
                Escape::ThroughAbsoluteLink => "goes through a symlink with an absolute target",
                Escape::LeavesTree => "leaves the tree",
                Escape::TooDeep => "has too many levels of symlinks",
            }
            .into()
        })
}

fn nix_io(path: &Path, e: nix::Error) -> Error {
    Error::io(path, std::io::Error::from(e))
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Opens `rel` under `root_fd` one component at a time, never following a symlink.
fn open_dir(root_fd: &OwnedFd, root: &Path, rel: &Path) -> Result<OwnedFd> {
    let mut fd = root_fd.try_clone().map_err(|e| Error::io(root, e))?;
    let mut at = root.to_path_buf();
    for comp in rel.components() {
        at.push(comp);
        fd = openat(fd.as_fd(), comp.as_os_str(), DIR_FLAGS, Mode::empty())
            .map_err(|e| nix_io(&at, e))?;
    }
    Ok(fd)
}

fn timespec(mtime: u32) -> TimeSpec {
    TimeSpec::new(i64::from(mtime), 0)
}

fn extract(
    fs: &FilesystemReader<'_>,
    scanned: &Scanned<'_>,
    root: &Path,
    progress: &dyn Progress,
) -> Result<UnsquashStats> {
    let root_fd = nix::fcntl::open(root, DIR_FLAGS, Mode::empty()).map_err(|e| nix_io(root, e))?;
    let mut stats = UnsquashStats::default();
    let mut last_pct = 0u8;
    progress.percent(Step::Unsquashing, 0, "");
    // consecutive entries mostly share their parent (sorted order): keep its descriptor
    let mut parent_cache: Option<(PathBuf, OwnedFd)> = None;
    let mut buf = vec![0u8; 1 << 17];
    for e in &scanned.entries {
        let at = root.join(&e.rel);
        let parent_rel = e.rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let parent_fd = match &parent_cache {
            Some((p, fd)) if *p == parent_rel => fd,
            _ => {
                let fd = open_dir(&root_fd, root, &parent_rel)?;
                &parent_cache.insert((parent_rel, fd)).1
            }
        };
        let name: OsString = e
            .rel
            .file_name()
            .map(OsStr::to_os_string)
            .unwrap_or_default();
        let header = &e.node.header;
        match &e.node.inner {
            InnerNode::Dir(_) => {
                mkdirat(parent_fd.as_fd(), name.as_os_str(), Mode::S_IRWXU)
                    .map_err(|err| nix_io(&at, err))?;
                stats.dirs += 1;
            }
            InnerNode::File(f) => {
                let fd = openat(
                    parent_fd.as_fd(),
                    name.as_os_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::S_IRUSR | Mode::S_IWUSR,
                )
                .map_err(|err| nix_io(&at, err))?;
                let mut out = File::from(fd);
                let mut reader = fs
                    .file(f)
                    .reader_checked()
                    .map_err(|err| refuse(&e.rel, format!("cannot read the file: {err}")))?;
                let mut written = 0u64;
                loop {
                    let n = reader
                        .read(&mut buf)
                        .map_err(|err| refuse(&e.rel, format!("cannot read the file: {err}")))?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n])
                        .map_err(|err| Error::io(&at, err))?;
                    written += n as u64;
                    stats.bytes += n as u64;
                    let pct = percent_of(stats.bytes, scanned.total_bytes);
                    if pct != last_pct {
                        last_pct = pct;
                        progress.percent(Step::Unsquashing, pct, "");
                    }
                }
                if written != f.file_len() as u64 {
                    return Err(refuse(
                        &e.rel,
                        format!(
                            "the image holds {written} bytes for a file of {} bytes",
                            f.file_len()
                        ),
                    ));
                }
                fchmod(
                    out.as_fd(),
                    Mode::from_bits_truncate((header.permissions & 0o777).into()),
                )
                .map_err(|err| nix_io(&at, err))?;
                let t = timespec(header.mtime);
                futimens(out.as_fd(), &t, &t).map_err(|err| nix_io(&at, err))?;
                stats.files += 1;
            }
            InnerNode::Symlink(s) => {
                nix::unistd::symlinkat(s.link.as_os_str(), parent_fd.as_fd(), name.as_os_str())
                    .map_err(|err| nix_io(&at, err))?;
                let t = timespec(header.mtime);
                utimensat(
                    parent_fd.as_fd(),
                    name.as_os_str(),
                    &t,
                    &t,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|err| nix_io(&at, err))?;
                stats.symlinks += 1;
            }
            // the scan refused everything else
            _ => return Err(refuse(&e.rel, "unexpected entry type")),
        }
    }
    drop(parent_cache);
    // Directory modes and times last: writing a child changes the parent's mtime, and a
    // read-only directory could not be filled. Deepest first, so parents are set after.
    let dir_meta = |fd: &OwnedFd, at: &Path, permissions: u16, mtime: u32| -> Result<()> {
        let mode = Mode::from_bits_truncate(((permissions & 0o777) | 0o700).into());
        fchmod(fd.as_fd(), mode).map_err(|err| nix_io(at, err))?;
        let t = timespec(mtime);
        futimens(fd.as_fd(), &t, &t).map_err(|err| nix_io(at, err))
    };
    for e in scanned.entries.iter().rev() {
        if matches!(e.node.inner, InnerNode::Dir(_)) {
            let at = root.join(&e.rel);
            let fd = open_dir(&root_fd, root, &e.rel)?;
            dir_meta(&fd, &at, e.node.header.permissions, e.node.header.mtime)?;
        }
    }
    if let Some(r) = scanned.root {
        dir_meta(&root_fd, root, r.header.permissions, r.header.mtime)?;
    }
    if last_pct != 100 {
        progress.percent(Step::Unsquashing, 100, "");
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mksquashfs(src: &Path, image: &Path, extra: &[&str]) {
        let out = crate::testing::tool("mksquashfs")
            .arg(src)
            .arg(image)
            .args(["-noappend", "-quiet", "-no-progress"])
            .args(extra)
            .output()
            .expect("mksquashfs runs");
        assert!(
            out.status.success(),
            "mksquashfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// An image of `src` with a `pseudo` definition; asserts it is refused naming `entry`.
    fn assert_refused(build: impl FnOnce(&Path), extra: &[&str], entry: &str, reason: &str) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/ok.txt"), "ok").unwrap();
        build(&src);
        let image = dir.path().join("release.sqfs");
        mksquashfs(&src, &image, extra);
        let dest = dir.path().join("work");
        let err = unsquash(&image, &dest, &NoProgress).unwrap_err();
        match &err {
            Error::Unsquash {
                entry: e,
                reason: r,
            } => {
                assert_eq!(e, Path::new(entry), "{err}");
                assert!(r.contains(reason), "{err}");
            }
            other => panic!("not an Unsquash error: {other}"),
        }
        assert!(!dest.exists(), "dest was created");
        assert!(!partial_path(&dest).exists(), "dest.partial was created");
    }

    #[test]
    fn a_normal_tree_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("files/sub/deeper")).unwrap();
        std::fs::create_dir_all(src.join("images/empty")).unwrap();
        let big: Vec<u8> = (0..400_000u32).map(|i| (i * 31 % 253) as u8).collect();
        std::fs::write(src.join("files/big.bin"), &big).unwrap();
        std::fs::write(src.join("files/sub/a.txt"), "alpha\n").unwrap();
        std::fs::write(src.join("files/sub/deeper/empty"), "").unwrap();
        std::fs::write(src.join("release.toml"), "version = \"1\"\n").unwrap();
        std::fs::write(src.join("files/run.sh"), "#!/bin/sh\n").unwrap();
        set_mode(&src.join("files/sub/a.txt"), 0o640);
        set_mode(&src.join("files/run.sh"), 0o4755);
        set_mode(&src.join("files/sub"), 0o750);
        std::os::unix::fs::symlink("sub/a.txt", src.join("files/link")).unwrap();
        std::os::unix::fs::symlink("../../release.toml", src.join("files/sub/up")).unwrap();
        let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        File::options()
            .write(true)
            .open(src.join("files/sub/a.txt"))
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let image = dir.path().join("release.sqfs");
        mksquashfs(&src, &image, &[]);

        let dest = dir.path().join("work");
        // a stale partial and an old dest are replaced
        std::fs::create_dir_all(partial_path(&dest).join("junk")).unwrap();
        std::fs::create_dir_all(dest.join("old")).unwrap();
        let stats = unsquash(&image, &dest, &NoProgress).unwrap();
        assert_eq!(
            stats,
            UnsquashStats {
                files: 5,
                dirs: 5,
                symlinks: 2,
                bytes: big.len() as u64 + 6 + 14 + 10,
            }
        );
        assert!(!partial_path(&dest).exists());
        assert!(!dest.join("old").exists());
        assert_eq!(std::fs::read(dest.join("files/big.bin")).unwrap(), big);
        assert_eq!(
            std::fs::read_to_string(dest.join("files/sub/a.txt")).unwrap(),
            "alpha\n"
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("files/link")).unwrap(),
            "alpha\n"
        );
        assert_eq!(
            std::fs::read_link(dest.join("files/sub/up")).unwrap(),
            Path::new("../../release.toml")
        );
        assert!(dest.join("images/empty").is_dir());
        let md = std::fs::metadata(dest.join("files/sub/a.txt")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o640);
        assert_eq!(md.modified().unwrap(), mtime);
        let md = std::fs::metadata(dest.join("files/run.sh")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o755, "setuid is dropped");
        let md = std::fs::metadata(dest.join("files/sub")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o750);
        let src_md = std::fs::metadata(src.join("files/sub")).unwrap();
        assert_eq!(md.mtime(), src_md.mtime(), "directory mtimes are kept");
    }

    #[test]
    fn an_escaping_relative_symlink_is_refused() {
        assert_refused(
            |src| std::os::unix::fs::symlink("../../etc/passwd", src.join("sub/evil")).unwrap(),
            &[],
            "sub/evil",
            "leaves the tree",
        );
    }

    #[test]
    fn an_absolute_symlink_is_refused() {
        assert_refused(
            |src| std::os::unix::fs::symlink("/etc/passwd", src.join("passwd")).unwrap(),
            &[],
            "passwd",
            "is absolute",
        );
    }

    #[test]
    fn a_symlink_escaping_through_another_symlink_is_refused() {
        // lexically x/x/../.. stays at the root; through x -> . it is the root's parent
        assert_refused(
            |src| {
                std::os::unix::fs::symlink(".", src.join("x")).unwrap();
                std::os::unix::fs::symlink("x/x/../..", src.join("y")).unwrap();
            },
            &[],
            "y",
            "leaves the tree",
        );
    }

    #[test]
    fn devices_fifos_and_sockets_are_refused() {
        assert_refused(
            |_| {},
            &["-p", "dev c 600 0 0 1 3"],
            "dev",
            "character devices",
        );
        assert_refused(
            |_| {},
            &["-p", "disk b 600 0 0 8 0"],
            "disk",
            "block devices",
        );
        assert_refused(|_| {}, &["-p", "sub/fifo i 600 0 0 f"], "sub/fifo", "fifos");
        assert_refused(|_| {}, &["-p", "sock i 600 0 0 s"], "sock", "sockets");
    }

    #[test]
    fn a_file_that_is_not_a_squashfs_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("release.sqfs");
        std::fs::write(&image, vec![b'x'; 4096]).unwrap();
        let dest = dir.path().join("work");
        let err = unsquash(&image, &dest, &NoProgress)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a readable squashfs image"), "{err}");
        assert!(!dest.exists());
    }

    /// An image whose directory table is not compressed (`-noI`), so that a name can be
    /// patched in place to what mksquashfs would never write.
    fn crafted(name_in_src: &str, patched: &[u8]) -> tempfile::TempDir {
        assert_eq!(name_in_src.len(), patched.len());
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub").join(name_in_src), "payload").unwrap();
        let image = dir.path().join("release.sqfs");
        mksquashfs(&src, &image, &["-noI"]);
        let mut data = std::fs::read(&image).unwrap();
        let hits: Vec<usize> = data
            .windows(name_in_src.len())
            .enumerate()
            .filter(|(_, w)| *w == name_in_src.as_bytes())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(hits.len(), 1, "the name occurs once in the image");
        data[hits[0]..hits[0] + patched.len()].copy_from_slice(patched);
        std::fs::write(&image, data).unwrap();
        dir
    }

    #[test]
    fn crafted_names_are_refused() {
        for (name, patched, needle) in [
            ("QQ", &b".."[..], "not a readable squashfs"),
            ("Q", &b"."[..], "not a readable squashfs"),
            ("QZQ", &b"a/b"[..], "not a readable squashfs"),
            ("Q", &b"/"[..], "entry named `/`"),
            ("QQQ", &b"a\0b"[..], "NUL byte"),
        ] {
            let dir = crafted(name, patched);
            let dest = dir.path().join("work");
            let err = unsquash(&dir.path().join("release.sqfs"), &dest, &NoProgress)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{patched:?}: {err}");
            assert!(!dest.exists() && !partial_path(&dest).exists());
        }
    }
}

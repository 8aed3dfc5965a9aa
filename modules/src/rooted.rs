//! Paths of the managed system, resolved inside the root prefix.
//!
//! A [`RootedPath`] is an absolute path of the managed system whose components were checked
//! (no `..`, nothing relative) by [`crate::host::HostView::path`], the only public way to make
//! one. It is never opened as a host path: every operation resolves it from a descriptor of
//! the root prefix, component by component, with symbolic links interpreted as the managed
//! system would see them if the root prefix were `/`: an absolute target restarts at the root
//! prefix, `..` stops at it. Nothing reached this way lies outside the root prefix, whatever
//! links the tree holds.
//!
//! Two resolvers give the same answers:
//! - `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` (Linux 5.6+): the kernel does the
//!   walk, race-free (a concurrent rename that could move the walk out of the root makes it
//!   fail with `EAGAIN`, retried here);
//! - a component walk from the root descriptor with `O_PATH | O_NOFOLLOW` opens, each link
//!   read from the descriptor of the link itself (`readlinkat(fd, "")`) and expanded by hand.
//!   Used when the kernel has no `openat2` (`ENOSYS`), or when forced ([`Resolver::Walk`],
//!   `TENET_RESOLVE=walk`) so that tests exercise it.
//!
//! Every operation ends on a descriptor: the object itself, or its parent directory and the
//! final name, acted on with the `*at` system calls and `AT_SYMLINK_NOFOLLOW`/`O_NOFOLLOW` for
//! that name. A link planted at any moment therefore cannot redirect an operation out of the
//! root prefix. What remains (documented in ARCHITECTURE.md, "Root prefix"): an operation
//! resolves its path when it runs, so two operations on the same path may reach different
//! objects if the tree changes in between (still inside the root); and a directory reached
//! inside the root that someone else moves outside of it while an operation holds it is
//! acted on where it now is (that needs write access outside the root already).

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

/// How paths are resolved inside the root prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Resolver {
    /// `openat2(RESOLVE_IN_ROOT)` when the kernel has it, else the component walk.
    #[default]
    Auto,
    /// The component walk, always (tests; `TENET_RESOLVE=walk`).
    Walk,
}

impl Resolver {
    /// The resolver the environment asks for: `TENET_RESOLVE=walk` forces the component walk
    /// (to test it through the binary), anything else is [`Resolver::Auto`].
    pub fn from_env() -> Resolver {
        match std::env::var("TENET_RESOLVE") {
            Ok(v) if v == "walk" => Resolver::Walk,
            _ => Resolver::Auto,
        }
    }
}

/// Set once `openat2` answered `ENOSYS`: no use asking again.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// How many links one resolution follows at most (the kernel's limit).
const MAX_LINKS: usize = 40;

/// An absolute path of the managed system, resolved inside its root prefix at each use.
///
/// Only [`crate::host::HostView`] makes them. [`RootedPath::real`] is the lexical host path,
/// for messages and for commands (which resolve it themselves); never open it directly.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RootedPath {
    /// The directory the path is resolved in: the root prefix (`/` for the real system, and
    /// for trusted paths the operator gave outside the root prefix).
    anchor: Arc<PathBuf>,
    /// Normal components only; empty for the anchor itself.
    rel: PathBuf,
    /// How to resolve it.
    resolver: Resolver,
}

impl std::fmt::Debug for RootedPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RootedPath({})", self.real().display())
    }
}

impl RootedPath {
    /// `rel` (normal components only: the caller checked) under `anchor`.
    pub(crate) fn new(anchor: Arc<PathBuf>, rel: PathBuf, resolver: Resolver) -> RootedPath {
        debug_assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
        RootedPath {
            anchor,
            rel,
            resolver,
        }
    }

    /// The path in the managed system (`/etc/x`).
    pub fn abs(&self) -> PathBuf {
        Path::new("/").join(&self.rel)
    }

    /// The host path, lexically (`<root>/etc/x`): for messages and for handing to commands.
    pub fn real(&self) -> PathBuf {
        if self.rel.as_os_str().is_empty() {
            self.anchor.to_path_buf()
        } else {
            self.anchor.join(&self.rel)
        }
    }

    /// The root prefix this path is resolved in.
    pub fn anchor(&self) -> &Path {
        &self.anchor
    }

    /// The parent directory; `None` for the root itself.
    pub fn parent(&self) -> Option<RootedPath> {
        if self.rel.as_os_str().is_empty() {
            return None;
        }
        Some(RootedPath {
            anchor: self.anchor.clone(),
            rel: self.rel.parent().map(Path::to_path_buf).unwrap_or_default(),
            resolver: self.resolver,
        })
    }

    /// The last component; `None` for the root itself.
    pub fn file_name(&self) -> Option<&OsStr> {
        self.rel.file_name()
    }

    /// The entry `name` of this directory. `name` must be one normal component.
    pub fn child(&self, name: impl AsRef<OsStr>) -> io::Result<RootedPath> {
        let name = name.as_ref();
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a file name"),
            ));
        }
        Ok(RootedPath {
            anchor: self.anchor.clone(),
            rel: self.rel.join(name),
            resolver: self.resolver,
        })
    }

    /// The path relative to its anchor (no leading `/`).
    pub(crate) fn rel(&self) -> &Path {
        &self.rel
    }

    fn anchor_fd(&self) -> io::Result<OwnedFd> {
        // The root prefix itself is the operator's: its own path is taken as the host sees it.
        nix::fcntl::open(
            self.anchor.as_path(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)
    }

    /// Opens the object, resolved inside the root prefix, with `flags` (`O_CLOEXEC` added).
    /// With `follow`, a link at the last component is followed (inside the root prefix);
    /// without, the last component is opened with `O_NOFOLLOW` (with `O_PATH`: the link
    /// itself).
    pub(crate) fn open(&self, flags: OFlag, follow: bool) -> io::Result<OwnedFd> {
        let anchor = self.anchor_fd()?;
        open_in(&anchor, &self.rel, flags, follow, self.resolver).map_err(io::Error::from)
    }

    /// The parent directory (an `O_PATH` descriptor, resolved inside the root prefix,
    /// following links) and the last component, for the `*at` calls that must not follow it.
    pub(crate) fn open_parent(&self) -> io::Result<(OwnedFd, OsString)> {
        let (Some(parent), Some(name)) = (self.parent(), self.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the root prefix itself has no parent directory",
            ));
        };
        let dir = parent.open(OFlag::O_PATH | OFlag::O_DIRECTORY, true)?;
        Ok((dir, name.to_os_string()))
    }

    /// `lstat` of the object (its last component not followed); `None` when it does not exist.
    pub(crate) fn lstat(&self) -> io::Result<Option<FileStat>> {
        match self.open(OFlag::O_PATH, false) {
            Ok(fd) => nix::sys::stat::fstat(&fd)
                .map(Some)
                .map_err(io::Error::from),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The host path of the object with every link resolved inside the root prefix (the
    /// components that do not exist are appended as they are): for handing a path to code
    /// that opens it itself (another crate, a command), which then resolves it as the host
    /// does. Between this call and that use a change of the tree could redirect it: only for
    /// reads of files an operator controls (a kubeconfig).
    pub fn resolved_real(&self) -> io::Result<PathBuf> {
        let anchor = self.anchor_fd()?;
        let trace = walk(&anchor, &self.rel, OFlag::O_PATH, true, true).1;
        let mut out = self.anchor.to_path_buf();
        for n in trace.names.iter().chain(&trace.rest) {
            out.push(n);
        }
        Ok(out)
    }

    /// When the path does not exist because a symbolic link on the way leads nowhere inside
    /// the root prefix: which link, to what, and where that led. `None` otherwise.
    pub fn dangling_link(&self) -> Option<String> {
        let anchor = self.anchor_fd().ok()?;
        let (result, trace) = walk(&anchor, &self.rel, OFlag::O_PATH, true, true);
        let err = result.err()?;
        if !matches!(err, Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP)
            || !(trace.in_link || err == Errno::ELOOP)
        {
            return None;
        }
        let (link, target) = trace.last_link?;
        let shown = |names: &[OsString]| {
            let mut p = PathBuf::from("/");
            p.extend(names);
            p.display().to_string()
        };
        if err == Errno::ELOOP {
            return Some(format!(
                "{} is a symbolic link to {}: too many levels of symbolic links",
                shown(&link),
                target.display()
            ));
        }
        if err == Errno::ENOTDIR {
            return Some(format!(
                "{} is a symbolic link to {}, which leads to {} under the root prefix {}, and \
                 that is not a directory",
                shown(&link),
                target.display(),
                shown(&trace.names),
                self.anchor.display()
            ));
        }
        let mut missing = trace.names.clone();
        missing.extend(trace.rest.first().cloned());
        Some(format!(
            "{} is a symbolic link to {}, which leads to {} under the root prefix {} (links are \
             resolved as if the root prefix were /), and that does not exist",
            shown(&link),
            target.display(),
            shown(&missing),
            self.anchor.display()
        ))
    }
}

/// Whether an error means "not there" (a missing component, or a file where a directory was
/// needed on the way).
pub(crate) fn missing(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::ENOENT | Errno::ENOTDIR)
    )
}

/// Resolves `rel` inside the directory `anchor` (taken as `/`) and opens it with `flags`.
fn open_in(
    anchor: &OwnedFd,
    rel: &Path,
    flags: OFlag,
    follow: bool,
    resolver: Resolver,
) -> nix::Result<OwnedFd> {
    let flags = flags | OFlag::O_CLOEXEC;
    if resolver == Resolver::Auto && !NO_OPENAT2.load(Ordering::Relaxed) {
        let path: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let flags = if follow {
            flags
        } else {
            flags | OFlag::O_NOFOLLOW
        };
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        for _ in 0..16 {
            match nix::fcntl::openat2(anchor, path, how) {
                // A rename raced with a `..`: the kernel asks to try again.
                Err(Errno::EAGAIN) => continue,
                Err(Errno::ENOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    break;
                }
                other => return other,
            }
        }
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            return Err(Errno::EAGAIN);
        }
    }
    // The walk compares the object it checked with the one it opens; retried on a change.
    for _ in 0..16 {
        match walk(anchor, rel, flags, follow, false).0 {
            Err(Errno::EAGAIN) => continue,
            other => return other,
        }
    }
    Err(Errno::EAGAIN)
}

/// What a walk went through: the names of the directories it stands in (from the anchor),
/// the components it did not reach, and the last link it followed (its path as names, and
/// its target).
#[derive(Debug, Default)]
struct Trace {
    names: Vec<OsString>,
    rest: Vec<OsString>,
    last_link: Option<(Vec<OsString>, PathBuf)>,
    /// How many components were left after the last link's target when it was expanded.
    after_link: usize,
    /// Whether the walk stopped inside the last link's target (not in what followed it).
    in_link: bool,
}

/// The component walk: resolves `rel` from `anchor` as if it were `/`, then opens the result
/// with `flags`. With `keep_going`, a missing component ends the walk quietly, leaving the
/// rest in the trace (for [`RootedPath::resolved_real`] and diagnostics).
fn walk(
    anchor: &OwnedFd,
    rel: &Path,
    flags: OFlag,
    follow: bool,
    keep_going: bool,
) -> (nix::Result<OwnedFd>, Trace) {
    let mut trace = Trace::default();
    let result = walk_inner(anchor, rel, flags, follow, keep_going, &mut trace);
    (result, trace)
}

fn walk_inner(
    anchor: &OwnedFd,
    rel: &Path,
    flags: OFlag,
    follow: bool,
    keep_going: bool,
    trace: &mut Trace,
) -> nix::Result<OwnedFd> {
    let flags = flags | OFlag::O_CLOEXEC;
    let dup = |fd: &OwnedFd| {
        nix::fcntl::openat(
            fd,
            ".",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    // The directories from the anchor down to where the walk stands: `..` pops one, never
    // the anchor (clamped at the root, as the kernel does for `/..`).
    let mut dirs: Vec<OwnedFd> = vec![dup(anchor)?];
    let mut todo: VecDeque<OsString> = components(rel.as_os_str());
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        match name.as_bytes() {
            b"" | b"." => continue,
            b".." => {
                if dirs.len() > 1 {
                    dirs.pop();
                    trace.names.pop();
                }
                continue;
            }
            _ => {}
        }
        let last = todo.is_empty();
        let cur = dirs.last().expect("the anchor is never popped");
        // Whether a failure here is the last link's fault: its target is not all consumed.
        let in_link = trace.last_link.is_some() && todo.len() >= trace.after_link;
        if last && !follow {
            return nix::fcntl::openat(
                cur,
                name.as_os_str(),
                flags | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )
            .inspect_err(|_| {
                trace.in_link = in_link;
                if keep_going {
                    trace.rest.push(name.clone());
                }
            });
        }
        let fd = match nix::fcntl::openat(
            cur,
            name.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => {
                trace.in_link = in_link;
                if keep_going {
                    trace.rest.push(name);
                    trace.rest.extend(todo);
                }
                return Err(e);
            }
        };
        let st = nix::sys::stat::fstat(&fd)?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFLNK {
            links += 1;
            if links > MAX_LINKS {
                return Err(Errno::ELOOP);
            }
            // Read from the link's own descriptor: the link examined is the one expanded.
            let target = PathBuf::from(nix::fcntl::readlinkat(&fd, "")?);
            let mut link = trace.names.clone();
            link.push(name.clone());
            trace.last_link = Some((link, target.clone()));
            trace.after_link = todo.len();
            if target.as_os_str().is_empty() {
                trace.in_link = true;
                return Err(Errno::ENOENT);
            }
            if target.is_absolute() {
                dirs.truncate(1);
                trace.names.clear();
            }
            for c in components(target.as_os_str()).into_iter().rev() {
                todo.push_front(c);
            }
            continue;
        }
        if !last {
            if kind != SFlag::S_IFDIR {
                trace.in_link = in_link;
                trace.names.push(name);
                if keep_going {
                    trace.rest.extend(todo);
                }
                return Err(Errno::ENOTDIR);
            }
            dirs.push(fd);
            trace.names.push(name);
            continue;
        }
        // The last component, followed: not a link. Open it for real (never following: had
        // it become a link since, O_NOFOLLOW fails) and check it is still the object seen.
        trace.names.push(name.clone());
        let opened = if flags.contains(OFlag::O_PATH) {
            if flags.contains(OFlag::O_DIRECTORY) && kind != SFlag::S_IFDIR {
                return Err(Errno::ENOTDIR);
            }
            fd
        } else {
            match nix::fcntl::openat(
                cur,
                name.as_os_str(),
                flags | OFlag::O_NOFOLLOW,
                Mode::empty(),
            ) {
                Err(Errno::ELOOP) => return Err(Errno::EAGAIN),
                other => other?,
            }
        };
        let now = nix::sys::stat::fstat(&opened)?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
            return Err(Errno::EAGAIN);
        }
        return Ok(opened);
    }
    // The path ends on a directory the walk stands in (the anchor, or after `..`).
    let cur = dirs.last().expect("the anchor is never popped");
    nix::fcntl::openat(cur, ".", flags, Mode::empty())
}

/// The components of a path (empty ones and `.` dropped; `..` kept).
fn components(path: &OsStr) -> VecDeque<OsString> {
    path.as_bytes()
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsStr::from_bytes(c).to_os_string())
        .collect()
}

/// Whether `openat2` answered so far (false once it said `ENOSYS`).
#[cfg(test)]
pub(crate) fn openat2_available() -> bool {
    !NO_OPENAT2.load(Ordering::Relaxed)
}

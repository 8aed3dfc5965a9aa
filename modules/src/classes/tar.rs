//! The `tar` class: the contents of a tar archive are present under a directory.
//!
//! OpenSVC name `tar` (object script `tar.py`). A rule is
//! `{"ref": "/some/path/to/file.tar", "path": "/home/user/bin", "immutable": true}`:
//!
//! - `ref`: the archive: an absolute path in the managed system (or `file://` and that path),
//!   or an `https://` or `data:` URL. Plain and gzip-compressed archives are read (the tar
//!   crate, no `tar` command).
//! - `path`: the directory the archive is extracted into (created when missing).
//! - `immutable` (`true` / `false`, or the strings `"true"` / `"false"`, default `false`):
//!   true, every member must be as in the archive (files: content and mode; directories:
//!   mode; symbolic links: target), and fix rewrites what differs; false, every member must
//!   exist with its type, and fix only creates what is missing, leaving local changes alone.
//!
//! The archive is vetted before anything is compared or written, and refused whole (nok,
//! nothing written) when a member could land outside `path`: an absolute name or a `..`
//! component, a member under a symbolic link of the archive, a symbolic link whose target is
//! absolute or, resolved through the archive's own links, leaves `path`, a hard link to a
//! name the archive did not hold before; devices, FIFOs and sockets are refused too. Members
//! are written inside the root prefix like every file Tenet writes (`Host`); a symbolic link
//! met on the way under `path` in the managed system is refused rather than followed. Hard
//! links become separate copies. Owners and modification times are not restored: files
//! belong to the agent's user and get the time they were written. Archives holding more than
//! 256 MiB of file data are refused (the content is held in memory).
//!
//! Differences from OpenSVC are the `#tar-*` rows of `docs/opensvc-compat.md`.

use std::collections::HashMap;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use tenet_fsutil::tree::{Escape, resolve_in_tree};

use super::common::{fetch_ref, kind};
use crate::class::Class;
use crate::host::{Host, HostView, RootedPath};
use crate::status::{Log, Status};

/// The most file data an archive may hold.
const MAX_DATA: u64 = 256 * 1024 * 1024;
/// How many differences check lists before summing up.
const MAX_REPORTED: usize = 20;

/// One `tar` rule, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "ref")]
    reference: String,
    path: String,
    #[serde(default)]
    immutable: Option<Value>,
}

/// One `tar` rule, checked.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct TarRule {
    /// The archive: a path of the managed system, or an `https://` / `data:` URL.
    pub reference: Source,
    /// The directory to extract into.
    pub path: String,
    /// Whether members must stay as in the archive (else only exist).
    pub immutable: bool,
}

/// Where an archive comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file of the managed system.
    Local(String),
    /// An `https://` or `data:` URL.
    Url(String),
}

impl TryFrom<RawRule> for TarRule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Self, String> {
        let r = raw.reference.trim();
        let reference = if let Some(p) = r.strip_prefix("file://") {
            Source::Local(p.to_string())
        } else if r.starts_with('/') {
            Source::Local(r.to_string())
        } else if r.starts_with("https://") || r.starts_with("data:") {
            Source::Url(r.to_string())
        } else {
            return Err(format!(
                "ref: {r:?}: expected an absolute path of the managed system, file://, https:// or data:"
            ));
        };
        if let Source::Local(p) = &reference
            && (!p.starts_with('/') || p.split('/').any(|c| c == ".."))
        {
            return Err(format!("ref: {p:?} is not an absolute path without '..'"));
        }
        if !raw.path.starts_with('/') || raw.path.split('/').any(|c| c == "..") {
            return Err(format!("path: {:?} is not an absolute path without '..'", raw.path));
        }
        if raw.path.trim_end_matches('/').is_empty() {
            return Err("path: refusing to extract into /".into());
        }
        let immutable = match raw.immutable {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
            Some(other) => return Err(format!("immutable: {other} is not true or false")),
        };
        Ok(TarRule {
            reference,
            path: raw.path.trim_end_matches('/').to_string(),
            immutable,
        })
    }
}

/// The `tar` class.
#[derive(Debug)]
pub struct Tar;

impl Class for Tar {
    type Rule = TarRule;

    const NAME: &'static str = "tar";
    const ALIASES: &'static [&'static str] = &["tar.py"];
    const DESCRIPTION: &'static str =
        "an archive's contents are present under a directory (immutable: as in the archive)";

    fn describe(rule: &TarRule) -> String {
        rule.path.clone()
    }

    fn check(rule: &TarRule, host: &HostView, log: &mut Log) -> Status {
        let members = match load(rule, host) {
            Ok(m) => m,
            Err(e) => {
                log.err(format!("{}: {e}", rule.path));
                return Status::Nok;
            }
        };
        let mut diffs = Vec::new();
        for m in &members {
            match state(rule, host, m) {
                Ok(State::Right) => {}
                Ok(s) => diffs.push(s.describe(&rule.path, m)),
                Err(e) => diffs.push(format!("{}/{}: {e}", rule.path, m.name.display())),
            }
        }
        if diffs.is_empty() {
            log.info(format!(
                "{}: the {} member(s) of the archive are present{}, ok",
                rule.path,
                members.len(),
                if rule.immutable { " and unchanged" } else { "" }
            ));
            return Status::Ok;
        }
        let n = diffs.len();
        for d in diffs.into_iter().take(MAX_REPORTED) {
            log.err(d);
        }
        if n > MAX_REPORTED {
            log.err(format!("... {} more difference(s)", n - MAX_REPORTED));
        }
        Status::Nok
    }

    fn fix(rule: &TarRule, host: &Host, log: &mut Log) -> Status {
        match fix_rule(rule, host, log) {
            Ok(()) => Status::Ok,
            Err(e) => {
                log.err(format!("{}: {e}", rule.path));
                Status::Nok
            }
        }
    }
}

/// What a member is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
}

/// One member of the archive, vetted.
#[derive(Debug, Clone)]
struct Member {
    /// Relative to the rule's path, normal components only.
    name: PathBuf,
    kind: Kind,
    mode: u32,
}

/// Reads and vets the whole archive.
fn load(rule: &TarRule, host: &HostView) -> Result<Vec<Member>, String> {
    let reader: Box<dyn Read> = match &rule.reference {
        Source::Url(u) => {
            let bytes = fetch_ref(u)?;
            decompress(Cursor::new(bytes))?
        }
        Source::Local(p) => {
            let rp = host.path(p).map_err(|e| e.to_string())?;
            let f = host
                .open(&rp)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("archive {p}: missing"))?;
            decompress(f).map_err(|e| format!("archive {p}: {e}"))?
        }
    };
    read_members(reader)
}

fn decompress<R: Read + Seek + 'static>(mut r: R) -> Result<Box<dyn Read>, String> {
    let mut magic = [0u8; 2];
    let n = r.read(&mut magic).map_err(|e| e.to_string())?;
    r.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::GzDecoder::new(r)))
    } else {
        Ok(Box::new(r))
    }
}

fn read_members(reader: impl Read) -> Result<Vec<Member>, String> {
    let mut archive = tar::Archive::new(reader);
    let mut members: Vec<Member> = Vec::new();
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    let mut total: u64 = 0;
    let bad = |name: &Path, why: &str| format!("archive refused: member {}: {why}", name.display());
    for entry in archive.entries().map_err(|e| format!("not a tar archive: {e}"))? {
        let mut entry = entry.map_err(|e| format!("not a readable tar archive: {e}"))?;
        let raw = entry
            .path()
            .map_err(|e| format!("a member name is unreadable: {e}"))?
            .into_owned();
        let mut name = PathBuf::new();
        for c in raw.components() {
            match c {
                Component::Normal(n) => name.push(n),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => return Err(bad(&raw, "an absolute name")),
                Component::ParentDir => return Err(bad(&raw, "a '..' component")),
            }
        }
        let header = entry.header();
        let mode = header.mode().map_err(|e| bad(&raw, &e.to_string()))? & 0o7777;
        let et = header.entry_type();
        if name.as_os_str().is_empty() {
            if et.is_dir() {
                continue; // `./` itself: the target directory
            }
            return Err(bad(&raw, "an empty name"));
        }
        let kind = if et.is_dir() {
            Kind::Dir
        } else if et.is_file() || et == tar::EntryType::Continuous {
            total += entry.size();
            if total > MAX_DATA {
                return Err(format!("archive refused: more than {MAX_DATA} bytes of file data"));
            }
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut data)
                .map_err(|e| bad(&raw, &e.to_string()))?;
            Kind::File(data)
        } else if et.is_symlink() {
            let target = entry
                .link_name()
                .map_err(|e| bad(&raw, &e.to_string()))?
                .ok_or_else(|| bad(&raw, "a link without target"))?
                .into_owned();
            Kind::Symlink(target)
        } else if et.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| bad(&raw, &e.to_string()))?
                .ok_or_else(|| bad(&raw, "a link without target"))?
                .into_owned();
            let target: PathBuf = target
                .components()
                .filter(|c| !matches!(c, Component::CurDir))
                .collect();
            match seen.get(&target).map(|&i| &members[i].kind) {
                Some(Kind::File(data)) => {
                    total += data.len() as u64;
                    if total > MAX_DATA {
                        return Err(format!(
                            "archive refused: more than {MAX_DATA} bytes of file data"
                        ));
                    }
                    Kind::File(data.clone())
                }
                _ => return Err(bad(&raw, "a hard link to no earlier file of the archive")),
            }
        } else {
            return Err(bad(&raw, &format!("unsupported type {et:?} (only files, directories and links)")));
        };
        match seen.get(&name) {
            Some(&i) => members[i] = Member { name: name.clone(), kind, mode },
            None => {
                seen.insert(name.clone(), members.len());
                members.push(Member { name, kind, mode });
            }
        }
    }
    vet(&members)?;
    Ok(members)
}

/// Refuses members under an archive symlink and symlinks leaving the tree.
fn vet(members: &[Member]) -> Result<(), String> {
    let links: HashMap<PathBuf, PathBuf> = members
        .iter()
        .filter_map(|m| match &m.kind {
            Kind::Symlink(t) => Some((m.name.clone(), t.clone())),
            _ => None,
        })
        .collect();
    let bad = |name: &Path, why: &str| format!("archive refused: member {}: {why}", name.display());
    for m in members {
        let mut prefix = PathBuf::new();
        let parts: Vec<_> = m.name.components().collect();
        for c in &parts[..parts.len().saturating_sub(1)] {
            prefix.push(c);
            if links.contains_key(&prefix) {
                return Err(bad(&m.name, &format!("lies under the symbolic link {}", prefix.display())));
            }
        }
        if let Kind::Symlink(t) = &m.kind {
            if t.as_os_str().is_empty() {
                return Err(bad(&m.name, "a link with an empty target"));
            }
            let dir = m.name.parent().unwrap_or(Path::new("")).to_path_buf();
            resolve_in_tree(dir, t, &links).map_err(|e| {
                let why = match e {
                    Escape::Absolute | Escape::ThroughAbsoluteLink => "is absolute",
                    Escape::LeavesTree => "leaves the directory",
                    Escape::TooDeep => "has too many levels of links",
                };
                bad(&m.name, &format!("its target {} {why}", t.display()))
            })?;
        }
    }
    Ok(())
}

/// How a member stands on disk.
#[derive(Debug)]
enum State {
    Right,
    Missing,
    WrongType(&'static str),
    Content,
    Mode(u32),
    Target(PathBuf),
}

impl State {
    fn describe(&self, base: &str, m: &Member) -> String {
        let shown = format!("{base}/{}", m.name.display());
        match self {
            State::Right => format!("{shown}: ok"),
            State::Missing => format!("{shown}: missing"),
            State::WrongType(k) => format!("{shown}: is {k}, expected {}", expected(m)),
            State::Content => format!("{shown}: content differs from the archive"),
            State::Mode(have) => format!("{shown}: mode {have:04o}, expected {:04o}", m.mode),
            State::Target(t) => format!(
                "{shown}: links to {}, expected {}",
                t.display(),
                match &m.kind {
                    Kind::Symlink(w) => w.display().to_string(),
                    _ => String::new(),
                }
            ),
        }
    }
}

fn expected(m: &Member) -> &'static str {
    match m.kind {
        Kind::Dir => "a directory",
        Kind::File(_) => "a regular file",
        Kind::Symlink(_) => "a symlink",
    }
}

/// The rooted path of a member, refusing a symbolic link on the way under the rule's path.
fn member_path(rule: &TarRule, host: &HostView, m: &Member) -> Result<RootedPath, String> {
    let mut abs = PathBuf::from(&rule.path);
    let parts: Vec<_> = m.name.components().collect();
    for c in &parts[..parts.len().saturating_sub(1)] {
        abs.push(c);
        let p = host.path(&abs).map_err(|e| e.to_string())?;
        if let Some(meta) = host.metadata(&p).map_err(|e| e.to_string())?
            && !meta.is_dir()
        {
            return Err(format!(
                "{} is {}: refusing to write through it",
                abs.display(),
                kind(&meta)
            ));
        }
    }
    host.path(PathBuf::from(&rule.path).join(&m.name))
        .map_err(|e| e.to_string())
}

fn state(rule: &TarRule, host: &HostView, m: &Member) -> Result<State, String> {
    let p = member_path(rule, host, m)?;
    let Some(meta) = host.metadata(&p).map_err(|e| e.to_string())? else {
        return Ok(State::Missing);
    };
    let ft = meta.file_type();
    let type_ok = match m.kind {
        Kind::Dir => ft.is_dir(),
        Kind::File(_) => ft.is_file(),
        Kind::Symlink(_) => ft.is_symlink(),
    };
    if !type_ok {
        return Ok(State::WrongType(kind(&meta)));
    }
    if !rule.immutable {
        return Ok(State::Right);
    }
    match &m.kind {
        Kind::Symlink(t) => {
            let have = host.read_link(&p).map_err(|e| e.to_string())?.unwrap_or_default();
            if &have != t {
                return Ok(State::Target(have));
            }
            return Ok(State::Right);
        }
        Kind::File(data) => {
            if meta.len() != data.len() as u64
                || host.read(&p).map_err(|e| e.to_string())?.as_deref() != Some(data.as_slice())
            {
                return Ok(State::Content);
            }
        }
        Kind::Dir => {}
    }
    let have = meta.mode() & 0o7777;
    if have != m.mode {
        return Ok(State::Mode(have));
    }
    Ok(State::Right)
}

fn fix_rule(rule: &TarRule, host: &Host, log: &mut Log) -> Result<(), String> {
    let members = load(rule, host)?;
    let base = host.path(&rule.path).map_err(|e| e.to_string())?;
    host.create_dir_all(&base).map_err(|e| e.to_string())?;
    let mut changed = 0usize;
    for m in &members {
        let st = state(rule, host, m)?;
        let shown = format!("{}/{}", rule.path, m.name.display());
        let p = member_path(rule, host, m)?;
        match (&st, &m.kind) {
            (State::Right, _) => continue,
            (State::WrongType(k), _) => {
                return Err(format!("{shown} is {k}, expected {}: refusing to replace it", expected(m)));
            }
            (_, Kind::Dir) => {
                if matches!(st, State::Missing) {
                    host.create_dir_all(&p).map_err(|e| e.to_string())?;
                }
                host.set_mode(&p, m.mode).map_err(|e| e.to_string())?;
            }
            (State::Mode(_), Kind::File(_)) => {
                host.set_mode(&p, m.mode).map_err(|e| e.to_string())?;
            }
            (_, Kind::File(data)) => {
                host.write_atomic(&p, data, Some(m.mode), None)
                    .map_err(|e| e.to_string())?;
            }
            (_, Kind::Symlink(t)) => {
                host.symlink(&p, t).map_err(|e| format!("{shown}: {e}"))?;
            }
        }
        changed += 1;
        log.info(match st {
            State::Missing => format!("{shown}: created"),
            other => format!("{} (fixed)", other.describe(&rule.path, m)),
        });
    }
    log.info(format!(
        "{}: {changed} member(s) of {} written",
        rule.path,
        members.len()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_class_contract, check, fix};
    use serde_json::json;
    use std::fs;

    fn host(dir: &Path) -> Host {
        Host::new(dir).with_var_dir(dir.join("var/lib/tenet"))
    }

    /// Builds an archive with the tar crate: `(name, kind)`; kind `d`, `f:CONTENT`,
    /// `l:TARGET`, `h:TARGET` (hard link).
    fn archive(members: &[(&str, &str)], gzip: bool) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, spec) in members {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1_700_000_000);
            let (k, rest) = spec.split_at(1);
            let rest = rest.strip_prefix(':').unwrap_or("");
            match k {
                "d" => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o750);
                    h.set_size(0);
                    b.append_data(&mut h, name, &[][..]).unwrap();
                }
                "f" => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o640);
                    h.set_size(rest.len() as u64);
                    b.append_data(&mut h, name, rest.as_bytes()).unwrap();
                }
                "l" | "h" => {
                    h.set_entry_type(if k == "l" { tar::EntryType::Symlink } else { tar::EntryType::Link });
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, name, rest).unwrap();
                }
                _ => panic!("{spec}"),
            }
        }
        let data = b.into_inner().unwrap();
        if !gzip {
            return data;
        }
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &data).unwrap();
        e.finish().unwrap()
    }

    fn put(dir: &Path, abs: &str, data: &[u8]) {
        let p = dir.join(abs.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    const TREE: &[(&str, &str)] = &[
        ("bin/", "d"),
        ("bin/tool", "f:#!/bin/sh\necho hi\n"),
        ("bin/alias", "l:tool"),
        ("bin/copy", "h:bin/tool"),
        ("share/doc/README", "f:read me\n"),
    ];

    #[test]
    fn upstream_example_immutable() {
        for gzip in [false, true] {
            let d = tempfile::tempdir().unwrap();
            let h = host(d.path());
            put(d.path(), "/some/path/to/file.tar", &archive(TREE, gzip));
            let rule = json!({"ref": "/some/path/to/file.tar", "path": "/home/user/bin", "immutable": "true"});
            assert_class_contract::<Tar>(&h, &[d.path()], rule.clone());
            let base = d.path().join("home/user/bin");
            assert_eq!(fs::read_to_string(base.join("bin/tool")).unwrap(), "#!/bin/sh\necho hi\n");
            assert_eq!(fs::read_to_string(base.join("bin/copy")).unwrap(), "#!/bin/sh\necho hi\n");
            assert_eq!(fs::read_link(base.join("bin/alias")).unwrap(), Path::new("tool"));
            assert_eq!(fs::metadata(base.join("bin")).unwrap().mode() & 0o7777, 0o750);
            assert_eq!(fs::metadata(base.join("bin/tool")).unwrap().mode() & 0o7777, 0o640);
            // A local change is nok and undone.
            fs::write(base.join("share/doc/README"), "changed\n").unwrap();
            let log = assert_class_contract::<Tar>(&h, &[d.path()], rule);
            assert!(log.iter().any(|l| l.contains("README: content differs")), "{log:?}");
            assert_eq!(fs::read_to_string(base.join("share/doc/README")).unwrap(), "read me\n");
        }
    }

    #[test]
    fn mutable_keeps_local_changes_and_adds_what_is_missing() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        put(d.path(), "/a.tgz", &archive(TREE, true));
        put(d.path(), "/opt/x/share/doc/README", b"local\n");
        let rule = json!({"ref": "file:///a.tgz", "path": "/opt/x", "immutable": false});
        assert_class_contract::<Tar>(&h, &[d.path()], rule);
        assert_eq!(fs::read_to_string(d.path().join("opt/x/share/doc/README")).unwrap(), "local\n");
        assert!(d.path().join("opt/x/bin/tool").is_file());
    }

    #[test]
    fn escaping_archives_are_refused_whole() {
        for (members, why) in [
            (vec![("ok", "f:x"), ("../evil", "f:x")], "'..'"),
            (vec![("/etc/evil", "f:x")], "absolute"),
            (vec![("up", "l:../../etc")], "leaves the directory"),
            (vec![("abs", "l:/etc/passwd")], "is absolute"),
            (vec![("x", "l:."), ("y", "l:x/x/../..")], "leaves the directory"),
            (vec![("lnk", "l:sub"), ("sub/", "d"), ("lnk/f", "f:x")], "under the symbolic link"),
            (vec![("h", "h:nothere")], "hard link"),
        ] {
            let d = tempfile::tempdir().unwrap();
            let h = host(d.path());
            // The tar crate refuses to write some of these names; build the bytes directly.
            put(d.path(), "/a.tar", &raw_archive(&members));
            let rule = json!({"ref": "/a.tar", "path": "/dest", "immutable": true});
            let (st, log) = check::<Tar>(&h, rule.clone());
            assert_eq!(st, Status::Nok, "{members:?}");
            assert!(log.iter().any(|l| l.contains("archive refused") && l.contains(why)), "{members:?}: {log:?}");
            let (st, _) = fix::<Tar>(&h, rule);
            assert_eq!(st, Status::Nok);
            assert!(!d.path().join("dest").exists(), "{members:?}: nothing written");
        }
    }

    /// A ustar archive written byte by byte (names the tar crate's builder would refuse).
    fn raw_archive(members: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, spec) in members {
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            let (k, rest) = spec.split_at(1);
            let rest = rest.strip_prefix(':').unwrap_or("");
            let (typeflag, size, link) = match k {
                "d" => (b'5', 0, ""),
                "f" => (b'0', rest.len(), ""),
                "l" => (b'2', 0, rest),
                _ => (b'1', 0, rest),
            };
            h[100..107].copy_from_slice(b"0000644");
            h[108..115].copy_from_slice(b"0000000");
            h[116..123].copy_from_slice(b"0000000");
            h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
            h[136..147].copy_from_slice(b"00000000000");
            h[156] = typeflag;
            h[157..157 + link.len()].copy_from_slice(link.as_bytes());
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            h[148..156].copy_from_slice(b"        ");
            let sum: u32 = h.iter().map(|&b| b as u32).sum();
            h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            out.extend_from_slice(&h);
            if typeflag == b'0' {
                let mut data = rest.as_bytes().to_vec();
                data.resize(size.div_ceil(512) * 512, 0);
                out.extend_from_slice(&data);
            }
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    #[test]
    fn a_link_on_disk_on_the_way_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        put(d.path(), "/a.tar", &archive(&[("sub/f", "f:x")], false));
        fs::create_dir_all(d.path().join("dest")).unwrap();
        fs::create_dir_all(d.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink("/elsewhere", d.path().join("dest/sub")).unwrap();
        let (st, log) = fix::<Tar>(&h, json!({"ref": "/a.tar", "path": "/dest"}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("refusing to write through it")), "{log:?}");
        assert!(!d.path().join("elsewhere/f").exists());
    }

    #[test]
    fn a_missing_archive_and_bad_rules() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        let (st, log) = check::<Tar>(&h, json!({"ref": "/none.tar", "path": "/dest"}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("archive /none.tar: missing")), "{log:?}");
        put(d.path(), "/not.tar", b"garbage that is not a tar archive at all");
        let (st, _) = check::<Tar>(&h, json!({"ref": "/not.tar", "path": "/dest"}));
        assert_eq!(st, Status::Nok);
        for (v, needle) in [
            (json!({"ref": "safe://x", "path": "/d"}), "ref:"),
            (json!({"ref": "http://x/a.tar", "path": "/d"}), "ref:"),
            (json!({"ref": "/a.tar", "path": "d"}), "path:"),
            (json!({"ref": "/a.tar", "path": "/"}), "path:"),
            (json!({"ref": "/a.tar", "path": "/d", "immutable": "yes"}), "immutable:"),
            (json!({"ref": "/a.tar", "path": "/d", "mode": 1}), "unknown field `mode`"),
        ] {
            let err = Tar::rules(&v).unwrap_err();
            assert!(err.contains(needle), "{v}: {err}");
        }
    }
}

//! The `remove_files` class: no file matches the given glob patterns.
//!
//! OpenSVC name `remove_files` (object script `remove_files.py`). A variable's value is a list
//! of absolute glob patterns (or a single pattern), e.g. `["/etc/cron.d/old-*", "/tmp/x"]`;
//! each pattern is one rule. Patterns are expanded under the root prefix with the shell-like
//! rules of Python's `glob` (`*`, `?`, `[...]`; a name starting with `.` is matched only by a
//! pattern component starting with `.`).
//!
//! check: a pattern that matches nothing is n/a (as in OpenSVC, so a fixed rule reads n/a
//! afterwards, not ok); one that matches is nok, each match listed. fix removes each match: a
//! file, symlink or special file is unlinked (a symlink is never followed, even when a
//! pattern ending with `/` matched it as a directory), a directory is removed recursively.
//! fixable is n/a.
//!
//! Safety (OpenSVC declares a blacklist of `/` and `/root` but never applies it). A pattern is
//! refused, nok and nothing removed, when:
//! - it is not absolute, or has a `..` component;
//! - it designates the root itself (`/`, `//`, `/.`) or `/root`;
//! - one of its matches is a top-level entry of the root other than a regular file (so `/*`,
//!   `/us*` or `/ro?t` are refused as soon as they reach `/usr`, `/root` or a top-level link
//!   such as `/bin -> usr/bin`; a top-level regular file may be removed);
//! - one of its matches lies outside the root prefix once symlinked directories are resolved.
//!
//! Other differences from OpenSVC (each a row of `docs/opensvc-compat.md`, with the reason): a dangling symlink that
//! matches is removed (OpenSVC reports it as absent and keeps it); `**` is the same as `*`
//! (as in Python's non-recursive glob); `.` and `..` are never matches; unreadable
//! directories are skipped silently as Python's glob does. Removed files are not backed up.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use glob::{MatchOptions, Pattern};
use serde::Deserialize;
use serde_json::Value;

use crate::class::Class;
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// One `remove_files` rule: one pattern of the variable's list.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct RemoveFilesRule {
    /// An absolute glob pattern; whatever it matches must not exist.
    pub pattern: String,
}

/// The `remove_files` class.
#[derive(Debug)]
pub struct RemoveFiles;

impl Class for RemoveFiles {
    type Rule = RemoveFilesRule;

    const NAME: &'static str = "remove_files";
    const ALIASES: &'static [&'static str] = &["remove_files.py"];
    const DESCRIPTION: &'static str = "no file matches the given glob patterns";

    /// A list of patterns gives one rule per pattern (sorted, duplicates dropped, as OpenSVC
    /// does); a single string is one pattern.
    fn rules(value: &Value) -> Result<Vec<RemoveFilesRule>, String> {
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        let mut patterns = items
            .into_iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    format!("remove_files: expected a glob pattern (a string), got {item}")
                })
            })
            .collect::<Result<Vec<String>, String>>()?;
        patterns.sort();
        patterns.dedup();
        Ok(patterns
            .into_iter()
            .map(|pattern| RemoveFilesRule { pattern })
            .collect())
    }

    fn describe(rule: &RemoveFilesRule) -> String {
        rule.pattern.clone()
    }

    fn check(rule: &RemoveFilesRule, host: &HostView, log: &mut Log) -> Status {
        let found = match Matches::find(&rule.pattern, host) {
            Ok(found) => found,
            Err(msg) => {
                log.err(format!("{}: {msg}", rule.pattern));
                return Status::Nok;
            }
        };
        if found.paths.is_empty() {
            log.info(format!("{}: nothing matches", rule.pattern));
            return Status::NotApplicable;
        }
        for path in &found.paths {
            log.err(format!(
                "{}: exists (matches {}), to be removed",
                found.shown(path),
                rule.pattern
            ));
        }
        Status::Nok
    }

    fn fix(rule: &RemoveFilesRule, host: &Host, log: &mut Log) -> Status {
        let found = match Matches::find(&rule.pattern, host) {
            Ok(found) => found,
            Err(msg) => {
                log.err(format!("{}: {msg}; nothing removed", rule.pattern));
                return Status::Nok;
            }
        };
        let mut status = Status::Ok;
        for path in &found.paths {
            match remove(path) {
                Ok(()) => log.info(format!("{}: removed", found.shown(path))),
                Err(e) => {
                    log.err(format!("{}: cannot remove: {e}", found.shown(path)));
                    status = Status::Nok;
                }
            }
        }
        status
    }
}

/// What a pattern matches under a root prefix.
struct Matches {
    /// The root prefix as a string, without its trailing `/` (empty for `/`).
    root: String,
    /// The matches (real paths), in glob order.
    paths: Vec<PathBuf>,
}

impl Matches {
    /// Expands `pattern` under the host's root, refusing dangerous patterns and matches.
    fn find(pattern: &str, host: &HostView) -> Result<Matches, String> {
        let (pattern, dirs_only) = normalize(pattern)?;
        let root = host
            .root()
            .to_str()
            .ok_or("the root prefix is not valid UTF-8")?
            .trim_end_matches('/')
            .to_owned();
        // The glob crate's `require_literal_leading_dot` also hides dot files from `.*`, so
        // hidden entries are filtered below, as Python does it.
        let options = MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        let full = format!("{}{pattern}", Pattern::escape(&root));
        let walk = glob::glob_with(&full, options).map_err(|e| format!("invalid pattern: {e}"))?;
        let mut found = Matches {
            root,
            paths: Vec::new(),
        };
        // Unreadable directories (`Err` items) are skipped, as Python's glob does.
        for path in walk.flatten() {
            if hidden(found.relative(&path), &pattern) {
                continue;
            }
            // Python's glob: a trailing `/` keeps the directories (followed through symlinks,
            // as `os.path.isdir` does). A regular file must never match `dfile/`.
            if dirs_only && !fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            found.refuse_unsafe(host.root(), &path)?;
            found.paths.push(path);
        }
        Ok(found)
    }

    /// The part of a real path below the root prefix, as bytes (`/etc/x`).
    fn relative<'a>(&self, path: &'a Path) -> &'a [u8] {
        let bytes = path.as_os_str().as_bytes();
        bytes.get(self.root.len()..).unwrap_or(bytes)
    }

    /// A real path as the managed system sees it.
    fn shown(&self, path: &Path) -> String {
        let rel = OsStr::from_bytes(self.relative(path)).to_string_lossy();
        if rel.is_empty() {
            "/".into()
        } else {
            rel.into_owned()
        }
    }

    /// Refuses the root itself, top-level entries that are not regular files, and paths that
    /// escape the root through a symlinked directory.
    fn refuse_unsafe(&self, root: &Path, path: &Path) -> Result<(), String> {
        let shown = self.shown(path);
        let depth = self
            .relative(path)
            .split(|b| *b == b'/')
            .filter(|s| !s.is_empty())
            .count();
        let refuse = |why: &str| {
            Err(format!(
                "matches {shown}, {why}; refusing the whole pattern"
            ))
        };
        if depth == 0 {
            return refuse("the root itself");
        }
        if depth == 1 {
            let is_file = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file());
            if !is_file {
                return refuse("a top-level directory or link");
            }
        }
        let inside = match (path.parent().map(fs::canonicalize), fs::canonicalize(root)) {
            (Some(Ok(parent)), Ok(root)) => parent.starts_with(root),
            _ => false,
        };
        if !inside {
            return refuse("which is outside the root prefix through a symlinked directory");
        }
        Ok(())
    }
}

/// Checks a pattern and rewrites it without empty or `.` components and with `**` as `*`;
/// the flag says whether it ended with `/` (directories only).
fn normalize(pattern: &str) -> Result<(String, bool), String> {
    if !pattern.starts_with('/') {
        return Err("the pattern is not absolute".into());
    }
    let parts: Vec<&str> = pattern
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err("the pattern contains '..'".into());
    }
    match parts.as_slice() {
        [] => return Err("the pattern designates the root itself".into()),
        ["root"] => return Err("/root is protected".into()),
        _ => {}
    }
    // `d/` and `d/.` only exist when `d` is a directory.
    let dirs_only = pattern.ends_with('/') || pattern.trim_end_matches('/').ends_with("/.");
    let mut out = String::with_capacity(pattern.len());
    for part in parts {
        out.push('/');
        let mut last_star = false;
        for c in part.chars() {
            if !(c == '*' && last_star) {
                out.push(c);
            }
            last_star = c == '*';
        }
    }
    Ok((out, dirs_only))
}

/// Whether a match (below the root) is one Python's glob would not give: a `.` or `..` entry,
/// or a name starting with `.` where the pattern's component does not start with `.`.
/// `pattern` is normalized, so its components and the match's pair up one to one.
fn hidden(rel: &[u8], pattern: &str) -> bool {
    let names = rel.split(|b| *b == b'/').filter(|s| !s.is_empty());
    let parts = pattern.split('/').filter(|s| !s.is_empty());
    names.zip(parts).any(|(name, part)| {
        name == b"." || name == b".." || (name.starts_with(b".") && !part.starts_with('.'))
    })
}

/// Removes one match: a directory recursively (its symlinks are unlinked, not followed),
/// anything else, symlinks included, unlinked. Already gone is fine.
fn remove(path: &Path) -> io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class::ClassEntry;
    use crate::testing::{check, diff_snapshots, fix, snapshot};
    use serde_json::json;

    fn host(dir: &Path) -> Host {
        Host::new(dir).with_var_dir(dir.join("var/lib/tenet"))
    }

    /// §3.y case 19, with the contract checked by hand: the shared helper expects check to be
    /// ok after fix, but this class reads n/a once nothing matches (OpenSVC semantics).
    #[test]
    fn matches_are_removed_then_na() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let tmp = dir.path().join("tmp");
        fs::create_dir_all(tmp.join("foo2/sub")).unwrap();
        fs::write(tmp.join("foo1"), "x").unwrap();
        fs::write(tmp.join("foo2/sub/f"), "x").unwrap();
        fs::write(tmp.join("bar"), "keep").unwrap();
        fs::write(tmp.join(".foo3"), "hidden: not matched by foo*").unwrap();
        // A link to something outside the match: unlinked, its target kept.
        fs::write(dir.path().join("precious"), "keep").unwrap();
        std::os::unix::fs::symlink(dir.path().join("precious"), tmp.join("foo4")).unwrap();
        let rule = json!(["/tmp/foo*", "/tmp/foo*"]);
        assert_eq!(
            (ClassEntry::of::<RemoveFiles>().load)(&rule, &Default::default()).unwrap().len(),
            1
        );

        let before = snapshot(dir.path());
        let (st, log) = check::<RemoveFiles>(&h, rule.clone());
        assert_eq!(st, Status::Nok);
        for name in ["/tmp/foo1", "/tmp/foo2", "/tmp/foo4"] {
            assert!(
                log.iter()
                    .any(|l| l.starts_with(&format!("{name}: exists"))),
                "{log:?}"
            );
        }
        assert!(
            diff_snapshots(&before, &snapshot(dir.path())).is_empty(),
            "check wrote"
        );

        let (st, log) = fix::<RemoveFiles>(&h, rule.clone());
        assert_eq!(st, Status::Ok, "{log:?}");
        assert!(!tmp.join("foo1").exists() && !tmp.join("foo2").exists());
        assert!(fs::symlink_metadata(tmp.join("foo4")).is_err());
        assert!(tmp.join("bar").exists() && tmp.join(".foo3").exists());
        assert_eq!(
            fs::read_to_string(dir.path().join("precious")).unwrap(),
            "keep"
        );

        let (st, log) = check::<RemoveFiles>(&h, rule.clone());
        assert_eq!(st, Status::NotApplicable, "{log:?}");
        assert!(log.iter().any(|l| l.contains("nothing matches")), "{log:?}");

        let settled = snapshot(dir.path());
        let (st, _) = fix::<RemoveFiles>(&h, rule);
        assert_eq!(st, Status::NotApplicable);
        assert!(
            diff_snapshots(&settled, &snapshot(dir.path())).is_empty(),
            "second fix changed things"
        );
    }

    #[test]
    fn dangerous_patterns_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        for d in ["root", "usr/bin", "tmp"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        fs::write(dir.path().join("tmp/x"), "x").unwrap();
        std::os::unix::fs::symlink("usr/bin", dir.path().join("bin")).unwrap();
        let before = snapshot(dir.path());
        for (pattern, needle) in [
            ("/", "root itself"),
            ("//.", "root itself"),
            ("/root", "/root is protected"),
            ("/root/", "/root is protected"),
            ("/*", "top-level"),
            ("/ro?t", "top-level"),
            ("/b*", "top-level"),
            ("/tmp/../tmp/x", "'..'"),
            ("tmp/x", "not absolute"),
        ] {
            let (st, log) = check::<RemoveFiles>(&h, json!(pattern));
            assert_eq!(st, Status::Nok, "{pattern}");
            assert!(log.iter().any(|l| l.contains(needle)), "{pattern}: {log:?}");
            let (st, log) = fix::<RemoveFiles>(&h, json!(pattern));
            assert_eq!(st, Status::Nok, "{pattern}");
            assert!(
                log.iter().any(|l| l.contains("nothing removed")),
                "{pattern}: {log:?}"
            );
        }
        assert!(diff_snapshots(&before, &snapshot(dir.path())).is_empty());
    }

    #[test]
    fn dot_entries_are_never_matches() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        fs::create_dir_all(dir.path().join("tmp/d")).unwrap();
        fs::write(dir.path().join("tmp/d/.hidden"), "x").unwrap();
        let (st, log) = check::<RemoveFiles>(&h, json!("/tmp/d/.*"));
        assert_eq!(st, Status::Nok);
        assert_eq!(
            log,
            ["/tmp/d/.hidden: exists (matches /tmp/d/.*), to be removed"]
        );
        let (st, _) = fix::<RemoveFiles>(&h, json!("/tmp/d/.*"));
        assert_eq!(st, Status::Ok);
        assert!(dir.path().join("tmp/d").is_dir());
    }

    #[test]
    fn top_level_files_and_double_stars() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        fs::write(dir.path().join("stale.pid"), "1").unwrap();
        fs::create_dir_all(dir.path().join("var/a")).unwrap();
        fs::write(dir.path().join("var/a/x.log"), "1").unwrap();
        let (st, _) = fix::<RemoveFiles>(&h, json!(["/*.pid", "/var/**/*.log"]));
        assert_eq!(st, Status::Ok);
        assert!(!dir.path().join("stale.pid").exists());
        assert!(!dir.path().join("var/a/x.log").exists());
        assert!(dir.path().join("var/a").is_dir());
    }

    #[test]
    fn escapes_through_symlinked_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("victim"), "keep").unwrap();
        let root = dir.path().join("root-prefix");
        fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("etc/link")).unwrap();
        let h = host(&root);
        let (st, log) = fix::<RemoveFiles>(&h, json!("/etc/link/*"));
        assert_eq!(st, Status::Nok);
        assert!(
            log.iter().any(|l| l.contains("outside the root prefix")),
            "{log:?}"
        );
        assert!(outside.path().join("victim").exists());
    }

    /// Issue 12 item 4: as with Python's glob, a pattern ending with `/` matches directories
    /// only; `dfile/` used to remove the regular file `dfile`.
    #[test]
    fn trailing_slash_matches_directories_only() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let a = dir.path().join("a");
        fs::create_dir_all(a.join("d1/sub")).unwrap();
        fs::create_dir_all(dir.path().join("b")).unwrap();
        fs::write(a.join("dfile"), "data").unwrap();
        fs::write(dir.path().join("b/y"), "keep").unwrap();
        std::os::unix::fs::symlink("../b", a.join("dsl")).unwrap();
        for pattern in ["/a/dfile/", "/a/dfile/.", "/a/dfile//"] {
            let before = snapshot(dir.path());
            let (st, log) = check::<RemoveFiles>(&h, json!([pattern]));
            assert_eq!(st, Status::NotApplicable, "{pattern}: {log:?}");
            let (st, _) = fix::<RemoveFiles>(&h, json!([pattern]));
            assert_eq!(st, Status::NotApplicable, "{pattern}");
            assert!(diff_snapshots(&before, &snapshot(dir.path())).is_empty(), "{pattern}");
        }
        let (st, log) = check::<RemoveFiles>(&h, json!("/a/*/"));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.starts_with("/a/d1: exists")), "{log:?}");
        assert!(log.iter().any(|l| l.starts_with("/a/dsl: exists")), "{log:?}");
        assert!(!log.iter().any(|l| l.contains("dfile")), "{log:?}");
        let (st, log) = fix::<RemoveFiles>(&h, json!("/a/*/"));
        assert_eq!(st, Status::Ok, "{log:?}");
        assert!(!a.join("d1").exists());
        // The link matched as a directory is unlinked; what it points to is kept.
        assert!(fs::symlink_metadata(a.join("dsl")).is_err());
        assert_eq!(fs::read_to_string(dir.path().join("b/y")).unwrap(), "keep");
        assert_eq!(fs::read_to_string(a.join("dfile")).unwrap(), "data");
    }

    #[test]
    fn non_string_patterns_are_refused_at_load() {
        let err = RemoveFiles::rules(&json!(["/tmp/a", 3])).unwrap_err();
        assert!(err.contains("expected a glob pattern"), "{err}");
        assert!(RemoveFiles::rules(&json!({"path": "/tmp/a"})).is_err());
    }
}

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
//! file, symlink or special file is unlinked (a symlink is never followed), a directory is
//! removed recursively; each is first saved under `<var>/backup/<session>/` (moved there, or
//! copied when the var dir is on another file system). fixable is n/a.
//!
//! Patterns are expanded inside the root prefix: a symlinked directory on the way is followed
//! as the managed system would follow it (an absolute target starts again at the root
//! prefix, `..` stops at it), so no match ever lies outside the root prefix.
//!
//! Safety (OpenSVC declares a blacklist of `/` and `/root` but never applies it). A pattern is
//! refused, nok and nothing removed, when:
//! - it is not absolute, or has a `..` component;
//! - it designates the root itself (`/`, `//`, `/.`) or `/root`;
//! - one of its matches is a top-level entry of the root other than a regular file (so `/*`,
//!   `/us*` or `/ro?t` are refused as soon as they reach `/usr`, `/root` or a top-level link
//!   such as `/bin -> usr/bin`; a top-level regular file may be removed).
//!
//! Other differences from OpenSVC: `**` is the same as `*` (as in Python's non-recursive
//! glob); `.` and `..` are never matches; unreadable directories are skipped silently as
//! Python's glob does. Removed files are backed up (OpenSVC does not).

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
                "{path}: exists (matches {}), to be removed",
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
            match host.path(path).and_then(|p| host.remove(&p)) {
                Ok(_) => log.info(format!(
                    "{path}: removed (saved under {})",
                    host.var_dir().join("backup").join(host.session()).display()
                )),
                Err(e) => {
                    log.err(format!("{path}: cannot remove: {e}"));
                    status = Status::Nok;
                }
            }
        }
        status
    }
}

/// What a pattern matches under a root prefix.
struct Matches {
    /// The matches (paths of the managed system), sorted.
    paths: Vec<String>,
}

impl Matches {
    /// Expands `pattern` under the host's root, refusing dangerous patterns and matches.
    fn find(pattern: &str, host: &HostView) -> Result<Matches, String> {
        let pattern = normalize(pattern)?;
        let paths = host.glob(&pattern).map_err(|e| e.to_string())?;
        for path in &paths {
            refuse_unsafe(host, path)?;
        }
        Ok(Matches { paths })
    }
}

/// Refuses the root itself and top-level entries that are not regular files.
fn refuse_unsafe(host: &HostView, shown: &str) -> Result<(), String> {
    let depth = shown.split('/').filter(|s| !s.is_empty()).count();
    let refuse = |why: &str| {
        Err(format!(
            "matches {shown}, {why}; refusing the whole pattern"
        ))
    };
    if depth == 0 {
        return refuse("the root itself");
    }
    if depth == 1 {
        let is_file = host
            .path(shown)
            .and_then(|p| host.metadata(&p))
            .is_ok_and(|m| m.is_some_and(|m| m.file_type().is_file()));
        if !is_file {
            return refuse("a top-level directory or link");
        }
    }
    Ok(())
}

/// Checks a pattern and rewrites it without empty or `.` components and with `**` as `*`.
fn normalize(pattern: &str) -> Result<String, String> {
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class::ClassEntry;
    use crate::testing::{check, diff_snapshots, fix, snapshot};
    use serde_json::json;
    use std::fs;
    use std::path::Path;

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
    fn symlinked_directories_are_followed_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("victim"), "keep").unwrap();
        let root = dir.path().join("root-prefix");
        fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("etc/link")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("etc/up")).unwrap();
        let h = host(&root);
        // The absolute target is taken under the root prefix, where nothing matches.
        for pattern in ["/etc/link/*", "/etc/link/victim", "/etc/up/victim"] {
            let (st, log) = fix::<RemoveFiles>(&h, json!(pattern));
            assert_eq!(st, Status::NotApplicable, "{pattern}: {log:?}");
        }
        assert!(outside.path().join("victim").exists());
        // Where the target exists under the root prefix, that is what goes.
        let inside = root.join(outside.path().strip_prefix("/").unwrap());
        fs::create_dir_all(&inside).unwrap();
        fs::write(inside.join("victim"), "in the root").unwrap();
        fs::write(root.join("victim2"), "in the root").unwrap();
        let (st, log) = fix::<RemoveFiles>(&h, json!(["/etc/link/vic*", "/etc/up/victim2"]));
        assert_eq!(st, Status::Ok, "{log:?}");
        assert!(!inside.join("victim").exists() && !root.join("victim2").exists());
        assert_eq!(
            fs::read_to_string(outside.path().join("victim")).unwrap(),
            "keep"
        );
        // Both are saved, under the path the pattern matched.
        let saved = root.join("var/lib/tenet/backup").join(h.session());
        assert_eq!(
            fs::read_to_string(saved.join("etc/link/victim")).unwrap(),
            "in the root"
        );
        assert_eq!(
            fs::read_to_string(saved.join("etc/up/victim2")).unwrap(),
            "in the root"
        );
    }

    #[test]
    fn non_string_patterns_are_refused_at_load() {
        let err = RemoveFiles::rules(&json!(["/tmp/a", 3])).unwrap_err();
        assert!(err.contains("expected a glob pattern"), "{err}");
        assert!(RemoveFiles::rules(&json!({"path": "/tmp/a"})).is_err());
    }
}

//! The `fileprop` class: a file or directory exists, with a mode and an owner; its content is
//! not managed.
//!
//! OpenSVC name `fileprop` (object script `fileprop.py`). A rule is
//! `{"path": "/var/log/app/", "mode": 750, "uid": "app", "gid": "app"}`; a path ending with
//! `/` is a directory. check looks at existence and type, then mode, uid and gid; fix creates
//! a missing directory (with its parents) or an empty file, then changes only the attributes
//! that differ. fixable is n/a, as in OpenSVC.
//!
//! `mode`, `uid` and `gid` are read as by the `file` class (octal digits as a number or a
//! string; ids or names from the managed system's `etc/passwd` and `etc/group`).
//!
//! Differences from OpenSVC (each a row of `docs/opensvc-compat.md`, with the reason):
//! - A regular file where a directory is wanted is nok and left alone (OpenSVC deletes it and
//!   creates the directory): fix never deletes data. A directory where a file is wanted is nok
//!   as in OpenSVC; so is a symlink or a special file, which is neither followed nor replaced.
//! - The mode is compared numerically (OpenSVC's Python 3 version compares `o644` with `644`
//!   and always reports a difference).
//! - A malformed `mode`, `uid` or `gid` is refused when the rule is loaded; an unknown user or
//!   group is nok at check time.

use serde::Deserialize;

use super::common::{Attrs, Mode, Owner, de_gid, de_uid, target, through_link, wrong_kind};
use crate::class::Class;
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// One `fileprop` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePropRule {
    /// Absolute path in the managed system; a trailing `/` makes it a directory.
    pub path: String,
    /// Permission bits, octal (`644`, `"0644"`, `"0o644"`); unset leaves them alone.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Owner, a user id or name; unset leaves it alone.
    #[serde(default, deserialize_with = "de_uid")]
    pub uid: Option<Owner>,
    /// Group, a group id or name; unset leaves it alone.
    #[serde(default, deserialize_with = "de_gid")]
    pub gid: Option<Owner>,
}

/// The `fileprop` class.
#[derive(Debug)]
pub struct FileProp;

impl Class for FileProp {
    type Rule = FilePropRule;

    const NAME: &'static str = "fileprop";
    const ALIASES: &'static [&'static str] = &["fileprop.py"];
    const DESCRIPTION: &'static str =
        "a file or directory (path ending with /) exists with a mode and owner; content unmanaged";
    const STAGED_WRITES: bool = true;

    fn describe(rule: &FilePropRule) -> String {
        rule.path.clone()
    }

    fn check(rule: &FilePropRule, host: &HostView, log: &mut Log) -> Status {
        match check_props(rule, host, log) {
            Ok(true) => {
                log.info(format!("{}: ok", rule.path));
                Status::Ok
            }
            Ok(false) => Status::Nok,
            Err(msg) => {
                log.err(format!("{}: {msg}", rule.path));
                Status::Nok
            }
        }
    }

    fn fix(rule: &FilePropRule, host: &Host, log: &mut Log) -> Status {
        match fix_props(rule, host, log) {
            Ok(()) => Status::Ok,
            Err(msg) => {
                log.err(format!("{}: {msg}", rule.path));
                Status::Nok
            }
        }
    }
}

/// Logs what differs; `Ok(true)` when nothing does, `Err` for a rule that cannot apply or a
/// path of the wrong kind.
fn check_props(rule: &FilePropRule, host: &HostView, log: &mut Log) -> Result<bool, String> {
    let (real, dir) = target(host, &rule.path)?;
    let attrs = Attrs::resolve(host, rule.mode, rule.uid.as_ref(), rule.gid.as_ref())?;
    let Some(meta) = host.metadata(&real).map_err(|e| e.to_string())? else {
        let what = if dir { "directory" } else { "file" };
        return Err(format!(
            "missing (expected a {what}){}",
            through_link(host, &real)
        ));
    };
    if let Some(msg) = wrong_kind(&meta, dir) {
        return Err(msg);
    }
    Ok(attrs.check(&rule.path, &meta, log))
}

/// Creates the path when missing, then sets the attributes that differ.
fn fix_props(rule: &FilePropRule, host: &Host, log: &mut Log) -> Result<(), String> {
    let (real, dir) = target(host, &rule.path)?;
    let attrs = Attrs::resolve(host, rule.mode, rule.uid.as_ref(), rule.gid.as_ref())?;
    match host.metadata(&real).map_err(|e| e.to_string())? {
        Some(meta) => {
            if let Some(msg) = wrong_kind(&meta, dir) {
                return Err(format!("{msg}; refusing to replace it"));
            }
        }
        None if dir => {
            host.create_dir_all(&real).map_err(|e| e.to_string())?;
            log.info(format!("{}: directory created", rule.path));
        }
        None => {
            host.write_atomic(&real, b"", attrs.mode, Some((attrs.uid, attrs.gid)))
                .map_err(|e| e.to_string())?;
            log.info(format!("{}: empty file created", rule.path));
        }
    }
    let meta = host
        .metadata(&real)
        .map_err(|e| e.to_string())?
        .ok_or("vanished while being fixed")?;
    attrs.fix(host, &real, &rule.path, &meta, log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_class_contract, check, fix};
    use serde_json::json;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    fn host(dir: &Path) -> Host {
        Host::new(dir).with_var_dir(dir.join("var/lib/tenet"))
    }

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn missing_file_is_created_empty() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let log = assert_class_contract::<FileProp>(
            &h,
            &[dir.path()],
            json!({"path": "/var/log/app.log", "mode": 600}),
        );
        assert!(
            log.iter().any(|l| l.contains("missing (expected a file)")),
            "{log:?}"
        );
        let p = dir.path().join("var/log/app.log");
        assert_eq!(fs::read(&p).unwrap(), b"");
        assert_eq!(mode_of(&p), 0o600);
    }

    #[test]
    fn missing_directory_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        assert_class_contract::<FileProp>(
            &h,
            &[dir.path()],
            json!({"path": "/srv/a/b/", "mode": "0o711"}),
        );
        let p = dir.path().join("srv/a/b");
        assert!(p.is_dir());
        assert_eq!(mode_of(&p), 0o711);
    }

    /// OpenSVC's Python 3 fileprop always found the mode different; here an equal mode is ok.
    #[test]
    fn mode_is_compared_numerically_and_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let p = dir.path().join("f");
        fs::write(&p, "data").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let (st, _) = check::<FileProp>(&h, json!({"path": "/f", "mode": 644}));
        assert_eq!(st, Status::Ok);
        let log = assert_class_contract::<FileProp>(
            &h,
            &[dir.path()],
            json!({"path": "/f", "mode": "0640"}),
        );
        assert!(
            log.iter()
                .any(|l| l.contains("mode is 0644, expected 0640")),
            "{log:?}"
        );
        assert_eq!(mode_of(&p), 0o640);
        assert_eq!(fs::read(&p).unwrap(), b"data", "content untouched");
    }

    #[test]
    fn wrong_kinds_are_refused_without_deleting() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        fs::write(dir.path().join("file"), "keep").unwrap();
        fs::create_dir(dir.path().join("dir")).unwrap();
        for (path, needle) in [
            ("/file/", "is a regular file, expected a directory"),
            ("/dir", "is a directory, expected a regular file"),
        ] {
            let rule = json!({"path": path, "mode": 700});
            let (st, log) = check::<FileProp>(&h, rule.clone());
            assert_eq!(st, Status::Nok);
            assert!(log.iter().any(|l| l.contains(needle)), "{log:?}");
            let (st, log) = fix::<FileProp>(&h, rule);
            assert_eq!(st, Status::Nok);
            assert!(
                log.iter().any(|l| l.contains("refusing to replace it")),
                "{log:?}"
            );
        }
        assert_eq!(fs::read(dir.path().join("file")).unwrap(), b"keep");
        assert!(dir.path().join("dir").is_dir());
    }

    #[test]
    fn owner_by_name_and_unknown_names() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "bob:x:2001:2001::/home/bob:/bin/sh\n",
        )
        .unwrap();
        fs::write(dir.path().join("etc/group"), "bob:x:2002:\n").unwrap();

        let (st, log) = check::<FileProp>(&h, json!({"path": "/etc/", "gid": "nosuchgroup"}));
        assert_eq!(st, Status::Nok);
        assert!(
            log.iter()
                .any(|l| l.contains("gid") && l.contains("nosuchgroup")),
            "{log:?}"
        );

        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: chown needs root");
            return;
        }
        let p = dir.path().join("srv/data");
        fs::create_dir_all(&p).unwrap();
        assert_class_contract::<FileProp>(
            &h,
            &[dir.path()],
            json!({"path": "/srv/data/", "uid": "bob", "gid": "bob"}),
        );
        let m = fs::metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid()), (2001, 2002));
    }

    #[test]
    fn bad_values_are_refused_at_load() {
        for (rule, needle) in [
            (json!({"path": "/a", "mode": "rwx"}), "mode"),
            (json!({"path": "/a", "mode": 888}), "mode"),
            (json!({"path": "/a", "uid": [1]}), "uid"),
            (json!({"path": "/a", "fmt": "x"}), "unknown field `fmt`"),
        ] {
            let err = FileProp::rules(&rule).unwrap_err();
            assert!(err.contains(needle), "{rule}: {err}");
        }
    }
}

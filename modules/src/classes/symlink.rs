//! The `symlink` class: a symbolic link exists and points to a given target.
//!
//! OpenSVC name `symlink` (object script `symlink.py`). A rule is
//! `{"symlink": "/etc/localtime", "target": "/usr/share/zoneinfo/UTC"}`. The link path is a
//! path of the managed system (under the root prefix); the target is the link's content,
//! written as given (absolute or relative, never prefixed) and compared byte for byte.
//!
//! check: the path is a symlink whose content is exactly the target. fix creates the missing
//! parent directories, then puts the link in place atomically: a temporary link is made in
//! the same directory and renamed over the path, so the path never goes missing. fixable is
//! n/a, as in OpenSVC.
//!
//! Differences from OpenSVC (each a row of `docs/opensvc-compat.md`, with the reason):
//! - A symlink with a wrong target is replaced (OpenSVC only creates missing links).
//! - A link path ending with `/` is nok, nothing created (OpenSVC creates a directory there,
//!   then fails to link).
//!
//! As in OpenSVC, a regular file, directory or special file at the link path is nok, and fix
//! refuses to replace it.

use std::ffi::OsStr;

use serde::Deserialize;

use super::common::kind;
use crate::class::Class;
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// One `symlink` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymlinkRule {
    /// Absolute path of the link in the managed system.
    pub symlink: String,
    /// What the link points to, written into it as is (not root-prefixed).
    pub target: String,
}

/// The `symlink` class.
#[derive(Debug)]
pub struct Symlink;

/// What is at a link path today.
enum Current {
    /// Nothing.
    Missing,
    /// A symlink with this content.
    Link(std::path::PathBuf),
}

impl Class for Symlink {
    type Rule = SymlinkRule;

    const NAME: &'static str = "symlink";
    const ALIASES: &'static [&'static str] = &["symlinks", "symlink.py"];
    const DESCRIPTION: &'static str = "a symbolic link exists with a given target";

    fn describe(rule: &SymlinkRule) -> String {
        format!("{} -> {}", rule.symlink, rule.target)
    }

    fn check(rule: &SymlinkRule, host: &HostView, log: &mut Log) -> Status {
        let current = match inspect(rule, host) {
            Ok(current) => current,
            Err(msg) => {
                log.err(format!("{}: {msg}", rule.symlink));
                return Status::Nok;
            }
        };
        match current {
            Current::Link(t) if t.as_os_str() == OsStr::new(&rule.target) => {
                log.info(format!("{} -> {}: ok", rule.symlink, rule.target));
                Status::Ok
            }
            Current::Link(t) => {
                log.err(format!(
                    "{}: points to {}, expected {}",
                    rule.symlink,
                    t.display(),
                    rule.target
                ));
                Status::Nok
            }
            Current::Missing => {
                let why = host
                    .path(&rule.symlink)
                    .ok()
                    .and_then(|p| host.dangling_link(&p))
                    .map(|why| format!(": {why}"))
                    .unwrap_or_default();
                log.err(format!(
                    "{}: missing (expected a symlink to {}){why}",
                    rule.symlink, rule.target
                ));
                Status::Nok
            }
        }
    }

    fn fix(rule: &SymlinkRule, host: &Host, log: &mut Log) -> Status {
        let current = match inspect(rule, host) {
            Ok(current) => current,
            Err(msg) => {
                log.err(format!("{}: {msg}; refusing to replace it", rule.symlink));
                return Status::Nok;
            }
        };
        let real = match host.path(&rule.symlink) {
            Ok(real) => real,
            Err(e) => {
                log.err(format!("{}: {e}", rule.symlink));
                return Status::Nok;
            }
        };
        if let Err(e) = host.symlink(&real, &rule.target) {
            log.err(format!(
                "{}: cannot link to {}: {e}",
                rule.symlink, rule.target
            ));
            return Status::Nok;
        }
        match current {
            Current::Missing => log.info(format!("{} -> {}: created", rule.symlink, rule.target)),
            Current::Link(old) => log.info(format!(
                "{} -> {}: replaced (was -> {})",
                rule.symlink,
                rule.target,
                old.display()
            )),
        }
        Status::Ok
    }
}

/// What is at the rule's link path; `Err` for a bad rule or something that is not a symlink.
fn inspect(rule: &SymlinkRule, host: &HostView) -> Result<Current, String> {
    if rule.target.is_empty() {
        return Err("target: empty (a symlink needs a target)".into());
    }
    if rule.symlink.ends_with('/') {
        // OpenSVC would make a directory there and then fail to link.
        return Err("symlink: a link path cannot end with '/' (that names a directory)".into());
    }
    let real = host.path(&rule.symlink).map_err(|e| e.to_string())?;
    match host.metadata(&real).map_err(|e| e.to_string())? {
        None => Ok(Current::Missing),
        Some(meta) if meta.file_type().is_symlink() => match host.read_link(&real) {
            Ok(Some(t)) => Ok(Current::Link(t)),
            Ok(None) => Ok(Current::Missing),
            Err(e) => Err(format!("cannot read the link: {e}")),
        },
        Some(meta) => Err(format!("is {}, not a symlink", kind(&meta))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_class_contract, check, fix};
    use serde_json::json;
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    fn host(dir: &Path) -> Host {
        Host::new(dir).with_var_dir(dir.join("var/lib/tenet"))
    }

    /// §3.y case 18: a missing link is created, parents too.
    #[test]
    fn missing_link_is_created_with_parents() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let log = assert_class_contract::<Symlink>(
            &h,
            &[dir.path()],
            json!({"symlink": "/opt/app/current", "target": "/opt/app/releases/1.2"}),
        );
        assert!(log.iter().any(|l| l.contains("missing")), "{log:?}");
        let link = dir.path().join("opt/app/current");
        assert_eq!(
            fs::read_link(link).unwrap(),
            Path::new("/opt/app/releases/1.2")
        );
    }

    #[test]
    fn wrong_target_is_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let link = dir.path().join("current");
        std::os::unix::fs::symlink("releases/1", &link).unwrap();
        let log = assert_class_contract::<Symlink>(
            &h,
            &[dir.path()],
            json!({"symlink": "/current", "target": "releases/2"}),
        );
        assert!(
            log.iter()
                .any(|l| l.contains("points to releases/1, expected releases/2")),
            "{log:?}"
        );
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("releases/2"));
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("tenet"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn files_and_directories_are_not_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        fs::write(dir.path().join("file"), "keep").unwrap();
        fs::create_dir(dir.path().join("dir")).unwrap();
        let ino = fs::metadata(dir.path().join("file")).unwrap().ino();
        for path in ["/file", "/dir"] {
            let rule = json!({"symlink": path, "target": "/x"});
            let (st, log) = check::<Symlink>(&h, rule.clone());
            assert_eq!(st, Status::Nok);
            assert!(log.iter().any(|l| l.contains("not a symlink")), "{log:?}");
            let (st, log) = fix::<Symlink>(&h, rule);
            assert_eq!(st, Status::Nok);
            assert!(
                log.iter().any(|l| l.contains("refusing to replace it")),
                "{log:?}"
            );
        }
        assert_eq!(fs::metadata(dir.path().join("file")).unwrap().ino(), ino);
        assert!(dir.path().join("dir").is_dir());
    }

    #[test]
    fn bad_rules() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let (st, log) = check::<Symlink>(&h, json!({"symlink": "/l", "target": ""}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("target")), "{log:?}");
        let (st, log) = check::<Symlink>(&h, json!({"symlink": "l", "target": "/x"}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("not absolute")), "{log:?}");
        let err = Symlink::rules(&json!({"symlink": "/l"})).unwrap_err();
        assert!(err.contains("missing field `target`"), "{err}");
        let err = Symlink::rules(&json!({"symlink": "/l", "target": "/x", "foo": 1})).unwrap_err();
        assert!(err.contains("unknown field `foo`"), "{err}");
    }
}

//! `sysfs`: one value of a kernel attribute file under `/sys`.
//!
//! OpenSVC name `sysfs` (object script `sysfs.py`). A rule `{"path":
//! "/sys/kernel/mm/transparent_hugepage/enabled", "value": "never"}` asks that the attribute's
//! current value be `value`. Files that list choices with the current one in brackets
//! (`always madvise [never]`, the block `scheduler`) are understood: the current value is the
//! bracketed token; a file without brackets is its trimmed content (which is also what a
//! plain file of a test root holds after a fix, since only the kernel rewrites the brackets).
//!
//! fix writes the value with one plain write (no temporary file: sysfs attributes are not
//! regular files), then re-checks, so a value the kernel refuses or ignores is reported.
//! The setting is not persisted across reboots (a boot parameter or a unit does that).
//!
//! Differences from OpenSVC: the path must be absolute and under `/sys` (refused at parse
//! time otherwise); it is taken under the host's root prefix.

use std::path::{Component, Path};

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::class::Class;
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// One sysfs rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysfsRule {
    /// The attribute file: an absolute path under `/sys`, without `..`.
    #[serde(deserialize_with = "de_path")]
    pub path: String,
    /// The wanted value (a string; numbers and booleans are taken as their text).
    #[serde(deserialize_with = "de_value")]
    pub value: String,
}

/// The `sysfs` class.
pub struct Sysfs;

impl Class for Sysfs {
    type Rule = SysfsRule;
    const NAME: &'static str = "sysfs";
    const ALIASES: &'static [&'static str] = &["sysfs.py"];
    const DESCRIPTION: &'static str =
        "kernel attributes under /sys (bracketed selections such as transparent_hugepage)";
    const STAGED_WRITES: bool = true;

    fn describe(rule: &SysfsRule) -> String {
        format!("{} = {}", rule.path, rule.value)
    }

    fn check(rule: &SysfsRule, host: &HostView, log: &mut Log) -> Status {
        match current(rule, host) {
            Err(e) => {
                log.err(e);
                Status::Nok
            }
            Ok(cur) if cur == rule.value => {
                log.info(format!("sysfs {}: {cur}, ok", rule.path));
                Status::Ok
            }
            Ok(cur) => {
                log.err(format!(
                    "sysfs {}: current value {cur:?}, expected {:?}",
                    rule.path, rule.value
                ));
                Status::Nok
            }
        }
    }

    fn fixable(rule: &SysfsRule, host: &HostView, log: &mut Log) -> Status {
        match current(rule, host) {
            Err(e) => {
                log.err(e);
                Status::Nok
            }
            Ok(_) => Status::Ok,
        }
    }

    fn fix(rule: &SysfsRule, host: &Host, log: &mut Log) -> Status {
        let real = match host.path(&rule.path) {
            Ok(p) => p,
            Err(e) => {
                log.err(format!("sysfs {}: {e}", rule.path));
                return Status::Nok;
            }
        };
        let before = current(rule, host).unwrap_or_default();
        if let Err(e) = host.write_kernel_file(&real, &rule.value) {
            log.err(format!(
                "sysfs {}: cannot write {:?}: {e}",
                rule.path, rule.value
            ));
            return Status::Nok;
        }
        match current(rule, host) {
            Ok(cur) if cur == rule.value => {
                log.info(format!(
                    "sysfs {}: set to {:?} (was {before:?})",
                    rule.path, rule.value
                ));
                Status::Ok
            }
            Ok(cur) => {
                log.err(format!(
                    "sysfs {}: wrote {:?} but the value is now {cur:?}",
                    rule.path, rule.value
                ));
                Status::Nok
            }
            Err(e) => {
                log.err(e);
                Status::Nok
            }
        }
    }
}

fn de_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::Error;
    let v = Value::deserialize(d)?;
    let Value::String(s) = &v else {
        return Err(D::Error::custom(format!(
            "path: expected a string, found {v}"
        )));
    };
    let p = Path::new(s.as_str());
    if !p.starts_with("/sys") || p == Path::new("/sys") {
        return Err(D::Error::custom(format!(
            "path: {s:?} is not an absolute path under /sys"
        )));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(D::Error::custom(format!("path: {s:?} contains '..'")));
    }
    Ok(s.clone())
}

fn de_value<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::Error;
    let v = Value::deserialize(d)?;
    match &v {
        Value::String(s) => Ok(s.trim().to_string()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(D::Error::custom(format!(
            "value: expected a string or a number, found {v}"
        ))),
    }
}

/// The current value: the bracketed token if any, else the trimmed content.
fn current(rule: &SysfsRule, host: &HostView) -> Result<String, String> {
    let real = host
        .path(&rule.path)
        .map_err(|e| format!("sysfs {}: {e}", rule.path))?;
    match host.read_to_string(&real) {
        Ok(Some(text)) => Ok(selected(&text)),
        Ok(None) => Err(format!(
            "sysfs {}: no such attribute ({} does not exist)",
            rule.path,
            real.real().display()
        )),
        Err(e) => Err(format!("sysfs {}: cannot read: {e}", rule.path)),
    }
}

/// `always madvise [never]` → `never`; `42\n` → `42`.
fn selected(text: &str) -> String {
    text.split_whitespace()
        .find_map(|t| t.strip_prefix('[').and_then(|t| t.strip_suffix(']')))
        .unwrap_or(text.trim())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_class_contract, check};
    use serde_json::json;
    use std::fs;

    const THP: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

    fn setup(content: &str) -> (tempfile::TempDir, Host) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(THP.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        let h = Host::new(d.path()).with_var_dir(d.path().join("var/lib/tenet"));
        (d, h)
    }

    #[test]
    fn bracketed_selection_is_the_current_value() {
        let (_d, h) = setup("always madvise [never]\n");
        let (st, log) = check::<Sysfs>(&h, json!({"path": THP, "value": "never"}));
        assert_eq!(st, Status::Ok, "{log:?}");
        let (st, log) = check::<Sysfs>(&h, json!({"path": THP, "value": "madvise"}));
        assert_eq!(st, Status::Nok);
        assert!(
            log[0].contains("current value \"never\", expected \"madvise\""),
            "{log:?}"
        );
        assert_eq!(selected("[none] mq-deadline kyber\n"), "none");
        assert_eq!(selected(" 42 \n"), "42");
    }

    #[test]
    fn fix_writes_the_value() {
        let (d, h) = setup("[always] madvise never\n");
        let (st, _) = check::<Sysfs>(&h, json!({"path": THP, "value": "never"}));
        assert_eq!(st, Status::Nok);
        let log =
            assert_class_contract::<Sysfs>(&h, &[d.path()], json!({"path": THP, "value": "never"}));
        assert!(log[0].contains("current value \"always\""), "{log:?}");
        assert_eq!(
            fs::read_to_string(d.path().join(THP.trim_start_matches('/'))).unwrap(),
            "never"
        );
    }

    #[test]
    fn numbers_and_plain_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sys/block/sda/queue/nr_requests");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, "64\n").unwrap();
        let h = Host::new(d.path()).with_var_dir(d.path().join("var/lib/tenet"));
        assert_class_contract::<Sysfs>(
            &h,
            &[d.path()],
            json!([{"path": "/sys/block/sda/queue/nr_requests", "value": 256}]),
        );
        assert_eq!(fs::read_to_string(&p).unwrap(), "256");
    }

    #[test]
    fn missing_attribute_is_nok() {
        let (_d, h) = setup("[never]");
        let (st, log) = check::<Sysfs>(&h, json!({"path": "/sys/nosuch", "value": "1"}));
        assert_eq!(st, Status::Nok);
        assert!(log[0].contains("does not exist"), "{log:?}");
        let (st, _) =
            crate::testing::fix::<Sysfs>(&h, json!({"path": "/sys/nosuch", "value": "1"}));
        assert_eq!(st, Status::Nok);
    }

    #[test]
    fn paths_outside_sys_are_refused() {
        for (rule, field) in [
            (json!({"path": "/etc/passwd", "value": "x"}), "path"),
            (json!({"path": "/sysfoo/x", "value": "x"}), "path"),
            (json!({"path": "sys/kernel/x", "value": "x"}), "path"),
            (json!({"path": "/sys/../etc/passwd", "value": "x"}), "path"),
            (json!({"path": "/sys", "value": "x"}), "path"),
            (json!({"path": "/sys/x", "value": [1]}), "value"),
            (json!({"path": "/sys/x"}), "value"),
            (json!({"path": "/sys/x", "value": "1", "op": "="}), "op"),
        ] {
            let err = Sysfs::rules(&rule).expect_err(&rule.to_string());
            assert!(err.contains(field), "{rule}: {err}");
        }
    }
}

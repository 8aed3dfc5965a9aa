//! The `sudoers` class: a sudoers file has a given content, checked by `visudo` before it is
//! written.
//!
//! OpenSVC name `sudoers` (object script `sudoers.py`, a `file` object whose content is first
//! checked with `visudo -c`). A rule is `{"path": "/etc/sudoers.d/ops", "fmt": "%ops ALL=(ALL)
//! ALL", "mode": 440, "uid": 0, "gid": 0}`; a list holds one rule per file.
//!
//! The content is `fmt` with `%%HOSTNAME%%` and `%%SHORT_HOSTNAME%%` replaced by the node
//! name and a final newline added, as for `file`. check: `visudo -c -f` accepts that content
//! (run on a private scratch copy on the machine Tenet runs on), the file is a regular file
//! with it, and it has the rule's mode and owner, or, where the rule says nothing, what sudo
//! requires of a sudoers file (owned by root, not writable by others). fix refuses content
//! visudo rejects (the file is left as it is, the rule nok with visudo's message); otherwise
//! it writes the file atomically (the old one backed up), a new file 0440 root:root unless the
//! rule says otherwise, then sets mode and owner.
//!
//! Differences from OpenSVC are rows of `docs/opensvc-compat.md` (`#sudoers-*`).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::Value;

use super::common::{self, Attrs, Mode, Owner, de_gid, de_uid, report_difference};
use crate::class::{Class, parse_rule};
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// One `sudoers` rule: one file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SudoersRule {
    /// Absolute path of the file in the managed system.
    pub path: String,
    /// The content, as text (an integer is written as its digits, as OpenSVC does).
    #[serde(deserialize_with = "de_text")]
    pub fmt: String,
    /// Permission bits, octal; a new file gets 0440. Bits for others to write are refused:
    /// sudo ignores such a file.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Owner, a user id or name; a new file gets root.
    #[serde(default, deserialize_with = "de_uid")]
    pub uid: Option<Owner>,
    /// Group, a group id or name; a new file gets root's group.
    #[serde(default, deserialize_with = "de_gid")]
    pub gid: Option<Owner>,
}

fn de_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        other => Err(de::Error::custom(format!(
            "invalid value {other}: expected the file's content as text"
        ))),
    }
}

/// The `sudoers` class.
#[derive(Debug)]
pub struct Sudoers;

impl Class for Sudoers {
    type Rule = SudoersRule;

    const NAME: &'static str = "sudoers";
    const ALIASES: &'static [&'static str] = &["sudoers.py"];
    const DESCRIPTION: &'static str = "a sudoers file with a given content, validated by visudo";
    // visudo reads a scratch copy, never the managed file: staged writes are seen through the
    // host's reads.
    const STAGED_WRITES: bool = true;

    fn rules(value: &Value) -> Result<Vec<SudoersRule>, String> {
        let one = |v: &Value| {
            let rule = parse_rule::<SudoersRule>(v)?;
            if !rule.path.starts_with('/') || rule.path.ends_with('/') {
                return Err(format!(
                    "path: {:?} is not the absolute path of a file",
                    rule.path
                ));
            }
            if let Some(Mode(m)) = rule.mode
                && m & 0o002 != 0
            {
                return Err(format!(
                    "mode: {m:04o} lets others write the file, and sudo ignores such a file"
                ));
            }
            Ok(rule)
        };
        match value {
            Value::Array(items) => items.iter().map(one).collect(),
            other => Ok(vec![one(other)?]),
        }
    }

    fn describe(rule: &SudoersRule) -> String {
        rule.path.clone()
    }

    fn check(rule: &SudoersRule, host: &HostView, log: &mut Log) -> Status {
        match state(rule, host, log) {
            Ok(s) if s.ok() => {
                log.info(format!("{}: ok", rule.path));
                Status::Ok
            }
            Ok(s) => {
                s.report(rule, log);
                Status::Nok
            }
            Err(e) => {
                log.err(format!("{}: {e}", rule.path));
                Status::Nok
            }
        }
    }

    fn fix(rule: &SudoersRule, host: &Host, log: &mut Log) -> Status {
        match fix(rule, host, log) {
            Ok(()) => Status::Ok,
            Err(e) => {
                log.err(format!("{}: {e}", rule.path));
                Status::Nok
            }
        }
    }
}

/// What check found.
struct State {
    content: Vec<u8>,
    /// The file's content and metadata (`None`: missing).
    have: Option<(Vec<u8>, std::fs::Metadata)>,
    /// visudo's complaint about the content, if any.
    invalid: Option<String>,
    attrs: Attrs,
}

impl State {
    fn ok(&self) -> bool {
        self.invalid.is_none()
            && match &self.have {
                None => false,
                Some((bytes, meta)) => {
                    *bytes == self.content
                        && self.attrs.check("", meta, &mut Log::quiet())
                }
            }
    }

    fn report(&self, rule: &SudoersRule, log: &mut Log) {
        let shown = &rule.path;
        if let Some(why) = &self.invalid {
            log.err(format!(
                "{shown}: the rule's content is not valid sudoers (visudo -c): {why}"
            ));
        }
        match &self.have {
            None => log.err(format!("{shown}: missing")),
            Some((bytes, meta)) => {
                if *bytes != self.content {
                    report_difference(shown, bytes, &self.content, log);
                }
                self.attrs.check(shown, meta, log);
            }
        }
    }
}

fn state(rule: &SudoersRule, host: &HostView, log: &mut Log) -> Result<State, String> {
    let content = common::expand_fmt(&rule.fmt, host.hostname()).into_bytes();
    let invalid = visudo(host, &content, &rule.path)?.err();
    let path = host.path(&rule.path).map_err(|e| e.to_string())?;
    let have = match host.metadata(&path).map_err(|e| e.to_string())? {
        None => {
            let why = common::through_link(host, &path);
            if !why.is_empty() {
                log.err(format!("{}: missing{why}", rule.path));
            }
            None
        }
        Some(m) if !m.is_file() => {
            return Err(format!(
                "is {}, expected a regular file; not replacing it",
                common::kind(&m)
            ));
        }
        Some(m) => {
            let bytes = host
                .read(&path)
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            Some((bytes, m))
        }
    };
    let mut attrs = Attrs::resolve(host, rule.mode, rule.uid.as_ref(), rule.gid.as_ref())?;
    // What sudo itself requires, where the rule says nothing: owned by root, not writable by
    // others. An existing file that meets it keeps its mode and group.
    if let Some((_, m)) = &have {
        if attrs.uid.is_none() && m.uid() != 0 {
            attrs.uid = Some(0);
        }
        if attrs.mode.is_none() && m.mode() & 0o002 != 0 {
            attrs.mode = Some(m.mode() & 0o7777 & !0o002);
        }
    }
    Ok(State {
        content,
        have,
        invalid,
        attrs,
    })
}

fn fix(rule: &SudoersRule, host: &Host, log: &mut Log) -> Result<(), String> {
    let s = state(rule, host, log)?;
    if let Some(why) = s.invalid {
        return Err(format!(
            "the rule's content is not valid sudoers (visudo -c): {why}; the file is left as it is"
        ));
    }
    let path = host.path(&rule.path).map_err(|e| e.to_string())?;
    match &s.have {
        Some((bytes, meta)) if *bytes == s.content => {
            s.attrs.fix(host, &path, &rule.path, meta, log)?;
        }
        have => {
            let created = have.is_none();
            let mode = s.attrs.mode.or(created.then_some(0o440));
            let uid = s.attrs.uid.or(created.then_some(0));
            let gid = s.attrs.gid.or(created.then_some(0));
            let written = host
                .write_atomic(&path, &s.content, mode, Some((uid, gid)))
                .map_err(|e| e.to_string())?;
            if let Some(note) = written.hard_link_note(&rule.path) {
                log.info(note);
            }
            log.info(format!(
                "{}: {}",
                rule.path,
                if created { "created" } else { "content replaced" }
            ));
        }
    }
    Ok(())
}

/// `visudo` of the machine Tenet runs on.
fn visudo_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]);
    crate::host::find_program("visudo", dirs)
}

/// Runs `visudo -c -f` on `content`: `Ok(Err(why))` when visudo rejects it (its message, the
/// scratch file's name replaced by `shown`), `Err` when visudo cannot be run.
fn visudo(host: &HostView, content: &[u8], shown: &str) -> Result<Result<(), String>, String> {
    let bin = visudo_binary().ok_or(
        "visudo not found (package sudo): the content cannot be validated, so it is not \
         written",
    )?;
    let scratch = host
        .scratch_file("tenet-sudoers", content)
        .map_err(|e| e.to_string())?;
    let out = host
        .run_query(Command::new(&bin).arg("-c").arg("-f").arg(scratch.path()))
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(Ok(()));
    }
    let tmp = scratch.path().display().to_string();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let why: Vec<String> = text
        .lines()
        .map(|l| l.replace(&tmp, shown))
        .filter(|l| !l.trim().is_empty())
        .collect();
    Ok(Err(why.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_class_contract, check, fix};
    use serde_json::json;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn root() -> (tempfile::TempDir, Host) {
        // Fails at once, naming the package, when visudo is missing.
        tenet_release::testing::tool("visudo");
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc/sudoers.d")).unwrap();
        let h = Host::new(dir.path())
            .with_var_dir(dir.path().join("var"))
            .with_hostname("node1.example.com");
        (dir, h)
    }

    #[test]
    fn a_new_file_is_written_0440_root() {
        let (dir, h) = root();
        let log = assert_class_contract::<Sudoers>(
            &h,
            &[dir.path()],
            json!({"path": "/etc/sudoers.d/ops", "fmt": "%ops %%SHORT_HOSTNAME%%=(ALL) NOPASSWD: ALL"}),
        );
        assert!(log.iter().any(|l| l == "/etc/sudoers.d/ops: missing"), "{log:?}");
        let p = dir.path().join("etc/sudoers.d/ops");
        assert_eq!(fs::read_to_string(&p).unwrap(), "%ops node1=(ALL) NOPASSWD: ALL\n");
        let m = fs::metadata(&p).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid()), (0o440, 0));
    }

    #[test]
    fn content_and_modes_are_fixed() {
        let (dir, h) = root();
        let p = dir.path().join("etc/sudoers.d/ops");
        fs::write(&p, "old ALL=(ALL) ALL\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
        let log = assert_class_contract::<Sudoers>(
            &h,
            &[dir.path()],
            json!([{"path": "/etc/sudoers.d/ops", "fmt": "new ALL=(ALL) ALL\n"}]),
        );
        assert!(log.iter().any(|l| l.contains("-old ALL")), "{log:?}");
        assert!(log.iter().any(|l| l.contains("mode is 0666, expected 0664")), "{log:?}");
        let m = fs::metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o664);
        assert_eq!(fs::read_to_string(&p).unwrap(), "new ALL=(ALL) ALL\n");
    }

    #[test]
    fn invalid_content_is_never_written() {
        let (dir, h) = root();
        let p = dir.path().join("etc/sudoers.d/ops");
        fs::write(&p, "ok ALL=(ALL) ALL\n").unwrap();
        let before = crate::testing::snapshot(dir.path());
        let rule = json!({"path": "/etc/sudoers.d/ops", "fmt": "broken ALL=(ALL ALL"});
        let (st, log) = check::<Sudoers>(&h, rule.clone());
        assert_eq!(st, Status::Nok);
        assert!(
            log.iter().any(|l| l.contains("not valid sudoers") && l.contains("/etc/sudoers.d/ops:1")),
            "{log:?}"
        );
        let (st, log) = fix::<Sudoers>(&h, rule);
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("left as it is")), "{log:?}");
        assert!(crate::testing::diff_snapshots(&before, &crate::testing::snapshot(dir.path())).is_empty());
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (rule, want) in [
            (json!({"path": "/etc/sudoers.d/x"}), "missing field `fmt`"),
            (json!({"path": "/etc/sudoers.d/x", "fmt": "x", "mode": 666}), "mode: 0666 lets others write"),
            (json!({"path": "etc/x", "fmt": "x"}), "path: \"etc/x\""),
            (json!({"path": "/etc/x", "fmt": "x", "ref": "https://x"}), "unknown field `ref`"),
            (json!({"path": "/etc/x", "fmt": 1.5}), "expected the file's content"),
        ] {
            let err = Sudoers::rules(&rule).unwrap_err();
            assert!(err.contains(want), "{rule}: {err}");
        }
    }
}

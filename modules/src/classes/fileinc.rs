//! The `fileinc` class: a file holds a line (or no line) matching a pattern, or every match of
//! a pattern reads as a given text.
//!
//! OpenSVC name `fileinc` (object script `fileinc.py`). Two kinds of rule:
//!
//! - `{"path": "/etc/sudoers", "check": "^#includedir ", "fmt": "#includedir /etc/sudoers.d"}`:
//!   exactly one line matches the regular expression `check` (matched at the start of the line)
//!   and it is `fmt`; with `"strict_fmt": false`, any one matching line will do. fix rewrites
//!   the first matching line to `fmt`, removes the other matching lines, or appends `fmt` when
//!   no line matches. `fmt` must itself match `check` (else the rule is nok: "rule error"). An
//!   empty or missing `fmt` means no line may match: fix removes the matching lines.
//! - `{"path": "/etc/resolv.conf", "replace": "^search .*$", "fmt": "search a.com b.com"}`:
//!   every match of `replace` (anywhere in a line) is `fmt`; fix replaces the others with
//!   `fmt`, taken literally.
//!
//! `%%HOSTNAME%%` and `%%SHORT_HOSTNAME%%` in `fmt` are the node name and its first label;
//! `fmt` is trimmed. `ref` (instead of `fmt`) takes the text from an `https://` or `data:` URL.
//! A missing file is created (mode 0644) when its directory exists. Files over 8 MiB are
//! refused, as in OpenSVC; so are files that are not UTF-8 text.
//!
//! Patterns are Rust regular expressions (`regex` crate: Perl-like, without look-around and
//! backreferences); an invalid pattern is refused when the rule is loaded, naming the field.
//! Differences from OpenSVC are the `#fileinc-*` rows of `docs/opensvc-compat.md`.

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::common::fetch_ref;
use crate::class::Class;
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// Files larger than this are refused (OpenSVC's limit).
const MAX_SIZE: u64 = 8 * 1024 * 1024;

/// One `fileinc` rule, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    path: String,
    #[serde(default)]
    check: Option<String>,
    #[serde(default)]
    replace: Option<String>,
    #[serde(default)]
    fmt: Option<Value>,
    #[serde(default, rename = "ref")]
    reference: Option<String>,
    #[serde(default)]
    strict_fmt: Option<bool>,
}

/// One `fileinc` rule, checked.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct FileIncRule {
    /// Absolute path of the file in the managed system.
    pub path: String,
    /// What the rule asks.
    pub kind: Kind,
    /// Where the text comes from.
    pub text: Text,
}

/// What a rule asks of the file.
#[derive(Debug)]
pub enum Kind {
    /// One line matches (at its start) and is the text (any matching line when not strict);
    /// with an empty text, no line matches.
    Check {
        /// The pattern, anchored at the start of a line.
        pattern: Regex,
        /// The pattern as written, for messages.
        source: String,
        /// Whether the matching line must be the text exactly.
        strict: bool,
    },
    /// Every match in every line is the text.
    Replace {
        /// The pattern.
        pattern: Regex,
        /// The pattern as written, for messages.
        source: String,
    },
}

/// The wanted text.
#[derive(Debug)]
pub enum Text {
    /// `fmt`, before node name substitution.
    Fmt(String),
    /// `ref`, fetched at check and at fix.
    Ref(String),
}

impl TryFrom<RawRule> for FileIncRule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Self, String> {
        if !raw.path.starts_with('/') {
            return Err(format!("path: {:?} is not absolute", raw.path));
        }
        let compile = |field: &str, src: &str, anchored: bool| {
            let pattern = if anchored {
                format!("^(?:{src})")
            } else {
                src.to_string()
            };
            Regex::new(&pattern).map_err(|e| format!("{field}: {src:?} is not a valid pattern: {e}"))
        };
        let kind = match (&raw.check, &raw.replace) {
            (Some(_), Some(_)) => {
                return Err("check, replace: exclusive, set only one of them".into());
            }
            (None, None) => return Err("check or replace is required".into()),
            (Some(src), None) => Kind::Check {
                pattern: compile("check", src, true)?,
                source: src.clone(),
                strict: raw.strict_fmt.unwrap_or(true),
            },
            // The form gives strict_fmt (default true) to replace rules too: it means nothing there.
            (None, Some(src)) => Kind::Replace {
                pattern: compile("replace", src, false)?,
                source: src.clone(),
            },
        };
        let text = match (raw.fmt, raw.reference) {
            (Some(_), Some(_)) => return Err("fmt, ref: exclusive, set only one of them".into()),
            (None, Some(r)) => Text::Ref(r.trim().to_string()),
            (None, None) | (Some(Value::Null), None) => Text::Fmt(String::new()),
            (Some(Value::String(s)), None) => Text::Fmt(s),
            (Some(Value::Number(n)), None) => Text::Fmt(n.to_string()),
            (Some(other), None) => {
                return Err(format!("fmt: expected text or a number, got {other}"));
            }
        };
        Ok(FileIncRule {
            path: raw.path,
            kind,
            text,
        })
    }
}

/// The `fileinc` class.
#[derive(Debug)]
pub struct FileInc;

impl Class for FileInc {
    type Rule = FileIncRule;

    const NAME: &'static str = "fileinc";
    const ALIASES: &'static [&'static str] = &["fileinc.py"];
    const DESCRIPTION: &'static str =
        "a file holds a line matching a pattern (check, add, rewrite) or every match reads as a text (replace)";
    const STAGED_WRITES: bool = true;

    fn describe(rule: &FileIncRule) -> String {
        rule.path.clone()
    }

    fn check(rule: &FileIncRule, host: &HostView, log: &mut Log) -> Status {
        match prepare(rule, host) {
            Ok((want, lines)) => {
                if evaluate(rule, &want, &lines, Some(log)) {
                    Status::Ok
                } else {
                    Status::Nok
                }
            }
            Err(e) => {
                log.err(format!("{}: {e}", rule.path));
                Status::Nok
            }
        }
    }

    fn fix(rule: &FileIncRule, host: &Host, log: &mut Log) -> Status {
        match fix_rule(rule, host, log) {
            Ok(()) => Status::Ok,
            Err(e) => {
                log.err(format!("{}: {e}", rule.path));
                Status::Nok
            }
        }
    }
}

/// The wanted text and the file's lines (`None` when it does not exist).
fn prepare(rule: &FileIncRule, host: &HostView) -> Result<(String, Option<Vec<String>>), String> {
    let raw = match &rule.text {
        Text::Fmt(f) => f.clone(),
        Text::Ref(r) => String::from_utf8(fetch_ref(r)?)
            .map_err(|_| format!("ref {r}: the content is not UTF-8 text"))?,
    };
    let hostname = host.hostname();
    let short = hostname.split('.').next().unwrap_or(hostname);
    let want = raw
        .replace("%%HOSTNAME%%", hostname)
        .replace("%%SHORT_HOSTNAME%%", short)
        .trim()
        .to_string();
    if let Kind::Check { pattern, source, .. } = &rule.kind
        && !want.is_empty()
        && !pattern.is_match(&want)
    {
        return Err(format!(
            "rule error: the text {want:?} does not match the check pattern {source:?}"
        ));
    }
    if want.contains('\n') && matches!(rule.kind, Kind::Check { .. }) {
        return Err("rule error: the text of a check rule is one line".into());
    }
    let path = host.path(&rule.path).map_err(|e| e.to_string())?;
    let Some(meta) = host.metadata(&path).map_err(|e| e.to_string())? else {
        return Ok((want, None));
    };
    if meta.is_dir() {
        return Err("is a directory".into());
    }
    if meta.is_file() && meta.len() > MAX_SIZE {
        return Err(format!(
            "too large ({} bytes; at most {MAX_SIZE} are handled)",
            meta.len()
        ));
    }
    let bytes = host
        .read(&path)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    Ok((want, Some(text.lines().map(str::to_string).collect())))
}

/// Whether the lines comply, logging why when `log` is given.
fn evaluate(rule: &FileIncRule, want: &str, lines: &Option<Vec<String>>, log: Option<&mut Log>) -> bool {
    let path = &rule.path;
    let empty = Vec::new();
    let lines = lines.as_ref().unwrap_or(&empty);
    let mut out: Vec<(bool, String)> = Vec::new();
    let ok = match &rule.kind {
        Kind::Check {
            pattern,
            source,
            strict,
        } => {
            let matching: Vec<&String> = lines.iter().filter(|l| pattern.is_match(l)).collect();
            if want.is_empty() {
                if matching.is_empty() {
                    out.push((true, format!("{path}: no line matches {source:?}, ok")));
                    true
                } else {
                    for l in &matching {
                        out.push((false, format!("{path}: line {l:?} matches {source:?}, expected none")));
                    }
                    false
                }
            } else {
                let good = matching.iter().filter(|l| !*strict || l.as_str() == want).count();
                if matching.len() > 1 {
                    out.push((
                        false,
                        format!("{path}: {} lines match {source:?}, expected one", matching.len()),
                    ));
                }
                if good == 0 {
                    match matching.first() {
                        Some(l) => out.push((
                            false,
                            format!("{path}: line {l:?} matches {source:?} but is not {want:?}"),
                        )),
                        None => out.push((false, format!("{path}: line {want:?} not found"))),
                    }
                }
                let ok = good > 0 && matching.len() == 1;
                if ok {
                    out.push((true, format!("{path}: line {:?} found, ok", matching[0])));
                }
                ok
            }
        }
        Kind::Replace { pattern, source } => {
            let mut ok = true;
            for l in lines {
                for m in pattern.find_iter(l) {
                    if m.as_str() != want {
                        ok = false;
                        out.push((
                            false,
                            format!(
                                "{path}: {:?} (matching {source:?}) in line {l:?} should be {want:?}",
                                m.as_str()
                            ),
                        ));
                    }
                }
            }
            if ok {
                out.push((true, format!("{path}: every match of {source:?} is {want:?}, ok")));
            }
            ok
        }
    };
    if let Some(log) = log {
        for (good, text) in out {
            if good {
                log.info(text);
            } else {
                log.err(text);
            }
        }
    }
    ok
}

fn fix_rule(rule: &FileIncRule, host: &Host, log: &mut Log) -> Result<(), String> {
    let (want, lines) = prepare(rule, host)?;
    if evaluate(rule, &want, &lines, None) {
        return Ok(());
    }
    let exists = lines.is_some();
    let mut lines = lines.unwrap_or_default();
    let path = &rule.path;
    match &rule.kind {
        Kind::Check { pattern, strict, .. } => {
            let mut first = None;
            let mut kept = Vec::with_capacity(lines.len() + 1);
            for (i, line) in lines.into_iter().enumerate() {
                if !pattern.is_match(&line) {
                    kept.push(line);
                } else if first.is_none() && !want.is_empty() {
                    first = Some(kept.len());
                    if *strict && line != want {
                        log.info(format!("{path}: line {} {line:?} rewritten as {want:?}", i + 1));
                        kept.push(want.clone());
                    } else {
                        kept.push(line);
                    }
                } else {
                    log.info(format!("{path}: line {} {line:?} removed", i + 1));
                }
            }
            if first.is_none() && !want.is_empty() {
                log.info(format!("{path}: line {want:?} added"));
                kept.push(want.clone());
            }
            lines = kept;
        }
        Kind::Replace { pattern, .. } => {
            for (i, line) in lines.iter_mut().enumerate() {
                let new = pattern
                    .replace_all(line, |c: &regex::Captures| {
                        if &c[0] == want.as_str() { c[0].to_string() } else { want.clone() }
                    })
                    .into_owned();
                if new != *line {
                    log.info(format!("{path}: line {} {line:?} rewritten as {new:?}", i + 1));
                    *line = new;
                }
            }
        }
    }
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    let real = host.path(path).map_err(|e| e.to_string())?;
    if !exists {
        let parent = real.parent().ok_or("no parent directory")?;
        if host
            .metadata(&parent)
            .map_err(|e| e.to_string())?
            .is_none_or(|m| !m.is_dir())
        {
            return Err(format!(
                "cannot create the file: its directory {} does not exist",
                parent.abs().display()
            ));
        }
    }
    let written = host
        .write_atomic(&real, text.as_bytes(), (!exists).then_some(0o644), None)
        .map_err(|e| e.to_string())?;
    log.info(format!("{path}: written"));
    if let Some(note) = written.hard_link_note(path) {
        log.info(note);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_class_contract, check, fix};
    use serde_json::json;
    use std::fs;
    use std::path::Path;

    fn host(dir: &Path) -> Host {
        Host::new(dir)
            .with_var_dir(dir.join("var/lib/tenet"))
            .with_hostname("node1.example.com")
    }

    fn write(dir: &Path, abs: &str, text: &str) {
        let p = dir.join(abs.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn read(dir: &Path, abs: &str) -> String {
        fs::read_to_string(dir.join(abs.trim_start_matches('/'))).unwrap()
    }

    #[test]
    fn upstream_check_example_adds_the_line() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        write(d.path(), "/tmp/foo", "first\n");
        let rule = json!({"path": "/tmp/foo", "check": ".*some pattern.*",
            "fmt": "full added content with %%HOSTNAME%%@corp.com: some pattern into the file."});
        let log = assert_class_contract::<FileInc>(&h, &[d.path()], rule);
        assert!(log.iter().any(|l| l.contains("not found")), "{log:?}");
        assert_eq!(
            read(d.path(), "/tmp/foo"),
            "first\nfull added content with node1.example.com@corp.com: some pattern into the file.\n"
        );
    }

    #[test]
    fn a_differing_line_is_rewritten_and_duplicates_removed() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        write(d.path(), "/etc/x.conf", "a\nopt=1\nb\nopt=2\nc\n");
        let rule = json!({"path": "/etc/x.conf", "check": "opt=", "fmt": "opt=3"});
        let log = assert_class_contract::<FileInc>(&h, &[d.path()], rule);
        assert!(log.iter().any(|l| l.contains("2 lines match")), "{log:?}");
        assert_eq!(read(d.path(), "/etc/x.conf"), "a\nopt=3\nb\nc\n");
        // Not strict: any one matching line will do.
        write(d.path(), "/etc/y.conf", "opt=1\n");
        let (st, _) = check::<FileInc>(
            &h,
            json!({"path": "/etc/y.conf", "check": "opt=", "fmt": "opt=3", "strict_fmt": false}),
        );
        assert_eq!(st, Status::Ok);
    }

    #[test]
    fn an_empty_fmt_removes_matching_lines() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        write(d.path(), "/etc/x.conf", "keep\nbad 1\nbad 2\n");
        assert_class_contract::<FileInc>(
            &h,
            &[d.path()],
            json!({"path": "/etc/x.conf", "check": "bad"}),
        );
        assert_eq!(read(d.path(), "/etc/x.conf"), "keep\n");
    }

    #[test]
    fn upstream_replace_example() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        write(
            d.path(),
            "/etc/resolv.conf",
            "search old.com\nnameserver 10.0.0.1\n",
        );
        let rule = json!({"path": "/etc/resolv.conf", "replace": "^search .*$",
            "fmt": "search foo.com bar.com baz.com"});
        assert_class_contract::<FileInc>(&h, &[d.path()], rule);
        assert_eq!(
            read(d.path(), "/etc/resolv.conf"),
            "search foo.com bar.com baz.com\nnameserver 10.0.0.1\n"
        );
    }

    #[test]
    fn a_missing_file_is_created_in_an_existing_directory() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        fs::create_dir_all(d.path().join("etc")).unwrap();
        assert_class_contract::<FileInc>(
            &h,
            &[d.path()],
            json!({"path": "/etc/new", "check": "^x", "fmt": "x=1"}),
        );
        assert_eq!(read(d.path(), "/etc/new"), "x=1\n");
        let (st, _) = fix::<FileInc>(&h, json!({"path": "/none/new", "check": "^x", "fmt": "x=1"}));
        assert_eq!(st, Status::Nok);
        assert!(!d.path().join("none").exists());
    }

    #[test]
    fn a_fmt_not_matching_its_pattern_is_a_rule_error() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        write(d.path(), "/etc/x", "a\n");
        let rule = json!({"path": "/etc/x", "check": "^b", "fmt": "a"});
        let (st, log) = check::<FileInc>(&h, rule.clone());
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("rule error")), "{log:?}");
        let (st, _) = fix::<FileInc>(&h, rule);
        assert_eq!(st, Status::Nok);
        assert_eq!(read(d.path(), "/etc/x"), "a\n");
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (v, needle) in [
            (json!({"path": "/x", "check": "(", "fmt": "a"}), "check: \"(\" is not a valid pattern"),
            (json!({"path": "/x", "replace": "[", "fmt": "a"}), "replace:"),
            (json!({"path": "/x", "check": "a", "replace": "a"}), "exclusive"),
            (json!({"path": "/x", "fmt": "a"}), "check or replace"),
            (json!({"path": "/x", "check": "a", "fmt": "a", "ref": "data:,a"}), "fmt, ref"),
            (json!({"path": "x", "check": "a", "fmt": "a"}), "path"),
            (json!({"path": "/x", "check": "a", "fmt": ["a"]}), "fmt:"),
            (json!({"path": "/x", "check": "a", "fmt": "a", "other": 1}), "unknown field `other`"),
        ] {
            let err = FileInc::rules(&v).unwrap_err();
            assert!(err.contains(needle), "{v}: {err}");
        }
    }

    #[test]
    fn ref_data_urls_give_the_text() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        write(d.path(), "/etc/x", "");
        assert_class_contract::<FileInc>(
            &h,
            &[d.path()],
            json!({"path": "/etc/x", "check": "^y", "ref": "data:,y%3D%20on%20%%SHORT_HOSTNAME%%"}),
        );
        assert_eq!(read(d.path(), "/etc/x"), "y= on node1\n");
    }
}

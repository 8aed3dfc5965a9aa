//! The `keyval` class: keys of a `key value` (or `key=value`) configuration file, such as
//! `sshd_config`, `login.defs` or `ntp.conf`.
//!
//! OpenSVC names: var_class `keyval` / `keyval_with_fpath`, object scripts `keyval.py` and
//! `keyval_with_fpath.py`. A rule is
//! `{"path": "/etc/ssh/sshd_config", "separator": " ", "keys": [{"key": "PermitRootLogin",
//! "op": "=", "value": "no"}, {"key": "PermitRootLogin", "op": "reset"}]}`.
//!
//! The file is read line by line: blank lines and lines starting with `#` are comments, text
//! after a `#` is an end-of-line comment, and the rest splits at the first separator (the
//! default `" "` means any run of spaces or tabs) into a key and its value. A `Match` line
//! opens a section that lasts to the end of the file (sshd_config): keys inside it are not
//! the file's keys and are never changed. A key may appear several times; its values are
//! numbered in file order, and the Nth rule setting a key (`=`, `>=`, `<=`, `IN`) checks the
//! key's Nth value.
//!
//! Operators: `=` (the value's text equals the target), `>=` / `<=` (the value is an integer
//! at least / at most the target), `IN` (one of the target list; `"unset"` in the list accepts
//! a missing key), `unset` (the key is absent; with a value, no occurrence has that value),
//! `reset` (the key appears no more times than this rule's keys set it: duplicates left by
//! earlier edits are removed). `op` defaults to `=`.
//!
//! fix edits the file in place: a wrong value is replaced on its own line (indentation and an
//! end-of-line comment kept), a missing key is added after the last key of the file (before
//! any `Match` section), `unset` and `reset` remove lines. Everything else (comments, blank
//! lines, order, other keys) is kept byte for byte. The file is written atomically, the old
//! one backed up. Keys are processed in rule order, each checked against the file as the
//! previous ones left it.
//!
//! Differences from OpenSVC (each a row of `docs/opensvc-compat.md`): a wrong value is
//! replaced where it is, not inserted before it (`#keyval-in-place`); the file's layout is
//! kept rather than regrouped (`#keyval-layout`); operators and targets are checked when the
//! rule is loaded and `op` defaults to `=` (`#keyval-strict`); values are compared as text
//! (`#keyval-text`). A missing file is created (mode 0644) when its directory exists.

use serde::Deserialize;
use serde_json::Value;

use crate::class::Class;
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// One `keyval` rule, as written in a variable.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    path: String,
    #[serde(default)]
    separator: Option<String>,
    keys: Vec<RawKey>,
}

/// One key of a rule, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    key: String,
    #[serde(default)]
    op: Option<String>,
    #[serde(default)]
    value: Option<Value>,
}

/// One `keyval` rule: a file and the keys it must hold (read from the raw upstream form, checked).
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct KeyValRule {
    /// Absolute path of the file in the managed system.
    pub path: String,
    /// What separates a key from its value (`" "`, the default, is any run of blanks).
    pub separator: String,
    /// The keys, in rule order.
    pub keys: Vec<KeyRule>,
}

/// One key of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRule {
    /// The key (case-sensitive).
    pub key: String,
    /// What the key's value must be.
    pub op: Op,
}

/// An operator with its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The value's text equals this.
    Eq(String),
    /// The value is an integer at least this.
    Ge(i64),
    /// The value is an integer at most this.
    Le(i64),
    /// The value is one of these; `"unset"` among them accepts a missing key.
    In(Vec<String>),
    /// No occurrence of the key (`None`), or none with this value.
    Unset(Option<String>),
    /// The key appears at most as many times as the rule sets it.
    Reset,
}

impl Op {
    fn sets(&self) -> bool {
        !matches!(self, Op::Unset(_) | Op::Reset)
    }
}

/// The `keyval` class.
#[derive(Debug)]
pub struct KeyVal;

impl Class for KeyVal {
    type Rule = KeyValRule;

    const NAME: &'static str = "keyval";
    const ALIASES: &'static [&'static str] =
        &["keyval_with_fpath", "keyval.py", "keyval_with_fpath.py"];
    const DESCRIPTION: &'static str =
        "keys of a `key value` / `key=value` file (sshd_config, login.defs): =, >=, <=, IN, unset, reset";
    const STAGED_WRITES: bool = true;

    fn describe(rule: &KeyValRule) -> String {
        rule.path.clone()
    }

    fn check(rule: &KeyValRule, host: &HostView, log: &mut Log) -> Status {
        let conf = match load(rule, host) {
            Ok(c) => c,
            Err(e) => {
                log.err(format!("{}: {e}", rule.path));
                return Status::Nok;
            }
        };
        let mut status = Status::Ok;
        for (key, instance) in with_instances(&rule.keys) {
            if !check_key(rule, &conf, key, instance, Some(&mut *log)) {
                status = Status::Nok;
            }
        }
        status
    }

    fn fix(rule: &KeyValRule, host: &Host, log: &mut Log) -> Status {
        match fix_rule(rule, host, log) {
            Ok(()) => Status::Ok,
            Err(e) => {
                log.err(format!("{}: {e}", rule.path));
                Status::Nok
            }
        }
    }
}

impl TryFrom<RawRule> for KeyValRule {
    type Error = String;
    fn try_from(raw: RawRule) -> Result<Self, String> {
        validate(raw)
    }
}

fn validate(raw: RawRule) -> Result<KeyValRule, String> {
    if !raw.path.starts_with('/') {
        return Err(format!("path: {:?} is not absolute", raw.path));
    }
    let separator = raw.separator.unwrap_or_else(|| " ".into());
    if separator.is_empty() || separator.contains(['\n', '#']) {
        return Err(format!(
            "separator: {separator:?} cannot separate keys (empty, or holds a newline or #)"
        ));
    }
    if raw.keys.is_empty() {
        return Err("keys: empty: nothing to manage".into());
    }
    let mut keys = Vec::new();
    for (i, k) in raw.keys.into_iter().enumerate() {
        let at = |field: &str| format!("keys[{i}].{field}");
        let bad_key = k.key.is_empty()
            || k.key.contains(['#', '\n'])
            || k.key.contains(char::is_whitespace)
            || (!blank_separator(&separator) && k.key.contains(separator.as_str()));
        if bad_key {
            return Err(format!(
                "{}: {:?} is not a key (empty, or holds blanks, # or the separator)",
                at("key"),
                k.key
            ));
        }
        let op_name = k.op.as_deref().unwrap_or("=");
        let text = |v: &Value| -> Result<String, String> {
            match v {
                Value::String(s) if !s.contains('\n') => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(format!(
                    "{}: {v} is not a value (expected a string without newline, or a number)",
                    at("value")
                )),
            }
        };
        let needed = || {
            k.value
                .as_ref()
                .ok_or_else(|| format!("{}: missing (op {op_name:?} needs a value)", at("value")))
        };
        let op = match op_name {
            "=" => Op::Eq(text(needed()?)?),
            ">=" | "<=" => {
                let v = needed()?;
                let n = match v {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => s.trim().parse::<i64>().ok(),
                    _ => None,
                }
                .ok_or_else(|| format!("{}: {v} is not an integer (op {op_name})", at("value")))?;
                if op_name == ">=" { Op::Ge(n) } else { Op::Le(n) }
            }
            "IN" => {
                let v = needed()?;
                // OpenSVC's form gives the list as JSON text; a JSON list is taken too.
                let list = match v {
                    Value::String(s) => serde_json::from_str::<Value>(s)
                        .map_err(|e| format!("{}: {s:?} is not a JSON list: {e}", at("value")))?,
                    other => other.clone(),
                };
                let Value::Array(items) = list else {
                    return Err(format!("{}: op IN needs a list of values", at("value")));
                };
                if items.is_empty() {
                    return Err(format!("{}: op IN needs at least one value", at("value")));
                }
                Op::In(items.iter().map(text).collect::<Result<_, _>>()?)
            }
            "unset" => match &k.value {
                None | Some(Value::Null) => Op::Unset(None),
                Some(v) => {
                    let t = text(v)?;
                    Op::Unset((!t.trim().is_empty()).then_some(t))
                }
            },
            "reset" => Op::Reset,
            other => {
                return Err(format!(
                    "{}: unknown operator {other:?}: expected =, >=, <=, IN, unset or reset",
                    at("op")
                ));
            }
        };
        keys.push(KeyRule { key: k.key, op });
    }
    Ok(KeyValRule {
        path: raw.path,
        separator,
        keys,
    })
}

fn blank_separator(sep: &str) -> bool {
    sep.chars().all(|c| c == ' ' || c == '\t')
}

/// Each key with its instance: the how-manieth setting rule of that key it is (`None` for
/// `unset` and `reset`, which concern every occurrence).
fn with_instances(keys: &[KeyRule]) -> Vec<(&KeyRule, Option<usize>)> {
    let mut seen: Vec<(&str, usize)> = Vec::new();
    keys.iter()
        .map(|k| {
            if !k.op.sets() {
                return (k, None);
            }
            let n = match seen.iter_mut().find(|(name, _)| *name == k.key) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    seen.push((&k.key, 0));
                    0
                }
            };
            (k, Some(n))
        })
        .collect()
}

/// One line of the file.
#[derive(Debug, Clone)]
struct Line {
    text: String,
    /// The key and value, for a key line outside any section.
    kv: Option<(String, String)>,
    /// Whether the line opens or lies in a `Match` section.
    in_section: bool,
}

/// The file, line by line.
#[derive(Debug, Clone)]
struct Conf {
    lines: Vec<Line>,
    /// Whether the file ends with a newline (a new file will).
    final_newline: bool,
    exists: bool,
    separator: String,
}

/// Keys that open a section lasting to the end of the file.
const SECTION_MARKERS: &[&str] = &["Match"];

impl Conf {
    fn parse(text: &str, separator: &str, exists: bool) -> Conf {
        let mut lines = Vec::new();
        let mut in_section = false;
        for raw in text.lines() {
            let kv = split_line(raw, separator);
            if let Some((k, _)) = &kv
                && SECTION_MARKERS.contains(&k.as_str())
            {
                in_section = true;
            }
            lines.push(Line {
                text: raw.to_string(),
                kv: if in_section { None } else { kv },
                in_section,
            });
        }
        Conf {
            lines,
            final_newline: text.is_empty() || text.ends_with('\n'),
            exists,
            separator: separator.to_string(),
        }
    }

    fn render(&self) -> String {
        let mut out = self
            .lines
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        if self.final_newline && !out.is_empty() {
            out.push('\n');
        }
        out
    }

    /// Line indexes of the key's occurrences, in file order.
    fn occurrences(&self, key: &str) -> Vec<usize> {
        self.lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.kv.as_ref().is_some_and(|(k, _)| k == key))
            .map(|(i, _)| i)
            .collect()
    }

    fn values(&self, key: &str) -> Vec<&str> {
        self.occurrences(key)
            .into_iter()
            .filter_map(|i| self.lines[i].kv.as_ref().map(|(_, v)| v.as_str()))
            .collect()
    }

    fn line_for(&self, key: &str, value: &str, like: Option<&str>) -> Line {
        let sep = &self.separator;
        let (indent, comment) = match like {
            Some(old) => {
                let indent: String = old.chars().take_while(|c| c.is_whitespace()).collect();
                let comment = old.find('#').map(|i| format!(" {}", &old[i..]));
                (indent, comment.unwrap_or_default())
            }
            None => (String::new(), String::new()),
        };
        Line {
            text: format!("{indent}{key}{sep}{value}{comment}"),
            kv: Some((key.to_string(), value.to_string())),
            in_section: false,
        }
    }

    /// Sets the key's `instance`-th value: replaces that line, or adds one after the key's
    /// last occurrence (after the file's last key, before any section, when it has none).
    fn set(&mut self, key: &str, value: &str, instance: usize) {
        let occ = self.occurrences(key);
        if let Some(&i) = occ.get(instance) {
            let old = self.lines[i].text.clone();
            self.lines[i] = self.line_for(key, value, Some(&old));
            return;
        }
        let at = match occ.last() {
            Some(&i) => i + 1,
            None => self
                .lines
                .iter()
                .rposition(|l| l.kv.is_some())
                .map(|i| i + 1)
                .or_else(|| self.lines.iter().position(|l| l.in_section))
                .unwrap_or(self.lines.len()),
        };
        let line = self.line_for(key, value, None);
        self.lines.insert(at, line);
        self.final_newline = true;
    }

    /// Removes every occurrence (`None`), or the first one with that value.
    fn unset(&mut self, key: &str, value: Option<&str>) {
        let occ = self.occurrences(key);
        let doomed: Vec<usize> = match value {
            None => occ,
            Some(v) => occ
                .into_iter()
                .find(|&i| self.lines[i].kv.as_ref().is_some_and(|(_, x)| x == v))
                .into_iter()
                .collect(),
        };
        for i in doomed.into_iter().rev() {
            self.lines.remove(i);
        }
    }

    /// Keeps the first `max` occurrences.
    fn truncate(&mut self, key: &str, max: usize) {
        for i in self.occurrences(key).into_iter().skip(max).rev() {
            self.lines.remove(i);
        }
    }
}

/// Key and value of a line, `None` for comments, blank lines and lines without separator.
fn split_line(raw: &str, separator: &str) -> Option<(String, String)> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let content = trimmed.split('#').next().unwrap_or("").trim();
    let (k, v) = if blank_separator(separator) {
        let i = content.find([' ', '\t'])?;
        (&content[..i], &content[i..])
    } else {
        content.split_once(separator)?
    };
    let k = k.trim();
    (!k.is_empty()).then(|| (k.to_string(), v.trim().to_string()))
}

/// How many rules of the file's rule set a key: what `reset` keeps.
fn target_count(rule: &KeyValRule, key: &str) -> usize {
    rule.keys
        .iter()
        .filter(|k| k.key == key && k.op.sets())
        .count()
}

fn load(rule: &KeyValRule, host: &HostView) -> Result<Conf, String> {
    let path = host.path(&rule.path).map_err(|e| e.to_string())?;
    if let Some(meta) = host.metadata(&path).map_err(|e| e.to_string())?
        && !meta.is_file()
        && !meta.file_type().is_symlink()
    {
        return Err("not a regular file".into());
    }
    let text = host.read_to_string(&path).map_err(|e| e.to_string())?;
    Ok(Conf::parse(
        text.as_deref().unwrap_or(""),
        &rule.separator,
        text.is_some(),
    ))
}

/// Whether `key` complies in `conf`, logging why (or why not) when `log` is given.
fn check_key(
    rule: &KeyValRule,
    conf: &Conf,
    k: &KeyRule,
    instance: Option<usize>,
    log: Option<&mut Log>,
) -> bool {
    let path = &rule.path;
    let key = &k.key;
    let values = conf.values(key);
    let (ok, msg) = match (&k.op, instance) {
        (Op::Reset, _) => {
            let want = target_count(rule, key);
            if values.len() > want {
                (
                    false,
                    format!(
                        "{path}: {key} is set {} times, expected at most {want}",
                        values.len()
                    ),
                )
            } else {
                (
                    true,
                    format!("{path}: {key} is set {} times, ok", values.len()),
                )
            }
        }
        (Op::Unset(None), _) => match values.first() {
            Some(v) => (false, format!("{path}: {key} is set ({v}), expected unset")),
            None => (true, format!("{path}: {key} is not set, ok")),
        },
        (Op::Unset(Some(t)), _) => match values.iter().position(|v| v == t) {
            Some(i) => (
                false,
                format!("{path}: {key}[{i}] is {t}, expected not to be"),
            ),
            None => (true, format!("{path}: {key} is not set to {t}, ok")),
        },
        (op, instance) => {
            let n = instance.unwrap_or(0);
            match values.get(n) {
                None => match op {
                    Op::In(list) if list.iter().any(|v| v == "unset") => {
                        (true, format!("{path}: {key} is not set, ok"))
                    }
                    _ => (
                        false,
                        format!("{path}: {key}[{n}] is not set, expected {}", show(op)),
                    ),
                },
                Some(v) => {
                    let ok = match op {
                        Op::Eq(t) => v == t,
                        Op::In(list) => list.iter().any(|t| t == v),
                        Op::Ge(t) => v.parse::<i64>().is_ok_and(|x| x >= *t),
                        Op::Le(t) => v.parse::<i64>().is_ok_and(|x| x <= *t),
                        Op::Unset(_) | Op::Reset => unreachable!("handled above"),
                    };
                    if ok {
                        (true, format!("{path}: {key}[{n}] = {v}, ok"))
                    } else if matches!(op, Op::Ge(_) | Op::Le(_)) && v.parse::<i64>().is_err() {
                        (
                            false,
                            format!(
                                "{path}: {key}[{n}] = {v} is not an integer, expected {}",
                                show(op)
                            ),
                        )
                    } else {
                        (
                            false,
                            format!("{path}: {key}[{n}] = {v}, expected {}", show(op)),
                        )
                    }
                }
            }
        }
    };
    if let Some(log) = log {
        if ok {
            log.info(msg);
        } else {
            log.err(msg);
        }
    }
    ok
}

fn show(op: &Op) -> String {
    match op {
        Op::Eq(t) => t.clone(),
        Op::Ge(t) => format!(">= {t}"),
        Op::Le(t) => format!("<= {t}"),
        Op::In(list) => format!("one of {}", list.join(", ")),
        Op::Unset(_) => "unset".into(),
        Op::Reset => "reset".into(),
    }
}

fn fix_rule(rule: &KeyValRule, host: &Host, log: &mut Log) -> Result<(), String> {
    let mut conf = load(rule, host)?;
    let before = conf.render();
    let path = &rule.path;
    for (k, instance) in with_instances(&rule.keys) {
        if check_key(rule, &conf, k, instance, None) {
            continue;
        }
        let key = &k.key;
        match &k.op {
            Op::Reset => {
                let n = target_count(rule, key);
                conf.truncate(key, n);
                log.info(format!("{path}: {key} cut to {n} occurrence(s)"));
            }
            Op::Unset(v) => {
                conf.unset(key, v.as_deref());
                log.info(format!("{path}: {key} unset"));
            }
            Op::In(list) if list[0] == "unset" => {
                conf.unset(key, None);
                log.info(format!("{path}: {key} unset"));
            }
            op => {
                let value = match op {
                    Op::Eq(t) => t.clone(),
                    Op::In(list) => list[0].clone(),
                    Op::Ge(t) | Op::Le(t) => t.to_string(),
                    Op::Unset(_) | Op::Reset => unreachable!("handled above"),
                };
                conf.set(key, &value, instance.unwrap_or(0));
                log.info(format!("{path}: {key} set to {value}"));
            }
        }
    }
    let after = conf.render();
    if after == before {
        return Ok(());
    }
    let real = host.path(path).map_err(|e| e.to_string())?;
    if !conf.exists {
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
        .write_atomic(&real, after.as_bytes(), (!conf.exists).then_some(0o644), None)
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
        Host::new(dir).with_var_dir(dir.join("var/lib/tenet"))
    }

    fn write(dir: &Path, abs: &str, text: &str) {
        let p = dir.join(abs.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn read(dir: &Path, abs: &str) -> String {
        fs::read_to_string(dir.join(abs.trim_start_matches('/'))).unwrap()
    }

    const SSHD: &str = "# sshd config\nPort 22\n\n# root\nPermitRootLogin yes  # for now\nPermitRootLogin no\nUsePAM yes\n\nMatch User anoncvs\n\tX11Forwarding no\n\tPermitRootLogin yes\n";

    #[test]
    fn upstream_example_sets_and_resets_in_place() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        write(d.path(), "/etc/ssh/sshd_config", SSHD);
        let rule = json!({"path": "/etc/ssh/sshd_config", "keys": [
            {"key": "PermitRootLogin", "op": "=", "value": "no"},
            {"key": "PermitRootLogin", "op": "reset", "value": ""},
            {"key": "MaxAuthTries", "op": "<=", "value": 4},
        ]});
        let log = assert_class_contract::<KeyVal>(&h, &[d.path()], rule);
        assert!(
            log.iter()
                .any(|l| l.contains("PermitRootLogin[0] = yes, expected no")),
            "{log:?}"
        );
        assert!(log.iter().any(|l| l.contains("set 2 times")), "{log:?}");
        assert_eq!(
            read(d.path(), "/etc/ssh/sshd_config"),
            "# sshd config\nPort 22\n\n# root\nPermitRootLogin no # for now\nUsePAM yes\nMaxAuthTries 4\n\nMatch User anoncvs\n\tX11Forwarding no\n\tPermitRootLogin yes\n"
        );
    }

    #[test]
    fn equals_separator_numbers_and_in() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        write(
            d.path(),
            "/etc/app.conf",
            "a = 1\nb=x\n# c=3\nlimit = 100\n",
        );
        let rule = json!({"path": "/etc/app.conf", "separator": "=", "keys": [
            {"key": "a", "op": ">=", "value": "5"},
            {"key": "b", "op": "IN", "value": "[\"y\", \"z\"]"},
            {"key": "c", "op": "IN", "value": ["unset", "3"]},
            {"key": "limit", "op": ">=", "value": 50},
            {"key": "d", "value": 7},
        ]});
        assert_class_contract::<KeyVal>(&h, &[d.path()], rule);
        assert_eq!(
            read(d.path(), "/etc/app.conf"),
            "a=5\nb=y\n# c=3\nlimit = 100\nd=7\n"
        );
    }

    #[test]
    fn unset_removes_all_or_one_value() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        write(
            d.path(),
            "/etc/login.defs",
            "UMASK 022\nENV_PATH a\nENV_PATH b\nENV_PATH c\n",
        );
        let rule = json!({"path": "/etc/login.defs", "keys": [
            {"key": "UMASK", "op": "unset"},
            {"key": "ENV_PATH", "op": "unset", "value": "b"},
        ]});
        assert_class_contract::<KeyVal>(&h, &[d.path()], rule);
        assert_eq!(
            read(d.path(), "/etc/login.defs"),
            "ENV_PATH a\nENV_PATH c\n"
        );
    }

    #[test]
    fn a_missing_file_is_created_when_its_directory_exists() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        fs::create_dir_all(d.path().join("etc")).unwrap();
        let rule = json!({"path": "/etc/ntp.conf", "keys": [{"key": "server", "op": "=", "value": "ntp1"}]});
        assert_class_contract::<KeyVal>(&h, &[d.path()], rule);
        assert_eq!(read(d.path(), "/etc/ntp.conf"), "server ntp1\n");
        // Unset on a missing file is compliant and writes nothing.
        let (st, _) = check::<KeyVal>(
            &h,
            json!({"path": "/etc/none.conf", "keys": [{"key": "x", "op": "unset"}]}),
        );
        assert_eq!(st, Status::Ok);
        // No directory: nok, nothing created.
        let (st, log) = fix::<KeyVal>(
            &h,
            json!({"path": "/nodir/x.conf", "keys": [{"key": "x", "value": "1"}]}),
        );
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("does not exist")), "{log:?}");
        assert!(!d.path().join("nodir").exists());
    }

    #[test]
    fn second_instances_are_positional() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        write(d.path(), "/etc/ntp.conf", "server a\n");
        let rule = json!({"path": "/etc/ntp.conf", "keys": [
            {"key": "server", "op": "=", "value": "a"},
            {"key": "server", "op": "=", "value": "b"},
            {"key": "server", "op": "reset"},
        ]});
        let log = assert_class_contract::<KeyVal>(&h, &[d.path()], rule);
        assert!(log.iter().any(|l| l.contains("server[1] is not set")), "{log:?}");
        assert_eq!(read(d.path(), "/etc/ntp.conf"), "server a\nserver b\n");
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (v, needle) in [
            (json!({"path": "/x", "keys": [{"key": "a", "op": ">", "value": 1}]}), "keys[0].op: unknown operator \">\""),
            (json!({"path": "/x", "keys": [{"key": "a", "op": ">=", "value": "x"}]}), "keys[0].value"),
            (json!({"path": "/x", "keys": [{"key": "a", "op": "="}]}), "keys[0].value: missing"),
            (json!({"path": "/x", "keys": [{"key": "a b", "value": 1}]}), "keys[0].key"),
            (json!({"path": "/x", "keys": [{"key": "a", "op": "IN", "value": "nope"}]}), "not a JSON list"),
            (json!({"path": "x", "keys": [{"key": "a", "value": 1}]}), "path"),
            (json!({"path": "/x", "keys": []}), "keys: empty"),
            (json!({"path": "/x", "keys": [{"key": "a", "value": 1, "extra": 1}]}), "unknown field `extra`"),
            (json!({"key": "a", "op": "=", "value": 1}), "unknown field `key`"),
        ] {
            let err = KeyVal::rules(&v).unwrap_err();
            assert!(err.contains(needle), "{v}: {err}");
        }
    }

    #[test]
    fn parsing_follows_the_separator() {
        assert_eq!(
            split_line("  Port\t 22 # comment", " "),
            Some(("Port".into(), "22".into()))
        );
        assert_eq!(split_line("NoValue", " "), None);
        assert_eq!(split_line("# a b", " "), None);
        assert_eq!(
            split_line(" a = b = c", "="),
            Some(("a".into(), "b = c".into()))
        );
    }
}

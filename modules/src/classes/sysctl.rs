//! `sysctl`: kernel parameters, both live (`/proc/sys`) and persisted (`sysctl.d`).
//!
//! OpenSVC name `sysctl` (object script `sysctl.py`). A rule sets one element of a parameter's
//! value vector: `{"key": "net.ipv4.ip_local_port_range", "index": 1, "op": ">=", "value":
//! 65534}`. The list form `{"key": K, "value": [[op, v], ...]}` (or `[v0, v1, ...]`, all `=`)
//! expands to one rule per list position, the position being the index.
//!
//! check reads the live value from `<root>/proc/sys/<key>` and the persisted value the way
//! `sysctl --system` / systemd-sysctl apply it: the `*.conf` files of `/etc/sysctl.d`,
//! `/run/sysctl.d`, `/usr/local/lib/sysctl.d`, `/usr/lib/sysctl.d` and `/lib/sysctl.d` (a
//! file name in an earlier directory masks the same name in a later one), sorted by file name,
//! then `/etc/sysctl.conf` last; the last assignment of the key wins. Both must comply; the log
//! says which does not, and which file the effective persisted value comes from.
//!
//! fix writes the live value (only if it does not comply; a value already `>=` the target is
//! kept) and persists the key in `/etc/sysctl.d/99-tenet.conf`, a file Tenet owns (one sorted
//! `key = v1 v2` line per key, other keys kept). The persisted vector starts from the
//! effective persisted one (or the live one when there is none), so several rules on the same
//! key (different indexes) compose. When a file applied after `99-tenet.conf` (a
//! `sysctl.d` file sorting after it, or `/etc/sysctl.conf`) still sets a non-compliant value,
//! its lines for the key are commented out with a `# tenet: moved to ...` marker, so that
//! `99-tenet.conf` is the one place the key is set; files applied after it with a compliant
//! value are left alone.
//!
//! Differences from OpenSVC:
//! - OpenSVC edits `/etc/sysctl.conf` in place and is n/a without it; Tenet persists in its own
//!   `sysctl.d` file and reads the whole `sysctl --system` sequence (OM3 even took the *first*
//!   line of a key; the last wins here, as in the kernel tools).
//! - `>` and `<` are refused (PY accepted them and never compared); `>=` / `<=` need integer
//!   targets at parse time and integer current values (else nok with a message).
//! - An index out of range is a nok with a message (PY raised IndexError).
//! - The live value is written to `/proc/sys` directly instead of `sysctl -e -p`.
//! - Keys follow sysctl.d(5): `.` or `/` separators; when the first separator is `/`, dots
//!   and slashes are interchanged (`net/ipv4/conf/eth0.100/rp_filter` is
//!   `net.ipv4.conf.eth0/100.rp_filter`). Glob keys (`net.ipv4.conf.*.rp_filter`) in the
//!   configuration files are ignored: systemd lets an explicit key win over a glob anyway.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::class::{Class, parse_rule};
use crate::host::{Host, HostView, RootedPath};
use crate::status::{Log, Status};

/// The comparison a rule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Op {
    /// `=`: equal (as strings, or as integers when both are integers).
    #[default]
    Eq,
    /// `>=`: at least (integers).
    Ge,
    /// `<=`: at most (integers).
    Le,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Le => "<=",
        })
    }
}

/// One sysctl rule: one element of a kernel parameter's value vector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysctlRule {
    /// The parameter, `.` or `/` separated (`vm.swappiness`); kept in the dotted form.
    #[serde(deserialize_with = "de_key")]
    pub key: String,
    /// Position in the whitespace-separated value vector; default 0.
    #[serde(default, deserialize_with = "de_index")]
    pub index: usize,
    /// `=` (default), `>=` or `<=`.
    #[serde(default, deserialize_with = "de_op")]
    pub op: Op,
    /// The target element: an integer, or a string without whitespace (kept as text).
    #[serde(deserialize_with = "de_value")]
    pub value: String,
}

/// The `sysctl` class.
pub struct Sysctl;

impl Class for Sysctl {
    type Rule = SysctlRule;
    const NAME: &'static str = "sysctl";
    const ALIASES: &'static [&'static str] = &["sysctl.py"];
    const DESCRIPTION: &'static str =
        "kernel parameters: live value in /proc/sys and persisted value in sysctl.d";
    const STAGED_WRITES: bool = true;

    fn rules(value: &Value) -> Result<Vec<SysctlRule>, String> {
        let mut out = Vec::new();
        match value {
            Value::Array(items) => {
                for item in items {
                    expand(item, &mut out)?;
                }
            }
            other => expand(other, &mut out)?,
        }
        Ok(out)
    }

    fn describe(rule: &SysctlRule) -> String {
        format!("{}[{}] {} {}", rule.key, rule.index, rule.op, rule.value)
    }

    fn check(rule: &SysctlRule, host: &HostView, log: &mut Log) -> Status {
        let key = &rule.key;
        let idx = rule.index;
        let want = format!("{} {}", rule.op, rule.value);
        let mut status = Status::Ok;

        match read_live(host, key) {
            Err(e) => {
                log.err(e);
                status = Status::Nok;
            }
            Ok(live) => match live.values.get(idx) {
                None => {
                    log.err(out_of_range(key, idx, "live", &live.values, &live.logical));
                    status = Status::Nok;
                }
                Some(cur) => match satisfies(cur, rule.op, &rule.value) {
                    Ok(true) => log.info(format!(
                        "sysctl {key}[{idx}]: live value {cur}, ok ({want})"
                    )),
                    Ok(false) => {
                        log.err(format!(
                            "sysctl {key}[{idx}]: live value {cur}, expected {want}"
                        ));
                        status = Status::Nok;
                    }
                    Err(e) => {
                        log.err(format!("sysctl {key}[{idx}]: live value {e}"));
                        status = Status::Nok;
                    }
                },
            },
        }

        match effective(host, key) {
            Err(e) => {
                log.err(e);
                status = Status::Nok;
            }
            Ok(None) => {
                log.err(format!(
                    "sysctl {key}: not persisted (not set in {SYSCTL_CONF} nor in any sysctl.d/*.conf)"
                ));
                status = Status::Nok;
            }
            Ok(Some(a)) => {
                let from = a.describe_source();
                match a.values.get(idx) {
                    None => {
                        log.err(out_of_range(key, idx, "persisted", &a.values, &from));
                        status = Status::Nok;
                    }
                    Some(cur) => match satisfies(cur, rule.op, &rule.value) {
                        Ok(true) => log.info(format!(
                            "sysctl {key}[{idx}]: persisted value {cur} in {from}, ok ({want})"
                        )),
                        Ok(false) => {
                            log.err(format!(
                                "sysctl {key}[{idx}]: persisted value {cur} in {from}, expected {want}"
                            ));
                            status = Status::Nok;
                        }
                        Err(e) => {
                            log.err(format!(
                                "sysctl {key}[{idx}]: persisted value in {from}: {e}"
                            ));
                            status = Status::Nok;
                        }
                    },
                }
            }
        }
        status
    }

    fn fixable(rule: &SysctlRule, host: &HostView, log: &mut Log) -> Status {
        match read_live(host, &rule.key) {
            Err(e) => {
                log.err(e);
                Status::Nok
            }
            Ok(live) if live.values.len() <= rule.index => {
                log.err(out_of_range(
                    &rule.key,
                    rule.index,
                    "live",
                    &live.values,
                    &live.logical,
                ));
                Status::Nok
            }
            Ok(_) => Status::Ok,
        }
    }

    fn fix(rule: &SysctlRule, host: &Host, log: &mut Log) -> Status {
        if let Err(e) = fix_rule(rule, host, log) {
            log.err(e);
            return Status::Nok;
        }
        // Prove it: a fix must leave the rule compliant.
        let mut after = Log::new();
        let status = Self::check(rule, host.view(), &mut after);
        if status != Status::Ok {
            for line in after
                .lines()
                .iter()
                .filter(|l| l.stream == crate::status::Stream::Err)
            {
                log.err(format!("after fix: {}", line.text));
            }
        }
        status
    }
}

/// The file Tenet owns.
const TENET_CONF: &str = "/etc/sysctl.d/99-tenet.conf";
/// The legacy file, applied last by `sysctl --system`.
const SYSCTL_CONF: &str = "/etc/sysctl.conf";
/// The sysctl.d directories, in precedence order (a name in an earlier one masks later ones).
const CONF_DIRS: [&str; 5] = [
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
    "/lib/sysctl.d",
];
/// First line of [`TENET_CONF`].
const HEADER: &str = "# Managed by tenet; local changes will be overwritten";

/// Expands one variable element (an object, maybe in list form) into rules.
fn expand(item: &Value, out: &mut Vec<SysctlRule>) -> Result<(), String> {
    let list = match item {
        Value::Object(obj) => match obj.get("value") {
            Some(Value::Array(list)) => Some((obj, list)),
            _ => None,
        },
        _ => None,
    };
    let Some((obj, list)) = list else {
        out.push(validate(parse_rule(item)?)?);
        return Ok(());
    };
    for field in ["index", "op"] {
        if obj.contains_key(field) {
            return Err(format!(
                "{field}: not allowed with the list form of value (the list position is the index)"
            ));
        }
    }
    if list.is_empty() {
        return Err("value: empty list".into());
    }
    for (i, elem) in list.iter().enumerate() {
        let (op, val) = match elem {
            Value::Array(pair) if pair.len() == 2 => (pair[0].clone(), pair[1].clone()),
            Value::Array(_) => {
                return Err(format!("value[{i}]: expected [op, value], found {elem}"));
            }
            scalar => (Value::String("=".into()), scalar.clone()),
        };
        let mut one = obj.clone();
        one.insert("index".into(), Value::from(i));
        one.insert("op".into(), op);
        one.insert("value".into(), val);
        let rule = parse_rule(&Value::Object(one)).map_err(|e| format!("value[{i}]: {e}"))?;
        out.push(validate(rule).map_err(|e| format!("value[{i}]: {e}"))?);
    }
    Ok(())
}

/// Checks what serde cannot see field by field.
fn validate(rule: SysctlRule) -> Result<SysctlRule, String> {
    if rule.op != Op::Eq && rule.value.parse::<i128>().is_err() {
        return Err(format!(
            "value: op {} needs an integer, found {:?}",
            rule.op, rule.value
        ));
    }
    Ok(rule)
}

fn de_key<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::Error;
    let v = Value::deserialize(d)?;
    let Value::String(s) = &v else {
        return Err(D::Error::custom(format!(
            "key: expected a string, found {v}"
        )));
    };
    let s = s.trim();
    let bad = |why: &str| D::Error::custom(format!("key: {s:?} {why}"));
    if s.is_empty() {
        return Err(bad("is empty"));
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || "=*?[]!".contains(c))
    {
        return Err(bad("contains whitespace, '=' or glob characters"));
    }
    if s.starts_with('-') {
        return Err(bad("starts with '-'"));
    }
    let key = normalize_key(s);
    if proc_rel(&key)
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad("has an empty, '.' or '..' component"));
    }
    Ok(key)
}

fn de_index<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    use serde::de::Error;
    let v = Value::deserialize(d)?;
    let n = match &v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.and_then(|n| usize::try_from(n).ok()).ok_or_else(|| {
        D::Error::custom(format!("index: expected a non-negative integer, found {v}"))
    })
}

fn de_op<'de, D: Deserializer<'de>>(d: D) -> Result<Op, D::Error> {
    use serde::de::Error;
    let v = Value::deserialize(d)?;
    match v.as_str().map(str::trim) {
        Some("=") => Ok(Op::Eq),
        Some(">=") => Ok(Op::Ge),
        Some("<=") => Ok(Op::Le),
        _ => Err(D::Error::custom(format!(
            "op: unsupported operator {v} (expected \"=\", \">=\" or \"<=\")"
        ))),
    }
}

fn de_value<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::Error;
    let v = Value::deserialize(d)?;
    match &v {
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Value::String(s) if !s.trim().is_empty() && !s.trim().contains(char::is_whitespace) => {
            Ok(s.trim().to_string())
        }
        Value::String(_) => Err(D::Error::custom(format!(
            "value: {v} must be one non-empty element of the value vector (no whitespace; use index)"
        ))),
        _ => Err(D::Error::custom(format!(
            "value: expected an integer or a string, found {v}"
        ))),
    }
}

/// The dotted form of a key (sysctl.d(5): if the first separator is `/`, `.` and `/` swap).
fn normalize_key(key: &str) -> String {
    let key = key.trim();
    match key.find(['.', '/']) {
        Some(i) if key.as_bytes()[i] == b'/' => swap_separators(key),
        _ => key.to_string(),
    }
}

/// Swaps `.` and `/`.
fn swap_separators(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        })
        .collect()
}

/// The path of a dotted key under `/proc/sys`.
fn proc_rel(key: &str) -> String {
    swap_separators(key)
}

/// Whether `cur` complies with `op target`; an error names a non-integer for `>=` / `<=`.
fn satisfies(cur: &str, op: Op, target: &str) -> Result<bool, String> {
    match op {
        Op::Eq => Ok(cur == target
            || matches!((cur.parse::<i128>(), target.parse::<i128>()), (Ok(a), Ok(b)) if a == b)),
        Op::Ge | Op::Le => {
            let t = target.parse::<i128>().map_err(|_| {
                format!("target {target:?} is not an integer, cannot compare with {op}")
            })?;
            let c = cur
                .parse::<i128>()
                .map_err(|_| format!("{cur:?} is not an integer, cannot compare with {op} {t}"))?;
            Ok(if op == Op::Ge { c >= t } else { c <= t })
        }
    }
}

fn out_of_range(key: &str, idx: usize, what: &str, values: &[String], from: &str) -> String {
    format!(
        "sysctl {key}: index {idx} out of range: the {what} value {:?} ({from}) has {} element(s)",
        values.join(" "),
        values.len()
    )
}

/// The live value of a key.
struct Live {
    /// `/proc/sys/...`, for messages.
    logical: String,
    /// The path under the root prefix.
    real: RootedPath,
    /// The file content as read.
    raw: String,
    /// Its whitespace-separated elements.
    values: Vec<String>,
}

fn read_live(host: &HostView, key: &str) -> Result<Live, String> {
    let logical = format!("/proc/sys/{}", proc_rel(key));
    let real = host
        .path(&logical)
        .map_err(|e| format!("sysctl {key}: {e}"))?;
    match host.read_to_string(&real) {
        Ok(Some(raw)) => Ok(Live {
            values: raw.split_whitespace().map(String::from).collect(),
            logical,
            real,
            raw,
        }),
        Ok(None) => Err(format!(
            "sysctl {key}: unknown key (not present in {})",
            real.real().display()
        )),
        Err(e) => Err(format!("sysctl {key}: cannot read the live value: {e}")),
    }
}

/// An assignment of a key in a configuration file.
#[derive(Debug)]
struct Assignment {
    /// The file as listed (`/etc/sysctl.d/99-sysctl.conf`).
    file: PathBuf,
    /// The file read, symlinks resolved inside the root (`/etc/sysctl.conf`).
    source: PathBuf,
    /// The value's elements.
    values: Vec<String>,
}

impl Assignment {
    fn describe_source(&self) -> String {
        if self.file == self.source {
            self.file.display().to_string()
        } else {
            format!("{} -> {}", self.file.display(), self.source.display())
        }
    }
}

/// Parses one configuration line into (dotted key, elements).
fn parse_line(line: &str) -> Option<(String, Vec<String>)> {
    let (k, v) = split_line(line)?;
    Some((normalize_key(k), elements(v)))
}

/// Splits one configuration line into (key as written, value), without allocating: every
/// check reads every configuration file, for each of its rules.
fn split_line(line: &str) -> Option<(&str, &str)> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
        return None;
    }
    let (k, v) = t.split_once('=')?;
    let k = k.trim();
    Some((k.strip_prefix('-').unwrap_or(k).trim(), v))
}

/// A value's whitespace-separated elements.
fn elements(value: &str) -> Vec<String> {
    value.split_whitespace().map(String::from).collect()
}

/// Whether a key as written designates the dotted `key` (what `normalize_key` would say,
/// without allocating).
fn key_is(written: &str, key: &str) -> bool {
    let written = written.trim();
    match written.find(['.', '/']) {
        Some(i) if written.as_bytes()[i] == b'/' => {
            written.len() == key.len()
                && written.bytes().zip(key.bytes()).all(|(w, k)| {
                    let w = match w {
                        b'/' => b'.',
                        b'.' => b'/',
                        w => w,
                    };
                    w == k
                })
        }
        _ => written == key,
    }
}

/// The configuration files in application order: (as listed, resolved; `None` when masked
/// by `/dev/null`, dangling or not a regular file).
fn conf_files(host: &HostView) -> Result<Vec<(PathBuf, Option<PathBuf>)>, String> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in CONF_DIRS {
        let real = host.path(dir).map_err(|e| e.to_string())?;
        // Through the host, so that a conf file written by an earlier rule of the module and
        // not yet committed is listed.
        let Some(names) = host.read_dir_names(&real).map_err(|e| e.to_string())? else {
            continue;
        };
        for name in names {
            let Ok(name) = name.into_string() else {
                continue;
            };
            if name.len() > ".conf".len() && name.ends_with(".conf") && !name.starts_with('.') {
                by_name
                    .entry(name.clone())
                    .or_insert_with(|| Path::new(dir).join(&name));
            }
        }
    }
    let mut out = Vec::new();
    for listed in by_name.into_values().chain([PathBuf::from(SYSCTL_CONF)]) {
        let resolved = resolve(host, &listed)?;
        out.push((listed, resolved));
    }
    Ok(out)
}

/// Resolves symlinks of a logical path's last component inside the root. `None` when it
/// does not exist, is `/dev/null` or is not a regular file.
fn resolve(host: &HostView, logical: &Path) -> Result<Option<PathBuf>, String> {
    let mut cur = logical.to_path_buf();
    for _ in 0..40 {
        if cur == Path::new("/dev/null") {
            return Ok(None);
        }
        let real = host.path(&cur).map_err(|e| e.to_string())?;
        let meta = host.metadata(&real).map_err(|e| e.to_string())?;
        match meta {
            None => return Ok(None),
            Some(m) if m.file_type().is_symlink() => {
                let target = host
                    .read_link(&real)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("{}: vanished", real.real().display()))?;
                let joined = if target.is_absolute() {
                    target
                } else {
                    cur.parent().unwrap_or(Path::new("/")).join(target)
                };
                cur = lexical_normalize(&joined);
            }
            Some(m) if m.is_file() => return Ok(Some(cur)),
            Some(_) => return Ok(None),
        }
    }
    Err(format!(
        "{}: too many levels of symbolic links",
        logical.display()
    ))
}

/// Removes `.` and `..` from an absolute path without touching the file system.
fn lexical_normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The assignment of `key` that `sysctl --system` applies last, if any.
fn effective(host: &HostView, key: &str) -> Result<Option<Assignment>, String> {
    let mut last = None;
    for (file, source) in conf_files(host)? {
        let Some(source) = source else { continue };
        let real = host.path(&source).map_err(|e| e.to_string())?;
        let text = host
            .read_to_string(&real)
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        for line in text.lines() {
            if let Some((k, value)) = split_line(line)
                && key_is(k, key)
            {
                last = Some(Assignment {
                    file: file.clone(),
                    source: source.clone(),
                    values: elements(value),
                });
            }
        }
    }
    Ok(last)
}

fn fix_rule(rule: &SysctlRule, host: &Host, log: &mut Log) -> Result<(), String> {
    let key = &rule.key;
    let idx = rule.index;
    let live = read_live(host, key)?;
    if live.values.len() <= idx {
        return Err(out_of_range(key, idx, "live", &live.values, &live.logical));
    }
    let ok = |v: &str| satisfies(v, rule.op, &rule.value).unwrap_or(false);

    let mut live_values = live.values.clone();
    if !ok(&live_values[idx]) {
        let old = std::mem::replace(&mut live_values[idx], rule.value.clone());
        let sep = if live.raw.contains('\t') { "\t" } else { " " };
        host.write_kernel_file(&live.real, &format!("{}\n", live_values.join(sep)))
            .map_err(|e| format!("sysctl {key}: cannot set the live value: {e}"))?;
        log.info(format!(
            "sysctl {key}: live value set to {:?} in {} ({idx}: {old} -> {})",
            live_values.join(" "),
            live.logical,
            rule.value
        ));
    }

    let eff = effective(host, key)?;
    if eff
        .as_ref()
        .and_then(|a| a.values.get(idx))
        .is_some_and(|v| ok(v))
    {
        return Ok(());
    }
    let mut values = match &eff {
        Some(a) if a.values.len() > idx => a.values.clone(),
        _ => live_values,
    };
    if !ok(&values[idx]) {
        values[idx] = rule.value.clone();
    }
    if write_tenet_conf(host, key, &values)? {
        log.info(format!(
            "sysctl {key}: persisted {key} = {} in {TENET_CONF}",
            values.join(" ")
        ));
    }

    // A file applied after ours may still win with a non-compliant value: comment it out.
    for _ in 0..64 {
        match effective(host, key)? {
            Some(a)
                if a.file != Path::new(TENET_CONF) && !a.values.get(idx).is_some_and(|v| ok(v)) =>
            {
                comment_out(host, key, &a, log)?;
            }
            _ => return Ok(()),
        }
    }
    Err(format!(
        "sysctl {key}: could not make {TENET_CONF} the effective setting"
    ))
}

/// Sets `key` in [`TENET_CONF`], keeping its other keys; returns whether the file changed.
fn write_tenet_conf(host: &Host, key: &str, values: &[String]) -> Result<bool, String> {
    let real = host.path(TENET_CONF).map_err(|e| e.to_string())?;
    let old = host.read_to_string(&real).map_err(|e| e.to_string())?;
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    for line in old.as_deref().unwrap_or_default().lines() {
        if let Some((k, v)) = parse_line(line) {
            keys.insert(k, v.join(" "));
        }
    }
    keys.insert(key.to_string(), values.join(" "));
    let mut text = format!("{HEADER}\n");
    for (k, v) in &keys {
        text.push_str(&format!("{k} = {v}\n"));
    }
    if old.as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    host.write_atomic(&real, text.as_bytes(), None, None)
        .map_err(|e| format!("sysctl {key}: cannot write {TENET_CONF}: {e}"))?;
    Ok(true)
}

/// Comments out every line setting `key` in the file an assignment comes from.
fn comment_out(host: &Host, key: &str, a: &Assignment, log: &mut Log) -> Result<(), String> {
    let real = host.path(&a.source).map_err(|e| e.to_string())?;
    let text = host
        .read_to_string(&real)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let mut out = String::with_capacity(text.len() + 64);
    let mut count = 0;
    for line in text.split_inclusive('\n') {
        if split_line(line).is_some_and(|(k, _)| key_is(k, key)) {
            out.push_str(&format!("# tenet: moved to {TENET_CONF}: "));
            count += 1;
        }
        out.push_str(line);
    }
    if count == 0 {
        return Err(format!(
            "sysctl {key}: no line to comment out in {}",
            a.source.display()
        ));
    }
    host.write_atomic(&real, out.as_bytes(), None, None)
        .map_err(|e| format!("sysctl {key}: cannot rewrite {}: {e}", a.source.display()))?;
    log.info(format!(
        "sysctl {key}: commented out {count} line(s) in {}, applied after {TENET_CONF} with a non-compliant value {:?}",
        a.describe_source(),
        a.values.join(" ")
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

    fn put(root: &Path, logical: &str, content: &str) {
        let p = root.join(logical.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn read(root: &Path, logical: &str) -> String {
        fs::read_to_string(root.join(logical.trim_start_matches('/'))).unwrap()
    }

    #[test]
    fn case1_equal_in_conf_and_live_is_ok() {
        let d = tempfile::tempdir().unwrap();
        put(d.path(), "/etc/sysctl.conf", "kernel.printk = 3 4 1 3\n");
        put(d.path(), "/proc/sys/kernel/printk", "3\t4\t1\t3\n");
        let h = host(d.path());
        let (st, log) = check::<Sysctl>(
            &h,
            json!({"key":"kernel.printk","index":2,"op":"=","value":1}),
        );
        assert_eq!(st, Status::Ok, "{log:?}");
        assert!(
            log.iter().any(|l| l.contains("/etc/sysctl.conf")),
            "{log:?}"
        );
    }

    #[test]
    fn case2_different_value_is_fixed_live_and_persisted() {
        let d = tempfile::tempdir().unwrap();
        put(
            d.path(),
            "/etc/sysctl.conf",
            "# comment\nkernel.printk = 3 4 1 3\nvm.x = 1\n",
        );
        put(d.path(), "/proc/sys/kernel/printk", "3\t4\t1\t3\n");
        let h = host(d.path());
        let rule = json!({"key":"kernel.printk","index":2,"op":"=","value":9});
        let log = assert_class_contract::<Sysctl>(&h, &[d.path()], rule);
        assert!(
            log.iter().any(|l| l.contains("live value 1, expected = 9")),
            "{log:?}"
        );
        assert_eq!(read(d.path(), "/proc/sys/kernel/printk"), "3\t4\t9\t3\n");
        assert_eq!(
            read(d.path(), TENET_CONF),
            format!("{HEADER}\nkernel.printk = 3 4 9 3\n")
        );
        assert_eq!(
            read(d.path(), "/etc/sysctl.conf"),
            format!(
                "# comment\n# tenet: moved to {TENET_CONF}: kernel.printk = 3 4 1 3\nvm.x = 1\n"
            )
        );
    }

    #[test]
    fn case3_ge_and_le() {
        let d = tempfile::tempdir().unwrap();
        put(d.path(), "/etc/sysctl.conf", "kernel.printk = 3 4 1 3\n");
        put(d.path(), "/proc/sys/kernel/printk", "3\t4\t1\t3\n");
        let h = host(d.path());
        let (st, _) = check::<Sysctl>(
            &h,
            json!({"key":"kernel.printk","index":2,"op":">=","value":0}),
        );
        assert_eq!(st, Status::Ok);
        let (st, log) = check::<Sysctl>(
            &h,
            json!({"key":"kernel.printk","index":2,"op":"<=","value":0}),
        );
        assert_eq!(st, Status::Nok);
        assert!(
            log.iter()
                .any(|l| l.contains("live value 1, expected <= 0")),
            "{log:?}"
        );
        assert!(
            log.iter()
                .any(|l| l.contains("persisted value 1 in /etc/sysctl.conf, expected <= 0")),
            "{log:?}"
        );
    }

    #[test]
    fn case4_live_differs_from_conf() {
        let d = tempfile::tempdir().unwrap();
        put(d.path(), "/etc/sysctl.conf", "iamnotthesameinlive = 0\n");
        put(d.path(), "/proc/sys/iamnotthesameinlive", "8\n");
        let h = host(d.path());
        let rule = json!({"key":"iamnotthesameinlive","index":0,"op":"=","value":0});
        let log = assert_class_contract::<Sysctl>(&h, &[d.path()], rule);
        assert!(
            log.iter().any(|l| l.contains("live value 8, expected = 0")),
            "{log:?}"
        );
        assert!(
            !log.iter()
                .any(|l| l.contains("persisted") && l.contains("expected")),
            "{log:?}"
        );
        assert_eq!(read(d.path(), "/proc/sys/iamnotthesameinlive"), "0\n");
        // The persisted value already complied: no file written.
        assert!(!d.path().join("etc/sysctl.d/99-tenet.conf").exists());
        assert_eq!(
            read(d.path(), "/etc/sysctl.conf"),
            "iamnotthesameinlive = 0\n"
        );
    }

    #[test]
    fn case5_key_absent_from_conf_is_persisted_from_live() {
        let d = tempfile::tempdir().unwrap();
        put(d.path(), "/etc/sysctl.conf", "kernel.printk = 3 4 1 3\n");
        put(d.path(), "/proc/sys/test", "1 2 3 4\n");
        let h = host(d.path());
        let rule = json!({"key":"test","index":0,"op":"=","value":1});
        let log = assert_class_contract::<Sysctl>(&h, &[d.path()], rule);
        assert!(log.iter().any(|l| l.contains("not persisted")), "{log:?}");
        assert_eq!(
            read(d.path(), TENET_CONF),
            format!("{HEADER}\ntest = 1 2 3 4\n")
        );
        assert_eq!(read(d.path(), "/proc/sys/test"), "1 2 3 4\n");
        assert_eq!(
            read(d.path(), "/etc/sysctl.conf"),
            "kernel.printk = 3 4 1 3\n"
        );
    }

    #[test]
    fn case6_last_duplicate_wins_and_is_moved() {
        let d = tempfile::tempdir().unwrap();
        put(
            d.path(),
            "/etc/sysctl.conf",
            "kernel.printk = 3 4 1 3\nkernel.printk = 0 1 2 3\n",
        );
        put(d.path(), "/proc/sys/kernel/printk", "3\t4\t1\t3\n");
        let h = host(d.path());
        let rule = json!({"key":"kernel.printk","index":0,"op":"=","value":3});
        let log = assert_class_contract::<Sysctl>(&h, &[d.path()], rule);
        assert!(
            log.iter()
                .any(|l| l.contains("persisted value 0 in /etc/sysctl.conf, expected = 3")),
            "{log:?}"
        );
        assert_eq!(
            read(d.path(), TENET_CONF),
            format!("{HEADER}\nkernel.printk = 3 1 2 3\n")
        );
        let conf = read(d.path(), "/etc/sysctl.conf");
        assert_eq!(
            conf.lines()
                .filter(|l| l.starts_with("# tenet: moved to"))
                .count(),
            2,
            "{conf}"
        );
        assert_eq!(read(d.path(), "/proc/sys/kernel/printk"), "3\t4\t1\t3\n");
    }

    #[test]
    fn fixture_rules_compose_on_one_key() {
        let d = tempfile::tempdir().unwrap();
        put(
            d.path(),
            "/proc/sys/net/ipv4/ip_local_port_range",
            "32768\t60999\n",
        );
        put(d.path(), "/proc/sys/vm/max_map_count", "65530\n");
        put(d.path(), "/proc/sys/vm/swappiness", "60\n");
        put(
            d.path(),
            "/etc/sysctl.d/other.conf",
            "# unrelated\nkernel.x = 1\n",
        );
        put(d.path(), TENET_CONF, &format!("{HEADER}\nkernel.y = 2\n"));
        let h = host(d.path());
        let rules = json!([
            {"key":"net.ipv4.ip_local_port_range","index":0,"op":">=","value":1025},
            {"key":"net.ipv4.ip_local_port_range","index":1,"op":">=","value":65534},
            {"key":"vm.max_map_count","index":0,"op":">=","value":200000},
            {"key":"vm.swappiness","index":0,"op":">=","value":5}
        ]);
        assert_class_contract::<Sysctl>(&h, &[d.path()], rules);
        assert_eq!(
            read(d.path(), "/proc/sys/net/ipv4/ip_local_port_range"),
            "32768\t65534\n"
        );
        assert_eq!(read(d.path(), "/proc/sys/vm/max_map_count"), "200000\n");
        assert_eq!(read(d.path(), "/proc/sys/vm/swappiness"), "60\n");
        assert_eq!(
            read(d.path(), TENET_CONF),
            format!(
                "{HEADER}\nkernel.y = 2\nnet.ipv4.ip_local_port_range = 32768 65534\nvm.max_map_count = 200000\nvm.swappiness = 60\n"
            )
        );
        assert_eq!(
            read(d.path(), "/etc/sysctl.d/other.conf"),
            "# unrelated\nkernel.x = 1\n"
        );
    }

    #[test]
    fn index_out_of_range_is_nok_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        put(d.path(), "/proc/sys/vm/swappiness", "60\n");
        put(d.path(), "/etc/sysctl.conf", "vm.swappiness = 60\n");
        let h = host(d.path());
        let rule = json!({"key":"vm.swappiness","index":3,"value":1});
        let (st, log) = check::<Sysctl>(&h, rule.clone());
        assert_eq!(st, Status::Nok);
        assert!(
            log.iter()
                .any(|l| l.contains("index 3 out of range") && l.contains("live")),
            "{log:?}"
        );
        assert!(
            log.iter()
                .any(|l| l.contains("index 3 out of range") && l.contains("persisted")),
            "{log:?}"
        );
        let (st, log) = fix::<Sysctl>(&h, rule);
        assert_eq!(st, Status::Nok);
        assert!(
            log.iter().any(|l| l.contains("index 3 out of range")),
            "{log:?}"
        );
        assert_eq!(read(d.path(), "/proc/sys/vm/swappiness"), "60\n");
    }

    #[test]
    fn unknown_key_and_non_integer() {
        let d = tempfile::tempdir().unwrap();
        put(d.path(), "/proc/sys/kernel/core_pattern", "core\n");
        let h = host(d.path());
        let (st, log) = check::<Sysctl>(&h, json!({"key":"vm.nosuch","value":1}));
        assert_eq!(st, Status::Nok);
        assert!(
            log.iter()
                .any(|l| l.contains("unknown key") && l.contains("proc/sys/vm/nosuch")),
            "{log:?}"
        );
        let (st, _) = fix::<Sysctl>(&h, json!({"key":"vm.nosuch","value":1}));
        assert_eq!(st, Status::Nok);
        let (st, log) =
            check::<Sysctl>(&h, json!({"key":"kernel.core_pattern","op":">=","value":1}));
        assert_eq!(st, Status::Nok);
        assert!(
            log.iter().any(|l| l.contains("\"core\" is not an integer")),
            "{log:?}"
        );
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (rule, field) in [
            (json!({"key":"vm.swappiness","op":">","value":1}), "op"),
            (json!({"key":"vm.swappiness","op":"<","value":1}), "op"),
            (json!({"key":"vm.swappiness","op":"!=","value":1}), "op"),
            (
                json!({"key":"vm.swappiness","op":">=","value":"abc"}),
                "value",
            ),
            (json!({"key":"vm.swappiness","value":1.5}), "value"),
            (json!({"key":"vm.swappiness","value":"1 2"}), "value"),
            (json!({"key":"vm.swappiness","index":-1,"value":1}), "index"),
            (json!({"key":"vm..swappiness","value":1}), "key"),
            (json!({"key":"vm.*","value":1}), "key"),
            (json!({"key":"vm.swappiness","value":1,"extra":1}), "extra"),
            (json!({"key":"vm.swappiness"}), "value"),
            (json!({"key":"vm.swappiness","value":[[">",1]]}), "op"),
            (
                json!({"key":"vm.swappiness","index":0,"value":[1]}),
                "index",
            ),
        ] {
            let err = Sysctl::rules(&rule).expect_err(&rule.to_string());
            assert!(err.contains(field), "{rule}: {err}");
        }
    }

    #[test]
    fn precedence_follows_sysctl_system() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        put(d.path(), "/proc/sys/vm/swappiness", "10\n");
        put(
            d.path(),
            "/usr/lib/sysctl.d/50-x.conf",
            "vm.swappiness = 1\n",
        );
        // Masks /usr/lib/sysctl.d/50-x.conf.
        put(d.path(), "/etc/sysctl.d/50-x.conf", "; nothing\n");
        let view = h.view();
        assert!(effective(view, "vm.swappiness").unwrap().is_none());
        // Sorted by name across directories: 60-y (run) after 55-a (etc).
        put(d.path(), "/etc/sysctl.d/55-a.conf", "vm.swappiness = 2\n");
        put(d.path(), "/run/sysctl.d/60-y.conf", "-vm/swappiness=3\n");
        let a = effective(view, "vm.swappiness").unwrap().unwrap();
        assert_eq!(
            (a.file.as_path(), a.values.clone()),
            (Path::new("/run/sysctl.d/60-y.conf"), vec!["3".to_string()])
        );
        // /etc/sysctl.conf last of all.
        put(d.path(), "/etc/sysctl.conf", "vm.swappiness = 60\n");
        put(
            d.path(),
            "/etc/sysctl.d/99-zzz.conf",
            "vm.swappiness = 30\n",
        );
        let (st, log) = check::<Sysctl>(&h, json!({"key":"vm.swappiness","value":10}));
        assert_eq!(st, Status::Nok);
        assert!(
            log.iter()
                .any(|l| l.contains("persisted value 60 in /etc/sysctl.conf, expected = 10")),
            "{log:?}"
        );

        let log = assert_class_contract::<Sysctl>(
            &h,
            &[d.path()],
            json!({"key":"vm.swappiness","value":10}),
        );
        assert!(
            log.iter().any(|l| l.contains("live value 10, ok")),
            "{log:?}"
        );
        assert_eq!(
            read(d.path(), TENET_CONF),
            format!("{HEADER}\nvm.swappiness = 10\n")
        );
        assert!(read(d.path(), "/etc/sysctl.conf").starts_with("# tenet: moved to"));
        assert!(read(d.path(), "/etc/sysctl.d/99-zzz.conf").starts_with("# tenet: moved to"));
        // Files applied before ours are left alone.
        assert_eq!(
            read(d.path(), "/etc/sysctl.d/55-a.conf"),
            "vm.swappiness = 2\n"
        );
        assert_eq!(
            read(d.path(), "/run/sysctl.d/60-y.conf"),
            "-vm/swappiness=3\n"
        );
        let a = effective(view, "vm.swappiness").unwrap().unwrap();
        assert_eq!(a.file, Path::new(TENET_CONF));
    }

    #[test]
    fn a_later_compliant_file_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        put(d.path(), "/proc/sys/vm/swappiness", "1\n");
        put(d.path(), "/etc/sysctl.conf", "vm.swappiness = 20\n");
        assert_class_contract::<Sysctl>(
            &h,
            &[d.path()],
            json!({"key":"vm.swappiness","op":">=","value":5}),
        );
        assert_eq!(read(d.path(), "/proc/sys/vm/swappiness"), "5\n");
        assert_eq!(read(d.path(), "/etc/sysctl.conf"), "vm.swappiness = 20\n");
        assert!(!d.path().join("etc/sysctl.d/99-tenet.conf").exists());
    }

    #[test]
    fn symlinked_sysctl_conf_stays_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        put(d.path(), "/proc/sys/vm/swappiness", "60\n");
        put(d.path(), "/etc/sysctl.conf", "vm.swappiness = 60\n");
        fs::create_dir_all(d.path().join("etc/sysctl.d")).unwrap();
        std::os::unix::fs::symlink(
            "../sysctl.conf",
            d.path().join("etc/sysctl.d/99-sysctl.conf"),
        )
        .unwrap();
        // An absolute link must resolve inside the root, and /dev/null masks.
        fs::create_dir_all(d.path().join("usr/lib/sysctl.d")).unwrap();
        std::os::unix::fs::symlink(
            "/etc/sysctl.conf",
            d.path().join("usr/lib/sysctl.d/10-abs.conf"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/null", d.path().join("etc/sysctl.d/20-masked.conf"))
            .unwrap();
        put(
            d.path(),
            "/usr/lib/sysctl.d/20-masked.conf",
            "vm.swappiness = 99\n",
        );
        let (_, log) = check::<Sysctl>(&h, json!({"key":"vm.swappiness","value":10}));
        assert!(
            log.iter()
                .any(|l| l.contains("persisted value 60 in /etc/sysctl.conf")),
            "{log:?}"
        );
        assert_class_contract::<Sysctl>(&h, &[d.path()], json!({"key":"vm.swappiness","value":10}));
        let link = d.path().join("etc/sysctl.d/99-sysctl.conf");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(read(d.path(), "/etc/sysctl.conf").starts_with("# tenet: moved to"));
        assert_eq!(
            read(d.path(), "/usr/lib/sysctl.d/20-masked.conf"),
            "vm.swappiness = 99\n"
        );
    }

    #[test]
    fn list_form_expands_by_position() {
        let rules =
            Sysctl::rules(&json!({"key":"kernel.printk","value":[["=",3],[">=",4]]})).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            (rules[1].index, rules[1].op, rules[1].value.as_str()),
            (1, Op::Ge, "4")
        );
        let rules =
            Sysctl::rules(&json!([{"key":"a.b","value":[1, "x"]}, {"key":"c","value":2}])).unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(
            (rules[1].index, rules[1].op, rules[1].value.as_str()),
            (1, Op::Eq, "x")
        );

        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        put(d.path(), "/proc/sys/kernel/printk", "3\t4\t1\t3\n");
        put(d.path(), "/etc/sysctl.conf", "kernel.printk = 4 4 1 3\n");
        assert_class_contract::<Sysctl>(
            &h,
            &[d.path()],
            json!({"key":"kernel.printk","value":[["=",3],[">=",7],["<=",1]]}),
        );
        assert_eq!(read(d.path(), "/proc/sys/kernel/printk"), "3\t7\t1\t3\n");
        assert_eq!(
            read(d.path(), TENET_CONF),
            format!("{HEADER}\nkernel.printk = 3 7 1 3\n")
        );
    }

    #[test]
    fn slash_keys_follow_sysctl_d() {
        let rules =
            Sysctl::rules(&json!({"key":"net/ipv4/conf/eth0.100/rp_filter","value":1})).unwrap();
        assert_eq!(rules[0].key, "net.ipv4.conf.eth0/100.rp_filter");
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        put(
            d.path(),
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter",
            "0\n",
        );
        put(
            d.path(),
            "/etc/sysctl.d/10-net.conf",
            "net/ipv4/conf/eth0.100/rp_filter = 2\n",
        );
        assert_class_contract::<Sysctl>(
            &h,
            &[d.path()],
            json!({"key":"net.ipv4.conf.eth0/100.rp_filter","value":1}),
        );
        assert_eq!(
            read(d.path(), "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"),
            "1\n"
        );
        assert_eq!(
            read(d.path(), TENET_CONF),
            format!("{HEADER}\nnet.ipv4.conf.eth0/100.rp_filter = 1\n")
        );
    }

    proptest::proptest! {
        /// `key_is` (used on every line of every conf file, without allocating) agrees with
        /// `normalize_key`.
        #[test]
        fn key_is_agrees_with_normalize_key(
            written in "[ -]?[a-z0-9]{0,3}([./][a-z0-9]{0,3}){0,3} ?",
            other in "[a-z0-9]{0,3}([./][a-z0-9]{0,3}){0,3}",
        ) {
            let normalized = normalize_key(&written);
            proptest::prop_assert!(key_is(&written, &normalized));
            proptest::prop_assert_eq!(key_is(&written, &other), normalized == other);
        }
    }
}

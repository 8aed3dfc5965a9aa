//! The `file` class: the content, mode and owner of a file, or the existence, mode and owner of
//! a directory.
//!
//! OpenSVC name `file` (object script `files.py`; var classes `file`, `files`). A rule is
//! `{"path": "/etc/motd", "fmt": "hello", "mode": 644, "uid": "root", "gid": 0}`:
//!
//! - a `path` ending with `/` is a directory: it is created (with its parents) and given the
//!   mode and owner; `fmt`, `ref` and `template` are refused for it;
//! - otherwise the file's whole content must equal `fmt` (text, `%%HOSTNAME%%` and
//!   `%%SHORT_HOSTNAME%%` substituted, a final newline added when missing), the body of `ref`
//!   (used verbatim), or the rendering of `template` (used verbatim);
//! - `mode` is octal digits, as a JSON number (`644`) or a string (`"0644"`, `"0o644"`);
//! - `uid` / `gid` are numbers or names looked up in the managed system's `etc/passwd` and
//!   `etc/group`.
//!
//! Templated rules (Tenet additions, documented in `rulesets/README.md`, "Templated files"):
//! - `template = "name"` renders a template of the library with the module's variables by
//!   name, `nodes.*` (node facts), `services.*` and `svc` (service runs), the rule's `vars`
//!   and, with `foreach`, the item;
//! - `foreach = { glob = "/{{svc}}/pod*" }` or `{ list = [...] }` makes one rule manage one
//!   file per item (`item`, or the name given by `as`, and `loop.index` / `loop.number` /
//!   `loop.count`); a glob is expanded under the root prefix at each check and fix;
//! - with either, `path` and the string values of `vars` are templates too.
//!
//! check reports the content difference as a unified diff, then each differing attribute;
//! fix rewrites the file atomically (the old one is backed up) only when its content differs,
//! then changes only the attributes that differ. fixable is n/a, as in OpenSVC.
//!
//! Large files: the content on disk is compared with the wanted bytes 64 KiB at a time,
//! stopping at the first difference (a file of another length is not read at all), so memory
//! stays bounded whatever the file's size. A diff is shown only when both sides are at most
//! 1 MiB; above that, check reports both sizes, the offset of the first
//! difference (equal lengths) and both SHA-256 digests, the file's computed reading 64 KiB at
//! a time.
//!
//! Hard links: the new content is a new file renamed over the path (atomic: a reader or a
//! crash sees the old file or the new one). Other hard links to the replaced file keep the
//! old content; fix says so ("had N other hard link(s)") when the file had any. OpenSVC
//! rewrites the file in place instead, which keeps the links but can leave a torn file.
//!
//! Paths are resolved inside the root prefix (symbolic links as if the root prefix were `/`);
//! a missing file behind a link that leads nowhere there is reported with the link, and fix
//! never creates directories through such a link.
//!
//! Differences from OpenSVC (each a row of `docs/opensvc-compat.md`, with the reason):
//! - `ref` accepts `https://` URLs (certificate verification on, 30 s timeout, no redirect to
//!   plain http) and `data:` URLs (RFC 2397). Plain `http://` and `ftp://` are refused: the
//!   content could be altered in transit. `safe://` is not supported yet. The URL is fetched
//!   by check and again by fix (OpenSVC downloads once when the object starts), and a failed
//!   download makes the rule nok instead of silently dropping it.
//! - A rule that cannot be applied (several or none of `fmt`/`ref`/`template`, a directory
//!   with content, an unknown user, a template missing a variable) is nok at check time with
//!   a message naming the field; a malformed value (`"mode": "abc"`, `"mode": 999`, an
//!   unknown field, an unknown template, a template syntax error in `path`) is refused when
//!   the rule is loaded.
//! - The path is managed as it is: a symlink, a device or a directory where a regular file is
//!   wanted (or anything but a directory where a directory is wanted) is nok, and fix refuses
//!   to replace it instead of writing through the link or clobbering it.
//! - Created parent directories get default permissions; OpenSVC also chowns them to the
//!   rule's owner (best effort).
//! - Content is compared as bytes in-process (no `diff` command); binary content is reported
//!   by size only, content over 1 MiB by size and digest.
//! - A float `fmt` is written as Python's `str()` prints it (OpenSVC crashes on it); the owner
//!   is set before the mode, so a setuid mode with an owner sticks.
//! - A rule that cannot be applied changes nothing (OpenSVC still writes the content before
//!   failing on an unknown owner, and chmods a directory where a file is wanted).
//! - The file is replaced, not rewritten in place: its other hard links keep the old content
//!   (reported by fix).
//!
//! The mode and owner types and helpers ([`Mode`], [`Owner`], `Attrs`) live in
//! [`super::common`], shared with the `fileprop` class.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::{Map, Value};

pub use super::common::decode_data_url;
use super::common::{
    Attrs, Mode, Owner, de_gid, de_uid, fetch_ref, report_difference, target, through_link,
    wrong_kind,
};
use crate::class::{Class, RuleContext};
use crate::host::{Host, HostView, RootedPath};
use crate::status::{Log, Status};

/// One `file` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRule {
    /// Absolute path in the managed system; a trailing `/` makes it a directory. A template
    /// when the rule has `template` or `foreach`.
    pub path: String,
    /// The file's content, as text. `%%HOSTNAME%%` and `%%SHORT_HOSTNAME%%` are replaced by
    /// the node name (full or up to the first dot), and a final newline is added when missing.
    /// A JSON number or boolean is written as OpenSVC (Python's `str()`) prints it: `42`,
    /// `2.5`, `1e+16`, `True`. Exclusive with `ref` and `template`.
    #[serde(default, deserialize_with = "de_fmt")]
    pub fmt: Option<String>,
    /// Where the content comes from: an `https://` URL or a `data:` URL; used verbatim.
    /// Exclusive with `fmt` and `template`.
    #[serde(default, rename = "ref")]
    pub reference: Option<String>,
    /// The name of a template of the library (`templates/library/`, `--template-dir`) whose
    /// rendering is the file's content, verbatim. Exclusive with `fmt` and `ref`.
    #[serde(default)]
    pub template: Option<String>,
    /// Variables for this rule's templates, over the module's: a string value is itself a
    /// template, rendered in order (per item with `foreach`), so it may use the item and the
    /// entries before it; other values are taken as they are.
    #[serde(default)]
    pub vars: Option<Map<String, Value>>,
    /// One file per item of a list or of a glob's matches.
    #[serde(default)]
    pub foreach: Option<Foreach>,
    /// Permission bits, octal (`644`, `"0644"`, `"0o644"`); unset leaves them alone (a created
    /// file gets 0644).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Owner, a user id or name; unset leaves it alone.
    #[serde(default, deserialize_with = "de_uid")]
    pub uid: Option<Owner>,
    /// Group, a group id or name; unset leaves it alone.
    #[serde(default, deserialize_with = "de_gid")]
    pub gid: Option<Owner>,
    /// Templates and data, set when the rule is loaded in a context.
    #[serde(skip)]
    context: Option<RuleContext>,
}

/// `foreach`: what one rule iterates over. Exactly one of `list` and `glob`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Foreach {
    /// The items: a list (any JSON values), or a template rendering a JSON list
    /// (`"{{json (words nodes.peers)}}"`).
    #[serde(default)]
    pub list: Option<Value>,
    /// A shell glob of paths of the managed system (a template: `/{{svc}}/pod*`), expanded
    /// under the root prefix at each check and fix; each match, in sorted order, is an item
    /// `{path, name, dir}` (`/spd/pod01`, `pod01`, `/spd`). No match: nothing to manage (n/a).
    #[serde(default)]
    pub glob: Option<String>,
    /// The item's name in templates.
    #[serde(default = "default_item_name", rename = "as")]
    pub name: String,
}

fn default_item_name() -> String {
    "item".into()
}

/// The `file` class.
#[derive(Debug)]
pub struct File;

impl Class for File {
    type Rule = FileRule;

    const NAME: &'static str = "file";
    const ALIASES: &'static [&'static str] = &["files", "files.py", "file.py"];
    const DESCRIPTION: &'static str =
        "file content (text, URL or template; one file per item with foreach), mode and owner; \
         or a directory (path ending with /)";

    const STAGED_WRITES: bool = true;

    fn rules_in(value: &Value, ctx: &RuleContext) -> Result<Vec<FileRule>, String> {
        let mut rules = Self::rules(value)?;
        for rule in &mut rules {
            rule.prepare(ctx)?;
        }
        Ok(rules)
    }

    fn describe(rule: &FileRule) -> String {
        rule.path.clone()
    }

    fn check(rule: &FileRule, host: &HostView, log: &mut Log) -> Status {
        let plans = match plans(rule, host) {
            Ok(Some(plans)) => plans,
            Ok(None) => {
                log.info(format!(
                    "{}: foreach matched nothing: no file to manage",
                    rule.path
                ));
                return Status::NotApplicable;
            }
            Err(msg) => {
                log.err(format!("{}: {msg}", rule.path));
                return Status::Nok;
            }
        };
        let statuses: Vec<Status> = plans.iter().map(|p| check_plan(p, host, log)).collect();
        Status::merge_all(statuses)
    }

    fn fix(rule: &FileRule, host: &Host, log: &mut Log) -> Status {
        let plans = match plans(rule, host) {
            Ok(Some(plans)) => plans,
            Ok(None) => return Status::NotApplicable,
            Err(msg) => {
                log.err(format!("{}: {msg}", rule.path));
                return Status::Nok;
            }
        };
        let mut statuses = Vec::new();
        for plan in &plans {
            statuses.push(match fix_file(plan, host, log) {
                Ok(()) => Status::Ok,
                Err(msg) => {
                    log.err(format!("{}: {msg}", plan.shown));
                    Status::Nok
                }
            });
        }
        Status::merge_all(statuses)
    }
}

impl FileRule {
    /// Whether `path`, `vars` and the content are templates.
    fn templated(&self) -> bool {
        self.template.is_some() || self.foreach.is_some()
    }

    /// Checks what can be checked without the system (the template exists, the inline
    /// templates parse, `foreach` is well formed) and keeps the context for check and fix.
    fn prepare(&mut self, ctx: &RuleContext) -> Result<(), String> {
        let lib = &ctx.templates;
        if let Some(name) = &self.template {
            lib.require(name)
                .map_err(|e| format!("template: {e}"))?;
        }
        if let Some(f) = &self.foreach {
            match (&f.list, &f.glob) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err("foreach: give exactly one of list and glob".into());
                }
                (Some(Value::String(t)), None) => lib
                    .check_inline("foreach.list", t)
                    .map_err(|e| e.to_string())?,
                (Some(Value::Array(_)), None) => {}
                (Some(other), None) => {
                    return Err(format!(
                        "foreach.list: expected a list or a template rendering one, got {other}"
                    ));
                }
                (None, Some(g)) => lib
                    .check_inline("foreach.glob", g)
                    .map_err(|e| e.to_string())?,
            }
            if f.name.is_empty() || f.name.contains(['.', '/', ' ']) {
                return Err(format!("foreach.as: {:?} is not a variable name", f.name));
            }
        }
        if self.templated() {
            lib.check_inline("path", &self.path)
                .map_err(|e| e.to_string())?;
            for (k, v) in self.vars.iter().flatten() {
                if let Value::String(t) = v {
                    lib.check_inline(&format!("vars.{k}"), t)
                        .map_err(|e| e.to_string())?;
                }
            }
        } else if self.vars.is_some() {
            return Err("vars: only used with template or foreach".into());
        }
        self.context = Some(ctx.clone());
        Ok(())
    }
}

/// One file (or directory) made concrete: the path as shown and its real (root-prefixed)
/// path, the wanted content (`None` for a directory) and the wanted attributes with names
/// resolved.
struct Plan {
    shown: String,
    real: RootedPath,
    content: Option<Vec<u8>>,
    attrs: Attrs,
}

/// The files a rule manages: one, or one per `foreach` item; `None` when `foreach` has no
/// item.
fn plans(rule: &FileRule, host: &HostView) -> Result<Option<Vec<Plan>>, String> {
    let attrs = Attrs::resolve(host, rule.mode, rule.uid.as_ref(), rule.gid.as_ref())?;
    if !rule.templated() {
        let (real, is_dir) = target(host, &rule.path)?;
        let content = if is_dir {
            no_content_for_directory(rule)?;
            None
        } else {
            Some(wanted_content(rule, host)?)
        };
        return Ok(Some(vec![Plan {
            shown: rule.path.clone(),
            real,
            content,
            attrs,
        }]));
    }
    let default_ctx;
    let ctx = match &rule.context {
        Some(c) => c,
        None => {
            default_ctx = RuleContext::default();
            &default_ctx
        }
    };
    let lib = &ctx.templates;
    let base: Map<String, Value> = (*ctx.data).clone();
    let items: Vec<Option<Value>> = match &rule.foreach {
        None => vec![None],
        Some(f) => {
            let items = foreach_items(f, ctx, &base, host)?;
            if items.is_empty() {
                return Ok(None);
            }
            items.into_iter().map(Some).collect()
        }
    };
    // `fmt` and `ref` do not vary per item: compute them once (a URL is fetched once).
    let fixed_content = match (&rule.fmt, &rule.reference, &rule.template) {
        (_, _, Some(_)) if rule.fmt.is_some() || rule.reference.is_some() => {
            return Err("fmt, ref and template are exclusive: set only one of them".into());
        }
        (Some(_), _, _) | (_, Some(_), _) => Some(wanted_content(rule, host)?),
        _ => None,
    };
    let count = items.len();
    let mut plans: Vec<Plan> = Vec::with_capacity(count);
    for (index, item) in items.into_iter().enumerate() {
        let mut data = base.clone();
        let at = match (&item, &rule.foreach) {
            (Some(item), Some(f)) => {
                let label = match item {
                    Value::Object(o) => o.get("name").map(|n| n.to_string()),
                    Value::String(s) => Some(format!("{s:?}")),
                    other => Some(other.to_string()),
                };
                data.insert(f.name.clone(), item.clone());
                data.insert(
                    "loop".into(),
                    serde_json::json!({"index": index, "number": index + 1, "count": count}),
                );
                format!(
                    "foreach item {} ({}): ",
                    index + 1,
                    label.unwrap_or_default()
                )
            }
            _ => String::new(),
        };
        for (k, v) in rule.vars.iter().flatten() {
            let v = match v {
                Value::String(t) => Value::String(
                    lib.render_inline(&format!("vars.{k}"), t, &Value::Object(data.clone()))
                        .map_err(|e| format!("{at}{e}"))?,
                ),
                other => other.clone(),
            };
            data.insert(k.clone(), v);
        }
        let data = Value::Object(data);
        let path = lib
            .render_inline("path", &rule.path, &data)
            .map_err(|e| format!("{at}{e}"))?;
        let (real, is_dir) = target(host, &path).map_err(|e| format!("{at}{e}"))?;
        let content = if is_dir {
            no_content_for_directory(rule)?;
            None
        } else if let Some(name) = &rule.template {
            Some(
                lib.render(name, &data)
                    .map_err(|e| format!("{at}{e}"))?
                    .into_bytes(),
            )
        } else {
            Some(fixed_content.clone().ok_or(
                "fmt, ref or template is required (or a path ending with '/' to manage a directory)",
            )?)
        };
        if let Some(other) = plans.iter().position(|p| p.real == real) {
            return Err(format!(
                "{at}path {path} is also the path of item {}: give each item its own path",
                other + 1
            ));
        }
        plans.push(Plan {
            shown: path,
            real,
            content,
            attrs,
        });
    }
    Ok(Some(plans))
}

/// The items of `foreach`, in order.
fn foreach_items(
    f: &Foreach,
    ctx: &RuleContext,
    base: &Map<String, Value>,
    host: &HostView,
) -> Result<Vec<Value>, String> {
    let data = Value::Object(base.clone());
    match (&f.list, &f.glob) {
        (Some(Value::Array(items)), _) => Ok(items.clone()),
        (Some(Value::String(t)), _) => {
            let text = ctx
                .templates
                .render_inline("foreach.list", t, &data)
                .map_err(|e| e.to_string())?;
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Array(items)) => Ok(items),
                _ => Err(format!(
                    "foreach.list: rendered {text:?}, which is not a JSON list"
                )),
            }
        }
        (None, Some(g)) => {
            let pattern = ctx
                .templates
                .render_inline("foreach.glob", g, &data)
                .map_err(|e| e.to_string())?;
            let matches = host
                .glob(&pattern)
                .map_err(|e| format!("foreach.glob: {e}"))?;
            Ok(matches
                .into_iter()
                .map(|p| {
                    let path = Path::new(&p);
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let dir = path
                        .parent()
                        .map(|d| d.display().to_string())
                        .unwrap_or_else(|| "/".into());
                    serde_json::json!({"path": p, "name": name, "dir": dir})
                })
                .collect())
        }
        _ => Err("foreach: give exactly one of list and glob".into()),
    }
}

fn no_content_for_directory(rule: &FileRule) -> Result<(), String> {
    if rule.fmt.is_some() || rule.reference.is_some() || rule.template.is_some() {
        return Err(
            "the path ends with '/' (a directory): fmt, ref and template are not allowed".into(),
        );
    }
    Ok(())
}

/// Checks one planned file or directory: existence, kind, content, attributes.
fn check_plan(plan: &Plan, host: &HostView, log: &mut Log) -> Status {
    let shown = &plan.shown;
    let meta = match host.metadata(&plan.real) {
        Ok(Some(meta)) => meta,
        Ok(None) => {
            let what = if plan.content.is_some() {
                "file"
            } else {
                "directory"
            };
            log.err(format!(
                "{shown}: missing (expected a {what}){}",
                through_link(host, &plan.real)
            ));
            return Status::Nok;
        }
        Err(e) => {
            log.err(format!("{shown}: {e}"));
            return Status::Nok;
        }
    };
    if let Some(msg) = wrong_kind(&meta, plan.content.is_none()) {
        log.err(format!("{shown}: {msg}"));
        return Status::Nok;
    }
    let mut ok = true;
    if let Some(want) = &plan.content {
        match compare_content(host, &plan.real, want) {
            Ok(Comparison::Same) => {}
            Ok(Comparison::Differs { first_difference }) => {
                // The quiet re-check before a fix reads no more than it must.
                if !log.is_quiet() {
                    report_file_difference(host, plan, want, first_difference, log);
                }
                ok = false;
            }
            Ok(Comparison::Missing) => {
                log.err(format!("{shown}: missing (expected a file)"));
                return Status::Nok;
            }
            Err(e) => {
                log.err(format!("{shown}: {e}"));
                return Status::Nok;
            }
        }
    }
    ok &= plan.attrs.check(shown, &meta, log);
    if ok {
        log.info(format!("{shown}: ok"));
        Status::Ok
    } else {
        Status::Nok
    }
}

/// How the content on disk compares with the wanted bytes.
#[derive(Debug, PartialEq, Eq)]
enum Comparison {
    Same,
    /// With the offset of the first differing byte, when the lengths are equal (files of
    /// different lengths are not read).
    Differs { first_difference: Option<u64> },
    Missing,
}

/// The read size of comparisons and digests: memory stays bounded whatever the file size.
const CHUNK: usize = 64 * 1024;

/// Compares a file with `want` chunk by chunk, stopping at the first difference: a 2 GiB file
/// is never held in memory, and one of another length is not read at all.
fn compare_content(
    host: &HostView,
    path: &RootedPath,
    want: &[u8],
) -> Result<Comparison, crate::Error> {
    let Some(mut f) = host.open(path)? else {
        return Ok(Comparison::Missing);
    };
    let io = |e| crate::Error::io(&path.real(), e);
    let len = f.metadata().map_err(io)?.len();
    if len != want.len() as u64 {
        return Ok(Comparison::Differs {
            first_difference: None,
        });
    }
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0usize;
    loop {
        let n = match f.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        if n == 0 {
            return Ok(if offset == want.len() {
                Comparison::Same
            } else {
                Comparison::Differs {
                    first_difference: Some(offset as u64),
                }
            });
        }
        let end = offset + n;
        let theirs = want.get(offset..end.min(want.len())).unwrap_or_default();
        if let Some(i) = buf[..n].iter().zip(theirs).position(|(a, b)| a != b) {
            return Ok(Comparison::Differs {
                first_difference: Some((offset + i) as u64),
            });
        }
        if end > want.len() {
            // The file grew since its length was read.
            return Ok(Comparison::Differs {
                first_difference: Some(want.len() as u64),
            });
        }
        offset = end;
    }
}

/// Files larger than this (on disk or wanted) are not diffed: check reports their sizes and
/// SHA-256 digests, computed reading 64 KiB at a time. Documented in the class doc.
pub(crate) const MAX_DIFF_BYTES: u64 = 1024 * 1024;

/// Reports a content difference: a diff for small files, sizes and digests for large ones.
fn report_file_difference(
    host: &HostView,
    plan: &Plan,
    want: &[u8],
    first_difference: Option<u64>,
    log: &mut Log,
) {
    let shown = &plan.shown;
    let size = host
        .metadata(&plan.real)
        .ok()
        .flatten()
        .map_or(0, |m| m.len());
    if size <= MAX_DIFF_BYTES && want.len() as u64 <= MAX_DIFF_BYTES {
        match host.read(&plan.real) {
            Ok(Some(have)) => report_difference(shown, &have, want, log),
            Ok(None) => log.err(format!("{shown}: missing (expected a file)")),
            Err(e) => log.err(format!("{shown}: {e}")),
        }
        return;
    }
    let digest = match host.open(&plan.real) {
        Ok(Some(f)) => sha256_of(f)
            .map(|d| format!("sha256 {d}"))
            .unwrap_or_else(|e| format!("unreadable: {e}")),
        Ok(None) => "gone".into(),
        Err(e) => format!("unreadable: {e}"),
    };
    let wanted = sha256_of(want).unwrap_or_default();
    let from = first_difference
        .map(|at| format!(" from byte {at}"))
        .unwrap_or_default();
    log.err(format!(
        "{shown}: content differs{from} (on disk: {size} bytes, {digest}; expected: {} \
         bytes, sha256 {wanted}; no diff above {MAX_DIFF_BYTES} bytes)",
        want.len()
    ));
}

/// The SHA-256 of what `r` yields, read in chunks, as lower-case hex.
fn sha256_of(mut r: impl Read) -> std::io::Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Makes the path match the plan: creates the directory or writes the file when its content
/// differs, then sets the attributes that differ.
fn fix_file(plan: &Plan, host: &Host, log: &mut Log) -> Result<(), String> {
    let shown = &plan.shown;
    let existing = host.metadata(&plan.real).map_err(|e| e.to_string())?;
    if let Some(msg) = existing
        .as_ref()
        .and_then(|m| wrong_kind(m, plan.content.is_none()))
    {
        return Err(format!("{msg}; refusing to replace it"));
    }
    match (&plan.content, &existing) {
        (None, None) => {
            host.create_dir_all(&plan.real).map_err(|e| e.to_string())?;
            log.info(format!("{shown}: directory created"));
        }
        (None, Some(_)) => {}
        (Some(want), _) => {
            let same = match existing {
                Some(_) => {
                    compare_content(host, &plan.real, want).map_err(|e| e.to_string())?
                        == Comparison::Same
                }
                None => false,
            };
            if !same {
                let owner = Some((plan.attrs.uid, plan.attrs.gid));
                let written = host
                    .write_atomic(&plan.real, want, plan.attrs.mode, owner)
                    .map_err(|e| e.to_string())?;
                if existing.is_some() {
                    log.info(format!(
                        "{shown}: content rewritten (previous version backed up under {})",
                        host.var_dir().join("backup").join(host.session()).display()
                    ));
                } else {
                    log.info(format!("{shown}: created ({} bytes)", want.len()));
                }
                if let Some(note) = written.hard_link_note(shown) {
                    log.info(note);
                }
            }
        }
    }
    let meta = host
        .metadata(&plan.real)
        .map_err(|e| e.to_string())?
        .ok_or("vanished while being fixed")?;
    plan.attrs.fix(host, &plan.real, shown, &meta, log)
}

/// The content a plain file rule wants: `fmt` expanded, or `ref` fetched.
fn wanted_content(rule: &FileRule, host: &HostView) -> Result<Vec<u8>, String> {
    match (&rule.fmt, &rule.reference, &rule.template) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            Err("fmt, ref and template are exclusive: set only one of them".into())
        }
        (None, None, _) => Err(
            "fmt, ref or template is required (or a path ending with '/' to manage a directory)"
                .into(),
        ),
        (Some(fmt), None, None) => Ok(expand_fmt(fmt, host.hostname()).into_bytes()),
        (None, Some(reference), None) => fetch_ref(reference),
    }
}

/// Substitutes the node name in `fmt` and ends it with a newline (OpenSVC's rules).
fn expand_fmt(fmt: &str, hostname: &str) -> String {
    let short = hostname.split('.').next().unwrap_or(hostname);
    let mut text = fmt
        .replace("%%HOSTNAME%%", hostname)
        .replace("%%SHORT_HOSTNAME%%", short);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// serde `deserialize_with` for `fmt`: text as is; a number or a boolean as OpenSVC's
/// `parse_fmt` turns it into text (Python's `str()`); `null` as absent.
fn de_fmt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Bool(b) => Ok(Some(if b { "True" } else { "False" }.to_owned())),
        Value::Number(n) => Ok(Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => python_float(f),
            _ => n.to_string(),
        })),
        other => Err(de::Error::custom(format!(
            "fmt: expected text, a number or a boolean, got {other}"
        ))),
    }
}

/// A float as Python's `str()` / `repr()` prints it: the shortest digits that read back as
/// the same float, in fixed notation when the decimal exponent is in -4..16 (with `.0` when
/// there is no fraction), else in exponent notation with a signed two-digit exponent.
pub(crate) fn python_float(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if x == 0.0 {
        return format!("{sign}0.0");
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `1.5e-7`, `1e16`.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    // Where the decimal point goes, counted from the first digit.
    let point = exp + 1;
    let body = if !(-3..=16).contains(&point) {
        let mantissa = match digits.split_at(1) {
            (first, "") => first.to_owned(),
            (first, rest) => format!("{first}.{rest}"),
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{exp_sign}{:02}", exp.abs())
    } else if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{int}.{frac}")
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use crate::testing::{
        assert_class_contract, assert_class_contract_in, check, check_in, fix, fix_in,
    };
    use serde_json::json;
    use std::sync::Arc;
    use tenet_templates::Library;
    use crate::classes::common::MAX_DIFF_LINES;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn host(dir: &Path) -> Host {
        Host::new(dir)
            .with_var_dir(dir.join("var/lib/tenet"))
            .with_hostname("node1.example.com")
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    /// §3.y case 7: a missing file is nok, fix creates it with a final newline.
    #[test]
    fn missing_file_is_created_with_newline() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let log = assert_class_contract::<File>(
            &h,
            &[dir.path()],
            json!({"path": "/etc/sub/motd", "fmt": "content"}),
        );
        assert!(
            log.iter().any(|l| l.contains("/etc/sub/motd: missing")),
            "{log:?}"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("etc/sub/motd")).unwrap(),
            "content\n"
        );
    }

    /// §3.y case 8: the newline appended to fmt makes `content\n` compliant.
    #[test]
    fn newline_is_appended_to_fmt() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/motd"), "content\n").unwrap();
        let (st, _) = check::<File>(&h, json!({"path": "/etc/motd", "fmt": "content"}));
        assert_eq!(st, Status::Ok);
        // The whole file is compared, not a prefix.
        fs::write(dir.path().join("etc/motd"), "content\nmore\n").unwrap();
        let (st, _) = check::<File>(&h, json!({"path": "/etc/motd", "fmt": "content"}));
        assert_eq!(st, Status::Nok);
    }

    /// §3.y case 9: a mode difference is nok, fix chmods.
    #[test]
    fn mode_is_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let p = dir.path().join("etc/motd");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, "content\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let log = assert_class_contract::<File>(
            &h,
            &[dir.path()],
            json!({"path": "/etc/motd", "fmt": "content\n", "mode": 666}),
        );
        assert!(
            log.iter()
                .any(|l| l.contains("mode is 0644, expected 0666")),
            "{log:?}"
        );
        assert_eq!(mode_of(&p), 0o666);
    }

    /// §3.y case 10: a path ending with `/` is a directory; content for it is refused.
    #[test]
    fn directory_is_created_and_content_for_it_refused() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        assert_class_contract::<File>(
            &h,
            &[dir.path()],
            json!({"path": "/srv/newdir/", "mode": "0750"}),
        );
        let p = dir.path().join("srv/newdir");
        assert!(p.is_dir());
        assert_eq!(mode_of(&p), 0o750);

        let rule = json!({"path": "/srv/newdir/", "fmt": "x"});
        let (st, log) = check::<File>(&h, rule.clone());
        assert_eq!(st, Status::Nok);
        assert!(
            log.iter()
                .any(|l| l.contains("fmt, ref and template are not allowed")),
            "{log:?}"
        );
        let (st, _) = fix::<File>(&h, rule);
        assert_eq!(st, Status::Nok);
    }

    /// §3.y case 11: an unknown user is nok for check and fix, and nothing is written.
    #[test]
    fn unknown_user_is_nok() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let rule = json!({"path": "/etc/a", "uid": "nosuchuser", "fmt": "a"});
        let (st, log) = check::<File>(&h, rule.clone());
        assert_eq!(st, Status::Nok);
        assert!(
            log.iter()
                .any(|l| l.contains("uid") && l.contains("nosuchuser")),
            "{log:?}"
        );
        let (st, _) = fix::<File>(&h, rule);
        assert_eq!(st, Status::Nok);
        assert!(!dir.path().join("etc/a").exists());
    }

    #[test]
    fn content_is_fixed_with_a_diff_and_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path()).with_session("s1");
        let p = dir.path().join("etc/motd");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, "one\ntwo\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let log = assert_class_contract::<File>(
            &h,
            &[dir.path()],
            json!({"path": "/etc/motd", "fmt": "one\nthree on %%SHORT_HOSTNAME%% (%%HOSTNAME%%)"}),
        );
        assert!(log.iter().any(|l| l == "--- /etc/motd"), "{log:?}");
        assert!(log.iter().any(|l| l == "-two"), "{log:?}");
        assert!(
            log.iter()
                .any(|l| l == "+three on node1 (node1.example.com)"),
            "{log:?}"
        );
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "one\nthree on node1 (node1.example.com)\n"
        );
        assert_eq!(
            mode_of(&p),
            0o640,
            "the mode is kept when the rule sets none"
        );
        let backup = dir.path().join("var/lib/tenet/backup/s1/etc/motd");
        assert_eq!(fs::read_to_string(backup).unwrap(), "one\ntwo\n");
    }

    #[test]
    fn content_is_compared_in_chunks_and_large_files_are_not_diffed() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let p = h.path("/srv/data").unwrap();
        fs::create_dir_all(dir.path().join("srv")).unwrap();
        // Equal lengths, differing in the third chunk; a prefix; an extension; equal.
        let want: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let mut have = want.clone();
        have[2 * CHUNK + 5] ^= 1;
        for (on_disk, expected) in [
            (have.clone(), Comparison::Differs { first_difference: Some(2 * CHUNK as u64 + 5) }),
            (want[..CHUNK].to_vec(), Comparison::Differs { first_difference: None }),
            ([&want[..], b"x"].concat(), Comparison::Differs { first_difference: None }),
            (want.clone(), Comparison::Same),
        ] {
            fs::write(p.real(), &on_disk).unwrap();
            assert_eq!(compare_content(&h, &p, &want).unwrap(), expected);
        }
        assert_eq!(
            compare_content(&h, &h.path("/srv/none").unwrap(), &want).unwrap(),
            Comparison::Missing
        );

        // Over the diff limit: sizes, first difference and digests, no diff.
        let big = vec![b'a'; MAX_DIFF_BYTES as usize + 1];
        let mut other = big.clone();
        other[100] = b'b';
        fs::write(p.real(), &other).unwrap();
        let rule = json!({"path": "/srv/data", "ref": format!("data:;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&big))});
        let (st, log) = check::<File>(&h, rule.clone());
        assert_eq!(st, Status::Nok);
        let digest = |b: &[u8]| sha256_of(b).unwrap();
        let want_line = format!(
            "/srv/data: content differs from byte 100 (on disk: {n} bytes, sha256 {}; expected: \
             {n} bytes, sha256 {}; no diff above {MAX_DIFF_BYTES} bytes)",
            digest(&other),
            digest(&big),
            n = big.len()
        );
        assert_eq!(log, [want_line]);
        let (st, log) = fix::<File>(&h, rule);
        assert_eq!(st, Status::Ok, "{log:?}");
        h.sync().unwrap();
        assert_eq!(fs::read(p.real()).unwrap(), big);
    }

    #[test]
    fn fix_says_when_the_replaced_file_had_other_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/motd"), "old\n").unwrap();
        fs::hard_link(dir.path().join("etc/motd"), dir.path().join("etc/motd.link")).unwrap();
        let (st, log) = fix::<File>(&h, json!({"path": "/etc/motd", "fmt": "new"}));
        assert_eq!(st, Status::Ok, "{log:?}");
        assert!(
            log.iter().any(|l| l.starts_with(
                "/etc/motd: the replaced file had 1 other hard link(s); they keep the previous content"
            )),
            "{log:?}"
        );
        h.sync().unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("etc/motd")).unwrap(), "new\n");
        assert_eq!(
            fs::read_to_string(dir.path().join("etc/motd.link")).unwrap(),
            "old\n"
        );
        // A file without other links: no such line.
        let (st, log) = fix::<File>(&h, json!({"path": "/etc/motd", "fmt": "newer"}));
        assert_eq!(st, Status::Ok);
        assert!(log.iter().all(|l| !l.contains("hard link")), "{log:?}");
    }

    #[test]
    fn long_diffs_are_truncated_and_binary_content_summarised() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let p = dir.path().join("big");
        let old: String = (0..500).map(|i| format!("line {i}\n")).collect();
        fs::write(&p, &old).unwrap();
        let (st, log) = check::<File>(&h, json!({"path": "/big", "fmt": "other"}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("diff truncated")), "{log:?}");
        assert!(log.len() < MAX_DIFF_LINES + 10);

        fs::write(&p, b"\0\x01\x02").unwrap();
        let (st, log) = check::<File>(&h, json!({"path": "/big", "fmt": "text"}));
        assert_eq!(st, Status::Nok);
        assert!(
            log.iter()
                .any(|l| l.contains("binary content differs (3 bytes vs 5 bytes expected)")),
            "{log:?}"
        );
    }

    #[test]
    fn data_url_with_base64_is_used_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        // "hello\x00world" (binary, no newline added)
        let url = "data:application/octet-stream;base64,aGVsbG8Ad29ybGQ=";
        assert_class_contract::<File>(&h, &[dir.path()], json!({"path": "/bin.dat", "ref": url}));
        assert_eq!(
            fs::read(dir.path().join("bin.dat")).unwrap(),
            b"hello\0world"
        );
    }

    #[test]
    fn data_url_decoding() {
        assert_eq!(decode_data_url(",a%20b%zz").unwrap(), b"a b%zz");
        assert_eq!(decode_data_url("text/plain;charset=utf-8,x").unwrap(), b"x");
        assert_eq!(decode_data_url(";BASE64,aGk").unwrap(), b"hi");
        assert_eq!(decode_data_url(";base64,aG\n k=").unwrap(), b"hi");
        assert!(
            decode_data_url(";base64,!!!")
                .unwrap_err()
                .contains("base64")
        );
        assert!(decode_data_url("no comma").is_err());
    }

    #[test]
    fn plain_http_and_other_schemes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let (st, log) = check::<File>(&h, json!({"path": "/a", "ref": "http://example.com/a"}));
        assert_eq!(st, Status::Nok);
        assert!(
            log.iter()
                .any(|l| l.contains("use an https:// or data: URL")),
            "{log:?}"
        );
        let (st, _) = check::<File>(&h, json!({"path": "/a", "ref": "ftp://example.com/a"}));
        assert_eq!(st, Status::Nok);
        let (st, log) = check::<File>(&h, json!({"path": "/a", "ref": "data:,x", "fmt": "x"}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("exclusive")), "{log:?}");
        let (st, log) = check::<File>(&h, json!({"path": "/a"}));
        assert_eq!(st, Status::Nok);
        assert!(
            log.iter().any(|l| l.contains("fmt, ref or template is required")),
            "{log:?}"
        );
    }

    #[test]
    fn download_errors_name_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let rule = json!({"path": "/a", "ref": "https://127.0.0.1:1/x"});
        let (st, log) = check::<File>(&h, rule.clone());
        assert_eq!(st, Status::Nok);
        assert!(
            log.iter()
                .any(|l| l.contains("https://127.0.0.1:1/x") && l.contains("download failed")),
            "{log:?}"
        );
        let (st, _) = fix::<File>(&h, rule);
        assert_eq!(st, Status::Nok);
        assert!(!dir.path().join("a").exists());
    }

    #[test]
    fn bad_values_are_refused_at_load_naming_the_field() {
        for (rule, needle) in [
            (json!({"path": "/a", "fmt": "x", "mode": "abc"}), "mode"),
            (json!({"path": "/a", "fmt": "x", "mode": 999}), "mode"),
            (json!({"path": "/a", "fmt": "x", "mode": "0o78"}), "mode"),
            (json!({"path": "/a", "fmt": "x", "mode": -1}), "mode"),
            (json!({"path": "/a", "fmt": "x", "mode": 17777}), "mode"),
            (json!({"path": "/a", "fmt": "x", "uid": true}), "uid"),
            (json!({"path": "/a", "fmt": "x", "gid": -3}), "gid"),
            (
                json!({"path": "/a", "fmt": "x", "foo": 1}),
                "unknown field `foo`",
            ),
        ] {
            let err = File::rules(&rule).unwrap_err();
            assert!(err.contains(needle), "{rule}: {err}");
        }
        let err = File::rules(&json!({"path": "/a", "mode": 999})).unwrap_err();
        assert!(err.contains("999"), "{err}");
    }

    #[test]
    fn owner_by_name_through_the_root_passwd() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nalice:x:1234:1234::/home/alice:/bin/sh\n",
        )
        .unwrap();
        fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:4321:\n").unwrap();
        let rule = json!({"path": "/etc/owned", "fmt": "x", "uid": "alice", "gid": "staff"});
        let rules = File::rules(&rule).unwrap();
        let attrs = Attrs::resolve(h.view(), None, rules[0].uid.as_ref(), rules[0].gid.as_ref());
        assert_eq!(
            attrs,
            Ok(Attrs {
                mode: None,
                uid: Some(1234),
                gid: Some(4321)
            })
        );
        if !is_root() {
            eprintln!("SKIP: chown needs root");
            return;
        }
        let p = dir.path().join("etc/owned");
        fs::write(&p, "x\n").unwrap();
        let log = assert_class_contract::<File>(&h, &[dir.path()], rule);
        assert!(
            log.iter()
                .any(|l| l.contains("owner uid is 0, expected 1234")),
            "{log:?}"
        );
        assert!(
            log.iter()
                .any(|l| l.contains("group gid is 0, expected 4321")),
            "{log:?}"
        );
        let m = fs::metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 4321));
    }

    #[test]
    fn a_symlink_or_directory_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        fs::write(dir.path().join("real"), "x\n").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        for path in ["/link", "/d"] {
            let rule = json!({"path": path, "fmt": "x"});
            let (st, log) = check::<File>(&h, rule.clone());
            assert_eq!(st, Status::Nok);
            assert!(
                log.iter().any(|l| l.contains("expected a regular file")),
                "{log:?}"
            );
            let (st, log) = fix::<File>(&h, rule);
            assert_eq!(st, Status::Nok);
            assert!(
                log.iter().any(|l| l.contains("refusing to replace it")),
                "{log:?}"
            );
        }
        assert!(
            fs::symlink_metadata(dir.path().join("link"))
                .unwrap()
                .is_symlink()
        );
        let (st, _) = check::<File>(&h, json!({"path": "/real/"}));
        assert_eq!(st, Status::Nok);
    }

    #[test]
    fn relative_path_is_nok() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let (st, log) = check::<File>(&h, json!({"path": "etc/x", "fmt": "x"}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("not absolute")), "{log:?}");
    }

    // ---- Templated files -------------------------------------------------------------------

    /// A context with test templates and the data a module of a service run would get.
    fn ctx(templates: &[(&str, &str)], data: Value) -> RuleContext {
        let mut lib = Library::empty();
        for (name, text) in templates {
            lib.add_template(name, text, None, "test");
        }
        let Value::Object(data) = data else {
            panic!("data must be an object")
        };
        RuleContext::new(Arc::new(lib), data)
    }

    #[test]
    fn template_renders_with_module_data_facts_and_rule_vars() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let c = ctx(
            &[("motd", "{{greeting}} from {{nodes.nodename}} ({{svc}}), port {{port}}\n")],
            json!({"nodes": {"nodename": "n1"}, "svc": "spd", "port": 80, "greeting": "hello"}),
        );
        let rule = json!({
            "path": "/etc/{{svc}}/motd",
            "template": "motd",
            "vars": {"greeting": "hi {{nodes.nodename}}", "port": 8080},
            "mode": 640,
        });
        let log = assert_class_contract_in::<File>(&c, &h, &[dir.path()], rule);
        assert!(log.iter().any(|l| l.contains("/etc/spd/motd: missing")), "{log:?}");
        let p = dir.path().join("etc/spd/motd");
        // The rendering is used verbatim (no newline added, none removed).
        assert_eq!(fs::read_to_string(&p).unwrap(), "hi n1 from n1 (spd), port 8080\n");
        assert_eq!(mode_of(&p), 0o640);
    }

    /// The 50-spdc.svc.db.cnf pattern: one file per pod directory, ids computed per pod.
    #[test]
    fn foreach_glob_manages_one_file_per_match() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        for pod in ["pod01", "pod02", "pod10", ".pod03", "other"] {
            fs::create_dir_all(dir.path().join("srv/spd").join(pod)).unwrap();
        }
        let c = ctx(
            &[("cnf", "server_id={{server_id}} ({{loop.number}}/{{loop.count}} in {{item.dir}})\n")],
            json!({"svc": "spd", "first": 33}),
        );
        let rule = json!({
            "foreach": {"glob": "/srv/{{svc}}/pod*"},
            "path": "/srv/{{svc}}/{{item.name}}/conf/spd.cnf",
            "template": "cnf",
            "vars": {
                "n": "{{sub (to_int (trim_prefix item.name \"pod\")) 1}}",
                "server_id": "{{add first (mul 2 n)}}",
            },
        });
        let log = assert_class_contract_in::<File>(&c, &h, &[dir.path()], rule);
        assert_eq!(log.iter().filter(|l| l.contains(": missing")).count(), 3, "{log:?}");
        let read = |pod: &str| fs::read_to_string(dir.path().join(format!("srv/spd/{pod}/conf/spd.cnf")));
        assert_eq!(read("pod01").unwrap(), "server_id=33 (1/3 in /srv/spd)\n");
        assert_eq!(read("pod02").unwrap(), "server_id=35 (2/3 in /srv/spd)\n");
        assert_eq!(read("pod10").unwrap(), "server_id=51 (3/3 in /srv/spd)\n");
        // Hidden entries are not matched by `pod*`, as in a shell.
        assert!(read(".pod03").is_err());
        assert!(read("other").is_err());
    }

    #[test]
    fn foreach_list_with_a_name_and_a_rendered_list() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let c = ctx(&[], json!({"peers": "a b"}));
        assert_class_contract_in::<File>(
            &c,
            &h,
            &[dir.path()],
            json!({"foreach": {"list": ["x", "y"], "as": "name"}, "path": "/etc/{{name}}.conf", "fmt": "same"}),
        );
        assert_eq!(fs::read_to_string(dir.path().join("etc/x.conf")).unwrap(), "same\n");
        assert_eq!(fs::read_to_string(dir.path().join("etc/y.conf")).unwrap(), "same\n");
        assert_class_contract_in::<File>(
            &c,
            &h,
            &[dir.path()],
            json!({"foreach": {"list": "{{json (words peers)}}"}, "path": "/srv/{{item}}/", "mode": 750}),
        );
        for d in ["srv/a", "srv/b"] {
            assert_eq!(mode_of(&dir.path().join(d)), 0o750);
        }
    }

    #[test]
    fn foreach_without_items_is_not_applicable_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let c = ctx(&[("t", "x")], json!({}));
        let rule = json!({"foreach": {"glob": "/srv/none*"}, "path": "/srv/{{item.name}}/x", "template": "t"});
        let (st, log) = check_in::<File>(&c, &h, rule.clone());
        assert_eq!(st, Status::NotApplicable);
        assert!(log.iter().any(|l| l.contains("matched nothing")), "{log:?}");
        let (st, _) = fix_in::<File>(&c, &h, rule);
        assert_eq!(st, Status::NotApplicable);
        assert!(!dir.path().join("srv").exists());
    }

    #[test]
    fn templated_rule_errors_name_the_template_item_and_variable() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        let c = ctx(&[("t", "a\nid={{server_id}}\n")], json!({}));
        let load = |rule: Value| File::rules_in(&rule, &c).map(|_| ()).unwrap_err();
        // Refused at load: unknown template, bad syntax, misplaced keys.
        let e = load(json!({"path": "/a", "template": "nope"}));
        assert!(e.contains("unknown template \"nope\"") && e.contains("known templates: t"), "{e}");
        let e = load(json!({"path": "/{{#if x}}", "template": "t"}));
        assert!(e.contains("template path") && e.contains("syntax error"), "{e}");
        let e = load(json!({"path": "/a", "fmt": "x", "vars": {"a": 1}}));
        assert!(e.contains("vars: only used with template or foreach"), "{e}");
        let e = load(json!({"path": "/a", "fmt": "x", "foreach": {"list": [1], "glob": "/x*"}}));
        assert!(e.contains("exactly one of list and glob"), "{e}");
        let e = load(json!({"path": "/a", "fmt": "x", "foreach": {"list": 3}}));
        assert!(e.contains("foreach.list"), "{e}");
        let e = load(json!({"path": "/a", "template": "t", "foreach": {"lst": []}}));
        assert!(e.contains("unknown field `lst`"), "{e}");

        // Nok at check and fix, nothing written: a missing variable, named with its item.
        let rule = json!({"foreach": {"list": ["p1"]}, "path": "/srv/{{item}}.cnf", "template": "t"});
        let (st, log) = check_in::<File>(&c, &h, rule.clone());
        assert_eq!(st, Status::Nok);
        assert!(
            log.iter().any(|l| l.contains("foreach item 1 (\"p1\")")
                && l.contains("template t (test/t/template.hbs) line 2")
                && l.contains("missing variable `server_id`")),
            "{log:?}"
        );
        let (st, _) = fix_in::<File>(&c, &h, rule);
        assert_eq!(st, Status::Nok);
        assert!(!dir.path().join("srv").exists());

        // Two items rendering the same path.
        let rule = json!({"foreach": {"list": [1, 2]}, "path": "/srv/same", "fmt": "x"});
        let (st, log) = check_in::<File>(&c, &h, rule);
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("also the path of item 1")), "{log:?}");

        // Content sources stay exclusive.
        let (st, log) = check_in::<File>(&c, &h, json!({"path": "/a", "template": "t", "fmt": "x"}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("exclusive")), "{log:?}");
        let (st, log) = check_in::<File>(&c, &h, json!({"path": "/d/", "template": "t"}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("not allowed")), "{log:?}");
    }

    /// Plain rules are untouched by templating: `{{` in a plain path or fmt is literal.
    #[test]
    fn plain_rules_take_braces_literally() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        assert_class_contract::<File>(
            &h,
            &[dir.path()],
            json!({"path": "/etc/{{x}}", "fmt": "{{y}}"}),
        );
        assert_eq!(fs::read_to_string(dir.path().join("etc/{{x}}")).unwrap(), "{{y}}\n");
    }

    /// Issue 12 item 5: a number or boolean `fmt` is written as OpenSVC's `parse_fmt` (Python's
    /// `str()`) writes it; other JSON types are refused when the rule is loaded.
    #[test]
    fn numeric_fmt_is_written_as_python_prints_it() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path());
        for (fmt, text) in [
            (json!(42), "42\n"),
            (json!(-7), "-7\n"),
            (json!(u64::MAX), "18446744073709551615\n"),
            (json!(true), "True\n"),
            (json!(false), "False\n"),
            (json!(2.5), "2.5\n"),
        ] {
            let path = format!("/etc/n{}", text.trim());
            assert_class_contract::<File>(&h, &[dir.path()], json!({"path": path, "fmt": fmt}));
            assert_eq!(
                fs::read_to_string(dir.path().join(&path[1..])).unwrap(),
                text,
                "{fmt}"
            );
        }
        for bad in [json!([1]), json!({"a": 1})] {
            let err = File::rules(&json!({"path": "/etc/x", "fmt": bad})).unwrap_err();
            assert!(err.contains("fmt: expected text, a number or a boolean"), "{err}");
        }
    }

    /// Python's `repr(float)`, checked against the values CPython 3.11 prints.
    #[test]
    fn python_float_formatting() {
        for (x, text) in [
            (2.5, "2.5"),
            (100.0, "100.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (123456789.125, "123456789.125"),
            (1e22, "1e+22"),
            (0.1, "0.1"),
            (-3.25e-5, "-3.25e-05"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (12345678901234567.0, "1.2345678901234568e+16"),
        ] {
            assert_eq!(python_float(x), text, "{x:e}");
        }
    }
}

//! The `authkey` class: an SSH public key is authorized for a user's logins, or not.
//!
//! OpenSVC names `authkey` / `authkeys` (object scripts `authkey.py`, `authkeys.py`). A rule
//! is OpenSVC's `{"action": "add", "user": "testuser", "key": "ssh-ed25519 AAAA... c",
//! "authfile": "authorized_keys2"}` (`action` `add` or `del`), or with Tenet's spelling
//! `state = "present" | "absent"` instead of `action`. A list holds one rule per key.
//!
//! Which files: the sshd configuration of the managed system (the first of
//! `/etc/ssh/sshd_config`, `/opt/etc/sshd_config`, `/etc/opt/ssh/sshd_config`,
//! `/usr/local/etc/sshd_config`, as OpenSVC looks them up; `Include`s followed, settings
//! before the first `Match` only) gives `AuthorizedKeysFile`, with its `%h`, `%u`, `%U` and
//! `%%` tokens expanded and relative paths taken from the user's home (from `/etc/passwd`);
//! OpenSSH's default is `.ssh/authorized_keys .ssh/authorized_keys2`. A key is added to the
//! first of those files (`authfile = "authorized_keys"` names `~/.ssh/authorized_keys`
//! instead, as in OpenSVC).
//!
//! check: present when a line of one of those files (or of the file a key is added to) has
//! the same key (type and base64 blob) with the same options; the comment does not count.
//! sshd must also be able to use it: the file and its directories up to the home belong to
//! the user or root and are not writable by group or others (`StrictModes`), and, when
//! `AllowUsers` / `AllowGroups` are set, they let the user in. Absent when no line of those
//! files, nor of `~/.ssh/authorized_keys`, holds the key, whatever its options.
//!
//! fix: adds the key line as the rule writes it (the `.ssh` directory created 0700 and the file
//! 0600, both owned by the user, as sshd requires; an existing file keeps its other lines, and
//! group and other write bits are removed), appends the user (or its primary group) to
//! `AllowUsers` (`AllowGroups`) when they shut it out, then reloads sshd when the root prefix
//! is `/` and systemd runs it. Absent removes every line holding the key. Every file is
//! replaced atomically, the old one backed up.
//!
//! Differences from OpenSVC are rows of `docs/opensvc-compat.md` (`#authkey-*`).

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use super::common::{self, State};
use crate::accounts::{Accounts, PasswdEntry};
use crate::class::{Class, parse_rule};
use crate::host::{Host, HostView, RootedPath};
use crate::status::{Log, Status};

/// Where OpenSVC looks for sshd's configuration, in order.
const SSHD_CONFIGS: &[&str] = &[
    "/etc/ssh/sshd_config",
    "/opt/etc/sshd_config",
    "/etc/opt/ssh/sshd_config",
    "/usr/local/etc/sshd_config",
];

/// OpenSSH's `AuthorizedKeysFile` default.
const DEFAULT_FILES: &[&str] = &[".ssh/authorized_keys", ".ssh/authorized_keys2"];

/// How deep `Include`s may nest (sshd allows 16).
const MAX_INCLUDE_DEPTH: usize = 16;

/// The public key algorithms sshd accepts in authorized keys.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "sk-ssh-ed25519@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "ssh-dss-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
];

/// OpenSVC's `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Install the key.
    Add,
    /// Remove the key.
    Del,
}

/// OpenSVC's `authfile`: which file a key is added to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthFile {
    /// `~/.ssh/authorized_keys`.
    AuthorizedKeys,
    /// The first file of sshd's `AuthorizedKeysFile` (the default).
    AuthorizedKeys2,
}

/// One `authkey` rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    user: String,
    key: String,
    action: Option<Action>,
    state: Option<State>,
    authfile: Option<AuthFile>,
}

/// One `authkey` rule: one key for one user.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct AuthkeyRule {
    /// The user whose logins the key opens.
    pub user: String,
    /// The key line as the rule gives it (`[options] type base64 [comment]`, line breaks
    /// removed, as OpenSVC does).
    pub line: String,
    /// The key, parsed.
    key: KeyLine,
    /// Present (`action = "add"`, the default) or absent (`action = "del"`).
    pub state: State,
    /// Which file a key is added to.
    pub authfile: AuthFile,
}

impl TryFrom<RawRule> for AuthkeyRule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<AuthkeyRule, String> {
        let state = match (raw.action, raw.state) {
            (Some(_), Some(_)) => {
                return Err("give `action` (OpenSVC) or `state`, not both".into());
            }
            (Some(Action::Del), None) | (None, Some(State::Absent)) => State::Absent,
            _ => State::Present,
        };
        let user = raw.user.trim().to_owned();
        crate::accounts::check_name("user", &user)?;
        let line = raw.key.replace(['\n', '\r'], "").trim().to_owned();
        let key = parse_key_line(&line, true)?;
        Ok(AuthkeyRule {
            user,
            line,
            key,
            state,
            authfile: raw.authfile.unwrap_or(AuthFile::AuthorizedKeys2),
        })
    }
}

/// A key line of an authorized keys file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyLine {
    options: Option<String>,
    kind: String,
    blob: String,
}

impl KeyLine {
    fn same_key(&self, other: &KeyLine) -> bool {
        self.kind == other.kind && self.blob == other.blob
    }
}

/// Parses `[options] type base64 [comment]`; `None`/`Err` for anything else. `strict` (a
/// rule's key) also checks that the blob is base64 holding the key type sshd will read.
fn parse_key_line(line: &str, strict: bool) -> Result<KeyLine, String> {
    let line = line.trim();
    let bad = |why: String| Err(format!("key: {why}"));
    if line.is_empty() || line.starts_with('#') {
        return bad("empty".into());
    }
    let (options, rest) = if KEY_TYPES.iter().any(|t| {
        line.split_whitespace().next() == Some(*t)
    }) {
        (None, line)
    } else {
        // Options run to the first blank outside double quotes.
        let mut quoted = false;
        let mut escaped = false;
        let mut end = line.len();
        for (i, c) in line.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                c if c.is_whitespace() && !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        (Some(line[..end].to_owned()), line[end..].trim_start())
    };
    let mut words = rest.split_whitespace();
    let (Some(kind), Some(blob)) = (words.next(), words.next()) else {
        // `ssh-foo AAAA`: no options there, an unknown type.
        if let Some(o) = options.as_ref().filter(|o| !o.contains(['=', ','])) {
            return bad(format!(
                "unknown key type {o:?} (expected one of {})",
                KEY_TYPES.join(", ")
            ));
        }
        return bad(format!("{line:?} is not `[options] type base64 [comment]`"));
    };
    if !KEY_TYPES.contains(&kind) {
        return bad(format!(
            "unknown key type {kind:?} (expected one of {})",
            KEY_TYPES.join(", ")
        ));
    }
    if strict {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(blob))
            .map_err(|e| format!("key: the {kind} key is not valid base64: {e}"))?;
        let inner = bytes
            .get(..4)
            .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
            .and_then(|n| bytes.get(4..4 + n));
        if inner != Some(kind.as_bytes()) {
            return bad(format!(
                "the base64 blob does not hold a {kind} key (truncated or pasted wrong?)"
            ));
        }
    }
    Ok(KeyLine {
        options,
        kind: kind.to_owned(),
        blob: blob.to_owned(),
    })
}

/// The `authkey` class.
#[derive(Debug)]
pub struct Authkey;

impl Class for Authkey {
    type Rule = AuthkeyRule;

    const NAME: &'static str = "authkey";
    const ALIASES: &'static [&'static str] = &["authkeys", "authkey.py", "authkeys.py"];
    const DESCRIPTION: &'static str =
        "an SSH public key is authorized for a user (sshd's AuthorizedKeysFile), or not";

    fn rules(value: &Value) -> Result<Vec<AuthkeyRule>, String> {
        let one = |v: &Value| {
            parse_rule::<AuthkeyRule>(v).map_err(|e| {
                let user = v.get("user").and_then(Value::as_str).unwrap_or("?");
                format!("authkey for {user}: {e}")
            })
        };
        match value {
            Value::Array(items) => items.iter().map(one).collect(),
            other => Ok(vec![one(other)?]),
        }
    }

    fn describe(rule: &AuthkeyRule) -> String {
        format!(
            "{} key {} for {}",
            match rule.state {
                State::Present => "add",
                State::Absent => "del",
            },
            short(&rule.key),
            rule.user
        )
    }

    fn check(rule: &AuthkeyRule, host: &HostView, log: &mut Log) -> Status {
        match inspect(rule, host) {
            Err(e) => {
                log.err(e);
                Status::Nok
            }
            Ok(None) => {
                log.info(format!(
                    "key {} is not installed for user {} (no such account)",
                    short(&rule.key),
                    rule.user
                ));
                Status::Ok
            }
            Ok(Some(found)) => {
                let problems = found.problems(rule);
                if problems.is_empty() {
                    log.info(match rule.state {
                        State::Present => format!(
                            "key {} is installed for user {}",
                            short(&rule.key),
                            rule.user
                        ),
                        State::Absent => format!(
                            "key {} is not installed for user {}",
                            short(&rule.key),
                            rule.user
                        ),
                    });
                    return Status::Ok;
                }
                for p in problems {
                    log.err(p);
                }
                Status::Nok
            }
        }
    }

    fn fix(rule: &AuthkeyRule, host: &Host, log: &mut Log) -> Status {
        let result = match inspect(rule, host) {
            Err(e) => Err(e),
            Ok(None) => Ok(()),
            Ok(Some(found)) => match rule.state {
                State::Present => add(rule, host, &found, log),
                State::Absent => remove(rule, host, &found, log),
            },
        };
        let synced = host
            .sync()
            .map_err(|e| format!("committing the written files: {e}"));
        match result.and(synced) {
            Ok(()) => Status::Ok,
            Err(e) => {
                log.err(e);
                Status::Nok
            }
        }
    }
}

/// A key for messages: its type and the end of its blob.
fn short(k: &KeyLine) -> String {
    let tail = &k.blob[k.blob.len().saturating_sub(12)..];
    format!("{} ...{tail}", k.kind)
}

/// What sshd's configuration says, as far as keys are concerned.
#[derive(Debug, Default)]
struct Sshd {
    /// The main configuration file (`None`: none found).
    config: Option<String>,
    /// `AuthorizedKeysFile` as given (first occurrence), not expanded.
    files: Option<Vec<String>>,
    /// `AllowUsers` patterns (all occurrences).
    allow_users: Vec<String>,
    /// `AllowGroups` patterns (all occurrences).
    allow_groups: Vec<String>,
    /// Where the first `AllowUsers` / `AllowGroups` line is (file, line index).
    allow_users_at: Option<(String, usize)>,
    allow_groups_at: Option<(String, usize)>,
}

/// Splits an sshd_config line into its keyword and arguments (double quotes group words).
fn sshd_words(line: &str) -> Option<(String, Vec<String>)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (key, rest) = match line.find(|c: char| c.is_whitespace() || c == '=') {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, ""),
    };
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut has = false;
    for c in rest.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                has = true;
            }
            c if c.is_whitespace() && !quoted => {
                if has {
                    args.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            '#' if !quoted && !has => break,
            c => {
                cur.push(c);
                has = true;
            }
        }
    }
    if has {
        args.push(cur);
    }
    Some((key.to_ascii_lowercase(), args))
}

/// Reads sshd's configuration of the managed system.
fn sshd(host: &HostView) -> Result<Sshd, String> {
    let mut out = Sshd::default();
    for c in SSHD_CONFIGS {
        let p = host.path(c).map_err(|e| e.to_string())?;
        if host
            .metadata(&p)
            .map_err(|e| e.to_string())?
            .is_some_and(|m| m.is_file())
        {
            out.config = Some((*c).to_owned());
            break;
        }
    }
    let Some(main) = out.config.clone() else {
        return Ok(out);
    };
    // An explicit stack of (file, next line): Includes are read where they appear.
    let mut in_match = false;
    let mut stack: Vec<(String, Vec<String>, usize)> = Vec::new();
    let read = |path: &str| -> Result<Vec<String>, String> {
        let p = host.path(path).map_err(|e| e.to_string())?;
        Ok(host
            .read(&p)
            .map_err(|e| e.to_string())?
            .map(|b| String::from_utf8_lossy(&b).lines().map(str::to_owned).collect())
            .unwrap_or_default())
    };
    stack.push((main.clone(), read(&main)?, 0));
    while let Some((file, lines, i)) = stack.pop() {
        let Some(line) = lines.get(i).cloned() else {
            continue;
        };
        stack.push((file.clone(), lines, i + 1));
        let Some((key, args)) = sshd_words(&line) else {
            continue;
        };
        match key.as_str() {
            "match" => in_match = true,
            _ if in_match => {}
            "include" => {
                if stack.len() > MAX_INCLUDE_DEPTH {
                    return Err(format!("{file}: Include nested too deep"));
                }
                let mut included = Vec::new();
                for pattern in &args {
                    let abs = if pattern.starts_with('/') {
                        pattern.clone()
                    } else {
                        format!("/etc/ssh/{pattern}")
                    };
                    included.extend(host.glob(&abs).map_err(|e| format!("{file}: {e}"))?);
                }
                // Read in lexical order: pushed in reverse.
                for inc in included.into_iter().rev() {
                    let lines = read(&inc)?;
                    stack.push((inc, lines, 0));
                }
            }
            "authorizedkeysfile" if out.files.is_none() => out.files = Some(args),
            "allowusers" => {
                out.allow_users_at.get_or_insert((file.clone(), i));
                out.allow_users.extend(args);
            }
            "allowgroups" => {
                out.allow_groups_at.get_or_insert((file.clone(), i));
                out.allow_groups.extend(args);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Whether `name` matches one of sshd's `AllowUsers` / `AllowGroups` patterns (`*`, `?`; a
/// `user@host` pattern counts on its user part: the client host is not known here).
fn allowed(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| {
        let p = p.split('@').next().unwrap_or_default();
        glob::Pattern::new(p).is_ok_and(|p| p.matches(name))
    })
}

/// What check found for a rule whose user exists.
#[derive(Debug)]
struct Found {
    user: PasswdEntry,
    /// The user's groups (primary first).
    groups: Vec<String>,
    sshd: Sshd,
    /// The file a key is added to.
    target: String,
    /// Every file looked at, target included, with its content (`None`: missing).
    files: Vec<(String, Option<String>)>,
    /// Files (of `files`) where the rule's line is, and files where the key is.
    exact_in: Vec<String>,
    key_in: Vec<String>,
    /// Why sshd would ignore the file holding the line (StrictModes).
    unsafe_paths: Vec<String>,
}

impl Found {
    fn problems(&self, rule: &AuthkeyRule) -> Vec<String> {
        let key = short(&rule.key);
        let user = &rule.user;
        let mut out = Vec::new();
        match rule.state {
            State::Absent => {
                for f in &self.key_in {
                    out.push(format!("key {key} must be uninstalled for user {user}: it is in {f}"));
                }
            }
            State::Present => {
                if self.exact_in.is_empty() {
                    if self.key_in.is_empty() {
                        out.push(format!(
                            "key {key} must be installed for user {user} (in {})",
                            self.target
                        ));
                    } else {
                        out.push(format!(
                            "key {key} is in {} for user {user}, but with other options than \
                             the rule's; it must be installed in {}",
                            self.key_in.join(", "),
                            self.target
                        ));
                    }
                }
                out.extend(self.unsafe_paths.iter().map(|p| {
                    format!("{p}: sshd (StrictModes) ignores the keys of user {user} there")
                }));
                if let Some(at) = self.users_shut_out() {
                    out.push(at);
                }
                if let Some(at) = self.groups_shut_out() {
                    out.push(at);
                }
            }
        }
        out
    }

    fn users_shut_out(&self) -> Option<String> {
        (!self.sshd.allow_users.is_empty() && !allowed(&self.sshd.allow_users, &self.user.name))
            .then(|| {
                format!(
                    "{}: AllowUsers does not let {} in",
                    self.sshd.config.as_deref().unwrap_or_default(),
                    self.user.name
                )
            })
    }

    fn groups_shut_out(&self) -> Option<String> {
        (!self.sshd.allow_groups.is_empty()
            && !self.groups.iter().any(|g| allowed(&self.sshd.allow_groups, g)))
        .then(|| {
            format!(
                "{}: AllowGroups lets none of {}'s groups ({}) in",
                self.sshd.config.as_deref().unwrap_or_default(),
                self.user.name,
                self.groups.join(", ")
            )
        })
    }
}

/// Expands an `AuthorizedKeysFile` entry for `u` (`%%`, `%h`, `%u`, `%U`; relative to home).
fn expand(entry: &str, u: &PasswdEntry) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = entry.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('h') => out.push_str(&u.home),
            Some('u') => out.push_str(&u.name),
            Some('U') => out.push_str(&u.uid.to_string()),
            other => {
                return Err(format!(
                    "AuthorizedKeysFile {entry:?}: unknown token %{}",
                    other.map(String::from).unwrap_or_default()
                ));
            }
        }
    }
    let out = match out.strip_prefix("~/") {
        Some(rest) => format!("{}/{rest}", u.home.trim_end_matches('/')),
        None => out,
    };
    Ok(if out.starts_with('/') {
        out
    } else {
        format!("{}/{out}", u.home.trim_end_matches('/'))
    })
}

/// Reads everything a check or fix needs; `Ok(None)` when the user has no account.
fn inspect(rule: &AuthkeyRule, host: &HostView) -> Result<Option<Found>, String> {
    let user = &rule.user;
    let accounts = Accounts::load(host).map_err(|e| format!("user {user}: {e}"))?;
    let Some(u) = accounts.user(user) else {
        if rule.state == State::Absent {
            return Ok(None);
        }
        return Err(format!(
            "key {} cannot be installed for user {user}: no such account",
            short(&rule.key)
        ));
    };
    let mut groups: Vec<String> = accounts
        .group_by_gid(u.gid)
        .map(|g| g.name)
        .into_iter()
        .collect();
    for g in accounts.groups() {
        if g.members.contains(user) && !groups.contains(&g.name) {
            groups.push(g.name);
        }
    }
    let sshd = sshd(host)?;
    let configured: Vec<String> = match &sshd.files {
        Some(f) if f.len() == 1 && f[0].eq_ignore_ascii_case("none") => Vec::new(),
        Some(f) => f.clone(),
        None => DEFAULT_FILES.iter().map(|s| (*s).to_owned()).collect(),
    };
    let mut paths = Vec::new();
    for entry in &configured {
        paths.push(expand(entry, &u)?);
    }
    let home_keys = expand(DEFAULT_FILES[0], &u)?;
    let target = match rule.authfile {
        AuthFile::AuthorizedKeys => home_keys.clone(),
        AuthFile::AuthorizedKeys2 => match paths.first() {
            Some(p) => p.clone(),
            None if rule.state == State::Absent => home_keys.clone(),
            None => {
                return Err(format!(
                    "{}: AuthorizedKeysFile none: sshd reads no authorized keys for {user}",
                    sshd.config.as_deref().unwrap_or_default()
                ));
            }
        },
    };
    for extra in [&target, &home_keys] {
        if !paths.contains(extra) {
            paths.push(extra.clone());
        }
    }
    let mut found = Found {
        user: u,
        groups,
        sshd,
        target,
        files: Vec::new(),
        exact_in: Vec::new(),
        key_in: Vec::new(),
        unsafe_paths: Vec::new(),
    };
    for p in paths {
        let rooted = host.path(&p).map_err(|e| format!("{p}: {e}"))?;
        let content = match host.metadata(&rooted).map_err(|e| e.to_string())? {
            Some(m) if m.is_file() => host
                .read(&rooted)
                .map_err(|e| e.to_string())?
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            Some(m) if m.file_type().is_symlink() => host
                .read(&rooted)
                .map_err(|e| e.to_string())?
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            Some(m) => {
                return Err(format!("{p} is {}, expected a file", common::kind(&m)));
            }
            None => None,
        };
        if let Some(text) = &content {
            let keys: Vec<KeyLine> = text
                .lines()
                .filter_map(|l| parse_key_line(l, false).ok())
                .collect();
            if keys.contains(&rule.key) {
                found.exact_in.push(p.clone());
                if let Some(why) = strict_modes(host, &rooted, &found.user)? {
                    found.unsafe_paths.push(why);
                }
            }
            if keys.iter().any(|k| k.same_key(&rule.key)) {
                found.key_in.push(p.clone());
            }
        }
        found.files.push((p, content));
    }
    // The line counts in one file sshd can use; unsafe copies only matter when none is safe.
    if found.unsafe_paths.len() < found.exact_in.len() {
        found.unsafe_paths.clear();
    }
    Ok(Some(found))
}

/// Why sshd's `StrictModes` would refuse `file` for `u`: the file, and each directory from it
/// up to the home (or just its own directory outside the home), must belong to the user or
/// root and not be writable by group or others.
fn strict_modes(host: &HostView, file: &RootedPath, u: &PasswdEntry) -> Result<Option<String>, String> {
    let home = host.path(&u.home).map_err(|e| e.to_string())?;
    let under_home = file.abs().starts_with(home.abs());
    let mut path = Some(file.clone());
    let mut first = true;
    while let Some(p) = path {
        let Some(m) = host.metadata(&p).map_err(|e| e.to_string())? else {
            break;
        };
        let shown = p.abs().display().to_string();
        if m.uid() != 0 && m.uid() != u.uid {
            return Ok(Some(format!("{shown} belongs to uid {}", m.uid())));
        }
        if m.mode() & 0o022 != 0 && !m.file_type().is_symlink() {
            return Ok(Some(format!(
                "{shown} is writable by group or others (mode {:04o})",
                m.mode() & 0o7777
            )));
        }
        if !first && (!under_home || p == home) {
            break;
        }
        first = false;
        path = p.parent();
    }
    Ok(None)
}

fn add(rule: &AuthkeyRule, host: &Host, found: &Found, log: &mut Log) -> Result<(), String> {
    let u = &found.user;
    let owner = (Some(u.uid), Some(u.gid));
    let err = |e: crate::Error| e.to_string();
    let target = host.path(&found.target).map_err(err)?;
    let home = host.path(&u.home).map_err(err)?;
    if found.exact_in.is_empty() || !found.unsafe_paths.is_empty() {
        let dir = target
            .parent()
            .ok_or_else(|| format!("{}: no directory", found.target))?;
        if host.metadata(&dir).map_err(err)?.is_none() {
            host.create_dir_all(&dir).map_err(err)?;
            if dir.abs().starts_with(home.abs()) {
                host.set_owner(&dir, owner.0, owner.1).map_err(err)?;
                host.set_mode(&dir, 0o700).map_err(err)?;
            }
            log.info(format!("{} created", dir.abs().display()));
        }
        // The directories sshd walks must be the user's (or root's) and not open to others.
        let mut p = Some(dir.clone());
        while let Some(d) = p {
            let Some(m) = host.metadata(&d).map_err(err)? else {
                break;
            };
            if m.uid() != 0 && m.uid() != u.uid {
                host.set_owner(&d, owner.0, owner.1).map_err(err)?;
                log.info(format!("{}: owner set to {}", d.abs().display(), u.name));
            }
            if m.mode() & 0o022 != 0 {
                let mode = m.mode() & 0o7777 & !0o022;
                host.set_mode(&d, mode).map_err(err)?;
                log.info(format!("{}: mode set to {mode:04o}", d.abs().display()));
            }
            if d == home || !d.abs().starts_with(home.abs()) {
                break;
            }
            p = d.parent();
        }
        let old = found
            .files
            .iter()
            .find(|(p, _)| *p == found.target)
            .and_then(|(_, c)| c.clone());
        let mut content = old.clone().unwrap_or_default();
        if found.exact_in.is_empty() || !found.exact_in.contains(&found.target) {
            if !content.is_empty() && !content.ends_with('\n') {
                content.push('\n');
            }
            content.push_str(&rule.line);
            content.push('\n');
        }
        let meta = host.metadata(&target).map_err(err)?;
        if meta.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
            return Err(format!(
                "{} is a symbolic link; not replacing it with a file",
                found.target
            ));
        }
        let safe_mode = meta
            .as_ref()
            .map_or(0o600, |m| m.mode() & 0o7777 & !0o022);
        let safe_owner = match &meta {
            Some(m) if m.uid() == 0 || m.uid() == u.uid => None,
            _ => Some(owner),
        };
        if old.as_deref() != Some(content.as_str())
            || meta.as_ref().is_some_and(|m| m.mode() & 0o022 != 0)
            || safe_owner.is_some()
        {
            let written = host
                .write_atomic(&target, content.as_bytes(), Some(safe_mode), safe_owner)
                .map_err(err)?;
            if let Some(note) = written.hard_link_note(&found.target) {
                log.info(note);
            }
            log.info(format!(
                "key {} installed for user {} in {}",
                short(&rule.key),
                u.name,
                found.target
            ));
        }
    }
    allow_in_sshd(host, found, log)
}

/// Adds the user to `AllowUsers` and its primary group to `AllowGroups` when they shut it
/// out, then reloads sshd if it runs the managed system.
fn allow_in_sshd(host: &Host, found: &Found, log: &mut Log) -> Result<(), String> {
    let mut edits: Vec<((String, usize), String)> = Vec::new();
    if found.users_shut_out().is_some()
        && let Some(at) = &found.sshd.allow_users_at
    {
        edits.push((at.clone(), found.user.name.clone()));
    }
    if found.groups_shut_out().is_some()
        && let (Some(at), Some(g)) = (&found.sshd.allow_groups_at, found.groups.first())
    {
        edits.push((at.clone(), g.clone()));
    }
    if edits.is_empty() {
        return Ok(());
    }
    let err = |e: crate::Error| e.to_string();
    for ((file, index), word) in edits {
        let path = host.path(&file).map_err(err)?;
        if host
            .metadata(&path)
            .map_err(err)?
            .is_some_and(|m| m.file_type().is_symlink())
        {
            return Err(format!(
                "{file} is a symbolic link; not replacing it with a file"
            ));
        }
        let text = host
            .read(&path)
            .map_err(err)?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let Some(line) = lines.get_mut(index) else {
            return Err(format!("{file} changed while it was read"));
        };
        line.push(' ');
        line.push_str(&word);
        let mut out = lines.join("\n");
        out.push('\n');
        host.write_atomic(&path, out.as_bytes(), None, None)
            .map_err(err)?;
        log.info(format!("{file}: {word} added to line {}", index + 1));
    }
    host.sync().map_err(err)?;
    reload_sshd(host, log);
    Ok(())
}

/// Reloads sshd after its configuration changed, when the root prefix is `/` and systemd
/// runs the system; otherwise says so.
fn reload_sshd(host: &Host, log: &mut Log) {
    if let Err(why) = common::systemd_running(host) {
        log.info(format!("sshd not reloaded ({why}): reload it for the change to apply"));
        return;
    }
    for unit in ["ssh.service", "sshd.service"] {
        let active = host
            .run_query(Command::new("systemctl").args(["is-active", "--quiet", unit]))
            .is_ok_and(|o| o.status.success());
        if active {
            match host.run_change(Command::new("systemctl").args(["reload", unit])) {
                Ok(o) if o.status.success() => log.info(format!("{unit} reloaded")),
                Ok(o) => log.err(format!(
                    "systemctl reload {unit}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => log.err(format!("systemctl reload {unit}: {e}")),
            }
            return;
        }
    }
    log.info("sshd is not running: nothing to reload");
}

fn remove(rule: &AuthkeyRule, host: &Host, found: &Found, log: &mut Log) -> Result<(), String> {
    let err = |e: crate::Error| e.to_string();
    for (file, content) in &found.files {
        let Some(text) = content else { continue };
        if !found.key_in.contains(file) {
            continue;
        }
        let mut kept = String::new();
        for line in text.lines() {
            if parse_key_line(line, false).is_ok_and(|k| k.same_key(&rule.key)) {
                continue;
            }
            kept.push_str(line);
            kept.push('\n');
        }
        let path = host.path(file).map_err(err)?;
        if host
            .metadata(&path)
            .map_err(err)?
            .is_some_and(|m| m.file_type().is_symlink())
        {
            return Err(format!(
                "{file} is a symbolic link; not replacing it with a file (the key stays)"
            ));
        }
        let written = host
            .write_atomic(&path, kept.as_bytes(), None, None)
            .map_err(err)?;
        if let Some(note) = written.hard_link_note(file) {
            log.info(note);
        }
        log.info(format!(
            "key {} uninstalled for user {} from {file}",
            short(&rule.key),
            rule.user
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_class_contract, check};
    use serde_json::json;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    pub(crate) const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMDK0IhPzJfsl86GM/sDAcCh4qHymuSz4TuklYMo8XZ1 testuser@example";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBBaFmRQ7pld/v9UyUWvPQCSKsYBLaBISUId6/ICK+lxgBk5jzM7QADmR1cMs5WGvvymoaOJ1EnlZhxlIuxlyBK0= root@vm";

    fn root() -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("etc/ssh")).unwrap();
        fs::create_dir_all(r.join("home/testuser")).unwrap();
        std::os::unix::fs::chown(r.join("home/testuser"), Some(1000), Some(1000)).unwrap();
        fs::write(
            r.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\ntestuser:x:1000:1000::/home/testuser:/bin/sh\n",
        )
        .unwrap();
        fs::write(r.join("etc/group"), "root:x:0:\ntestuser:x:1000:\nssh:x:1001:testuser\n")
            .unwrap();
        let h = Host::new(r).with_var_dir(r.join("var"));
        (dir, h)
    }

    fn meta(p: &Path) -> (u32, u32, u32) {
        let m = fs::metadata(p).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    }

    #[test]
    #[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
    fn a_key_is_added_with_the_modes_sshd_requires() {
        let (dir, h) = root();
        let r = dir.path();
        let log = assert_class_contract::<Authkey>(
            &h,
            &[r],
            json!({"action": "add", "user": "testuser", "key": ED25519}),
        );
        assert!(log.iter().any(|l| l.contains("must be installed for user testuser (in /home/testuser/.ssh/authorized_keys)")), "{log:?}");
        let file = r.join("home/testuser/.ssh/authorized_keys");
        assert_eq!(fs::read_to_string(&file).unwrap(), format!("{ED25519}\n"));
        assert_eq!(meta(&file), (1000, 1000, 0o600));
        assert_eq!(meta(&r.join("home/testuser/.ssh")), (1000, 1000, 0o700));
    }

    #[test]
    #[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
    fn authorized_keys_file_tokens_and_includes() {
        let (dir, h) = root();
        let r = dir.path();
        fs::create_dir_all(r.join("etc/ssh/sshd_config.d")).unwrap();
        fs::write(
            r.join("etc/ssh/sshd_config"),
            "Include /etc/ssh/sshd_config.d/*.conf\nAuthorizedKeysFile .ssh/ignored\n",
        )
        .unwrap();
        fs::write(
            r.join("etc/ssh/sshd_config.d/10-keys.conf"),
            "# keys per user\nAuthorizedKeysFile \"/etc/ssh/keys/%u\" %h/.ssh/authorized_keys\n",
        )
        .unwrap();
        assert_class_contract::<Authkey>(
            &h,
            &[r],
            json!([{"user": "testuser", "key": ED25519}, {"user": "testuser", "key": format!("no-pty {ECDSA}"), "state": "present"}]),
        );
        let file = r.join("etc/ssh/keys/testuser");
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            format!("{ED25519}\nno-pty {ECDSA}\n")
        );
        assert_eq!(meta(&file), (1000, 1000, 0o600));
        // Outside the home, the directory is root's, as sshd wants it.
        assert_eq!(meta(&r.join("etc/ssh/keys")).0, 0);
        assert!(!r.join("home/testuser/.ssh").exists());
    }

    #[test]
    #[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
    fn a_key_elsewhere_counts_and_the_comment_does_not() {
        let (dir, h) = root();
        let r = dir.path();
        let ssh = r.join("home/testuser/.ssh");
        fs::create_dir_all(&ssh).unwrap();
        std::os::unix::fs::chown(&ssh, Some(1000), Some(1000)).unwrap();
        fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(ssh.join("authorized_keys2"), format!("{}\n", ED25519.replace("testuser@example", "other comment"))).unwrap();
        std::os::unix::fs::chown(ssh.join("authorized_keys2"), Some(1000), Some(1000)).unwrap();
        let (st, log) = check::<Authkey>(&h, json!({"user": "testuser", "key": ED25519}));
        assert_eq!(st, Status::Ok, "{log:?}");
        // Group-writable: sshd ignores it.
        fs::set_permissions(ssh.join("authorized_keys2"), fs::Permissions::from_mode(0o664)).unwrap();
        let (st, log) = check::<Authkey>(&h, json!({"user": "testuser", "key": ED25519}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("StrictModes")), "{log:?}");
    }

    #[test]
    #[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
    fn del_removes_the_key_from_every_file_whatever_its_options() {
        let (dir, h) = root();
        let r = dir.path();
        let ssh = r.join("home/testuser/.ssh");
        fs::create_dir_all(&ssh).unwrap();
        fs::write(ssh.join("authorized_keys"), format!("# mine\nfrom=\"10.0.0.1\" {ED25519}\n{ECDSA}\n")).unwrap();
        fs::write(ssh.join("authorized_keys2"), format!("{ED25519}\n")).unwrap();
        fs::set_permissions(ssh.join("authorized_keys"), fs::Permissions::from_mode(0o640)).unwrap();
        assert_class_contract::<Authkey>(
            &h,
            &[r],
            json!({"action": "del", "user": "testuser", "key": ED25519}),
        );
        assert_eq!(
            fs::read_to_string(ssh.join("authorized_keys")).unwrap(),
            format!("# mine\n{ECDSA}\n")
        );
        assert_eq!(fs::read_to_string(ssh.join("authorized_keys2")).unwrap(), "");
        assert_eq!(meta(&ssh.join("authorized_keys")).2, 0o640);
        // No account: the key is not installed.
        let (st, _) = check::<Authkey>(&h, json!({"action": "del", "user": "ghost", "key": ED25519}));
        assert_eq!(st, Status::Ok);
    }

    #[test]
    #[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
    fn allow_users_and_groups_are_extended() {
        let (dir, h) = root();
        let r = dir.path();
        fs::write(
            r.join("etc/ssh/sshd_config"),
            "Port 22\nAllowUsers root admin@10.0.0.*\nAllowGroups wheel\nMatch User x\n  AllowUsers x\n",
        )
        .unwrap();
        let log = assert_class_contract::<Authkey>(
            &h,
            &[r],
            json!({"user": "testuser", "key": ED25519}),
        );
        assert!(log.iter().any(|l| l.contains("AllowUsers does not let testuser in")), "{log:?}");
        assert!(log.iter().any(|l| l.contains("AllowGroups lets none of testuser's groups (testuser, ssh) in")), "{log:?}");
        assert_eq!(
            fs::read_to_string(r.join("etc/ssh/sshd_config")).unwrap(),
            "Port 22\nAllowUsers root admin@10.0.0.* testuser\nAllowGroups wheel testuser\nMatch User x\n  AllowUsers x\n"
        );
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (rule, want) in [
            (json!({"user": "u", "key": "ssh-rsa notbase64!"}), "key: the ssh-rsa key is not valid base64"),
            (json!({"user": "u", "key": "ssh-foo AAAA"}), "key: unknown key type"),
            (json!({"user": "u", "key": ED25519.replace("ssh-ed25519", "ssh-rsa")}), "does not hold a ssh-rsa key"),
            (json!({"user": "u", "key": ED25519, "action": "remove"}), "unknown variant `remove`"),
            (json!({"user": "u", "key": ED25519, "authfile": "keys"}), "unknown variant `keys`"),
            (json!({"user": "u", "key": ED25519, "action": "add", "state": "absent"}), "not both"),
            (json!({"user": "u"}), "missing field `key`"),
            (json!({"user": "a:b", "key": ED25519}), "user: invalid name"),
        ] {
            let err = Authkey::rules(&rule).unwrap_err();
            assert!(err.contains(want), "{rule}: {err}");
            assert!(err.starts_with("authkey for "), "{err}");
        }
        // Line breaks in a pasted key are removed, as OpenSVC does.
        let (a, b) = ED25519.split_at(40);
        let rules = Authkey::rules(&json!({"user": "u", "key": format!("{a}\n{b}")})).unwrap();
        assert_eq!(rules[0].line, ED25519);
    }

    #[test]
    fn sshd_config_words() {
        assert_eq!(
            sshd_words("  AuthorizedKeysFile=\"/a b/%u\"  .ssh/x # c"),
            Some(("authorizedkeysfile".into(), vec!["/a b/%u".into(), ".ssh/x".into()]))
        );
        assert_eq!(sshd_words("# AllowUsers x"), None);
        let u = PasswdEntry {
            name: "bob".into(),
            passwd: "x".into(),
            uid: 7,
            gid: 7,
            gecos: String::new(),
            home: "/home/bob/".into(),
            shell: String::new(),
        };
        assert_eq!(expand(".ssh/k", &u).unwrap(), "/home/bob/.ssh/k");
        assert_eq!(expand("/k/%u.%U%%", &u).unwrap(), "/k/bob.7%");
        assert!(expand("/k/%x", &u).unwrap_err().contains("%x"));
    }
}

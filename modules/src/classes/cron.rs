//! The `cron` class: entries in users' crontabs and in `/etc/cron.d`, with the ownership and
//! mode cron requires of those files.
//!
//! OpenSVC names: var_class `cron`, object scripts `cron.py` (the `ACTION:USER:SCHEDULE:
//! COMMAND:FILE` strings of the `cron` form) and `crontabentry.py` (`{"user", "check",
//! "entry"}` objects). Three spellings of a rule:
//!
//! - `"add:osvc:* * * * *:/path/to/mycron:opensvc"` (cron.py): `add` or `del` the line
//!   `SCHEDULE [USER] COMMAND`. With a FILE, the line goes to `/etc/cron.d/FILE` (or to FILE
//!   itself when it is `/etc/crontab` or `/etc/cron.d/NAME`), in the system format with the
//!   user field; without one, to USER's crontab, without it. The schedule is five fields (or
//!   an `@reboot`-style keyword); the command cannot hold `:` in this spelling.
//! - `{"action": "add", "user": "osvc", "schedule": "* * * * *", "command": "/path/to/mycron",
//!   "file": "opensvc"}`: the same, as an object (the TOML-native form; `action` defaults to
//!   `add`, `file` is optional, the command may hold `:`).
//! - `{"user": "opensvc", "check": "/path/to/mycron", "entry": "3,13 * * * * /path/to/mycron"}`
//!   (crontabentry.py): a line of USER's crontab that is not a comment matches the regular
//!   expression `check` (anywhere in the line); fix appends `entry` (`%%HOSTNAME%%` and
//!   `%%SHORT_HOSTNAME%%` substituted), which must match `check` itself.
//!
//! Users' crontabs are the files of the cron spool: `/var/spool/cron/crontabs/USER` (Debian's
//! cron), else `/var/spool/cron/USER` (cronie), else `/var/cron/tabs/USER`, the first of those
//! directories that exists under the root prefix (none: the rule is nok, fix cannot create
//! one). They must belong to the user (and, in Debian's spool, to the `crontab` group when the
//! managed system has one) with mode 0600; files of `/etc/cron.d` and `/etc/crontab` to root
//! with mode 0644 (cron ignores files others can write). check reports wrong ownership or mode
//! of an existing file; fix corrects them. Files are written atomically (old ones backed up),
//! never through the `crontab` command: cron notices the change by the files' times. Deleting
//! the last line of a file removes the file (saved under the backup directory).
//!
//! Differences from OpenSVC are the `#cron-*` rows of `docs/opensvc-compat.md`.

use std::fs::Metadata;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::common::Attrs;
use crate::class::Class;
use crate::host::{Host, HostView, RootedPath};
use crate::status::{Log, Status};

/// The spool directories of users' crontabs, in the order they are looked for.
const SPOOLS: [&str; 3] = ["/var/spool/cron/crontabs", "/var/spool/cron", "/var/cron/tabs"];
/// The directory of system crontab fragments.
const CRON_D: &str = "/etc/cron.d";
/// `@` schedules cron understands instead of five fields.
const SPECIALS: [&str; 8] = [
    "@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly",
];

/// One `cron` rule.
#[derive(Debug, Deserialize)]
#[serde(try_from = "Value")]
pub enum CronRule {
    /// A line added to or deleted from a crontab (cron.py, and the object form).
    Entry {
        /// Add (true) or delete (false).
        add: bool,
        /// The user the command runs as (and whose crontab it is, without `file`).
        user: String,
        /// Five fields, or an `@` keyword.
        schedule: String,
        /// The command.
        command: String,
        /// `/etc/crontab` or `/etc/cron.d/NAME`; `None`: the user's crontab.
        file: Option<String>,
    },
    /// A line of the user's crontab matches a pattern (crontabentry.py).
    Match {
        /// The crontab's user.
        user: String,
        /// The pattern, searched in non-comment lines.
        check: Regex,
        /// The line fix appends, before node name substitution.
        entry: String,
    },
}

/// The object form of an entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(default)]
    action: Option<String>,
    user: String,
    schedule: String,
    command: String,
    #[serde(default)]
    file: Option<String>,
}

/// The crontabentry.py form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    #[serde(default)]
    user: Option<String>,
    check: String,
    entry: String,
}

impl TryFrom<Value> for CronRule {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        match value {
            Value::String(s) => parse_line(&s),
            Value::Object(ref m) if m.contains_key("check") || m.contains_key("entry") => {
                let raw = RawMatch::deserialize(&value).map_err(|e| e.to_string())?;
                let user = match raw.user.as_deref().map(str::trim) {
                    None | Some("") => "root".to_string(),
                    Some(u) => u.to_string(),
                };
                validate_user(&user)?;
                let check = Regex::new(&raw.check)
                    .map_err(|e| format!("check: {:?} is not a valid pattern: {e}", raw.check))?;
                let entry = raw.entry.trim_end_matches('\n').to_string();
                if entry.trim().is_empty() || entry.contains('\n') {
                    return Err("entry: expected one non-empty crontab line".into());
                }
                Ok(CronRule::Match { user, check, entry })
            }
            Value::Object(_) => {
                let raw = RawEntry::deserialize(&value).map_err(|e| e.to_string())?;
                let add = match raw.action.as_deref() {
                    None | Some("add") => true,
                    Some("del") => false,
                    Some(other) => {
                        return Err(format!("action: {other:?} is not add or del"));
                    }
                };
                entry(add, raw.user, raw.schedule, raw.command, raw.file)
            }
            other => Err(format!(
                "expected \"ACTION:USER:SCHEDULE:COMMAND:FILE\" or an object, got {other}"
            )),
        }
    }
}

fn parse_line(s: &str) -> Result<CronRule, String> {
    let fields: Vec<&str> = s.split(':').collect();
    if fields.len() < 5 {
        return Err(format!(
            "{s:?}: expected ACTION:USER:SCHEDULE:COMMAND:FILE (FILE may be empty)"
        ));
    }
    if fields.len() > 5 {
        return Err(format!(
            "{s:?}: more than five ':'-separated fields (a command holding ':' needs the object \
             form {{\"action\", \"user\", \"schedule\", \"command\", \"file\"}})"
        ));
    }
    let add = match fields[0] {
        "add" => true,
        "del" => false,
        other => return Err(format!("action: {other:?} is not add or del")),
    };
    let file = (!fields[4].trim().is_empty()).then(|| fields[4].trim().to_string());
    entry(
        add,
        fields[1].to_string(),
        fields[2].to_string(),
        fields[3].to_string(),
        file,
    )
}

fn entry(
    add: bool,
    user: String,
    schedule: String,
    command: String,
    file: Option<String>,
) -> Result<CronRule, String> {
    let user = if user.trim().is_empty() {
        "root".to_string()
    } else {
        user.trim().to_string()
    };
    validate_user(&user)?;
    let words: Vec<&str> = schedule.split_whitespace().collect();
    let special = words.len() == 1 && SPECIALS.contains(&words[0]);
    if words.len() != 5 && !special {
        return Err(format!(
            "schedule: {schedule:?} is not five fields (minute hour day month weekday) or one of {}",
            SPECIALS.join(", ")
        ));
    }
    let command = command.trim().to_string();
    if command.is_empty() || command.contains('\n') {
        return Err("command: expected one non-empty line".into());
    }
    let file = match file.filter(|f| !f.trim().is_empty()) {
        None => None,
        Some(f) if f == "/etc/crontab" => Some(f),
        Some(f) => {
            let name = f.strip_prefix("/etc/cron.d/").unwrap_or(&f);
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
                && !name.starts_with('.');
            if !ok {
                return Err(format!(
                    "file: {f:?} is not a file name of {CRON_D} (letters, digits, _ - .) nor \
                     /etc/crontab"
                ));
            }
            Some(format!("{CRON_D}/{name}"))
        }
    };
    Ok(CronRule::Entry {
        add,
        user,
        schedule: words.join(" "),
        command,
        file,
    })
}

fn validate_user(user: &str) -> Result<(), String> {
    let ok = user.len() <= 32
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !user.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(format!("user: {user:?} is not a user name"))
    }
}

/// The `cron` class.
#[derive(Debug)]
pub struct Cron;

impl Class for Cron {
    type Rule = CronRule;

    const NAME: &'static str = "cron";
    const ALIASES: &'static [&'static str] =
        &["crontabentry", "cron.py", "crontabentry.py"];
    const DESCRIPTION: &'static str =
        "cron entries in users' crontabs and /etc/cron.d, with the ownership and mode cron requires";

    fn rules(value: &Value) -> Result<Vec<CronRule>, String> {
        match value {
            Value::Array(items) => items
                .iter()
                .map(|v| CronRule::try_from(v.clone()))
                .collect(),
            other => Ok(vec![CronRule::try_from(other.clone())?]),
        }
    }

    fn describe(rule: &CronRule) -> String {
        match rule {
            CronRule::Entry {
                add,
                user,
                schedule,
                command,
                file,
            } => format!(
                "{} {user}: {schedule} {command}{}",
                if *add { "add" } else { "del" },
                file.as_deref().map(|f| format!(" ({f})")).unwrap_or_default()
            ),
            CronRule::Match { user, check, .. } => format!("{user}: {}", check.as_str()),
        }
    }

    fn check(rule: &CronRule, host: &HostView, log: &mut Log) -> Status {
        match check_rule(rule, host, log) {
            Ok(true) => Status::Ok,
            Ok(false) => Status::Nok,
            Err(e) => {
                log.err(format!("{}: {e}", Self::describe(rule)));
                Status::Nok
            }
        }
    }

    fn fixable(rule: &CronRule, host: &HostView, log: &mut Log) -> Status {
        match target(rule, host) {
            Ok(_) => Status::NotApplicable,
            Err(e) => {
                log.err(e);
                Status::Nok
            }
        }
    }

    fn fix(rule: &CronRule, host: &Host, log: &mut Log) -> Status {
        match fix_rule(rule, host, log) {
            Ok(()) => Status::Ok,
            Err(e) => {
                log.err(format!("{}: {e}", Self::describe(rule)));
                Status::Nok
            }
        }
    }
}

/// The file a rule is about, its line format and the attributes cron requires of it.
struct Target {
    path: RootedPath,
    shown: String,
    attrs: Attrs,
}

fn user_of(rule: &CronRule) -> &str {
    match rule {
        CronRule::Entry { user, .. } | CronRule::Match { user, .. } => user,
    }
}

fn target(rule: &CronRule, host: &HostView) -> Result<Target, String> {
    let system = match rule {
        CronRule::Entry { file: Some(f), .. } => Some(f.clone()),
        _ => None,
    };
    if let Some(f) = system {
        return Ok(Target {
            path: host.path(&f).map_err(|e| e.to_string())?,
            shown: f,
            attrs: Attrs {
                mode: Some(0o644),
                uid: Some(0),
                gid: Some(0),
            },
        });
    }
    let user = user_of(rule);
    let mut spool = None;
    for dir in SPOOLS {
        let p = host.path(dir).map_err(|e| e.to_string())?;
        if host
            .metadata(&p)
            .map_err(|e| e.to_string())?
            .is_some_and(|m| m.is_dir())
        {
            spool = Some(dir);
            break;
        }
    }
    let spool = spool.ok_or_else(|| {
        format!(
            "no crontab spool directory under the root prefix (looked for {}): is cron installed?",
            SPOOLS.join(", ")
        )
    })?;
    let uid = host
        .uid_of(user)
        .map_err(|e| format!("user {user}: {e}"))?;
    // Debian's crontab command makes the files of its spool group crontab.
    let gid = if spool == SPOOLS[0] {
        host.gid_of("crontab").ok()
    } else {
        None
    };
    let shown = format!("{spool}/{user}");
    Ok(Target {
        path: host.path(&shown).map_err(|e| e.to_string())?,
        shown,
        attrs: Attrs {
            mode: Some(0o600),
            uid: Some(uid),
            gid: Some(gid.unwrap_or(0)),
        },
    })
}

/// The crontab line of an entry rule, for its file.
fn line_of(rule: &CronRule, host: &HostView) -> String {
    match rule {
        CronRule::Entry {
            user,
            schedule,
            command,
            file: Some(_),
            ..
        } => format!("{schedule} {user} {command}"),
        CronRule::Entry {
            schedule, command, ..
        } => format!("{schedule} {command}"),
        CronRule::Match { entry, .. } => {
            let hostname = host.hostname();
            let short = hostname.split('.').next().unwrap_or(hostname);
            entry
                .replace("%%HOSTNAME%%", hostname)
                .replace("%%SHORT_HOSTNAME%%", short)
        }
    }
}

/// The file's lines and metadata; `None` when it does not exist.
fn read(host: &HostView, t: &Target) -> Result<Option<(Vec<String>, Metadata)>, String> {
    let Some(meta) = host.metadata(&t.path).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", t.shown));
    }
    let text = host
        .read_to_string(&t.path)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    Ok(Some((text.lines().map(str::to_string).collect(), meta)))
}

/// Whether the content complies: the entry is there (add, match) or not (del).
fn content_ok(rule: &CronRule, line: &str, lines: &[String]) -> bool {
    match rule {
        CronRule::Entry { add, .. } => lines.iter().any(|l| l == line) == *add,
        CronRule::Match { check, .. } => lines
            .iter()
            .any(|l| !l.trim_start().starts_with('#') && check.is_match(l)),
    }
}

fn check_rule(rule: &CronRule, host: &HostView, log: &mut Log) -> Result<bool, String> {
    let line = line_of(rule, host);
    if let CronRule::Match { check, .. } = rule
        && !check.is_match(&line)
    {
        return Err(format!(
            "rule error: the entry {line:?} does not match the check pattern {:?}",
            check.as_str()
        ));
    }
    let t = target(rule, host)?;
    let found = read(host, &t)?;
    let lines = found.as_ref().map(|(l, _)| l.as_slice()).unwrap_or(&[]);
    let mut ok = content_ok(rule, &line, lines);
    match (rule, ok) {
        (CronRule::Entry { add: false, .. }, true) => {
            log.info(format!("{}: no line {line:?}, ok", t.shown))
        }
        (CronRule::Entry { add: false, .. }, false) => {
            log.err(format!("{}: unwanted line {line:?} found", t.shown))
        }
        (CronRule::Entry { .. }, true) => log.info(format!("{}: line {line:?} found, ok", t.shown)),
        (CronRule::Entry { .. }, false) => log.err(format!(
            "{}: line {line:?} not found{}",
            t.shown,
            if found.is_none() { " (no such file)" } else { "" }
        )),
        (CronRule::Match { check, .. }, true) => log.info(format!(
            "{}: a line matches {:?}, ok",
            t.shown,
            check.as_str()
        )),
        (CronRule::Match { check, .. }, false) => log.err(format!(
            "{}: no line matches {:?}",
            t.shown,
            check.as_str()
        )),
    }
    if let Some((_, meta)) = &found
        && !t.attrs.check(&t.shown, meta, log)
    {
        ok = false;
    }
    Ok(ok)
}

fn fix_rule(rule: &CronRule, host: &Host, log: &mut Log) -> Result<(), String> {
    let line = line_of(rule, host);
    if let CronRule::Match { check, .. } = rule
        && !check.is_match(&line)
    {
        return Err(format!(
            "rule error: the entry {line:?} does not match the check pattern {:?}",
            check.as_str()
        ));
    }
    let t = target(rule, host)?;
    let found = read(host, &t)?;
    let lines: Vec<String> = found.as_ref().map(|(l, _)| l.clone()).unwrap_or_default();
    let owner = Some((t.attrs.uid, t.attrs.gid));
    if !content_ok(rule, &line, &lines) {
        let new: Vec<String> = match rule {
            CronRule::Entry { add: false, .. } => {
                lines.into_iter().filter(|l| *l != line).collect()
            }
            _ => lines.into_iter().chain([line.clone()]).collect(),
        };
        if new.is_empty() {
            host.remove(&t.path).map_err(|e| e.to_string())?;
            log.info(format!(
                "{}: line {line:?} deleted; the file, now empty, removed",
                t.shown
            ));
            return Ok(());
        }
        let mut text = new.join("\n");
        text.push('\n');
        if found.is_none()
            && let Some(parent) = t.path.parent()
            && host
                .metadata(&parent)
                .map_err(|e| e.to_string())?
                .is_none()
        {
            return Err(format!(
                "cannot create {}: its directory does not exist",
                t.shown
            ));
        }
        host.write_atomic(&t.path, text.as_bytes(), t.attrs.mode, owner)
            .map_err(|e| e.to_string())?;
        let verb = match rule {
            CronRule::Entry { add: false, .. } => "deleted",
            _ => "added",
        };
        log.info(format!("{}: line {line:?} {verb}", t.shown));
    }
    // A file written above already has the attributes; one left alone may not.
    if let Some(meta) = host.metadata(&t.path).map_err(|e| e.to_string())? {
        let mut quiet = Log::quiet();
        if !t.attrs.check(&t.shown, &meta, &mut quiet) {
            t.attrs.fix(host, &t.path, &t.shown, &meta, log)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_class_contract, check, fix, require_root};
    use serde_json::json;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    fn host(dir: &Path) -> Host {
        Host::new(dir)
            .with_var_dir(dir.join("var/lib/tenet"))
            .with_hostname("node1.example.com")
    }

    /// A root with Debian's cron layout: `/etc/cron.d`, the spool (mode 1730, as the cron
    /// package makes it), users root and osvc, group crontab.
    fn debian_root(dir: &Path) {
        fs::create_dir_all(dir.join("etc/cron.d")).unwrap();
        fs::create_dir_all(dir.join("var/spool/cron/crontabs")).unwrap();
        fs::set_permissions(
            dir.join("var/spool/cron/crontabs"),
            fs::Permissions::from_mode(0o1730),
        )
        .unwrap();
        fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nosvc:x:1500:1500::/home/osvc:/bin/sh\n",
        )
        .unwrap();
        fs::write(dir.join("etc/group"), "root:x:0:\ncrontab:x:107:\nosvc:x:1500:\n").unwrap();
    }

    fn meta(dir: &Path, abs: &str) -> fs::Metadata {
        fs::metadata(dir.join(abs.trim_start_matches('/'))).unwrap()
    }

    #[test]
    #[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
    fn upstream_example_in_cron_d() {
        if !require_root("cron::upstream_example_in_cron_d") {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        debian_root(d.path());
        let h = host(d.path());
        let rule = json!("add:osvc:* * * * *:/path/to/mycron:/etc/cron.d/opensvc");
        assert_class_contract::<Cron>(&h, &[d.path()], rule);
        let m = meta(d.path(), "/etc/cron.d/opensvc");
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o644, 0, 0));
        assert_eq!(
            fs::read_to_string(d.path().join("etc/cron.d/opensvc")).unwrap(),
            "* * * * * osvc /path/to/mycron\n"
        );
        // Deleting the only line removes the file.
        let rule = json!("del:osvc:* * * * *:/path/to/mycron:opensvc");
        assert_class_contract::<Cron>(&h, &[d.path()], rule);
        assert!(!d.path().join("etc/cron.d/opensvc").exists());
    }

    #[test]
    #[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
    fn user_crontab_gets_the_owner_group_and_mode_cron_wants() {
        if !require_root("cron::user_crontab_gets_the_owner_group_and_mode_cron_wants") {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        debian_root(d.path());
        let h = host(d.path());
        let tab = d.path().join("var/spool/cron/crontabs/osvc");
        fs::write(&tab, "# mine\n0 1 * * * /bin/true\n").unwrap();
        let rule = json!({"user": "osvc", "schedule": "*/5 * * * *", "command": "/usr/bin/a --b=c:d"});
        let log = assert_class_contract::<Cron>(&h, &[d.path()], rule);
        assert!(log.iter().any(|l| l.contains("not found")), "{log:?}");
        assert!(log.iter().any(|l| l.contains("owner uid is 0, expected 1500")), "{log:?}");
        assert_eq!(
            fs::read_to_string(&tab).unwrap(),
            "# mine\n0 1 * * * /bin/true\n*/5 * * * * /usr/bin/a --b=c:d\n"
        );
        let m = fs::metadata(&tab).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 1500, 107));
        // Wrong mode alone is nok and fixed without touching the content.
        fs::set_permissions(&tab, fs::Permissions::from_mode(0o644)).unwrap();
        let (st, log) = check::<Cron>(&h, json!("add:osvc:*/5 * * * *:/usr/bin/true:"));
        assert_eq!(st, Status::Nok, "{log:?}");
        assert!(log.iter().any(|l| l.contains("mode is 0644, expected 0600")), "{log:?}");
    }

    #[test]
    #[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
    fn crontabentry_form() {
        if !require_root("cron::crontabentry_form") {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        debian_root(d.path());
        let h = host(d.path());
        let rule = json!({"user": "osvc", "check": "/path/to/mycron",
            "entry": "3,13,23,33,43,53 * * * *  /path/to/mycron %%SHORT_HOSTNAME%% >/dev/null 2>&1"});
        assert_class_contract::<Cron>(&h, &[d.path()], rule);
        assert_eq!(
            fs::read_to_string(d.path().join("var/spool/cron/crontabs/osvc")).unwrap(),
            "3,13,23,33,43,53 * * * *  /path/to/mycron node1 >/dev/null 2>&1\n"
        );
        // A commented match does not count; an entry not matching its pattern is a rule error.
        fs::write(d.path().join("var/spool/cron/crontabs/root"), "# x /path/to/mycron\n").unwrap();
        let (st, _) = check::<Cron>(&h, json!({"user": "root", "check": "/path/to/mycron", "entry": "* * * * * /path/to/mycron"}));
        assert_eq!(st, Status::Nok);
        let (st, log) = fix::<Cron>(&h, json!({"user": "root", "check": "nomatch", "entry": "* * * * * /x"}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("rule error")), "{log:?}");
    }

    #[test]
    fn cronie_spool_and_missing_spool() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        let rule = json!("add:root:@daily:/usr/bin/x:");
        let (st, log) = check::<Cron>(&h, rule.clone());
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("no crontab spool directory")), "{log:?}");
        let rules = Cron::rules(&rule).unwrap();
        let mut log = Log::new();
        assert_eq!(Cron::fixable(&rules[0], h.view(), &mut log), Status::Nok);
        fs::create_dir_all(d.path().join("var/spool/cron")).unwrap();
        if nix::unistd::geteuid().is_root() {
            assert_class_contract::<Cron>(&h, &[d.path()], rule);
            assert_eq!(
                fs::read_to_string(d.path().join("var/spool/cron/root")).unwrap(),
                "@daily /usr/bin/x\n"
            );
        }
    }

    #[test]
    fn unknown_user_is_nok() {
        let d = tempfile::tempdir().unwrap();
        debian_root(d.path());
        let h = host(d.path());
        let (st, log) = check::<Cron>(&h, json!("add:nobody2:* * * * *:/x:"));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("unknown user")), "{log:?}");
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (v, needle) in [
            (json!("add:root:* * * *:/x:f"), "schedule"),
            (json!("put:root:* * * * *:/x:f"), "action"),
            (json!("add:root:* * * * *:/x"), "expected ACTION:USER"),
            (json!("add:root:* * * * *:/x:y:z"), "more than five"),
            (json!("add:ro/ot:* * * * *:/x:"), "user"),
            (json!("add:root:* * * * *:/x:../evil"), "file"),
            (json!("add:root:* * * * *:/x:/etc/passwd"), "file"),
            (json!({"user": "root", "schedule": "* * * * *", "command": "/x", "extra": 1}), "unknown field `extra`"),
            (json!({"user": "root", "check": "(", "entry": "x"}), "check"),
            (json!(3), "expected"),
        ] {
            let err = Cron::rules(&v).unwrap_err();
            assert!(err.contains(needle), "{v}: {err}");
        }
    }
}

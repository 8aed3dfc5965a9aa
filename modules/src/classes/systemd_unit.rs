//! The `systemd_unit` class: a unit file's contents, and whether the unit is enabled, masked
//! and active.
//!
//! A rule is `{"name": "dnsmasq.service", "contents": "[Unit]\n...", "enabled": true,
//! "masked": false, "active": true}`; every key but `name` is optional, and an omitted key is
//! not managed.
//!
//! - `contents`: the whole content of `/etc/systemd/system/<name>`, byte for byte (no newline
//!   is added: Ignition writes unit contents verbatim). check shows a unified diff; fix writes
//!   the file atomically, mode 0644, backing up the old one (the `file` class's machinery).
//! - `enabled`: what `systemctl enable` / `disable` do, done on the files under the root
//!   prefix, so it works with `--root` and without a running systemd. The unit file is looked
//!   up in `/etc/systemd/system`, `/run/systemd/system`, `/usr/local/lib/systemd/system`,
//!   `/usr/lib/systemd/system`, `/lib/systemd/system` (first found; the wanted `contents` when
//!   given); its `[Install]` section says which links enable it: `WantedBy=T` →
//!   `/etc/systemd/system/T.wants/<name>`, `RequiredBy=T` → `/etc/systemd/system/T.requires/<name>`,
//!   `Alias=A` → `/etc/systemd/system/A`, each a symlink to the unit file's path. Enabled means
//!   all of them exist; disabled means none of them, nor any other `*.wants/<name>` or
//!   `*.requires/<name>` link in `/etc/systemd/system`, exists. A unit without `[Install]`
//!   links is "static": `enabled = true` is ok for it (it is started through dependencies).
//!   `Also=` and `DefaultInstance=` are not followed; template units (`foo@.service`) cannot be
//!   enabled this way (enable an instance, `foo@bar.service`, instead). Tenet does this itself
//!   rather than calling `systemctl --root`, so that check needs no command and the result is
//!   the same whether or not systemd is installed; the tests compare it with `systemctl --root
//!   is-enabled` where systemctl exists.
//! - `masked`: `/etc/systemd/system/<name>` is a symlink to `/dev/null`. Masking over a real
//!   unit file in `/etc/systemd/system` is refused (as `systemctl mask` does); unmasking removes
//!   the `/dev/null` links in `/etc/systemd/system` and `/run/systemd/system`.
//! - `active`: whether the unit runs (`systemctl is-active`; fix: `systemctl start` / `stop`).
//!   Only when systemd runs the managed system (root prefix `/` and `/run/systemd/system`
//!   present, as `sd_booted()` tests); otherwise it is n/a with a message, not a failure.
//!
//! After changing unit files or links on a system systemd runs, fix calls `systemctl
//! daemon-reload`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use super::common::{kind, report_difference, systemd_running};
use crate::class::{Class, parse_rule};
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// One `systemd_unit` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemdUnitRule {
    /// Unit name with its type suffix: `dnsmasq.service`, `var-lib-containers.mount`, ...
    pub name: String,
    /// Whole content of `/etc/systemd/system/<name>`, verbatim; unset: the file is not managed.
    #[serde(default)]
    pub contents: Option<String>,
    /// Enabled (the `[Install]` links exist) or disabled (none exists); unset: not managed.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Masked (`/etc/systemd/system/<name>` → `/dev/null`) or not; unset: not managed.
    #[serde(default)]
    pub masked: Option<bool>,
    /// Running or stopped; n/a when systemd does not run the managed system.
    #[serde(default)]
    pub active: Option<bool>,
    /// OpenSVC's `systemd_unit_state.py` spelling: `disable = true` is `enabled = false`,
    /// `false` is `enabled = true`; ignored when `mask` is true (as upstream does).
    #[serde(default)]
    pub disable: Option<bool>,
    /// OpenSVC's `systemd_unit_state.py` spelling of `masked`.
    #[serde(default)]
    pub mask: Option<bool>,
    /// Set for rules in the `systemd_unit_state.py` shape: a unit with no unit file and no
    /// mask anywhere is "not found", compliant, and left alone.
    #[serde(skip)]
    pub if_present: bool,
}

/// The `systemd_unit` class.
#[derive(Debug)]
pub struct SystemdUnit;

/// Where unit files are looked up, in precedence order.
const UNIT_DIRS: [&str; 5] = [
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];
/// Where `systemctl enable` puts its links.
const ETC: &str = "/etc/systemd/system";
/// Unit type suffixes.
const SUFFIXES: [&str; 11] = [
    "service", "socket", "mount", "automount", "target", "timer", "path", "swap", "slice",
    "scope", "device",
];

impl Class for SystemdUnit {
    type Rule = SystemdUnitRule;

    const NAME: &'static str = "systemd_unit";
    const ALIASES: &'static [&'static str] = &[
        "systemd_units",
        "unit",
        "systemd_unit_state",
        "systemd_unit_state.py",
    ];
    const DESCRIPTION: &'static str =
        "a systemd unit: file contents, enabled, masked, active (enablement under the root prefix)";

    fn rules(value: &Value) -> Result<Vec<SystemdUnitRule>, String> {
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        items
            .into_iter()
            .map(|v| parse_rule::<SystemdUnitRule>(v).and_then(validate))
            .collect()
    }

    fn describe(rule: &SystemdUnitRule) -> String {
        rule.name.clone()
    }

    fn check(rule: &SystemdUnitRule, host: &HostView, log: &mut Log) -> Status {
        match inspect(rule, host) {
            Ok(state) if not_found(rule, &state) => {
                log.info(format!("unit {}: not found, nothing to do", rule.name));
                Status::Ok
            }
            Ok(state) => state.report(rule, log),
            Err(e) => {
                log.err(format!("unit {}: {e}", rule.name));
                Status::Nok
            }
        }
    }

    fn fixable(_rule: &SystemdUnitRule, _host: &HostView, _log: &mut Log) -> Status {
        Status::NotApplicable
    }

    fn fix(rule: &SystemdUnitRule, host: &Host, log: &mut Log) -> Status {
        match fix_rule(rule, host, log) {
            Ok(()) => {
                let mut after = Log::quiet();
                Self::check(rule, host.view(), &mut after)
            }
            Err(e) => {
                log.err(format!("unit {}: {e}", rule.name));
                Status::Nok
            }
        }
    }
}

/// A `systemd_unit_state.py`-shaped rule about a unit that has no unit file and no mask:
/// OpenSVC's `LoadState=not-found`, compliant.
fn not_found(rule: &SystemdUnitRule, state: &State) -> bool {
    rule.if_present && state.unit_path.is_none() && state.mask_links.is_empty()
}

/// Turns the `systemd_unit_state.py` fields (`disable`, `mask`) into the class's own.
fn from_unit_state(mut rule: SystemdUnitRule) -> Result<SystemdUnitRule, String> {
    if rule.disable.is_none() && rule.mask.is_none() {
        return Ok(rule);
    }
    if rule.mask.is_some() && rule.masked.is_some() {
        return Err("mask: the same as masked (systemd_unit_state.py spelling): set one".into());
    }
    if rule.disable.is_some() && rule.enabled.is_some() {
        return Err(
            "disable: the opposite of enabled (systemd_unit_state.py spelling): set one".into(),
        );
    }
    rule.masked = rule.mask.take();
    let disable = rule.disable.take();
    if rule.masked != Some(true) {
        rule.enabled = disable.map(|d| !d);
    }
    rule.if_present = true;
    Ok(rule)
}

fn validate(rule: SystemdUnitRule) -> Result<SystemdUnitRule, String> {
    let rule = from_unit_state(rule)?;
    let name = &rule.name;
    let suffix_ok = name
        .rsplit_once('.')
        .is_some_and(|(stem, sfx)| !stem.is_empty() && SUFFIXES.contains(&sfx));
    if !suffix_ok || name.contains('/') || name.contains(char::is_whitespace) || name.starts_with('.')
    {
        return Err(format!(
            "name: {name:?} is not a unit name (expected like dnsmasq.service, with one of the \
             suffixes {})",
            SUFFIXES.join(", ")
        ));
    }
    if rule.masked == Some(true) {
        for (field, set) in [
            ("contents", rule.contents.is_some()),
            ("enabled", rule.enabled == Some(true)),
            ("active", rule.active == Some(true)),
        ] {
            if set {
                return Err(format!(
                    "{field}: contradicts masked = true (a masked unit has no file, is not enabled and cannot run)"
                ));
            }
        }
    }
    if rule.enabled == Some(true) && name.contains("@.") {
        return Err(format!(
            "enabled: {name} is a template; enable an instance (like {})",
            name.replace("@.", "@example.")
        ));
    }
    if rule.contents.is_none()
        && rule.enabled.is_none()
        && rule.masked.is_none()
        && rule.active.is_none()
    {
        return Err("nothing to manage: set contents, enabled, masked or active".into());
    }
    Ok(rule)
}

/// The `[Install]` links of a unit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Install {
    wanted_by: Vec<String>,
    required_by: Vec<String>,
    alias: Vec<String>,
}

impl Install {
    /// Parses the `[Install]` section of a unit file (systemd.syntax: `#`/`;` comments,
    /// backslash continuations, space-separated lists, an empty assignment resets the list).
    fn parse(text: &str) -> Install {
        let mut out = Install::default();
        let mut in_install = false;
        let mut logical = String::new();
        for raw in text.lines() {
            if let Some(cont) = raw.strip_suffix('\\') {
                logical.push_str(cont);
                logical.push(' ');
                continue;
            }
            logical.push_str(raw);
            let line = std::mem::take(&mut logical);
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                in_install = line == "[Install]";
                continue;
            }
            if !in_install {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let list = match k.trim() {
                "WantedBy" => &mut out.wanted_by,
                "RequiredBy" => &mut out.required_by,
                "Alias" => &mut out.alias,
                _ => continue,
            };
            if v.trim().is_empty() {
                list.clear();
            } else {
                list.extend(v.split_whitespace().map(str::to_string));
            }
        }
        out
    }

    /// The enablement links (absolute paths in the managed system).
    fn links(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for t in &self.wanted_by {
            out.push(format!("{ETC}/{t}.wants/{name}"));
        }
        for t in &self.required_by {
            out.push(format!("{ETC}/{t}.requires/{name}"));
        }
        for a in &self.alias {
            out.push(format!("{ETC}/{a}"));
        }
        out
    }
}

/// What one link path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LinkState {
    Missing,
    Link(PathBuf),
    NotALink(&'static str),
}

fn link_state(host: &HostView, abs: &str) -> Result<LinkState, String> {
    let real = host.path(abs).map_err(|e| e.to_string())?;
    match host.metadata(&real).map_err(|e| e.to_string())? {
        None => Ok(LinkState::Missing),
        Some(m) if m.file_type().is_symlink() => match host.read_link(&real) {
            Ok(Some(t)) => Ok(LinkState::Link(t)),
            Ok(None) => Ok(LinkState::Missing),
            Err(e) => Err(format!("{abs}: {e}")),
        },
        Some(m) => Ok(LinkState::NotALink(kind(&m))),
    }
}

/// Everything check found about a unit.
#[derive(Debug)]
struct State {
    /// Path (managed system) of the unit file the links point to.
    unit_path: Option<String>,
    /// The current content of `/etc/systemd/system/<name>`, if a regular file.
    etc_content: Option<Vec<u8>>,
    /// `/dev/null` links masking the unit (in /etc and /run).
    mask_links: Vec<String>,
    /// Something that is neither a file nor a mask at /etc/systemd/system/<name>.
    etc_other: Option<String>,
    /// Links the `[Install]` section asks for, with their state.
    install_links: Vec<(String, LinkState)>,
    /// Other `*.wants` / `*.requires` links to the unit in /etc/systemd/system.
    stray_links: Vec<String>,
    /// Active state, or why it is n/a.
    active: Result<bool, String>,
}

/// The unit file content that counts for enablement: the wanted contents, or the first unit
/// file found in the search path (skipping masks).
fn inspect(rule: &SystemdUnitRule, host: &HostView) -> Result<State, String> {
    let name = &rule.name;
    let etc_abs = format!("{ETC}/{name}");
    let etc_real = host.path(&etc_abs).map_err(|e| e.to_string())?;
    let mut etc_content = None;
    let mut etc_other = None;
    let mut mask_links = Vec::new();
    for dir in [ETC, "/run/systemd/system"] {
        let abs = format!("{dir}/{name}");
        if let LinkState::Link(t) = link_state(host, &abs)?
            && t == Path::new("/dev/null")
        {
            mask_links.push(abs);
        }
    }
    match host.metadata(&etc_real).map_err(|e| e.to_string())? {
        Some(m) if m.is_file() => {
            etc_content = host.read(&etc_real).map_err(|e| e.to_string())?;
        }
        Some(m) if m.file_type().is_symlink() => {}
        Some(m) => etc_other = Some(kind(&m).to_string()),
        None => {}
    }
    // The unit file the install links point to.
    let mut unit_path = None;
    let mut unit_text: Option<String> = None;
    if let Some(c) = &rule.contents {
        unit_path = Some(etc_abs.clone());
        unit_text = Some(c.clone());
    } else {
        for dir in UNIT_DIRS {
            let abs = format!("{dir}/{name}");
            let real = host.path(&abs).map_err(|e| e.to_string())?;
            if mask_links.contains(&abs) {
                continue;
            }
            // A symlinked unit file (not a mask) counts too: read through it under the root.
            let text = match link_state(host, &abs)? {
                LinkState::Link(t) if t.is_absolute() => host
                    .path(&t)
                    .ok()
                    .and_then(|p| host.read_to_string(&p).ok().flatten()),
                _ => host.read_to_string(&real).unwrap_or(None),
            };
            if let Some(text) = text {
                unit_path = Some(abs);
                unit_text = Some(text);
                break;
            }
        }
    }
    let install = unit_text.as_deref().map(Install::parse).unwrap_or_default();
    let mut install_links = Vec::new();
    for l in install.links(name) {
        let st = link_state(host, &l)?;
        install_links.push((l, st));
    }
    let wanted: BTreeSet<&String> = install_links.iter().map(|(l, _)| l).collect();
    let mut stray_links = Vec::new();
    let etc_dir = host.path(ETC).map_err(|e| e.to_string())?;
    if let Ok(Some(names)) = host.read_dir_names(&etc_dir) {
        let mut dirs: Vec<String> = names
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter(|n| n.ends_with(".wants") || n.ends_with(".requires"))
            .collect();
        dirs.sort();
        for d in dirs {
            let abs = format!("{ETC}/{d}/{name}");
            if wanted.contains(&abs) {
                continue;
            }
            if let LinkState::Link(_) = link_state(host, &abs)? {
                stray_links.push(abs);
            }
        }
    }
    let active = match rule.active {
        None => Err(String::new()),
        Some(_) => systemd_running(host).and_then(|()| is_active(host, name)),
    };
    Ok(State {
        unit_path,
        etc_content,
        mask_links,
        etc_other,
        install_links,
        stray_links,
        active,
    })
}

fn is_active(host: &HostView, name: &str) -> Result<bool, String> {
    let out = host
        .run_query(Command::new("systemctl").args(["is-active", name]))
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "active")
}

/// Whether a link to the unit is right: it points to a file named like the unit (or the unit
/// path exactly).
fn link_ok(st: &LinkState, unit_path: &str, name: &str) -> bool {
    match st {
        LinkState::Link(t) => t == Path::new(unit_path) || t.file_name() == Some(name.as_ref()),
        _ => false,
    }
}

impl State {
    fn report(&self, rule: &SystemdUnitRule, log: &mut Log) -> Status {
        let name = &rule.name;
        let mut statuses = Vec::new();
        let nok = |log: &mut Log, msg: String| {
            log.err(format!("unit {name}: {msg}"));
            Status::Nok
        };
        if let Some(want) = &rule.contents {
            let etc_abs = format!("{ETC}/{name}");
            statuses.push(match (&self.etc_content, &self.etc_other) {
                (_, Some(kind)) => nok(log, format!("{etc_abs} is a {kind}, expected a unit file")),
                (None, _) if !self.mask_links.contains(&etc_abs) => {
                    nok(log, format!("{etc_abs}: missing"))
                }
                (None, _) => nok(log, format!("{etc_abs} is a mask (-> /dev/null), expected a unit file")),
                (Some(have), _) if have == want.as_bytes() => {
                    log.info(format!("unit {name}: {etc_abs} content ok"));
                    Status::Ok
                }
                (Some(have), _) => {
                    report_difference(&etc_abs, have, want.as_bytes(), log);
                    Status::Nok
                }
            });
        }
        if let Some(masked) = rule.masked {
            let is = !self.mask_links.is_empty();
            statuses.push(if is == masked {
                log.info(format!("unit {name}: {}masked, ok", if is { "" } else { "not " }));
                Status::Ok
            } else if masked {
                nok(log, "not masked, expected masked".into())
            } else {
                nok(log, format!("masked ({}), expected not masked", self.mask_links.join(", ")))
            });
        }
        if let Some(enabled) = rule.enabled {
            statuses.push(self.report_enabled(enabled, name, log));
        }
        if rule.active.is_some() {
            statuses.push(match (&self.active, rule.active) {
                (Err(why), _) => {
                    log.info(format!("unit {name}: active state n/a: {why}"));
                    Status::NotApplicable
                }
                (Ok(is), Some(want)) if *is == want => {
                    log.info(format!("unit {name}: {}, ok", if *is { "active" } else { "inactive" }));
                    Status::Ok
                }
                (Ok(is), _) => nok(
                    log,
                    format!(
                        "{}, expected {}",
                        if *is { "active" } else { "inactive" },
                        if *is { "inactive" } else { "active" }
                    ),
                ),
            });
        }
        Status::merge_all(statuses)
    }

    fn report_enabled(&self, enabled: bool, name: &str, log: &mut Log) -> Status {
        let Some(unit_path) = &self.unit_path else {
            if enabled {
                log.err(format!("unit {name}: no unit file found (looked in {}), cannot be enabled", UNIT_DIRS.join(", ")));
                return Status::Nok;
            }
            if self.stray_links.is_empty() {
                log.info(format!("unit {name}: no unit file, not enabled, ok"));
                return Status::Ok;
            }
            log.err(format!("unit {name}: enabled through {}, expected disabled", self.stray_links.join(", ")));
            return Status::Nok;
        };
        let mut ok = true;
        if enabled {
            if self.install_links.is_empty() {
                log.info(format!(
                    "unit {name}: static (no WantedBy=, RequiredBy= or Alias= in [Install]), ok"
                ));
                return Status::Ok;
            }
            for (l, st) in &self.install_links {
                if link_ok(st, unit_path, name) {
                    continue;
                }
                ok = false;
                let found = match st {
                    LinkState::Missing => "missing".to_string(),
                    LinkState::Link(t) => format!("points to {}", t.display()),
                    LinkState::NotALink(k) => format!("is a {k}"),
                };
                log.err(format!(
                    "unit {name}: not enabled: {l} {found}, expected a link to {unit_path}"
                ));
            }
        } else {
            let present: Vec<&str> = self
                .install_links
                .iter()
                .filter(|(_, st)| matches!(st, LinkState::Link(_)))
                .map(|(l, _)| l.as_str())
                .chain(self.stray_links.iter().map(String::as_str))
                .collect();
            if !present.is_empty() {
                ok = false;
                log.err(format!(
                    "unit {name}: enabled through {}, expected disabled",
                    present.join(", ")
                ));
            }
        }
        if ok {
            log.info(format!(
                "unit {name}: {}, ok",
                if enabled { "enabled" } else { "disabled" }
            ));
            Status::Ok
        } else {
            Status::Nok
        }
    }
}

fn fix_rule(rule: &SystemdUnitRule, host: &Host, log: &mut Log) -> Result<(), String> {
    let name = &rule.name;
    let state = inspect(rule, host)?;
    if not_found(rule, &state) {
        return Ok(());
    }
    let mut changed = false;
    // Unmask first: a mask at /etc/systemd/system/<name> is where contents go.
    if rule.masked == Some(false) || (rule.contents.is_some() && !state.mask_links.is_empty()) {
        for m in &state.mask_links {
            let real = host.path(m).map_err(|e| e.to_string())?;
            host.remove_link(&real).map_err(|e| e.to_string())?;
            log.info(format!("unit {name}: unmasked (removed {m})"));
            changed = true;
        }
    }
    if let Some(want) = &rule.contents
        && state.etc_content.as_deref() != Some(want.as_bytes())
    {
        if let Some(kind) = &state.etc_other {
            return Err(format!("{ETC}/{name} is a {kind}; refusing to replace it"));
        }
        let real = host.path(format!("{ETC}/{name}")).map_err(|e| e.to_string())?;
        host.write_atomic(&real, want.as_bytes(), Some(0o644), None)
            .map_err(|e| e.to_string())?;
        log.info(format!("unit {name}: {ETC}/{name} written"));
        changed = true;
    }
    if rule.masked == Some(true) && state.mask_links.is_empty() {
        if state.etc_content.is_some() || state.etc_other.is_some() {
            return Err(format!(
                "cannot mask: {ETC}/{name} exists and is not a link (as systemctl mask refuses)"
            ));
        }
        let real = host.path(format!("{ETC}/{name}")).map_err(|e| e.to_string())?;
        host.symlink(&real, "/dev/null")
            .map_err(|e| format!("{ETC}/{name}: {e}"))?;
        log.info(format!("unit {name}: masked ({ETC}/{name} -> /dev/null)"));
        changed = true;
    }
    if let Some(enabled) = rule.enabled {
        // Re-read: the unit file may just have been written.
        let state = inspect(rule, host)?;
        if enabled {
            let unit_path = state.unit_path.clone().ok_or_else(|| {
                format!("no unit file found (looked in {}), cannot enable", UNIT_DIRS.join(", "))
            })?;
            for (l, st) in &state.install_links {
                if link_ok(st, &unit_path, name) {
                    continue;
                }
                if let LinkState::NotALink(k) = st {
                    return Err(format!("{l} is a {k}; refusing to replace it"));
                }
                let real = host.path(l).map_err(|e| e.to_string())?;
                host.symlink(&real, &unit_path)
                    .map_err(|e| format!("{l}: {e}"))?;
                log.info(format!("unit {name}: created {l} -> {unit_path}"));
                changed = true;
            }
        } else {
            let present = state
                .install_links
                .iter()
                .filter(|(_, st)| matches!(st, LinkState::Link(_)))
                .map(|(l, _)| l.clone())
                .chain(state.stray_links.iter().cloned());
            for l in present {
                let real = host.path(&l).map_err(|e| e.to_string())?;
                host.remove_link(&real).map_err(|e| e.to_string())?;
                log.info(format!("unit {name}: removed {l}"));
                changed = true;
            }
        }
    }
    let running = systemd_running(host);
    if changed && running.is_ok() {
        run_systemctl(host, &["daemon-reload"])?;
        log.info("systemctl daemon-reload");
    }
    if let Some(active) = rule.active {
        match running {
            Ok(()) => {
                if is_active(host, name)? != active {
                    let verb = if active { "start" } else { "stop" };
                    run_systemctl(host, &[verb, name])?;
                    log.info(format!("unit {name}: systemctl {verb}"));
                }
            }
            Err(why) => log.info(format!("unit {name}: active state n/a: {why}")),
        }
    }
    Ok(())
}

fn run_systemctl(host: &Host, args: &[&str]) -> Result<(), String> {
    let out = host
        .run_change(Command::new("systemctl").args(args))
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_class_contract, check, fix};
    use serde_json::json;
    use std::fs;

    const UNIT: &str = "[Unit]\nDescription=Run dnsmasq\nAfter=network.target\n\n[Service]\nExecStart=/usr/sbin/dnsmasq -k\n\n[Install]\nWantedBy=multi-user.target\nAlias=dns.service\n";

    fn host(dir: &Path) -> Host {
        Host::new(dir).with_var_dir(dir.join("var/lib/tenet"))
    }

    fn systemctl() -> Option<PathBuf> {
        ["/usr/bin/systemctl", "/bin/systemctl"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    }

    /// `systemctl --root=DIR is-enabled NAME`, when systemctl exists: the cross-check that
    /// Tenet's links are the ones systemd reads.
    fn systemctl_is_enabled(root: &Path, name: &str) -> Option<String> {
        let bin = systemctl()?;
        let out = Command::new(bin)
            .arg(format!("--root={}", root.display()))
            .args(["is-enabled", name])
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    #[test]
    fn contents_and_enablement_from_nothing() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        let rule = json!({"name": "dnsmasq.service", "contents": UNIT, "enabled": true});
        let log = assert_class_contract::<SystemdUnit>(&h, &[d.path()], rule);
        assert!(log.iter().any(|l| l.contains("/etc/systemd/system/dnsmasq.service: missing")), "{log:?}");
        let etc = d.path().join("etc/systemd/system");
        assert_eq!(fs::read_to_string(etc.join("dnsmasq.service")).unwrap(), UNIT);
        for l in ["multi-user.target.wants/dnsmasq.service", "dns.service"] {
            assert_eq!(
                fs::read_link(etc.join(l)).unwrap(),
                Path::new("/etc/systemd/system/dnsmasq.service"),
                "{l}"
            );
        }
        if let Some(state) = systemctl_is_enabled(d.path(), "dnsmasq.service") {
            assert_eq!(state, "enabled");
        }
    }

    #[test]
    fn disable_removes_every_link() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        let etc = d.path().join("etc/systemd/system");
        fs::create_dir_all(etc.join("multi-user.target.wants")).unwrap();
        fs::create_dir_all(etc.join("graphical.target.wants")).unwrap();
        fs::create_dir_all(d.path().join("usr/lib/systemd/system")).unwrap();
        fs::write(d.path().join("usr/lib/systemd/system/dnsmasq.service"), UNIT).unwrap();
        let target = "/usr/lib/systemd/system/dnsmasq.service";
        std::os::unix::fs::symlink(target, etc.join("multi-user.target.wants/dnsmasq.service")).unwrap();
        std::os::unix::fs::symlink(target, etc.join("graphical.target.wants/dnsmasq.service")).unwrap();
        let (st, log) = check::<SystemdUnit>(&h, json!({"name": "dnsmasq.service", "enabled": true}));
        assert_eq!(st, Status::Nok, "{log:?}");
        assert!(log.iter().any(|l| l.contains("dns.service missing")), "{log:?}");
        let log = assert_class_contract::<SystemdUnit>(
            &h,
            &[d.path()],
            json!({"name": "dnsmasq.service", "enabled": false}),
        );
        assert!(log.iter().any(|l| l.contains("graphical.target.wants")), "{log:?}");
        assert!(!etc.join("multi-user.target.wants/dnsmasq.service").exists());
        assert!(fs::symlink_metadata(etc.join("graphical.target.wants/dnsmasq.service")).is_err());
        if let Some(state) = systemctl_is_enabled(d.path(), "dnsmasq.service") {
            assert_eq!(state, "disabled");
        }
    }

    #[test]
    fn mask_and_unmask() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        fs::create_dir_all(d.path().join("lib/systemd/system")).unwrap();
        fs::write(d.path().join("lib/systemd/system/foo.service"), UNIT).unwrap();
        assert_class_contract::<SystemdUnit>(&h, &[d.path()], json!({"name": "foo.service", "masked": true}));
        let etc = d.path().join("etc/systemd/system/foo.service");
        assert_eq!(fs::read_link(&etc).unwrap(), Path::new("/dev/null"));
        if let Some(state) = systemctl_is_enabled(d.path(), "foo.service") {
            assert_eq!(state, "masked");
        }
        let log = assert_class_contract::<SystemdUnit>(
            &h,
            &[d.path()],
            json!({"name": "foo.service", "masked": false, "enabled": true}),
        );
        assert!(log.iter().any(|l| l.contains("masked (/etc/systemd/system/foo.service)")), "{log:?}");
        assert_eq!(
            fs::read_link(d.path().join("etc/systemd/system/multi-user.target.wants/foo.service")).unwrap(),
            Path::new("/lib/systemd/system/foo.service")
        );
        // Masking over a real unit file in /etc is refused.
        fs::remove_file(d.path().join("etc/systemd/system/dns.service")).unwrap();
        let (st, log) = fix::<SystemdUnit>(&h, json!({"name": "dns.service", "contents": "[Unit]\n"}));
        assert_eq!(st, Status::Ok, "{log:?}");
        let (st, log) = fix::<SystemdUnit>(&h, json!({"name": "dns.service", "masked": true}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("cannot mask")), "{log:?}");
    }

    #[test]
    fn static_units_and_content_drift() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        let unit = "[Unit]\nDescription=static\n[Service]\nExecStart=/bin/true";
        let rule = json!({"name": "s.service", "contents": unit, "enabled": true});
        assert_class_contract::<SystemdUnit>(&h, &[d.path()], rule.clone());
        let (st, log) = check::<SystemdUnit>(&h, rule.clone());
        assert_eq!(st, Status::Ok);
        assert!(log.iter().any(|l| l.contains("static")), "{log:?}");
        // Content is byte for byte: no newline is added.
        assert_eq!(
            fs::read_to_string(d.path().join("etc/systemd/system/s.service")).unwrap(),
            unit
        );
        fs::write(d.path().join("etc/systemd/system/s.service"), format!("{unit}\n")).unwrap();
        let (st, log) = check::<SystemdUnit>(&h, rule);
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("content differs")), "{log:?}");
    }

    /// systemd is not PID 1 here (and a root prefix is never the running system): the
    /// active state is n/a with a message, not a failure.
    #[test]
    fn active_is_not_applicable_without_systemd() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        let (st, log) = check::<SystemdUnit>(&h, json!({"name": "dnsmasq.service", "active": true}));
        assert_eq!(st, Status::NotApplicable, "{log:?}");
        assert!(log.iter().any(|l| l.contains("active state n/a") && l.contains("root prefix")), "{log:?}");
        let (st, _) = fix::<SystemdUnit>(&h, json!({"name": "dnsmasq.service", "active": true}));
        assert_eq!(st, Status::NotApplicable);
        // With other keys, n/a merges into their status.
        let rule = json!({"name": "x.service", "contents": "[Unit]\n", "active": true});
        assert_class_contract::<SystemdUnit>(&h, &[d.path()], rule);
        if Path::new("/run/systemd/system").is_dir() {
            return;
        }
        let real = Host::new("/");
        let (st, log) = check::<SystemdUnit>(&real, json!({"name": "nonexistent-tenet-test.service", "active": true}));
        assert_eq!(st, Status::NotApplicable, "{log:?}");
        assert!(log.iter().any(|l| l.contains("systemd is not running (PID 1 is")), "{log:?}");
    }

    #[test]
    fn install_section_parsing() {
        let i = Install::parse(
            "[Unit]\nWantedBy=not-here.target\n[Install]\n# c\nWantedBy=a.target \\\n  b.target\nRequiredBy=local-fs.target\nAlias=x.service\nWantedBy=\nWantedBy=c.target\n",
        );
        assert_eq!(i.wanted_by, vec!["c.target"]);
        assert_eq!(i.required_by, vec!["local-fs.target"]);
        assert_eq!(i.alias, vec!["x.service"]);
    }

    /// `systemd_unit_state.py`'s rule shape: `disable` and `mask`; a unit that does not exist
    /// is compliant, as upstream reads `LoadState=not-found`.
    #[test]
    fn systemd_unit_state_shape() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        let lib = d.path().join("lib/systemd/system");
        fs::create_dir_all(&lib).unwrap();
        fs::write(lib.join("lvm2-lvmetad.service"), UNIT).unwrap();
        let wants = d.path().join("etc/systemd/system/multi-user.target.wants");
        fs::create_dir_all(&wants).unwrap();
        std::os::unix::fs::symlink(
            "/lib/systemd/system/lvm2-lvmetad.service",
            wants.join("lvm2-lvmetad.service"),
        )
        .unwrap();
        let rule = json!({"name": "lvm2-lvmetad.service", "disable": true, "mask": false});
        assert_class_contract::<SystemdUnit>(&h, &[d.path()], rule);
        assert!(fs::symlink_metadata(wants.join("lvm2-lvmetad.service")).is_err());
        // mask wins over disable, as upstream (a masked unit is not disabled too).
        let rule = json!([{"name": "lvm2-lvmetad.service", "disable": false, "mask": true}]);
        assert_class_contract::<SystemdUnit>(&h, &[d.path()], rule);
        assert_eq!(
            fs::read_link(d.path().join("etc/systemd/system/lvm2-lvmetad.service")).unwrap(),
            Path::new("/dev/null")
        );
        // Not found: ok, and fix leaves it alone.
        let before = crate::testing::snapshot(d.path());
        for rule in [
            json!({"name": "nothere.service", "disable": false}),
            json!({"name": "nothere.service", "mask": false, "disable": true}),
        ] {
            let (st, log) = check::<SystemdUnit>(&h, rule.clone());
            assert_eq!(st, Status::Ok, "{log:?}");
            assert!(log.iter().any(|l| l.contains("not found")), "{log:?}");
            let (st, _) = fix::<SystemdUnit>(&h, rule);
            assert_eq!(st, Status::Ok);
        }
        assert!(crate::testing::diff_snapshots(&before, &crate::testing::snapshot(d.path())).is_empty());
        // The class's own spelling keeps its stricter meaning.
        let (st, _) = check::<SystemdUnit>(&h, json!({"name": "nothere.service", "enabled": true}));
        assert_eq!(st, Status::Nok);
        assert!(crate::classes::find("systemd_unit_state.py").is_some_and(|c| c.name == "systemd_unit"));
        for (v, needle) in [
            (json!({"name": "a.service", "mask": true, "masked": true}), "mask:"),
            (json!({"name": "a.service", "disable": true, "enabled": true}), "disable:"),
        ] {
            let err = SystemdUnit::rules(&v).unwrap_err();
            assert!(err.contains(needle), "{v}: {err}");
        }
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (v, needle) in [
            (json!({"name": "dnsmasq", "enabled": true}), "name"),
            (json!({"name": "a/b.service", "enabled": true}), "name"),
            (json!({"name": "a.service"}), "nothing to manage"),
            (json!({"name": "a.service", "masked": true, "enabled": true}), "enabled: contradicts"),
            (json!({"name": "a.service", "masked": true, "contents": "x"}), "contents: contradicts"),
            (json!({"name": "a@.service", "enabled": true}), "template"),
            (json!({"name": "a.service", "enable": true}), "unknown field `enable`"),
            (json!({"name": "a.service", "enabled": "yes"}), "invalid type"),
        ] {
            let err = SystemdUnit::rules(&v).unwrap_err();
            assert!(err.contains(needle), "{v}: {err}");
        }
    }
}

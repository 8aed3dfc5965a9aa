//! The `dnsmasq` class: a dnsmasq configuration file that Tenet owns, compared by meaning.
//!
//! A rule is
//! `{"path": "/etc/dnsmasq.d/single-node.conf", "addresses": [{"domain": "api.sno.example.com",
//! "ip": "10.0.0.7"}], "servers": ["10.0.0.1"], "listen_addresses": ["127.0.0.1"], "options":
//! ["bind-interfaces", "cache-size=1000"], "reload": "pkill -HUP dnsmasq"}`.
//!
//! The file's meaning is its set of directives: every line that is not blank and not a `#`
//! comment, as `key` or `key=value` (whitespace around both trimmed). The rule stands for
//! `listen-address=<a>` per `listen_addresses`, `server=<s>` per `servers`,
//! `address=/<domain>/<ip>` per `addresses` and each of `options` verbatim. check is ok when
//! both sets are equal: order, blank lines, comments and repeated lines do not count. Otherwise
//! it lists each missing and each unexpected directive (the file is wholly managed: a directive
//! the rule does not name is unexpected).
//!
//! fix renders the directives in the rule's order under a header comment, and, when a
//! `dnsmasq` binary is on `PATH`, first validates that text with `dnsmasq --test
//! --conf-file=<temporary copy>`: when dnsmasq refuses it, the rule is nok with dnsmasq's
//! message and the old file is kept untouched. Then the file is replaced atomically (the old
//! one backed up), and the reload hooks run: `reload`, a shell command (`sh -c`), and/or
//! `restart_unit`, a systemd unit restarted with `systemctl restart` (only when systemd runs
//! the managed system: root prefix `/` and `/run/systemd/system` present; otherwise the log
//! says it was skipped). fix only runs when check found a difference, so the hooks run only
//! when the file changed.
//!
//! Limits: `#` starts a comment only at the start of a line; `conf-file=` / `conf-dir=`
//! directives are compared as text, the files they name are not read.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use super::common::{kind, systemd_running};
use crate::class::{Class, parse_rule};
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// One `dnsmasq` rule: the whole content of one configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsmasqRule {
    /// Absolute path of the configuration file (e.g. `/etc/dnsmasq.d/tenet.conf`).
    pub path: String,
    /// Local answers: `address=/<domain>/<ip>` (the domain and all its subdomains).
    #[serde(default)]
    pub addresses: Vec<DnsmasqAddress>,
    /// Upstream servers: `server=<value>` (`10.0.0.1`, `/corp.example/10.0.0.2`, ...).
    #[serde(default)]
    pub servers: Vec<String>,
    /// Addresses to listen on: `listen-address=<ip>`.
    #[serde(default)]
    pub listen_addresses: Vec<String>,
    /// Any other directive, `key=value` or a bare `flag` (`bind-interfaces`).
    #[serde(default)]
    pub options: Vec<String>,
    /// Shell command run (`sh -c`) after the file was changed, e.g. a reload.
    #[serde(default)]
    pub reload: Option<String>,
    /// systemd unit restarted after the file was changed (when systemd runs the system).
    #[serde(default)]
    pub restart_unit: Option<String>,
}

/// One `address=/<domain>/<ip>` directive.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsmasqAddress {
    /// Domain answered locally (with its subdomains), e.g. `apps.sno.example.com`.
    pub domain: String,
    /// The IPv4 or IPv6 address returned.
    pub ip: IpAddr,
}

/// The `dnsmasq` class.
#[derive(Debug)]
pub struct Dnsmasq;

/// A directive: key and optional value.
type Directive = (String, Option<String>);

impl Class for Dnsmasq {
    type Rule = DnsmasqRule;

    const NAME: &'static str = "dnsmasq";
    const DESCRIPTION: &'static str = "a dnsmasq configuration file, compared by meaning, validated with dnsmasq --test";

    fn rules(value: &Value) -> Result<Vec<DnsmasqRule>, String> {
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        items
            .into_iter()
            .map(|v| parse_rule::<DnsmasqRule>(v).and_then(validate))
            .collect()
    }

    fn describe(rule: &DnsmasqRule) -> String {
        rule.path.clone()
    }

    fn check(rule: &DnsmasqRule, host: &HostView, log: &mut Log) -> Status {
        let real = match host.path(&rule.path) {
            Ok(p) => p,
            Err(e) => {
                log.err(format!("dnsmasq {}: {e}", rule.path));
                return Status::Nok;
            }
        };
        let text = match host.read_to_string(&real) {
            Ok(Some(t)) => t,
            Ok(None) => {
                log.err(format!("dnsmasq {}: missing", rule.path));
                return Status::Nok;
            }
            Err(e) => {
                log.err(format!("dnsmasq {}: {e}", rule.path));
                return Status::Nok;
            }
        };
        let have: BTreeSet<Directive> = parse_conf(&text).into_iter().collect();
        let want: BTreeSet<Directive> = wanted(rule).into_iter().collect();
        if have == want {
            log.info(format!(
                "dnsmasq {}: ok ({} directives)",
                rule.path,
                want.len()
            ));
            return Status::Ok;
        }
        for d in want.difference(&have) {
            log.err(format!("dnsmasq {}: missing {}", rule.path, show(d)));
        }
        for d in have.difference(&want) {
            log.err(format!("dnsmasq {}: unexpected {}", rule.path, show(d)));
        }
        Status::Nok
    }

    fn fixable(_rule: &DnsmasqRule, _host: &HostView, _log: &mut Log) -> Status {
        Status::NotApplicable
    }

    fn fix(rule: &DnsmasqRule, host: &Host, log: &mut Log) -> Status {
        match fix_rule(rule, host, log) {
            Ok(()) => Status::Ok,
            Err(e) => {
                log.err(format!("dnsmasq {}: {e}", rule.path));
                Status::Nok
            }
        }
    }
}

/// Checks what serde cannot: domains and free-form values.
fn validate(rule: DnsmasqRule) -> Result<DnsmasqRule, String> {
    for (i, a) in rule.addresses.iter().enumerate() {
        let d = a.domain.trim();
        if d.is_empty() || d.contains(['/', '#']) || d.contains(char::is_whitespace) {
            return Err(format!(
                "addresses[{i}].domain: {:?} is not a domain name",
                a.domain
            ));
        }
    }
    let one_line = |field: &str, list: &[String]| -> Result<(), String> {
        for (i, v) in list.iter().enumerate() {
            if v.trim().is_empty() || v.contains(['\n', '\r']) || v.trim_start().starts_with('#') {
                return Err(format!(
                    "{field}[{i}]: {v:?} must be one non-empty directive"
                ));
            }
        }
        Ok(())
    };
    one_line("servers", &rule.servers)?;
    one_line("listen_addresses", &rule.listen_addresses)?;
    one_line("options", &rule.options)?;
    if let Some(u) = &rule.restart_unit
        && (u.trim().is_empty() || u.contains(char::is_whitespace))
    {
        return Err(format!("restart_unit: {u:?} is not a unit name"));
    }
    Ok(rule)
}

/// Splits one directive line into key and value.
fn directive(line: &str) -> Directive {
    match line.split_once('=') {
        Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
        None => (line.trim().to_string(), None),
    }
}

/// The directives of a configuration file, in order.
fn parse_conf(text: &str) -> Vec<Directive> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(directive)
        .collect()
}

/// The directives a rule stands for, in rendering order.
fn wanted(rule: &DnsmasqRule) -> Vec<Directive> {
    let mut out = Vec::new();
    for a in &rule.listen_addresses {
        out.push(("listen-address".into(), Some(a.trim().to_string())));
    }
    for s in &rule.servers {
        out.push(("server".into(), Some(s.trim().to_string())));
    }
    for a in &rule.addresses {
        out.push((
            "address".into(),
            Some(format!("/{}/{}", a.domain.trim(), a.ip)),
        ));
    }
    for o in &rule.options {
        out.push(directive(o));
    }
    out
}

fn show(d: &Directive) -> String {
    match &d.1 {
        Some(v) => format!("{}={v}", d.0),
        None => d.0.clone(),
    }
}

/// The file content a rule renders to.
pub fn render(rule: &DnsmasqRule) -> String {
    let mut text = String::from("# Managed by tenet (dnsmasq class); local changes will be overwritten.\n");
    let mut seen = BTreeSet::new();
    for d in wanted(rule) {
        if seen.insert(d.clone()) {
            text.push_str(&show(&d));
            text.push('\n');
        }
    }
    text
}

/// The `dnsmasq` binary on `PATH`, if installed.
fn dnsmasq_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let dirs = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]);
    crate::host::find_program("dnsmasq", dirs)
}

/// Runs `dnsmasq --test` on `content`; `Err` holds dnsmasq's message, with the temporary
/// file's name replaced by `shown`.
fn validate_with_dnsmasq(
    bin: &Path,
    content: &str,
    shown: &str,
    host: &Host,
) -> Result<(), String> {
    let scratch = host
        .scratch_file("tenet-dnsmasq", content.as_bytes())
        .map_err(|e| e.to_string())?;
    let tmp = scratch.path().to_path_buf();
    let out = host.run_query(
        Command::new(bin)
            .arg("--test")
            .arg(format!("--conf-file={}", tmp.display())),
    );
    drop(scratch);
    let out = out.map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let tmp_s = tmp.display().to_string();
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
    .replace(&tmp_s, shown);
    Err(msg.trim().to_string())
}

fn fix_rule(rule: &DnsmasqRule, host: &Host, log: &mut Log) -> Result<(), String> {
    let real = host.path(&rule.path).map_err(|e| e.to_string())?;
    if let Some(meta) = host.metadata(&real).map_err(|e| e.to_string())?
        && !meta.is_file()
    {
        return Err(format!(
            "is a {}, not a regular file; refusing to replace it",
            kind(&meta)
        ));
    }
    let content = render(rule);
    match dnsmasq_binary() {
        Some(bin) => {
            validate_with_dnsmasq(&bin, &content, &rule.path, host).map_err(|msg| {
                format!("dnsmasq --test refused the new configuration, old file kept: {msg}")
            })?;
            log.info(format!("dnsmasq {}: dnsmasq --test: syntax ok", rule.path));
        }
        None => log.info(format!(
            "dnsmasq {}: dnsmasq is not installed (Debian package dnsmasq-base): syntax not validated",
            rule.path
        )),
    }
    let written = host
        .write_atomic(&real, content.as_bytes(), None, None)
        .map_err(|e| e.to_string())?;
    log.info(format!("dnsmasq {}: written", rule.path));
    if let Some(note) = written.hard_link_note(&rule.path) {
        log.info(note);
    }
    if let Some(cmd) = &rule.reload {
        let out = host
            .run_change(Command::new("sh").arg("-c").arg(cmd))
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "reload command {cmd:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        log.info(format!("dnsmasq {}: ran reload {cmd:?}", rule.path));
    }
    if let Some(unit) = &rule.restart_unit {
        match systemd_running(host) {
            Ok(()) => {
                let out = host
                    .run_change(Command::new("systemctl").args(["restart", unit]))
                    .map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(format!(
                        "systemctl restart {unit} failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                log.info(format!("dnsmasq {}: restarted {unit}", rule.path));
            }
            Err(why) => log.info(format!(
                "dnsmasq {}: restart of {unit} skipped: {why}",
                rule.path
            )),
        }
    }
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

    fn rule(reload_log: &Path) -> Value {
        json!({
            "path": "/etc/dnsmasq.d/sno.conf",
            "addresses": [
                {"domain": "apps.sno.example.com", "ip": "10.0.0.7"},
                {"domain": "api.sno.example.com", "ip": "10.0.0.7"},
            ],
            "servers": ["10.0.0.1"],
            "listen_addresses": ["127.0.0.1"],
            "options": ["bind-interfaces", "cache-size=100"],
            "reload": format!("echo reloaded >> '{}'", reload_log.display()),
        })
    }

    /// Acceptance: a semantically equal file (reordered, comments, blank lines, spacing) is
    /// ok; a different one lists each difference.
    #[test]
    fn meaning_is_compared_not_text() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        let p = d.path().join("etc/dnsmasq.d/sno.conf");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(
            &p,
            "# hand written\n\ncache-size = 100\naddress=/api.sno.example.com/10.0.0.7\n\n  bind-interfaces\nserver=10.0.0.1\n# more\naddress=/apps.sno.example.com/10.0.0.7\nlisten-address=127.0.0.1\nserver=10.0.0.1\n",
        )
        .unwrap();
        let (st, log) = check::<Dnsmasq>(&h, rule(&d.path().join("r.log")));
        assert_eq!(st, Status::Ok, "{log:?}");

        fs::write(
            &p,
            "address=/api.sno.example.com/10.0.0.8\nserver=10.0.0.1\nlisten-address=127.0.0.1\nbind-interfaces\ncache-size=100\nno-resolv\n",
        )
        .unwrap();
        let (st, log) = check::<Dnsmasq>(&h, rule(&d.path().join("r.log")));
        assert_eq!(st, Status::Nok);
        for needle in [
            "missing address=/api.sno.example.com/10.0.0.7",
            "missing address=/apps.sno.example.com/10.0.0.7",
            "unexpected address=/api.sno.example.com/10.0.0.8",
            "unexpected no-resolv",
        ] {
            assert!(log.iter().any(|l| l.contains(needle)), "{needle}: {log:?}");
        }
    }

    /// Acceptance: the reload hook runs only when the file changed (once for a fix, never for
    /// the second fix nor for a compliant file).
    #[test]
    fn fix_writes_and_reloads_only_on_change() {
        let d = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let reload_log = out.path().join("reload.log");
        let h = host(d.path());
        let p = d.path().join("etc/dnsmasq.d/sno.conf");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, "address=/old.example.com/10.9.9.9\n").unwrap();
        let log = assert_class_contract::<Dnsmasq>(&h, &[d.path()], rule(&reload_log));
        assert!(log.iter().any(|l| l.contains("unexpected address=/old.example.com/10.9.9.9")));
        assert_eq!(fs::read_to_string(&reload_log).unwrap(), "reloaded\n");
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("# Managed by tenet"), "{text}");
        assert!(text.contains("address=/api.sno.example.com/10.0.0.7\n"), "{text}");
        // A reordered but equal file is left alone, and nothing reloads.
        fs::write(
            &p,
            "bind-interfaces\ncache-size=100\naddress=/apps.sno.example.com/10.0.0.7\naddress=/api.sno.example.com/10.0.0.7\nserver=10.0.0.1\nlisten-address=127.0.0.1\n",
        )
        .unwrap();
        let (st, _) = fix::<Dnsmasq>(&h, rule(&reload_log));
        assert_eq!(st, Status::Ok);
        assert_eq!(fs::read_to_string(&reload_log).unwrap(), "reloaded\n");
        assert!(fs::read_to_string(&p).unwrap().starts_with("bind-interfaces"));
    }

    /// Acceptance: an option dnsmasq refuses is not written; the old file stays, and the
    /// message is dnsmasq's own.
    #[test]
    fn invalid_option_is_refused_and_old_file_kept() {
        // Fails with the package to install when dnsmasq is missing.
        tenet_release::testing::tool("dnsmasq");
        let d = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let reload_log = out.path().join("reload.log");
        let h = host(d.path());
        let p = d.path().join("etc/dnsmasq.d/sno.conf");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, "address=/old.example.com/10.9.9.9\n").unwrap();
        let before = crate::testing::snapshot(d.path());
        let mut r = rule(&reload_log);
        r["options"] = json!(["bind-interfaces", "no-such-option=1"]);
        let (st, log) = fix::<Dnsmasq>(&h, r);
        assert_eq!(st, Status::Nok);
        assert!(
            log.iter().any(|l| l.contains("dnsmasq --test refused")
                && l.contains("bad option")
                && l.contains("/etc/dnsmasq.d/sno.conf")
                && l.contains("old file kept")),
            "{log:?}"
        );
        let d2 = crate::testing::diff_snapshots(&before, &crate::testing::snapshot(d.path()));
        assert!(d2.is_empty(), "{d2:?}");
        assert!(!reload_log.exists(), "no reload after a refused change");
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (v, needle) in [
            (json!({"path": "/a", "addresses": [{"domain": "x", "ip": "nope"}]}), "invalid IP address"),
            (json!({"path": "/a", "addresses": [{"domain": "a/b", "ip": "1.2.3.4"}]}), "addresses[0].domain"),
            (json!({"path": "/a", "addresses": [{"domain": "a", "ip": "1.2.3.4", "ttl": 1}]}), "unknown field `ttl`"),
            (json!({"path": "/a", "options": ["a\nb"]}), "options[0]"),
            (json!({"path": "/a", "servers": [""]}), "servers[0]"),
            (json!({"path": "/a", "restart_unit": "a b"}), "restart_unit"),
            (json!({"path": "/a", "reloads": "x"}), "unknown field `reloads`"),
        ] {
            let err = Dnsmasq::rules(&v).unwrap_err();
            assert!(err.contains(needle), "{v}: {err}");
        }
    }

    #[test]
    fn a_directory_is_not_replaced() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        fs::create_dir_all(d.path().join("etc/dnsmasq.d/sno.conf")).unwrap();
        let (st, log) = fix::<Dnsmasq>(&h, json!({"path": "/etc/dnsmasq.d/sno.conf"}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("refusing")), "{log:?}");
    }
}

//! The `timedatectl` class: the time zone and whether NTP synchronisation is on.
//!
//! OpenSVC name `timedatectl` (object script `timedatectl.py`). A rule is
//! `{"timezone": "Europe/Paris", "ntpenabled": "no"}`; either key may be left out
//! (`ntpenabled` takes `"yes"`, `"no"`, `true` or `false`).
//!
//! - `timezone`: what `timedatectl set-timezone` leaves, done on the files under the root
//!   prefix: `/etc/localtime` is a symbolic link to `../usr/share/zoneinfo/<zone>`, and
//!   `/etc/timezone` (Debian's copy of the name), when the system has that file, holds the
//!   name. The zone must exist in the managed system's `/usr/share/zoneinfo` (a TZif file).
//!   A regular file at `/etc/localtime` (a copied zone, as old installers left) is nok and is
//!   replaced by the link (the file is backed up first).
//! - `ntpenabled`: systemd's `NTP` property (`timedatectl show -p NTP`; fix: `timedatectl
//!   set-ntp`), only when systemd runs the managed system (root prefix `/` and
//!   `/run/systemd/system` present); otherwise n/a with a message, as `systemd_unit`'s active
//!   state.
//!
//! Differences from OpenSVC are the `#timedatectl-*` rows of `docs/opensvc-compat.md`.

use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use super::common::{kind, systemd_running};
use crate::class::Class;
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

const LOCALTIME: &str = "/etc/localtime";
const TIMEZONE: &str = "/etc/timezone";
const ZONEINFO: &str = "/usr/share/zoneinfo";

/// One `timedatectl` rule, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    ntpenabled: Option<Value>,
}

/// One `timedatectl` rule.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct TimedatectlRule {
    /// The zone name (`Europe/Paris`, `Etc/UTC`); `None`: not managed.
    pub timezone: Option<String>,
    /// NTP synchronisation on or off; `None`: not managed.
    pub ntp: Option<bool>,
}

impl TryFrom<RawRule> for TimedatectlRule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Self, String> {
        if let Some(tz) = &raw.timezone {
            let ok = !tz.is_empty()
                && tz.split('/').all(|part| {
                    !part.is_empty()
                        && part != "."
                        && part != ".."
                        && part
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c))
                });
            if !ok {
                return Err(format!(
                    "timezone: {tz:?} is not a zone name (like Europe/Paris or Etc/UTC)"
                ));
            }
        }
        let ntp = match &raw.ntpenabled {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) if s == "yes" => Some(true),
            Some(Value::String(s)) if s == "no" => Some(false),
            Some(other) => {
                return Err(format!(
                    "ntpenabled: {other} is not \"yes\", \"no\", true or false"
                ));
            }
        };
        if raw.timezone.is_none() && ntp.is_none() {
            return Err("nothing to manage: set timezone or ntpenabled".into());
        }
        Ok(TimedatectlRule {
            timezone: raw.timezone,
            ntp,
        })
    }
}

/// The `timedatectl` class.
#[derive(Debug)]
pub struct Timedatectl;

impl Class for Timedatectl {
    type Rule = TimedatectlRule;

    const NAME: &'static str = "timedatectl";
    const ALIASES: &'static [&'static str] = &["timedatectl.py"];
    const DESCRIPTION: &'static str =
        "time zone (/etc/localtime link, /etc/timezone) and NTP on or off (when systemd runs)";

    fn describe(rule: &TimedatectlRule) -> String {
        let mut parts = Vec::new();
        if let Some(tz) = &rule.timezone {
            parts.push(format!("timezone {tz}"));
        }
        if let Some(n) = rule.ntp {
            parts.push(format!("ntp {}", if n { "on" } else { "off" }));
        }
        parts.join(", ")
    }

    fn check(rule: &TimedatectlRule, host: &HostView, log: &mut Log) -> Status {
        let mut statuses = Vec::new();
        if let Some(tz) = &rule.timezone {
            statuses.push(match zone_state(tz, host) {
                Ok(problems) if problems.is_empty() => {
                    log.info(format!("time zone {tz}, ok"));
                    Status::Ok
                }
                Ok(problems) => {
                    for p in problems {
                        log.err(p);
                    }
                    Status::Nok
                }
                Err(e) => {
                    log.err(format!("time zone {tz}: {e}"));
                    Status::Nok
                }
            });
        }
        if let Some(want) = rule.ntp {
            statuses.push(match ntp_state(host) {
                Err(why) => {
                    log.info(format!("NTP: n/a: {why}"));
                    Status::NotApplicable
                }
                Ok(Err(e)) => {
                    log.err(format!("NTP: {e}"));
                    Status::Nok
                }
                Ok(Ok(have)) if have == want => {
                    log.info(format!("NTP {}, ok", on_off(have)));
                    Status::Ok
                }
                Ok(Ok(have)) => {
                    log.err(format!("NTP is {}, expected {}", on_off(have), on_off(want)));
                    Status::Nok
                }
            });
        }
        Status::merge_all(statuses)
    }

    fn fix(rule: &TimedatectlRule, host: &Host, log: &mut Log) -> Status {
        let mut statuses = Vec::new();
        if let Some(tz) = &rule.timezone {
            statuses.push(match fix_zone(tz, host, log) {
                Ok(()) => Status::Ok,
                Err(e) => {
                    log.err(format!("time zone {tz}: {e}"));
                    Status::Nok
                }
            });
        }
        if let Some(want) = rule.ntp {
            statuses.push(match ntp_state(host) {
                Err(why) => {
                    log.info(format!("NTP: n/a: {why}"));
                    Status::NotApplicable
                }
                Ok(Ok(have)) if have == want => Status::Ok,
                Ok(_) => {
                    let arg = if want { "true" } else { "false" };
                    match host.run_change(Command::new("timedatectl").args(["set-ntp", arg])) {
                        Ok(out) if out.status.success() => {
                            log.info(format!("timedatectl set-ntp {arg}"));
                            Status::Ok
                        }
                        Ok(out) => {
                            log.err(format!(
                                "timedatectl set-ntp {arg} failed: {}",
                                String::from_utf8_lossy(&out.stderr).trim()
                            ));
                            Status::Nok
                        }
                        Err(e) => {
                            log.err(format!("timedatectl set-ntp {arg}: {e}"));
                            Status::Nok
                        }
                    }
                }
            });
        }
        Status::merge_all(statuses)
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// Whether systemd's NTP property is on: `Err` when n/a (systemd does not run the system),
/// `Ok(Err)` when it cannot be read.
fn ntp_state(host: &HostView) -> Result<Result<bool, String>, String> {
    systemd_running(host)?;
    let out = host.run_query(Command::new("timedatectl").args(["show", "-p", "NTP", "--value"]));
    Ok(match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim() == "yes"),
        Ok(o) => Err(format!(
            "timedatectl show failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(e.to_string()),
    })
}

/// The zone a `/etc/localtime` link target names (what follows `zoneinfo/`).
fn zone_of(target: &str) -> Option<&str> {
    target.rsplit_once("zoneinfo/").map(|(_, z)| z)
}

/// Checks the zone file exists; returns its absolute path.
fn zone_file(tz: &str, host: &HostView) -> Result<String, String> {
    let abs = format!("{ZONEINFO}/{tz}");
    let p = host.path(&abs).map_err(|e| e.to_string())?;
    let head = host
        .open(&p)
        .map_err(|e| e.to_string())?
        .and_then(|mut f| {
            let mut b = [0u8; 4];
            std::io::Read::read_exact(&mut f, &mut b).ok().map(|()| b)
        });
    match head {
        Some(b) if &b == b"TZif" => Ok(abs),
        Some(_) => Err(format!("{abs} is not a time zone file")),
        None => Err(format!("unknown time zone: no {abs} in the managed system")),
    }
}

/// The differences from the wanted zone, one message each.
fn zone_state(tz: &str, host: &HostView) -> Result<Vec<String>, String> {
    zone_file(tz, host)?;
    let mut problems = Vec::new();
    let lt = host.path(LOCALTIME).map_err(|e| e.to_string())?;
    match host.metadata(&lt).map_err(|e| e.to_string())? {
        None => problems.push(format!("{LOCALTIME}: missing, expected a link to the zone {tz}")),
        Some(m) if m.file_type().is_symlink() => {
            let t = host
                .read_link(&lt)
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            let t = t.to_string_lossy();
            if zone_of(&t) != Some(tz) {
                problems.push(format!(
                    "{LOCALTIME}: links to {t} (zone {}), expected the zone {tz}",
                    zone_of(&t).unwrap_or("unknown")
                ));
            }
        }
        Some(m) => problems.push(format!(
            "{LOCALTIME}: is {}, expected a link to the zone {tz}",
            kind(&m)
        )),
    }
    let tzf = host.path(TIMEZONE).map_err(|e| e.to_string())?;
    if let Some(text) = host.read_to_string(&tzf).map_err(|e| e.to_string())?
        && text.trim() != tz
    {
        problems.push(format!(
            "{TIMEZONE}: says {}, expected {tz}",
            text.trim()
        ));
    }
    Ok(problems)
}

fn fix_zone(tz: &str, host: &Host, log: &mut Log) -> Result<(), String> {
    zone_file(tz, host)?;
    let lt = host.path(LOCALTIME).map_err(|e| e.to_string())?;
    let target = format!("..{ZONEINFO}/{tz}");
    let current = host.metadata(&lt).map_err(|e| e.to_string())?;
    let right = match &current {
        Some(m) if m.file_type().is_symlink() => host
            .read_link(&lt)
            .map_err(|e| e.to_string())?
            .is_some_and(|t| zone_of(&t.to_string_lossy()) == Some(tz)),
        _ => false,
    };
    if !right {
        match &current {
            Some(m) if m.is_dir() => {
                return Err(format!("{LOCALTIME} is a directory; refusing to replace it"));
            }
            Some(m) if !m.file_type().is_symlink() => {
                host.remove(&lt).map_err(|e| e.to_string())?;
                log.info(format!("{LOCALTIME}: {} removed (backed up)", kind(m)));
            }
            _ => {}
        }
        host.symlink(&lt, &target).map_err(|e| e.to_string())?;
        log.info(format!("{LOCALTIME} -> {target}"));
    }
    let tzf = host.path(TIMEZONE).map_err(|e| e.to_string())?;
    if let Some(text) = host.read_to_string(&tzf).map_err(|e| e.to_string())?
        && text.trim() != tz
    {
        host.write_atomic(&tzf, format!("{tz}\n").as_bytes(), None, None)
            .map_err(|e| e.to_string())?;
        log.info(format!("{TIMEZONE}: {tz}"));
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

    fn zones(dir: &Path) {
        for z in ["Europe/Paris", "Etc/UTC"] {
            let p = dir.join("usr/share/zoneinfo").join(z);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, format!("TZif2 fake {z}")).unwrap();
        }
    }

    #[test]
    fn the_link_and_etc_timezone_are_set() {
        let d = tempfile::tempdir().unwrap();
        zones(d.path());
        fs::create_dir_all(d.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/usr/share/zoneinfo/Etc/UTC", d.path().join("etc/localtime"))
            .unwrap();
        fs::write(d.path().join("etc/timezone"), "Etc/UTC\n").unwrap();
        let h = host(d.path());
        let log = assert_class_contract::<Timedatectl>(
            &h,
            &[d.path()],
            json!({"timezone": "Europe/Paris"}),
        );
        assert!(
            log.iter().any(|l| l.contains("links to /usr/share/zoneinfo/Etc/UTC (zone Etc/UTC)")),
            "{log:?}"
        );
        assert_eq!(
            fs::read_link(d.path().join("etc/localtime")).unwrap(),
            Path::new("../usr/share/zoneinfo/Europe/Paris")
        );
        assert_eq!(
            fs::read_to_string(d.path().join("etc/timezone")).unwrap(),
            "Europe/Paris\n"
        );
    }

    #[test]
    fn a_copied_zone_file_is_replaced_by_the_link() {
        let d = tempfile::tempdir().unwrap();
        zones(d.path());
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/localtime"), "TZif2 copy").unwrap();
        let h = host(d.path());
        assert_class_contract::<Timedatectl>(&h, &[d.path()], json!({"timezone": "Etc/UTC"}));
        assert!(!d.path().join("etc/timezone").exists(), "not created when absent");
        assert!(d
            .path()
            .join("var/lib/tenet/backup")
            .join(h.session())
            .join("etc/localtime")
            .exists());
    }

    #[test]
    fn an_unknown_zone_is_nok_and_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        zones(d.path());
        let h = host(d.path());
        for action in ["check", "fix"] {
            let rule = json!({"timezone": "Mars/Olympus"});
            let (st, log) = if action == "check" {
                check::<Timedatectl>(&h, rule)
            } else {
                fix::<Timedatectl>(&h, rule)
            };
            assert_eq!(st, Status::Nok);
            assert!(log.iter().any(|l| l.contains("unknown time zone")), "{log:?}");
        }
        assert!(!d.path().join("etc/localtime").exists());
    }

    /// A root prefix is never the running system: NTP is n/a with a message; with a time
    /// zone, n/a merges into its status.
    #[test]
    fn ntp_is_not_applicable_without_systemd() {
        let d = tempfile::tempdir().unwrap();
        zones(d.path());
        let h = host(d.path());
        let (st, log) = check::<Timedatectl>(&h, json!({"ntpenabled": "yes"}));
        assert_eq!(st, Status::NotApplicable, "{log:?}");
        assert!(log.iter().any(|l| l.contains("NTP: n/a") && l.contains("root prefix")), "{log:?}");
        let (st, _) = fix::<Timedatectl>(&h, json!({"ntpenabled": false}));
        assert_eq!(st, Status::NotApplicable);
        assert_class_contract::<Timedatectl>(
            &h,
            &[d.path()],
            json!({"timezone": "Europe/Paris", "ntpenabled": "no"}),
        );
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (v, needle) in [
            (json!({"timezone": "../etc/passwd"}), "timezone:"),
            (json!({"timezone": "/Europe/Paris"}), "timezone:"),
            (json!({"ntpenabled": "maybe"}), "ntpenabled:"),
            (json!({}), "nothing to manage"),
            (json!({"timezone": "Etc/UTC", "tz": 1}), "unknown field `tz`"),
        ] {
            let err = Timedatectl::rules(&v).unwrap_err();
            assert!(err.contains(needle), "{v}: {err}");
        }
    }
}

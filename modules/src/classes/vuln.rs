//! The `vuln` class: installed packages are at least the version fixing a vulnerability.
//!
//! OpenSVC name `vuln` (object script `vuln.py`). A rule is `{"pkgname": "openssl", "minver":
//! "3.0.11-1~deb12u2", "firstver": "3.0.0"}` (a variable may hold a list of them): when
//! `pkgname` is installed, one of its installed versions must be at least `minver`, or older
//! than `firstver` (the first vulnerable version, optional). A package that is not installed
//! is compliant. Versions are compared in the order of the system's package manager
//! (`packages::version`: dpkg's for dpkg systems, rpm's `version-release` for rpm systems),
//! and the installed packages come from the same inventory as the `package` class
//! (`packages::inventory`); without a package database the rule is n/a.
//!
//! fix upgrades the package: with a package directory holding a file of the package at
//! `minver` or above, the highest such file is installed (`dpkg --root -i`, `rpm --root -U`);
//! otherwise, on `/` only, from the repositories (`apt-get install --only-upgrade`, `dnf` /
//! `yum upgrade`). fixable says whether one of those is possible. A fix that leaves the package
//! vulnerable (the repositories do not have `minver` yet) is nok.
//!
//! Differences from OpenSVC are the `#vuln-*` rows of `docs/opensvc-compat.md`.

use std::cmp::Ordering;

use serde::Deserialize;
use tenet_rulesets::PackageFact;

use crate::class::Class;
use crate::host::{Host, HostView};
use crate::packages::inventory::{Backend, inventory, no_database};
use crate::packages::tools::{
    PackageFile, apt_get, dpkg_root_args, native_deb_arch, package_files, repo_tool, run_change,
};
use crate::packages::{command, compare_deb_versions, compare_rpm_versions, which};
use crate::status::{Log, Status};

/// One `vuln` rule, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    pkgname: String,
    minver: String,
    #[serde(default)]
    firstver: Option<String>,
}

/// One `vuln` rule, checked.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct VulnRule {
    /// The package name (`[a-zA-Z0-9][a-zA-Z0-9+._-]*`).
    pub pkgname: String,
    /// The first version that is not vulnerable.
    pub minver: String,
    /// The first vulnerable version: older ones are not vulnerable.
    pub firstver: Option<String>,
}

impl TryFrom<RawRule> for VulnRule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Self, String> {
        let name = raw.pkgname.trim();
        let ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c));
        if !ok {
            return Err(format!("pkgname: {name:?} is not a package name"));
        }
        let version = |field: &str, v: &str| -> Result<String, String> {
            let v = v.trim();
            if v.is_empty() || v.contains(char::is_whitespace) {
                Err(format!("{field}: {v:?} is not a version"))
            } else {
                Ok(v.to_string())
            }
        };
        Ok(VulnRule {
            pkgname: name.to_string(),
            minver: version("minver", &raw.minver)?,
            firstver: match raw.firstver.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(v) => Some(version("firstver", v)?),
            },
        })
    }
}

/// The `vuln` class.
#[derive(Debug)]
pub struct Vuln;

impl Class for Vuln {
    type Rule = VulnRule;

    const NAME: &'static str = "vuln";
    const ALIASES: &'static [&'static str] = &["vuln.py"];
    const DESCRIPTION: &'static str =
        "installed packages are at least the version fixing a vulnerability (dpkg, rpm)";

    fn describe(rule: &VulnRule) -> String {
        format!("{} >= {}", rule.pkgname, rule.minver)
    }

    fn check(rule: &VulnRule, host: &HostView, log: &mut Log) -> Status {
        match assess(rule, host) {
            Ok(Some(Verdict::NotInstalled)) => {
                log.info(format!("{}: not installed, not vulnerable", rule.pkgname));
                Status::Ok
            }
            Ok(Some(Verdict::Safe(versions))) => {
                log.info(format!(
                    "{} {} installed, not vulnerable",
                    rule.pkgname,
                    versions.join(", ")
                ));
                Status::Ok
            }
            Ok(Some(Verdict::Vulnerable(versions))) => {
                log.err(format!(
                    "{} {} installed: vulnerable, upgrade to {} or later",
                    rule.pkgname,
                    versions.join(", "),
                    rule.minver
                ));
                Status::Nok
            }
            Ok(None) => {
                log.info(no_database(host));
                Status::NotApplicable
            }
            Err(e) => {
                log.err(format!("{}: {e}", rule.pkgname));
                Status::Nok
            }
        }
    }

    fn fixable(rule: &VulnRule, host: &HostView, log: &mut Log) -> Status {
        let backend = match inventory(host) {
            Ok(Some((b, _))) => b,
            Ok(None) => return Status::NotApplicable,
            Err(e) => {
                log.err(e.to_string());
                return Status::Nok;
            }
        };
        match plan(rule, backend, host) {
            Ok(_) => Status::Ok,
            Err(e) => {
                log.err(e);
                Status::Nok
            }
        }
    }

    fn fix(rule: &VulnRule, host: &Host, log: &mut Log) -> Status {
        let backend = match inventory(host) {
            Ok(Some((b, _))) => b,
            Ok(None) => {
                log.info(no_database(host));
                return Status::NotApplicable;
            }
            Err(e) => {
                log.err(e.to_string());
                return Status::Nok;
            }
        };
        let plan = match plan(rule, backend, host) {
            Ok(p) => p,
            Err(e) => {
                log.err(e);
                return Status::Nok;
            }
        };
        if backend == Backend::Dpkg && !host.is_real_root() {
            // `dpkg --log` refuses to run when its log cannot be opened.
            if let Err(e) = host.path("/var/log").and_then(|d| host.create_dir_all(&d)) {
                log.err(e.to_string());
                return Status::Nok;
            }
        }
        let mut cmd = match (backend, plan) {
            (Backend::Dpkg, Plan::File(f)) => {
                let mut c = command("dpkg");
                c.args(dpkg_root_args(host)).args(["-i", "--"]).arg(&f.path);
                c
            }
            (Backend::Rpm, Plan::File(f)) => {
                let mut c = command("rpm");
                c.arg("--root").arg(host.root()).args(["-U", "--"]).arg(&f.path);
                c
            }
            (Backend::Dpkg, Plan::Repo(tool)) => {
                let mut c = apt_get(tool);
                c.args(["install", "--only-upgrade", "-y", "--", &rule.pkgname]);
                c
            }
            (Backend::Rpm, Plan::Repo(tool)) => {
                let mut c = command(tool);
                c.args(["-y", "upgrade", "--", &rule.pkgname]);
                c
            }
        };
        if run_change(host, &mut cmd, log) != Status::Ok {
            return Status::Nok;
        }
        match assess(rule, host) {
            Ok(Some(Verdict::Vulnerable(v))) => {
                log.err(format!(
                    "{} {} still installed after the upgrade: {} is not available yet",
                    rule.pkgname,
                    v.join(", "),
                    rule.minver
                ));
                Status::Nok
            }
            Ok(_) => Status::Ok,
            Err(e) => {
                log.err(e);
                Status::Nok
            }
        }
    }
}

enum Verdict {
    NotInstalled,
    /// The installed versions, one of them safe.
    Safe(Vec<String>),
    /// The installed versions, all vulnerable.
    Vulnerable(Vec<String>),
}

fn order(backend: Backend) -> fn(&str, &str) -> Ordering {
    match backend {
        Backend::Dpkg => compare_deb_versions,
        Backend::Rpm => compare_rpm_versions,
    }
}

/// Whether a version is safe: at least `minver`, or older than `firstver`.
fn safe(rule: &VulnRule, cmp: fn(&str, &str) -> Ordering, v: &str) -> bool {
    cmp(v, &rule.minver) != Ordering::Less
        || rule
            .firstver
            .as_deref()
            .is_some_and(|f| cmp(v, f) == Ordering::Less)
}

fn assess(rule: &VulnRule, host: &HostView) -> Result<Option<Verdict>, String> {
    let Some((backend, installed)) = inventory(host).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let mine: Vec<&PackageFact> = installed
        .iter()
        .filter(|p| p.name == rule.pkgname)
        .collect();
    if mine.is_empty() {
        return Ok(Some(Verdict::NotInstalled));
    }
    let cmp = order(backend);
    let shown: Vec<String> = mine
        .iter()
        .map(|p| {
            if p.arch.is_empty() {
                p.version.clone()
            } else {
                format!("{} ({})", p.version, p.arch)
            }
        })
        .collect();
    Ok(Some(if mine.iter().any(|p| safe(rule, cmp, &p.version)) {
        Verdict::Safe(shown)
    } else {
        Verdict::Vulnerable(shown)
    }))
}

enum Plan {
    /// A package file at `minver` or above.
    File(PackageFile),
    /// The repositories, with this tool.
    Repo(&'static str),
}

fn plan(rule: &VulnRule, backend: Backend, host: &HostView) -> Result<Plan, String> {
    if let Some(dir) = host.package_dir() {
        let cmp = order(backend);
        let neutral = match backend {
            Backend::Dpkg => [native_deb_arch(), "all"],
            Backend::Rpm => [std::env::consts::ARCH, "noarch"],
        };
        let best = package_files(backend, dir, host)?
            .into_iter()
            .filter(|f| f.fact.name == rule.pkgname && neutral.contains(&f.fact.arch.as_str()))
            .filter(|f| cmp(&f.fact.version, &rule.minver) != Ordering::Less)
            .max_by(|a, b| cmp(&a.fact.version, &b.fact.version));
        if let Some(f) = best {
            return Ok(Plan::File(f));
        }
    }
    if host.is_real_root()
        && let Some(tool) = repo_tool(backend)
    {
        return Ok(Plan::Repo(tool));
    }
    let tool = match backend {
        Backend::Dpkg => "dpkg",
        Backend::Rpm => "rpm",
    };
    if which(tool).is_none() {
        return Err(format!("cannot upgrade {}: {tool} not found", rule.pkgname));
    }
    Err(match host.package_dir() {
        Some(d) => format!(
            "cannot upgrade {} to {}: no such package file in the package directory {}{}",
            rule.pkgname,
            rule.minver,
            d.display(),
            if host.is_real_root() { ", and no repository tool" } else { "" }
        ),
        None if host.is_real_root() => format!(
            "cannot upgrade {}: no repository tool (apt-get, dnf, yum) and no package directory",
            rule.pkgname
        ),
        None => format!(
            "cannot upgrade {} under root prefix {} without a package directory (--package-dir)",
            rule.pkgname,
            host.root().display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::dpkg::{build_test_deb, init_dpkg_root};
    use crate::testing::{assert_class_contract, check, fix};
    use serde_json::json;
    use std::path::Path;

    fn host(root: &Path, pkgdir: Option<&Path>) -> Host {
        Host::new(root)
            .with_var_dir(root.join("var/lib/tenet"))
            .with_package_dir(pkgdir.map(Path::to_path_buf))
    }

    #[test]
    fn versions_in_dpkg_order() {
        let d = tempfile::tempdir().unwrap();
        init_dpkg_root(
            d.path(),
            &[("openssl", "3.0.11-1~deb12u1"), ("libfoo", "1:0.9"), ("bar", "2.0")],
        );
        let h = host(d.path(), None);
        for (rule, want) in [
            // ~ sorts before anything: u1 is older than u2.
            (json!({"pkgname": "openssl", "minver": "3.0.11-1~deb12u2"}), Status::Nok),
            (json!({"pkgname": "openssl", "minver": "3.0.11-1~deb12u1"}), Status::Ok),
            (json!({"pkgname": "openssl", "minver": "3.0.11"}), Status::Ok),
            // The epoch wins.
            (json!({"pkgname": "libfoo", "minver": "2.0"}), Status::Ok),
            // Older than the first vulnerable version: not vulnerable.
            (json!({"pkgname": "bar", "minver": "3.0", "firstver": "2.1"}), Status::Ok),
            (json!({"pkgname": "bar", "minver": "3.0", "firstver": "1.0"}), Status::Nok),
            (json!({"pkgname": "notinstalled", "minver": "1"}), Status::Ok),
        ] {
            let (st, log) = check::<Vuln>(&h, rule.clone());
            assert_eq!(st, want, "{rule}: {log:?}");
        }
    }

    #[test]
    fn fix_upgrades_from_the_package_dir() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let pkgs = d.path().join("pkgs");
        std::fs::create_dir_all(&pkgs).unwrap();
        init_dpkg_root(&root, &[("tenet-vuln-test", "1.0-1")]);
        build_test_deb(&pkgs, "tenet-vuln-test", "1.0-2");
        build_test_deb(&pkgs, "tenet-vuln-test", "1.2-1");
        build_test_deb(&pkgs, "tenet-other", "9.0");
        let h = host(&root, Some(&pkgs));
        let rule = json!([{"pkgname": "tenet-vuln-test", "minver": "1.1", "firstver": "0.5"}]);
        let log = assert_class_contract::<Vuln>(&h, &[&root], rule);
        assert!(log.iter().any(|l| l.contains("1.0-1 (all) installed: vulnerable, upgrade to 1.1")), "{log:?}");
        let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
        assert!(status.contains("Version: 1.2-1"), "{status}");
    }

    #[test]
    fn no_candidate_is_not_fixable() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let pkgs = d.path().join("pkgs");
        std::fs::create_dir_all(&pkgs).unwrap();
        init_dpkg_root(&root, &[("tenet-vuln-test", "1.0-1")]);
        build_test_deb(&pkgs, "tenet-vuln-test", "1.0-2");
        let rule = json!({"pkgname": "tenet-vuln-test", "minver": "1.1"});
        for h in [host(&root, Some(&pkgs)), host(&root, None)] {
            let rules = Vuln::rules(&rule).unwrap();
            let mut log = Log::new();
            assert_eq!(Vuln::fixable(&rules[0], h.view(), &mut log), Status::Nok);
            let (st, log) = fix::<Vuln>(&h, rule.clone());
            assert_eq!(st, Status::Nok);
            assert!(log.iter().any(|l| l.contains("cannot upgrade")), "{log:?}");
        }
    }

    #[test]
    fn no_database_is_not_applicable_and_bad_rules_name_the_field() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path(), None);
        let (st, _) = check::<Vuln>(&h, json!({"pkgname": "a", "minver": "1"}));
        assert_eq!(st, Status::NotApplicable);
        for (v, needle) in [
            (json!({"pkgname": "-rf", "minver": "1"}), "pkgname:"),
            (json!({"pkgname": "a", "minver": ""}), "minver:"),
            (json!({"pkgname": "a", "minver": "1", "firstver": "1 2"}), "firstver:"),
            (json!({"pkgname": "a"}), "missing field `minver`"),
            (json!({"pkgname": "a", "minver": "1", "arch": "x"}), "unknown field `arch`"),
        ] {
            let err = Vuln::rules(&v).unwrap_err();
            assert!(err.contains(needle), "{v}: {err}");
        }
    }
}

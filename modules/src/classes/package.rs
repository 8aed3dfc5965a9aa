//! The `package` class: which packages must be installed, and which must be absent.
//!
//! OpenSVC name: `package` (var_class `package` / `packages`, object script `packages.py`).
//! The rule is OpenSVC's JSON list of package names: `name` or `+name` must be installed,
//! `-name` must be absent. A single string is a one-name list. Unlike the other classes, the
//! whole list of one variable is ONE rule, so that a fix installs every missing package in a
//! single `apt-get` / `dnf` / `dpkg -i` call (one dependency resolution, one transaction).
//!
//! Backends, chosen from what the root prefix holds (not from the vendor string alone):
//! - `<root>/var/lib/dpkg/status` exists: dpkg. Check parses the status file itself (no
//!   command). Fix installs from the package directory with `dpkg --root=<root> -i` when every
//!   missing package has a `.deb` there, else with `apt-get install` (root `/` only); removes
//!   with `apt-get remove` on `/`, `dpkg --root=<root> --remove` elsewhere.
//! - `<root>/var/lib/rpm` (or `<root>/usr/lib/sysimage/rpm`) exists, or the `rpm` command
//!   exists and the OS vendor is of the Red Hat / SuSE family: rpm. Check runs
//!   `rpm --root <root> -qa`. Fix uses `rpm --root <root> -i` with a package directory, else
//!   `dnf` (or `yum`) on `/`; removes with `dnf -y remove` on `/`, `rpm --root <root> -e`
//!   elsewhere.
//! - neither: not applicable ("no package database found under `<root>`").
//!
//! Differences from OpenSVC (each a row of `docs/opensvc-compat.md`, with the reason):
//! - Names are validated (`[a-zA-Z0-9][a-zA-Z0-9+._-]*`, optional `:arch`); anything else,
//!   including wildcards (`*`, which OpenSVC expanded with yum/zypper) and the HP-UX
//!   `name:reloc` form, is an error. This also keeps options out of the package tools'
//!   command lines. A non-string element is an error too (OpenSVC's Solaris dict form is not
//!   supported).
//! - The same name wanted and unwanted (`x` and `-x`, or `x` and `-x:i386`) is an error
//!   rather than a fix that can never converge (OM3 blacklists such names silently).
//! - `apt-get` runs without `--allow-unauthenticated` (security is not weakened), with
//!   `--no-install-recommends`, `DEBIAN_FRONTEND=noninteractive` and `--force-confdef`/
//!   `--force-confold` for dpkg, so an unattended run never prompts.
//! - An `x` name matches any installed architecture of `x`; `x:arch` only that one. On rpm,
//!   `x.arch` (the OpenSVC spelling) works as well as `x:arch`.
//! - Versions are not checked (as in OpenSVC). When the package directory holds several
//!   versions of a package, the highest (dpkg / rpm version order) of the native or
//!   architecture-independent ones is installed.
//! - A package whose dpkg state is `triggers-awaited` / `triggers-pending` counts as
//!   installed (it is configured; only a trigger is pending), and so does one on hold or
//!   selected for removal but still installed (`hi`, `ri`), whereas OpenSVC's `dpkg -l`
//!   parsing wanted the `ii` state only; half-installed, unpacked, config-files and similar
//!   states count as not installed.
//!
//! Every difference is listed in `docs/opensvc-compat.md`.

use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;
use tenet_rulesets::PackageFact;

use crate::class::{Class, parse_rule};
use crate::error::Result;
use crate::host::{Host, HostView};
use crate::packages::inventory::{Backend, inventory, no_database};
use crate::packages::tools::{
    PackageFile, apt_get, dpkg_root_args, native_deb_arch, package_files, repo_tool, run_change,
};
use crate::packages::{command, compare_deb_versions, compare_rpm_versions, which};
use crate::status::{Log, Status, Stream};

/// One package rule: the whole list of one variable.
///
/// Deserialized from a JSON list of strings (or one string) through [`TryFrom<Value>`], so
/// there are no object fields (and no `deny_unknown_fields`): anything but a string or a list
/// of strings is refused with a message naming the offending element.
#[derive(Debug, Deserialize)]
#[serde(try_from = "Value")]
pub struct PackageRule {
    /// Packages that must be installed (`name`, `+name`), in rule order, without duplicates.
    pub install: Vec<PackageName>,
    /// Packages that must be absent (`-name`), in rule order, without duplicates.
    pub remove: Vec<PackageName>,
}

/// A validated package name, with an optional architecture qualifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageName {
    /// The package name (`[a-zA-Z0-9][a-zA-Z0-9+._-]*`).
    pub name: String,
    /// The architecture after `:` (`amd64`, `x86_64`, `all`, ...), if given.
    pub arch: Option<String>,
}

impl std::fmt::Display for PackageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.arch {
            Some(a) => write!(f, "{}:{a}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl TryFrom<Value> for PackageRule {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        let items = match value {
            Value::Array(items) => items,
            s @ Value::String(_) => vec![s],
            other => {
                return Err(format!(
                    "a package rule is a list of package names, not {other}"
                ));
            }
        };
        let mut rule = PackageRule {
            install: Vec::new(),
            remove: Vec::new(),
        };
        for (i, item) in items.iter().enumerate() {
            let Value::String(text) = item else {
                return Err(format!(
                    "package list element {i} ({item}) is not a string (a package name)"
                ));
            };
            let (wanted, name) = parse_spec(text)
                .map_err(|e| format!("package list element {i} ({text:?}): {e}"))?;
            let list = if wanted {
                &mut rule.install
            } else {
                &mut rule.remove
            };
            if !list.contains(&name) {
                list.push(name);
            }
        }
        for w in &rule.install {
            if let Some(u) = rule.remove.iter().find(|u| conflicts(w, u)) {
                return Err(format!(
                    "package {w} is both required ({w:?}) and forbidden (\"-{u}\")"
                ));
            }
        }
        Ok(rule)
    }
}

impl PackageRule {
    fn is_empty(&self) -> bool {
        self.install.is_empty() && self.remove.is_empty()
    }
}

/// The `package` class.
#[derive(Debug)]
pub struct Package;

impl Class for Package {
    type Rule = PackageRule;
    const NAME: &'static str = "package";
    const ALIASES: &'static [&'static str] = &["packages", "packages.py", "package.py"];
    const DESCRIPTION: &'static str =
        "packages that must be installed (name, +name) or absent (-name), via dpkg/apt or rpm/dnf";

    /// The whole list is one rule (one install transaction); an empty list is no rule.
    fn rules(value: &Value) -> Result<Vec<PackageRule>, String> {
        let rule: PackageRule = parse_rule(value)?;
        Ok(if rule.is_empty() {
            Vec::new()
        } else {
            vec![rule]
        })
    }

    fn describe(rule: &PackageRule) -> String {
        let names: Vec<String> = rule
            .install
            .iter()
            .map(ToString::to_string)
            .chain(rule.remove.iter().map(|n| format!("-{n}")))
            .collect();
        format!("packages {}", names.join(", "))
    }

    fn check(rule: &PackageRule, host: &HostView, log: &mut Log) -> Status {
        let (_, installed) = match inventory(host) {
            Ok(Some(found)) => found,
            Ok(None) => {
                log.info(no_database(host));
                return Status::NotApplicable;
            }
            Err(e) => {
                log.err(e.to_string());
                return Status::Nok;
            }
        };
        let mut status = Status::Ok;
        for name in &rule.install {
            if is_installed(name, &installed) {
                log.info(format!("package {name} is installed"));
            } else {
                log.err(format!("package {name} is not installed"));
                status = Status::Nok;
            }
        }
        for name in &rule.remove {
            if is_installed(name, &installed) {
                log.err(format!("package {name} is installed, and must not be"));
                status = Status::Nok;
            } else {
                log.info(format!("package {name} is not installed"));
            }
        }
        status
    }

    fn fixable(rule: &PackageRule, host: &HostView, log: &mut Log) -> Status {
        let (backend, installed) = match inventory(host) {
            Ok(Some(found)) => found,
            Ok(None) => {
                log.info(no_database(host));
                return Status::NotApplicable;
            }
            Err(e) => {
                log.err(e.to_string());
                return Status::Nok;
            }
        };
        let missing = missing(rule, &installed);
        let present = present(rule, &installed);
        let mut status = Status::Ok;
        if !missing.is_empty() {
            match install_plan(backend, &missing, host) {
                Ok(plan) => log.info(format!("can install {} ({})", join(&missing), plan.how())),
                Err(reason) => {
                    log.err(reason);
                    status = Status::Nok;
                }
            }
        }
        if !present.is_empty() {
            match removal_command(backend, &present, host) {
                Ok(_) => log.info(format!("can remove {}", join(&present))),
                Err(reason) => {
                    log.err(reason);
                    status = Status::Nok;
                }
            }
        }
        status
    }

    fn fix(rule: &PackageRule, host: &Host, log: &mut Log) -> Status {
        let view = host.view();
        let (backend, installed) = match inventory(view) {
            Ok(Some(found)) => found,
            Ok(None) => {
                log.info(no_database(view));
                return Status::NotApplicable;
            }
            Err(e) => {
                log.err(e.to_string());
                return Status::Nok;
            }
        };

        if backend == Backend::Dpkg && !host.is_real_root() {
            // `dpkg --log` (see dpkg_root_args) refuses to run when its log cannot be opened.
            if let Err(e) = host.path("/var/log").and_then(|d| host.create_dir_all(&d)) {
                log.err(e.to_string());
                return Status::Nok;
            }
        }
        let missing = missing(rule, &installed);
        if !missing.is_empty() {
            let plan = match install_plan(backend, &missing, view) {
                Ok(plan) => plan,
                Err(reason) => {
                    log.err(reason);
                    return Status::Nok;
                }
            };
            let mut cmd = install_command(backend, &plan, &missing, view);
            if run_change(host, &mut cmd, log) != Status::Ok {
                return Status::Nok;
            }
        }

        // Installing may have removed conflicting packages: look again before removing.
        let installed = match inventory(view) {
            Ok(Some((_, installed))) => installed,
            Ok(None) => {
                log.err(no_database(view));
                return Status::Nok;
            }
            Err(e) => {
                log.err(e.to_string());
                return Status::Nok;
            }
        };
        let present = present(rule, &installed);
        if !present.is_empty() {
            let mut cmd = match removal_command(backend, &present, view) {
                Ok(cmd) => cmd,
                Err(reason) => {
                    log.err(reason);
                    return Status::Nok;
                }
            };
            if run_change(host, &mut cmd, log) != Status::Ok {
                return Status::Nok;
            }
        }

        // The tools said yes; make sure the result complies (a removal may have taken a
        // required package with it, an install may have stopped half-way).
        let mut verify = Log::new();
        match Package::check(rule, view, &mut verify) {
            Status::Ok => Status::Ok,
            other => {
                for line in verify.lines().iter().filter(|l| l.stream == Stream::Err) {
                    log.err(format!("after fix: {}", line.text));
                }
                if other == Status::NotApplicable {
                    log.err(no_database(view));
                }
                Status::Nok
            }
        }
    }
}
// ---------------------------------------------------------------------------------------------
// Rule parsing.

fn parse_spec(text: &str) -> Result<(bool, PackageName), String> {
    let text = text.trim();
    let (wanted, spec) = if let Some(rest) = text.strip_prefix('-') {
        (false, rest)
    } else if let Some(rest) = text.strip_prefix('+') {
        (true, rest)
    } else {
        (true, text)
    };
    if spec.contains(['*', '?', '[']) {
        return Err("wildcards are not supported in package names".into());
    }
    let (name, arch) = match spec.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (spec, None),
    };
    let valid = |s: &str, extra: &[char]| {
        let mut chars = s.chars();
        s.len() <= 255
            && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
    };
    if !valid(name, &['+', '.', '_', '-']) {
        return Err(
            "invalid package name (expected [a-zA-Z0-9][a-zA-Z0-9+._-]*, optionally :arch, \
             with a leading - for a package that must be absent)"
                .into(),
        );
    }
    if let Some(a) = arch
        && !valid(a, &['_', '-'])
    {
        return Err(format!(
            "invalid architecture {a:?} (expected [a-zA-Z0-9][a-zA-Z0-9_-]*)"
        ));
    }
    Ok((
        wanted,
        PackageName {
            name: name.to_string(),
            arch: arch.map(str::to_string),
        },
    ))
}

/// Whether requiring `w` and forbidding `u` can both hold at once: not when they name the
/// same package and either leaves the architecture open (or both give the same one).
fn conflicts(w: &PackageName, u: &PackageName) -> bool {
    w.name == u.name && (w.arch.is_none() || u.arch.is_none() || w.arch == u.arch)
}

// ---------------------------------------------------------------------------------------------
// Wanted names against the installed inventory.

fn matches(want: &PackageName, p: &PackageFact) -> bool {
    match &want.arch {
        Some(arch) => p.name == want.name && &p.arch == arch,
        // rpm spelling `name.arch` (a dpkg name may contain dots, but never equals
        // `<another name>.<its arch>` in practice).
        None => p.name == want.name || format!("{}.{}", p.name, p.arch) == want.name,
    }
}

fn is_installed(want: &PackageName, installed: &[PackageFact]) -> bool {
    installed.iter().any(|p| matches(want, p))
}

fn missing(rule: &PackageRule, installed: &[PackageFact]) -> Vec<PackageName> {
    rule.install
        .iter()
        .filter(|n| !is_installed(n, installed))
        .cloned()
        .collect()
}

fn present(rule: &PackageRule, installed: &[PackageFact]) -> Vec<PackageName> {
    rule.remove
        .iter()
        .filter(|n| is_installed(n, installed))
        .cloned()
        .collect()
}

fn join(names: &[PackageName]) -> String {
    names
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Fix planning and commands.

enum InstallPlan {
    /// Package files from the package directory, one per missing name.
    Local(Vec<PathBuf>),
    /// The distribution's repositories (apt-get / dnf / yum), root `/` only.
    Repo(&'static str),
}

impl InstallPlan {
    fn how(&self) -> String {
        match self {
            InstallPlan::Local(files) => format!("{} local package file(s)", files.len()),
            InstallPlan::Repo(tool) => format!("with {tool}"),
        }
    }
}

fn install_plan(
    backend: Backend,
    missing: &[PackageName],
    host: &HostView,
) -> Result<InstallPlan, String> {
    let mut uncovered: Vec<PackageName> = missing.to_vec();
    if let Some(dir) = host.package_dir() {
        let files = package_files(backend, dir, host)?;
        let mut chosen: Vec<PathBuf> = Vec::new();
        uncovered.clear();
        for want in missing {
            match best_candidate(backend, want, &files) {
                Some(f) => {
                    if !chosen.contains(&f.path) {
                        chosen.push(f.path.clone());
                    }
                }
                None => uncovered.push(want.clone()),
            }
        }
        if uncovered.is_empty() {
            return Ok(InstallPlan::Local(chosen));
        }
    }
    let tool = repo_tool(backend);
    if host.is_real_root() {
        return match tool {
            Some(tool) => Ok(InstallPlan::Repo(tool)),
            None => Err(format!(
                "cannot install {}: {} not found{}",
                join(&uncovered),
                match backend {
                    Backend::Dpkg => "apt-get",
                    Backend::Rpm => "dnf or yum",
                },
                host.package_dir()
                    .map(|d| format!(", and no package file for it in {}", d.display()))
                    .unwrap_or_default()
            )),
        };
    }
    Err(match host.package_dir() {
        Some(dir) => format!(
            "cannot install {} under root prefix {}: no package file for it in the package \
             directory {}",
            join(&uncovered),
            host.root().display(),
            dir.display()
        ),
        None => format!(
            "cannot install {} under root prefix {} without a package directory (--package-dir)",
            join(&uncovered),
            host.root().display()
        ),
    })
}

fn install_command(
    backend: Backend,
    plan: &InstallPlan,
    missing: &[PackageName],
    host: &HostView,
) -> Command {
    match (backend, plan) {
        (Backend::Dpkg, InstallPlan::Local(files)) => {
            let mut cmd = command("dpkg");
            cmd.args(dpkg_root_args(host)).args(["-i", "--"]).args(files);
            cmd
        }
        (Backend::Rpm, InstallPlan::Local(files)) => {
            let mut cmd = command("rpm");
            cmd.arg("--root")
                .arg(host.root())
                .args(["-i", "--"])
                .args(files);
            cmd
        }
        (Backend::Dpkg, InstallPlan::Repo(tool)) => {
            let mut cmd = apt_get(tool);
            cmd.args(["install", "-y", "--no-install-recommends", "--"])
                .args(missing.iter().map(ToString::to_string));
            cmd
        }
        (Backend::Rpm, InstallPlan::Repo(tool)) => {
            let mut cmd = command(tool);
            cmd.args(["-y", "install", "--"])
                .args(missing.iter().map(rpm_spelling));
            cmd
        }
    }
}

fn removal_command(
    backend: Backend,
    present: &[PackageName],
    host: &HostView,
) -> Result<Command, String> {
    match backend {
        Backend::Dpkg if host.is_real_root() => {
            let tool = repo_tool(backend)
                .ok_or_else(|| format!("cannot remove {}: apt-get not found", join(present)))?;
            let mut cmd = apt_get(tool);
            cmd.args(["remove", "-y", "--"])
                .args(present.iter().map(ToString::to_string));
            Ok(cmd)
        }
        Backend::Dpkg => {
            which("dpkg")
                .ok_or_else(|| format!("cannot remove {}: dpkg not found", join(present)))?;
            let mut cmd = command("dpkg");
            cmd.args(dpkg_root_args(host))
                .args(["--remove", "--"])
                .args(present.iter().map(ToString::to_string));
            Ok(cmd)
        }
        Backend::Rpm if host.is_real_root() => {
            let tool = repo_tool(backend)
                .ok_or_else(|| format!("cannot remove {}: dnf or yum not found", join(present)))?;
            let mut cmd = command(tool);
            cmd.args(["-y", "remove", "--"])
                .args(present.iter().map(rpm_spelling));
            Ok(cmd)
        }
        Backend::Rpm => {
            which("rpm")
                .ok_or_else(|| format!("cannot remove {}: rpm not found", join(present)))?;
            let mut cmd = command("rpm");
            cmd.arg("--root")
                .arg(host.root())
                .args(["-e", "--"])
                .args(present.iter().map(rpm_spelling));
            Ok(cmd)
        }
    }
}

fn rpm_spelling(n: &PackageName) -> String {
    match &n.arch {
        Some(a) => format!("{}.{a}", n.name),
        None => n.name.clone(),
    }
}

/// The file to install for `want`: among the files naming it, those of the native (or no)
/// architecture when `want` leaves it open, then the highest version.
fn best_candidate<'a>(
    backend: Backend,
    want: &PackageName,
    files: &'a [PackageFile],
) -> Option<&'a PackageFile> {
    let candidates: Vec<&PackageFile> = files.iter().filter(|f| matches(want, &f.fact)).collect();
    let (native, neutral) = match backend {
        Backend::Dpkg => (native_deb_arch(), "all"),
        Backend::Rpm => (std::env::consts::ARCH, "noarch"),
    };
    let preferred: Vec<&PackageFile> = candidates
        .iter()
        .copied()
        .filter(|f| f.fact.arch == native || f.fact.arch == neutral)
        .collect();
    let pool = if want.arch.is_none() && !preferred.is_empty() {
        preferred
    } else {
        candidates
    };
    let cmp = match backend {
        Backend::Dpkg => compare_deb_versions,
        Backend::Rpm => compare_rpm_versions,
    };
    // `max_by` keeps the last of equals; reversing the pool keeps the first file instead.
    pool.into_iter()
        .rev()
        .max_by(|a, b| cmp(&a.fact.version, &b.fact.version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::inventory::backend;
    use crate::packages::{installed_packages, parse_rpm_query, render, search_path};
    use std::path::Path;
    use crate::testing::dpkg::{build_test_deb, build_test_deb_with, init_dpkg_root};
    use crate::testing::{assert_class_contract, check, fix};
    use serde_json::json;

    fn host(root: &Path) -> Host {
        Host::new(root).with_var_dir(root.join("var/lib/tenet"))
    }

    fn load(v: Value) -> Result<Vec<PackageRule>, String> {
        Package::rules(&v)
    }

    #[test]
    fn only_missing_packages_are_reported() {
        let d = tempfile::tempdir().unwrap();
        init_dpkg_root(d.path(), &[("sysstat", "12.6.1-1")]);
        let (st, log) = check::<Package>(
            &host(d.path()),
            json!(["sysstat", "docker.io", "btrfs-tools"]),
        );
        assert_eq!(st, Status::Nok);
        assert!(
            log.contains(&"package sysstat is installed".to_string()),
            "{log:?}"
        );
        assert!(
            log.contains(&"package docker.io is not installed".to_string()),
            "{log:?}"
        );
        assert!(
            log.contains(&"package btrfs-tools is not installed".to_string()),
            "{log:?}"
        );
    }

    #[test]
    fn installs_missing_packages_from_the_package_dir_in_one_call() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let debs = d.path().join("debs");
        std::fs::create_dir_all(&debs).unwrap();
        init_dpkg_root(&root, &[("sysstat", "12.6.1-1")]);
        build_test_deb(&debs, "docker.io", "20.10.24+dfsg1-1");
        build_test_deb(&debs, "btrfs-tools", "6.2-1");
        build_test_deb(&debs, "unrelated", "1.0");
        let h = host(&root).with_package_dir(Some(debs.clone()));
        let rule = json!(["sysstat", "docker.io", "+btrfs-tools"]);

        let mut log = Log::new();
        let rules = load(rule.clone()).unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(Package::fixable(&rules[0], h.view(), &mut log), Status::Ok);

        assert_class_contract::<Package>(&h, &[&root], rule.clone());
        assert!(root.join("usr/share/doc/docker.io/marker").is_file());
        assert!(root.join("usr/share/doc/btrfs-tools/marker").is_file());
        assert!(!root.join("usr/share/doc/unrelated").exists());

        let facts = installed_packages(h.view()).unwrap();
        let names: Vec<&str> = facts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(facts.contains(&PackageFact {
            name: "docker.io".into(),
            version: "20.10.24+dfsg1-1".into(),
            arch: "all".into()
        }));
    }

    #[test]
    fn fix_logs_the_single_dpkg_command() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let debs = d.path().join("debs");
        std::fs::create_dir_all(&debs).unwrap();
        init_dpkg_root(&root, &[]);
        build_test_deb(&debs, "a", "1");
        build_test_deb(&debs, "b", "1");
        let h = host(&root).with_package_dir(Some(debs));
        let (st, log) = fix::<Package>(&h, json!(["a", "b"]));
        assert_eq!(st, Status::Ok, "{log:?}");
        let runs: Vec<&String> = log.iter().filter(|l| l.starts_with("running ")).collect();
        assert_eq!(runs.len(), 1, "{log:?}");
        assert!(
            runs[0].contains("dpkg --root=") && runs[0].contains(" -i -- "),
            "{runs:?}"
        );
        assert!(runs[0].contains("a_1_all.deb") && runs[0].contains("b_1_all.deb"));
    }

    #[test]
    fn removes_unwanted_packages_with_dpkg_under_a_root_prefix() {
        // Acceptance case 14, under a root prefix: ["bzip2", "-zip"], both installed.
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let debs = d.path().join("debs");
        std::fs::create_dir_all(&debs).unwrap();
        init_dpkg_root(&root, &[("bzip2", "1.0.8-5")]);
        let zip = build_test_deb(&debs, "zip", "3.0-13");
        let out = Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .arg("-i")
            .arg(&zip)
            .env("PATH", search_path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(root.join("usr/share/doc/zip/marker").is_file());

        let h = host(&root);
        let log = assert_class_contract::<Package>(&h, &[&root], json!(["bzip2", "-zip"]));
        assert!(
            log.contains(&"package zip is installed, and must not be".to_string()),
            "{log:?}"
        );
        assert!(!root.join("usr/share/doc/zip/marker").exists());
        let (_, log) = check::<Package>(&h, json!(["bzip2", "-zip"]));
        assert!(
            log.contains(&"package zip is not installed".to_string()),
            "{log:?}"
        );
    }

    #[test]
    fn config_files_state_is_not_installed() {
        let d = tempfile::tempdir().unwrap();
        init_dpkg_root(d.path(), &[]);
        std::fs::write(
            d.path().join("var/lib/dpkg/status"),
            "Package: old\nStatus: deinstall ok config-files\nArchitecture: all\n\
             Version: 0.1\nConffiles:\n /etc/old.conf 0123\nDescription: x\n",
        )
        .unwrap();
        let h = host(d.path());
        assert_eq!(check::<Package>(&h, json!(["old"])).0, Status::Nok);
        assert_eq!(check::<Package>(&h, json!(["-old"])).0, Status::Ok);
    }

    #[test]
    fn a_single_string_is_a_one_name_list() {
        let d = tempfile::tempdir().unwrap();
        init_dpkg_root(d.path(), &[("sysstat", "1")]);
        let h = host(d.path());
        assert_eq!(
            check::<Package>(&h, json!("sysstat")),
            (Status::Ok, vec!["package sysstat is installed".to_string()])
        );
        let rules = load(json!("-sysstat")).unwrap();
        assert_eq!(Package::describe(&rules[0]), "packages -sysstat");
        assert_eq!(
            Package::describe(&load(json!(["a", "-b", "+c:amd64", "a"])).unwrap()[0]),
            "packages a, c:amd64, -b"
        );
        assert!(load(json!([])).unwrap().is_empty());
    }

    #[test]
    fn invalid_names_are_errors() {
        for bad in [
            "--foo", "a b", "; rm", "rm;", "", "-", "+", "a:", "a:b:c", "fo*", "é", "a/b", "$(x)",
        ] {
            let err = load(json!([bad])).expect_err(bad);
            assert!(err.contains("element 0"), "{bad}: {err}");
        }
        let err = load(json!(["ok", 42])).unwrap_err();
        assert!(err.contains("element 1") && err.contains("42"), "{err}");
        assert!(
            load(json!({"names": ["a"]}))
                .unwrap_err()
                .contains("list of package names")
        );
        assert!(
            load(json!(["x", "-x"]))
                .unwrap_err()
                .contains("both required")
        );
        assert!(
            load(json!(["x", "-x:i386"]))
                .unwrap_err()
                .contains("both required")
        );
        assert!(load(json!(["x:amd64", "-x:i386"])).is_ok());
        assert!(
            load(json!([
                "lib32z1",
                "g++",
                "libstdc++6:amd64",
                "python3.11",
                "a_b"
            ]))
            .is_ok()
        );
    }

    #[test]
    fn no_database_is_not_applicable() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        let (st, log) = check::<Package>(&h, json!(["sysstat"]));
        assert_eq!(st, Status::NotApplicable);
        assert_eq!(
            log,
            vec![format!(
                "no package database found under {}",
                d.path().display()
            )]
        );
        assert_eq!(installed_packages(h.view()).unwrap(), vec![]);
    }

    #[test]
    fn no_package_dir_under_a_root_prefix_cannot_fix() {
        let d = tempfile::tempdir().unwrap();
        init_dpkg_root(d.path(), &[]);
        let h = host(d.path());
        let want = format!(
            "cannot install docker.io under root prefix {} without a package directory (--package-dir)",
            d.path().display()
        );
        let rules = load(json!(["docker.io"])).unwrap();
        let mut log = Log::new();
        assert_eq!(Package::fixable(&rules[0], h.view(), &mut log), Status::Nok);
        assert_eq!(log.last_error(), Some(want.as_str()));
        let (st, log) = fix::<Package>(&h, json!(["docker.io"]));
        assert_eq!(st, Status::Nok);
        assert_eq!(log, vec![want]);
    }

    #[test]
    fn a_package_dir_lacking_a_name_cannot_fix_under_a_root_prefix() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let debs = d.path().join("debs");
        std::fs::create_dir_all(&debs).unwrap();
        init_dpkg_root(&root, &[]);
        build_test_deb(&debs, "a", "1");
        let h = host(&root).with_package_dir(Some(debs.clone()));
        let (st, log) = fix::<Package>(&h, json!(["a", "b"]));
        assert_eq!(st, Status::Nok);
        assert!(
            log[0].contains("cannot install b under root prefix")
                && log[0].contains(&debs.display().to_string()),
            "{log:?}"
        );
        assert!(
            !root.join("usr/share/doc/a").exists(),
            "nothing installed when one name is missing"
        );
    }

    #[test]
    fn the_highest_version_in_the_package_dir_wins() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let debs = d.path().join("debs");
        std::fs::create_dir_all(&debs).unwrap();
        init_dpkg_root(&root, &[]);
        build_test_deb(&debs, "foo", "1.9");
        build_test_deb(&debs, "foo", "1.10");
        build_test_deb(&debs, "foo", "1.10~rc1");
        let h = host(&root).with_package_dir(Some(debs));
        assert_class_contract::<Package>(&h, &[&root], json!(["foo"]));
        let facts = installed_packages(h.view()).unwrap();
        assert_eq!(facts.len(), 1);
        assert_eq!(facts[0].version, "1.10");
    }

    #[test]
    fn a_failing_command_is_reported_with_its_stderr() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let debs = d.path().join("debs");
        std::fs::create_dir_all(&debs).unwrap();
        init_dpkg_root(&root, &[]);
        build_test_deb_with(&debs, "needy", "1", "Depends: nosuchpackage\n");
        let h = host(&root).with_package_dir(Some(debs));
        let (st, log) = fix::<Package>(&h, json!(["needy"]));
        assert_eq!(st, Status::Nok);
        let all = log.join("\n");
        assert!(
            all.contains("dpkg --root=") && all.contains("failed (exit code 1)"),
            "{all}"
        );
        assert!(all.contains("nosuchpackage"), "{all}");
    }

    #[test]
    fn architecture_qualifiers_match_exactly() {
        let d = tempfile::tempdir().unwrap();
        init_dpkg_root(d.path(), &[("foo", "1")]);
        let h = host(d.path());
        assert_eq!(check::<Package>(&h, json!(["foo:all"])).0, Status::Ok);
        assert_eq!(check::<Package>(&h, json!(["foo:amd64"])).0, Status::Nok);
        assert_eq!(check::<Package>(&h, json!(["-foo:i386"])).0, Status::Ok);
    }

    #[test]
    fn rpm_database_selects_rpm_and_a_missing_rpm_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("var/lib/rpm")).unwrap();
        let h = host(d.path());
        assert_eq!(backend(h.view()).unwrap(), Some(Backend::Rpm));
        if which("rpm").is_none() {
            let (st, log) = check::<Package>(&h, json!(["bash"]));
            assert_eq!(st, Status::Nok);
            assert!(log[0].contains("rpm"), "{log:?}");
        }
        // dpkg wins when both databases are there.
        init_dpkg_root(d.path(), &[]);
        assert_eq!(backend(h.view()).unwrap(), Some(Backend::Dpkg));
    }

    #[test]
    fn rpm_query_parsing_and_matching() {
        let out = "bash\t5.1.8-6.el9\tx86_64\nglibc\t2.34-60.el9\ti686\nglibc\t2.34-60.el9\tx86_64\n\
                   gpg-pubkey\tfd431d51-4ae0493b\t(none)\ngarbage line\n\n";
        let facts = parse_rpm_query(out);
        assert_eq!(facts.len(), 4);
        assert_eq!(
            facts[0],
            PackageFact {
                name: "bash".into(),
                version: "5.1.8-6.el9".into(),
                arch: "x86_64".into()
            }
        );
        let n = |s: &str| parse_spec(s).unwrap().1;
        assert!(is_installed(&n("bash"), &facts));
        assert!(is_installed(&n("bash.x86_64"), &facts));
        assert!(is_installed(&n("glibc.i686"), &facts));
        assert!(is_installed(&n("glibc:i686"), &facts));
        assert!(!is_installed(&n("bash.i686"), &facts));
        assert!(!is_installed(&n("zsh"), &facts));
        assert_eq!(rpm_spelling(&n("glibc:i686")), "glibc.i686");
    }

    #[test]
    fn command_lines_are_rendered_for_messages() {
        let mut cmd = apt_get("apt-get");
        cmd.args(["install", "-y", "--", "a b", "c"]);
        assert_eq!(
            render(&cmd),
            "DEBIAN_FRONTEND=noninteractive apt-get -o Dpkg::Options::=--force-confdef -o \
             Dpkg::Options::=--force-confold install -y -- 'a b' c"
        );
    }

    #[test]
    fn registered_under_its_aliases() {
        for name in ["package", "packages", "packages.py", "package.py"] {
            assert_eq!(
                crate::classes::find(name).map(|c| c.name),
                Some("package"),
                "{name}"
            );
        }
    }
}

//! Installing from the package directory or the repositories: the package files the
//! `package` and `vuln` classes install from, the repository tools and their options, and the
//! changing commands' logging.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use tenet_rulesets::PackageFact;

use super::inventory::Backend;
use super::{command, failure, parse_rpm_query, render, which};
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// The repository tool of a backend found on PATH: `apt-get`, `dnf` or `yum`.
pub(crate) fn repo_tool(backend: Backend) -> Option<&'static str> {
    match backend {
        Backend::Dpkg => which("apt-get").map(|_| "apt-get"),
        Backend::Rpm => which("dnf")
            .map(|_| "dnf")
            .or_else(|| which("yum").map(|_| "yum")),
    }
}

/// `--root=R --log=R/var/log/dpkg.log`: dpkg would otherwise append to the host's own log
/// (its `/etc/dpkg/dpkg.cfg` names one), writing outside the root prefix.
pub(crate) fn dpkg_root_args(host: &HostView) -> [OsString; 2] {
    let mut root = OsString::from("--root=");
    root.push(host.root());
    // dpkg opens the log itself: its links resolved inside the root prefix first. Fix
    // creates the directory (dpkg refuses to run when its log cannot be opened).
    let log_path = host
        .path("/var/log/dpkg.log")
        .and_then(|p| host.resolved_real(&p))
        .unwrap_or_else(|_| host.root().join("var/log/dpkg.log"));
    let mut log = OsString::from("--log=");
    log.push(log_path);
    [root, log]
}

/// `apt-get` (or `tool`) made non-interactive, keeping local configuration files.
pub(crate) fn apt_get(tool: &str) -> Command {
    let mut cmd = command(tool);
    cmd.env("DEBIAN_FRONTEND", "noninteractive").args([
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
    ]);
    cmd
}

/// Runs a changing command, logging it; a failure logs the command line and the end of its
/// output.
pub(crate) fn run_change(host: &Host, cmd: &mut Command, log: &mut Log) -> Status {
    log.info(format!("running {}", render(cmd)));
    match host.run_change(cmd) {
        Ok(out) if out.status.success() => Status::Ok,
        Ok(out) => {
            log.err(failure(cmd, &out));
            Status::Nok
        }
        Err(e) => {
            log.err(format!("{}: {e}", render(cmd)));
            Status::Nok
        }
    }
}

/// A package file of the package directory, with what it holds.
#[derive(Debug, Clone)]
pub(crate) struct PackageFile {
    /// Its path (on the machine Tenet runs on).
    pub(crate) path: PathBuf,
    /// Name, version and architecture, read from the file.
    pub(crate) fact: PackageFact,
}

/// The package files of the backend's kind in the package directory `dir`.
pub(crate) fn package_files(
    backend: Backend,
    dir: &Path,
    host: &HostView,
) -> Result<Vec<PackageFile>, String> {
    let ext = match backend {
        Backend::Dpkg => "deb",
        Backend::Rpm => "rpm",
    };
    let paths = host
        .package_files(ext)
        .map_err(|e| format!("cannot read the package directory {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for path in paths {
        if let Some(fact) = read_package_file(backend, &path, host) {
            out.push(PackageFile { path, fact });
        }
    }
    Ok(out)
}

/// Name, version and architecture of a package file, from the file itself (`dpkg-deb -W`,
/// `rpm -qp`); a `.deb` falls back to its file name (`name_version_arch.deb`) when dpkg-deb
/// cannot run. Unreadable files are skipped.
fn read_package_file(backend: Backend, path: &Path, host: &HostView) -> Option<PackageFact> {
    let mut cmd = match backend {
        Backend::Dpkg => {
            let mut c = command("dpkg-deb");
            c.args([
                "-W",
                "--showformat=${Package}\\t${Version}\\t${Architecture}\\n",
                "--",
            ]);
            c
        }
        Backend::Rpm => {
            let mut c = command("rpm");
            c.args([
                "-qp",
                "--qf",
                "%{NAME}\\t%{VERSION}-%{RELEASE}\\t%{ARCH}\\n",
                "--",
            ]);
            c
        }
    };
    cmd.arg(path);
    match host.run_query(&mut cmd) {
        Ok(out) if out.status.success() => parse_rpm_query(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .next(),
        Ok(_) => None,
        Err(_) if backend == Backend::Dpkg => {
            let stem = path.file_stem()?.to_str()?;
            let mut f = stem.split('_');
            let (name, version, arch) = (f.next()?, f.next()?, f.next()?);
            Some(PackageFact {
                name: name.to_string(),
                version: version.replace("%3a", ":"),
                arch: arch.to_string(),
            })
        }
        Err(_) => None,
    }
}

/// Debian's name of the architecture Tenet was built for.
pub(crate) fn native_deb_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "i386",
        "aarch64" => "arm64",
        "arm" => "armhf",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64el",
        "loongarch64" => "loong64",
        "mips64" => "mips64el",
        other => other,
    }
}

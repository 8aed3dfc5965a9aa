//! The installed packages of the managed system: dpkg's status file, parsed in-process, or
//! `rpm --root <root> -qa`.

use tenet_rulesets::PackageFact;

use super::{command, failure, which};
use crate::error::{Error, Result};
use crate::host::HostView;

/// The installed packages of the managed system (name, version, architecture), for facts
/// gathering: from `<root>/var/lib/dpkg/status` on dpkg systems, from
/// `rpm --root <root> -qa` on rpm systems. A system without a package database (or with an
/// unknown one) has no packages: the list is empty.
pub fn installed_packages(host: &HostView) -> Result<Vec<PackageFact>> {
    Ok(inventory(host)?.map(|(_, p)| p).unwrap_or_default())
}

/// Parses a dpkg status file (`/var/lib/dpkg/status`) into the packages it records as
/// installed. Stanzas are separated by blank lines; continuation lines (starting with a space
/// or tab) are skipped; field names are case-insensitive. A package is installed when the
/// third word of its `Status:` is `installed`, `triggers-awaited` or `triggers-pending` (dpkg's
/// words for a configured package with a trigger still to run, `iW` / `it` in `dpkg -l`).
pub fn parse_dpkg_status(text: &str) -> Vec<PackageFact> {
    let mut out = Vec::new();
    let mut cur = Stanza::default();
    for line in text.lines() {
        if line.trim().is_empty() {
            cur.finish(&mut out);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_string();
        match field.trim().to_ascii_lowercase().as_str() {
            "package" => cur.name = Some(value),
            "status" => cur.status = Some(value),
            "version" => cur.version = Some(value),
            "architecture" => cur.arch = Some(value),
            _ => {}
        }
    }
    cur.finish(&mut out);
    out
}

/// Parses the output of `rpm -qa --qf '%{NAME}\t%{VERSION}-%{RELEASE}\t%{ARCH}\n'`.
/// Lines without three tab-separated fields are skipped.
pub fn parse_rpm_query(text: &str) -> Vec<PackageFact> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let (name, version, arch) = (f.next()?, f.next()?, f.next()?);
            let name = name.trim();
            (!name.is_empty() && f.next().is_none()).then(|| PackageFact {
                name: name.to_string(),
                version: version.trim().to_string(),
                arch: arch.trim().to_string(),
            })
        })
        .collect()
}

/// The package database of the managed system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// dpkg (`var/lib/dpkg/status`).
    Dpkg,
    /// rpm (`var/lib/rpm` or `usr/lib/sysimage/rpm`, or the rpm command on a Red Hat or SuSE
    /// system).
    Rpm,
}

const RPM_VENDORS: &[&str] = &[
    "red hat",
    "redhat",
    "centos",
    "oracle",
    "suse",
    "fedora",
    "rocky",
    "alma",
    "almalinux",
];

/// Which package database the managed system has, `None` for none known.
pub(crate) fn backend(host: &HostView) -> Result<Option<Backend>> {
    if host
        .metadata(&host.path("/var/lib/dpkg/status")?)?
        .is_some()
    {
        return Ok(Some(Backend::Dpkg));
    }
    for db in ["/var/lib/rpm", "/usr/lib/sysimage/rpm"] {
        if host.metadata(&host.path(db)?)?.is_some() {
            return Ok(Some(Backend::Rpm));
        }
    }
    let rpm_vendor = host
        .os_vendor()
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| RPM_VENDORS.contains(&v.as_str()));
    if rpm_vendor && which("rpm").is_some() {
        return Ok(Some(Backend::Rpm));
    }
    Ok(None)
}

/// What check and fix report on a system without a package database.
pub(crate) fn no_database(host: &HostView) -> String {
    format!("no package database found under {}", host.root().display())
}

/// The backend and the installed packages, `None` without a package database.
pub(crate) fn inventory(host: &HostView) -> Result<Option<(Backend, Vec<PackageFact>)>> {
    let Some(backend) = backend(host)? else {
        return Ok(None);
    };
    let packages = match backend {
        Backend::Dpkg => {
            let path = host.path("/var/lib/dpkg/status")?;
            parse_dpkg_status(&host.read_to_string(&path)?.unwrap_or_default())
        }
        Backend::Rpm => {
            let mut cmd = command("rpm");
            cmd.arg("--root").arg(host.root()).args([
                "-qa",
                "--qf",
                "%{NAME}\\t%{VERSION}-%{RELEASE}\\t%{ARCH}\\n",
            ]);
            let out = host.run_query(&mut cmd)?;
            if !out.status.success() {
                return Err(Error::Command(failure(&cmd, &out)));
            }
            parse_rpm_query(&String::from_utf8_lossy(&out.stdout))
        }
    };
    Ok(Some((backend, packages)))
}

#[derive(Default)]
struct Stanza {
    name: Option<String>,
    status: Option<String>,
    version: Option<String>,
    arch: Option<String>,
}

impl Stanza {
    fn finish(&mut self, out: &mut Vec<PackageFact>) {
        let s = std::mem::take(self);
        let installed = s.status.as_deref().is_some_and(|st| {
            matches!(
                st.split_whitespace().nth(2),
                Some("installed" | "triggers-awaited" | "triggers-pending")
            )
        });
        if let (Some(name), true) = (s.name, installed) {
            out.push(PackageFact {
                name,
                version: s.version.unwrap_or_default(),
                arch: s.arch.unwrap_or_default(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_parsing() {
        let text = "Package: a\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:2.0-1\n\
                    Description: a\n Package: fake\n .\n more\n\n\n\
                    package: b\nstatus: hold ok installed\narchitecture: all\nversion: 3\n\n\
                    Package: c\nStatus: install ok unpacked\nVersion: 1\n\n\
                    Package: d\nStatus: install ok half-configured\n\n\
                    Package: e\nStatus: install ok triggers-pending\nArchitecture: i386\nVersion: 5\n\n\
                    Package: f\nStatus: install ok triggers-awaited\nArchitecture: all\nVersion: 6\n\n\
                    Package: g\nStatus: install ok triggers-awaiting\nArchitecture: all\nVersion: 7\n\n\
                    Package: a\nStatus: install ok installed\nArchitecture: i386\nVersion: 1:2.0-1\n";
        let facts = parse_dpkg_status(text);
        let got: Vec<(&str, &str, &str)> = facts
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.arch.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", "1:2.0-1", "amd64"),
                ("b", "3", "all"),
                ("e", "5", "i386"),
                ("f", "6", "all"),
                ("a", "1:2.0-1", "i386")
            ]
        );
    }
}

//! The package database of the managed system, apart from the `package` class: the installed
//! inventory (read by the class and by node facts gathering), the dpkg and rpm version orders,
//! and the package tools' `PATH` and messages.
//!
//! It lives outside `classes/` so that facts gathering (`tenet-agent`'s `facts.rs`) does not
//! reach into a class; like the classes, it reaches the system only through [`crate::host`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

pub mod inventory;
pub(crate) mod tools;
pub mod version;

pub use inventory::{installed_packages, parse_dpkg_status, parse_rpm_query};
pub use version::{compare_deb_versions, compare_rpm_versions};

/// Directories the package tools need on PATH (dpkg refuses to run without ldconfig and
/// start-stop-daemon, which live in sbin; an agent may run with a PATH lacking them).
const TOOL_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

pub(crate) fn search_path() -> OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in TOOL_DIRS {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(PathBuf::from(d));
        }
    }
    std::env::join_paths(dirs).unwrap_or_else(|_| OsString::from(TOOL_DIRS.join(":")))
}

pub(crate) fn which(program: &str) -> Option<PathBuf> {
    crate::host::find_program(program, std::env::split_paths(&search_path()))
}

pub(crate) fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("PATH", search_path());
    cmd
}

/// Why a package tool failed: the command line, its exit code and the end of its output.
pub(crate) fn failure(cmd: &Command, out: &std::process::Output) -> String {
    const TAIL: usize = 10;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        stderr.into_owned()
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(TAIL)..].join("\n");
    let code = out.status.code().map_or_else(
        || "killed by a signal".to_string(),
        |c| format!("exit code {c}"),
    );
    if tail.is_empty() {
        format!("{} failed ({code})", render(cmd))
    } else {
        format!("{} failed ({code}):\n{tail}", render(cmd))
    }
}

/// The command line as a shell would read it (for messages only).
pub(crate) fn render(cmd: &Command) -> String {
    let quote = |s: &str| {
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-_./:=,@%".contains(c))
        {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter(|(k, _)| *k != "PATH")
        .filter_map(|(k, v)| {
            Some(format!(
                "{}={}",
                k.to_string_lossy(),
                quote(&v?.to_string_lossy())
            ))
        })
        .collect();
    parts.push(quote(&cmd.get_program().to_string_lossy()));
    parts.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    parts.join(" ")
}

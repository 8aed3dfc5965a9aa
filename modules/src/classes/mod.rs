//! The built-in object classes, one file each. Adding a class: write `<class>.rs` (rule type,
//! check, fixable, fix, and tests calling `testing::assert_class_contract`, which the `testing`
//! feature provides) and add one line to the `classes!` list below.

use crate::class::ClassEntry;

macro_rules! classes {
    ($($module:ident :: $ty:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every built-in class.
        pub static CLASSES: &[ClassEntry] = &[$(ClassEntry::of::<$module::$ty>()),*];
    };
}

pub mod common;
#[cfg(test)]
mod root_containment;

classes! {
    sysctl::Sysctl,
    sysfs::Sysfs,
    nodeconf::NodeConf,
    file::File,
    fileprop::FileProp,
    remove_files::RemoveFiles,
    symlink::Symlink,
    package::Package,
    bridge::Bridge,
    dnsmasq::Dnsmasq,
    systemd_unit::SystemdUnit,
    mount::Mount,
    k8s_replicas::K8sReplicas,
    release::Release,
    keyval::KeyVal,
    fileinc::FileInc,
    cron::Cron,
    timedatectl::Timedatectl,
    self_signed_cert::SelfSignedCert,
    tar::Tar,
    vuln::Vuln,
    process::Process,
}

/// Finds a class by name or alias.
pub fn find(name: &str) -> Option<&'static ClassEntry> {
    CLASSES.iter().find(|c| c.answers_to(name))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Files of `src/classes` that are not classes.
    const NOT_CLASSES: &[&str] = &["mod", "common", "root_containment"];

    /// The modules among `classes` that `text` reaches through `super::` or
    /// `crate::classes::` (single paths and `{...}` groups), `own` excepted.
    fn class_imports(text: &str, own: &str, classes: &[String]) -> Vec<String> {
        let re = regex::Regex::new(r"(?:\bsuper|\bclasses)::(\{[^}]*\}|[a-z_0-9]+)").unwrap();
        let mut found = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for cap in re.captures_iter(line) {
                let names = cap[1].trim_matches(|c| c == '{' || c == '}');
                for name in names
                    .split(',')
                    .map(|s| s.trim().split("::").next().unwrap_or(""))
                {
                    if name != own && classes.iter().any(|c| c == name) {
                        found.push(format!("{}: {name}: {}", n + 1, line.trim()));
                    }
                }
            }
        }
        found
    }

    #[test]
    fn classes_import_no_other_class() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/classes");
        let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .map(|p| {
                let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
                (stem, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        files.retain(|(stem, _)| !NOT_CLASSES.contains(&stem.as_str()));
        let classes: Vec<String> = files.iter().map(|(s, _)| s.clone()).collect();
        assert!(classes.len() >= 14, "found only {classes:?}");
        let mut offences = Vec::new();
        for (stem, text) in &files {
            for o in class_imports(text, stem, &classes) {
                offences.push(format!("{stem}.rs:{o}"));
            }
        }
        assert!(
            offences.is_empty(),
            "a class reaches into another class (shared code belongs in classes/common.rs):\n{}",
            offences.join("\n")
        );
    }

    #[test]
    fn the_import_scan_catches_a_class_import() {
        let classes: Vec<String> = ["file", "systemd_unit", "package"].map(String::from).into();
        for line in [
            "use super::file::kind;",
            "use super::{common, file};",
            "        match super::systemd_unit::systemd_running(host) {",
            "    tenet_modules::classes::package::installed_packages(h)",
            "use crate::classes::file::{Mode, Owner};",
        ] {
            assert_eq!(class_imports(line, "symlink", &classes).len(), 1, "{line}");
        }
        for line in [
            "use super::common::kind;",
            "use super::*;",
            "// see super::file::kind",
            "crate::classes::find(name)",
            "use super::file::Mode;", // a file's own module, seen from file.rs
        ] {
            assert!(class_imports(line, "file", &classes).is_empty(), "{line}");
        }
    }
}

//! Every class that writes files (issue 14's included), against roots whose directories are symbolic links out of
//! the root prefix: nothing outside changes, nothing is created on the way, check does not
//! show what lies outside, and the rule says which link is in the way. Also the source scan
//! that keeps classes from reaching files other than through the host.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{
    authkey::Authkey, group::Group, group_membership::GroupMembership, sudoers::Sudoers, user::User,
};
use super::{
    cron::Cron, fileinc::FileInc, keyval::KeyVal, self_signed_cert::SelfSignedCert, tar::Tar,
    timedatectl::Timedatectl,
};
use super::{
    dnsmasq::Dnsmasq, file::File, fileprop::FileProp, nodeconf::NodeConf,
    remove_files::RemoveFiles, symlink::Symlink, sysfs::Sysfs, systemd_unit::SystemdUnit,
};
use crate::class::Class;
use crate::host::{Host, Resolver};
use crate::status::Status;
use crate::testing::{check, diff_snapshots, fix, snapshot};

/// What lies outside the root: a check must never print it.
const SECRET: &str = "TOPSECRET outside the root\n";

/// How the root's directories lead out of it.
#[derive(Debug, Clone, Copy)]
enum Escape {
    /// `R/D -> <outside>`: an absolute link to the host path (the issue's reproduction).
    Absolute,
    /// `R/D -> ../../outside`: relative, climbing above the root.
    Relative,
    /// `R/D -> ../../../../../../../..<outside>`: more `..` than the root is deep.
    DotDot,
    /// `R/D -> /hop`, `R/hop -> ../../outside`: a chain.
    Chain,
}

struct Case {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

/// A root whose `etc`, `srv/out` and `sys` lead out of it as `escape` says, and an outside
/// tree they point to.
fn case(escape: Escape) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    for d in ["srv", "var/lib/tenet", "usr/share/zoneinfo/Etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    // A real zone inside the root: timedatectl's rule is valid, only the link is in the way.
    std::fs::write(
        root.join("usr/share/zoneinfo/Etc/UTC"),
        "TZif2 fake Etc/UTC",
    )
    .unwrap();
    for d in ["", "sub", "systemd/system", "dnsmasq.d", "tenet", "kernel"] {
        std::fs::create_dir_all(outside.join(d)).unwrap();
    }
    for f in [
        "secret",
        "dnsmasq.d/x.conf",
        "tenet/node.toml",
        "kernel/knob",
    ] {
        std::fs::write(outside.join(f), SECRET).unwrap();
    }
    let depth_up = |depth: usize| "../".repeat(depth + 8);
    for (at, depth) in [("etc", 0), ("srv/out", 1), ("sys", 0)] {
        let target = match escape {
            Escape::Absolute => outside.clone(),
            Escape::Relative => PathBuf::from(format!("{}outside", "../".repeat(depth + 1))),
            Escape::DotDot => PathBuf::from(format!(
                "{}{}",
                depth_up(depth),
                outside.strip_prefix("/").unwrap().display()
            )),
            Escape::Chain => PathBuf::from("/hop"),
        };
        std::os::unix::fs::symlink(target, root.join(at)).unwrap();
    }
    if let Escape::Chain = escape {
        std::os::unix::fs::symlink("../../outside", root.join("hop")).unwrap();
    }
    Case {
        _dir: dir,
        root,
        outside,
    }
}

/// A one-member tar archive as a `data:` URL (the tar class's `ref`).
fn tar_data_url() -> String {
    use base64::Engine as _;
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(7);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "pwned", &b"pwned!\n"[..])
        .unwrap();
    let bytes = builder.into_inner().unwrap();
    format!(
        "data:application/x-tar;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn rules() -> Vec<(&'static str, Value)> {
    vec![
        (
            "file",
            json!({"path": "/etc/secret", "fmt": "pwned", "mode": 666}),
        ),
        ("file", json!({"path": "/etc/new/motd", "fmt": "pwned"})),
        ("file", json!({"path": "/srv/out/sub/", "mode": 777})),
        ("fileprop", json!({"path": "/srv/out/secret", "mode": 777})),
        ("fileprop", json!({"path": "/etc/sub/", "mode": 777})),
        ("symlink", json!({"symlink": "/etc/l", "target": "/x"})),
        (
            "symlink",
            json!({"symlink": "/srv/out/sub/l", "target": "/x"}),
        ),
        (
            "remove_files",
            json!(["/etc/*", "/srv/out/secret", "/srv/out/sub"]),
        ),
        (
            "sysfs",
            json!({"path": "/sys/kernel/knob", "value": "pwned"}),
        ),
        (
            "nodeconf",
            json!({"key": "node.env", "op": "=", "value": "pwned"}),
        ),
        (
            "dnsmasq",
            json!({"path": "/etc/dnsmasq.d/x.conf", "servers": ["10.0.0.1"]}),
        ),
        (
            "systemd_unit",
            json!({"name": "x.service", "contents": "[Unit]\n", "enabled": false}),
        ),
        ("user", json!({"name": "pwned", "uid": 4242})),
        ("group", json!({"name": "pwned"})),
        (
            "group_membership",
            json!({"name": "root", "members": ["root"]}),
        ),
        (
            "authkey",
            json!({"user": "root", "key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMDK0IhPzJfsl86GM/sDAcCh4qHymuSz4TuklYMo8XZ1"}),
        ),
        (
            "keyval",
            json!({"path": "/etc/secret", "keys": [{"key": "pwned", "op": "=", "value": "1"}]}),
        ),
        (
            "fileinc",
            json!({"path": "/etc/secret", "check": "pwned", "fmt": "pwned"}),
        ),
        (
            "cron",
            json!({"action": "add", "user": "root", "schedule": "* * * * *",
                   "command": "/bin/true", "file": "pwned"}),
        ),
        (
            "self_signed_cert",
            json!({"CN": "pwned", "crt": "/etc/pwned.crt", "key": "/etc/pwned.key"}),
        ),
        ("timedatectl", json!({"timezone": "Etc/UTC"})),
        (
            "tar",
            json!({"ref": tar_data_url(), "path": "/srv/out/sub"}),
        ),
        (
            "sudoers",
            json!({"path": "/etc/sudoers.d/x", "fmt": "root ALL=(ALL) ALL"}),
        ),
    ]
}

fn run(class: &str, host: &Host, rule: Value, do_fix: bool) -> (Status, Vec<String>) {
    fn go<C: Class>(host: &Host, rule: Value, do_fix: bool) -> (Status, Vec<String>) {
        if do_fix {
            fix::<C>(host, rule)
        } else {
            check::<C>(host, rule)
        }
    }
    match class {
        "file" => go::<File>(host, rule, do_fix),
        "fileprop" => go::<FileProp>(host, rule, do_fix),
        "symlink" => go::<Symlink>(host, rule, do_fix),
        "remove_files" => go::<RemoveFiles>(host, rule, do_fix),
        "sysfs" => go::<Sysfs>(host, rule, do_fix),
        "nodeconf" => go::<NodeConf>(host, rule, do_fix),
        "dnsmasq" => go::<Dnsmasq>(host, rule, do_fix),
        "systemd_unit" => go::<SystemdUnit>(host, rule, do_fix),
        "user" => go::<User>(host, rule, do_fix),
        "group" => go::<Group>(host, rule, do_fix),
        "group_membership" => go::<GroupMembership>(host, rule, do_fix),
        "authkey" => go::<Authkey>(host, rule, do_fix),
        "sudoers" => go::<Sudoers>(host, rule, do_fix),
        "keyval" => go::<KeyVal>(host, rule, do_fix),
        "fileinc" => go::<FileInc>(host, rule, do_fix),
        "cron" => go::<Cron>(host, rule, do_fix),
        "self_signed_cert" => go::<SelfSignedCert>(host, rule, do_fix),
        "timedatectl" => go::<Timedatectl>(host, rule, do_fix),
        "tar" => go::<Tar>(host, rule, do_fix),
        other => panic!("no class {other}"),
    }
}

#[test]
fn nothing_outside_the_root_changes_or_shows() {
    let escapes = [
        Escape::Absolute,
        Escape::Relative,
        Escape::DotDot,
        Escape::Chain,
    ];
    for resolver in [Resolver::Auto, Resolver::Walk] {
        for escape in escapes {
            let c = case(escape);
            let h = Host::new(&c.root)
                .with_var_dir(c.root.join("var/lib/tenet"))
                .with_resolver(resolver);
            let outside_before = snapshot(&c.outside);
            let root_before = snapshot(&c.root);
            for (class, rule) in rules() {
                let at = format!("{resolver:?} {escape:?} {class} {rule}");
                let (checked, log) = run(class, &h, rule.clone(), false);
                assert!(
                    log.iter().all(|l| !l.contains("TOPSECRET")),
                    "{at}: check shows what is outside: {log:#?}"
                );
                let (fixed, fix_log) = run(class, &h, rule.clone(), true);
                h.sync().unwrap();
                assert!(
                    fix_log.iter().all(|l| !l.contains("TOPSECRET")),
                    "{at}: {fix_log:#?}"
                );
                match class {
                    // Nothing matches inside the root: nothing to remove.
                    "remove_files" => {
                        assert_eq!(checked, Status::NotApplicable, "{at}: {log:#?}");
                        assert_eq!(fixed, Status::NotApplicable, "{at}: {fix_log:#?}");
                    }
                    _ => {
                        assert_eq!(checked, Status::Nok, "{at}: {log:#?}");
                        assert_eq!(fixed, Status::Nok, "{at}: {fix_log:#?}");
                    }
                }
                // The reason names the link, where the class got that far.
                if matches!(class, "file" | "fileprop" | "symlink" | "dnsmasq") {
                    let all = format!("{log:?}{fix_log:?}");
                    assert!(
                        all.contains("is a symbolic link to") || all.contains("is a symlink"),
                        "{at}: no reason naming the link: {log:#?} {fix_log:#?}"
                    );
                }
                assert!(
                    diff_snapshots(&outside_before, &snapshot(&c.outside)).is_empty(),
                    "{at}: changed outside the root: {:#?}",
                    diff_snapshots(&outside_before, &snapshot(&c.outside))
                );
                assert!(
                    diff_snapshots(&root_before, &snapshot(&c.root)).is_empty(),
                    "{at}: changed the root (a directory created through a link?): {:#?}",
                    diff_snapshots(&root_before, &snapshot(&c.root))
                );
            }
        }
    }
}

#[test]
fn the_issue_reproduction_is_nok_with_the_link_named() {
    let c = case(Escape::Absolute);
    let h = Host::new(&c.root).with_var_dir(c.root.join("var/lib/tenet"));
    let rule = json!({"path": "/etc/x", "fmt": "pwned"});
    let (st, log) = check::<File>(&h, rule.clone());
    assert_eq!(st, Status::Nok);
    let want = format!("/etc is a symbolic link to {}", c.outside.display());
    assert!(
        log.iter()
            .any(|l| l.starts_with("/etc/x: missing") && l.contains(&want)),
        "{log:#?}"
    );
    let (st, log) = fix::<File>(&h, rule);
    assert_eq!(st, Status::Nok);
    assert!(
        log.iter()
            .any(|l| l.contains(&want) && l.contains("refusing to create directories through it")),
        "{log:#?}"
    );
    assert!(!c.outside.join("x").exists());
}

#[test]
fn packages_are_read_from_the_root_only() {
    let c = case(Escape::Absolute);
    // The dpkg status file lies outside, behind `var -> outside`.
    let status =
        "Package: outside-pkg\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\n";
    std::fs::create_dir_all(c.outside.join("lib/dpkg")).unwrap();
    std::fs::write(c.outside.join("lib/dpkg/status"), status).unwrap();
    std::fs::remove_dir_all(c.root.join("var")).unwrap();
    std::os::unix::fs::symlink(&c.outside, c.root.join("var")).unwrap();
    let h = Host::new(&c.root);
    let found = crate::packages::installed_packages(h.view()).unwrap_or_default();
    assert!(found.iter().all(|p| p.name != "outside-pkg"), "{found:?}");
}

/// What a class file may not contain outside its tests: ways to reach files or commands
/// other than through [`crate::host`].
const FORBIDDEN: &[&str] = &[
    "std::fs::",
    "fs::read",
    "fs::write",
    "fs::remove",
    "fs::create",
    "fs::rename",
    "fs::copy",
    "fs::hard_link",
    "fs::metadata",
    "fs::symlink_metadata",
    "fs::set_permissions",
    "fs::canonicalize",
    "File::open",
    "File::create",
    "OpenOptions",
    "unix::fs::symlink",
    "unix::fs::chown",
    "unix::fs::lchown",
    "nix::fcntl",
    "nix::unistd::chown",
    "nix::sys::stat",
    "libc::",
    ".exists()",
    "canonicalize(",
    "glob::glob",
    ".is_dir()",
];

/// `std::fs::Metadata` is a type, not an access.
const ALLOWED: &[&str] = &["use std::fs::Metadata;", "std::fs::Metadata"];

#[test]
fn classes_reach_the_system_only_through_the_host() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offences = Vec::new();
    let mut scanned = 0;
    // The package inventory lives beside the classes (facts gathering reads it too) and is
    // held to the same rule.
    let entries = ["classes", "packages"]
        .into_iter()
        .flat_map(|d| std::fs::read_dir(src.join(d)).unwrap())
        .map(|e| e.unwrap().path())
        // The account databases (user, group, group_membership, authkey) are held to it too.
        .chain([src.join("accounts.rs")]);
    for path in entries {
        let name = path
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if !name.ends_with(".rs") || name == "classes/root_containment.rs" {
            continue;
        }
        scanned += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let t = line.trim_start();
            // Tests build their trees with std::fs, as they should.
            if t.starts_with("#[cfg(test)]") {
                break;
            }
            if t.starts_with("//") {
                continue;
            }
            let mut code = line.to_string();
            for a in ALLOWED {
                code = code.replace(a, "");
            }
            for f in FORBIDDEN {
                // `.is_dir()` is fine on metadata, not on a path.
                if *f == ".is_dir()" && !code.contains("Path::new(") {
                    continue;
                }
                if code.contains(f) {
                    offences.push(format!("{name}:{}: {f}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        scanned >= 17,
        "scanned only {scanned} class and package files"
    );
    assert!(
        offences.is_empty(),
        "classes must reach files through the host (crate::host):\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_source_scan_catches_a_bypass() {
    // The scan above would flag the calls this crate removed from the classes.
    for bypass in [
        "let _ = std::fs::remove_dir_all(path);",
        "std::os::unix::fs::symlink(target, &tmp)?;",
        "let pid1 = std::fs::read_to_string(\"/proc/1/comm\");",
        "if !Path::new(\"/run/systemd/system\").is_dir() {",
    ] {
        assert!(
            FORBIDDEN.iter().any(|f| bypass.contains(f)
                && (*f != ".is_dir()" || bypass.contains("Path::new("))),
            "{bypass}"
        );
    }
}

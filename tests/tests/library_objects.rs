//! Issue 14's classes through the `tenet` binary as OpenSVC module scripts call them: the
//! `com.opensvc/*.py` aliases `tenet compliance install-compat` makes and `tenet object CLASS
//! PREFIX ACTION`, with the rules in `PREFIX*` environment variables; real tools confirm the
//! results (`crontab -l` in a private mount namespace where cron's paths are the test's,
//! `openssl x509` on the certificate).

use std::path::Path;
use std::process::Command;

use tenet_tests::*;

const NEW_OBJECTS: &[&str] = &[
    "keyval.py",
    "keyval_with_fpath.py",
    "fileinc.py",
    "cron.py",
    "crontabentry.py",
    "process.py",
    "timedatectl.py",
    "self_signed_cert.py",
    "tar.py",
    "vuln.py",
    "systemd_unit_state.py",
];

fn install_compat(dir: &Path) -> std::path::PathBuf {
    Tenet::compliance("install-compat")
        .arg(dir)
        .run()
        .assert_code(0);
    dir.join("com.opensvc")
}

/// Runs an object alias (`keyval.py PREFIX ACTION`) with the rules and a root prefix.
fn object_alias(
    lib: &Path,
    alias: &str,
    action: &str,
    root: &Path,
    rules: &[&str],
) -> (i32, String) {
    let prefix = "OSVC_COMP_TEST_";
    let mut cmd = Command::new(lib.join(alias));
    cmd.args([prefix, action])
        .env_remove("TENET_ROOT")
        .env("TENET_ROOT", root)
        .env("TENET_VAR_DIR", root.join("var/lib/tenet"));
    for (i, r) in rules.iter().enumerate() {
        cmd.env(format!("{prefix}{}", i + 1), r);
    }
    let out = cmd.output().expect("run the alias");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn install_compat_makes_the_new_object_aliases() {
    let dir = tempdir();
    let lib = install_compat(dir.path());
    let bin = tenet_bin().canonicalize().unwrap();
    for alias in NEW_OBJECTS {
        let p = lib.join(alias);
        assert_eq!(
            p.canonicalize()
                .unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            bin,
            "{alias}"
        );
    }
}

/// keyval.py's documented example through its alias: nok, fix, ok; the file edited in place.
#[test]
fn keyval_py_example_through_the_alias() {
    let dir = tempdir();
    let lib = install_compat(&dir.path().join("lib"));
    let root = dir.path().join("root");
    write(
        &root.join("etc/ssh/sshd_config"),
        "# managed\nPort 22\nPermitRootLogin no\nUsePAM yes\n",
    );
    let rule = r#"{"path": "/etc/ssh/sshd_config", "keys": [
        {"key": "PermitRootLogin", "op": "=", "value": "yes"},
        {"key": "PermitRootLogin", "op": "reset", "value": ""}]}"#;
    let (code, out) = object_alias(&lib, "keyval.py", "check", &root, &[rule]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("PermitRootLogin[0] = no, expected yes"),
        "{out}"
    );
    let (code, out) = object_alias(&lib, "keyval.py", "fix", &root, &[rule]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = object_alias(&lib, "keyval_with_fpath.py", "check", &root, &[rule]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        read(&root.join("etc/ssh/sshd_config")).unwrap(),
        "# managed\nPort 22\nPermitRootLogin yes\nUsePAM yes\n"
    );
    // fileinc.py and tar.py answer too (a rule that is already compliant).
    let (code, out) = object_alias(
        &lib,
        "fileinc.py",
        "check",
        &root,
        &[r#"{"path": "/etc/ssh/sshd_config", "check": "^Port ", "fmt": "Port 22"}"#],
    );
    assert_eq!(code, 0, "{out}");
}

/// cron.py and crontabentry.py rules fixed by `tenet object cron` with root `/` in a mount
/// namespace where the test's spool and cron.d are bound over the host's; `crontab -l` (in the
/// same kind of namespace) lists what Tenet wrote, and the files have cron's ownership.
#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn cron_entries_are_listed_by_crontab() {
    if !require_root("cron_entries_are_listed_by_crontab") {
        return;
    }
    let crontab = tool("crontab").get_program().to_owned();
    let dir = tempdir();
    let fake = dir.path().join("fake");
    let spool = fake.join("spool");
    let crond = fake.join("cron.d");
    std::fs::create_dir_all(spool.join("cron/crontabs")).unwrap();
    std::fs::create_dir_all(&crond).unwrap();
    chmod(&spool.join("cron/crontabs"), 0o1730);
    let binds = format!(
        "mount --bind '{}' /var/spool && mount --bind '{}' /etc/cron.d",
        spool.display(),
        crond.display()
    );
    let prefix = "OSVC_COMP_CRON_";
    let run = |action: &str| {
        Tenet::new(["object", "cron", prefix, action])
            .in_private_mount_ns(&binds)
            .env("TENET_VAR_DIR", dir.path().join("var"))
            .env(format!("{prefix}1"), "add:root:*/5 * * * *:/usr/bin/true tenet-test:")
            .env(format!("{prefix}2"), "add:root:0 4 * * *:/usr/local/bin/nightly:tenet-test")
            .env(
                format!("{prefix}3"),
                r#"{"user": "root", "check": "tenet-entry", "entry": "30 2 * * 1 /bin/echo tenet-entry"}"#,
            )
            .run()
    };
    run("check").assert_code(1);
    run("fix").assert_code(0);
    run("check").assert_code(0);
    let out = tool("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "{binds} && exec '{}' -l -u root",
            Path::new(&crontab).display()
        ))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "crontab -l: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        listed.contains("*/5 * * * * /usr/bin/true tenet-test\n"),
        "{listed}"
    );
    assert!(
        listed.contains("30 2 * * 1 /bin/echo tenet-entry\n"),
        "{listed}"
    );
    use std::os::unix::fs::MetadataExt;
    let tab = std::fs::metadata(spool.join("cron/crontabs/root")).unwrap();
    assert_eq!(tab.mode() & 0o7777, 0o600);
    assert_eq!(tab.uid(), 0);
    let d = std::fs::metadata(crond.join("tenet-test")).unwrap();
    assert_eq!((d.mode() & 0o7777, d.uid(), d.gid()), (0o644, 0, 0));
    assert_eq!(
        read(&crond.join("tenet-test")).unwrap(),
        "0 4 * * * root /usr/local/bin/nightly\n"
    );
    // The host's own spool and cron.d were never touched.
    assert!(
        !Path::new("/etc/cron.d/tenet-test").exists(),
        "the host's /etc/cron.d was written"
    );
}

/// self_signed_cert.py's example through `tenet object`: openssl reads the certificate with the
/// rule's subject and alternative name.
#[test]
fn self_signed_cert_is_read_by_openssl() {
    let dir = tempdir();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let prefix = "OSVC_COMP_CERT_";
    let rule = r#"{"CN": "%%ENV:SERVICES_SVCNAME%%",
        "crt": "/srv/%%ENV:SERVICES_SVCNAME%%/data/nginx/conf/ssl/server.crt",
        "key": "/srv/%%ENV:SERVICES_SVCNAME%%/data/nginx/conf/ssl/server.key",
        "bits": 2048, "C": "FR", "ST": "Ile de France", "L": "Paris", "O": "OpenSVC",
        "OU": "Lab", "emailAddress": "support@opensvc.com",
        "alt_names": [{"dns": ""}, {"dns": "web1.example.com"}]}"#;
    let run = |action: &str| {
        Tenet::new(["object", "self_signed_cert", prefix, action])
            .env("TENET_ROOT", &root)
            .env("TENET_VAR_DIR", dir.path().join("var"))
            .env("OSVC_COMP_SERVICES_SVCNAME", "web1")
            .env(format!("{prefix}1"), rule)
            .run()
    };
    run("check").assert_code(1);
    run("fix").assert_code(0);
    run("check").assert_code(0);
    let crt = root.join("srv/web1/data/nginx/conf/ssl/server.crt");
    let out = tool("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&crt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "Subject: C = FR, ST = Ile de France, L = Paris, O = OpenSVC, OU = Lab, CN = web1, emailAddress = support@opensvc.com"
        ),
        "{text}"
    );
    assert!(text.contains("DNS:web1.example.com"), "{text}");
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
}

const SITE_POLICY: &str = r#"
[[moduleset]]
name = "site"
rulesets = ["site.base"]
modules = [{ name = "site.base" }]

[[ruleset]]
name = "site.base"

[[ruleset.variable]]
name = "site_sshd"
class = "keyval"
[ruleset.variable.value]
path = "/etc/ssh/sshd_config"
keys = [
    { key = "PermitRootLogin", op = "=", value = "no" },
    { key = "PermitRootLogin", op = "reset", value = "" },
    { key = "MaxAuthTries", op = "<=", value = 4 },
]

[[ruleset.variable]]
name = "site_motd"
class = "fileinc"
value = '{"path": "/etc/motd", "check": "^Managed by ", "fmt": "Managed by Tenet"}'

[[ruleset.variable]]
name = "site_backup"
class = "cron"
value = "add:root:0 3 * * *:/usr/local/bin/backup:backup"
"#;

/// An OpenSVC-style module script calling `$PATH_LIB/keyval.py`, `fileinc.py` and `cron.py`
/// with its variables runs unmodified through `tenet compliance check|fix` on a root prefix.
#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn a_module_script_calls_the_new_objects() {
    if !require_root("a_module_script_calls_the_new_objects") {
        return; // script modules must be owned by root
    }
    let policy = tempdir();
    write(&policy.path().join("site.toml"), SITE_POLICY);
    let modules = tempdir();
    chmod(modules.path(), 0o755);
    Tenet::compliance("install-compat")
        .arg(modules.path())
        .run()
        .assert_code(0);
    script(
        modules.path(),
        "50-site.base",
        r#"#!/bin/bash
here=$(cd "$(dirname "$0")" && pwd)
PATH_LIB=$here/com.opensvc
case "$1" in
check|fix)
	r=0
	for o in "keyval.py SITE_SSHD" "fileinc.py SITE_MOTD" "cron.py SITE_BACKUP"; do
		set -- $o "$1"
		"$PATH_LIB/$1" "OSVC_COMP_$2" "$3"
		[ $? -eq 1 ] && r=1
		set -- "$3"
	done
	exit $r
	;;
fixable)
	exit 2
	;;
esac
"#,
        0o755,
    );
    let root = TestRoot::builder()
        .file(
            "/etc/ssh/sshd_config",
            "Port 22\nPermitRootLogin yes\nMaxAuthTries 6\n",
        )
        .file("/etc/motd", "Welcome\n")
        .build();
    std::fs::create_dir_all(root.under_root("/etc/cron.d")).unwrap();
    let run = |action: &str| {
        Tenet::compliance(action)
            .policy(policy.path())
            .root(root.path())
            .modules_dir(modules.path())
            .run()
    };
    let first = run("check");
    first.assert_code(1);
    run("fix").assert_code(0);
    run("check").assert_code(0);
    assert_eq!(
        root.read("/etc/ssh/sshd_config").unwrap(),
        "Port 22\nPermitRootLogin no\nMaxAuthTries 4\n"
    );
    assert_eq!(
        root.read("/etc/motd").unwrap(),
        "Welcome\nManaged by Tenet\n"
    );
    assert_eq!(
        root.read("/etc/cron.d/backup").unwrap(),
        "0 3 * * * root /usr/local/bin/backup\n"
    );
}

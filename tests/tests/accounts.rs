//! The account classes (`user`, `group`, `group_membership`, `authkey`) and `sudoers` end to
//! end, through the `tenet` binary, confirmed by the real tools:
//!
//! - the examples of the upstream objects' documentation, run with OpenSVC's environment
//!   convention through `tenet object CLASS PREFIX ACTION` and the `com.opensvc/*.py` aliases
//!   (singular and plural names), give the results the compatibility tables record for them
//!   (`modules/tests/fixtures/opensvc-compat/<class>.json`: OpenSVC's, or Tenet's documented
//!   deviation);
//! - `pwck -r -R ROOT` and `grpck -r -R ROOT` find nothing wrong after fixes, `visudo -c`
//!   accepts the sudoers files, `ssh-keygen -l -f` reads every authorized key line;
//! - Tenet writes the same databases and home as `useradd`, `groupadd`, `usermod` and
//!   `userdel` given the same request (`-R ROOT`), byte for byte;
//! - an OpenSVC-style module script (`tests/fixtures/opensvc-accounts`) calling `user.py`,
//!   `group.py`, `authkey.py`, `sudoers.py` and `keyval.py` runs unmodified through
//!   `tenet compliance fix` on a temporary root.
//!
//! Everything happens under temporary roots: the host's accounts are never read or written.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tenet_tests::*;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
    daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n";
const SHADOW: &str = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n";
const GROUP: &str = "root:x:0:\ndaemon:x:1:\nshadow:x:42:\nusers:x:100:\n";
const GSHADOW: &str = "root:*::\ndaemon:*::\nshadow:*::\nusers:*::\n";
const LOGIN_DEFS: &str = "UMASK 022\nPASS_MAX_DAYS 99999\nPASS_MIN_DAYS 0\nPASS_WARN_AGE 7\n\
    UID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\nUSERGROUPS_ENAB yes\n";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMDK0IhPzJfsl86GM/sDAcCh4qHymuSz4TuklYMo8XZ1 ops@example";

/// A Debian-like root with the four databases (shadow files 0640 root:shadow), `login.defs`,
/// `/etc/default/useradd`, a skeleton, the homes of the system accounts and the shells the
/// examples name (so that `pwck` has nothing to say about them).
fn account_root() -> TestRoot {
    let root = TestRoot::builder()
        .file("/etc/passwd", PASSWD)
        .file("/etc/shadow", SHADOW)
        .file("/etc/group", GROUP)
        .file("/etc/gshadow", GSHADOW)
        .file("/etc/login.defs", LOGIN_DEFS)
        .file("/etc/default/useradd", "SHELL=/bin/sh\n")
        .file("/etc/skel/.profile", "# ~/.profile\n")
        .file("/etc/skel/.config/app.conf", "x = 1\n")
        .build();
    for shadow in ["/etc/shadow", "/etc/gshadow"] {
        let p = root.under_root(shadow);
        chmod(&p, 0o640);
        std::os::unix::fs::chown(&p, Some(0), Some(42)).unwrap();
    }
    for dir in ["/root", "/usr/sbin", "/home"] {
        std::fs::create_dir_all(root.under_root(dir)).unwrap();
    }
    for shell in [
        "/bin/sh",
        "/bin/bash",
        "/bin/ksh",
        "/bin/tcsh",
        "/usr/sbin/nologin",
    ] {
        let p = root.under_root(shell);
        write(&p, "#!/bin/true\n");
        chmod(&p, 0o755);
    }
    root
}

/// `tenet object CLASS PREFIX ACTION` on `root`, the rule in `PREFIX1`.
fn object(root: &TestRoot, var: &Path, class: &str, prefix: &str, rule: &str, action: &str) -> Run {
    Tenet::new(["object", class, prefix, action])
        .env("TENET_ROOT", root.path())
        .env("TENET_VAR_DIR", var)
        .env(format!("{prefix}1"), rule)
        .run()
}

/// Runs `prog args...` (a tool of the machine), returning its exit code and output.
fn run_tool(prog: &str, args: &[&str]) -> (i32, String) {
    let out = tool(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Asserts `pwck -r` and `grpck -r` find nothing wrong in `root`.
fn assert_databases_sane(root: &Path, after: &str) {
    let r = root.to_str().unwrap();
    for prog in ["pwck", "grpck"] {
        let (code, text) = run_tool(prog, &["-r", "-R", r]);
        assert!(
            code == 0 && text.trim().is_empty(),
            "{prog} -r -R {r} after {after}: exit {code}:\n{text}"
        );
    }
}

fn code(name: &str) -> i32 {
    match name {
        "ok" => 0,
        "nok" => 1,
        "n/a" => 2,
        other => panic!("bad status {other}"),
    }
}

/// A table row's tree entry built under `root` (the format of
/// `modules/tests/opensvc_compat.rs`: `d PATH [MODE] [UID:GID]`, `f PATH [MODE] [UID:GID]
/// =CONTENT`).
fn build_entry(root: &Path, entry: &str) {
    let (kind, rest) = entry.split_at(2);
    let (head, data) = match kind {
        "f " => rest.split_once(" =").expect("f entry"),
        "d " => (rest, ""),
        _ => panic!("unsupported tree entry {entry:?}"),
    };
    let mut words = head.split(' ');
    let p = root.join(words.next().unwrap());
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut mode = if kind == "d " { 0o755 } else { 0o644 };
    let mut owner = None;
    for w in words {
        match w.split_once(':') {
            Some((u, g)) => owner = Some((u.parse().unwrap(), g.parse().unwrap())),
            None => mode = u32::from_str_radix(w, 8).unwrap(),
        }
    }
    if kind == "d " {
        std::fs::create_dir_all(&p).unwrap();
    } else {
        std::fs::write(&p, data).unwrap();
    }
    chmod(&p, mode);
    if let Some((u, g)) = owner {
        std::os::unix::fs::chown(&p, Some(u), Some(g)).unwrap();
    }
}

/// OpenSVC's default prefix of each upstream object (`sudoers.py` has none: it reads a
/// prefix like the others).
fn upstream_prefix(class: &str) -> &'static str {
    match class {
        "user" => "OSVC_COMP_USER_",
        // group.py and group_membership.py share it.
        "group" | "group_membership" => "OSVC_COMP_GROUP_",
        "authkey" => "OSVC_COMP_AUTHKEY_",
        _ => "OSVC_COMP_SUDOERS_",
    }
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn the_upstream_examples_give_the_recorded_results_through_tenet_object_and_aliases() {
    if !require_root("the_upstream_examples_give_the_recorded_results") {
        return; // owners (0:42, homes of uid 1000)
    }
    let lib = tempdir();
    Tenet::compliance("install-compat")
        .arg(lib.path())
        .run()
        .assert_code(0);
    let tables =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../modules/tests/fixtures/opensvc-compat");
    let plural = [
        ("user", "users.py"),
        ("group", "groups.py"),
        ("group_membership", "groups_membership.py"),
        ("authkey", "authkeys.py"),
        ("sudoers", "sudoers.py"),
    ];
    let mut examples = 0;
    for (class, alias) in plural {
        let table: Value = serde_json::from_str(
            &std::fs::read_to_string(tables.join(format!("{class}.json"))).unwrap(),
        )
        .unwrap();
        for row in table["rows"].as_array().unwrap() {
            let name = row["name"].as_str().unwrap();
            if !name.starts_with("the documentation's example") {
                continue;
            }
            examples += 1;
            let want = |k: &str| {
                let v = row
                    .get("tenet")
                    .and_then(|t| t.get(k))
                    .or_else(|| row["opensvc"].get(k))
                    .unwrap_or_else(|| panic!("{class}: {name}: no {k}"));
                code(v.as_str().unwrap())
            };
            let rule = match row.get("rule_text") {
                Some(t) => t.as_str().unwrap().to_owned(),
                None => row["rule"].to_string(),
            }
            .replace("{R}", "");
            let dir = tempdir();
            let root = dir.path().join("root");
            for e in row["tree"].as_array().unwrap() {
                build_entry(&root, e.as_str().unwrap());
            }
            let var = dir.path().join("var");
            let prefix = upstream_prefix(class);
            let at = format!("{class}: {name}");
            // check through `tenet object`, fix through the plural alias, the check after it
            // through the singular alias.
            let run = Tenet::new(["object", class, prefix, "check"])
                .env("TENET_ROOT", &root)
                .env("TENET_VAR_DIR", &var)
                .env(format!("{prefix}1"), &rule)
                .run();
            assert_eq!(run.code, want("check"), "{at}: check\n{}", run.describe());
            let alias_run = |script: &str, action: &str| {
                let out = std::process::Command::new(lib.path().join("com.opensvc").join(script))
                    .args([prefix, action])
                    .env("TENET_ROOT", &root)
                    .env("TENET_VAR_DIR", &var)
                    .env(format!("{prefix}1"), &rule)
                    .output()
                    .unwrap();
                (
                    out.status.code().unwrap_or(-1),
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                )
            };
            let (c, log) = alias_run(alias, "fix");
            assert_eq!(c, want("fix"), "{at}: fix through {alias}\n{log}");
            let (c, log) = alias_run(&format!("{class}.py"), "check");
            assert_eq!(
                c,
                want("recheck"),
                "{at}: check after fix through {class}.py\n{log}"
            );
        }
    }
    assert_eq!(
        examples, 6,
        "one documented example per upstream object (group twice)"
    );
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn pwck_grpck_visudo_and_ssh_keygen_accept_what_tenet_writes() {
    if !require_root("pwck_grpck_visudo_and_ssh_keygen_accept_what_tenet_writes") {
        return;
    }
    let root = account_root();
    let var = tempdir();
    let r = root.path();
    assert_databases_sane(r, "nothing (the starting root)");
    let steps: [(&str, &str, String); 9] = [
        (
            "user",
            "OSVC_COMP_USER_",
            r#"{"tibco": {"shell": "/bin/ksh", "gecos": "agecos"}, "tibco1": {"shell": "/bin/tcsh", "gecos": "another gecos"}}"#.into(),
        ),
        ("group", "OSVC_COMP_GROUP_", r#"{"tibco": {"gid": 1000}, "tibco1": {"gid": 1001}, "ops": {"gid": 3000}}"#.into()),
        (
            "group_membership",
            "OSVC_COMP_GROUP_",
            r#"{"tibco": {"members": ["tibco", "tibco1"]}, "ops": {"members": ["tibco", "tibco1"]}}"#.into(),
        ),
        ("user", "OSVC_COMP_USER_", r#"{"app": {"uid": 2500, "gid": 3000, "home": "/srv/app", "password": "$6$x$y"}}"#.into()),
        ("user", "OSVC_COMP_USER_", r#"{"tibco1": {"uid": 1600}}"#.into()),
        ("user", "OSVC_COMP_USER_", r#"{"-tibco1": {}}"#.into()),
        ("group", "OSVC_COMP_GROUP_", r#"{"ops": {"gid": 3001}}"#.into()),
        (
            "authkey",
            "OSVC_COMP_AUTHKEY_",
            format!(
                r#"[{{"user": "tibco", "key": "{KEY}"}}, {{"user": "app", "key": "from=\"10.0.0.0/8\",no-pty {KEY}"}}, {{"user": "tibco", "authfile": "authorized_keys", "key": "{}"}}]"#,
                std::fs::read_to_string(upstream_key_file()).unwrap().trim()
            ),
        ),
        (
            "sudoers",
            "OSVC_COMP_SUDOERS_",
            r#"[{"path": "/etc/sudoers.d/ops", "fmt": "%ops ALL=(root) NOPASSWD: /usr/bin/systemctl restart app.service"}, {"path": "/etc/sudoers", "fmt": "Defaults env_reset\nroot ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d", "mode": 440}]"#.into(),
        ),
    ];
    for (class, prefix, rule) in &steps {
        let what = format!("{class} {rule}");
        object(&root, var.path(), class, prefix, rule, "fix").assert_code(0);
        object(&root, var.path(), class, prefix, rule, "check").assert_code(0);
        assert_databases_sane(r, &what);
    }
    let passwd = root.read("/etc/passwd").unwrap();
    assert!(
        passwd.contains("app:x:2500:3001::/srv/app:/bin/sh\n"),
        "{passwd}"
    );
    assert!(!passwd.contains("tibco1"), "{passwd}");
    let group = root.read("/etc/group").unwrap();
    assert!(group.contains("ops:x:3001:tibco\n"), "{group}");
    assert_eq!(
        std::fs::metadata(root.under_root("/srv/app"))
            .unwrap()
            .uid(),
        2500
    );

    // Every line of the authorized keys files is a key ssh-keygen reads.
    for file in [
        "/home/tibco/.ssh/authorized_keys",
        "/srv/app/.ssh/authorized_keys",
    ] {
        let p = root.under_root(file);
        let text = std::fs::read_to_string(&p).unwrap();
        let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
        let (c, out) = run_tool("ssh-keygen", &["-l", "-f", p.to_str().unwrap()]);
        assert_eq!(c, 0, "ssh-keygen -l -f {file}:\n{out}");
        let fingerprints = out.lines().filter(|l| l.contains("SHA256:")).count();
        assert_eq!(fingerprints, lines, "{file}:\n{text}\nssh-keygen:\n{out}");
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600, "{file}");
        let d = std::fs::metadata(p.parent().unwrap()).unwrap();
        assert_eq!(
            (d.mode() & 0o777, d.uid()),
            (0o700, m.uid()),
            "{file}'s directory"
        );
    }
    assert_eq!(
        std::fs::read_to_string(root.under_root("/home/tibco/.ssh/authorized_keys"))
            .unwrap()
            .lines()
            .count(),
        2
    );

    // visudo accepts each file, and the whole configuration from the main file.
    for file in ["/etc/sudoers.d/ops", "/etc/sudoers"] {
        let p = root.under_root(file);
        let (c, out) = run_tool("visudo", &["-c", "-f", p.to_str().unwrap()]);
        assert_eq!(c, 0, "visudo -c -f {file}:\n{out}");
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid()), (0o440, 0), "{file}");
    }
}

/// The upstream documentation's example key (a DSA key), from the authkey table.
fn upstream_key_file() -> PathBuf {
    let dir = Box::leak(Box::new(tempdir()));
    let table: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../modules/tests/fixtures/opensvc-compat/authkey.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let key = table["rows"][0]["rule"]["key"].as_str().unwrap().to_owned();
    let p = dir.path().join("key.pub");
    write(&p, key + "\n");
    p
}

/// The databases and homes of `root`, without the backups (`-` files) and the lock file,
/// whose history differs between one `useradd` run and another sequence of edits.
fn accounts_state(root: &Path) -> BTreeMap<String, (u32, u32, u32, String)> {
    let mut out = BTreeMap::new();
    for f in ["passwd", "shadow", "group", "gshadow"] {
        let p = root.join("etc").join(f);
        let m = std::fs::metadata(&p).unwrap();
        out.insert(
            format!("etc/{f}"),
            (
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                std::fs::read_to_string(&p).unwrap(),
            ),
        );
    }
    let mut stack = vec![root.join("home")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let content = if m.is_dir() {
                stack.push(p.clone());
                String::new()
            } else {
                std::fs::read_to_string(&p).unwrap_or_default()
            };
            out.insert(
                p.strip_prefix(root).unwrap().display().to_string(),
                (m.mode() & 0o7777, m.uid(), m.gid(), content),
            );
        }
    }
    out
}

fn assert_same_state(tools: &TestRoot, tenet: &TestRoot, after: &str) {
    let (a, b) = (accounts_state(tools.path()), accounts_state(tenet.path()));
    let mut diffs = Vec::new();
    for k in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if a.get(k) != b.get(k) {
            diffs.push(format!(
                "{k}:\n  shadow-utils: {:?}\n  tenet:        {:?}",
                a.get(k),
                b.get(k)
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "after {after}, Tenet's accounts differ from shadow-utils':\n{}",
        diffs.join("\n")
    );
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn tenet_writes_what_useradd_groupadd_usermod_and_userdel_write() {
    if !require_root("tenet_writes_what_useradd_groupadd_usermod_and_userdel_write") {
        return;
    }
    let (tools, tenet) = (account_root(), account_root());
    let var = tempdir();
    // The tools run on the other root as they run on a system: in a private mount namespace
    // where its etc and home are bound over /etc and /home (and /var/log, /var/mail are empty:
    // useradd resets lastlog entries). Not with `-R`: shadow-utils 4.13's `useradd -R -m`
    // copies the skeleton's subdirectories empty and 0700.
    let t = tools.path().to_str().unwrap().to_owned();
    let shadow_utils = |args: &[&str]| {
        let out = tool("unshare")
            .args(["-m", "--propagation", "private", "sh", "-ec"])
            .arg(
                "mount --bind \"$0/etc\" /etc; mount --bind \"$0/home\" /home; \
                 mount -t tmpfs tmpfs /var/log; mount -t tmpfs tmpfs /var/mail; exec \"$@\"",
            )
            .arg(&t)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let steps: [(&[&str], &str, &str); 6] = [
        (
            &["useradd", "-m", "-s", "/bin/bash", "-c", "App user", "app"],
            "user",
            r#"{"app": {"shell": "/bin/bash", "gecos": "App user"}}"#,
        ),
        (
            &["groupadd", "-g", "2000", "ops"],
            "group",
            r#"{"ops": {"gid": 2000}}"#,
        ),
        (
            &["usermod", "-a", "-G", "ops,users", "app"],
            "group_membership",
            r#"[{"ops": {"members": ["app"]}}, {"users": {"members": ["app"]}}]"#,
        ),
        (
            &["usermod", "-u", "1500", "-s", "/bin/sh", "app"],
            "user",
            r#"{"app": {"uid": 1500, "shell": "/bin/sh"}}"#,
        ),
        (
            &["groupmod", "-g", "2100", "ops"],
            "group",
            r#"{"ops": {"gid": 2100}}"#,
        ),
        (&["userdel", "app"], "user", r#"{"-app": {}}"#),
    ];
    for (cmd, class, rule) in steps {
        shadow_utils(cmd);
        object(&tenet, var.path(), class, "OSVC_COMP_X_", rule, "fix").assert_code(0);
        object(&tenet, var.path(), class, "OSVC_COMP_X_", rule, "check").assert_code(0);
        assert_same_state(&tools, &tenet, &cmd.join(" "));
        assert_databases_sane(tenet.path(), &cmd.join(" "));
    }
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn an_opensvc_module_script_manages_accounts_through_the_compat_objects() {
    if !require_root("an_opensvc_module_script_manages_accounts_through_the_compat_objects") {
        return; // root-owned scripts, account owners
    }
    let fixture = fixtures_dir().join("opensvc-accounts");
    let modules = tempdir();
    chmod(modules.path(), 0o755);
    let script = modules.path().join("50-acct.base");
    std::fs::copy(fixture.join("modules/50-acct.base"), &script).unwrap();
    chmod(&script, 0o755);
    Tenet::compliance("install-compat")
        .arg(modules.path())
        .run()
        .assert_code(0);
    let root = account_root();
    write(
        &root.under_root("/etc/ssh/sshd_config"),
        "# test root\nPermitRootLogin yes\nUsePAM yes\n",
    );
    std::fs::create_dir_all(root.under_root("/etc/sudoers.d")).unwrap();
    // What the rules remove.
    let p = root.under_root("/etc/passwd");
    write(
        &p,
        format!("{PASSWD}olduser:x:1200:100::/home/olduser:/bin/sh\n"),
    );
    let p = root.under_root("/etc/group");
    write(&p, format!("{GROUP}oldgroup:x:1300:\n"));
    let var = tempdir();
    let tenet = |action: &str| {
        Tenet::compliance(action)
            .policy(fixture.join("policy"))
            .moduleset("acct")
            .root(root.path())
            .var_dir(var.path())
            .modules_dir(modules.path())
            .format_json()
            .run()
    };

    let run = tenet("check");
    run.assert_code(1);
    let report = run.json();
    let m = module(&report, "acct.base");
    assert_eq!(m["kind"], "script", "{m:#}");
    let log = action_log(m, "check");
    for needle in [
        "group ops: missing",
        "user deploy: missing",
        "user olduser: exists",
        "key ssh-ed25519",
        "/etc/sudoers.d/deploy: missing",
    ] {
        assert!(log.contains(needle), "check log lacks {needle:?}:\n{log}");
    }

    let run = tenet("fix");
    let report = run.json();
    let m = module(&report, "acct.base");
    let passwd = root.read("/etc/passwd").unwrap();
    assert!(
        passwd.contains("deploy:x:1500:2000:Deploy user:/home/deploy:/bin/bash\n")
            && !passwd.contains("olduser"),
        "{passwd}\n{}",
        all_logs(m)
    );
    assert!(root.read("/etc/group").unwrap().contains("ops:x:2000:\n"));
    assert!(!root.read("/etc/group").unwrap().contains("oldgroup"));
    let keys = root.read("/home/deploy/.ssh/authorized_keys").unwrap();
    assert!(keys.ends_with("deploy@ci\n"), "{keys}");
    let sudoers = root.under_root("/etc/sudoers.d/deploy");
    let (c, out) = run_tool("visudo", &["-c", "-f", sudoers.to_str().unwrap()]);
    assert_eq!(c, 0, "{out}");
    assert_databases_sane(root.path(), "the module's fix");
    // The whole module: the keyval object set sshd_config too.
    assert_eq!(status(m), "ok", "{}", all_logs(m));
    run.assert_code(0);
    let sshd = root.read("/etc/ssh/sshd_config").unwrap();
    assert!(
        sshd.contains("PermitRootLogin no") && sshd.contains("PasswordAuthentication no"),
        "{sshd}"
    );
    let run = tenet("check");
    assert_eq!(status(module(&run.json(), "acct.base")), "ok");
    run.assert_code(0);
}

//! Writes never escape `--root` (issue 12, point 2), through the `tenet` binary: a root whose
//! `etc` is a symbolic link out of it (the issue's reproduction), a relative link climbing out
//! with `..`, and a chain of links. check is nok without showing what lies outside, fix is
//! nok naming the link, and nothing outside the root (nor in it) changes. Run with the
//! kernel's `openat2(RESOLVE_IN_ROOT)` and with the component walk (`TENET_RESOLVE=walk`).
//! With `--root /` paths resolve as the host resolves them (read only).

use std::path::Path;

use tenet_tests::*;

const SECRET: &str = "TOPSECRET, outside the root\n";

fn policy(dir: &Path) {
    write(
        &dir.join("escape.toml"),
        r#"
[[moduleset]]
name = "escape"
modules = [{ name = "escape" }]
rulesets = ["escape"]

[[ruleset]]
name = "escape"
type = "explicit"

[[ruleset.variable]]
name = "a_file"
class = "file"
value = { path = "/etc/secret", fmt = "pwned", mode = 666 }

[[ruleset.variable]]
name = "b_new_dir"
class = "file"
value = { path = "/etc/newdir/motd", fmt = "pwned" }

[[ruleset.variable]]
name = "c_fileprop"
class = "fileprop"
value = { path = "/srv/out/secret", mode = 777 }

[[ruleset.variable]]
name = "d_fileprop_link"
class = "fileprop"
value = { path = "/srv/out/", mode = 777 }

[[ruleset.variable]]
name = "e_symlink"
class = "symlink"
value = { symlink = "/etc/planted", target = "/bin/sh" }

[[ruleset.variable]]
name = "f_remove"
class = "remove_files"
value = ["/etc/secret", "/srv/out/*", "/srv/rel/*", "/srv/chain/*"]

[[ruleset.variable]]
name = "g_relative"
class = "file"
value = { path = "/srv/rel/secret", fmt = "pwned" }

[[ruleset.variable]]
name = "h_chain"
class = "file"
value = { path = "/srv/chain/secret", fmt = "pwned" }
"#,
    );
}

/// A test root with `etc -> <outside>`, `srv/out -> <outside2>`, `srv/rel -> ../../outside`
/// and `srv/chain -> /hop -> ../../outside`, and the outside trees they point to.
struct Setup {
    root: TestRoot,
    outside: tempfile::TempDir,
    outside2: tempfile::TempDir,
}

fn setup() -> Setup {
    let root = TestRoot::builder().build();
    let outside = tempdir();
    let outside2 = tempdir();
    for d in [outside.path(), outside2.path()] {
        write(&d.join("secret"), SECRET);
        chmod(&d.join("secret"), 0o600);
    }
    std::fs::remove_dir_all(root.under_root("/etc")).unwrap();
    let link = |target: &Path, at: &str| {
        let at = root.under_root(at);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, at).unwrap();
    };
    link(outside.path(), "/etc");
    link(outside2.path(), "/srv/out");
    // From <root>/srv: `../..` is the root's parent, where `outside` would be on the host.
    link(Path::new("../../outside"), "/srv/rel");
    link(Path::new("/hop"), "/srv/chain");
    link(Path::new("../../outside"), "/hop");
    // What `../../outside` reaches on the host, for the relative variants.
    let host_outside = root.path().parent().unwrap().join("outside");
    assert!(
        !host_outside.exists(),
        "{} exists: the test would not notice a write there",
        host_outside.display()
    );
    Setup {
        root,
        outside,
        outside2,
    }
}

#[test]
fn writes_never_escape_the_root_through_symlinks() {
    for resolver in ["auto", "walk"] {
        let s = setup();
        let pol = tempdir();
        policy(pol.path());
        let var = tempdir();
        let run = |action: &str| {
            Tenet::compliance(action)
                .policy(pol.path())
                .root(s.root.path())
                .var_dir(var.path())
                .env("TENET_RESOLVE", resolver)
                .format_json()
                .run()
        };
        let outside = (snapshot(s.outside.path()), snapshot(s.outside2.path()));
        let inside = s.root.snapshot();

        let check = run("check");
        check.assert_code(1);
        assert!(
            !check.stdout.contains("TOPSECRET") && !check.stderr.contains("TOPSECRET"),
            "{resolver}: check shows what lies outside the root:\n{}",
            check.describe()
        );
        let report = check.json();
        let m = module(&report, "escape");
        for v in [
            "a_file",
            "b_new_dir",
            "c_fileprop",
            "d_fileprop_link",
            "e_symlink",
        ] {
            assert_eq!(rule(m, v)["status"], "nok", "{resolver} {v}: {m:#}");
        }
        let log = all_logs(m);
        let etc_link = format!("/etc is a symbolic link to {}", s.outside.path().display());
        assert!(
            log.contains(&format!(
                "/etc/secret: missing (expected a file): {etc_link}"
            )),
            "{log}"
        );
        assert!(
            log.contains("/srv/out/: is a symlink, expected a directory"),
            "{log}"
        );
        assert!(
            log.contains("/srv/rel is a symbolic link to ../../outside"),
            "{log}"
        );
        assert_eq!(rule(m, "f_remove")["status"], "n/a", "{resolver}: {m:#}");

        let fix = run("fix");
        fix.assert_code(1);
        assert!(!fix.stdout.contains("TOPSECRET"), "{}", fix.describe());
        let report = fix.json();
        let m = module(&report, "escape");
        let log = action_log(m, "fix");
        for v in [
            "a_file",
            "b_new_dir",
            "c_fileprop",
            "e_symlink",
            "g_relative",
            "h_chain",
        ] {
            assert_eq!(rule(m, v)["status"], "nok", "{resolver} {v}: {m:#}");
        }
        assert!(
            log.contains(&etc_link) && log.contains("refusing to create directories through it"),
            "{resolver}: {log}"
        );
        assert_eq!(
            (snapshot(s.outside.path()), snapshot(s.outside2.path())),
            outside,
            "{resolver}: something outside the root changed"
        );
        assert!(!s.root.path().parent().unwrap().join("outside").exists());
        let changed = diff_snapshots(&inside, &s.root.snapshot());
        assert!(
            changed.is_empty(),
            "{resolver}: the root changed (directories created through a link?): {changed:#?}"
        );
    }
}

#[test]
fn the_real_root_resolves_links_as_the_host_does() {
    // Only reads under `/`: a temporary tree reached by its host path, through a link.
    let d = tempdir();
    write(&d.path().join("real/motd"), "hello\n");
    std::os::unix::fs::symlink(d.path().join("real"), d.path().join("link")).unwrap();
    let pol = tempdir();
    write(
        &pol.path().join("p.toml"),
        format!(
            r#"
[[moduleset]]
name = "m"
modules = [{{ name = "m" }}]
rulesets = ["m"]

[[ruleset]]
name = "m"
type = "explicit"

[[ruleset.variable]]
name = "motd"
class = "file"
value = {{ path = "{}/link/motd", fmt = "hello" }}
"#,
            d.path().display()
        ),
    );
    let var = tempdir();
    for resolver in ["auto", "walk"] {
        let run = Tenet::compliance("check")
            .policy(pol.path())
            .root("/")
            .var_dir(var.path())
            .env("TENET_RESOLVE", resolver)
            .format_json()
            .run();
        run.assert_code(0);
        assert_eq!(rule(module(&run.json(), "m"), "motd")["status"], "ok");
    }
}

//! Writes are staged within a module and committed at the end of its fix: later rules of the
//! module see what earlier ones wrote (content, listing, mode), classes that act outside the
//! staging see it committed, the report's check after fix is of the files on disk, and nothing
//! temporary is left.

use std::path::Path;

use tenet_tests::*;

const POLICY: &str = r#"
[[moduleset]]
name = "staged"
modules = [{ name = "staged" }]
rulesets = ["staged"]

[[ruleset]]
name = "staged"
type = "explicit"

# Written by the file class, then read by the sysctl rule's check (through the staging).
[[ruleset.variable]]
name = "a_conf"
class = "file"
value = { path = "/etc/sysctl.d/50-app.conf", fmt = "app.limit = 5" }

# Persists in 99-tenet.conf, staged too: its own check after fix must list it.
[[ruleset.variable]]
name = "b_limit"
class = "sysctl"
value = { key = "app.limit", op = ">=", value = 10 }

[[ruleset.variable]]
name = "c_motd"
class = "file"
value = { path = "/etc/app/motd", fmt = "hello" }

# Sees the staged motd (mode 0644) and changes the mode of the staged file.
[[ruleset.variable]]
name = "d_motd_mode"
class = "fileprop"
value = { path = "/etc/app/motd", mode = 600 }

# Acts on the real file system: the staged writes are committed before it runs.
[[ruleset.variable]]
name = "e_motd_link"
class = "symlink"
value = { symlink = "/etc/app/current", target = "motd" }
"#;

fn temporary_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(temporary_files(&path));
        } else if entry.file_name().to_string_lossy().ends_with(".tmp") {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn later_rules_of_a_module_see_staged_writes_and_the_commit_leaves_none() {
    let policy = tempdir();
    write(&policy.path().join("staged.toml"), POLICY);
    let root = TestRoot::builder().proc_sys("app.limit", "5").build();
    let var = tempdir();
    let fix = || {
        Tenet::compliance("fix")
            .policy(policy.path())
            .root(root.path())
            .var_dir(var.path())
            .format_json()
            .run()
    };

    let run = fix();
    run.assert_code(0);
    let report = run.json();
    let m = module(&report, "staged");
    assert_eq!(m["status"], "ok", "{m:#}");
    for v in ["a_conf", "b_limit", "c_motd", "d_motd_mode", "e_motd_link"] {
        assert_eq!(rule(m, v)["status"], "ok", "{v}: {m:#}");
    }
    let fix_log = action_log(m, "fix");
    assert!(
        fix_log.contains("persisted app.limit = 10"),
        "the sysctl rule should persist its value: {fix_log}"
    );
    assert!(
        !fix_log.contains("after fix"),
        "the sysctl rule's own check after fix should see its staged conf file: {fix_log}"
    );

    assert_eq!(
        root.read("/etc/sysctl.d/50-app.conf").as_deref(),
        Some("app.limit = 5\n")
    );
    assert!(
        root.read("/etc/sysctl.d/99-tenet.conf")
            .unwrap_or_default()
            .contains("app.limit = 10"),
    );
    assert_eq!(root.read("/proc/sys/app/limit").as_deref(), Some("10\n"));
    let motd = root.under_root("/etc/app/motd");
    assert_eq!(read(&motd).as_deref(), Some("hello\n"));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&motd).unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o600);
    assert_eq!(
        std::fs::read_link(root.under_root("/etc/app/current")).unwrap(),
        Path::new("motd")
    );
    assert_eq!(temporary_files(root.path()), Vec::<String>::new());

    // Converged: a second fix changes nothing at all.
    let before = root.snapshot();
    fix().assert_code(0);
    let changed = diff_snapshots(&before, &root.snapshot());
    assert!(changed.is_empty(), "a second fix changed: {changed:#?}");
}

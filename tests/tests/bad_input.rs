//! Bad policies: the message names the file / ruleset / variable / field at fault, the other
//! modules of the run still run, and the exit codes hold (2 for a policy that cannot be
//! loaded, 1 for a module that is nok).

use std::path::Path;

use tenet_tests::*;

/// One Tenet TOML bundle holding a compliant module (`bad.good`) and one module per bad case,
/// each module with its own moduleset and same-named ruleset (the OpenSVC auto-module
/// convention). `bad` selects them all.
const CASES_TOML: &str = r#"
[[moduleset]]
name = "bad"
modulesets = ["bad.good", "bad.unknown_class", "bad.sysctl_op", "bad.file_mode", "bad.undefined_env"]

[[moduleset]]
name = "bad.good"
modules = [{ name = "bad.good", autofix = false }]
rulesets = ["bad.good"]

[[ruleset]]
name = "bad.good"
type = "explicit"

[[ruleset.variable]]
name = "good_motd"
class = "file"
value = { path = "/etc/motd", fmt = "welcome\n", mode = 644 }

[[moduleset]]
name = "bad.unknown_class"
modules = [{ name = "bad.unknown_class" }]
rulesets = ["bad.unknown_class"]

[[ruleset]]
name = "bad.unknown_class"
type = "explicit"

[[ruleset.variable]]
name = "weird_thing"
class = "frobnicator"
value = { path = "/etc/frob" }

[[moduleset]]
name = "bad.sysctl_op"
modules = [{ name = "bad.sysctl_op" }]
rulesets = ["bad.sysctl_op"]

[[ruleset]]
name = "bad.sysctl_op"
type = "explicit"

[[ruleset.variable]]
name = "swappiness_rule"
class = "sysctl"
value = { key = "vm.swappiness", op = "=>", value = 10 }

[[moduleset]]
name = "bad.file_mode"
modules = [{ name = "bad.file_mode" }]
rulesets = ["bad.file_mode"]

[[ruleset]]
name = "bad.file_mode"
type = "explicit"

[[ruleset.variable]]
name = "symbolic_mode"
class = "file"
value = { path = "/etc/y.conf", fmt = "y\n", mode = "rw-r--r--" }

[[moduleset]]
name = "bad.undefined_env"
modules = [{ name = "bad.undefined_env" }]
rulesets = ["bad.undefined_env"]

[[ruleset]]
name = "bad.undefined_env"
type = "explicit"

[[ruleset.variable]]
name = "env_path"
class = "file"
value = { path = "/etc/%%ENV:UNDEFINED_THING%%/z.conf", fmt = "z\n" }
"#;

fn bundle(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempdir();
    for (name, text) in files {
        write(&dir.path().join(name), text);
    }
    dir
}

fn root() -> TestRoot {
    TestRoot::builder()
        .proc_sys("vm.swappiness", "60")
        .file("/etc/motd", "welcome\n")
        .build()
}

/// Whether `msg` names the rule field `field` (`mode: ...`, `"mode"`, `` `mode` ``, ...).
fn names_field(msg: &str, field: &str) -> bool {
    [
        format!("{field}:"),
        format!("\"{field}\""),
        format!("`{field}`"),
        format!("field {field}"),
    ]
    .iter()
    .any(|p| msg.contains(p.as_str()))
}

/// Runs check of `bad.good` and `bad.<case>`; asserts the good module is ok and returns the
/// message of `variable` in the bad one, which must be nok.
fn check_case(case: &str, variable: &str) -> String {
    let policy = bundle(&[("cases.toml", CASES_TOML)]);
    let root = root();
    let run = Tenet::compliance("check")
        .policy(policy.path())
        .moduleset(&format!("bad.good,bad.{case}"))
        .root(root.path())
        .var_dir(root.under_root("/var/lib/tenet"))
        .format_json()
        .run();
    run.assert_code(1);
    let report = run.json();
    assert_report_consistent(&report);
    assert_eq!(
        status(module(&report, "bad.good")),
        "ok",
        "the good module of the same run:\n{}",
        run.describe()
    );
    let m = module(&report, &format!("bad.{case}"));
    assert_eq!(status(m), "nok", "{m:#}");
    let r = rule(m, variable);
    assert_eq!(r["status"], "nok", "{r:#}");
    let msg = r["message"].as_str().unwrap().to_string();
    assert!(
        all_logs(m).contains(&msg),
        "the rule message should also be in the module log:\nmessage: {msg}\nlog:\n{}",
        all_logs(m)
    );
    msg
}

#[test]
fn unknown_class_names_ruleset_variable_and_class() {
    let msg = check_case("unknown_class", "weird_thing");
    for n in ["bad.unknown_class", "weird_thing", "frobnicator"] {
        assert!(msg.contains(n), "message should name {n}: {msg}");
    }
}

#[test]
fn bad_sysctl_op_names_op() {
    let msg = check_case("sysctl_op", "swappiness_rule");
    assert!(
        names_field(&msg, "op") && msg.contains("=>"),
        "message should name the op field and =>: {msg}"
    );
    assert!(
        msg.contains("swappiness_rule"),
        "message should name the variable: {msg}"
    );
}

#[test]
fn symbolic_file_mode_names_mode() {
    let msg = check_case("file_mode", "symbolic_mode");
    assert!(
        names_field(&msg, "mode") && msg.contains("rw-r--r--"),
        "message should name the mode field and value: {msg}"
    );
    assert!(
        msg.contains("symbolic_mode"),
        "message should name the variable: {msg}"
    );
}

#[test]
fn undefined_env_reference_names_variable_and_name() {
    let msg = check_case("undefined_env", "env_path");
    assert!(
        msg.contains("env_path") && msg.contains("UNDEFINED_THING"),
        "message should name env_path and UNDEFINED_THING: {msg}"
    );
}

#[test]
fn every_bad_case_in_one_fix_run_leaves_the_others_running() {
    let policy = bundle(&[("cases.toml", CASES_TOML)]);
    let root = root();
    let run = Tenet::compliance("fix")
        .policy(policy.path())
        .moduleset("bad")
        .root(root.path())
        .var_dir(root.under_root("/var/lib/tenet"))
        .format_json()
        .run();
    run.assert_code(1);
    let report = run.json();
    assert_report_consistent(&report);
    let s = statuses(&report);
    assert_eq!(s.get("bad.good").map(String::as_str), Some("ok"), "{s:?}");
    for case in ["unknown_class", "sysctl_op", "file_mode", "undefined_env"] {
        assert_eq!(
            s.get(&format!("bad.{case}")).map(String::as_str),
            Some("nok"),
            "{s:?}"
        );
    }
    assert_eq!(report["summary"]["ok"], 1);
    assert_eq!(report["summary"]["nok"], 4);
    // Nothing was written for the broken rules.
    assert!(root.read("/etc/y.conf").is_none());
    assert_eq!(root.read("/proc/sys/vm/swappiness").unwrap(), "60\n");
    assert!(!root.under_root("/etc/frob").exists());
}

#[test]
fn malformed_toml_names_the_file_and_line() {
    let good = "[[ruleset]]\nname = \"fine\"\n";
    let bad =
        "[[ruleset]]\nname = \"also-fine\"\n\n[[ruleset]]\nname = \"broken\ntype = \"explicit\"\n";
    let policy = bundle(&[("a-good.toml", good), ("bad.toml", bad)]);
    let root = root();
    let run = Tenet::compliance("check")
        .policy(policy.path())
        .root(root.path())
        .run();
    run.assert_code(2);
    assert!(
        run.stderr.contains("bad.toml"),
        "stderr should name bad.toml:\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("bad.toml:5") || run.stderr.contains("line 5"),
        "stderr should name line 5 of bad.toml:\n{}",
        run.describe()
    );

    // A misspelt key is refused too, naming the file, the line and the key.
    let typo = "[[ruleset]]\nname = \"r\"\n\n[[ruleset.variable]]\nname = \"v\"\nclas = \"file\"\nvalue = \"x\"\n";
    let policy = bundle(&[("typo.toml", typo)]);
    let run = Tenet::compliance("list")
        .arg("rulesets")
        .policy(policy.path())
        .run();
    run.assert_code(2);
    assert!(
        run.stderr.contains("typo.toml:6")
            || (run.stderr.contains("typo.toml") && run.stderr.contains("line 6")),
        "stderr should name typo.toml line 6:\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("clas"),
        "stderr should name the unknown key:\n{}",
        run.describe()
    );
}

#[test]
fn malformed_export_json_names_the_file() {
    let dir = tempdir();
    let path = dir.path().join("truncated-export.json");
    let text = std::fs::read_to_string(node_export()).unwrap();
    write(&path, &text[..text.len() / 2]);
    let root = root();
    for args in [
        vec!["compliance", "check"],
        vec!["compliance", "list", "modulesets"],
    ] {
        let run = Tenet::new(args).policy(&path).root(root.path()).run();
        run.assert_code(2);
        assert!(
            run.stderr.contains("truncated-export.json"),
            "stderr should name the file:\n{}",
            run.describe()
        );
        assert!(
            run.stdout.trim().is_empty(),
            "no report for a policy that does not load:\n{}",
            run.describe()
        );
    }
}

#[test]
fn missing_policy_and_unknown_module_are_usage_errors() {
    let root = root();
    let run = Tenet::compliance("check")
        .policy(Path::new("/nonexistent/tenet/policy.json"))
        .root(root.path())
        .run();
    run.assert_code(2);
    assert!(
        run.stderr.contains("/nonexistent/tenet/policy.json"),
        "{}",
        run.describe()
    );

    let run = Tenet::compliance("check")
        .policy(node_export())
        .module("no.such.module")
        .root(root.path())
        .run();
    run.assert_code(2);
    assert!(run.stderr.contains("no.such.module"), "{}", run.describe());
}

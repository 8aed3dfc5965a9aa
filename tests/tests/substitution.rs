//! Issue 12 item 1: `%%ENV:X%%` substitution can never change a rule's structure. The
//! reproduction of the issue (a quote in `DTX` closing the `fmt` string and adding
//! `"mode": "777"`) through both doors: an object called with the OpenSVC convention (rules
//! read from the environment as text) and `tenet compliance fix` of a policy.

use std::os::unix::fs::PermissionsExt;

use tenet_tests::*;

const INJECTION: &str = r#"x", "mode": "777"#;
const WINDOWS: &str = r"C:\new\table";
const CONTROL: &str = "a\tb\u{1}c";
const NON_ASCII: &str = "caf\u{e9} \u{65e5}\u{672c} \u{1f600}";

fn mode(root: &TestRoot, abs: &str) -> u32 {
    std::fs::metadata(root.under_root(abs))
        .unwrap_or_else(|e| panic!("{abs}: {e}"))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn object_convention_substitutes_inside_strings_only() {
    let root = TestRoot::builder().build();
    let object = |action: &str| {
        Tenet::new(["object", "file", "OSVC_COMP_DT_FILE", action])
            .env("TENET_ROOT", root.path())
            .env("TENET_VAR_DIR", root.under_root("/var/lib/tenet"))
            .env("DTX", INJECTION)
            .env("WIN", WINDOWS)
            .env("CTL", CONTROL)
            .env("UTF", NON_ASCII)
            .env("DTMODE", "640")
            .env("EVIL_MODE", r#"644, "mode": 511"#)
            .env(
                "OSVC_COMP_DT_FILE_1",
                r#"{"path":"/tmp/x/f","fmt":"v=%%ENV:DTX%%"}"#,
            )
            .env(
                "OSVC_COMP_DT_FILE_2",
                r#"{"path":"/tmp/x/g","fmt":"%%ENV:WIN%%|%%ENV:CTL%%|%%ENV:UTF%%"}"#,
            )
            // An unquoted reference is a number (as OpenSVC reads it), never more members.
            .env(
                "OSVC_COMP_DT_FILE_3",
                r#"{"path":"/tmp/x/h","fmt":"h","mode":%%ENV:DTMODE%%}"#,
            )
            .env(
                "OSVC_COMP_DT_FILE_4",
                r#"{"path":"/tmp/x/i","fmt":"i","mode":%%ENV:EVIL_MODE%%}"#,
            )
    };
    let run = object("fix").run();
    assert!(
        run.stderr.contains("OSVC_COMP_DT_FILE_4") && run.stderr.contains("EVIL_MODE"),
        "the refused rule is named with its variable:\n{}",
        run.describe()
    );
    assert_eq!(
        root.read("/tmp/x/f").as_deref(),
        Some(format!("v={INJECTION}\n").as_str())
    );
    assert_ne!(mode(&root, "/tmp/x/f"), 0o777, "the variable set the mode");
    assert_eq!(mode(&root, "/tmp/x/f") & 0o022, 0);
    assert_eq!(
        root.read("/tmp/x/g").as_deref(),
        Some(format!("{WINDOWS}|{CONTROL}|{NON_ASCII}\n").as_str())
    );
    assert_eq!(mode(&root, "/tmp/x/h"), 0o640);
    assert!(root.read("/tmp/x/i").is_none(), "the refused rule wrote");
    // Converged: the three valid rules check ok (the refused one is skipped, as OpenSVC does).
    let run = object("check").run();
    run.assert_code(0);
}

const POLICY: &str = r#"
[[moduleset]]
name = "dt"
modules = [{ name = "dt" }]
rulesets = ["dt", "dt.vars"]

[[ruleset]]
name = "dt.vars"

[[ruleset.variable]]
name = "dtx"
value = 'x", "mode": "777'

[[ruleset.variable]]
name = "win"
value = 'C:\new\table'

[[ruleset.variable]]
name = "dtmode"
value = "600"

[[ruleset]]
name = "dt"

# A structured value (JSON): the reference sits in a string.
[[ruleset.variable]]
name = "structured"
class = "file"
value = { path = "/tmp/x/f", fmt = "v=%%ENV:DTX%% %%ENV:WIN%%" }

# OpenSVC text with an unquoted reference: not JSON until substituted.
[[ruleset.variable]]
name = "text"
class = "file"
value = '{"path": "/tmp/x/g", "fmt": "v=%%ENV:DTX%%", "mode": %%ENV:DTMODE%%}'
"#;

#[test]
fn compliance_fix_substitutes_inside_strings_only() {
    let policy = tempdir();
    write(&policy.path().join("dt.toml"), POLICY);
    let root = TestRoot::builder().build();
    let run = |action: &str| {
        Tenet::compliance(action)
            .policy(policy.path())
            .moduleset("dt")
            .root(root.path())
            .var_dir(root.under_root("/var/lib/tenet"))
            .run()
    };
    run("fix").assert_code(0);
    assert_eq!(
        root.read("/tmp/x/f").as_deref(),
        Some(format!("v={INJECTION} {WINDOWS}\n").as_str())
    );
    assert_ne!(mode(&root, "/tmp/x/f"), 0o777, "the variable set the mode");
    assert_eq!(
        root.read("/tmp/x/g").as_deref(),
        Some(format!("v={INJECTION}\n").as_str())
    );
    assert_eq!(mode(&root, "/tmp/x/g"), 0o600);
    run("check").assert_code(0);
}

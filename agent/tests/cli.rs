//! The `tenet` command line itself: help, version and usage errors. Being an integration test
//! of this package, it also makes `cargo test --workspace` build the `tenet` binary in its
//! normal, visible build step, before the end-to-end tests of `tenet-tests` use it.

use std::process::Command;

fn tenet(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tenet"))
        .args(args)
        .env_remove("TENET_CONFIG")
        .output()
        .expect("run tenet");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_command_and_explains_it() {
    let (code, out, _) = tenet(&["--help"]);
    assert_eq!(code, 0);
    for cmd in [
        "compliance",
        "object",
        "facts",
        "register",
        "pushasset",
        "daemon",
        "tasks",
        "release",
        "schedule",
        "template",
    ] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} missing from --help:\n{out}"
        );
    }
    let (code, out, _) = tenet(&["compliance", "check", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--allow-empty"), "{out}");
    assert!(out.contains("--root"), "{out}");
}

#[test]
fn version_names_the_program() {
    let (code, out, _) = tenet(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("tenet {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn usage_errors_exit_2_and_name_the_problem() {
    let (code, out, err) = tenet(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("frobnicate"), "{err}");
    let (code, _, err) = tenet(&["compliance", "check", "--format", "yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("yaml"), "{err}");
}

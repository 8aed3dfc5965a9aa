//! The `tenet-collector` command line itself: help, version and usage errors. Being an
//! integration test of this package, it also makes `cargo test --workspace` build the
//! `tenet-collector` binary in its normal, visible build step, before the end-to-end tests of
//! `tenet-tests` use it.

use std::process::Command;

fn collector(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tenet-collector"))
        .args(args)
        .env_remove("TENET_COLLECTOR_DB")
        .output()
        .expect("run tenet-collector");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_command() {
    let (code, out, _) = collector(&["--help"]);
    assert_eq!(code, 0);
    for cmd in ["serve", "import", "export", "token", "convert"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} missing from --help:\n{out}"
        );
    }
}

#[test]
fn version_names_the_program() {
    let (code, out, _) = collector(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("tenet-collector {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn serve_without_a_database_is_a_usage_error_naming_the_option() {
    let (code, out, err) = collector(&["serve"]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("--db"), "{err}");
}

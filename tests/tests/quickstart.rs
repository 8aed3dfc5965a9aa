//! The README's quick start and the fleet commands of docs/tenet-collector.md, run as written.
//!
//! Each block is read from the document at test time and handed, unchanged, to a real shell:
//! a document that drifts from what the binaries do fails here. What a shell cannot take
//! verbatim from a test is provided around the block, never edited into it:
//! - `cargo run -p tenet-agent -- ARGS` would start a nested cargo on the target directory the
//!   running `cargo test` holds; a shell function named `cargo` checks that the invocation is
//!   exactly that one and executes this build's `tenet` binary with ARGS instead;
//! - the fleet block's placeholders are the variables its first lines assign (where the
//!   database lives, the collector's host name and port); the test runs the block with those
//!   assignments changed to temporary paths and loopback, everything after them unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tenet_tests::{collector_bin, tempdir, tenet_bin, tool};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace directory")
}

/// The body of the first ```sh block after the heading `heading` in `doc`.
fn sh_block(doc: &Path, heading: &str) -> String {
    let text = std::fs::read_to_string(doc)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", doc.display()));
    let at = text
        .lines()
        .position(|l| l.trim_start_matches('#').trim() == heading && l.starts_with('#'))
        .unwrap_or_else(|| panic!("{} has no heading {heading:?}", doc.display()));
    let mut lines = text.lines().skip(at + 1);
    lines
        .by_ref()
        .find(|l| l.trim() == "```sh")
        .unwrap_or_else(|| panic!("no ```sh block under {heading:?} in {}", doc.display()));
    let body: Vec<&str> = lines.take_while(|l| l.trim() != "```").collect();
    assert!(!body.is_empty(), "empty ```sh block under {heading:?}");
    body.join("\n") + "\n"
}

/// Stands in for `cargo run -p tenet-agent --` (see the module comment).
const CARGO_SHIM: &str = r#"cargo() {
    if [ "$1 $2 $3 $4" != "run -p tenet-agent --" ]; then
        echo "quickstart test: unexpected cargo invocation: cargo $*" >&2
        exit 97
    fi
    shift 4
    "$QUICKSTART_TENET" "$@"
}
"#;

fn run_readme_quick_start(extra_args: &str) -> (i32, String, String) {
    let ws = workspace();
    let block = sh_block(&ws.join("README.md"), "Quick start");
    assert_eq!(
        block.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "the README quick start is expected to be one command line:\n{block}"
    );
    let line = block.trim_end().to_string() + extra_args;
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{CARGO_SHIM}{line}\n"))
        .env("QUICKSTART_TENET", tenet_bin())
        .env_remove("TENET_CONFIG")
        .env_remove("TENET_ROOT")
        .current_dir(&ws)
        .output()
        .expect("run sh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn readme_quick_start_runs_as_written() {
    // The package the README runs builds the `tenet` binary the shim executes.
    let manifest = std::fs::read_to_string(workspace().join("agent/Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"tenet-agent\"") && manifest.contains("name = \"tenet\""));

    let (code, stdout, stderr) = run_readme_quick_start("");
    // The README says: a report per module, a digest, and exit 1 (the example root is only
    // partly compliant).
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("spdc.kernel") || stdout.contains("spdc."),
        "no module report in:\n{stdout}"
    );
    assert!(
        stdout.to_lowercase().contains("nok"),
        "no nok in the digest:\n{stdout}"
    );

    // "Add --format json for the machine-readable report."
    let (code, stdout, stderr) = run_readme_quick_start(" --format json");
    assert_eq!(code, 1, "stderr:\n{stderr}");
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("--format json is not JSON ({e}):\n{stdout}"));
    assert!(
        report.to_string().contains("spdc."),
        "the JSON report names no spdc module: {report}"
    );
}

/// Replaces the values of the variables the block assigns on lines of its own
/// (`NAME=value`, optionally `export`ed) by those in `values`; every other line is kept.
fn with_placeholders(block: &str, values: &[(&str, String)]) -> String {
    let mut seen = Vec::new();
    let out: Vec<String> = block
        .lines()
        .map(|line| {
            let assignment = line.strip_prefix("export ").unwrap_or(line);
            for (name, value) in values {
                if let Some(rest) = assignment.strip_prefix(&format!("{name}=")) {
                    assert!(
                        !rest.contains(' ') || rest.starts_with('#'),
                        "placeholder line {line:?} is not a plain assignment"
                    );
                    seen.push(*name);
                    let export = if line.starts_with("export ") {
                        "export "
                    } else {
                        ""
                    };
                    return format!("{export}{name}='{value}'");
                }
            }
            line.to_string()
        })
        .collect();
    for (name, _) in values {
        assert!(
            seen.contains(name),
            "the fleet block no longer assigns {name}: update this test and the document together"
        );
    }
    out.join("\n") + "\n"
}

#[test]
fn fleet_commands_run_as_written() {
    tool("openssl");
    let ws = workspace();
    let block = sh_block(
        &ws.join("docs/tenet-collector.md"),
        "A fleet in a few commands",
    );
    let dir = tempdir();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for b in [tenet_bin(), collector_bin()] {
        std::os::unix::fs::symlink(&b, bin.join(b.file_name().unwrap())).unwrap();
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // The database lands in a directory that does not exist yet: creating it is part of
    // what the commands must do.
    let db = dir.path().join("var/lib/tenet-collector/db.sqlite");
    let etc = dir.path().join("etc");
    let script = with_placeholders(
        &block,
        &[
            ("TENET_COLLECTOR_DB", db.display().to_string()),
            (
                "COLLECTOR_DIR",
                etc.join("tenet-collector").display().to_string(),
            ),
            ("COLLECTOR_HOST", "localhost".to_string()),
            ("COLLECTOR_PORT", port.to_string()),
            ("LISTEN", "127.0.0.1".to_string()),
        ],
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // `set -e`: every command of the block must succeed but the last (a check that reports
    // nok exits 1); the collector the block starts in the background is stopped afterwards.
    let wrapped = format!(
        "set -e\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{}",
        script
            .trim_end()
            .rsplit_once('\n')
            .map_or(script.clone(), |(head, last)| format!(
                "{head}\nset +e\n{last}\necho \"quickstart-exit=$?\"\n"
            ))
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&wrapped)
        .env("PATH", path)
        // The node side: its configuration and state in the temporary directory, its checks
        // against the example root (as in the README's quick start), never the host's.
        .env("TENET_CONFIG", etc.join("tenet/tenet.toml"))
        .env("TENET_VAR_DIR", dir.path().join("var/lib/tenet"))
        .env("TENET_ROOT", ws.join("examples/spdc-node-root"))
        .env("TENET_NODENAME", "spd03")
        .current_dir(&ws)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the fleet commands failed (exit {:?}):\n--- script\n{wrapped}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status.code()
    );
    let exit = stdout
        .lines()
        .find_map(|l| l.strip_prefix("quickstart-exit="))
        .unwrap_or_else(|| panic!("the last command did not run:\n{stdout}\n{stderr}"));
    // The check ran the attached moduleset: a report per module, against the example root
    // (partly compliant, hence 1).
    assert_eq!(exit, "1", "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("spdc."),
        "the check ran no spdc module:\n{stdout}\n{stderr}"
    );
    assert!(db.is_file(), "no database at {}", db.display());
}

//! A file rule against a 2 GiB file (issue 12, point 11): check and fix compare and hash it
//! streaming, so the `tenet` process stays small. The bound asserted is generous (200 MB of
//! peak RSS for a 2 GiB file; a run measures about 30 MiB): it catches reading the file whole,
//! not small regressions. The file is sparse: it costs no disk.
//!
//! The peak is `getrusage(RUSAGE_CHILDREN)`: the largest peak RSS among the children a process
//! waited for. So that only `tenet` runs count (not the `cargo build` that makes the binary),
//! the test re-runs its own executable, which then runs the `tenet` commands and measures.

use std::process::Command;

use tenet_tests::*;

const SIZE: u64 = 2 << 30;
const BOUND_KIB: i64 = 200 * 1024;
const INNER: &str = "TENET_LARGE_FILES_INNER";

#[test]
fn a_2_gib_file_is_compared_and_replaced_in_bounded_memory() {
    if std::env::var_os(INNER).is_none() {
        // Build the binary here, then measure in a process whose only children are its runs.
        let _ = tenet_bin();
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_2_gib_file_is_compared_and_replaced_in_bounded_memory",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(INNER, "1")
            .env("TENET_E2E_PREBUILT", "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{text}");
        assert!(out.status.success(), "the measuring run failed");
        assert!(text.contains("1 passed"), "the measuring run ran no test");
        return;
    }
    let root = TestRoot::builder().build();
    let big = root.under_root("/srv/big");
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    std::fs::File::create(&big).unwrap().set_len(SIZE).unwrap();
    let pol = tempdir();
    write(
        &pol.path().join("p.toml"),
        r#"
[[moduleset]]
name = "big"
modules = [{ name = "big" }]
rulesets = ["big"]

[[ruleset]]
name = "big"
type = "explicit"

[[ruleset.variable]]
name = "big"
class = "file"
value = { path = "/srv/big", fmt = "small" }
"#,
    );
    let var = tempdir();
    let run = |action: &str| {
        Tenet::compliance(action)
            .policy(pol.path())
            .root(root.path())
            .var_dir(var.path())
            .format_json()
            .run()
    };
    let check = run("check");
    check.assert_code(1);
    let log = all_logs(module(&check.json(), "big"));
    // The digest of 2 GiB of zeros (`head -c 2G /dev/zero | sha256sum`): the whole file was
    // read, 64 KiB at a time.
    let zeros = "a7c744c13cc101ed66c29f672f92455547889cc586ce6d44fe76ae824958ea51";
    assert!(
        log.contains(&format!(
            "/srv/big: content differs (on disk: {SIZE} bytes, sha256 {zeros}; "
        )) && log.contains("expected: 6 bytes")
            && log.contains("no diff above 1048576 bytes"),
        "{log}"
    );
    let fix = run("fix");
    fix.assert_code(0);
    assert_eq!(root.read("/srv/big").as_deref(), Some("small\n"));
    run("check").assert_code(0);

    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    let peak_kib = usage.max_rss();
    println!(
        "peak RSS of the tenet runs: {} MiB (file: {} GiB)",
        peak_kib / 1024,
        SIZE >> 30
    );
    assert!(
        peak_kib < BOUND_KIB,
        "a tenet run peaked at {} MiB of RSS for a {} GiB file",
        peak_kib / 1024,
        SIZE >> 30
    );
}

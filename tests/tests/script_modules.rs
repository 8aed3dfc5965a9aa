//! Misbehaving script modules: refused when group-writable, killed after `--timeout`, nok when
//! they crash; none of them stops the run.

use std::time::Instant;

use tenet_tests::*;

const POLICY: &str = r#"
[[moduleset]]
name = "scripts"
modules = [
  { name = "s.ok" },
  { name = "s.writable" },
  { name = "s.slow" },
  { name = "s.segv" },
  { name = "s.exit139" },
  { name = "s.after" },
]
"#;

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn unsafe_slow_and_crashing_scripts_are_nok_and_the_run_goes_on() {
    if !require_root("unsafe_slow_and_crashing_scripts_are_nok_and_the_run_goes_on") {
        return; // script modules must be owned by root
    }
    let policy = tempdir();
    write(&policy.path().join("scripts.toml"), POLICY);
    let modules = tempdir();
    chmod(modules.path(), 0o755);
    let d = modules.path();
    let marker = d.join("writable-ran");
    script(d, "10-s.ok", "#!/bin/sh\necho fine $1\nexit 0\n", 0o755);
    script(
        d,
        "20-s.writable",
        &format!("#!/bin/sh\ntouch '{}'\nexit 0\n", marker.display()),
        0o775,
    );
    script(
        d,
        "30-s.slow",
        "#!/bin/sh\necho sleeping\nsleep 30\nexit 0\n",
        0o755,
    );
    script(
        d,
        "40-s.segv",
        "#!/bin/sh\necho about to crash\nkill -SEGV $$\nsleep 5\n",
        0o755,
    );
    script(
        d,
        "50-s.exit139",
        "#!/bin/sh\necho segfault >&2\nexit 139\n",
        0o755,
    );
    script(
        d,
        "60-s.after",
        "#!/bin/sh\necho still running $1\nexit 0\n",
        0o755,
    );
    let root = TestRoot::builder().build();

    let started = Instant::now();
    let run = Tenet::compliance("check")
        .policy(policy.path())
        .root(root.path())
        .modules_dir(modules.path())
        .opt("timeout", "1")
        .format_json()
        .run();
    let elapsed = started.elapsed();
    run.assert_code(1);
    let report = run.json();
    assert_report_consistent(&report);

    // Run in NN order, every module reported.
    let order: Vec<&str> = report["modules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["module"].as_str())
        .collect();
    assert_eq!(
        order,
        [
            "s.ok",
            "s.writable",
            "s.slow",
            "s.segv",
            "s.exit139",
            "s.after"
        ]
    );
    for m in report["modules"].as_array().unwrap() {
        assert_eq!(m["kind"], "script", "{m:#}");
    }

    let ok = module(&report, "s.ok");
    assert_eq!(status(ok), "ok");
    assert!(action_log(ok, "check").contains("fine check"), "{ok:#}");

    let writable = module(&report, "s.writable");
    assert_eq!(status(writable), "nok");
    let log = all_logs(writable);
    assert!(
        log.contains("writable") && log.contains("20-s.writable"),
        "refusal should say why and which file:\n{log}"
    );
    assert!(!marker.exists(), "the group-writable script was run");

    let slow = module(&report, "s.slow");
    assert_eq!(status(slow), "nok");
    assert!(all_logs(slow).contains("timed out"), "{}", all_logs(slow));
    // The timeout, not the script's 30 s sleep, ended it (check, then the informational
    // fixable, each killed after 1 s).
    assert!(
        slow["duration_ms"].as_u64().unwrap() < 20_000 && elapsed.as_secs() < 25,
        "the slow module was not killed at its timeout: {slow:#}"
    );

    let segv = module(&report, "s.segv");
    assert_eq!(status(segv), "nok");
    assert!(
        all_logs(segv).contains("signal"),
        "a script killed by a signal should say so:\n{}",
        all_logs(segv)
    );

    let exit139 = module(&report, "s.exit139");
    assert_eq!(status(exit139), "nok");
    let check = &exit139["actions"][0];
    assert_eq!(check["exit_code"], 139, "{exit139:#}");
    assert!(
        check["log"].as_str().unwrap().contains("ERR: segfault"),
        "stderr lines are prefixed ERR: {check:#}"
    );

    let after = module(&report, "s.after");
    assert_eq!(
        status(after),
        "ok",
        "the run did not go on after the bad modules: {after:#}"
    );
    assert!(action_log(after, "check").contains("still running check"));

    assert_eq!(report["summary"]["ok"], 2);
    assert_eq!(report["summary"]["nok"], 4);
}

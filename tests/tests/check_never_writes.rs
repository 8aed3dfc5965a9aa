//! `check` never writes: it runs on a read-only bind mount of a non-compliant root (in a
//! private mount namespace) and reports nok results, not write errors.

use tenet_tests::*;

fn shell_quote(p: &std::path::Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn check_on_a_read_only_root_reports_nok_and_writes_nothing() {
    if !require_root("check_on_a_read_only_root_reports_nok_and_writes_nothing") {
        return; // mount namespaces and bind mounts need root
    }
    let root = TestRoot::builder()
        .stock_kernel()
        .installed(&["systemd"])
        .file("/etc/sudoers.d/opensvc", "Defaults something else\n")
        .build();
    let r = shell_quote(root.path());
    let ro = format!("mount --bind {r} {r} && mount -o remount,bind,ro {r}");

    // The mount really is read-only in such a namespace.
    let probe = tenet_tests::tool("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!("{ro} && touch {r}/probe"))
        .output()
        .expect("run unshare");
    assert!(
        !probe.status.success(),
        "writing to the read-only bind mount succeeded: the test would prove nothing"
    );
    assert!(root.read("/probe").is_none());

    let before = root.snapshot();
    // Default var dir (<root>/var/lib/tenet): any write there would fail too.
    let run = Tenet::compliance("check")
        .policy(node_export())
        .moduleset("spdc.node")
        .root(root.path())
        .env("SPDC_BRGW", "10.0.0.7")
        .format_json()
        .in_private_mount_ns(&ro)
        .run();
    run.assert_code(1);
    for text in [&run.stdout, &run.stderr] {
        assert!(
            !text.contains("Read-only file system") && !text.contains("os error 30"),
            "check tried to write:\n{}",
            run.describe()
        );
    }
    let report = run.json();
    assert_report_consistent(&report);
    assert!(
        report["summary"]["nok"].as_u64().unwrap() >= 4,
        "{:#?}",
        statuses(&report)
    );
    for name in [
        "spdc.kernel",
        "spdc.opensvc",
        "spdc.network",
        "spdc.packages",
    ] {
        assert_eq!(status(module(&report, name)), "nok", "{name}");
    }
    let opensvc = module(&report, "spdc.opensvc");
    assert_eq!(rule(opensvc, "spdc_opensvc_file_sudo")["status"], "nok");
    assert!(
        action_log(opensvc, "check").contains("/etc/sudoers.d/opensvc: content differs"),
        "{}",
        all_logs(opensvc)
    );

    let d = diff_snapshots(&before, &root.snapshot());
    assert!(d.is_empty(), "check changed the root: {d:#?}");
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn script_checks_on_a_read_only_root_write_nothing() {
    if !require_root("script_checks_on_a_read_only_root_write_nothing") {
        return;
    }
    let modules = spd_modules_dir();
    Tenet::compliance("install-compat")
        .arg(modules.path())
        .run()
        .assert_code(0);
    let root = TestRoot::builder()
        .stock_kernel()
        .installed(&["systemd"])
        .build();
    let stubs = PathStubs::network_and_grub();
    let r = shell_quote(root.path());
    let ro = format!("mount --bind {r} {r} && mount -o remount,bind,ro {r}");
    let before = root.snapshot();
    let run = Tenet::compliance("check")
        .policy(node_export())
        .moduleset("spdc.node")
        .root(root.path())
        .modules_dir(modules.path())
        .path_stubs(&stubs)
        .format_json()
        .in_private_mount_ns(&ro)
        .run();
    run.assert_code(1);
    assert!(
        !run.stdout.contains("Read-only file system")
            && !run.stderr.contains("Read-only file system"),
        "a script check tried to write:\n{}",
        run.describe()
    );
    let report = run.json();
    assert_report_consistent(&report);
    for name in [
        "spdc.kernel",
        "spdc.opensvc",
        "spdc.network",
        "spdc.packages",
    ] {
        let m = module(&report, name);
        assert_eq!(m["kind"], "script", "{m:#}");
        assert_eq!(status(m), "nok", "{name}:\n{}", all_logs(m));
    }
    assert!(
        stubs.calls().is_empty(),
        "check ran ifup / update-grub: {:?}",
        stubs.calls()
    );
    let d = diff_snapshots(&before, &root.snapshot());
    assert!(d.is_empty(), "a script check changed the root: {d:#?}");
}

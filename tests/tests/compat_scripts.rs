//! The five OpenSVC fixture scripts (`opensvc-spd/modules`) run unmodified as script modules,
//! calling Tenet through the compat objects `com.opensvc/files.py`, `sysctl.py`,
//! `nodeconf.py` and `packages.py` that `tenet compliance install-compat` creates.
//!
//! Host isolation: every object works under `--root <tempdir>`; `ifup` and `update-grub` are
//! stubs first on PATH; the kernel script's own writes to /sys/kernel/mm/transparent_hugepage
//! happen only in a private mount namespace where temporary files are bound over the two
//! files; the service script, which globs the real filesystem, is given a temporary directory
//! as its service name.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;
use tenet_tests::*;

const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
const THP_DEFRAG: &str = "/sys/kernel/mm/transparent_hugepage/defrag";

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Shell commands binding `enabled` and `defrag` over the host's THP files.
fn bind_thp(enabled: &Path, defrag: &Path) -> String {
    format!(
        "mount --bind {} {THP_ENABLED} && mount --bind {} {THP_DEFRAG}",
        q(enabled),
        q(defrag)
    )
}

/// The ERR lines of the last run of sub-action `action` of a module.
fn last_errors(module: &Value, action: &str) -> Vec<String> {
    module["actions"]
        .as_array()
        .and_then(|a| a.iter().rev().find(|x| x["action"] == action))
        .and_then(|x| x["log"].as_str())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("ERR:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn install_compat_creates_object_aliases_of_the_binary() {
    let dir = tempdir();
    for _ in 0..2 {
        // Twice: re-installing over existing links works.
        Tenet::compliance("install-compat")
            .arg(dir.path())
            .run()
            .assert_code(0);
    }
    let bin = tenet_bin().canonicalize().unwrap();
    for alias in ["files.py", "sysctl.py", "nodeconf.py", "packages.py"] {
        let p = dir.path().join("com.opensvc").join(alias);
        let m = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            m.file_type().is_symlink(),
            "{} is not a symlink",
            p.display()
        );
        assert_eq!(
            p.canonicalize().unwrap(),
            bin,
            "{} does not point to the tenet binary",
            p.display()
        );
    }
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn fixture_scripts_check_and_fix_through_compat_objects() {
    if !require_root("fixture_scripts_check_and_fix_through_compat_objects") {
        return; // scripts must be root-owned; mount namespaces
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
    let var = tempdir();
    let stubs = PathStubs::network_and_grub();
    let host_thp = (read(Path::new(THP_ENABLED)), read(Path::new(THP_DEFRAG)));
    let tenet = |action: &str, modulesets: &str| {
        Tenet::compliance(action)
            .policy(node_export())
            .moduleset(modulesets)
            .root(root.path())
            .var_dir(var.path())
            .modules_dir(modules.path())
            .path_stubs(&stubs)
            .format_json()
    };

    // check: every script is nok, saying why.
    let run = tenet("check", "spdc.node").run();
    run.assert_code(1);
    let report = run.json();
    assert_report_consistent(&report);
    assert_eq!(
        module(&report, "com.opensvc.sys.opensvc.dequeue-actions-listener")["kind"],
        "auto"
    );
    let expect: [(&str, &[&str]); 4] = [
        ("spdc.packages", &["sysstat", "docker.io", "btrfs-tools"]),
        ("spdc.opensvc", &["/etc/sudoers.d/opensvc"]),
        ("spdc.network", &["/etc/network/interfaces.d/br0.cfg"]),
        (
            "spdc.kernel",
            &[
                "/etc/default/grub.d/60-spdc.cfg",
                "vm.max_map_count",
                "65530",
            ],
        ),
    ];
    for (name, needles) in expect {
        let m = module(&report, name);
        assert_eq!(
            m["kind"], "script",
            "{name} should run its fixture script: {m:#}"
        );
        assert_eq!(status(m), "nok", "{name}:\n{}", all_logs(m));
        let log = action_log(m, "check");
        for n in needles {
            assert!(
                log.contains(n),
                "{name} check log does not mention {n}:\n{log}"
            );
        }
        assert!(
            !log.contains("execution error") && !log.contains("No such file"),
            "{name}: a compat object did not run:\n{log}"
        );
    }
    let pkg_log = action_log(module(&report, "spdc.packages"), "check");
    assert!(pkg_log.contains("not installed"), "{pkg_log}");
    assert!(stubs.calls().is_empty(), "check ran {:?}", stubs.calls());

    // fix of the files / nodeconf scripts, under the root prefix.
    let run = tenet("fix", "spdc.opensvc,spdc.network").run();
    let report = run.json();
    for name in ["spdc.opensvc", "spdc.network"] {
        let m = module(&report, name);
        assert_eq!(status(m), "ok", "{name} not fixed:\n{}", all_logs(m));
    }
    run.assert_code(0);
    assert!(
        stubs.calls().iter().any(|c| c == "ifup br0"),
        "the network fix did not run ifup br0: {:?}",
        stubs.calls()
    );
    let br0 = root
        .read("/etc/network/interfaces.d/br0.cfg")
        .expect("br0.cfg written under the root");
    assert!(
        br0.contains("address 10.0.0.") && !br0.contains("%%"),
        "{br0}"
    );
    assert!(root.read("/etc/sudoers.d/opensvc").is_some());
    let node_toml = root
        .read("/etc/tenet/node.toml")
        .expect("nodeconf.py wrote <root>/etc/tenet/node.toml");
    assert!(node_toml.contains("collector.opensvc.com"), "{node_toml}");

    // fix of the kernel script, with the THP files it writes bound to temporary files.
    let thp = tempdir();
    let (t1, t2) = (thp.path().join("enabled"), thp.path().join("defrag"));
    write(&t1, "always [madvise] never\n");
    write(&t2, "always [madvise] never\n");
    let run = tenet("fix", "spdc.kernel")
        .in_private_mount_ns(&bind_thp(&t1, &t2))
        .run();
    let report = run.json();
    let kernel = module(&report, "spdc.kernel");
    assert_eq!(
        actions_run(kernel),
        ["check", "fixable", "fix", "check"],
        "{kernel:#}"
    );
    let fix = kernel["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "fix")
        .unwrap();
    assert_eq!(
        fix["exit_code"],
        0,
        "the kernel fix failed:\n{}",
        all_logs(kernel)
    );
    assert_eq!(
        read(&t1).unwrap().trim(),
        "never",
        "the kernel script did not write THP enabled"
    );
    assert_eq!(
        read(&t2).unwrap().trim(),
        "never",
        "the kernel script did not write THP defrag"
    );
    // A plain file bound over sysfs reads back `never`, not `[never]`: only the THP lines of the
    // last check may complain.
    for line in last_errors(kernel, "check") {
        assert!(
            line.contains("thp"),
            "after the kernel fix, check still complains: {line}\n{}",
            all_logs(kernel)
        );
    }
    assert!(
        stubs.calls().iter().any(|c| c.starts_with("update-grub")),
        "no update-grub: {:?}",
        stubs.calls()
    );
    assert!(
        root.read("/etc/default/grub.d/60-spdc.cfg")
            .unwrap()
            .contains("transparent_hugepage=never")
    );
    let max_map: u64 = root
        .read("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        max_map >= 200_000,
        "sysctl.py fix left vm.max_map_count at {max_map}"
    );

    // check of the three, where the kernel would now show [never].
    write(&t1, "always madvise [never]\n");
    write(&t2, "always defer defer+madvise madvise [never]\n");
    let run = tenet("check", "spdc.opensvc,spdc.network,spdc.kernel")
        .in_private_mount_ns(&bind_thp(&t1, &t2))
        .run();
    let report = run.json();
    assert_report_consistent(&report);
    for name in ["spdc.opensvc", "spdc.network", "spdc.kernel"] {
        let m = module(&report, name);
        assert_eq!(status(m), "ok", "{name} after fix:\n{}", all_logs(m));
    }
    run.assert_code(0);

    let host_after = (read(Path::new(THP_ENABLED)), read(Path::new(THP_DEFRAG)));
    assert_eq!(host_thp, host_after, "the host's real THP settings changed");
}

/// The ids the service script's formula gives for one pod: (`sm` id, its peer, `db` id, its
/// peer).
fn pod_ids(pod: u32, start: i64, n_servers: i64) -> (i64, i64, i64, i64) {
    let n = i64::from(pod) - 1;
    let sm = start + 2 * n;
    let db = start + 2 * n + 1;
    let peer = |id: i64| (id - start + n_servers / 2) % n_servers + start;
    (sm, peer(sm), db, peer(db))
}

fn expected_cnf(fmt: &str, server_id: i64, peer_id: i64) -> String {
    let mut s = fmt
        .replace("%%ENV:SERVER_ID%%", &server_id.to_string())
        .replace("%%ENV:PEER_SERVER_ID%%", &peer_id.to_string());
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn service_script_writes_per_pod_database_configs() {
    if !require_root("service_script_writes_per_pod_database_configs") {
        return; // root-owned scripts, files owned by uid/gid 999
    }
    let modules = spd_modules_dir();
    Tenet::compliance("install-compat")
        .arg(modules.path())
        .run()
        .assert_code(0);
    // The script globs /$OSVC_COMP_SERVICES_SVC_NAME/pod* on the real filesystem and its file
    // paths are /%%ENV:SERVICES_SVC_NAME%%/...: the service name is a temporary directory.
    let base = tempdir();
    let svc_dir = base.path().join("spd");
    for pod in ["pod01", "pod02", "pod03"] {
        std::fs::create_dir_all(svc_dir.join(pod)).unwrap();
    }
    let svc = svc_dir.display().to_string();
    let svc = svc.trim_start_matches('/').to_string();
    assert!(
        !svc.is_empty() && svc_dir.starts_with(std::env::temp_dir()),
        "unsafe service dir {svc}"
    );
    let var = tempdir();
    let tenet = |action: &str| {
        Tenet::compliance(action)
            .policy(service_export())
            .moduleset("spdc.svc.db.cnf")
            .opt("service", &svc)
            .root("/") // this test only: the script's paths are real paths inside `base`
            .var_dir(var.path())
            .modules_dir(modules.path())
            .format_json()
    };

    // Safety gate before any fix with --root /: the module must see the service name.
    let run = tenet("env").run();
    run.assert_code(0);
    let env = run.json();
    let module_env = &env["spdc.svc.db.cnf"];
    assert_eq!(
        module_env["OSVC_COMP_SERVICES_SVC_NAME"].as_str(),
        Some(svc.as_str()),
        "the module environment lacks OSVC_COMP_SERVICES_SVC_NAME = the --service name (the fixture \
         script needs it); env: {module_env:#}"
    );
    assert_eq!(
        module_env["OSVC_COMP_FIRST_SERVER_IP"], "33",
        "{module_env:#}"
    );
    assert_eq!(module_env["OSVC_COMP_N_SERVERS"], "64", "{module_env:#}");

    let run = tenet("check").run();
    run.assert_code(1);
    let report = run.json();
    assert_report_consistent(&report);
    let m = module(&report, "spdc.svc.db.cnf");
    assert_eq!(m["kind"], "script");
    let log = action_log(m, "check");
    for pod in ["pod01", "pod02", "pod03"] {
        for kind in ["db", "sm"] {
            let path = format!("/{svc}/{pod}/{kind}/conf/spd.cnf");
            assert!(log.contains(&path), "check does not name {path}:\n{log}");
        }
    }

    let run = tenet("fix").run();
    let report = run.json();
    let m = module(&report, "spdc.svc.db.cnf");
    assert_eq!(status(m), "ok", "{}", all_logs(m));
    run.assert_code(0);

    let run = tenet("check").run();
    run.assert_code(0);
    assert_eq!(status(module(&run.json(), "spdc.svc.db.cnf")), "ok");

    let db_fmt = export_variable(&service_export(), "spdc_svc_db_cnf_file_db")["fmt"]
        .as_str()
        .unwrap()
        .to_string();
    let sm_fmt = export_variable(&service_export(), "spdc_svc_db_cnf_file_sm")["fmt"]
        .as_str()
        .unwrap()
        .to_string();
    for pod in 1..=3u32 {
        let (sm, sm_peer, db, peer) = pod_ids(pod, 33, 64);
        let dir = svc_dir.join(format!("pod{pod:02}"));
        let db_path = dir.join("db/conf/spd.cnf");
        let sm_path = dir.join("sm/conf/spd.cnf");
        let db_cnf = read(&db_path).unwrap_or_else(|| panic!("{} not written", db_path.display()));
        let sm_cnf = read(&sm_path).unwrap_or_else(|| panic!("{} not written", sm_path.display()));
        assert!(
            db_cnf.contains(&format!("server_id={db}\n")),
            "{}:\n{db_cnf}",
            db_path.display()
        );
        assert!(
            db_cnf.contains(&format!("replicate-do-db=spdc{peer}  \n")),
            "{}:\n{db_cnf}",
            db_path.display()
        );
        assert_eq!(
            db_cnf,
            expected_cnf(&db_fmt, db, peer),
            "{}",
            db_path.display()
        );
        assert!(
            sm_cnf.contains(&format!("server-id = {sm}\n")),
            "{}:\n{sm_cnf}",
            sm_path.display()
        );
        assert_eq!(
            sm_cnf,
            expected_cnf(&sm_fmt, sm, sm_peer),
            "{}",
            sm_path.display()
        );
        for p in [&db_path, &sm_path] {
            let md = std::fs::metadata(p).unwrap();
            assert_eq!((md.uid(), md.gid()), (999, 999), "{} owner", p.display());
            assert_eq!(md.mode() & 0o7777, 0o644, "{} mode", p.display());
        }
    }
    // The acceptance's worked example: pod02 is server 36 (db) / 35 (sm), db peer 68.
    let pod02 = read(&svc_dir.join("pod02/db/conf/spd.cnf")).unwrap();
    assert!(
        pod02.contains("server_id=36\n") && pod02.contains("replicate-do-db=spdc68  \n"),
        "{pod02}"
    );
    assert!(
        read(&svc_dir.join("pod02/sm/conf/spd.cnf"))
            .unwrap()
            .contains("server-id = 35\n")
    );
}

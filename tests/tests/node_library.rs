//! Acceptance (issue 5, point 5): the Tenet TOML bundle `rulesets/library/spdc-node` gives the
//! same check results as the OpenSVC deployment it replaces — the node export with its module
//! scripts — on the same root, in several states of that root.
//!
//! The export runs as OpenSVC runs it: the four spdc modules are the fixture scripts (through
//! the compat objects), the dequeue-actions listener an auto-module. The TOML bundle runs with
//! no script at all: its auto-modules reproduce what the scripts add to the variables (the
//! bridge address from the host name, transparent huge pages off in the live kernel).
//!
//! Host isolation: each run has a private UTS namespace (host name `spd03`, what the network
//! script and the node facts read) and a private mount namespace where the root's THP files
//! are bound over /sys/kernel/mm/transparent_hugepage/{enabled,defrag}, which the kernel script
//! reads outside the root prefix. Nothing is written by `check`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use tenet_tests::*;

const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
const THP_DEFRAG: &str = "/sys/kernel/mm/transparent_hugepage/defrag";
const NODE: &str = "spd03";
const MODULES: [&str; 5] = [
    "com.opensvc.sys.opensvc.dequeue-actions-listener",
    "spdc.packages",
    "spdc.opensvc",
    "spdc.network",
    "spdc.kernel",
];

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Binds the root's THP files over the live ones (in the run's private mount namespace).
fn bind_thp(root: &TestRoot) -> String {
    format!(
        "mount --bind {} {THP_ENABLED} && mount --bind {} {THP_DEFRAG}",
        q(&root.under_root(THP_ENABLED)),
        q(&root.under_root(THP_DEFRAG))
    )
}

/// A stock Debian node: kernel defaults, THP on `madvise`, systemd and the spdc packages
/// installed or not, none of the managed files.
fn node_root(with_packages: bool) -> TestRoot {
    let mut packages = vec!["base-files", "systemd"];
    if with_packages {
        packages.extend(["sysstat", "docker.io", "btrfs-tools"]);
    }
    TestRoot::builder()
        .stock_kernel()
        .sysctl_conf("# stock values\nvm.swappiness = 60\nvm.max_map_count = 65530\n")
        .installed(&packages)
        .file(THP_ENABLED, "always [madvise] never\n")
        .file(THP_DEFRAG, "always defer defer+madvise [madvise] never\n")
        .build()
}

/// Runs `action` with the export and its scripts, or with the TOML bundle (no script).
fn run(action: &str, export: bool, root: &TestRoot, host: &str) -> Value {
    let var = tempdir();
    let stubs = PathStubs::network_and_grub();
    let modules = spd_modules_dir();
    Tenet::compliance("install-compat")
        .arg(modules.path())
        .run()
        .assert_code(0);
    let mut t = Tenet::compliance(action)
        .moduleset("spdc.node")
        .root(root.path())
        .var_dir(var.path())
        .path_stubs(&stubs)
        .format_json()
        .with_hostname(host)
        .in_private_mount_ns(&bind_thp(root));
    t = if export {
        t.policy(node_export()).modules_dir(modules.path())
    } else {
        t.policy(library_bundle("spdc-node"))
    };
    let r = t.run();
    assert!(
        r.code == 0 || r.code == 1,
        "{action} failed to run:\n{}",
        r.describe()
    );
    let report = r.json();
    assert_report_consistent(&report);
    report
}

/// Checks `root` both ways and asserts the same module statuses (and the same rule statuses
/// for the module that is an auto-module both ways), equal to `want`; check writes nothing.
fn assert_same_checks(what: &str, root: &TestRoot, host: &str, want: &[(&str, &str)]) {
    let before = root.snapshot();
    let export = run("check", true, root, host);
    let toml = run("check", false, root, host);
    let d = diff_snapshots(&before, &root.snapshot());
    assert!(d.is_empty(), "{what}: check wrote to the root: {d:#?}");
    for m in [
        "spdc.packages",
        "spdc.opensvc",
        "spdc.network",
        "spdc.kernel",
    ] {
        assert_eq!(module(&export, m)["kind"], "script", "{what}: {m}");
        assert_eq!(module(&toml, m)["kind"], "auto", "{what}: {m}");
    }
    let (a, b) = (statuses(&export), statuses(&toml));
    let logs = |r: &Value| {
        MODULES
            .iter()
            .map(|m| format!("== {m}\n{}", all_logs(module(r, m))))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        a,
        b,
        "{what}: the export (left) and the TOML bundle (right) disagree\n--- export:\n{}\n--- toml:\n{}",
        logs(&export),
        logs(&toml)
    );
    let want: BTreeMap<String, String> = want
        .iter()
        .map(|(m, s)| (m.to_string(), s.to_string()))
        .collect();
    assert_eq!(a, want, "{what}\n--- export:\n{}", logs(&export));
    let rules = |r: &Value| -> Vec<(String, String)> {
        module(r, MODULES[0])["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["variable"].as_str().unwrap().to_string(),
                    x["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(rules(&export), rules(&toml), "{what}: listener rules");
}

fn all(status: &str) -> Vec<(&'static str, &str)> {
    MODULES.iter().map(|m| (*m, status)).collect()
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn spdc_node_bundle_checks_like_the_export_with_its_scripts() {
    if !require_root("spdc_node_bundle_checks_like_the_export_with_its_scripts") {
        return; // root-owned scripts, UTS and mount namespaces
    }
    // 1. A stock node: everything is wrong, both ways.
    let stock = node_root(false);
    assert_same_checks("stock node", &stock, NODE, &all("nok"));

    // 2. The node after a fix of the TOML bundle (packages pre-installed: this root prefix has
    //    no package source), with the kernel now showing THP `[never]`: everything is ok,
    //    both ways.
    let root = node_root(true);
    let fixed = run("fix", false, &root, NODE);
    for m in MODULES {
        assert_eq!(
            status(module(&fixed, m)),
            "ok",
            "fix of {m}:\n{}",
            all_logs(module(&fixed, m))
        );
    }
    let br0 = root.read("/etc/network/interfaces.d/br0.cfg").unwrap();
    assert!(
        br0.contains("address 10.0.0.3\n") && br0.contains("replace 10.0.0.3/32 dev br0"),
        "{br0}"
    );
    write(&root.under_root(THP_ENABLED), "always madvise [never]\n");
    write(
        &root.under_root(THP_DEFRAG),
        "always defer defer+madvise madvise [never]\n",
    );
    assert_same_checks("fixed node", &root, NODE, &all("ok"));

    // 3. The same node seen as spd07: its bridge address is wrong, both ways.
    let mut want = all("ok");
    want[3].1 = "nok";
    assert_same_checks("fixed node renamed spd07", &root, "spd07", &want);

    // 4. Drift: THP defrag back to madvise, a live sysctl lowered, the agent config edited.
    write(
        &root.under_root(THP_DEFRAG),
        "always defer defer+madvise [madvise] never\n",
    );
    write(&root.under_root("/proc/sys/vm/swappiness"), "1\n");
    let conf = root.read("/etc/tenet/node.toml").unwrap();
    write(
        &root.under_root("/etc/tenet/node.toml"),
        conf.replace("@1440", "@60"),
    );
    let mut want = all("ok");
    want[2].1 = "nok";
    want[4].1 = "nok";
    assert_same_checks("drifted node", &root, NODE, &want);

    // 5. Only THP wrong: the kernel module is nok because of the live THP setting alone,
    //    which only the script checked before the bundle gained its sysfs rule.
    let root = node_root(true);
    run("fix", false, &root, NODE);
    write(&root.under_root(THP_ENABLED), "[always] madvise never\n");
    write(
        &root.under_root(THP_DEFRAG),
        "always defer defer+madvise madvise [never]\n",
    );
    let mut want = all("ok");
    want[4].1 = "nok";
    assert_same_checks("THP enabled", &root, NODE, &want);
}

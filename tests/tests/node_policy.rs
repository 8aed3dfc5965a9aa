//! The spdc.node policy (node export) as auto-modules on a prepared temporary root: what check
//! reports, fix converging, fix being idempotent, and the contextual dequeue-actions rulesets.

use std::path::Path;

use tenet_modules::testing::dpkg::build_test_deb;
use tenet_tests::*;

const DEQUEUE: &str = "com.opensvc.sys.opensvc.dequeue-actions-listener";
const SERVICE_UNIT: &str = "/etc/systemd/system/opensvc-actions@.service";
const SOCKET_UNIT: &str = "/etc/systemd/system/opensvc-actions.socket";

/// A stock Debian node: kernel defaults (also persisted in sysctl.conf), systemd installed,
/// none of the spdc packages, no agent config, none of the managed files.
fn stock_node() -> TestRoot {
    TestRoot::builder()
        .stock_kernel()
        .sysctl_conf(
            "# stock values\nvm.swappiness = 60\nvm.max_map_count = 65530\nnet.ipv4.ip_local_port_range = 32768 60999\n",
        )
        .installed(&["base-files", "systemd"])
        .build()
}

fn check_spdc_node(root: &TestRoot, var: &Path) -> Tenet {
    Tenet::compliance("check")
        .policy(node_export())
        .moduleset("spdc.node")
        .root(root.path())
        .var_dir(var)
        .env("SPDC_BRGW", "10.0.0.7")
        .format_json()
}

fn assert_mentions(haystack: &str, needles: &[&str], what: &str) {
    for n in needles {
        assert!(
            haystack.contains(n),
            "{what} should mention {n:?}:\n{haystack}"
        );
    }
}

#[test]
fn check_reports_which_rules_are_nok_and_why() {
    let root = stock_node();
    write(
        &root.under_root(SOCKET_UNIT),
        "[Socket]\nListenStream=1215\n",
    );
    let var = tempdir();
    let before = root.snapshot();
    let run = check_spdc_node(&root, var.path()).run();
    run.assert_code(1);
    let report = run.json();
    assert_report_consistent(&report);
    let d = diff_snapshots(&before, &root.snapshot());
    assert!(d.is_empty(), "check wrote to the root: {d:#?}");

    // Kernel: the live value of vm.max_map_count is named, and why it is wrong.
    let kernel = module(&report, "spdc.kernel");
    assert_eq!(status(kernel), "nok");
    let sysctl = rule(kernel, "spdc_kernel_sysctl");
    assert_eq!(sysctl["status"], "nok", "{sysctl:#}");
    assert_eq!(sysctl["class"], "sysctl");
    let msg = sysctl["message"].as_str().unwrap();
    assert_mentions(
        msg,
        &["vm.max_map_count", "65530", "200000"],
        "the spdc_kernel_sysctl rule message",
    );
    let log = action_log(kernel, "check");
    let live_line = log
        .lines()
        .find(|l| l.contains("vm.max_map_count") && l.contains("live") && l.contains("65530"))
        .unwrap_or_else(|| {
            panic!("the check log does not name the live value of vm.max_map_count:\n{log}")
        });
    assert!(
        live_line.contains("200000"),
        "the live line should say what is expected: {live_line}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("ip_local_port_range") && l.contains("60999")),
        "the check log does not name ip_local_port_range[1] = 60999:\n{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.starts_with("ERR:") && l.contains("vm.swappiness")),
        "vm.swappiness = 60 complies with >= 5, yet an error names it:\n{log}"
    );
    let thp = rule(kernel, "spdc_kernel_file_thp");
    assert_eq!(thp["status"], "nok");
    assert_mentions(
        thp["message"].as_str().unwrap(),
        &["/etc/default/grub.d/60-spdc.cfg", "missing"],
        "the thp file rule",
    );

    // Files are missing.
    let opensvc = module(&report, "spdc.opensvc");
    let sudo = rule(opensvc, "spdc_opensvc_file_sudo");
    assert_eq!(sudo["status"], "nok");
    assert_mentions(
        sudo["message"].as_str().unwrap(),
        &["/etc/sudoers.d/opensvc", "missing"],
        "the sudoers rule",
    );
    let nodeconf = rule(opensvc, "spdc_opensvc_nodeconf");
    assert_eq!(nodeconf["status"], "nok", "{nodeconf:#}");
    assert_eq!(nodeconf["class"], "nodeconf");
    assert!(
        !nodeconf["message"].as_str().unwrap().is_empty(),
        "nodeconf nok without a reason: {nodeconf:#}"
    );
    let network = module(&report, "spdc.network");
    let br0 = rule(network, "spdc_net_file_br0_cfg");
    assert_eq!(br0["status"], "nok");
    assert_mentions(
        br0["message"].as_str().unwrap(),
        &["/etc/network/interfaces.d/br0.cfg", "missing"],
        "the br0 rule",
    );

    // Packages.
    let packages = module(&report, "spdc.packages");
    let pkg = rule(packages, "spdc_pkg");
    assert_eq!(pkg["status"], "nok");
    assert!(
        ["docker.io", "btrfs-tools", "sysstat"]
            .iter()
            .any(|p| pkg["message"].as_str().unwrap().contains(p)),
        "the package rule message names no missing package: {pkg:#}"
    );
    let log = action_log(packages, "check");
    for p in ["sysstat", "docker.io", "btrfs-tools"] {
        assert!(
            log.lines()
                .any(|l| l.contains(p) && l.contains("not installed")),
            "the package check log does not say {p} is missing:\n{log}"
        );
    }

    // Contextual: systemd is installed, so the two unit files are checked. The socket unit
    // exists with other content: its rule says which file differs.
    let dequeue = module(&report, DEQUEUE);
    assert_eq!(dequeue["rules"].as_array().unwrap().len(), 2, "{dequeue:#}");
    let socket = rule(dequeue, "opensvc_dequeue_actions_file_socket");
    assert_eq!(socket["status"], "nok");
    assert!(
        action_log(dequeue, "check").contains(&format!("{SOCKET_UNIT}: content differs")),
        "{}",
        all_logs(dequeue)
    );
    assert_mentions(
        socket["message"].as_str().unwrap(),
        &[SOCKET_UNIT],
        "the message of a file whose content differs",
    );
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn fix_converges_and_a_second_fix_changes_nothing() {
    if !require_root("fix_converges_and_a_second_fix_changes_nothing") {
        return; // files owned by root:root and dpkg --root need root
    }
    let root = stock_node();
    let var = tempdir();
    let debs = tempdir();
    for p in ["sysstat", "docker.io", "btrfs-tools"] {
        build_test_deb(debs.path(), p, "1.0-1");
    }
    let fix = || {
        Tenet::compliance("fix")
            .policy(node_export())
            .moduleset("spdc.node")
            .root(root.path())
            .var_dir(var.path())
            .package_dir(debs.path())
            .env("SPDC_BRGW", "10.0.0.7")
            .format_json()
            .run()
    };

    let run = fix();
    let report = run.json();
    assert_report_consistent(&report);
    assert_eq!(report["action"], "fix");
    for m in report["modules"].as_array().unwrap() {
        assert_eq!(
            status(m),
            "ok",
            "module {} not fixed:\n{}",
            m["module"],
            all_logs(m)
        );
        for r in m["rules"].as_array().into_iter().flatten() {
            assert_eq!(r["status"], "ok", "rule not fixed: {r:#}");
        }
    }
    run.assert_code(0);

    // What fix did, seen from the root.
    let br0 = root
        .read("/etc/network/interfaces.d/br0.cfg")
        .expect("br0.cfg written");
    assert!(
        br0.contains("address 10.0.0.7\n"),
        "%%ENV:SPDC_BRGW%% not substituted:\n{br0}"
    );
    assert!(
        br0.contains("post-up /sbin/ip route replace 10.0.0.7/32 dev br0"),
        "{br0}"
    );
    assert!(!br0.contains("%%"), "{br0}");
    let installed = root.installed_packages();
    for p in ["sysstat", "docker.io", "btrfs-tools", "systemd"] {
        assert!(
            installed.iter().any(|i| i == p),
            "{p} not installed after fix: {installed:?}"
        );
    }
    let max_map: u64 = root
        .read("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(max_map >= 200_000, "vm.max_map_count live value {max_map}");
    let range = root.read("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let range: Vec<u64> = range
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        range[0] >= 1025 && range[1] >= 65534,
        "ip_local_port_range {range:?}"
    );
    let node_toml = root
        .read("/etc/tenet/node.toml")
        .expect("nodeconf wrote etc/tenet/node.toml");
    assert!(
        node_toml.contains("repocomp") && node_toml.contains("http://repo.opensvc.com/compliance/"),
        "{node_toml}"
    );
    for unit in [SERVICE_UNIT, SOCKET_UNIT] {
        assert!(root.read(unit).is_some(), "{unit} not written");
    }

    // Now compliant: check is all ok / n/a, exit 0.
    let run = check_spdc_node(&root, var.path()).run();
    let report = run.json();
    assert_report_consistent(&report);
    assert_eq!(
        report["summary"]["nok"],
        0,
        "check after fix: {:#?}",
        statuses(&report)
    );
    run.assert_code(0);

    // A further fix changes nothing at all.
    let before = root.snapshot();
    let run = fix();
    run.assert_code(0);
    let report = run.json();
    for m in report["modules"].as_array().unwrap() {
        assert_eq!(
            actions_run(m),
            ["check"],
            "a compliant module ran more than check: {m:#}"
        );
    }
    let d = diff_snapshots(&before, &root.snapshot());
    assert!(d.is_empty(), "a fix of a compliant root changed it: {d:#?}");
}

/// The version of the test packages, distinctive enough to be found in the host's dpkg log.
const DEB_VERSION: &str = "1.0-1+tenete2e";

/// Lines of the host's /var/log/dpkg.log naming [`DEB_VERSION`].
fn host_dpkg_log_lines() -> usize {
    read(Path::new("/var/log/dpkg.log"))
        .map_or(0, |t| t.lines().filter(|l| l.contains(DEB_VERSION)).count())
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn package_fix_under_a_root_leaves_the_host_dpkg_log_alone() {
    if !require_root("package_fix_under_a_root_leaves_the_host_dpkg_log_alone") {
        return; // dpkg --root needs root
    }
    let policy = tempdir();
    write(
        &policy.path().join("pkg.toml"),
        "[[moduleset]]\nname = \"pkg\"\nmodules = [{ name = \"pkg\" }]\nrulesets = [\"pkg\"]\n\n\
         [[ruleset]]\nname = \"pkg\"\n\n[[ruleset.variable]]\nname = \"pkg_probe\"\nclass = \"package\"\n\
         value = [\"tenet-e2e-probe\"]\n",
    );
    let debs = tempdir();
    build_test_deb(debs.path(), "tenet-e2e-probe", DEB_VERSION);
    let root = TestRoot::builder().installed(&["base-files"]).build();
    let var = tempdir();
    let before = host_dpkg_log_lines();
    let run = Tenet::compliance("fix")
        .policy(policy.path())
        .root(root.path())
        .var_dir(var.path())
        .package_dir(debs.path())
        .format_json()
        .run();
    run.assert_code(0);
    assert!(
        root.installed_packages()
            .iter()
            .any(|p| p == "tenet-e2e-probe"),
        "{}",
        run.describe()
    );
    assert_eq!(
        host_dpkg_log_lines(),
        before,
        "fix --root <tempdir> logged its package install in the host's /var/log/dpkg.log"
    );
}

#[test]
fn contextual_rulesets_follow_installed_packages() {
    // With systemd: the two unit files, both nok on an empty root, named in the messages.
    let root = TestRoot::builder().installed(&["systemd"]).build();
    let var = tempdir();
    let run = Tenet::compliance("check")
        .policy(node_export())
        .moduleset(DEQUEUE)
        .root(root.path())
        .var_dir(var.path())
        .format_json()
        .run();
    run.assert_code(1);
    let report = run.json();
    assert_report_consistent(&report);
    let m = module(&report, DEQUEUE);
    assert_eq!(status(m), "nok");
    let rules = m["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "systemd rules only: {m:#}");
    for r in rules {
        assert_eq!(r["status"], "nok", "{r:#}");
        assert_eq!(r["class"], "file", "{r:#}");
    }
    let messages: Vec<&str> = rules
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    for unit in [SERVICE_UNIT, SOCKET_UNIT] {
        assert!(
            messages.iter().any(|msg| msg.contains(unit)),
            "no rule names {unit}: {messages:#?}"
        );
    }
    assert!(
        !all_logs(m).contains("xinetd"),
        "xinetd is not installed, yet its ruleset applies:\n{}",
        all_logs(m)
    );

    // With xinetd only: the xinetd service file.
    let root = TestRoot::builder().installed(&["xinetd"]).build();
    let run = Tenet::compliance("check")
        .policy(node_export())
        .moduleset(DEQUEUE)
        .root(root.path())
        .var_dir(var.path())
        .format_json()
        .run();
    run.assert_code(1);
    let report = run.json();
    let m = module(&report, DEQUEUE);
    let rules = m["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "xinetd rule only: {m:#}");
    assert!(
        rules[0]["message"]
            .as_str()
            .unwrap()
            .contains("/etc/xinetd.d/opensvc-actions"),
        "{m:#}"
    );

    // Neither systemd nor xinetd: nothing applies, the module is n/a, exit 0.
    let root = TestRoot::builder()
        .installed(&["base-files", "sysvinit-core"])
        .build();
    let run = Tenet::compliance("check")
        .policy(node_export())
        .module(DEQUEUE)
        .root(root.path())
        .var_dir(var.path())
        .format_json()
        .run();
    run.assert_code(0);
    let report = run.json();
    assert_report_consistent(&report);
    assert_eq!(
        report["modules"].as_array().unwrap().len(),
        1,
        "--module runs that module only"
    );
    let m = module(&report, DEQUEUE);
    assert_eq!(status(m), "n/a", "{m:#}");
    assert!(m["rules"].as_array().is_none_or(|r| r.is_empty()), "{m:#}");
}

//! `list` / `show` of the node export, and the two output formats of a run.

use tenet_tests::*;

const NODE_MODULESETS: [&str; 6] = [
    "com.opensvc.sys.opensvc.dequeue-actions-listener",
    "spdc.kernel",
    "spdc.network",
    "spdc.node",
    "spdc.opensvc",
    "spdc.packages",
];

/// The children of spdc.node, each holding the module of the same name.
const NODE_CHILDREN: [&str; 5] = [
    "com.opensvc.sys.opensvc.dequeue-actions-listener",
    "spdc.packages",
    "spdc.opensvc",
    "spdc.network",
    "spdc.kernel",
];

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

#[test]
fn list_modulesets_of_the_node_export() {
    let run = Tenet::compliance("list")
        .arg("modulesets")
        .policy(node_export())
        .run();
    run.assert_code(0);
    let mut got: Vec<&str> = run
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    got.sort();
    assert_eq!(got, NODE_MODULESETS, "list modulesets:\n{}", run.describe());

    let run = Tenet::compliance("list")
        .arg("modulesets")
        .policy(node_export())
        .format_json()
        .run();
    run.assert_code(0);
    let json = run.json();
    let mut got: Vec<&str> = json
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    got.sort();
    assert_eq!(
        got,
        NODE_MODULESETS,
        "list modulesets --format json:\n{}",
        run.describe()
    );
}

#[test]
fn show_moduleset_prints_the_spdc_node_tree() {
    let root = TestRoot::builder().build();
    let run = Tenet::compliance("show")
        .arg("moduleset")
        .policy(node_export())
        .moduleset("spdc.node")
        .root(root.path())
        .run();
    run.assert_code(0);
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let top = lines
        .iter()
        .position(|l| l.trim() == "spdc.node:")
        .unwrap_or_else(|| panic!("no `spdc.node:` line:\n{}", run.describe()));
    let base = indent(lines[top]);
    let mut last = top;
    for child in NODE_CHILDREN {
        let at = lines
            .iter()
            .position(|l| l.trim() == format!("{child}:"))
            .unwrap_or_else(|| panic!("no `{child}:` line in the tree:\n{}", run.describe()));
        assert!(
            at > top,
            "{child} is printed before spdc.node:\n{}",
            run.stdout
        );
        assert!(
            at > last,
            "children of spdc.node out of the moduleset's order ({child}):\n{}",
            run.stdout
        );
        last = at;
        let child_indent = indent(lines[at]);
        assert!(
            child_indent > base,
            "{child} is not indented under spdc.node:\n{}",
            run.stdout
        );
        // Its module, on the next line, one level deeper.
        let module_line = lines.get(at + 1).copied().unwrap_or_default();
        assert_eq!(
            module_line.trim().trim_end_matches(" (autofix)"),
            child,
            "the line after `{child}:` should be its module:\n{}",
            run.stdout
        );
        assert!(
            indent(module_line) > child_indent,
            "module {child} not indented under its moduleset:\n{}",
            run.stdout
        );
    }
}

#[test]
fn json_summary_matches_modules_and_text_has_banners_and_digest() {
    let root = TestRoot::builder()
        .stock_kernel()
        .installed(&["systemd"])
        .build();
    let var = tempdir();
    let base = Tenet::compliance("check")
        .policy(node_export())
        .moduleset("spdc.node")
        .root(root.path())
        .var_dir(var.path())
        .env("SPDC_BRGW", "10.0.0.7");

    let run = base.clone().format_json().run();
    run.assert_code(1);
    let report = run.json();
    assert_report_consistent(&report);
    assert_eq!(report["action"], "check");
    let names: Vec<&str> = report["modules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["module"].as_str())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    let mut want = NODE_CHILDREN.to_vec();
    want.sort();
    assert_eq!(sorted, want, "modules of spdc.node");
    assert!(
        report["summary"]["nok"].as_u64().unwrap() >= 1,
        "{report:#}"
    );
    assert!(
        report["policy_hash"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "policy_hash missing: {report:#}"
    );
    for m in report["modules"].as_array().unwrap() {
        assert_eq!(
            m["kind"], "auto",
            "no modules dir: every module is an auto-module: {m:#}"
        );
        assert_eq!(
            m["moduleset"], m["module"],
            "module reported under its own moduleset: {m:#}"
        );
    }

    let run = base.run();
    run.assert_code(1);
    for name in &names {
        let banner = run
            .stdout
            .lines()
            .any(|l| l.contains(&format!(" {name} ")) && l.starts_with('=') && l.ends_with('='));
        assert!(banner, "no banner for module {name}:\n{}", run.stdout);
    }
    assert!(
        run.stdout.contains("total duration"),
        "no digest line `total duration`:\n{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains('\x1b'),
        "colour escapes in piped output:\n{}",
        run.stdout
    );
}

#[test]
fn output_into_a_closed_pipe_is_not_a_crash() {
    // `tenet compliance list modulesets | head -0`: the reader is gone before tenet writes.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Tenet::compliance("list")
        .arg("modulesets")
        .policy(node_export())
        .command()
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run tenet");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "writing to a closed pipe made tenet panic ({:?}):\n{stderr}",
        out.status
    );
}

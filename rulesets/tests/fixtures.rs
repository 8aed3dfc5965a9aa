//! The OpenSVC fixtures of `tests/fixtures/opensvc-spd` through both formats and resolution,
//! plus property tests that random bundles survive both formats.

use proptest::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use tenet_rulesets::export::{from_json, to_json};
use tenet_rulesets::toml_format::{from_toml_str, load_dir, to_toml_string, write_dir};
use tenet_rulesets::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/opensvc-spd");

fn fixture_text(name: &str) -> String {
    let path = format!("{FIXTURES}/{name}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixture(name: &str) -> Bundle {
    from_json(&fixture_text(name), name).unwrap_or_else(|e| panic!("{e}"))
}

fn err_text<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => "no error".to_string(),
        Err(e) => e.to_string(),
    }
}

/// An export document with every `var_value` text replaced by its JSON value (when it is JSON),
/// so documents compare by meaning rather than by spacing.
fn normalized(doc: &str) -> Value {
    let mut v: Value = serde_json::from_str(doc).unwrap_or_else(|e| panic!("{e}"));
    if let Some(rulesets) = v.get_mut("rulesets").and_then(Value::as_array_mut) {
        for rs in rulesets {
            if let Some(vars) = rs.get_mut("variables").and_then(Value::as_array_mut) {
                for var in vars {
                    if let Some(text) = var.get("var_value").and_then(Value::as_str) {
                        let parsed = serde_json::from_str::<Value>(text)
                            .map(|j| serde_json::json!({ "json": j }))
                            .unwrap_or_else(|_| serde_json::json!({ "text": text }));
                        var["var_value"] = parsed;
                    }
                }
            }
        }
    }
    v
}

const FIXTURE_NAMES: [&str; 2] = ["node-export.json", "service-export.json"];

#[test]
fn fixtures_dir_exists() {
    assert!(std::path::Path::new(FIXTURES).is_dir(), "{FIXTURES}");
}

#[test]
fn node_export_loads() {
    let b = fixture("node-export.json");
    assert_eq!(b.modulesets.len(), 6);
    assert_eq!(b.filtersets.len(), 3);
    assert_eq!(b.rulesets.len(), 8);
    let s = fixture("service-export.json");
    assert_eq!(
        (s.modulesets.len(), s.filtersets.len(), s.rulesets.len()),
        (2, 0, 1)
    );
    let smf = &b.rulesets["com.opensvc.sys.opensvc.dequeue-actions-listener.smf"];
    assert_eq!(smf.kind, RulesetType::Contextual);
    assert_eq!(smf.filterset.as_deref(), Some("opensvc solaris servers"));
    assert_eq!(
        smf.variables[1].value,
        VarValue::Text("svc:/network/opensvc-dequeue-actions/tcp:default".into())
    );
    assert_eq!(
        smf.variables[1].author.as_deref(),
        Some("Christophe Varoqui")
    );
    assert_eq!(
        smf.variables[1].updated.as_deref(),
        Some("2015-12-01 18:16:25")
    );
    assert_eq!(
        b.modulesets["spdc.kernel"].meta.responsibles,
        ["OpenSVC", "SPD"]
    );
}

#[test]
fn export_round_trip_keeps_every_field() {
    for name in FIXTURE_NAMES {
        let text = fixture_text(name);
        let b = fixture(name);
        let out = to_json(&b);
        assert_eq!(
            from_json(&out, "out.json").unwrap_or_else(|e| panic!("{e}")),
            b,
            "{name}"
        );
        assert_eq!(normalized(&out), normalized(&text), "{name}");
    }
}

#[test]
fn export_toml_export_round_trip() {
    for name in FIXTURE_NAMES {
        let text = fixture_text(name);
        let b = fixture(name);
        let toml = to_toml_string(&b);
        let back = from_toml_str(&toml, "bundle.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(back, b, "{name}");
        assert_eq!(normalized(&to_json(&back)), normalized(&text), "{name}");

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        write_dir(&b, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let loaded = load_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded, b, "{name}");
        assert_eq!(load_path(dir.path()).unwrap_or_default(), b);
        assert!(
            dir.path()
                .join("filtersets/servers_with_systemd.toml")
                .is_file()
                || name != "node-export.json"
        );
    }
}

#[test]
fn malformed_json_names_file_and_line() {
    let text = fixture_text("node-export.json").replacen("\"modules\": [", "\"modules\": [,", 1);
    let e = err_text(from_json(&text, "node-export.json"));
    assert!(e.starts_with("node-export.json:4:"), "{e}");
}

#[test]
fn unknown_f_op_names_the_filterset() {
    let text = fixture_text("node-export.json").replacen("\"f_op\": \"=\"", "\"f_op\": \"=~\"", 1);
    let e = err_text(from_json(&text, "node-export.json"));
    assert!(e.starts_with("node-export.json:"), "{e}");
    assert!(
        e.contains("filterset opensvc solaris servers, filter 1: unknown f_op \"=~\""),
        "{e}"
    );
}

#[test]
fn bad_ruleset_type_names_the_ruleset() {
    let text = fixture_text("service-export.json").replacen(
        "\"ruleset_type\": \"explicit\"",
        "\"ruleset_type\": \"Explicit\"",
        1,
    );
    let e = err_text(from_json(&text, "service-export.json"));
    assert!(
        e.contains("ruleset spdc.svc.db.cnf: unknown ruleset_type \"Explicit\""),
        "{e}"
    );

    let toml = to_toml_string(&fixture("service-export.json")).replacen(
        "type = \"explicit\"",
        "type = \"Explicit\"",
        1,
    );
    let e = err_text(from_toml_str(&toml, "svc.toml"));
    assert!(
        e.starts_with("svc.toml:3:8: ruleset spdc.svc.db.cnf: type"),
        "{e}"
    );
}

#[test]
fn malformed_toml_names_file_line_and_variable() {
    let toml = to_toml_string(&fixture("service-export.json"));
    let bad = toml.replacen("class = \"raw\"", "klass = \"raw\"", 1);
    let line = bad
        .lines()
        .position(|l| l.starts_with("klass"))
        .map_or(0, |i| i + 1);
    let e = err_text(from_toml_str(&bad, "svc.toml"));
    assert!(e.starts_with(&format!("svc.toml:{line}:1: ruleset spdc.svc.db.cnf, variable first_server_ip: unknown field `klass`")), "{e}");
    let e = err_text(from_toml_str(
        "[[ruleset]]\nname = \"x\"\nvalue = = 1\n",
        "x.toml",
    ));
    assert!(e.starts_with("x.toml:3:"), "{e}");
}

fn facts_with_packages(pkgs: &[&str]) -> NodeFacts {
    let mut f = NodeFacts::default();
    f.node.insert("nodename".into(), "n1".into());
    f.node.insert("os_name".into(), "Linux".into());
    f.node.insert("team_responsible".into(), "OpenSVC".into());
    f.packages = pkgs
        .iter()
        .map(|p| PackageFact {
            name: p.to_string(),
            ..Default::default()
        })
        .collect();
    f
}

const LISTENER: &str = "com.opensvc.sys.opensvc.dequeue-actions-listener";

fn listener_vars(pkgs: &[&str]) -> Vec<(String, Value)> {
    let b = fixture("node-export.json");
    let p = Policy::resolve(&b, &facts_with_packages(pkgs), &Selection::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let rs = p
        .auto_module_ruleset(LISTENER)
        .unwrap_or_else(|| panic!("no auto ruleset"));
    assert_eq!(rs.moduleset.as_deref(), Some(LISTENER));
    assert_eq!(rs.reason, "explicit attachment via moduleset");
    rs.variables
        .iter()
        .map(|v| (v.name.clone(), v.value.as_json()))
        .collect()
}

#[test]
fn dequeue_listener_follows_packages() {
    let vars = listener_vars(&["systemd", "bash"]);
    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "opensvc_dequeue_actions_file_service",
            "opensvc_dequeue_actions_file_socket"
        ]
    );
    assert_eq!(
        vars[0].1["path"],
        "/etc/systemd/system/opensvc-actions@.service"
    );

    let vars = listener_vars(&["xinetd"]);
    assert_eq!(vars.len(), 1);
    assert_eq!(vars[0].0, "opensvc_dequeue_actions_file_service");
    assert_eq!(vars[0].1["path"], "/etc/xinetd.d/opensvc-actions");

    assert!(listener_vars(&[]).is_empty());
}

#[test]
fn node_policy_modulesets_and_env() {
    let b = fixture("node-export.json");
    let p = Policy::resolve(
        &b,
        &facts_with_packages(&["systemd"]),
        &Selection::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy::root_modulesets(&b), ["spdc.node"]);
    let names: Vec<&str> = p.modulesets.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "spdc.node",
            LISTENER,
            "spdc.packages",
            "spdc.opensvc",
            "spdc.network",
            "spdc.kernel"
        ]
    );
    assert_eq!(p.modules.len(), 5);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);

    let env: BTreeMap<String, String> = p.module_env("spdc.kernel").into_iter().collect();
    let sysctl = env
        .get("OSVC_COMP_SPDC_KERNEL_SYSCTL")
        .cloned()
        .unwrap_or_default();
    assert!(
        sysctl.starts_with(
            r#"[{"key": "net.ipv4.ip_local_port_range", "index": 0, "op": ">=", "value": 1025}, "#
        ),
        "{sysctl}"
    );
    assert_eq!(
        env.get("OSVC_COMP_NODES_NODENAME").map(String::as_str),
        Some("n1")
    );
    // Rulesets of other modulesets stay out of this module's environment.
    assert!(!env.contains_key("OSVC_COMP_SPDC_PKG"));
}

#[test]
fn service_policy_env_substitutes_into_valid_json() {
    let b = fixture("service-export.json");
    let sel = Selection {
        service: Some("spdc1".into()),
        ..Default::default()
    };
    let p = Policy::resolve(&b, &facts_with_packages(&[]), &sel).unwrap_or_else(|e| panic!("{e}"));
    let env: BTreeMap<String, String> = p.module_env("spdc.svc.db.cnf").into_iter().collect();
    assert_eq!(
        env.get("OSVC_COMP_N_SERVERS").map(String::as_str),
        Some("64")
    );
    let db = env
        .get("OSVC_COMP_SPDC_SVC_DB_CNF_FILE_DB")
        .cloned()
        .unwrap_or_default();
    // Names the policy does not define (POD, SERVER_ID: the service config's) get a value that
    // needs escaping.
    let lookup = |k: &str| {
        env.get(k)
            .cloned()
            .or_else(|| k.starts_with("OSVC_COMP_").then(|| "a\"b".to_string()))
    };
    let ctx = subst::SubstContext {
        lookup: &lookup,
        hostname: "n1.example.com",
    };
    let out = subst::substitute(&db, &ctx, true).unwrap_or_else(|e| panic!("{e}"));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(
        v["path"].as_str().is_some_and(|p| p.starts_with("/spdc1/")),
        "{v}"
    );
}

#[test]
fn readme_examples_load() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .unwrap_or_default();
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    // The layout sketch, the dequeue-listener bundle, the sysctl / text values, the templated
    // files example.
    assert_eq!(blocks.len(), 4);
    let b = from_toml_str(blocks[3], "README.md").unwrap_or_else(|e| panic!("{e}"));
    let value = b.rulesets["spdc.svc.db.cnf"].variables[2].value.as_json();
    assert_eq!(value["template"], "spdc-db.cnf");
    let vars: Vec<&String> = value["vars"].as_object().unwrap().keys().collect();
    assert_eq!(
        vars,
        ["n", "server_id", "peer_server_id"],
        "vars keep their order"
    );
    let b = from_toml_str(blocks[1], "README.md").unwrap_or_else(|e| panic!("{e}"));
    let p = Policy::resolve(&b, &facts_with_packages(&["xinetd"]), &Selection::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        p.auto_module_ruleset(LISTENER).map(|r| r.variables.len()),
        Some(1)
    );
    let b = from_toml_str(blocks[2], "README.md").unwrap_or_else(|e| panic!("{e}"));
    let vars = &b.rulesets["spdc.kernel"].variables;
    assert_eq!(
        vars[1].value,
        VarValue::Text("svc:/network/opensvc-dequeue-actions/tcp:default".into())
    );
    assert_eq!(vars[2].value, VarValue::Json(serde_json::json!(64)));
}

#[test]
fn shipped_library_loads() {
    for (dir, fixture_name) in [
        ("spdc-node", "node-export.json"),
        ("spdc-svc", "service-export.json"),
    ] {
        let path = format!("{}/library/{dir}", env!("CARGO_MANIFEST_DIR"));
        let b = load_dir(std::path::Path::new(&path)).unwrap_or_else(|e| panic!("{e}"));
        let f = fixture(fixture_name);
        let names = |b: &Bundle| {
            let mut n: Vec<String> = b
                .rulesets
                .keys()
                .chain(b.filtersets.keys())
                .chain(b.modulesets.keys())
                .cloned()
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(&b), names(&f), "{dir}");
    }
}

/// The shipped bundles are the exports, plus only the documented Tenet-native changes: in
/// spdc-node, the bridge file from a template instead of `%%ENV:SPDC_BRGW%%` and the THP
/// sysfs rules; in spdc-svc, the two file variables with `foreach` + `template` instead of
/// `fmt` with `%%ENV:...%%` (same paths, modes, owners). Everything else is identical.
#[test]
fn shipped_library_differs_from_the_exports_only_where_documented() {
    let lib = |dir: &str| {
        load_dir(std::path::Path::new(&format!(
            "{}/library/{dir}",
            env!("CARGO_MANIFEST_DIR")
        )))
        .unwrap_or_else(|e| panic!("{e}"))
    };
    for (dir, fixture_name) in [
        ("spdc-node", "node-export.json"),
        ("spdc-svc", "service-export.json"),
    ] {
        let mut ours = lib(dir);
        let theirs = fixture(fixture_name);
        assert_eq!(ours.filtersets, theirs.filtersets, "{dir}");
        assert_eq!(ours.modulesets, theirs.modulesets, "{dir}");
        for (name, rs) in ours.rulesets.iter_mut() {
            let export = &theirs.rulesets[name];
            let native: &[&str] = match name.as_str() {
                "spdc.network" => &["spdc_net_file_br0_cfg"],
                "spdc.kernel" => &["spdc_kernel_sysfs_thp"],
                "spdc.svc.db.cnf" => &["spdc_svc_db_cnf_file_db", "spdc_svc_db_cnf_file_sm"],
                _ => &[],
            };
            for var in rs
                .variables
                .iter()
                .filter(|v| native.contains(&v.name.as_str()))
            {
                let ours = var.value.as_json();
                match export.variables.iter().find(|v| v.name == var.name) {
                    // Added: nothing to compare.
                    None => assert_eq!(var.name, "spdc_kernel_sysfs_thp"),
                    // Changed content source only.
                    Some(e) => {
                        let theirs = e.value.as_json();
                        assert!(
                            ours.get("fmt").is_none() && ours["template"].is_string(),
                            "{}",
                            var.name
                        );
                        for k in ["mode", "uid", "gid"] {
                            assert_eq!(ours[k], theirs[k], "{} {k}", var.name);
                        }
                        let path = |v: &Value| {
                            v["path"]
                                .as_str()
                                .unwrap()
                                .replace("%%ENV:SERVICES_SVC_NAME%%", "{{svc}}")
                                .replace("%%ENV:POD%%", "{{item.name}}")
                        };
                        assert_eq!(path(&ours), path(&theirs), "{}", var.name);
                    }
                }
            }
            rs.variables.retain(|v| !native.contains(&v.name.as_str()));
            let mut export = export.clone();
            export
                .variables
                .retain(|v| !native.contains(&v.name.as_str()));
            assert_eq!(*rs, export, "{dir}: ruleset {name}");
        }
        assert_eq!(
            ours.rulesets.keys().collect::<Vec<_>>().len(),
            theirs.rulesets.len(),
            "{dir}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests: random bundles through both formats.

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9 ._-]{0,12}",
        // Strings that look like JSON or TOML.
        Just("33".to_string()),
        Just("\"quoted\"".to_string()),
        Just("{\"a\": null}".to_string()),
        Just("[1, 2]".to_string()),
        Just("true".to_string()),
        Just(" 7 ".to_string()),
        Just("a = 1".to_string()),
        Just("'''\n\"\"\"\\".to_string()),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ((i64::MAX as u64 + 1)..=u64::MAX).prop_map(Value::from),
        // Decimal floats that parse back exactly.
        (-1_000_000i64..1_000_000, 0u32..4)
            .prop_map(|(m, k)| Value::from(m as f64 / 10f64.powi(k as i32))),
        arb_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((arb_text(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn arb_value() -> impl Strategy<Value = VarValue> {
    prop_oneof![
        arb_json().prop_map(VarValue::Json),
        arb_text().prop_map(|s| VarValue::from_text(&s)),
    ]
}

fn arb_variable() -> impl Strategy<Value = Variable> {
    (
        arb_text(),
        prop_oneof![
            Just("raw".to_string()),
            Just("file".to_string()),
            arb_text()
        ],
        arb_value(),
        proptest::option::of(any::<i64>()),
        proptest::option::of(arb_text()),
        proptest::option::of(arb_text()),
    )
        .prop_map(|(name, class, value, id, author, updated)| Variable {
            name,
            class,
            value,
            id,
            author,
            updated,
        })
}

fn arb_meta() -> impl Strategy<Value = Meta> {
    (
        proptest::option::of(any::<i64>()),
        proptest::collection::vec(arb_text(), 0..3),
        proptest::collection::vec(arb_text(), 0..3),
    )
        .prop_map(|(id, publications, responsibles)| Meta {
            id,
            publications,
            responsibles,
        })
}

type RawRuleset = (String, bool, bool, usize, Vec<usize>, Vec<Variable>, Meta);
type RawFilter = (
    bool,
    usize,
    usize,
    i64,
    String,
    String,
    usize,
    String,
    Option<i64>,
);
type RawModuleset = (String, Vec<(String, bool)>, Vec<usize>, Vec<usize>, Meta);

fn ops<T: Copy>(all: &[T], i: usize) -> T {
    all[i % all.len()]
}

/// Builds a consistent bundle: references point to earlier objects only, so nothing loops.
fn build(
    filtersets: Vec<(String, bool, Option<i64>, Vec<RawFilter>)>,
    rulesets: Vec<RawRuleset>,
    modulesets: Vec<RawModuleset>,
) -> Bundle {
    let logic = [
        LogicalOp::And,
        LogicalOp::Or,
        LogicalOp::AndNot,
        LogicalOp::OrNot,
    ];
    let fops = [
        FilterOp::Eq,
        FilterOp::Ne,
        FilterOp::Like,
        FilterOp::NotLike,
        FilterOp::Lt,
        FilterOp::Le,
        FilterOp::Gt,
        FilterOp::Ge,
        FilterOp::In,
        FilterOp::NotIn,
    ];
    let mut b = Bundle::default();
    let unique = |name: String, i: usize| format!("{name}#{i}");
    let fs_names: Vec<String> = filtersets
        .iter()
        .enumerate()
        .map(|(i, f)| unique(f.0.clone(), i))
        .collect();
    for (i, (_, stats, id, filters)) in filtersets.into_iter().enumerate() {
        let filters = filters
            .into_iter()
            .map(
                |(nested, l, child, order, table, field, op, value, fid)| FilterEntry {
                    logical_op: ops(&logic, l),
                    order,
                    test: if nested && i > 0 {
                        FilterTest::Filterset(fs_names[child % i].clone())
                    } else {
                        FilterTest::Filter(Filter {
                            table,
                            field,
                            op: ops(&fops, op),
                            value,
                            id: fid,
                        })
                    },
                },
            )
            .collect();
        b.filtersets.insert(
            fs_names[i].clone(),
            Filterset {
                name: fs_names[i].clone(),
                stats,
                id,
                filters,
            },
        );
    }
    let rs_names: Vec<String> = rulesets
        .iter()
        .enumerate()
        .map(|(i, r)| unique(r.0.clone(), i))
        .collect();
    for (i, (_, contextual, public, fs, children, variables, meta)) in
        rulesets.into_iter().enumerate()
    {
        let contextual = contextual && !fs_names.is_empty();
        let filterset = (contextual || (fs % 3 == 0 && !fs_names.is_empty()))
            .then(|| fs_names[fs % fs_names.len().max(1)].clone());
        let children = if i == 0 {
            vec![]
        } else {
            children
                .into_iter()
                .map(|c| rs_names[c % i].clone())
                .collect()
        };
        b.rulesets.insert(
            rs_names[i].clone(),
            Ruleset {
                name: rs_names[i].clone(),
                kind: if contextual {
                    RulesetType::Contextual
                } else {
                    RulesetType::Explicit
                },
                filterset,
                public,
                children,
                variables,
                meta,
            },
        );
    }
    let ms_names: Vec<String> = modulesets
        .iter()
        .enumerate()
        .map(|(i, m)| unique(m.0.clone(), i))
        .collect();
    for (i, (_, modules, children, rulesets, meta)) in modulesets.into_iter().enumerate() {
        let children = if i == 0 {
            vec![]
        } else {
            children
                .into_iter()
                .map(|c| ms_names[c % i].clone())
                .collect()
        };
        let rulesets = if rs_names.is_empty() {
            vec![]
        } else {
            rulesets
                .into_iter()
                .map(|r| rs_names[r % rs_names.len()].clone())
                .collect()
        };
        b.modulesets.insert(
            ms_names[i].clone(),
            Moduleset {
                name: ms_names[i].clone(),
                modules: modules
                    .into_iter()
                    .map(|(name, autofix)| ModuleRef { name, autofix })
                    .collect(),
                children,
                rulesets,
                meta,
            },
        );
    }
    b
}

fn arb_bundle() -> impl Strategy<Value = Bundle> {
    let filter = (
        any::<bool>(),
        any::<usize>(),
        any::<usize>(),
        any::<i64>(),
        arb_text(),
        arb_text(),
        any::<usize>(),
        arb_text(),
        proptest::option::of(any::<i64>()),
    );
    let filtersets = proptest::collection::vec(
        (
            arb_text(),
            any::<bool>(),
            proptest::option::of(any::<i64>()),
            proptest::collection::vec(filter, 0..4),
        ),
        0..4,
    );
    let rulesets = proptest::collection::vec(
        (
            arb_text(),
            any::<bool>(),
            any::<bool>(),
            any::<usize>(),
            proptest::collection::vec(any::<usize>(), 0..3),
            proptest::collection::vec(arb_variable(), 0..4),
            arb_meta(),
        ),
        0..5,
    );
    let modulesets = proptest::collection::vec(
        (
            arb_text(),
            proptest::collection::vec((arb_text(), any::<bool>()), 0..3),
            proptest::collection::vec(any::<usize>(), 0..3),
            proptest::collection::vec(any::<usize>(), 0..3),
            arb_meta(),
        ),
        0..4,
    );
    (filtersets, rulesets, modulesets).prop_map(|(f, r, m)| build(f, r, m))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_bundles_survive_toml(b in arb_bundle()) {
        prop_assert!(b.validate().is_ok());
        let text = to_toml_string(&b);
        let back = from_toml_str(&text, "p.toml");
        prop_assert!(back.is_ok(), "{}\n{}", err_text(back), text);
        prop_assert_eq!(back.unwrap_or_default(), b);
    }

    #[test]
    fn random_bundles_survive_export(b in arb_bundle()) {
        let text = to_json(&b);
        let back = from_json(&text, "p.json");
        prop_assert!(back.is_ok(), "{}\n{}", err_text(back), text);
        prop_assert_eq!(back.unwrap_or_default(), b);
    }

    #[test]
    fn random_values_keep_their_text(v in arb_value()) {
        prop_assert_eq!(VarValue::from_text(&v.to_text()), v);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn random_bundles_survive_a_folder(b in arb_bundle()) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(write_dir(&b, dir.path()).is_ok());
        let back = load_dir(dir.path());
        prop_assert!(back.is_ok(), "{}", err_text(back));
        prop_assert_eq!(back.unwrap_or_default(), b);
    }
}

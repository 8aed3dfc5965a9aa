//! The shipped `spd-service` form against the OpenSVC collector form it translates
//! (`tests/fixtures/opensvc-spd/service-form.yaml`):
//!
//! - golden: the fixture inputs render byte for byte `service-form.expected.conf`;
//! - oracle: for random valid inputs, the output equals what the form's own JavaScript
//!   produces (ported line by line below, reading its template literals from the YAML file);
//! - shape: for random valid inputs, the output parses as an INI-style configuration with
//!   exactly the expected sections per pod and the expected keys per node;
//! - refusals: bad inputs are refused with a message naming the input.

use std::collections::BTreeMap;
use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tenet_templates::{Error, ErrorKind, FormOptions, Library};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/opensvc-spd")
}

fn read(name: &str) -> String {
    let p = fixtures().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn render(inputs: &Value) -> Result<String, Error> {
    let lib = Library::shared_builtin();
    let map = inputs.as_object().expect("inputs are an object").clone();
    lib.render_form("spd-service", &map, FormOptions::default())
        .map(|r| r.text)
}

/// Acceptance: the fixture inputs give the fixture configuration, byte for byte.
#[test]
fn golden_fixture_inputs_render_the_expected_configuration() {
    let inputs: Value = serde_json::from_str(&read("service-form.inputs.json")).unwrap();
    let want = read("service-form.expected.conf");
    let lib = Library::builtin();
    let out = lib
        .render_form(
            "spd-service",
            inputs.as_object().unwrap(),
            FormOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    if out.text != want {
        let line = out
            .text
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1);
        panic!(
            "output differs from service-form.expected.conf (first differing line: {line:?}; \
             lengths {} vs {})",
            out.text.len(),
            want.len()
        );
    }
    // The collector stores it under the service name, as the JS returned it.
    assert_eq!(out.service.as_deref(), Some("spdsvc01"));
}

/// The JS of the form, ported statement by statement, with its two template literals read
/// from the YAML file itself (so the oracle does not depend on this crate's template).
mod js {
    use regex::Regex;

    /// The text of `var NAME = String.raw\`...\`` in the YAML's literal block (8-space
    /// indentation removed).
    fn literal(yaml: &str, var: &str) -> String {
        let open = format!("var {var} = String.raw`");
        let start = yaml.find(&open).expect("template literal") + open.len();
        let end = start + yaml[start..].find('`').expect("closing backtick");
        yaml[start..end]
            .split('\n')
            .map(|l| {
                l.strip_prefix("        ")
                    .unwrap_or(l.trim_start_matches(' '))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub struct Data<'a> {
        pub npods: i64,
        pub svcname: &'a str,
        pub app: &'a str,
        pub nodes: &'a str,
        pub dism: &'a str,
        pub didb: &'a str,
        pub myrootpwd: &'a str,
    }

    /// `.replace(/^\t*/g, "")`: only the start of the string (no `m` flag).
    fn strip_leading_tabs(s: &str) -> String {
        s.trim_start_matches('\t').to_string()
    }

    pub fn mangle(yaml: &str, data: &Data) -> String {
        let fmt_header = literal(yaml, "fmt_header");
        let fmt_pod = literal(yaml, "fmt_pod");
        let ws = Regex::new(r"\s+").unwrap();
        let nodes: Vec<&str> = ws.split(data.nodes).collect();
        let nb_nodes = nodes.len() as i64;
        let mut ipsm = 33;
        let pods_per_node = data.npods / nb_nodes;
        let prinode = nodes[0];
        let disk0names = nodes
            .iter()
            .map(|n| format!("names@{n} = {}-{n}", data.svcname))
            .collect::<Vec<_>>()
            .join("\n");
        let mut buff = strip_leading_tabs(&fmt_header)
            .replace("__APP__", data.app)
            .replace("__NODES__", data.nodes)
            .replace("__SVCNAME__", data.svcname)
            .replace("__PRINODE__", prinode)
            .replace("__DISK0NAMES__", &disk0names);
        for pod in 1..=data.npods {
            let pod_padded = if pod > 9 {
                format!("{pod}")
            } else {
                format!("0{pod}")
            };
            let i = (pod - 1) / pods_per_node;
            let ipdb = ipsm + 1;
            let gw = i + 1;
            let node = nodes[i as usize];
            buff += &strip_leading_tabs(&fmt_pod)
                .replace("__NODE__", node)
                .replace("__SVCNAME__", data.svcname)
                .replace("__POD_PADDED__", &pod_padded)
                .replace("__POD__", &pod.to_string())
                .replace("__IPDB__", &ipdb.to_string())
                .replace("__IPSM__", &ipsm.to_string())
                .replace("__GW__", &gw.to_string())
                .replace("__MY_ROOT_PWD__", data.myrootpwd)
                .replace("__DIDB__", data.didb)
                .replace("__DISM__", data.dism);
            ipsm += 2;
        }
        buff
    }
}

#[test]
fn the_oracle_reproduces_the_fixture() {
    // The port is only a trustworthy oracle if it gives the fixture output too.
    let out = js::mangle(
        &read("service-form.yaml"),
        &js::Data {
            npods: 32,
            svcname: "spdsvc01",
            app: "RIVER_SPD",
            nodes: "spd01 spd02 spd03 spd04",
            dism: "tanji/spdc",
            didb: "mariadb",
            myrootpwd: "secret",
        },
    );
    assert_eq!(out, read("service-form.expected.conf"));
}

/// A parsed INI-style configuration: sections in order, each with its keys in order.
type Ini = Vec<(String, Vec<(String, String)>)>;

/// Parses OpenSVC's configuration syntax strictly: `[section]`, `key = value`, values
/// continued on lines starting with a tab, `#` comments, blank lines. Anything else, a key
/// outside a section, a duplicate section or a duplicate key in a section is an error.
fn parse_ini(text: &str) -> Result<Ini, String> {
    let mut ini: Ini = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(cont) = line.strip_prefix('\t') {
            let (_, keys) = ini
                .last_mut()
                .ok_or(format!("line {n}: continuation outside a section"))?;
            let (_, v) = keys
                .last_mut()
                .ok_or(format!("line {n}: continuation without a key"))?;
            v.push('\n');
            v.push_str(cont);
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if ini.iter().any(|(s, _)| s == name) {
                return Err(format!("line {n}: duplicate section [{name}]"));
            }
            ini.push((name.to_string(), Vec::new()));
            continue;
        }
        let (k, v) = line
            .split_once(" = ")
            .ok_or(format!("line {n}: not `key = value`: {line:?}"))?;
        let (section, keys) = ini
            .last_mut()
            .ok_or(format!("line {n}: key outside a section"))?;
        if keys.iter().any(|(kk, _)| kk == k) {
            return Err(format!("line {n}: duplicate key {k} in [{section}]"));
        }
        if k.is_empty() || k.contains(char::is_whitespace) {
            return Err(format!("line {n}: bad key {k:?}"));
        }
        keys.push((k.to_string(), v.to_string()));
    }
    Ok(ini)
}

#[derive(Debug, Clone)]
struct Case {
    npods: i64,
    nodes: Vec<String>,
    separators: Vec<String>,
    svcname: String,
    app: String,
    dism: String,
    didb: String,
    myrootpwd: String,
}

impl Case {
    fn nodes_text(&self) -> String {
        let mut s = self.nodes[0].clone();
        for (n, sep) in self.nodes[1..].iter().zip(&self.separators) {
            s.push_str(sep);
            s.push_str(n);
        }
        s
    }

    fn inputs(&self) -> Value {
        json!({
            "npods": self.npods, "svcname": self.svcname, "app": self.app,
            "nodes": self.nodes_text(), "dism": self.dism, "didb": self.didb,
            "myrootpwd": self.myrootpwd,
        })
    }
}

/// Valid inputs: 1 to 8 distinct nodes, a pod count that is a multiple of the node count
/// (up to 111), names from the inputs' patterns, 1 to 3 spaces between node names.
fn valid_case() -> impl Strategy<Value = Case> {
    (1usize..=8)
        .prop_flat_map(|k| {
            (
                proptest::collection::btree_set("[a-z][a-z0-9]{0,6}", k),
                1i64..=(111 / k as i64),
                proptest::collection::vec(" {1,3}", k - 1),
                "[a-z][a-z0-9_.-]{0,10}",
                "[A-Z][A-Z_]{0,10}",
                "[a-z][a-z0-9/:._-]{0,12}",
                "[a-z][a-z0-9/:._-]{0,12}",
                "[A-Za-z0-9!%&*+]{0,10}",
            )
        })
        .prop_map(
            |(nodes, m, separators, svcname, app, dism, didb, myrootpwd)| {
                let nodes: Vec<String> = nodes.into_iter().collect();
                Case {
                    npods: m * nodes.len() as i64,
                    nodes,
                    separators,
                    svcname,
                    app,
                    dism,
                    didb,
                    myrootpwd,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Acceptance: any node count dividing the pod count works, and the output is what the
    /// form's JavaScript gives for the same inputs.
    #[test]
    fn random_valid_inputs_render_what_the_javascript_renders(case in valid_case()) {
        let out = render(&case.inputs()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let nodes_text = case.nodes_text();
        let want = js::mangle(&read("service-form.yaml"), &js::Data {
            npods: case.npods,
            svcname: &case.svcname,
            app: &case.app,
            nodes: &nodes_text,
            dism: &case.dism,
            didb: &case.didb,
            myrootpwd: &case.myrootpwd,
        });
        prop_assert_eq!(out, want);
    }

    /// Acceptance: for random valid inputs the output parses as an INI-style configuration
    /// with exactly the expected sections per pod, and per node its disk name and its pods.
    #[test]
    fn random_valid_inputs_give_the_expected_sections(case in valid_case()) {
        let out = render(&case.inputs()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let ini = parse_ini(&out).map_err(TestCaseError::fail)?;
        let names: Vec<&str> = ini.iter().map(|(s, _)| s.as_str()).collect();
        let mut want: Vec<String> = ["DEFAULT", "disk#00", "fs#00", "subset#disk:cge", "subset#ip:cge"]
            .iter().map(|s| s.to_string()).collect();
        for p in 1..=case.npods {
            let pp = format!("{p:02}");
            for s in ["disk#", "fs#"] {
                want.push(format!("{s}{pp}"));
            }
            for s in ["smg", "sm"] {
                want.push(format!("ip#{pp}{s}"));
            }
            want.push(format!("container#{pp}sm"));
            for s in ["dbg", "db"] {
                want.push(format!("ip#{pp}{s}"));
            }
            want.push(format!("container#{pp}db"));
        }
        prop_assert_eq!(names, want.iter().map(String::as_str).collect::<Vec<_>>());

        let section = |name: &str| -> BTreeMap<String, String> {
            ini.iter().find(|(s, _)| s == name).map(|(_, k)| k.iter().cloned().collect()).unwrap_or_default()
        };
        let default = section("DEFAULT");
        prop_assert_eq!(default.get("nodes"), Some(&case.nodes_text()));
        prop_assert_eq!(default.get("flex_primary"), Some(&case.nodes[0]));
        // Per node: its disk name in disk#00, and exactly npods / nodes pods.
        let disk0 = section("disk#00");
        let mut pods_of: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for n in &case.nodes {
            let disk_name = format!("{}-{n}", case.svcname);
            prop_assert_eq!(disk0.get(&format!("names@{n}")), Some(&disk_name));
        }
        prop_assert_eq!(disk0.len(), 2 + case.nodes.len());
        let per_node = case.npods / case.nodes.len() as i64;
        for p in 1..=case.npods {
            let pp = format!("{p:02}");
            let owner = &case.nodes[((p - 1) / per_node) as usize];
            let gw = format!("10.0.0.{}", (p - 1) / per_node + 1);
            for s in ["disk#", "fs#", "ip#", "ip#", "container#", "ip#", "ip#", "container#"]
                .iter()
                .zip(["", "", "smg", "sm", "sm", "dbg", "db", "db"])
                .map(|(a, b)| format!("{a}{pp}{b}"))
            {
                let keys = section(&s);
                let disabled: Vec<String> = keys.keys().filter(|k| k.starts_with("disable@")).cloned().collect();
                prop_assert_eq!(disabled, vec![format!("disable@{owner}")], "[{}]", s);
                prop_assert_eq!(keys.get("disable").map(String::as_str), Some("true"));
            }
            pods_of.entry(owner.clone()).or_default().push(p);
            let sm = section(&format!("ip#{pp}sm"));
            let ipsm = format!("10.0.0.{}", 33 + 2 * (p - 1));
            prop_assert_eq!(sm.get("ipname"), Some(&ipsm));
            prop_assert_eq!(sm.get("gateway"), Some(&gw));
            let db = section(&format!("ip#{pp}db"));
            let ipdb = format!("10.0.0.{}", 34 + 2 * (p - 1));
            prop_assert_eq!(db.get("ipname"), Some(&ipdb));
        }
        for n in &case.nodes {
            prop_assert_eq!(pods_of.get(n).map(Vec::len), Some(per_node as usize), "node {}", n);
        }
    }

    /// Pod counts that are not a multiple of the node count are refused, naming both.
    #[test]
    fn non_divisible_pod_counts_are_refused(k in 2i64..=8, npods in 1i64..=111) {
        prop_assume!(npods % k != 0);
        let nodes: Vec<String> = (1..=k).map(|i| format!("n{i}")).collect();
        let e = render(&json!({
            "npods": npods, "svcname": "s", "app": "A", "nodes": nodes.join(" "),
            "dism": "i", "didb": "j",
        })).unwrap_err();
        prop_assert_eq!(e.kind(), ErrorKind::BadInput);
        let msg = e.to_string();
        prop_assert!(msg.contains(&format!("{npods} pods")) && msg.contains(&format!("{k} nodes")), "{}", msg);
    }
}

fn fixture_inputs() -> Map<String, Value> {
    serde_json::from_str::<Value>(&read("service-form.inputs.json"))
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

fn refusal(change: impl FnOnce(&mut Map<String, Value>)) -> String {
    let mut inputs = fixture_inputs();
    change(&mut inputs);
    let e = render(&Value::Object(inputs)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    e.to_string()
}

/// Acceptance: bad inputs give a clear message naming the input.
#[test]
fn bad_inputs_are_refused_with_a_message_naming_the_input() {
    type Change = Box<dyn FnOnce(&mut Map<String, Value>)>;
    let cases: Vec<(Change, &[&str])> = vec![
        (
            Box::new(|m| {
                m.remove("nodes");
            }),
            &["input nodes", "missing", "mandatory"],
        ),
        (
            Box::new(|m| {
                m.insert("npods".into(), json!("thirty"));
            }),
            &["input npods", "expected an integer", "thirty"],
        ),
        (
            Box::new(|m| {
                m.insert("npods".into(), json!(3.5));
            }),
            &["input npods", "expected an integer"],
        ),
        (
            Box::new(|m| {
                m.insert("npods".into(), json!(30));
            }),
            &["30 pods", "4 nodes", "multiple"],
        ),
        (
            Box::new(|m| {
                m.insert("npods".into(), json!(112));
                m.insert("nodes".into(), json!("a"));
            }),
            &["input npods", "112", "maximum, 111"],
        ),
        (
            Box::new(|m| {
                m.insert("npods".into(), json!(0));
            }),
            &["input npods", "minimum"],
        ),
        (
            Box::new(|m| {
                m.insert("nodes".into(), json!(" spd01 spd02"));
            }),
            &["input nodes", "node names separated by spaces"],
        ),
        (
            Box::new(|m| {
                m.insert("nodes".into(), json!("spd01 spd01"));
            }),
            &["names a node twice"],
        ),
        (
            Box::new(|m| {
                m.insert("svcname".into(), json!(""));
            }),
            &["input svcname", "must not be empty"],
        ),
        (
            Box::new(|m| {
                m.insert("npod".into(), json!(4));
            }),
            &["input npod", "unknown input", "npods"],
        ),
        (
            Box::new(|m| {
                m.insert("app".into(), json!(7));
            }),
            &["input app", "expected a string", "7"],
        ),
    ];
    for (change, needles) in cases {
        let msg = refusal(change);
        for n in needles {
            assert!(msg.contains(n), "{msg:?} does not mention {n:?}");
        }
        assert!(msg.starts_with("form spd-service: "), "{msg}");
    }
    // Several problems are reported together.
    let msg = refusal(|m| {
        m.remove("app");
        m.insert("npods".into(), json!("x"));
    });
    assert!(
        msg.contains("input npods") && msg.contains("input app"),
        "{msg}"
    );
}

#[test]
fn optional_input_defaults_and_mandatory_defaults_on_request() {
    // myrootpwd is optional: absent, it is empty.
    let out = render(&json!({
        "npods": 1, "svcname": "s", "app": "A", "nodes": "n1", "dism": "i", "didb": "j",
    }))
    .unwrap();
    assert!(out.contains("\t-e MYSQL_ROOT_PASSWORD=\n"), "{out}");
    // Mandatory inputs are not defaulted unless asked.
    let lib = Library::builtin();
    let e = lib
        .render_form("spd-service", &Map::new(), FormOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("input npods: missing"), "{e}");
    let out = lib
        .render_form(
            "spd-service",
            &Map::new(),
            FormOptions { use_defaults: true },
        )
        .unwrap();
    let mut want = fixture_inputs();
    want.insert("myrootpwd".into(), json!(""));
    assert_eq!(out.text, render(&Value::Object(want)).unwrap());
}

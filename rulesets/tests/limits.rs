//! Issue 12 items 3 and 12: hostile bundles. A 10,000-deep filterset chain is refused at load
//! in both formats with an error naming the filterset (it used to overflow the stack of every
//! resolution), and loading stays linear in the number of objects.

use tenet_rulesets::{Bundle, Error, export, toml_format};

/// `n` filtersets `{prefix}0` → `{prefix}1` → ..., the last matching every node.
fn chain_toml(prefix: &str, n: usize) -> String {
    let mut doc = String::new();
    for i in 0..n {
        doc.push_str(&format!("[[filterset]]\nname = \"{prefix}{i}\"\n"));
        if i + 1 < n {
            doc.push_str(&format!(
                "filter = [{{ filterset = \"{prefix}{}\" }}]\n",
                i + 1
            ));
        } else {
            doc.push_str("filter = [{ table = \"nodes\", field = \"nodename\", op = \"LIKE\", value = \"%\" }]\n");
        }
    }
    doc
}

fn assert_names_the_chain(e: &Error, file: &str) {
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("{file}:"))
            && msg.ends_with(
                "filterset deep0: nesting depth 10000 exceeds the limit of 100: \
                 deep0 -> deep1 -> deep2 -> ... (9995 more) -> deep9998 -> deep9999"
            ),
        "{msg}"
    );
}

#[test]
fn a_10k_filterset_chain_is_refused_naming_it() {
    let toml = chain_toml("deep", 10_000);
    let e = toml_format::from_toml_str(&toml, "chain.toml").unwrap_err();
    assert_names_the_chain(&e, "chain.toml");

    // The same chain as an OpenSVC export (built without validation, then loaded).
    let mut b = Bundle::default();
    let ok = toml_format::from_toml_str(&chain_toml("deep", 100), "ok.toml").unwrap();
    let template = ok.filtersets["deep0"].clone();
    let last = ok.filtersets["deep99"].clone();
    for i in 0..10_000 {
        let mut f = if i + 1 < 10_000 {
            let mut f = template.clone();
            f.filters[0].test = tenet_rulesets::FilterTest::Filterset(format!("deep{}", i + 1));
            f
        } else {
            last.clone()
        };
        f.name = format!("deep{i}");
        b.filtersets.insert(f.name.clone(), f);
    }
    let json = export::to_json(&b);
    let e = export::from_json(&json, "chain.json").unwrap_err();
    assert_names_the_chain(&e, "chain.json");
}

/// Deeply nested values cannot crash the loader either (the TOML and JSON parsers bound
/// nesting): an error, not a stack overflow.
#[test]
fn deeply_nested_values_are_errors() {
    let depth = 100_000;
    let toml = format!(
        "[[ruleset]]\nname = \"r\"\n[[ruleset.variable]]\nname = \"v\"\nvalue = {}1{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let e = toml_format::from_toml_str(&toml, "deep.toml").unwrap_err();
    assert!(e.to_string().starts_with("deep.toml:"), "{e}");
    let json = format!(
        r#"{{"rulesets": [{{"ruleset_name": "r", "ruleset_type": "explicit", "variables": [{{"var_name": "v", "var_value": {}1{}}}]}}]}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let e = export::from_json(&json, "deep.json").unwrap_err();
    assert!(e.to_string().starts_with("deep.json:"), "{e}");
}

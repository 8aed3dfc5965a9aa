//! Every TOML example of `docs/account-classes.md` is a valid policy whose variables load as
//! rules of their class: the documentation cannot drift from what the classes accept.

use std::path::Path;

use tenet_modules::class::RuleContext;
use tenet_modules::classes;

#[test]
fn the_documented_examples_load() {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/account-classes.md");
    let text = std::fs::read_to_string(&doc).unwrap();
    let mut blocks = 0;
    let mut variables = 0;
    for block in text.split("```toml").skip(1) {
        let body = block.split("```").next().unwrap();
        blocks += 1;
        // The examples are variables of a ruleset: give them one.
        let policy = format!("[[ruleset]]\nname = \"docs\"\n{body}");
        let bundle = tenet_rulesets::toml_format::from_toml_str(&policy, "docs/account-classes.md")
            .unwrap_or_else(|e| panic!("example {blocks} is not a valid policy: {e}\n{body}"));
        for v in &bundle.rulesets["docs"].variables {
            let class = classes::find(&v.class)
                .unwrap_or_else(|| panic!("{}: unknown class {}", v.name, v.class));
            let rules = (class.load)(&v.value.as_json(), &RuleContext::default())
                .unwrap_or_else(|e| panic!("{} (class {}): {e}", v.name, v.class));
            assert!(!rules.is_empty(), "{}", v.name);
            variables += 1;
        }
    }
    assert!(
        blocks >= 5 && variables >= 6,
        "{blocks} blocks, {variables} variables"
    );
}

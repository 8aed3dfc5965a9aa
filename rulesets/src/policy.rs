//! Resolution: from a [`Bundle`] and the node's [`NodeFacts`] to the [`Policy`] the node runs.

use crate::env::{env_name, env_value};
use crate::error::{Error, Result};
use crate::filter;
use crate::model::*;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};

/// What to resolve: which modulesets, and for which service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Modulesets to run (expanded with their children). `None` = every root moduleset of the
    /// bundle (a moduleset that is no other moduleset's child).
    pub modulesets: Option<Vec<String>>,
    /// Rulesets explicitly attached to the node (or service), visible to every module.
    pub rulesets: Vec<String>,
    /// The service the run is for (exports `OSVC_COMP_SERVICES_SVCNAME` and friends).
    pub service: Option<String>,
}

/// A resolved policy: everything one node needs for a run, with a content hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Selected modulesets, expanded depth-first (parent before children), each once.
    pub modulesets: Vec<PolicyModuleset>,
    /// Modules to run, deduplicated by name, in order of first appearance (the engine sorts
    /// script modules by their NN prefix).
    pub modules: Vec<PolicyModule>,
    /// Rulesets that apply, each with its variables merged from its nested rulesets.
    pub rulesets: Vec<PolicyRuleset>,
    /// The facts the policy was resolved against.
    pub facts: NodeFacts,
    /// The service the policy was resolved for.
    pub service: Option<String>,
    /// Non-fatal findings (a variable defined twice, a module in several modulesets, ...).
    pub warnings: Vec<String>,
    /// Hex SHA-256 of the canonical JSON of `modulesets`, `modules`, `rulesets` and `service`.
    pub hash: String,
}

/// One moduleset of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyModuleset {
    /// Name.
    pub name: String,
    /// Parent moduleset in the expansion, if any.
    pub parent: Option<String>,
    /// Depth in the expansion (0 for a selected root).
    pub depth: usize,
    /// Its own modules.
    pub modules: Vec<ModuleRef>,
    /// Rulesets attached to it.
    pub rulesets: Vec<String>,
}

/// One module of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyModule {
    /// Name.
    pub name: String,
    /// OR of the autofix flags of every occurrence.
    pub autofix: bool,
    /// Every moduleset listing it (the first one is the one reported).
    pub modulesets: Vec<String>,
}

/// One applying ruleset of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRuleset {
    /// Name.
    pub name: String,
    /// Why it applies, in OpenSVC's words: `explicit attachment`, `explicit attachment via
    /// moduleset`, `<filterset name>`, `<filterset name> (matching non-public contextual
    /// ruleset shown via moduleset)`.
    pub reason: String,
    /// When attached through a moduleset: that moduleset; its variables are then visible only
    /// to that moduleset's modules.
    pub moduleset: Option<String>,
    /// Variables of the ruleset and of its applying nested rulesets, merged by name (the
    /// deepest definition wins; at equal depth, the later child wins, with a warning).
    pub variables: Vec<Variable>,
}

/// The `reason` of a ruleset attached to the node or service.
pub const REASON_EXPLICIT: &str = "explicit attachment";
/// The `reason` of an explicit ruleset attached through a moduleset.
pub const REASON_EXPLICIT_VIA_MODULESET: &str = "explicit attachment via moduleset";
/// Appended to the filterset name in the `reason` of a contextual ruleset attached through a
/// moduleset.
pub const REASON_CONTEXTUAL_VIA_MODULESET: &str =
    "(matching non-public contextual ruleset shown via moduleset)";

/// Filterset results, each filterset evaluated once per resolution (nested ones included).
struct Matcher<'a> {
    eval: filter::Evaluator<'a>,
}

impl<'a> Matcher<'a> {
    fn matches(&mut self, filterset: &str) -> Result<bool> {
        self.eval.matches(filterset)
    }

    /// Whether a contextual ruleset's filterset matches (no filterset: never).
    fn ruleset_matches(&mut self, rs: &'a Ruleset) -> Result<bool> {
        match &rs.filterset {
            Some(fs) => self.matches(fs),
            None => Ok(false),
        }
    }
}

fn ruleset<'a>(bundle: &'a Bundle, name: &str) -> Result<&'a Ruleset> {
    bundle.rulesets.get(name).ok_or_else(|| Error::NotFound {
        kind: "ruleset",
        name: name.to_string(),
    })
}

/// Modulesets that are no other moduleset's child, in bundle order.
pub fn root_modulesets(bundle: &Bundle) -> Vec<String> {
    let children: HashSet<&str> = bundle
        .modulesets
        .values()
        .flat_map(|m| m.children.iter().map(String::as_str))
        .collect();
    bundle
        .modulesets
        .keys()
        .filter(|n| !children.contains(n.as_str()))
        .cloned()
        .collect()
}

impl Policy {
    /// Resolves what the node runs: the selected modulesets expanded depth-first, their modules
    /// deduplicated, and every applying ruleset with its nested rulesets' variables merged (see
    /// `rulesets/README.md`, "Resolution"). Errors when a selected or referenced moduleset,
    /// ruleset or filterset does not exist, or filterset nesting loops.
    pub fn resolve(bundle: &Bundle, facts: &NodeFacts, sel: &Selection) -> Result<Policy> {
        let mut warnings = Vec::new();
        let roots = match &sel.modulesets {
            Some(names) => names.clone(),
            None => root_modulesets(bundle),
        };
        let mut modulesets = Vec::new();
        let mut seen = HashSet::new();
        for root in &roots {
            expand_moduleset(bundle, root, &mut seen, &mut modulesets)?;
        }

        let mut modules: IndexMap<String, PolicyModule> = IndexMap::new();
        for ms in &modulesets {
            for m in &ms.modules {
                let entry = modules
                    .entry(m.name.clone())
                    .or_insert_with(|| PolicyModule {
                        name: m.name.clone(),
                        autofix: false,
                        modulesets: Vec::new(),
                    });
                entry.autofix |= m.autofix;
                // `modulesets` holds each moduleset once and is walked in order, so only the
                // last one can be this one (a module listed twice in it): no scan, which was
                // quadratic for a module shared by many modulesets.
                if entry.modulesets.last() != Some(&ms.name) {
                    entry.modulesets.push(ms.name.clone());
                }
            }
        }
        for m in modules.values().filter(|m| m.modulesets.len() > 1) {
            warnings.push(format!(
                "module {} is listed in several modulesets ({}): autofix is {} (set if any sets it) \
                 and the rulesets of all of them are visible to it",
                m.name,
                m.modulesets.join(", "),
                m.autofix
            ));
        }

        let mut matcher = Matcher {
            eval: filter::Evaluator::new(bundle, facts),
        };
        // (name, moduleset binding, reason), in order, each binding once.
        let mut bindings: Vec<(String, Option<String>, String)> = Vec::new();
        let mut bound: HashSet<(String, Option<String>)> = HashSet::new();
        let mut bind = |name: &str, ms: Option<&str>, reason: String| {
            let key = (name.to_string(), ms.map(str::to_string));
            if bound.insert(key.clone()) {
                bindings.push((key.0, key.1, reason));
            }
        };
        for name in &sel.rulesets {
            ruleset(bundle, name)?;
            bind(name, None, REASON_EXPLICIT.to_string());
        }
        for rs in bundle.rulesets.values() {
            if rs.public && rs.kind == RulesetType::Contextual && matcher.ruleset_matches(rs)? {
                bind(&rs.name, None, rs.filterset.clone().unwrap_or_default());
            }
        }
        for ms in &modulesets {
            for name in &ms.rulesets {
                let rs = ruleset(bundle, name)?;
                match rs.kind {
                    RulesetType::Explicit => bind(
                        name,
                        Some(&ms.name),
                        REASON_EXPLICIT_VIA_MODULESET.to_string(),
                    ),
                    RulesetType::Contextual => {
                        if matcher.ruleset_matches(rs)? {
                            let fs = rs.filterset.clone().unwrap_or_default();
                            bind(
                                name,
                                Some(&ms.name),
                                format!("{fs} {REASON_CONTEXTUAL_VIA_MODULESET}"),
                            );
                        }
                    }
                }
            }
        }

        let mut rulesets = Vec::with_capacity(bindings.len());
        for (name, moduleset, reason) in bindings {
            let variables = merged_variables(bundle, &name, &mut matcher, &mut warnings)?;
            rulesets.push(PolicyRuleset {
                name,
                reason,
                moduleset,
                variables,
            });
        }

        let mut seen_warnings = HashSet::new();
        warnings.retain(|w| seen_warnings.insert(w.clone()));
        let modules: Vec<PolicyModule> = modules.into_values().collect();
        let hash = content_hash(&modulesets, &modules, &rulesets, &sel.service);
        Ok(Policy {
            modulesets,
            modules,
            rulesets,
            facts: facts.clone(),
            service: sel.service.clone(),
            warnings,
            hash,
        })
    }

    /// A module of the policy, by name.
    pub fn module(&self, name: &str) -> Option<&PolicyModule> {
        self.modules.iter().find(|m| m.name == name)
    }

    /// The rulesets whose variables a module sees, in policy order: those not bound to a
    /// moduleset, and those bound to one of the module's modulesets.
    pub fn visible_rulesets<'a>(
        &'a self,
        module: &str,
    ) -> impl Iterator<Item = &'a PolicyRuleset> + 'a {
        let owners: Vec<String> = self
            .module(module)
            .map(|m| m.modulesets.clone())
            .unwrap_or_default();
        self.rulesets.iter().filter(move |r| match &r.moduleset {
            None => true,
            Some(ms) => owners.contains(ms),
        })
    }

    /// The environment of a module, sorted by name: node facts as `OSVC_COMP_NODES_<FIELD>`;
    /// for a service run `OSVC_COMP_SERVICES_SVCNAME`, `OSVC_COMP_SERVICES_SVC_NAME`,
    /// `OSVC_COMP_SVC_NAME` and the service facts as `OSVC_COMP_SERVICES_<FIELD>`; then the
    /// variables (every class, `raw` included) of every visible ruleset, a later ruleset
    /// overriding an earlier one (and any fact) with the same environment name.
    pub fn module_env(&self, module: &str) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &self.facts.node {
            env.insert(env_name(&format!("nodes.{k}")), v.clone());
        }
        if let Some(svc) = &self.facts.service {
            for (k, v) in svc {
                env.insert(env_name(&format!("services.{k}")), v.clone());
            }
        }
        if let Some(name) = &self.service {
            for key in [
                "OSVC_COMP_SERVICES_SVCNAME",
                "OSVC_COMP_SERVICES_SVC_NAME",
                "OSVC_COMP_SVC_NAME",
            ] {
                env.insert(key.to_string(), name.clone());
            }
        }
        for rs in self.visible_rulesets(module) {
            for var in &rs.variables {
                env.insert(env_name(&var.name), env_value(&var.value));
            }
        }
        env.into_iter().collect()
    }

    /// The data templated rules of a module render with (`file`'s `template`, `path` and
    /// `foreach`): every variable visible to the module under its name, its value as JSON
    /// (`raw` included; a later ruleset overrides an earlier one, as in [`Policy::module_env`]);
    /// `nodes`, the node facts; for a service run, `services` (the service facts with
    /// `svcname` and `svc_name`) and `svc`, the service name. These reserved names win over
    /// variables of the same name.
    pub fn module_data(&self, module: &str) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        let mut data = serde_json::Map::new();
        for rs in self.visible_rulesets(module) {
            for var in &rs.variables {
                data.insert(var.name.clone(), var.value.as_json());
            }
        }
        let text = |m: &IndexMap<String, String>| -> serde_json::Map<String, Value> {
            m.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect()
        };
        data.insert("nodes".into(), Value::Object(text(&self.facts.node)));
        let mut services = self.facts.service.as_ref().map(text);
        if let Some(name) = &self.service {
            let s = services.get_or_insert_with(serde_json::Map::new);
            s.insert("svcname".into(), Value::String(name.clone()));
            s.insert("svc_name".into(), Value::String(name.clone()));
            data.insert("svc".into(), Value::String(name.clone()));
        }
        if let Some(s) = services {
            data.insert("services".into(), Value::Object(s));
        }
        data
    }

    /// The ruleset backing an auto-module: the visible ruleset named like the module, preferring
    /// one bound through the module's moduleset over a node-level one.
    pub fn auto_module_ruleset(&self, module: &str) -> Option<&PolicyRuleset> {
        let mut candidates: Vec<&PolicyRuleset> = self
            .visible_rulesets(module)
            .filter(|r| r.name == module)
            .collect();
        candidates.sort_by_key(|r| r.moduleset.is_none());
        candidates.into_iter().next()
    }
}

/// Appends `name` and its descendants, depth-first, parent first, skipping any already there.
fn expand_moduleset(
    bundle: &Bundle,
    root: &str,
    seen: &mut HashSet<String>,
    out: &mut Vec<PolicyModuleset>,
) -> Result<()> {
    // Explicit stack of (name, parent, depth) so deep nesting cannot overflow.
    let mut stack: Vec<(String, Option<String>, usize)> = vec![(root.to_string(), None, 0)];
    while let Some((name, parent, depth)) = stack.pop() {
        let ms = bundle
            .modulesets
            .get(&name)
            .ok_or_else(|| Error::NotFound {
                kind: "moduleset",
                name: name.clone(),
            })?;
        if !seen.insert(name.clone()) {
            continue;
        }
        for child in ms.children.iter().rev() {
            stack.push((child.clone(), Some(name.clone()), depth + 1));
        }
        out.push(PolicyModuleset {
            name,
            parent,
            depth,
            modules: ms.modules.clone(),
            rulesets: ms.rulesets.clone(),
        });
    }
    Ok(())
}

/// The variables of `root` and of its applying nested rulesets. Each nested ruleset is visited
/// once (the first time the depth-first walk reaches it), which also stops nesting cycles.
fn merged_variables<'a>(
    bundle: &'a Bundle,
    root: &str,
    matcher: &mut Matcher<'a>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Variable>> {
    struct Def<'b> {
        depth: usize,
        ruleset: &'b str,
        var: Variable,
    }
    let mut merged: IndexMap<&'a str, Def<'a>> = IndexMap::new();
    let mut visited: HashSet<&'a str> = HashSet::new();
    let root_rs = ruleset(bundle, root)?;
    let mut stack: Vec<(&'a Ruleset, usize)> = vec![(root_rs, 0)];
    while let Some((rs, depth)) = stack.pop() {
        if !visited.insert(rs.name.as_str()) {
            continue;
        }
        for var in &rs.variables {
            let def = Def {
                depth,
                ruleset: &rs.name,
                var: var.clone(),
            };
            match merged.get_mut(var.name.as_str()) {
                None => {
                    merged.insert(&var.name, def);
                }
                Some(prev) if depth > prev.depth => *prev = def,
                Some(prev) if depth == prev.depth => {
                    warnings.push(format!(
                        "ruleset {root}: variable {} is defined at the same nesting depth by \
                         rulesets {} and {}; the latter wins",
                        var.name, prev.ruleset, rs.name
                    ));
                    *prev = def;
                }
                Some(_) => {}
            }
        }
        let mut included = Vec::new();
        for child in &rs.children {
            let c = ruleset(bundle, child)?;
            let applies = match c.kind {
                RulesetType::Explicit => true,
                RulesetType::Contextual => matcher.ruleset_matches(c)?,
            };
            if applies {
                included.push((c, depth + 1));
            }
        }
        // Reversed onto the stack so children are walked in their listed order.
        stack.extend(included.into_iter().rev());
    }
    Ok(merged.into_values().map(|d| d.var).collect())
}

/// Hex SHA-256 of the canonical JSON (object keys sorted, no spaces) of what the node runs.
fn content_hash(
    modulesets: &[PolicyModuleset],
    modules: &[PolicyModule],
    rulesets: &[PolicyRuleset],
    service: &Option<String>,
) -> String {
    let value = serde_json::to_value((modulesets, modules, rulesets, service)).unwrap_or_default();
    let mut text = String::new();
    canonical_json(&value, &mut text);
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn canonical_json(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value as J;
    match v {
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        J::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&J::String(k.clone()).to_string());
                out.push(':');
                canonical_json(&map[k], out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toml_format::from_toml_str;

    const BUNDLE: &str = r#"
[[filterset]]
name = "linux"
[[filterset.filter]]
table = "nodes"
field = "os_name"
op = "="
value = "Linux"

[[ruleset]]
name = "top"
rulesets = ["a", "b", "ctx"]
[[ruleset.variable]]
name = "x"
value = "top"
[[ruleset.variable]]
name = "y"
value = "top"

[[ruleset]]
name = "a"
rulesets = ["deep"]
[[ruleset.variable]]
name = "y"
value = "a"
[[ruleset.variable]]
name = "z"
value = "a"

[[ruleset]]
name = "b"
[[ruleset.variable]]
name = "z"
value = "b"

[[ruleset]]
name = "deep"
[[ruleset.variable]]
name = "x"
value = "deep"

[[ruleset]]
name = "ctx"
type = "contextual"
filterset = "linux"
[[ruleset.variable]]
name = "linux_only"
value = 1

[[ruleset]]
name = "public linux"
type = "contextual"
public = true
filterset = "linux"
[[ruleset.variable]]
name = "p"
value = { a = "é" }

[[ruleset]]
name = "m1"
[[ruleset.variable]]
name = "m1_var"
value = "m1"

[[moduleset]]
name = "parent"
modulesets = ["m1", "m2"]

[[moduleset]]
name = "m1"
rulesets = ["m1"]
modules = [{ name = "m1" }, { name = "shared" }]

[[moduleset]]
name = "m2"
modules = [{ name = "m2" }, { name = "shared", autofix = true }]
"#;

    fn linux() -> NodeFacts {
        let mut f = NodeFacts::default();
        f.node.insert("os_name".into(), "Linux".into());
        f
    }

    fn resolve(facts: &NodeFacts, sel: &Selection) -> Policy {
        let b = from_toml_str(BUNDLE, "b.toml").unwrap_or_default();
        Policy::resolve(&b, facts, sel).unwrap_or_else(|e| panic!("{e}"))
    }

    fn vars(p: &Policy, rs: &str) -> Vec<(String, String)> {
        p.rulesets
            .iter()
            .find(|r| r.name == rs)
            .map(|r| {
                r.variables
                    .iter()
                    .map(|v| (v.name.clone(), v.value.to_text()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn modulesets_and_modules() {
        let p = resolve(&NodeFacts::default(), &Selection::default());
        let names: Vec<_> = p
            .modulesets
            .iter()
            .map(|m| (m.name.as_str(), m.depth))
            .collect();
        assert_eq!(names, [("parent", 0), ("m1", 1), ("m2", 1)]);
        let shared = p
            .module("shared")
            .cloned()
            .unwrap_or_else(|| panic!("no shared"));
        assert!(shared.autofix);
        assert_eq!(shared.modulesets, ["m1", "m2"]);
        assert!(p.warnings.iter().any(|w| w.contains("module shared")));
        let sel = Selection {
            modulesets: Some(vec!["nope".into()]),
            ..Default::default()
        };
        let b = from_toml_str(BUNDLE, "b.toml").unwrap_or_default();
        assert!(matches!(
            Policy::resolve(&b, &NodeFacts::default(), &sel),
            Err(Error::NotFound { .. })
        ));
    }

    /// A module listed twice in one moduleset names it once; a module shared by many
    /// modulesets names each once, in order (without the scan that made this quadratic).
    #[test]
    fn a_module_names_each_of_its_modulesets_once() {
        let mut b = Bundle::default();
        for i in 0..2_000 {
            let name = format!("ms{i}");
            let module = |autofix| ModuleRef {
                name: "shared".into(),
                autofix,
            };
            b.modulesets.insert(
                name.clone(),
                Moduleset {
                    name,
                    modules: vec![module(false), module(i == 7)],
                    children: vec![],
                    rulesets: vec![],
                    meta: Meta::default(),
                },
            );
        }
        let p = Policy::resolve(&b, &NodeFacts::default(), &Selection::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let shared = p
            .module("shared")
            .cloned()
            .unwrap_or_else(|| panic!("no shared"));
        let want: Vec<String> = (0..2_000).map(|i| format!("ms{i}")).collect();
        assert_eq!(shared.modulesets, want);
        assert!(shared.autofix);
    }

    #[test]
    fn nesting_deepest_wins_and_ties_warn() {
        let sel = Selection {
            rulesets: vec!["top".into()],
            ..Default::default()
        };
        let p = resolve(&NodeFacts::default(), &sel);
        assert_eq!(
            vars(&p, "top"),
            [
                ("x".into(), "deep".into()),
                ("y".into(), "a".into()),
                ("z".into(), "b".into())
            ]
        );
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("variable z") && w.contains("rulesets a and b"))
        );
        let p = resolve(&linux(), &sel);
        assert!(vars(&p, "top").contains(&("linux_only".into(), "1".into())));
        assert_eq!(p.rulesets[0].reason, REASON_EXPLICIT);
        assert_eq!(p.rulesets[1].name, "public linux");
        assert_eq!(p.rulesets[1].reason, "linux");
    }

    #[test]
    fn env_visibility() {
        let mut facts = linux();
        facts.service = Some(
            [("svc_app".to_string(), "app1".to_string())]
                .into_iter()
                .collect(),
        );
        let sel = Selection {
            service: Some("svc1".into()),
            ..Default::default()
        };
        let p = resolve(&facts, &sel);
        let env: BTreeMap<String, String> = p.module_env("m1").into_iter().collect();
        assert_eq!(env.get("OSVC_COMP_M1_VAR").map(String::as_str), Some("m1"));
        assert_eq!(
            env.get("OSVC_COMP_P").map(String::as_str),
            Some(r#"{"a": "\u00e9"}"#)
        );
        assert_eq!(
            env.get("OSVC_COMP_NODES_OS_NAME").map(String::as_str),
            Some("Linux")
        );
        assert_eq!(
            env.get("OSVC_COMP_SERVICES_SVC_APP").map(String::as_str),
            Some("app1")
        );
        for k in [
            "OSVC_COMP_SERVICES_SVCNAME",
            "OSVC_COMP_SERVICES_SVC_NAME",
            "OSVC_COMP_SVC_NAME",
        ] {
            assert_eq!(env.get(k).map(String::as_str), Some("svc1"));
        }
        // m1's ruleset is bound to moduleset m1: invisible to m2's modules.
        let env2: BTreeMap<String, String> = p.module_env("m2").into_iter().collect();
        assert!(!env2.contains_key("OSVC_COMP_M1_VAR"));
        assert!(env2.contains_key("OSVC_COMP_P"));
        assert_eq!(
            p.auto_module_ruleset("m1").map(|r| r.name.as_str()),
            Some("m1")
        );
        assert!(p.auto_module_ruleset("m2").is_none());
        let sorted = p.module_env("m1");
        assert!(sorted.windows(2).all(|w| w[0].0 < w[1].0));
    }

    /// Template data mirrors the environment, with values kept as JSON, and rebuilds from
    /// the environment for objects called by scripts.
    #[test]
    fn template_data_of_a_module() {
        let mut facts = linux();
        facts.service = Some(
            [("svc_app".to_string(), "app1".to_string())]
                .into_iter()
                .collect(),
        );
        let sel = Selection {
            service: Some("svc1".into()),
            ..Default::default()
        };
        let p = resolve(&facts, &sel);
        let data = serde_json::Value::Object(p.module_data("m1"));
        assert_eq!(data["m1_var"], "m1");
        assert_eq!(data["p"], serde_json::json!({"a": "é"}));
        assert_eq!(data["nodes"]["os_name"], "Linux");
        assert_eq!(data["services"]["svc_app"], "app1");
        assert_eq!(data["services"]["svcname"], "svc1");
        assert_eq!(data["services"]["svc_name"], "svc1");
        assert_eq!(data["svc"], "svc1");
        // Visibility is the environment's: m1's ruleset is not m2's.
        assert!(p.module_data("m2").get("m1_var").is_none());
        // No service: no `svc`, no `services`.
        let p = resolve(&linux(), &Selection::default());
        let data = p.module_data("m1");
        assert!(data.get("svc").is_none() && data.get("services").is_none());

        let env = vec![
            ("OSVC_COMP_FIRST_SERVER_IP".to_string(), "33".to_string()),
            ("OSVC_COMP_P".to_string(), r#"{"a": "\u00e9"}"#.to_string()),
            ("OSVC_COMP_POD".to_string(), "pod01".to_string()),
            ("OSVC_COMP_NODES_FQDN".to_string(), "spd03".to_string()),
            (
                "OSVC_COMP_SERVICES_SVC_NAME".to_string(),
                "svc1".to_string(),
            ),
            ("OSVC_COMP_SVC_NAME".to_string(), "svc1".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let data = serde_json::Value::Object(crate::env::template_data(&env));
        assert_eq!(data["first_server_ip"], 33);
        assert_eq!(data["p"], serde_json::json!({"a": "é"}));
        assert_eq!(data["pod"], "pod01");
        assert_eq!(data["nodes"]["fqdn"], "spd03");
        assert_eq!(data["services"]["svc_name"], "svc1");
        assert_eq!(data["svc"], "svc1");
        assert!(data.get("path").is_none());
    }

    #[test]
    fn hash_is_deterministic_and_content_sensitive() {
        let a = resolve(&linux(), &Selection::default());
        let b = resolve(&linux(), &Selection::default());
        assert_eq!(a.hash, b.hash);
        assert_eq!(a.hash.len(), 64);
        let c = resolve(&NodeFacts::default(), &Selection::default());
        assert_ne!(a.hash, c.hash);
    }
}

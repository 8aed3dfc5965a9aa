//! `nodeconf`: keys of the Tenet agent's own node configuration.
//!
//! OpenSVC name `nodeconf` (object script `nodeconf.py`). A rule `{"key": "section.option",
//! "op": "=", "value": V}` manages the option `option` of the table `[section]` in the agent's
//! node config, the TOML file [`HostView::node_config`] (by default
//! `<root>/etc/tenet/node.toml`). Ops: `=` (default), `>=` / `<=` (integers), `unset` (the key
//! must be absent). A missing file means every key is unset.
//!
//! `=` compares as strings, as OpenSVC does: the target `"true"` matches the TOML boolean
//! `true`, `"10"` matches `10`. fix writes a TOML string unless the target is a JSON number or
//! boolean, which is written as a TOML integer / float / boolean. Keys are split at the first
//! dot (`hb#1.type` is table `hb#1`, key `type`).
//!
//! fix reads the file, changes the keys and writes it back atomically (a new file gets mode
//! 0600, since it may hold secrets; an existing one keeps its mode and owner). Other tables and
//! keys are kept, in their order, but **comments and formatting are lost** (the file is
//! re-serialized from a `toml::Table`). `unset` leaves an emptied table in place.
//!
//! Differences from OpenSVC: the file is edited directly instead of through `nodemgr set`;
//! contradictory rules on one key in one variable (`=` with `unset`, or `=` with two different
//! values) are a load error (OM3 silently dropped such pairs).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::class::{Class, parse_rule};
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// What a rule asks of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Op {
    /// `=`: equal, compared as strings.
    #[default]
    Eq,
    /// `>=`: at least (integers).
    Ge,
    /// `<=`: at most (integers).
    Le,
    /// `unset`: absent.
    Unset,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Le => "<=",
            Op::Unset => "unset",
        })
    }
}

/// One nodeconf rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfRule {
    /// `section.option`: the TOML table and the key in it.
    #[serde(deserialize_with = "de_key")]
    pub key: String,
    /// `=` (default), `>=`, `<=` or `unset`.
    #[serde(default, deserialize_with = "de_op")]
    pub op: Op,
    /// The target: a string, number or boolean; required except for `unset` (ignored there).
    #[serde(default)]
    pub value: Option<Value>,
}

/// The `nodeconf` class.
pub struct NodeConf;

impl Class for NodeConf {
    type Rule = NodeConfRule;
    const NAME: &'static str = "nodeconf";
    const ALIASES: &'static [&'static str] = &["nodeconf.py"];
    const DESCRIPTION: &'static str = "keys of the agent's node configuration (node.toml)";
    const STAGED_WRITES: bool = true;

    fn rules(value: &Value) -> Result<Vec<NodeConfRule>, String> {
        let rules = match value {
            Value::Array(items) => items
                .iter()
                .map(|i| parse_rule::<NodeConfRule>(i).and_then(validate))
                .collect::<Result<Vec<_>, _>>()?,
            other => vec![validate(parse_rule(other)?)?],
        };
        // Contradictions inside one variable: unset with anything else, or two `=` values.
        let mut seen: BTreeMap<&str, Vec<&NodeConfRule>> = BTreeMap::new();
        for r in &rules {
            for prev in seen.get(r.key.as_str()).into_iter().flatten() {
                let clash = (prev.op == Op::Unset) != (r.op == Op::Unset)
                    || (prev.op == Op::Eq && r.op == Op::Eq && target(prev) != target(r));
                if clash {
                    return Err(format!(
                        "key {}: contradictory rules ({} and {})",
                        r.key,
                        NodeConf::describe(prev),
                        NodeConf::describe(r)
                    ));
                }
            }
            seen.entry(&r.key).or_default().push(r);
        }
        Ok(rules)
    }

    fn describe(rule: &NodeConfRule) -> String {
        match rule.op {
            Op::Unset => format!("{} unset", rule.key),
            op => format!("{} {op} {}", rule.key, target(rule)),
        }
    }

    fn check(rule: &NodeConfRule, host: &HostView, log: &mut Log) -> Status {
        let path = host.node_config().display().to_string();
        let table = match load(host) {
            Ok(t) => t,
            Err(e) => {
                log.err(e);
                return Status::Nok;
            }
        };
        let cur = match lookup(&table, &rule.key) {
            Ok(c) => c,
            Err(e) => {
                log.err(format!("nodeconf {}: {e} in {path}", rule.key));
                return Status::Nok;
            }
        };
        match verdict(rule, cur) {
            Ok(msg) => {
                log.info(format!("nodeconf {}: {msg}, ok", rule.key));
                Status::Ok
            }
            Err(msg) => {
                log.err(format!("nodeconf {}: {msg} (in {path})", rule.key));
                Status::Nok
            }
        }
    }

    fn fix(rule: &NodeConfRule, host: &Host, log: &mut Log) -> Status {
        match fix_rule(rule, host, log) {
            Ok(()) => Status::Ok,
            Err(e) => {
                log.err(format!("nodeconf {}: {e}", rule.key));
                Status::Nok
            }
        }
    }
}

fn de_key<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::Error;
    let v = Value::deserialize(d)?;
    let Value::String(s) = &v else {
        return Err(D::Error::custom(format!(
            "key: expected a string, found {v}"
        )));
    };
    match s.split_once('.') {
        Some((section, option)) if !section.trim().is_empty() && !option.trim().is_empty() => {
            Ok(format!("{}.{}", section.trim(), option.trim()))
        }
        _ => Err(D::Error::custom(format!(
            "key: {s:?} is not of the form \"section.option\""
        ))),
    }
}

fn de_op<'de, D: Deserializer<'de>>(d: D) -> Result<Op, D::Error> {
    use serde::de::Error;
    let v = Value::deserialize(d)?;
    match v.as_str().map(str::trim) {
        Some("=") => Ok(Op::Eq),
        Some(">=") => Ok(Op::Ge),
        Some("<=") => Ok(Op::Le),
        Some("unset") => Ok(Op::Unset),
        _ => Err(D::Error::custom(format!(
            "op: unsupported operator {v} (expected \"=\", \">=\", \"<=\" or \"unset\")"
        ))),
    }
}

/// Checks the value against the op.
fn validate(rule: NodeConfRule) -> Result<NodeConfRule, String> {
    match (&rule.op, &rule.value) {
        (Op::Unset, _) => {}
        (op, None) => return Err(format!("value: required with op {op}")),
        (_, Some(Value::String(_) | Value::Bool(_))) => {}
        (_, Some(Value::Number(n))) if n.is_i64() || n.is_u64() || n.is_f64() => {}
        (_, Some(v)) => {
            return Err(format!(
                "value: expected a string, a number or a boolean, found {v}"
            ));
        }
    }
    if matches!(rule.op, Op::Ge | Op::Le) && int_of_json(rule.value.as_ref()).is_none() {
        return Err(format!(
            "value: op {} needs an integer, found {}",
            rule.op,
            rule.value
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default()
        ));
    }
    Ok(rule)
}

fn int_of_json(v: Option<&Value>) -> Option<i128> {
    match v? {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The target as text (what `=` compares).
fn target(rule: &NodeConfRule) -> String {
    match &rule.value {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

/// A TOML value as text: strings bare, others as TOML writes them.
fn text_of(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Float(f) => f.to_string(),
        other => other.to_string(),
    }
}

/// The TOML value a fix writes for the rule's target.
fn toml_of(rule: &NodeConfRule) -> toml::Value {
    match &rule.value {
        Some(Value::Bool(b)) => toml::Value::Boolean(*b),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().unwrap_or_default()),
        },
        _ => toml::Value::String(target(rule)),
    }
}

/// Whether `cur` complies: `Ok(what is there)` or `Err(what is wrong)`.
fn verdict(rule: &NodeConfRule, cur: Option<&toml::Value>) -> Result<String, String> {
    let want = target(rule);
    match (rule.op, cur) {
        (Op::Unset, None) => Ok("unset".into()),
        (Op::Unset, Some(v)) => Err(format!("set to {:?}, expected unset", text_of(v))),
        (op, None) => Err(format!("unset, expected {op} {want:?}")),
        (Op::Eq, Some(v)) => {
            let cur = text_of(v);
            if cur == want {
                Ok(format!("{cur:?}"))
            } else {
                Err(format!("{cur:?}, expected {want:?}"))
            }
        }
        (op, Some(v)) => {
            let cur = text_of(v);
            let want_n = int_of_json(rule.value.as_ref()).unwrap_or_default();
            let Ok(n) = cur.trim().parse::<i128>() else {
                return Err(format!(
                    "{cur:?} is not an integer, cannot compare with {op} {want_n}"
                ));
            };
            let ok = if op == Op::Ge {
                n >= want_n
            } else {
                n <= want_n
            };
            if ok {
                Ok(format!("{n} ({op} {want_n})"))
            } else {
                Err(format!("{n}, expected {op} {want_n}"))
            }
        }
    }
}

/// Reads the node config; a missing file is an empty table.
fn load(host: &HostView) -> Result<toml::Table, String> {
    let path = host.node_config();
    match host.read_to_string(&host.node_config_file()) {
        Ok(None) => Ok(toml::Table::new()),
        Ok(Some(text)) => text
            .parse::<toml::Table>()
            .map_err(|e| format!("nodeconf: {} is not valid TOML: {e}", path.display())),
        Err(e) => Err(format!("nodeconf: cannot read {}: {e}", path.display())),
    }
}

/// The value of `section.option`; an error when `section` is not a table.
fn lookup<'a>(table: &'a toml::Table, key: &str) -> Result<Option<&'a toml::Value>, String> {
    let (section, option) = key.split_once('.').unwrap_or((key, ""));
    match table.get(section) {
        None => Ok(None),
        Some(toml::Value::Table(t)) => Ok(t.get(option)),
        Some(_) => Err(format!("{section:?} is not a table")),
    }
}

fn fix_rule(rule: &NodeConfRule, host: &Host, log: &mut Log) -> Result<(), String> {
    let path = host.node_config();
    let mut table = load(host)?;
    let cur = lookup(&table, &rule.key)?;
    if verdict(rule, cur).is_ok() {
        return Ok(());
    }
    let (section, option) = rule.key.split_once('.').unwrap_or((&rule.key, ""));
    let what = match rule.op {
        Op::Unset => {
            if let Some(toml::Value::Table(t)) = table.get_mut(section) {
                t.remove(option);
            }
            format!("unset {}", rule.key)
        }
        _ => {
            let new = toml_of(rule);
            let what = format!("set {} = {new}", rule.key);
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => {
                    t.insert(option.to_string(), new);
                }
                _ => return Err(format!("{section:?} is not a table in {}", path.display())),
            }
            what
        }
    };
    let text = toml::to_string(&table).map_err(|e| format!("cannot serialize the config: {e}"))?;
    let file = host.node_config_file();
    let exists = host.metadata(&file).map_err(|e| e.to_string())?.is_some();
    let written = host
        .write_atomic(&file, text.as_bytes(), (!exists).then_some(0o600), None)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    log.info(format!("nodeconf: {what} in {}", path.display()));
    if let Some(note) = written.hard_link_note(&path.display().to_string()) {
        log.info(note);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_class_contract, check, fix};
    use serde_json::json;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    fn setup(content: Option<&str>) -> (tempfile::TempDir, Host) {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path()).with_var_dir(d.path().join("var/lib/tenet"));
        if let Some(c) = content {
            fs::create_dir_all(h.node_config().parent().unwrap()).unwrap();
            fs::write(h.node_config(), c).unwrap();
        }
        (d, h)
    }

    fn fixture() -> Value {
        json!([
            {"value": "http://repo.opensvc.com/compliance/", "key": "node.repocomp", "op": "="},
            {"value": "true", "key": "compliance.auto_update", "op": "="},
            {"value": "@1440", "key": "compliance.schedule", "op": "="}
        ])
    }

    fn table(h: &Host) -> toml::Table {
        fs::read_to_string(h.node_config())
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn fixture_on_a_missing_file() {
        let (d, h) = setup(None);
        let log = assert_class_contract::<NodeConf>(&h, &[d.path()], fixture());
        assert!(
            log.iter()
                .any(|l| l.contains("node.repocomp: unset, expected =")),
            "{log:?}"
        );
        let t = table(&h);
        assert_eq!(
            t["node"]["repocomp"].as_str(),
            Some("http://repo.opensvc.com/compliance/")
        );
        assert_eq!(t["compliance"]["auto_update"].as_str(), Some("true"));
        assert_eq!(t["compliance"]["schedule"].as_str(), Some("@1440"));
        assert_eq!(
            fs::metadata(h.node_config()).unwrap().mode() & 0o7777,
            0o600
        );
    }

    #[test]
    fn fixture_on_a_partly_different_file() {
        let (d, h) = setup(Some(
            "# my node\n[node]\nenv = \"PRD\"\nrepocomp = \"http://old/\"\n\n[compliance]\nauto_update = true\n\n[cluster]\nsecret = \"s\"\n",
        ));
        fs::set_permissions(
            h.node_config(),
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )
        .unwrap();
        let log = assert_class_contract::<NodeConf>(&h, &[d.path()], fixture());
        assert!(
            log.iter()
                .any(|l| l
                    .contains("\"http://old/\", expected \"http://repo.opensvc.com/compliance/\"")),
            "{log:?}"
        );
        assert!(
            log.iter()
                .any(|l| l.contains("compliance.auto_update: \"true\", ok")),
            "{log:?}"
        );
        let t = table(&h);
        assert_eq!(t["node"]["env"].as_str(), Some("PRD"));
        assert_eq!(
            t["node"]["repocomp"].as_str(),
            Some("http://repo.opensvc.com/compliance/")
        );
        // Compliant keys are not rewritten: the boolean stays a boolean.
        assert_eq!(t["compliance"]["auto_update"].as_bool(), Some(true));
        assert_eq!(t["compliance"]["schedule"].as_str(), Some("@1440"));
        assert_eq!(t["cluster"]["secret"].as_str(), Some("s"));
        let keys: Vec<&String> = t.keys().collect();
        assert_eq!(keys, ["node", "compliance", "cluster"]);
        assert_eq!(
            fs::metadata(h.node_config()).unwrap().mode() & 0o7777,
            0o640
        );
    }

    #[test]
    fn unset() {
        let (d, h) = setup(Some(
            "[node]\nenv = \"PRD\"\nmaintenance_grace_period = 60\n",
        ));
        let rule = json!({"key": "node.maintenance_grace_period", "op": "unset"});
        let log = assert_class_contract::<NodeConf>(&h, &[d.path()], rule.clone());
        assert!(log[0].contains("set to \"60\", expected unset"), "{log:?}");
        let t = table(&h);
        assert!(t["node"].get("maintenance_grace_period").is_none());
        assert_eq!(t["node"]["env"].as_str(), Some("PRD"));
        // A missing file, or a missing section, is unset.
        let (_d, h) = setup(None);
        assert_eq!(check::<NodeConf>(&h, rule.clone()).0, Status::Ok);
        let (_d, h) = setup(Some("[other]\nx = 1\n"));
        assert_eq!(check::<NodeConf>(&h, rule).0, Status::Ok);
    }

    #[test]
    fn ge_and_le() {
        let (d, h) = setup(Some("[node]\nmax_parallel = 4\n"));
        assert_eq!(
            check::<NodeConf>(
                &h,
                json!({"key": "node.max_parallel", "op": ">=", "value": 2})
            )
            .0,
            Status::Ok
        );
        assert_eq!(
            check::<NodeConf>(
                &h,
                json!({"key": "node.max_parallel", "op": "<=", "value": "4"})
            )
            .0,
            Status::Ok
        );
        let rule = json!({"key": "node.max_parallel", "op": ">=", "value": 10});
        let log = assert_class_contract::<NodeConf>(&h, &[d.path()], rule);
        assert!(log[0].contains("4, expected >= 10"), "{log:?}");
        assert_eq!(table(&h)["node"]["max_parallel"].as_integer(), Some(10));
    }

    #[test]
    fn non_integer_with_ge_is_nok() {
        let (_d, h) = setup(Some("[node]\nmax_parallel = \"many\"\n"));
        let (st, log) = check::<NodeConf>(
            &h,
            json!({"key": "node.max_parallel", "op": ">=", "value": 2}),
        );
        assert_eq!(st, Status::Nok);
        assert!(log[0].contains("\"many\" is not an integer"), "{log:?}");
        // fix replaces it with the target.
        let (st, log) = fix::<NodeConf>(
            &h,
            json!({"key": "node.max_parallel", "op": ">=", "value": 2}),
        );
        assert_eq!(st, Status::Ok, "{log:?}");
        assert_eq!(table(&h)["node"]["max_parallel"].as_integer(), Some(2));
    }

    #[test]
    fn invalid_toml_is_nok_and_not_clobbered() {
        let (_d, h) = setup(Some("[node\n"));
        let rule = json!({"key": "node.env", "value": "PRD"});
        let (st, log) = check::<NodeConf>(&h, rule.clone());
        assert_eq!(st, Status::Nok);
        assert!(log[0].contains("not valid TOML"), "{log:?}");
        assert_eq!(fix::<NodeConf>(&h, rule).0, Status::Nok);
        assert_eq!(fs::read_to_string(h.node_config()).unwrap(), "[node\n");
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (rule, field) in [
            (json!({"key": "nodot", "value": "x"}), "key"),
            (json!({"key": ".x", "value": "x"}), "key"),
            (json!({"key": "node.", "value": "x"}), "key"),
            (json!({"key": 3, "value": "x"}), "key"),
            (json!({"key": "node.x", "op": ">", "value": 1}), "op"),
            (
                json!({"key": "node.x", "op": ">=", "value": "abc"}),
                "value",
            ),
            (json!({"key": "node.x", "op": "="}), "value"),
            (json!({"key": "node.x", "value": [1]}), "value"),
            (json!({"key": "node.x", "value": 1, "bogus": 1}), "bogus"),
            (
                json!([{"key": "node.x", "value": 1}, {"key": "node.x", "op": "unset"}]),
                "contradictory",
            ),
            (
                json!([{"key": "node.x", "value": 1}, {"key": "node.x", "value": 2}]),
                "contradictory",
            ),
        ] {
            let err = NodeConf::rules(&rule).expect_err(&rule.to_string());
            assert!(err.contains(field), "{rule}: {err}");
        }
        // Same key, compatible rules: fine.
        assert!(
            NodeConf::rules(
                &json!([{"key": "node.x", "value": 1}, {"key": "node.x", "value": "1"}])
            )
            .is_ok()
        );
        assert!(NodeConf::rules(&json!([{"key": "node.x", "op": ">=", "value": 1}, {"key": "node.x", "op": "<=", "value": 9}])).is_ok());
    }

    #[test]
    fn typed_targets_and_string_comparison() {
        let (d, h) = setup(Some("[node]\nflag = \"true\"\n"));
        assert_eq!(
            check::<NodeConf>(&h, json!({"key": "node.flag", "value": true})).0,
            Status::Ok
        );
        assert_class_contract::<NodeConf>(
            &h,
            &[d.path()],
            json!([{"key": "node.count", "value": 3}, {"key": "node.on", "value": false}]),
        );
        let t = table(&h);
        assert_eq!(t["node"]["count"].as_integer(), Some(3));
        assert_eq!(t["node"]["on"].as_bool(), Some(false));
        assert_eq!(t["node"]["flag"].as_str(), Some("true"));
    }
}

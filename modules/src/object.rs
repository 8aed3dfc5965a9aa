//! The OpenSVC object calling convention: `<object> PREFIX check|fix|fixable`, where the rules
//! are every environment variable whose name starts with PREFIX. Existing module scripts call
//! `$PATH_LIB/files.py OSVC_COMP_X_FILE check`; `tenet object file OSVC_COMP_X_FILE check`
//! (or the `files.py` alias of the `tenet` binary) serves that call.
//!
//! As OpenSVC: a rule whose `%%ENV:X%%` is undefined is skipped with a message naming the
//! variable and X; no rule at all means n/a (exit 2); results merge as OM3 does (never 3).

use serde_json::Value;
use tenet_rulesets::VarValue;
use tenet_rulesets::subst::SubstContext;

use crate::class::{ClassEntry, RuleContext};
use crate::engine::substitute_value;
use crate::host::Host;
use crate::status::{Log, Status};

/// Runs `action` for class `class` over the variables of `env` starting with `prefix`,
/// echoing what it does to stdout / stderr. `lookup` resolves `%%ENV:X%%`; templated rules
/// draw on `rule_ctx` (usually built from `env` with `tenet_rulesets::env::template_data`).
pub fn run_object(
    class: &ClassEntry,
    prefix: &str,
    action: &str,
    env: &[(String, String)],
    lookup: &dyn Fn(&str) -> Option<String>,
    host: &Host,
    rule_ctx: &RuleContext,
) -> Status {
    let mut log = Log::echoing();
    let ctx = SubstContext {
        lookup,
        hostname: host.hostname(),
    };
    let mut vars: Vec<&(String, String)> =
        env.iter().filter(|(k, _)| k.starts_with(prefix)).collect();
    vars.sort();
    let mut statuses = Vec::new();
    let mut loaded = 0;
    for (name, text) in vars {
        let value = match substitute_value(&VarValue::Text(text.clone()), &ctx) {
            Ok(v) => v,
            Err(e) => {
                // OpenSVC skips just this rule; the object is n/a only if none remain.
                log.err(format!("{name}: {e}: rule skipped"));
                continue;
            }
        };
        // A plain string is a rule only for classes that take strings (remove_files, package).
        let value = match value {
            Value::String(s) if s.trim_start().starts_with(['{', '[']) => {
                log.err(format!("{name}: value is not valid JSON"));
                statuses.push(Status::Nok);
                continue;
            }
            v => v,
        };
        let rules = match (class.load)(&value, rule_ctx) {
            Ok(r) => r,
            Err(e) => {
                log.err(format!("{name} (class {}): {e}", class.name));
                statuses.push(Status::Nok);
                continue;
            }
        };
        loaded += rules.len();
        for rule in rules {
            let status = match action {
                "check" => rule.check(host.view(), &mut log),
                "fixable" => rule.fixable(host.view(), &mut log),
                _ => rule.fix(host, &mut log),
            };
            statuses.push(status);
        }
    }
    if loaded == 0 && statuses.is_empty() {
        log.info(format!(
            "no rules found under prefix {prefix}: not applicable"
        ));
    }
    if let Err(e) = host.sync() {
        log.err(format!("committing the written files: {e}"));
        statuses.push(Status::Nok);
    }
    Status::merge_all(statuses)
}

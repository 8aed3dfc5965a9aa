//! `%%ENV:NAME%%`, `%%HOSTNAME%%` and `%%SHORT_HOSTNAME%%` substitution in rule values, with
//! the OpenSVC Python agent's semantics (PY `CompObject.subst`).
//!
//! PY semantics rather than OM3's: an undefined name is an error (the caller skips that one
//! rule), and in JSON mode the replacement is escaped so the value stays valid JSON whatever the
//! substituted text holds. Unlike PY, which replaces one distinct reference per pass, each pass
//! here replaces every reference, so a value may hold more than ten of them.

use crate::env::python_json_string_body;
use regex::Regex;
use std::sync::LazyLock;

/// What substitution reads: the environment (by exact name) and the host name.
pub struct SubstContext<'a> {
    /// Looks a variable up by its exact name (`NAME`, then `OSVC_COMP_NAME` is asked).
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    /// The node's host name, possibly fully qualified.
    pub hostname: &'a str,
}

/// A `%%ENV:NAME%%` reference to a variable that is defined under neither `NAME` nor
/// `OSVC_COMP_NAME`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undefined substitution variable: {name}")]
pub struct SubstError {
    /// The upper-cased name, as written after `ENV:`.
    pub name: String,
}

/// How many times substitution is re-run on its own output (a replacement may hold another
/// reference), as in PY.
pub const MAX_PASSES: usize = 10;

static ENV_REF: LazyLock<Regex> = LazyLock::new(|| {
    // A constant pattern: cannot fail.
    Regex::new(r"(?i)%%ENV:(\w+)%%").unwrap_or_else(|e| panic!("ENV_REF pattern: {e}"))
});

/// Substitutes `%%ENV:NAME%%` (case-insensitive; NAME upper-cased, looked up as `NAME` then
/// `OSVC_COMP_NAME`), `%%HOSTNAME%%` and `%%SHORT_HOSTNAME%%` (the host name up to its first
/// dot). With `json`, replacements are escaped as the inside of a JSON string literal, for
/// values that are JSON texts with references inside string literals. Runs up to
/// [`MAX_PASSES`] passes; text without `%%` is returned unchanged.
pub fn substitute(text: &str, ctx: &SubstContext, json: bool) -> Result<String, SubstError> {
    let escape = |s: &str| {
        if json {
            python_json_string_body(s)
        } else {
            s.to_string()
        }
    };
    let short = ctx.hostname.split('.').next().unwrap_or(ctx.hostname);
    let mut current = text.to_string();
    for _ in 0..MAX_PASSES {
        if !current.contains("%%") {
            break;
        }
        let mut next = String::with_capacity(current.len());
        let mut last = 0;
        for caps in ENV_REF.captures_iter(&current) {
            let (Some(whole), Some(name)) = (caps.get(0), caps.get(1)) else {
                continue;
            };
            let name = name.as_str().to_uppercase();
            let value = (ctx.lookup)(&name)
                .or_else(|| (ctx.lookup)(&format!("OSVC_COMP_{name}")))
                .ok_or_else(|| SubstError { name: name.clone() })?;
            next.push_str(&current[last..whole.start()]);
            next.push_str(&escape(&value));
            last = whole.end();
        }
        next.push_str(&current[last..]);
        let next = next
            .replace("%%HOSTNAME%%", &escape(ctx.hostname))
            .replace("%%SHORT_HOSTNAME%%", &escape(short));
        if next == current {
            break;
        }
        current = next;
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn run(text: &str, vars: &HashMap<String, String>, json: bool) -> Result<String, SubstError> {
        let lookup = |k: &str| vars.get(k).cloned();
        let ctx = SubstContext {
            lookup: &lookup,
            hostname: "node1.example.com",
        };
        substitute(text, &ctx, json)
    }

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_lookup_order_and_case() {
        let v = vars(&[
            ("POD", "p1"),
            ("OSVC_COMP_POD", "no"),
            ("OSVC_COMP_SERVER_ID", "7"),
        ]);
        assert_eq!(
            run("%%env:pod%%/%%ENV:Server_Id%%", &v, false).as_deref(),
            Ok("p1/7")
        );
    }

    #[test]
    fn hostnames() {
        let v = vars(&[]);
        assert_eq!(
            run("%%HOSTNAME%% %%SHORT_HOSTNAME%%", &v, false).as_deref(),
            Ok("node1.example.com node1")
        );
    }

    #[test]
    fn nested_references_resolve() {
        let v = vars(&[("A", "x%%ENV:B%%"), ("B", "y")]);
        assert_eq!(run("%%ENV:A%%", &v, false).as_deref(), Ok("xy"));
    }

    #[test]
    fn self_reference_stops_after_max_passes() {
        let v = vars(&[("A", "(%%ENV:A%%)")]);
        let out = run("%%ENV:A%%", &v, false).unwrap_or_default();
        assert!(out.starts_with("((((((((((") && out.contains("%%ENV:A%%"));
    }

    #[test]
    fn json_mode_escapes() {
        let v = vars(&[("X", "a\"b\\c\nd")]);
        let out = run(r#"{"k": "%%ENV:X%%"}"#, &v, true).unwrap_or_default();
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(parsed["k"], "a\"b\\c\nd");
    }

    #[test]
    fn undefined_is_an_error() {
        let e = run("x %%ENV:nope%%", &vars(&[]), false).unwrap_err();
        assert_eq!(e.to_string(), "undefined substitution variable: NOPE");
    }

    proptest! {
        #[test]
        fn json_substitution_stays_valid(values in proptest::collection::vec(any::<String>(), 1..5)) {
            let mut map = HashMap::new();
            let mut template = serde_json::Map::new();
            for (i, v) in values.iter().enumerate() {
                map.insert(format!("V{i}"), v.clone());
                template.insert(format!("k{i}"), serde_json::Value::String(format!("<%%ENV:v{i}%%>")));
            }
            let text = serde_json::Value::Object(template).to_string();
            let out = run(&text, &map, true);
            prop_assert!(out.is_ok());
            let out = out.unwrap_or_default();
            let parsed: Result<serde_json::Value, _> = serde_json::from_str(&out);
            prop_assert!(parsed.is_ok(), "{out}");
            let parsed = parsed.unwrap_or_default();
            for (i, v) in values.iter().enumerate() {
                if !v.contains("%%") {
                    let want = format!("<{v}>");
                    prop_assert_eq!(parsed[format!("k{i}")].as_str(), Some(want.as_str()));
                }
            }
        }

        #[test]
        fn undefined_names_error_with_their_name(name in "[A-Za-z_][A-Za-z0-9_]{0,20}", before in "[^%]*") {
            let text = format!("{before}%%ENV:{name}%%");
            let e = run(&text, &HashMap::new(), false).unwrap_err();
            prop_assert_eq!(e.name, name.to_uppercase());
        }

        #[test]
        fn text_without_markers_is_unchanged(text in "[^%]*", json in any::<bool>()) {
            prop_assert_eq!(run(&text, &HashMap::new(), json).ok(), Some(text));
        }
    }
}

//! `%%ENV:NAME%%`, `%%HOSTNAME%%` and `%%SHORT_HOSTNAME%%` substitution in rule values, with
//! the OpenSVC Python agent's semantics (PY `CompObject.subst`, called in JSON mode by
//! `get_rule_items`).
//!
//! PY semantics rather than OM3's: an undefined name is an error (the caller skips that one
//! rule), and a value that is JSON gets the replacement as text inside its strings, so a
//! variable can never change a rule's structure whatever it holds (quotes, backslashes,
//! control characters). Unlike PY, which replaces one distinct reference per pass, each pass
//! here replaces every reference, so a value may hold more than ten of them.
//!
//! [`substitute_value`] is what objects call on a rule value:
//! - a JSON value: every string of it (object keys included) is substituted, and stays one
//!   string. PY escapes the replacement into the JSON text and parses it back, which is the
//!   same thing for references inside string literals;
//! - a text that is JSON once each `%%ENV:X%%` standing outside a string literal is read as a
//!   number (`{"mode": %%ENV:MODE%%}`, which PY accepts because an escaped `644` is `644`):
//!   each such X must be a JSON number, `true`, `false` or `null` (anything else could add
//!   members or elements, and is refused with [`SubstError::NotScalar`]), then the strings are
//!   substituted as above;
//! - any other text is a plain string (a package name, a path pattern): substituted verbatim
//!   and never parsed as JSON afterwards.

use crate::env::python_json_string_body;
use crate::model::VarValue;
use regex::Regex;
use serde_json::Value;
use std::ops::Range;
use std::sync::LazyLock;

/// What substitution reads: the environment (by exact name) and the host name.
pub struct SubstContext<'a> {
    /// Looks a variable up by its exact name (`NAME`, then `OSVC_COMP_NAME` is asked).
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    /// The node's host name, possibly fully qualified.
    pub hostname: &'a str,
}

/// Why a value could not be substituted. Each variant names the variable referenced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstError {
    /// A `%%ENV:NAME%%` reference to a variable that is defined under neither `NAME` nor
    /// `OSVC_COMP_NAME`.
    #[error("undefined substitution variable: {name}")]
    Undefined {
        /// The upper-cased name, as written after `ENV:`.
        name: String,
    },
    /// A `%%ENV:NAME%%` outside the string literals of a JSON rule whose value is not a JSON
    /// number, `true`, `false` or `null`.
    #[error(
        "substitution variable {name}: referenced outside a JSON string, so its value must be \
         a number, true, false or null (quote the reference to insert text)"
    )]
    NotScalar {
        /// The upper-cased name, as written after `ENV:`.
        name: String,
    },
    /// The rule is not valid JSON once its unquoted references are replaced.
    #[error("value is not valid JSON after substituting {name}: {message}")]
    NotJson {
        /// The upper-cased name of the last unquoted reference.
        name: String,
        /// The JSON parser's message.
        message: String,
    },
}

impl SubstError {
    /// The upper-cased variable name the error is about.
    pub fn name(&self) -> &str {
        match self {
            SubstError::Undefined { name }
            | SubstError::NotScalar { name }
            | SubstError::NotJson { name, .. } => name,
        }
    }
}

/// How many times substitution is re-run on its own output (a replacement may hold another
/// reference), as in PY.
pub const MAX_PASSES: usize = 10;

static ENV_REF: LazyLock<Regex> = LazyLock::new(|| {
    // A constant pattern: cannot fail.
    Regex::new(r"(?i)%%ENV:(\w+)%%").unwrap_or_else(|e| panic!("ENV_REF pattern: {e}"))
});

/// The value of `%%ENV:NAME%%`: `NAME` (upper-cased), then `OSVC_COMP_NAME`.
fn lookup(ctx: &SubstContext, name: &str) -> Result<String, SubstError> {
    (ctx.lookup)(name)
        .or_else(|| (ctx.lookup)(&format!("OSVC_COMP_{name}")))
        .ok_or_else(|| SubstError::Undefined {
            name: name.to_string(),
        })
}

/// Substitutes `%%ENV:NAME%%` (case-insensitive; NAME upper-cased, looked up as `NAME` then
/// `OSVC_COMP_NAME`), `%%HOSTNAME%%` and `%%SHORT_HOSTNAME%%` (the host name up to its first
/// dot) in a text. With `json`, replacements are escaped as the inside of a JSON string
/// literal, for texts that are JSON with references inside string literals (prefer
/// [`substitute_value`], which never re-parses substituted text). Runs up to [`MAX_PASSES`]
/// passes; text without `%%` is returned unchanged.
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
            let value = lookup(ctx, &name.as_str().to_uppercase())?;
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

/// Substitutes a rule value (see the module documentation): a JSON value in each of its
/// strings; a text as JSON when it is JSON (unquoted references standing for scalars), else
/// as a plain string. The result is what the object class parses its rules from.
pub fn substitute_value(value: &VarValue, ctx: &SubstContext) -> Result<Value, SubstError> {
    match value {
        VarValue::Json(v) => substitute_json(v, ctx),
        VarValue::Text(t) => substitute_text(t, ctx),
    }
}

/// Substitutes every string of a JSON value (object keys included), each as plain text: the
/// structure of the value is kept whatever the replacements hold.
pub fn substitute_json(value: &Value, ctx: &SubstContext) -> Result<Value, SubstError> {
    // Recursion is bounded by the value's nesting, which serde_json and toml limit at parse time.
    Ok(match value {
        Value::String(s) => Value::String(substitute(s, ctx, false)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| substitute_json(v, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, v) in map {
                out.insert(substitute(k, ctx, false)?, substitute_json(v, ctx)?);
            }
            Value::Object(out)
        }
        scalar => scalar.clone(),
    })
}

/// Substitutes an OpenSVC value text: as JSON when it is JSON, or JSON once its unquoted
/// references are read as scalars; else as a plain string, never parsed afterwards.
pub fn substitute_text(text: &str, ctx: &SubstContext) -> Result<Value, SubstError> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return substitute_json(&v, ctx);
    }
    let unquoted = unquoted_references(text);
    if !unquoted.is_empty() && is_json_template(text, &unquoted) {
        let mut filled = String::with_capacity(text.len());
        let mut last = 0;
        for (range, name) in &unquoted {
            filled.push_str(&text[last..range.start]);
            filled.push_str(&scalar(ctx, name)?);
            last = range.end;
        }
        filled.push_str(&text[last..]);
        let v: Value = serde_json::from_str(&filled).map_err(|e| SubstError::NotJson {
            name: unquoted.last().map(|(_, n)| n.clone()).unwrap_or_default(),
            message: e.to_string(),
        })?;
        return substitute_json(&v, ctx);
    }
    Ok(Value::String(substitute(text, ctx, false)?))
}

/// The value of an unquoted `%%ENV:NAME%%` (its own references substituted), which must be a
/// JSON number, `true`, `false` or `null`; returned in its JSON form.
fn scalar(ctx: &SubstContext, name: &str) -> Result<String, SubstError> {
    let raw = substitute(&lookup(ctx, name)?, ctx, false)?;
    match serde_json::from_str::<Value>(raw.trim()) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => Ok(v.to_string()),
        _ => Err(SubstError::NotScalar {
            name: name.to_string(),
        }),
    }
}

/// Whether the text is a JSON object or array once each unquoted reference is read as `0`.
fn is_json_template(text: &str, unquoted: &[(Range<usize>, String)]) -> bool {
    let mut probe = String::with_capacity(text.len());
    let mut last = 0;
    for (range, _) in unquoted {
        probe.push_str(&text[last..range.start]);
        probe.push('0');
        last = range.end;
    }
    probe.push_str(&text[last..]);
    matches!(
        serde_json::from_str::<Value>(&probe),
        Ok(Value::Object(_) | Value::Array(_))
    )
}

/// The `%%ENV:NAME%%` references of a text standing outside its JSON string literals (as a
/// JSON lexer sees them: `"` opens and closes, `\` escapes inside), with upper-cased names.
fn unquoted_references(text: &str) -> Vec<(Range<usize>, String)> {
    let mut literals: Vec<Range<usize>> = Vec::new();
    let mut open: Option<usize> = None;
    let mut escaped = false;
    for (i, b) in text.bytes().enumerate() {
        match (open, escaped, b) {
            (Some(_), true, _) => escaped = false,
            (Some(_), false, b'\\') => escaped = true,
            (Some(start), false, b'"') => {
                literals.push(start..i + 1);
                open = None;
            }
            (None, _, b'"') => open = Some(i),
            _ => {}
        }
    }
    if let Some(start) = open {
        literals.push(start..text.len());
    }
    let inside = |at: usize| {
        // Literals are sorted and disjoint: the candidate is the last one starting before `at`.
        let i = literals.partition_point(|r| r.start <= at);
        i > 0 && literals[i - 1].contains(&at)
    };
    ENV_REF
        .captures_iter(text)
        .filter_map(|c| {
            let whole = c.get(0)?;
            let name = c.get(1)?;
            (!inside(whole.start())).then(|| (whole.range(), name.as_str().to_uppercase()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
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

    fn value(v: &VarValue, vars: &HashMap<String, String>) -> Result<Value, SubstError> {
        let lookup = |k: &str| vars.get(k).cloned();
        let ctx = SubstContext {
            lookup: &lookup,
            hostname: "node1.example.com",
        };
        substitute_value(v, &ctx)
    }

    /// The issue 12 reproduction: a quote in the variable must not close the `fmt` string and
    /// add a `mode` member, whether the rule came as JSON or as text (the object convention);
    /// the variable's exact text comes back, byte for byte.
    #[test]
    fn a_variable_cannot_change_the_rule_structure() {
        let rule = r#"{"path":"/tmp/x/f","fmt":"v=%%ENV:DTX%%"}"#;
        let hostile = [
            r#"x", "mode": "777"#,
            r#"x\", \"mode\": \"777"#,
            r"C:\new\table",
            r"C:\\new\\table",
            "tab\there\nnewline\r\u{0}nul\u{1b}[31m\u{7f}",
            "caf\u{e9} \u{65e5}\u{672c} \u{1f600} \u{2028}",
            r#"\u0022, "mode": 511, "x": "\u0022"#,
            "\"}, {\"path\": \"/etc/shadow\", \"fmt\": \"",
        ];
        for h in hostile {
            let vars = vars(&[("DTX", h)]);
            let want = json!({"path": "/tmp/x/f", "fmt": format!("v={h}")});
            let from_text = value(&VarValue::Text(rule.into()), &vars).unwrap();
            let from_json =
                value(&VarValue::Json(serde_json::from_str(rule).unwrap()), &vars).unwrap();
            assert_eq!(from_text, want, "{h:?}");
            assert_eq!(from_json, want, "{h:?}");
        }
        // A reference inside the replacement is substituted, still inside the string.
        let vars = vars(&[("DTX", "a%%ENV:B%%"), ("B", "\", \"mode\": \"777")]);
        let v = value(&VarValue::Text(rule.into()), &vars).unwrap();
        assert_eq!(
            v,
            json!({"path": "/tmp/x/f", "fmt": "v=a\", \"mode\": \"777"})
        );
    }

    #[test]
    fn keys_and_nested_strings_are_substituted() {
        let v = json!({"%%ENV:K%%": ["%%ENV:A%% %%SHORT_HOSTNAME%%", {"x": "%%ENV:A%%"}, 1, null]});
        let out = value(&VarValue::Json(v), &vars(&[("K", "key\""), ("A", "[1]")])).unwrap();
        assert_eq!(out, json!({"key\"": ["[1] node1", {"x": "[1]"}, 1, null]}));
    }

    #[test]
    fn unquoted_references_must_be_scalars() {
        let rule =
            VarValue::Text(r#"{"path": "/x", "mode": %%ENV:MODE%%, "fmt": "%%ENV:F%%"}"#.into());
        for (mode, want) in [
            ("644", json!(644)),
            (" 755\n", json!(755)),
            ("true", json!(true)),
            ("null", Value::Null),
            ("%%ENV:INNER%%", json!(600)),
        ] {
            let vars = vars(&[("MODE", mode), ("F", "\"q\""), ("INNER", "600")]);
            let v = value(&rule, &vars).unwrap_or_else(|e| panic!("{mode}: {e}"));
            assert_eq!(
                v,
                json!({"path": "/x", "mode": want, "fmt": "\"q\""}),
                "{mode}"
            );
        }
        for bad in [
            r#"644, "owner": "root""#,
            "[7]",
            "{}",
            r#""644""#,
            "0644",
            "6 4",
            "",
        ] {
            let e = value(&rule, &vars(&[("MODE", bad), ("F", "")])).unwrap_err();
            assert_eq!(
                e,
                SubstError::NotScalar {
                    name: "MODE".into()
                },
                "{bad:?}"
            );
            assert!(e.to_string().contains("MODE"), "{e}");
        }
        // A scalar that fits where 0 fits but not where it stands: an error naming it.
        let e = value(
            &VarValue::Text(r#"{"a": -%%ENV:N%%}"#.into()),
            &vars(&[("N", "-1")]),
        )
        .unwrap_err();
        assert!(
            matches!(&e, SubstError::NotJson { name, .. } if name == "N"),
            "{e}"
        );
        let e = value(&rule, &vars(&[("F", "")])).unwrap_err();
        assert_eq!(
            e,
            SubstError::Undefined {
                name: "MODE".into()
            }
        );
    }

    #[test]
    fn plain_text_stays_a_string() {
        let vars = vars(&[
            ("X", r#"{"path": "/etc/shadow", "mode": 777}"#),
            ("V", "1.2"),
        ]);
        for (text, want) in [
            ("%%ENV:X%%", r#"{"path": "/etc/shadow", "mode": 777}"#),
            ("pkg-%%ENV:V%%", "pkg-1.2"),
            ("/srv/%%ENV:V%%/*", "/srv/1.2/*"),
            ("[%%HOSTNAME%%", "[node1.example.com"),
            (r#"{"a": "%%ENV:V%%""#, r#"{"a": "1.2""#),
        ] {
            let got = value(&VarValue::Text(text.into()), &vars).unwrap();
            assert_eq!(got, json!(want), "{text}");
        }
    }

    proptest! {
        #[test]
        fn any_variable_value_lands_in_its_string(v in any::<String>(), unquoted in any::<bool>()) {
            prop_assume!(!v.contains("%%"));
            let map: HashMap<String, String> =
                [("V".to_string(), v.clone()), ("M".to_string(), "644".to_string())].into();
            let text = if unquoted {
                r#"{"path": "/etc/x", "fmt": "<%%ENV:V%%>", "mode": %%ENV:M%%}"#
            } else {
                r#"{"path": "/etc/x", "fmt": "<%%ENV:V%%>"}"#
            };
            let mut rules = vec![VarValue::Text(text.to_string())];
            if !unquoted {
                rules.push(VarValue::Json(serde_json::from_str(text).unwrap_or_default()));
            }
            for rule in rules {
                let out = value(&rule, &map);
                prop_assert!(out.is_ok());
                let out = out.unwrap_or_default();
                let want = if unquoted { 3 } else { 2 };
                prop_assert_eq!(out.as_object().map(|o| o.len()), Some(want));
                let fmt = format!("<{v}>");
                prop_assert_eq!(out["fmt"].as_str(), Some(fmt.as_str()));
            }
        }

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
            prop_assert_eq!(e.name(), name.to_uppercase());
        }

        #[test]
        fn text_without_markers_is_unchanged(text in "[^%]*", json in any::<bool>()) {
            prop_assert_eq!(run(&text, &HashMap::new(), json).ok(), Some(text));
        }
    }
}

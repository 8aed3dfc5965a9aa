//! Environment naming and value formatting, byte-compatible with the OpenSVC agent: what a
//! module sees as `OSVC_COMP_*` variables.
//!
//! OpenSVC (PY `format_rule_var`, `format_rule_val`) upper-cases the variable name and turns a
//! value that parses as JSON into Python's `json.dumps` text (separators `", "` and `": "`,
//! non-ASCII escaped). Existing module scripts parse or grep that exact text, so it is
//! reproduced here rather than serde_json's compact form.

use crate::model::VarValue;
use serde_json::Value;
use std::fmt::Write;

/// The environment name of a variable: `OSVC_COMP_` + the name upper-cased, with `.`, `-` and
/// space replaced by `_` (the namespace is global: the ruleset name is not part of it).
pub fn env_name(var_name: &str) -> String {
    let mut out = String::with_capacity(10 + var_name.len());
    out.push_str("OSVC_COMP_");
    for c in var_name.chars() {
        match c {
            '.' | '-' | ' ' => out.push('_'),
            c => out.extend(c.to_uppercase()),
        }
    }
    out
}

/// The template data ([`crate::Policy::module_data`]'s shape) rebuilt from a module's
/// environment, for objects called by module scripts (`files.py PREFIX check`), which only
/// see `OSVC_COMP_*` variables: `OSVC_COMP_NODES_<F>` → `nodes.<f>`, `OSVC_COMP_SERVICES_<F>`
/// → `services.<f>`, any other `OSVC_COMP_<NAME>` → `<name>` (lower-cased; its value parsed
/// as JSON when it is JSON, as OpenSVC values are), and `svc` from `OSVC_COMP_SVC_NAME`.
/// Names are lower-cased because the environment upper-cased them: a variable named
/// `Server.Id` is `server_id` here.
pub fn template_data(env: &[(String, String)]) -> serde_json::Map<String, Value> {
    let mut data = serde_json::Map::new();
    let mut nodes = serde_json::Map::new();
    let mut services = serde_json::Map::new();
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("OSVC_COMP_") else {
            continue;
        };
        let name = rest.to_lowercase();
        if let Some(f) = name.strip_prefix("nodes_") {
            nodes.insert(f.to_string(), Value::String(v.clone()));
        } else if let Some(f) = name.strip_prefix("services_") {
            services.insert(f.to_string(), Value::String(v.clone()));
        } else {
            data.insert(name, VarValue::from_text(v).as_json());
        }
    }
    data.insert("nodes".into(), Value::Object(nodes));
    if let Some(svc) = env
        .iter()
        .find(|(k, _)| k == "OSVC_COMP_SVC_NAME" || k == "OSVC_COMP_SERVICES_SVC_NAME")
    {
        data.insert("svc".into(), Value::String(svc.1.clone()));
    }
    if !services.is_empty() {
        data.insert("services".into(), Value::Object(services));
    }
    data
}

/// The environment value of a variable: text verbatim; JSON (strings included) as Python's
/// `json.dumps` would print it after `json.loads` of the collector's text.
pub fn env_value(v: &VarValue) -> String {
    match v {
        VarValue::Text(s) => s.clone(),
        VarValue::Json(j) => python_json(j),
    }
}

/// `json.dumps(v)` with Python's defaults: `", "` and `": "` separators, `ensure_ascii`
/// (`\uXXXX`, surrogate pairs above U+FFFF), integers as integers, floats as Python `repr`.
pub fn python_json(v: &Value) -> String {
    let mut out = String::new();
    write_value(v, &mut out);
    out
}

/// The inside of a Python `json.dumps` string literal (no surrounding quotes).
pub fn python_json_string_body(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(s, &mut out);
    out
}

fn write_value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else if let Some(f) = n.as_f64() {
                out.push_str(&python_float_repr(f));
            }
        }
        Value::String(s) => {
            out.push('"');
            escape_into(s, out);
            out.push('"');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push('"');
                escape_into(k, out);
                out.push_str("\": ");
                write_value(item, out);
            }
            out.push('}');
        }
    }
}

/// Python's `ESCAPE_ASCII`: everything outside printable ASCII becomes an escape.
fn escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
}

/// Python's `repr(float)`: shortest round-trip digits; scientific notation when the decimal
/// exponent is below -4 or at least 16 (`1e-05`, `1e+16`), else positional with at least `.0`.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    // Rust's `{:e}` gives the shortest round-trip digits, like Python's repr.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    // Python's decpt: value = 0.DIGITS x 10^decpt.
    let decpt = exp + 1;
    let mut out = String::from(sign);
    if decpt <= -4 || decpt > 16 {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if decpt <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', decpt.unsigned_abs() as usize));
        out.push_str(&digits);
    } else {
        let decpt = decpt as usize;
        if decpt < digits.len() {
            out.push_str(&digits[..decpt]);
            out.push('.');
            out.push_str(&digits[decpt..]);
        } else {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', decpt - digits.len()));
            out.push_str(".0");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert_eq!(
            env_name("spdc_kernel_sysctl"),
            "OSVC_COMP_SPDC_KERNEL_SYSCTL"
        );
        assert_eq!(env_name("a.b-c d"), "OSVC_COMP_A_B_C_D");
    }

    #[test]
    fn values_like_python() {
        assert_eq!(
            env_value(&VarValue::Text("svc:/x:default".into())),
            "svc:/x:default"
        );
        assert_eq!(env_value(&VarValue::from_text("\"abc\"")), "\"abc\"");
        assert_eq!(env_value(&VarValue::from_text("33")), "33");
        assert_eq!(
            python_json(&json!({"a": [1, 2.5, true, null], "b": "é\n\"\\😀\u{7f}"})),
            r#"{"a": [1, 2.5, true, null], "b": "\u00e9\n\"\\\ud83d\ude00\u007f"}"#
        );
        assert_eq!(python_json(&json!({})), "{}");
        assert_eq!(python_json(&json!([])), "[]");
        assert_eq!(
            python_json(&json!(18446744073709551615u64)),
            "18446744073709551615"
        );
    }

    #[test]
    fn floats_like_python_repr() {
        for (f, want) in [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (0.1, "0.1"),
            (2.5, "2.5"),
            (100.0, "100.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.25e-7, "1.25e-07"),
            (1e300, "1e+300"),
            (123456.789, "123456.789"),
            (1.2345678901234568e17, "1.2345678901234568e+17"),
            (-3.5e-10, "-3.5e-10"),
        ] {
            assert_eq!(python_float_repr(f), want, "{f}");
        }
    }
}

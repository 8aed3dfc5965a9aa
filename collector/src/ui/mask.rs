//! Secrets masked on pages. Policy values carry passwords and keys (a form's root password, a
//! registry password in a rule); the console shows that there is a value, never the value.
//!
//! A value is masked when its name says it is secret: a variable, an object key or a form
//! input whose name contains one of [`SECRET_WORDS`] (case-insensitive), or a line of text
//! shaped `name = value` / `name: value` / `NAME=value` with such a name (configuration file
//! contents held in a rule). What is masked is replaced by [`MASK`]; the JSON structure and
//! every other value stay as they are, so a reader still sees what the rule does.

use serde_json::Value;

/// What replaces a secret.
pub const MASK: &str = "••••••";

/// Parts of names that mark a secret.
pub const SECRET_WORDS: [&str; 9] = [
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "credential",
    "private_key",
    "apikey",
    "api_key",
];

/// Whether a name (variable, key, input) names a secret.
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| lower.contains(w))
}

/// A JSON value with the values of secret keys masked, and secret lines of its strings.
pub fn json(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_secret_name(k) && !v.is_null() {
                        Value::String(MASK.into())
                    } else {
                        json(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(json).collect()),
        Value::String(s) => Value::String(text(s)),
        other => other.clone(),
    }
}

/// Text with the values of `secret-name = value` lines masked (also `:` and shell
/// assignments, and `-e NAME=value` inside a line).
pub fn text(s: &str) -> String {
    if !SECRET_WORDS
        .iter()
        .any(|w| s.to_ascii_lowercase().contains(w))
    {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&mask_line(line));
    }
    out
}

/// Masks every `word=value`, `word: value` or `word = value` of a secret word in a line: the
/// value runs to the next blank (or the end of the line for `:` and ` = ` forms).
fn mask_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    loop {
        // The next assignment sign after a name.
        let Some(pos) = rest.find(['=', ':']) else {
            out.push_str(rest);
            return out;
        };
        let (before, after) = rest.split_at(pos);
        let name_start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .map(|i| i + 1)
            .unwrap_or(0);
        let name = before[name_start..].trim();
        let name = if name.is_empty() {
            // `name = value`: the name is the word before the blanks.
            let trimmed = before.trim_end();
            let start = trimmed
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
                .map(|i| i + 1)
                .unwrap_or(0);
            &trimmed[start..]
        } else {
            name
        };
        out.push_str(before);
        let sign = &after[..1];
        out.push_str(sign);
        let value_part = &after[1..];
        if !is_secret_name(name) || name.is_empty() {
            rest = value_part;
            continue;
        }
        let lead = value_part.len() - value_part.trim_start().len();
        out.push_str(&value_part[..lead]);
        let v = &value_part[lead..];
        // A value ends at the next blank when the sign touched the name (`A=b c`), else at
        // the end of the line (`password = two words`).
        let spaced = before.ends_with(' ') || lead > 0;
        let end = if spaced {
            v.len()
        } else {
            v.find(char::is_whitespace).unwrap_or(v.len())
        };
        if end > 0 {
            out.push_str(MASK);
        }
        rest = &v[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_and_lines_are_masked_and_the_rest_kept() {
        let v = serde_json::json!({
            "path": "/etc/app.conf", "mode": "600",
            "password": "hunter2", "Registry_Token": "abc",
            "fmt": "user = app\npassword = s3 cret\nport: 3306\n",
            "args": "docker run -e MYSQL_ROOT_PASSWORD=secret -p 3306 img",
            "nested": [{"api_key": "k"}, {"key": "net.ipv4.ip_forward", "value": 1}],
        });
        let m = json(&v);
        assert_eq!(m["path"], "/etc/app.conf");
        assert_eq!(m["password"], MASK);
        assert_eq!(m["Registry_Token"], MASK);
        assert_eq!(
            m["fmt"],
            format!("user = app\npassword = {MASK}\nport: 3306\n")
        );
        assert_eq!(
            m["args"],
            format!("docker run -e MYSQL_ROOT_PASSWORD={MASK} -p 3306 img")
        );
        assert_eq!(m["nested"][0]["api_key"], MASK);
        assert_eq!(
            m["nested"][1]["key"], "net.ipv4.ip_forward",
            "sysctl keys are no secret"
        );
        let shown = m.to_string();
        for secret in ["hunter2", "s3 cret", "secret\"", "\"abc\"", "\"k\""] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
    }

    #[test]
    fn names_mark_secrets() {
        assert!(is_secret_name("myrootpwd"));
        assert!(is_secret_name("DB_PASSWORD"));
        assert!(!is_secret_name("npods"));
        assert_eq!(text("no secret here"), "no secret here");
    }
}

//! Forms: a template plus typed inputs, described by a `form.toml` beside its `template.hbs`
//! (format in `templates/README.md`). Validation is pure: inputs (JSON) in, the data the
//! template renders with out, or every problem found at once.

use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Error, Problem, Result};
use crate::inline;

/// How to treat inputs that are not given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FormOptions {
    /// Use the `default` of a mandatory input that is not given. Off by default: a
    /// mandatory input's default is what a form UI pre-fills, and a caller that sends nothing
    /// for it has not filled the form. (An optional input's default always applies.)
    pub use_defaults: bool,
}

/// The type of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// A JSON integer (64-bit signed); on a command line, decimal digits.
    Integer,
    /// A JSON string.
    String,
    /// A JSON boolean; on a command line, `true` or `false`.
    Boolean,
}

impl InputType {
    fn name(self) -> &'static str {
        match self {
            InputType::Integer => "an integer",
            InputType::String => "a string",
            InputType::Boolean => "a boolean",
        }
    }
}

/// One input of a form: `[[input]]` in `form.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The variable name the template sees (letters, digits, `_`; not starting with a digit).
    pub name: String,
    /// What a person is asked, for UIs and `tenet template show`.
    #[serde(default)]
    pub label: Option<String>,
    /// `integer`, `string` or `boolean`.
    #[serde(rename = "type")]
    pub kind: InputType,
    /// Whether the input must be given (a mandatory string must also be non-blank).
    #[serde(default)]
    pub mandatory: bool,
    /// An optional input's value when not given; for a mandatory input, the value a UI
    /// pre-fills (applied only with [`FormOptions::use_defaults`]).
    #[serde(default)]
    pub default: Option<Value>,
    /// Smallest allowed value (integers).
    #[serde(default)]
    pub min: Option<i64>,
    /// Largest allowed value (integers).
    #[serde(default)]
    pub max: Option<i64>,
    /// A regular expression the whole string must match (strings).
    #[serde(default)]
    pub pattern: Option<String>,
    /// What `pattern` means, for the error message ("node names separated by spaces").
    #[serde(default)]
    pub pattern_help: Option<String>,
    /// The only allowed values.
    #[serde(default)]
    pub choices: Option<Vec<Value>>,
    #[serde(skip)]
    regex: Option<Regex>,
}

/// A condition over several inputs: `[[check]]` in `form.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// A template rendered with the validated inputs; it must render `true` (the check
    /// passes) or `false` (the inputs are refused with `message`).
    pub condition: String,
    /// A template rendered with the inputs: the error shown when the condition is false.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FormFile {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default, rename = "input")]
    inputs: Vec<Input>,
    #[serde(default, rename = "check")]
    checks: Vec<Check>,
}

/// A form: the typed inputs of a template and the checks they must pass.
#[derive(Debug, Clone)]
pub struct Form {
    /// The template's name.
    pub name: String,
    /// Where the `form.toml` came from.
    pub origin: String,
    /// One line on what the form produces.
    pub description: Option<String>,
    /// A template over the inputs naming the service the rendered text configures (the
    /// collector stores the result under that name).
    pub service: Option<String>,
    /// The inputs, in order.
    pub inputs: Vec<Input>,
    /// The cross-input checks, in order.
    pub checks: Vec<Check>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Form {
    /// Parses and checks a `form.toml` (`origin` names it in messages).
    pub fn parse(name: &str, text: &str, origin: &str) -> Result<Form> {
        let spec_error = |message: String| Error::FormSpec {
            origin: origin.to_string(),
            message,
        };
        let file: FormFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            spec_error(match line {
                Some(l) => format!("line {l}: {}", e.message()),
                None => e.message().to_string(),
            })
        })?;
        let mut inputs = file.inputs;
        let mut seen = std::collections::HashSet::new();
        for input in &mut inputs {
            let at = format!("input {}", input.name);
            if !valid_name(&input.name) {
                return Err(spec_error(format!(
                    "{at}: the name must be letters, digits and _ (not starting with a digit)"
                )));
            }
            if !seen.insert(input.name.clone()) {
                return Err(spec_error(format!("{at}: defined twice")));
            }
            if input.kind != InputType::Integer && (input.min.is_some() || input.max.is_some()) {
                return Err(spec_error(format!(
                    "{at}: min and max apply to integers only"
                )));
            }
            if let Some(p) = &input.pattern {
                if input.kind != InputType::String {
                    return Err(spec_error(format!("{at}: pattern applies to strings only")));
                }
                let re = Regex::new(&format!("^(?:{p})$"))
                    .map_err(|e| spec_error(format!("{at}: pattern: {e}")))?;
                input.regex = Some(re);
            }
            if let Some(d) = &input.default {
                input
                    .check_value(d)
                    .map_err(|m| spec_error(format!("{at}: default: {m}")))?;
            }
            for c in input.choices.iter().flatten() {
                input
                    .check_type(c)
                    .map_err(|m| spec_error(format!("{at}: choices: {m}")))?;
            }
        }
        for (i, c) in file.checks.iter().enumerate() {
            for (what, t) in [("condition", &c.condition), ("message", &c.message)] {
                inline::check(&format!("{origin}, check {}, {what}", i + 1), t)?;
            }
        }
        if let Some(s) = &file.service {
            inline::check(&format!("{origin}, service"), s)?;
        }
        Ok(Form {
            name: name.to_string(),
            origin: origin.to_string(),
            description: file.description,
            service: file.service,
            inputs,
            checks: file.checks,
        })
    }

    /// The input named `name`.
    pub fn input(&self, name: &str) -> Option<&Input> {
        self.inputs.iter().find(|i| i.name == name)
    }

    fn input_names(&self) -> String {
        self.inputs
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Types `key=value` pairs from a command line by the form's inputs (`32` is an integer
    /// for an integer input, the string `"32"` for a string input).
    pub fn inputs_from_pairs(&self, pairs: &[(String, String)]) -> Result<Map<String, Value>> {
        let mut out = Map::new();
        let mut problems = Vec::new();
        for (k, v) in pairs {
            let problem = |message: String| Problem {
                input: Some(k.clone()),
                message,
            };
            let Some(input) = self.input(k) else {
                problems.push(problem(format!(
                    "unknown input; the form's inputs are: {}",
                    self.input_names()
                )));
                continue;
            };
            if out.contains_key(k) {
                problems.push(problem("given twice".into()));
                continue;
            }
            let value = match input.kind {
                InputType::String => Value::String(v.clone()),
                InputType::Integer => match v.trim().parse::<i64>() {
                    Ok(n) => Value::from(n),
                    Err(_) => {
                        problems.push(problem(format!("expected an integer, got {v:?}")));
                        continue;
                    }
                },
                InputType::Boolean => match v.trim() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => {
                        problems.push(problem(format!("expected true or false, got {v:?}")));
                        continue;
                    }
                },
            };
            out.insert(k.clone(), value);
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(Error::Invalid {
                form: self.name.clone(),
                problems,
            })
        }
    }

    /// Validates `inputs` and returns the data the template renders with: every given or
    /// defaulted input, typed and checked. Unknown inputs, missing mandatory ones, wrong types
    /// and out-of-range values are all reported together. The form's checks are templates:
    /// [`crate::Library::render_form`] runs them on the result.
    pub fn validate_inputs(
        &self,
        inputs: &Map<String, Value>,
        options: FormOptions,
    ) -> Result<Map<String, Value>> {
        let mut problems = Vec::new();
        for k in inputs.keys() {
            if self.input(k).is_none() {
                problems.push(Problem {
                    input: Some(k.clone()),
                    message: format!(
                        "unknown input; the form's inputs are: {}",
                        self.input_names()
                    ),
                });
            }
        }
        let mut data = Map::new();
        for input in &self.inputs {
            let given = inputs.get(&input.name).filter(|v| !v.is_null());
            let value = match (given, &input.default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) if !input.mandatory || options.use_defaults => d.clone(),
                (None, _) if input.mandatory => {
                    problems.push(Problem {
                        input: Some(input.name.clone()),
                        message: format!(
                            "missing: this input is mandatory ({})",
                            input.kind.name()
                        ),
                    });
                    continue;
                }
                (None, _) => continue,
            };
            match input.check_value(&value) {
                Ok(()) => {
                    data.insert(input.name.clone(), value);
                }
                Err(message) => problems.push(Problem {
                    input: Some(input.name.clone()),
                    message,
                }),
            }
        }
        if problems.is_empty() {
            Ok(data)
        } else {
            Err(Error::Invalid {
                form: self.name.clone(),
                problems,
            })
        }
    }
}

impl Input {
    fn check_type(&self, v: &Value) -> std::result::Result<(), String> {
        let ok = match self.kind {
            InputType::Integer => v.as_i64().is_some(),
            InputType::String => v.is_string(),
            InputType::Boolean => v.is_boolean(),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected {}, got {}", self.kind.name(), shown(v)))
        }
    }

    /// Checks a value against the input's type and constraints.
    pub fn check_value(&self, v: &Value) -> std::result::Result<(), String> {
        self.check_type(v)?;
        if let Some(n) = v.as_i64() {
            if let Some(min) = self.min.filter(|m| n < *m) {
                return Err(format!("{n} is less than the minimum, {min}"));
            }
            if let Some(max) = self.max.filter(|m| n > *m) {
                return Err(format!("{n} is more than the maximum, {max}"));
            }
        }
        if let Some(s) = v.as_str() {
            if self.mandatory && s.trim().is_empty() {
                return Err("must not be empty (this input is mandatory)".into());
            }
            if let Some(re) = &self.regex
                && !re.is_match(s)
            {
                let what = self.pattern_help.clone().unwrap_or_else(|| {
                    format!("text matching {}", self.pattern.as_deref().unwrap_or(""))
                });
                return Err(format!("{s:?} is not valid: expected {what}"));
            }
        }
        if let Some(choices) = &self.choices
            && !choices.contains(v)
        {
            let list: Vec<String> = choices.iter().map(shown).collect();
            return Err(format!("{} is not one of {}", shown(v), list.join(", ")));
        }
        Ok(())
    }
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string {s:?}"),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

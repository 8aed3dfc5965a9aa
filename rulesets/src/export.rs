//! OpenSVC collector export JSON (`{"modulesets", "filtersets", "rulesets"}`): lossless import
//! into a [`Bundle`] and export back.
//!
//! The wire shape lives in private serde structs with `deny_unknown_fields`, so a field this
//! crate does not know is an error rather than silently dropped data. Each object is parsed
//! from its own raw slice of the document, so an error names the object (ruleset, variable,
//! filterset, filter, moduleset) and its line and column in the file.

use crate::error::{Error, Result};
use crate::model::*;
use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The export document, each object still raw so it can be located and named on error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportIn<'a> {
    #[serde(default, borrow)]
    modulesets: Vec<&'a RawValue>,
    #[serde(default, borrow)]
    filtersets: Vec<&'a RawValue>,
    #[serde(default, borrow)]
    rulesets: Vec<&'a RawValue>,
}

#[derive(Serialize)]
struct ExportOut {
    modulesets: Vec<ModulesetWire>,
    filtersets: Vec<FiltersetWire<FilterEntryWire>>,
    rulesets: Vec<RulesetWire<VariableWire>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModulesetWire {
    modset_name: String,
    #[serde(default)]
    id: Option<i64>,
    #[serde(default, deserialize_with = "null_default")]
    modules: Vec<ModuleWire>,
    #[serde(default, deserialize_with = "null_default")]
    modulesets: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    rulesets: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    publications: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    responsibles: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModuleWire {
    modset_mod_name: String,
    #[serde(default, deserialize_with = "null_default")]
    autofix: bool,
}

/// `F` is a raw filter entry when reading, a [`FilterEntryWire`] when writing.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FiltersetWire<F> {
    fset_name: String,
    #[serde(default)]
    id: Option<i64>,
    #[serde(default, deserialize_with = "null_default")]
    fset_stats: bool,
    #[serde(default = "Vec::new")]
    filters: Vec<F>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterEntryWire {
    filter: Option<FilterWire>,
    #[serde(default)]
    filterset: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    f_order: i64,
    f_log_op: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterWire {
    #[serde(default)]
    id: Option<i64>,
    f_table: String,
    f_field: String,
    f_op: String,
    #[serde(deserialize_with = "scalar_text")]
    f_value: String,
}

/// `V` is a raw variable when reading, a [`VariableWire`] when writing.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesetWire<V> {
    ruleset_name: String,
    ruleset_type: String,
    #[serde(default, deserialize_with = "null_default")]
    ruleset_public: bool,
    #[serde(default)]
    fset_name: Option<String>,
    #[serde(default)]
    id: Option<i64>,
    #[serde(default = "Vec::new")]
    rulesets: Vec<String>,
    #[serde(default = "Vec::new")]
    variables: Vec<V>,
    #[serde(default, deserialize_with = "null_default")]
    publications: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    responsibles: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariableWire {
    var_name: String,
    /// `null` or absent means `raw`, the collector's column default.
    #[serde(default)]
    var_class: Option<String>,
    /// A text in every real export; other JSON is accepted as the value itself.
    var_value: serde_json::Value,
    #[serde(default)]
    var_author: Option<String>,
    #[serde(default)]
    var_updated: Option<String>,
    #[serde(default)]
    id: Option<i64>,
}

/// `null` reads as the type's default (older collectors export `null` for empty columns).
fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A filter value: text, or a number / bool written without quotes (kept as its JSON text).
fn scalar_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// The OpenSVC spelling of a logical operator.
pub fn logical_op_str(op: LogicalOp) -> &'static str {
    match op {
        LogicalOp::And => "AND",
        LogicalOp::Or => "OR",
        LogicalOp::AndNot => "AND NOT",
        LogicalOp::OrNot => "OR NOT",
    }
}

/// Parses an OpenSVC logical operator (`AND`, `OR`, `AND NOT`, `OR NOT`; case and inner
/// spacing are not significant).
pub fn parse_logical_op(s: &str) -> Option<LogicalOp> {
    let norm = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase();
    Some(match norm.as_str() {
        "AND" => LogicalOp::And,
        "OR" => LogicalOp::Or,
        "AND NOT" => LogicalOp::AndNot,
        "OR NOT" => LogicalOp::OrNot,
        _ => return None,
    })
}

/// The OpenSVC spelling of a filter operator.
pub fn filter_op_str(op: FilterOp) -> &'static str {
    match op {
        FilterOp::Eq => "=",
        FilterOp::Ne => "!=",
        FilterOp::Like => "LIKE",
        FilterOp::NotLike => "NOT LIKE",
        FilterOp::Lt => "<",
        FilterOp::Le => "<=",
        FilterOp::Gt => ">",
        FilterOp::Ge => ">=",
        FilterOp::In => "IN",
        FilterOp::NotIn => "NOT IN",
    }
}

/// Parses an OpenSVC filter operator (`=`, `!=`, `LIKE`, `NOT LIKE`, `<`, `<=`, `>`, `>=`, `IN`,
/// `NOT IN`; keywords in any case).
pub fn parse_filter_op(s: &str) -> Option<FilterOp> {
    let norm = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase();
    Some(match norm.as_str() {
        "=" => FilterOp::Eq,
        "!=" | "<>" => FilterOp::Ne,
        "LIKE" => FilterOp::Like,
        "NOT LIKE" => FilterOp::NotLike,
        "<" => FilterOp::Lt,
        "<=" => FilterOp::Le,
        ">" => FilterOp::Gt,
        ">=" => FilterOp::Ge,
        "IN" => FilterOp::In,
        "NOT IN" => FilterOp::NotIn,
        _ => return None,
    })
}

/// Expected-values text shared by both formats' error messages.
pub(crate) const FILTER_OPS: &str = "=, !=, LIKE, NOT LIKE, <, <=, >, >=, IN, NOT IN";
pub(crate) const LOGICAL_OPS: &str = "AND, OR, AND NOT, OR NOT";

/// Parses a ruleset type, `explicit` or `contextual`.
pub fn parse_ruleset_type(s: &str) -> Option<RulesetType> {
    match s {
        "explicit" => Some(RulesetType::Explicit),
        "contextual" => Some(RulesetType::Contextual),
        _ => None,
    }
}

/// The spelling of a ruleset type.
pub fn ruleset_type_str(t: RulesetType) -> &'static str {
    match t {
        RulesetType::Explicit => "explicit",
        RulesetType::Contextual => "contextual",
    }
}

/// The document being read, for positions in messages.
struct Src<'a> {
    path: &'a str,
    text: &'a str,
}

impl<'a> Src<'a> {
    /// `path:line:column` of a byte offset.
    fn at(&self, offset: usize) -> String {
        let (l, c) = line_col(self.text, offset);
        format!("{}:{l}:{c}", self.path)
    }

    /// Byte offset of a raw value borrowed from the document.
    fn offset_of(&self, raw: &RawValue) -> usize {
        (raw.get().as_ptr() as usize)
            .checked_sub(self.text.as_ptr() as usize)
            .filter(|o| *o <= self.text.len())
            .unwrap_or(0)
    }

    fn raw_at(&self, raw: &RawValue) -> String {
        self.at(self.offset_of(raw))
    }

    /// Parses one object from its raw slice; an error names `what` and the absolute position.
    fn parse<T: Deserialize<'a>>(&self, raw: &'a RawValue, what: &dyn Fn() -> String) -> Result<T> {
        serde_json::from_str(raw.get()).map_err(|e| {
            let inner = offset_in(raw.get(), e.line(), e.column());
            Error::Parse {
                path: self.at(self.offset_of(raw) + inner),
                message: format!("{}: {}", what(), strip_position(&e)),
            }
        })
    }

    fn err(&self, raw: &RawValue, message: String) -> Error {
        Error::Parse {
            path: self.raw_at(raw),
            message,
        }
    }
}

/// Byte offset of serde_json's 1-based line / column inside `s`.
fn offset_in(s: &str, line: usize, column: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        s.match_indices('\n')
            .nth(line - 2)
            .map_or(s.len(), |(i, _)| i + 1)
    };
    (line_start + column.saturating_sub(1)).min(s.len())
}

/// serde_json's message without its " at line L column C" suffix (the path carries it).
fn strip_position(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    msg.strip_suffix(&suffix).map(str::to_string).unwrap_or(msg)
}

/// The string field `key` of a raw object, for naming it in a message.
fn raw_name(raw: &RawValue, key: &str, index: usize) -> String {
    serde_json::from_str::<serde_json::Value>(raw.get())
        .ok()
        .and_then(|v| v.get(key).and_then(|n| n.as_str()).map(str::to_string))
        .unwrap_or_else(|| format!("#{}", index + 1))
}

/// Loads an OpenSVC export document. `path` names the file in messages. The bundle is
/// validated ([`Bundle::validate`]); duplicate names are errors.
pub fn from_json(text: &str, path: &str) -> Result<Bundle> {
    let src = Src { path, text };
    let doc: ExportIn = serde_json::from_str(text).map_err(|e| Error::Parse {
        path: src.at(offset_in(text, e.line(), e.column())),
        message: match e.classify() {
            serde_json::error::Category::Data => {
                format!("not an OpenSVC export: {}", strip_position(&e))
            }
            _ => format!("invalid JSON: {}", strip_position(&e)),
        },
    })?;
    let mut bundle = Bundle::default();
    let mut origins = Origins::new();
    let doc_index = origins.add_doc(path, text);
    let mut claim = |kind: ObjectKind, name: &str, raw: &RawValue| -> Result<()> {
        origins.claim(doc_index, kind, name, src.offset_of(raw))
    };

    for (i, raw) in doc.filtersets.iter().enumerate() {
        let what = || format!("filterset {}", raw_name(raw, "fset_name", i));
        let w: FiltersetWire<&RawValue> = src.parse(raw, &what)?;
        let mut filters = Vec::with_capacity(w.filters.len());
        for (j, fraw) in w.filters.iter().enumerate() {
            let what = || format!("filterset {}, filter {}", w.fset_name, j + 1);
            let e: FilterEntryWire = src.parse(fraw, &what)?;
            let logical_op = parse_logical_op(&e.f_log_op).ok_or_else(|| {
                src.err(
                    fraw,
                    format!(
                        "{}: unknown f_log_op {:?} (expected one of {LOGICAL_OPS})",
                        what(),
                        e.f_log_op
                    ),
                )
            })?;
            let test = match (e.filter, e.filterset) {
                (Some(f), None) => {
                    let op = parse_filter_op(&f.f_op).ok_or_else(|| {
                        src.err(
                            fraw,
                            format!(
                                "{}: unknown f_op {:?} (expected one of {FILTER_OPS})",
                                what(),
                                f.f_op
                            ),
                        )
                    })?;
                    FilterTest::Filter(Filter {
                        table: f.f_table,
                        field: f.f_field,
                        op,
                        value: f.f_value,
                        id: f.id,
                    })
                }
                (None, Some(name)) => FilterTest::Filterset(name),
                _ => {
                    return Err(src.err(
                        fraw,
                        format!(
                            "{}: exactly one of \"filter\" and \"filterset\" must be set",
                            what()
                        ),
                    ));
                }
            };
            filters.push(FilterEntry {
                logical_op,
                order: e.f_order,
                test,
            });
        }
        claim(ObjectKind::Filterset, &w.fset_name, raw)?;
        bundle.filtersets.insert(
            w.fset_name.clone(),
            Filterset {
                name: w.fset_name,
                stats: w.fset_stats,
                id: w.id,
                filters,
            },
        );
    }

    for (i, raw) in doc.rulesets.iter().enumerate() {
        let what = || format!("ruleset {}", raw_name(raw, "ruleset_name", i));
        let w: RulesetWire<&RawValue> = src.parse(raw, &what)?;
        let kind = parse_ruleset_type(&w.ruleset_type).ok_or_else(|| {
            src.err(
                raw,
                format!(
                    "ruleset {}: unknown ruleset_type {:?} (expected explicit or contextual)",
                    w.ruleset_name, w.ruleset_type
                ),
            )
        })?;
        let mut variables = Vec::with_capacity(w.variables.len());
        for (j, vraw) in w.variables.iter().enumerate() {
            let what = || {
                format!(
                    "ruleset {}, variable {}",
                    w.ruleset_name,
                    raw_name(vraw, "var_name", j)
                )
            };
            let v: VariableWire = src.parse(vraw, &what)?;
            let value = match v.var_value {
                serde_json::Value::String(s) => VarValue::from_text(&s),
                other => VarValue::Json(other),
            };
            variables.push(Variable {
                name: v.var_name,
                class: v.var_class.unwrap_or_else(|| "raw".to_string()),
                value,
                id: v.id,
                author: v.var_author,
                updated: v.var_updated,
            });
        }
        claim(ObjectKind::Ruleset, &w.ruleset_name, raw)?;
        bundle.rulesets.insert(
            w.ruleset_name.clone(),
            Ruleset {
                name: w.ruleset_name,
                kind,
                filterset: w.fset_name,
                public: w.ruleset_public,
                children: w.rulesets,
                variables,
                meta: Meta {
                    id: w.id,
                    publications: w.publications,
                    responsibles: w.responsibles,
                },
            },
        );
    }

    for (i, raw) in doc.modulesets.iter().enumerate() {
        let what = || format!("moduleset {}", raw_name(raw, "modset_name", i));
        let w: ModulesetWire = src.parse(raw, &what)?;
        claim(ObjectKind::Moduleset, &w.modset_name, raw)?;
        bundle.modulesets.insert(
            w.modset_name.clone(),
            Moduleset {
                name: w.modset_name,
                modules: w
                    .modules
                    .into_iter()
                    .map(|m| ModuleRef {
                        name: m.modset_mod_name,
                        autofix: m.autofix,
                    })
                    .collect(),
                children: w.modulesets,
                rulesets: w.rulesets,
                meta: Meta {
                    id: w.id,
                    publications: w.publications,
                    responsibles: w.responsibles,
                },
            },
        );
    }

    validate_at(&bundle, &origins, path)?;
    Ok(bundle)
}

/// Writes a bundle as an OpenSVC export document (pretty JSON, objects in bundle order), which
/// the collector's import and [`from_json`] accept.
pub fn to_json(bundle: &Bundle) -> String {
    let out = ExportOut {
        modulesets: bundle
            .modulesets
            .values()
            .map(|m| ModulesetWire {
                modset_name: m.name.clone(),
                id: m.meta.id,
                modules: m
                    .modules
                    .iter()
                    .map(|r| ModuleWire {
                        modset_mod_name: r.name.clone(),
                        autofix: r.autofix,
                    })
                    .collect(),
                modulesets: m.children.clone(),
                rulesets: m.rulesets.clone(),
                publications: m.meta.publications.clone(),
                responsibles: m.meta.responsibles.clone(),
            })
            .collect(),
        filtersets: bundle
            .filtersets
            .values()
            .map(|f| FiltersetWire {
                fset_name: f.name.clone(),
                id: f.id,
                fset_stats: f.stats,
                filters: f
                    .filters
                    .iter()
                    .map(|e| {
                        let (filter, filterset) = match &e.test {
                            FilterTest::Filter(f) => (
                                Some(FilterWire {
                                    id: f.id,
                                    f_table: f.table.clone(),
                                    f_field: f.field.clone(),
                                    f_op: filter_op_str(f.op).to_string(),
                                    f_value: f.value.clone(),
                                }),
                                None,
                            ),
                            FilterTest::Filterset(n) => (None, Some(n.clone())),
                        };
                        FilterEntryWire {
                            filter,
                            filterset,
                            f_order: e.order,
                            f_log_op: logical_op_str(e.logical_op).to_string(),
                        }
                    })
                    .collect(),
            })
            .collect(),
        rulesets: bundle
            .rulesets
            .values()
            .map(|r| RulesetWire {
                ruleset_name: r.name.clone(),
                ruleset_type: ruleset_type_str(r.kind).to_string(),
                ruleset_public: r.public,
                fset_name: r.filterset.clone(),
                id: r.meta.id,
                rulesets: r.children.clone(),
                variables: r
                    .variables
                    .iter()
                    .map(|v| VariableWire {
                        var_name: v.name.clone(),
                        var_class: Some(v.class.clone()),
                        var_value: serde_json::Value::String(v.value.to_text()),
                        var_author: v.author.clone(),
                        var_updated: v.updated.clone(),
                        id: v.id,
                    })
                    .collect(),
                publications: r.meta.publications.clone(),
                responsibles: r.meta.responsibles.clone(),
            })
            .collect(),
    };
    // Plain structs of strings, numbers and lists: serialization cannot fail.
    serde_json::to_string_pretty(&out)
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"{
  "filtersets": [
    {"fset_name": "linux", "fset_stats": false, "id": 1,
     "filters": [{"filter": {"f_table": "nodes", "f_field": "os_name", "f_op": "=", "f_value": "Linux", "id": 2},
                  "filterset": null, "f_order": 0, "f_log_op": "AND"}]}
  ],
  "rulesets": [
    {"ruleset_name": "r", "ruleset_type": "contextual", "ruleset_public": true, "fset_name": "linux",
     "id": 3, "rulesets": [], "publications": [], "responsibles": [],
     "variables": [{"var_name": "v", "var_class": "raw", "var_value": "plain text",
                    "var_author": "me", "var_updated": "2016-01-01 00:00:00", "id": 4}]}
  ]
}"#;

    #[test]
    fn loads_and_round_trips() {
        let b = from_json(SMALL, "small.json").unwrap_or_default();
        assert_eq!(
            b.rulesets["r"].variables[0].value,
            VarValue::Text("plain text".into())
        );
        assert_eq!(from_json(&to_json(&b), "out.json").unwrap_or_default(), b);
    }

    fn err(text: &str) -> String {
        match from_json(text, "x.json") {
            Ok(_) => String::from("no error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn errors_name_object_and_position() {
        let e = err(&SMALL.replace("\"f_op\": \"=\"", "\"f_op\": \"~\""));
        assert!(
            e.starts_with("x.json:4:")
                && e.contains("filterset linux, filter 1: unknown f_op \"~\""),
            "{e}"
        );
        let e = err(&SMALL.replace("\"var_author\"", "\"var_authr\""));
        assert!(
            e.starts_with("x.json:11:")
                && e.contains("ruleset r, variable v: unknown field `var_authr`"),
            "{e}"
        );
        let e = err(&SMALL.replace("\"contextual\"", "\"sometimes\""));
        assert!(
            e.contains("ruleset r: unknown ruleset_type \"sometimes\""),
            "{e}"
        );
        let e = err("{\"rulesets\": [}");
        assert!(e.starts_with("x.json:1:"), "{e}");
        let e = err(&SMALL.replace(
            "true, \"fset_name\": \"linux\"",
            "true, \"fset_name\": \"nope\"",
        ));
        assert!(
            e.contains("ruleset r") && e.contains("\"nope\" does not exist"),
            "{e}"
        );
    }

    #[test]
    fn duplicates_are_errors() {
        let dup = SMALL.replace(
            "\"rulesets\": [\n",
            "\"rulesets\": [\n    {\"ruleset_name\": \"r\", \"ruleset_type\": \"explicit\"},\n",
        );
        let e = err(&dup);
        assert!(
            e.contains("ruleset r: duplicate name (first defined at x.json:"),
            "{e}"
        );
    }
}

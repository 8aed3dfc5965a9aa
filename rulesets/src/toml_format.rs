//! The Tenet TOML format: a folder of `*.toml` files, each holding any number of
//! `[[ruleset]]`, `[[filterset]]` and `[[moduleset]]` tables. The format reference is
//! `rulesets/README.md`; the serde structs below are its schema.
//!
//! Reading is strict (`deny_unknown_fields`, so a misspelt key is an error, not a silently
//! ignored setting) and every error names the file, line and column, and the object at fault.
//! Writing is lossless: a value TOML cannot carry exactly (JSON `null`, integers above
//! `i64::MAX`, anything that is not JSON) is written as its OpenSVC text in a TOML string,
//! which reads back identically.

use crate::error::{Error, Result};
use crate::export::{
    FILTER_OPS, LOGICAL_OPS, filter_op_str, logical_op_str, parse_filter_op, parse_logical_op,
    parse_ruleset_type, ruleset_type_str,
};
use crate::model::*;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use tenet_fsutil::{DEFAULT_MODE, atomic_write};
use toml::Spanned;

/// One TOML document. Every key is optional; a file may define any mix of objects.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    /// Rulesets defined in this file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ruleset: Vec<Spanned<RulesetToml>>,
    /// Filtersets defined in this file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    filterset: Vec<Spanned<FiltersetToml>>,
    /// Modulesets defined in this file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    moduleset: Vec<Spanned<ModulesetToml>>,
}

/// `[[ruleset]]`
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesetToml {
    /// Unique name across the bundle (required).
    name: Spanned<String>,
    /// `"explicit"` (default) or `"contextual"`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    kind: Option<Spanned<String>>,
    /// A public contextual ruleset applies to every node its filterset matches (default false).
    #[serde(default, skip_serializing_if = "is_false")]
    public: bool,
    /// Name of the filterset deciding where a contextual ruleset applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filterset: Option<String>,
    /// Names of nested rulesets, whose variables are merged into this one (default []).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rulesets: Vec<String>,
    /// Collector database id (kept for round-trips with an OpenSVC collector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    /// Groups the ruleset is published to (default []).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    publications: Vec<String>,
    /// Groups responsible for the ruleset (default []).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    responsibles: Vec<String>,
    /// The variables, in order (`[[ruleset.variable]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    variable: Vec<Spanned<VariableToml>>,
}

/// `[[ruleset.variable]]`
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariableToml {
    /// Variable name; its environment name is `OSVC_COMP_<NAME>` (required).
    name: Spanned<String>,
    /// Object class consuming the value: `file`, `sysctl`, `package`, ... (default `raw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    class: Option<String>,
    /// Collector database id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    /// Last author, as the collector records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    author: Option<String>,
    /// Last update time, as the collector records it (`YYYY-MM-DD HH:MM:SS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated: Option<String>,
    /// The value (required): a string is read like an OpenSVC `var_value` text (JSON when it
    /// parses, else plain text); a table, array, integer, float or boolean is structured JSON.
    value: Spanned<toml::Value>,
}

/// `[[filterset]]`
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FiltersetToml {
    /// Unique name across the bundle (required).
    name: Spanned<String>,
    /// The collector's `fset_stats` flag (default false).
    #[serde(default, skip_serializing_if = "is_false")]
    stats: bool,
    /// Collector database id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    /// Entries, evaluated in order (`[[filterset.filter]]`); none means the filterset never
    /// matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    filter: Vec<Spanned<FilterToml>>,
}

/// `[[filterset.filter]]`: either a comparison (`table`, `field`, `op`, `value`) or a nested
/// filterset (`filterset`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterToml {
    /// Fact table: `nodes`, `packages`, `tags`, `services`, `svcmon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table: Option<String>,
    /// Field of that table: `os_name`, `pkg_name`, `tag_name`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// `=`, `!=`, `LIKE`, `NOT LIKE`, `<`, `<=`, `>`, `>=`, `IN`, `NOT IN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    op: Option<Spanned<String>>,
    /// Right-hand side, a string (numbers and booleans are taken as their text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Spanned<toml::Value>>,
    /// A nested filterset, by name, instead of a comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filterset: Option<String>,
    /// How the entry combines with the result so far: `AND` (default), `OR`, `AND NOT`,
    /// `OR NOT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    logic: Option<Spanned<String>>,
    /// The collector's `f_order` (default 0); entries are evaluated in file order.
    #[serde(default, skip_serializing_if = "is_zero")]
    order: i64,
    /// Collector database id of the filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
}

/// `[[moduleset]]`
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModulesetToml {
    /// Unique name across the bundle (required).
    name: Spanned<String>,
    /// Names of child modulesets, selected with this one (default []).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    modulesets: Vec<String>,
    /// Rulesets attached to this moduleset, visible only to its modules (default []).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rulesets: Vec<String>,
    /// Collector database id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    /// Groups the moduleset is published to (default []).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    publications: Vec<String>,
    /// Groups responsible for the moduleset (default []).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    responsibles: Vec<String>,
    /// Modules, in order (`[[moduleset.modules]]` or `modules = [{ name = "..." }]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    modules: Vec<ModuleToml>,
}

/// One entry of `modules`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModuleToml {
    /// Module name (required).
    name: String,
    /// Whether `compliance auto` fixes the module rather than only checking it (default false).
    #[serde(default)]
    autofix: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(i: &i64) -> bool {
    *i == 0
}

/// A lenient view of a document, only to name the object an error falls in.
#[derive(Deserialize)]
struct LooseFile {
    #[serde(default)]
    ruleset: Vec<Spanned<LooseObject>>,
    #[serde(default)]
    filterset: Vec<Spanned<LooseObject>>,
    #[serde(default)]
    moduleset: Vec<Spanned<LooseObject>>,
}

#[derive(Deserialize)]
struct LooseObject {
    #[serde(default)]
    name: Option<toml::Value>,
    #[serde(default)]
    variable: Vec<Spanned<LooseObject>>,
    #[serde(default)]
    filter: Vec<Spanned<serde::de::IgnoredAny>>,
}

/// The object (`ruleset X, variable Y`, `filterset Z, filter 2`) whose table starts last
/// before `offset`.
fn object_at(text: &str, offset: usize) -> Option<String> {
    let loose: LooseFile = toml::from_str(text).ok()?;
    let name = |o: &LooseObject, i: usize| match &o.name {
        Some(toml::Value::String(s)) => s.clone(),
        _ => format!("#{}", i + 1),
    };
    let mut marks: Vec<(usize, String)> = Vec::new();
    for (kind, list) in [
        ("ruleset", &loose.ruleset),
        ("filterset", &loose.filterset),
        ("moduleset", &loose.moduleset),
    ] {
        for (i, obj) in list.iter().enumerate() {
            let obj_name = format!("{kind} {}", name(obj.get_ref(), i));
            for (j, var) in obj.get_ref().variable.iter().enumerate() {
                marks.push((
                    var.span().start,
                    format!("{obj_name}, variable {}", name(var.get_ref(), j)),
                ));
            }
            for (j, f) in obj.get_ref().filter.iter().enumerate() {
                marks.push((f.span().start, format!("{obj_name}, filter {}", j + 1)));
            }
            marks.push((obj.span().start, obj_name));
        }
    }
    marks
        .into_iter()
        .filter(|(start, _)| *start <= offset)
        .max_by_key(|(start, _)| *start)
        .map(|(_, what)| what)
}

/// One document being read, for positions in messages.
struct Src<'a> {
    path: &'a str,
    text: &'a str,
}

impl Src<'_> {
    fn at(&self, offset: usize) -> String {
        let (l, c) = line_col(self.text, offset);
        format!("{}:{l}:{c}", self.path)
    }

    fn err(&self, offset: usize, message: String) -> Error {
        Error::Parse {
            path: self.at(offset),
            message,
        }
    }
}

/// Parses document `doc` of `origins` into `bundle`, recording where each object starts.
/// Duplicate names (within the document or with objects already in `bundle`) are errors naming
/// both places.
fn parse_into(doc: usize, bundle: &mut Bundle, origins: &mut Origins) -> Result<()> {
    let (path, text) = origins.doc(doc);
    let src = Src { path, text };
    let parsed: FileToml = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let message = e.message().trim_end().to_string();
        Error::Parse {
            path: src.at(offset),
            message: match object_at(text, offset) {
                Some(what) => format!("{what}: {message}"),
                None => message,
            },
        }
    })?;
    let mut claim = |kind: ObjectKind, name: &str, offset: usize| -> Result<()> {
        origins.claim(doc, kind, name, offset)
    };

    for r in parsed.ruleset {
        let start = r.span().start;
        let r = r.into_inner();
        let name = r.name.get_ref().clone();
        let what = format!("ruleset {name}");
        let kind = match &r.kind {
            None => RulesetType::Explicit,
            Some(k) => parse_ruleset_type(k.get_ref()).ok_or_else(|| {
                src.err(
                    k.span().start,
                    format!("{what}: type: unknown ruleset type {:?} (expected \"explicit\" or \"contextual\")", k.get_ref()),
                )
            })?,
        };
        let mut variables = Vec::with_capacity(r.variable.len());
        for v in r.variable {
            let v = v.into_inner();
            let vname = v.name.get_ref().clone();
            let value_at = v.value.span().start;
            let value = value_from_toml(v.value.into_inner())
                .map_err(|m| src.err(value_at, format!("{what}, variable {vname}: value: {m}")))?;
            variables.push(Variable {
                name: vname,
                class: v.class.unwrap_or_else(|| "raw".to_string()),
                value,
                id: v.id,
                author: v.author,
                updated: v.updated,
            });
        }
        claim(ObjectKind::Ruleset, &name, start)?;
        bundle.rulesets.insert(
            name.clone(),
            Ruleset {
                name,
                kind,
                filterset: r.filterset,
                public: r.public,
                children: r.rulesets,
                variables,
                meta: Meta {
                    id: r.id,
                    publications: r.publications,
                    responsibles: r.responsibles,
                },
            },
        );
    }

    for f in parsed.filterset {
        let start = f.span().start;
        let f = f.into_inner();
        let name = f.name.get_ref().clone();
        let mut filters = Vec::with_capacity(f.filter.len());
        for (i, e) in f.filter.into_iter().enumerate() {
            let entry_at = e.span().start;
            let e = e.into_inner();
            let what = format!("filterset {name}, filter {}", i + 1);
            let logical_op = match &e.logic {
                None => LogicalOp::And,
                Some(l) => parse_logical_op(l.get_ref()).ok_or_else(|| {
                    src.err(
                        l.span().start,
                        format!(
                            "{what}: logic: unknown operator {:?} (expected one of {LOGICAL_OPS})",
                            l.get_ref()
                        ),
                    )
                })?,
            };
            let test = match (e.filterset, e.table, e.field, e.op, e.value) {
                (Some(child), None, None, None, None) => FilterTest::Filterset(child),
                (None, Some(table), Some(field), Some(op), Some(value)) => {
                    let op_at = op.span().start;
                    let op = parse_filter_op(op.get_ref()).ok_or_else(|| {
                        src.err(
                            op_at,
                            format!(
                                "{what}: op: unknown operator {:?} (expected one of {FILTER_OPS})",
                                op.get_ref()
                            ),
                        )
                    })?;
                    let value_at = value.span().start;
                    let value = match value.into_inner() {
                        toml::Value::String(s) => s,
                        v @ (toml::Value::Integer(_)
                        | toml::Value::Float(_)
                        | toml::Value::Boolean(_)) => v.to_string(),
                        other => {
                            return Err(src.err(
                                value_at,
                                format!(
                                    "{what}: value: expected a string, found {}",
                                    other.type_str()
                                ),
                            ));
                        }
                    };
                    FilterTest::Filter(Filter {
                        table,
                        field,
                        op,
                        value,
                        id: e.id,
                    })
                }
                _ => {
                    return Err(src.err(
                        entry_at,
                        format!(
                            "{what}: set either table, field, op and value, or filterset alone"
                        ),
                    ));
                }
            };
            filters.push(FilterEntry {
                logical_op,
                order: e.order,
                test,
            });
        }
        claim(ObjectKind::Filterset, &name, start)?;
        bundle.filtersets.insert(
            name.clone(),
            Filterset {
                name,
                stats: f.stats,
                id: f.id,
                filters,
            },
        );
    }

    for m in parsed.moduleset {
        let start = m.span().start;
        let m = m.into_inner();
        let name = m.name.get_ref().clone();
        claim(ObjectKind::Moduleset, &name, start)?;
        bundle.modulesets.insert(
            name.clone(),
            Moduleset {
                name,
                modules: m
                    .modules
                    .into_iter()
                    .map(|x| ModuleRef {
                        name: x.name,
                        autofix: x.autofix,
                    })
                    .collect(),
                children: m.modulesets,
                rulesets: m.rulesets,
                meta: Meta {
                    id: m.id,
                    publications: m.publications,
                    responsibles: m.responsibles,
                },
            },
        );
    }
    Ok(())
}

/// A variable value from TOML: a string is OpenSVC text, anything else structured JSON.
fn value_from_toml(v: toml::Value) -> Result<VarValue, String> {
    match v {
        toml::Value::String(s) => Ok(VarValue::from_text(&s)),
        other => Ok(VarValue::Json(toml_to_json(other)?)),
    }
}

fn toml_to_json(v: toml::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => J::Number(
            serde_json::Number::from_f64(f)
                .ok_or_else(|| format!("{f} has no JSON representation"))?,
        ),
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => {
            return Err(format!(
                "TOML datetime {d} has no JSON representation (quote it to make it a string)"
            ));
        }
        toml::Value::Array(a) => {
            J::Array(a.into_iter().map(toml_to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(t) => J::Object(
            t.into_iter()
                .map(|(k, v)| Ok((k, toml_to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// Structured TOML for JSON TOML can carry exactly (no null, integers within i64).
fn json_to_toml(v: &serde_json::Value) -> Option<toml::Value> {
    use serde_json::Value as J;
    Some(match v {
        J::Null => return None,
        J::Bool(b) => toml::Value::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None if n.is_f64() => toml::Value::Float(n.as_f64()?),
            None => return None,
        },
        J::String(s) => toml::Value::String(s.clone()),
        J::Array(a) => toml::Value::Array(a.iter().map(json_to_toml).collect::<Option<_>>()?),
        J::Object(o) => toml::Value::Table(
            o.iter()
                .map(|(k, v)| Some((k.clone(), json_to_toml(v)?)))
                .collect::<Option<_>>()?,
        ),
    })
}

/// The TOML form of a value: structured when exact, else the OpenSVC text as a string.
fn value_to_toml(v: &VarValue) -> toml::Value {
    if let VarValue::Json(
        j @ (serde_json::Value::Object(_)
        | serde_json::Value::Array(_)
        | serde_json::Value::Number(_)
        | serde_json::Value::Bool(_)),
    ) = v
        && let Some(t) = json_to_toml(j)
    {
        return t;
    }
    toml::Value::String(v.to_text())
}

fn spanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}

fn ruleset_toml(r: &Ruleset) -> RulesetToml {
    RulesetToml {
        name: spanned(r.name.clone()),
        kind: Some(spanned(ruleset_type_str(r.kind).to_string())),
        public: r.public,
        filterset: r.filterset.clone(),
        rulesets: r.children.clone(),
        id: r.meta.id,
        publications: r.meta.publications.clone(),
        responsibles: r.meta.responsibles.clone(),
        variable: r
            .variables
            .iter()
            .map(|v| {
                spanned(VariableToml {
                    name: spanned(v.name.clone()),
                    class: Some(v.class.clone()),
                    id: v.id,
                    author: v.author.clone(),
                    updated: v.updated.clone(),
                    value: spanned(value_to_toml(&v.value)),
                })
            })
            .collect(),
    }
}

fn filterset_toml(f: &Filterset) -> FiltersetToml {
    FiltersetToml {
        name: spanned(f.name.clone()),
        stats: f.stats,
        id: f.id,
        filter: f
            .filters
            .iter()
            .map(|e| {
                let logic = Some(spanned(logical_op_str(e.logical_op).to_string()));
                spanned(match &e.test {
                    FilterTest::Filter(x) => FilterToml {
                        table: Some(x.table.clone()),
                        field: Some(x.field.clone()),
                        op: Some(spanned(filter_op_str(x.op).to_string())),
                        value: Some(spanned(toml::Value::String(x.value.clone()))),
                        filterset: None,
                        logic,
                        order: e.order,
                        id: x.id,
                    },
                    FilterTest::Filterset(child) => FilterToml {
                        table: None,
                        field: None,
                        op: None,
                        value: None,
                        filterset: Some(child.clone()),
                        logic,
                        order: e.order,
                        id: None,
                    },
                })
            })
            .collect(),
    }
}

fn moduleset_toml(m: &Moduleset) -> ModulesetToml {
    ModulesetToml {
        name: spanned(m.name.clone()),
        modulesets: m.children.clone(),
        rulesets: m.rulesets.clone(),
        id: m.meta.id,
        publications: m.meta.publications.clone(),
        responsibles: m.meta.responsibles.clone(),
        modules: m
            .modules
            .iter()
            .map(|x| ModuleToml {
                name: x.name.clone(),
                autofix: x.autofix,
            })
            .collect(),
    }
}

fn render(doc: &FileToml) -> Result<String> {
    toml::to_string(doc).map_err(|e| Error::Invalid {
        context: "TOML writer".to_string(),
        message: e.to_string(),
    })
}

/// Parses one TOML document (`path` names it in messages) and validates it as a whole bundle.
pub fn from_toml_str(text: &str, path: &str) -> Result<Bundle> {
    let mut bundle = Bundle::default();
    let mut origins = Origins::new();
    let doc = origins.add_doc(path, text);
    parse_into(doc, &mut bundle, &mut origins)?;
    validate_at(&bundle, &origins, path)?;
    Ok(bundle)
}

/// Loads one TOML file as a whole bundle.
pub fn load_file(path: &Path) -> Result<Bundle> {
    let text = read(path)?;
    from_toml_str(&text, &path.display().to_string())
}

/// Loads every `*.toml` file under `dir` (recursively, in sorted path order; names starting
/// with `.` are skipped, symlinked directories are not followed) as one bundle, then validates
/// it. A name defined twice is an error naming both places.
pub fn load_dir(dir: &Path) -> Result<Bundle> {
    let mut files = Vec::new();
    collect_toml_files(dir, &mut files)?;
    // Every text is kept until the bundle is validated, so that a message can still point
    // into any of them.
    let texts = files
        .iter()
        .map(|f| Ok((f.display().to_string(), read(f)?)))
        .collect::<Result<Vec<(String, String)>>>()?;
    let mut bundle = Bundle::default();
    let mut origins = Origins::new();
    for (path, text) in &texts {
        let doc = origins.add_doc(path, text);
        parse_into(doc, &mut bundle, &mut origins)?;
    }
    validate_at(&bundle, &origins, &dir.display().to_string())?;
    Ok(bundle)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| io_err(path, e))
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn collect_toml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| io_err(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| io_err(&path, e))?;
        if ft.is_dir() {
            collect_toml_files(&path, out)?;
        } else if name.ends_with(".toml") && (ft.is_file() || path.is_file()) {
            out.push(path);
        }
    }
    Ok(())
}

/// The whole bundle as one TOML document (rulesets, then filtersets, then modulesets, each in
/// bundle order). [`from_toml_str`] reads it back to an equal bundle.
pub fn to_toml_string(bundle: &Bundle) -> String {
    let doc = FileToml {
        ruleset: bundle
            .rulesets
            .values()
            .map(|r| spanned(ruleset_toml(r)))
            .collect(),
        filterset: bundle
            .filtersets
            .values()
            .map(|f| spanned(filterset_toml(f)))
            .collect(),
        moduleset: bundle
            .modulesets
            .values()
            .map(|m| spanned(moduleset_toml(m)))
            .collect(),
    };
    // Only strings, integers, floats, booleans, arrays and tables are built: rendering cannot
    // fail, but a message beats a panic if it ever does.
    render(&doc).unwrap_or_else(|e| format!("# {e}\n"))
}

/// A file name for an object name: ASCII letters, digits and `.-_@+` are kept, anything else
/// becomes `_`; a leading `.` (a hidden file [`load_dir`] would skip) becomes `_`.
pub fn file_stem(name: &str) -> String {
    let mut stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_@+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.starts_with('.') {
        stem.replace_range(0..1, "_");
    }
    if stem.is_empty() {
        stem.push('_');
    }
    // Leave room for a collision suffix and the extension within the usual 255-byte limit.
    stem.truncate(200);
    stem
}

/// Writes the bundle under `dir`, one object per file: `rulesets/<name>.toml`,
/// `filtersets/<name>.toml`, `modulesets/<name>.toml` (names through [`file_stem`]; a collision
/// gets a `-2`, `-3`, ... suffix). Each file is written to a temporary file and renamed into
/// place. Other `*.toml` files in those three folders are removed, so the folders mirror the
/// bundle; anything else under `dir` is left alone.
pub fn write_dir(bundle: &Bundle, dir: &Path) -> Result<()> {
    let rulesets = bundle.rulesets.values().map(|r| {
        (
            r.name.as_str(),
            FileToml {
                ruleset: vec![spanned(ruleset_toml(r))],
                ..Default::default()
            },
        )
    });
    write_objects(&dir.join("rulesets"), rulesets)?;
    let filtersets = bundle.filtersets.values().map(|f| {
        (
            f.name.as_str(),
            FileToml {
                filterset: vec![spanned(filterset_toml(f))],
                ..Default::default()
            },
        )
    });
    write_objects(&dir.join("filtersets"), filtersets)?;
    let modulesets = bundle.modulesets.values().map(|m| {
        (
            m.name.as_str(),
            FileToml {
                moduleset: vec![spanned(moduleset_toml(m))],
                ..Default::default()
            },
        )
    });
    write_objects(&dir.join("modulesets"), modulesets)
}

fn write_objects<'a>(sub: &Path, objects: impl Iterator<Item = (&'a str, FileToml)>) -> Result<()> {
    std::fs::create_dir_all(sub).map_err(|e| io_err(sub, e))?;
    let mut written: HashSet<String> = HashSet::new();
    for (name, doc) in objects {
        let stem = file_stem(name);
        // Compared lower-cased so case-insensitive file systems cannot merge two objects.
        let mut file = format!("{stem}.toml");
        let mut n = 2;
        while written.contains(&file.to_lowercase()) {
            file = format!("{stem}-{n}.toml");
            n += 1;
        }
        written.insert(file.to_lowercase());
        let path = sub.join(&file);
        atomic_write(&path, render(&doc)?.as_bytes(), DEFAULT_MODE, false)
            .map_err(|e| io_err(&path, e))?;
    }
    let entries = std::fs::read_dir(sub).map_err(|e| io_err(sub, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err(sub, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".toml")
            && !name.starts_with('.')
            && !written.contains(&name.to_lowercase())
            && entry.file_type().is_ok_and(|t| t.is_file())
        {
            std::fs::remove_file(entry.path()).map_err(|e| io_err(&entry.path(), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"
[[filterset]]
name = "servers with systemd"

[[filterset.filter]]
table = "packages"
field = "pkg_name"
op = "="
value = "systemd"

[[ruleset]]
name = "r"
type = "contextual"
filterset = "servers with systemd"

[[ruleset.variable]]
name = "plain"
value = "svc:/network/x:default"

[[ruleset.variable]]
name = "number_text"
value = "33"

[[ruleset.variable]]
name = "structured"
class = "file"
value = { path = "/etc/x", mode = 644, fmt = "a\nb\n" }

[[moduleset]]
name = "m"
rulesets = ["r"]
modules = [{ name = "m", autofix = true }]
"#;

    fn err(text: &str) -> String {
        match from_toml_str(text, "t.toml") {
            Ok(_) => "no error".to_string(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn reads_values() {
        let b = from_toml_str(DOC, "t.toml").unwrap_or_default();
        let vars = &b.rulesets["r"].variables;
        assert_eq!(
            vars[0].value,
            VarValue::Text("svc:/network/x:default".into())
        );
        assert_eq!(vars[0].class, "raw");
        assert_eq!(vars[1].value, VarValue::Json(serde_json::json!(33)));
        assert_eq!(
            vars[2].value,
            VarValue::Json(serde_json::json!({"path": "/etc/x", "mode": 644, "fmt": "a\nb\n"}))
        );
        assert!(b.modulesets["m"].modules[0].autofix);
        let again = from_toml_str(&to_toml_string(&b), "again.toml").unwrap_or_default();
        assert_eq!(again, b);
    }

    #[test]
    fn errors_name_file_line_and_object() {
        let e = err(&DOC.replace("class = \"file\"", "clas = \"file\""));
        assert!(
            e.starts_with("t.toml:26:")
                && e.contains("ruleset r, variable structured: unknown field `clas`"),
            "{e}"
        );
        let e = err(&DOC.replace("type = \"contextual\"", "type = \"sometimes\""));
        assert!(
            e.starts_with("t.toml:13:8: ruleset r: type: unknown ruleset type"),
            "{e}"
        );
        let e = err(&DOC.replace("op = \"=\"", "op = \"~\""));
        assert!(
            e.starts_with("t.toml:8:")
                && e.contains("filterset servers with systemd, filter 1: op"),
            "{e}"
        );
        let e = err(&DOC.replace("value = \"33\"", "value = 1979-05-27T07:32:00Z"));
        assert!(
            e.contains("ruleset r, variable number_text: value: TOML datetime"),
            "{e}"
        );
        let e = err("[[ruleset]\nname = 1");
        assert!(e.starts_with("t.toml:1:"), "{e}");
        let e = err(&DOC.replace("rulesets = [\"r\"]", "rulesets = [\"nope\"]"));
        assert!(
            e.starts_with("t.toml:29:1: moduleset m") && e.contains("\"nope\" does not exist"),
            "{e}"
        );
        let e = err(&format!("{DOC}\n[[ruleset]]\nname = \"r\"\n"));
        assert!(
            e.contains("ruleset r: duplicate name (first defined at t.toml:11:1)"),
            "{e}"
        );
    }

    #[test]
    fn values_toml_cannot_carry_become_text() {
        for text in [
            r#"{"a": null}"#,
            "18446744073709551615",
            "null",
            "\"quoted\"",
            "[1, null]",
        ] {
            let v = VarValue::from_text(text);
            let t = value_to_toml(&v);
            assert!(t.is_str(), "{text}");
            assert_eq!(value_from_toml(t), Ok(v));
        }
        let v = VarValue::from_text(r#"{"a": [1, 2.5, {"b": true}], "c": {}}"#);
        assert!(value_to_toml(&v).is_table());
    }

    #[test]
    fn file_stems() {
        assert_eq!(file_stem("servers with systemd"), "servers_with_systemd");
        assert_eq!(file_stem(".hidden/../x"), "_hidden_.._x");
        assert_eq!(file_stem(""), "_");
    }

    #[test]
    fn write_and_load_dir() {
        let Ok(dir) = tempfile::tempdir() else { return };
        let b = from_toml_str(DOC, "t.toml").unwrap_or_default();
        assert!(write_dir(&b, dir.path()).is_ok());
        let stale = dir.path().join("rulesets/stale.toml");
        assert!(std::fs::write(&stale, "").is_ok());
        assert!(write_dir(&b, dir.path()).is_ok());
        assert!(!stale.exists());
        assert!(
            dir.path()
                .join("filtersets/servers_with_systemd.toml")
                .is_file()
        );
        assert_eq!(load_dir(dir.path()).unwrap_or_default(), b);
        // The same ruleset in a second file is named with both files.
        assert!(
            std::fs::copy(
                dir.path().join("rulesets/r.toml"),
                dir.path().join("copy.toml")
            )
            .is_ok()
        );
        let e = load_dir(dir.path()).map(|_| ()).unwrap_err().to_string();
        assert!(
            e.contains("copy.toml") && e.contains("rulesets/r.toml"),
            "{e}"
        );
    }
}

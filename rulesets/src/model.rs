//! The policy model: what a bundle of rulesets, filtersets and modulesets is, independent of the
//! file format it came from (Tenet TOML folder or OpenSVC export JSON).
//!
//! Every field the OpenSVC collector exports has a home here, so that an export loads and writes
//! back without losing anything (ids, authors, publication groups included).

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// A set of policy objects, keyed by name, in the order they were loaded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    /// Rulesets by name.
    pub rulesets: IndexMap<String, Ruleset>,
    /// Filtersets by name.
    pub filtersets: IndexMap<String, Filterset>,
    /// Modulesets by name.
    pub modulesets: IndexMap<String, Moduleset>,
}

/// Whether a ruleset applies because it is attached, or because its filterset matches the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RulesetType {
    /// Applies where it is attached (to a node, a service or a moduleset).
    #[default]
    Explicit,
    /// Applies where its filterset matches the node (and service) facts.
    Contextual,
}

/// A named group of variables, possibly nesting other rulesets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ruleset {
    /// Unique name, e.g. `spdc.kernel`.
    pub name: String,
    /// Explicit or contextual.
    pub kind: RulesetType,
    /// Filterset deciding where a contextual ruleset applies.
    pub filterset: Option<String>,
    /// A public contextual ruleset applies to every matching node without attachment.
    pub public: bool,
    /// Names of nested (encapsulated) rulesets.
    pub children: Vec<String>,
    /// The variables, in order.
    pub variables: Vec<Variable>,
    /// Metadata kept for lossless round-trips with the OpenSVC collector.
    pub meta: Meta,
}

/// Ownership metadata the OpenSVC collector keeps on rulesets and modulesets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Collector database id.
    pub id: Option<i64>,
    /// Groups the object is published to (who may attach it).
    pub publications: Vec<String>,
    /// Groups responsible for the object (who may edit it).
    pub responsibles: Vec<String>,
}

/// One rule: a named value consumed by the object class `class`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variable {
    /// Variable name; its environment name is `OSVC_COMP_` + the upper-cased name.
    pub name: String,
    /// Object class that consumes the value (`file`, `sysctl`, `package`, `raw`, ...).
    pub class: String,
    /// The value.
    pub value: VarValue,
    /// Collector database id.
    pub id: Option<i64>,
    /// Last author, as the collector records it.
    pub author: Option<String>,
    /// Last update time, as the collector records it (`YYYY-MM-DD HH:MM:SS`).
    pub updated: Option<String>,
}

/// A variable value. OpenSVC stores values as text that is usually JSON; both kinds are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum VarValue {
    /// The text parsed as JSON (object, array, number, bool, null or a quoted string).
    Json(serde_json::Value),
    /// Text that is not JSON, kept verbatim (e.g. `svc:/network/x:default`).
    Text(String),
}

/// How a filter combines with the result accumulated so far (evaluated left to right).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogicalOp {
    /// `acc AND x`
    And,
    /// `acc OR x`
    Or,
    /// `acc AND NOT x`
    AndNot,
    /// `acc OR NOT x`
    OrNot,
}

/// A comparison operator of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `LIKE` (SQL pattern: `%` any run, `_` one character; case-insensitive)
    Like,
    /// `NOT LIKE`
    NotLike,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `IN` (value is a comma-separated list)
    In,
    /// `NOT IN`
    NotIn,
}

/// A named, ordered list of filters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filterset {
    /// Unique name, e.g. `servers with systemd`.
    pub name: String,
    /// The collector's `fset_stats` flag (kept for round-trips).
    pub stats: bool,
    /// Collector database id.
    pub id: Option<i64>,
    /// Filters, evaluated in order.
    pub filters: Vec<FilterEntry>,
}

/// One entry of a filterset: a filter or a nested filterset, with its logical operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterEntry {
    /// Combination with the result so far.
    pub logical_op: LogicalOp,
    /// The collector's `f_order` (kept; entries are evaluated in list order).
    pub order: i64,
    /// What is tested.
    pub test: FilterTest,
}

/// What a filter entry tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FilterTest {
    /// A comparison of one fact.
    Filter(Filter),
    /// A nested filterset, by name.
    Filterset(String),
}

/// A comparison `table.field op value` against node (or service) facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// Fact table: `nodes`, `packages`, `services`, `tags`, ...
    pub table: String,
    /// Field in that table, e.g. `os_name`, `pkg_name`.
    pub field: String,
    /// Operator.
    pub op: FilterOp,
    /// Right-hand value, as text.
    pub value: String,
    /// Collector database id.
    pub id: Option<i64>,
}

/// A named group of modules and nested modulesets, with the rulesets attached to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moduleset {
    /// Unique name.
    pub name: String,
    /// Modules, in order.
    pub modules: Vec<ModuleRef>,
    /// Names of child modulesets.
    pub children: Vec<String>,
    /// Rulesets attached to this moduleset (visible only to its modules).
    pub rulesets: Vec<String>,
    /// Ownership metadata.
    pub meta: Meta,
}

/// A module listed in a moduleset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRef {
    /// Module name (a script `NN-<name>` or an auto-module backed by the same-named ruleset).
    pub name: String,
    /// Whether `compliance auto` fixes this module rather than only checking it.
    pub autofix: bool,
}

/// Facts about the node (and optionally a service) that filtersets are evaluated against.
/// Every field may be omitted in JSON (a node that pushed nothing yet has no facts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeFacts {
    /// The `nodes` table: `nodename`, `fqdn`, `os_name`, `os_vendor`, `os_release`, `os_arch`,
    /// `cpu_model`, `cpu_threads`, `mem_bytes`, `team_responsible`, ... Values are text.
    pub node: IndexMap<String, String>,
    /// Installed packages (the `packages` table).
    pub packages: Vec<PackageFact>,
    /// Node tags (the `tags` table, field `tag_name`).
    pub tags: Vec<String>,
    /// The service the run is for (the `services` table), if any.
    pub service: Option<IndexMap<String, String>>,
}

/// One installed package.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageFact {
    /// Package name (`pkg_name`).
    pub name: String,
    /// Version (`pkg_version`).
    pub version: String,
    /// Architecture (`pkg_arch`).
    pub arch: String,
}

impl VarValue {
    /// Interprets an OpenSVC `var_value` text: JSON when the whole text parses as JSON, else the
    /// text verbatim. Surrounding whitespace of a JSON text is not kept.
    /// An integer too large for 64 bits keeps the value as text: as JSON it would become a
    /// float and lose digits.
    pub fn from_text(text: &str) -> Self {
        match serde_json::from_str(text) {
            Ok(v) if !has_oversized_integer(text) => VarValue::Json(v),
            _ => VarValue::Text(text.to_string()),
        }
    }

    /// The OpenSVC `var_value` text: compact JSON for [`VarValue::Json`], the text verbatim for
    /// [`VarValue::Text`]. `from_text(to_text(v)) == v` for every value `from_text` can produce.
    pub fn to_text(&self) -> String {
        match self {
            VarValue::Json(v) => v.to_string(),
            VarValue::Text(s) => s.clone(),
        }
    }

    /// The value as JSON; a [`VarValue::Text`] becomes a JSON string.
    pub fn as_json(&self) -> serde_json::Value {
        match self {
            VarValue::Json(v) => v.clone(),
            VarValue::Text(s) => serde_json::Value::String(s.clone()),
        }
    }
}

/// Whether a JSON text holds an integer literal outside the i64 / u64 range.
fn has_oversized_integer(text: &str) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    let mut run = String::new();
    let oversized = |run: &str| {
        let digits = run.strip_prefix('-').unwrap_or(run);
        !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit())
            && run.parse::<i64>().is_err()
            && run.parse::<u64>().is_err()
    };
    for c in text.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E') {
            run.push(c);
            continue;
        }
        if oversized(&run) {
            return true;
        }
        run.clear();
        in_string = c == '"';
    }
    oversized(&run)
}

/// The three kinds of named objects of a bundle, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A [`Ruleset`].
    Ruleset,
    /// A [`Filterset`].
    Filterset,
    /// A [`Moduleset`].
    Moduleset,
}

impl ObjectKind {
    /// `ruleset`, `filterset` or `moduleset`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Ruleset => "ruleset",
            ObjectKind::Filterset => "filterset",
            ObjectKind::Moduleset => "moduleset",
        }
    }
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A consistency problem of one object, before the loader adds where the object came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub kind: ObjectKind,
    pub name: String,
    pub message: String,
}

impl Bundle {
    /// Checks the bundle is consistent: every map key equals its object's name, every referenced
    /// ruleset / moduleset / filterset exists, every contextual ruleset has a filterset, and
    /// ruleset, moduleset and filterset nesting have no cycles. Errors are
    /// [`crate::Error::Invalid`] naming the object at fault. Nesting deeper than
    /// [`MAX_NESTING_DEPTH`] is refused too, naming the top of the chain.
    pub fn validate(&self) -> crate::Result<()> {
        check(self).map_err(|p| crate::Error::Invalid {
            context: format!("{} {}", p.kind, p.name),
            message: p.message,
        })
    }
}

/// Checks a bundle is consistent; see [`Bundle::validate`].
pub fn validate(bundle: &Bundle) -> crate::Result<()> {
    bundle.validate()
}

/// The first problem of the bundle, in a deterministic order (keys, references, cycles).
pub(crate) fn check(bundle: &Bundle) -> Result<(), Problem> {
    let problem = |kind, name: &str, message: String| Problem {
        kind,
        name: name.to_string(),
        message,
    };
    for (key, rs) in &bundle.rulesets {
        if key != &rs.name {
            return Err(problem(
                ObjectKind::Ruleset,
                &rs.name,
                format!("is stored under the different name {key:?}"),
            ));
        }
        for child in &rs.children {
            if !bundle.rulesets.contains_key(child) {
                return Err(problem(
                    ObjectKind::Ruleset,
                    key,
                    format!("child ruleset {child:?} does not exist"),
                ));
            }
        }
        match (&rs.filterset, rs.kind) {
            (Some(fs), _) if !bundle.filtersets.contains_key(fs) => {
                return Err(problem(
                    ObjectKind::Ruleset,
                    key,
                    format!("filterset {fs:?} does not exist"),
                ));
            }
            (None, RulesetType::Contextual) => {
                return Err(problem(
                    ObjectKind::Ruleset,
                    key,
                    "is contextual but has no filterset".to_string(),
                ));
            }
            _ => {}
        }
    }
    for (key, fs) in &bundle.filtersets {
        if key != &fs.name {
            return Err(problem(
                ObjectKind::Filterset,
                &fs.name,
                format!("is stored under the different name {key:?}"),
            ));
        }
        for entry in &fs.filters {
            if let FilterTest::Filterset(child) = &entry.test
                && !bundle.filtersets.contains_key(child)
            {
                return Err(problem(
                    ObjectKind::Filterset,
                    key,
                    format!("nested filterset {child:?} does not exist"),
                ));
            }
        }
    }
    for (key, ms) in &bundle.modulesets {
        if key != &ms.name {
            return Err(problem(
                ObjectKind::Moduleset,
                &ms.name,
                format!("is stored under the different name {key:?}"),
            ));
        }
        for child in &ms.children {
            if !bundle.modulesets.contains_key(child) {
                return Err(problem(
                    ObjectKind::Moduleset,
                    key,
                    format!("child moduleset {child:?} does not exist"),
                ));
            }
        }
        for rs in &ms.rulesets {
            if !bundle.rulesets.contains_key(rs) {
                return Err(problem(
                    ObjectKind::Moduleset,
                    key,
                    format!("attached ruleset {rs:?} does not exist"),
                ));
            }
        }
    }
    let cycle = |kind, names: Vec<&str>, edges: &dyn Fn(&str) -> Vec<String>| {
        find_cycle(&names, edges).map(|path| {
            let message = format!("nesting cycle: {}", path.join(" -> "));
            problem(kind, &path[0], message)
        })
    };
    let rs_edges = |n: &str| {
        bundle
            .rulesets
            .get(n)
            .map(|r| r.children.clone())
            .unwrap_or_default()
    };
    if let Some(p) = cycle(
        ObjectKind::Ruleset,
        bundle.rulesets.keys().map(String::as_str).collect(),
        &rs_edges,
    ) {
        return Err(p);
    }
    let ms_edges = |n: &str| {
        bundle
            .modulesets
            .get(n)
            .map(|m| m.children.clone())
            .unwrap_or_default()
    };
    if let Some(p) = cycle(
        ObjectKind::Moduleset,
        bundle.modulesets.keys().map(String::as_str).collect(),
        &ms_edges,
    ) {
        return Err(p);
    }
    let fs_edges = |n: &str| {
        bundle
            .filtersets
            .get(n)
            .map(|f| {
                f.filters
                    .iter()
                    .filter_map(|e| match &e.test {
                        FilterTest::Filterset(c) => Some(c.clone()),
                        FilterTest::Filter(_) => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(p) = cycle(
        ObjectKind::Filterset,
        bundle.filtersets.keys().map(String::as_str).collect(),
        &fs_edges,
    ) {
        return Err(p);
    }
    let graphs: [(ObjectKind, Vec<&str>, &Edges); 3] = [
        (
            ObjectKind::Ruleset,
            bundle.rulesets.keys().map(String::as_str).collect(),
            &rs_edges,
        ),
        (
            ObjectKind::Moduleset,
            bundle.modulesets.keys().map(String::as_str).collect(),
            &ms_edges,
        ),
        (
            ObjectKind::Filterset,
            bundle.filtersets.keys().map(String::as_str).collect(),
            &fs_edges,
        ),
    ];
    for (kind, names, edges) in graphs {
        if let Some(path) = too_deep(&names, edges, MAX_NESTING_DEPTH) {
            let message = format!(
                "nesting depth {} exceeds the limit of {MAX_NESTING_DEPTH}: {}",
                path.len(),
                abbreviated(&path)
            );
            return Err(problem(kind, &path[0], message));
        }
    }
    Ok(())
}

/// The children of an object of a nesting graph, by name.
type Edges<'e> = dyn Fn(&str) -> Vec<String> + 'e;

/// How deep rulesets, modulesets and filtersets may nest: the longest chain of nesting from
/// any object, the object itself included (a filterset without nested filtersets has depth
/// 1). Deeper bundles are refused at load and by the collector's import and edits. Evaluation
/// is iterative and memoised, so this bounds the size of what a node is sent and shown (a
/// moduleset tree is printed indented by depth), not the evaluator's stack.
pub const MAX_NESTING_DEPTH: usize = 100;

/// `a -> b -> c`, or `a -> b -> c -> ... (N more) -> y -> z` for a long chain.
fn abbreviated(path: &[String]) -> String {
    if path.len() <= 8 {
        return path.join(" -> ");
    }
    format!(
        "{} -> ... ({} more) -> {}",
        path[..3].join(" -> "),
        path.len() - 5,
        path[path.len() - 2..].join(" -> ")
    )
}

/// The longest nesting chain of the first object (in `nodes` order) whose depth exceeds
/// `limit`, as a path from it. Each object's depth is computed once (memoised, iterative), so
/// wide and deep graphs cost their size. Expects an acyclic graph (cycles are refused first);
/// an edge back onto the current path is ignored rather than followed.
fn too_deep(
    nodes: &[&str],
    edges: &dyn Fn(&str) -> Vec<String>,
    limit: usize,
) -> Option<Vec<String>> {
    use std::collections::{HashMap, HashSet};
    // Depth, and the child the deepest chain goes through.
    let mut depth: HashMap<String, (usize, Option<String>)> = HashMap::new();
    for &start in nodes {
        if !depth.contains_key(start) {
            let mut on_path: HashSet<String> = HashSet::from([start.to_string()]);
            let mut path: Vec<(String, std::vec::IntoIter<String>)> =
                vec![(start.to_string(), edges(start).into_iter())];
            while let Some((_, children)) = path.last_mut() {
                match children.next() {
                    Some(child) => {
                        if !depth.contains_key(&child) && !on_path.contains(&child) {
                            on_path.insert(child.clone());
                            let grand = edges(&child).into_iter();
                            path.push((child, grand));
                        }
                    }
                    None => {
                        let Some((done, _)) = path.pop() else { break };
                        // Reversed: on equal depths the first listed child is kept.
                        let deepest = edges(&done)
                            .into_iter()
                            .rev()
                            .filter_map(|c| depth.get(&c).map(|d| (d.0, c)))
                            .max_by_key(|(d, _)| *d);
                        let entry = match deepest {
                            Some((d, c)) => (d + 1, Some(c)),
                            None => (1, None),
                        };
                        on_path.remove(&done);
                        depth.insert(done, entry);
                    }
                }
            }
        }
        if depth.get(start).is_some_and(|d| d.0 > limit) {
            let mut chain = vec![start.to_string()];
            while let Some((_, Some(next))) = chain.last().and_then(|n| depth.get(n)) {
                chain.push(next.clone());
            }
            return Some(chain);
        }
    }
    None
}

/// A cycle of the graph as a path `a, b, ..., a`, if any. Iterative, so deep nesting cannot
/// overflow the stack.
fn find_cycle(nodes: &[&str], edges: &dyn Fn(&str) -> Vec<String>) -> Option<Vec<String>> {
    use std::collections::HashMap;
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        OnPath,
        Done,
    }
    let mut state: HashMap<String, State> = HashMap::new();
    for &start in nodes {
        if state.contains_key(start) {
            continue;
        }
        // Each frame: the node and its remaining children.
        let mut path: Vec<(String, std::vec::IntoIter<String>)> =
            vec![(start.to_string(), edges(start).into_iter())];
        state.insert(start.to_string(), State::OnPath);
        while let Some((_, children)) = path.last_mut() {
            match children.next() {
                Some(child) => match state.get(&child) {
                    Some(State::OnPath) => {
                        let from = path.iter().position(|(n, _)| *n == child).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            path[from..].iter().map(|(n, _)| n.clone()).collect();
                        cycle.push(child);
                        return Some(cycle);
                    }
                    Some(State::Done) => {}
                    None => {
                        state.insert(child.clone(), State::OnPath);
                        let grand = edges(&child).into_iter();
                        path.push((child, grand));
                    }
                },
                None => {
                    if let Some((done, _)) = path.pop() {
                        state.insert(done, State::Done);
                    }
                }
            }
        }
    }
    None
}

/// Where each object of a loaded bundle was defined, for messages: the document and the byte
/// offset, turned into `file:line:column` only when a message needs it. Computing positions
/// eagerly rescanned the text for every object, which made loading quadratic (100,000
/// filtersets took minutes).
pub(crate) struct Origins<'a> {
    /// The documents of the load: (path, text).
    docs: Vec<(&'a str, &'a str)>,
    /// (document index, byte offset) of each object.
    at: std::collections::HashMap<(ObjectKind, String), (usize, usize)>,
}

impl<'a> Origins<'a> {
    pub(crate) fn new() -> Self {
        Origins {
            docs: Vec::new(),
            at: std::collections::HashMap::new(),
        }
    }

    /// Registers a document; the index names it in [`Origins::claim`].
    pub(crate) fn add_doc(&mut self, path: &'a str, text: &'a str) -> usize {
        self.docs.push((path, text));
        self.docs.len() - 1
    }

    /// The (path, text) of a document.
    pub(crate) fn doc(&self, doc: usize) -> (&'a str, &'a str) {
        self.docs.get(doc).copied().unwrap_or(("?", ""))
    }

    /// `path:line:column` of an offset of a document.
    pub(crate) fn position(&self, doc: usize, offset: usize) -> String {
        match self.docs.get(doc) {
            Some((path, text)) => {
                let (l, c) = line_col(text, offset);
                format!("{path}:{l}:{c}")
            }
            None => String::from("?"),
        }
    }

    /// Records where an object is defined; a name already defined (in this document or an
    /// earlier one) is an error naming both places.
    pub(crate) fn claim(
        &mut self,
        doc: usize,
        kind: ObjectKind,
        name: &str,
        offset: usize,
    ) -> crate::Result<()> {
        match self.at.get(&(kind, name.to_string())) {
            Some(&(first_doc, first)) => Err(crate::Error::Invalid {
                context: format!("{}: {kind} {name}", self.position(doc, offset)),
                message: format!(
                    "duplicate name (first defined at {})",
                    self.position(first_doc, first)
                ),
            }),
            None => {
                self.at.insert((kind, name.to_string()), (doc, offset));
                Ok(())
            }
        }
    }

    /// `path:line:column` where an object was defined.
    fn of(&self, kind: ObjectKind, name: &str) -> Option<String> {
        self.at
            .get(&(kind, name.to_string()))
            .map(|&(doc, offset)| self.position(doc, offset))
    }
}

/// [`Bundle::validate`], naming the file and position of the object at fault.
pub(crate) fn validate_at(bundle: &Bundle, origins: &Origins, fallback: &str) -> crate::Result<()> {
    check(bundle).map_err(|p| {
        let at = origins
            .of(p.kind, &p.name)
            .unwrap_or_else(|| fallback.to_string());
        crate::Error::Invalid {
            context: format!("{at}: {} {}", p.kind, p.name),
            message: p.message,
        }
    })
}

/// 1-based line and column (in characters) of a byte offset; offsets past the end or inside a
/// character are clamped.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn value_text() {
        assert_eq!(VarValue::from_text("33"), VarValue::Json(json!(33)));
        assert_eq!(
            VarValue::from_text("svc:/x"),
            VarValue::Text("svc:/x".into())
        );
        assert_eq!(VarValue::from_text("\"x\"").as_json(), json!("x"));
        assert_eq!(VarValue::Text("x".into()).as_json(), json!("x"));
        assert_eq!(
            VarValue::from_text("{\"a\": [1, true]}").to_text(),
            "{\"a\":[1,true]}"
        );
        // Integers beyond 64 bits would lose digits as JSON floats: kept as text.
        for big in [
            "123456789012345678901234567890",
            "[1, -9223372036854775809]",
        ] {
            assert_eq!(VarValue::from_text(big), VarValue::Text(big.into()));
        }
        for fine in [
            "[1, 18446744073709551615]",
            "{\"a\": \"99999999999999999999\"}",
            "1e400000",
        ] {
            let v = VarValue::from_text(fine);
            assert_eq!(VarValue::from_text(&v.to_text()), v, "{fine}");
        }
    }

    fn bundle(text: &str) -> crate::Result<Bundle> {
        crate::toml_format::from_toml_str(text, "v.toml")
    }

    #[test]
    fn validation() {
        let cases = [
            (
                "[[ruleset]]\nname = \"a\"\nrulesets = [\"b\"]\n",
                "child ruleset \"b\" does not exist",
            ),
            (
                "[[ruleset]]\nname = \"a\"\ntype = \"contextual\"\n",
                "is contextual but has no filterset",
            ),
            (
                "[[ruleset]]\nname = \"a\"\nrulesets = [\"b\"]\n[[ruleset]]\nname = \"b\"\nrulesets = [\"a\"]\n",
                "nesting cycle: a -> b -> a",
            ),
            (
                "[[moduleset]]\nname = \"m\"\nmodulesets = [\"m\"]\n",
                "nesting cycle: m -> m",
            ),
            (
                "[[filterset]]\nname = \"f\"\nfilter = [{ filterset = \"f\" }]\n",
                "nesting cycle: f -> f",
            ),
            (
                "[[moduleset]]\nname = \"m\"\nrulesets = [\"x\"]\n",
                "attached ruleset \"x\" does not exist",
            ),
        ];
        for (text, want) in cases {
            let e = bundle(text).map(|_| ()).unwrap_err().to_string();
            assert!(e.starts_with("v.toml:") && e.contains(want), "{e}");
        }
        // One level over the depth limit, for each kind; the limit itself loads.
        let chain = |kind: &str, key: &str, n: usize| {
            (0..n)
                .map(|i| {
                    let child = match (i + 1 < n, kind) {
                        (false, _) => String::new(),
                        (true, "filterset") => {
                            format!("filter = [{{ filterset = \"x{}\" }}]\n", i + 1)
                        }
                        (true, _) => format!("{key} = [\"x{}\"]\n", i + 1),
                    };
                    format!("[[{kind}]]\nname = \"x{i}\"\n{child}")
                })
                .collect::<String>()
        };
        for (kind, key) in [
            ("filterset", ""),
            ("ruleset", "rulesets"),
            ("moduleset", "modulesets"),
        ] {
            assert!(
                bundle(&chain(kind, key, MAX_NESTING_DEPTH)).is_ok(),
                "{kind}"
            );
            let e = bundle(&chain(kind, key, MAX_NESTING_DEPTH + 1))
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("v.toml:1:1: {kind} x0: nesting depth 101 exceeds the limit of 100: x0 -> x1 -> x2 -> ... (96 more) -> x99 -> x100")),
                "{e}"
            );
        }
        let mut b = Bundle::default();
        b.rulesets.insert(
            "key".into(),
            Ruleset {
                name: "other".into(),
                kind: RulesetType::Explicit,
                filterset: None,
                public: false,
                children: vec![],
                variables: vec![],
                meta: Meta::default(),
            },
        );
        assert!(validate(&b).is_err());
    }
}

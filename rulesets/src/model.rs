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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

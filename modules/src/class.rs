//! The object-class contract: what a class is, and how the engine calls one.
//!
//! A class is a type implementing [`Class`]: a serde rule type plus `check`, `fixable` and `fix`
//! functions over one rule. The registry ([`crate::classes::CLASSES`]) turns each into a
//! [`ClassEntry`] of plain function pointers, so the engine and the OpenSVC object command
//! handle every class alike. See `docs/object-class.md` for the contract in full.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tenet_templates::Library;

use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// One object class: its rule type and its behaviour, side by side.
pub trait Class: 'static {
    /// The rule, as it appears in a variable's value (serde, `deny_unknown_fields`).
    type Rule: DeserializeOwned + std::fmt::Debug + Send + Sync + 'static;

    /// The class name as a variable's `class` spells it (`file`, `sysctl`, ...).
    const NAME: &'static str;
    /// Other spellings: OpenSVC var_class variants and object script names (`files.py`).
    const ALIASES: &'static [&'static str] = &[];
    /// One line for `--help` and docs.
    const DESCRIPTION: &'static str;
    /// Whether the class reaches files only through the host's helpers that see staged
    /// writes (`read`, `read_to_string`, `metadata`, `read_dir_names`, `write_atomic`,
    /// `set_mode`, `set_owner`, `create_dir_all`, `write_kernel_file`): its fix may then run
    /// while earlier writes of the module are still staged. Otherwise (the default: commands,
    /// `std::fs`, links) the engine commits them before the class's fix, so that it sees and
    /// acts on the files as the earlier rules left them, in order.
    const STAGED_WRITES: bool = false;

    /// Splits a variable value into rules. Default: an object is one rule, an array holds one
    /// rule per element (OpenSVC's convention).
    fn rules(value: &Value) -> Result<Vec<Self::Rule>, String> {
        match value {
            Value::Array(items) => items.iter().map(parse_rule::<Self::Rule>).collect(),
            other => Ok(vec![parse_rule::<Self::Rule>(other)?]),
        }
    }

    /// Splits a variable value into rules that may draw on `ctx` (the template library and
    /// the data templated rules render with). Default: [`Class::rules`], ignoring `ctx`.
    fn rules_in(value: &Value, _ctx: &RuleContext) -> Result<Vec<Self::Rule>, String> {
        Self::rules(value)
    }

    /// A short label for the rule in reports (a path, a key, a package list).
    fn describe(rule: &Self::Rule) -> String;

    /// Reports whether the system complies with the rule. Reads only.
    fn check(rule: &Self::Rule, host: &HostView, log: &mut Log) -> Status;

    /// Reports whether `fix` can bring the rule to compliance: ok or n/a means it may try,
    /// nok means it cannot (the engine then skips `fix`).
    fn fixable(_rule: &Self::Rule, _host: &HostView, _log: &mut Log) -> Status {
        Status::NotApplicable
    }

    /// Brings the system to comply with the rule. Called only when `check` said nok, so a
    /// compliant system is never touched.
    fn fix(rule: &Self::Rule, host: &Host, log: &mut Log) -> Status;
}

/// What a rule may draw on beyond its own value: the templates it may name and the data
/// templated rules render with (the module's variables by name, `nodes`, `services`, `svc`;
/// see `rulesets/README.md`, "Templated files"). Cheap to clone.
#[derive(Clone)]
pub struct RuleContext {
    /// The template library (shipped templates plus `--template-dir`).
    pub templates: Arc<Library>,
    /// The data templates render with.
    pub data: Arc<Map<String, Value>>,
}

impl RuleContext {
    /// A context with these templates and data.
    pub fn new(templates: Arc<Library>, data: Map<String, Value>) -> RuleContext {
        RuleContext {
            templates,
            data: Arc::new(data),
        }
    }
}

impl Default for RuleContext {
    /// The shipped templates and no data.
    fn default() -> Self {
        RuleContext {
            templates: Library::shared_builtin(),
            data: Arc::default(),
        }
    }
}

impl std::fmt::Debug for RuleContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleContext")
            .field("data", &self.data.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Parses one rule from JSON, with serde's message (which names the field) kept.
pub fn parse_rule<R: DeserializeOwned>(value: &Value) -> Result<R, String> {
    R::deserialize(value).map_err(|e| e.to_string())
}

/// A rule ready to run, whatever its class.
pub trait DynRule: std::fmt::Debug + Send + Sync {
    /// Label for reports.
    fn describe(&self) -> String;
    /// See [`Class::check`].
    fn check(&self, host: &HostView, log: &mut Log) -> Status;
    /// See [`Class::fixable`].
    fn fixable(&self, host: &HostView, log: &mut Log) -> Status;
    /// Fixes only if a (quiet) check says nok, so that fixing a compliant rule changes nothing.
    fn fix(&self, host: &Host, log: &mut Log) -> Status;
}

struct Typed<C: Class>(C::Rule);

impl<C: Class> std::fmt::Debug for Typed<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({:?})", C::NAME, self.0)
    }
}

impl<C: Class> DynRule for Typed<C> {
    fn describe(&self) -> String {
        C::describe(&self.0)
    }
    fn check(&self, host: &HostView, log: &mut Log) -> Status {
        C::check(&self.0, host, log)
    }
    fn fixable(&self, host: &HostView, log: &mut Log) -> Status {
        C::fixable(&self.0, host, log)
    }
    fn fix(&self, host: &Host, log: &mut Log) -> Status {
        if !C::STAGED_WRITES
            && let Err(e) = host.sync()
        {
            log.err(format!(
                "committing the files written before this rule: {e}"
            ));
            return Status::Nok;
        }
        match C::check(&self.0, host.view(), &mut Log::quiet()) {
            Status::Nok => C::fix(&self.0, host, log),
            already => already,
        }
    }
}

/// Rules built from one variable value, or why the value is not a valid rule.
pub type LoadedRules = Result<Vec<Box<dyn DynRule>>, String>;

/// A registered class: its names and a loader producing runnable rules.
#[derive(Clone, Copy)]
pub struct ClassEntry {
    /// Canonical name.
    pub name: &'static str,
    /// Other accepted names.
    pub aliases: &'static [&'static str],
    /// One-line description.
    pub description: &'static str,
    /// Parses a (substituted) variable value into rules, in a context.
    pub load: fn(&Value, &RuleContext) -> LoadedRules,
}

impl std::fmt::Debug for ClassEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassEntry")
            .field("name", &self.name)
            .finish()
    }
}

fn load<C: Class>(value: &Value, ctx: &RuleContext) -> LoadedRules {
    Ok(C::rules_in(value, ctx)?
        .into_iter()
        .map(|r| Box::new(Typed::<C>(r)) as Box<dyn DynRule>)
        .collect())
}

impl ClassEntry {
    /// The entry of class `C`.
    pub const fn of<C: Class>() -> ClassEntry {
        ClassEntry {
            name: C::NAME,
            aliases: C::ALIASES,
            description: C::DESCRIPTION,
            load: load::<C>,
        }
    }

    /// Whether `name` designates this class (canonical name or alias).
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }
}

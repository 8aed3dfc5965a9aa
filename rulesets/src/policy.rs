//! Resolution: from a [`Bundle`] and the node's [`NodeFacts`] to the [`Policy`] the node runs.

use crate::model::*;
use serde::{Deserialize, Serialize};

/// What to resolve: which modulesets, and for which service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Modulesets to run (expanded with their children). `None` = every root moduleset of the
    /// bundle (a moduleset that is no other moduleset's child).
    pub modulesets: Option<Vec<String>>,
    /// Rulesets explicitly attached to the node (or service), visible to every module.
    pub rulesets: Vec<String>,
    /// The service the run is for (exports `OSVC_COMP_SERVICES_SVCNAME` and friends).
    pub service: Option<String>,
}

/// A resolved policy: everything one node needs for a run, with a content hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Selected modulesets, expanded depth-first (parent before children), each once.
    pub modulesets: Vec<PolicyModuleset>,
    /// Modules to run, deduplicated by name, in order of first appearance (the engine sorts
    /// script modules by their NN prefix).
    pub modules: Vec<PolicyModule>,
    /// Rulesets that apply, each with its variables merged from its nested rulesets.
    pub rulesets: Vec<PolicyRuleset>,
    /// The facts the policy was resolved against.
    pub facts: NodeFacts,
    /// The service the policy was resolved for.
    pub service: Option<String>,
    /// Non-fatal findings (a variable defined twice, a module in several modulesets, ...).
    pub warnings: Vec<String>,
    /// Hex SHA-256 of the canonical JSON of `modulesets`, `modules`, `rulesets` and `service`.
    pub hash: String,
}

/// One moduleset of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyModuleset {
    /// Name.
    pub name: String,
    /// Parent moduleset in the expansion, if any.
    pub parent: Option<String>,
    /// Depth in the expansion (0 for a selected root).
    pub depth: usize,
    /// Its own modules.
    pub modules: Vec<ModuleRef>,
    /// Rulesets attached to it.
    pub rulesets: Vec<String>,
}

/// One module of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyModule {
    /// Name.
    pub name: String,
    /// OR of the autofix flags of every occurrence.
    pub autofix: bool,
    /// Every moduleset listing it (the first one is the one reported).
    pub modulesets: Vec<String>,
}

/// One applying ruleset of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRuleset {
    /// Name.
    pub name: String,
    /// Why it applies, in OpenSVC's words: `explicit attachment`, `explicit attachment via
    /// moduleset`, `<filterset name>`, `<filterset name> (matching non-public contextual
    /// ruleset shown via moduleset)`.
    pub reason: String,
    /// When attached through a moduleset: that moduleset; its variables are then visible only
    /// to that moduleset's modules.
    pub moduleset: Option<String>,
    /// Variables of the ruleset and of its applying nested rulesets, merged by name (the
    /// deepest definition wins; at equal depth, the later child wins, with a warning).
    pub variables: Vec<Variable>,
}

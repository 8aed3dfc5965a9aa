//! Wire types shared by the agent and the collector (`/api/v1`). The collector's API.md
//! documents them endpoint by endpoint; both sides (de)serialize these, so a field renamed here
//! is renamed on the wire for both.
//!
//! Results are the agent's `--format json` report plus the delivery fields `run_id`,
//! `agent_version`, `service` and `started_at`: the run-report vocabulary and structs are
//! defined once, in [`report`], and the engine, the agent and the collector all use them.

pub mod report;

use serde::{Deserialize, Serialize};

pub use report::{
    ActionReport, ModuleKind, ModuleReport, NotOneOf, RuleReport, RunAction, RunReport, RunResults,
    Status, Summary,
};

use crate::model::NodeFacts;

/// Largest request body the collector accepts (but for imports): a run's results must fit in
/// it, and the agent cuts module logs to make them fit.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// `POST /api/v1/nodes` request (admin): register a node by name, with its admin-assigned
/// attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Node name (its short hostname, usually). Unique.
    pub name: String,
    /// The team the node belongs to (see [`NodeAttributes::team_responsible`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_responsible: Option<String>,
    /// The services the node hosts (see [`NodeAttributes::services`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

/// What an admin decides about a node, and the only source of its privileges: `PUT
/// /api/v1/nodes/{node}` (or given at registration). What a node reports about itself (its
/// facts, the services it says it hosts) never grants anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAttributes {
    /// The team (publication group) the node belongs to: it may attach to itself the
    /// rulesets and modulesets published to this group (and those published to everybody).
    #[serde(default)]
    pub team_responsible: Option<String>,
    /// The services the node hosts: it may fetch their policies and configurations and post
    /// their results.
    #[serde(default)]
    pub services: Vec<String>,
}

/// `POST /api/v1/nodes` response: the node's credentials. The secret is shown once; the
/// collector keeps only its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The node id (a UUID), the user part of the node's HTTP Basic credentials.
    pub node_id: String,
    /// The node name.
    pub name: String,
    /// The secret, the password part of the node's HTTP Basic credentials.
    pub secret: String,
}

/// `PUT /api/v1/nodes/{node}/facts` request: what the node reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactsUpdate {
    /// Asset facts and installed packages (the `nodes` and `packages` tables of filtersets).
    pub facts: NodeFacts,
    /// TCP port of the node's notification listener (OpenSVC: `listener_port`, default
    /// [`DEFAULT_LISTENER_PORT`]).
    #[serde(default = "default_listener_port")]
    pub listener_port: u16,
    /// Services the node says it hosts: recorded and shown to admins, but granting nothing
    /// (an admin assigns the services a node may act for, see [`NodeAttributes`]).
    #[serde(default)]
    pub services: Vec<String>,
}

/// The default TCP port of a node's notification listener (OpenSVC's `listener_port`), used by
/// the agent when its configuration names none and by the collector when a node reported none.
pub const DEFAULT_LISTENER_PORT: u16 = 1214;

fn default_listener_port() -> u16 {
    DEFAULT_LISTENER_PORT
}

/// `POST /api/v1/nodes/{node}/results` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecorded {
    /// The run id.
    pub run_id: String,
    /// False when this run id had been recorded before (a retry): nothing was stored again.
    pub new: bool,
}

/// The latest status of one module of a node (or of a service on it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleStatus {
    /// Module name.
    pub module: String,
    /// The moduleset it ran from.
    pub moduleset: String,
    /// The service (`None` for node runs).
    pub service: Option<String>,
    /// `ok`, `nok` or `n/a`.
    pub status: Status,
    /// The action of the run that set it (`check`, `fix` or `auto`).
    pub action: RunAction,
    /// When the collector received it (`YYYY-MM-DD HH:MM:SS`, UTC).
    pub date: String,
    /// The log of the module's last sub-action.
    pub log: String,
    /// Hash of the policy of that run.
    pub policy_hash: String,
    /// Per-variable results, for auto-modules.
    pub rules: Option<Vec<RuleReport>>,
}

/// `GET /api/v1/nodes/{node}/status` response: the collector's view of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node id.
    pub node_id: String,
    /// Node name.
    pub name: String,
    /// Latest status per module (and service), sorted by service then module.
    pub modules: Vec<ModuleStatus>,
    /// Counts over `modules`.
    pub summary: Summary,
    /// The last run received, if any (`YYYY-MM-DD HH:MM:SS`, UTC).
    pub last_run: Option<String>,
}

/// `{"error": ...}`: the body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, naming the object or field.
    pub error: String,
    /// For an internal error (500): the id under which the collector logged the details (the
    /// body never carries them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

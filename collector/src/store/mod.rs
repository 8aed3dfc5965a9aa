//! The store: everything the collector keeps, behind the narrow [`Store`] trait so the API never
//! sees SQL. [`sqlite::SqliteStore`] is the embedded default; a PostgreSQL backend implements
//! the same trait (its DML is portable: `ON CONFLICT` upserts, positional parameters, no
//! SQLite-only functions in queries).
//!
//! Policy objects (rulesets, variables, filtersets, modulesets and their relations) are edited
//! as a whole [`Bundle`]: an edit is a function over the bundle, validated by the rulesets crate
//! and persisted transactionally with an audit entry; so one set of rules (the same code the
//! agent uses masterless) decides what a consistent policy is.

pub mod sqlite;

use serde::{Deserialize, Serialize};
use tenet_rulesets::action::{Action, ActionResult, DequeuedAction};
use tenet_rulesets::api::{ModuleStatus, NodeAttributes, RunResults};
use tenet_rulesets::{Bundle, NodeFacts};

use crate::error::Result;

/// What a node's credentials check needs, and what keys its policy cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAuth {
    /// Node id (UUID).
    pub id: String,
    /// Node name.
    pub name: String,
    /// Hex SHA-256 of the node's secret.
    pub secret_hash: String,
    /// Hash of the last facts pushed ("" before the first push).
    pub facts_hash: String,
    /// Bumped on every attach / detach to the node.
    pub attach_version: i64,
}

/// A node in the admin listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSummary {
    /// Node id.
    pub node_id: String,
    /// Node name.
    pub name: String,
    /// Registration time.
    pub created_at: String,
    /// Last facts push or results post.
    pub last_seen: Option<String>,
    /// Listener port reported in facts.
    pub listener_port: u16,
    /// Modules ok / nok / n/a in the latest status (node and its services).
    pub compliance: tenet_rulesets::api::Summary,
    /// Modulesets attached to the node.
    pub modulesets: Vec<String>,
    /// Rulesets attached to the node.
    pub rulesets: Vec<String>,
    /// The team an admin assigned the node to.
    pub team_responsible: Option<String>,
    /// The services an admin assigned the node.
    pub services: Vec<String>,
}

/// What attachments are about: a node, or a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A node, by id.
    Node(String),
    /// A service, by name (created on first attachment).
    Service(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Node(id) => write!(f, "node {id}"),
            Target::Service(s) => write!(f, "service {s}"),
        }
    }
}

/// Which kind of policy object is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachKind {
    /// A moduleset (and, implicitly, its children).
    Moduleset,
    /// A ruleset (visible to every module).
    Ruleset,
}

impl AttachKind {
    /// `moduleset` or `ruleset`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachKind::Moduleset => "moduleset",
            AttachKind::Ruleset => "ruleset",
        }
    }
}

/// What is attached to a node or a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachments {
    /// Attached modulesets, in attachment order.
    pub modulesets: Vec<String>,
    /// Attached rulesets, in attachment order.
    pub rulesets: Vec<String>,
    /// Bumped on every change (part of the policy cache key).
    pub version: i64,
    /// Each attachment with who made it, in attachment order (modulesets, then rulesets).
    #[serde(default)]
    pub detail: Vec<Attached>,
}

/// One attachment and who made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    /// `moduleset` or `ruleset`.
    pub kind: AttachKind,
    /// The object.
    pub name: String,
    /// Who attached it: `admin:<token name>` or `node:<name>`; `None` when unknown (attached
    /// before migration 6 with no audit entry left to tell), which counts as an admin's.
    pub attached_by: Option<String>,
    /// When (`YYYY-MM-DD HH:MM:SS`, UTC).
    pub attached_at: String,
}

/// One audit log entry: who changed what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Entry id, increasing.
    pub id: i64,
    /// When (`YYYY-MM-DD HH:MM:SS`, UTC).
    pub at: String,
    /// Who: `admin:<token name>`, `node:<name>` or `cli`.
    pub actor: String,
    /// What was done: `import`, `ruleset.create`, `attach`, ...
    pub action: String,
    /// What it was done to.
    pub object: String,
    /// Details (counts, changed fields).
    pub detail: String,
}

/// A change to the policy objects, applied to the whole bundle: returns the audit action and
/// object names, or an error (nothing is then stored).
pub type BundleEdit =
    Box<dyn FnOnce(&mut Bundle) -> Result<(String, String, String)> + Send + 'static>;

/// Outcome of [`Store::edit_bundle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditOutcome {
    /// The policy generation after the edit.
    pub generation: u64,
    /// Whether anything changed (an edit that changes nothing stores nothing).
    pub changed: bool,
}

/// One run in a node's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The agent's run id.
    pub run_id: String,
    /// `check`, `fix`, `fixable` or `auto`.
    pub action: tenet_rulesets::api::RunAction,
    /// The service, if a service run.
    pub service: Option<String>,
    /// Hash of the policy run.
    pub policy_hash: String,
    /// Agent version.
    pub agent_version: String,
    /// When the agent started it.
    pub started_at: Option<String>,
    /// When the collector received it.
    pub received_at: String,
    /// Module counts.
    pub summary: tenet_rulesets::api::Summary,
}

/// A service configuration rendered from a form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// The service.
    pub service: String,
    /// The form (template) it was rendered from.
    pub form: String,
    /// The inputs it was rendered with, as given.
    pub inputs: serde_json::Value,
    /// The configuration text.
    pub config: String,
    /// Hex SHA-256 of `config`.
    pub sha256: String,
    /// When it was rendered (`YYYY-MM-DD HH:MM:SS`, UTC).
    pub updated_at: String,
}

/// Figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Registered nodes.
    pub nodes: u64,
    /// Latest module statuses that are nok, over every node and service.
    pub modules_nok: u64,
}

/// Everything the collector stores. Implementations are thread-safe; every method is one
/// transaction (a failed method changes nothing), and a method that returned `Ok` is durable.
pub trait Store: Send + Sync + 'static {
    /// The schema version, erroring when the store is unreachable or migrations are missing.
    fn ready(&self) -> Result<i64>;

    /// Records an admin token by the hex SHA-256 of its value.
    fn create_admin_token(&self, name: &str, token_hash: &str) -> Result<()>;
    /// The name of the admin token with this digest, if any.
    fn admin_token(&self, token_hash: &str) -> Result<Option<String>>;

    /// Registers a node with no admin-assigned attributes; errors with `Conflict` when the
    /// name is taken.
    fn register_node(&self, id: &str, name: &str, secret_hash: &str, actor: &str) -> Result<()> {
        self.register_node_with(id, name, secret_hash, &NodeAttributes::default(), actor)
    }
    /// Registers a node with its admin-assigned attributes, all or nothing; errors with
    /// `Conflict` when the name is taken.
    fn register_node_with(
        &self,
        id: &str,
        name: &str,
        secret_hash: &str,
        attributes: &NodeAttributes,
        actor: &str,
    ) -> Result<()>;
    /// A node's admin-assigned attributes (`NotFound` for an unknown node).
    fn node_attributes(&self, node_id: &str) -> Result<NodeAttributes>;
    /// Replaces a node's admin-assigned attributes, with an audit entry.
    fn set_node_attributes(
        &self,
        node_id: &str,
        attributes: &NodeAttributes,
        actor: &str,
    ) -> Result<()>;
    /// A node by id or, failing that, by name.
    fn node_auth(&self, node: &str) -> Result<Option<NodeAuth>>;
    /// Every node, with its compliance summary.
    fn list_nodes(&self) -> Result<Vec<NodeSummary>>;
    /// Removes a node with its attachments and results.
    fn delete_node(&self, node_id: &str, actor: &str) -> Result<()>;
    /// Replaces a node's facts, packages, listener port and the services it says it hosts
    /// (recorded for admins to see; they grant nothing).
    fn put_facts(
        &self,
        node_id: &str,
        facts: &NodeFacts,
        facts_hash: &str,
        listener_port: u16,
        services: &[String],
    ) -> Result<()>;
    /// A node's facts (empty before the first push).
    fn node_facts(&self, node_id: &str) -> Result<NodeFacts>;
    /// Whether an admin assigned the service to the node (what the node reports does not
    /// count).
    fn node_hosts_service(&self, node_id: &str, service: &str) -> Result<bool>;
    /// The services the node last said it hosts (informational).
    fn reported_services(&self, node_id: &str) -> Result<Vec<String>>;

    /// The current policy generation (bumped by every bundle edit).
    fn generation(&self) -> Result<u64>;
    /// Every policy object, with the generation it was read at.
    fn load_bundle(&self) -> Result<(u64, Bundle)>;
    /// Applies an edit to the policy objects, validates the result and stores it with an audit
    /// entry, all or nothing.
    fn edit_bundle(&self, actor: &str, edit: BundleEdit) -> Result<EditOutcome>;

    /// What is attached to a node or service (a service never attached has nothing).
    fn attachments(&self, target: &Target) -> Result<Attachments>;
    /// Attaches a moduleset or ruleset, recording `actor` as who attached it; `Ok(false)` when
    /// it already was. `NotFound` when the object does not exist. An admin attaching what a
    /// node attached takes it over (the node can no longer detach it); a node attaching what
    /// an admin attached changes nothing.
    fn attach(&self, target: &Target, kind: AttachKind, name: &str, actor: &str) -> Result<bool>;
    /// Detaches (an admin's call: whoever attached it); `Ok(false)` when it was not attached.
    fn detach(&self, target: &Target, kind: AttachKind, name: &str, actor: &str) -> Result<bool>;
    /// Detaches from a node what `actor` attached itself; `Forbidden` naming who attached it
    /// when someone else did; `Ok(false)` when it was not attached.
    fn detach_own(&self, node_id: &str, kind: AttachKind, name: &str, actor: &str) -> Result<bool>;

    /// Records a run's results once per `run_id`: `Ok(false)` when it was recorded before.
    fn record_run(&self, node_id: &str, run: &RunResults) -> Result<bool>;
    /// Latest module statuses of a node, of its node runs and service runs, and the time of
    /// its last run.
    fn node_status(&self, node_id: &str) -> Result<(Vec<ModuleStatus>, Option<String>)>;
    /// How many runs of a node are stored (history).
    fn run_count(&self, node_id: &str) -> Result<u64>;
    /// A node's latest runs (history), newest first.
    fn runs(&self, node_id: &str, limit: u32) -> Result<Vec<RunSummary>>;

    /// Stores the configuration rendered for a service (creating the service if needed),
    /// replacing the previous one, with an audit entry.
    fn put_service_config(&self, config: &ServiceConfig, actor: &str) -> Result<()>;
    /// The configuration of a service, if one was rendered.
    fn service_config(&self, service: &str) -> Result<Option<ServiceConfig>>;

    /// Keeps a copy of a served policy, by hash (idempotent).
    fn save_policy_snapshot(&self, hash: &str, policy_json: &str) -> Result<()>;
    /// A served policy, by hash.
    fn policy_snapshot(&self, hash: &str) -> Result<Option<String>>;

    /// The latest audit entries, newest first.
    fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>>;
    /// Figures for `/metrics`.
    fn gauges(&self) -> Result<Gauges>;

    // Collector-queued actions (see `tenet_rulesets::action` for the statuses).

    /// Queues an allow-listed command for a node (status W), with an audit entry.
    fn queue_action(&self, node_id: &str, command: &str, actor: &str) -> Result<Action>;
    /// One action.
    fn action(&self, id: i64) -> Result<Option<Action>>;
    /// Actions, newest first, of one node and/or in some statuses.
    fn list_actions(
        &self,
        node_id: Option<&str>,
        statuses: &[String],
        limit: u32,
    ) -> Result<Vec<Action>>;
    /// Where to notify a node, and its newest waiting action.
    fn notify_target(&self, node_id: &str) -> Result<NotifyTarget>;
    /// After notifying a node: its waiting actions up to `up_to` become N, or (on failure)
    /// carry the error and stay W. Returns how many actions were concerned.
    fn action_notified(&self, node_id: &str, up_to: i64, error: Option<&str>) -> Result<u64>;
    /// Nodes with waiting (W) actions.
    fn nodes_with_waiting_actions(&self) -> Result<Vec<String>>;
    /// Sends a node its actions (W, N, and S sent before `resend_before`): they become S.
    fn dequeue_actions(&self, node_id: &str, resend_before: &str) -> Result<Vec<DequeuedAction>>;
    /// The node acknowledges actions it was sent: S → R. Returns those now running.
    fn ack_actions(&self, node_id: &str, ids: &[i64]) -> Result<Vec<i64>>;
    /// Records an action's result (→ T); `Ok(false)` when the same result was recorded before,
    /// `Conflict` when it was cancelled or has another result.
    fn action_result(&self, node_id: &str, result: &ActionResult) -> Result<bool>;
    /// Cancels an action the node has not acknowledged (W, N, S → C); `Conflict` otherwise.
    fn cancel_action(&self, id: i64, actor: &str) -> Result<Action>;
    /// Records the address a node pushed its facts from (where it is notified).
    fn set_node_address(&self, node_id: &str, address: &str) -> Result<()>;

    /// Stores a node's status of a release (replacing the previous one).
    fn put_release_status(
        &self,
        node_id: &str,
        version: &str,
        state: &str,
        doc: &serde_json::Value,
    ) -> Result<()>;
    // Retention (see `crate::retention`).

    /// The last day rolled up into daily aggregates, and the day of the oldest run kept.
    fn retention_state(&self) -> Result<(Option<String>, Option<String>)>;
    /// Rolls up `day` (`YYYY-MM-DD`, UTC; `next` is the day after) into the daily aggregates
    /// and records it as done. Reads on a read connection; writes in one short write.
    fn rollup_day(&self, day: &str, next: &str) -> Result<u64>;
    /// Deletes up to `limit` runs received before `before` (never a node's or service's
    /// latest), with their module results. Returns how many.
    fn prune_runs(&self, before: &str, limit: u32) -> Result<u64>;
    /// Deletes up to `limit` daily aggregate rows of days before `before_day`.
    fn prune_daily(&self, before_day: &str, limit: u32) -> Result<u64>;
    /// Compliance per day since `since_day`: of every node and service, or of one module.
    fn compliance_daily(
        &self,
        since_day: &str,
        module: Option<&str>,
    ) -> Result<Vec<DailyCompliance>>;

    /// Release statuses, of one node and/or one version, by node name then version.
    fn release_statuses(
        &self,
        node_id: Option<&str>,
        version: Option<&str>,
    ) -> Result<Vec<ReleaseRow>>;

    // ---- The web console (issue 15, `crate::ui`): tokens with a role, and reads shaped for
    // its pages, each one query or a few over indexes (migration 7), so that a page stays
    // fast with 10,000 nodes and 30 days of history. ----

    /// Records a token of `role` by the hex SHA-256 of its value.
    fn create_token(&self, name: &str, token_hash: &str, role: TokenRole) -> Result<()>;
    /// The name and role of the token with this digest, if any.
    fn token(&self, token_hash: &str) -> Result<Option<(String, TokenRole)>>;
    /// The nodes matching `filter`, by name, with their compliance counts (node and service
    /// statuses, as in [`NodeSummary::compliance`]) and when they were last seen.
    fn fleet_nodes(&self, filter: &FleetFilter) -> Result<Vec<FleetNode>>;
    /// The modules with the most nok statuses over the nodes matching `filter`, worst first.
    fn worst_modules(&self, filter: &FleetFilter, limit: u32) -> Result<Vec<ModuleCount>>;
    /// Compliance per day since `since_day` (oldest first) of the nodes matching `filter`
    /// (every node and service: the same figures as [`Store::compliance_daily`]).
    fn fleet_daily(&self, since_day: &str, filter: &FleetFilter) -> Result<Vec<DailyCompliance>>;
    /// Every daily aggregate row of nodes (and their services) since `since_day`: what the
    /// console's trend of a filtered selection and the nodes' usual intervals are computed
    /// from (it keeps them in memory until the next day is rolled up).
    fn node_days(&self, since_day: &str) -> Result<Vec<NodeDay>>;
    /// Counts of the latest statuses of `module` over every node and service, and the first
    /// `limit` of them, nok first, then by node.
    fn module_nodes(
        &self,
        module: &str,
        limit: u32,
    ) -> Result<(tenet_rulesets::api::Summary, Vec<ModuleNode>)>;
    /// A node's latest `limit` runs with each module's status, newest first.
    fn run_history(&self, node_id: &str, limit: u32) -> Result<Vec<RunModules>>;
    /// The audit entries about `objects` (`ruleset NAME`, `moduleset NAME`), newest first.
    fn audit_of(&self, objects: &[String], limit: u32) -> Result<Vec<AuditEntry>>;
    /// Each module's sub-actions with their logs (check, fixable, fix: a rule's diff is in
    /// its check's log) in the most recent of the node's last `runs` runs that has it (a
    /// `fixable` run only when no other has), per service and module.
    fn latest_module_logs(&self, node_id: &str, runs: u32) -> Result<Vec<ModuleLogs>>;
}

/// A module's sub-actions in its latest run (see [`Store::latest_module_logs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleLogs {
    /// The service ("" for the node itself).
    pub service: String,
    /// The module.
    pub module: String,
    /// (sub-action, exit code, log), in order.
    pub actions: Vec<(String, i32, String)>,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Everything.
    Admin,
    /// Read everything, change nothing: every state-changing request is refused (403).
    Viewer,
}

impl TokenRole {
    /// `admin` or `viewer`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::Viewer => "viewer",
        }
    }
}

/// The state of a node, from its latest module statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// No module nok and at least one ok.
    Ok,
    /// At least one module nok.
    Nok,
    /// Only n/a modules, or none reported yet.
    Na,
}

impl NodeState {
    /// The state of a node with these counts.
    pub fn of(c: &tenet_rulesets::api::Summary) -> NodeState {
        if c.nok > 0 {
            NodeState::Nok
        } else if c.ok > 0 {
            NodeState::Ok
        } else {
            NodeState::Na
        }
    }

    /// `ok`, `nok` or `n/a`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Ok => "ok",
            NodeState::Nok => "nok",
            NodeState::Na => "n/a",
        }
    }
}

/// Which nodes a console page is about; every part given must hold (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetFilter {
    /// Node names containing this text (case-insensitive).
    pub name: Option<String>,
    /// Facts: `(field, value)` pairs the node's `nodes` facts hold exactly.
    pub facts: Vec<(String, String)>,
    /// Nodes with a latest status of this module.
    pub module: Option<String>,
    /// Nodes in this state.
    pub state: Option<NodeState>,
}

impl FleetFilter {
    /// Whether it selects every node.
    pub fn is_empty(&self) -> bool {
        self == &FleetFilter::default()
    }
}

/// A node as the fleet page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetNode {
    /// Node id.
    pub node_id: String,
    /// Node name.
    pub name: String,
    /// Last facts push or results post.
    pub last_seen: Option<String>,
    /// Latest module statuses, node and services.
    pub compliance: tenet_rulesets::api::Summary,
}

/// A module and how many latest statuses it has, nok and in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleCount {
    /// Module name.
    pub module: String,
    /// Latest statuses nok.
    pub nok: i64,
    /// Latest statuses in all, over the whole fleet (`None` for a filtered selection: counting
    /// them would read every status of the selected nodes).
    pub total: Option<i64>,
}

/// One daily aggregate row of a node or a service on it (`node_daily`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDay {
    /// Node id.
    pub node_id: String,
    /// Whether the row is of a service on the node rather than the node itself.
    pub service: bool,
    /// The day (`YYYY-MM-DD`).
    pub day: String,
    /// Runs that day.
    pub runs: i64,
    /// Modules ending ok, nok, n/a at their last run of the day.
    pub ok: i64,
    /// nok.
    pub nok: i64,
    /// n/a.
    pub na: i64,
}

/// One node's (or service's) latest status of a module.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleNode {
    /// Node name.
    pub node: String,
    /// The service, if a service run.
    pub service: Option<String>,
    /// The status and the rest of it.
    pub status: ModuleStatus,
}

/// A run and the status of each of its modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunModules {
    /// The run.
    pub run: RunSummary,
    /// (module, status), in run order.
    pub modules: Vec<(String, String)>,
}

/// One aggregate row of a day: of a node (`key` = node id, `service`) or of a module (`key`
/// = module name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyRow {
    /// Node id or module name.
    pub key: String,
    /// The service ("" for the node itself, and for modules).
    pub service: String,
    /// Runs that day (nodes only).
    pub runs: i64,
    /// Modules (or nodes, for a module) ending ok in their last run of the day.
    pub ok: i64,
    /// Ending nok.
    pub nok: i64,
    /// Ending n/a.
    pub na: i64,
}

/// Compliance of one day, for trend charts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyCompliance {
    /// The day (`YYYY-MM-DD`, UTC).
    pub day: String,
    /// Nodes and services that reported that day (or had the module).
    pub subjects: i64,
    /// Of them, those with no module nok at their last run of the day (or with the module ok
    /// or n/a).
    pub compliant: i64,
    /// Module statuses ok, summed.
    pub ok: i64,
    /// Module statuses nok, summed.
    pub nok: i64,
    /// Module statuses n/a, summed.
    pub na: i64,
}

/// Where to notify a node of queued actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    /// The address it last pushed facts from, if it did.
    pub address: Option<String>,
    /// Its listener port (from its facts; default 1214).
    pub port: u16,
    /// Its newest waiting (W) action, if any.
    pub max_waiting: Option<i64>,
}

/// A node's status of a release.
#[derive(Debug, Clone)]
pub struct ReleaseRow {
    /// The node's name.
    pub node: String,
    /// The version.
    pub version: String,
    /// The state the node reported.
    pub state: String,
    /// When it was received.
    pub received_at: String,
    /// The node's status document.
    pub doc: serde_json::Value,
}

/// Now, as the store writes times: `YYYY-MM-DD HH:MM:SS`, UTC.
pub fn now_text() -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::now_utc()
        .format(&f)
        .unwrap_or_default()
}

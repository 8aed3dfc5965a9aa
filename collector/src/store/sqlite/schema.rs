//! The schema: migrations, versioned in code and applied in order at open.

use rusqlite::{Connection, params};

use super::{actions, console, retention};
use crate::error::{Error, Result};
use crate::store::now_text;

/// Schema migrations, applied in order; each runs once, in its own transaction, and is
/// recorded in `schema_migrations`. Never edit a released entry: append a new one.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('policy_generation', '0');

CREATE TABLE admin_tokens (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE filtersets (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    stats INTEGER NOT NULL DEFAULT 0,
    ext_id INTEGER
);
CREATE TABLE filterset_entries (
    id INTEGER PRIMARY KEY,
    filterset_id INTEGER NOT NULL REFERENCES filtersets(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    logical_op TEXT NOT NULL,
    ord INTEGER NOT NULL,
    fact_table TEXT,
    field TEXT,
    op TEXT,
    value TEXT,
    ext_id INTEGER,
    nested_filterset_id INTEGER REFERENCES filtersets(id),
    CHECK ((fact_table IS NULL) <> (nested_filterset_id IS NULL))
);
CREATE INDEX filterset_entries_fs ON filterset_entries(filterset_id);

CREATE TABLE rulesets (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('explicit', 'contextual')),
    public INTEGER NOT NULL,
    filterset_id INTEGER REFERENCES filtersets(id),
    ext_id INTEGER,
    publications TEXT NOT NULL DEFAULT '[]',
    responsibles TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE variables (
    id INTEGER PRIMARY KEY,
    ruleset_id INTEGER NOT NULL REFERENCES rulesets(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    class TEXT NOT NULL,
    value TEXT NOT NULL,
    ext_id INTEGER,
    author TEXT,
    updated TEXT
);
CREATE INDEX variables_rs ON variables(ruleset_id);
CREATE TABLE ruleset_children (
    parent_id INTEGER NOT NULL REFERENCES rulesets(id) ON DELETE CASCADE,
    child_id INTEGER NOT NULL REFERENCES rulesets(id),
    position INTEGER NOT NULL,
    PRIMARY KEY (parent_id, child_id)
);

CREATE TABLE modulesets (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    ext_id INTEGER,
    publications TEXT NOT NULL DEFAULT '[]',
    responsibles TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE moduleset_modules (
    moduleset_id INTEGER NOT NULL REFERENCES modulesets(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    autofix INTEGER NOT NULL,
    PRIMARY KEY (moduleset_id, name)
);
CREATE TABLE moduleset_children (
    parent_id INTEGER NOT NULL REFERENCES modulesets(id) ON DELETE CASCADE,
    child_id INTEGER NOT NULL REFERENCES modulesets(id),
    position INTEGER NOT NULL,
    PRIMARY KEY (parent_id, child_id)
);
CREATE TABLE moduleset_rulesets (
    moduleset_id INTEGER NOT NULL REFERENCES modulesets(id) ON DELETE CASCADE,
    ruleset_id INTEGER NOT NULL REFERENCES rulesets(id),
    position INTEGER NOT NULL,
    PRIMARY KEY (moduleset_id, ruleset_id)
);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_seen TEXT,
    facts TEXT NOT NULL DEFAULT '{}',
    facts_hash TEXT NOT NULL DEFAULT '',
    facts_updated TEXT,
    listener_port INTEGER NOT NULL DEFAULT 1214,
    attach_version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE node_packages (
    node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    arch TEXT NOT NULL
);
CREATE INDEX node_packages_node ON node_packages(node_id);
CREATE INDEX node_packages_name ON node_packages(name);
CREATE TABLE services (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    attach_version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE node_services (
    node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    service_id INTEGER NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    PRIMARY KEY (node_id, service_id)
);
CREATE TABLE node_modulesets (
    node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    moduleset_id INTEGER NOT NULL REFERENCES modulesets(id) ON DELETE CASCADE,
    attached_at TEXT NOT NULL,
    PRIMARY KEY (node_id, moduleset_id)
);
CREATE TABLE node_rulesets (
    node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    ruleset_id INTEGER NOT NULL REFERENCES rulesets(id) ON DELETE CASCADE,
    attached_at TEXT NOT NULL,
    PRIMARY KEY (node_id, ruleset_id)
);
CREATE TABLE service_modulesets (
    service_id INTEGER NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    moduleset_id INTEGER NOT NULL REFERENCES modulesets(id) ON DELETE CASCADE,
    attached_at TEXT NOT NULL,
    PRIMARY KEY (service_id, moduleset_id)
);
CREATE TABLE service_rulesets (
    service_id INTEGER NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    ruleset_id INTEGER NOT NULL REFERENCES rulesets(id) ON DELETE CASCADE,
    attached_at TEXT NOT NULL,
    PRIMARY KEY (service_id, ruleset_id)
);

CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    run_id TEXT NOT NULL,
    service TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL,
    policy_hash TEXT NOT NULL,
    agent_version TEXT NOT NULL,
    started_at TEXT,
    received_at TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    nok INTEGER NOT NULL,
    na INTEGER NOT NULL,
    UNIQUE (node_id, run_id)
);
CREATE TABLE module_results (
    id INTEGER PRIMARY KEY,
    run_pk INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    module TEXT NOT NULL,
    moduleset TEXT NOT NULL,
    status TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX module_results_run ON module_results(run_pk);
CREATE TABLE module_status (
    node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    service TEXT NOT NULL,
    module TEXT NOT NULL,
    moduleset TEXT NOT NULL,
    status TEXT NOT NULL,
    action TEXT NOT NULL,
    log TEXT NOT NULL,
    policy_hash TEXT NOT NULL,
    rules TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (node_id, service, module)
);
CREATE INDEX module_status_status ON module_status(status);

CREATE TABLE policy_snapshots (
    hash TEXT PRIMARY KEY,
    policy TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    detail TEXT NOT NULL
);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE service_configs (
    service_id INTEGER PRIMARY KEY REFERENCES services(id) ON DELETE CASCADE,
    form TEXT NOT NULL,
    inputs TEXT NOT NULL,
    config TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"#,
    ),
    // The action queue and node addresses (issue 4).
    (3, actions::MIGRATION),
    // Release statuses reported by nodes (issue 7).
    (
        4,
        r#"
CREATE TABLE release_status (
    node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    version TEXT NOT NULL,
    state TEXT NOT NULL,
    doc TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (node_id, version)
);
CREATE INDEX release_status_version ON release_status (version);
"#,
    ),
    // Retention: daily aggregates and the index pruning scans (issue 13).
    (5, retention::MIGRATION),
    // Privileges come from what an admin assigns, never from what a node reports (issue 13).
    (6, MIGRATION_6),
    // The web console: viewer tokens, pre-aggregated compliance, its indexes (issue 15).
    (7, console::MIGRATION),
];

/// Migration 6: admin-assigned node attributes, and who made each node attachment.
///
/// What the old rows mean afterwards:
/// - `node_services` held the services nodes *said* they host, and granted them access: those
///   claims cannot be told from forged ones, so they are kept as `node_reported_services`
///   (shown to admins) and grant nothing. No node hosts a service until an admin assigns it
///   (`PUT /api/v1/nodes/{node}` with `services`).
/// - `nodes.team_responsible` is new and empty: the team a node reported in its facts is not
///   carried over (same reason).
/// - `attached_by` of an existing node attachment is taken from the audit log (the actor of
///   the latest `attach` of that object to that node); where no entry is left it stays NULL,
///   which counts as an admin's attachment: the node cannot detach it.
const MIGRATION_6: &str = r#"
ALTER TABLE nodes ADD COLUMN team_responsible TEXT;
ALTER TABLE node_services RENAME TO node_reported_services;
CREATE TABLE node_assigned_services (
    node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    service_id INTEGER NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    assigned_at TEXT NOT NULL,
    PRIMARY KEY (node_id, service_id)
);
ALTER TABLE node_modulesets ADD COLUMN attached_by TEXT;
ALTER TABLE node_rulesets ADD COLUMN attached_by TEXT;
UPDATE node_modulesets SET attached_by = (
    SELECT a.actor FROM audit_log a, modulesets m
    WHERE m.id = node_modulesets.moduleset_id AND a.action = 'attach'
      AND a.object = 'node ' || node_modulesets.node_id AND a.detail = 'moduleset ' || m.name
    ORDER BY a.id DESC LIMIT 1);
UPDATE node_rulesets SET attached_by = (
    SELECT a.actor FROM audit_log a, rulesets r
    WHERE r.id = node_rulesets.ruleset_id AND a.action = 'attach'
      AND a.object = 'node ' || node_rulesets.node_id AND a.detail = 'ruleset ' || r.name
    ORDER BY a.id DESC LIMIT 1);
"#;

/// The latest schema version.
pub fn schema_version() -> i64 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    )?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    if current > schema_version() {
        return Err(Error::Store(format!(
            "the database has schema version {current}, newer than this collector's {}",
            schema_version()
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![version, now_text()],
        )?;
        tx.commit()?;
        tracing::info!("store: applied migration {version}");
    }
    Ok(())
}

//! The embedded store: one SQLite file in WAL mode, foreign keys on, migrations versioned in
//! code ([`MIGRATIONS`]).
//!
//! Writes go through one writer thread that commits in groups: it takes every write waiting,
//! runs each in its own savepoint (one failing write does not sink the others), commits once
//! (one WAL fsync, `synchronous = FULL`) and only then answers each caller. So a write that
//! returned `Ok` survives a crash or `kill -9`, and 50 concurrent result posts cost one fsync,
//! not 50. Reads use a small pool of connections that never block the writer (WAL).

#[path = "sqlite_actions.rs"]
mod actions;
#[path = "sqlite_retention.rs"]
mod retention;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tenet_rulesets::api::{ModuleStatus, RuleResult, RunResults};
use tenet_rulesets::export::{
    filter_op_str, logical_op_str, parse_filter_op, parse_logical_op, parse_ruleset_type,
    ruleset_type_str,
};
use tenet_rulesets::{
    Bundle, Filter, FilterEntry, FilterTest, Filterset, Meta, ModuleRef, Moduleset, NodeFacts,
    PackageFact, Ruleset, VarValue, Variable,
};

use super::{
    AttachKind, Attachments, AuditEntry, BundleEdit, DailyCompliance, EditOutcome, Gauges,
    NodeAuth, NodeSummary, NotifyTarget, ReleaseRow, RunSummary, ServiceConfig, Store, Target,
    now_text,
};
use crate::error::{Error, Result};
use tenet_rulesets::action::{Action, ActionResult, DequeuedAction};

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
];

/// The latest schema version.
pub fn schema_version() -> i64 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

/// A write waiting for the writer thread: runs inside the group transaction and returns what
/// to tell its caller once the group's commit is known.
type Job = Box<dyn FnOnce(&Connection) -> Completion + Send>;
type Completion = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;

/// Most writes committed together (bounds the latency of the first one of a group).
const MAX_GROUP: usize = 256;

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<mpsc::Sender<Job>>,
    readers: Mutex<Vec<Connection>>,
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;
         PRAGMA journal_size_limit = 67108864;",
    )
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, switches it to WAL and applies
    /// pending migrations.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let mut conn = Connection::open(path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Store(format!(
                "{}: cannot switch to WAL mode (got {mode})",
                path.display()
            )));
        }
        configure(&conn)?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| Error::Store(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writer: Mutex::new(tx),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// Runs `f` on a pooled read connection.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.readers.lock().expect("reader pool").pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                configure(&c)?;
                c
            }
        };
        let out = f(&conn);
        self.readers.lock().expect("reader pool").push(conn);
        out
    }

    /// Runs `f` in the writer's group transaction and waits for the commit.
    fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel::<Result<T>>(1);
        let job: Job = Box::new(move |conn: &Connection| {
            let res = run_in_savepoint(conn, f);
            Box::new(move |commit: std::result::Result<(), String>| {
                let out = match (res, commit) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(m)) => Err(Error::Store(format!("commit failed: {m}"))),
                    (Ok(v), Ok(())) => Ok(v),
                };
                let _ = tx.send(out);
            })
        });
        self.writer
            .lock()
            .expect("writer channel")
            .send(job)
            .map_err(|_| Error::Store("the writer thread stopped".into()))?;
        rx.recv()
            .map_err(|_| Error::Store("the writer thread stopped".into()))?
    }
}

fn run_in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    conn.execute_batch("SAVEPOINT job")?;
    match f(conn) {
        Ok(v) => {
            conn.execute_batch("RELEASE job")?;
            Ok(v)
        }
        Err(e) => {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let msg = e.to_string();
            for job in jobs {
                // Each job still gets an answer: run nothing, report the failure.
                drop(job);
                tracing::error!("store: cannot begin a transaction: {msg}");
            }
            continue;
        }
        let completions: Vec<Completion> = jobs.into_iter().map(|job| job(&conn)).collect();
        let commit = conn.execute_batch("COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            e.to_string()
        });
        for c in completions {
            c(commit.clone());
        }
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
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

fn read_generation(conn: &Connection) -> Result<u64> {
    let g: String = conn.query_row(
        "SELECT value FROM meta WHERE key = 'policy_generation'",
        [],
        |r| r.get(0),
    )?;
    g.parse()
        .map_err(|_| Error::Store(format!("meta.policy_generation is not a number: {g}")))
}

fn audit(conn: &Connection, actor: &str, action: &str, object: &str, detail: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit_log (at, actor, action, object, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![now_text(), actor, action, object, detail])?;
    Ok(())
}

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn parse_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Store(format!("corrupt {what} in the database: {detail}"))
}

/// Reads every policy object, in creation order.
fn load_bundle(conn: &Connection) -> Result<Bundle> {
    let mut bundle = Bundle::default();
    let mut fs_names = std::collections::HashMap::new();
    {
        let mut st =
            conn.prepare_cached("SELECT id, name, stats, ext_id FROM filtersets ORDER BY id")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })?;
        for row in rows {
            let (id, name, stats, ext_id) = row?;
            fs_names.insert(id, name.clone());
            bundle.filtersets.insert(
                name.clone(),
                Filterset {
                    name,
                    stats,
                    id: ext_id,
                    filters: Vec::new(),
                },
            );
        }
    }
    {
        let mut st = conn.prepare_cached(
            "SELECT filterset_id, logical_op, ord, fact_table, field, op, value, ext_id, nested_filterset_id
             FROM filterset_entries ORDER BY filterset_id, position",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let fs_id: i64 = r.get(0)?;
            let lop: String = r.get(1)?;
            let logical_op =
                parse_logical_op(&lop).ok_or_else(|| corrupt("filter logical op", &lop))?;
            let nested: Option<i64> = r.get(8)?;
            let test = match nested {
                Some(n) => FilterTest::Filterset(
                    fs_names
                        .get(&n)
                        .cloned()
                        .ok_or_else(|| corrupt("nested filterset", n))?,
                ),
                None => {
                    let op: String = r.get(5)?;
                    FilterTest::Filter(Filter {
                        table: r.get(3)?,
                        field: r.get(4)?,
                        op: parse_filter_op(&op).ok_or_else(|| corrupt("filter op", &op))?,
                        value: r.get(6)?,
                        id: r.get(7)?,
                    })
                }
            };
            let name = fs_names
                .get(&fs_id)
                .ok_or_else(|| corrupt("filterset entry", fs_id))?;
            bundle
                .filtersets
                .get_mut(name)
                .expect("filterset loaded above")
                .filters
                .push(FilterEntry {
                    logical_op,
                    order: r.get(2)?,
                    test,
                });
        }
    }
    let mut rs_names = std::collections::HashMap::new();
    {
        let mut st = conn.prepare_cached(
            "SELECT id, name, kind, public, filterset_id, ext_id, publications, responsibles FROM rulesets ORDER BY id",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let name: String = r.get(1)?;
            let kind: String = r.get(2)?;
            let fs: Option<i64> = r.get(4)?;
            let filterset = match fs {
                Some(f) => Some(
                    fs_names
                        .get(&f)
                        .cloned()
                        .ok_or_else(|| corrupt("ruleset filterset", f))?,
                ),
                None => None,
            };
            rs_names.insert(id, name.clone());
            bundle.rulesets.insert(
                name.clone(),
                Ruleset {
                    name,
                    kind: parse_ruleset_type(&kind)
                        .ok_or_else(|| corrupt("ruleset type", &kind))?,
                    filterset,
                    public: r.get(3)?,
                    children: Vec::new(),
                    variables: Vec::new(),
                    meta: Meta {
                        id: r.get(5)?,
                        publications: parse_list(&r.get::<_, String>(6)?),
                        responsibles: parse_list(&r.get::<_, String>(7)?),
                    },
                },
            );
        }
    }
    {
        let mut st = conn.prepare_cached(
            "SELECT ruleset_id, name, class, value, ext_id, author, updated FROM variables ORDER BY ruleset_id, position",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let rs: i64 = r.get(0)?;
            let value: String = r.get(3)?;
            let value: VarValue =
                serde_json::from_str(&value).map_err(|e| corrupt("variable value", e))?;
            let name = rs_names.get(&rs).ok_or_else(|| corrupt("variable", rs))?;
            bundle
                .rulesets
                .get_mut(name)
                .expect("ruleset loaded above")
                .variables
                .push(Variable {
                    name: r.get(1)?,
                    class: r.get(2)?,
                    value,
                    id: r.get(4)?,
                    author: r.get(5)?,
                    updated: r.get(6)?,
                });
        }
    }
    {
        let mut st = conn.prepare_cached(
            "SELECT parent_id, child_id FROM ruleset_children ORDER BY parent_id, position",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let (p, c): (i64, i64) = (r.get(0)?, r.get(1)?);
            let child = rs_names
                .get(&c)
                .cloned()
                .ok_or_else(|| corrupt("ruleset child", c))?;
            let parent = rs_names
                .get(&p)
                .ok_or_else(|| corrupt("ruleset parent", p))?;
            bundle
                .rulesets
                .get_mut(parent)
                .expect("loaded")
                .children
                .push(child);
        }
    }
    let mut ms_names = std::collections::HashMap::new();
    {
        let mut st = conn.prepare_cached(
            "SELECT id, name, ext_id, publications, responsibles FROM modulesets ORDER BY id",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let name: String = r.get(1)?;
            ms_names.insert(id, name.clone());
            bundle.modulesets.insert(
                name.clone(),
                Moduleset {
                    name,
                    modules: Vec::new(),
                    children: Vec::new(),
                    rulesets: Vec::new(),
                    meta: Meta {
                        id: r.get(2)?,
                        publications: parse_list(&r.get::<_, String>(3)?),
                        responsibles: parse_list(&r.get::<_, String>(4)?),
                    },
                },
            );
        }
    }
    {
        let mut st = conn.prepare_cached(
            "SELECT moduleset_id, name, autofix FROM moduleset_modules ORDER BY moduleset_id, position",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let ms: i64 = r.get(0)?;
            let name = ms_names.get(&ms).ok_or_else(|| corrupt("module", ms))?;
            bundle
                .modulesets
                .get_mut(name)
                .expect("loaded")
                .modules
                .push(ModuleRef {
                    name: r.get(1)?,
                    autofix: r.get(2)?,
                });
        }
    }
    {
        let mut st = conn.prepare_cached(
            "SELECT parent_id, child_id FROM moduleset_children ORDER BY parent_id, position",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let (p, c): (i64, i64) = (r.get(0)?, r.get(1)?);
            let child = ms_names
                .get(&c)
                .cloned()
                .ok_or_else(|| corrupt("moduleset child", c))?;
            let parent = ms_names
                .get(&p)
                .ok_or_else(|| corrupt("moduleset parent", p))?;
            bundle
                .modulesets
                .get_mut(parent)
                .expect("loaded")
                .children
                .push(child);
        }
    }
    {
        let mut st = conn.prepare_cached(
            "SELECT moduleset_id, ruleset_id FROM moduleset_rulesets ORDER BY moduleset_id, position",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let (m, rs): (i64, i64) = (r.get(0)?, r.get(1)?);
            let rs = rs_names
                .get(&rs)
                .cloned()
                .ok_or_else(|| corrupt("moduleset ruleset", rs))?;
            let ms = ms_names.get(&m).ok_or_else(|| corrupt("moduleset", m))?;
            bundle
                .modulesets
                .get_mut(ms)
                .expect("loaded")
                .rulesets
                .push(rs);
        }
    }
    Ok(bundle)
}

fn id_of(conn: &Connection, table: &str, name: &str) -> Result<i64> {
    // `table` is one of a fixed set of identifiers chosen by this module, never user input.
    let sql = match table {
        "rulesets" => "SELECT id FROM rulesets WHERE name = ?1",
        "modulesets" => "SELECT id FROM modulesets WHERE name = ?1",
        "filtersets" => "SELECT id FROM filtersets WHERE name = ?1",
        other => return Err(Error::Store(format!("no table {other}"))),
    };
    conn.prepare_cached(sql)?
        .query_row([name], |r| r.get(0))
        .optional()?
        .ok_or_else(|| Error::Store(format!("{table} {name} vanished during an edit")))
}

/// Writes the difference between `old` and `new` (both valid bundles): objects are matched by
/// name, so database ids (and the attachments pointing at them) survive edits.
fn save_bundle(conn: &Connection, old: &Bundle, new: &Bundle) -> Result<()> {
    // 1. Relation rows of changed or removed objects go first, so nothing references an
    //    object about to be removed.
    for (name, fs) in &old.filtersets {
        if new.filtersets.get(name) != Some(fs) {
            let id = id_of(conn, "filtersets", name)?;
            conn.execute(
                "DELETE FROM filterset_entries WHERE filterset_id = ?1",
                [id],
            )?;
        }
    }
    for (name, rs) in &old.rulesets {
        if new.rulesets.get(name) != Some(rs) {
            let id = id_of(conn, "rulesets", name)?;
            conn.execute("DELETE FROM variables WHERE ruleset_id = ?1", [id])?;
            conn.execute("DELETE FROM ruleset_children WHERE parent_id = ?1", [id])?;
        }
    }
    for (name, ms) in &old.modulesets {
        if new.modulesets.get(name) != Some(ms) {
            let id = id_of(conn, "modulesets", name)?;
            conn.execute(
                "DELETE FROM moduleset_modules WHERE moduleset_id = ?1",
                [id],
            )?;
            conn.execute("DELETE FROM moduleset_children WHERE parent_id = ?1", [id])?;
            conn.execute(
                "DELETE FROM moduleset_rulesets WHERE moduleset_id = ?1",
                [id],
            )?;
        }
    }
    // 2. Removed objects (attachments to them cascade).
    for name in old
        .modulesets
        .keys()
        .filter(|n| !new.modulesets.contains_key(*n))
    {
        conn.execute("DELETE FROM modulesets WHERE name = ?1", [name])?;
    }
    for name in old
        .rulesets
        .keys()
        .filter(|n| !new.rulesets.contains_key(*n))
    {
        conn.execute("DELETE FROM rulesets WHERE name = ?1", [name])?;
    }
    for name in old
        .filtersets
        .keys()
        .filter(|n| !new.filtersets.contains_key(*n))
    {
        conn.execute("DELETE FROM filtersets WHERE name = ?1", [name])?;
    }
    // 3. Upsert changed and new objects, filtersets first (rulesets point at them).
    let changed_fs: Vec<&Filterset> = new
        .filtersets
        .values()
        .filter(|fs| old.filtersets.get(&fs.name) != Some(*fs))
        .collect();
    for fs in &changed_fs {
        conn.prepare_cached(
            "INSERT INTO filtersets (name, stats, ext_id) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET stats = excluded.stats, ext_id = excluded.ext_id",
        )?
        .execute(params![fs.name, fs.stats, fs.id])?;
    }
    for fs in &changed_fs {
        let id = id_of(conn, "filtersets", &fs.name)?;
        for (pos, e) in fs.filters.iter().enumerate() {
            let lop = logical_op_str(e.logical_op);
            match &e.test {
                FilterTest::Filter(f) => conn
                    .prepare_cached(
                        "INSERT INTO filterset_entries (filterset_id, position, logical_op, ord, fact_table, field, op, value, ext_id)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )?
                    .execute(params![
                        id,
                        pos as i64,
                        lop,
                        e.order,
                        f.table,
                        f.field,
                        filter_op_str(f.op),
                        f.value,
                        f.id
                    ])?,
                FilterTest::Filterset(child) => {
                    let child_id = id_of(conn, "filtersets", child)?;
                    conn.prepare_cached(
                        "INSERT INTO filterset_entries (filterset_id, position, logical_op, ord, nested_filterset_id)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![id, pos as i64, lop, e.order, child_id])?
                }
            };
        }
    }
    let changed_rs: Vec<&Ruleset> = new
        .rulesets
        .values()
        .filter(|rs| old.rulesets.get(&rs.name) != Some(*rs))
        .collect();
    for rs in &changed_rs {
        let fs_id = match &rs.filterset {
            Some(f) => Some(id_of(conn, "filtersets", f)?),
            None => None,
        };
        conn.prepare_cached(
            "INSERT INTO rulesets (name, kind, public, filterset_id, ext_id, publications, responsibles)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, public = excluded.public,
               filterset_id = excluded.filterset_id, ext_id = excluded.ext_id,
               publications = excluded.publications, responsibles = excluded.responsibles",
        )?
        .execute(params![
            rs.name,
            ruleset_type_str(rs.kind),
            rs.public,
            fs_id,
            rs.meta.id,
            json_list(&rs.meta.publications),
            json_list(&rs.meta.responsibles)
        ])?;
    }
    for rs in &changed_rs {
        let id = id_of(conn, "rulesets", &rs.name)?;
        for (pos, v) in rs.variables.iter().enumerate() {
            let value = serde_json::to_string(&v.value).map_err(|e| Error::Store(e.to_string()))?;
            conn.prepare_cached(
                "INSERT INTO variables (ruleset_id, position, name, class, value, ext_id, author, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![id, pos as i64, v.name, v.class, value, v.id, v.author, v.updated])?;
        }
        for (pos, child) in rs.children.iter().enumerate() {
            let child_id = id_of(conn, "rulesets", child)?;
            conn.prepare_cached(
                "INSERT INTO ruleset_children (parent_id, child_id, position) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![id, child_id, pos as i64])?;
        }
    }
    let changed_ms: Vec<&Moduleset> = new
        .modulesets
        .values()
        .filter(|ms| old.modulesets.get(&ms.name) != Some(*ms))
        .collect();
    for ms in &changed_ms {
        conn.prepare_cached(
            "INSERT INTO modulesets (name, ext_id, publications, responsibles) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET ext_id = excluded.ext_id,
               publications = excluded.publications, responsibles = excluded.responsibles",
        )?
        .execute(params![
            ms.name,
            ms.meta.id,
            json_list(&ms.meta.publications),
            json_list(&ms.meta.responsibles)
        ])?;
    }
    for ms in &changed_ms {
        let id = id_of(conn, "modulesets", &ms.name)?;
        for (pos, m) in ms.modules.iter().enumerate() {
            conn.prepare_cached(
                "INSERT INTO moduleset_modules (moduleset_id, position, name, autofix) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, pos as i64, m.name, m.autofix])?;
        }
        for (pos, child) in ms.children.iter().enumerate() {
            let child_id = id_of(conn, "modulesets", child)?;
            conn.prepare_cached(
                "INSERT INTO moduleset_children (parent_id, child_id, position) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![id, child_id, pos as i64])?;
        }
        for (pos, rs) in ms.rulesets.iter().enumerate() {
            let rs_id = id_of(conn, "rulesets", rs)?;
            conn.prepare_cached(
                "INSERT INTO moduleset_rulesets (moduleset_id, ruleset_id, position) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![id, rs_id, pos as i64])?;
        }
    }
    Ok(())
}

fn service_id(conn: &Connection, name: &str, create: bool) -> Result<Option<i64>> {
    if create {
        conn.prepare_cached(
            "INSERT INTO services (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
        )?
        .execute(params![name, now_text()])?;
    }
    Ok(conn
        .prepare_cached("SELECT id FROM services WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

fn node_exists(conn: &Connection, node_id: &str) -> Result<()> {
    let found: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM nodes WHERE id = ?1")?
        .query_row([node_id], |r| r.get(0))
        .optional()?;
    found
        .map(|_| ())
        .ok_or_else(|| Error::not_found("node", node_id))
}

fn attachments(conn: &Connection, target: &Target) -> Result<Attachments> {
    let mut out = Attachments::default();
    let (ms_sql, rs_sql, ver_sql, key): (&str, &str, &str, rusqlite::types::Value) = match target {
        Target::Node(id) => (
            "SELECT m.name FROM node_modulesets a JOIN modulesets m ON m.id = a.moduleset_id WHERE a.node_id = ?1 ORDER BY a.attached_at, m.id",
            "SELECT r.name FROM node_rulesets a JOIN rulesets r ON r.id = a.ruleset_id WHERE a.node_id = ?1 ORDER BY a.attached_at, r.id",
            "SELECT attach_version FROM nodes WHERE id = ?1",
            id.clone().into(),
        ),
        Target::Service(name) => match service_id(conn, name, false)? {
            None => return Ok(out),
            Some(id) => (
                "SELECT m.name FROM service_modulesets a JOIN modulesets m ON m.id = a.moduleset_id WHERE a.service_id = ?1 ORDER BY a.attached_at, m.id",
                "SELECT r.name FROM service_rulesets a JOIN rulesets r ON r.id = a.ruleset_id WHERE a.service_id = ?1 ORDER BY a.attached_at, r.id",
                "SELECT attach_version FROM services WHERE id = ?1",
                id.into(),
            ),
        },
    };
    out.modulesets = conn
        .prepare_cached(ms_sql)?
        .query_map([&key], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    out.rulesets = conn
        .prepare_cached(rs_sql)?
        .query_map([&key], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    out.version = conn
        .prepare_cached(ver_sql)?
        .query_row([&key], |r| r.get(0))
        .optional()?
        .ok_or_else(|| Error::not_found("node", target.to_string()))?;
    Ok(out)
}

fn change_attachment(
    conn: &Connection,
    target: &Target,
    kind: AttachKind,
    name: &str,
    attach: bool,
    actor: &str,
) -> Result<bool> {
    let obj_id: Option<i64> = conn
        .prepare_cached(match kind {
            AttachKind::Moduleset => "SELECT id FROM modulesets WHERE name = ?1",
            AttachKind::Ruleset => "SELECT id FROM rulesets WHERE name = ?1",
        })?
        .query_row([name], |r| r.get(0))
        .optional()?;
    let Some(obj_id) = obj_id else {
        return Err(Error::not_found(kind.as_str(), name));
    };
    let changed = match target {
        Target::Node(node) => {
            node_exists(conn, node)?;
            let sql = match (kind, attach) {
                (AttachKind::Moduleset, true) => {
                    "INSERT INTO node_modulesets (node_id, moduleset_id, attached_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING"
                }
                (AttachKind::Ruleset, true) => {
                    "INSERT INTO node_rulesets (node_id, ruleset_id, attached_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING"
                }
                (AttachKind::Moduleset, false) => {
                    "DELETE FROM node_modulesets WHERE node_id = ?1 AND moduleset_id = ?2 AND ?3 IS NOT NULL"
                }
                (AttachKind::Ruleset, false) => {
                    "DELETE FROM node_rulesets WHERE node_id = ?1 AND ruleset_id = ?2 AND ?3 IS NOT NULL"
                }
            };
            let n = conn
                .prepare_cached(sql)?
                .execute(params![node, obj_id, now_text()])?;
            // Only a real change invalidates the node's cached policy.
            if n > 0 {
                conn.prepare_cached(
                    "UPDATE nodes SET attach_version = attach_version + 1 WHERE id = ?1",
                )?
                .execute([node])?;
            }
            n > 0
        }
        Target::Service(svc) => {
            let Some(sid) = service_id(conn, svc, attach)? else {
                return Ok(false);
            };
            let sql = match (kind, attach) {
                (AttachKind::Moduleset, true) => {
                    "INSERT INTO service_modulesets (service_id, moduleset_id, attached_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING"
                }
                (AttachKind::Ruleset, true) => {
                    "INSERT INTO service_rulesets (service_id, ruleset_id, attached_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING"
                }
                (AttachKind::Moduleset, false) => {
                    "DELETE FROM service_modulesets WHERE service_id = ?1 AND moduleset_id = ?2 AND ?3 IS NOT NULL"
                }
                (AttachKind::Ruleset, false) => {
                    "DELETE FROM service_rulesets WHERE service_id = ?1 AND ruleset_id = ?2 AND ?3 IS NOT NULL"
                }
            };
            let n = conn
                .prepare_cached(sql)?
                .execute(params![sid, obj_id, now_text()])?;
            if n > 0 {
                conn.prepare_cached(
                    "UPDATE services SET attach_version = attach_version + 1 WHERE id = ?1",
                )?
                .execute([sid])?;
            }
            n > 0
        }
    };
    if changed {
        let action = if attach { "attach" } else { "detach" };
        audit(
            conn,
            actor,
            action,
            &target.to_string(),
            &format!("{} {name}", kind.as_str()),
        )?;
    }
    Ok(changed)
}

fn status_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ModuleStatus> {
    let service: String = r.get(1)?;
    let rules: Option<String> = r.get(8)?;
    Ok(ModuleStatus {
        module: r.get(0)?,
        service: (!service.is_empty()).then_some(service),
        moduleset: r.get(2)?,
        status: r.get(3)?,
        action: r.get(4)?,
        log: r.get(5)?,
        policy_hash: r.get(6)?,
        date: r.get(7)?,
        rules: rules.and_then(|t| serde_json::from_str::<Vec<RuleResult>>(&t).ok()),
    })
}

impl Store for SqliteStore {
    fn ready(&self) -> Result<i64> {
        let v: i64 = self.read(|c| {
            Ok(c.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )?)
        })?;
        if v != schema_version() {
            return Err(Error::Store(format!(
                "schema version {v}, expected {}",
                schema_version()
            )));
        }
        Ok(v)
    }

    fn create_admin_token(&self, name: &str, token_hash: &str) -> Result<()> {
        let (name, hash) = (name.to_string(), token_hash.to_string());
        self.write(move |c| {
            c.execute(
                "INSERT INTO admin_tokens (name, token_hash, created_at) VALUES (?1, ?2, ?3)",
                params![name, hash, now_text()],
            )?;
            audit(c, "cli", "token.create", &format!("admin token {name}"), "")
        })
    }

    fn admin_token(&self, token_hash: &str) -> Result<Option<String>> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT name FROM admin_tokens WHERE token_hash = ?1")?
                    .query_row([token_hash], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    fn register_node(&self, id: &str, name: &str, secret_hash: &str, actor: &str) -> Result<()> {
        let (id, name, hash, actor) = (
            id.to_string(),
            name.to_string(),
            secret_hash.to_string(),
            actor.to_string(),
        );
        self.write(move |c| {
            let taken: Option<String> = c
                .prepare_cached("SELECT id FROM nodes WHERE name = ?1")?
                .query_row([&name], |r| r.get(0))
                .optional()?;
            if let Some(existing) = taken {
                return Err(Error::Conflict(format!(
                    "node name {name:?} is already registered (node id {existing}); delete it first to register it again"
                )));
            }
            c.prepare_cached(
                "INSERT INTO nodes (id, name, secret_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, name, hash, now_text()])?;
            audit(c, &actor, "node.register", &format!("node {name}"), &id)
        })
    }

    fn node_auth(&self, node: &str) -> Result<Option<NodeAuth>> {
        self.read(|c| {
            let row = |r: &rusqlite::Row<'_>| {
                Ok(NodeAuth {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    secret_hash: r.get(2)?,
                    facts_hash: r.get(3)?,
                    attach_version: r.get(4)?,
                })
            };
            let by_id = c
                .prepare_cached(
                    "SELECT id, name, secret_hash, facts_hash, attach_version FROM nodes WHERE id = ?1",
                )?
                .query_row([node], row)
                .optional()?;
            if by_id.is_some() {
                return Ok(by_id);
            }
            Ok(c.prepare_cached(
                "SELECT id, name, secret_hash, facts_hash, attach_version FROM nodes WHERE name = ?1",
            )?
            .query_row([node], row)
            .optional()?)
        })
    }

    fn list_nodes(&self) -> Result<Vec<NodeSummary>> {
        self.read(|c| {
            let mut nodes: Vec<NodeSummary> = c
                .prepare_cached(
                    "SELECT id, name, created_at, last_seen, listener_port FROM nodes ORDER BY name",
                )?
                .query_map([], |r| {
                    Ok(NodeSummary {
                        node_id: r.get(0)?,
                        name: r.get(1)?,
                        created_at: r.get(2)?,
                        last_seen: r.get(3)?,
                        listener_port: r.get(4)?,
                        compliance: Default::default(),
                        modulesets: Vec::new(),
                        rulesets: Vec::new(),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut counts = c.prepare_cached(
                "SELECT node_id, status, COUNT(*) FROM module_status GROUP BY node_id, status",
            )?;
            let mut by_node: std::collections::HashMap<String, tenet_rulesets::api::Summary> =
                Default::default();
            let mut rows = counts.query([])?;
            while let Some(r) = rows.next()? {
                let (node, status, n): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
                let s = by_node.entry(node).or_default();
                match status.as_str() {
                    "ok" => s.ok += n as usize,
                    "nok" => s.nok += n as usize,
                    _ => s.na += n as usize,
                }
            }
            for n in &mut nodes {
                n.compliance = by_node.remove(&n.node_id).unwrap_or_default();
                let a = attachments(c, &Target::Node(n.node_id.clone()))?;
                n.modulesets = a.modulesets;
                n.rulesets = a.rulesets;
            }
            Ok(nodes)
        })
    }

    fn delete_node(&self, node_id: &str, actor: &str) -> Result<()> {
        let (id, actor) = (node_id.to_string(), actor.to_string());
        self.write(move |c| {
            let name: Option<String> = c
                .query_row("SELECT name FROM nodes WHERE id = ?1", [&id], |r| r.get(0))
                .optional()?;
            let Some(name) = name else {
                return Err(Error::not_found("node", id));
            };
            c.execute("DELETE FROM nodes WHERE id = ?1", [&id])?;
            audit(c, &actor, "node.delete", &format!("node {name}"), &id)
        })
    }

    fn put_facts(
        &self,
        node_id: &str,
        facts: &NodeFacts,
        facts_hash: &str,
        listener_port: u16,
        services: &[String],
    ) -> Result<()> {
        let id = node_id.to_string();
        let text = serde_json::to_string(facts).map_err(|e| Error::Store(e.to_string()))?;
        let hash = facts_hash.to_string();
        let packages = facts.packages.clone();
        let services = services.to_vec();
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE nodes SET facts = ?2, facts_hash = ?3, facts_updated = ?4, last_seen = ?4, listener_port = ?5 WHERE id = ?1",
                )?
                .execute(params![id, text, hash, now_text(), listener_port])?;
            if n == 0 {
                return Err(Error::not_found("node", id));
            }
            c.prepare_cached("DELETE FROM node_packages WHERE node_id = ?1")?
                .execute([&id])?;
            let mut ins = c.prepare_cached(
                "INSERT INTO node_packages (node_id, name, version, arch) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for p in &packages {
                ins.execute(params![id, p.name, p.version, p.arch])?;
            }
            c.prepare_cached("DELETE FROM node_services WHERE node_id = ?1")?
                .execute([&id])?;
            for s in &services {
                let sid = service_id(c, s, true)?.expect("created above");
                c.prepare_cached(
                    "INSERT INTO node_services (node_id, service_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                )?
                .execute(params![id, sid])?;
            }
            Ok(())
        })
    }

    fn node_facts(&self, node_id: &str) -> Result<NodeFacts> {
        self.read(|c| {
            let text: Option<String> = c
                .prepare_cached("SELECT facts FROM nodes WHERE id = ?1")?
                .query_row([node_id], |r| r.get(0))
                .optional()?;
            let text = text.ok_or_else(|| Error::not_found("node", node_id))?;
            let mut facts: NodeFacts =
                serde_json::from_str(&text).map_err(|e| corrupt("node facts", e))?;
            if facts.packages.is_empty() {
                // Facts pushed before packages were split out still resolve (and the table is
                // the reference once present).
                facts.packages = c
                    .prepare_cached(
                        "SELECT name, version, arch FROM node_packages WHERE node_id = ?1",
                    )?
                    .query_map([node_id], |r| {
                        Ok(PackageFact {
                            name: r.get(0)?,
                            version: r.get(1)?,
                            arch: r.get(2)?,
                        })
                    })?
                    .collect::<rusqlite::Result<_>>()?;
            }
            Ok(facts)
        })
    }

    fn node_hosts_service(&self, node_id: &str, service: &str) -> Result<bool> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT 1 FROM node_services ns JOIN services s ON s.id = ns.service_id WHERE ns.node_id = ?1 AND s.name = ?2",
            )?
            .query_row([node_id, service], |r| r.get::<_, i64>(0))
            .optional()?
            .is_some())
        })
    }

    fn generation(&self) -> Result<u64> {
        // Read from the database, not remembered: a `tenet-collector import` run by another
        // process on the same file must be seen by a running server.
        self.read(read_generation)
    }

    fn load_bundle(&self) -> Result<(u64, Bundle)> {
        self.read(|c| {
            // One read transaction, so the generation and the objects are of the same commit.
            c.execute_batch("BEGIN")?;
            let out = read_generation(c).and_then(|g| Ok((g, load_bundle(c)?)));
            c.execute_batch("COMMIT")?;
            out
        })
    }

    fn edit_bundle(&self, actor: &str, edit: BundleEdit) -> Result<EditOutcome> {
        let actor = actor.to_string();
        let outcome = self.write(move |c| {
            let old = load_bundle(c)?;
            let mut new = old.clone();
            let (action, object, detail) = edit(&mut new)?;
            new.validate()?;
            let generation = read_generation(c)?;
            if new == old {
                return Ok(EditOutcome {
                    generation,
                    changed: false,
                });
            }
            save_bundle(c, &old, &new)?;
            let generation = generation + 1;
            c.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'policy_generation'",
                [generation.to_string()],
            )?;
            audit(c, &actor, &action, &object, &detail)?;
            Ok(EditOutcome {
                generation,
                changed: true,
            })
        })?;
        Ok(outcome)
    }

    fn attachments(&self, target: &Target) -> Result<Attachments> {
        self.read(|c| attachments(c, target))
    }

    fn attach(&self, target: &Target, kind: AttachKind, name: &str, actor: &str) -> Result<bool> {
        let (t, n, a) = (target.clone(), name.to_string(), actor.to_string());
        self.write(move |c| change_attachment(c, &t, kind, &n, true, &a))
    }

    fn detach(&self, target: &Target, kind: AttachKind, name: &str, actor: &str) -> Result<bool> {
        let (t, n, a) = (target.clone(), name.to_string(), actor.to_string());
        self.write(move |c| change_attachment(c, &t, kind, &n, false, &a))
    }

    fn record_run(&self, node_id: &str, run: &RunResults) -> Result<bool> {
        let id = node_id.to_string();
        let run = run.clone();
        self.write(move |c| {
            let now = now_text();
            let service = run.service.clone().unwrap_or_default();
            let inserted = c
                .prepare_cached(
                    "INSERT INTO runs (node_id, run_id, service, action, policy_hash, agent_version, started_at, received_at, duration_ms, ok, nok, na)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT (node_id, run_id) DO NOTHING",
                )?
                .execute(params![
                    id,
                    run.run_id,
                    service,
                    run.action,
                    run.policy_hash,
                    run.agent_version,
                    run.started_at,
                    now,
                    run.duration_ms as i64,
                    run.summary.ok as i64,
                    run.summary.nok as i64,
                    run.summary.na as i64
                ])?;
            if inserted == 0 {
                return Ok(false);
            }
            let run_pk = c.last_insert_rowid();
            c.prepare_cached("UPDATE nodes SET last_seen = ?2 WHERE id = ?1")?
                .execute(params![id, now])?;
            // `fixable` reports what could be fixed, not the module's state: it goes to the
            // history only. Every other action ends with the module's current state.
            let sets_status = run.action != "fixable";
            for m in &run.modules {
                let detail = serde_json::json!({"kind": m.kind, "actions": m.actions, "rules": m.rules});
                c.prepare_cached(
                    "INSERT INTO module_results (run_pk, module, moduleset, status, duration_ms, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![run_pk, m.module, m.moduleset, m.status, m.duration_ms as i64, detail.to_string()])?;
                if sets_status {
                    let log = m.actions.last().map(|a| a.log.clone()).unwrap_or_default();
                    let rules = m
                        .rules
                        .as_ref()
                        .map(|r| serde_json::to_string(r).unwrap_or_default());
                    c.prepare_cached(
                        "INSERT INTO module_status (node_id, service, module, moduleset, status, action, log, policy_hash, rules, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                         ON CONFLICT (node_id, service, module) DO UPDATE SET moduleset = excluded.moduleset,
                           status = excluded.status, action = excluded.action, log = excluded.log,
                           policy_hash = excluded.policy_hash, rules = excluded.rules, updated_at = excluded.updated_at",
                    )?
                    .execute(params![id, service, m.module, m.moduleset, m.status, run.action, log, run.policy_hash, rules, now])?;
                }
            }
            Ok(true)
        })
    }

    fn node_status(&self, node_id: &str) -> Result<(Vec<ModuleStatus>, Option<String>)> {
        self.read(|c| {
            let modules = c
                .prepare_cached(
                    "SELECT module, service, moduleset, status, action, log, policy_hash, updated_at, rules
                     FROM module_status WHERE node_id = ?1 ORDER BY service, module",
                )?
                .query_map([node_id], status_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let last: Option<String> = c
                .prepare_cached("SELECT MAX(received_at) FROM runs WHERE node_id = ?1")?
                .query_row([node_id], |r| r.get(0))?;
            Ok((modules, last))
        })
    }

    fn run_count(&self, node_id: &str) -> Result<u64> {
        self.read(|c| {
            let n: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM runs WHERE node_id = ?1")?
                .query_row([node_id], |r| r.get(0))?;
            Ok(n as u64)
        })
    }

    fn runs(&self, node_id: &str, limit: u32) -> Result<Vec<RunSummary>> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT run_id, action, service, policy_hash, agent_version, started_at, received_at, ok, nok, na
                 FROM runs WHERE node_id = ?1 ORDER BY id DESC LIMIT ?2",
            )?
            .query_map(params![node_id, limit], |r| {
                let service: String = r.get(2)?;
                Ok(RunSummary {
                    run_id: r.get(0)?,
                    action: r.get(1)?,
                    service: (!service.is_empty()).then_some(service),
                    policy_hash: r.get(3)?,
                    agent_version: r.get(4)?,
                    started_at: r.get(5)?,
                    received_at: r.get(6)?,
                    summary: tenet_rulesets::api::Summary {
                        ok: r.get::<_, i64>(7)? as usize,
                        nok: r.get::<_, i64>(8)? as usize,
                        na: r.get::<_, i64>(9)? as usize,
                    },
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
        })
    }

    fn put_service_config(&self, config: &ServiceConfig, actor: &str) -> Result<()> {
        let (c, actor) = (config.clone(), actor.to_string());
        self.write(move |conn| {
            let sid = service_id(conn, &c.service, true)?.expect("created above");
            conn.prepare_cached(
                "INSERT INTO service_configs (service_id, form, inputs, config, sha256, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (service_id) DO UPDATE SET form = excluded.form, inputs = excluded.inputs,
                   config = excluded.config, sha256 = excluded.sha256, updated_at = excluded.updated_at",
            )?
            .execute(params![sid, c.form, c.inputs.to_string(), c.config, c.sha256, c.updated_at])?;
            audit(
                conn,
                &actor,
                "service.config",
                &format!("service {}", c.service),
                &format!("form {} sha256 {}", c.form, c.sha256),
            )
        })
    }

    fn service_config(&self, service: &str) -> Result<Option<ServiceConfig>> {
        self.read(|c| {
            let row = c
                .prepare_cached(
                    "SELECT sc.form, sc.inputs, sc.config, sc.sha256, sc.updated_at
                     FROM service_configs sc JOIN services s ON s.id = sc.service_id WHERE s.name = ?1",
                )?
                .query_row([service], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .optional()?;
            row.map(|(form, inputs, config, sha256, updated_at)| {
                Ok(ServiceConfig {
                    service: service.to_string(),
                    form,
                    inputs: serde_json::from_str(&inputs)
                        .map_err(|e| corrupt("service config inputs", e))?,
                    config,
                    sha256,
                    updated_at,
                })
            })
            .transpose()
        })
    }

    fn save_policy_snapshot(&self, hash: &str, policy_json: &str) -> Result<()> {
        let (h, p) = (hash.to_string(), policy_json.to_string());
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO policy_snapshots (hash, policy, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (hash) DO NOTHING",
            )?
            .execute(params![h, p, now_text()])?;
            Ok(())
        })
    }

    fn policy_snapshot(&self, hash: &str) -> Result<Option<String>> {
        self.read(|c| {
            Ok(
                c.prepare_cached("SELECT policy FROM policy_snapshots WHERE hash = ?1")?
                    .query_row([hash], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT id, at, actor, action, object, detail FROM audit_log ORDER BY id DESC LIMIT ?1",
            )?
            .query_map([limit], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    object: r.get(4)?,
                    detail: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?)
        })
    }

    fn gauges(&self) -> Result<Gauges> {
        self.read(|c| {
            let nodes: i64 = c.query_row("SELECT COUNT(*) FROM nodes", [], |r| r.get(0))?;
            let nok: i64 = c.query_row(
                "SELECT COUNT(*) FROM module_status WHERE status = 'nok'",
                [],
                |r| r.get(0),
            )?;
            Ok(Gauges {
                nodes: nodes as u64,
                modules_nok: nok as u64,
            })
        })
    }

    fn queue_action(&self, node_id: &str, command: &str, actor: &str) -> Result<Action> {
        let (n, c, a) = (node_id.to_string(), command.to_string(), actor.to_string());
        self.write(move |conn| actions::queue(conn, &n, &c, &a))
    }

    fn action(&self, id: i64) -> Result<Option<Action>> {
        self.read(|conn| actions::get(conn, id))
    }

    fn list_actions(
        &self,
        node_id: Option<&str>,
        statuses: &[String],
        limit: u32,
    ) -> Result<Vec<Action>> {
        self.read(|conn| actions::list(conn, node_id, statuses, limit))
    }

    fn notify_target(&self, node_id: &str) -> Result<NotifyTarget> {
        self.read(|conn| actions::notify_target(conn, node_id))
    }

    fn action_notified(&self, node_id: &str, up_to: i64, error: Option<&str>) -> Result<u64> {
        let (n, e) = (node_id.to_string(), error.map(str::to_string));
        self.write(move |conn| actions::notified(conn, &n, up_to, e.as_deref()))
    }

    fn nodes_with_waiting_actions(&self) -> Result<Vec<String>> {
        self.read(actions::nodes_waiting)
    }

    fn dequeue_actions(&self, node_id: &str, resend_before: &str) -> Result<Vec<DequeuedAction>> {
        let (n, r) = (node_id.to_string(), resend_before.to_string());
        self.write(move |conn| actions::dequeue(conn, &n, &r))
    }

    fn ack_actions(&self, node_id: &str, ids: &[i64]) -> Result<Vec<i64>> {
        let (n, ids) = (node_id.to_string(), ids.to_vec());
        self.write(move |conn| actions::ack(conn, &n, &ids))
    }

    fn action_result(&self, node_id: &str, result: &ActionResult) -> Result<bool> {
        let (n, r) = (node_id.to_string(), result.clone());
        self.write(move |conn| actions::result(conn, &n, &r))
    }

    fn cancel_action(&self, id: i64, actor: &str) -> Result<Action> {
        let a = actor.to_string();
        self.write(move |conn| actions::cancel(conn, id, &a))
    }

    fn set_node_address(&self, node_id: &str, address: &str) -> Result<()> {
        let (n, a) = (node_id.to_string(), address.to_string());
        self.write(move |conn| actions::set_address(conn, &n, &a))
    }

    fn put_release_status(
        &self,
        node_id: &str,
        version: &str,
        state: &str,
        doc: &serde_json::Value,
    ) -> Result<()> {
        let (n, v, st, d) = (
            node_id.to_string(),
            version.to_string(),
            state.to_string(),
            doc.to_string(),
        );
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO release_status (node_id, version, state, doc, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (node_id, version) DO UPDATE SET state = excluded.state,
                   doc = excluded.doc, received_at = excluded.received_at",
            )?
            .execute(params![n, v, st, d, now_text()])?;
            Ok(())
        })
    }

    fn retention_state(&self) -> Result<(Option<String>, Option<String>)> {
        self.read(retention::state)
    }

    fn rollup_day(&self, day: &str, next: &str) -> Result<u64> {
        let (nodes, modules) = self.read(|c| retention::compute(c, day, next))?;
        let n = (nodes.len() + modules.len()) as u64;
        // Small writes, so result posts queued meanwhile wait for one chunk at most.
        for chunk in nodes.chunks(500) {
            let (d, chunk) = (day.to_string(), chunk.to_vec());
            self.write(move |c| retention::write(c, &d, &chunk, &[]))?;
        }
        let d = day.to_string();
        self.write(move |c| {
            retention::write(c, &d, &[], &modules)?;
            retention::mark(c, &d)
        })?;
        Ok(n)
    }

    fn prune_runs(&self, before: &str, limit: u32) -> Result<u64> {
        let b = before.to_string();
        self.write(move |c| retention::prune_runs(c, &b, limit))
    }

    fn prune_daily(&self, before_day: &str, limit: u32) -> Result<u64> {
        let b = before_day.to_string();
        self.write(move |c| retention::prune_daily(c, &b, limit))
    }

    fn compliance_daily(
        &self,
        since_day: &str,
        module: Option<&str>,
    ) -> Result<Vec<DailyCompliance>> {
        self.read(|c| retention::daily(c, since_day, module))
    }

    fn release_statuses(
        &self,
        node_id: Option<&str>,
        version: Option<&str>,
    ) -> Result<Vec<ReleaseRow>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT n.name, r.version, r.state, r.received_at, r.doc
                 FROM release_status r JOIN nodes n ON n.id = r.node_id
                 WHERE (?1 IS NULL OR r.node_id = ?1) AND (?2 IS NULL OR r.version = ?2)
                 ORDER BY n.name, r.version",
            )?;
            let rows = stmt.query_map(params![node_id, version], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (node, version, state, received_at, doc) = row?;
                out.push(ReleaseRow {
                    node,
                    version,
                    state,
                    received_at,
                    doc: serde_json::from_str(&doc).map_err(|e| corrupt("release status", e))?,
                });
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_bundle() -> Bundle {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/opensvc-spd/node-export.json");
        tenet_rulesets::load_path(&path).expect("fixture loads")
    }

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        (dir, store)
    }

    fn import(store: &SqliteStore, bundle: Bundle) -> EditOutcome {
        store
            .edit_bundle(
                "test",
                Box::new(move |b| {
                    *b = bundle;
                    Ok(("import".into(), "bundle".into(), String::new()))
                }),
            )
            .unwrap()
    }

    #[test]
    fn bundle_round_trips_through_the_tables() {
        let (_d, store) = open();
        let bundle = fixture_bundle();
        let out = import(&store, bundle.clone());
        assert!(out.changed);
        assert_eq!(out.generation, 1);
        let (generation, loaded) = store.load_bundle().unwrap();
        assert_eq!(generation, 1);
        assert_eq!(loaded, bundle);
        // The same content again changes nothing, not even the generation.
        let again = import(&store, bundle);
        assert!(!again.changed);
        assert_eq!(again.generation, 1);
    }

    #[test]
    fn edits_keep_ids_and_attachments_of_untouched_objects() {
        let (_d, store) = open();
        let bundle = fixture_bundle();
        import(&store, bundle.clone());
        store.register_node("n1", "node1", "h", "test").unwrap();
        let target = Target::Node("n1".into());
        assert!(
            store
                .attach(&target, AttachKind::Moduleset, "spdc.node", "t")
                .unwrap()
        );
        assert!(
            !store
                .attach(&target, AttachKind::Moduleset, "spdc.node", "t")
                .unwrap()
        );
        // Change one variable of one ruleset.
        let rs_name = bundle.rulesets.keys().next().unwrap().clone();
        let n = rs_name.clone();
        store
            .edit_bundle(
                "t",
                Box::new(move |b| {
                    b.rulesets.get_mut(&n).unwrap().variables.clear();
                    Ok(("edit".into(), n.clone(), String::new()))
                }),
            )
            .unwrap();
        let a = store.attachments(&target).unwrap();
        assert_eq!(a.modulesets, vec!["spdc.node".to_string()]);
        let (_, loaded) = store.load_bundle().unwrap();
        assert!(loaded.rulesets[&rs_name].variables.is_empty());
        assert_eq!(loaded.rulesets.len(), bundle.rulesets.len());
    }

    #[test]
    fn an_invalid_edit_stores_nothing() {
        let (_d, store) = open();
        import(&store, fixture_bundle());
        let before = store.load_bundle().unwrap();
        let err = store
            .edit_bundle(
                "t",
                Box::new(|b| {
                    let ms = b.modulesets.values_mut().next().unwrap();
                    ms.rulesets.push("no such ruleset".into());
                    Ok(("edit".into(), "x".into(), String::new()))
                }),
            )
            .unwrap_err();
        assert!(err.to_string().contains("no such ruleset"), "{err}");
        assert_eq!(store.load_bundle().unwrap(), before);
    }

    #[test]
    fn a_run_is_recorded_once() {
        let (_d, store) = open();
        store.register_node("n1", "node1", "h", "test").unwrap();
        let run: RunResults = serde_json::from_value(serde_json::json!({
            "run_id": "r1", "agent_version": "0.1.0", "action": "check", "policy_hash": "abc",
            "modules": [{"module": "m", "moduleset": "ms", "status": "nok",
                         "actions": [{"action": "check", "exit_code": 1, "log": "bad", "duration_ms": 1}],
                         "duration_ms": 1}],
            "summary": {"ok": 0, "nok": 1, "na": 0}, "duration_ms": 3
        }))
        .unwrap();
        assert!(store.record_run("n1", &run).unwrap());
        assert!(!store.record_run("n1", &run).unwrap());
        assert_eq!(store.run_count("n1").unwrap(), 1);
        let (status, last) = store.node_status("n1").unwrap();
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].status, "nok");
        assert_eq!(status[0].log, "bad");
        assert!(last.is_some());
        assert_eq!(store.gauges().unwrap().modules_nok, 1);
    }

    #[test]
    fn concurrent_writes_are_all_committed() {
        let (_d, store) = open();
        store.register_node("n1", "node1", "h", "test").unwrap();
        let store = std::sync::Arc::new(store);
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let s = store.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let run: RunResults = serde_json::from_value(serde_json::json!({
                            "run_id": format!("{t}-{i}"), "agent_version": "x", "action": "check",
                            "policy_hash": "h", "modules": [], "summary": {"ok": 0, "nok": 0, "na": 0},
                            "duration_ms": 0
                        }))
                        .unwrap();
                        assert!(s.record_run("n1", &run).unwrap());
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(store.run_count("n1").unwrap(), 200);
    }

    #[test]
    fn migrations_are_recorded_and_reopening_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            assert_eq!(s.ready().unwrap(), schema_version());
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.ready().unwrap(), schema_version());
    }
}

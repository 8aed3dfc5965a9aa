//! The web console's SQL (migration 7): token roles, and the reads of its pages.
//!
//! The fleet page must stay fast with 10,000 nodes and 30 days of history, so what it reads is
//! kept pre-aggregated by triggers rather than computed per request: `node_compliance` holds
//! each node's counts of latest module statuses (maintained from `module_status`),
//! `module_compliance` each module's, and `fleet_daily` the compliance of the whole fleet per
//! day (maintained from `node_daily`, so
//! it always equals `SELECT day, COUNT(*), SUM(nok = 0), ... FROM node_daily GROUP BY day`).
//! Triggers keep the writers (`record_run`, the retention roll-up and pruning, node deletion)
//! unaware of these tables.

use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::super::{
    AuditEntry, DailyCompliance, FleetFilter, FleetNode, ModuleCount, ModuleLogs, ModuleNode,
    NodeDay, NodeState, RunModules, RunSummary, TokenRole,
};
use super::status_row;
use crate::error::{Error, Result};
use tenet_rulesets::api::Summary;

/// Migration 7: token roles (viewer tokens), per-node compliance counts and the fleet's
/// daily compliance kept by triggers, and the indexes the console's pages read through.
pub const MIGRATION: &str = r#"
ALTER TABLE admin_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';

CREATE TABLE node_compliance (
    node_id TEXT PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
    ok INTEGER NOT NULL DEFAULT 0,
    nok INTEGER NOT NULL DEFAULT 0,
    na INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO node_compliance (node_id, ok, nok, na)
    SELECT node_id, SUM(status = 'ok'), SUM(status = 'nok'), SUM(status NOT IN ('ok', 'nok'))
    FROM module_status GROUP BY node_id;
CREATE TRIGGER module_status_counted AFTER INSERT ON module_status BEGIN
    INSERT INTO node_compliance (node_id, ok, nok, na)
    VALUES (NEW.node_id, NEW.status = 'ok', NEW.status = 'nok', NEW.status NOT IN ('ok', 'nok'))
    ON CONFLICT (node_id) DO UPDATE SET ok = ok + excluded.ok, nok = nok + excluded.nok,
        na = na + excluded.na;
END;
CREATE TRIGGER module_status_recounted AFTER UPDATE OF status ON module_status BEGIN
    UPDATE node_compliance SET
        ok = ok - (OLD.status = 'ok') + (NEW.status = 'ok'),
        nok = nok - (OLD.status = 'nok') + (NEW.status = 'nok'),
        na = na - (OLD.status NOT IN ('ok', 'nok')) + (NEW.status NOT IN ('ok', 'nok'))
    WHERE node_id = NEW.node_id;
END;
CREATE TRIGGER module_status_uncounted AFTER DELETE ON module_status BEGIN
    UPDATE node_compliance SET
        ok = ok - (OLD.status = 'ok'),
        nok = nok - (OLD.status = 'nok'),
        na = na - (OLD.status NOT IN ('ok', 'nok'))
    WHERE node_id = OLD.node_id;
END;

CREATE TABLE module_compliance (
    module TEXT PRIMARY KEY,
    ok INTEGER NOT NULL DEFAULT 0,
    nok INTEGER NOT NULL DEFAULT 0,
    na INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO module_compliance (module, ok, nok, na)
    SELECT module, SUM(status = 'ok'), SUM(status = 'nok'), SUM(status NOT IN ('ok', 'nok'))
    FROM module_status GROUP BY module;
CREATE INDEX module_compliance_nok ON module_compliance (nok);
CREATE TRIGGER module_status_module_counted AFTER INSERT ON module_status BEGIN
    INSERT INTO module_compliance (module, ok, nok, na)
    VALUES (NEW.module, NEW.status = 'ok', NEW.status = 'nok', NEW.status NOT IN ('ok', 'nok'))
    ON CONFLICT (module) DO UPDATE SET ok = ok + excluded.ok, nok = nok + excluded.nok,
        na = na + excluded.na;
END;
CREATE TRIGGER module_status_module_recounted AFTER UPDATE OF status ON module_status BEGIN
    UPDATE module_compliance SET
        ok = ok - (OLD.status = 'ok') + (NEW.status = 'ok'),
        nok = nok - (OLD.status = 'nok') + (NEW.status = 'nok'),
        na = na - (OLD.status NOT IN ('ok', 'nok')) + (NEW.status NOT IN ('ok', 'nok'))
    WHERE module = NEW.module;
END;
CREATE TRIGGER module_status_module_uncounted AFTER DELETE ON module_status BEGIN
    UPDATE module_compliance SET
        ok = ok - (OLD.status = 'ok'),
        nok = nok - (OLD.status = 'nok'),
        na = na - (OLD.status NOT IN ('ok', 'nok'))
    WHERE module = OLD.module;
END;

CREATE TABLE fleet_daily (
    day TEXT PRIMARY KEY,
    subjects INTEGER NOT NULL,
    compliant INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    nok INTEGER NOT NULL,
    na INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO fleet_daily (day, subjects, compliant, ok, nok, na)
    SELECT day, COUNT(*), SUM(nok = 0), SUM(ok), SUM(nok), SUM(na) FROM node_daily GROUP BY day;
-- The roll-up writes with INSERT OR REPLACE, whose implicit delete fires no trigger: the row
-- being replaced is taken out first.
CREATE TRIGGER node_daily_replaced BEFORE INSERT ON node_daily BEGIN
    UPDATE fleet_daily SET subjects = fleet_daily.subjects - 1,
        compliant = fleet_daily.compliant - (o.nok = 0), ok = fleet_daily.ok - o.ok,
        nok = fleet_daily.nok - o.nok, na = fleet_daily.na - o.na
    FROM node_daily AS o
    WHERE o.node_id = NEW.node_id AND o.service = NEW.service AND o.day = NEW.day
      AND fleet_daily.day = NEW.day;
END;
CREATE TRIGGER node_daily_counted AFTER INSERT ON node_daily BEGIN
    INSERT INTO fleet_daily (day, subjects, compliant, ok, nok, na)
    VALUES (NEW.day, 1, NEW.nok = 0, NEW.ok, NEW.nok, NEW.na)
    ON CONFLICT (day) DO UPDATE SET subjects = subjects + 1,
        compliant = compliant + excluded.compliant, ok = ok + excluded.ok,
        nok = nok + excluded.nok, na = na + excluded.na;
END;
CREATE TRIGGER node_daily_uncounted AFTER DELETE ON node_daily BEGIN
    UPDATE fleet_daily SET subjects = subjects - 1, compliant = compliant - (OLD.nok = 0),
        ok = ok - OLD.ok, nok = nok - OLD.nok, na = na - OLD.na
    WHERE day = OLD.day;
    DELETE FROM fleet_daily WHERE day = OLD.day AND subjects <= 0;
END;

-- The `nodes` facts, one row per field, for the console's FIELD=VALUE filter (an index lookup
-- instead of reading every node's facts document, packages included).
CREATE TABLE node_fact (
    node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (node_id, field)
) WITHOUT ROWID;
CREATE INDEX node_fact_value ON node_fact (field, value);
INSERT INTO node_fact (node_id, field, value)
    SELECT n.id, j.key, j.value FROM nodes n, json_each(n.facts, '$.node') j
    WHERE json_valid(n.facts) AND j.value IS NOT NULL;
CREATE TRIGGER nodes_facts_listed AFTER INSERT ON nodes BEGIN
    INSERT INTO node_fact (node_id, field, value)
    SELECT NEW.id, j.key, j.value FROM json_each(NEW.facts, '$.node') j
    WHERE json_valid(NEW.facts) AND j.value IS NOT NULL;
END;
CREATE TRIGGER nodes_facts_relisted AFTER UPDATE OF facts ON nodes BEGIN
    DELETE FROM node_fact WHERE node_id = NEW.id;
    INSERT INTO node_fact (node_id, field, value)
    SELECT NEW.id, j.key, j.value FROM json_each(NEW.facts, '$.node') j
    WHERE json_valid(NEW.facts) AND j.value IS NOT NULL;
END;

-- The fleet listing reads names in order without touching the facts.
CREATE INDEX nodes_listing ON nodes (name, id, last_seen);
-- Worst modules of filtered nodes (nok statuses with their nodes), and a module's nodes.
DROP INDEX module_status_status;
CREATE INDEX module_status_status_module ON module_status (status, module, node_id);
CREATE INDEX module_status_module ON module_status (module, node_id);
CREATE INDEX audit_log_object ON audit_log (object, id);
"#;

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
fn like_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The `WHERE` conditions of `filter` over `nodes n LEFT JOIN node_compliance c`, and their
/// parameters.
fn conditions(filter: &FleetFilter) -> (String, Vec<Box<dyn ToSql>>) {
    let mut conds: Vec<String> = Vec::new();
    let mut params: Vec<Box<dyn ToSql>> = Vec::new();
    if let Some(name) = &filter.name {
        params.push(Box::new(format!("%{}%", like_escaped(name))));
        conds.push(format!("n.name LIKE ?{} ESCAPE '\\'", params.len()));
    }
    for (field, value) in &filter.facts {
        params.push(Box::new(field.clone()));
        params.push(Box::new(value.clone()));
        conds.push(format!(
            "n.id IN (SELECT node_id FROM node_fact WHERE field = ?{} AND value = ?{})",
            params.len() - 1,
            params.len()
        ));
    }
    if let Some(m) = &filter.module {
        params.push(Box::new(m.clone()));
        conds.push(format!(
            "n.id IN (SELECT node_id FROM module_status WHERE module = ?{})",
            params.len()
        ));
    }
    match filter.state {
        None => {}
        Some(NodeState::Nok) => conds.push("COALESCE(c.nok, 0) > 0".into()),
        Some(NodeState::Ok) => {
            conds.push("COALESCE(c.nok, 0) = 0 AND COALESCE(c.ok, 0) > 0".into())
        }
        Some(NodeState::Na) => {
            conds.push("COALESCE(c.nok, 0) = 0 AND COALESCE(c.ok, 0) = 0".into())
        }
    }
    let sql = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    (sql, params)
}

/// `SELECT n.id FROM ...` of the nodes matching `filter` (a subquery), and its parameters.
fn matching_ids(filter: &FleetFilter) -> (String, Vec<Box<dyn ToSql>>) {
    let (cond, params) = conditions(filter);
    (
        format!(
            "SELECT n.id AS id FROM nodes n LEFT JOIN node_compliance c ON c.node_id = n.id {cond}"
        ),
        params,
    )
}

pub(super) fn create_token(c: &Connection, name: &str, hash: &str, role: TokenRole) -> Result<()> {
    c.execute(
        "INSERT INTO admin_tokens (name, token_hash, created_at, role) VALUES (?1, ?2, ?3, ?4)",
        params![name, hash, crate::store::now_text(), role.as_str()],
    )?;
    super::audit(
        c,
        "cli",
        "token.create",
        &format!("{} token {name}", role.as_str()),
        "",
    )
}

pub(super) fn token(c: &Connection, hash: &str) -> Result<Option<(String, TokenRole)>> {
    let row: Option<(String, String)> = c
        .prepare_cached("SELECT name, role FROM admin_tokens WHERE token_hash = ?1")?
        .query_row([hash], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(name, role)| {
        let role = match role.as_str() {
            "admin" => TokenRole::Admin,
            "viewer" => TokenRole::Viewer,
            other => {
                return Err(Error::Store(format!(
                    "admin_tokens.role of token {name}: {other:?} is not admin or viewer"
                )));
            }
        };
        Ok((name, role))
    })
    .transpose()
}

fn summary(ok: i64, nok: i64, na: i64) -> Summary {
    Summary {
        ok: ok.max(0) as usize,
        nok: nok.max(0) as usize,
        na: na.max(0) as usize,
    }
}

pub(super) fn fleet_nodes(c: &Connection, filter: &FleetFilter) -> Result<Vec<FleetNode>> {
    let (cond, params) = conditions(filter);
    let sql = format!(
        "SELECT n.id, n.name, n.last_seen, COALESCE(c.ok, 0), COALESCE(c.nok, 0), COALESCE(c.na, 0)
         FROM nodes n LEFT JOIN node_compliance c ON c.node_id = n.id {cond} ORDER BY n.name"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(params_from_iter(params.iter()), |r| {
            Ok(FleetNode {
                node_id: r.get(0)?,
                name: r.get(1)?,
                last_seen: r.get(2)?,
                compliance: summary(r.get(3)?, r.get(4)?, r.get(5)?),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// The ids of the nodes matching `filter`.
fn matching_set(c: &Connection, filter: &FleetFilter) -> Result<std::collections::HashSet<String>> {
    let (ids, params) = matching_ids(filter);
    Ok(c.prepare_cached(&ids)?
        .query_map(params_from_iter(params.iter()), |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

pub(super) fn worst_modules(
    c: &Connection,
    filter: &FleetFilter,
    limit: u32,
) -> Result<Vec<ModuleCount>> {
    if filter.is_empty() {
        return Ok(c
            .prepare_cached(
                "SELECT module, nok, ok + nok + na FROM module_compliance WHERE nok > 0
                 ORDER BY nok DESC, module LIMIT ?1",
            )?
            .query_map([limit], |r| {
                Ok(ModuleCount {
                    module: r.get(0)?,
                    nok: r.get(1)?,
                    total: Some(r.get(2)?),
                })
            })?
            .collect::<rusqlite::Result<_>>()?);
    }
    // The nok statuses (a covering index range, a small part of the statuses), kept when their
    // node matches. Counting every status of the matching nodes would read them all: the
    // total is left out.
    let nodes = matching_set(c, filter)?;
    let mut counts: std::collections::HashMap<String, i64> = Default::default();
    let mut stmt = c.prepare_cached(
        "SELECT module, node_id FROM module_status INDEXED BY module_status_status_module
         WHERE status = 'nok'",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let node: String = r.get(1)?;
        if nodes.contains(&node) {
            *counts.entry(r.get(0)?).or_default() += 1;
        }
    }
    let mut out: Vec<ModuleCount> = counts
        .into_iter()
        .map(|(module, nok)| ModuleCount {
            module,
            nok,
            total: None,
        })
        .collect();
    out.sort_by(|a, b| b.nok.cmp(&a.nok).then_with(|| a.module.cmp(&b.module)));
    out.truncate(limit as usize);
    Ok(out)
}

fn daily_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DailyCompliance> {
    Ok(DailyCompliance {
        day: r.get(0)?,
        subjects: r.get(1)?,
        compliant: r.get(2)?,
        ok: r.get(3)?,
        nok: r.get(4)?,
        na: r.get(5)?,
    })
}

pub(super) fn fleet_daily(
    c: &Connection,
    since_day: &str,
    filter: &FleetFilter,
) -> Result<Vec<DailyCompliance>> {
    if filter.is_empty() {
        return Ok(c
            .prepare_cached(
                "SELECT day, subjects, compliant, ok, nok, na FROM fleet_daily
                 WHERE day >= ?1 AND subjects > 0 ORDER BY day",
            )?
            .query_map([since_day], daily_row)?
            .collect::<rusqlite::Result<_>>()?);
    }
    let (ids, mut params) = matching_ids(filter);
    params.push(Box::new(since_day.to_string()));
    // CROSS JOIN keeps the matching nodes as the outer loop: each is then a primary-key range
    // of node_daily, instead of a scan of every node's days.
    let sql = format!(
        "SELECT d.day, COUNT(*), SUM(d.nok = 0), SUM(d.ok), SUM(d.nok), SUM(d.na)
         FROM ({ids}) AS sel CROSS JOIN node_daily d
         WHERE d.node_id = sel.id AND d.day >= ?{}
         GROUP BY d.day ORDER BY d.day",
        params.len()
    );
    Ok(c.prepare_cached(&sql)?
        .query_map(params_from_iter(params.iter()), daily_row)?
        .collect::<rusqlite::Result<_>>()?)
}

pub(super) fn node_days(c: &Connection, since_day: &str) -> Result<Vec<NodeDay>> {
    Ok(c.prepare_cached(
        "SELECT node_id, service <> '', day, runs, ok, nok, na FROM node_daily WHERE day >= ?1",
    )?
    .query_map([since_day], |r| {
        Ok(NodeDay {
            node_id: r.get(0)?,
            service: r.get(1)?,
            day: r.get(2)?,
            runs: r.get(3)?,
            ok: r.get(4)?,
            nok: r.get(5)?,
            na: r.get(6)?,
        })
    })?
    .collect::<rusqlite::Result<_>>()?)
}

pub(super) fn module_nodes(
    c: &Connection,
    module: &str,
    limit: u32,
) -> Result<(Summary, Vec<ModuleNode>)> {
    let (ok, nok, na): (i64, i64, i64) = c
        .prepare_cached("SELECT ok, nok, na FROM module_compliance WHERE module = ?1")?
        .query_row([module], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?
        .unwrap_or_default();
    let rows = c
        .prepare_cached(
            "SELECT ms.module, ms.service, ms.moduleset, ms.status, ms.action, ms.log,
                    ms.policy_hash, ms.updated_at, ms.rules, n.name
             FROM module_status ms JOIN nodes n ON n.id = ms.node_id
             WHERE ms.module = ?1 ORDER BY ms.status <> 'nok', n.name, ms.service LIMIT ?2",
        )?
        .query_map(params![module, limit], |r| {
            let status = status_row(r)?;
            Ok(ModuleNode {
                node: r.get(9)?,
                service: status.service.clone(),
                status,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok((summary(ok, nok, na), rows))
}

pub(super) fn run_history(c: &Connection, node_id: &str, limit: u32) -> Result<Vec<RunModules>> {
    let runs: Vec<(i64, RunSummary)> = c
        .prepare_cached(
            "SELECT id, run_id, action, service, policy_hash, agent_version, started_at,
                    received_at, ok, nok, na
             FROM runs WHERE node_id = ?1 ORDER BY id DESC LIMIT ?2",
        )?
        .query_map(params![node_id, limit], |r| {
            let service: String = r.get(3)?;
            Ok((
                r.get(0)?,
                RunSummary {
                    run_id: r.get(1)?,
                    action: super::word(r, 2)?,
                    service: (!service.is_empty()).then_some(service),
                    policy_hash: r.get(4)?,
                    agent_version: r.get(5)?,
                    started_at: r.get(6)?,
                    received_at: r.get(7)?,
                    summary: summary(r.get(8)?, r.get(9)?, r.get(10)?),
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut modules = c.prepare_cached(
        "SELECT module, status FROM module_results WHERE run_pk = ?1 ORDER BY id",
    )?;
    let mut out = Vec::with_capacity(runs.len());
    for (pk, run) in runs {
        let m = modules
            .query_map([pk], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        out.push(RunModules { run, modules: m });
    }
    Ok(out)
}

pub(super) fn audit_of(c: &Connection, objects: &[String], limit: u32) -> Result<Vec<AuditEntry>> {
    if objects.is_empty() {
        return Ok(Vec::new());
    }
    let marks: Vec<String> = (1..=objects.len()).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "SELECT id, at, actor, action, object, detail FROM audit_log
         WHERE object IN ({}) ORDER BY id DESC LIMIT ?{}",
        marks.join(", "),
        objects.len() + 1
    );
    let mut params: Vec<Box<dyn ToSql>> = objects
        .iter()
        .map(|o| Box::new(o.clone()) as Box<dyn ToSql>)
        .collect();
    params.push(Box::new(limit));
    Ok(c.prepare(&sql)?
        .query_map(params_from_iter(params.iter()), |r| {
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
}

pub(super) fn latest_module_logs(
    c: &Connection,
    node_id: &str,
    runs: u32,
) -> Result<Vec<ModuleLogs>> {
    let mut stmt = c.prepare_cached(
        "SELECT r.service, mr.module, mr.detail, r.action = 'fixable'
         FROM module_results mr JOIN runs r ON r.id = mr.run_pk
         WHERE r.id IN (SELECT id FROM runs WHERE node_id = ?1 ORDER BY id DESC LIMIT ?2)
         ORDER BY r.action = 'fixable', r.id DESC, mr.id",
    )?;
    let rows = stmt.query_map(params![node_id, runs], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out: Vec<ModuleLogs> = Vec::new();
    for row in rows {
        let (service, module, detail) = row?;
        if out
            .iter()
            .any(|m| m.service == service && m.module == module)
        {
            continue;
        }
        let detail: serde_json::Value =
            serde_json::from_str(&detail).map_err(|e| super::corrupt("module result", e))?;
        let actions = detail["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["action"].as_str().unwrap_or_default().to_string(),
                    a["exit_code"].as_i64().unwrap_or_default() as i32,
                    a["log"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        out.push(ModuleLogs {
            service,
            module,
            actions,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::SqliteStore;
    use crate::store::{FleetFilter, NodeState, Store, TokenRole};
    use tenet_rulesets::api::{ModuleReport, RunAction, RunResults, Summary};

    fn run(id: &str, statuses: &[(&str, &str)]) -> RunResults {
        RunResults {
            run_id: id.into(),
            agent_version: "t".into(),
            service: None,
            started_at: None,
            action: RunAction::Check,
            policy_hash: "h".into(),
            modules: statuses
                .iter()
                .map(|(m, s)| ModuleReport {
                    module: m.to_string(),
                    moduleset: "ms".into(),
                    kind: None,
                    status: s.parse().unwrap(),
                    actions: Vec::new(),
                    rules: None,
                    duration_ms: 1,
                })
                .collect(),
            summary: Summary::default(),
            duration_ms: 1,
        }
    }

    /// What the triggers keep, recomputed from the tables they follow.
    fn consistent(store: &SqliteStore) {
        store
            .read(|c| {
                let kept: Vec<(String, i64, i64, i64)> = c
                    .prepare("SELECT node_id, ok, nok, na FROM node_compliance WHERE ok + nok + na > 0 ORDER BY node_id")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let computed: Vec<(String, i64, i64, i64)> = c
                    .prepare("SELECT node_id, SUM(status = 'ok'), SUM(status = 'nok'), SUM(status NOT IN ('ok', 'nok')) FROM module_status GROUP BY node_id ORDER BY node_id")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                assert_eq!(kept, computed, "node_compliance follows module_status");
                let kept: Vec<(String, i64, i64, i64)> = c
                    .prepare("SELECT module, ok, nok, na FROM module_compliance WHERE ok + nok + na > 0 ORDER BY module")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let computed: Vec<(String, i64, i64, i64)> = c
                    .prepare("SELECT module, SUM(status = 'ok'), SUM(status = 'nok'), SUM(status NOT IN ('ok', 'nok')) FROM module_status GROUP BY module ORDER BY module")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                assert_eq!(kept, computed, "module_compliance follows module_status");
                let kept: Vec<(String, i64, i64, i64, i64, i64)> = c
                    .prepare("SELECT day, subjects, compliant, ok, nok, na FROM fleet_daily WHERE subjects > 0 ORDER BY day")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let computed: Vec<(String, i64, i64, i64, i64, i64)> = c
                    .prepare("SELECT day, COUNT(*), SUM(nok = 0), SUM(ok), SUM(nok), SUM(na) FROM node_daily GROUP BY day ORDER BY day")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                assert_eq!(kept, computed, "fleet_daily follows node_daily");
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn the_kept_aggregates_follow_runs_roll_ups_prunes_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        for (id, name) in [("n1", "web1"), ("n2", "web2"), ("n3", "db1")] {
            store.register_node(id, name, "x", "test").unwrap();
        }
        store
            .record_run("n1", &run("a", &[("m1", "ok"), ("m2", "nok")]))
            .unwrap();
        store
            .record_run("n2", &run("b", &[("m1", "ok"), ("m2", "ok")]))
            .unwrap();
        store.record_run("n3", &run("c", &[("m1", "n/a")])).unwrap();
        consistent(&store);
        // A later run changes statuses (upserts: the update trigger).
        store.record_run("n1", &run("d", &[("m2", "ok")])).unwrap();
        store.record_run("n2", &run("e", &[("m1", "nok")])).unwrap();
        consistent(&store);

        let f = time::macros::format_description!("[year]-[month]-[day]");
        let today = time::OffsetDateTime::now_utc().date();
        let (d, next) = (
            today.format(&f).unwrap(),
            (today + time::Duration::days(1)).format(&f).unwrap(),
        );
        store.rollup_day(&d, &next).unwrap();
        consistent(&store);
        // Rolled up again (an interrupted roll-up): INSERT OR REPLACE, counted once.
        store.rollup_day(&d, &next).unwrap();
        consistent(&store);
        let trend = store
            .fleet_daily("2000-01-01", &FleetFilter::default())
            .unwrap();
        assert_eq!(
            trend,
            store.compliance_daily("2000-01-01", None).unwrap(),
            "the API's figures"
        );
        assert_eq!(trend[0].subjects, 3);

        // Filters narrow every read.
        let nok = FleetFilter {
            state: Some(NodeState::Nok),
            ..Default::default()
        };
        let names: Vec<String> = store
            .fleet_nodes(&nok)
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["web2"]);
        let web = FleetFilter {
            name: Some("WEB".into()),
            ..Default::default()
        };
        assert_eq!(
            store.fleet_nodes(&web).unwrap().len(),
            2,
            "case-insensitive"
        );
        let m1 = FleetFilter {
            module: Some("m2".into()),
            ..Default::default()
        };
        assert_eq!(store.fleet_nodes(&m1).unwrap().len(), 2);
        let worst = store.worst_modules(&FleetFilter::default(), 10).unwrap();
        assert_eq!(
            (worst[0].module.as_str(), worst[0].nok, worst[0].total),
            ("m1", 1, Some(3))
        );
        let db1 = FleetFilter {
            name: Some("db".into()),
            ..Default::default()
        };
        assert!(
            store.worst_modules(&db1, 10).unwrap().is_empty(),
            "db1 has nothing nok"
        );
        assert_eq!(store.worst_modules(&web, 10).unwrap()[0].nok, 1);
        assert_eq!(
            store.fleet_daily("2000-01-01", &nok).unwrap()[0].subjects,
            1
        );
        let put = |id: &str, os: &str| {
            let mut facts = tenet_rulesets::NodeFacts::default();
            facts.node.insert("os_name".into(), os.into());
            store.put_facts(id, &facts, os, 1214, &[]).unwrap();
        };
        put("n1", "Linux");
        put("n2", "SunOS");
        put("n1", "AIX");
        let sunos = FleetFilter {
            facts: vec![("os_name".into(), "SunOS".into())],
            ..Default::default()
        };
        assert_eq!(store.fleet_nodes(&sunos).unwrap()[0].name, "web2");
        let linux = FleetFilter {
            facts: vec![("os_name".into(), "Linux".into())],
            ..Default::default()
        };
        assert!(
            store.fleet_nodes(&linux).unwrap().is_empty(),
            "facts replaced, not added"
        );
        let like = FleetFilter {
            name: Some("%".into()),
            ..Default::default()
        };
        assert!(
            store.fleet_nodes(&like).unwrap().is_empty(),
            "LIKE wildcards are text"
        );

        // A deleted node leaves both aggregates (cascades fire the triggers).
        store.delete_node("n2", "test").unwrap();
        consistent(&store);
        store.prune_daily("2999-01-01", 1000).unwrap();
        consistent(&store);
        assert!(
            store
                .fleet_daily("2000-01-01", &FleetFilter::default())
                .unwrap()
                .is_empty()
        );

        // Token roles.
        store
            .create_token("v", "digest-v", TokenRole::Viewer)
            .unwrap();
        store
            .create_token("a", "digest-a", TokenRole::Admin)
            .unwrap();
        assert_eq!(
            store.token("digest-v").unwrap(),
            Some(("v".into(), TokenRole::Viewer))
        );
        assert_eq!(
            store.admin_token("digest-v").unwrap(),
            None,
            "a viewer is no admin"
        );
        assert_eq!(store.admin_token("digest-a").unwrap(), Some("a".into()));
    }
}

//! Retention's SQL (migration 5): daily aggregates rolled up from the run history, and the
//! pruning of runs past the window, in small batches.

use rusqlite::{Connection, OptionalExtension, params};

use super::super::{DailyCompliance, DailyRow};
use crate::error::Result;

/// Migration 5: the index retention scans runs by, and the daily aggregates.
///
/// `node_daily` has one row per node (or service on a node, `service` = its name) and UTC day
/// it reported on: how many runs, and how many modules ended ok / nok / n/a in their last
/// run of the day. `module_daily` has one row per module and day: how many nodes (or
/// services) had it ok / nok / n/a at their last run of the day. "Compliant share per day"
/// is `SUM(nok = 0) / COUNT(*)` over `node_daily` by day, or `ok / (ok + nok)` of a module.
pub const MIGRATION: &str = r#"
CREATE INDEX runs_received ON runs (received_at);
CREATE TABLE node_daily (
    node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    service TEXT NOT NULL,
    day TEXT NOT NULL,
    runs INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    nok INTEGER NOT NULL,
    na INTEGER NOT NULL,
    PRIMARY KEY (node_id, service, day)
) WITHOUT ROWID;
CREATE INDEX node_daily_day ON node_daily (day);
CREATE TABLE module_daily (
    module TEXT NOT NULL,
    day TEXT NOT NULL,
    ok INTEGER NOT NULL,
    nok INTEGER NOT NULL,
    na INTEGER NOT NULL,
    PRIMARY KEY (module, day)
) WITHOUT ROWID;
CREATE INDEX module_daily_day ON module_daily (day);
INSERT INTO meta (key, value) VALUES ('rolled_up_through', '');
"#;

/// The last day rolled up (`None` before the first), and the day of the oldest run.
pub fn state(c: &Connection) -> Result<(Option<String>, Option<String>)> {
    let rolled: Option<String> = c
        .query_row(
            "SELECT value FROM meta WHERE key = 'rolled_up_through'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .filter(|v: &String| !v.is_empty());
    let oldest: Option<String> =
        c.query_row("SELECT MIN(received_at) FROM runs", [], |r| r.get(0))?;
    Ok((rolled, oldest.map(|t| t.chars().take(10).collect())))
}

/// Each module's last status of the day (runs received in [?1, ?2)), per node and service.
macro_rules! day_last {
    () => {
        "WITH day_last AS (
           SELECT node_id, service, module, status FROM (
             SELECT r.node_id, r.service, mr.module, mr.status,
                    ROW_NUMBER() OVER (PARTITION BY r.node_id, r.service, mr.module ORDER BY r.id DESC) AS rn
             FROM runs r JOIN module_results mr ON mr.run_pk = r.id
             WHERE r.received_at >= ?1 AND r.received_at < ?2 AND r.action <> 'fixable')
           WHERE rn = 1)"
    };
}

/// Counts of ok, nok and other statuses.
macro_rules! counts {
    () => {
        "SUM(status = 'ok'), SUM(status = 'nok'), SUM(status NOT IN ('ok', 'nok'))"
    };
}

/// The aggregates of `day` (`YYYY-MM-DD`), read from the runs of that day: (per node,
/// per module).
pub fn compute(c: &Connection, day: &str, next: &str) -> Result<(Vec<DailyRow>, Vec<DailyRow>)> {
    let (from, to) = (format!("{day} 00:00:00"), format!("{next} 00:00:00"));
    let mut nodes: Vec<DailyRow> = Vec::new();
    {
        let mut runs = std::collections::HashMap::new();
        let mut stmt = c.prepare(
            "SELECT node_id, service, COUNT(*) FROM runs
             WHERE received_at >= ?1 AND received_at < ?2 GROUP BY node_id, service",
        )?;
        for row in stmt.query_map(params![from, to], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                r.get::<_, i64>(2)?,
            ))
        })? {
            let (k, n) = row?;
            runs.insert(k, n);
        }
        let mut stmt = c.prepare(concat!(
            day_last!(),
            " SELECT node_id, service, ",
            counts!(),
            " FROM day_last GROUP BY node_id, service"
        ))?;
        for row in stmt.query_map(params![from, to], |r| {
            Ok(DailyRow {
                key: r.get(0)?,
                service: r.get(1)?,
                runs: 0,
                ok: r.get(2)?,
                nok: r.get(3)?,
                na: r.get(4)?,
            })
        })? {
            let mut row = row?;
            row.runs = runs
                .get(&(row.key.clone(), row.service.clone()))
                .copied()
                .unwrap_or(0);
            nodes.push(row);
        }
    }
    let mut modules = Vec::new();
    let mut stmt = c.prepare(concat!(
        day_last!(),
        " SELECT module, ",
        counts!(),
        " FROM day_last GROUP BY module"
    ))?;
    for row in stmt.query_map(params![from, to], |r| {
        Ok(DailyRow {
            key: r.get(0)?,
            service: String::new(),
            runs: 0,
            ok: r.get(1)?,
            nok: r.get(2)?,
            na: r.get(3)?,
        })
    })? {
        modules.push(row?);
    }
    Ok((nodes, modules))
}

/// Writes aggregate rows of `day` (replacing any from an interrupted roll-up).
pub fn write(c: &Connection, day: &str, nodes: &[DailyRow], modules: &[DailyRow]) -> Result<()> {
    let mut n = c.prepare_cached(
        "INSERT OR REPLACE INTO node_daily (node_id, service, day, runs, ok, nok, na)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM nodes WHERE id = ?1)",
    )?;
    for r in nodes {
        n.execute(params![r.key, r.service, day, r.runs, r.ok, r.nok, r.na])?;
    }
    let mut m = c.prepare_cached(
        "INSERT OR REPLACE INTO module_daily (module, day, ok, nok, na) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for r in modules {
        m.execute(params![r.key, day, r.ok, r.nok, r.na])?;
    }
    Ok(())
}

/// Records that every day up to `day` is rolled up.
pub fn mark(c: &Connection, day: &str) -> Result<()> {
    c.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'rolled_up_through'",
        [day],
    )?;
    Ok(())
}

/// Deletes up to `limit` runs received before `before`, never the latest run of a node (or
/// service on a node); their module results go with them. Returns how many.
pub fn prune_runs(c: &Connection, before: &str, limit: u32) -> Result<u64> {
    let n = c.execute(
        "DELETE FROM runs WHERE id IN (
           SELECT id FROM runs r WHERE received_at < ?1
             AND EXISTS (SELECT 1 FROM runs r2 WHERE r2.node_id = r.node_id
                         AND r2.service = r.service AND r2.id > r.id)
           ORDER BY received_at LIMIT ?2)",
        params![before, limit],
    )?;
    Ok(n as u64)
}

/// Deletes up to `limit` aggregate rows of days before `before_day`.
pub fn prune_daily(c: &Connection, before_day: &str, limit: u32) -> Result<u64> {
    let a = c.execute(
        "DELETE FROM node_daily WHERE (node_id, service, day) IN
           (SELECT node_id, service, day FROM node_daily WHERE day < ?1 LIMIT ?2)",
        params![before_day, limit],
    )?;
    let b = c.execute(
        "DELETE FROM module_daily WHERE (module, day) IN
           (SELECT module, day FROM module_daily WHERE day < ?1 LIMIT ?2)",
        params![before_day, limit],
    )?;
    Ok((a + b) as u64)
}

/// Compliance per day since `since_day`, of every node and service, or of one module.
pub fn daily(
    c: &Connection,
    since_day: &str,
    module: Option<&str>,
) -> Result<Vec<DailyCompliance>> {
    let rows = match module {
        None => {
            let mut stmt = c.prepare_cached(
                "SELECT day, COUNT(*), SUM(nok = 0), SUM(ok), SUM(nok), SUM(na)
                 FROM node_daily WHERE day >= ?1 GROUP BY day ORDER BY day",
            )?;
            stmt.query_map([since_day], |r| {
                Ok(DailyCompliance {
                    day: r.get(0)?,
                    subjects: r.get(1)?,
                    compliant: r.get(2)?,
                    ok: r.get(3)?,
                    nok: r.get(4)?,
                    na: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        }
        Some(m) => {
            let mut stmt = c.prepare_cached(
                "SELECT day, ok + nok + na, ok + na, ok, nok, na
                 FROM module_daily WHERE module = ?1 AND day >= ?2 ORDER BY day",
            )?;
            stmt.query_map(params![m, since_day], |r| {
                Ok(DailyCompliance {
                    day: r.get(0)?,
                    subjects: r.get(1)?,
                    compliant: r.get(2)?,
                    ok: r.get(3)?,
                    nok: r.get(4)?,
                    na: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        }
    };
    Ok(rows)
}

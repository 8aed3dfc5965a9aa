//! The action queue in SQLite (migration 3): OpenSVC's `action_queue`, one row per queued
//! command, and the address each node last pushed its facts from (where it is notified).
//! Each function runs inside the writer's savepoint or on a read connection.

use rusqlite::{Connection, OptionalExtension, params};
use tenet_rulesets::action::{Action, ActionResult, DequeuedAction, status};

use super::{audit, node_exists};
use crate::error::{Error, Result};
use crate::store::{NotifyTarget, now_text};

/// Migration 3.
pub const MIGRATION: &str = r#"
CREATE TABLE action_queue (
    id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    command TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'W' CHECK (status IN ('W', 'N', 'S', 'R', 'T', 'C')),
    ret INTEGER,
    stdout TEXT,
    stderr TEXT,
    queued_by TEXT NOT NULL,
    queued_at TEXT NOT NULL,
    notified_at TEXT,
    notify_error TEXT,
    sent_at TEXT,
    sent_count INTEGER NOT NULL DEFAULT 0,
    acked_at TEXT,
    done_at TEXT
);
CREATE INDEX action_queue_node_status ON action_queue(node_id, status);
CREATE INDEX action_queue_status ON action_queue(status);
ALTER TABLE nodes ADD COLUMN address TEXT;
"#;

/// `SELECT <every action column> FROM action_queue a JOIN nodes n ... <tail>` (static text:
/// values are always bound).
macro_rules! select_actions {
    ($tail:literal) => {
        concat!(
            "SELECT a.id, a.node_id, n.name, a.command, a.status, a.ret, a.stdout, a.stderr, ",
            "a.queued_by, a.queued_at, a.notified_at, a.notify_error, a.sent_at, a.sent_count, ",
            "a.acked_at, a.done_at FROM action_queue a JOIN nodes n ON n.id = a.node_id ",
            $tail
        )
    };
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Action> {
    Ok(Action {
        id: r.get(0)?,
        node_id: r.get(1)?,
        node: r.get(2)?,
        command: r.get(3)?,
        status: r.get(4)?,
        ret: r.get(5)?,
        stdout: r.get(6)?,
        stderr: r.get(7)?,
        queued_by: r.get(8)?,
        queued_at: r.get(9)?,
        notified_at: r.get(10)?,
        notify_error: r.get(11)?,
        sent_at: r.get(12)?,
        sent_count: r.get(13)?,
        acked_at: r.get(14)?,
        done_at: r.get(15)?,
    })
}

/// One action.
pub fn get(conn: &Connection, id: i64) -> Result<Option<Action>> {
    Ok(conn
        .prepare_cached(select_actions!("WHERE a.id = ?1"))?
        .query_row([id], row)
        .optional()?)
}

/// Queues a command (already validated) for a node.
pub fn queue(conn: &Connection, node_id: &str, command: &str, actor: &str) -> Result<Action> {
    node_exists(conn, node_id)?;
    conn.prepare_cached(
        "INSERT INTO action_queue (node_id, command, status, queued_by, queued_at) VALUES (?1, ?2, 'W', ?3, ?4)",
    )?
    .execute(params![node_id, command, actor, now_text()])?;
    let id = conn.last_insert_rowid();
    audit(
        conn,
        actor,
        "action.queue",
        &format!("action {id}"),
        &format!("node {node_id}: {command}"),
    )?;
    get(conn, id)?.ok_or_else(|| Error::Store(format!("action {id} vanished")))
}

/// Actions, newest first, of one node and/or in some statuses (letters of W N S R T C).
pub fn list(
    conn: &Connection,
    node_id: Option<&str>,
    statuses: &[String],
    limit: u32,
) -> Result<Vec<Action>> {
    let wanted: String = statuses.concat();
    let mut st = conn.prepare_cached(select_actions!(
        "WHERE (?1 IS NULL OR a.node_id = ?1) AND (?2 = '' OR ?2 LIKE '%' || a.status || '%') ORDER BY a.id DESC LIMIT ?3"
    ))?;
    let rows = st.query_map(params![node_id, wanted, limit], row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Where and whether to notify a node.
pub fn notify_target(conn: &Connection, node_id: &str) -> Result<NotifyTarget> {
    let (address, port): (Option<String>, i64) = conn
        .prepare_cached("SELECT address, listener_port FROM nodes WHERE id = ?1")?
        .query_row([node_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or_else(|| Error::not_found("node", node_id))?;
    let max_waiting: Option<i64> = conn
        .prepare_cached("SELECT MAX(id) FROM action_queue WHERE node_id = ?1 AND status = 'W'")?
        .query_row([node_id], |r| r.get(0))?;
    Ok(NotifyTarget {
        address,
        port: u16::try_from(port).unwrap_or(tenet_rulesets::api::DEFAULT_LISTENER_PORT),
        max_waiting,
    })
}

/// After a notification: W → N for the node's actions up to `up_to` (success), or the error
/// recorded on them (they stay W: the node's poll will fetch them).
pub fn notified(conn: &Connection, node_id: &str, up_to: i64, error: Option<&str>) -> Result<u64> {
    let n = match error {
        None => conn
            .prepare_cached(
                "UPDATE action_queue SET status = 'N', notified_at = ?3, notify_error = NULL WHERE node_id = ?1 AND status = 'W' AND id <= ?2",
            )?
            .execute(params![node_id, up_to, now_text()])?,
        Some(e) => conn
            .prepare_cached(
                "UPDATE action_queue SET notify_error = ?3 WHERE node_id = ?1 AND status = 'W' AND id <= ?2",
            )?
            .execute(params![node_id, up_to, e])?,
    };
    Ok(n as u64)
}

/// Nodes with actions waiting for a notification.
pub fn nodes_waiting(conn: &Connection) -> Result<Vec<String>> {
    let mut st = conn.prepare_cached(
        "SELECT DISTINCT node_id FROM action_queue WHERE status = 'W' ORDER BY node_id",
    )?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Sends a node its actions: W and N, and S sent before `resend_before` (unacknowledged);
/// they become S.
pub fn dequeue(
    conn: &Connection,
    node_id: &str,
    resend_before: &str,
) -> Result<Vec<DequeuedAction>> {
    let mut out: Vec<DequeuedAction> = conn
        .prepare_cached(
            "UPDATE action_queue SET status = 'S', sent_at = ?3, sent_count = sent_count + 1
             WHERE node_id = ?1 AND (status IN ('W', 'N') OR (status = 'S' AND sent_at < ?2))
             RETURNING id, command, queued_at",
        )?
        .query_map(params![node_id, resend_before, now_text()], |r| {
            Ok(DequeuedAction {
                id: r.get(0)?,
                command: r.get(1)?,
                queued_at: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    out.sort_by_key(|a| a.id);
    Ok(out)
}

/// S → R for these actions of the node (R ones count as acknowledged: a retried ack).
pub fn ack(conn: &Connection, node_id: &str, ids: &[i64]) -> Result<Vec<i64>> {
    let now = now_text();
    let mut acked = Vec::new();
    for id in ids {
        let n = conn
            .prepare_cached(
                "UPDATE action_queue SET status = 'R', acked_at = ?3 WHERE id = ?1 AND node_id = ?2 AND status = 'S'",
            )?
            .execute(params![id, node_id, now])?;
        let running = n == 1
            || conn
                .prepare_cached(
                    "SELECT 1 FROM action_queue WHERE id = ?1 AND node_id = ?2 AND status = 'R'",
                )?
                .query_row(params![id, node_id], |_| Ok(()))
                .optional()?
                .is_some();
        if running {
            acked.push(*id);
        }
    }
    Ok(acked)
}

/// Records a result (→ T). `Ok(false)`: this same result was recorded before.
pub fn result(conn: &Connection, node_id: &str, res: &ActionResult) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE action_queue SET status = 'T', ret = ?3, stdout = ?4, stderr = ?5, done_at = ?6
             WHERE id = ?1 AND node_id = ?2 AND status IN ('S', 'R')",
        )?
        .execute(params![
            res.id,
            node_id,
            res.ret,
            res.stdout,
            res.stderr,
            now_text()
        ])?;
    if n == 1 {
        return Ok(true);
    }
    type Recorded = (String, Option<i32>, Option<String>, Option<String>);
    let found: Option<Recorded> = conn
        .prepare_cached(
            "SELECT status, ret, stdout, stderr FROM action_queue WHERE id = ?1 AND node_id = ?2",
        )?
        .query_row(params![res.id, node_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    match found {
        None => Err(Error::not_found("action", res.id.to_string())),
        Some((s, ret, out, err)) if s == status::TERMINATED => {
            if ret == Some(res.ret)
                && out.as_deref() == Some(&res.stdout)
                && err.as_deref() == Some(&res.stderr)
            {
                Ok(false)
            } else {
                Err(Error::Conflict(format!(
                    "action {} already has a different result",
                    res.id
                )))
            }
        }
        Some((s, ..)) if s == status::CANCELLED => {
            Err(Error::Conflict(format!("action {} was cancelled", res.id)))
        }
        Some((s, ..)) => Err(Error::Conflict(format!(
            "action {} was not dequeued (status {s})",
            res.id
        ))),
    }
}

/// Cancels an action not yet acknowledged (W, N, S → C).
pub fn cancel(conn: &Connection, id: i64, actor: &str) -> Result<Action> {
    let n = conn
        .prepare_cached(
            "UPDATE action_queue SET status = 'C', done_at = ?2 WHERE id = ?1 AND status IN ('W', 'N', 'S')",
        )?
        .execute(params![id, now_text()])?;
    let action = get(conn, id)?.ok_or_else(|| Error::not_found("action", id.to_string()))?;
    if n == 0 {
        return Err(Error::Conflict(format!(
            "action {id} cannot be cancelled: status {} ({})",
            action.status,
            match action.status.as_str() {
                "R" => "the node is running it",
                "T" => "it terminated",
                _ => "cancelled already",
            }
        )));
    }
    audit(conn, actor, "action.cancel", &format!("action {id}"), "")?;
    Ok(action)
}

/// Records the address a node pushed facts from.
pub fn set_address(conn: &Connection, node_id: &str, address: &str) -> Result<()> {
    conn.prepare_cached("UPDATE nodes SET address = ?2 WHERE id = ?1")?
        .execute(params![node_id, address])?;
    Ok(())
}

//! Attachments of modulesets and rulesets to nodes and services (who attached what, and a
//! node detaching only its own), and the admin-assigned node attributes.

use rusqlite::{Connection, OptionalExtension, params};
use tenet_rulesets::api::NodeAttributes;

use super::{audit, node_exists};
use crate::error::{Error, Result};
use crate::store::{AttachKind, Attached, Attachments, Target, now_text};

pub(super) fn service_id(conn: &Connection, name: &str, create: bool) -> Result<Option<i64>> {
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

pub(super) fn attachments(conn: &Connection, target: &Target) -> Result<Attachments> {
    let mut out = Attachments::default();
    // Services are attached by admins only: they record no `attached_by`.
    let (ms_sql, rs_sql, ver_sql, key): (&str, &str, &str, rusqlite::types::Value) = match target {
        Target::Node(id) => (
            "SELECT m.name, a.attached_by, a.attached_at FROM node_modulesets a JOIN modulesets m ON m.id = a.moduleset_id WHERE a.node_id = ?1 ORDER BY a.attached_at, m.id",
            "SELECT r.name, a.attached_by, a.attached_at FROM node_rulesets a JOIN rulesets r ON r.id = a.ruleset_id WHERE a.node_id = ?1 ORDER BY a.attached_at, r.id",
            "SELECT attach_version FROM nodes WHERE id = ?1",
            id.clone().into(),
        ),
        Target::Service(name) => match service_id(conn, name, false)? {
            None => return Ok(out),
            Some(id) => (
                "SELECT m.name, NULL, a.attached_at FROM service_modulesets a JOIN modulesets m ON m.id = a.moduleset_id WHERE a.service_id = ?1 ORDER BY a.attached_at, m.id",
                "SELECT r.name, NULL, a.attached_at FROM service_rulesets a JOIN rulesets r ON r.id = a.ruleset_id WHERE a.service_id = ?1 ORDER BY a.attached_at, r.id",
                "SELECT attach_version FROM services WHERE id = ?1",
                id.into(),
            ),
        },
    };
    for (kind, sql) in [
        (AttachKind::Moduleset, ms_sql),
        (AttachKind::Ruleset, rs_sql),
    ] {
        let mut st = conn.prepare_cached(sql)?;
        let rows = st.query_map([&key], |r| {
            Ok(Attached {
                kind,
                name: r.get(0)?,
                attached_by: r.get(1)?,
                attached_at: r.get(2)?,
            })
        })?;
        for row in rows {
            let a = row?;
            match kind {
                AttachKind::Moduleset => out.modulesets.push(a.name.clone()),
                AttachKind::Ruleset => out.rulesets.push(a.name.clone()),
            }
            out.detail.push(a);
        }
    }
    out.version = conn
        .prepare_cached(ver_sql)?
        .query_row([&key], |r| r.get(0))
        .optional()?
        .ok_or_else(|| Error::not_found("node", target.to_string()))?;
    Ok(out)
}

/// How audit entries and `attached_by` name a node acting for itself: `node:<name>`.
const NODE_ACTOR: &str = "node:";

/// The statements over one node attachment table.
struct AttachTable {
    owner: &'static str,
    insert: &'static str,
    take_over: &'static str,
    delete: &'static str,
}

const NODE_MODULESETS: AttachTable = AttachTable {
    owner: "SELECT attached_by FROM node_modulesets WHERE node_id = ?1 AND moduleset_id = ?2",
    insert: "INSERT INTO node_modulesets (node_id, moduleset_id, attached_at, attached_by) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
    take_over: "UPDATE node_modulesets SET attached_by = ?3 WHERE node_id = ?1 AND moduleset_id = ?2 AND attached_by LIKE 'node:%'",
    delete: "DELETE FROM node_modulesets WHERE node_id = ?1 AND moduleset_id = ?2",
};

const NODE_RULESETS: AttachTable = AttachTable {
    owner: "SELECT attached_by FROM node_rulesets WHERE node_id = ?1 AND ruleset_id = ?2",
    insert: "INSERT INTO node_rulesets (node_id, ruleset_id, attached_at, attached_by) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
    take_over: "UPDATE node_rulesets SET attached_by = ?3 WHERE node_id = ?1 AND ruleset_id = ?2 AND attached_by LIKE 'node:%'",
    delete: "DELETE FROM node_rulesets WHERE node_id = ?1 AND ruleset_id = ?2",
};

/// Attaches or detaches. With `owner`, a detach happens only when `owner` made the
/// attachment (`Forbidden` otherwise).
pub(super) fn change_attachment(
    conn: &Connection,
    target: &Target,
    kind: AttachKind,
    name: &str,
    attach: bool,
    actor: &str,
    owner: Option<&str>,
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
            let table = match kind {
                AttachKind::Moduleset => NODE_MODULESETS,
                AttachKind::Ruleset => NODE_RULESETS,
            };
            if let Some(owner) = owner {
                let attached_by: Option<Option<String>> = conn
                    .prepare_cached(table.owner)?
                    .query_row(params![node, obj_id], |r| r.get(0))
                    .optional()?;
                if let Some(by) = &attached_by
                    && by.as_deref() != Some(owner)
                {
                    return Err(Error::Forbidden(format!(
                        "{} {name} was attached by {}, not by {owner}: a node detaches only what it attached itself",
                        kind.as_str(),
                        by.as_deref().unwrap_or("an admin")
                    )));
                }
            }
            let n = if attach {
                let n = conn.prepare_cached(table.insert)?.execute(params![
                    node,
                    obj_id,
                    now_text(),
                    actor
                ])?;
                // An admin attaching what a node attached takes it over, so the node can no
                // longer detach it; a node never takes over an admin's attachment.
                if n == 0
                    && !actor.starts_with(NODE_ACTOR)
                    && conn
                        .prepare_cached(table.take_over)?
                        .execute(params![node, obj_id, actor])?
                        > 0
                {
                    audit(
                        conn,
                        actor,
                        "attach.take-over",
                        &target.to_string(),
                        &format!("{} {name}", kind.as_str()),
                    )?;
                }
                n
            } else {
                conn.prepare_cached(table.delete)?
                    .execute(params![node, obj_id])?
            };
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

pub(super) fn assigned_services(conn: &Connection, node_id: &str) -> Result<Vec<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT s.name FROM node_assigned_services ns JOIN services s ON s.id = ns.service_id WHERE ns.node_id = ?1 ORDER BY s.name",
        )?
        .query_map([node_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

pub(super) fn node_attributes(conn: &Connection, node_id: &str) -> Result<NodeAttributes> {
    let team: Option<Option<String>> = conn
        .prepare_cached("SELECT team_responsible FROM nodes WHERE id = ?1")?
        .query_row([node_id], |r| r.get(0))
        .optional()?;
    let team_responsible = team.ok_or_else(|| Error::not_found("node", node_id))?;
    Ok(NodeAttributes {
        team_responsible,
        services: assigned_services(conn, node_id)?,
    })
}

/// Replaces a node's admin-assigned attributes (the caller checked the node exists).
pub(super) fn set_attributes(
    conn: &Connection,
    id: &str,
    name: &str,
    attributes: &NodeAttributes,
    actor: &str,
) -> Result<()> {
    let before = node_attributes(conn, id)?;
    conn.prepare_cached("UPDATE nodes SET team_responsible = ?2 WHERE id = ?1")?
        .execute(params![id, attributes.team_responsible])?;
    conn.prepare_cached("DELETE FROM node_assigned_services WHERE node_id = ?1")?
        .execute([id])?;
    for s in &attributes.services {
        let sid = service_id(conn, s, true)?.expect("created above");
        conn.prepare_cached(
            "INSERT INTO node_assigned_services (node_id, service_id, assigned_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )?
        .execute(params![id, sid, now_text()])?;
    }
    let after = node_attributes(conn, id)?;
    if before != after {
        audit(
            conn,
            actor,
            "node.attributes",
            &format!("node {name}"),
            &format!(
                "team_responsible {}, services [{}]",
                after.team_responsible.as_deref().unwrap_or("none"),
                after.services.join(", ")
            ),
        )?;
    }
    Ok(())
}

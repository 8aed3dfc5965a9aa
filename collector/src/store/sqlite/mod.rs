//! The embedded store: one SQLite file in WAL mode, foreign keys on, migrations versioned in
//! code ([`MIGRATIONS`]).
//!
//! Writes go through one writer thread that commits in groups: it takes every write waiting,
//! runs each in its own savepoint (one failing write does not sink the others), commits once
//! (one WAL fsync, `synchronous = FULL`) and only then answers each caller. So a write that
//! returned `Ok` survives a crash or `kill -9`, and 50 concurrent result posts cost one fsync,
//! not 50. Reads use a small pool of connections that never block the writer (WAL).
//!
//! Parts: `pool` (the writer thread, the read pool, the private database file), `schema`
//! (migrations), `bundle` (policy objects), `attachments` (and node attributes), `actions`
//! (the action queue), `retention` (daily roll-ups and pruning); this file holds the
//! [`Store`] implementation over them.

mod actions;
mod attachments;
mod bundle;
mod console;
mod pool;
mod retention;
mod schema;

pub use pool::SqliteStore;
pub use schema::{MIGRATIONS, schema_version};

use attachments::{
    assigned_services, attachments, change_attachment, node_attributes, service_id, set_attributes,
};
use bundle::{corrupt, load_bundle, save_bundle};
#[cfg(test)]
use pool::sibling;

use rusqlite::{Connection, OptionalExtension, params};
use tenet_rulesets::api::{
    ModuleStatus, NodeAttributes, NotOneOf, RuleReport, RunAction, RunResults, Status,
};
use tenet_rulesets::{Bundle, NodeFacts, PackageFact};

use super::{
    AttachKind, Attachments, AuditEntry, BundleEdit, DailyCompliance, EditOutcome, FleetFilter,
    FleetNode, Gauges, ModuleCount, ModuleLogs, ModuleNode, NodeAuth, NodeDay, NodeSummary,
    NotifyTarget, ReleaseRow, RunModules, RunSummary, ServiceConfig, Store, Target, TokenRole,
    now_text,
};
use crate::error::{Error, Result};
use tenet_rulesets::action::{Action, ActionResult, DequeuedAction};

fn read_generation(conn: &Connection) -> Result<u64> {
    // Read on every policy fetch: a cached statement, not parsed each time.
    let g: String = conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'policy_generation'")?
        .query_row([], |r| r.get(0))?;
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

fn node_exists(conn: &Connection, node_id: &str) -> Result<()> {
    let found: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM nodes WHERE id = ?1")?
        .query_row([node_id], |r| r.get(0))
        .optional()?;
    found
        .map(|_| ())
        .ok_or_else(|| Error::not_found("node", node_id))
}

/// A run-report word (status, action) stored as its text.
fn word<T: std::str::FromStr<Err = NotOneOf>>(
    r: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<T> {
    r.get::<_, String>(idx)?.parse().map_err(|e: NotOneOf| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn status_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ModuleStatus> {
    let service: String = r.get(1)?;
    let rules: Option<String> = r.get(8)?;
    Ok(ModuleStatus {
        module: r.get(0)?,
        service: (!service.is_empty()).then_some(service),
        moduleset: r.get(2)?,
        status: word(r, 3)?,
        action: word(r, 4)?,
        log: r.get(5)?,
        policy_hash: r.get(6)?,
        date: r.get(7)?,
        rules: rules.and_then(|t| serde_json::from_str::<Vec<RuleReport>>(&t).ok()),
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
            Ok(c.prepare_cached(
                "SELECT name FROM admin_tokens WHERE token_hash = ?1 AND role = 'admin'",
            )?
            .query_row([token_hash], |r| r.get(0))
            .optional()?)
        })
    }

    fn register_node_with(
        &self,
        id: &str,
        name: &str,
        secret_hash: &str,
        attributes: &NodeAttributes,
        actor: &str,
    ) -> Result<()> {
        let (id, name, hash, actor) = (
            id.to_string(),
            name.to_string(),
            secret_hash.to_string(),
            actor.to_string(),
        );
        let attributes = attributes.clone();
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
            audit(c, &actor, "node.register", &format!("node {name}"), &id)?;
            if attributes != NodeAttributes::default() {
                set_attributes(c, &id, &name, &attributes, &actor)?;
            }
            Ok(())
        })
    }

    fn node_attributes(&self, node_id: &str) -> Result<NodeAttributes> {
        self.read(|c| node_attributes(c, node_id))
    }

    fn set_node_attributes(
        &self,
        node_id: &str,
        attributes: &NodeAttributes,
        actor: &str,
    ) -> Result<()> {
        let (id, actor, attributes) = (node_id.to_string(), actor.to_string(), attributes.clone());
        self.write(move |c| {
            let name: Option<String> = c
                .prepare_cached("SELECT name FROM nodes WHERE id = ?1")?
                .query_row([&id], |r| r.get(0))
                .optional()?;
            let name = name.ok_or_else(|| Error::not_found("node", &id))?;
            set_attributes(c, &id, &name, &attributes, &actor)
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
                    "SELECT id, name, created_at, last_seen, listener_port, team_responsible FROM nodes ORDER BY name",
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
                        team_responsible: r.get(5)?,
                        services: Vec::new(),
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
                let (node, status, n): (String, Status, i64) = (r.get(0)?, word(r, 1)?, r.get(2)?);
                by_node.entry(node).or_default().add(status, n as usize);
            }
            for n in &mut nodes {
                n.compliance = by_node.remove(&n.node_id).unwrap_or_default();
                let a = attachments(c, &Target::Node(n.node_id.clone()))?;
                n.modulesets = a.modulesets;
                n.rulesets = a.rulesets;
                n.services = assigned_services(c, &n.node_id)?;
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
            c.prepare_cached("DELETE FROM node_reported_services WHERE node_id = ?1")?
                .execute([&id])?;
            for s in &services {
                let sid = service_id(c, s, true)?.expect("created above");
                c.prepare_cached(
                    "INSERT INTO node_reported_services (node_id, service_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
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
                "SELECT 1 FROM node_assigned_services ns JOIN services s ON s.id = ns.service_id WHERE ns.node_id = ?1 AND s.name = ?2",
            )?
            .query_row([node_id, service], |r| r.get::<_, i64>(0))
            .optional()?
            .is_some())
        })
    }

    fn reported_services(&self, node_id: &str) -> Result<Vec<String>> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT s.name FROM node_reported_services ns JOIN services s ON s.id = ns.service_id WHERE ns.node_id = ?1 ORDER BY s.name",
            )?
            .query_map([node_id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
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
        self.write(move |c| change_attachment(c, &t, kind, &n, true, &a, None))
    }

    fn detach(&self, target: &Target, kind: AttachKind, name: &str, actor: &str) -> Result<bool> {
        let (t, n, a) = (target.clone(), name.to_string(), actor.to_string());
        self.write(move |c| change_attachment(c, &t, kind, &n, false, &a, None))
    }

    fn detach_own(&self, node_id: &str, kind: AttachKind, name: &str, actor: &str) -> Result<bool> {
        let (t, n, a) = (
            Target::Node(node_id.to_string()),
            name.to_string(),
            actor.to_string(),
        );
        self.write(move |c| change_attachment(c, &t, kind, &n, false, &a, Some(&a)))
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
                    run.action.as_str(),
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
            let sets_status = run.action != RunAction::Fixable;
            for m in &run.modules {
                let detail = serde_json::json!({"kind": m.kind, "actions": m.actions, "rules": m.rules});
                c.prepare_cached(
                    "INSERT INTO module_results (run_pk, module, moduleset, status, duration_ms, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![run_pk, m.module, m.moduleset, m.status.as_str(), m.duration_ms as i64, detail.to_string()])?;
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
                    .execute(params![id, service, m.module, m.moduleset, m.status.as_str(), run.action.as_str(), log, run.policy_hash, rules, now])?;
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
                    action: word(r, 1)?,
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

    // ---- The web console (issue 15): see `console.rs`. ----

    fn create_token(&self, name: &str, token_hash: &str, role: TokenRole) -> Result<()> {
        let (name, hash) = (name.to_string(), token_hash.to_string());
        self.write(move |c| console::create_token(c, &name, &hash, role))
    }

    fn token(&self, token_hash: &str) -> Result<Option<(String, TokenRole)>> {
        self.read(|c| console::token(c, token_hash))
    }

    fn fleet_nodes(&self, filter: &FleetFilter) -> Result<Vec<FleetNode>> {
        self.read(|c| console::fleet_nodes(c, filter))
    }

    fn worst_modules(&self, filter: &FleetFilter, limit: u32) -> Result<Vec<ModuleCount>> {
        self.read(|c| console::worst_modules(c, filter, limit))
    }

    fn fleet_daily(&self, since_day: &str, filter: &FleetFilter) -> Result<Vec<DailyCompliance>> {
        self.read(|c| console::fleet_daily(c, since_day, filter))
    }

    fn node_days(&self, since_day: &str) -> Result<Vec<NodeDay>> {
        self.read(|c| console::node_days(c, since_day))
    }

    fn module_nodes(
        &self,
        module: &str,
        limit: u32,
    ) -> Result<(tenet_rulesets::api::Summary, Vec<ModuleNode>)> {
        self.read(|c| console::module_nodes(c, module, limit))
    }

    fn run_history(&self, node_id: &str, limit: u32) -> Result<Vec<RunModules>> {
        self.read(|c| console::run_history(c, node_id, limit))
    }

    fn audit_of(&self, objects: &[String], limit: u32) -> Result<Vec<AuditEntry>> {
        self.read(|c| console::audit_of(c, objects, limit))
    }

    fn latest_module_logs(&self, node_id: &str, runs: u32) -> Result<Vec<ModuleLogs>> {
        self.read(|c| console::latest_module_logs(c, node_id, runs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture_bundle() -> Bundle {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/opensvc-spd/node-export.json");
        tenet_rulesets::load_path(&path).expect("fixture loads")
    }

    /// The shipped spdc-node bundle (in the repository).
    fn library_bundle() -> Bundle {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rulesets/library/spdc-node");
        tenet_rulesets::load_path(&path).expect("the library loads")
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
    fn a_panicking_write_fails_alone_and_the_writer_goes_on() {
        let (_d, store) = open();
        // The write changes something, then panics: the change must be rolled back.
        let err = store
            .write(|c| -> Result<()> {
                c.execute(
                    "INSERT INTO admin_tokens (name, token_hash, created_at) VALUES ('x', 'h', 'now')",
                    [],
                )?;
                panic!("boom in a write");
            })
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("a write panicked and was rolled back: boom in a write"),
            "{err}"
        );
        assert_eq!(store.admin_token("h").unwrap(), None);
        // The writer thread is alive: writes before, during and after a panic in the same
        // group all commit.
        let store = std::sync::Arc::new(store);
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let s = store.clone();
                std::thread::spawn(move || {
                    if i % 4 == 0 {
                        s.write(|_| -> Result<()> { panic!("again") }).unwrap_err();
                    } else {
                        s.create_admin_token(&format!("t{i}"), &format!("h{i}"))
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        for i in (0..16).filter(|i| i % 4 != 0) {
            assert_eq!(
                store.admin_token(&format!("h{i}")).unwrap(),
                Some(format!("t{i}"))
            );
        }
        store.register_node("n1", "node1", "h", "test").unwrap();
        assert!(store.node_auth("n1").unwrap().is_some());
    }

    #[test]
    fn the_database_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        // A missing directory is created 0700, the files 0600, whatever the umask.
        let path = dir.path().join("data/collector/c.db");
        let store = SqliteStore::open(&path).unwrap();
        store.register_node("n1", "node1", "h", "test").unwrap();
        assert_eq!(mode(&dir.path().join("data")), 0o700);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        for p in [path.clone(), sibling(&path, "-wal"), sibling(&path, "-shm")] {
            assert!(p.exists(), "{}", p.display());
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
        drop(store);
        // A file left readable by an older version is restricted; its directory, existing,
        // is left alone.
        for p in [path.clone(), sibling(&path, "-wal"), sibling(&path, "-shm")] {
            if p.exists() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let other = dir.path().join("other.db");
        std::fs::write(&other, b"").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = SqliteStore::open(&other).unwrap();
        store.register_node("n1", "node1", "h", "test").unwrap();
        assert_eq!(mode(&other), 0o600);
        assert_eq!(mode(dir.path()), 0o755);
        let _again = SqliteStore::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_node_detaches_only_what_it_attached_and_an_admin_takes_over() {
        let (_d, store) = open();
        import(&store, library_bundle());
        store.register_node("n1", "node1", "h", "test").unwrap();
        let t = Target::Node("n1".into());
        store
            .attach(&t, AttachKind::Moduleset, "spdc.node", "admin:ops")
            .unwrap();
        store
            .attach(&t, AttachKind::Moduleset, "spdc.kernel", "node:node1")
            .unwrap();
        // A node re-attaching the admin's changes nothing; detaching it is refused.
        assert!(
            !store
                .attach(&t, AttachKind::Moduleset, "spdc.node", "node:node1")
                .unwrap()
        );
        let err = store
            .detach_own("n1", AttachKind::Moduleset, "spdc.node", "node:node1")
            .unwrap_err();
        assert!(matches!(err, Error::Forbidden(_)), "{err}");
        assert!(err.to_string().contains("attached by admin:ops"), "{err}");
        let by: std::collections::BTreeMap<String, Option<String>> = store
            .attachments(&t)
            .unwrap()
            .detail
            .into_iter()
            .map(|a| (a.name, a.attached_by))
            .collect();
        assert_eq!(by["spdc.node"].as_deref(), Some("admin:ops"));
        assert_eq!(by["spdc.kernel"].as_deref(), Some("node:node1"));
        // Its own attachment the node may detach; not attached: no change.
        assert!(
            store
                .detach_own("n1", AttachKind::Moduleset, "spdc.kernel", "node:node1")
                .unwrap()
        );
        assert!(
            !store
                .detach_own("n1", AttachKind::Moduleset, "spdc.kernel", "node:node1")
                .unwrap()
        );
        // An admin attaching what the node attached takes it over.
        store
            .attach(&t, AttachKind::Moduleset, "spdc.kernel", "node:node1")
            .unwrap();
        store
            .attach(&t, AttachKind::Moduleset, "spdc.kernel", "admin:ops")
            .unwrap();
        assert!(
            store
                .detach_own("n1", AttachKind::Moduleset, "spdc.kernel", "node:node1")
                .is_err()
        );
        // The admin detaches anything.
        assert!(
            store
                .detach(&t, AttachKind::Moduleset, "spdc.node", "admin:ops")
                .unwrap()
        );
    }

    #[test]
    fn migration_6_grants_nothing_from_reported_data_and_keeps_who_attached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        // A store at schema 5, with what nodes reported and attached.
        {
            let mut conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
            )
            .unwrap();
            for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v <= 5) {
                let tx = conn.transaction().unwrap();
                tx.execute_batch(sql).unwrap();
                tx.execute("INSERT INTO schema_migrations VALUES (?1, 'then')", [v])
                    .unwrap();
                tx.commit().unwrap();
            }
            conn.execute_batch(
                "INSERT INTO nodes (id, name, secret_hash, created_at, facts) VALUES
                   ('n1', 'node1', 'h', 'then', '{\"node\": {\"team_responsible\": \"SecretTeam\"}}');
                 INSERT INTO services (id, name, created_at) VALUES (7, 'secretsvc', 'then');
                 INSERT INTO node_services VALUES ('n1', 7);
                 INSERT INTO modulesets (id, name) VALUES (1, 'ms-admin'), (2, 'ms-node'), (3, 'ms-unknown');
                 INSERT INTO node_modulesets VALUES ('n1', 1, 'then'), ('n1', 2, 'then'), ('n1', 3, 'then');
                 INSERT INTO audit_log (at, actor, action, object, detail) VALUES
                   ('then', 'node:node1', 'attach', 'node n1', 'moduleset ms-admin'),
                   ('then', 'admin:ops', 'attach', 'node n1', 'moduleset ms-admin'),
                   ('then', 'node:node1', 'attach', 'node n1', 'moduleset ms-node');",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.ready().unwrap(), schema_version());
        assert_eq!(
            store.node_attributes("n1").unwrap(),
            NodeAttributes::default()
        );
        assert!(!store.node_hosts_service("n1", "secretsvc").unwrap());
        assert_eq!(store.reported_services("n1").unwrap(), ["secretsvc"]);
        let by: Vec<Option<String>> = store
            .attachments(&Target::Node("n1".into()))
            .unwrap()
            .detail
            .into_iter()
            .map(|a| a.attached_by)
            .collect();
        assert_eq!(
            by,
            [
                Some("admin:ops".to_string()),
                Some("node:node1".to_string()),
                None
            ]
        );
        // Unknown counts as an admin's: the node cannot detach it.
        assert!(
            store
                .detach_own("n1", AttachKind::Moduleset, "ms-unknown", "node:node1")
                .is_err()
        );
        assert!(
            store
                .detach_own("n1", AttachKind::Moduleset, "ms-node", "node:node1")
                .unwrap()
        );
        // Assigned attributes are stored, audited, and replace the previous ones.
        let attrs = NodeAttributes {
            team_responsible: Some("SecretTeam".into()),
            services: vec!["secretsvc".into(), "other".into()],
        };
        store
            .set_node_attributes("n1", &attrs, "admin:ops")
            .unwrap();
        assert!(store.node_hosts_service("n1", "secretsvc").unwrap());
        let got = store.node_attributes("n1").unwrap();
        assert_eq!(got.team_responsible.as_deref(), Some("SecretTeam"));
        assert_eq!(got.services, ["other", "secretsvc"]);
        store
            .set_node_attributes("n1", &NodeAttributes::default(), "admin:ops")
            .unwrap();
        assert!(!store.node_hosts_service("n1", "secretsvc").unwrap());
        let audit = store.audit_log(10).unwrap();
        assert_eq!(audit[0].action, "node.attributes");
        assert_eq!(audit[1].action, "node.attributes");
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

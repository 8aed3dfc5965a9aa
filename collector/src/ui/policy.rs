//! Policy pages: the index of modulesets and rulesets (`/ui/policy`), a module across the
//! fleet (`/ui/modules/{module}`: its nodes nok, its rules, the audit of their edits), a
//! ruleset (`/ui/rulesets/{name}`), and the audit log (`/ui/audit`). Values are shown with
//! secrets masked ([`super::mask`]).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use tenet_rulesets::{Bundle, FilterTest, Ruleset, VarValue, Variable};

use super::layout::{self, module_link, node_link, or_dash, ruleset_link};
use super::session::Session;
use super::{chart, mask};
use crate::api::AppState;
use crate::store::{AuditEntry, DailyCompliance, ModuleNode};

/// Nodes listed on a module's page.
const MODULE_NODES: u32 = 200;
/// Audit entries shown.
const AUDIT_SHOWN: u32 = 100;

async fn bundle(state: &AppState) -> Result<Arc<Bundle>, Response> {
    let policies = state.policies.clone();
    match tokio::task::spawn_blocking(move || policies.bundle()).await {
        Ok(Ok((_, b))) => Ok(b),
        Ok(Err(e)) => Err(layout::api_error(e.into())),
        Err(e) => Err(layout::internal(e)),
    }
}

/// `GET /ui/policy`.
pub async fn index(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let b = match bundle(&state).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let body = html! {
        section.panel aria-labelledby="ms-h" {
            h2 #ms-h { "Modulesets (" (b.modulesets.len()) ")" }
            table #modulesets {
                thead { tr { th scope="col" { "Moduleset" } th scope="col" { "Modules" } th scope="col" { "Nested" } th scope="col" { "Rulesets" } } }
                tbody {
                    @for ms in b.modulesets.values() {
                        tr {
                            td { (ms.name) }
                            td { @for (i, m) in ms.modules.iter().enumerate() { @if i > 0 { ", " } (module_link(&m.name)) @if m.autofix { " (autofix)" } } }
                            td { (ms.children.join(", ")) }
                            td { @for (i, r) in ms.rulesets.iter().enumerate() { @if i > 0 { ", " } (ruleset_link(r)) } }
                        }
                    }
                }
            }
        }
        section.panel aria-labelledby="rs-h" {
            h2 #rs-h { "Rulesets (" (b.rulesets.len()) ")" }
            table #rulesets {
                thead { tr { th scope="col" { "Ruleset" } th scope="col" { "Kind" } th scope="col" { "Filterset" } th scope="col" { "Variables" } } }
                tbody {
                    @for rs in b.rulesets.values() {
                        tr {
                            td { (ruleset_link(&rs.name)) }
                            td { (kind(rs)) }
                            td { (or_dash(rs.filterset.as_deref())) }
                            td.num { (rs.variables.len()) }
                        }
                    }
                }
            }
        }
    };
    layout::page(&session, "Policy", "Policy", body)
}

fn kind(rs: &Ruleset) -> String {
    let k = serde_json::to_value(rs.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    if rs.public { format!("{k}, public") } else { k }
}

/// A variable's value as shown: JSON pretty-printed, secrets masked.
fn value(v: &Variable) -> String {
    if mask::is_secret_name(&v.name) {
        return mask::MASK.to_string();
    }
    match &v.value {
        VarValue::Json(j) => serde_json::to_string_pretty(&mask::json(j)).unwrap_or_default(),
        VarValue::Text(t) => mask::text(t),
    }
}

fn variables(rs: &Ruleset) -> Markup {
    html! {
        @if rs.variables.is_empty() {
            p { "No variable." }
        } @else {
            table.variables {
                thead { tr { th scope="col" { "Variable" } th scope="col" { "Class" } th scope="col" { "Value" } th scope="col" { "Changed" } } }
                tbody {
                    @for v in &rs.variables {
                        tr data-variable=(v.name) {
                            td.mono { (v.name) }
                            td { (v.class) }
                            td { pre.value { (value(v)) } }
                            td { (or_dash(v.updated.as_deref())) " " (or_dash(v.author.as_deref())) }
                        }
                    }
                }
            }
        }
    }
}

fn audit_table(entries: &[AuditEntry]) -> Markup {
    html! {
        @if entries.is_empty() {
            p { "No recorded edit." }
        } @else {
            table.audit {
                thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "What" } th scope="col" { "Object" } th scope="col" { "Detail" } } }
                tbody {
                    @for e in entries {
                        tr { td { (e.at) } td { (e.actor) } td { (e.action) } td { (e.object) } td { (mask::text(&e.detail)) } }
                    }
                }
            }
        }
    }
}

/// `GET /ui/modules/{module}`.
pub async fn module_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(module): Path<String>,
) -> Response {
    let b = match bundle(&state).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let modulesets: Vec<&str> = b
        .modulesets
        .values()
        .filter(|ms| ms.modules.iter().any(|m| m.name == module))
        .map(|ms| ms.name.as_str())
        .collect();
    // The module's rules: the ruleset named like it (an auto-module's) and its nested ones,
    // then those bound through its modulesets.
    let mut rulesets: Vec<&Ruleset> = Vec::new();
    let mut stack: Vec<&str> = vec![module.as_str()];
    while let Some(name) = stack.pop() {
        if let Some(rs) = b.rulesets.get(name)
            && !rulesets.iter().any(|r| r.name == rs.name)
        {
            rulesets.push(rs);
            stack.extend(rs.children.iter().rev().map(String::as_str));
        }
    }
    let bound: Vec<&str> = modulesets
        .iter()
        .filter_map(|ms| b.modulesets.get(*ms))
        .flat_map(|ms| ms.rulesets.iter().map(String::as_str))
        .filter(|r| !rulesets.iter().any(|x| x.name == *r))
        .collect();
    let mut objects: Vec<String> = rulesets
        .iter()
        .map(|r| format!("ruleset {}", r.name))
        .collect();
    objects.extend(modulesets.iter().map(|m| format!("moduleset {m}")));
    let st = state.clone();
    let m = module.clone();
    let days = chart::last_days(chart::TREND_DAYS);
    let since = days.first().cloned().unwrap_or_default();
    type Read = (
        tenet_rulesets::api::Summary,
        Vec<ModuleNode>,
        Vec<DailyCompliance>,
        Vec<AuditEntry>,
    );
    let read = tokio::task::spawn_blocking(move || -> crate::Result<Read> {
        let (counts, nodes) = st.store.module_nodes(&m, MODULE_NODES)?;
        let trend = st.store.compliance_daily(&since, Some(&m))?;
        let audit = st.store.audit_of(&objects, AUDIT_SHOWN)?;
        Ok((counts, nodes, trend, audit))
    })
    .await;
    let (counts, nodes, trend, audit) = match read {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return layout::api_error(e.into()),
        Err(e) => return layout::internal(e),
    };
    if modulesets.is_empty() && nodes.is_empty() && rulesets.is_empty() {
        return layout::error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "No moduleset lists this module and no node reported it.",
        );
    }
    let nok: Vec<&ModuleNode> = nodes
        .iter()
        .filter(|n| n.status.status == tenet_rulesets::api::Status::Nok)
        .collect();
    let body = html! {
        section.panel aria-labelledby="mcount-h" {
            h2 #mcount-h { "Across the fleet" }
            p #module-counts { (counts.ok) " ok, " (counts.nok) " nok, " (counts.na) " n/a" }
            p { "In modulesets: " (if modulesets.is_empty() { "none".to_string() } else { modulesets.join(", ") }) }
            (chart::trend(&days, &trend, &format!("Share of nodes with {module} ok or n/a per day")))
        }
        section.panel aria-labelledby="mnok-h" {
            h2 #mnok-h { "Nodes nok on it (" (nok.len()) ")" }
            @if nok.is_empty() { p { "None." } } @else {
                table #nok-nodes {
                    thead { tr { th scope="col" { "Node" } th scope="col" { "Service" } th scope="col" { "Since" } th scope="col" { "Rules nok" } } }
                    tbody {
                        @for n in &nok {
                            tr {
                                td { (node_link(&n.node)) }
                                td { (or_dash(n.service.as_deref())) }
                                td { (n.status.date) }
                                td {
                                    @for r in n.status.rules.iter().flatten().filter(|r| r.status == tenet_rulesets::api::Status::Nok) {
                                        div { span.mono { (r.variable) } ": " (mask::text(&r.message)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.panel aria-labelledby="rules-h" {
            h2 #rules-h { "Rules" }
            @if rulesets.is_empty() { p { "No ruleset is named like this module (a script module, or rules bound through its modulesets below)." } }
            @for rs in &rulesets {
                h3 { "Ruleset " (ruleset_link(&rs.name)) " · " (kind(rs)) }
                (variables(rs))
            }
            @if !bound.is_empty() {
                p { "Also bound through its modulesets: "
                    @for (i, r) in bound.iter().enumerate() { @if i > 0 { ", " } (ruleset_link(r)) } }
            }
        }
        section.panel aria-labelledby="maudit-h" {
            h2 #maudit-h { "Edits" }
            (audit_table(&audit))
        }
    };
    layout::page(&session, "Policy", &format!("Module {module}"), body)
}

/// `GET /ui/rulesets/{name}`.
pub async fn ruleset_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Response {
    let b = match bundle(&state).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(rs) = b.rulesets.get(&name) else {
        return layout::error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "No ruleset of that name.",
        );
    };
    let store = state.store.clone();
    let objects = vec![format!("ruleset {name}")];
    let audit =
        match tokio::task::spawn_blocking(move || store.audit_of(&objects, AUDIT_SHOWN)).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return layout::api_error(e.into()),
            Err(e) => return layout::internal(e),
        };
    let filterset = rs.filterset.as_deref().and_then(|f| b.filtersets.get(f));
    let used_by: Vec<&str> = b
        .modulesets
        .values()
        .filter(|ms| ms.rulesets.contains(&name))
        .map(|ms| ms.name.as_str())
        .collect();
    let body = html! {
        section.panel aria-labelledby="rsabout-h" {
            h2 #rsabout-h { "Ruleset" }
            dl.facts {
                dt { "Kind" } dd { (kind(rs)) }
                dt { "Filterset" } dd {
                    (or_dash(rs.filterset.as_deref()))
                    @if let Some(fs) = filterset {
                        ul.filters {
                            @for f in &fs.filters {
                                li.mono {
                                    (format!("{:?}", f.logical_op)) " "
                                    @match &f.test {
                                        FilterTest::Filter(x) => { (x.table) "." (x.field) " " (format!("{:?}", x.op)) " " (x.value) }
                                        FilterTest::Filterset(n) => { "filterset " (n) }
                                    }
                                }
                            }
                        }
                    }
                }
                dt { "Nested" } dd { @for (i, c) in rs.children.iter().enumerate() { @if i > 0 { ", " } (ruleset_link(c)) } @if rs.children.is_empty() { "—" } }
                dt { "Bound by modulesets" } dd { (if used_by.is_empty() { "—".to_string() } else { used_by.join(", ") }) }
                dt { "Published to" } dd { (if rs.meta.publications.is_empty() { "—".to_string() } else { rs.meta.publications.join(", ") }) }
                dt { "Responsible" } dd { (if rs.meta.responsibles.is_empty() { "—".to_string() } else { rs.meta.responsibles.join(", ") }) }
            }
        }
        section.panel aria-labelledby="vars-h" {
            h2 #vars-h { "Variables (" (rs.variables.len()) ")" }
            (variables(rs))
        }
        section.panel aria-labelledby="rsaudit-h" {
            h2 #rsaudit-h { "Edits" }
            (audit_table(&audit))
        }
    };
    layout::page(&session, "Policy", &format!("Ruleset {name}"), body)
}

/// `GET /ui/audit`: the latest entries of the audit log.
pub async fn audit_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let store = state.store.clone();
    let entries = match tokio::task::spawn_blocking(move || store.audit_log(AUDIT_SHOWN * 2)).await
    {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return layout::api_error(e.into()),
        Err(e) => return layout::internal(e),
    };
    let body = html! {
        p.help { "The latest " (entries.len()) " entries, newest first." }
        (audit_table(&entries))
    };
    layout::page(&session, "Audit", "Audit log", body)
}

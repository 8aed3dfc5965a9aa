//! A node's page (`GET /ui/nodes/{node}`): facts, what applies to it and why, the latest run
//! of each module with each rule's status, message and diff, its run history, its actions and
//! its release statuses.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde_json::Value;
use tenet_rulesets::NodeFacts;
use tenet_rulesets::action::Action;
use tenet_rulesets::api::{ModuleStatus, NodeAttributes, Status};

use super::layout::{self, badge, csrf, enc, module_link, or_dash, ruleset_link};
use super::session::Session;
use super::{chart, mask};
use crate::api::AppState;
use crate::store::{Attachments, ModuleLogs, NodeState, ReleaseRow, RunModules, Target};

/// Runs shown in the history.
const HISTORY_RUNS: u32 = 40;
/// Actions shown.
const ACTIONS_SHOWN: u32 = 20;
/// Runs searched for each module's latest sub-actions and logs.
const LOG_RUNS: u32 = 20;

struct NodeView {
    id: String,
    name: String,
    facts: NodeFacts,
    attachments: Attachments,
    attributes: NodeAttributes,
    reported: Vec<String>,
    modules: Vec<ModuleStatus>,
    /// The sub-actions of each module's latest result.
    logs: Vec<ModuleLogs>,
    last_run: Option<String>,
    history: Vec<RunModules>,
    actions: Vec<Action>,
    releases: Vec<ReleaseRow>,
    /// The resolved policy (JSON), or why it could not be resolved.
    policy: Result<Value, String>,
}

/// `GET /ui/nodes/{node}`.
pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(node): Path<String>,
) -> Response {
    let st = state.clone();
    let read = tokio::task::spawn_blocking(move || -> crate::Result<Option<NodeView>> {
        let Some(auth) = st.store.node_auth(&node)? else {
            return Ok(None);
        };
        let id = auth.id.clone();
        let (modules, last_run) = st.store.node_status(&id)?;
        let policy = st
            .policies
            .resolve(&auth, None, None)
            .map_err(|e| e.to_string())
            .and_then(|served| serde_json::from_slice(&served.to_vec()).map_err(|e| e.to_string()));
        Ok(Some(NodeView {
            name: auth.name.clone(),
            facts: st.store.node_facts(&id)?,
            attachments: st.store.attachments(&Target::Node(id.clone()))?,
            attributes: st.store.node_attributes(&id)?,
            reported: st.store.reported_services(&id)?,
            modules,
            logs: st.store.latest_module_logs(&id, LOG_RUNS)?,
            last_run,
            history: st.store.run_history(&id, HISTORY_RUNS)?,
            actions: st.store.list_actions(Some(&id), &[], ACTIONS_SHOWN)?,
            releases: st.store.release_statuses(Some(&id), None)?,
            policy,
            id,
        }))
    })
    .await;
    let view = match read {
        Ok(Ok(Some(v))) => v,
        Ok(Ok(None)) => {
            return layout::error_page(
                StatusCode::NOT_FOUND,
                "Not found",
                "No node of that name or id.",
            );
        }
        Ok(Err(e)) => return layout::api_error(e.into()),
        Err(e) => return layout::internal(e),
    };
    let counts = summary(&view.modules);
    let body = html! {
        section.panel aria-labelledby="about-h" {
            h2 #about-h { "Node " (badge(NodeState::of(&counts).as_str())) }
            dl.facts {
                dt { "Id" } dd.mono { (view.id) }
                dt { "Modules" } dd #node-counts { (counts.ok) " ok, " (counts.nok) " nok, " (counts.na) " n/a" }
                dt { "Last run" } dd { (or_dash(view.last_run.as_deref())) }
                dt { "Team (assigned)" } dd { (or_dash(view.attributes.team_responsible.as_deref())) }
                dt { "Services (assigned)" } dd { (join_or_dash(&view.attributes.services)) }
                dt { "Services (reported)" } dd { (join_or_dash(&view.reported)) }
            }
        }
        (modules_panel(&view.modules, &view.logs))
        (applies_panel(&view))
        section.panel aria-labelledby="history-h" {
            h2 #history-h { "Run history" }
            @if view.history.is_empty() {
                p { "No run recorded." }
            } @else {
                (chart::timeline(&view.history))
                details {
                    summary { "The runs" }
                    table.compact #runs {
                        thead { tr { th scope="col" { "Received" } th scope="col" { "Action" } th scope="col" { "Service" } th scope="col" { "ok" } th scope="col" { "nok" } th scope="col" { "n/a" } } }
                        tbody {
                            @for r in &view.history {
                                tr {
                                    td { (r.run.received_at) } td { (r.run.action.as_str()) }
                                    td { (or_dash(r.run.service.as_deref())) }
                                    td.num { (r.run.summary.ok) } td.num { (r.run.summary.nok) } td.num { (r.run.summary.na) }
                                }
                            }
                        }
                    }
                }
            }
        }
        (facts_panel(&view.facts))
        (actions_panel(&session, &view.name, &view.actions))
        (releases_panel(&view.releases))
    };
    layout::page(&session, "Fleet", &format!("Node {}", view.name), body)
}

fn summary(modules: &[ModuleStatus]) -> tenet_rulesets::api::Summary {
    let mut s = tenet_rulesets::api::Summary::default();
    for m in modules {
        s.add(m.status, 1);
    }
    s
}

fn join_or_dash(v: &[String]) -> String {
    if v.is_empty() {
        "—".into()
    } else {
        v.join(", ")
    }
}

/// The lines of a module log about one variable (`VAR: ...`, or `ERR: VAR: ...` for the
/// error stream, as the engine renders logs), without the prefix: a rule's messages and its
/// diff.
pub fn rule_lines<'a>(log: &'a str, variable: &str) -> Vec<&'a str> {
    let prefix = format!("{variable}: ");
    log.lines()
        .filter_map(|l| {
            l.strip_prefix("ERR: ")
                .unwrap_or(l)
                .strip_prefix(prefix.as_str())
        })
        .collect()
}

/// Lines of text, unified-diff lines coloured.
fn diff_block(lines: &[&str]) -> Markup {
    html! {
        pre.diff {
            @for l in lines {
                @let class = if l.starts_with("+++") || l.starts_with("---") || l.starts_with("@@") { "hunk" }
                    else if l.starts_with('+') { "add" } else if l.starts_with('-') { "del" } else { "" };
                span class=(class) { (mask::text(l)) "\n" }
            }
        }
    }
}

fn modules_panel(modules: &[ModuleStatus], logs: &[ModuleLogs]) -> Markup {
    let no_actions: Vec<(String, i32, String)> = Vec::new();
    html! {
        section.panel aria-labelledby="modules-h" {
            h2 #modules-h { "Latest run of each module" }
            @if modules.is_empty() {
                p { "No result yet." }
            }
            @for m in modules {
                @let anchor = format!("module-{}", enc(&m.module));
                @let service = m.service.as_deref().unwrap_or("");
                @let actions = logs.iter().find(|l| l.module == m.module && l.service == service)
                    .map(|l| &l.actions).unwrap_or(&no_actions);
                details.module id=(anchor) open[m.status == Status::Nok] {
                    summary {
                        (badge(m.status.as_str())) " " strong { (m.module) }
                        @if let Some(s) = &m.service { " (service " (s) ")" }
                        " · " (m.action.as_str()) " · " (m.date) " · moduleset " (m.moduleset)
                    }
                    p { (module_link(&m.module)) " (the module across the fleet)" }
                    @if let Some(rules) = &m.rules {
                        table.rules {
                            thead { tr { th scope="col" { "Rule (variable)" } th scope="col" { "Class" } th scope="col" { "Status" } th scope="col" { "Message and diff" } } }
                            tbody {
                                @for r in rules {
                                    // The rule's lines from the first sub-action that has any
                                    // (the check's, where a diff is).
                                    @let lines = actions.iter().map(|(_, _, log)| rule_lines(log, &r.variable))
                                        .find(|l| !l.is_empty()).unwrap_or_else(|| rule_lines(&m.log, &r.variable));
                                    tr.rule data-variable=(r.variable) {
                                        td.mono { (r.variable) } td { (r.class) } td { (badge(r.status.as_str())) }
                                        td {
                                            p.message { (mask::text(&r.message)) }
                                            @if lines.len() > 1 || (lines.len() == 1 && lines[0] != r.message) {
                                                (diff_block(&lines))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if actions.is_empty() {
                        details {
                            summary { "Log" }
                            pre.log { (mask::text(&m.log)) }
                        }
                    }
                    @for (action, code, log) in actions {
                        details {
                            summary { "Log of " (action) " (exit code " (code) ")" }
                            pre.log { (mask::text(log)) }
                        }
                    }
                }
            }
        }
    }
}

fn applies_panel(view: &NodeView) -> Markup {
    let attached = |kind: crate::store::AttachKind, name: &str| {
        view.attachments
            .detail
            .iter()
            .find(|a| a.kind == kind && a.name == name)
    };
    html! {
        section.panel aria-labelledby="applies-h" {
            h2 #applies-h { "What applies, and why" }
            @match &view.policy {
                Err(e) => { p.error { "The policy does not resolve: " (e) } }
                Ok(p) => {
                    h3 { "Modulesets" }
                    table #modulesets {
                        thead { tr { th scope="col" { "Moduleset" } th scope="col" { "Why" } th scope="col" { "Modules" } } }
                        tbody {
                            @for ms in p["modulesets"].as_array().into_iter().flatten() {
                                @let name = ms["name"].as_str().unwrap_or("");
                                tr {
                                    td { (name) }
                                    td {
                                        @match (ms["parent"].as_str(), attached(crate::store::AttachKind::Moduleset, name)) {
                                            (Some(parent), _) => { "via moduleset " (parent) }
                                            (None, Some(a)) => { "attached by " (a.attached_by.as_deref().unwrap_or("an admin")) " at " (a.attached_at) }
                                            (None, None) => { "attached" }
                                        }
                                    }
                                    td {
                                        @for (i, m) in ms["modules"].as_array().into_iter().flatten().enumerate() {
                                            @if i > 0 { ", " }
                                            (module_link(m["name"].as_str().unwrap_or("")))
                                        }
                                    }
                                }
                            }
                        }
                    }
                    h3 { "Rulesets" }
                    table #rulesets {
                        thead { tr { th scope="col" { "Ruleset" } th scope="col" { "Why" } th scope="col" { "Variables" } } }
                        tbody {
                            @for rs in p["rulesets"].as_array().into_iter().flatten() {
                                @let name = rs["name"].as_str().unwrap_or("");
                                tr {
                                    td { (ruleset_link(name)) }
                                    td {
                                        (why(rs["reason"].as_str().unwrap_or("")))
                                        @if let Some(ms) = rs["moduleset"].as_str() { " (moduleset " (ms) ")" }
                                        @if let Some(a) = attached(crate::store::AttachKind::Ruleset, name) {
                                            ", by " (a.attached_by.as_deref().unwrap_or("an admin"))
                                        }
                                    }
                                    td.num { (rs["variables"].as_array().map(Vec::len).unwrap_or(0)) }
                                }
                            }
                        }
                    }
                    @for w in p["warnings"].as_array().into_iter().flatten() {
                        p.help { "Warning: " (w.as_str().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// OpenSVC's reason words, said plainly.
fn why(reason: &str) -> String {
    match reason {
        tenet_rulesets::policy::REASON_EXPLICIT => "attached".into(),
        tenet_rulesets::policy::REASON_EXPLICIT_VIA_MODULESET => {
            "attached via its moduleset".into()
        }
        r if r.ends_with(tenet_rulesets::policy::REASON_CONTEXTUAL_VIA_MODULESET) => format!(
            "filterset {} matches (shown via its moduleset)",
            r.trim_end_matches(tenet_rulesets::policy::REASON_CONTEXTUAL_VIA_MODULESET)
                .trim()
        ),
        r => format!("filterset {r} matches the facts"),
    }
}

fn facts_panel(facts: &NodeFacts) -> Markup {
    html! {
        section.panel aria-labelledby="facts-h" {
            h2 #facts-h { "Facts" }
            @if facts.node.is_empty() {
                p { "No facts pushed yet." }
            } @else {
                dl.facts #facts {
                    @for (k, v) in &facts.node {
                        dt { (k) }
                        dd { @if mask::is_secret_name(k) { (mask::MASK) } @else { (v) } }
                    }
                }
            }
            @if !facts.packages.is_empty() {
                details {
                    summary { (facts.packages.len()) " packages" }
                    table.compact {
                        thead { tr { th scope="col" { "Package" } th scope="col" { "Version" } th scope="col" { "Arch" } } }
                        tbody { @for p in &facts.packages { tr { td { (p.name) } td { (p.version) } td { (p.arch) } } } }
                    }
                }
            }
        }
    }
}

/// A table of actions with live statuses (shared by the actions page).
pub fn actions_table(session: &Session, actions: &[Action], with_node: bool) -> Markup {
    html! {
        table.actions {
            thead {
                tr {
                    th scope="col" { "Id" }
                    @if with_node { th scope="col" { "Node" } }
                    th scope="col" { "Command" } th scope="col" { "Status" } th scope="col" { "Exit" }
                    th scope="col" { "Queued" } th scope="col" { "" }
                }
            }
            tbody {
                @for a in actions {
                    tr {
                        td { a href={ "/ui/actions/" (a.id) } { (a.id) } }
                        @if with_node { td { (layout::node_link(&a.node)) } }
                        td.mono { (a.command) }
                        td data-action-id=(a.id) data-status=(a.status) {
                            (action_badge(a)) " " span.status-label { (status_label(&a.status)) }
                        }
                        td.num id={ "ret-" (a.id) } { @if let Some(r) = a.ret { (r) } }
                        td { (a.queued_at) }
                        td {
                            @if matches!(a.status.as_str(), "W" | "N" | "S") {
                                form id={ "cancel-" (a.id) } method="post" action={ "/ui/actions/" (a.id) "/cancel" } {
                                    (csrf(session))
                                    button.secondary type="submit" aria-label={ "Cancel action " (a.id) } { "Cancel" }
                                }
                            }
                        }
                    }
                }
            }
        }
        p #live-note hidden { "Statuses update by themselves." }
    }
}

/// An action's status badge: T is ok or nok by its exit code.
pub fn action_badge(a: &Action) -> Markup {
    let class = match (a.status.as_str(), a.ret) {
        ("T", Some(0)) => "badge ok",
        ("T", _) => "badge nok",
        ("C", _) => "badge na",
        _ => "badge busy",
    };
    html! { span class=(class) { (a.status) } }
}

/// What a status letter means.
pub fn status_label(status: &str) -> &'static str {
    match status {
        "W" => "queued",
        "N" => "node notified",
        "S" => "sent to the node",
        "R" => "running",
        "T" => "finished",
        "C" => "cancelled",
        _ => "unknown",
    }
}

fn actions_panel(session: &Session, node: &str, actions: &[Action]) -> Markup {
    html! {
        section.panel aria-labelledby="actions-h" {
            h2 #actions-h { "Actions" }
            form.queue method="post" action="/ui/actions" {
                (csrf(session))
                input type="hidden" name="node" value=(node);
                label for="node-command" { "Queue a command on this node " }
                input #node-command type="text" name="command" required value="compliance check"
                    aria-describedby="node-command-help";
                " " button type="submit" { "Queue" }
                p.help #node-command-help { "Allowed: " code { "compliance check|fix|fixable|auto [--moduleset M] [--module M]" } ", " code { "pushasset" } ", " code { "release add URL --version V" } ", " code { "release remove V" } "." }
            }
            @if actions.is_empty() { p { "No action queued for this node." } }
            @else { (actions_table(session, actions, false)) }
        }
    }
}

fn releases_panel(rows: &[ReleaseRow]) -> Markup {
    html! {
        section.panel aria-labelledby="releases-h" {
            h2 #releases-h { "Releases" }
            @if rows.is_empty() { p { "No release status reported." } }
            @else { (super::releases::table(rows, false)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rules_lines_are_found_in_the_module_log() {
        let log = "ERR: a.conf: /etc/a.conf: content differs\na.conf: --- /etc/a.conf\na.conf: +++ /etc/a.conf\na.conf: -old\na.conf: +new\nb: fine";
        assert_eq!(
            rule_lines(log, "a.conf"),
            vec![
                "/etc/a.conf: content differs",
                "--- /etc/a.conf",
                "+++ /etc/a.conf",
                "-old",
                "+new"
            ]
        );
        assert_eq!(rule_lines(log, "b"), vec!["fine"]);
    }
}

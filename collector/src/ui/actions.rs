//! Actions: queue an allow-listed command for one node or every node a filter selects
//! (`POST /ui/actions`), the latest actions with their statuses, followed live by the script
//! (`GET /ui/actions/live?ids=..`, JSON), an action's output (`/ui/actions/{id}`), cancel
//! (`POST /ui/actions/{id}/cancel`). Queueing checks the command with the same allow-list
//! parser as the API (and the agent, again, before it runs anything).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form, Json};
use maud::{Markup, html};
use serde::Deserialize;
use tenet_rulesets::action::{Action, ActionCommand};

use super::layout::{self, csrf, or_dash};
use super::mask;
use super::node::{action_badge, actions_table, status_label};
use super::session::Session;
use crate::api::AppState;

/// Most nodes one queueing may reach.
pub const MAX_TARGETS: usize = 1000;
/// Actions listed.
const LISTED: u32 = 100;
/// Most ids one live poll may ask for.
const MAX_LIVE: usize = 200;

/// Query of the actions page (after queueing: how many).
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    queued: Option<usize>,
}

/// `GET /ui/actions`.
pub async fn page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let queued = query.ok().and_then(|Query(q)| q.queued);
    let store = state.store.clone();
    let actions =
        match tokio::task::spawn_blocking(move || store.list_actions(None, &[], LISTED)).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return layout::api_error(e.into()),
            Err(e) => return layout::internal(e),
        };
    layout::page(
        &session,
        "Actions",
        "Actions",
        body(&session, &actions, queued, None, &QueueForm::default()),
    )
}

fn body(
    session: &Session,
    actions: &[Action],
    queued: Option<usize>,
    problem: Option<&str>,
    form: &QueueForm,
) -> Markup {
    html! {
        @if let Some(n) = queued {
            p.notice #queued role="status" { "Queued for " (n) " node" @if n != 1 { "s" } "." }
        }
        section.panel aria-labelledby="queue-h" {
            h2 #queue-h { "Queue a command" }
            form.queue #queue method="post" action="/ui/actions" {
                (csrf(session))
                @if let Some(p) = problem { p.error #queue-error role="alert" { (p) } }
                div.field {
                    label for="command" { "Command" }
                    div.control {
                        input #command type="text" name="command" required value=(form.command.as_deref().unwrap_or("compliance check"))
                            aria-describedby="command-help";
                        p.help #command-help { "Allowed: " code { "compliance check|fix|fixable|auto [--moduleset M] [--module M] [--service S]" } ", "
                            code { "pushasset" } ", " code { "release add URL --version V [--sha256 HEX] [--force]" } ", " code { "release remove V" } "." }
                    }
                }
                div.field {
                    label for="node" { "Node" }
                    div.control {
                        input #node type="text" name="node" value=(form.node.as_deref().unwrap_or("")) aria-describedby="node-help";
                        p.help #node-help { "One node, by name; or leave empty and give a filter." }
                    }
                }
                div.field {
                    label for="filter" { "Or every node matching" }
                    div.control {
                        input #filter type="text" name="filter" value=(form.filter.as_deref().unwrap_or("")) aria-describedby="filter-help";
                        p.help #filter-help { "The fleet page's filter (" code { "status:nok os_name=Linux" } "); at most " (MAX_TARGETS) " nodes." }
                    }
                }
                div.buttons { button #queue-button type="submit" { "Queue" } }
            }
        }
        section.panel aria-labelledby="list-h" {
            h2 #list-h { "Latest actions" }
            @if actions.is_empty() { p { "No action queued yet." } }
            @else { (actions_table(session, actions, true)) }
            p { a href="/ui/actions" { "Refresh" } }
        }
    }
}

/// The queue form's fields.
#[derive(Debug, Default, Deserialize)]
pub struct QueueForm {
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    filter: Option<String>,
    /// The guard checked it.
    #[serde(default)]
    #[allow(dead_code)]
    csrf: Option<String>,
}

async fn refuse(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    problem: &str,
    form: &QueueForm,
) -> Response {
    let store = state.store.clone();
    let actions = tokio::task::spawn_blocking(move || store.list_actions(None, &[], LISTED))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    layout::page_with_status(
        status,
        session,
        "Actions",
        "Actions",
        body(session, &actions, None, Some(problem), form),
    )
}

/// `POST /ui/actions`: queue for a node, or for every node a filter selects.
pub async fn queue(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    form: Result<Form<QueueForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return layout::error_page(
            StatusCode::BAD_REQUEST,
            "Bad form",
            "The form could not be read.",
        );
    };
    let command = form.command.as_deref().unwrap_or("").trim().to_string();
    let parsed = match ActionCommand::parse(&command) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(
                actor = session.actor(),
                "console: refused command {command:?}: {e}"
            );
            return refuse(
                &state,
                &session,
                StatusCode::BAD_REQUEST,
                &e.to_string(),
                &form,
            )
            .await;
        }
    };
    let node = form
        .node
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let filter = form
        .filter
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let st = state.clone();
    let targets = tokio::task::spawn_blocking(move || -> Result<Vec<(String, String)>, String> {
        match (node, filter) {
            (Some(n), None) => match st.store.node_auth(&n).map_err(|e| e.to_string())? {
                Some(a) => Ok(vec![(a.id, a.name)]),
                None => Err(format!("node {n:?} not found")),
            },
            (None, Some(f)) => {
                let filter = super::parse_filter(&f)?;
                let nodes = st.store.fleet_nodes(&filter).map_err(|e| e.to_string())?;
                if nodes.len() > MAX_TARGETS {
                    return Err(format!(
                        "the filter selects {} nodes, more than {MAX_TARGETS}: narrow it",
                        nodes.len()
                    ));
                }
                Ok(nodes.into_iter().map(|n| (n.node_id, n.name)).collect())
            }
            (Some(_), Some(_)) => Err("give a node or a filter, not both".into()),
            (None, None) => Err("give a node or a filter".into()),
        }
    })
    .await;
    let targets = match targets {
        Ok(Ok(t)) if !t.is_empty() => t,
        Ok(Ok(_)) => {
            return refuse(
                &state,
                &session,
                StatusCode::BAD_REQUEST,
                "the filter selects no node",
                &form,
            )
            .await;
        }
        Ok(Err(p)) => return refuse(&state, &session, StatusCode::BAD_REQUEST, &p, &form).await,
        Err(e) => return layout::internal(e),
    };
    let text = parsed.canonical();
    let store = state.store.clone();
    let actor = session.actor();
    let ids = targets.clone();
    let queued = tokio::task::spawn_blocking(move || -> crate::Result<Vec<Action>> {
        ids.iter()
            .map(|(id, _)| store.queue_action(id, &text, &actor))
            .collect()
    })
    .await;
    let queued = match queued {
        Ok(Ok(q)) => q,
        Ok(Err(e)) => return layout::api_error(e.into()),
        Err(e) => return layout::internal(e),
    };
    for a in &queued {
        tracing::info!(
            action = a.id,
            node = a.node,
            "console: queued {:?}",
            a.command
        );
        state.actions.notify(a.node_id.clone());
    }
    if queued.len() == 1 {
        return Redirect::to(&format!("/ui/actions/{}", queued[0].id)).into_response();
    }
    Redirect::to(&format!("/ui/actions?queued={}", queued.len())).into_response()
}

/// Query of `GET /ui/actions/live`.
#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    ids: String,
}

/// `GET /ui/actions/live?ids=1,2`: the statuses of these actions (JSON, for the script).
pub async fn live(
    State(state): State<AppState>,
    query: Result<Query<LiveQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "ids: a comma-separated list of action ids"})),
        )
            .into_response();
    };
    let ids: Result<Vec<i64>, _> = q
        .ids
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect();
    let Ok(ids) = ids.map(|mut v: Vec<i64>| {
        v.truncate(MAX_LIVE);
        v
    }) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "ids: a comma-separated list of action ids"})),
        )
            .into_response();
    };
    let store = state.store.clone();
    let found = tokio::task::spawn_blocking(move || -> crate::Result<Vec<Action>> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(a) = store.action(id)? {
                out.push(a);
            }
        }
        Ok(out)
    })
    .await;
    match found {
        Ok(Ok(list)) => Json(
            list.iter()
                .map(|a| serde_json::json!({"id": a.id, "status": a.status, "ret": a.ret, "label": status_label(&a.status)}))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Ok(Err(e)) => crate::api::ApiError::from(e).into_response(),
        Err(e) => crate::api::ApiError::internal(e).into_response(),
    }
}

fn parse_id(id: &str) -> Option<i64> {
    id.parse().ok()
}

/// `GET /ui/actions/{id}`: an action and its output.
pub async fn show(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return layout::error_page(
            StatusCode::BAD_REQUEST,
            "Bad id",
            "An action id is a number.",
        );
    };
    let store = state.store.clone();
    let a = match tokio::task::spawn_blocking(move || store.action(id)).await {
        Ok(Ok(Some(a))) => a,
        Ok(Ok(None)) => {
            return layout::error_page(
                StatusCode::NOT_FOUND,
                "Not found",
                "No action with this id.",
            );
        }
        Ok(Err(e)) => return layout::api_error(e.into()),
        Err(e) => return layout::internal(e),
    };
    let body = html! {
        section.panel aria-labelledby="action-h" {
            h2 #action-h { "Status" }
            dl.facts {
                dt { "Node" } dd { (layout::node_link(&a.node)) }
                dt { "Command" } dd.mono #action-command { (a.command) }
                dt { "Status" }
                dd #action-status data-action-id=(a.id) data-status=(a.status) data-reload-when-done {
                    (action_badge(&a)) " " span.status-label { (status_label(&a.status)) }
                }
                dt { "Exit code" } dd id={ "ret-" (a.id) } { @if let Some(r) = a.ret { (r) } @else { "—" } }
                dt { "Queued" } dd { (a.queued_at) " by " (a.queued_by) }
                dt { "Notified" } dd { (or_dash(a.notified_at.as_deref())) @if let Some(e) = &a.notify_error { " (" (e) ")" } }
                dt { "Sent" } dd { (or_dash(a.sent_at.as_deref())) @if a.sent_count > 1 { " (" (a.sent_count) " times)" } }
                dt { "Acknowledged" } dd { (or_dash(a.acked_at.as_deref())) }
                dt { "Done" } dd { (or_dash(a.done_at.as_deref())) }
            }
            p #live-note hidden { "This page follows the action and shows its output when it finishes." }
            @if matches!(a.status.as_str(), "W" | "N" | "S") {
                form id={ "cancel-" (a.id) } method="post" action={ "/ui/actions/" (a.id) "/cancel" } {
                    (csrf(&session))
                    button.danger type="submit" { "Cancel this action" }
                }
            }
        }
        section.panel aria-labelledby="out-h" {
            h2 #out-h { "Output" }
            @match (&a.stdout, &a.stderr) {
                (None, None) => { p { "None yet: the node reports its output when the command ends." } }
                (out, err) => {
                    h3 { "Standard output" }
                    pre #stdout { (mask::text(out.as_deref().unwrap_or(""))) }
                    h3 { "Standard error" }
                    pre #stderr { (mask::text(err.as_deref().unwrap_or(""))) }
                }
            }
        }
    };
    layout::page(&session, "Actions", &format!("Action {}", a.id), body)
}

/// `POST /ui/actions/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return layout::error_page(
            StatusCode::BAD_REQUEST,
            "Bad id",
            "An action id is a number.",
        );
    };
    let store = state.store.clone();
    let actor = session.actor();
    match tokio::task::spawn_blocking(move || store.cancel_action(id, &actor)).await {
        Ok(Ok(_)) => {
            tracing::info!(action = id, "console: cancelled");
            Redirect::to(&format!("/ui/actions/{id}")).into_response()
        }
        Ok(Err(e)) => layout::api_error(e.into()),
        Err(e) => layout::internal(e),
    }
}

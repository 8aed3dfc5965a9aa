//! Endpoints a node calls about itself (an admin may call them for any node).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tenet_rulesets::api::{FactsUpdate, NodeStatus, NotOneOf, RunRecorded, RunResults};

use super::{ApiError, AppState, Caller, blocking};
use crate::store::{AttachKind, Target};
use tenet_rulesets::names::{self, NameKind};

/// `GET /api/v1/nodes/{node}`: the node's registration, admin-assigned attributes,
/// attachments (with who made each) and facts.
pub async fn get_node(
    State(state): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
) -> Result<Response, ApiError> {
    let node = caller.node(&state, &node).await?;
    let store = state.store.clone();
    let id = node.id.clone();
    let (facts, attachments, attributes, reported) = blocking(move || {
        Ok((
            store.node_facts(&id)?,
            store.attachments(&Target::Node(id.clone()))?,
            store.node_attributes(&id)?,
            store.reported_services(&id)?,
        ))
    })
    .await?;
    Ok(Json(serde_json::json!({
        "node_id": node.id,
        "name": node.name,
        "team_responsible": attributes.team_responsible,
        "services": attributes.services,
        "reported_services": reported,
        "facts": facts,
        "modulesets": attachments.modulesets,
        "rulesets": attachments.rulesets,
        "attachments": attachments.detail,
    }))
    .into_response())
}

/// `PUT /api/v1/nodes/{node}/facts`.
pub async fn put_facts(
    State(state): State<AppState>,
    caller: Caller,
    peer: super::actions::Peer,
    Path(node): Path<String>,
    body: Result<Json<FactsUpdate>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let node = caller.node(&state, &node).await?;
    let Json(update) = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    for s in &update.services {
        names::check(NameKind::Service, s)
            .map_err(|e| ApiError::bad_request(format!("services: {e}")))?;
    }
    // Fact fields become filterset fields and `OSVC_COMP_NODES_<FIELD>` environment names.
    for field in update.facts.node.keys() {
        names::check(NameKind::FactField, field)
            .map_err(|e| ApiError::bad_request(format!("facts.node: {e}")))?;
    }
    let canonical =
        serde_json::to_vec(&update.facts).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let hash = hex::encode(Sha256::digest(&canonical));
    let store = state.store.clone();
    blocking(move || {
        store.put_facts(
            &node.id,
            &update.facts,
            &hash,
            update.listener_port,
            &update.services,
        )?;
        // Where the collector notifies the node of queued actions.
        match peer.0 {
            Some(ip) => store.set_node_address(&node.id, &ip.to_string()),
            None => Ok(()),
        }
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /api/v1/nodes/{node}/policy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyQuery {
    /// Comma-separated modulesets to restrict to.
    moduleset: Option<String>,
    /// The service to resolve for.
    service: Option<String>,
}

/// May this caller act for `service` on `node`? Admins may; a node only for the services an
/// admin assigned it (what it reports hosting does not count).
pub(super) async fn check_service(
    state: &AppState,
    caller: &Caller,
    node_id: &str,
    service: Option<&str>,
) -> Result<(), ApiError> {
    let Some(svc) = service else {
        return Ok(());
    };
    names::check(NameKind::Service, svc).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Caller::Node(n) = caller else {
        return Ok(());
    };
    let store = state.store.clone();
    let (id, s) = (node_id.to_string(), svc.to_string());
    if blocking(move || store.node_hosts_service(&id, &s)).await? {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "node {} is not assigned service {svc} (an admin assigns the services a node hosts: PUT /api/v1/nodes/{{node}}; what a node reports does not count)",
            n.name
        )))
    }
}

/// `GET /api/v1/nodes/{node}/policy[?moduleset=a,b][&service=S]`: the resolved policy. Sends
/// `ETag: "<hash>"`; a request with that `If-None-Match` gets 304.
pub async fn get_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
    query: Result<Query<PolicyQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let node = caller.node(&state, &node).await?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_service(&state, &caller, &node.id, q.service.as_deref()).await?;
    let modulesets = q.moduleset.map(|m| {
        m.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    });
    let policies = state.policies.clone();
    let served =
        blocking(move || policies.resolve(&node, q.service.as_deref(), modulesets)).await?;
    let etag = format!("\"{}\"", served.hash());
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag)
    {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let mut resp = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        served.into_body(),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

/// `POST /api/v1/nodes/{node}/results`.
pub async fn post_results(
    State(state): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
    body: Result<Json<RunResults>, JsonRejection>,
) -> Result<Response, ApiError> {
    let node = caller.node(&state, &node).await?;
    let Json(run) = body.map_err(results_rejected)?;
    if run.run_id.is_empty() || run.run_id.len() > 128 {
        return Err(ApiError::bad_request(
            "run_id: must be 1 to 128 characters (a UUID)",
        ));
    }
    check_service(&state, &caller, &node.id, run.service.as_deref()).await?;
    let store = state.store.clone();
    let run_id = run.run_id.clone();
    let new = blocking(move || store.record_run(&node.id, &run)).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(RunRecorded { run_id, new })).into_response())
}

/// Why a results body was refused. The types of `tenet_rulesets::api::report` validate it: a
/// word outside the run-report vocabulary (an action, status or kind no agent sends) is a 400
/// naming the field (`modules[0].status: "x" is not one of ok, nok, n/a`); any other mismatch
/// (unknown or missing fields, wrong types) is axum's 422.
fn results_rejected(e: JsonRejection) -> ApiError {
    let refused = std::error::Error::source(&e)
        .and_then(|axum_error| axum_error.source())
        .and_then(|inner| inner.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>());
    if let Some(err) = refused {
        let json = err.inner();
        let text = json.to_string();
        // serde_json appends where in the body the error is; the path says it better.
        let position = format!(" at line {} column {}", json.line(), json.column());
        let message = text.strip_suffix(&position).unwrap_or(&text);
        if NotOneOf::is_refusal(message) {
            return ApiError::bad_request(format!("{}: {message}", err.path()));
        }
    }
    ApiError::new(e.status(), e.body_text())
}

/// `GET /api/v1/nodes/{node}/status`.
pub async fn get_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
) -> Result<Json<NodeStatus>, ApiError> {
    let node = caller.node(&state, &node).await?;
    let store = state.store.clone();
    let id = node.id.clone();
    let (modules, last_run) = blocking(move || store.node_status(&id)).await?;
    Ok(Json(NodeStatus {
        node_id: node.id,
        name: node.name,
        summary: modules.iter().map(|m| m.status).collect(),
        modules,
        last_run,
    }))
}

/// Query of `GET /api/v1/nodes/{node}/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// Most runs returned (default 100, at most 10,000).
    limit: Option<u32>,
}

/// `GET /api/v1/nodes/{node}/runs[?limit=N]`: the run history, newest first.
pub async fn get_runs(
    State(state): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
    Query(q): Query<RunsQuery>,
) -> Result<Response, ApiError> {
    let node = caller.node(&state, &node).await?;
    let limit = q.limit.unwrap_or(100).min(10_000);
    let store = state.store.clone();
    Ok(Json(blocking(move || store.runs(&node.id, limit)).await?).into_response())
}

/// `GET /api/v1/nodes/{node}/attachments`.
pub async fn get_attachments(
    State(state): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
) -> Result<Response, ApiError> {
    let node = caller.node(&state, &node).await?;
    let store = state.store.clone();
    let a = blocking(move || store.attachments(&Target::Node(node.id))).await?;
    Ok(Json(a).into_response())
}

/// `modulesets` or `rulesets` in a path.
pub(super) fn attach_kind(segment: &str) -> Result<AttachKind, ApiError> {
    match segment {
        "modulesets" => Ok(AttachKind::Moduleset),
        "rulesets" => Ok(AttachKind::Ruleset),
        other => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such endpoint (expected modulesets or rulesets, got {other:?})"),
        )),
    }
}

/// Whether a node may attach this object to itself: it must be published to everybody (no
/// publication groups, or `Everybody`) or to the team an admin assigned the node
/// (`team_responsible` of `PUT /api/v1/nodes/{node}`; the facts the node reports do not count).
async fn check_published(
    state: &AppState,
    caller: &Caller,
    kind: AttachKind,
    name: &str,
) -> Result<(), ApiError> {
    let Caller::Node(node) = caller else {
        return Ok(());
    };
    let policies = state.policies.clone();
    let (_, bundle) = blocking(move || policies.bundle()).await?;
    let publications = match kind {
        AttachKind::Moduleset => bundle.modulesets.get(name).map(|m| &m.meta.publications),
        AttachKind::Ruleset => bundle.rulesets.get(name).map(|r| &r.meta.publications),
    };
    let Some(publications) = publications else {
        return Err(crate::Error::not_found(kind.as_str(), name).into());
    };
    if publications.is_empty() || publications.iter().any(|p| p == "Everybody") {
        return Ok(());
    }
    let store = state.store.clone();
    let id = node.id.clone();
    let team = blocking(move || store.node_attributes(&id))
        .await?
        .team_responsible;
    if team.as_ref().is_some_and(|t| publications.contains(t)) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "{} {name} is not published to node {} (published to: {}; the node's team: {})",
        kind.as_str(),
        node.name,
        publications.join(", "),
        team.as_deref().unwrap_or("none assigned")
    )))
}

/// `POST /api/v1/nodes/{node}/{modulesets|rulesets}/{name}`: attach.
pub async fn attach(
    State(state): State<AppState>,
    caller: Caller,
    Path((node, kind, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    change(state, caller, node, kind, name, true).await
}

/// `DELETE /api/v1/nodes/{node}/{modulesets|rulesets}/{name}`: detach.
pub async fn detach(
    State(state): State<AppState>,
    caller: Caller,
    Path((node, kind, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    change(state, caller, node, kind, name, false).await
}

async fn change(
    state: AppState,
    caller: Caller,
    node: String,
    kind: String,
    name: String,
    attach: bool,
) -> Result<Response, ApiError> {
    let kind = attach_kind(&kind)?;
    let node = caller.node(&state, &node).await?;
    if attach {
        check_published(&state, &caller, kind, &name).await?;
    }
    let store = state.store.clone();
    let actor = caller.actor();
    let target = Target::Node(node.id.clone());
    let n = name.clone();
    let as_node = matches!(caller, Caller::Node(_));
    let changed = blocking(move || {
        if attach {
            store.attach(&target, kind, &n, &actor)
        } else if as_node {
            // A node detaches only what it attached itself.
            store.detach_own(&node.id, kind, &n, &actor)
        } else {
            store.detach(&target, kind, &n, &actor)
        }
    })
    .await?;
    Ok(Json(serde_json::json!({
        "node": node.name,
        kind.as_str(): name,
        "attached": attach,
        "changed": changed,
    }))
    .into_response())
}

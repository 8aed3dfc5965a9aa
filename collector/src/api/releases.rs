//! Release statuses reported by nodes (`tenet release`, the `release` class): each node's
//! view of each release, the same document `tenet release status --format json` prints.
//!
//! - `PUT /api/v1/nodes/{node}/releases/{version}` (the node itself): replaces the status.
//! - `GET /api/v1/nodes/{node}/releases` (the node or an admin): that node's releases.
//! - `GET /api/v1/releases[?version=V]` (admin): every node's, to see a release fleet-wide.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{Admin, ApiError, AppState, Caller, blocking};
use crate::store::ReleaseRow;

/// The states a node may report (tenet_release::status::ReleaseState).
const STATES: [&str; 6] = [
    "queued", "adding", "present", "removing", "absent", "failed",
];

/// A node's report, as stored and returned.
#[derive(Debug, Serialize)]
pub struct NodeRelease {
    /// The node's name.
    pub node: String,
    /// The version.
    pub version: String,
    /// Its state on that node.
    pub state: String,
    /// When the collector received it.
    pub received_at: String,
    /// The node's status document.
    pub status: serde_json::Value,
}

impl From<ReleaseRow> for NodeRelease {
    fn from(r: ReleaseRow) -> Self {
        NodeRelease {
            node: r.node,
            version: r.version,
            state: r.state,
            received_at: r.received_at,
            status: r.doc,
        }
    }
}

/// `PUT /api/v1/nodes/{node}/releases/{version}`.
pub async fn put_release(
    State(state): State<AppState>,
    caller: Caller,
    Path((node, version)): Path<(String, String)>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let node = caller.node(&state, &node).await?;
    let Json(doc) = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let valid_version = !version.is_empty()
        && version.len() <= 100
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid_version {
        return Err(ApiError::bad_request(format!(
            "version {version:?}: letters, digits, . _ - only"
        )));
    }
    if doc.get("version").and_then(|v| v.as_str()) != Some(version.as_str()) {
        return Err(ApiError::bad_request(format!(
            "status.version must be {version:?}"
        )));
    }
    let st = doc
        .get("state")
        .and_then(|v| v.as_str())
        .filter(|s| STATES.contains(s))
        .ok_or_else(|| {
            ApiError::bad_request(format!("status.state must be one of {}", STATES.join(", ")))
        })?
        .to_string();
    let store = state.store.clone();
    blocking(move || store.put_release_status(&node.id, &version, &st, &doc)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/nodes/{node}/releases`.
pub async fn node_releases(
    State(state): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
) -> Result<Json<Vec<NodeRelease>>, ApiError> {
    let node = caller.node(&state, &node).await?;
    let store = state.store.clone();
    let rows = blocking(move || store.release_statuses(Some(&node.id), None)).await?;
    Ok(Json(rows.into_iter().map(NodeRelease::from).collect()))
}

/// Query of `GET /api/v1/releases`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleasesQuery {
    /// Only this version.
    pub version: Option<String>,
}

/// `GET /api/v1/releases`.
pub async fn all_releases(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(q): Query<ReleasesQuery>,
) -> Result<Json<Vec<NodeRelease>>, ApiError> {
    let store = state.store.clone();
    let rows = blocking(move || store.release_statuses(None, q.version.as_deref())).await?;
    Ok(Json(rows.into_iter().map(NodeRelease::from).collect()))
}

//! Collector-queued actions: an admin queues an allow-listed command for a node; the collector
//! notifies the node by opening TCP to its listener port and sending the bytes
//! `dequeue_actions` (OpenSVC's notification), retrying for a bounded time; the node dequeues
//! (actions become S), acknowledges (R), runs them and posts each result (T). Actions sent but
//! not acknowledged within the ack timeout are offered again; a node that cannot be notified
//! still gets its actions by polling. Statuses: see `tenet_rulesets::action`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;
use tenet_rulesets::action::{
    AckActions, Action, ActionCommand, ActionResult, Dequeued, QueueAction, status,
};
use tokio::io::AsyncWriteExt as _;

use super::{Admin, ApiError, AppState, Caller, blocking};
use crate::error::Error;
use crate::store::Store;

/// The notification OpenSVC collectors send to a node's listener.
pub const NOTIFICATION: &[u8] = b"dequeue_actions";

/// Largest stdout or stderr kept per action (the rest is cut, and says so).
pub const OUTPUT_LIMIT: usize = 256 * 1024;

/// Timing of notifications and re-offers.
#[derive(Debug, Clone, Copy)]
pub struct ActionTiming {
    /// How long to keep trying to notify a node (OpenSVC: 5 s).
    pub notify_timeout: Duration,
    /// How long a sent action may stay unacknowledged before it is offered again (OpenSVC:
    /// 20 s).
    pub ack_timeout: Duration,
}

impl Default for ActionTiming {
    fn default() -> Self {
        ActionTiming {
            notify_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(20),
        }
    }
}

/// Notifies nodes of their queued actions, one task per node at a time.
pub struct Notifier {
    store: Arc<dyn Store>,
    timing: ActionTiming,
    /// Nodes being notified; `true` when another notification was asked meanwhile.
    busy: Mutex<HashMap<String, bool>>,
}

impl Notifier {
    /// A notifier over the store.
    pub fn new(store: Arc<dyn Store>, timing: ActionTiming) -> Notifier {
        Notifier {
            store,
            timing,
            busy: Mutex::new(HashMap::new()),
        }
    }

    /// The timing in force.
    pub fn timing(&self) -> ActionTiming {
        self.timing
    }

    /// Notifies every node with waiting actions (at start-up: actions queued before a
    /// restart). Call from within the runtime.
    pub fn sweep(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let store = me.store.clone();
            match tokio::task::spawn_blocking(move || store.nodes_with_waiting_actions()).await {
                Ok(Ok(nodes)) => {
                    for n in nodes {
                        me.notify(n);
                    }
                }
                Ok(Err(e)) => tracing::error!("actions: cannot list waiting actions: {e}"),
                Err(e) => tracing::error!("actions: {e}"),
            }
        });
    }

    /// Notifies a node (in the background); coalesces with a notification in flight.
    pub fn notify(self: &Arc<Self>, node_id: String) {
        {
            let mut busy = self.busy.lock().expect("notifier lock");
            if let Some(again) = busy.get_mut(&node_id) {
                *again = true;
                return;
            }
            busy.insert(node_id.clone(), false);
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.notify_once(&node_id).await;
                let mut busy = me.busy.lock().expect("notifier lock");
                if busy.get(&node_id).copied().unwrap_or(false) {
                    busy.insert(node_id.clone(), false);
                    continue;
                }
                busy.remove(&node_id);
                break;
            }
        });
    }

    async fn notify_once(&self, node_id: &str) {
        let store = self.store.clone();
        let id = node_id.to_string();
        let target = match tokio::task::spawn_blocking(move || store.notify_target(&id)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                tracing::warn!("actions: node {node_id}: {e}");
                return;
            }
            Err(e) => {
                tracing::error!("actions: {e}");
                return;
            }
        };
        let Some(up_to) = target.max_waiting else {
            return;
        };
        let outcome = match &target.address {
            None => Err(
                "no address known for the node (it has not pushed facts yet): it will get its actions when it polls"
                    .to_string(),
            ),
            Some(addr) => match addr.parse::<IpAddr>() {
                Err(_) => Err(format!("invalid node address {addr:?}")),
                Ok(ip) => {
                    self.send_notification(SocketAddr::new(ip, target.port))
                        .await
                }
            },
        };
        match &outcome {
            Ok(peer) => tracing::info!(
                node = node_id,
                peer = %peer,
                "actions: node notified (dequeue_actions)"
            ),
            Err(e) => tracing::warn!(node = node_id, "actions: notification failed: {e}"),
        }
        let store = self.store.clone();
        let id = node_id.to_string();
        let err = outcome.err();
        let res =
            tokio::task::spawn_blocking(move || store.action_notified(&id, up_to, err.as_deref()))
                .await;
        if let Ok(Err(e)) = res {
            tracing::error!("actions: node {node_id}: {e}");
        }
    }

    /// Connects and sends `dequeue_actions`, every second until the notify timeout.
    async fn send_notification(&self, to: SocketAddr) -> Result<SocketAddr, String> {
        let deadline = Instant::now() + self.timing.notify_timeout;
        let mut last_err;
        loop {
            let attempt = async {
                let mut s = tokio::net::TcpStream::connect(to).await?;
                s.write_all(NOTIFICATION).await?;
                s.shutdown().await?;
                std::io::Result::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(1), attempt).await {
                Ok(Ok(())) => return Ok(to),
                Ok(Err(e)) => last_err = format!("{to}: {e}"),
                Err(_) => last_err = format!("{to}: timed out"),
            }
            if Instant::now() + Duration::from_secs(1) > deadline {
                return Err(format!("unreachable: {last_err}"));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The peer address of the connection, when the server recorded it.
pub struct Peer(pub Option<IpAddr>);

impl FromRequestParts<AppState> for Peer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_canonical()),
        ))
    }
}

fn json_body<T>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    body.map(|Json(v)| v)
        .map_err(|e| ApiError::new(e.status(), e.body_text()))
}

/// `POST /api/v1/actions` (admin): queue an allow-listed command for a node, and notify it.
pub async fn queue(
    State(state): State<AppState>,
    Admin(caller): Admin,
    body: Result<Json<QueueAction>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Action>), ApiError> {
    let req = json_body(body)?;
    let command = ActionCommand::parse(&req.command).map_err(|e| {
        tracing::warn!(
            actor = caller.actor(),
            node = req.node,
            "actions: refused command {:?}: {e}",
            req.command
        );
        ApiError::bad_request(e.to_string())
    })?;
    let node = caller.node(&state, &req.node).await?;
    let store = state.store.clone();
    let (id, actor, text) = (node.id.clone(), caller.actor(), command.canonical());
    let action = blocking(move || store.queue_action(&id, &text, &actor)).await?;
    tracing::info!(
        action = action.id,
        node = node.name,
        "actions: queued {:?}",
        action.command
    );
    state.actions.notify(node.id);
    Ok((StatusCode::CREATED, Json(action)))
}

/// Query of the action listings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Node id or name.
    node: Option<String>,
    /// Comma-separated statuses.
    status: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<u32>,
}

fn statuses(q: &Option<String>) -> Result<Vec<String>, ApiError> {
    let Some(s) = q else { return Ok(Vec::new()) };
    s.split(',')
        .map(|x| {
            let x = x.trim().to_uppercase();
            if status::ALL.contains(&x.as_str()) {
                Ok(x)
            } else {
                Err(ApiError::bad_request(format!(
                    "status {x:?}: one of W, N, S, R, T, C"
                )))
            }
        })
        .collect()
}

/// `GET /api/v1/actions[?node=N][&status=W,R][&limit=N]` (admin).
pub async fn list(
    State(state): State<AppState>,
    Admin(caller): Admin,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let st = statuses(&q.status)?;
    let node = match &q.node {
        Some(n) => Some(caller.node(&state, n).await?.id),
        None => None,
    };
    let limit = q.limit.unwrap_or(100).min(1000);
    let store = state.store.clone();
    let actions = blocking(move || store.list_actions(node.as_deref(), &st, limit)).await?;
    Ok(Json(serde_json::json!({ "actions": actions })))
}

/// `GET /api/v1/nodes/{node}/actions[?status=..][&limit=N]`: a node's actions (the node
/// itself or an admin).
pub async fn node_actions(
    State(state): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let node = caller.node(&state, &node).await?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let st = statuses(&q.status)?;
    let limit = q.limit.unwrap_or(100).min(1000);
    let store = state.store.clone();
    let actions = blocking(move || store.list_actions(Some(&node.id), &st, limit)).await?;
    Ok(Json(serde_json::json!({ "actions": actions })))
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("action id {id:?} is not a number")))
}

/// `GET /api/v1/actions/{id}` (admin).
pub async fn get_one(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(id): Path<String>,
) -> Result<Json<Action>, ApiError> {
    let id = parse_id(&id)?;
    let store = state.store.clone();
    blocking(move || store.action(id))
        .await?
        .map(Json)
        .ok_or_else(|| Error::not_found("action", id.to_string()).into())
}

/// `POST /api/v1/actions/{id}/cancel` (admin): W, N or S → C; 409 once the node acknowledged
/// it.
pub async fn cancel(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<Json<Action>, ApiError> {
    let id = parse_id(&id)?;
    let store = state.store.clone();
    let actor = caller.actor();
    let a = blocking(move || store.cancel_action(id, &actor)).await?;
    tracing::info!(action = id, "actions: cancelled");
    Ok(Json(a))
}

/// `POST /api/v1/nodes/{node}/actions/dequeue`: the node takes its pending actions (W, N, and
/// S unacknowledged for longer than the ack timeout); they become S.
pub async fn dequeue(
    State(state): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
) -> Result<Json<Dequeued>, ApiError> {
    let node = caller.node(&state, &node).await?;
    let ack = time::Duration::try_from(state.actions.timing().ack_timeout)
        .unwrap_or(time::Duration::seconds(20));
    let before = time_text(time::OffsetDateTime::now_utc() - ack);
    let store = state.store.clone();
    let id = node.id.clone();
    let actions = blocking(move || store.dequeue_actions(&id, &before)).await?;
    if !actions.is_empty() {
        tracing::info!(
            node = node.name,
            "actions: sent {:?}",
            actions.iter().map(|a| a.id).collect::<Vec<_>>()
        );
    }
    Ok(Json(Dequeued { actions }))
}

/// `POST /api/v1/nodes/{node}/actions/ack {"ids": [..]}`: S → R; answers the ids now running.
pub async fn ack(
    State(state): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
    body: Result<Json<AckActions>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<AckActions>, ApiError> {
    let node = caller.node(&state, &node).await?;
    let req = json_body(body)?;
    if req.ids.len() > 10_000 {
        return Err(ApiError::bad_request("too many ids"));
    }
    let store = state.store.clone();
    let ids = blocking(move || store.ack_actions(&node.id, &req.ids)).await?;
    Ok(Json(AckActions { ids }))
}

fn cut(mut s: String) -> String {
    if s.len() > OUTPUT_LIMIT {
        let mut end = OUTPUT_LIMIT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("\n[output cut by the collector]\n");
    }
    s
}

/// `POST /api/v1/nodes/{node}/actions/result {id, ret, stdout, stderr}`: → T. 200 with the
/// action; the same result again is fine (delivery retried); 409 when cancelled or another
/// result was recorded.
pub async fn result(
    State(state): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
    body: Result<Json<ActionResult>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Action>, ApiError> {
    let node = caller.node(&state, &node).await?;
    let mut res = json_body(body)?;
    res.stdout = cut(std::mem::take(&mut res.stdout));
    res.stderr = cut(std::mem::take(&mut res.stderr));
    let store = state.store.clone();
    let (id, ret) = (res.id, res.ret);
    let action = blocking(move || {
        store.action_result(&node.id, &res)?;
        store
            .action(res.id)?
            .ok_or_else(|| Error::not_found("action", res.id.to_string()))
    })
    .await?;
    tracing::info!(action = id, ret, "actions: result recorded");
    Ok(Json(action))
}

/// `YYYY-MM-DD HH:MM:SS` (UTC), the store's format.
fn time_text(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.format(&f).unwrap_or_default()
}

//! The HTTP API: routes, authentication, errors, metrics, and serving (plain or TLS) on a
//! listener the caller bound, until a shutdown future resolves. Endpoints are documented one by
//! one in `collector/API.md`.

mod actions;
mod admin;
mod errors;
mod forms;
mod metrics;
mod node;
mod releases;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use tenet_rulesets::api::ErrorBody;

use crate::auth::{self, Presented};
use crate::error::Error;
use crate::policy::Policies;
use crate::store::{NodeAuth, Store};

pub use actions::{ActionTiming, NOTIFICATION, Notifier};
pub use admin::{merge, parse_import};
pub use metrics::Metrics;

/// Largest request body accepted by default (results, facts, edits).
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Largest request body accepted by `POST /api/v1/import`.
pub const IMPORT_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The policy resolver and its cache.
    pub policies: Arc<Policies>,
    /// Request counters and latency histograms.
    pub metrics: Arc<Metrics>,
    /// Templates and forms (shipped, plus `serve --template-dir`).
    pub templates: Arc<tenet_templates::Library>,
    /// Notifies nodes of their queued actions.
    pub actions: Arc<Notifier>,
}

impl AppState {
    /// State over a store, with the shipped templates.
    pub fn new(store: Arc<dyn Store>) -> Self {
        AppState {
            policies: Arc::new(Policies::new(store.clone())),
            actions: Arc::new(Notifier::new(store.clone(), ActionTiming::default())),
            store,
            metrics: Arc::new(Metrics::default()),
            templates: tenet_templates::Library::shared_builtin(),
        }
    }

    /// Uses this template library (shipped templates plus an extra directory).
    pub fn with_templates(mut self, templates: Arc<tenet_templates::Library>) -> Self {
        self.templates = templates;
        self
    }

    /// The same, with these notification and re-offer delays for queued actions.
    pub fn with_action_timing(mut self, timing: ActionTiming) -> Self {
        self.actions = Arc::new(Notifier::new(self.store.clone(), timing));
        self
    }
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/nodes", post(admin::register_node).get(admin::list_nodes))
        .route(
            "/nodes/{node}",
            get(node::get_node)
                .put(admin::put_node_attributes)
                .delete(admin::delete_node),
        )
        .route("/nodes/{node}/facts", put(node::put_facts))
        .route("/nodes/{node}/policy", get(node::get_policy))
        .route("/nodes/{node}/results", post(node::post_results))
        .route("/nodes/{node}/status", get(node::get_status))
        .route("/nodes/{node}/runs", get(node::get_runs))
        .route("/nodes/{node}/attachments", get(node::get_attachments))
        .route(
            "/nodes/{node}/{kind}/{name}",
            post(node::attach).delete(node::detach),
        )
        .route(
            "/services/{svc}/attachments",
            get(admin::service_attachments),
        )
        .route("/services/{svc}/config", get(forms::service_config))
        .route("/forms", get(forms::list_forms))
        .route("/forms/{name}", post(forms::render_form))
        .route(
            "/services/{svc}/{kind}/{name}",
            post(admin::service_attach).delete(admin::service_detach),
        )
        .route(
            "/rulesets",
            get(admin::list_rulesets).post(admin::create_ruleset),
        )
        .route(
            "/rulesets/{name}",
            get(admin::get_ruleset)
                .patch(admin::patch_ruleset)
                .delete(admin::delete_ruleset),
        )
        .route(
            "/rulesets/{name}/variables/{var}",
            put(admin::put_variable).delete(admin::delete_variable),
        )
        .route(
            "/rulesets/{name}/children/{child}",
            post(admin::add_ruleset_child).delete(admin::remove_ruleset_child),
        )
        .route(
            "/filtersets",
            get(admin::list_filtersets).post(admin::create_filterset),
        )
        .route(
            "/filtersets/{name}",
            get(admin::get_filterset)
                .put(admin::replace_filterset)
                .delete(admin::delete_filterset),
        )
        .route(
            "/modulesets",
            get(admin::list_modulesets).post(admin::create_moduleset),
        )
        .route(
            "/modulesets/{name}",
            get(admin::get_moduleset).delete(admin::delete_moduleset),
        )
        .route(
            "/modulesets/{name}/modules/{module}",
            put(admin::put_module).delete(admin::delete_module),
        )
        .route(
            "/modulesets/{name}/children/{child}",
            post(admin::add_moduleset_child).delete(admin::remove_moduleset_child),
        )
        .route(
            "/modulesets/{name}/rulesets/{ruleset}",
            post(admin::add_moduleset_ruleset).delete(admin::remove_moduleset_ruleset),
        )
        .route("/export", get(admin::export))
        .route(
            "/import",
            post(admin::import).layer(DefaultBodyLimit::max(IMPORT_BODY_LIMIT)),
        )
        .route("/actions", get(actions::list).post(actions::queue))
        .route("/actions/{id}", get(actions::get_one))
        .route("/actions/{id}/cancel", post(actions::cancel))
        .route("/nodes/{node}/actions", get(actions::node_actions))
        .route("/nodes/{node}/actions/dequeue", post(actions::dequeue))
        .route("/nodes/{node}/actions/ack", post(actions::ack))
        .route("/nodes/{node}/actions/result", post(actions::result))
        .route("/policies/{hash}", get(admin::policy_snapshot))
        .route("/audit", get(admin::audit_log))
        .route(
            "/nodes/{node}/releases/{version}",
            put(releases::put_release),
        )
        .route("/nodes/{node}/releases", get(releases::node_releases))
        .route("/releases", get(releases::all_releases));
    Router::new()
        .nest("/api/v1", api)
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics::render))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(errors::json_errors))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(reject_oversized))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// Answers 413 at once to a request announcing a body over its route's limit, before reading
/// a byte of it (the body limit alone would read up to the limit first).
async fn reject_oversized(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let limit = if req.uri().path() == "/api/v1/import" {
        IMPORT_BODY_LIMIT
    } else {
        BODY_LIMIT
    };
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = announced
        && len > limit as u64
    {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {len} bytes is over the limit of {limit} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(state): State<AppState>) -> Response {
    match blocking(move || state.store.ready()).await {
        Ok(v) => (StatusCode::OK, format!("ready (schema version {v})\n")).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in flight finish
/// (for at most 30 s). With `tls`, every connection is TLS.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        None => {
            // The peer address is recorded (a node is notified where it pushed facts from).
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
        Some(config) => serve_tls(listener, app, config, shutdown).await,
    }
}

async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let service = TowerToHyperService::new(
                    app.clone()
                        .layer(axum::Extension(axum::extract::ConnectInfo(peer))),
                );
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!("TLS handshake with {peer} failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake with {peer} timed out");
                            return;
                        }
                    };
                    let builder = Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!("connection with {peer}: {e}");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running 30 s after shutdown; stopping anyway");
    }
    Ok(())
}

/// Loads a PEM certificate chain and private key into a TLS server configuration.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> crate::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |p: &std::path::Path, e: &dyn std::fmt::Display| {
        Error::BadRequest(format!("{}: {e}", p.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, &e))?;
    if certs.is_empty() {
        return Err(bad(cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| bad(key, &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An error response: a status and `{"error": message}` (and `request_id` for a 500).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    request_id: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            request_id: None,
        }
    }

    /// A 500. The details (SQL, paths, panics) go to the log under a new request id; the
    /// caller gets the id only, so it can be quoted to whoever reads the log.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        tracing::error!(request_id = %id, "internal error: {detail}");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!(
                "internal error (request id {id}: the collector's log has the details)"
            ),
            request_id: Some(id),
        }
    }

    fn unauthorized(message: &str) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Policy(tenet_rulesets::Error::NotFound { .. }) | Error::NotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            Error::Policy(_) | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Database(_) | Error::Store(_) | Error::Io { .. } => {
                return ApiError::internal(e);
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = self.request_id.clone();
        let mut resp = (
            self.status,
            axum::Json(ErrorBody {
                error: self.message,
                request_id: self.request_id,
            }),
        )
            .into_response();
        if let Some(v) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
            resp.headers_mut().insert("x-request-id", v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tenet\", Bearer realm=\"tenet\""),
            );
        }
        resp
    }
}

/// Runs store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a blocking task failed: {e}")))?
        .map_err(ApiError::from)
}

/// Who is calling: an admin (bearer token) or a node (HTTP Basic).
#[derive(Debug, Clone)]
pub enum Caller {
    /// An admin token holder.
    Admin {
        /// The token's name.
        token: String,
    },
    /// A registered node.
    Node(NodeAuth),
}

impl Caller {
    /// How the audit log names the caller.
    pub fn actor(&self) -> String {
        match self {
            Caller::Admin { token } => format!("admin:{token}"),
            Caller::Node(n) => format!("node:{}", n.name),
        }
    }

    /// The node `param` names, if the caller may act on it: admins on any node, a node only on
    /// itself.
    async fn node(&self, state: &AppState, param: &str) -> Result<NodeAuth, ApiError> {
        match self {
            Caller::Node(n) if n.id == param || n.name == param => Ok(n.clone()),
            Caller::Node(n) => Err(ApiError::forbidden(format!(
                "node {} may not access node {param}",
                n.name
            ))),
            Caller::Admin { .. } => {
                let store = state.store.clone();
                let p = param.to_string();
                blocking(move || store.node_auth(&p))
                    .await?
                    .ok_or_else(|| Error::not_found("node", param).into())
            }
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "authentication required: an admin bearer token or node credentials (HTTP Basic node_id:secret)",
            ));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(auth::parse_authorization)
            .ok_or_else(|| ApiError::unauthorized("malformed Authorization header"))?;
        let store = state.store.clone();
        match presented {
            Presented::Bearer(token) => {
                let digest = auth::digest(&token);
                match blocking(move || store.admin_token(&digest)).await? {
                    Some(name) => Ok(Caller::Admin { token: name }),
                    None => Err(ApiError::unauthorized("invalid admin token")),
                }
            }
            Presented::Basic { user, secret } => {
                let found = blocking(move || store.node_auth(&user)).await?;
                match found {
                    Some(node) if auth::verify(&secret, &node.secret_hash) => {
                        Ok(Caller::Node(node))
                    }
                    _ => Err(ApiError::unauthorized("invalid node credentials")),
                }
            }
        }
    }
}

/// An admin caller; a node gets 403.
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            c @ Caller::Admin { .. } => Ok(Admin(c)),
            Caller::Node(n) => Err(ApiError::forbidden(format!(
                "node {} may not call admin endpoints",
                n.name
            ))),
        }
    }
}

//! The HTTP API: routes, authentication, errors, metrics, and serving (plain or TLS) on a
//! listener the caller bound, until a shutdown future resolves. Endpoints are documented one by
//! one in `collector/API.md`.

mod actions;
mod admin;
mod errors;
pub(crate) mod forms;
mod limits;
mod metrics;
mod node;
mod releases;
mod serve;
mod throttle;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use tenet_rulesets::api::ErrorBody;
use tenet_rulesets::{Filterset, Moduleset, Ruleset};

use crate::auth::{self, Presented};
use crate::error::Error;
use crate::policy::Policies;
use crate::store::{NodeAuth, Store, TokenRole};

pub use actions::{ActionTiming, NOTIFICATION, Notifier, Peer as PeerAddr};
pub use admin::{merge, parse_import};
pub use limits::DISCARD_LIMIT;
pub use metrics::Metrics;
pub use serve::{
    DEFAULT_MAX_CONNECTIONS, FD_RESERVE, MAX_BLOCKING_THREADS, ServeOptions, max_connections_for,
    raise_fd_limit, serve,
};
pub use throttle::AuthThrottle;

/// Largest request body accepted by default (results, facts, edits).
pub const BODY_LIMIT: usize = tenet_rulesets::api::BODY_LIMIT;
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
    /// Failed authentications per source address.
    pub throttle: Arc<AuthThrottle>,
    /// The web console's sessions and caches (`crate::ui`).
    pub console: Arc<crate::ui::Console>,
}

impl AppState {
    /// State over a store, with the shipped templates.
    pub fn new(store: Arc<dyn Store>) -> Self {
        AppState {
            policies: Arc::new(Policies::new(store.clone())),
            actions: Arc::new(Notifier::new(store.clone(), ActionTiming::default())),
            store,
            metrics: Arc::new(Metrics::default()),
            throttle: Arc::new(AuthThrottle::default()),
            templates: tenet_templates::Library::shared_builtin(),
            console: Arc::new(crate::ui::Console::new(Default::default())),
        }
    }

    /// The web console with these options (secure cookies under TLS, session lifetime).
    pub fn with_console(mut self, options: crate::ui::ConsoleOptions) -> Self {
        self.console = Arc::new(crate::ui::Console::new(options));
        self
    }

    /// A policy cache of at most `bytes`.
    pub fn with_policy_cache(mut self, bytes: usize) -> Self {
        self.policies = Arc::new(Policies::with_budget(self.store.clone(), bytes));
        self
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
            get(admin::list::<Ruleset>).post(admin::create_ruleset),
        )
        .route(
            "/rulesets/{name}",
            get(admin::show::<Ruleset>)
                .patch(admin::patch_ruleset)
                .delete(admin::delete::<Ruleset>),
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
            get(admin::list::<Filterset>).post(admin::create_filterset),
        )
        .route(
            "/filtersets/{name}",
            get(admin::show::<Filterset>)
                .put(admin::replace_filterset)
                .delete(admin::delete::<Filterset>),
        )
        .route(
            "/modulesets",
            get(admin::list::<Moduleset>).post(admin::create_moduleset),
        )
        .route(
            "/modulesets/{name}",
            get(admin::show::<Moduleset>).delete(admin::delete::<Moduleset>),
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
        .route("/compliance/daily", get(admin::compliance_daily))
        .route(
            "/nodes/{node}/releases/{version}",
            put(releases::put_release),
        )
        .route("/nodes/{node}/releases", get(releases::node_releases))
        .route("/releases", get(releases::all_releases));
    Router::new()
        .nest("/api/v1", api)
        .merge(crate::ui::routes(state.clone()))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics::render))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(errors::json_errors))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(limits::bounded_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
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
    /// Seconds for `Retry-After` (429).
    retry_after: Option<u64>,
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
            retry_after: None,
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
            retry_after: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
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
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
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
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        // A throttled address is refused before its credentials cost anything.
        if let Err(secs) = state.throttle.check(peer) {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed authentications from this address: retry in {secs} s"),
            );
            e.retry_after = Some(secs);
            return Err(e);
        }
        let Some(presented) = value.to_str().ok().and_then(auth::parse_authorization) else {
            state
                .throttle
                .failed(peer, "malformed Authorization header");
            return Err(ApiError::unauthorized("malformed Authorization header"));
        };
        let store = state.store.clone();
        match presented {
            Presented::Bearer(token) => {
                let digest = auth::digest(&token);
                match blocking(move || store.token(&digest)).await? {
                    Some((name, TokenRole::Admin)) => Ok(Caller::Admin { token: name }),
                    // A viewer reads what an admin reads, and changes nothing: every method
                    // but GET and HEAD is refused here, before any handler runs.
                    Some((name, TokenRole::Viewer)) => {
                        if parts.method == Method::GET || parts.method == Method::HEAD {
                            Ok(Caller::Admin { token: name })
                        } else {
                            Err(ApiError::forbidden(format!(
                                "viewer token {name} is read-only: {} is refused",
                                parts.method
                            )))
                        }
                    }
                    None => {
                        state.throttle.failed(peer, "invalid admin token");
                        Err(ApiError::unauthorized("invalid admin token"))
                    }
                }
            }
            Presented::Basic { user, secret } => {
                let who = throttle::quoted(&user);
                let found = blocking(move || store.node_auth(&user)).await?;
                match found {
                    Some(node) if auth::verify(&secret, &node.secret_hash) => {
                        Ok(Caller::Node(node))
                    }
                    found => {
                        let what = if found.is_some() {
                            format!("wrong secret for node {who}")
                        } else {
                            format!("unknown node {who}")
                        };
                        state.throttle.failed(peer, &what);
                        Err(ApiError::unauthorized("invalid node credentials"))
                    }
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

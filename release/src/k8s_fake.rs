//! A fake Kubernetes API server for tests: **a mocked contract test, not Kubernetes.**
//!
//! [`FakeApiServer`] serves plain HTTP on `127.0.0.1` (a port of its own), from a thread and
//! runtime of its own so that sync tests (object classes) and async tests alike can use it,
//! and [`FakeApiServer::write_kubeconfig`] writes a real kubeconfig pointing at it, so tests
//! go through kubeconfig parsing, bearer-token auth and kube's HTTP stack as in production.
//!
//! It implements only what [`crate::k8s`] calls, shaped like the real API server's answers:
//! - `GET /version`;
//! - `GET /apis/apps/v1/namespaces/NS/deployments/NAME`;
//! - `GET`, `PATCH` and `PUT` of `.../deployments/NAME/scale` (PATCH as
//!   `application/merge-patch+json`, `application/strategic-merge-patch+json`,
//!   `application/apply-patch+yaml` with a JSON body, or `application/json-patch+json` ops on
//!   `/spec/replicas`; PUT honours `metadata.resourceVersion` with a 409 on conflict);
//! - `GET /api/v1/namespaces/NS/pods?labelSelector=...` (equality and set-based selectors).
//!
//! Anything else is a 404 `Status`, as are missing deployments. Every request needs
//! `Authorization: Bearer <token>` ([`FakeApiServer::token`]); without it the answer is the
//! API server's 401 `Status`. Every request is recorded ([`FakeApiServer::requests`]) for
//! request-level assertions (a check issued no PATCH or PUT).
//!
//! Scaling creates or removes the deployment's pods at once; a new pod is Running with a pod
//! IP (`10.88.0.N`, N from 8 upward, so that numeric and text order differ) and becomes
//! Ready=True after the ready delay (default 200 ms; [`FakeApiServer::set_ready_delay`]).
//! Pods are listed by name, as the API server does. On a scale-down the surplus pods (newest
//! first) go at once, or, with a termination delay ([`FakeApiServer::set_termination_delay`]),
//! are marked terminating (`metadata.deletionTimestamp`, left out of the deployment's status
//! counts as the ReplicaSet controller does) and removed when the delay has passed. Not
//! modelled: admission, defaulting, rollouts, watches, pagination, RBAC, resourceVersion
//! semantics beyond the PUT conflict check.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request the fake server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `PATCH`, `PUT`, ...
    pub method: String,
    /// The URL path (`/apis/apps/v1/namespaces/cm/deployments/lir-data/scale`).
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// Whether it carried the right bearer token.
    pub authorized: bool,
    /// The body, as text.
    pub body: String,
}

impl RecordedRequest {
    /// Whether the request may change state (anything but GET, HEAD and OPTIONS).
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }
}

/// A mocked Kubernetes API server on loopback (see the module documentation). Stops when
/// dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    token: String,
    state: Mutex<FakeState>,
}

struct FakeState {
    ready_delay: Option<Duration>,
    /// How long a deleted pod takes to terminate (`None`: it goes at once).
    termination_delay: Option<Duration>,
    deployments: BTreeMap<(String, String), FakeDeployment>,
    pods: Vec<FakePod>,
    requests: Vec<RecordedRequest>,
    resource_version: u64,
    pods_created: u64,
    /// The network pod IPs are taken in (`10.88.0.0` unless set): `<net>.(8 + n)`.
    pod_net: [u8; 3],
}

struct FakeDeployment {
    labels: BTreeMap<String, String>,
    replicas: i32,
    generation: i64,
    resource_version: u64,
}

struct FakePod {
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    /// The deployment that owns it.
    owner: Option<String>,
    phase: String,
    ip: Option<IpAddr>,
    /// When it becomes Ready; `None`: never.
    ready_at: Option<Instant>,
    /// Since when it is terminating, and when it will be gone.
    terminating: Option<(std::time::SystemTime, Instant)>,
}

impl FakePod {
    fn ready(&self, now: Instant) -> bool {
        self.terminating.is_none()
            && self.phase == "Running"
            && self.ready_at.is_some_and(|t| t <= now)
    }
}

/// Characters of pod name suffixes (Kubernetes' own alphabet: no vowels, no 0/1/3).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

impl FakeApiServer {
    /// Starts a server on `127.0.0.1:0`, with no deployments. Panics if it cannot (tests).
    pub fn start() -> FakeApiServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let shared = Arc::new(Shared {
            token: format!("fake-{}-{}-{nanos:08x}", std::process::id(), addr.port()),
            state: Mutex::new(FakeState {
                ready_delay: Some(Duration::from_millis(200)),
                termination_delay: None,
                deployments: BTreeMap::new(),
                pods: Vec::new(),
                requests: Vec::new(),
                resource_version: 1000,
                pods_created: 0,
                pod_net: [10, 88, 0],
            }),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name(format!("fake-kube-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake API server runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        r = axum::serve(listener, app) => r.expect("fake API server"),
                        _ = rx => {}
                    }
                });
                // Dropping the runtime drops the connections still open.
            })
            .expect("fake API server thread");
        FakeApiServer {
            addr,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bearer token it accepts.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The /24 the IPs of pods created from now on are taken in (`[127, 0, 0]` makes them
    /// loopback addresses `127.0.0.8`, `.9`, ... that real servers of a test can listen on).
    pub fn set_pod_network(&self, net: [u8; 3]) {
        self.state().pod_net = net;
    }

    /// How long pods created from now on take to become Ready; `None`: they never do.
    pub fn set_ready_delay(&self, delay: Option<Duration>) {
        self.state().ready_delay = delay;
    }

    /// How long pods deleted from now on take to terminate; `None` (the default): they go at
    /// once.
    pub fn set_termination_delay(&self, delay: Option<Duration>) {
        self.state().termination_delay = delay;
    }

    /// The pods of `namespace` being deleted now.
    pub fn terminating_pods(&self, namespace: &str) -> usize {
        let mut st = self.state();
        st.purge_terminated();
        st.pods
            .iter()
            .filter(|p| p.namespace == namespace && p.terminating.is_some())
            .count()
    }

    /// Adds a deployment whose labels are also its selector's `matchLabels` and its pods'
    /// labels, with `replicas` pods (which become ready after the ready delay).
    pub fn add_deployment(
        &self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        replicas: i32,
    ) {
        let mut st = self.state();
        st.resource_version += 1;
        let rv = st.resource_version;
        st.deployments.insert(
            (namespace.to_string(), name.to_string()),
            FakeDeployment {
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                replicas,
                generation: 1,
                resource_version: rv,
            },
        );
        st.reconcile(namespace, name);
    }

    /// Adds a pod no deployment owns, in the given phase, Ready or not, with or without IP.
    pub fn add_pod(
        &self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        phase: &str,
        ready: bool,
        ip: Option<IpAddr>,
    ) {
        self.state().pods.push(FakePod {
            namespace: namespace.into(),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            owner: None,
            phase: phase.into(),
            ip,
            ready_at: ready.then(Instant::now),
            terminating: None,
        });
    }

    /// The deployment's `spec.replicas`, if it exists.
    pub fn replicas(&self, namespace: &str, name: &str) -> Option<i32> {
        self.state()
            .deployments
            .get(&(namespace.to_string(), name.to_string()))
            .map(|d| d.replicas)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// The requests received so far that may change state (PATCH, PUT, POST, DELETE).
    pub fn writes(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_write())
            .collect()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// Writes a kubeconfig for this server: cluster `fake` at [`Self::url`], user `fake-user`
    /// with the token, current context `fake` with `namespace`.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> std::io::Result<()> {
        self.write_kubeconfig_with_token(path, namespace, Some(self.token()))
    }

    /// [`Self::write_kubeconfig`] with another token, or none (to test refusals).
    pub fn write_kubeconfig_with_token(
        &self,
        path: &Path,
        namespace: &str,
        token: Option<&str>,
    ) -> std::io::Result<()> {
        let user = match token {
            Some(t) => format!("    token: {t}\n"),
            None => "    username: nobody\n".to_string(),
        };
        let text = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: fake\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: fake-user\n  user:\n{user}\
             contexts:\n\
             - name: fake\n  context:\n    cluster: fake\n    user: fake-user\n    namespace: {namespace}\n\
             current-context: fake\n",
            url = self.url(),
        );
        std::fs::write(path, text)
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of debug output, as credentials do everywhere.
        f.debug_struct("FakeApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeState {
    /// Creates or removes the deployment's pods to match its replicas (newest removed first).
    fn reconcile(&mut self, namespace: &str, name: &str) {
        let Some(d) = self
            .deployments
            .get(&(namespace.to_string(), name.to_string()))
        else {
            return;
        };
        let (want, labels) = (d.replicas.max(0) as usize, d.labels.clone());
        let owned = |p: &FakePod| {
            p.namespace == namespace && p.owner.as_deref() == Some(name) && p.terminating.is_none()
        };
        let mut have = self.pods.iter().filter(|p| owned(p)).count();
        while have > want {
            let last = self.pods.iter().rposition(owned).expect("an owned pod");
            match self.termination_delay {
                Some(d) => {
                    self.pods[last].terminating =
                        Some((std::time::SystemTime::now(), Instant::now() + d));
                }
                None => {
                    self.pods.remove(last);
                }
            }
            have -= 1;
        }
        while have < want {
            let n = self.pods_created;
            self.pods_created += 1;
            // A pseudo-random but fixed suffix, so that listing by name is not creation order.
            let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ 0x5bd1_e995;
            let suffix: String = (0..5)
                .map(|_| {
                    let c = SUFFIX_ALPHABET[(x % SUFFIX_ALPHABET.len() as u64) as usize];
                    x /= SUFFIX_ALPHABET.len() as u64;
                    c as char
                })
                .collect();
            let octet = 8 + (n % 240) as u8;
            self.pods.push(FakePod {
                namespace: namespace.into(),
                name: format!("{name}-7d4b9c6f5-{suffix}"),
                labels: labels.clone(),
                owner: Some(name.into()),
                phase: "Running".into(),
                ip: Some(IpAddr::V4(Ipv4Addr::new(
                    self.pod_net[0],
                    self.pod_net[1],
                    self.pod_net[2],
                    octet,
                ))),
                ready_at: self.ready_delay.map(|d| Instant::now() + d),
                terminating: None,
            });
            have += 1;
        }
    }

    /// Removes the terminating pods whose time has come.
    fn purge_terminated(&mut self) {
        let now = Instant::now();
        self.pods
            .retain(|p| p.terminating.is_none_or(|(_, gone)| gone > now));
    }

    fn deployment_json(&self, namespace: &str, name: &str, d: &FakeDeployment) -> Value {
        let now = Instant::now();
        let pods: Vec<&FakePod> = self
            .pods
            .iter()
            .filter(|p| {
                p.namespace == namespace
                    && p.owner.as_deref() == Some(name)
                    && p.terminating.is_none()
            })
            .collect();
        let ready = pods.iter().filter(|p| p.ready(now)).count();
        let mut status = json!({
            "observedGeneration": d.generation,
            "replicas": pods.len(),
            "updatedReplicas": pods.len(),
        });
        // The API server omits zero counts.
        if ready > 0 {
            status["readyReplicas"] = json!(ready);
            status["availableReplicas"] = json!(ready);
        }
        if pods.len() > ready {
            status["unavailableReplicas"] = json!(pods.len() - ready);
        }
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": d.labels,
                "generation": d.generation,
                "resourceVersion": d.resource_version.to_string(),
                "uid": format!("00000000-0000-4000-8000-{:012x}", d.resource_version),
            },
            "spec": {
                "replicas": d.replicas,
                "selector": { "matchLabels": d.labels },
                "template": {
                    "metadata": { "labels": d.labels },
                    "spec": { "containers": [ { "name": "registry", "image": "registry:2" } ] }
                }
            },
            "status": status,
        })
    }

    fn pod_json(&self, p: &FakePod, now: Instant) -> Value {
        let ready = p.ready(now);
        let mut status = json!({
            "phase": p.phase,
            "conditions": [
                { "type": "Ready", "status": if ready { "True" } else { "False" } },
                { "type": "ContainersReady", "status": if ready { "True" } else { "False" } },
            ],
        });
        if let Some(ip) = p.ip {
            status["podIP"] = json!(ip.to_string());
            status["podIPs"] = json!([{ "ip": ip.to_string() }]);
        }
        let mut metadata = json!({ "name": p.name, "namespace": p.namespace, "labels": p.labels });
        if let Some((since, _)) = p.terminating {
            let since = time::OffsetDateTime::from(since)
                .replace_nanosecond(0)
                .unwrap_or_else(|_| time::OffsetDateTime::from(since))
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            metadata["deletionTimestamp"] = json!(since);
            metadata["deletionGracePeriodSeconds"] = json!(30);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": { "containers": [ { "name": "registry", "image": "registry:2" } ] },
            "status": status,
        })
    }
}

fn scale_json(namespace: &str, name: &str, d: &FakeDeployment) -> Value {
    let selector: Vec<String> = d.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": d.resource_version.to_string(),
        },
        "spec": { "replicas": d.replicas },
        "status": { "replicas": d.replicas, "selector": selector.join(",") },
    })
}

/// A `Status` answer, as the API server sends for every failure.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A failure answer not yet turned into a response (kept small for `Result`s).
#[derive(Debug)]
struct Refusal(StatusCode, &'static str, String);

impl Refusal {
    fn response(self) -> Response {
        status(self.0, self.1, &self.2)
    }
}

fn ok_json(value: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn not_found(name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("deployments.apps \"{name}\" not found"),
    )
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    let authorized = bearer(&parts.headers) == Some(shared.token.as_str());
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let path = parts.uri.path().to_string();
    let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    st.purge_terminated();
    st.requests.push(RecordedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_string),
        content_type: content_type.clone(),
        authorized,
        body: body.clone(),
    });
    if !authorized {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["version"]) => ok_json(json!({
            "major": "1", "minor": "35", "gitVersion": "v1.35.0-fake",
            "platform": "linux/amd64",
        })),
        (method, ["apis", "apps", "v1", "namespaces", ns, "deployments", name]) => {
            if method != Method::GET {
                return method_not_allowed(method);
            }
            let key = (ns.to_string(), name.to_string());
            match st.deployments.get(&key) {
                Some(d) => ok_json(st.deployment_json(ns, name, d)),
                None => not_found(name),
            }
        }
        (
            method,
            [
                "apis",
                "apps",
                "v1",
                "namespaces",
                ns,
                "deployments",
                name,
                "scale",
            ],
        ) => {
            let key = (ns.to_string(), name.to_string());
            let Some(d) = st.deployments.get(&key) else {
                return not_found(name);
            };
            let replicas = match *method {
                Method::GET => return ok_json(scale_json(ns, name, d)),
                Method::PATCH => patched_replicas(content_type.as_deref(), &body),
                Method::PUT => put_replicas(name, &body, d.resource_version),
                _ => return method_not_allowed(method),
            };
            let replicas = match replicas {
                Ok(Some(r)) => r,
                Ok(None) => d.replicas,
                Err(refusal) => return refusal.response(),
            };
            if replicas < 0 {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    &format!(
                        "Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: \
                         {replicas}: must be greater than or equal to 0"
                    ),
                );
            }
            st.resource_version += 1;
            let rv = st.resource_version;
            let d = st.deployments.get_mut(&key).expect("checked above");
            if d.replicas != replicas {
                d.replicas = replicas;
                d.generation += 1;
                d.resource_version = rv;
            }
            st.reconcile(ns, name);
            ok_json(scale_json(ns, name, &st.deployments[&key]))
        }
        (method, ["api", "v1", "namespaces", ns, "pods"]) => {
            if method != Method::GET {
                return method_not_allowed(method);
            }
            let query: Query<BTreeMap<String, String>> =
                Query::try_from_uri(&parts.uri).unwrap_or(Query(BTreeMap::new()));
            let selector = match parse_selector(query.get("labelSelector").map_or("", |s| s)) {
                Ok(s) => s,
                Err(e) => {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &format!("unable to parse requirement: {e}"),
                    );
                }
            };
            let now = Instant::now();
            let mut pods: Vec<&FakePod> = st
                .pods
                .iter()
                .filter(|p| p.namespace == *ns && selector.iter().all(|r| r.matches(&p.labels)))
                .collect();
            pods.sort_by(|a, b| a.name.cmp(&b.name));
            let items: Vec<Value> = pods.iter().map(|p| st.pod_json(p, now)).collect();
            ok_json(json!({
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": { "resourceVersion": st.resource_version.to_string() },
                "items": items,
            }))
        }
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn method_not_allowed(method: &Method) -> Response {
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!("the server does not allow this method on the requested resource ({method})"),
    )
}

/// The replicas a PATCH of the scale sets (`None`: unchanged), or the error answer.
fn patched_replicas(content_type: Option<&str>, body: &str) -> Result<Option<i32>, Refusal> {
    let bad = |m: String| Refusal(StatusCode::BAD_REQUEST, "BadRequest", m);
    let invalid = |m: String| Refusal(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", m);
    let media = content_type
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    let value: Value =
        serde_json::from_str(body).map_err(|e| bad(format!("error decoding patch: {e}")))?;
    match media {
        "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/apply-patch+yaml" => match value.pointer("/spec/replicas") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .and_then(|r| i32::try_from(r).ok())
                .map(Some)
                .ok_or_else(|| invalid(format!("spec.replicas: Invalid value: {v}"))),
        },
        "application/json-patch+json" => {
            let ops = value
                .as_array()
                .ok_or_else(|| bad("a JSON patch must be an array".into()))?;
            let mut replicas = None;
            for op in ops {
                let (kind, path) = (op["op"].as_str(), op["path"].as_str());
                match (kind, path) {
                    (Some("replace" | "add"), Some("/spec/replicas")) => {
                        replicas = Some(
                            op["value"]
                                .as_i64()
                                .and_then(|r| i32::try_from(r).ok())
                                .ok_or_else(|| {
                                    invalid(format!(
                                        "spec.replicas: Invalid value: {}",
                                        op["value"]
                                    ))
                                })?,
                        );
                    }
                    _ => {
                        return Err(invalid(format!(
                            "the fake API server only patches /spec/replicas, not {op}"
                        )));
                    }
                }
            }
            Ok(replicas)
        }
        other => Err(Refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml ({other:?})"
            ),
        )),
    }
}

/// The replicas a PUT of the scale sets, or the error answer (409 on a stale
/// resourceVersion).
fn put_replicas(name: &str, body: &str, resource_version: u64) -> Result<Option<i32>, Refusal> {
    let value: Value = serde_json::from_str(body).map_err(|e| {
        Refusal(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("error decoding Scale: {e}"),
        )
    })?;
    if let Some(n) = value.pointer("/metadata/name").and_then(Value::as_str)
        && n != name
    {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("the name of the object ({n}) does not match the name on the URL ({name})"),
        ));
    }
    if let Some(rv) = value
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
        && rv != resource_version.to_string()
    {
        return Err(Refusal(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on deployments.apps \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
        ));
    }
    match value.pointer("/spec/replicas") {
        Some(v) => v
            .as_i64()
            .and_then(|r| i32::try_from(r).ok())
            .map(Some)
            .ok_or_else(|| {
                Refusal(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!("spec.replicas: Invalid value: {v}"),
                )
            }),
        // A Scale without spec.replicas sets 0, as the real API server does.
        None => Ok(Some(0)),
    }
}

/// One requirement of a label selector.
#[derive(Debug, PartialEq, Eq)]
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Eq(k, v) => labels.get(k) == Some(v),
            Requirement::NotEq(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        }
    }
}

/// Parses a `labelSelector` (`a=b,c!=d,e in (f,g),h notin (i),j,!k`).
fn parse_selector(text: &str) -> Result<Vec<Requirement>, String> {
    // Split on commas outside parentheses.
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    let set = |rest: &str| -> Result<Vec<String>, String> {
        let inner = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| format!("expected a (set) in {rest:?}"))?;
        Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
    };
    let mut out = Vec::new();
    for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let req = if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Requirement::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, rest)) = part.split_once(" notin ") {
            Requirement::NotIn(k.trim().into(), set(rest)?)
        } else if let Some((k, rest)) = part.split_once(" in ") {
            Requirement::In(k.trim().into(), set(rest)?)
        } else if let Some(k) = part.strip_prefix('!') {
            Requirement::NotExists(k.trim().into())
        } else if part.contains(char::is_whitespace) {
            return Err(format!("{part:?}"));
        } else {
            Requirement::Exists(part.into())
        };
        out.push(req);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_match() {
        let sel = parse_selector("app=lir-data, tier!=web,zone in (a, b),!canary,team").unwrap();
        assert_eq!(sel.len(), 5);
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let yes = labels(&[("app", "lir-data"), ("zone", "b"), ("team", "x")]);
        assert!(sel.iter().all(|r| r.matches(&yes)));
        let canary = labels(&[
            ("app", "lir-data"),
            ("zone", "b"),
            ("team", "x"),
            ("canary", "1"),
        ]);
        assert!(!sel.iter().all(|r| r.matches(&canary)));
        let other_zone = labels(&[("app", "lir-data"), ("zone", "c"), ("team", "x")]);
        assert!(!sel.iter().all(|r| r.matches(&other_zone)));
        assert!(parse_selector("app in a,b").is_err());
        assert!(parse_selector("").unwrap().is_empty());
    }

    #[test]
    fn patches_of_each_media_type_set_replicas() {
        let merge = r#"{"spec":{"replicas":4}}"#;
        for ct in [
            "application/merge-patch+json",
            "application/strategic-merge-patch+json; charset=utf-8",
            "application/apply-patch+yaml",
        ] {
            assert_eq!(
                patched_replicas(Some(ct), merge).ok(),
                Some(Some(4)),
                "{ct}"
            );
        }
        let ops = r#"[{"op":"replace","path":"/spec/replicas","value":2}]"#;
        assert_eq!(
            patched_replicas(Some("application/json-patch+json"), ops).ok(),
            Some(Some(2))
        );
        let refused = patched_replicas(Some("application/json"), merge).unwrap_err();
        assert_eq!(refused.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let other_path = r#"[{"op":"replace","path":"/spec/paused","value":true}]"#;
        let refused =
            patched_replicas(Some("application/json-patch+json"), other_path).unwrap_err();
        assert_eq!(refused.0, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn a_put_with_a_stale_resource_version_conflicts() {
        let body =
            r#"{"metadata":{"name":"lir-data","resourceVersion":"7"},"spec":{"replicas":2}}"#;
        assert_eq!(put_replicas("lir-data", body, 7).ok(), Some(Some(2)));
        assert_eq!(
            put_replicas("lir-data", body, 8).unwrap_err().0,
            StatusCode::CONFLICT
        );
        assert_eq!(
            put_replicas("other", body, 7).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
    }
}

#[cfg(test)]
mod through_kube {
    //! The fake as kube's own calls see it: a PUT of the scale (replace), with the
    //! resourceVersion conflict.

    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Api, PostParams};

    #[tokio::test]
    async fn replace_scale_honours_the_resource_version() {
        let fake = FakeApiServer::start();
        fake.add_deployment("cm", "lir-data", &[("app", "lir-data")], 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        fake.write_kubeconfig(&path, "cm").unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&path).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        assert_eq!(
            client.apiserver_version().await.unwrap().git_version,
            "v1.35.0-fake"
        );
        let api: Api<Deployment> = Api::default_namespaced(client);
        let mut scale = api.get_scale("lir-data").await.unwrap();
        let stale = scale.clone();
        scale.spec.as_mut().unwrap().replicas = Some(2);
        api.replace_scale("lir-data", &PostParams::default(), &scale)
            .await
            .unwrap();
        assert_eq!(fake.replicas("cm", "lir-data"), Some(2));
        let err = api
            .replace_scale("lir-data", &PostParams::default(), &stale)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
            "{err:?}"
        );
        assert_eq!(fake.replicas("cm", "lir-data"), Some(2));
        let puts: Vec<_> = fake.writes().into_iter().map(|r| r.method).collect();
        assert_eq!(puts, ["PUT", "PUT"]);
    }
}

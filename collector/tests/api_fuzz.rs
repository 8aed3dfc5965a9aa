//! The API fuzz target (issue 13): random and hostile requests through the whole router (every
//! layer, the real SQLite store) with tower's `oneshot`. Whatever the method, path, query,
//! credentials and body, the collector answers; never a 500 (the store is healthy, so a 500
//! is a bug, and would be a panic contained by the error layer); every error is
//! `{"error": "..."}` JSON; no answer leaks internal text (the database path).
//!
//! `cargo test` runs a short campaign (`PROPTEST_CASES`, default 256) and replays the corpus
//! (`tests/api_fuzz/corpus.json`: requests that found bugs or probe known hazards); failures
//! proptest shrinks are saved to `tests/api_fuzz.proptest-regressions`. A longer campaign:
//! `PROPTEST_CASES=20000 cargo test -p tenet-collector --test api_fuzz`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{Value, json};
use tenet_collector::api::{AppState, router};
use tenet_collector::store::Store;
use tenet_collector::store::sqlite::SqliteStore;
use tower::ServiceExt as _;

/// One collector for the whole campaign: requests change its state as they go.
struct Fixture {
    app: Router,
    runtime: tokio::runtime::Runtime,
    admin: String,
    node_a: (String, String),
    node_b: (String, String),
    db_dir: PathBuf,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("fuzz.db")).unwrap());
        let library =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rulesets/library/spdc-node");
        let bundle = tenet_rulesets::load_path(&library).unwrap();
        store
            .edit_bundle(
                "fuzz",
                Box::new(move |b| {
                    *b = bundle;
                    Ok(("import".into(), "library".into(), String::new()))
                }),
            )
            .unwrap();
        let admin = tenet_collector::auth::new_admin_token();
        store
            .create_admin_token("admin", &tenet_collector::auth::digest(&admin))
            .unwrap();
        let node = |name: &str| {
            let id = format!("00000000-0000-4000-8000-{:012}", name.len());
            let secret = tenet_collector::auth::new_secret();
            store
                .register_node(&id, name, &tenet_collector::auth::digest(&secret), "fuzz")
                .unwrap();
            (id, secret)
        };
        let node_a = node("node-a");
        let node_b = node("node-bb");
        let state = AppState::new(store);
        Fixture {
            app: router(state),
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            admin,
            node_a,
            node_b,
            db_dir: dir.path().to_path_buf(),
            _dir: dir,
        }
    })
}

/// A request as the fuzzer builds it (and as the corpus stores it).
#[derive(Debug, Clone, serde::Deserialize)]
struct Req {
    method: String,
    path: String,
    #[serde(default)]
    auth: Auth,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    body: Option<BodySpec>,
}

#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Auth {
    #[default]
    None,
    Admin,
    NodeA,
    NodeB,
    Garbage,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum BodySpec {
    Json(Value),
    Text(String),
    Bytes(Vec<u8>),
}

/// Sends `r` through the router and checks every property; `Err` says which failed.
fn check(r: &Req) -> Result<(), String> {
    let f = fixture();
    let path = r
        .path
        .replace("{a}", &f.node_a.0)
        .replace("{b}", &f.node_b.0);
    let mut builder = Request::builder().method(r.method.as_str()).uri(&path);
    let auth = match r.auth {
        Auth::None => None,
        Auth::Admin => Some(format!("Bearer {}", f.admin)),
        Auth::NodeA | Auth::NodeB => {
            let (id, secret) = if matches!(r.auth, Auth::NodeA) {
                &f.node_a
            } else {
                &f.node_b
            };
            let b = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
            Some(format!("Basic {b}"))
        }
        Auth::Garbage => Some("Basic !!not base64 %00".to_string()),
    };
    if let Some(a) = auth {
        builder = builder.header(header::AUTHORIZATION, a);
    }
    if let Some(ct) = &r.content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    let body = match &r.body {
        None => Body::empty(),
        Some(BodySpec::Json(v)) => Body::from(serde_json::to_vec(v).unwrap()),
        Some(BodySpec::Text(t)) => Body::from(t.clone()),
        Some(BodySpec::Bytes(b)) => Body::from(b.clone()),
    };
    // A method or URI that is not HTTP cannot reach the server: nothing to check.
    let Ok(request) = builder.body(body) else {
        return Ok(());
    };
    let (status, headers, bytes) = f.runtime.block_on(async {
        let resp = f.app.clone().oneshot(request).await.expect("infallible");
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        Ok::<_, String>((parts.status, parts.headers, bytes))
    })?;
    let text = String::from_utf8_lossy(&bytes);
    if status.is_server_error() {
        return Err(format!("{status}: {text}"));
    }
    if text.contains(&*f.db_dir.to_string_lossy()) {
        return Err(format!(
            "{status}: the answer holds the database path: {text}"
        ));
    }
    if (status.is_client_error() || status.is_server_error()) && r.method != "HEAD" {
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let error = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::len));
        if !is_json || error.is_none_or(|len| len == 0) {
            return Err(format!("{status}: not a JSON error: {text}"));
        }
    }
    Ok(())
}

// ---- strategies ----

/// Path segments: names that exist, and hostile ones.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{a}".to_string()),
        Just("{b}".to_string()),
        Just("node-a".to_string()),
        Just("spdc.kernel".to_string()),
        Just("spdc.node".to_string()),
        Just("spdc.packages".to_string()),
        Just("spd-service".to_string()),
        Just("svc1".to_string()),
        Just("1".to_string()),
        Just("-1".to_string()),
        Just("99999999999999999999".to_string()),
        Just("..".to_string()),
        Just("%2e%2e".to_string()),
        Just("a%2Fb".to_string()),
        Just("%00".to_string()),
        Just("a%0Ab".to_string()),
        Just("%E2%80%AE".to_string()),
        Just("%FF%FE".to_string()),
        Just("%".to_string()),
        Just("x".repeat(300)),
        "[a-zA-Z0-9._~-]{1,12}",
        proptest::collection::vec(any::<u8>(), 1..16)
            .prop_map(|b| { b.iter().map(|c| format!("%{c:02X}")).collect::<String>() }),
    ]
}

/// Every route of the API (with its parameters as `{}`), plus a few that do not exist.
const ROUTES: &[&str] = &[
    "/api/v1/nodes",
    "/api/v1/nodes/{}",
    "/api/v1/nodes/{}/facts",
    "/api/v1/nodes/{}/policy",
    "/api/v1/nodes/{}/results",
    "/api/v1/nodes/{}/status",
    "/api/v1/nodes/{}/runs",
    "/api/v1/nodes/{}/attachments",
    "/api/v1/nodes/{}/modulesets/{}",
    "/api/v1/nodes/{}/rulesets/{}",
    "/api/v1/nodes/{}/{}/{}",
    "/api/v1/services/{}/attachments",
    "/api/v1/services/{}/config",
    "/api/v1/services/{}/modulesets/{}",
    "/api/v1/services/{}/rulesets/{}",
    "/api/v1/forms",
    "/api/v1/forms/{}",
    "/api/v1/rulesets",
    "/api/v1/rulesets/{}",
    "/api/v1/rulesets/{}/variables/{}",
    "/api/v1/rulesets/{}/children/{}",
    "/api/v1/filtersets",
    "/api/v1/filtersets/{}",
    "/api/v1/modulesets",
    "/api/v1/modulesets/{}",
    "/api/v1/modulesets/{}/modules/{}",
    "/api/v1/modulesets/{}/children/{}",
    "/api/v1/modulesets/{}/rulesets/{}",
    "/api/v1/export",
    "/api/v1/import",
    "/api/v1/actions",
    "/api/v1/actions/{}",
    "/api/v1/actions/{}/cancel",
    "/api/v1/nodes/{}/actions",
    "/api/v1/nodes/{}/actions/dequeue",
    "/api/v1/nodes/{}/actions/ack",
    "/api/v1/nodes/{}/actions/result",
    "/api/v1/policies/{}",
    "/api/v1/audit",
    "/api/v1/nodes/{}/releases/{}",
    "/api/v1/nodes/{}/releases",
    "/api/v1/releases",
    "/health",
    "/ready",
    "/metrics",
    "/api/v2/{}",
    "/{}",
];

fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("limit"),
        Just("moduleset"),
        Just("service"),
        Just("format"),
        Just("status"),
        Just("node"),
        Just("version"),
        Just("bogus"),
    ];
    let value = prop_oneof![
        Just("10".to_string()),
        Just("-1".to_string()),
        Just("abc".to_string()),
        Just("toml".to_string()),
        Just("spdc.kernel,spdc.kernel,nope".to_string()),
        Just("svc1".to_string()),
        Just("W,R".to_string()),
        Just("%FF".to_string()),
        Just("99999999999999999999".to_string()),
        "[a-z0-9,.%]{0,10}",
    ];
    proptest::collection::vec((key, value), 0..3).prop_map(|kv| {
        if kv.is_empty() {
            String::new()
        } else {
            let q: Vec<String> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("?{}", q.join("&"))
        }
    })
}

fn path() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(ROUTES),
        proptest::collection::vec(segment(), 3),
        query(),
    )
        .prop_map(|(route, segs, q)| {
            let mut out = String::new();
            let mut segs = segs.into_iter();
            let mut parts = route.split("{}").peekable();
            while let Some(p) = parts.next() {
                out.push_str(p);
                if parts.peek().is_some() {
                    out.push_str(&segs.next().unwrap_or_default());
                }
            }
            out + &q
        })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,20}".prop_map(Value::String),
        Just(Value::String("x".repeat(5000))),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec(("[a-z_]{1,10}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Bodies shaped like the API's, with a field replaced, added or removed.
fn shaped_body() -> impl Strategy<Value = Value> {
    let shapes = vec![
        json!({"name": "fz"}),
        json!({"name": "fz", "team_responsible": "SPD", "services": ["svc1"]}),
        json!({"team_responsible": "SPD", "services": ["svc1", "svc2"]}),
        json!({"facts": {"node": {"os_name": "Linux"}, "packages": [{"name": "p", "version": "1", "arch": "x"}], "tags": []}, "listener_port": 1214, "services": ["svc1"]}),
        json!({"run_id": "r1", "agent_version": "f", "action": "check", "policy_hash": "h", "service": null,
               "modules": [{"module": "m", "moduleset": "ms", "status": "ok", "actions": [{"action": "check", "exit_code": 0, "log": "", "duration_ms": 1}], "duration_ms": 1}],
               "summary": {"ok": 1, "nok": 0, "na": 0}, "duration_ms": 1}),
        json!({"name": "fz", "kind": "contextual", "filterset": "servers with systemd", "children": ["spdc.kernel"], "variables": [{"name": "v", "class": "raw", "value": 1}], "publications": ["SPD"]}),
        json!({"class": "sysctl", "value": {"key": "a", "value": 1}}),
        json!({"class": "raw", "text": "x"}),
        json!({"name": "fz", "filters": [{"table": "nodes", "field": "os_name", "op": "=", "value": "Linux"}, {"logical_op": "OR", "filterset": "servers with systemd"}]}),
        json!({"name": "fz", "modules": [{"name": "m1", "autofix": true}, {"name": "m1"}], "children": ["spdc.kernel"], "rulesets": ["spdc.kernel"]}),
        json!({"autofix": true}),
        json!({"kind": "explicit", "public": false, "filterset": null}),
        json!({"inputs": {"svcname": "svc1"}, "defaults": true}),
        json!({"node": "node-a", "command": "compliance check"}),
        json!({"ids": [1, 2, 3]}),
        json!({"id": 1, "ret": 0, "stdout": "", "stderr": ""}),
        json!({"version": "1.0", "state": "present"}),
    ];
    (
        proptest::sample::select(shapes),
        proptest::option::of(("[a-z_]{1,12}", json_value())),
        any::<bool>(),
    )
        .prop_map(|(mut v, change, remove)| {
            if let Some(obj) = v.as_object_mut() {
                if remove && let Some(k) = obj.keys().next().cloned() {
                    obj.remove(&k);
                }
                if let Some((k, val)) = change {
                    // Half the time an existing field gets a value of another type.
                    let key = obj.keys().find(|x| x.len() % 2 == k.len() % 2).cloned();
                    obj.insert(key.unwrap_or(k), val);
                }
            }
            v
        })
}

fn body() -> impl Strategy<Value = Option<BodySpec>> {
    prop_oneof![
        Just(None),
        shaped_body().prop_map(|v| Some(BodySpec::Json(v))),
        json_value().prop_map(|v| Some(BodySpec::Json(v))),
        ".{0,40}".prop_map(|t| Some(BodySpec::Text(t))),
        Just(Some(BodySpec::Text(
            "[[ruleset]]\nname = \"fz/..\"\n".to_string()
        ))),
        Just(Some(BodySpec::Text("[".repeat(10_000)))),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| Some(BodySpec::Bytes(b))),
    ]
}

fn request() -> impl Strategy<Value = Req> {
    let method = prop_oneof![
        4 => Just("GET".to_string()),
        4 => Just("POST".to_string()),
        3 => Just("PUT".to_string()),
        2 => Just("DELETE".to_string()),
        1 => Just("PATCH".to_string()),
        1 => Just("HEAD".to_string()),
        1 => Just("OPTIONS".to_string()),
        1 => "[A-Z]{1,8}",
    ];
    let auth = prop_oneof![
        1 => Just(Auth::None),
        4 => Just(Auth::Admin),
        3 => Just(Auth::NodeA),
        1 => Just(Auth::NodeB),
        1 => Just(Auth::Garbage),
    ];
    let ct = prop_oneof![
        Just(Some("application/json".to_string())),
        Just(Some("application/toml".to_string())),
        Just(None),
        Just(Some("text/plain".to_string())),
    ];
    (method, path(), auth, ct, body()).prop_map(|(method, path, auth, content_type, body)| Req {
        method,
        path,
        auth,
        content_type,
        body,
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_requests_get_honest_answers(r in request()) {
        if let Err(e) = check(&r) {
            prop_assert!(false, "{} {}: {e}", r.method, r.path);
        }
    }
}

#[test]
fn the_corpus_gets_honest_answers() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api_fuzz/corpus.json");
    let corpus: Vec<Req> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(corpus.len() >= 20, "the corpus shrank");
    let failures: Vec<String> = corpus
        .iter()
        .filter_map(|r| {
            check(r)
                .err()
                .map(|e| format!("{} {}: {e}", r.method, r.path))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

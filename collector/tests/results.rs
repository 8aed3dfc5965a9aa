//! `POST /api/v1/nodes/{node}/results` reads the run-report types of
//! `tenet_rulesets::api::report`, the ones the agent serializes: what an agent posts is
//! recorded as it is, and a word outside the vocabulary (an action, status or kind) is a 400
//! naming the field, while other mismatches stay axum's 422. Through the whole router and the
//! real SQLite store, with tower's `oneshot`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use base64::Engine as _;
use serde_json::{Value, json};
use tenet_collector::api::{AppState, router};
use tenet_collector::store::Store;
use tenet_collector::store::sqlite::SqliteStore;
use tenet_rulesets::api::{
    ActionReport, ModuleKind, ModuleReport, NodeStatus, RuleReport, RunAction, RunReport,
    RunResults, Status,
};
use tower::ServiceExt as _;

const NODE: &str = "00000000-0000-4000-8000-000000000001";

struct Collector {
    app: Router,
    auth: String,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Collector {
    fn new() -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("c.db")).unwrap());
        let secret = tenet_collector::auth::new_secret();
        store
            .register_node(
                NODE,
                "node1",
                &tenet_collector::auth::digest(&secret),
                "test",
            )
            .unwrap();
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{NODE}:{secret}"))
        );
        Collector {
            app: router(AppState::new(store)),
            auth,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            _dir: dir,
        }
    }

    /// (status, body) of a request as the node.
    fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> (u16, Value) {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, &self.auth);
        if body.is_some() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        let req = b.body(body.map_or_else(Body::empty, Body::from)).unwrap();
        self.runtime.block_on(async {
            let resp = self.app.clone().oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        })
    }

    fn post(&self, body: &Value) -> (u16, Value) {
        let path = format!("/api/v1/nodes/{NODE}/results");
        self.call("POST", &path, Some(serde_json::to_vec(body).unwrap()))
    }
}

/// A run as the engine reports it and the agent posts it.
fn agent_run(run_id: &str) -> RunResults {
    let report = RunReport {
        action: RunAction::Check,
        policy_hash: "h".into(),
        modules: vec![
            ModuleReport {
                module: "spdc.kernel".into(),
                moduleset: "spdc.kernel".into(),
                kind: Some(ModuleKind::Auto),
                status: Status::Nok,
                actions: vec![
                    ActionReport {
                        action: RunAction::Check,
                        exit_code: 1,
                        log: "ERR: swappiness\n".into(),
                        duration_ms: 1,
                    },
                    ActionReport {
                        action: RunAction::Fixable,
                        exit_code: 0,
                        log: String::new(),
                        duration_ms: 1,
                    },
                ],
                rules: Some(vec![RuleReport {
                    variable: "spdc_kernel_sysctl".into(),
                    class: "sysctl".into(),
                    status: Status::Nok,
                    message: "swappiness".into(),
                }]),
                duration_ms: 2,
            },
            ModuleReport {
                module: "50-script".into(),
                moduleset: "ms".into(),
                kind: Some(ModuleKind::Script),
                status: Status::NotApplicable,
                actions: vec![],
                rules: None,
                duration_ms: 0,
            },
        ],
        summary: [Status::Nok, Status::NotApplicable].into_iter().collect(),
        duration_ms: 3,
    };
    RunResults::new(report, run_id.into(), "test".into(), None, None)
}

/// A change made to a valid body.
type Change = fn(&mut Value);

#[test]
fn what_the_agent_posts_is_recorded_as_it_is() {
    let c = Collector::new();
    let run = agent_run("r1");
    let (status, body) = c.post(&serde_json::to_value(&run).unwrap());
    assert_eq!(status, 201, "{body}");
    let (status, body) = c.call("GET", &format!("/api/v1/nodes/{NODE}/status"), None);
    assert_eq!(status, 200, "{body}");
    let node: NodeStatus = serde_json::from_value(body).unwrap();
    assert_eq!((node.summary.nok, node.summary.na), (1, 1));
    let kernel = node
        .modules
        .iter()
        .find(|m| m.module == "spdc.kernel")
        .unwrap();
    assert_eq!(kernel.status, Status::Nok);
    assert_eq!(kernel.action, RunAction::Check);
    assert_eq!(kernel.rules, run.modules[0].rules);
}

#[test]
fn a_word_outside_the_vocabulary_is_a_400_naming_the_field() {
    let c = Collector::new();
    let valid = serde_json::to_value(agent_run("r")).unwrap();
    let cases: [(&str, Change, &str); 5] = [
        (
            "bad-action",
            |v| v["action"] = json!("bogus"),
            r#"action: "bogus" is not one of check, fix, fixable, auto"#,
        ),
        (
            "bad-status",
            |v| v["modules"][1]["status"] = json!("weird"),
            r#"modules[1].status: "weird" is not one of ok, nok, n/a"#,
        ),
        (
            "bad-kind",
            |v| v["modules"][0]["kind"] = json!("binary"),
            r#"modules[0].kind: "binary" is not one of script, auto"#,
        ),
        (
            "bad-step",
            |v| v["modules"][0]["actions"][1]["action"] = json!("repair"),
            r#"modules[0].actions[1].action: "repair" is not one of check, fix, fixable, auto"#,
        ),
        (
            "bad-rule-status",
            |v| v["modules"][0]["rules"][0]["status"] = json!("NOK"),
            r#"modules[0].rules[0].status: "NOK" is not one of ok, nok, n/a"#,
        ),
    ];
    for (id, change, message) in cases {
        let mut body = valid.clone();
        body["run_id"] = json!(id);
        change(&mut body);
        let (status, answer) = c.post(&body);
        assert_eq!((status, answer["error"].as_str()), (400, Some(message)));
    }
}

#[test]
fn other_mismatches_stay_422_and_nothing_is_recorded() {
    let c = Collector::new();
    let valid = serde_json::to_value(agent_run("r")).unwrap();
    let cases: [(Change, &str); 3] = [
        (
            |v| v["modules"][0]["extra"] = json!(1),
            "modules[0].extra: unknown field `extra`",
        ),
        (
            |v| v["action"] = json!(5),
            "action: invalid type: integer `5`, expected a string",
        ),
        (
            |v| {
                v.as_object_mut().unwrap().remove("summary");
            },
            "missing field `summary`",
        ),
    ];
    for (change, message) in cases {
        let mut body = valid.clone();
        change(&mut body);
        let (status, answer) = c.post(&body);
        let error = answer["error"].as_str().unwrap_or_default();
        assert_eq!(status, 422, "{answer}");
        assert!(error.contains(message), "{error}");
    }
    let (_, runs) = c.call("GET", &format!("/api/v1/nodes/{NODE}/runs"), None);
    assert_eq!(runs, json!([]));
}

//! The lir-data deployment in Kubernetes: its replica count, scaling it through the `scale`
//! subresource, waiting for its replicas to be ready, and the pod IPs of its ready replicas
//! (the primary registry and file store, and the targets of replication).
//!
//! Every call names the namespace explicitly, so the kubeconfig context's default namespace
//! never decides which deployment is touched. Reads are plain GETs; the only write is the
//! scale patch, so a check built on [`DeploymentRef::replicas`] changes nothing.
//!
//! Waiting polls (250 ms doubling to 2 s) rather than watching: a handful of GETs per scale
//! is cheap, and a poll survives API server restarts and proxies that cut long requests.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
/// A connection to a cluster's API server.
pub use kube::Client;
use kube::Config;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::{Error, Result};
use crate::progress::Progress;

/// The field manager recorded on our scale patches, so `kubectl get -o yaml
/// --show-managed-fields` shows who set the replica count.
pub const FIELD_MANAGER: &str = "tenet";

pub use crate::deployment::{DeploymentRef, ReplicaState};

/// First and last pause between two polls of [`DeploymentRef::wait_ready`].
const POLL_FIRST: Duration = Duration::from_millis(250);
const POLL_MAX: Duration = Duration::from_secs(2);

impl DeploymentRef {
    /// A client for the deployment's cluster: the kubeconfig file (and context) when given,
    /// else kube's inference (with the context when given).
    pub async fn client(&self) -> Result<Client> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let (source, config) = match &self.kubeconfig {
            Some(path) => {
                let source = format!("kubeconfig {}", path.display());
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| Error::Kube {
                    object: source.clone(),
                    message: e.to_string(),
                })?;
                let config = Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| e.to_string());
                (source, config)
            }
            None if self.context.is_some() => (
                "kubeconfig".to_string(),
                Config::from_kubeconfig(&options)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            None => (
                "kubeconfig".to_string(),
                Config::infer().await.map_err(|e| e.to_string()),
            ),
        };
        let config = config.map_err(|message| Error::Kube {
            object: source.clone(),
            message,
        })?;
        Client::try_from(config).map_err(|e| Error::Kube {
            object: source,
            message: e.to_string(),
        })
    }

    fn deployments(&self, client: &Client) -> Api<Deployment> {
        Api::namespaced(client.clone(), &self.namespace)
    }

    async fn get(&self, client: &Client) -> Result<Deployment> {
        self.deployments(client)
            .get(&self.name)
            .await
            .map_err(|e| self.error(e))
    }

    /// The deployment's replica counts (one GET of the deployment).
    pub async fn replicas(&self, client: &Client) -> Result<ReplicaState> {
        Ok(replica_state(&self.get(client).await?))
    }

    /// Sets the deployment's wanted replicas through the `scale` subresource (a merge patch
    /// of `spec.replicas`, field manager [`FIELD_MANAGER`]), which touches nothing else of
    /// the deployment and needs only the `deployments/scale` permission.
    pub async fn scale(&self, client: &Client, replicas: i32) -> Result<()> {
        if replicas < 0 {
            return Err(Error::Rule(format!(
                "replicas: {replicas} is negative (deployment {})",
                self.object()
            )));
        }
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        self.deployments(client)
            .patch_scale(
                &self.name,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Waits until at least `replicas` replicas are ready and, when the spec asks for no
    /// more than `replicas` (a scale-down), until the surplus pods are gone: the deployment
    /// counts no more than `replicas` pods and none of the pods its selector selects is
    /// terminating (a pod being deleted still serves, or still holds its volume, until it
    /// ends). Polls (250 ms doubling to 2 s). Returns the state that satisfied it; after
    /// `timeout`, an error saying what was expected and what was found.
    pub async fn wait_ready(
        &self,
        client: &Client,
        replicas: i32,
        timeout: Duration,
        progress: &dyn Progress,
    ) -> Result<ReplicaState> {
        progress.info(&format!(
            "Waiting for {replicas} {} replicas to start...",
            self.name
        ));
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = POLL_FIRST;
        let mut said_terminating = false;
        loop {
            let deployment = self.get(client).await?;
            let state = replica_state(&deployment);
            let mut terminating = 0;
            if state.ready >= replicas {
                if state.spec > replicas {
                    // More are wanted than we wait for: the extra pods are not surplus.
                    return self.ready(state, replicas, progress);
                }
                if state.current <= replicas {
                    terminating = self.terminating_pods(client, &deployment).await?;
                    if terminating == 0 {
                        return self.ready(state, replicas, progress);
                    }
                    if !said_terminating {
                        progress.info(&format!(
                            "Waiting for {terminating} surplus {} pods to terminate...",
                            self.name
                        ));
                        said_terminating = true;
                    }
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                let surplus = (state.current - replicas).max(0) + terminating as i32;
                return Err(Error::Kube {
                    object: self.object(),
                    message: format!(
                        "timed out after {}s waiting for replicas: expected {replicas} ready \
                         and no surplus pod, {} ready, {surplus} surplus pods not yet gone ({} \
                         wanted by the spec, {} available, {} updated, {terminating} \
                         terminating)",
                        timeout.as_secs_f64(),
                        state.ready,
                        state.spec,
                        state.available,
                        state.updated
                    ),
                });
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    fn ready(
        &self,
        state: ReplicaState,
        replicas: i32,
        progress: &dyn Progress,
    ) -> Result<ReplicaState> {
        progress.info(&format!(
            "{} {} replicas ready (expected {replicas})",
            state.ready, self.name
        ));
        Ok(state)
    }

    /// The pods the deployment's selector selects that are being deleted.
    async fn terminating_pods(&self, client: &Client, deployment: &Deployment) -> Result<usize> {
        let selector = deployment
            .spec
            .as_ref()
            .map(|s| label_selector_query(&s.selector))
            .unwrap_or_default();
        if selector.is_empty() {
            return Ok(0);
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.error(e))?;
        Ok(list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
            .count())
    }

    /// The pod IPs of the deployment's ready replicas, sorted: the pods its
    /// `spec.selector` selects (a label selector query) that are Running, not being
    /// deleted, have the condition Ready=True and have a pod IP.
    pub async fn replica_endpoints(&self, client: &Client) -> Result<Vec<IpAddr>> {
        let deployment = self.get(client).await?;
        let selector = deployment
            .spec
            .as_ref()
            .map(|s| label_selector_query(&s.selector))
            .unwrap_or_default();
        if selector.is_empty() {
            // An empty selector would select every pod of the namespace.
            return Err(Error::Kube {
                object: self.object(),
                message: "the deployment has no spec.selector".into(),
            });
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.error(e))?;
        let mut ips = Vec::new();
        for pod in &list.items {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(status) = &pod.status else { continue };
            let running = status.phase.as_deref() == Some("Running");
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let Some(ip) = status.pod_ip.as_deref().filter(|ip| !ip.is_empty()) else {
                continue;
            };
            if !(running && ready) {
                continue;
            }
            let ip: IpAddr = ip.parse().map_err(|_| Error::Kube {
                object: self.object(),
                message: format!(
                    "pod {} has an invalid podIP {ip:?}",
                    pod.metadata.name.as_deref().unwrap_or("?")
                ),
            })?;
            ips.push(ip);
        }
        ips.sort();
        Ok(ips)
    }

    /// An API error about this deployment, in words an operator acts on.
    fn error(&self, e: kube::Error) -> Error {
        let object = self.object();
        let message = match &e {
            kube::Error::Api(status) => match status.code {
                404 => format!("deployment {object} not found"),
                401 => format!(
                    "unauthorized (HTTP 401): the API server refused the kubeconfig's \
                     credentials: {}",
                    status.message
                ),
                403 => format!("forbidden (HTTP 403): {}", status.message),
                code => format!("{} (HTTP {code} {})", status.message, status.reason),
            },
            other => other.to_string(),
        };
        Error::Kube { object, message }
    }
}

/// The replica counts of a deployment object.
pub fn replica_state(deployment: &Deployment) -> ReplicaState {
    let status = deployment.status.as_ref();
    let count = |f: fn(&k8s_openapi::api::apps::v1::DeploymentStatus) -> Option<i32>| {
        status.and_then(f).unwrap_or(0)
    };
    ReplicaState {
        spec: deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1),
        ready: count(|s| s.ready_replicas),
        available: count(|s| s.available_replicas),
        updated: count(|s| s.updated_replicas),
        current: count(|s| s.replicas),
    }
}

/// A label selector as the `labelSelector` query parameter spells it: `k=v` for each
/// `matchLabels` entry, then the set-based form of each `matchExpressions` requirement.
/// Empty when the selector selects everything.
pub fn label_selector_query(selector: &LabelSelector) -> String {
    let empty = BTreeMap::new();
    let mut parts: Vec<String> = selector
        .match_labels
        .as_ref()
        .unwrap_or(&empty)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for req in selector.match_expressions.iter().flatten() {
        let values = req.values.as_deref().unwrap_or_default().join(",");
        parts.push(match req.operator.as_str() {
            "In" => format!("{} in ({values})", req.key),
            "NotIn" => format!("{} notin ({values})", req.key),
            "Exists" => req.key.clone(),
            _ => format!("!{}", req.key), // DoesNotExist
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    //! Mocked contract tests: a scripted tower service stands in for the API server and
    //! asserts the exact requests. They prove what we send and how we read answers, not how
    //! Kubernetes behaves.

    use super::*;
    use http::{Request, Response};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use kube::client::Body;

    fn lir_data() -> DeploymentRef {
        DeploymentRef {
            kubeconfig: None,
            context: None,
            namespace: "cm".into(),
            name: "lir-data".into(),
        }
    }

    async fn body_text(req: Request<Body>) -> String {
        let bytes = req.into_body().collect_bytes().await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn json_response(code: u16, value: serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&value).unwrap()))
            .unwrap()
    }

    #[tokio::test]
    async fn scale_sends_a_merge_patch_of_the_scale_subresource() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(req.method(), http::Method::PATCH);
            assert_eq!(
                req.uri().path(),
                "/apis/apps/v1/namespaces/cm/deployments/lir-data/scale"
            );
            assert_eq!(req.uri().query(), Some("&fieldManager=tenet"));
            assert_eq!(
                req.headers().get("content-type").unwrap(),
                "application/merge-patch+json"
            );
            let body: serde_json::Value = serde_json::from_str(&body_text(req).await).unwrap();
            assert_eq!(body, serde_json::json!({"spec": {"replicas": 3}}));
            send.send_response(json_response(
                200,
                serde_json::json!({
                    "kind": "Scale", "apiVersion": "autoscaling/v1",
                    "metadata": {"name": "lir-data", "namespace": "cm"},
                    "spec": {"replicas": 3}, "status": {"replicas": 1}
                }),
            ));
        });
        lir_data().scale(&client, 3).await.unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn negative_replicas_are_refused_before_any_request() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let err = lir_data().scale(&client, -1).await.unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
        drop(client);
        assert!(handle.next_request().await.is_none());
    }

    #[tokio::test]
    async fn a_404_status_names_the_missing_deployment() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("a request");
            assert_eq!(req.method(), http::Method::GET);
            assert_eq!(
                req.uri().path(),
                "/apis/apps/v1/namespaces/cm/deployments/lir-data"
            );
            send.send_response(json_response(
                404,
                serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure",
                    "message": "deployments.apps \"lir-data\" not found",
                    "reason": "NotFound",
                    "details": {"name": "lir-data", "group": "apps", "kind": "deployments"},
                    "code": 404
                }),
            ));
        });
        let err = lir_data().replicas(&client).await.unwrap_err();
        server.await.unwrap();
        assert!(matches!(err, Error::Kube { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "kubernetes cm/lir-data: deployment cm/lir-data not found"
        );
    }

    #[tokio::test]
    async fn other_api_errors_keep_the_status_message() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let server = tokio::spawn(async move {
            let (_req, send) = handle.next_request().await.expect("a request");
            send.send_response(json_response(
                403,
                serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure",
                    "message": "deployments.apps \"lir-data\" is forbidden: User \"x\" cannot patch resource \"deployments/scale\"",
                    "reason": "Forbidden", "code": 403
                }),
            ));
        });
        let err = lir_data().scale(&client, 2).await.unwrap_err();
        server.await.unwrap();
        let text = err.to_string();
        assert!(
            text.starts_with("kubernetes cm/lir-data: forbidden (HTTP 403)"),
            "{text}"
        );
        assert!(text.contains("cannot patch resource"), "{text}");
    }

    #[tokio::test]
    async fn replica_state_reads_spec_and_status() {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(svc, "default");
        let server = tokio::spawn(async move {
            let (_req, send) = handle.next_request().await.expect("a request");
            send.send_response(json_response(
                200,
                serde_json::json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "lir-data", "namespace": "cm"},
                    "spec": {
                        "replicas": 3,
                        "selector": {"matchLabels": {"app": "lir-data"}},
                        "template": {"metadata": {"labels": {"app": "lir-data"}},
                                     "spec": {"containers": [{"name": "registry"}]}}
                    },
                    // readyReplicas is omitted by the API server while it is 0
                    "status": {"replicas": 3, "updatedReplicas": 3, "availableReplicas": 1}
                }),
            ));
        });
        let state = lir_data().replicas(&client).await.unwrap();
        server.await.unwrap();
        assert_eq!(
            state,
            ReplicaState {
                spec: 3,
                ready: 0,
                available: 1,
                updated: 3,
                current: 3
            }
        );
    }

    #[test]
    fn selector_query_has_labels_then_expressions() {
        let selector = LabelSelector {
            match_labels: Some(BTreeMap::from([
                ("app".to_string(), "lir-data".to_string()),
                ("tier".to_string(), "data".to_string()),
            ])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "zone".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(
            label_selector_query(&selector),
            "app=lir-data,tier=data,zone in (a,b),!canary"
        );
        assert_eq!(label_selector_query(&LabelSelector::default()), "");
    }
}

#[cfg(test)]
mod loopback {
    //! Mocked contract tests through [`crate::k8s_fake::FakeApiServer`] on loopback and a
    //! real kubeconfig file: kubeconfig parsing, token auth and kube's HTTP stack are real,
    //! the API server is not Kubernetes.

    use std::sync::Mutex;

    use super::*;
    use crate::k8s_fake::FakeApiServer;

    struct Lines(Mutex<Vec<String>>);

    impl Progress for Lines {
        fn step(&self, _step: crate::Step, _detail: &str) {}
        fn percent(&self, _step: crate::Step, _percent: u8, _detail: &str) {}
        fn info(&self, message: &str) {
            self.0.lock().unwrap().push(message.to_string());
        }
    }

    /// A fake server with deployment `cm/lir-data` at 1 replica (ready), an unrelated
    /// deployment, and the kubeconfig for it.
    fn setup(dir: &tempfile::TempDir) -> (FakeApiServer, DeploymentRef) {
        let fake = FakeApiServer::start();
        fake.set_ready_delay(Some(Duration::ZERO));
        fake.add_deployment("cm", "lir-data", &[("app", "lir-data")], 1);
        fake.add_deployment("cm", "lir-svc", &[("app", "lir-svc")], 1);
        fake.set_ready_delay(Some(Duration::from_millis(200)));
        let kubeconfig = dir.path().join("kubeconfig");
        // The context's namespace is not `cm`: calls must name the namespace themselves.
        fake.write_kubeconfig(&kubeconfig, "default").unwrap();
        let deployment = DeploymentRef {
            kubeconfig: Some(kubeconfig),
            context: None,
            namespace: "cm".into(),
            name: "lir-data".into(),
        };
        (fake, deployment)
    }

    #[tokio::test]
    async fn scale_up_wait_and_list_the_replica_ips() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, lir) = setup(&dir);
        let client = lir.client().await.unwrap();
        assert_eq!(
            lir.replicas(&client).await.unwrap(),
            ReplicaState {
                spec: 1,
                ready: 1,
                available: 1,
                updated: 1,
                current: 1
            }
        );

        lir.scale(&client, 3).await.unwrap();
        assert_eq!(fake.replicas("cm", "lir-data"), Some(3));
        assert_eq!(fake.replicas("cm", "lir-svc"), Some(1));
        let writes = fake.writes();
        assert_eq!(writes.len(), 1, "{writes:#?}");
        assert_eq!(writes[0].method, "PATCH");
        assert_eq!(
            writes[0].path,
            "/apis/apps/v1/namespaces/cm/deployments/lir-data/scale"
        );
        assert_eq!(
            writes[0].content_type.as_deref(),
            Some("application/merge-patch+json")
        );

        let lines = Lines(Mutex::new(Vec::new()));
        let state = lir
            .wait_ready(&client, 3, Duration::from_secs(60), &lines)
            .await
            .unwrap();
        assert_eq!(state.spec, 3);
        assert!(state.ready >= 3, "{state:?}");
        let lines = lines.0.into_inner().unwrap();
        assert_eq!(lines[0], "Waiting for 3 lir-data replicas to start...");

        let ips = lir.replica_endpoints(&client).await.unwrap();
        let want: Vec<IpAddr> = ["10.88.0.8", "10.88.0.10", "10.88.0.11"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        // lir-data's first pod got .8, lir-svc's .9; the two new ones .10 and .11.
        assert_eq!(ips, want);
        let list = fake
            .requests()
            .into_iter()
            .find(|r| r.path == "/api/v1/namespaces/cm/pods")
            .expect("a pod list");
        assert_eq!(list.query.as_deref(), Some("&labelSelector=app%3Dlir-data"));
    }

    #[tokio::test]
    async fn endpoints_leave_out_pods_not_running_or_not_ready_or_without_ip() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, lir) = setup(&dir);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let labels = [("app", "lir-data")];
        fake.add_pod("cm", "lir-data-x-pending", &labels, "Pending", false, None);
        fake.add_pod(
            "cm",
            "lir-data-x-unready",
            &labels,
            "Running",
            false,
            ip("10.0.0.2"),
        );
        fake.add_pod("cm", "lir-data-x-noip", &labels, "Running", true, None);
        fake.add_pod(
            "cm",
            "lir-data-x-failed",
            &labels,
            "Failed",
            true,
            ip("10.0.0.3"),
        );
        fake.add_pod(
            "cm",
            "lir-data-x-extra",
            &labels,
            "Running",
            true,
            ip("10.0.0.1"),
        );
        fake.add_pod(
            "other",
            "lir-data-y",
            &labels,
            "Running",
            true,
            ip("10.0.0.4"),
        );
        let client = lir.client().await.unwrap();
        let ips = lir.replica_endpoints(&client).await.unwrap();
        assert_eq!(ips, vec![ip("10.0.0.1").unwrap(), ip("10.88.0.8").unwrap()]);
    }

    #[tokio::test]
    async fn a_wait_that_times_out_says_expected_and_ready() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, lir) = setup(&dir);
        fake.set_ready_delay(None);
        let client = lir.client().await.unwrap();
        lir.scale(&client, 2).await.unwrap();
        let err = lir
            .wait_ready(&client, 2, Duration::from_millis(600), &crate::NoProgress)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Kube { .. }), "{err:?}");
        assert!(
            text.starts_with("kubernetes cm/lir-data: timed out"),
            "{text}"
        );
        assert!(
            text.contains("expected 2 ready and no surplus pod, 1 ready"),
            "{text}"
        );
        // Polled more than once, read only.
        let gets = fake
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("/deployments/lir-data"))
            .count();
        assert!(gets >= 2, "{gets}");
        assert_eq!(fake.writes().len(), 1);
    }

    #[tokio::test]
    async fn a_scale_down_waits_for_the_surplus_pods_to_terminate() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, lir) = setup(&dir);
        let client = lir.client().await.unwrap();
        lir.scale(&client, 3).await.unwrap();
        lir.wait_ready(&client, 3, Duration::from_secs(30), &crate::NoProgress)
            .await
            .unwrap();
        // Pods take 1.5 s to terminate after the scale-down.
        fake.set_termination_delay(Some(Duration::from_millis(1500)));
        lir.scale(&client, 1).await.unwrap();
        assert_eq!(fake.terminating_pods("cm"), 2);
        let lines = Lines(Mutex::new(Vec::new()));
        let state = lir
            .wait_ready(&client, 1, Duration::from_secs(30), &lines)
            .await
            .unwrap();
        assert_eq!((state.spec, state.current), (1, 1));
        // It returned only once the surplus pods were gone, having said it waited for them.
        assert_eq!(fake.terminating_pods("cm"), 0);
        assert_eq!(lir.replica_endpoints(&client).await.unwrap().len(), 1);
        let lines = lines.0.into_inner().unwrap();
        assert!(
            lines
                .iter()
                .any(|l| l == "Waiting for 2 surplus lir-data pods to terminate..."),
            "{lines:#?}"
        );

        // Pods that never end: the wait is bounded by the timeout, and says why.
        lir.scale(&client, 2).await.unwrap();
        lir.wait_ready(&client, 2, Duration::from_secs(30), &crate::NoProgress)
            .await
            .unwrap();
        fake.set_termination_delay(Some(Duration::from_secs(3600)));
        lir.scale(&client, 1).await.unwrap();
        let err = lir
            .wait_ready(&client, 1, Duration::from_millis(800), &crate::NoProgress)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("timed out") && err.contains("1 surplus pods not yet gone"),
            "{err}"
        );
        assert!(err.contains("1 terminating"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_deployment_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, mut lir) = setup(&dir);
        lir.name = "lir-nope".into();
        let client = lir.client().await.unwrap();
        for err in [
            lir.replicas(&client).await.unwrap_err(),
            lir.scale(&client, 2).await.unwrap_err(),
            lir.replica_endpoints(&client)
                .await
                .map(|_| ())
                .unwrap_err(),
        ] {
            assert_eq!(
                err.to_string(),
                "kubernetes cm/lir-nope: deployment cm/lir-nope not found"
            );
        }
        assert_eq!(fake.replicas("cm", "lir-nope"), None);
    }

    #[tokio::test]
    async fn a_kubeconfig_without_the_token_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let (fake, lir) = setup(&dir);
        let path = lir.kubeconfig.clone().unwrap();
        for token in [None, Some("wrong-token")] {
            fake.write_kubeconfig_with_token(&path, "cm", token)
                .unwrap();
            let client = lir.client().await.unwrap();
            let err = lir.replicas(&client).await.unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with("kubernetes cm/lir-data: unauthorized (HTTP 401)"),
                "{text}"
            );
            assert!(!text.contains(fake.token()), "{text}");
        }
        assert!(fake.requests().iter().all(|r| !r.authorized));
        assert_eq!(fake.replicas("cm", "lir-data"), Some(1));
    }

    #[tokio::test]
    async fn a_named_context_is_used_and_an_unknown_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_fake, mut lir) = setup(&dir);
        lir.context = Some("fake".into());
        let client = lir.client().await.unwrap();
        assert_eq!(lir.replicas(&client).await.unwrap().spec, 1);
        lir.context = Some("nope".into());
        let err = lir.client().await.err().expect("an error").to_string();
        assert!(err.starts_with("kubernetes kubeconfig "), "{err}");
        assert!(err.contains("nope"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_file_is_named() {
        let lir = DeploymentRef {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            context: None,
            namespace: "cm".into(),
            name: "lir-data".into(),
        };
        let err = lir.client().await.err().expect("an error").to_string();
        assert!(
            err.starts_with("kubernetes kubeconfig /nonexistent/kubeconfig: "),
            "{err}"
        );
    }
}

//! The `k8s_replicas` class: a Kubernetes deployment (lir-data) runs a number of replicas,
//! and (by default) that many are ready.
//!
//! A rule is `{"namespace": "cm", "deployment": "lir-data", "replicas": 3}`, optionally with
//! `"wait": false`, `"timeout": 600` (seconds), `"kubeconfig": "/etc/kubernetes/admin.conf"`
//! and `"context": "admin@cluster"`.
//!
//! check reads the deployment (one GET, nothing written): it complies when `spec.replicas`
//! is `replicas` and, with `wait`, at least `replicas` replicas are ready; the log says the
//! spec, ready and expected counts. fixable: the deployment exists (the class scales, it
//! never creates one). fix scales through the `scale` subresource when the spec differs
//! (a merge patch of `spec.replicas` only), then with `wait` polls until the replicas are
//! ready or the timeout passes, then checks again.
//!
//! The kubeconfig is read under the root prefix, like every file a class reads; without one,
//! kube's inference applies (`KUBECONFIG`, `~/.kube/config`, the in-cluster service account),
//! which does not go through the root prefix. The I/O is `tenet_release::k8s`, driven on a
//! private current-thread runtime (as the bridge class drives netlink).

use std::future::Future;
use std::path::{Component, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tenet_release::k8s::DeploymentRef;
use tenet_release::{Progress, Step};

use crate::class::{Class, parse_rule};
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

fn yes() -> bool {
    true
}

fn default_timeout() -> u64 {
    300
}

/// One `k8s_replicas` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sReplicasRule {
    /// The deployment's namespace (`cm`).
    pub namespace: String,
    /// The deployment's name (`lir-data`).
    pub deployment: String,
    /// The replicas wanted (0 or more).
    pub replicas: i32,
    /// Whether compliance also needs `replicas` ready replicas, and fix waits for them;
    /// default true.
    #[serde(default = "yes")]
    pub wait: bool,
    /// How long fix waits for the replicas to be ready, in seconds; default 300.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// The kubeconfig file, an absolute path of the managed system (under the root prefix);
    /// unset: kube's inference.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; unset: its current context.
    #[serde(default)]
    pub context: Option<String>,
}

/// The `k8s_replicas` class.
#[derive(Debug)]
pub struct K8sReplicas;

impl Class for K8sReplicas {
    type Rule = K8sReplicasRule;

    const NAME: &'static str = "k8s_replicas";
    const DESCRIPTION: &'static str =
        "a Kubernetes deployment's replica count (scale subresource) and, by default, readiness";

    fn rules(value: &Value) -> Result<Vec<K8sReplicasRule>, String> {
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        items
            .into_iter()
            .map(|v| parse_rule::<K8sReplicasRule>(v).and_then(validate))
            .collect()
    }

    fn describe(rule: &K8sReplicasRule) -> String {
        format!(
            "{}/{} replicas={}",
            rule.namespace, rule.deployment, rule.replicas
        )
    }

    fn check(rule: &K8sReplicasRule, host: &HostView, log: &mut Log) -> Status {
        let target = match deployment_ref(rule, host) {
            Ok(t) => t,
            Err(e) => {
                log.err(e);
                return Status::Nok;
            }
        };
        let state = run_k8s(async {
            let client = target.client().await?;
            target.replicas(&client).await
        });
        match state {
            Ok(state) => {
                let ok = state.spec == rule.replicas && (!rule.wait || state.ready >= rule.replicas);
                let line = format!(
                    "deployment {}: spec {}, ready {}, expected {}{}",
                    target.object(),
                    state.spec,
                    state.ready,
                    rule.replicas,
                    if rule.wait { "" } else { " (readiness not required)" }
                );
                if ok {
                    log.info(line);
                    Status::Ok
                } else {
                    log.err(line);
                    Status::Nok
                }
            }
            Err(e) => {
                log.err(e);
                Status::Nok
            }
        }
    }

    fn fixable(rule: &K8sReplicasRule, host: &HostView, log: &mut Log) -> Status {
        let target = match deployment_ref(rule, host) {
            Ok(t) => t,
            Err(e) => {
                log.err(e);
                return Status::Nok;
            }
        };
        match run_k8s(async {
            let client = target.client().await?;
            target.replicas(&client).await
        }) {
            Ok(_) => Status::Ok,
            Err(e) => {
                log.err(e);
                Status::Nok
            }
        }
    }

    fn fix(rule: &K8sReplicasRule, host: &Host, log: &mut Log) -> Status {
        let target = match deployment_ref(rule, host.view()) {
            Ok(t) => t,
            Err(e) => {
                log.err(e);
                return Status::Nok;
            }
        };
        let progress = LogProgress::default();
        let done = run_k8s(async {
            let client = target.client().await?;
            let state = target.replicas(&client).await?;
            if state.spec != rule.replicas {
                target.scale(&client, rule.replicas).await?;
                progress.info(&format!(
                    "Scaled deployment {} from {} to {} replicas",
                    target.object(),
                    state.spec,
                    rule.replicas
                ));
            }
            if rule.wait {
                target
                    .wait_ready(
                        &client,
                        rule.replicas,
                        Duration::from_secs(rule.timeout),
                        &progress,
                    )
                    .await?;
            }
            Ok(())
        });
        for line in progress.take() {
            log.info(line);
        }
        if let Err(e) = done {
            log.err(e);
            return Status::Nok;
        }
        let mut after = Log::new();
        let st = Self::check(rule, host.view(), &mut after);
        for l in after.take() {
            match l.stream {
                crate::status::Stream::Err => log.err(format!("after fix: {}", l.text)),
                crate::status::Stream::Out => log.info(l.text),
            }
        }
        st
    }
}

fn validate(rule: K8sReplicasRule) -> Result<K8sReplicasRule, String> {
    // DNS-1123: namespaces are labels, deployment names subdomains.
    let dns = |s: &str, dots: bool| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.')
            })
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    if !dns(&rule.namespace, false) || rule.namespace.len() > 63 {
        return Err(format!(
            "namespace: {:?} is not a namespace name (lowercase letters, digits, '-')",
            rule.namespace
        ));
    }
    if !dns(&rule.deployment, true) {
        return Err(format!(
            "deployment: {:?} is not a deployment name (lowercase letters, digits, '-', '.')",
            rule.deployment
        ));
    }
    if rule.replicas < 0 {
        return Err(format!("replicas: {} is negative", rule.replicas));
    }
    if rule.timeout == 0 {
        return Err("timeout: must be at least 1 second".into());
    }
    if let Some(k) = &rule.kubeconfig
        && (!k.is_absolute() || k.components().any(|c| c == Component::ParentDir))
    {
        return Err(format!(
            "kubeconfig: {:?} must be an absolute path without '..'",
            k.display().to_string()
        ));
    }
    if rule.context.as_deref() == Some("") {
        return Err("context: must not be empty".into());
    }
    Ok(rule)
}

/// The deployment of the rule, its kubeconfig taken under the root prefix.
fn deployment_ref(rule: &K8sReplicasRule, host: &HostView) -> Result<DeploymentRef, String> {
    let kubeconfig = match &rule.kubeconfig {
        // Handed to the Kubernetes client, which opens it itself: its links are resolved
        // inside the root prefix first.
        Some(k) => Some(
            host.path(k)
                .and_then(|p| host.resolved_real(&p))
                .map_err(|e| format!("kubeconfig: {e}"))?,
        ),
        None => None,
    };
    Ok(DeploymentRef {
        kubeconfig,
        context: rule.context.clone(),
        namespace: rule.namespace.clone(),
        name: rule.deployment.clone(),
    })
}

/// Runs Kubernetes calls on a runtime of their own (the client lives and dies in it); a
/// failure, the runtime's included, becomes the rule's error text.
fn run_k8s<T>(f: impl Future<Output = tenet_release::Result<T>>) -> Result<T, String> {
    tenet_release::converge::block_on(f)
        .and_then(|r| r)
        .map_err(|e| e.to_string())
}

/// Progress lines kept for the rule's log (a [`Log`] cannot be shared with the async code).
#[derive(Default)]
struct LogProgress(Mutex<Vec<String>>);

impl LogProgress {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Progress for LogProgress {
    fn step(&self, step: Step, detail: &str) {
        self.info(&format!("{step}: {detail}"));
    }
    fn percent(&self, _step: Step, _percent: u8, _detail: &str) {}
    fn info(&self, message: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message.to_string());
    }
}

#[cfg(test)]
mod tests {
    //! Mocked contract tests: the API server is `tenet_release::k8s_fake::FakeApiServer` on
    //! loopback, reached through a real kubeconfig under the root prefix. Not Kubernetes.

    use super::*;
    use crate::testing;
    use serde_json::json;
    use tenet_release::k8s_fake::FakeApiServer;

    const KUBECONFIG: &str = "/etc/kubernetes/admin.conf";

    /// A root prefix holding a kubeconfig for a fake server with `cm/lir-data` at one ready
    /// replica.
    fn setup() -> (tempfile::TempDir, Host, FakeApiServer) {
        let root = tempfile::tempdir().unwrap();
        let fake = FakeApiServer::start();
        fake.set_ready_delay(Some(Duration::ZERO));
        fake.add_deployment("cm", "lir-data", &[("app", "lir-data")], 1);
        fake.set_ready_delay(Some(Duration::from_millis(200)));
        let dir = root.path().join("etc/kubernetes");
        std::fs::create_dir_all(&dir).unwrap();
        fake.write_kubeconfig(&dir.join("admin.conf"), "default")
            .unwrap();
        let host = Host::new(root.path()).with_var_dir(root.path().join("var/lib/tenet"));
        (root, host, fake)
    }

    fn rule(replicas: i32) -> Value {
        json!({"namespace": "cm", "deployment": "lir-data", "replicas": replicas,
               "kubeconfig": KUBECONFIG})
    }

    #[test]
    fn contract_scale_up_and_wait() {
        let (root, host, fake) = setup();
        let log = testing::assert_class_contract::<K8sReplicas>(&host, &[root.path()], rule(3));
        assert!(
            log.iter()
                .any(|l| l == "deployment cm/lir-data: spec 1, ready 1, expected 3"),
            "{log:#?}"
        );
        // One scale in all: by the first fix; the checks and the second fix wrote nothing.
        let writes = fake.writes();
        assert_eq!(writes.len(), 1, "{writes:#?}");
        assert_eq!(writes[0].method, "PATCH");
        assert_eq!(
            writes[0].path,
            "/apis/apps/v1/namespaces/cm/deployments/lir-data/scale"
        );
        assert_eq!(fake.replicas("cm", "lir-data"), Some(3));
    }

    #[test]
    fn contract_scale_down_without_waiting() {
        let (root, host, fake) = setup();
        fake.set_ready_delay(None);
        let rule = json!({"namespace": "cm", "deployment": "lir-data", "replicas": 0,
                          "wait": false, "kubeconfig": KUBECONFIG, "context": "fake"});
        testing::assert_class_contract::<K8sReplicas>(&host, &[root.path()], rule);
        assert_eq!(fake.writes().len(), 1);
        assert_eq!(fake.replicas("cm", "lir-data"), Some(0));
    }

    #[test]
    fn check_only_reads() {
        let (_root, host, fake) = setup();
        let (st, log) = testing::check::<K8sReplicas>(&host, rule(3));
        assert_eq!(st, Status::Nok, "{log:#?}");
        let (st, log) = testing::check::<K8sReplicas>(&host, rule(1));
        assert_eq!(st, Status::Ok, "{log:#?}");
        assert_eq!(log, ["deployment cm/lir-data: spec 1, ready 1, expected 1"]);
        let requests = fake.requests();
        assert!(!requests.is_empty());
        assert!(
            requests.iter().all(|r| r.method == "GET"),
            "{requests:#?}"
        );
        assert_eq!(fake.replicas("cm", "lir-data"), Some(1));
    }

    #[test]
    fn replicas_that_never_get_ready_fail_the_fix_after_the_timeout() {
        let (_root, host, fake) = setup();
        fake.set_ready_delay(None);
        let rule = json!({"namespace": "cm", "deployment": "lir-data", "replicas": 2,
                          "timeout": 1, "kubeconfig": KUBECONFIG});
        let (st, log) = testing::fix::<K8sReplicas>(&host, rule.clone());
        assert_eq!(st, Status::Nok, "{log:#?}");
        assert!(
            log.iter()
                .any(|l| l.contains("timed out") && l.contains("expected 2 ready and no surplus pod, 1 ready")),
            "{log:#?}"
        );
        // The spec is right now; a second fix only waits again, it does not scale again.
        let (st, log) = testing::fix::<K8sReplicas>(&host, rule.clone());
        assert_eq!(st, Status::Nok, "{log:#?}");
        assert_eq!(fake.writes().len(), 1);
        let (st, log) = testing::check::<K8sReplicas>(&host, rule);
        assert_eq!(st, Status::Nok);
        assert_eq!(log, ["deployment cm/lir-data: spec 2, ready 1, expected 2"]);
    }

    #[test]
    fn a_missing_deployment_is_not_fixable() {
        let (_root, host, fake) = setup();
        let rule = json!({"namespace": "cm", "deployment": "lir-nope", "replicas": 2,
                          "kubeconfig": KUBECONFIG});
        let rules = K8sReplicas::rules(&rule).unwrap();
        let mut log = Log::new();
        assert_eq!(
            K8sReplicas::fixable(&rules[0], host.view(), &mut log),
            Status::Nok
        );
        assert_eq!(
            log.last_error(),
            Some("kubernetes cm/lir-nope: deployment cm/lir-nope not found")
        );
        let (st, _) = testing::check::<K8sReplicas>(&host, rule);
        assert_eq!(st, Status::Nok);
        assert!(fake.writes().is_empty());
    }

    #[test]
    fn the_kubeconfig_is_read_under_the_root_prefix() {
        let (_root, host, _fake) = setup();
        let rule = json!({"namespace": "cm", "deployment": "lir-data", "replicas": 1,
                          "kubeconfig": "/etc/kubernetes/missing.conf"});
        let (st, log) = testing::check::<K8sReplicas>(&host, rule);
        assert_eq!(st, Status::Nok);
        let want = format!("kubernetes kubeconfig {}", host.path("/etc/kubernetes/missing.conf").unwrap().real().display());
        assert!(log[0].starts_with(&want), "{log:#?}");
    }

    #[test]
    fn rules_have_defaults_and_refuse_bad_values() {
        let r = &K8sReplicas::rules(&json!({"namespace": "cm", "deployment": "lir-data",
                                             "replicas": 3}))
        .unwrap()[0];
        assert!(r.wait);
        assert_eq!(r.timeout, 300);
        assert_eq!(r.kubeconfig, None);
        assert_eq!(r.context, None);
        let base = json!({"namespace": "cm", "deployment": "lir-data", "replicas": 3});
        for (key, value, want) in [
            ("replicas", json!(-1), "replicas"),
            ("namespace", json!("CM"), "namespace"),
            ("deployment", json!("lir data"), "deployment"),
            ("timeout", json!(0), "timeout"),
            ("kubeconfig", json!("etc/kube.conf"), "kubeconfig"),
            ("kubeconfig", json!("/etc/../kube.conf"), "kubeconfig"),
            ("context", json!(""), "context"),
            ("replica", json!(3), "unknown field"),
        ] {
            let mut v = base.clone();
            v[key] = value;
            let err = K8sReplicas::rules(&v).unwrap_err();
            assert!(err.contains(want), "{key}: {err}");
        }
        assert!(crate::classes::find("k8s_replicas").is_some());
    }
}

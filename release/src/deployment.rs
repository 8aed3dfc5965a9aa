//! The lir-data deployment as policies name it: plain data, the same with or without the
//! `k8s` feature (`k8s.rs` reaches the cluster; `k8s_absent.rs` says this build cannot).

use std::path::PathBuf;

/// A deployment (lir-data) and how to reach its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRef {
    /// The kubeconfig file; `None`: kube's inference (`KUBECONFIG`, `~/.kube/config`, then
    /// the in-cluster service account).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; `None`: its current context.
    pub context: Option<String>,
    /// The deployment's namespace (`cm`).
    pub namespace: String,
    /// The deployment's name (`lir-data`).
    pub name: String,
}

/// A deployment's replica counts, as its spec and status say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicaState {
    /// Wanted replicas (`spec.replicas`; Kubernetes' default 1 when unset).
    pub spec: i32,
    /// Replicas whose pods are ready (`status.readyReplicas`).
    pub ready: i32,
    /// Replicas available for at least `minReadySeconds` (`status.availableReplicas`).
    pub available: i32,
    /// Replicas running the current pod template (`status.updatedReplicas`).
    pub updated: i32,
    /// Pods the deployment has that are not terminating (`status.replicas`).
    pub current: i32,
}

impl DeploymentRef {
    /// `namespace/name`, as errors and logs name the deployment.
    pub fn object(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

//! The API of [`crate::k8s`] in a build without the `k8s` feature (a smaller agent for nodes
//! that never touch Kubernetes). Policies parse the same; what would reach a cluster fails
//! with [`Error::Kube`] saying that this build left Kubernetes out, so a rule needing it is
//! an error of its module, never silently skipped.

use std::net::IpAddr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::progress::Progress;

/// Never made: no cluster can be reached without the `k8s` feature.
#[derive(Debug, Clone)]
pub struct Client(());

pub use crate::deployment::{DeploymentRef, ReplicaState};

impl DeploymentRef {
    fn absent(&self) -> Error {
        Error::Kube {
            object: self.object(),
            message: "this tenet was built without Kubernetes support (cargo feature `k8s`)"
                .to_string(),
        }
    }

    /// Always an error: this build cannot reach a cluster.
    pub async fn client(&self) -> Result<Client> {
        Err(self.absent())
    }

    /// Unreachable without a [`Client`]; an error all the same.
    pub async fn replicas(&self, _client: &Client) -> Result<ReplicaState> {
        Err(self.absent())
    }

    /// Unreachable without a [`Client`]; an error all the same.
    pub async fn scale(&self, _client: &Client, _replicas: i32) -> Result<()> {
        Err(self.absent())
    }

    /// Unreachable without a [`Client`]; an error all the same.
    pub async fn wait_ready(
        &self,
        _client: &Client,
        _replicas: i32,
        _timeout: Duration,
        _progress: &dyn Progress,
    ) -> Result<ReplicaState> {
        Err(self.absent())
    }

    /// Unreachable without a [`Client`]; an error all the same.
    pub async fn replica_endpoints(&self, _client: &Client) -> Result<Vec<IpAddr>> {
        Err(self.absent())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_call_says_kubernetes_was_left_out() {
        let dep = DeploymentRef {
            kubeconfig: None,
            context: None,
            namespace: "cm".into(),
            name: "lir-data".into(),
        };
        let e = dep.client().await.unwrap_err().to_string();
        assert!(e.contains("cm/lir-data"), "{e}");
        assert!(e.contains("without Kubernetes support"), "{e}");
        assert!(e.contains("`k8s`"), "{e}");
    }
}

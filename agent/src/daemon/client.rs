//! The node's calls to the collector's action queue (blocking: the daemon runs them on
//! tokio's blocking pool, never on its event loop).

use tenet_rulesets::action::{AckActions, ActionResult, Dequeued, DequeuedAction};

use crate::collector::{CallError, CollectorClient};

impl CollectorClient {
    /// `POST /api/v1/nodes/{id}/actions/dequeue`: the actions sent to this node now.
    pub fn dequeue_actions(&self) -> Result<Vec<DequeuedAction>, CallError> {
        let path = format!("/api/v1/nodes/{}/actions/dequeue", self.node_id());
        let resp = self.send(self.request(reqwest::Method::POST, &path))?;
        Ok(self.json::<Dequeued>(resp)?.actions)
    }

    /// `POST /api/v1/nodes/{id}/actions/ack`: the ids now acknowledged (running).
    pub fn ack_actions(&self, ids: &[i64]) -> Result<Vec<i64>, CallError> {
        let path = format!("/api/v1/nodes/{}/actions/ack", self.node_id());
        let resp = self.send(
            self.request(reqwest::Method::POST, &path)
                .json(&AckActions { ids: ids.to_vec() }),
        )?;
        Ok(self.json::<AckActions>(resp)?.ids)
    }

    /// `POST /api/v1/nodes/{id}/actions/result`.
    pub fn post_action_result(&self, result: &ActionResult) -> Result<(), CallError> {
        let path = format!("/api/v1/nodes/{}/actions/result", self.node_id());
        self.send(self.request(reqwest::Method::POST, &path).json(result))?;
        Ok(())
    }
}

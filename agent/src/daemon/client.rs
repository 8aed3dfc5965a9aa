//! The node's calls to the collector's action queue. They block: the daemon never makes them
//! on its event loop but in a `tenet daemon-call` child process (`CallRequest` / `CallReply`),
//! so a hung collector costs a killable process, not the daemon.

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

/// A collector call the daemon delegates to a short-lived `tenet daemon-call` process, so
/// the daemon itself never loads the HTTP and TLS stack (its idle memory stays small, and a
/// TLS or HTTP failure cannot take it down).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallRequest {
    /// Dequeue this node's actions.
    Dequeue,
    /// Acknowledge these actions.
    Ack(Vec<i64>),
    /// Post an action result.
    Result(ActionResult),
}

/// The answer of `tenet daemon-call`, one JSON document on stdout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallReply {
    /// The actions sent.
    Dequeued(Vec<DequeuedAction>),
    /// The actions acknowledged.
    Acked(Vec<i64>),
    /// The result was recorded.
    Recorded,
    /// The collector could not be reached (or answered 5xx).
    Unreachable(String),
    /// The collector refused (4xx).
    Refused {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
}

impl CallReply {
    fn of<T>(r: Result<T, CallError>, ok: impl FnOnce(T) -> CallReply) -> CallReply {
        match r {
            Ok(v) => ok(v),
            Err(CallError::Unreachable(m)) => CallReply::Unreachable(m),
            Err(CallError::Refused { status, message }) => CallReply::Refused { status, message },
        }
    }

    /// As a call error, when it is one.
    pub fn error(&self) -> Option<CallError> {
        match self {
            CallReply::Unreachable(m) => Some(CallError::Unreachable(m.clone())),
            CallReply::Refused { status, message } => Some(CallError::Refused {
                status: *status,
                message: message.clone(),
            }),
            _ => None,
        }
    }
}

/// Performs a call (in the `tenet daemon-call` process).
pub fn perform(client: &CollectorClient, req: &CallRequest) -> CallReply {
    match req {
        CallRequest::Dequeue => CallReply::of(client.dequeue_actions(), CallReply::Dequeued),
        CallRequest::Ack(ids) => CallReply::of(client.ack_actions(ids), CallReply::Acked),
        CallRequest::Result(r) => {
            CallReply::of(client.post_action_result(r), |_| CallReply::Recorded)
        }
    }
}

//! Control socket `<var>/daemon/control.sock` (mode 0600): `tenet tasks submit` queues a
//! task, `tenet dequeue-actions` asks for a dequeue; and the stop sequence (SIGTERM / SIGINT:
//! no new task, the running one killed after the grace period).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tenet_rulesets::action::ActionCommand;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::tasks::{self, Origin, State};
use super::{Daemon, Event};

/// The control socket.
pub fn control_path(var_dir: &Path) -> std::path::PathBuf {
    var_dir.join("daemon/control.sock")
}

/// A request on the control socket (one JSON line).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlRequest {
    /// Queue this allow-listed command (origin `cli`).
    Submit(String),
    /// Dequeue actions from the collector now.
    Dequeue,
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlReply {
    /// The queued task's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Sends a request to the running daemon.
pub fn control(var_dir: &Path, req: &ControlRequest) -> anyhow::Result<ControlReply> {
    use std::io::{BufRead, Write};
    let path = control_path(var_dir);
    let mut s = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
        format!(
            "connecting to the daemon at {} (is `tenet daemon` running?)",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut answer = String::new();
    std::io::BufReader::new(s).read_line(&mut answer)?;
    serde_json::from_str(&answer).with_context(|| format!("unexpected answer {answer:?}"))
}

pub(super) async fn serve_control(
    listener: tokio::net::UnixListener,
    tx: mpsc::UnboundedSender<Event>,
) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = sock.into_split();
            let mut line = String::new();
            let mut rd = BufReader::new(rd.take(64 * 1024));
            let reply =
                match tokio::time::timeout(Duration::from_secs(5), rd.read_line(&mut line)).await {
                    Ok(Ok(_)) => match serde_json::from_str::<ControlRequest>(&line) {
                        Ok(req) => {
                            let (otx, orx) = oneshot::channel();
                            let _ = tx.send(Event::Control(req, otx));
                            orx.await.unwrap_or(ControlReply {
                                id: None,
                                error: Some("the daemon is stopping".into()),
                            })
                        }
                        Err(e) => ControlReply {
                            id: None,
                            error: Some(format!("bad request: {e}")),
                        },
                    },
                    _ => ControlReply {
                        id: None,
                        error: Some("no request".into()),
                    },
                };
            let mut out = serde_json::to_vec(&reply).unwrap_or_default();
            out.push(b'\n');
            let _ = wr.write_all(&out).await;
        });
    }
}

impl Daemon {
    pub(super) fn on_control(&mut self, req: ControlRequest) -> ControlReply {
        match req {
            ControlRequest::Dequeue => {
                self.request_dequeue();
                ControlReply {
                    id: None,
                    error: None,
                }
            }
            ControlRequest::Submit(command) => {
                if self.stop_deadline.is_some() {
                    return ControlReply {
                        id: None,
                        error: Some("the daemon is stopping".into()),
                    };
                }
                match ActionCommand::parse(&command) {
                    Ok(c) => {
                        let id = self.enqueue(
                            "cli".into(),
                            Origin::Cli,
                            c.args(),
                            None,
                            false,
                            "queued".into(),
                        );
                        ControlReply {
                            id: Some(id),
                            error: None,
                        }
                    }
                    Err(e) => ControlReply {
                        id: None,
                        error: Some(e.to_string()),
                    },
                }
            }
        }
    }

    pub(super) fn begin_stop(&mut self) {
        if self.stop_deadline.is_some() {
            return;
        }
        tracing::info!(
            grace_s = self.grace.as_secs(),
            "stopping: no new task; the running one may finish within the grace period"
        );
        self.stop_deadline = Some(Instant::now() + self.grace);
        for id in std::mem::take(&mut self.queue) {
            if let Some(t) = self.task_mut(id) {
                t.state = State::Failed;
                t.progress = "not started: the daemon stopped".into();
                t.ended_at = Some(tasks::now_text());
            }
        }
        for s in &mut self.scheds {
            s.due = None;
        }
        self.dirty = true;
    }

    pub(super) fn kill_running(&mut self) {
        let Some((id, Some(pid))) = self.running else {
            return;
        };
        let sig = if self.kill_sent == 0 {
            nix::sys::signal::Signal::SIGTERM
        } else {
            nix::sys::signal::Signal::SIGKILL
        };
        tracing::warn!(task = id, pid, signal = ?sig, "grace period over: stopping the running task");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        self.kill_sent += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_is_one_json_line_per_request() {
        let submit = ControlRequest::Submit("compliance check".into());
        assert_eq!(
            serde_json::to_string(&submit).unwrap(),
            r#"{"submit":"compliance check"}"#
        );
        assert_eq!(
            serde_json::to_string(&ControlRequest::Dequeue).unwrap(),
            r#""dequeue""#
        );
        let reply = ControlReply {
            id: Some(3),
            error: None,
        };
        assert_eq!(serde_json::to_string(&reply).unwrap(), r#"{"id":3}"#);
    }

    #[test]
    fn no_running_daemon_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = format!(
            "{:#}",
            control(dir.path(), &ControlRequest::Dequeue).unwrap_err()
        );
        assert!(
            e.contains("control.sock") && e.contains("is `tenet daemon` running?"),
            "{e}"
        );
    }
}

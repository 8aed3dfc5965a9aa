//! Actions: dequeued from the collector, journaled, acknowledged, run through the runner,
//! their results posted (and retried); after a restart, [`Daemon::recover`] reports what was
//! interrupted and never runs an action twice. Every collector call is a `tenet daemon-call`
//! child process.

use std::time::Duration;

use tenet_rulesets::action::{ActionCommand, ActionResult, DequeuedAction};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::client::{CallReply, CallRequest};
use super::journal::{Entry, Step};
use super::tasks::{self, Origin};
use super::{Daemon, Event};
use crate::collector::CallError;

/// Delay before retrying to deliver action results.
const REPORT_RETRY: Duration = Duration::from_secs(30);

impl Daemon {
    pub(super) fn request_dequeue(&mut self) {
        if !self.registered || self.stop_deadline.is_some() {
            return;
        }
        if self.dequeue_busy {
            self.dequeue_again = true;
            return;
        }
        self.dequeue_busy = true;
        let tx = self.tx.clone();
        let call = self.call(CallRequest::Dequeue);
        tokio::spawn(async move {
            let r = match call.await {
                Ok(CallReply::Dequeued(a)) => Ok(a),
                Ok(other) => Err(other.error().map(|e| e.to_string()).unwrap_or_default()),
                Err(e) => Err(e),
            };
            let _ = tx.send(Event::Dequeued(r));
        });
    }

    pub(super) fn on_dequeued(&mut self, r: Result<Vec<DequeuedAction>, String>) {
        let actions = match r {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("dequeue failed: {e}");
                self.dequeue_busy = false;
                return;
            }
        };
        let mut refused = Vec::new();
        for a in actions {
            if let Some(e) = self.journal.actions.get(&a.id) {
                // Known: sent again because our ack was lost, or reported before.
                if e.step == Step::Finished
                    && let Some(r) = e.result.clone()
                {
                    self.report(r);
                }
                continue;
            }
            let entry = Entry {
                command: a.command.clone(),
                step: Step::Accepted,
                acked: false,
                task_id: None,
                accepted_at: tasks::now_text(),
                started_at: None,
                ended_at: None,
                result: None,
            };
            match ActionCommand::parse(&a.command) {
                Ok(_) => {
                    tracing::info!(action = a.id, "action received: {}", a.command);
                    self.journal.actions.insert(a.id, entry);
                }
                Err(e) => {
                    tracing::warn!(action = a.id, "action refused: {e}");
                    let result = ActionResult {
                        id: a.id,
                        ret: 2,
                        stdout: String::new(),
                        stderr: format!("refused by the node: {e}\n"),
                    };
                    let mut entry = entry;
                    entry.step = Step::Finished;
                    entry.result = Some(result.clone());
                    self.journal.actions.insert(a.id, entry);
                    refused.push(result);
                }
            }
        }
        let to_ack: Vec<i64> = self
            .journal
            .actions
            .iter()
            .filter(|(_, e)| e.step == Step::Accepted && !e.acked)
            .map(|(id, _)| *id)
            .collect();
        if let Err(e) = self.journal.save() {
            tracing::error!("{e:#}");
        }
        for r in refused {
            self.report(r);
        }
        if to_ack.is_empty() {
            self.dequeue_done();
            return;
        }
        let tx = self.tx.clone();
        let call = self.call(CallRequest::Ack(to_ack.clone()));
        tokio::spawn(async move {
            let r = match call.await {
                Ok(CallReply::Acked(ids)) => Ok(ids),
                Ok(other) => Err(other.error().map(|e| e.to_string()).unwrap_or_default()),
                Err(e) => Err(e),
            };
            let _ = tx.send(Event::Acked(to_ack, r));
        });
    }

    pub(super) fn on_acked(&mut self, asked: Vec<i64>, r: Result<Vec<i64>, String>) {
        match r {
            Err(e) => {
                tracing::warn!("acknowledging actions failed (retried at the next dequeue): {e}")
            }
            Ok(acked) => {
                for id in asked {
                    if acked.contains(&id) {
                        let Some(e) = self.journal.actions.get_mut(&id) else {
                            continue;
                        };
                        e.acked = true;
                        let command = e.command.clone();
                        self.enqueue_action(id, &command);
                    } else {
                        // Cancelled meanwhile, or not ours any more.
                        tracing::info!(
                            action = id,
                            "action not acknowledged by the collector (cancelled?): dropped"
                        );
                        self.journal.actions.remove(&id);
                    }
                }
                if let Err(e) = self.journal.save() {
                    tracing::error!("{e:#}");
                }
            }
        }
        self.dequeue_done();
    }

    pub(super) fn enqueue_action(&mut self, id: i64, command: &str) {
        let args = match ActionCommand::parse(command) {
            Ok(c) => c.args(),
            Err(_) => return,
        };
        let tid = self.enqueue(
            format!("action:{id}"),
            Origin::Action,
            args,
            Some(id),
            false,
            "queued".into(),
        );
        if let Some(e) = self.journal.actions.get_mut(&id) {
            e.task_id = Some(tid);
        }
    }

    pub(super) fn dequeue_done(&mut self) {
        self.dequeue_busy = false;
        if std::mem::take(&mut self.dequeue_again) {
            self.request_dequeue();
        }
    }

    pub(super) fn report(&mut self, result: ActionResult) {
        if !self.registered || !self.reporting.insert(result.id) {
            return;
        }
        let tx = self.tx.clone();
        let id = result.id;
        let call = self.call(CallRequest::Result(result));
        tokio::spawn(async move {
            let r = match call.await {
                Ok(CallReply::Recorded) => Ok(()),
                Ok(other) => Err(other
                    .error()
                    .unwrap_or(CallError::Unreachable("unexpected answer".into()))),
                Err(e) => Err(CallError::Unreachable(e)),
            };
            let _ = tx.send(Event::Reported(id, r));
        });
    }

    pub(super) fn on_reported(&mut self, id: i64, r: Result<(), CallError>) {
        self.reporting.remove(&id);
        match r {
            Ok(()) => tracing::info!(action = id, "action result delivered"),
            Err(CallError::Refused { status, message }) => {
                tracing::warn!(
                    action = id,
                    status,
                    "the collector refused the action result: {message}"
                )
            }
            Err(e @ CallError::Unreachable(_)) => {
                tracing::warn!(action = id, "action result not delivered, retrying: {e}");
                self.report_retry = Some(Instant::now() + REPORT_RETRY);
                return;
            }
        }
        if let Some(e) = self.journal.actions.get_mut(&id) {
            e.step = Step::Reported;
        }
        if let Err(e) = self.journal.save() {
            tracing::error!("{e:#}");
        }
    }

    pub(super) fn retry_reports(&mut self) {
        self.report_retry = None;
        for r in self.journal.unreported() {
            self.report(r);
        }
    }

    /// After a restart: started actions are reported failed; accepted ones run; results not
    /// delivered are delivered.
    pub(super) fn recover(&mut self) {
        let mut changed = false;
        let ids: Vec<i64> = self.journal.actions.keys().copied().collect();
        for id in ids {
            let e = self.journal.actions.get_mut(&id).expect("listed");
            match e.step {
                Step::Started => {
                    tracing::warn!(
                        action = id,
                        "the daemon stopped while this action ran: reported failed, not run again"
                    );
                    e.step = Step::Finished;
                    e.ended_at = Some(tasks::now_text());
                    e.result = Some(ActionResult {
                        id,
                        ret: 1,
                        stdout: String::new(),
                        stderr: format!(
                            "interrupted: the tenet daemon stopped (crash or kill) while this action ran (started {}); it was not run again\n",
                            e.started_at.clone().unwrap_or_default()
                        ),
                    });
                    changed = true;
                }
                Step::Accepted if e.acked => {
                    let command = e.command.clone();
                    self.enqueue_action(id, &command);
                    changed = true;
                }
                _ => {}
            }
        }
        if changed && let Err(e) = self.journal.save() {
            tracing::error!("{e:#}");
        }
        self.retry_reports();
    }

    /// A collector call, made by a `tenet daemon-call` child process (see
    /// [`client::CallRequest`]).
    pub(super) fn call(
        &self,
        req: CallRequest,
    ) -> impl std::future::Future<Output = Result<CallReply, String>> + Send + 'static {
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("--config")
            .arg(&self.opts.config)
            .arg("daemon-call")
            .env("TENET_DAEMON_PID", std::process::id().to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        // Spawned now, from the daemon's main thread (its parent-death signal follows us).
        let child = cmd.spawn();
        async move {
            let mut child = child.map_err(|e| format!("cannot start tenet daemon-call: {e}"))?;
            let mut input = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
            input.push(b'\n');
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(&input).await.map_err(|e| e.to_string())?;
            }
            let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
                .await
                .map_err(|_| "collector call timed out".to_string())?
                .map_err(|e| e.to_string())?;
            serde_json::from_slice::<CallReply>(&out.stdout).map_err(|e| {
                format!(
                    "tenet daemon-call failed ({e}): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Options, journal_path};
    use super::*;
    use crate::daemon::journal::Journal;

    fn entry(command: &str, step: Step, acked: bool) -> Entry {
        Entry {
            command: command.into(),
            step,
            acked,
            task_id: None,
            accepted_at: tasks::now_text(),
            started_at: Some("2026-01-01 00:00:00".into()),
            ended_at: None,
            result: None,
        }
    }

    /// An unregistered daemon on a temporary var dir with this journal (nothing is spawned:
    /// its collector calls and runner are not reached).
    fn daemon(dir: &std::path::Path, journal: Vec<(i64, Entry)>) -> Daemon {
        let var_dir = dir.join("var");
        std::fs::create_dir_all(var_dir.join("daemon")).unwrap();
        let mut j = Journal::load(&journal_path(&var_dir)).unwrap();
        j.actions.extend(journal);
        j.save().unwrap();
        let opts = Options {
            config: dir.join("node.toml"),
            root: dir.join("root"),
            var_dir,
        };
        Daemon::new(opts, tokio::sync::mpsc::unbounded_channel().0).unwrap()
    }

    #[test]
    fn a_command_outside_the_allow_list_is_refused_and_journaled_finished() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(dir.path(), vec![]);
        d.dequeue_busy = true;
        d.on_dequeued(Ok(vec![DequeuedAction {
            id: 9,
            command: "rm -rf /".into(),
            queued_at: tasks::now_text(),
        }]));
        assert!(!d.dequeue_busy);
        assert!(d.queue.is_empty());
        let e = &Journal::load(&journal_path(&d.opts.var_dir))
            .unwrap()
            .actions[&9];
        assert_eq!(e.step, Step::Finished);
        let r = e.result.as_ref().unwrap();
        assert_eq!(r.ret, 2);
        assert!(
            r.stderr.starts_with("refused by the node: "),
            "{}",
            r.stderr
        );
    }

    #[test]
    fn after_a_restart_started_actions_fail_and_accepted_ones_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = daemon(
            dir.path(),
            vec![
                (1, entry("compliance check", Step::Started, true)),
                (2, entry("pushasset", Step::Accepted, true)),
                (3, entry("pushasset", Step::Accepted, false)),
            ],
        );
        d.recover();
        let j = Journal::load(&journal_path(&d.opts.var_dir)).unwrap();
        let interrupted = &j.actions[&1];
        assert_eq!(interrupted.step, Step::Finished);
        let r = interrupted.result.as_ref().unwrap();
        assert_eq!(r.ret, 1);
        assert!(r.stderr.starts_with("interrupted: "), "{}", r.stderr);
        // The acknowledged one is queued once; the unacknowledged one waits for the collector.
        assert_eq!(d.queue.len(), 1);
        let task = d.tasks.iter().find(|t| t.action_id == Some(2)).unwrap();
        assert_eq!(task.command, "tenet pushasset");
        assert_eq!(j.actions[&2].task_id, Some(task.id));
        assert_eq!(j.actions[&3].step, Step::Accepted);
    }
}

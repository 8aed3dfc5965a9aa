//! Runner: one task at a time, FIFO; each task is a `tenet` child process whose output is
//! captured (the first [`OUTPUT_LIMIT`] bytes of each stream) and whose lines are its
//! progress.

use std::time::Duration;

use jiff::Timestamp;
use tenet_rulesets::action::ActionResult;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::journal::Step;
use super::schedules::write_stamp;
use super::tasks::{self, Origin, State, Task};
use super::{Daemon, Event};

/// Output kept per stream of a task (and posted for an action).
const OUTPUT_LIMIT: usize = 192 * 1024;

/// How a task process ended.
pub(super) struct Outcome {
    pub(super) code: i32,
    pub(super) stdout: String,
    pub(super) stderr: String,
    pub(super) error: Option<String>,
}

impl Daemon {
    pub(super) fn enqueue(
        &mut self,
        name: String,
        origin: Origin,
        args: Vec<String>,
        action_id: Option<i64>,
        late: bool,
        progress: String,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let task = Task {
            id,
            name,
            origin,
            state: State::Queued,
            command: format!("tenet {}", args.join(" ")),
            progress,
            queued_at: tasks::now_text(),
            started_at: None,
            ended_at: None,
            exit_code: None,
            action_id,
            late,
            pid: None,
        };
        tracing::info!(
            task = id,
            name = task.name,
            origin = ?origin,
            late,
            "task queued: {}",
            task.command
        );
        self.tasks.push_back(task);
        self.args.insert(id, args);
        self.queue.push_back(id);
        self.dirty = true;
        id
    }

    pub(super) fn start_next(&mut self) {
        if self.running.is_some() || self.stop_deadline.is_some() {
            return;
        }
        let Some(id) = self.queue.pop_front() else {
            return;
        };
        let args = self.args.remove(&id).unwrap_or_default();
        let (name, action_id) = match self.task_mut(id) {
            Some(t) => (t.name.clone(), t.action_id),
            None => return,
        };
        let now = Timestamp::now();
        // Scheduled tasks: the last-run stamp is written before the run (OpenSVC).
        if let Some(s) = self.scheds.iter_mut().find(|s| s.name == name) {
            s.last = Some(now);
            write_stamp(&s.stamp, now);
        }
        // Actions: journaled as started, durably, before the process exists.
        if let Some(aid) = action_id {
            if let Some(e) = self.journal.actions.get_mut(&aid) {
                e.step = Step::Started;
                e.started_at = Some(tasks::now_text());
            }
            if let Err(e) = self.journal.save() {
                tracing::error!(
                    action = aid,
                    "cannot journal the action start, not running it: {e:#}"
                );
                self.finish(
                    id,
                    Outcome {
                        code: 1,
                        stdout: String::new(),
                        stderr: format!("the node could not journal the action: {e:#}"),
                        error: Some("journal write failed".into()),
                    },
                );
                return;
            }
        }
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("--config")
            .arg(&self.opts.config)
            .args(&args)
            .arg("--root")
            .arg(&self.opts.root)
            .arg("--var-dir")
            .arg(&self.opts.var_dir)
            .env("TENET_DAEMON_PID", std::process::id().to_string())
            .env("TENET_TASK_ID", id.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.finish(
                    id,
                    Outcome {
                        code: 127,
                        stdout: String::new(),
                        stderr: format!("cannot start {}: {e}", self.exe.display()),
                        error: Some(format!("cannot start: {e}")),
                    },
                );
                return;
            }
        };
        let pid = child.id();
        self.running = Some((id, pid));
        if let Some(t) = self.task_mut(id) {
            t.state = State::Running;
            t.started_at = Some(tasks::now_text());
            t.pid = pid;
            t.progress = format!("started (pid {})", pid.unwrap_or(0));
        }
        tracing::info!(task = id, name, pid, "task started");
        self.dirty = true;
        let tx = self.tx.clone();
        let (out, err) = (child.stdout.take(), child.stderr.take());
        tokio::spawn(async move {
            let (stdout, stderr) =
                tokio::join!(pump(out, id, tx.clone()), pump(err, id, tx.clone()));
            let (code, error) = match child.wait().await {
                Ok(st) => {
                    use std::os::unix::process::ExitStatusExt as _;
                    match (st.code(), st.signal()) {
                        (Some(c), _) => (c, None),
                        (None, Some(s)) => (128 + s, Some(format!("killed by signal {s}"))),
                        _ => (1, Some("ended without a status".into())),
                    }
                }
                Err(e) => (1, Some(format!("wait failed: {e}"))),
            };
            let _ = tx.send(Event::Finished(
                id,
                Outcome {
                    code,
                    stdout,
                    stderr,
                    error,
                },
            ));
        });
    }

    pub(super) fn finish(&mut self, id: u64, o: Outcome) {
        if self.running.map(|r| r.0) == Some(id) {
            self.running = None;
        }
        let ok = o.code == 0;
        let (name, action_id) = match self.task_mut(id) {
            Some(t) => {
                t.state = if o.error.is_some() {
                    State::Failed
                } else {
                    State::of_exit(&t.command, o.code)
                };
                t.exit_code = Some(o.code);
                t.ended_at = Some(tasks::now_text());
                t.pid = None;
                if let Some(e) = &o.error {
                    t.progress = e.clone();
                } else if !ok {
                    let last = o.stderr.lines().rev().find(|l| !l.trim().is_empty());
                    t.progress = match last {
                        Some(l) => format!("exit {}: {}", o.code, short(l)),
                        None => format!("exit {}", o.code),
                    };
                } else if t.progress.starts_with("started (pid") {
                    t.progress = "done".into();
                }
                (t.name.clone(), t.action_id)
            }
            None => return,
        };
        tracing::info!(task = id, name, exit_code = o.code, "task ended");
        if let Some(s) = self.scheds.iter_mut().find(|s| s.name == name) {
            s.active = false;
            if ok {
                let now = Timestamp::now();
                s.last_success = Some(now);
                write_stamp(&s.stamp.with_extension("success"), now);
            }
        }
        if let Some(aid) = action_id {
            let result = ActionResult {
                id: aid,
                ret: o.code,
                stdout: o.stdout,
                stderr: o.stderr,
            };
            if let Some(e) = self.journal.actions.get_mut(&aid) {
                e.step = Step::Finished;
                e.ended_at = Some(tasks::now_text());
                e.result = Some(result.clone());
            }
            if let Err(e) = self.journal.save() {
                tracing::error!("{e:#}");
            }
            self.report(result);
        }
        self.trim_history();
        self.plan_all();
        self.dirty = true;
    }

    pub(super) fn on_progress(&mut self, id: u64, line: String) {
        if let Some(t) = self.task_mut(id) {
            t.progress = short(&line);
            if self.progress_dirty.is_none() {
                self.progress_dirty = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }
}

fn short(line: &str) -> String {
    let l = line.trim();
    if l.len() <= 200 {
        return l.to_string();
    }
    let mut end = 200;
    while !l.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &l[..end])
}

/// Reads a child's stream: keeps the first [`OUTPUT_LIMIT`] bytes, reports each line as
/// progress.
async fn pump(
    stream: Option<impl tokio::io::AsyncRead + Unpin>,
    id: u64,
    tx: mpsc::UnboundedSender<Event>,
) -> String {
    let Some(stream) = stream else {
        return String::new();
    };
    let mut reader = BufReader::new(stream);
    let mut kept: Vec<u8> = Vec::new();
    let mut cut = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if kept.len() + line.len() <= OUTPUT_LIMIT {
                    kept.extend_from_slice(&line);
                } else {
                    cut = true;
                }
                let text = String::from_utf8_lossy(&line);
                if !text.trim().is_empty() {
                    let _ = tx.send(Event::Progress(id, text.into_owned()));
                }
            }
        }
    }
    let mut s = String::from_utf8_lossy(&kept).into_owned();
    if cut {
        s.push_str("\n[output cut by the node]\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_trimmed_and_cut_on_a_character_boundary() {
        assert_eq!(short("  done \n"), "done");
        let exact = "x".repeat(200);
        assert_eq!(short(&exact), exact);
        // 199 ASCII bytes then a 2-byte character straddling the 200-byte limit.
        let long = format!("{}é{}", "a".repeat(199), "b".repeat(50));
        assert_eq!(short(&long), format!("{}…", "a".repeat(199)));
    }

    #[test]
    fn pump_keeps_the_first_bytes_and_reports_each_nonblank_line() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let line = format!("{}\n", "y".repeat(1023));
        let mut input = b"first\n\n".to_vec();
        while input.len() < OUTPUT_LIMIT + 4096 {
            input.extend_from_slice(line.as_bytes());
        }
        let kept = rt.block_on(pump(Some(&input[..]), 7, tx));
        assert!(kept.starts_with("first\n\n"));
        assert!(kept.ends_with("\n[output cut by the node]\n"));
        assert!(kept.len() <= OUTPUT_LIMIT + "\n[output cut by the node]\n".len());
        let mut progress = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            match ev {
                Event::Progress(7, l) => progress.push(l),
                _ => panic!("unexpected event"),
            }
        }
        // Every non-blank line is progress, those past the limit included.
        assert_eq!(progress[0], "first\n");
        assert_eq!(progress.len(), 1 + (input.len() - 7) / line.len());
        assert_eq!(
            rt.block_on(pump(None::<&[u8]>, 1, mpsc::unbounded_channel().0)),
            ""
        );
    }
}

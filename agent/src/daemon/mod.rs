//! `tenet daemon`: runs scheduled tasks and collector-queued actions, one at a time.
//!
//! - **Schedules** (OpenSVC grammar, [`crate::schedule`]): `compliance_auto` (`[compliance]
//!   schedule`, default `~02:00-06:00`), `pushasset` (`[pushasset] schedule`, default
//!   `~00:00-06:00`), per-service compliance (`[service.<name>] comp_schedule`, default
//!   `[compliance] service_schedule` or `~00:00-06:00`) for each of `services`, and the
//!   action poll (`[dequeue_actions] schedule`, default `@10`). Last-run times live in
//!   `<var>/scheduler/` (OpenSVC's files: `last_comp_check`, `last_asset_push`, ...; the
//!   `.success` twin after exit 0), written atomically before each run. The daemon sleeps
//!   until the next due time or an event: it never polls.
//! - **Missed windows**: at start-up, a task whose first run due after its last run is already
//!   past runs once at once, marked `late`.
//! - **Runner**: one task at a time, FIFO; each task is a child process (`tenet compliance
//!   ...`, `tenet pushasset ...`), its output captured; records in `<var>/daemon/tasks.json`
//!   (see [`tasks`]), listed by `tenet tasks`.
//! - **Actions**: a TCP listener (`listener_addr`:`listener_port`, default `127.0.0.1:1214`)
//!   accepts only the bytes `dequeue_actions`; then (and at start-up, and on the poll
//!   schedule) the daemon dequeues its actions from the collector, records them in the
//!   [`journal`], acknowledges them, runs each through the runner and posts `{id, ret,
//!   stdout, stderr}`. An action is journaled as started (durably) before its process starts,
//!   so after a crash it is reported failed, never run twice.
//! - **Control socket** `<var>/daemon/control.sock` (mode 0600): `tenet tasks submit` queues
//!   a task (origin `cli`); `tenet dequeue-actions` (the socket-activated listener) asks for a
//!   dequeue.
//! - **SIGTERM / SIGINT**: no new task starts; the running one may finish within the grace
//!   period (`[daemon] grace_period`, default 60 s), then it is killed; the daemon exits 0.

pub mod client;
pub mod journal;
pub mod tasks;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use tenet_rulesets::action::{ActionCommand, ActionResult, DequeuedAction};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::collector::CallError;
use crate::config::NodeConfig;
use crate::schedule::{Schedule, format_datetime, splay_fraction};
use client::{CallReply, CallRequest};
use journal::{Entry, Journal, Step};
use tasks::{Origin, Planned, State, StateFile, Task};

/// The OpenSVC notification.
pub const NOTIFICATION: &[u8] = b"dequeue_actions";
/// Output kept per stream of a task (and posted for an action).
const OUTPUT_LIMIT: usize = 192 * 1024;
/// Longest sleep: the wall clock is looked at again at least this often (clock changes).
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// Delay before retrying to deliver action results.
const REPORT_RETRY: Duration = Duration::from_secs(30);

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node configuration file.
    pub config: PathBuf,
    /// Root prefix given to the tasks.
    pub root: PathBuf,
    /// The agent's state directory.
    pub var_dir: PathBuf,
}

/// Paths under the var dir.
pub fn state_path(var_dir: &Path) -> PathBuf {
    var_dir.join("daemon/tasks.json")
}

/// The control socket.
pub fn control_path(var_dir: &Path) -> PathBuf {
    var_dir.join("daemon/control.sock")
}

fn journal_path(var_dir: &Path) -> PathBuf {
    var_dir.join("daemon/actions.json")
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

enum Event {
    Notified,
    Dequeued(Result<Vec<DequeuedAction>, String>),
    Acked(Vec<i64>, Result<Vec<i64>, String>),
    Progress(u64, String),
    Finished(u64, Outcome),
    Reported(i64, Result<(), CallError>),
    Control(ControlRequest, oneshot::Sender<ControlReply>),
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
    error: Option<String>,
}

/// A scheduled task.
struct Sched {
    name: String,
    expr: String,
    schedule: Schedule,
    stamp: PathBuf,
    /// `tenet` arguments; `None` for the action poll.
    args: Option<Vec<String>>,
    last: Option<Timestamp>,
    last_success: Option<Timestamp>,
    due: Option<Timestamp>,
    /// A task of this schedule is queued or running.
    active: bool,
}

struct Daemon {
    opts: Options,
    exe: PathBuf,
    /// Registered with a collector (actions, results).
    registered: bool,
    tz: TimeZone,
    fraction: f64,
    scheds: Vec<Sched>,
    tasks: VecDeque<Task>,
    args: HashMap<u64, Vec<String>>,
    queue: VecDeque<u64>,
    running: Option<(u64, Option<u32>)>,
    next_id: u64,
    journal: Journal,
    started_at: String,
    tx: mpsc::UnboundedSender<Event>,
    stop_deadline: Option<Instant>,
    reports_deadline: Option<Instant>,
    kill_sent: u8,
    dirty: bool,
    progress_dirty: Option<Instant>,
    dequeue_busy: bool,
    dequeue_again: bool,
    reporting: HashSet<i64>,
    report_retry: Option<Instant>,
    grace: Duration,
}

fn config_str(cfg: &NodeConfig, section: &str, key: &str) -> Option<String> {
    cfg.table
        .get(section)
        .and_then(|t| t.get(key))
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// Reads a last-run stamp: `epoch.frac` (OpenSVC 2) or `YYYY-MM-DD HH:MM:SS.ffffff` (1.x).
fn read_stamp(path: &Path, tz: &TimeZone) -> Option<Timestamp> {
    let text = std::fs::read_to_string(path).ok()?;
    let t = text.trim();
    if let Ok(f) = t.parse::<f64>() {
        // Round up: a run at 10:00:00.4 is not 10 minutes old before 10:10:00.4.
        return Timestamp::from_second(f.ceil() as i64).ok();
    }
    let dt: jiff::civil::DateTime = t.parse().ok()?;
    tz.to_timestamp(dt).ok()
}

fn write_stamp(path: &Path, t: Timestamp) {
    let secs = t.as_second() as f64 + f64::from(t.subsec_microsecond()) / 1e6;
    if let Err(e) = tasks::write_durable(path, format!("{secs:.6}\n").as_bytes()) {
        tracing::error!("cannot write {}: {e:#}", path.display());
    }
}

impl Daemon {
    fn civil(&self, t: Timestamp) -> jiff::civil::DateTime {
        t.to_zoned(self.tz.clone()).datetime()
    }

    fn local_text(&self, t: Timestamp) -> String {
        format_datetime(self.civil(t))
    }

    fn new(opts: Options, tx: mpsc::UnboundedSender<Event>) -> anyhow::Result<Daemon> {
        let cfg = NodeConfig::load(&opts.config)?;
        let registered = cfg.collector().is_some() && cfg.node_id().is_some();
        if registered {
            // Fail now rather than at the first action when the secret is unreadable.
            std::fs::metadata(cfg.secret_file())
                .with_context(|| format!("the node secret {}", cfg.secret_file().display()))?;
        } else {
            tracing::warn!(
                "{}: not registered with a collector: no queued actions, no results posted",
                cfg.path.display()
            );
        }
        let tz = TimeZone::system();
        let node = cfg
            .node_id()
            .map(str::to_string)
            .unwrap_or_else(|| tenet_modules::Host::new(&opts.root).hostname().to_string());
        let grace = match cfg.table.get("daemon").and_then(|t| t.get("grace_period")) {
            None => Duration::from_secs(60),
            Some(v) => match v.as_integer() {
                Some(s) if s >= 0 => Duration::from_secs(s as u64),
                _ => bail!(
                    "{}: daemon.grace_period: expected seconds",
                    cfg.path.display()
                ),
            },
        };
        let sched_dir = opts.var_dir.join("scheduler");
        let mut defs: Vec<(String, String, PathBuf, Option<Vec<String>>)> = vec![
            (
                "compliance_auto".into(),
                config_str(&cfg, "compliance", "schedule").unwrap_or("~02:00-06:00".into()),
                sched_dir.join("last_comp_check"),
                // A scheduled run on a node with nothing attached yet is not an error.
                Some(vec![
                    "compliance".into(),
                    "auto".into(),
                    "--allow-empty".into(),
                ]),
            ),
            (
                "pushasset".into(),
                config_str(&cfg, "pushasset", "schedule").unwrap_or("~00:00-06:00".into()),
                sched_dir.join("last_asset_push"),
                Some(vec!["pushasset".into()]),
            ),
        ];
        for svc in cfg.services() {
            let expr = cfg
                .table
                .get("service")
                .and_then(|t| t.get(&svc))
                .and_then(|t| t.get("comp_schedule"))
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .or_else(|| config_str(&cfg, "compliance", "service_schedule"))
                .unwrap_or("~00:00-06:00".into());
            let safe: String = svc
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            defs.push((
                format!("compliance_auto@{svc}"),
                expr,
                sched_dir
                    .join("services")
                    .join(safe)
                    .join("last_comp_check"),
                Some(vec![
                    "compliance".into(),
                    "auto".into(),
                    "--allow-empty".into(),
                    "--service".into(),
                    svc.clone(),
                ]),
            ));
        }
        if registered {
            defs.push((
                "dequeue_actions".into(),
                config_str(&cfg, "dequeue_actions", "schedule").unwrap_or("@10".into()),
                sched_dir.join("last_dequeue_actions_push"),
                None,
            ));
        }
        let mut scheds = Vec::new();
        for (name, expr, stamp, args) in defs {
            let schedule = Schedule::parse(&expr);
            for e in &schedule.invalid {
                tracing::warn!(task = name, "schedule member dropped: {e}");
            }
            if schedule.is_never() {
                tracing::info!(task = name, schedule = expr, "never scheduled");
            }
            let last = read_stamp(&stamp, &tz);
            let last_success = read_stamp(&stamp.with_extension("success"), &tz);
            scheds.push(Sched {
                name,
                expr,
                schedule,
                stamp,
                args,
                last,
                last_success,
                due: None,
                active: false,
            });
        }
        let journal = Journal::load(&journal_path(&opts.var_dir))?;
        let exe = std::env::current_exe().context("locating the tenet binary")?;
        Ok(Daemon {
            exe,
            registered,
            tz,
            fraction: splay_fraction(&node),
            scheds,
            tasks: VecDeque::new(),
            args: HashMap::new(),
            queue: VecDeque::new(),
            running: None,
            next_id: 1,
            journal,
            started_at: tasks::now_text(),
            tx,
            stop_deadline: None,
            reports_deadline: None,
            kill_sent: 0,
            dirty: true,
            progress_dirty: None,
            dequeue_busy: false,
            dequeue_again: false,
            reporting: HashSet::new(),
            report_retry: None,
            grace,
            opts,
        })
    }

    // -------------------------------------------------------------------------------------
    // State

    fn state_file(&self) -> StateFile {
        StateFile {
            pid: std::process::id(),
            started_at: self.started_at.clone(),
            updated_at: tasks::now_text(),
            running: self.stop_deadline.is_none() || self.running.is_some(),
            next_id: self.next_id,
            schedules: self
                .scheds
                .iter()
                .map(|s| Planned {
                    task: s.name.clone(),
                    schedule: s.expr.clone(),
                    last_run: s.last.map(|t| self.local_text(t)),
                    last_success: s.last_success.map(|t| self.local_text(t)),
                    next_run: s.due.map(|t| self.local_text(t)),
                })
                .collect(),
            tasks: self.tasks.iter().cloned().collect(),
        }
    }

    fn flush(&mut self) {
        let path = state_path(&self.opts.var_dir);
        if let Err(e) = self.state_file().save(&path) {
            tracing::error!("{e:#}");
        }
        self.dirty = false;
        self.progress_dirty = None;
    }

    /// Keeps the previous instance's history; what it left queued or running failed.
    fn load_history(&mut self) {
        let path = state_path(&self.opts.var_dir);
        match StateFile::load(&path) {
            Ok(Some(old)) => {
                self.next_id = old.next_id.max(1);
                for mut t in old.tasks {
                    if matches!(t.state, State::Queued | State::Running) {
                        t.progress = if t.state == State::Running {
                            "interrupted: the daemon stopped while it ran".into()
                        } else {
                            "not started: the daemon stopped".into()
                        };
                        t.state = State::Failed;
                        t.pid = None;
                        t.ended_at.get_or_insert_with(tasks::now_text);
                    }
                    self.tasks.push_back(t);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("{e:#}; starting a new task history"),
        }
    }

    fn task_mut(&mut self, id: u64) -> Option<&mut Task> {
        self.tasks.iter_mut().find(|t| t.id == id)
    }

    fn trim_history(&mut self) {
        let finished = self.tasks.iter().filter(|t| t.state.is_finished()).count();
        let mut extra = finished.saturating_sub(tasks::KEEP_FINISHED);
        self.tasks.retain(|t| {
            if extra > 0 && t.state.is_finished() {
                extra -= 1;
                false
            } else {
                true
            }
        });
    }

    // -------------------------------------------------------------------------------------
    // Runner

    fn enqueue(
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

    fn start_next(&mut self) {
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

    fn finish(&mut self, id: u64, o: Outcome) {
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

    fn on_progress(&mut self, id: u64, line: String) {
        if let Some(t) = self.task_mut(id) {
            t.progress = short(&line);
            if self.progress_dirty.is_none() {
                self.progress_dirty = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    // -------------------------------------------------------------------------------------
    // Schedules

    fn plan_all(&mut self) {
        let now = Timestamp::now();
        let civil_now = self.civil(now);
        for i in 0..self.scheds.len() {
            let s = &self.scheds[i];
            if s.active {
                self.scheds[i].due = None;
                continue;
            }
            let last = s.last.map(|l| self.civil(l));
            let due = s
                .schedule
                .next(civil_now, last, self.fraction)
                .and_then(|dt| self.tz.to_timestamp(dt).ok());
            self.scheds[i].due = due;
        }
        self.dirty = true;
    }

    /// At start-up: each task whose first run due after its last run is past runs now, late.
    fn run_missed(&mut self) {
        let now = Timestamp::now();
        for i in 0..self.scheds.len() {
            let s = &self.scheds[i];
            let (Some(last), Some(args)) = (s.last, s.args.clone()) else {
                continue;
            };
            let l = self.civil(last);
            let Some(first) = s
                .schedule
                .next(l, Some(l), self.fraction)
                .and_then(|dt| self.tz.to_timestamp(dt).ok())
            else {
                continue;
            };
            if first.as_second() < now.as_second() {
                let name = s.name.clone();
                let msg = format!(
                    "late: the run due at {} was missed while the daemon was down",
                    self.local_text(first)
                );
                tracing::warn!(task = name, "{msg}");
                self.scheds[i].active = true;
                self.enqueue(name, Origin::Schedule, args, None, true, msg);
            }
        }
    }

    fn next_due(&self) -> Option<Timestamp> {
        self.scheds.iter().filter_map(|s| s.due).min()
    }

    fn on_timer(&mut self) {
        let now = Timestamp::now();
        for i in 0..self.scheds.len() {
            let Some(due) = self.scheds[i].due else {
                continue;
            };
            if due > now {
                continue;
            }
            self.scheds[i].due = None;
            match self.scheds[i].args.clone() {
                None => {
                    // The action poll: not a runner task.
                    self.scheds[i].last = Some(now);
                    write_stamp(&self.scheds[i].stamp, now);
                    self.request_dequeue();
                }
                Some(args) => {
                    self.scheds[i].active = true;
                    let name = self.scheds[i].name.clone();
                    self.enqueue(name, Origin::Schedule, args, None, false, "queued".into());
                }
            }
        }
        self.plan_all();
    }

    // -------------------------------------------------------------------------------------
    // Actions

    fn request_dequeue(&mut self) {
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

    fn on_dequeued(&mut self, r: Result<Vec<DequeuedAction>, String>) {
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

    fn on_acked(&mut self, asked: Vec<i64>, r: Result<Vec<i64>, String>) {
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

    fn enqueue_action(&mut self, id: i64, command: &str) {
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

    fn dequeue_done(&mut self) {
        self.dequeue_busy = false;
        if std::mem::take(&mut self.dequeue_again) {
            self.request_dequeue();
        }
    }

    fn report(&mut self, result: ActionResult) {
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

    fn on_reported(&mut self, id: i64, r: Result<(), CallError>) {
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

    fn retry_reports(&mut self) {
        self.report_retry = None;
        for r in self.journal.unreported() {
            self.report(r);
        }
    }

    /// After a restart: started actions are reported failed; accepted ones run; results not
    /// delivered are delivered.
    fn recover(&mut self) {
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
    fn call(
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

    // -------------------------------------------------------------------------------------
    // Control and stop

    fn on_control(&mut self, req: ControlRequest) -> ControlReply {
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

    fn begin_stop(&mut self) {
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

    fn kill_running(&mut self) {
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

/// Reads one notification: only the exact bytes `dequeue_actions` (then EOF) are accepted.
async fn read_notification(sock: &mut tokio::net::TcpStream) -> Result<(), String> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 64];
    let read = async {
        loop {
            let n = sock.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok::<(), String>(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > NOTIFICATION.len() {
                return Err("longer than a notification".to_string());
            }
            if buf.ends_with(b"\0") {
                return Ok(());
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(2), read).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("{e}: {:?}", String::from_utf8_lossy(&buf))),
        // A client that keeps the connection open after the message is fine.
        Err(_) if buf == NOTIFICATION => {}
        Err(_) => {
            return Err(format!(
                "timed out after {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
    }
    if buf == NOTIFICATION {
        Ok(())
    } else {
        Err(format!(
            "unexpected message {:?}",
            String::from_utf8_lossy(&buf)
        ))
    }
}

async fn listen(listener: tokio::net::TcpListener, tx: mpsc::UnboundedSender<Event>) {
    loop {
        let (mut sock, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            match read_notification(&mut sock).await {
                Ok(()) => {
                    tracing::info!(peer = %peer, "listener: dequeue_actions notification");
                    let _ = tx.send(Event::Notified);
                }
                Err(e) => {
                    tracing::warn!(peer = %peer, "listener: rejected a malformed notification: {e}")
                }
            }
        });
    }
}

async fn serve_control(listener: tokio::net::UnixListener, tx: mpsc::UnboundedSender<Event>) {
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

fn listener_addr(cfg: &NodeConfig) -> anyhow::Result<Option<SocketAddr>> {
    let listen = cfg
        .table
        .get("daemon")
        .and_then(|t| t.get("listen"))
        .map(|v| v.as_bool().unwrap_or(true))
        .unwrap_or(true);
    if !listen {
        return Ok(None);
    }
    let addr = cfg
        .table
        .get("listener_addr")
        .and_then(|v| v.as_str())
        .unwrap_or("127.0.0.1");
    let ip: std::net::IpAddr = addr.parse().with_context(|| {
        format!(
            "{}: listener_addr: {addr:?} is not an IP address",
            cfg.path.display()
        )
    })?;
    Ok(Some(SocketAddr::new(ip, cfg.listener_port())))
}

/// Runs the daemon until SIGTERM / SIGINT (on a current-thread runtime: task processes are
/// spawned from the main thread, so their parent-death signal follows the process).
pub fn run(opts: Options) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut d = Daemon::new(opts, tx.clone())?;
    let r = rt.block_on(main_loop(&mut d, tx, rx));
    drop(rt);
    drop(d);
    r
}

async fn main_loop(
    d: &mut Daemon,
    tx: mpsc::UnboundedSender<Event>,
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    std::fs::create_dir_all(d.opts.var_dir.join("daemon"))
        .with_context(|| format!("creating {}", d.opts.var_dir.join("daemon").display()))?;
    if let Some(old) = StateFile::load(&state_path(&d.opts.var_dir)).ok().flatten()
        && old.running
        && old.pid != std::process::id()
        && tasks::alive(old.pid)
        && std::fs::read_to_string(format!("/proc/{}/comm", old.pid))
            .is_ok_and(|c| c.trim().starts_with("tenet"))
    {
        bail!(
            "another tenet daemon (pid {}) uses {}",
            old.pid,
            d.opts.var_dir.display()
        );
    }
    let cfg = NodeConfig::load(&d.opts.config)?;
    let tcp = match listener_addr(&cfg)? {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listener: binding {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, "listening for dequeue_actions notifications");
            Some(l)
        }
        None => {
            tracing::info!("listener disabled ([daemon] listen = false)");
            None
        }
    };
    let sock_path = control_path(&d.opts.var_dir);
    let _ = std::fs::remove_file(&sock_path);
    let control = tokio::net::UnixListener::bind(&sock_path)
        .with_context(|| format!("binding {}", sock_path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o600))?;
    }
    let listener_task = tcp.map(|l| tokio::spawn(listen(l, tx.clone())));
    let control_task = tokio::spawn(serve_control(control, tx.clone()));
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    d.load_history();
    d.recover();
    d.run_missed();
    d.plan_all();
    d.request_dequeue();
    tracing::info!(
        pid = std::process::id(),
        var_dir = %d.opts.var_dir.display(),
        "daemon started"
    );

    loop {
        d.start_next();
        if d.dirty {
            d.flush();
        }
        let mut reports_until = None;
        if d.stop_deadline.is_some() && d.running.is_none() {
            // Results being delivered get a few seconds; the rest goes at the next start.
            if d.reporting.is_empty() {
                break;
            }
            let until = *d
                .reports_deadline
                .get_or_insert_with(|| Instant::now() + Duration::from_secs(10));
            if Instant::now() >= until {
                break;
            }
            reports_until = Some(until);
        }
        let now = Timestamp::now();
        let wake = match d.next_due() {
            Some(due) => {
                let secs = (due.as_millisecond() - now.as_millisecond()).max(0) as u64;
                Duration::from_millis(secs).min(MAX_SLEEP)
            }
            None => MAX_SLEEP,
        };
        let timer = Instant::now() + wake;
        let progress = d.progress_dirty;
        let retry = d.report_retry;
        let stop = d
            .stop_deadline
            .map(|s| s + Duration::from_secs(5) * u32::from(d.kill_sent));
        tokio::select! {
            _ = tokio::time::sleep_until(timer), if d.stop_deadline.is_none() => d.on_timer(),
            Some(ev) = rx.recv() => match ev {
                Event::Notified => d.request_dequeue(),
                Event::Dequeued(r) => d.on_dequeued(r),
                Event::Acked(asked, r) => d.on_acked(asked, r),
                Event::Progress(id, line) => d.on_progress(id, line),
                Event::Finished(id, o) => d.finish(id, o),
                Event::Reported(id, r) => d.on_reported(id, r),
                Event::Control(req, reply) => {
                    let r = d.on_control(req);
                    let _ = reply.send(r);
                }
            },
            _ = async { tokio::time::sleep_until(progress.unwrap_or_else(Instant::now)).await }, if progress.is_some() => d.flush(),
            _ = async { tokio::time::sleep_until(retry.unwrap_or_else(Instant::now)).await }, if retry.is_some() => d.retry_reports(),
            _ = async { tokio::time::sleep_until(stop.unwrap_or_else(Instant::now)).await }, if stop.is_some() && d.running.is_some() => d.kill_running(),
            _ = async { tokio::time::sleep_until(reports_until.unwrap_or_else(Instant::now)).await }, if reports_until.is_some() => {}
            _ = sigterm.recv() => d.begin_stop(),
            _ = sigint.recv() => d.begin_stop(),
        }
    }
    if let Some(t) = listener_task {
        t.abort();
    }
    control_task.abort();
    let _ = std::fs::remove_file(&sock_path);
    // Results still waiting are delivered by the next start.
    d.flush();
    tracing::info!("daemon stopped");
    Ok(())
}

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

mod actions;
pub mod client;
mod control;
pub mod journal;
mod listener;
mod runner;
mod schedules;
pub mod tasks;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use tenet_rulesets::action::DequeuedAction;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::collector::CallError;
use crate::config::NodeConfig;
use crate::schedule::{format_datetime, splay_fraction};
use control::serve_control;
pub use control::{ControlReply, ControlRequest, control, control_path};
use journal::Journal;
pub use listener::NOTIFICATION;
use listener::{listen, listener_addr};
use runner::Outcome;
use schedules::Sched;
use tasks::{Planned, State, StateFile, Task};

/// Longest sleep: the wall clock is looked at again at least this often (clock changes).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

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

fn journal_path(var_dir: &Path) -> PathBuf {
    var_dir.join("daemon/actions.json")
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
        let scheds = schedules::load(&cfg, &opts.var_dir, registered, &tz);
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

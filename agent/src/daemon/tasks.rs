//! Task records and the daemon's state file, `<var>/daemon/tasks.json`, which `tenet tasks`
//! reads. The daemon rewrites it atomically (temp file, rename) on every task state change,
//! and at most once a second for progress text, so readers always see a whole document.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::write_private;

/// Who asked for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A schedule of the node configuration.
    Schedule,
    /// An action queued on the collector.
    Action,
    /// `tenet tasks submit`.
    Cli,
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting its turn.
    Queued,
    /// Its process runs.
    Running,
    /// Exited 0.
    Done,
    /// A compliance run that completed and found something nok (exit 1): the node needs
    /// attention, the task itself did not fail.
    Nok,
    /// Exited non-zero (a compliance run: 2 or more), was killed, or never started.
    Failed,
}

impl State {
    /// The task has ended (done, nok or failed).
    pub fn is_finished(self) -> bool {
        matches!(self, State::Done | State::Nok | State::Failed)
    }

    /// The end state of a task that ran `command` (`tenet compliance auto ...`) and exited
    /// with `code`: exit 1 of a compliance run means "nok", not a failure of the task.
    pub fn of_exit(command: &str, code: i32) -> State {
        let mut words = command.split_whitespace().skip_while(|w| *w == "tenet");
        let compliance_run = words.next() == Some("compliance")
            && words
                .next()
                .is_some_and(|a| a.parse::<tenet_rulesets::api::RunAction>().is_ok());
        match code {
            0 => State::Done,
            1 if compliance_run => State::Nok,
            _ => State::Failed,
        }
    }
}

/// One task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Increasing id (kept across daemon restarts).
    pub id: u64,
    /// `compliance_auto`, `pushasset`, `compliance_auto@<svc>`, `action:<id>`, `cli`.
    pub name: String,
    /// Who asked for it.
    pub origin: Origin,
    /// Where it is.
    pub state: State,
    /// The `tenet` command it runs.
    pub command: String,
    /// What it is doing: the last line it printed, or why it failed.
    pub progress: String,
    /// When it was queued (RFC 3339, UTC, milliseconds).
    pub queued_at: String,
    /// When its process started.
    pub started_at: Option<String>,
    /// When it ended.
    pub ended_at: Option<String>,
    /// Its exit code (128 + signal when killed).
    pub exit_code: Option<i32>,
    /// The collector action it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<i64>,
    /// A scheduled run of a window missed while the daemon was down.
    #[serde(default)]
    pub late: bool,
    /// Its process id, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// A scheduled task's plan, as the state file shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    /// Task name.
    pub task: String,
    /// Its schedule expression.
    pub schedule: String,
    /// Last run (local time, `YYYY-MM-DD HH:MM:SS`).
    pub last_run: Option<String>,
    /// Last successful run.
    pub last_success: Option<String>,
    /// Next run (local time), none when never.
    pub next_run: Option<String>,
}

/// The whole state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// The daemon's process id.
    pub pid: u32,
    /// When it started.
    pub started_at: String,
    /// When this file was written.
    pub updated_at: String,
    /// False once the daemon stopped cleanly.
    pub running: bool,
    /// The next task id.
    pub next_id: u64,
    /// Scheduled tasks and their next runs.
    pub schedules: Vec<Planned>,
    /// Tasks: queued and running ones, then the latest finished ones (oldest first).
    pub tasks: Vec<Task>,
}

/// Finished tasks kept in the state file.
pub const KEEP_FINISHED: usize = 200;

/// Now, RFC 3339 UTC with milliseconds.
pub fn now_text() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

impl StateFile {
    /// Reads the state file; `None` when there is none.
    pub fn load(path: &Path) -> anyhow::Result<Option<StateFile>> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
                format!("{}: corrupt daemon state file", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes it atomically (no directory fsync: it is a view, rewritten often).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut text = serde_json::to_vec_pretty(self)?;
        text.push(b'\n');
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        tenet_fsutil::atomic_write(path, &text, tenet_fsutil::DEFAULT_MODE, false)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Whether a process is alive.
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Writes a private durable file (the journal and last-run stamps use it).
pub fn write_durable(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    write_private(path, content, 0o644)
}

#[cfg(test)]
mod tests {
    use super::State;

    #[test]
    fn a_compliance_run_that_found_nok_is_nok_not_failed() {
        let auto = "tenet compliance auto --allow-empty";
        assert_eq!(State::of_exit(auto, 0), State::Done);
        assert_eq!(State::of_exit(auto, 1), State::Nok);
        assert_eq!(State::of_exit(auto, 2), State::Failed);
        assert_eq!(
            State::of_exit("tenet compliance check --module m", 1),
            State::Nok
        );
        // Exit 1 of anything else is a failure of the task.
        assert_eq!(State::of_exit("tenet pushasset", 1), State::Failed);
        assert_eq!(
            State::of_exit("tenet compliance list modules", 1),
            State::Failed
        );
        assert_eq!(State::of_exit("tenet release add x", 1), State::Failed);
        assert!(State::Nok.is_finished());
    }
}

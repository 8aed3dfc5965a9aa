//! The actions journal, `<var>/daemon/actions.json`: which collector actions this node
//! accepted, started, finished and reported. It is written (temp file, fsync, rename) before
//! each step, so after a crash the daemon knows: an action started but not finished is
//! reported failed, never run again; one accepted but not started is run; a result not yet
//! delivered is delivered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tenet_rulesets::action::ActionResult;

use crate::config::write_private;

/// Where an action is, on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Dequeued, being acknowledged, or queued in the runner.
    Accepted,
    /// Its process was about to start, or is running.
    Started,
    /// Finished: the result waits for delivery.
    Finished,
    /// The collector has the result.
    Reported,
}

/// One action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The command, as the collector sent it.
    pub command: String,
    /// Where it is.
    pub step: Step,
    /// The collector acknowledged it as running (R).
    #[serde(default)]
    pub acked: bool,
    /// The runner's task id, once queued.
    pub task_id: Option<u64>,
    /// When each step was reached (RFC 3339, UTC).
    pub accepted_at: String,
    /// Start time.
    pub started_at: Option<String>,
    /// End time.
    pub ended_at: Option<String>,
    /// The result, once finished.
    pub result: Option<ActionResult>,
}

/// The journal.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Journal {
    /// Entries by action id.
    pub actions: BTreeMap<i64, Entry>,
    #[serde(skip)]
    path: PathBuf,
}

/// Entries reported more than this many are dropped (oldest first).
const KEEP_REPORTED: usize = 1000;

impl Journal {
    /// Loads the journal (empty when missing).
    pub fn load(path: &Path) -> anyhow::Result<Journal> {
        let mut j = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice::<Journal>(&b)
                .with_context(|| format!("{}: corrupt actions journal", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Journal::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        j.path = path.to_path_buf();
        Ok(j)
    }

    /// Writes it atomically and durably.
    pub fn save(&mut self) -> anyhow::Result<()> {
        let reported: Vec<i64> = self
            .actions
            .iter()
            .filter(|(_, e)| e.step == Step::Reported)
            .map(|(id, _)| *id)
            .collect();
        if reported.len() > KEEP_REPORTED {
            for id in &reported[..reported.len() - KEEP_REPORTED] {
                self.actions.remove(id);
            }
        }
        let text = serde_json::to_vec_pretty(self)?;
        write_private(&self.path, &text, 0o600)
    }

    /// The ids with a result waiting for delivery.
    pub fn unreported(&self) -> Vec<ActionResult> {
        self.actions
            .values()
            .filter(|e| e.step == Step::Finished)
            .filter_map(|e| e.result.clone())
            .collect()
    }
}

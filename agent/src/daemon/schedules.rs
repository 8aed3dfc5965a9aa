//! Schedules: the daemon's scheduled tasks (`compliance_auto`, `pushasset`, per-service
//! compliance, the action poll), their last-run stamps under `<var>/scheduler/` (OpenSVC's
//! files and formats) and the missed-window catch-up at start-up.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::Daemon;
use super::tasks::{self, Origin};
use crate::config::NodeConfig;
use crate::schedule::Schedule;

/// A scheduled task.
pub(super) struct Sched {
    pub(super) name: String,
    pub(super) expr: String,
    pub(super) schedule: Schedule,
    pub(super) stamp: PathBuf,
    /// `tenet` arguments; `None` for the action poll.
    pub(super) args: Option<Vec<String>>,
    pub(super) last: Option<Timestamp>,
    pub(super) last_success: Option<Timestamp>,
    pub(super) due: Option<Timestamp>,
    /// A task of this schedule is queued or running.
    pub(super) active: bool,
}

fn config_str(cfg: &NodeConfig, section: &str, key: &str) -> Option<String> {
    cfg.table
        .get(section)
        .and_then(|t| t.get(key))
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// Reads a last-run stamp: `epoch.frac` (OpenSVC 2) or `YYYY-MM-DD HH:MM:SS.ffffff` (1.x).
pub(super) fn read_stamp(path: &Path, tz: &TimeZone) -> Option<Timestamp> {
    let text = std::fs::read_to_string(path).ok()?;
    let t = text.trim();
    if let Ok(f) = t.parse::<f64>() {
        // Round up: a run at 10:00:00.4 is not 10 minutes old before 10:10:00.4.
        return Timestamp::from_second(f.ceil() as i64).ok();
    }
    let dt: jiff::civil::DateTime = t.parse().ok()?;
    tz.to_timestamp(dt).ok()
}

pub(super) fn write_stamp(path: &Path, t: Timestamp) {
    let secs = t.as_second() as f64 + f64::from(t.subsec_microsecond()) / 1e6;
    if let Err(e) = tasks::write_durable(path, format!("{secs:.6}\n").as_bytes()) {
        tracing::error!("cannot write {}: {e:#}", path.display());
    }
}

/// The daemon's schedules from the node configuration, with their last-run stamps.
pub(super) fn load(
    cfg: &NodeConfig,
    var_dir: &Path,
    registered: bool,
    tz: &TimeZone,
) -> Vec<Sched> {
    let sched_dir = var_dir.join("scheduler");
    let mut defs: Vec<(String, String, PathBuf, Option<Vec<String>>)> = vec![
        (
            "compliance_auto".into(),
            config_str(cfg, "compliance", "schedule").unwrap_or("~02:00-06:00".into()),
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
            config_str(cfg, "pushasset", "schedule").unwrap_or("~00:00-06:00".into()),
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
            .or_else(|| config_str(cfg, "compliance", "service_schedule"))
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
            config_str(cfg, "dequeue_actions", "schedule").unwrap_or("@10".into()),
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
        let last = read_stamp(&stamp, tz);
        let last_success = read_stamp(&stamp.with_extension("success"), tz);
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
    scheds
}

impl Daemon {
    pub(super) fn plan_all(&mut self) {
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
    pub(super) fn run_missed(&mut self) {
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

    pub(super) fn next_due(&self) -> Option<Timestamp> {
        self.scheds.iter().filter_map(|s| s.due).min()
    }

    pub(super) fn on_timer(&mut self) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_read_both_opensvc_formats_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last_comp_check");
        let tz = TimeZone::UTC;
        assert_eq!(read_stamp(&path, &tz), None);
        // OpenSVC 2: epoch seconds, rounded up.
        std::fs::write(&path, "1700000000.4\n").unwrap();
        assert_eq!(read_stamp(&path, &tz).unwrap().as_second(), 1_700_000_001);
        // OpenSVC 1.x: local date and time.
        std::fs::write(&path, "2023-11-14 22:13:20.000000\n").unwrap();
        assert_eq!(read_stamp(&path, &tz).unwrap().as_second(), 1_700_000_000);
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(read_stamp(&path, &tz), None);
        let t = Timestamp::from_second(1_700_000_123).unwrap();
        write_stamp(&path, t);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "1700000123.000000\n"
        );
        assert_eq!(read_stamp(&path, &tz), Some(t));
    }

    #[test]
    fn schedules_come_from_the_configuration_with_opensvc_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "services = [\"db\", \"web\"]\n[compliance]\nservice_schedule = \"@30\"\n\
             [service.web]\ncomp_schedule = \"never\"\n",
        )
        .unwrap();
        let cfg = NodeConfig::load(&path).unwrap();
        let var = dir.path().join("var");
        let summary = |s: &[Sched]| -> Vec<(String, String, PathBuf, Option<Vec<String>>)> {
            s.iter()
                .map(|s| {
                    let stamp = s.stamp.strip_prefix(&var).unwrap().to_path_buf();
                    (s.name.clone(), s.expr.clone(), stamp, s.args.clone())
                })
                .collect()
        };
        let unregistered = load(&cfg, &var, false, &TimeZone::UTC);
        let args = |a: &[&str]| Some(a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            summary(&unregistered),
            vec![
                (
                    "compliance_auto".into(),
                    "~02:00-06:00".into(),
                    "scheduler/last_comp_check".into(),
                    args(&["compliance", "auto", "--allow-empty"]),
                ),
                (
                    "pushasset".into(),
                    "~00:00-06:00".into(),
                    "scheduler/last_asset_push".into(),
                    args(&["pushasset"]),
                ),
                (
                    "compliance_auto@db".into(),
                    "@30".into(),
                    "scheduler/services/db/last_comp_check".into(),
                    args(&["compliance", "auto", "--allow-empty", "--service", "db"]),
                ),
                (
                    "compliance_auto@web".into(),
                    "never".into(),
                    "scheduler/services/web/last_comp_check".into(),
                    args(&["compliance", "auto", "--allow-empty", "--service", "web"]),
                ),
            ]
        );
        // Only a registered node polls for actions.
        let registered = load(&cfg, &var, true, &TimeZone::UTC);
        let poll = summary(&registered).pop().unwrap();
        assert_eq!(
            poll,
            (
                "dequeue_actions".into(),
                "@10".into(),
                "scheduler/last_dequeue_actions_push".into(),
                None
            )
        );
        assert_eq!(registered.len(), unregistered.len() + 1);
    }
}

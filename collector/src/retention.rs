//! Retention: what the database keeps, and the background pruner that enforces it.
//!
//! Kept always: each module's latest status, log and rules per node and service
//! (`module_status`), and the latest run of each node and service. Kept for the window
//! (`serve --retention`, default 30 days): every run with its module results. Kept for the
//! trend window (`serve --trend-retention`, default 400 days): daily aggregates per node (and
//! service) and per module, rolled up from the runs of each finished UTC day before any of
//! them may be pruned.
//!
//! The pruner runs in its own thread every `interval`: it rolls up the finished days not yet
//! rolled up, then deletes expired runs `batch` at a time, each batch one short write through
//! the store's writer with a pause between batches, so result posts never wait behind more
//! than one batch. Time comes from a [`Clock`], so tests can run months in seconds.

use std::sync::Arc;
use std::time::Duration;

use time::{Date, OffsetDateTime};

use crate::error::Result;
use crate::store::Store;

/// What to keep and how to prune.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Full runs are kept this long.
    pub window: Duration,
    /// Daily aggregates are kept this long.
    pub trends: Duration,
    /// Time between pruning rounds.
    pub interval: Duration,
    /// Runs deleted per write.
    pub batch: u32,
    /// Pause between two batches.
    pub pause: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            window: Duration::from_secs(30 * 86400),
            trends: Duration::from_secs(400 * 86400),
            interval: Duration::from_secs(600),
            batch: 200,
            pause: Duration::from_millis(20),
        }
    }
}

/// Where "now" comes from.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The system clock (UTC).
pub fn system_clock() -> Clock {
    Arc::new(OffsetDateTime::now_utc)
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Days rolled up.
    pub days: u64,
    /// Runs deleted.
    pub runs: u64,
    /// Aggregate rows deleted.
    pub aggregates: u64,
}

fn day_text(d: Date) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]");
    d.format(&f).unwrap_or_default()
}

fn time_text(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.format(&f).unwrap_or_default()
}

fn parse_day(s: &str) -> Option<Date> {
    let f = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s, &f).ok()
}

/// One round at `now`: roll up, then prune (bounded by what was rolled up).
pub fn round(store: &dyn Store, policy: &Retention, now: OffsetDateTime) -> Result<Round> {
    let mut out = Round::default();
    let today = now.date();
    let (rolled, oldest) = store.retention_state()?;
    let mut day = match (
        rolled.as_deref().and_then(parse_day),
        oldest.as_deref().and_then(parse_day),
    ) {
        (Some(r), Some(o)) => r.next_day().map(|n| n.max(o)),
        (Some(r), None) => r.next_day(),
        (None, Some(o)) => Some(o),
        (None, None) => None,
    };
    while let Some(d) = day.filter(|d| *d < today) {
        let Some(next) = d.next_day() else { break };
        store.rollup_day(&day_text(d), &day_text(next))?;
        out.days += 1;
        day = Some(next);
    }
    // Runs of a day not rolled up yet are never pruned.
    let (rolled, _) = store.retention_state()?;
    let window_cut = now - policy.window;
    let mut cutoff = time_text(window_cut);
    match rolled
        .as_deref()
        .and_then(parse_day)
        .and_then(Date::next_day)
    {
        Some(first_open) => {
            let open = format!("{} 00:00:00", day_text(first_open));
            if open < cutoff {
                cutoff = open;
            }
        }
        None => return Ok(out),
    }
    loop {
        let n = store.prune_runs(&cutoff, policy.batch)?;
        out.runs += n;
        if n < u64::from(policy.batch) {
            break;
        }
        std::thread::sleep(policy.pause);
    }
    let trend_cut = day_text((now - policy.trends).date());
    loop {
        let n = store.prune_daily(&trend_cut, policy.batch)?;
        out.aggregates += n;
        if n < u64::from(policy.batch) {
            break;
        }
        std::thread::sleep(policy.pause);
    }
    Ok(out)
}

/// Starts the pruner thread: a round at once, then one every `policy.interval`.
pub fn spawn(store: Arc<dyn Store>, policy: Retention, clock: Clock) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("retention".into())
        .spawn(move || {
            loop {
                match round(store.as_ref(), &policy, clock()) {
                    Ok(r) if r != Round::default() => tracing::info!(
                        "retention: {} days rolled up, {} runs and {} daily aggregates pruned",
                        r.days,
                        r.runs,
                        r.aggregates
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("retention: {e}"),
                }
                std::thread::sleep(policy.interval);
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use tenet_rulesets::api::RunResults;

    fn run(id: &str, status: &str) -> RunResults {
        serde_json::from_value(serde_json::json!({
            "run_id": id, "agent_version": "t", "action": "check", "policy_hash": "h",
            "modules": [
                {"module": "a", "moduleset": "ms", "status": status,
                 "actions": [{"action": "check", "exit_code": 0, "log": "x", "duration_ms": 1}]},
                {"module": "b", "moduleset": "ms", "status": "ok", "actions": []}
            ],
            "summary": {"ok": 1, "nok": 0, "na": 0}, "duration_ms": 1
        }))
        .unwrap()
    }

    #[test]
    fn runs_past_the_window_go_after_their_day_is_rolled_up_and_the_latest_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let store = SqliteStore::open(&path).unwrap();
        store.register_node("n1", "node1", "h", "t").unwrap();
        store.register_node("n2", "node2", "h", "t").unwrap();
        let start = OffsetDateTime::now_utc().date().midnight().assume_utc();
        // 40 days of two runs per node; node2 stops after day 5.
        let backdate = rusqlite::Connection::open(&path).unwrap();
        for d in 0..40i64 {
            for (node, last_day) in [("n1", 40), ("n2", 5)] {
                if d >= last_day {
                    continue;
                }
                for k in 0..2 {
                    let id = format!("{node}-{d}-{k}");
                    let status = if d % 2 == 0 && k == 1 { "nok" } else { "ok" };
                    store.record_run(node, &run(&id, status)).unwrap();
                    let at =
                        time_text(start + time::Duration::days(d) + time::Duration::hours(k + 1));
                    backdate
                        .execute(
                            "UPDATE runs SET received_at = ?1 WHERE run_id = ?2",
                            [&at, &id],
                        )
                        .unwrap();
                }
            }
        }
        let policy = Retention {
            window: Duration::from_secs(10 * 86400),
            batch: 7,
            pause: Duration::ZERO,
            ..Retention::default()
        };
        let now = start + time::Duration::days(40) + time::Duration::hours(12);
        let r = round(&store, &policy, now).unwrap();
        assert_eq!(r.days, 40);
        // Node 1 keeps the runs received after now - 10 days (days 31 to 39); node 2 its
        // latest only.
        assert_eq!(store.run_count("n1").unwrap(), 18);
        assert_eq!(store.run_count("n2").unwrap(), 1);
        assert_eq!(r.runs, 80 + 10 - 19);
        let (status, last) = store.node_status("n2").unwrap();
        assert_eq!(status.len(), 2);
        assert!(last.is_some());
        // The trend survives the runs: every day, with the last status of the day.
        let since = day_text(start.date());
        let days = store.compliance_daily(&since, None).unwrap();
        assert_eq!(days.len(), 40);
        assert_eq!(
            (days[0].subjects, days[0].compliant),
            (2, 0),
            "{:?}",
            days[0]
        );
        assert_eq!((days[1].subjects, days[1].compliant), (2, 2));
        assert_eq!((days[39].subjects, days[39].compliant), (1, 1));
        let a = store.compliance_daily(&since, Some("a")).unwrap();
        assert_eq!((a[0].ok, a[0].nok), (0, 2));
        // A second round finds nothing to do.
        assert_eq!(round(&store, &policy, now).unwrap(), Round::default());
        // Aggregates past the trend window go too.
        let later = now + time::Duration::days(401);
        let r = round(&store, &policy, later).unwrap();
        assert!(r.aggregates > 0);
    }
}

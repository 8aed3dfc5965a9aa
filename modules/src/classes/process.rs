//! The `process` class: a process is running (or not), as a given user; fix runs the rule's
//! start (or stop) command.
//!
//! OpenSVC name `process` (object script `process.py`). A rule is
//! `{"comm": "sshd", "args": "/usr/sbin/sshd -D", "state": "on", "uid": 0, "user": "root",
//! "start": "/usr/bin/systemctl start ssh"}`:
//!
//! - `comm` (the command name, as `ps -o comm` shows it: 15 characters at most) and `args`
//!   (the command line, its words joined by one space, as `ps -o args` shows it) are regular
//!   expressions matched at the start of the text; at least one is required.
//! - `state`: `on` (the default: a process matches) or `off` (none does).
//! - `uid`, `user`: the process runs with this effective user id / user name.
//! - `start`: the command fix runs for `on`; `stop` (a Tenet addition) the one it runs for
//!   `off` (`start` when there is no `stop`, as OpenSVC does). No shell: the words are split
//!   at blanks, the program is an absolute path or found on PATH.
//!
//! A process matches when one process matches every criterion given. Processes are read from
//! `/proc` (`comm`, `cmdline`, `status`), zombies left out. They are those of the machine
//! Tenet runs on, so under a root prefix other than `/` the rule is n/a.
//!
//! fix runs the command (stdin `/dev/null`, output kept and shown, 30 s at most for the
//! command itself to return: a start command must return once the daemon runs), then waits
//! up to 10 s for the process to appear or go. A process that matches but runs as another
//! user is not fixed (nok), as in OpenSVC. Differences from OpenSVC are the `#process-*` rows
//! of `docs/opensvc-compat.md`.

use std::process::Command;
use std::time::{Duration, Instant};

use regex::Regex;
use serde::Deserialize;

use crate::class::Class;
use crate::host::{Host, HostView, find_program};
use crate::status::{Log, Status};

/// How long a start or stop command may take to return.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long fix waits for the process to appear or go after the command.
const SETTLE: Duration = Duration::from_secs(10);

/// One `process` rule, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    comm: Option<String>,
    #[serde(default)]
    args: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    stop: Option<String>,
}

/// One `process` rule, checked.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct ProcessRule {
    /// The command name pattern, anchored at the start.
    pub comm: Option<Regex>,
    /// The command line pattern, anchored at the start.
    pub args: Option<Regex>,
    /// Running (true) or not.
    pub on: bool,
    /// Effective user id.
    pub uid: Option<u32>,
    /// Effective user name.
    pub user: Option<String>,
    /// The command that starts the process.
    pub start: Option<Vec<String>>,
    /// The command that stops it.
    pub stop: Option<Vec<String>>,
}

impl TryFrom<RawRule> for ProcessRule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Self, String> {
        let pattern = |field: &str, v: Option<String>| -> Result<Option<Regex>, String> {
            match v.filter(|s| !s.trim().is_empty()) {
                None => Ok(None),
                Some(s) => Regex::new(&format!("^(?:{s})"))
                    .map(Some)
                    .map_err(|e| format!("{field}: {s:?} is not a valid pattern: {e}")),
            }
        };
        let comm = pattern("comm", raw.comm)?;
        let args = pattern("args", raw.args)?;
        if comm.is_none() && args.is_none() {
            return Err("comm or args is required".into());
        }
        let on = match raw.state.as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(other) => return Err(format!("state: {other:?} is not on or off")),
        };
        let command = |field: &str, v: Option<String>| -> Result<Option<Vec<String>>, String> {
            match v.filter(|s| !s.trim().is_empty()) {
                None => Ok(None),
                Some(s) if s.contains('\n') => Err(format!("{field}: one line expected")),
                Some(s) => Ok(Some(s.split_whitespace().map(str::to_string).collect())),
            }
        };
        Ok(ProcessRule {
            comm,
            args,
            on,
            uid: raw.uid,
            user: raw.user.filter(|u| !u.trim().is_empty()),
            start: command("start", raw.start)?,
            stop: command("stop", raw.stop)?,
        })
    }
}

/// The `process` class.
#[derive(Debug)]
pub struct Process;

impl Class for Process {
    type Rule = ProcessRule;

    const NAME: &'static str = "process";
    const ALIASES: &'static [&'static str] = &["process.py"];
    const DESCRIPTION: &'static str =
        "a process runs (or not) as a user; fix runs the rule's start or stop command (root / only)";

    fn describe(rule: &ProcessRule) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &rule.comm {
            parts.push(format!("comm {}", pattern_text(c)));
        }
        if let Some(a) = &rule.args {
            parts.push(format!("args {}", pattern_text(a)));
        }
        format!("process {} ({})", parts.join(", "), if rule.on { "on" } else { "off" })
    }

    fn check(rule: &ProcessRule, host: &HostView, log: &mut Log) -> Status {
        if let Err(why) = applicable(host) {
            log.info(format!("{}: n/a: {why}", Self::describe(rule)));
            return Status::NotApplicable;
        }
        match assess(rule, host) {
            Ok(a) => {
                let (ok, text) = a.report(rule);
                if ok {
                    log.info(text);
                    Status::Ok
                } else {
                    log.err(text);
                    Status::Nok
                }
            }
            Err(e) => {
                log.err(format!("{}: {e}", Self::describe(rule)));
                Status::Nok
            }
        }
    }

    fn fixable(rule: &ProcessRule, host: &HostView, log: &mut Log) -> Status {
        if applicable(host).is_err() {
            return Status::NotApplicable;
        }
        match command_of(rule) {
            Some(_) => Status::NotApplicable,
            None => {
                log.err(format!(
                    "{}: no {} command",
                    Self::describe(rule),
                    if rule.on { "start" } else { "stop (or start)" }
                ));
                Status::Nok
            }
        }
    }

    fn fix(rule: &ProcessRule, host: &Host, log: &mut Log) -> Status {
        if let Err(why) = applicable(host) {
            log.info(format!("{}: n/a: {why}", Self::describe(rule)));
            return Status::NotApplicable;
        }
        match fix_rule(rule, host, log) {
            Ok(()) => Status::Ok,
            Err(e) => {
                log.err(format!("{}: {e}", Self::describe(rule)));
                Status::Nok
            }
        }
    }
}

fn pattern_text(r: &Regex) -> &str {
    r.as_str()
        .strip_prefix("^(?:")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(r.as_str())
}

fn applicable(host: &HostView) -> Result<(), String> {
    if host.is_real_root() {
        Ok(())
    } else {
        Err(format!(
            "the root prefix is {}, not /: its processes do not run here",
            host.root().display()
        ))
    }
}

fn command_of(rule: &ProcessRule) -> Option<&Vec<String>> {
    if rule.on {
        rule.start.as_ref()
    } else {
        rule.stop.as_ref().or(rule.start.as_ref())
    }
}

/// One running process.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    comm: String,
    args: String,
    uid: u32,
    user: Option<String>,
}

impl Proc {
    fn show(&self) -> String {
        format!(
            "pid {} ({}, uid {}{})",
            self.pid,
            self.args,
            self.uid,
            self.user
                .as_deref()
                .map(|u| format!(" {u}"))
                .unwrap_or_default()
        )
    }
}

/// The processes of the system, zombies left out.
fn processes(host: &HostView) -> Result<Vec<Proc>, String> {
    let proc_dir = host.path("/proc").map_err(|e| e.to_string())?;
    let names = host
        .read_dir_names(&proc_dir)
        .map_err(|e| e.to_string())?
        .ok_or("/proc is not mounted")?;
    let passwd = host
        .path("/etc/passwd")
        .and_then(|p| host.read_to_string(&p))
        .ok()
        .flatten()
        .unwrap_or_default();
    let user_of = |uid: u32| {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2].parse() == Ok(uid)).then(|| f[0].to_string())
        })
    };
    let mut out = Vec::new();
    for name in names {
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A process may end while it is read: skip it.
        let read = |f: &str| {
            host.path(format!("/proc/{pid}/{f}"))
                .and_then(|p| host.read(&p))
                .ok()
                .flatten()
        };
        let (Some(status), Some(comm), Some(cmdline)) = (read("status"), read("comm"), read("cmdline"))
        else {
            continue;
        };
        let status = String::from_utf8_lossy(&status);
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
        };
        if field("State:").is_some_and(|s| s.starts_with('Z')) {
            continue;
        }
        // Uid: real, effective, saved, filesystem.
        let Some(uid) = field("Uid:").and_then(|v| v.split_whitespace().nth(1)?.parse().ok())
        else {
            continue;
        };
        let comm = String::from_utf8_lossy(&comm).trim_end_matches('\n').to_string();
        let words: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        let mut args = words.join(" ").split_whitespace().collect::<Vec<_>>().join(" ");
        if args.is_empty() {
            args = format!("[{comm}]");
        }
        out.push(Proc {
            pid,
            comm,
            args,
            uid,
            user: user_of(uid),
        });
    }
    Ok(out)
}

/// What check found.
struct Assessment {
    /// Processes matching comm and args.
    named: Vec<Proc>,
    /// Those also matching uid and user.
    matching: Vec<Proc>,
}

impl Assessment {
    fn ok(&self, rule: &ProcessRule) -> bool {
        self.matching.is_empty() != rule.on
    }

    fn report(&self, rule: &ProcessRule) -> (bool, String) {
        let what = Process::describe(rule);
        let list = |p: &[Proc]| {
            let mut s: Vec<String> = p.iter().take(5).map(Proc::show).collect();
            if p.len() > 5 {
                s.push(format!("and {} more", p.len() - 5));
            }
            s.join(", ")
        };
        let who = match (&rule.uid, &rule.user) {
            (Some(u), Some(n)) => format!("uid {u}, user {n}"),
            (Some(u), None) => format!("uid {u}"),
            (None, Some(n)) => format!("user {n}"),
            (None, None) => String::new(),
        };
        let ok = self.ok(rule);
        let text = match (rule.on, ok) {
            (true, true) => format!("{what}: running: {}, ok", list(&self.matching)),
            (true, false) if self.named.is_empty() => format!("{what}: not running"),
            (true, false) => format!(
                "{what}: running as another user: {}, expected {who}",
                list(&self.named)
            ),
            (false, true) => format!("{what}: not running, ok"),
            (false, false) => format!("{what}: running: {}, expected none", list(&self.matching)),
        };
        (ok, text)
    }
}

fn assess(rule: &ProcessRule, host: &HostView) -> Result<Assessment, String> {
    let named: Vec<Proc> = processes(host)?
        .into_iter()
        .filter(|p| rule.comm.as_ref().is_none_or(|r| r.is_match(&p.comm)))
        .filter(|p| rule.args.as_ref().is_none_or(|r| r.is_match(&p.args)))
        .collect();
    let matching = named
        .iter()
        .filter(|p| rule.uid.is_none_or(|u| u == p.uid))
        .filter(|p| rule.user.as_ref().is_none_or(|u| p.user.as_ref() == Some(u)))
        .cloned()
        .collect();
    Ok(Assessment { named, matching })
}

fn fix_rule(rule: &ProcessRule, host: &Host, log: &mut Log) -> Result<(), String> {
    let a = assess(rule, host)?;
    if a.ok(rule) {
        return Ok(());
    }
    if rule.on && !a.named.is_empty() {
        return Err(format!(
            "{}: cannot fix a process running as another user",
            a.report(rule).1
        ));
    }
    let words = command_of(rule).ok_or_else(|| {
        format!(
            "no {} command in the rule",
            if rule.on { "start" } else { "stop (or start)" }
        )
    })?;
    let program = if words[0].contains('/') {
        words[0].clone().into()
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        find_program(&words[0], std::env::split_paths(&path))
            .ok_or_else(|| format!("{}: not found on PATH", words[0]))?
    };
    let shown = words.join(" ");
    log.info(format!("running {shown}"));
    let started = host
        .start_change(Command::new(program).args(&words[1..]), COMMAND_TIMEOUT)
        .map_err(|e| e.to_string())?;
    for line in started.output.lines() {
        log.info(format!("  {line}"));
    }
    match started.status {
        None => {
            return Err(format!(
                "{shown} still running after {} s: a start command must return once the process runs (left running)",
                COMMAND_TIMEOUT.as_secs()
            ));
        }
        Some(st) if !st.success() => return Err(format!("{shown} failed ({st})")),
        Some(_) => {}
    }
    let deadline = Instant::now() + SETTLE;
    loop {
        let a = assess(rule, host)?;
        if a.ok(rule) {
            log.info(a.report(rule).1);
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} s after {shown}: {}",
                SETTLE.as_secs(),
                a.report(rule).1
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_class_contract, check, fix};
    use serde_json::json;

    fn real_host(var: &std::path::Path) -> Host {
        Host::new("/").with_var_dir(var.to_path_buf())
    }

    /// Kills the test's own sleepers, whatever happened.
    struct Cleanup(&'static str);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let h = Host::new("/");
            for p in processes(h.view()).unwrap_or_default() {
                if p.args == format!("sleep {}", self.0) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p.pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }

    #[test]
    fn start_and_stop_a_process() {
        let tag = "31337.4242";
        let _cleanup = Cleanup(tag);
        let var = tempfile::tempdir().unwrap();
        let h = real_host(var.path());
        let me = nix::unistd::geteuid().as_raw();
        let on = json!({"comm": "sleep", "args": "sleep 31337\\.4242$", "state": "on", "uid": me,
            "start": format!("setsid -f sleep {tag}")});
        let log = assert_class_contract::<Process>(&h, &[var.path()], on.clone());
        assert!(log.iter().any(|l| l.contains("not running")), "{log:?}");
        let (st, log) = check::<Process>(&h, on);
        assert_eq!(st, Status::Ok);
        assert!(log.iter().any(|l| l.contains(&format!("sleep {tag}, uid {me}"))), "{log:?}");
        // Running as another uid: nok, and not fixable by starting another one.
        let other = json!({"args": "sleep 31337\\.4242", "uid": me + 1, "start": "/bin/true"});
        let (st, log) = fix::<Process>(&h, other);
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("as another user")), "{log:?}");
        let off = json!({"args": "sleep 31337\\.4242", "state": "off",
            "start": "/bin/false", "stop": format!("pkill -x -f sleep.{tag}")});
        assert_class_contract::<Process>(&h, &[var.path()], off);
    }

    #[test]
    fn failing_and_hanging_commands_are_reported() {
        let var = tempfile::tempdir().unwrap();
        let h = real_host(var.path());
        let rule = json!({"comm": "no-such-proc-x", "start": "/bin/false"});
        let (st, log) = fix::<Process>(&h, rule);
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("failed")), "{log:?}");
        let (st, log) = fix::<Process>(&h, json!({"comm": "no-such-proc-x"}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("no start command")), "{log:?}");
        let (st, log) = fix::<Process>(&h, json!({"comm": "no-such-proc-x", "start": "/bin/true"}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("not running")), "{log:?}");
    }

    #[test]
    fn not_applicable_under_a_root_prefix() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path()).with_var_dir(d.path().join("var"));
        let (st, log) = check::<Process>(&h, json!({"comm": "init"}));
        assert_eq!(st, Status::NotApplicable);
        assert!(log.iter().any(|l| l.contains("not /")), "{log:?}");
        let (st, _) = fix::<Process>(&h, json!({"comm": "init", "start": "/bin/true"}));
        assert_eq!(st, Status::NotApplicable);
    }

    #[test]
    fn upstream_example_reads_ps_columns() {
        let var = tempfile::tempdir().unwrap();
        let h = real_host(var.path());
        let me = std::process::id();
        let procs = processes(h.view()).unwrap();
        let mine = procs.iter().find(|p| p.pid == me).expect("this test process");
        assert!(!mine.comm.is_empty() && mine.comm.len() <= 15, "{mine:?}");
        // The upstream example: foo must run, bar must not; neither exists here.
        let (st, log) = check::<Process>(
            &h,
            json!([{"comm": "foo", "uid": 2345, "state": "on", "user": "foou"},
                   {"comm": "bar", "state": "off", "uid": 2345}]),
        );
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("comm foo") && l.contains("not running")), "{log:?}");
        assert!(log.iter().any(|l| l.contains("comm bar") && l.contains("not running, ok")), "{log:?}");
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (v, needle) in [
            (json!({"state": "on"}), "comm or args"),
            (json!({"comm": "("}), "comm:"),
            (json!({"args": "[", "state": "on"}), "args:"),
            (json!({"comm": "a", "state": "up"}), "state:"),
            (json!({"comm": "a", "uid": "root"}), "invalid type"),
            (json!({"comm": "a", "pid": 1}), "unknown field `pid`"),
        ] {
            let err = Process::rules(&v).unwrap_err();
            assert!(err.contains(needle), "{v}: {err}");
        }
    }
}

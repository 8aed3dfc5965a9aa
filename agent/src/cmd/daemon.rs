//! `tenet schedule explain`, `tenet daemon`, `tenet tasks`, `tenet dequeue-actions`.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::{DaemonArgs, DequeueArgs, ExplainArgs, TasksArgs};
use crate::config::NodeConfig;
use crate::daemon::tasks::{State, StateFile, alive};
use crate::daemon::{self, ControlRequest};
use crate::error::CliError;
use crate::output::{Json, emit, warn};
use crate::schedule::{Schedule, parse_datetime, splay_fraction};

use super::compliance::node_config;

fn config_path(config: Option<&Path>, root: &Path) -> PathBuf {
    config
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join("etc/tenet/node.toml"))
}

fn var_dir(arg: Option<&Path>, cfg: &NodeConfig, root: &Path) -> PathBuf {
    arg.map(Path::to_path_buf)
        .or_else(|| cfg.var_dir())
        .unwrap_or_else(|| root.join("var/lib/tenet"))
}

/// `tenet schedule explain EXPR [--now T] [--last T] [--format json]`.
pub fn explain(a: &ExplainArgs, config: Option<&Path>) -> Result<ExitCode, CliError> {
    let sched = Schedule::parse(&a.expr);
    if !sched.invalid.is_empty() && sched.members.is_empty() {
        let lines: Vec<String> = sched
            .invalid
            .iter()
            .map(|e| CliError::usage(e).to_string())
            .collect();
        return Err(CliError::Usage(lines.join("\n")));
    }
    for e in &sched.invalid {
        warn(format_args!("{e} (member dropped, the others apply)"));
    }
    let when = |what: &str, v: &Option<String>| match v {
        None => Ok(None),
        Some(s) => parse_datetime(s).map(Some).ok_or_else(|| {
            CliError::usage(format!("--{what} {s:?}: expected YYYY-MM-DD HH:MM[:SS]"))
        }),
    };
    let now = when("now", &a.now)?.unwrap_or_else(|| jiff::Zoned::now().datetime());
    let last = when("last", &a.last)?;
    let node = match &a.node_id {
        Some(n) => n.clone(),
        None => {
            let cfg = node_config(config, Path::new("/")).ok();
            cfg.and_then(|c| c.node_id().map(str::to_string))
                .unwrap_or_else(|| tenet_modules::Host::new("/").hostname().to_string())
        }
    };
    let e = sched.explain(now, last, splay_fraction(&node));
    emit(a.format, Json::Line, &e, |e| {
        outln!("schedule: {}", a.expr);
        outln!("now:      {}", crate::schedule::format_datetime(now));
        outln!(
            "last:     {}",
            last.map(crate::schedule::format_datetime)
                .unwrap_or_else(|| "never".into())
        );
        outln!("allowed:  {}", if e.allowed { "yes" } else { "no" });
        outln!("reason:   {}", e.reason);
        outln!("next:     {}", e.next.as_deref().unwrap_or("never"));
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `tenet daemon`.
pub fn daemon(a: &DaemonArgs, config: Option<&Path>) -> Result<ExitCode, CliError> {
    let path = config_path(config, &a.root);
    let cfg = NodeConfig::load(&path)?;
    let opts = daemon::Options {
        config: path,
        root: a.root.clone(),
        var_dir: var_dir(a.var_dir.as_deref(), &cfg, &a.root),
    };
    daemon::run(opts)?;
    Ok(ExitCode::SUCCESS)
}

/// `tenet tasks [--submit COMMAND] [--format json]`.
pub fn tasks(a: &TasksArgs, config: Option<&Path>) -> Result<ExitCode, CliError> {
    let cfg = NodeConfig::load(&config_path(config, &a.root))?;
    let var = var_dir(a.var_dir.as_deref(), &cfg, &a.root);
    if let Some(command) = &a.submit {
        tenet_rulesets::action::ActionCommand::parse(command).map_err(CliError::usage)?;
        let reply = daemon::control(&var, &ControlRequest::Submit(command.clone()))?;
        let Some(id) = reply.id else {
            return Err(CliError::failed(format!(
                "the daemon refused: {}",
                reply.error.unwrap_or_default()
            )));
        };
        emit(
            a.format,
            Json::Line,
            &serde_json::json!({ "id": id }),
            |_| {
                outln!("task {id} queued");
                Ok(())
            },
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let path = daemon::state_path(&var);
    let Some(state) = StateFile::load(&path)? else {
        return Err(CliError::failed(format!(
            "no daemon state in {} (has `tenet daemon` run with this var dir?)",
            path.display()
        )));
    };
    let live = state.running && alive(state.pid);
    // The state as saved, but whether the daemon is alive now.
    let mut shown = serde_json::to_value(&state)?;
    shown["running"] = live.into();
    emit(a.format, Json::Pretty, &shown, |_| {
        if live {
            outln!(
                "daemon: running (pid {}, since {})",
                state.pid,
                state.started_at
            );
        } else {
            outln!("daemon: not running (state of {})", state.updated_at);
        }
        outln!();
        outln!(
            "{:>5}  {:<8}  {:<7}  {:<24}  {:<24}  {:>4}  {}",
            "ID",
            "STATE",
            "ORIGIN",
            "NAME",
            "STARTED",
            "EXIT",
            "PROGRESS"
        );
        for t in &state.tasks {
            let st = match t.state {
                State::Queued => "queued",
                State::Running => "running",
                State::Done => "done",
                State::Nok => "nok",
                State::Failed => "failed",
            };
            let origin = format!("{:?}", t.origin).to_lowercase();
            let name = if t.late {
                format!("{} (late)", t.name)
            } else {
                t.name.clone()
            };
            outln!(
                "{:>5}  {:<8}  {:<7}  {:<24}  {:<24}  {:>4}  {}",
                t.id,
                st,
                origin,
                name,
                t.started_at.as_deref().unwrap_or("-"),
                t.exit_code.map(|c| c.to_string()).unwrap_or("-".into()),
                t.progress
            );
        }
        outln!();
        outln!(
            "{:<24}  {:<20}  {:<20}  {:<20}  SCHEDULE",
            "TASK",
            "LAST RUN",
            "LAST SUCCESS",
            "NEXT RUN"
        );
        for s in &state.schedules {
            outln!(
                "{:<24}  {:<20}  {:<20}  {:<20}  {}",
                s.task,
                s.last_run.as_deref().unwrap_or("-"),
                s.last_success.as_deref().unwrap_or("-"),
                s.next_run.as_deref().unwrap_or("-"),
                s.schedule
            );
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `tenet dequeue-actions [--stdin]`.
pub fn dequeue(a: &DequeueArgs, config: Option<&Path>) -> Result<ExitCode, CliError> {
    if a.stdin {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(daemon::NOTIFICATION.len() as u64 + 1)
            .read_to_end(&mut buf)?;
        let msg = buf.strip_suffix(b"\0").unwrap_or(&buf);
        if msg != daemon::NOTIFICATION {
            tracing::warn!(
                "rejected a malformed notification: {:?}",
                String::from_utf8_lossy(&buf)
            );
            return Err(CliError::usage("rejected a malformed notification"));
        }
    }
    let cfg = NodeConfig::load(&config_path(config, &a.root))?;
    let var = var_dir(a.var_dir.as_deref(), &cfg, &a.root);
    let reply = daemon::control(&var, &ControlRequest::Dequeue)?;
    if let Some(e) = reply.error {
        return Err(CliError::failed(format!("the daemon refused: {e}")));
    }
    Ok(ExitCode::SUCCESS)
}

/// `tenet daemon-call` (internal): one collector call for the daemon.
pub fn daemon_call(config: Option<&Path>) -> Result<ExitCode, CliError> {
    use crate::daemon::client::{CallReply, CallRequest, perform};
    let mut input = String::new();
    std::io::stdin()
        .take(4 * 1024 * 1024)
        .read_to_string(&mut input)?;
    let req: CallRequest = serde_json::from_str(&input)?;
    let cfg = NodeConfig::load(&config_path(config, Path::new("/")))?;
    let reply = match crate::collector::CollectorClient::for_node(&cfg) {
        Ok(client) => perform(&client, &req),
        Err(e) => CallReply::Unreachable(format!("{e:#}")),
    };
    outln!("{}", serde_json::to_string(&reply)?);
    Ok(ExitCode::SUCCESS)
}

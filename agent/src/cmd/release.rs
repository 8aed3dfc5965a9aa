//! `tenet release add|remove|status` (and the daemon's `release run`).
//!
//! add and remove queue a task in the running daemon, which runs release operations one at a
//! time with every other task (the lir-svc model: requests are accepted at once, work is
//! serial); `--foreground` runs in this process, still under the node's release lock. status
//! reads the status files the operations keep (`<var>/release/status/<version>.json`).
//! When the node is registered, each run reports its status to the collector as it goes.
//!
//! An add of a release already present (a remove of one already absent) whose check is clean
//! does nothing and says so, before anything is queued; `--force` runs it anyway. Progress
//! is a live bar per step on a terminal (`TtyProgress`, indicatif) and one line per step
//! otherwise (`LineProgress`, what logs and the daemon's task list read).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tenet_release::converge::{self, ApplyOptions, Context};
use tenet_release::progress::{Progress, Step};
use tenet_release::rule::{DesiredState, ReleaseRule, settings_from_config};
use tenet_release::status::{self, ReleaseStatus};
use tenet_rulesets::action::ActionCommand;

use crate::cli::{Format, ReleaseCmd, ReleasePlace, ReleaseRunCmd};
use crate::collector::CollectorClient;
use crate::config::NodeConfig;
use crate::daemon::{self, ControlRequest};
use crate::error::CliError;
use crate::output::{Json, emit};

fn config_path(config: Option<&Path>, root: &Path) -> PathBuf {
    config
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join("etc/tenet/node.toml"))
}

fn var_dir(place: &ReleasePlace, cfg: &NodeConfig) -> PathBuf {
    place
        .var_dir
        .clone()
        .or_else(|| cfg.var_dir())
        .unwrap_or_else(|| place.root.join("var/lib/tenet"))
}

/// Runs a `tenet release` command.
pub fn run(cmd: ReleaseCmd, config: Option<&Path>) -> Result<ExitCode, CliError> {
    match cmd {
        ReleaseCmd::Status(a) => {
            let cfg = NodeConfig::load(&config_path(config, &a.place.root))?;
            show_status(&var_dir(&a.place, &cfg), a.version.as_deref(), a.format)
        }
        ReleaseCmd::Add(a) => {
            let command = format!(
                "release add {} --version {}{}{}",
                a.url,
                a.version,
                a.sha256
                    .as_deref()
                    .map(|h| format!(" --sha256 {h}"))
                    .unwrap_or_default(),
                if a.force { " --force" } else { "" }
            );
            let rule = ReleaseRule {
                version: a.version.clone(),
                state: DesiredState::Present,
                source: Some(a.url.clone()),
                sha256: a.sha256.clone(),
                signature: None,
                public_key: None,
                registries: None,
                file_stores: None,
                k8s: None,
            };
            let opts = ApplyOptions { force: a.force };
            submit_or_run(
                config,
                &a.place,
                &command,
                rule,
                opts,
                a.foreground,
                a.format,
            )
        }
        ReleaseCmd::Remove(a) => {
            let command = format!("release remove {}", a.version);
            let rule = ReleaseRule {
                version: a.version.clone(),
                state: DesiredState::Absent,
                source: None,
                sha256: None,
                signature: None,
                public_key: None,
                registries: None,
                file_stores: None,
                k8s: None,
            };
            let opts = ApplyOptions::default();
            submit_or_run(
                config,
                &a.place,
                &command,
                rule,
                opts,
                a.foreground,
                a.format,
            )
        }
        ReleaseCmd::Run(ReleaseRunCmd::Add {
            url,
            version,
            sha256,
            force,
            place,
        }) => {
            let rule = ReleaseRule {
                version,
                state: DesiredState::Present,
                source: Some(url),
                sha256,
                signature: None,
                public_key: None,
                registries: None,
                file_stores: None,
                k8s: None,
            };
            run_in_place(config, &place, rule, ApplyOptions { force }, Format::Text)
        }
        ReleaseCmd::Run(ReleaseRunCmd::Remove { version, place }) => {
            let rule = ReleaseRule {
                version,
                state: DesiredState::Absent,
                source: None,
                sha256: None,
                signature: None,
                public_key: None,
                registries: None,
                file_stores: None,
                k8s: None,
            };
            run_in_place(config, &place, rule, ApplyOptions::default(), Format::Text)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn submit_or_run(
    config: Option<&Path>,
    place: &ReleasePlace,
    command: &str,
    rule: ReleaseRule,
    opts: ApplyOptions,
    foreground: bool,
    format: Format,
) -> Result<ExitCode, CliError> {
    // The same allow-list as queued actions: what the CLI queues, the collector could too.
    ActionCommand::parse(command).map_err(CliError::usage)?;
    if foreground {
        return run_in_place(config, place, rule, opts, format);
    }
    let cfg = NodeConfig::load(&config_path(config, &place.root))?;
    let var = var_dir(place, &cfg);
    // Refuse a rule that cannot run now rather than queue a task that will fail.
    let settings = settings_from_config(&cfg.table, &cfg.path.display().to_string())?;
    let spec = rule
        .resolve(&settings, &var, &place.root)
        .map_err(CliError::usage)?;
    let op = if rule.state == DesiredState::Present {
        "add"
    } else {
        "remove"
    };
    let ctx = Context {
        var_dir: var.clone(),
    };
    // Nothing to queue when the release is already as wanted.
    if !opts.force
        && let Some((_, detail)) = converge::block_on(converge::already_as_wanted(&ctx, &spec))?
    {
        let answer = serde_json::json!({"task": null, "version": rule.version, "operation": op,
                                        "changed": false, "message": detail});
        emit(format, Json::Line, &answer, |_| {
            outln!("{detail}");
            Ok(())
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    // Queued before the task can start, so that the task's own status always comes after.
    let before = status::load(&var, &rule.version)?;
    converge::mark_queued(&ctx, &rule.version, op)?;
    let restore = || match &before {
        Some(b) => status::save(&var, b),
        None => status::forget(&var, &rule.version),
    };
    let reply = match daemon::control(&var, &ControlRequest::Submit(command.to_string())) {
        Ok(r) => r,
        Err(e) => {
            restore()?;
            return Err(e
                .context(
                    "queueing the release task (start `tenet daemon`, or use --foreground to run here)",
                )
                .into());
        }
    };
    let Some(id) = reply.id else {
        restore()?;
        return Err(CliError::failed(format!(
            "the daemon refused: {}",
            reply.error.unwrap_or_default()
        )));
    };
    let answer = serde_json::json!({"task": id, "version": rule.version, "operation": op});
    emit(format, Json::Line, &answer, |_| {
        outln!(
            "release {} {op}: task {id} queued (follow it with `tenet release status {}`)",
            rule.version,
            rule.version
        );
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Progress for pipes and logs: one line per step and per percent (the daemon shows a task's
/// last line as its progress).
struct LineProgress {
    verb: &'static str,
}

impl Progress for LineProgress {
    fn step(&self, step: Step, detail: &str) {
        if detail.is_empty() {
            outln!("{}: {step}", self.verb);
        } else {
            outln!("{}: {step}: {detail}", self.verb);
        }
    }
    fn percent(&self, step: Step, percent: u8, _detail: &str) {
        outln!("{}: {step} ({percent}%)", self.verb);
    }
    fn info(&self, message: &str) {
        outln!("  {message}");
    }
}

/// Progress on a terminal: a live bar per step (bytes, rate and time left for transfers,
/// images done of total while pushing and replicating), the step's detail and info lines
/// printed above it; a finished step's bar stays as its line.
struct TtyProgress {
    verb: &'static str,
    current: Mutex<Option<Current>>,
}

/// The bar of the step under way; once images are counted, they are its message.
struct Current {
    step: Step,
    bar: ProgressBar,
    counting: bool,
}

impl TtyProgress {
    fn new(verb: &'static str) -> TtyProgress {
        TtyProgress {
            verb,
            current: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spinner_style() -> ProgressStyle {
        ProgressStyle::with_template("{spinner} {prefix} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
    }

    fn bytes_style() -> ProgressStyle {
        ProgressStyle::with_template(
            "{prefix} {msg} [{bar:24}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
    }

    /// Ends the current bar, leaving its last state as a line.
    fn finish(&self) {
        if let Some(c) = self.lock().take() {
            c.bar.finish();
        }
    }
}

impl Drop for TtyProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Progress for TtyProgress {
    fn step(&self, step: Step, detail: &str) {
        let mut current = self.lock();
        if let Some(c) = current.as_ref()
            && c.step == step
            && step != Step::Ready
        {
            // The same step again (the next image): one bar for the whole step.
            if !c.counting {
                c.bar.set_message(detail.to_string());
            }
            return;
        }
        if let Some(c) = current.take() {
            c.bar.finish();
        }
        if step == Step::Ready {
            if detail.is_empty() {
                outln!("{}: {step}", self.verb);
            } else {
                outln!("{}: {step}: {detail}", self.verb);
            }
            return;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
        bar.set_style(Self::spinner_style());
        bar.set_prefix(format!("{}: {step}", self.verb));
        bar.set_message(detail.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        *current = Some(Current {
            step,
            bar,
            counting: false,
        });
    }

    fn percent(&self, _step: Step, _percent: u8, _detail: &str) {
        // The bar shows bytes; percent lines are for pipes.
    }

    fn bytes(&self, step: Step, done: u64, total: Option<u64>) {
        let current = self.lock();
        if let Some(c) = current.as_ref()
            && c.step == step
        {
            if let Some(total) = total
                && c.bar.length() != Some(total)
            {
                if !c.counting {
                    // The detail (a URL, a path) is too long to share the line with a bar.
                    c.bar.set_message("");
                }
                c.bar.set_style(Self::bytes_style());
                c.bar.set_length(total);
            }
            c.bar.set_position(done);
        }
    }

    fn items(&self, step: Step, done: u64, total: u64) {
        let mut current = self.lock();
        if let Some(c) = current.as_mut()
            && c.step == step
        {
            c.counting = true;
            c.bar.set_message(format!("{done}/{total} images"));
        }
    }

    fn info(&self, message: &str) {
        match self.lock().as_ref() {
            Some(c) => c.bar.println(format!("  {message}")),
            None => outln!("  {message}"),
        }
    }
}

fn run_in_place(
    config: Option<&Path>,
    place: &ReleasePlace,
    rule: ReleaseRule,
    opts: ApplyOptions,
    format: Format,
) -> Result<ExitCode, CliError> {
    let cfg = NodeConfig::load(&config_path(config, &place.root))?;
    let var = var_dir(place, &cfg);
    let settings = settings_from_config(&cfg.table, &cfg.path.display().to_string())?;
    let spec = rule
        .resolve(&settings, &var, &place.root)
        .map_err(CliError::usage)?;
    let ctx = Context {
        var_dir: var.clone(),
    };
    let verb = if spec.state == DesiredState::Present {
        "AddRelease"
    } else {
        "RemoveRelease"
    };
    // The collector follows the status file from a thread of its own: the collector client
    // blocks, and must stay out of the operation's async runtime.
    let reporter = collector_reporter(&cfg, &var, &spec.version);
    let progress: Arc<dyn Progress> = match format {
        Format::Text if std::io::stdout().is_terminal() => Arc::new(TtyProgress::new(verb)),
        Format::Text => Arc::new(LineProgress { verb }),
        Format::Json => Arc::new(tenet_release::NoProgress),
    };
    let outcome = converge::block_on(converge::apply(&ctx, &spec, opts, progress))?;
    if let Some((stop, handle)) = reporter {
        stop.store(true, Ordering::SeqCst);
        let _ = handle.join();
    }
    // The result is the status the operation left (text: the progress lines said it all).
    if let Some(st) = status::load(&var, &spec.version)? {
        emit(format, Json::Pretty, &st, |_| Ok(()))?;
    }
    outcome.map_err(|e| CliError::failed(format!("release {}: {e}", spec.version)))?;
    Ok(ExitCode::SUCCESS)
}

/// Sends the release's status to the collector whenever it changes, until stopped, then once
/// more (the final state). Nothing when the node is not registered.
fn collector_reporter(
    cfg: &NodeConfig,
    var: &Path,
    version: &str,
) -> Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> {
    let client = CollectorClient::for_node(cfg).ok()?;
    let stop = Arc::new(AtomicBool::new(false));
    let (var, version, flag) = (var.to_path_buf(), version.to_string(), stop.clone());
    let handle = std::thread::spawn(move || {
        let mut last: Option<ReleaseStatus> = None;
        loop {
            let stopping = flag.load(Ordering::SeqCst);
            if let Ok(Some(st)) = status::load(&var, &version)
                && last.as_ref() != Some(&st)
            {
                match client.put_release(&st) {
                    Ok(()) => last = Some(st),
                    Err(e) => tracing::warn!("reporting release {version} to the collector: {e}"),
                }
            }
            if stopping {
                break;
            }
            std::thread::sleep(Duration::from_millis(1000));
        }
    });
    Some((stop, handle))
}

fn show_status(var: &Path, version: Option<&str>, format: Format) -> Result<ExitCode, CliError> {
    match version {
        Some(v) => {
            let Some(s) = status::load(var, v)? else {
                return Err(CliError::failed(format!(
                    "release {v}: unknown on this node"
                )));
            };
            emit(format, Json::Pretty, &s, |s| {
                show_one(s);
                Ok(())
            })?
        }
        None => emit(format, Json::Pretty, &status::load_all(var)?, |list| {
            show_list(list);
            Ok(())
        })?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The status of one release, a line per field.
fn show_one(s: &ReleaseStatus) {
    outln!("release:     {}", s.version);
    outln!("state:       {}", s.state.as_str());
    outln!("operation:   {}", s.operation);
    outln!(
        "step:        {}{}",
        s.step.map(|x| x.as_str()).unwrap_or("-"),
        s.percent.map(|p| format!(" ({p}%)")).unwrap_or_default()
    );
    outln!("message:     {}", s.message);
    outln!("last error:  {}", s.last_error.as_deref().unwrap_or("-"));
    outln!("source:      {}", s.source.as_deref().unwrap_or("-"));
    outln!("sha256:      {}", s.sha256.as_deref().unwrap_or("-"));
    outln!("images:      {}", s.images.len());
    for im in &s.images {
        outln!(
            "  {}:{} and :{} -> {}",
            im.name,
            im.tag,
            im.version_tag,
            im.digest
        );
    }
    outln!("files:       {}", s.files.len());
    outln!("registries:  {}", s.registries.join(", "));
    outln!("file stores: {}", s.file_stores.join(", "));
    outln!("started:     {}", s.started_at.as_deref().unwrap_or("-"));
    outln!("updated:     {}", s.updated_at);
}

/// The releases known, a line each.
fn show_list(list: &[ReleaseStatus]) {
    if list.is_empty() {
        outln!("no release known on this node");
    } else {
        outln!(
            "{:<28}  {:<8}  {:<20}  {:>4}  {:<20}  MESSAGE",
            "VERSION",
            "STATE",
            "STEP",
            "PCT",
            "UPDATED"
        );
        for s in list {
            outln!(
                "{:<28}  {:<8}  {:<20}  {:>4}  {:<20}  {}",
                s.version,
                s.state.as_str(),
                s.step.map(|x| x.as_str()).unwrap_or("-"),
                s.percent.map(|p| format!("{p}%")).unwrap_or_default(),
                s.updated_at,
                s.last_error.as_deref().unwrap_or(&s.message)
            );
        }
    }
}

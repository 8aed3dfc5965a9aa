//! `tenet compliance ...`: masterless runs (`--policy PATH`) and policy inspection.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tenet_modules::Host;
use tenet_modules::engine::{self, EngineConfig, RunAction};
use tenet_rulesets::api::RunReport;
use tenet_rulesets::indexmap::IndexMap;
use tenet_rulesets::{Bundle, Policy, Selection};

use crate::cli::{
    AttachArgs, Compliance, Format, ListArgs, ListWhat, PolicyArgs, RunArgs, ShowArgs, ShowWhat,
};
use crate::collector::{AgentState, CallError, CollectorClient, age_text};
use crate::config::NodeConfig;
use crate::error::CliError;
use crate::output::{self, Json, Style, emit, note, warn};

/// Runs a `compliance` subcommand. `config` is the `--config` path, if given.
pub fn run(c: Compliance, config: Option<&Path>) -> Result<ExitCode, CliError> {
    match c {
        Compliance::Check(a) => run_action(&a, Some(RunAction::Check), config),
        Compliance::Fix(a) => run_action(&a, Some(RunAction::Fix), config),
        Compliance::Fixable(a) => run_action(&a, Some(RunAction::Fixable), config),
        Compliance::Auto(a) => run_action(&a, Some(RunAction::Auto), config),
        Compliance::Env(a) => run_action(&a, None, config),
        Compliance::List(a) => list(&a, config),
        Compliance::Show(a) => show(&a, config),
        Compliance::Attach(a) => attachment(&a, true, config),
        Compliance::Detach(a) => attachment(&a, false, config),
        Compliance::InstallCompat { dir } => install_compat(&dir),
    }
}

/// The node configuration: `--config`, else `<root>/etc/tenet/node.toml`.
pub fn node_config(config: Option<&Path>, root: &Path) -> anyhow::Result<NodeConfig> {
    let path = match config {
        Some(p) => p.to_path_buf(),
        None => root.join("etc/tenet/node.toml"),
    };
    NodeConfig::load(&path)
}

/// Where the policy came from.
enum Origin {
    /// A local bundle (`--policy`).
    Local,
    /// The collector (fetched now, or from the cache when it was unreachable).
    Collector {
        client: Box<CollectorClient>,
        state: AgentState,
    },
}

/// A loaded bundle and the policy resolved from it.
struct Loaded {
    /// The bundle, in masterless mode.
    bundle: Option<Bundle>,
    policy: Policy,
    host: Host,
    origin: Origin,
}

/// Fetches the policy from the collector, falling back to the last one cached for the same
/// selection when the collector is unreachable (saying so, and how old it is).
fn load_remote(p: &PolicyArgs, host: Host, cfg: &NodeConfig) -> Result<Loaded, CliError> {
    crate::collector::require_registered(cfg).map_err(CliError::usage)?;
    let client = CollectorClient::for_node(cfg).map_err(|e| CliError::usage(format!("{e:#}")))?;
    let state = AgentState::new(host.var_dir());
    let modulesets = p.moduleset.as_deref();
    let service = p.service.as_deref();
    if !p.ruleset.is_empty() {
        return Err(CliError::usage(
            "--ruleset applies to masterless runs; attach rulesets on the collector (tenet compliance attach --ruleset NAME)",
        ));
    }
    let policy = match client.policy(modulesets, service) {
        Ok((policy, raw)) => {
            if let Err(e) = state.save_policy(modulesets, service, &policy.hash, &raw) {
                tracing::warn!("cannot cache the policy: {e:#}");
            }
            policy
        }
        Err(CallError::Unreachable(why)) => match state.cached_policy(modulesets, service) {
            Ok(Some((doc, policy, age))) => {
                note(format_args!(
                    "collector unreachable ({why}): using the cached policy {} fetched {} UTC ({} old)",
                    &doc.hash[..doc.hash.len().min(12)],
                    doc.fetched_at,
                    age_text(age)
                ));
                policy
            }
            Ok(None) => {
                return Err(CliError::usage(format!(
                    "collector unreachable ({why}) and no cached policy for this selection"
                )));
            }
            Err(e) => {
                return Err(CliError::usage(format!(
                    "collector unreachable ({why}); {e:#}"
                )));
            }
        },
        Err(e @ CallError::Refused { .. }) => return Err(CliError::usage(e)),
    };
    for w in &policy.warnings {
        tracing::warn!("{w}");
    }
    let host = host.with_os_vendor(policy.facts.node.get("os_vendor").cloned());
    Ok(Loaded {
        bundle: None,
        policy,
        host,
        origin: Origin::Collector {
            client: Box::new(client),
            state,
        },
    })
}

fn load(p: &PolicyArgs, host: Host, config: Option<&Path>) -> Result<Loaded, CliError> {
    let Some(path) = &p.policy else {
        let cfg = node_config(config, &p.root).map_err(|e| CliError::usage(format!("{e:#}")))?;
        if cfg.collector().is_none() {
            return Err(CliError::usage(format!(
                "no policy: give --policy PATH (a TOML folder or an OpenSVC export JSON), or register this node with a collector (tenet register); no collector in {}",
                cfg.path.display()
            )));
        }
        let host = match cfg.var_dir() {
            Some(v) if host.var_dir() == Host::new(host.root()).var_dir() => host.with_var_dir(v),
            _ => host,
        };
        return load_remote(p, host, &cfg);
    };
    let bundle = tenet_rulesets::load_path(path)
        .map_err(|e| CliError::usage(format!("policy error: {e}")))?;
    let mut facts = crate::facts::gather(&host);
    if let Some(svc) = &p.service {
        let mut s = tenet_rulesets::indexmap::IndexMap::new();
        s.insert("svcname".to_string(), svc.clone());
        facts.service = Some(s);
    }
    let selection = Selection {
        modulesets: p.moduleset.clone(),
        rulesets: p.ruleset.clone(),
        service: p.service.clone(),
    };
    let policy = Policy::resolve(&bundle, &facts, &selection)
        .map_err(|e| CliError::usage(format!("policy error: {e}")))?;
    for w in &policy.warnings {
        tracing::warn!("{w}");
    }
    let host = host.with_os_vendor(policy.facts.node.get("os_vendor").cloned());
    Ok(Loaded {
        bundle: Some(bundle),
        policy,
        host,
        origin: Origin::Local,
    })
}

fn host_for(a: &RunArgs) -> Host {
    let mut host = Host::new(&a.policy.root);
    if let Some(v) = &a.var_dir {
        host = host.with_var_dir(v);
    }
    host.with_package_dir(a.package_dir.clone())
}

fn run_action(
    a: &RunArgs,
    action: Option<RunAction>,
    config: Option<&Path>,
) -> Result<ExitCode, CliError> {
    if a.module.is_some() && a.policy.moduleset.is_some() {
        return Err(CliError::usage("--moduleset and --module are exclusive"));
    }
    // The node configuration the agent runs with is the one the `nodeconf` and `release`
    // classes read and manage.
    let host = match config {
        Some(c) => host_for(a).with_node_config(c),
        None => host_for(a),
    };
    let Loaded {
        policy,
        host,
        origin,
        ..
    } = load(&a.policy, host, config)?;
    if let Some(only) = &a.module {
        for m in only {
            if policy.module(m).is_none() {
                return Err(CliError::usage(format!(
                    "module {m} not found in the selected modulesets"
                )));
            }
        }
    }
    let templates = Arc::new(crate::cmd::template::library(&a.templates)?);
    let config = EngineConfig {
        modules_dir: a.modules_dir.clone(),
        timeout: Duration::from_secs(a.timeout.max(1)),
        force: a.force,
        only_modules: a.module.clone(),
        env: script_env(&host, a),
        templates,
    };
    let style = Style::detect();
    let stdout = std::io::stdout();
    let Some(action) = action else {
        return print_env(&policy, &config, a.policy.format);
    };
    if engine::plan(&policy, &config).is_empty() {
        let what = match (&a.module, &a.policy.moduleset) {
            (Some(m), _) => format!("the modules {}", m.join(",")),
            (None, Some(ms)) => format!("the modulesets {}", ms.join(",")),
            (None, None) => "this node's policy (nothing attached, or no module in it)".into(),
        };
        if !a.allow_empty {
            return Err(CliError::usage(format!(
                "no module to run in {what}; attach a moduleset, or pass --allow-empty to accept an empty run"
            )));
        }
        warn(format_args!("no module to run in {what}"));
    }
    let started_at = crate::collector::now_text();
    let started = std::time::SystemTime::now();
    let report = engine::run(&policy, &host, action, &config, |m| {
        if a.policy.format == Format::Text {
            let mut out = stdout.lock();
            let _ = output::module(&mut out, style, m);
            let _ = out.flush();
        }
    });
    emit(a.policy.format, Json::Pretty, &report, |r| {
        output::digest(&mut stdout.lock(), style, r)
    })?;
    let code = ExitCode::from(u8::from(report.summary.nok > 0));
    if let Origin::Collector { client, state } = &origin {
        deliver(
            client,
            state,
            report,
            a.policy.service.as_deref(),
            &started_at,
        );
        report_releases(client, host.var_dir(), started);
    }
    Ok(code)
}

/// Spools the run's results, then delivers everything spooled. Delivery problems never change
/// the run's exit code: the results wait on disk for the next run or `tenet pushasset`.
fn deliver(
    client: &CollectorClient,
    state: &AgentState,
    report: RunReport,
    service: Option<&str>,
    started_at: &str,
) {
    let run = crate::collector::run_results(report, service, started_at);
    if let Err(e) = state.spool_results(&run) {
        note(format_args!("cannot queue the results: {e:#}"));
        return;
    }
    report_flush(&state.flush(client));
}

/// Sends the collector the status of every release this run changed (a `release` rule's
/// fix), as `tenet release` does for its own runs.
fn report_releases(client: &CollectorClient, var_dir: &Path, since: std::time::SystemTime) {
    let dir = tenet_release::status::status_root(var_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let changed = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        let name = entry.file_name();
        let Some(version) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if !changed || version.starts_with('.') {
            continue;
        }
        if let Ok(Some(st)) = tenet_release::status::load(var_dir, version)
            && let Err(e) = client.put_release(&st)
        {
            note(format_args!(
                "reporting release {version} to the collector: {e}"
            ));
        }
    }
}

/// Says on stderr what happened to queued results.
pub fn report_flush(f: &crate::collector::Flush) {
    match &f.error {
        None if f.rejected == 0 => {
            tracing::info!("{} result(s) delivered to the collector", f.delivered)
        }
        None => note(format_args!(
            "{} result(s) delivered, {} refused by the collector (moved to spool/dead-letter with the reason)",
            f.delivered, f.rejected
        )),
        Some(e) => note(format_args!(
            "{e}: results queued on disk ({} waiting), delivered on the next run",
            f.waiting
        )),
    }
}

/// The environment every module script gets on top of the agent's own (OpenSVC's
/// `OSVC_PATH_*` and session id, and what compat objects need to find the managed root).
fn script_env(host: &Host, a: &RunArgs) -> Vec<(String, String)> {
    let s = |p: &Path| p.display().to_string();
    let var = host.var_dir();
    let mut env = vec![
        ("TENET_ROOT".into(), s(host.root())),
        ("TENET_VAR_DIR".into(), s(var)),
        ("TENET_NODE_CONFIG".into(), s(host.node_config())),
        ("OSVC_SESSION_UUID".into(), host.session().to_string()),
        ("OSVC_PATH_ETC".into(), s(&host.root().join("etc/tenet"))),
        ("OSVC_PATH_VAR".into(), s(var)),
        ("OSVC_PATH_TMP".into(), s(&var.join("tmp"))),
        ("OSVC_PATH_LOG".into(), s(&var.join("log"))),
        ("LANG".into(), "C.UTF-8".into()),
        ("LC_NUMERIC".into(), "C".into()),
    ];
    if let Some(d) = &a.modules_dir {
        env.push(("OSVC_PATH_COMP".into(), s(d)));
    }
    if let Some(d) = host.package_dir() {
        env.push(("TENET_PACKAGE_DIR".into(), s(d)));
    }
    // So that `files.py` called by a script finds the same templates as auto-modules.
    if let Some(d) = &a.templates.template_dir {
        env.push(("TENET_TEMPLATE_DIR".into(), s(d)));
    }
    if let Ok(exe) = std::env::current_exe() {
        env.push(("OSVC_NODEMGR".into(), s(&exe)));
        if let Some(bin) = exe.parent() {
            let path = std::env::var("PATH").unwrap_or_default();
            env.push(("PATH".into(), format!("{path}:{}", bin.display())));
        }
    }
    env
}

fn print_env(policy: &Policy, config: &EngineConfig, format: Format) -> Result<ExitCode, CliError> {
    // Per module, in run order, the OpenSVC variables it gets.
    let envs: IndexMap<String, IndexMap<String, String>> = engine::plan(policy, config)
        .into_iter()
        .map(|m| {
            let env = engine::module_env(policy, config, &m.name)
                .into_iter()
                .filter(|(k, _)| k.starts_with("OSVC_COMP_"))
                .collect();
            (m.name, env)
        })
        .collect();
    emit(format, Json::Pretty, &envs, |envs| {
        let style = Style::detect();
        for (module, env) in envs {
            outln!("{}", style.banner(module));
            for (k, v) in env {
                outln!("{k}={v}");
            }
            outln!();
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn list(a: &ListArgs, config: Option<&Path>) -> Result<ExitCode, CliError> {
    let loaded = load(&a.policy, Host::new(&a.policy.root), config)?;
    // Masterless: everything in the bundle. From a collector: what the node's policy holds.
    let names: Vec<String> = match (a.what, &loaded.bundle) {
        (ListWhat::Modulesets, Some(b)) => b.modulesets.keys().cloned().collect(),
        (ListWhat::Rulesets, Some(b)) => b.rulesets.keys().cloned().collect(),
        (ListWhat::Modulesets, None) => loaded
            .policy
            .modulesets
            .iter()
            .map(|m| m.name.clone())
            .collect(),
        (ListWhat::Rulesets, None) => loaded
            .policy
            .rulesets
            .iter()
            .map(|r| r.name.clone())
            .collect(),
        (ListWhat::Modules, _) => loaded
            .policy
            .modules
            .iter()
            .map(|m| m.name.clone())
            .collect(),
    };
    emit(a.policy.format, Json::Pretty, &names, |names| {
        names.iter().for_each(|n| outln!("{n}"));
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn show(a: &ShowArgs, config: Option<&Path>) -> Result<ExitCode, CliError> {
    if a.what == ShowWhat::Status {
        return show_status(a, config);
    }
    let loaded = load(&a.policy, Host::new(&a.policy.root), config)?;
    let policy = &loaded.policy;
    let format = a.policy.format;
    match a.what {
        ShowWhat::Status => unreachable!("handled above"),
        ShowWhat::Moduleset => emit(format, Json::Pretty, &policy.modulesets, |modulesets| {
            if modulesets.is_empty() {
                outln!("(none)");
            }
            for ms in modulesets {
                let indent = " ".repeat(ms.depth);
                outln!("{indent}{}:", ms.name);
                if ms.modules.is_empty()
                    && !modulesets
                        .iter()
                        .any(|c| c.parent.as_deref() == Some(&ms.name))
                {
                    outln!("{indent} (no modules)");
                }
                for m in &ms.modules {
                    let autofix = if m.autofix { " (autofix)" } else { "" };
                    outln!("{indent} {}{autofix}", m.name);
                }
            }
            Ok(())
        })?,
        ShowWhat::Ruleset => emit(format, Json::Pretty, &policy.rulesets, |rulesets| {
            outln!("rules:");
            for rs in rulesets {
                match &rs.moduleset {
                    Some(ms) => outln!(" {} ({}, moduleset {ms})", rs.name, rs.reason),
                    None => outln!(" {} ({})", rs.name, rs.reason),
                }
                for v in &rs.variables {
                    let value = tenet_rulesets::env::env_value(&v.value);
                    // Quoted like a shell assignment, so a value with spaces reads as one value.
                    let shown = if value.contains(char::is_whitespace) {
                        format!("'{}'", value.replace('\'', "'\\''"))
                    } else {
                        value
                    };
                    outln!("  {}={shown}", tenet_rulesets::env::env_name(&v.name));
                }
            }
            Ok(())
        })?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The configuration of a node registered with a collector (exit 2 when it is not).
pub fn registered(config: Option<&Path>, root: &Path) -> Result<NodeConfig, CliError> {
    node_config(config, root)
        .and_then(|c| crate::collector::require_registered(&c).map(|_| c))
        .map_err(|e| CliError::usage(format!("{e:#}")))
}

/// A node client from the configuration.
fn node_client(config: Option<&Path>, root: &Path) -> Result<CollectorClient, CliError> {
    CollectorClient::for_node(&registered(config, root)?)
        .map_err(|e| CliError::usage(format!("{e:#}")))
}

fn show_status(a: &ShowArgs, config: Option<&Path>) -> Result<ExitCode, CliError> {
    let status = node_client(config, &a.policy.root)?.status()?;
    emit(a.policy.format, Json::Pretty, &status, |status| {
        let style = Style::detect();
        outln!(
            "{} ({}), last run {}",
            status.name,
            status.node_id,
            status.last_run.as_deref().unwrap_or("never")
        );
        for m in &status.modules {
            let svc = m
                .service
                .as_deref()
                .map(|s| format!(" [service {s}]"))
                .unwrap_or_default();
            outln!(
                "  {:<40} {:<4} {} {}{svc}",
                m.module,
                style.status(m.status),
                m.date,
                m.action
            );
        }
        outln!(
            "{} ok, {} nok, {} n/a",
            status.summary.ok,
            status.summary.nok,
            status.summary.na
        );
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn attachment(a: &AttachArgs, attach: bool, config: Option<&Path>) -> Result<ExitCode, CliError> {
    let client = node_client(config, Path::new("/"))?;
    let (kind, name) = match (&a.moduleset, &a.ruleset) {
        (Some(m), _) => ("modulesets", m),
        (_, Some(r)) => ("rulesets", r),
        _ => unreachable!("clap requires one of --moduleset, --ruleset"),
    };
    let answer = client.attachment(kind, name, attach)?;
    emit(a.format, Json::Pretty, &answer, |answer| {
        let changed = answer
            .get("changed")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let what = kind.trim_end_matches('s');
        match (attach, changed) {
            (true, true) => outln!("{what} {name} attached"),
            (true, false) => outln!("{what} {name} was already attached"),
            (false, true) => outln!("{what} {name} detached"),
            (false, false) => outln!("{what} {name} was not attached"),
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn install_compat(dir: &Path) -> Result<ExitCode, CliError> {
    let exe = std::env::current_exe().context("cannot locate the tenet executable")?;
    let lib: PathBuf = dir.join("com.opensvc");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    for alias in super::object::compat_aliases() {
        let link = lib.join(alias);
        let tmp = lib.join(format!(".{alias}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&exe, &tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        // Rename over any older link, so a concurrent module never sees it missing.
        std::fs::rename(&tmp, &link).with_context(|| format!("creating {}", link.display()))?;
        outln!("{} -> {}", link.display(), exe.display());
    }
    Ok(ExitCode::SUCCESS)
}

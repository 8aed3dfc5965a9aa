//! `tenet compliance ...`: masterless runs (`--policy PATH`) and policy inspection.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tenet_modules::Host;
use tenet_modules::engine::{self, Action, EngineConfig};
use tenet_rulesets::{Bundle, Policy, Selection};

use crate::cli::{Compliance, Format, ListArgs, ListWhat, PolicyArgs, RunArgs, ShowArgs, ShowWhat};
use crate::output::{self, Style};

/// Exit code for usage and policy errors.
const USAGE: u8 = 2;

/// Runs a `compliance` subcommand.
pub fn run(c: Compliance) -> anyhow::Result<ExitCode> {
    match c {
        Compliance::Check(a) => run_action(&a, Some(Action::Check)),
        Compliance::Fix(a) => run_action(&a, Some(Action::Fix)),
        Compliance::Fixable(a) => run_action(&a, Some(Action::Fixable)),
        Compliance::Auto(a) => run_action(&a, Some(Action::Auto)),
        Compliance::Env(a) => run_action(&a, None),
        Compliance::List(a) => list(&a),
        Compliance::Show(a) => show(&a),
        Compliance::InstallCompat { dir } => install_compat(&dir),
    }
}

/// A loaded bundle and the policy resolved from it, or the exit code of the error printed.
struct Loaded {
    bundle: Bundle,
    policy: Policy,
    host: Host,
}

fn load(p: &PolicyArgs, host: Host) -> Result<Loaded, ExitCode> {
    let Some(path) = &p.policy else {
        eprintln!("tenet: no policy: give --policy PATH (a TOML folder or an OpenSVC export JSON)");
        return Err(ExitCode::from(USAGE));
    };
    let bundle = tenet_rulesets::load_path(path).map_err(|e| {
        eprintln!("tenet: policy error: {e}");
        ExitCode::from(USAGE)
    })?;
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
    let policy = Policy::resolve(&bundle, &facts, &selection).map_err(|e| {
        eprintln!("tenet: policy error: {e}");
        ExitCode::from(USAGE)
    })?;
    for w in &policy.warnings {
        tracing::warn!("{w}");
    }
    let host = host.with_os_vendor(policy.facts.node.get("os_vendor").cloned());
    Ok(Loaded {
        bundle,
        policy,
        host,
    })
}

fn host_for(a: &RunArgs) -> Host {
    let mut host = Host::new(&a.policy.root);
    if let Some(v) = &a.var_dir {
        host = host.with_var_dir(v);
    }
    host.with_package_dir(a.package_dir.clone())
}

fn run_action(a: &RunArgs, action: Option<Action>) -> anyhow::Result<ExitCode> {
    if a.module.is_some() && a.policy.moduleset.is_some() {
        eprintln!("tenet: --moduleset and --module are exclusive");
        return Ok(ExitCode::from(USAGE));
    }
    let loaded = match load(&a.policy, host_for(a)) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let Loaded { policy, host, .. } = loaded;
    if let Some(only) = &a.module {
        for m in only {
            if policy.module(m).is_none() {
                eprintln!("tenet: module {m} not found in the selected modulesets");
                return Ok(ExitCode::from(USAGE));
            }
        }
    }
    let templates = match crate::cmd::template::library(&a.templates) {
        Ok(l) => Arc::new(l),
        Err(code) => return Ok(code),
    };
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
    let report = engine::run(&policy, &host, action, &config, |m| {
        if a.policy.format == Format::Text {
            let mut out = stdout.lock();
            let _ = output::module(&mut out, style, m);
            let _ = out.flush();
        }
    });
    match a.policy.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => output::digest(&mut stdout.lock(), style, &report)?,
    }
    Ok(ExitCode::from(u8::from(report.summary.nok > 0)))
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

fn print_env(policy: &Policy, config: &EngineConfig, format: Format) -> anyhow::Result<ExitCode> {
    let plan = engine::plan(policy, config);
    if format == Format::Json {
        let map: serde_json::Map<String, serde_json::Value> = plan
            .iter()
            .map(|m| {
                let env: serde_json::Map<String, serde_json::Value> =
                    engine::module_env(policy, config, &m.name)
                        .into_iter()
                        .filter(|(k, _)| k.starts_with("OSVC_COMP_"))
                        .map(|(k, v)| (k, v.into()))
                        .collect();
                (m.name.clone(), env.into())
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&map)?);
        return Ok(ExitCode::SUCCESS);
    }
    let style = Style::detect();
    for m in &plan {
        outln!("{}", style.banner(&m.name));
        for (k, v) in engine::module_env(policy, config, &m.name) {
            if k.starts_with("OSVC_COMP_") {
                outln!("{k}={v}");
            }
        }
        outln!();
    }
    Ok(ExitCode::SUCCESS)
}

fn list(a: &ListArgs) -> anyhow::Result<ExitCode> {
    let loaded = match load(&a.policy, Host::new(&a.policy.root)) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let names: Vec<String> = match a.what {
        ListWhat::Modulesets => loaded.bundle.modulesets.keys().cloned().collect(),
        ListWhat::Rulesets => loaded.bundle.rulesets.keys().cloned().collect(),
        ListWhat::Modules => loaded
            .policy
            .modules
            .iter()
            .map(|m| m.name.clone())
            .collect(),
    };
    match a.policy.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&names)?),
        Format::Text => names.iter().for_each(|n| outln!("{n}")),
    }
    Ok(ExitCode::SUCCESS)
}

fn show(a: &ShowArgs) -> anyhow::Result<ExitCode> {
    let loaded = match load(&a.policy, Host::new(&a.policy.root)) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let policy = &loaded.policy;
    match (a.what, a.policy.format) {
        (ShowWhat::Moduleset, Format::Json) => {
            outln!("{}", serde_json::to_string_pretty(&policy.modulesets)?)
        }
        (ShowWhat::Moduleset, Format::Text) => {
            if policy.modulesets.is_empty() {
                outln!("(none)");
            }
            for ms in &policy.modulesets {
                let indent = " ".repeat(ms.depth);
                outln!("{indent}{}:", ms.name);
                if ms.modules.is_empty()
                    && !policy
                        .modulesets
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
        }
        (ShowWhat::Ruleset, Format::Json) => {
            outln!("{}", serde_json::to_string_pretty(&policy.rulesets)?)
        }
        (ShowWhat::Ruleset, Format::Text) => {
            outln!("rules:");
            for rs in &policy.rulesets {
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
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn install_compat(dir: &Path) -> anyhow::Result<ExitCode> {
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

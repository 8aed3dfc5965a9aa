//! `tenet object CLASS PREFIX ACTION`, and the OpenSVC script names (`files.py`, `sysctl.py`,
//! ...) the `tenet` binary answers to when called through a compat alias.
//!
//! The host comes from the environment the engine gives scripts: `TENET_ROOT`, `TENET_VAR_DIR`,
//! `TENET_NODE_CONFIG`, `TENET_PACKAGE_DIR`, `OSVC_SESSION_UUID`, `OSVC_COMP_NODES_OS_VENDOR`;
//! templated `file` rules find templates in `TENET_TEMPLATE_DIR` too.

use std::path::PathBuf;
use std::process::ExitCode;

use tenet_modules::class::{ClassEntry, RuleContext};
use tenet_modules::classes;
use tenet_modules::{Host, Status};

use crate::cli::ObjectArgs;
use crate::error::CliError;

/// The class an OpenSVC object script name stands for (`files.py` → file).
pub fn class_for_alias(name: &str) -> Option<&'static ClassEntry> {
    name.ends_with(".py").then(|| classes::find(name)).flatten()
}

/// Every script name to install in `com.opensvc/`.
pub fn compat_aliases() -> Vec<&'static str> {
    classes::CLASSES
        .iter()
        .flat_map(|c| c.aliases.iter().copied())
        .filter(|a| a.ends_with(".py"))
        .collect()
}

/// The host described by the environment a module script runs in.
pub fn host_from_env() -> Host {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let root = var("TENET_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/".into());
    let mut host = Host::new(&root);
    if let Some(v) = var("TENET_VAR_DIR") {
        host = host.with_var_dir(PathBuf::from(v));
    }
    if let Some(v) = var("TENET_NODE_CONFIG") {
        host = host.with_node_config(PathBuf::from(v));
    }
    if let Some(v) = std::env::var("OSVC_SESSION_UUID")
        .ok()
        .filter(|s| !s.is_empty())
    {
        host = host.with_session(v);
    }
    host.with_package_dir(var("TENET_PACKAGE_DIR").map(PathBuf::from))
        .with_os_vendor(std::env::var("OSVC_COMP_NODES_OS_VENDOR").ok())
}

/// `tenet object CLASS PREFIX ACTION`.
pub fn run(args: &ObjectArgs) -> Result<ExitCode, CliError> {
    let Some(class) = classes::find(&args.class) else {
        let known: Vec<_> = classes::CLASSES.iter().map(|c| c.name).collect();
        return Err(CliError::Usage(format!(
            "tenet object: unknown class {:?}; known: {}",
            args.class,
            known.join(", ")
        )));
    };
    object(class, &args.prefix, &args.action)
}

/// `files.py PREFIX ACTION` (`argv[0]` alias).
pub fn run_alias(class: &'static ClassEntry, args: &[String]) -> Result<ExitCode, CliError> {
    match args {
        [prefix, action] => object(class, prefix, action),
        _ => Err(CliError::Usage(format!(
            "usage: {}.py PREFIX check|fix|fixable",
            class.name
        ))),
    }
}

fn object(class: &ClassEntry, prefix: &str, action: &str) -> Result<ExitCode, CliError> {
    if !matches!(action, "check" | "fix" | "fixable") {
        return Err(CliError::Usage(format!(
            "tenet object: action must be check, fix or fixable, not {action:?}"
        )));
    }
    let host = host_from_env();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let lookup = |name: &str| std::env::var(name).ok();
    let dirs: Vec<PathBuf> = std::env::var_os("TENET_TEMPLATE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    // Exit 1 (nok), not 2: a calling script reads 2 as "not applicable".
    let templates = tenet_templates::Library::load(&dirs)
        .map(std::sync::Arc::new)
        .map_err(|e| CliError::Failed(format!("tenet object: template directory: {e}")))?;
    // Templated rules see what the script's environment holds (variables, facts, service).
    let ctx = RuleContext::new(templates, tenet_rulesets::env::template_data(&env));
    let status =
        tenet_modules::object::run_object(class, prefix, action, &env, &lookup, &host, &ctx);
    Ok(exit_code(status))
}

/// Exit code of a status (kept here so the mapping is in one place for the agent).
pub fn exit_code(status: Status) -> ExitCode {
    ExitCode::from(status.exit_code() as u8)
}

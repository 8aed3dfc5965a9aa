//! `tenet register` and `tenet pushasset`: the node's identity and facts on the collector.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tenet_modules::Host;
use tenet_rulesets::api::{FactsUpdate, RegisterRequest};
use tenet_rulesets::names::{self, NameKind};

use crate::cli::{PushassetArgs, RegisterArgs, SvcPullArgs};
use crate::collector::{AgentState, CallError, CollectorClient};
use crate::config::write_private;
use crate::error::CliError;
use crate::output::{Json, emit};

use super::compliance::{node_config, registered, report_flush};

/// `tenet register`: one admin call, then the configuration and the secret file are written
/// (the secret with mode 0600, before the configuration names it).
pub fn register(a: &RegisterArgs, config: Option<&Path>) -> Result<ExitCode, CliError> {
    let mut cfg = node_config(config, Path::new("/"))?;
    if !(a.collector.starts_with("https://") || a.collector.starts_with("http://")) {
        return Err(CliError::usage(format!(
            "--collector: {:?} is not an http(s) URL",
            a.collector
        )));
    }
    if a.collector.starts_with("http://") && !a.insecure_http {
        return Err(CliError::usage(format!(
            "--collector: {} is plain HTTP: the admin token and the node secret would be sent in clear. Use https:// (with --ca-file for a private or self-signed certificate), or give --insecure-http to accept it",
            a.collector
        )));
    }
    if let Some(t) = &a.team {
        names::check(NameKind::Team, t).map_err(invalid("--team"))?;
    }
    for s in &a.services {
        names::check(NameKind::Service, s).map_err(invalid("--service"))?;
    }
    let name = match &a.name {
        Some(n) => n.clone(),
        None => crate::facts::nodename(&Host::new("/"))
            .split('.')
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    names::check(NameKind::Node, &name).map_err(invalid("node name (--name)"))?;
    let ca = a.ca_file.clone().or_else(|| cfg.ca_file());
    let client = CollectorClient::for_admin(&a.collector, &a.token, ca.as_deref())?;
    let request = RegisterRequest {
        name: name.clone(),
        team_responsible: a.team.clone(),
        services: a.services.clone(),
    };
    // A collector started a moment ago may not listen yet: --wait bridges that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(a.wait);
    let reg = loop {
        match client.register(&request) {
            Err(CallError::Unreachable(e)) if std::time::Instant::now() < deadline => {
                tracing::info!("collector unreachable, trying again (--wait): {e}");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            other => break other,
        }
    };
    let reg = reg.map_err(|e| CliError::call(Some("registration failed"), e))?;
    let secret_file = cfg.secret_file();
    write_private(&secret_file, format!("{}\n", reg.secret).as_bytes(), 0o600)
        .context("writing the node secret")?;
    cfg.set("collector", a.collector.trim_end_matches('/'));
    cfg.set("node_id", &reg.node_id);
    cfg.set("secret_file", &secret_file.display().to_string());
    if let Some(ca) = &a.ca_file {
        cfg.set("ca_file", &ca.display().to_string());
    }
    if a.collector.starts_with("http://") {
        cfg.table
            .insert("insecure_http".into(), toml::Value::Boolean(true));
    } else {
        cfg.table.remove("insecure_http");
    }
    cfg.save()?;
    let answer = serde_json::json!({
        "node_id": reg.node_id, "name": reg.name,
        "config": cfg.path, "secret_file": secret_file,
    });
    emit(a.format, Json::Line, &answer, |_| {
        outln!("registered {} as node {}", reg.name, reg.node_id);
        outln!("configuration: {}", cfg.path.display());
        outln!("secret: {} (mode 0600)", secret_file.display());
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A name an option gives that its grammar refuses: `tenet: --team: invalid ...`, exit 2.
fn invalid(what: &'static str) -> impl Fn(names::NameError) -> CliError {
    move |e| CliError::usage(format!("{what}: {e}"))
}

/// `tenet pushasset`: facts (with the configuration's `[facts]`), listener port and hosted
/// services; then queued results.
pub fn pushasset(a: &PushassetArgs, config: Option<&Path>) -> Result<ExitCode, CliError> {
    let cfg = registered(config, &a.root)?;
    let mut host = Host::new(&a.root);
    if let Some(v) = a.var_dir.clone().or_else(|| cfg.var_dir()) {
        host = host.with_var_dir(v);
    }
    let mut facts = crate::facts::gather(&host);
    if let Some(toml::Value::Table(site)) = cfg.table.get("facts") {
        for (k, v) in site {
            let v = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            facts.node.insert(k.clone(), v);
        }
    }
    let update = FactsUpdate {
        facts,
        listener_port: cfg.listener_port(),
        services: cfg.services(),
    };
    let client = CollectorClient::for_node(&cfg)?;
    // Exit 1 whatever the collector said: the facts are pushed again on the next run.
    client
        .put_facts(&update)
        .map_err(|e| CliError::failed(format!("pushasset failed: {e}")))?;
    let flush = AgentState::new(host.var_dir()).flush(&client);
    report_flush(&flush);
    let answer = serde_json::json!({
        "facts": update.facts.node, "packages": update.facts.packages.len(),
        "listener_port": update.listener_port, "services": update.services,
        "results_delivered": flush.delivered, "results_waiting": flush.waiting,
    });
    emit(a.format, Json::Line, &answer, |_| {
        outln!(
            "facts pushed: {} fields, {} packages; {} queued result(s) delivered, {} waiting",
            update.facts.node.len(),
            update.facts.packages.len(),
            flush.delivered,
            flush.waiting
        );
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `tenet svc pull SVC`: the collector's configuration of SVC, written atomically; a file
/// already identical is not rewritten (its mtime stays).
pub fn svc_pull(a: &SvcPullArgs, config: Option<&Path>) -> Result<ExitCode, CliError> {
    let cfg = registered(config, &a.root)?;
    names::check(NameKind::Service, &a.service).map_err(CliError::usage)?;
    let client = CollectorClient::for_node(&cfg)?;
    let (text, sha) = client
        .service_config(&a.service)
        .map_err(|e| CliError::call(Some(&format!("svc pull {}", a.service)), e))?;
    let (path, unchanged) = match &a.output {
        Some(path) => {
            let unchanged = std::fs::read(path).is_ok_and(|old| old == text.as_bytes());
            if !unchanged {
                write_private(path, text.as_bytes(), 0o644)?;
            }
            (path.clone(), unchanged)
        }
        None => {
            // A file of the managed system: resolved inside the root prefix like the files
            // classes write (a link out of the root cannot redirect it), replaced atomically.
            let mut host = Host::new(&a.root);
            if let Some(v) = cfg.var_dir() {
                host = host.with_var_dir(v);
            }
            let file = host.path(format!("/etc/tenet/services/{}.conf", a.service))?;
            let unchanged = host
                .read(&file)
                .ok()
                .flatten()
                .is_some_and(|old| old == text.as_bytes());
            if !unchanged {
                host.write_atomic(&file, text.as_bytes(), Some(0o644), None)?;
                host.sync()?;
            }
            (file.real(), unchanged)
        }
    };
    let answer = serde_json::json!({
        "service": a.service, "path": path, "sha256": sha, "bytes": text.len(),
        "changed": !unchanged,
    });
    emit(a.format, Json::Line, &answer, |_| {
        outln!(
            "{}: {} ({} bytes, sha256 {})",
            path.display(),
            if unchanged { "unchanged" } else { "written" },
            text.len(),
            &sha[..sha.len().min(12)]
        );
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

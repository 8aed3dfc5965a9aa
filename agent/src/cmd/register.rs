//! `tenet register` and `tenet pushasset`: the node's identity and facts on the collector.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tenet_modules::Host;
use tenet_rulesets::api::{FactsUpdate, RegisterRequest};
use tenet_rulesets::names::{self, NameKind};

use crate::cli::{Format, PushassetArgs, RegisterArgs, SvcPullArgs};
use crate::collector::{AgentState, CallError, CollectorClient};
use crate::config::write_private;

use super::compliance::{node_config, report_flush};

/// `tenet register`: one admin call, then the configuration and the secret file are written
/// (the secret with mode 0600, before the configuration names it).
pub fn register(a: &RegisterArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut cfg = node_config(config, Path::new("/"))?;
    if !(a.collector.starts_with("https://") || a.collector.starts_with("http://")) {
        eprintln!(
            "tenet: --collector: {:?} is not an http(s) URL",
            a.collector
        );
        return Ok(ExitCode::from(2));
    }
    if a.collector.starts_with("http://") && !a.insecure_http {
        eprintln!(
            "tenet: --collector: {} is plain HTTP: the admin token and the node secret would be sent in clear. Use https:// (with --ca-file for a private or self-signed certificate), or give --insecure-http to accept it",
            a.collector
        );
        return Ok(ExitCode::from(2));
    }
    let invalid = |what: &str, e: tenet_rulesets::names::NameError| {
        eprintln!("tenet: {what}: {e}");
        Ok(ExitCode::from(2))
    };
    if let Some(t) = &a.team
        && let Err(e) = names::check(NameKind::Team, t)
    {
        return invalid("--team", e);
    }
    for s in &a.services {
        if let Err(e) = names::check(NameKind::Service, s) {
            return invalid("--service", e);
        }
    }
    let name = match &a.name {
        Some(n) => n.clone(),
        None => crate::facts::nodename(&Host::new("/"))
            .split('.')
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    if let Err(e) = names::check(NameKind::Node, &name) {
        return invalid("node name (--name)", e);
    }
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
    let reg = match reg {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tenet: registration failed: {e}");
            return Ok(ExitCode::from(match e {
                CallError::Unreachable(_) => 1,
                CallError::Refused { .. } => 2,
            }));
        }
    };
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
    match a.format {
        Format::Json => outln!(
            "{}",
            serde_json::json!({
                "node_id": reg.node_id, "name": reg.name,
                "config": cfg.path, "secret_file": secret_file,
            })
        ),
        Format::Text => {
            outln!("registered {} as node {}", reg.name, reg.node_id);
            outln!("configuration: {}", cfg.path.display());
            outln!("secret: {} (mode 0600)", secret_file.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tenet pushasset`: facts (with the configuration's `[facts]`), listener port and hosted
/// services; then queued results.
pub fn pushasset(a: &PushassetArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let cfg = match node_config(config, &a.root)
        .and_then(|c| crate::collector::require_registered(&c).map(|_| c))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tenet: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
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
    if let Err(e) = client.put_facts(&update) {
        eprintln!("tenet: pushasset failed: {e}");
        return Ok(ExitCode::from(1));
    }
    let flush = AgentState::new(host.var_dir()).flush(&client);
    report_flush(&flush);
    match a.format {
        Format::Json => outln!(
            "{}",
            serde_json::json!({
                "facts": update.facts.node, "packages": update.facts.packages.len(),
                "listener_port": update.listener_port, "services": update.services,
                "results_delivered": flush.delivered, "results_waiting": flush.waiting,
            })
        ),
        Format::Text => outln!(
            "facts pushed: {} fields, {} packages; {} queued result(s) delivered, {} waiting",
            update.facts.node.len(),
            update.facts.packages.len(),
            flush.delivered,
            flush.waiting
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `tenet svc pull SVC`: the collector's configuration of SVC, written atomically; a file
/// already identical is not rewritten (its mtime stays).
pub fn svc_pull(a: &SvcPullArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let cfg = match node_config(config, &a.root)
        .and_then(|c| crate::collector::require_registered(&c).map(|_| c))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tenet: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    if let Err(e) = names::check(NameKind::Service, &a.service) {
        eprintln!("tenet: {e}");
        return Ok(ExitCode::from(2));
    }
    let client = CollectorClient::for_node(&cfg)?;
    let (text, sha) = match client.service_config(&a.service) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("tenet: svc pull {}: {e}", a.service);
            return Ok(ExitCode::from(match e {
                CallError::Unreachable(_) => 1,
                CallError::Refused { .. } => 2,
            }));
        }
    };
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
    match a.format {
        Format::Json => outln!(
            "{}",
            serde_json::json!({
                "service": a.service, "path": path, "sha256": sha, "bytes": text.len(),
                "changed": !unchanged,
            })
        ),
        Format::Text => outln!(
            "{}: {} ({} bytes, sha256 {})",
            path.display(),
            if unchanged { "unchanged" } else { "written" },
            text.len(),
            &sha[..sha.len().min(12)]
        ),
    }
    Ok(ExitCode::SUCCESS)
}

//! `release`: a release of software is present in (or absent from) the local image
//! repository: its images on every registry, its files on every file store.
//!
//! A rule names the version and, for present, the squashfs source; everything else (registries,
//! file stores, public key, lir-data scaling) comes from the rule or from the `[release]`
//! section of the node configuration (see `tenet_release::rule`):
//!
//! ```toml
//! [[variable]]
//! name = "lir_release_9999"
//! class = "release"
//! value = { version = "9999.0.0.0-1052647", source = "https://swus.example/fleetos-1052647.squashfs" }
//! ```
//!
//! check: on every registry, every image tag (`name:tag` and `name:<version>-<tag>`) resolves
//! to the manifest digest recorded when the release was added (HEAD requests, concurrent), and
//! every file store holds every file with its size and checksum. Absent: none of the version's
//! tags resolve and its files are gone. Reads only.
//!
//! fix: the whole add (download → verify → unsquash → push → replicate) or remove (untag →
//! remove files → GC) of `tenet_release::converge`, under the node's release lock, its steps
//! recorded in `<var>/release/status/<version>.json` (`tenet release status`).
//!
//! Differences from lir-svc: AddRelease/RemoveRelease are not RPCs but this rule's two states;
//! the signature is required (a release without `public_key` is refused).

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tenet_release::converge::{self, Context};
use tenet_release::progress::{Progress, Step};
use tenet_release::rule::{ReleaseRule, ReleaseSpec, settings_from_config};

use crate::class::Class;
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// The `release` class.
pub struct Release;

fn spec(rule: &ReleaseRule, host: &HostView) -> Result<(Context, ReleaseSpec), String> {
    let cfg_path = host.node_config();
    let table = match std::fs::read_to_string(cfg_path) {
        Ok(text) => text
            .parse::<toml::Table>()
            .map_err(|e| format!("{}: {e}", cfg_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(format!("{}: {e}", cfg_path.display())),
    };
    let settings = settings_from_config(&table, &cfg_path.display().to_string())
        .map_err(|e| e.to_string())?;
    let spec = rule
        .resolve(&settings, host.var_dir(), host.root())
        .map_err(|e| e.to_string())?;
    Ok((
        Context {
            var_dir: host.var_dir().to_path_buf(),
        },
        spec,
    ))
}

/// Progress of a fix: steps go to stderr as they happen (a fix can take minutes), and every
/// line is kept for the module's log.
struct LogProgress {
    lines: Mutex<Vec<String>>,
}

impl Progress for LogProgress {
    fn step(&self, step: Step, detail: &str) {
        let line = if detail.is_empty() {
            format!("release: {step}")
        } else {
            format!("release: {step}: {detail}")
        };
        eprintln!("{line}");
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }
    fn percent(&self, step: Step, percent: u8, _detail: &str) {
        if percent.is_multiple_of(10) {
            eprintln!("release: {step} ({percent}%)");
        }
    }
    fn info(&self, message: &str) {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message.to_string());
    }
}

impl Class for Release {
    type Rule = ReleaseRule;
    const NAME: &'static str = "release";
    const DESCRIPTION: &'static str =
        "a release's images and files present on (or absent from) every registry and file store";

    fn rules(value: &Value) -> Result<Vec<ReleaseRule>, String> {
        let rules: Vec<ReleaseRule> = match value {
            Value::Array(items) => items
                .iter()
                .map(crate::class::parse_rule)
                .collect::<Result<_, _>>()?,
            other => vec![crate::class::parse_rule(other)?],
        };
        for r in &rules {
            tenet_release::manifest::validate_version(&r.version)
                .map_err(|e| format!("release version {:?}: {e}", r.version))?;
        }
        Ok(rules)
    }

    fn describe(rule: &ReleaseRule) -> String {
        format!(
            "release {} {}",
            rule.version,
            match rule.state {
                tenet_release::rule::DesiredState::Present => "present",
                tenet_release::rule::DesiredState::Absent => "absent",
            }
        )
    }

    fn check(rule: &ReleaseRule, host: &HostView, log: &mut Log) -> Status {
        let (ctx, spec) = match spec(rule, host) {
            Ok(x) => x,
            Err(e) => {
                log.err(e);
                return Status::Nok;
            }
        };
        match converge::block_on(converge::check(&ctx, &spec)) {
            Ok(Ok(problems)) if problems.is_empty() => {
                log.info(format!("{}: ok", Self::describe(rule)));
                Status::Ok
            }
            Ok(Ok(problems)) => {
                for p in problems {
                    log.err(format!("release {}: {p}", rule.version));
                }
                Status::Nok
            }
            Ok(Err(e)) | Err(e) => {
                log.err(format!("release {}: {e}", rule.version));
                Status::Nok
            }
        }
    }

    fn fixable(rule: &ReleaseRule, host: &HostView, log: &mut Log) -> Status {
        match spec(rule, host) {
            Ok(_) => Status::Ok,
            Err(e) => {
                log.err(e);
                Status::Nok
            }
        }
    }

    fn fix(rule: &ReleaseRule, host: &Host, log: &mut Log) -> Status {
        let (ctx, spec) = match spec(rule, host) {
            Ok(x) => x,
            Err(e) => {
                log.err(e);
                return Status::Nok;
            }
        };
        let progress = Arc::new(LogProgress {
            lines: Mutex::new(Vec::new()),
        });
        let outcome = converge::block_on(converge::apply(&ctx, &spec, progress.clone()));
        for line in progress
            .lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            log.info(line);
        }
        match outcome {
            Ok(Ok(st)) => {
                log.info(st.message);
                Status::Ok
            }
            Ok(Err(e)) | Err(e) => {
                log.err(format!("release {}: {e}", rule.version));
                Status::Nok
            }
        }
    }
}

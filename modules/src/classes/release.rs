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
//! recorded in `<var>/release/status/<version>.json` (`tenet release status`). A re-fix
//! after drift reuses the download kept by the last add (`[release] keep`): nothing is
//! fetched again.
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
    let table = match host.read_to_string(&host.node_config_file()) {
        Ok(Some(text)) => text
            .parse::<toml::Table>()
            .map_err(|e| format!("{}: {e}", cfg_path.display()))?,
        Ok(None) => toml::Table::new(),
        Err(e) => return Err(e.to_string()),
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
        let outcome = converge::block_on(converge::apply(
            &ctx,
            &spec,
            converge::ApplyOptions::default(),
            progress.clone(),
        ));
        for line in progress
            .lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            log.info(line);
        }
        match outcome {
            Ok(Ok(applied)) => {
                log.info(applied.status.message);
                Status::Ok
            }
            Ok(Err(e)) | Err(e) => {
                log.err(format!("release {}: {e}", rule.version));
                Status::Nok
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;
    use tenet_release::testing::{RegistryProcess, ReleaseRecipe, build_release, filler};

    use super::Release;
    use crate::host::Host;
    use crate::status::Status;
    use crate::testing::{assert_class_contract, check};

    /// A root whose node configuration points at `registry` and a file store; returns the
    /// host and the store.
    fn node(dir: &Path, registry: &RegistryProcess, public_key: &Path) -> (Host, std::path::PathBuf) {
        let root = dir.join("root");
        let store = dir.join("lir-f");
        std::fs::create_dir_all(root.join("etc/tenet")).unwrap();
        std::fs::create_dir_all(&store).unwrap();
        std::fs::copy(public_key, root.join("etc/tenet/release.pub")).unwrap();
        std::fs::write(
            root.join("etc/tenet/node.toml"),
            format!(
                "[release]\nregistries = [\"{}\"]\nfile_stores = [\"{}\"]\npublic_key = \"/etc/tenet/release.pub\"\n",
                registry.url(),
                store.display()
            ),
        )
        .unwrap();
        (Host::new(&root), store)
    }

    #[test]
    fn release_follows_the_class_contract() {
        let dir = tempfile::tempdir().unwrap();
        let registry = RegistryProcess::start().expect("docker-registry starts");
        let built = build_release(
            dir.path(),
            &ReleaseRecipe {
                version: "1.0.0",
                images: vec![("lir/app", "v1", vec![filler(1, 4096), filler(2, 2048)])],
                files: vec![("install-control.yaml", b"release: 1.0.0\n".to_vec())],
                multi_platform: Vec::new(),
                symlink: None,
            },
        )
        .expect("release builds");
        let (host, store) = node(dir.path(), &registry, &built.public_key);
        let present = json!({
            "version": "1.0.0",
            "source": built.squashfs.display().to_string(),
            "sha256": built.sha256,
        });
        // check writes nothing (registry storage, file store, var dir); fix then check is ok;
        // a second fix changes nothing.
        let data = registry.data_dir();
        std::fs::create_dir_all(&data).unwrap();
        let log = assert_class_contract::<Release>(
            &host,
            &[&data, &store, host.var_dir()],
            present,
        );
        assert!(log.iter().any(|l| l.contains("has not been added")), "{log:#?}");

        // absent: the same contract, the other way.
        let absent = json!({ "version": "1.0.0", "state": "absent" });
        assert_class_contract::<Release>(&host, &[&store, host.var_dir()], absent.clone());
        assert!(!store.join("1.0.0").exists());
        assert_eq!(check::<Release>(&host, absent).0, Status::Ok);
    }

    #[test]
    fn a_rule_without_a_key_is_not_fixable_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        let (st, log) = check::<Release>(
            &host,
            json!({ "version": "1.0.0", "source": "https://x/r.squashfs", "registries": ["http://127.0.0.1:1"] }),
        );
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("public_key")), "{log:#?}");
    }
}

//! # tenet-collector: the policy server
//!
//! Role: keep the policy objects (rulesets, filtersets, modulesets), the nodes and their facts,
//! attachments and compliance results; serve each node its resolved policy over an
//! authenticated REST/JSON API (`/api/v1`, see `collector/API.md`); import and export OpenSVC
//! exports and Tenet TOML folders.
//!
//! Layout: [`store`] (the [`store::Store`] trait and its SQLite implementation) knows SQL and
//! nothing of HTTP; [`api`] knows HTTP and nothing of SQL; [`ui`] is the web console under
//! `/ui/`, HTML pages over the same store and state as the API; [`policy`] resolves a node's policy
//! with the same `tenet-rulesets` code the agent uses masterless, and caches it.
//!
//! Must not depend on: tenet-modules, tenet-agent (the collector never runs modules).
//!
//! Invariants: every endpoint but `/health`, `/ready` and `/metrics` authenticates; a node only
//! reads and writes its own data; secrets and tokens are stored as digests only; a store
//! method that returned `Ok` is durable.

pub mod api;
pub mod auth;
pub mod error;
pub mod policy;
pub mod retention;
pub mod store;
pub mod ui;

pub use api::merge;
pub use error::{Error, Result};

use std::path::Path;

/// Target format of [`convert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A Tenet TOML folder (one file per object).
    Toml,
    /// An OpenSVC export JSON file.
    Json,
}

/// Loads `input` (either format), validates it, and writes it to `output` in `target` format.
/// Returns the counts of (rulesets, filtersets, modulesets).
pub fn convert(
    input: &Path,
    target: Target,
    output: &Path,
) -> Result<(usize, usize, usize), Error> {
    let bundle = tenet_rulesets::load_path(input)?;
    match target {
        Target::Toml => tenet_rulesets::toml_format::write_dir(&bundle, output)?,
        Target::Json => write_atomic(output, tenet_rulesets::export::to_json(&bundle).as_bytes())?,
    }
    Ok((
        bundle.rulesets.len(),
        bundle.filtersets.len(),
        bundle.modulesets.len(),
    ))
}

/// Writes a file atomically ([`tenet_fsutil::atomic_write`]: temporary file, fsync, rename).
pub fn write_atomic(path: &Path, content: &[u8]) -> Result<(), Error> {
    tenet_fsutil::atomic_write(path, content, tenet_fsutil::DEFAULT_MODE, false).map_err(|e| {
        Error::Io {
            path: path.display().to_string(),
            source: e,
        }
    })
}

/// Parses a duration with a unit: `500ms`, `10s`, `5m`, `2h`, `30d`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("{text:?}: expected a number with a unit (500ms, 10s, 5m, 2h, 30d)")
    })?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use ms, s, m, h or d)"
            ));
        }
    }
    .ok_or_else(|| format!("{text:?}: too large"))?;
    Ok(std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_take_units() {
        assert_eq!(
            super::parse_duration("30d"),
            Ok(Duration::from_secs(30 * 86400))
        );
        assert_eq!(
            super::parse_duration("500ms"),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(super::parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(super::parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(
            super::parse_duration("5 weeks")
                .unwrap_err()
                .contains("unit")
        );
        assert!(super::parse_duration("d").is_err());
    }
}

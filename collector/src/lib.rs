//! # tenet-collector: the policy server (early stage)
//!
//! Role: serve rulesets to nodes and record their compliance. Today it converts and validates
//! policy bundles (OpenSVC export JSON ⇄ Tenet TOML folder) with the same `tenet-rulesets` code
//! the agent resolves with; the HTTP API, the store and the action queue come next (see
//! DESIGN.md §5).
//!
//! Must not depend on: tenet-modules, tenet-agent (the collector never runs modules).

use std::path::Path;

/// Collector errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy could not be loaded or written.
    #[error(transparent)]
    Policy(#[from] tenet_rulesets::Error),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

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
        Target::Json => {
            let tmp = output.with_extension("json.tmp");
            let text = tenet_rulesets::export::to_json(&bundle);
            std::fs::write(&tmp, text)
                .and_then(|_| std::fs::rename(&tmp, output))
                .map_err(|e| Error::Io {
                    path: output.display().to_string(),
                    source: e,
                })?;
        }
    }
    Ok((
        bundle.rulesets.len(),
        bundle.filtersets.len(),
        bundle.modulesets.len(),
    ))
}

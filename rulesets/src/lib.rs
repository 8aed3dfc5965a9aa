//! # tenet-rulesets: the policy model
//!
//! Role: what a node must comply with, as data. Rulesets (explicit / contextual, nested) hold
//! variables; filtersets decide where contextual rulesets apply; modulesets group modules and
//! carry private rulesets. This crate loads a bundle from a Tenet TOML folder or an OpenSVC
//! export JSON ([`load_path`]), writes both formats back, evaluates filtersets against
//! [`NodeFacts`], and resolves a [`Policy`] for one node: the modules to run, the rulesets and
//! variables that apply, their `OSVC_COMP_*` environment, and a content hash.
//!
//! Must not depend on: any other tenet crate but tenet-fsutil (its atomic write), HTTP, SQL,
//! process spawning. Its only I/O is
//! reading (and writing) policy files. The agent (masterless) and the collector both resolve
//! policies through this crate, so a node gets the same answer either way.
//!
//! Invariants:
//! - Loading never loses a field the OpenSVC export carries: export JSON → [`Bundle`] → TOML →
//!   [`Bundle`] → export JSON is the identity on the model.
//! - Errors name the file, and the ruleset / variable / field at fault.
//! - Resolution is deterministic: the same bundle and facts give the same [`Policy::hash`].

pub mod action;
pub mod api;
pub mod env;
pub mod error;
pub mod export;
pub mod filter;
pub mod model;
pub mod names;
pub mod policy;
pub mod subst;
pub mod toml_format;

pub use error::{Error, Result};
/// Re-exported so dependents build facts maps without naming the crate.
pub use indexmap;
pub use model::*;
pub use policy::{Policy, PolicyModule, PolicyModuleset, PolicyRuleset, Selection};

use std::path::Path;

/// Loads a bundle from a path: a directory is a Tenet TOML folder, a file is an OpenSVC export
/// JSON (or a single TOML file when its name ends in `.toml`).
pub fn load_path(path: &Path) -> Result<Bundle> {
    if path.is_dir() {
        toml_format::load_dir(path)
    } else if path.extension().is_some_and(|e| e == "toml") {
        toml_format::load_file(path)
    } else {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        export::from_json(&text, &path.display().to_string())
    }
}

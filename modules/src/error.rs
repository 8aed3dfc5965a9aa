//! The one error type of this crate.

use std::path::Path;

/// What can go wrong running modules and classes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The (real) path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A rule is malformed or cannot be applied (the message names the field).
    #[error("{0}")]
    Rule(String),
    /// A command could not be run.
    #[error("{0}")]
    Command(String),
    /// A module could not be found, is unsafe to run, or failed to start.
    #[error("module {module}: {message}")]
    Module {
        /// The module name.
        module: String,
        /// Why.
        message: String,
    },
    /// The policy could not be used.
    #[error(transparent)]
    Policy(#[from] tenet_rulesets::Error),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

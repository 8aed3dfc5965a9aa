//! The one error type of this crate.

/// Everything that can go wrong loading, validating or resolving a policy. Every variant says
/// where: the file, and the ruleset / filterset / moduleset / variable / field concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is not valid JSON / TOML, or does not have the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file (with line and column when the parser knows them).
        path: String,
        /// What is wrong, naming the object and field.
        message: String,
    },
    /// The bundle refers to something that does not exist, or is inconsistent (cycles, duplicates).
    #[error("{context}: {message}")]
    Invalid {
        /// Which object: `ruleset spdc.kernel`, `filterset servers with systemd`, ...
        context: String,
        /// What is wrong.
        message: String,
    },
    /// A name asked for (moduleset, module, ruleset) is not in the bundle.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// `moduleset`, `module`, `ruleset`, `filterset`.
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

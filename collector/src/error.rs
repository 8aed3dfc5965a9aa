//! The one error type of this crate.

/// Everything the collector's store and API can fail with. Each variant maps to one HTTP status
/// (see `api::ApiError`), and every message names the object concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A policy document or edit is invalid (the rulesets crate's message names file, object
    /// and field).
    #[error(transparent)]
    Policy(#[from] tenet_rulesets::Error),
    /// A request or command argument is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The object asked for does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// `node`, `ruleset`, `moduleset`, `filterset`, `variable`, `service`, `policy`.
        kind: &'static str,
        /// The name or id asked for.
        name: String,
    },
    /// The object exists already, or the change conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    /// The store is unusable (its writer stopped, a stored document is corrupt, ...).
    #[error("store: {0}")]
    Store(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            name: name.into(),
        }
    }
}

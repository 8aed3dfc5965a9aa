//! The crate's error type: every variant names what it is about (a URL, a path, a registry, a
//! file store, a field), so a release's status can show it as it is.

use std::path::PathBuf;

/// What went wrong with a release step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The rule or a command-line value is invalid (names the field).
    #[error("{0}")]
    Rule(String),
    /// The release source could not be fetched.
    #[error("download of {url}: {message}")]
    Download {
        /// The URL (credentials removed).
        url: String,
        /// What happened.
        message: String,
    },
    /// The downloaded bytes do not have the expected digest.
    #[error("digest mismatch for {what}: expected sha256 {expected}, got {actual}")]
    Digest {
        /// The file or URL.
        what: String,
        /// The expected sha256 (hex).
        expected: String,
        /// The sha256 of what was received (hex).
        actual: String,
    },
    /// The signature does not verify, or the key or signature cannot be used.
    #[error("signature: {0}")]
    Signature(String),
    /// The squashfs holds something that may not be unpacked (absolute path, `..`, a symlink
    /// leaving the tree, a device node), or is not a squashfs.
    #[error("unsquash {}: {reason}", entry.display())]
    Unsquash {
        /// The entry inside the image (or the image itself).
        entry: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The unpacked release does not have the documented layout, or its manifest is wrong.
    #[error("release layout: {0}")]
    Layout(String),
    /// An image could not be read from the release.
    #[error("image {image}: {message}")]
    Image {
        /// `name:tag`.
        image: String,
        /// What is wrong.
        message: String,
    },
    /// A registry request failed.
    #[error("registry {registry}: {message}")]
    Registry {
        /// The registry (`host:port`).
        registry: String,
        /// What happened.
        message: String,
    },
    /// A file store operation failed.
    #[error("file store {store}: {message}")]
    FileStore {
        /// The file store (a directory or an rsync:// URL).
        store: String,
        /// What happened.
        message: String,
    },
    /// A Kubernetes API call failed.
    #[error("kubernetes {object}: {message}")]
    Kube {
        /// `namespace/deployment`, or the kubeconfig.
        object: String,
        /// What happened.
        message: String,
    },
    /// A command (rsync, garbage collection) failed.
    #[error("{command}: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and the tail of its stderr.
        message: String,
    },
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

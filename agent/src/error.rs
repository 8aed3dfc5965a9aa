//! The agent's one error path. Every command returns `Result<ExitCode, CliError>`: `Ok` with
//! the outcome's code (a compliance run's 0 or 1, an object's 0 / 1 / 2), or a [`CliError`]
//! that the binary's `main` prints on stderr and maps to an exit code, in that one place
//! (0 compliant, 1 nok or failed, 2 usage or policy error).

use std::fmt::Display;

use crate::collector::CallError;

/// Why a command stopped. The text of [`CliError::Usage`] and [`CliError::Failed`] is the whole
/// message, naming who speaks (`tenet: ...`, `tenet object: ...`); [`CliError::usage`] and
/// [`CliError::failed`] add the usual `tenet: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage or input, a policy error, a request the collector refused: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The command could not do its work (the collector unreachable, the daemon refused, a
    /// release failed, nothing known by that name): exit 1.
    #[error("{0}")]
    Failed(String),
    /// An error no command words itself (I/O, the configuration file, ...): printed with its
    /// causes, exit 2.
    #[error("tenet: error: {0:#}")]
    Internal(#[from] anyhow::Error),
    /// A command line clap refused, or `--help` / `--version`: clap prints it, exit 2 (0 for
    /// help and version).
    #[error("{0}")]
    Clap(#[from] clap::Error),
}

impl CliError {
    /// `tenet: {message}`, exit 2.
    pub fn usage(message: impl Display) -> CliError {
        CliError::Usage(format!("tenet: {message}"))
    }

    /// `tenet: {message}`, exit 1.
    pub fn failed(message: impl Display) -> CliError {
        CliError::Failed(format!("tenet: {message}"))
    }

    /// A collector call that failed, after `context` (`registration failed`, ...) if any: an
    /// unreachable collector is a failure (exit 1: try again later), a refusal a usage error
    /// (exit 2: the request was wrong).
    pub fn call(context: Option<&str>, e: CallError) -> CliError {
        let message = match context {
            Some(c) => format!("{c}: {e}"),
            None => e.to_string(),
        };
        match e {
            CallError::Unreachable(_) => CliError::failed(message),
            CallError::Refused { .. } => CliError::usage(message),
        }
    }
}

impl From<CallError> for CliError {
    fn from(e: CallError) -> CliError {
        CliError::call(None, e)
    }
}

/// Errors of the libraries the commands call that no command words itself: `tenet: error:`
/// with their causes, exit 2.
macro_rules! internal_from {
    ($($t:ty),+ $(,)?) => {
        $(impl From<$t> for CliError {
            fn from(e: $t) -> CliError {
                CliError::Internal(e.into())
            }
        })+
    };
}

internal_from!(
    std::io::Error,
    serde_json::Error,
    tenet_modules::Error,
    tenet_release::Error,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_failures_say_whether_to_try_again() {
        let e = CliError::call(
            Some("svc pull x"),
            CallError::Unreachable("connection refused".into()),
        );
        assert!(matches!(&e, CliError::Failed(_)));
        assert_eq!(
            e.to_string(),
            "tenet: svc pull x: collector unreachable: connection refused"
        );
        let e: CliError = CallError::Refused {
            status: 403,
            message: "no".into(),
        }
        .into();
        assert!(matches!(&e, CliError::Usage(_)));
        assert_eq!(
            e.to_string(),
            "tenet: collector refused the request (403): no"
        );
    }

    #[test]
    fn unforeseen_errors_are_printed_with_their_causes() {
        let e: CliError = anyhow::anyhow!("disk full").context("writing /x").into();
        assert_eq!(e.to_string(), "tenet: error: writing /x: disk full");
    }
}

//! Results (ok / nok / n/a, [`Status`]) and the per-rule log a class writes to.

use serde::{Deserialize, Serialize};
use std::io::Write;

/// The outcome of a check, fixable or fix: the run-report vocabulary of `tenet_rulesets::api`,
/// defined there once for the engine, the agent and the collector.
pub use tenet_rulesets::api::Status;

/// Which stream a log line belongs to (OpenSVC prints stderr lines with `ERR: `).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Information: what was checked, what was changed.
    Out,
    /// Problems: why a rule is nok, errors.
    Err,
}

/// One line of a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Stream.
    pub stream: Stream,
    /// Text, without trailing newline.
    pub text: String,
}

/// Where classes report what they see and do. Either collected (engine runs) or echoed to the
/// process's stdout / stderr as it happens (the OpenSVC object command).
#[derive(Debug, Default)]
pub struct Log {
    lines: Vec<LogLine>,
    echo: bool,
    quiet: bool,
}

impl Log {
    /// A log that only collects.
    pub fn new() -> Log {
        Log::default()
    }

    /// A log that also writes each line to stdout (info) or stderr (errors) at once.
    pub fn echoing() -> Log {
        Log {
            echo: true,
            ..Log::default()
        }
    }

    /// A log that drops everything (for internal re-checks whose output nobody reads).
    pub fn quiet() -> Log {
        Log {
            quiet: true,
            ..Log::default()
        }
    }

    /// Whether this log drops everything: a class may then skip work that only explains
    /// (diffs, digests).
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Records an informational line.
    pub fn info(&mut self, text: impl Into<String>) {
        self.push(Stream::Out, text.into());
    }

    /// Records a problem line.
    pub fn err(&mut self, text: impl Into<String>) {
        self.push(Stream::Err, text.into());
    }

    fn push(&mut self, stream: Stream, text: String) {
        if self.quiet {
            return;
        }
        for line in text.lines() {
            if self.echo {
                // A closed stdout (e.g. `| head`) must not abort a fix halfway.
                let _ = match stream {
                    Stream::Out => writeln!(std::io::stdout(), "{line}"),
                    Stream::Err => writeln!(std::io::stderr(), "{line}"),
                };
            }
            self.lines.push(LogLine {
                stream,
                text: line.to_string(),
            });
        }
    }

    /// The collected lines.
    pub fn lines(&self) -> &[LogLine] {
        &self.lines
    }

    /// Takes the collected lines out.
    pub fn take(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.lines)
    }

    /// The last error line, if any (used as a one-line reason).
    pub fn last_error(&self) -> Option<&str> {
        self.lines
            .iter()
            .rev()
            .find(|l| l.stream == Stream::Err)
            .map(|l| l.text.as_str())
    }
}

//! Results (ok / nok / n/a) and the per-rule log a class writes to.

use serde::{Deserialize, Serialize};
use std::io::Write;

/// The outcome of a check, fixable or fix, for a rule, a variable or a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Compliant (exit code 0).
    #[serde(rename = "ok")]
    Ok,
    /// Not compliant, or failed (exit code 1).
    #[serde(rename = "nok")]
    Nok,
    /// Not applicable (exit code 2).
    #[serde(rename = "n/a")]
    NotApplicable,
}

impl Status {
    /// The OpenSVC exit code: 0 ok, 1 nok, 2 n/a.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Nok => 1,
            Status::NotApplicable => 2,
        }
    }

    /// Reads an OpenSVC exit code: 0 ok, 2 n/a, anything else nok.
    pub fn from_exit_code(code: i32) -> Status {
        match code {
            0 => Status::Ok,
            2 => Status::NotApplicable,
            _ => Status::Nok,
        }
    }

    /// OM3 merge: any nok gives nok; ok with n/a gives ok; n/a only when both are n/a.
    pub fn merge(self, other: Status) -> Status {
        match (self, other) {
            (Status::Nok, _) | (_, Status::Nok) => Status::Nok,
            (Status::Ok, _) | (_, Status::Ok) => Status::Ok,
            _ => Status::NotApplicable,
        }
    }

    /// Merges many statuses; nothing at all is n/a.
    pub fn merge_all(statuses: impl IntoIterator<Item = Status>) -> Status {
        statuses
            .into_iter()
            .fold(Status::NotApplicable, Status::merge)
    }

    /// `ok`, `nok` or `n/a`, as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Nok => "nok",
            Status::NotApplicable => "n/a",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_follows_om3() {
        use Status::*;
        assert_eq!(Ok.merge(Ok), Ok);
        assert_eq!(Ok.merge(Nok), Nok);
        assert_eq!(Ok.merge(NotApplicable), Ok);
        assert_eq!(Nok.merge(NotApplicable), Nok);
        assert_eq!(NotApplicable.merge(NotApplicable), NotApplicable);
        assert_eq!(Status::merge_all([]), NotApplicable);
        assert_eq!(Status::from_exit_code(3), Nok);
    }
}

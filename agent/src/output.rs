//! What the agent writes. A command's result goes to stdout through [`emit`] (JSON with
//! `--format json`, text for people otherwise); what is not the result (warnings, notices)
//! goes to stderr through [`note`] and [`warn`]; errors are returned as [`CliError`]s, which
//! `main` prints. Text rendering of runs: a banner per module, each action with its output
//! and status, then a digest. Colour only on a terminal (and never with `NO_COLOR`).

use std::fmt::Display;
use std::io::{IsTerminal, Write};

use serde::Serialize;
use tenet_rulesets::api::{ModuleReport, RunReport, Status};

use crate::cli::Format;
use crate::error::CliError;

/// How [`emit`] writes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Json {
    /// Indented: reports, lists, statuses.
    Pretty,
    /// On one line: the answers of `register`, `pushasset`, `svc pull`, `schedule explain`,
    /// `tasks --submit` and queued releases, read by scripts a line at a time.
    Line,
}

/// Prints a command's result on stdout: `value` as JSON with `--format json`, else what
/// `text` writes (text renderings print with `outln!`, which never fails on a closed stdout,
/// or return the write error of a renderer such as [`digest`]).
pub fn emit<T: Serialize + ?Sized>(
    format: Format,
    json: Json,
    value: &T,
    text: impl FnOnce(&T) -> std::io::Result<()>,
) -> Result<(), CliError> {
    match (format, json) {
        (Format::Json, Json::Pretty) => outln!("{}", serde_json::to_string_pretty(value)?),
        (Format::Json, Json::Line) => outln!("{}", serde_json::to_string(value)?),
        (Format::Text, _) => text(value)?,
    }
    Ok(())
}

/// Says on stderr what is not the command's result (a fallback taken, results queued):
/// `tenet: {message}`.
pub fn note(message: impl Display) {
    note_as("tenet", message);
}

/// [`note`] for a command that speaks under its own name (`tenet template list: ...`).
pub fn note_as(who: &str, message: impl Display) {
    // Like `outln!`: a closed stderr must not stop the command.
    let _ = writeln!(std::io::stderr(), "{who}: {message}");
}

/// `tenet: warning: {message}` on stderr.
pub fn warn(message: impl Display) {
    note(format_args!("warning: {message}"));
}

/// Styles text, or not.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    color: bool,
}

impl Style {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset.
    pub fn detect() -> Style {
        Style {
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    /// A status word in its colour (green ok, red nok, plain n/a).
    pub fn status(&self, s: Status) -> String {
        match s {
            Status::Ok => self.paint("32", s.as_str()),
            Status::Nok => self.paint("31", s.as_str()),
            Status::NotApplicable => s.to_string(),
        }
    }

    /// A bold banner ` text ` centred in 78 columns of `=`.
    pub fn banner(&self, text: &str) -> String {
        let t = format!(" {text} ");
        let width = 78usize.max(t.len() + 2);
        let left = (width - t.len()) / 2;
        let line = format!(
            "{}{}{}",
            "=".repeat(left),
            t,
            "=".repeat(width - t.len() - left)
        );
        self.paint("1", &line)
    }

    fn err(&self, s: &str) -> String {
        self.paint("31", s)
    }
}

/// Writes one module's report.
pub fn module(out: &mut impl Write, style: Style, m: &ModuleReport) -> std::io::Result<()> {
    writeln!(out, "{}", style.banner(&m.module))?;
    for a in &m.actions {
        writeln!(out, "ACTION:   {}", a.action)?;
        for line in a.log.lines() {
            match line.strip_prefix("ERR: ") {
                Some(rest) => writeln!(out, "{} {rest}", style.err("ERR:"))?,
                None => writeln!(out, "{line}")?,
            }
        }
        writeln!(
            out,
            "STATUS:   {}",
            style.status(Status::from_exit_code(a.exit_code))
        )?;
    }
    writeln!(out)
}

/// Writes the digest: counts, modules by status, total duration, policy hash.
pub fn digest(out: &mut impl Write, style: Style, r: &RunReport) -> std::io::Result<()> {
    writeln!(out, "{}", style.banner("digest"))?;
    for status in [Status::NotApplicable, Status::Ok, Status::Nok] {
        let mods: Vec<&str> = r
            .modules
            .iter()
            .filter(|m| m.status == status)
            .map(|m| m.module.as_str())
            .collect();
        writeln!(out, "{} {status}", mods.len())?;
        for m in mods {
            writeln!(
                out,
                " {}",
                if status == Status::Nok {
                    style.err(m)
                } else {
                    m.to_string()
                }
            )?;
        }
    }
    writeln!(
        out,
        "total duration: {:.3}s, policy {}",
        r.duration_ms as f64 / 1000.0,
        &r.policy_hash[..r.policy_hash.len().min(12)]
    )
}

//! Text rendering of runs for people: a banner per module, each action with its output and
//! status, then a digest. Colour only on a terminal (and never with `NO_COLOR`).

use std::io::{IsTerminal, Write};

use tenet_rulesets::api::{ModuleReport, RunReport, Status};

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

//! # tenet-agent: the node agent
//!
//! Role: the `tenet` command. It resolves a policy (masterless from a bundle with `--policy`,
//! or fetched from the collector, cached for offline runs), gathers node facts, runs the engine of `tenet-modules`
//! and reports, as text for people and as JSON for programs. It also serves the OpenSVC object
//! convention (`tenet object CLASS PREFIX ACTION`, and the `files.py`-style aliases of its own
//! binary), so existing module scripts run unmodified.
//!
//! Must not depend on: tenet-collector (they talk over HTTP only).
//!
//! Invariants: the binary's `main` only parses, sets up logging and maps errors to exit codes;
//! usage and policy errors exit 2, nok or failed modules exit 1, compliance exits 0. Commands
//! return a [`CliError`] instead of printing errors, and print results through
//! [`output::emit`].

/// `println!` that never panics: with stdout closed (`tenet ... | head`) the run goes on
/// (a fix must not stop halfway because nobody reads its report).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod cli;
pub mod cmd;
pub mod collector;
pub mod config;
pub mod daemon;
pub mod error;
pub mod facts;
pub mod output;
pub mod schedule;
pub mod tls;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

pub use error::CliError;

/// Runs the agent with these arguments (`argv[0]` included): the exit code of the outcome, or
/// the error for `main` to print and map to its exit code.
pub fn run(args: Vec<OsString>) -> Result<ExitCode, CliError> {
    // A task of `tenet daemon`: die with it, so no work goes on that nobody supervises or
    // reports (the daemon reports an interrupted action as failed when it restarts).
    if let Some(parent) = std::env::var("TENET_DAEMON_PID")
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
        if nix::unistd::getppid().as_raw() != parent {
            return Err(anyhow::anyhow!(
                "the tenet daemon (pid {parent}) that started this task is gone"
            )
            .into());
        }
    }
    // Called as `files.py PREFIX ACTION` (a compat alias): the OpenSVC object convention.
    if let Some(class) = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .and_then(cmd::object::class_for_alias)
    {
        let rest: Vec<String> = args
            .iter()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return cmd::object::run_alias(class, &rest);
    }
    cmd::dispatch(cli::Cli::try_parse_from(args)?)
}

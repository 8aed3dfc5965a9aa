//! The `tenet-collector` binary: parses arguments, sets up logging, runs, maps errors to exit
//! codes (2 for usage and policy errors).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Tenet collector: policy bundles today; the policy server in later releases.
#[derive(Debug, Parser)]
#[command(name = "tenet-collector", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert a policy bundle between the OpenSVC export JSON and a Tenet TOML folder,
    /// validating it on the way (references, cycles, duplicate names).
    Convert {
        /// Input: an export JSON file, a TOML file or a TOML folder.
        input: PathBuf,
        /// Output format.
        #[arg(long, value_enum)]
        to: To,
        /// Output: a folder (toml) or a file (json).
        output: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum To {
    Toml,
    Json,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tenet-collector: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Convert { input, to, output } => {
            let target = match to {
                To::Toml => tenet_collector::Target::Toml,
                To::Json => tenet_collector::Target::Json,
            };
            let (r, f, m) = tenet_collector::convert(&input, target, &output)?;
            println!(
                "{}: {r} rulesets, {f} filtersets, {m} modulesets",
                output.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

//! One file per command group; [`dispatch`] routes the parsed command line.

pub mod compliance;
pub mod daemon;
pub mod import;
pub mod object;
pub mod register;
pub mod release;
pub mod template;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::error::CliError;
use crate::output::{Json, emit};

/// Runs the parsed command.
pub fn dispatch(cli: Cli) -> Result<ExitCode, CliError> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Compliance(c) => compliance::run(c, config),
        Command::Register(r) => register::register(&r, config),
        Command::Pushasset(p) => register::pushasset(&p, config),
        Command::Svc(crate::cli::SvcCmd::Pull(p)) => register::svc_pull(&p, config),
        Command::Object(o) => object::run(&o),
        Command::Import(i) => import::run(i),
        Command::Template(t) => template::run(t),
        Command::Schedule(crate::cli::ScheduleCmd::Explain(e)) => daemon::explain(&e, config),
        Command::Daemon(a) => daemon::daemon(&a, config),
        Command::Tasks(a) => daemon::tasks(&a, config),
        Command::DequeueActions(a) => daemon::dequeue(&a, config),
        Command::DaemonCall => daemon::daemon_call(config),
        Command::Release(r) => release::run(r, config),
        Command::Facts(f) => {
            let host = tenet_modules::Host::new(&f.root);
            emit(
                f.format,
                Json::Pretty,
                &crate::facts::gather(&host),
                |facts| {
                    for (k, v) in &facts.node {
                        outln!("{k}: {v}");
                    }
                    outln!("packages: {}", facts.packages.len());
                    Ok(())
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

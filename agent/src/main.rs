//! The `tenet` binary: parses arguments, sets up logging, runs, maps the outcome to an exit
//! code (0 compliant, 1 nok or failed, 2 usage or policy error). Everything else lives in the
//! `tenet_agent` library.

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TENET_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match tenet_agent::run(std::env::args_os().collect()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tenet: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

//! The `tenet` binary: parses arguments, sets up logging, runs, maps the outcome to an exit
//! code (0 compliant, 1 nok or failed, 2 usage or policy error). Everything else lives in the
//! `tenet_agent` library.

use std::process::ExitCode;

use tenet_agent::CliError;

fn main() -> ExitCode {
    // The daemon logs what it does (info); commands only warnings. TENET_LOG overrides;
    // TENET_LOG_FORMAT=json writes one JSON object per line (journald, log shippers).
    let mut args = std::env::args().skip(1);
    let mut daemon = false;
    while let Some(a) = args.next() {
        if a == "--config" {
            args.next();
        } else if !a.starts_with('-') {
            daemon = a == "daemon";
            break;
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("TENET_LOG")
        .unwrap_or_else(|_| if daemon { "info" } else { "warn" }.into());
    // Colours only on a terminal: logs to a file or the journal stay plain text.
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var("TENET_LOG_FORMAT").is_ok_and(|f| f == "json") {
        fmt.json().init();
    } else {
        fmt.init();
    }
    // The one place errors become exit codes.
    match tenet_agent::run(std::env::args_os().collect()) {
        Ok(code) => code,
        Err(CliError::Clap(e)) => {
            let _ = e.print();
            ExitCode::from(if e.use_stderr() { 2 } else { 0 })
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(match e {
                CliError::Failed(_) => 1,
                CliError::Usage(_) | CliError::Internal(_) | CliError::Clap(_) => 2,
            })
        }
    }
}

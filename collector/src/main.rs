//! The `tenet-collector` binary: parses arguments, sets up logging, runs, maps errors to exit
//! codes (2 for usage, policy and store errors).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tenet_collector::store::Store;
use tenet_collector::store::sqlite::SqliteStore;

/// Tenet collector: serves each node its policy, records compliance results, authenticates
/// nodes and admins. See collector/API.md for the HTTP API.
#[derive(Debug, Parser)]
#[command(name = "tenet-collector", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the REST/JSON API (/api/v1, /health, /ready, /metrics) until SIGTERM or Ctrl-C.
    Serve {
        /// Address to listen on (port 0 picks a free port; the bound address is printed).
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// SQLite database file (created and migrated if needed).
        #[arg(long, env = "TENET_COLLECTOR_DB")]
        db: PathBuf,
        /// PEM certificate chain: serve HTTPS (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// An extra template directory for forms (its templates replace shipped ones of the
        /// same name).
        #[arg(long, env = "TENET_TEMPLATE_DIR", value_name = "DIR")]
        template_dir: Option<PathBuf>,
        /// Seconds to keep trying to notify a node of queued actions (OpenSVC: 5).
        #[arg(long, default_value_t = 5, value_name = "SECS")]
        notify_timeout: u64,
        /// Seconds a node may leave a dequeued action unacknowledged before it is offered
        /// again (OpenSVC: 20).
        #[arg(long, default_value_t = 20, value_name = "SECS")]
        ack_timeout: u64,
    },
    /// Import a policy (OpenSVC export JSON, Tenet TOML file or folder) into the database, all
    /// or nothing. Objects are merged by name: a new name is added, an existing name is
    /// replaced whole, objects absent from the file are kept.
    Import {
        /// The export JSON file, TOML file or TOML folder.
        file: PathBuf,
        /// SQLite database file.
        #[arg(long, env = "TENET_COLLECTOR_DB")]
        db: PathBuf,
    },
    /// Export every policy object (OpenSVC export JSON by default) to stdout or a file.
    Export {
        /// SQLite database file.
        #[arg(long, env = "TENET_COLLECTOR_DB")]
        db: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Json)]
        format: ExportFormat,
        /// Write here (a file for json, a folder for toml) instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Admin tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Convert a policy bundle between the OpenSVC export JSON and a Tenet TOML folder,
    /// validating it on the way (references, cycles, duplicate names).
    Convert {
        /// Input: an export JSON file, a TOML file or a TOML folder.
        input: PathBuf,
        /// Output format.
        #[arg(long, value_enum)]
        to: ExportFormat,
        /// Output: a folder (toml) or a file (json).
        output: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it (once: only its digest is stored).
    Create {
        /// An admin token (the only kind today; required so scripts say what they mean).
        #[arg(long, required = true)]
        admin: bool,
        /// A name for the token, recorded in the audit log of what it does.
        #[arg(long, default_value = "admin")]
        name: String,
        /// SQLite database file.
        #[arg(long, env = "TENET_COLLECTOR_DB")]
        db: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExportFormat {
    Json,
    Toml,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TENET_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        // Colours only on a terminal: logs to a file or the journal stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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

fn open(db: &std::path::Path) -> anyhow::Result<Arc<SqliteStore>> {
    Ok(Arc::new(
        SqliteStore::open(db).with_context(|| format!("opening {}", db.display()))?,
    ))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            listen,
            db,
            tls_cert,
            tls_key,
            template_dir,
            notify_timeout,
            ack_timeout,
        } => {
            let store = open(&db)?;
            let templates = match &template_dir {
                None => tenet_templates::Library::shared_builtin(),
                Some(dir) => {
                    let lib = tenet_templates::Library::load(std::slice::from_ref(dir))
                        .with_context(|| format!("loading templates from {}", dir.display()))?;
                    for p in lib.problems() {
                        tracing::warn!("template problem: {p}");
                    }
                    Arc::new(lib)
                }
            };
            let tls = match (tls_cert, tls_key) {
                (Some(c), Some(k)) => Some(tenet_collector::api::tls_config(&c, &k)?),
                _ => None,
            };
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("binding {listen}"))?;
                let addr = listener.local_addr()?;
                let scheme = if tls.is_some() { "https" } else { "http" };
                // On stdout, so scripts and tests started with port 0 learn the port.
                println!("tenet-collector listening on {scheme}://{addr}");
                tracing::info!("listening on {scheme}://{addr}, database {}", db.display());
                let state = tenet_collector::api::AppState::new(store)
                    .with_templates(templates)
                    .with_action_timing(tenet_collector::api::ActionTiming {
                        notify_timeout: std::time::Duration::from_secs(notify_timeout),
                        ack_timeout: std::time::Duration::from_secs(ack_timeout),
                    });
                // Actions queued before a restart and not yet notified.
                state.actions.sweep();
                let app = tenet_collector::api::router(state);
                tenet_collector::api::serve(listener, app, tls, shutdown_signal()).await?;
                tracing::info!("stopped");
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { file, db } => {
            let incoming = tenet_rulesets::load_path(&file)?;
            let store = open(&db)?;
            let what = format!("{}", file.display());
            let outcome = store.edit_bundle(
                "cli",
                Box::new(move |b| {
                    let (r, f, m) = tenet_collector::merge(b, incoming);
                    Ok((
                        "import".into(),
                        what,
                        format!("{r} rulesets, {f} filtersets, {m} modulesets"),
                    ))
                }),
            )?;
            let (_, bundle) = store.load_bundle()?;
            println!(
                "{}: imported ({}); the store holds {} rulesets, {} filtersets, {} modulesets (generation {})",
                file.display(),
                if outcome.changed {
                    "changed"
                } else {
                    "no change"
                },
                bundle.rulesets.len(),
                bundle.filtersets.len(),
                bundle.modulesets.len(),
                outcome.generation
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { db, format, output } => {
            let store = open(&db)?;
            let (_, bundle) = store.load_bundle()?;
            match (format, output) {
                (ExportFormat::Json, None) => {
                    println!("{}", tenet_rulesets::export::to_json(&bundle))
                }
                (ExportFormat::Toml, None) => {
                    print!("{}", tenet_rulesets::toml_format::to_toml_string(&bundle))
                }
                (ExportFormat::Json, Some(path)) => tenet_collector::write_atomic(
                    &path,
                    tenet_rulesets::export::to_json(&bundle).as_bytes(),
                )?,
                (ExportFormat::Toml, Some(dir)) => {
                    tenet_rulesets::toml_format::write_dir(&bundle, &dir)?
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(TokenCommand::Create { admin: _, name, db }) => {
            let store = open(&db)?;
            let token = tenet_collector::auth::new_admin_token();
            store.create_admin_token(&name, &tenet_collector::auth::digest(&token))?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Convert { input, to, output } => {
            let target = match to {
                ExportFormat::Toml => tenet_collector::Target::Toml,
                ExportFormat::Json => tenet_collector::Target::Json,
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

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing requests in flight"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: finishing requests in flight"),
    }
}

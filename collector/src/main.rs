//! The `tenet-collector` binary: parses arguments, sets up logging, runs, maps errors to exit
//! codes (2 for usage, policy and store errors).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

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
        /// How long a web console session lasts from sign-in (`/ui/`; see docs/console.md).
        #[arg(long, default_value = "8h", value_parser = duration, value_name = "DURATION")]
        session_ttl: Duration,
        #[command(flatten)]
        limits: Box<Limits>,
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

/// Bounds on what clients may hold (see "Limits" in docs/collector.md). Durations take a
/// unit: `500ms`, `10s`, `5m`, `2h`, `30d` (a bare number is seconds).
#[derive(Debug, clap::Args)]
struct Limits {
    /// Time a client has, from connecting (or, on a kept-alive HTTP/1 connection, from its
    /// first byte), to send its request headers in full.
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DURATION")]
    header_read_timeout: Duration,
    /// Time from the request headers to the response, body upload included (a body still
    /// arriving gets 408, a handler still running 503).
    #[arg(long, default_value = "60s", value_parser = duration, value_name = "DURATION")]
    request_timeout: Duration,
    /// A connection with no request running and no byte moving for this long is closed.
    #[arg(long, default_value = "60s", value_parser = duration, value_name = "DURATION")]
    idle_timeout: Duration,
    /// Time a client has to complete the TLS handshake.
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DURATION")]
    tls_handshake_timeout: Duration,
    /// Connections open at once. At the cap, a new connection closes the one idle longest
    /// (no request in a handler), so /health still gets through a flood of slow clients.
    /// Default 4096, lowered to fit the open-file limit (raised to its hard limit at start)
    /// less a reserve for the database.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// After SIGTERM: how long requests in flight may take before the collector exits anyway
    /// (it exits at most one second after this).
    #[arg(long, default_value = "30s", value_parser = duration, value_name = "DURATION")]
    shutdown_grace: Duration,
    /// Bytes the policy cache may hold (`K`, `M`, `G` suffixes); one node holds at most an
    /// eighth of it.
    #[arg(long, default_value = "256M", value_parser = size, value_name = "BYTES")]
    policy_cache_size: usize,
    /// Full run reports are kept this long (each node's and service's latest run, and each
    /// module's latest status, are kept whatever their age).
    #[arg(long, default_value = "30d", value_parser = duration, value_name = "DURATION")]
    retention: Duration,
    /// Daily compliance aggregates (trend charts) are kept this long.
    #[arg(long, default_value = "400d", value_parser = duration, value_name = "DURATION")]
    trend_retention: Duration,
    /// Time between two pruning rounds (the first runs at start).
    #[arg(long, default_value = "10m", value_parser = duration, value_name = "DURATION")]
    prune_interval: Duration,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it (once: only its digest is stored).
    Create {
        /// An admin token: may do everything.
        #[arg(long, required_unless_present = "viewer", conflicts_with = "viewer")]
        admin: bool,
        /// A viewer token: reads everything (API and web console), changes nothing (every
        /// other request is refused with 403).
        #[arg(long)]
        viewer: bool,
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
            session_ttl,
            limits,
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
            let console = tenet_collector::ui::ConsoleOptions {
                secure_cookie: tls.is_some(),
                session_ttl,
            };
            let fd_limit = match tenet_collector::api::raise_fd_limit() {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("cannot read or raise the open-file limit: {e}");
                    1024
                }
            };
            let options = tenet_collector::api::ServeOptions {
                header_read_timeout: limits.header_read_timeout,
                request_timeout: limits.request_timeout,
                idle_timeout: limits.idle_timeout,
                tls_handshake_timeout: limits.tls_handshake_timeout,
                max_connections: tenet_collector::api::max_connections_for(
                    fd_limit,
                    limits.max_connections,
                ),
                shutdown_grace: limits.shutdown_grace,
            };
            if limits
                .max_connections
                .is_some_and(|n| n > options.max_connections)
            {
                tracing::warn!(
                    "--max-connections {} lowered to {} (open-file limit {fd_limit})",
                    limits.max_connections.unwrap_or_default(),
                    options.max_connections
                );
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(tenet_collector::api::MAX_BLOCKING_THREADS)
                .build()
                .context("starting the runtime")?;
            let served = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("binding {listen}"))?;
                let addr = listener.local_addr()?;
                let scheme = if tls.is_some() { "https" } else { "http" };
                // On stdout, so scripts and tests started with port 0 learn the port.
                println!("tenet-collector listening on {scheme}://{addr}");
                tracing::info!(
                    "listening on {scheme}://{addr}, database {}, at most {} connections",
                    db.display(),
                    options.max_connections
                );
                if limits.retention < Duration::from_secs(86400) {
                    anyhow::bail!("--retention must be at least 1d (days are rolled up before their runs are pruned)");
                }
                tenet_collector::retention::spawn(
                    store.clone() as Arc<dyn Store>,
                    tenet_collector::retention::Retention {
                        window: limits.retention,
                        trends: limits.trend_retention,
                        interval: limits.prune_interval,
                        ..Default::default()
                    },
                    tenet_collector::retention::system_clock(),
                )
                .context("starting the retention thread")?;
                let state = tenet_collector::api::AppState::new(store)
                    .with_policy_cache(limits.policy_cache_size)
                    .with_templates(templates)
                    .with_console(console)
                    .with_action_timing(tenet_collector::api::ActionTiming {
                        notify_timeout: std::time::Duration::from_secs(notify_timeout),
                        ack_timeout: std::time::Duration::from_secs(ack_timeout),
                    });
                // Actions queued before a restart and not yet notified.
                state.actions.sweep();
                let app = tenet_collector::api::router(state);
                tenet_collector::api::serve(listener, app, tls, options, shutdown_signal()).await?;
                anyhow::Ok(())
            });
            // Blocking work still running (a store call waiting on a lock, an import) is not
            // waited for beyond the grace period: its transaction rolls back with the process.
            runtime.shutdown_timeout(Duration::from_secs(1));
            served?;
            tracing::info!("stopped");
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
        Command::Token(TokenCommand::Create {
            admin: _,
            viewer,
            name,
            db,
        }) => {
            let store = open(&db)?;
            let (token, role) = if viewer {
                (
                    tenet_collector::auth::new_viewer_token(),
                    tenet_collector::store::TokenRole::Viewer,
                )
            } else {
                (
                    tenet_collector::auth::new_admin_token(),
                    tenet_collector::store::TokenRole::Admin,
                )
            };
            store.create_token(&name, &tenet_collector::auth::digest(&token), role)?;
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

/// A byte count: `1048576`, `512K`, `256M`, `2G`.
fn size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1usize << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{text:?}: expected a byte count such as 256M"))
}

/// `500ms`, `10s`, `5m`, `2h`, `30d`, or a number of seconds.
fn duration(text: &str) -> Result<Duration, String> {
    tenet_collector::parse_duration(text)
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

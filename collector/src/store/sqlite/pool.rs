//! The connections: one writer thread committing in groups, and a pool of read connections.
//! Also the database file's creation with private permissions.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};

use rusqlite::{Connection, OpenFlags};

use super::schema::migrate;
use crate::error::{Error, Result};

/// A write waiting for the writer thread: runs inside the group transaction and returns what
/// to tell its caller once the group's commit is known.
type Job = Box<dyn FnOnce(&Connection) -> Completion + Send>;
type Completion = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;

/// Most writes committed together (bounds the latency of the first one of a group).
const MAX_GROUP: usize = 256;

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<mpsc::Sender<Job>>,
    readers: Mutex<Vec<Connection>>,
}

/// Prepared statements kept per connection (more than the store has).
const STATEMENT_CACHE: usize = 128;

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // The store has about a hundred cached statements; rusqlite keeps 16 by default, so a
    // mixed workload would evict and parse them again. Bounded: a few KB each.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;
         PRAGMA journal_size_limit = 67108864;",
    )
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, switches it to WAL and applies
    /// pending migrations. The database holds facts, service configurations and token
    /// digests: a missing directory is created 0700, the file is created 0600 (its `-wal` and
    /// `-shm` files take its mode), and an existing file readable by others is made 0600.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        private_files(path)?;
        let mut conn = Connection::open(path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Store(format!(
                "{}: cannot switch to WAL mode (got {mode})",
                path.display()
            )));
        }
        configure(&conn)?;
        migrate(&mut conn)?;
        // WAL mode made them; SQLite gives them the database's mode, but files left by an
        // older collector may be wider.
        for suffix in ["-wal", "-shm"] {
            restrict(&sibling(path, suffix))?;
        }
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| Error::Store(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writer: Mutex::new(tx),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// Runs `f` on a pooled read connection.
    pub(super) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.readers.lock().expect("reader pool").pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                configure(&c)?;
                c
            }
        };
        let out = f(&conn);
        self.readers.lock().expect("reader pool").push(conn);
        out
    }

    /// Runs `f` in the writer's group transaction and waits for the commit.
    pub(super) fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel::<Result<T>>(1);
        let job: Job = Box::new(move |conn: &Connection| {
            let res = run_in_savepoint(conn, f);
            Box::new(move |commit: std::result::Result<(), String>| {
                let out = match (res, commit) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(m)) => Err(Error::Store(format!("commit failed: {m}"))),
                    (Ok(v), Ok(())) => Ok(v),
                };
                let _ = tx.send(out);
            })
        });
        self.writer
            .lock()
            .expect("writer channel")
            .send(job)
            .map_err(|_| Error::Store("the writer thread stopped".into()))?;
        rx.recv()
            .map_err(|_| Error::Store("the writer thread stopped".into()))?
    }
}

/// `path` with `suffix` appended to its file name (`db.sqlite-wal`).
pub(super) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Creates the database's directory (0700) and file (0600) when missing, and restricts an
/// existing file to 0600. An existing directory is left as it is (it may be shared, such as
/// /var/lib): only what the collector creates is its to decide.
fn private_files(path: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let io = |p: &Path, e: std::io::Error| Error::Io {
        path: p.display().to_string(),
        source: e,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io(dir, e))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => restrict(path),
        Err(e) => Err(io(path, e)),
    }
}

/// Makes an existing file 0600 if group or others have any access to it.
fn restrict(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::Io {
                path: path.display().to_string(),
                source: e,
            });
        }
    };
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_file() && mode & 0o077 != 0 {
        tracing::warn!(
            "store: {} had mode {mode:04o}; made 0600 (it holds facts, service configurations and token digests)",
            path.display()
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            Error::Io {
                path: path.display().to_string(),
                source: e,
            }
        })?;
    }
    Ok(())
}

/// Runs one write in its own savepoint. A write that fails or panics is rolled back alone:
/// the writer thread and the other writes of the group go on (a panic is contained here, the
/// caller gets an error).
fn run_in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    // Statements run around every write: cached, not parsed each time.
    let run = |sql: &str| -> Result<()> {
        conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    run("SAVEPOINT job")?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err(Error::Store(format!(
                "a write panicked and was rolled back: {what}"
            )))
        });
    match outcome {
        Ok(v) => {
            run("RELEASE job")?;
            Ok(v)
        }
        Err(e) => {
            run("ROLLBACK TO job")?;
            run("RELEASE job")?;
            Err(e)
        }
    }
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let msg = e.to_string();
            for job in jobs {
                // Each job still gets an answer: run nothing, report the failure.
                drop(job);
                tracing::error!("store: cannot begin a transaction: {msg}");
            }
            continue;
        }
        let completions: Vec<Completion> = jobs.into_iter().map(|job| job(&conn)).collect();
        let commit = conn.execute_batch("COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            e.to_string()
        });
        for c in completions {
            c(commit.clone());
        }
    }
}

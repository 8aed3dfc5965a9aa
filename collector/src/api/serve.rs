//! Serving the router on a bound listener, plain or TLS, with every per-connection resource
//! bounded: how long a client may take to send its headers, its body, or to stay idle, how
//! many connections are open at once, and how long shutdown may take.
//!
//! The connection cap keeps `/health` answering under a flood. Each connection is *idle*
//! unless one of its requests is in a handler (headers read, body read in full): a TLS
//! handshake, headers or a body still arriving, a keep-alive pause, or a response being
//! written to a slow reader all count as idle. When the cap is reached, a new connection is
//! admitted by closing the connection idle for the longest time (no byte moved), so a client
//! holding thousands of half-sent requests loses its oldest ones to each new arrival, and a
//! health probe, which sends its request at once, gets through. Handlers themselves are never
//! interrupted by shedding; when every connection is in a handler, accepting waits (the
//! kernel backlog holds new clients) until one finishes, which `--request-timeout` bounds.
//! A reserve of file descriptors below `RLIMIT_NOFILE` (raised to its hard limit at start)
//! is kept for the database and the blocking threads, so `accept` never fails with
//! "too many open files".

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};
use tower::ServiceExt as _;

/// File descriptors kept for everything but client connections: the database (a writer and
/// up to [`MAX_BLOCKING_THREADS`] readers, each with its WAL and shared-memory files), the
/// listener, logs, notifications sent to nodes.
pub const FD_RESERVE: u64 = 3 * MAX_BLOCKING_THREADS as u64 + 128;

/// Threads for blocking work (store calls). Each may hold one read connection to the
/// database, so this also bounds the reader pool and its memory.
pub const MAX_BLOCKING_THREADS: usize = 128;

/// Connections served at once when `--max-connections` is not given (and the descriptor limit
/// allows it).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The largest buffer an HTTP/1 connection may hold for request headers (hyper's default is
/// about 400 KiB, which 4,096 slow clients would turn into 1.6 GB).
const MAX_HEADER_BUF: usize = 64 * 1024;

/// Limits of serving; `tenet-collector serve` options of the same names.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// From accepting a connection (or, with HTTP/1, starting a request) to having its request
    /// headers in full.
    pub header_read_timeout: Duration,
    /// From the request headers to the response: reading the body and running the handler.
    /// A body still arriving then gets 408, a handler still running 503.
    pub request_timeout: Duration,
    /// A connection with no request running and no byte moved for this long is closed.
    pub idle_timeout: Duration,
    /// From accepting a TLS connection to the end of its handshake.
    pub tls_handshake_timeout: Duration,
    /// Connections open at once (see the module documentation for what happens at the cap).
    pub max_connections: usize,
    /// After the shutdown signal: how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
        return Ok(hard);
    }
    Ok(soft)
}

/// The connection cap for a descriptor limit: `wanted` (or the default), at most the limit
/// less [`FD_RESERVE`], at least 16.
pub fn max_connections_for(fd_limit: u64, wanted: Option<usize>) -> usize {
    let room = fd_limit.saturating_sub(FD_RESERVE).max(16);
    let wanted = wanted.unwrap_or(DEFAULT_MAX_CONNECTIONS) as u64;
    wanted.min(room) as usize
}

/// What the request-level middleware learns about the connection a request came on.
#[derive(Clone)]
pub(crate) struct ConnHandle {
    state: Arc<ConnState>,
    /// When the request's headers were read plus `--request-timeout`.
    pub(crate) deadline: tokio::time::Instant,
}

impl ConnHandle {
    /// Marks a request as running in a handler until the guard drops (the connection may not
    /// be shed meanwhile). `None` when the connection was shed already.
    pub(crate) fn enter(&self) -> Option<BusyGuard> {
        self.state
            .busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b >= 0).then_some(b + 1)
            })
            .ok()?;
        Some(BusyGuard(self.state.clone()))
    }
}

/// Held while a handler runs.
pub(crate) struct BusyGuard(Arc<ConnState>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

struct ConnState {
    /// Requests in a handler; -1 once the connection is condemned (shed or idle).
    busy: AtomicIsize,
    /// Milliseconds since the server started at the last byte moved or request finished.
    last_active: AtomicU64,
    /// A request has started on this connection.
    started: AtomicBool,
    epoch: Instant,
    close: Notify,
}

impl ConnState {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_active.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Condemns the connection if no request runs on it.
    fn condemn(&self) -> bool {
        if self
            .busy
            .compare_exchange(0, -1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.close.notify_one();
            true
        } else {
            false
        }
    }
}

/// The open connections.
struct Registry {
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    open: AtomicUsize,
    freed: Notify,
    epoch: Instant,
}

impl Registry {
    fn add(self: &Arc<Self>) -> (Arc<ConnState>, Slot) {
        let state = Arc::new(ConnState {
            busy: AtomicIsize::new(0),
            last_active: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
            started: AtomicBool::new(false),
            epoch: self.epoch,
            close: Notify::new(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.conns
            .lock()
            .expect("connections")
            .insert(id, state.clone());
        self.open.fetch_add(1, Ordering::AcqRel);
        (
            state,
            Slot {
                registry: self.clone(),
                id,
            },
        )
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Whether some connection could be shed now.
    fn any_idle(&self) -> bool {
        self.conns
            .lock()
            .expect("connections")
            .values()
            .any(|c| c.busy.load(Ordering::Acquire) == 0)
    }

    /// Closes the connection idle for the longest time; false when none is idle.
    fn shed_oldest_idle(&self) -> bool {
        loop {
            let oldest = self
                .conns
                .lock()
                .expect("connections")
                .values()
                .filter(|c| c.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|c| c.last_active.load(Ordering::Relaxed))
                .cloned();
            match oldest {
                None => return false,
                Some(c) if c.condemn() => return true,
                // A request started on it meanwhile: look again.
                Some(_) => continue,
            }
        }
    }

    /// Asks every connection to finish its requests and close.
    fn all(&self) -> Vec<Arc<ConnState>> {
        self.conns
            .lock()
            .expect("connections")
            .values()
            .cloned()
            .collect()
    }
}

/// A connection's place in the registry, given back on drop.
struct Slot {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry
            .conns
            .lock()
            .expect("connections")
            .remove(&self.id);
        self.registry.open.fetch_sub(1, Ordering::AcqRel);
        self.registry.freed.notify_waiters();
    }
}

/// A stream that records when bytes last moved (the idle clock).
struct Tracked<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The per-connection service: records the peer and the connection on each request, and
/// bounds the whole request by `--request-timeout`.
#[derive(Clone)]
struct ConnService {
    app: Router,
    peer: SocketAddr,
    state: Arc<ConnState>,
    request_timeout: Duration,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for ConnService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        self.state.started.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        req.extensions_mut().insert(ConnHandle {
            state: self.state.clone(),
            deadline,
        });
        let app = self.app.clone();
        Box::pin(async move {
            match tokio::time::timeout_at(deadline, app.oneshot(req)).await {
                Ok(resp) => resp,
                Err(_) => Ok(super::ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "the request took longer than the server's request timeout",
                )
                .into_response_closing()),
            }
        })
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, lets requests
/// in flight finish for at most `options.shutdown_grace`, and returns (connections still open
/// then are dropped with the runtime). With `tls`, every connection is TLS.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let registry = Arc::new(Registry {
        conns: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        open: AtomicUsize::new(0),
        freed: Notify::new(),
        epoch: Instant::now(),
    });
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    let options = Arc::new(options);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(MAX_HEADER_BUF);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(MAX_HEADER_BUF as u32);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    let mut full_since: Option<Instant> = None;
    loop {
        if registry.open() >= options.max_connections && !registry.any_idle() {
            // Every connection is in a handler: let the kernel queue newcomers until one ends.
            if full_since.is_none() {
                full_since = Some(Instant::now());
                tracing::warn!(
                    "{} connections open, all in a request: not accepting until one finishes",
                    registry.open()
                );
            }
            tokio::select! {
                _ = registry.freed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = &mut shutdown => break,
            }
            continue;
        }
        full_since = None;
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: the reserve should prevent them; back off anyway.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        if registry.open() >= options.max_connections {
            registry.shed_oldest_idle();
        }
        let _ = tcp.set_nodelay(true);
        let (state, slot) = registry.add();
        let conn = Connection {
            app: app.clone(),
            peer,
            state,
            options: options.clone(),
            builder: builder.clone(),
            stop: stop_rx.clone(),
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            conn.run(tcp, acceptor).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = registry.open();
    if open > 0 {
        tracing::info!(
            "shutdown: waiting for {open} connections (at most {:?})",
            options.shutdown_grace
        );
    }
    for c in registry.all() {
        c.close.notify_one();
    }
    let deadline = tokio::time::Instant::now() + options.shutdown_grace;
    while registry.open() > 0 {
        tokio::select! {
            _ = registry.freed.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(
                    "shutdown: {} connections still open after the grace period of {:?}; closing them",
                    registry.open(),
                    options.shutdown_grace
                );
                break;
            }
        }
    }
    Ok(())
}

/// One accepted connection.
struct Connection {
    app: Router,
    peer: SocketAddr,
    state: Arc<ConnState>,
    options: Arc<ServeOptions>,
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(self, tcp: tokio::net::TcpStream, acceptor: Option<tokio_rustls::TlsAcceptor>) {
        let tracked = Tracked {
            inner: tcp,
            state: self.state.clone(),
        };
        match acceptor {
            None => self.http(tracked).await,
            Some(acceptor) => {
                let handshake = tokio::time::timeout(
                    self.options.tls_handshake_timeout,
                    acceptor.accept(tracked),
                );
                let state = self.state.clone();
                let stream = tokio::select! {
                    r = handshake => match r {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!("TLS handshake with {} failed: {e}", self.peer);
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake with {} timed out", self.peer);
                            return;
                        }
                    },
                    // Shed at the cap, or shutdown.
                    _ = state.close.notified() => return,
                };
                self.http(stream).await
            }
        }
    }

    async fn http<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = ConnService {
            app: self.app.clone(),
            peer: self.peer,
            state: self.state.clone(),
            request_timeout: self.options.request_timeout,
        };
        let conn = self
            .builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::pin!(conn);
        let mut stop = self.stop.clone();
        let mut stopping = *stop.borrow();
        if stopping {
            conn.as_mut().graceful_shutdown();
        }
        let state = &self.state;
        let accepted = state.now_ms();
        let header_ms = self.options.header_read_timeout.as_millis() as u64;
        let idle_ms = self.options.idle_timeout.as_millis() as u64;
        loop {
            // The next moment a timeout may expire.
            let now = state.now_ms();
            let mut wake = state.last_active.load(Ordering::Relaxed) + idle_ms;
            if !state.started.load(Ordering::Relaxed) {
                wake = wake.min(accepted + header_ms);
            }
            // While a handler runs nothing can expire; the guard's drop restarts the idle clock.
            let sleep = if state.busy.load(Ordering::Acquire) > 0 {
                Duration::from_millis(idle_ms.max(10))
            } else {
                Duration::from_millis(wake.saturating_sub(now).max(10))
            };
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!("connection with {}: {e}", self.peer);
                    }
                    return;
                }
                _ = state.close.notified() => {
                    if stopping || *stop.borrow() {
                        // Shutdown: finish what runs, then close.
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    } else {
                        // Shed to admit a newer connection (no request was running).
                        tracing::debug!("closing idle connection with {} (connection cap)", self.peer);
                        return;
                    }
                }
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tokio::time::sleep(sleep) => {
                    let now = state.now_ms();
                    let idle_for = now.saturating_sub(state.last_active.load(Ordering::Relaxed));
                    let no_request = !state.started.load(Ordering::Relaxed) && now >= accepted + header_ms;
                    if (no_request || idle_for >= idle_ms) && state.condemn() {
                        tracing::debug!(
                            "closing connection with {}: {}",
                            self.peer,
                            if no_request { "no request within the header timeout" } else { "idle" }
                        );
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_and_has_a_floor() {
        assert_eq!(
            max_connections_for(1_048_576, None),
            DEFAULT_MAX_CONNECTIONS
        );
        assert_eq!(max_connections_for(1_048_576, Some(100_000)), 100_000);
        assert_eq!(
            max_connections_for(4096, None),
            (4096 - FD_RESERVE) as usize
        );
        assert_eq!(max_connections_for(100, Some(1000)), 16);
    }
}

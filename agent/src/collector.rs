//! The agent's side of the collector: an HTTP client authenticated as this node, the policy
//! cache (the last good policy per selection, used when the collector is unreachable), and
//! the results spool (every run's results are written to disk first, then delivered; the
//! collector records a `run_id` once, so redelivery after a lost answer never duplicates).
//!
//! Layout under the agent's var dir:
//! ```text
//! collector/policy/<selection>.json   {"fetched_at", "hash", "policy"}
//! collector/spool/<time>-<run_id>.json  results waiting for delivery
//! collector/spool/dead-letter/<file>.json         results the collector refused for good,
//!                         with <file>.reason.json  {"status", "error", "at"}
//! ```
//!
//! A run's results are cut to fit the collector's body limit before they are spooled (module
//! logs and rule messages shortened, with a marker saying how much was cut), so one verbose
//! module never makes a report undeliverable. A permanent refusal (a 4xx other than 401, 408
//! and 429) moves that report to the dead-letter folder and delivery goes on with the next;
//! anything else (unreachable, 5xx, 401, 408, 429) stops delivery and keeps the queue.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde::{Deserialize, Serialize};
use tenet_rulesets::Policy;
use tenet_rulesets::api::{
    ErrorBody, FactsUpdate, NodeStatus, RegisterRequest, Registration, RunRecorded, RunReport,
    RunResults,
};

use crate::config::{NodeConfig, write_private};

/// How a request failed: the collector could not be reached (fall back to the cache, queue
/// results), or it answered with an error (report it; the cache must not hide it).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Connection refused, timeout, TLS failure, 5xx.
    #[error("collector unreachable: {0}")]
    Unreachable(String),
    /// A 4xx answer, with the collector's message.
    #[error("collector refused the request ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The `error` of the body.
        message: String,
    },
}

/// How to authenticate.
#[derive(Clone)]
enum Credentials {
    Node { id: String, secret: String },
    Admin(String),
}

impl std::fmt::Debug for Credentials {
    // Secrets never reach logs, even at debug level.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Node { id, .. } => write!(f, "Node({id}, <secret>)"),
            Credentials::Admin(_) => write!(f, "Admin(<token>)"),
        }
    }
}

/// A collector client.
#[derive(Debug, Clone)]
pub struct CollectorClient {
    base: String,
    http: Client,
    credentials: Credentials,
}

fn http_client(ca_file: Option<&Path>) -> anyhow::Result<Client> {
    let mut b = Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("tenet/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = ca_file {
        // CA certificates, or the collector's own self-signed certificate (pinned).
        b = b.tls_backend_preconfigured(crate::tls::client_config(Some(ca))?);
    }
    b.build().context("building the HTTP client")
}

impl CollectorClient {
    /// A client authenticated as this node, from the configuration and its secret file.
    pub fn for_node(cfg: &NodeConfig) -> anyhow::Result<CollectorClient> {
        let base = cfg.collector().ok_or_else(|| {
            anyhow!(
                "{}: no collector configured (register with `tenet register`, or run masterless with --policy PATH)",
                cfg.path.display()
            )
        })?;
        let id = cfg.node_id().ok_or_else(|| {
            anyhow!(
                "{}: no node_id: register this node first (`tenet register --collector URL --token TOKEN --name NODE`)",
                cfg.path.display()
            )
        })?;
        if base.starts_with("http://") && !cfg.insecure_http() {
            bail!(
                "{}: collector {base} is plain HTTP: the node secret would be sent in clear. Use https://, or set insecure_http = true (what `tenet register --insecure-http` records)",
                cfg.path.display()
            );
        }
        let secret_file = cfg.secret_file();
        let secret = std::fs::read_to_string(&secret_file)
            .with_context(|| format!("reading the node secret {}", secret_file.display()))?
            .trim()
            .to_string();
        Ok(CollectorClient {
            base: base.to_string(),
            http: http_client(cfg.ca_file().as_deref())?,
            credentials: Credentials::Node {
                id: id.to_string(),
                secret,
            },
        })
    }

    /// A client authenticated with an admin token (registration).
    pub fn for_admin(
        base: &str,
        token: &str,
        ca_file: Option<&Path>,
    ) -> anyhow::Result<CollectorClient> {
        Ok(CollectorClient {
            base: base.trim_end_matches('/').to_string(),
            http: http_client(ca_file)?,
            credentials: Credentials::Admin(token.to_string()),
        })
    }

    /// This node's id (node clients only).
    pub fn node_id(&self) -> &str {
        match &self.credentials {
            Credentials::Node { id, .. } => id,
            Credentials::Admin(_) => "",
        }
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.credentials {
            Credentials::Node { id, secret } => rb.header(
                reqwest::header::AUTHORIZATION,
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
                ),
            ),
            Credentials::Admin(t) => rb.bearer_auth(t),
        }
    }

    pub(crate) fn send(&self, rb: RequestBuilder) -> Result<Response, CallError> {
        let resp = rb.send().map_err(|e| {
            // The full chain says why (connection refused, certificate unknown, ...).
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            CallError::Unreachable(msg)
        })?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(resp);
        }
        let text = resp.text().unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or(text);
        if status.is_server_error() {
            Err(CallError::Unreachable(format!("{status}: {message}")))
        } else {
            Err(CallError::Refused {
                status: status.as_u16(),
                message,
            })
        }
    }

    pub(crate) fn json<T: for<'de> Deserialize<'de>>(
        &self,
        resp: Response,
    ) -> Result<T, CallError> {
        resp.json()
            .map_err(|e| CallError::Unreachable(format!("unexpected answer: {e}")))
    }

    /// `POST /api/v1/nodes` (admin).
    pub fn register(&self, request: &RegisterRequest) -> Result<Registration, CallError> {
        let resp = self.send(
            self.request(reqwest::Method::POST, "/api/v1/nodes")
                .json(request),
        )?;
        self.json(resp)
    }

    /// `PUT /api/v1/nodes/{id}/facts`.
    pub fn put_facts(&self, update: &FactsUpdate) -> Result<(), CallError> {
        let path = format!("/api/v1/nodes/{}/facts", self.node_id());
        self.send(self.request(reqwest::Method::PUT, &path).json(update))?;
        Ok(())
    }

    /// `GET /api/v1/nodes/{id}/policy`: the policy and its raw JSON.
    pub fn policy(
        &self,
        modulesets: Option<&[String]>,
        service: Option<&str>,
    ) -> Result<(Policy, serde_json::Value), CallError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(m) = modulesets {
            query.push(("moduleset", m.join(",")));
        }
        if let Some(s) = service {
            query.push(("service", s.to_string()));
        }
        let path = format!("/api/v1/nodes/{}/policy", self.node_id());
        let resp = self.send(self.request(reqwest::Method::GET, &path).query(&query))?;
        let raw: serde_json::Value = self.json(resp)?;
        let policy: Policy = serde_json::from_value(raw.clone())
            .map_err(|e| CallError::Unreachable(format!("unexpected policy document: {e}")))?;
        // Module names become script file names, variable names environment names.
        policy
            .check_names()
            .map_err(|e| CallError::Unreachable(format!("unexpected policy document: {e}")))?;
        Ok((policy, raw))
    }

    /// `POST /api/v1/nodes/{id}/results`: a spooled [`RunResults`] document as read back from
    /// the spool. It is forwarded as it is, not retyped here: one the types refuse (spooled by
    /// another agent version) is for the collector to refuse, with its reason, so that it goes
    /// to the dead-letter folder rather than blocking the queue.
    pub fn post_results(&self, run: &serde_json::Value) -> Result<RunRecorded, CallError> {
        let path = format!("/api/v1/nodes/{}/results", self.node_id());
        let resp = self.send(self.request(reqwest::Method::POST, &path).json(run))?;
        self.json(resp)
    }

    /// `PUT /api/v1/nodes/{id}/releases/{version}`: this node's status of a release.
    pub fn put_release(
        &self,
        status: &tenet_release::status::ReleaseStatus,
    ) -> Result<(), CallError> {
        let path = format!(
            "/api/v1/nodes/{}/releases/{}",
            self.node_id(),
            url_segment(&status.version)
        );
        self.send(self.request(reqwest::Method::PUT, &path).json(status))?;
        Ok(())
    }

    /// `GET /api/v1/nodes/{id}/status`.
    pub fn status(&self) -> Result<NodeStatus, CallError> {
        let path = format!("/api/v1/nodes/{}/status", self.node_id());
        let resp = self.send(self.request(reqwest::Method::GET, &path))?;
        self.json(resp)
    }

    /// `GET /api/v1/services/{svc}/config`: the configuration text and its SHA-256.
    pub fn service_config(&self, service: &str) -> Result<(String, String), CallError> {
        let path = format!("/api/v1/services/{}/config", url_segment(service));
        let resp = self.send(self.request(reqwest::Method::GET, &path))?;
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default();
        let text = resp
            .text()
            .map_err(|e| CallError::Unreachable(format!("reading the configuration: {e}")))?;
        Ok((text, etag))
    }

    /// Attaches (`attach`) or detaches a moduleset or ruleset (`kind` = `modulesets` or
    /// `rulesets`) to this node.
    pub fn attachment(
        &self,
        kind: &str,
        name: &str,
        attach: bool,
    ) -> Result<serde_json::Value, CallError> {
        let path = format!(
            "/api/v1/nodes/{}/{kind}/{}",
            self.node_id(),
            url_segment(name)
        );
        let method = if attach {
            reqwest::Method::POST
        } else {
            reqwest::Method::DELETE
        };
        let resp = self.send(self.request(method, &path))?;
        self.json(resp)
    }
}

/// Percent-encodes a path segment (names may hold spaces, dots, slashes).
fn url_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A cached policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedPolicy {
    /// When it was fetched (`YYYY-MM-DD HH:MM:SS`, UTC).
    pub fetched_at: String,
    /// Unix time of the fetch, for the age.
    pub fetched_unix: i64,
    /// Its hash.
    pub hash: String,
    /// The policy as served.
    pub policy: serde_json::Value,
}

/// Where the agent keeps collector state.
#[derive(Debug, Clone)]
pub struct AgentState {
    dir: PathBuf,
}

fn now() -> (String, i64) {
    let t = time::OffsetDateTime::now_utc();
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    (t.format(&f).unwrap_or_default(), t.unix_timestamp())
}

/// "3 min", "2 h 5 min", "4 days".
pub fn age_text(seconds: i64) -> String {
    let s = seconds.max(0);
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s / 60)
    } else if s < 86400 {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    } else {
        format!("{} days", s / 86400)
    }
}

impl AgentState {
    /// State under `var_dir/collector`.
    pub fn new(var_dir: &Path) -> AgentState {
        AgentState {
            dir: var_dir.join("collector"),
        }
    }

    fn cache_path(&self, modulesets: Option<&[String]>, service: Option<&str>) -> PathBuf {
        let mut key = match modulesets {
            Some(m) => format!("ms-{}", m.join(",")),
            None => "attached".to_string(),
        };
        if let Some(s) = service {
            key.push_str(&format!("@svc-{s}"));
        }
        let safe: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.,@".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join("policy").join(format!("{safe}.json"))
    }

    /// Remembers a policy fetched just now.
    pub fn save_policy(
        &self,
        modulesets: Option<&[String]>,
        service: Option<&str>,
        hash: &str,
        raw: &serde_json::Value,
    ) -> anyhow::Result<()> {
        let (fetched_at, fetched_unix) = now();
        let doc = CachedPolicy {
            fetched_at,
            fetched_unix,
            hash: hash.to_string(),
            policy: raw.clone(),
        };
        let text = serde_json::to_vec_pretty(&doc)?;
        write_private(&self.cache_path(modulesets, service), &text, 0o600)
    }

    /// The last policy fetched for this selection, with its age in seconds.
    pub fn cached_policy(
        &self,
        modulesets: Option<&[String]>,
        service: Option<&str>,
    ) -> anyhow::Result<Option<(CachedPolicy, Policy, i64)>> {
        let path = self.cache_path(modulesets, service);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let doc: CachedPolicy = serde_json::from_slice(&text)
            .with_context(|| format!("{}: corrupt policy cache", path.display()))?;
        let policy: Policy = serde_json::from_value(doc.policy.clone())
            .with_context(|| format!("{}: corrupt policy cache", path.display()))?;
        let age = now().1 - doc.fetched_unix;
        Ok(Some((doc, policy, age)))
    }

    fn spool(&self) -> PathBuf {
        self.dir.join("spool")
    }

    /// Writes a run's results to the spool (before any delivery attempt), cut to fit
    /// [`REPORT_LIMIT`].
    pub fn spool_results(&self, run: &RunResults) -> anyhow::Result<PathBuf> {
        let t = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let path = self.spool().join(format!("{t:024}-{}.json", run.run_id));
        let mut run = run.clone();
        let cut = fit_report(&mut run, REPORT_LIMIT);
        if cut > 0 {
            tracing::warn!(
                "run {}: {cut} bytes of module logs cut so the results fit the collector's limit",
                run.run_id
            );
        }
        write_private(&path, &serde_json::to_vec(&run)?, 0o600)?;
        Ok(path)
    }

    /// Results waiting, oldest first.
    pub fn spooled(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.spool())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "json")
                    && p.file_name()
                        .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        files
    }

    /// Delivers every spooled result, oldest first, removing each once the collector
    /// acknowledged it. Stops at the first transient failure (unreachable, 5xx, 401, 408,
    /// 429: the rest stays queued). A result the collector refuses for good (any other 4xx)
    /// moves to `spool/dead-letter/` with the reason, so it does not block the queue.
    pub fn flush(&self, client: &CollectorClient) -> Flush {
        let mut out = Flush::default();
        for path in self.spooled() {
            let body = match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| refit(b, REPORT_LIMIT))
            {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!("{}: unreadable spooled results: {e:#}", path.display());
                    self.dead_letter(&path, 0, &format!("unreadable: {e:#}"));
                    out.rejected += 1;
                    continue;
                }
            };
            match client.post_results(&body) {
                Ok(_) => {
                    let _ = std::fs::remove_file(&path);
                    out.delivered += 1;
                }
                Err(CallError::Refused { status, message }) if !transient(status) => {
                    tracing::warn!(
                        "the collector refused {} ({status}): {message}; moved to spool/dead-letter",
                        path.display()
                    );
                    self.dead_letter(&path, status, &message);
                    out.rejected += 1;
                }
                Err(e) => {
                    out.error = Some(e.to_string());
                    break;
                }
            }
        }
        out.waiting = self.spooled().len();
        out
    }

    /// The dead-letter folder.
    pub fn dead_letter_dir(&self) -> PathBuf {
        self.spool().join("dead-letter")
    }

    fn dead_letter(&self, path: &Path, status: u16, reason: &str) {
        let dir = self.dead_letter_dir();
        let _ = std::fs::create_dir_all(&dir);
        let Some(name) = path.file_name() else { return };
        let target = dir.join(name);
        let why = serde_json::json!({"status": status, "error": reason, "at": now().0});
        let reason_path = target.with_extension("reason.json");
        // The reason first: a report in the folder always has its reason beside it.
        if let Err(e) = write_private(&reason_path, why.to_string().as_bytes(), 0o600) {
            tracing::warn!("{}: {e:#}", reason_path.display());
        }
        if let Err(e) = std::fs::rename(path, &target) {
            tracing::warn!("moving {} to {}: {e}", path.display(), dir.display());
        }
    }
}

/// Largest serialized run report the agent posts: the collector's body limit, less a margin.
pub const REPORT_LIMIT: usize = tenet_rulesets::api::BODY_LIMIT - 4096;

/// Statuses after which a report is sent again later rather than set aside: the credentials
/// (401), a timeout (408) or throttling (429) are not the report's fault.
fn transient(status: u16) -> bool {
    matches!(status, 401 | 408 | 429) || status >= 500
}

/// A spooled report as posted: cut to `limit` if it is over it (spooled by an older agent).
fn refit(bytes: Vec<u8>, limit: usize) -> anyhow::Result<serde_json::Value> {
    if bytes.len() > limit
        && let Ok(mut run) = serde_json::from_slice::<RunResults>(&bytes)
    {
        fit_report(&mut run, limit);
        return Ok(serde_json::to_value(run)?);
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// Cuts the longest texts of a report (action logs, rule messages) to a common length, each
/// keeping its head and tail around a marker, until the serialized report fits `limit`.
/// Returns the bytes cut.
pub fn fit_report(run: &mut RunResults, limit: usize) -> usize {
    let size = |r: &RunResults| serde_json::to_vec(r).map_or(usize::MAX, |v| v.len());
    let mut cut = 0;
    let mut current = size(run);
    // Each round aims at the excess; escaping and markers may leave some: a few rounds do.
    for _ in 0..8 {
        if current <= limit {
            break;
        }
        let excess = current - limit;
        let mut lens: Vec<usize> = texts(run).map(|t| t.len()).collect();
        if lens.is_empty() {
            break;
        }
        lens.sort_unstable();
        // The largest cap c with sum(max(0, len - c)) >= excess + marker room.
        let need = excess + 96 * lens.len().min(64);
        let cap = water_level(&lens, need);
        for text in texts_mut(run) {
            if text.len() > cap {
                cut += truncate_middle(text, cap);
            }
        }
        let next = size(run);
        if next >= current {
            break;
        }
        current = next;
    }
    cut
}

/// The text fields a report may shorten.
fn texts(run: &RunResults) -> impl Iterator<Item = &String> {
    run.modules.iter().flat_map(|m| {
        m.actions
            .iter()
            .map(|a| &a.log)
            .chain(m.rules.iter().flatten().map(|r| &r.message))
    })
}

fn texts_mut(run: &mut RunResults) -> impl Iterator<Item = &mut String> {
    run.modules.iter_mut().flat_map(|m| {
        m.actions
            .iter_mut()
            .map(|a| &mut a.log)
            .chain(m.rules.iter_mut().flatten().map(|r| &mut r.message))
    })
}

/// For sorted `lens`, the largest cap whose cuts total at least `need` bytes (0 if none).
fn water_level(lens: &[usize], need: usize) -> usize {
    let cuts = |cap: usize| -> usize { lens.iter().map(|l| l.saturating_sub(cap)).sum() };
    let (mut lo, mut hi) = (0usize, *lens.last().unwrap_or(&0));
    if cuts(0) < need {
        return 0;
    }
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if cuts(mid) >= need {
            lo = mid
        } else {
            hi = mid - 1
        }
    }
    lo
}

/// Keeps `cap` bytes of `text` (its head and tail, on character boundaries) around a marker;
/// returns the bytes removed.
fn truncate_middle(text: &mut String, cap: usize) -> usize {
    let len = text.len();
    let mut head = cap / 2;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = len - (cap - cap / 2);
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    let removed = tail - head;
    let marker = format!("\n[... tenet: {removed} bytes cut to fit the collector's limit ...]\n");
    text.replace_range(head..tail, &marker);
    removed
}

/// Outcome of [`AgentState::flush`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flush {
    /// Results delivered now.
    pub delivered: usize,
    /// Results the collector refused.
    pub rejected: usize,
    /// Results still waiting.
    pub waiting: usize,
    /// Why delivery stopped, if it did.
    pub error: Option<String>,
}

/// What is posted for the engine's report: the same report, behind its delivery fields.
pub fn run_results(report: RunReport, service: Option<&str>, started_at: &str) -> RunResults {
    RunResults::new(
        report,
        uuid::Uuid::new_v4().to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
        service.map(str::to_string),
        Some(started_at.to_string()),
    )
}

/// `YYYY-MM-DD HH:MM:SS` now, UTC.
pub fn now_text() -> String {
    now().0
}

/// Fails with the configuration's complaint when collector mode is not set up.
pub fn require_registered(cfg: &NodeConfig) -> anyhow::Result<()> {
    if cfg.collector().is_none() || cfg.node_id().is_none() {
        bail!(
            "{}: this node is not registered with a collector: run `tenet register --collector URL --token TOKEN --name NODE`, or give --policy PATH for a masterless run",
            cfg.path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        assert_eq!(age_text(5), "5 s");
        assert_eq!(age_text(125), "2 min");
        assert_eq!(age_text(3 * 3600 + 120), "3 h 2 min");
        assert_eq!(age_text(3 * 86400), "3 days");
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(url_segment("spdc.node"), "spdc.node");
        assert_eq!(url_segment("a b/c"), "a%20b%2Fc");
    }

    fn report(logs: &[usize]) -> RunResults {
        serde_json::from_value(serde_json::json!({
            "run_id": "r", "agent_version": "t", "action": "check", "policy_hash": "h",
            "modules": logs.iter().enumerate().map(|(i, n)| serde_json::json!({
                "module": format!("m{i}"), "moduleset": "ms", "status": "ok",
                "actions": [{"action": "check", "exit_code": 0, "log": "é".repeat(*n / 2), "duration_ms": 1}],
            })).collect::<Vec<_>>(),
            "summary": {"ok": logs.len(), "nok": 0, "na": 0}, "duration_ms": 1
        }))
        .unwrap()
    }

    #[test]
    fn a_report_is_cut_to_fit_and_says_so() {
        let mut run = report(&[3_000_000, 200, 500_000, 40]);
        let cut = fit_report(&mut run, REPORT_LIMIT);
        let size = serde_json::to_vec(&run).unwrap().len();
        assert!(size <= REPORT_LIMIT, "{size}");
        assert!(cut > 2_000_000, "{cut}");
        let log = &run.modules[0].actions[0].log;
        assert!(
            log.contains("bytes cut to fit the collector's limit"),
            "{}",
            &log[..100]
        );
        assert!(log.starts_with('é') && log.ends_with('é'));
        // Short logs are untouched; the report still has every module.
        assert_eq!(run.modules[1].actions[0].log.len(), 200);
        assert_eq!(run.modules[3].actions[0].log.len(), 40);
        assert_eq!(run.modules.len(), 4);
    }

    #[test]
    fn a_report_that_fits_is_left_alone() {
        let mut run = report(&[1000, 2000]);
        let before = run.clone();
        assert_eq!(fit_report(&mut run, REPORT_LIMIT), 0);
        assert_eq!(run, before);
    }

    #[test]
    fn only_refusals_that_are_the_reports_fault_are_permanent() {
        for s in [400, 403, 404, 409, 413, 415, 422] {
            assert!(!transient(s), "{s}");
        }
        for s in [401, 408, 429, 500, 503] {
            assert!(transient(s), "{s}");
        }
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let c = Credentials::Node {
            id: "n".into(),
            secret: "s3cr3t".into(),
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(!format!("{:?}", Credentials::Admin("t0k3n".into())).contains("t0k3n"));
    }
}

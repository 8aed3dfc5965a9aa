//! Fetching a release squashfs: `http://`, `https://`, `file://` or an absolute path, with
//! Range resume and a mandatory digest.
//!
//! Files next to `dest`:
//! - `<dest>.part`: the bytes received so far; `<dest>.part.json`: what a resume needs
//!   (the validator for `If-Range`, the server's full-representation digest, the length);
//! - `<dest>.sha256`: written (atomically) only after the whole file verified; `dest` plus a
//!   matching marker means "downloaded and verified", and a later call reuses it without any
//!   network request (after re-hashing it: the work dir is not trusted to stay intact).
//!
//! The expected sha256 is the rule's, or else the server's digest of the full representation:
//! `Repr-Digest` (RFC 9530), `Digest` (RFC 3230), or `Content-Digest` of a full `200` reply
//! (a `206`'s `Content-Digest` covers only the part sent). Without either, nothing is accepted:
//! unverified bytes must not become a release. The error comes before the body is read.
//!
//! Credentials in a URL's userinfo are sent (reqwest turns them into Basic auth) but never
//! shown: errors, progress and the sidecar use the URL without them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::progress::{Progress, Step, percent_of};

/// How [`fetch`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// How many times a dropped connection is resumed within one call (default 3).
    pub retries: u32,
    /// A PEM file of extra CA certificates, trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            retries: 3,
            ca_file: None,
        }
    }
}

/// A downloaded and verified release file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// `dest`.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256 (lower-case hex).
    pub sha256: String,
    /// The byte offset the final transfer started at (0: the whole body in one reply).
    pub resumed_from: u64,
    /// True when an already verified `dest` was reused without a request.
    pub reused: bool,
    /// Where the expected digest came from: `"rule"`, `"Digest header"`,
    /// `"Repr-Digest header"`, `"Content-Digest header"`, or `"marker"` (reused, verified
    /// earlier, and the rule gives no sha256).
    pub digest_source: String,
}

/// The HTTP client for release downloads: rustls with the system's roots plus the
/// certificates of `ca_file`; verification is never disabled, and a redirect from `https`
/// to plain `http` is refused.
pub fn http_client(ca_file: Option<&Path>) -> Result<reqwest::Client> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() == "http"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        if downgrade {
            attempt.error("redirect from https to plain http refused")
        } else if attempt.previous().len() >= 10 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    });
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("tenet-release/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        // a stalled transfer becomes an error, so it is resumed instead of hanging
        .read_timeout(Duration::from_secs(120))
        .redirect(policy);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| Error::Rule(format!("ca_file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(Error::Rule(format!(
                "ca_file {}: no PEM certificate in it",
                path.display()
            )));
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| Error::Rule(format!("HTTP client: {}", describe(e))))
}

/// Fetches `source` to `dest` and verifies it (see the module documentation).
pub async fn fetch(
    client: &reqwest::Client,
    source: &str,
    dest: &Path,
    expected_sha256: Option<&str>,
    opts: &FetchOptions,
    progress: &dyn Progress,
) -> Result<Downloaded> {
    let expected = expected_sha256.map(normalize_sha256).transpose()?;
    let src = parse_source(source)?;
    let shown = match &src {
        Source::File(p) => p.display().to_string(),
        Source::Http(u) => redact(u),
    };
    progress.step(Step::Downloading, &shown);
    if let Some(d) = reuse(dest, expected.as_deref()).await? {
        progress.info(&format!(
            "{} is already downloaded and verified (sha256 {}); not fetched again",
            dest.display(),
            d.sha256
        ));
        return Ok(d);
    }
    match src {
        Source::File(path) => copy_local(&path, dest, expected, progress).await,
        Source::Http(url) => fetch_http(client, url, &shown, dest, expected, opts, progress).await,
    }
}

enum Source {
    File(PathBuf),
    Http(reqwest::Url),
}

fn parse_source(source: &str) -> Result<Source> {
    if source.starts_with('/') {
        return Ok(Source::File(PathBuf::from(source)));
    }
    // the source may hold credentials: the error does not repeat it
    let url = reqwest::Url::parse(source).map_err(|e| {
        Error::Rule(format!(
            "source is neither an absolute path nor a valid URL ({e})"
        ))
    })?;
    match url.scheme() {
        "http" | "https" => Ok(Source::Http(url)),
        "file" => url.to_file_path().map(Source::File).map_err(|()| {
            Error::Rule("source: a file:// URL must name a local absolute path".into())
        }),
        other => Err(Error::Rule(format!(
            "source: scheme {other:?} is not supported (http, https, file or an absolute path)"
        ))),
    }
}

/// The URL without its userinfo.
fn redact(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// A reqwest error and its causes, without the URL (it may carry credentials).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    text
}

fn normalize_sha256(hex_digest: &str) -> Result<String> {
    let h = hex_digest.trim().to_ascii_lowercase();
    if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(h)
    } else {
        Err(Error::Rule(format!(
            "sha256 {hex_digest:?}: not 64 hexadecimal digits"
        )))
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn marker_path(dest: &Path) -> PathBuf {
    with_suffix(dest, ".sha256")
}

async fn remove_if_exists(path: &Path) -> Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// Feeds the file at `path` into `hasher`; returns its length.
async fn hash_into(path: &Path, hasher: &mut Sha256) -> Result<u64> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).await.map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(len);
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// `dest` with a marker matching its content (and `expected`, when given).
async fn reuse(dest: &Path, expected: Option<&str>) -> Result<Option<Downloaded>> {
    let marker = marker_path(dest);
    let Ok(recorded) = tokio::fs::read_to_string(&marker).await else {
        return Ok(None);
    };
    let recorded = recorded.trim().to_string();
    if tokio::fs::symlink_metadata(dest).await.is_err() {
        return Ok(None);
    }
    let stale = match expected {
        Some(e) => e != recorded,
        None => false,
    };
    if !stale {
        let mut hasher = Sha256::new();
        let size = hash_into(dest, &mut hasher).await?;
        let actual = hex::encode(hasher.finalize());
        if actual == recorded {
            return Ok(Some(Downloaded {
                path: dest.to_path_buf(),
                size,
                sha256: actual,
                resumed_from: 0,
                reused: true,
                digest_source: if expected.is_some() { "rule" } else { "marker" }.into(),
            }));
        }
    }
    // another release, or a damaged file: fetched again
    remove_if_exists(&marker).await?;
    remove_if_exists(dest).await?;
    Ok(None)
}

/// Makes `part` the verified `dest` and records its digest.
async fn commit(part: &Path, dest: &Path, sha256: &str) -> Result<()> {
    let f = tokio::fs::OpenOptions::new()
        .write(true)
        .open(part)
        .await
        .map_err(|e| Error::io(part, e))?;
    f.sync_all().await.map_err(|e| Error::io(part, e))?;
    drop(f);
    tokio::fs::rename(part, dest)
        .await
        .map_err(|e| Error::io(dest, e))?;
    write_atomic(&marker_path(dest), format!("{sha256}\n").as_bytes()).await?;
    if let Some(dir) = dest.parent()
        && let Ok(d) = tokio::fs::File::open(dir).await
    {
        let _ = d.sync_all().await;
    }
    Ok(())
}

/// [`tenet_fsutil::atomic_write`] off the async threads (it fsyncs).
async fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let (owned, data) = (path.to_path_buf(), data.to_vec());
    tokio::task::spawn_blocking(move || {
        tenet_fsutil::atomic_write(&owned, &data, tenet_fsutil::DEFAULT_MODE, false)
    })
    .await
    .map_err(|e| Error::io(path, std::io::Error::other(e)))?
    .map_err(|e| Error::io(path, e))
}

/// Percent reports only when the integer percent changes.
struct PercentGate<'a> {
    progress: &'a dyn Progress,
    last: Option<u8>,
}

impl PercentGate<'_> {
    fn update(&mut self, done: u64, total: Option<u64>) {
        self.progress.bytes(Step::Downloading, done, total);
        let pct = percent_of(done, total.unwrap_or(0));
        if self.last != Some(pct) {
            self.last = Some(pct);
            self.progress.percent(Step::Downloading, pct, "");
        }
    }
}

async fn copy_local(
    src: &Path,
    dest: &Path,
    expected: Option<String>,
    progress: &dyn Progress,
) -> Result<Downloaded> {
    let Some(expected) = expected else {
        return Err(Error::Download {
            url: src.display().to_string(),
            message: "a local file has no digest of its own: set sha256 in the rule".into(),
        });
    };
    let part = with_suffix(dest, ".part");
    let mut input = tokio::fs::File::open(src)
        .await
        .map_err(|e| Error::io(src, e))?;
    let total = input.metadata().await.map_err(|e| Error::io(src, e))?.len();
    let mut out = tokio::fs::File::create(&part)
        .await
        .map_err(|e| Error::io(&part, e))?;
    let mut hasher = Sha256::new();
    let mut gate = PercentGate {
        progress,
        last: None,
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    gate.update(0, Some(total));
    loop {
        let n = input.read(&mut buf).await.map_err(|e| Error::io(src, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .await
            .map_err(|e| Error::io(&part, e))?;
        done += n as u64;
        gate.update(done, Some(total));
    }
    out.flush().await.map_err(|e| Error::io(&part, e))?;
    drop(out);
    let actual = hex::encode(hasher.finalize());
    if actual != expected {
        remove_if_exists(&part).await?;
        return Err(Error::Digest {
            what: src.display().to_string(),
            expected,
            actual,
        });
    }
    commit(&part, dest, &actual).await?;
    Ok(Downloaded {
        path: dest.to_path_buf(),
        size: done,
        sha256: actual,
        resumed_from: 0,
        reused: false,
        digest_source: "rule".into(),
    })
}

/// What a resume needs, next to the `.part` file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PartMeta {
    /// The URL without credentials: a part of another source is not resumed.
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    /// The server's sha256 of the full representation (hex) and the header it came from.
    digest: Option<String>,
    digest_source: Option<String>,
    total: Option<u64>,
}

impl PartMeta {
    /// The `If-Range` value: a strong ETag, else Last-Modified (weak ETags do not qualify).
    fn if_range(&self) -> Option<&str> {
        match &self.etag {
            Some(e) if !e.starts_with("W/") => Some(e),
            _ => self.last_modified.as_deref(),
        }
    }

    fn take_digest(&mut self, headers: &HeaderMap, full_reply: bool) {
        let mut sources = vec![
            ("repr-digest", "Repr-Digest header"),
            ("digest", "Digest header"),
        ];
        if full_reply {
            sources.push(("content-digest", "Content-Digest header"));
        }
        for (name, label) in sources {
            if let Some(hex) = headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(sha256_from_digest_field)
            {
                self.digest = Some(hex);
                self.digest_source = Some(label.into());
                return;
            }
        }
    }
}

/// The sha-256 member of a digest field (`sha-256=<b64>` or the RFC 9530 `sha-256=:<b64>:`).
fn sha256_from_digest_field(value: &str) -> Option<String> {
    value.split(',').find_map(|member| {
        let (alg, v) = member.trim().split_once('=')?;
        if !alg.trim().eq_ignore_ascii_case("sha-256") {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix(':')
            .and_then(|v| v.strip_suffix(':'))
            .unwrap_or(v);
        let bytes = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
        (bytes.len() == 32).then(|| hex::encode(bytes))
    })
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `Content-Range: bytes <start>-<end>/<total|*>` → (start, total).
fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let v = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

async fn load_meta(path: &Path, url: &str) -> Option<PartMeta> {
    let text = tokio::fs::read_to_string(path).await.ok()?;
    let meta: PartMeta = serde_json::from_str(&text).ok()?;
    (meta.url == url).then_some(meta)
}

async fn save_meta(path: &Path, meta: &PartMeta) -> Result<()> {
    let text = serde_json::to_vec_pretty(meta).expect("PartMeta serializes");
    write_atomic(path, &text).await
}

async fn part_len(part: &Path) -> u64 {
    tokio::fs::metadata(part)
        .await
        .map(|m| m.len())
        .unwrap_or(0)
}

async fn fetch_http(
    client: &reqwest::Client,
    url: reqwest::Url,
    shown: &str,
    dest: &Path,
    expected: Option<String>,
    opts: &FetchOptions,
    progress: &dyn Progress,
) -> Result<Downloaded> {
    let part = with_suffix(dest, ".part");
    let meta_path = with_suffix(dest, ".part.json");
    let download_error = |message: String| Error::Download {
        url: shown.to_string(),
        message,
    };
    let mut meta = load_meta(&meta_path, shown).await;
    if meta.is_none() {
        // a part without its sidecar (or of another source) cannot be resumed safely
        remove_if_exists(&part).await?;
    }
    let mut failures = 0u32;
    let mut restarted = false;
    let mut gate = PercentGate {
        progress,
        last: None,
    };
    let (hasher, size, resumed_from, meta) = loop {
        let offset = if meta.is_some() {
            part_len(&part).await
        } else {
            0
        };
        if let Some(m) = &meta
            && offset > 0
            && m.total == Some(offset)
        {
            // the part is complete (an earlier call stopped before verifying)
            let mut hasher = Sha256::new();
            hash_into(&part, &mut hasher).await?;
            break (hasher, offset, offset, meta.take().expect("checked"));
        }

        let mut req = client
            .get(url.clone())
            .header(header::ACCEPT_ENCODING, "identity")
            .header("Want-Repr-Digest", "sha-256=10")
            .header("Want-Digest", "sha-256");
        if offset > 0 {
            req = req.header(header::RANGE, format!("bytes={offset}-"));
            if let Some(v) = meta.as_ref().and_then(PartMeta::if_range) {
                req = req.header(header::IF_RANGE, v);
            }
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                failures += 1;
                let why = describe(e);
                if failures > opts.retries {
                    return Err(download_error(why));
                }
                progress.info(&format!(
                    "request failed ({why}); retrying at byte {offset}"
                ));
                continue;
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let (mut new_meta, append) = match status {
            StatusCode::PARTIAL_CONTENT if offset > 0 => {
                let Some((start, total)) = content_range(&headers) else {
                    return Err(download_error(
                        "a 206 reply without a valid Content-Range".into(),
                    ));
                };
                if start != offset {
                    return Err(download_error(format!(
                        "asked for bytes from {offset}, the server sent from {start}"
                    )));
                }
                let mut m = meta.clone().expect("offset > 0 implies a sidecar");
                if total.is_some() {
                    m.total = total;
                }
                if m.digest.is_none() {
                    m.take_digest(&headers, false);
                }
                (m, true)
            }
            StatusCode::OK => {
                if offset > 0 {
                    progress.info(&format!(
                        "the server sent the whole file instead of bytes from {offset}; starting over"
                    ));
                }
                let mut m = PartMeta {
                    url: shown.to_string(),
                    etag: header_str(&headers, header::ETAG),
                    last_modified: header_str(&headers, header::LAST_MODIFIED),
                    total: resp.content_length(),
                    ..PartMeta::default()
                };
                m.take_digest(&headers, true);
                (m, false)
            }
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 && !restarted => {
                progress.info(&format!(
                    "the server cannot resume at byte {offset}; starting over"
                ));
                restarted = true;
                remove_if_exists(&part).await?;
                remove_if_exists(&meta_path).await?;
                meta = None;
                continue;
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                failures += 1;
                if failures > opts.retries {
                    return Err(download_error(format!("HTTP status {s}")));
                }
                progress.info(&format!("HTTP status {s}; retrying at byte {offset}"));
                continue;
            }
            s => return Err(download_error(format!("HTTP status {s}"))),
        };
        if expected.is_none() && new_meta.digest.is_none() {
            return Err(download_error(
                "no sha256 in the rule and the server sends no Digest, Repr-Digest or \
                 Content-Digest header: unverified bytes are refused; set sha256 in the rule"
                    .into(),
            ));
        }
        save_meta(&meta_path, &new_meta).await?;
        let mut hasher = Sha256::new();
        let mut file = if append {
            hash_into(&part, &mut hasher).await?;
            tokio::fs::OpenOptions::new().append(true).open(&part).await
        } else {
            tokio::fs::File::create(&part).await
        }
        .map_err(|e| Error::io(&part, e))?;
        let start = if append { offset } else { 0 };
        let mut done = start;
        let total = new_meta.total;
        gate.update(done, total);
        let mut resp = resp;
        let dropped = loop {
            match resp.chunk().await {
                Ok(Some(bytes)) => {
                    file.write_all(&bytes)
                        .await
                        .map_err(|e| Error::io(&part, e))?;
                    hasher.update(&bytes);
                    done += bytes.len() as u64;
                    gate.update(done, total);
                }
                Ok(None) => match total {
                    Some(t) if done < t => {
                        break Some(format!("the body ended at byte {done} of {t}"));
                    }
                    _ => break None,
                },
                Err(e) => break Some(describe(e)),
            }
        };
        file.flush().await.map_err(|e| Error::io(&part, e))?;
        drop(file);
        match dropped {
            None => {
                new_meta.total = Some(done);
                break (hasher, done, start, new_meta);
            }
            Some(why) => {
                meta = Some(new_meta);
                failures += 1;
                if failures > opts.retries {
                    return Err(download_error(format!(
                        "connection lost at byte {done} ({why}); the {done} bytes received are kept in {} for the next attempt",
                        part.display()
                    )));
                }
                progress.info(&format!("connection lost ({why}); resuming at byte {done}"));
            }
        }
    };

    let actual = hex::encode(hasher.finalize());
    let (want, digest_source) = match (expected, &meta.digest) {
        (Some(e), _) => (e, "rule".to_string()),
        (None, Some(d)) => (
            d.clone(),
            meta.digest_source
                .clone()
                .unwrap_or_else(|| "server header".into()),
        ),
        (None, None) => {
            return Err(download_error(
                "no sha256 in the rule and none remembered from the server: set sha256 in the rule"
                    .into(),
            ));
        }
    };
    if actual != want {
        remove_if_exists(&part).await?;
        remove_if_exists(&meta_path).await?;
        return Err(Error::Digest {
            what: shown.to_string(),
            expected: want,
            actual,
        });
    }
    commit(&part, dest, &actual).await?;
    remove_if_exists(&meta_path).await?;
    if resumed_from > 0 {
        progress.info(&format!(
            "{shown}: resumed at byte {resumed_from}, verified"
        ));
    }
    Ok(Downloaded {
        path: dest.to_path_buf(),
        size,
        sha256: actual,
        resumed_from,
        reused: false,
        digest_source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// How the test server answers.
    #[derive(Clone, Default)]
    struct Behaviour {
        body: Vec<u8>,
        /// `Digest: sha-256=<b64>` of the full body.
        digest: bool,
        /// `Repr-Digest: sha-256=:<b64>:` of the full body.
        repr_digest: bool,
        /// `Content-Digest: sha-256=:<b64>:` of the bytes sent (the part, for a 206).
        content_digest: bool,
        /// Close the connection after this many body bytes, for the next `drops` requests.
        drop_after: usize,
        drops: usize,
        /// Answer every request with the whole body (200), Range or not.
        ignore_range: bool,
    }

    /// A tiny HTTP/1.1 server on 127.0.0.1:0: one request per connection.
    struct Server {
        url: String,
        behaviour: Arc<Mutex<Behaviour>>,
        /// The Range header of every request (None: no Range).
        ranges: Arc<Mutex<Vec<Option<String>>>>,
    }

    impl Server {
        async fn start(behaviour: Behaviour) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!(
                "http://{}/releases/release.sqfs",
                listener.local_addr().unwrap()
            );
            let behaviour = Arc::new(Mutex::new(behaviour));
            let ranges = Arc::new(Mutex::new(Vec::new()));
            let (b, r) = (behaviour.clone(), ranges.clone());
            tokio::spawn(async move {
                loop {
                    let (sock, _) = listener.accept().await.unwrap();
                    tokio::spawn(serve(sock, b.clone(), r.clone()));
                }
            });
            Server {
                url,
                behaviour,
                ranges,
            }
        }

        fn ranges(&self) -> Vec<Option<String>> {
            self.ranges.lock().unwrap().clone()
        }
    }

    fn b64_sha256(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data))
    }

    async fn serve(
        mut sock: tokio::net::TcpStream,
        behaviour: Arc<Mutex<Behaviour>>,
        ranges: Arc<Mutex<Vec<Option<String>>>>,
    ) {
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            req.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&req).to_string();
        let header = |name: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let range = header("range");
        let if_range = header("if-range");
        ranges.lock().unwrap().push(range.clone());
        let (b, drop_after) = {
            let mut b = behaviour.lock().unwrap();
            let drop_after = (b.drops > 0).then_some(b.drop_after);
            b.drops = b.drops.saturating_sub(1);
            (b.clone(), drop_after)
        };
        const ETAG: &str = "\"v1\"";
        let len = b.body.len();
        let start = match (&range, b.ignore_range) {
            (Some(r), false) if if_range.as_deref().is_none_or(|v| v == ETAG) => r
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok()),
            _ => None,
        };
        let mut head = match start {
            Some(s) if s >= len => {
                let h = format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                sock.write_all(h.as_bytes()).await.unwrap();
                return;
            }
            Some(s) => format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{len}\r\n",
                len - 1
            ),
            None => "HTTP/1.1 200 OK\r\n".to_string(),
        };
        let sent = &b.body[start.unwrap_or(0)..];
        head.push_str(&format!(
            "Content-Length: {}\r\nETag: {ETAG}\r\nConnection: close\r\n",
            sent.len()
        ));
        if b.digest {
            head.push_str(&format!("Digest: sha-256={}\r\n", b64_sha256(&b.body)));
        }
        if b.repr_digest {
            head.push_str(&format!(
                "Repr-Digest: sha-256=:{}:\r\n",
                b64_sha256(&b.body)
            ));
        }
        if b.content_digest {
            head.push_str(&format!(
                "Content-Digest: sha-256=:{}:\r\n",
                b64_sha256(sent)
            ));
        }
        head.push_str("\r\n");
        sock.write_all(head.as_bytes()).await.unwrap();
        let body = match drop_after {
            Some(k) => &sent[..k.min(sent.len())],
            None => sent,
        };
        // the peer may have gone away already: that is its business
        let _ = sock.write_all(body).await;
        let _ = sock.shutdown().await;
    }

    #[derive(Default)]
    struct Recorded {
        steps: Mutex<Vec<String>>,
        percents: Mutex<Vec<u8>>,
        infos: Mutex<Vec<String>>,
    }

    impl Progress for Recorded {
        fn step(&self, step: Step, detail: &str) {
            self.steps.lock().unwrap().push(format!("{step}: {detail}"));
        }
        fn percent(&self, _step: Step, percent: u8, _detail: &str) {
            self.percents.lock().unwrap().push(percent);
        }
        fn info(&self, message: &str) {
            self.infos.lock().unwrap().push(message.to_string());
        }
    }

    fn body() -> Vec<u8> {
        (0..300_000u32).map(|i| (i * 13 % 241) as u8).collect()
    }

    fn sha_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn opts(retries: u32) -> FetchOptions {
        FetchOptions {
            retries,
            ca_file: None,
        }
    }

    fn client() -> reqwest::Client {
        http_client(None).unwrap()
    }

    struct Files {
        _dir: tempfile::TempDir,
        dest: PathBuf,
    }

    impl Files {
        fn new() -> Files {
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("release.sqfs");
            Files { _dir: dir, dest }
        }
        fn part(&self) -> PathBuf {
            with_suffix(&self.dest, ".part")
        }
        fn sidecar(&self) -> PathBuf {
            with_suffix(&self.dest, ".part.json")
        }
        fn marker(&self) -> PathBuf {
            marker_path(&self.dest)
        }
    }

    #[tokio::test]
    async fn a_full_fetch_verifies_the_rule_sha256() {
        let data = body();
        let server = Server::start(Behaviour {
            body: data.clone(),
            ..Behaviour::default()
        })
        .await;
        let f = Files::new();
        let progress = Recorded::default();
        let d = fetch(
            &client(),
            &server.url,
            &f.dest,
            Some(&sha_hex(&data).to_uppercase()),
            &opts(3),
            &progress,
        )
        .await
        .unwrap();
        assert_eq!(d.sha256, sha_hex(&data));
        assert_eq!(
            (d.size, d.resumed_from, d.reused),
            (data.len() as u64, 0, false)
        );
        assert_eq!(d.digest_source, "rule");
        assert_eq!(std::fs::read(&f.dest).unwrap(), data);
        assert_eq!(
            std::fs::read_to_string(f.marker()).unwrap().trim(),
            sha_hex(&data)
        );
        assert!(!f.part().exists() && !f.sidecar().exists());
        assert_eq!(server.ranges(), vec![None]);
        assert_eq!(
            progress.steps.lock().unwrap().clone(),
            vec![format!("Downloading: {}", server.url)]
        );
        let pct = progress.percents.lock().unwrap().clone();
        assert!(pct.windows(2).all(|w| w[0] < w[1]), "{pct:?}");
        assert_eq!(pct.last(), Some(&100));
    }

    #[tokio::test]
    async fn the_server_digest_headers_are_used_without_a_rule_sha256() {
        for (mut b, source) in [
            (
                Behaviour {
                    digest: true,
                    ..Behaviour::default()
                },
                "Digest header",
            ),
            (
                Behaviour {
                    repr_digest: true,
                    ..Behaviour::default()
                },
                "Repr-Digest header",
            ),
            (
                Behaviour {
                    content_digest: true,
                    ..Behaviour::default()
                },
                "Content-Digest header",
            ),
        ] {
            b.body = body();
            let server = Server::start(b).await;
            let f = Files::new();
            let d = fetch(&client(), &server.url, &f.dest, None, &opts(0), &NoProgress)
                .await
                .unwrap();
            assert_eq!(d.digest_source, source);
            assert_eq!(d.sha256, sha_hex(&body()));
        }
    }

    #[tokio::test]
    async fn no_digest_at_all_is_refused_before_the_body() {
        let server = Server::start(Behaviour {
            body: body(),
            ..Behaviour::default()
        })
        .await;
        let f = Files::new();
        let err = fetch(&client(), &server.url, &f.dest, None, &opts(3), &NoProgress)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Download { message, .. } if message.contains("set sha256 in the rule")),
            "{err}"
        );
        assert!(!f.dest.exists() && !f.part().exists() && !f.marker().exists());
    }

    #[tokio::test]
    async fn a_corrupted_byte_is_a_digest_error_and_nothing_is_kept() {
        let good = body();
        let mut bad = good.clone();
        bad[150_000] ^= 0x40;
        let server = Server::start(Behaviour {
            body: bad,
            ..Behaviour::default()
        })
        .await;
        let f = Files::new();
        // credentials in the URL are used but never shown
        let source = server.url.replace("http://", "http://ops:s3cret@");
        let err = fetch(
            &client(),
            &source,
            &f.dest,
            Some(&sha_hex(&good)),
            &opts(3),
            &NoProgress,
        )
        .await
        .unwrap_err();
        match &err {
            Error::Digest { what, expected, .. } => {
                assert_eq!(what, &server.url);
                assert_eq!(expected, &sha_hex(&good));
            }
            other => panic!("not a digest error: {other}"),
        }
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(!f.dest.exists() && !f.part().exists() && !f.sidecar().exists());
    }

    #[tokio::test]
    async fn a_dropped_connection_keeps_the_part_and_the_next_call_resumes() {
        const K: usize = 100_000;
        let data = body();
        // only Content-Digest: the 200's (full body) is remembered; the 206's covers the part
        let server = Server::start(Behaviour {
            body: data.clone(),
            content_digest: true,
            drop_after: K,
            drops: 1,
            ..Behaviour::default()
        })
        .await;
        let f = Files::new();
        let err = fetch(&client(), &server.url, &f.dest, None, &opts(0), &NoProgress)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Download { message, .. } if message.contains("connection lost at byte 100000")),
            "{err}"
        );
        assert_eq!(std::fs::read(f.part()).unwrap(), data[..K]);
        assert!(f.sidecar().exists() && !f.dest.exists());

        let d = fetch(&client(), &server.url, &f.dest, None, &opts(0), &NoProgress)
            .await
            .unwrap();
        assert_eq!(server.ranges(), vec![None, Some(format!("bytes={K}-"))]);
        assert_eq!(d.resumed_from, K as u64);
        assert_eq!(d.digest_source, "Content-Digest header");
        assert_eq!(d.sha256, sha_hex(&data));
        assert_eq!(std::fs::read(&f.dest).unwrap(), data);
        assert!(!f.part().exists() && !f.sidecar().exists());
    }

    #[tokio::test]
    async fn a_dropped_connection_is_resumed_within_the_call() {
        const K: usize = 70_000;
        let data = body();
        let server = Server::start(Behaviour {
            body: data.clone(),
            drop_after: K,
            drops: 1,
            ..Behaviour::default()
        })
        .await;
        let f = Files::new();
        let progress = Recorded::default();
        let d = fetch(
            &client(),
            &server.url,
            &f.dest,
            Some(&sha_hex(&data)),
            &opts(3),
            &progress,
        )
        .await
        .unwrap();
        assert_eq!(server.ranges(), vec![None, Some(format!("bytes={K}-"))]);
        assert_eq!(d.resumed_from, K as u64);
        assert_eq!(std::fs::read(&f.dest).unwrap(), data);
        let infos = progress.infos.lock().unwrap().clone();
        assert!(
            infos
                .iter()
                .any(|i| i.contains(&format!("resuming at byte {K}"))),
            "{infos:?}"
        );
    }

    #[tokio::test]
    async fn more_drops_than_retries_fail_and_keep_the_part() {
        let data = body();
        let server = Server::start(Behaviour {
            body: data.clone(),
            drop_after: 10_000,
            drops: 3,
            ..Behaviour::default()
        })
        .await;
        let f = Files::new();
        let err = fetch(
            &client(),
            &server.url,
            &f.dest,
            Some(&sha_hex(&data)),
            &opts(2),
            &NoProgress,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Download { .. }), "{err}");
        assert_eq!(server.ranges().len(), 3);
        assert_eq!(std::fs::read(f.part()).unwrap(), data[..30_000]);
    }

    #[tokio::test]
    async fn a_verified_file_is_reused_without_a_request() {
        let data = body();
        let server = Server::start(Behaviour {
            body: data.clone(),
            digest: true,
            ..Behaviour::default()
        })
        .await;
        let f = Files::new();
        let sha = sha_hex(&data);
        fetch(
            &client(),
            &server.url,
            &f.dest,
            Some(&sha),
            &opts(0),
            &NoProgress,
        )
        .await
        .unwrap();
        let d = fetch(
            &client(),
            &server.url,
            &f.dest,
            Some(&sha),
            &opts(0),
            &NoProgress,
        )
        .await
        .unwrap();
        assert!(d.reused);
        assert_eq!(
            (d.sha256.as_str(), d.size),
            (sha.as_str(), data.len() as u64)
        );
        let d = fetch(&client(), &server.url, &f.dest, None, &opts(0), &NoProgress)
            .await
            .unwrap();
        assert!(d.reused);
        assert_eq!(d.digest_source, "marker");
        assert_eq!(server.ranges().len(), 1, "no request for a reused file");

        // a damaged file is fetched again
        std::fs::write(&f.dest, b"damaged").unwrap();
        let d = fetch(
            &client(),
            &server.url,
            &f.dest,
            Some(&sha),
            &opts(0),
            &NoProgress,
        )
        .await
        .unwrap();
        assert!(!d.reused);
        assert_eq!(server.ranges().len(), 2);
        assert_eq!(std::fs::read(&f.dest).unwrap(), data);
    }

    #[tokio::test]
    async fn a_200_reply_to_a_range_request_starts_over() {
        const K: usize = 50_000;
        let data = body();
        let server = Server::start(Behaviour {
            body: data.clone(),
            drop_after: K,
            drops: 1,
            ..Behaviour::default()
        })
        .await;
        let f = Files::new();
        let sha = sha_hex(&data);
        fetch(
            &client(),
            &server.url,
            &f.dest,
            Some(&sha),
            &opts(0),
            &NoProgress,
        )
        .await
        .unwrap_err();
        assert_eq!(std::fs::metadata(f.part()).unwrap().len(), K as u64);
        server.behaviour.lock().unwrap().ignore_range = true;
        let d = fetch(
            &client(),
            &server.url,
            &f.dest,
            Some(&sha),
            &opts(0),
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(server.ranges(), vec![None, Some(format!("bytes={K}-"))]);
        assert_eq!(d.resumed_from, 0);
        assert_eq!(std::fs::read(&f.dest).unwrap(), data);
    }

    #[tokio::test]
    async fn local_files_need_the_rule_sha256() {
        let data = body();
        let f = Files::new();
        let src = f.dest.with_file_name("source.sqfs");
        std::fs::write(&src, &data).unwrap();
        let sha = sha_hex(&data);
        let err = fetch(
            &client(),
            src.to_str().unwrap(),
            &f.dest,
            None,
            &opts(0),
            &NoProgress,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("set sha256 in the rule"), "{err}");
        let url = format!("file://{}", src.display());
        let d = fetch(&client(), &url, &f.dest, Some(&sha), &opts(0), &NoProgress)
            .await
            .unwrap();
        assert_eq!(d.sha256, sha);
        assert_eq!(std::fs::read(&f.dest).unwrap(), data);
        let err = fetch(
            &client(),
            "ftp://example.invalid/x",
            &f.dest.with_file_name("other"),
            Some(&sha),
            &opts(0),
            &NoProgress,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("scheme \"ftp\""), "{err}");
    }

    #[test]
    fn digest_fields_parse() {
        let b64 = b64_sha256(b"abc");
        let hex = sha_hex(b"abc");
        for v in [
            format!("sha-256={b64}"),
            format!("MD5=xyz, SHA-256={b64}"),
            format!("sha-512=:AAAA:, sha-256=:{b64}:"),
        ] {
            assert_eq!(
                sha256_from_digest_field(&v).as_deref(),
                Some(hex.as_str()),
                "{v}"
            );
        }
        assert_eq!(sha256_from_digest_field("sha-256=:AAAA:"), None);
        assert_eq!(sha256_from_digest_field("md5=abc"), None);
    }

    #[test]
    fn the_http_client_takes_a_pem_ca_file_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let out = crate::testing::tool("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=tenet test CA",
                "-days",
                "1",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        http_client(Some(&dir.path().join("ca.pem"))).unwrap();
        std::fs::write(dir.path().join("junk.pem"), "not a certificate\n").unwrap();
        let err = http_client(Some(&dir.path().join("junk.pem")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("junk.pem"), "{err}");
        assert!(http_client(Some(&dir.path().join("missing.pem"))).is_err());
    }
}

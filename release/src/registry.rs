//! OCI registries: pushing a release's images (resuming: blobs already there are not pushed
//! again, blobs another repository of the registry holds are mounted), checking that tags
//! point at the expected manifests, removing tags without touching manifests other tags
//! share, and running a registry's garbage collection.
//!
//! The distribution API v2 is spoken directly over `reqwest`: blob HEAD, upload (`POST` then
//! one streamed `PUT` per blob, or a cross-repository mount `POST ?mount=&from=`), manifest
//! PUT, HEAD, GET and DELETE, tag listing. Authentication (anonymous, Basic, bearer tokens)
//! is [`crate::auth`].
//!
//! Invariants:
//! - TLS is verified (system roots plus an optional CA file); plain HTTP only for a spec
//!   written `http://`.
//! - A push ends with a HEAD of every tag, whose `Docker-Content-Digest` must be the image's
//!   digest: a registry that rewrote the manifest is an error, not a silent success.
//! - The manifests an image index lists are pushed (and tagged, see
//!   [`LocalImage::child_tags`]) before the index.
//! - [`Registry::untag`] never deletes a manifest another tag may point at (see there).
//! - An upload location on another host than the registry's is refused (credentials are
//!   only ever sent to the registry and its token realm).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt, TryStreamExt, stream};
use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION, WWW_AUTHENTICATE,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::auth::{Auth, Credentials, Scope};
use crate::error::{Error, Result};
use crate::image::{
    Blob, BlobLocation, LocalImage, MANIFEST_MEDIA_TYPES, OCI_CONFIG, OCI_MANIFEST,
    PlatformManifest, sha256_digest,
};
use crate::progress::{Progress, Step, percent_of};

/// Blobs uploaded at once by [`Registry::push`] (each streams from its file, so memory is
/// bounded by this times the read buffer).
pub const PUSH_CONCURRENCY: usize = 4;
/// HEAD requests in flight at once in [`check_images`].
pub const CHECK_CONCURRENCY: usize = 32;
/// At most this many blobs are remembered per registry as mount sources.
const MAX_KNOWN_BLOBS: usize = 100_000;
const READ_CHUNK: usize = 1 << 20;

/// An OCI registry (distribution API v2), anonymous, with HTTP Basic credentials (the
/// distribution registry's `htpasswd` auth), or behind a token realm.
#[derive(Clone)]
pub struct Registry {
    name: String,
    scheme: &'static str,
    http: reqwest::Client,
    auth: Arc<Auth>,
    /// Blobs seen in a repository of this registry during this operation (digest →
    /// repository): the sources of cross-repository mounts.
    known: Arc<Mutex<HashMap<String, String>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registry({}://{})", self.scheme, self.name)
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Blobs uploaded.
    pub blobs_pushed: usize,
    /// Blobs the registry already had in the repository.
    pub blobs_skipped: usize,
    /// Blobs mounted from another repository of the registry (no bytes sent).
    pub blobs_mounted: usize,
    /// Bytes uploaded.
    pub bytes_pushed: u64,
}

/// A tag that should point at a manifest, for [`check_images`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedImage {
    /// Repository (`calico/cni`).
    pub repo: String,
    /// Tag.
    pub tag: String,
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
}

/// What became of one blob in a push.
enum BlobOutcome {
    Present,
    Mounted,
    Uploaded(u64),
}

/// The certificates of a PEM bundle, one PEM block each (reqwest's PEM parsing of a
/// single `Certificate` only takes the first).
fn pem_blocks(pem: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

fn snippet(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &body[..i]),
        None => body.to_string(),
    }
}

/// A reqwest error and its causes (the URL is the registry's, and holds no secret).
fn describe(e: reqwest::Error) -> String {
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

impl Registry {
    /// A registry from `http://host:port` (plain HTTP, only when written so),
    /// `https://host:port` or `host:port` (HTTPS). `ca_file` adds PEM CA certificates to the
    /// system roots.
    pub fn parse(spec: &str, ca_file: Option<&Path>) -> Result<Registry> {
        let bad = |why: &str| Error::Rule(format!("registry {spec:?}: {why}"));
        let (scheme, rest) = if let Some(r) = spec.strip_prefix("http://") {
            ("http", r)
        } else if let Some(r) = spec.strip_prefix("https://") {
            ("https", r)
        } else if spec.contains("://") {
            return Err(bad("only http:// and https:// are supported"));
        } else {
            ("https", spec)
        };
        let name = rest.strip_suffix('/').unwrap_or(rest);
        if name.is_empty() {
            return Err(bad("no host"));
        }
        if name.contains(['/', '@', '?', '#']) || name.chars().any(char::is_whitespace) {
            return Err(bad(
                "expected host[:port] (no path, no credentials in the spec)",
            ));
        }
        if let Some((_, port)) = name.rsplit_once(':')
            && !name.ends_with(']')
            && port.parse::<u16>().is_err()
        {
            return Err(bad("the port is not a number"));
        }
        if reqwest::Url::parse(&format!("{scheme}://{name}/")).is_err() {
            return Err(bad("expected host[:port]"));
        }
        let mut certs = Vec::new();
        if let Some(ca) = ca_file {
            let pem = std::fs::read_to_string(ca).map_err(|e| Error::io(ca, e))?;
            let blocks = pem_blocks(&pem);
            if blocks.is_empty() {
                return Err(bad(&format!(
                    "CA file {} holds no PEM certificate",
                    ca.display()
                )));
            }
            for b in blocks {
                certs.push(
                    reqwest::Certificate::from_pem(b.as_bytes())
                        .map_err(|e| bad(&format!("CA file {}: {e}", ca.display())))?,
                );
            }
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("tenet-release/", env!("CARGO_PKG_VERSION")))
            .tls_certs_merge(certs)
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| bad(&format!("client: {e}")))?;
        Ok(Registry {
            name: name.to_string(),
            scheme,
            http,
            auth: Arc::new(Auth::new(name, scheme == "https", None)),
            known: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The same registry, accessed with these credentials (HTTP Basic, or to obtain tokens
    /// from the registry's token realm).
    pub fn with_credentials(mut self, username: String, password: String) -> Registry {
        self.auth = Arc::new(Auth::new(
            &self.name,
            self.scheme == "https",
            Some(Credentials::new(username, password)),
        ));
        self
    }

    /// `host:port`.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::Registry {
            registry: self.name.clone(),
            message: message.into(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}://{}/v2/{path}", self.scheme, self.name)
    }

    /// Sends the request `make` builds, with the authorization `scope` needs; on a 401 that
    /// teaches something (the scheme, a fresh token), once more.
    async fn send(
        &self,
        what: &str,
        scope: &Scope,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut retried = false;
        loop {
            let mut req = make();
            let header = self.auth.authorization(&self.http, scope).await?;
            let sent = header.is_some();
            if let Some(h) = header {
                req = req.header(AUTHORIZATION, h);
            }
            let res = req
                .send()
                .await
                .map_err(|e| self.error(format!("{what}: {}", describe(e))))?;
            if res.status() == StatusCode::UNAUTHORIZED
                && !retried
                && self
                    .auth
                    .challenged(res.headers().get(WWW_AUTHENTICATE), scope, sent)
                    .await?
            {
                retried = true;
                continue;
            }
            return Ok(res);
        }
    }

    async fn status_error(&self, what: &str, scope: &Scope, res: reqwest::Response) -> Error {
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        let mut message = if body.trim().is_empty() {
            format!("{what}: HTTP {status}")
        } else {
            format!("{what}: HTTP {status}: {}", snippet(&body))
        };
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            message.push_str(&format!(" ({})", self.auth.refusal_hint(scope).await));
        }
        self.error(message)
    }

    fn remember(&self, digest: &str, repo: &str) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() < MAX_KNOWN_BLOBS {
            known
                .entry(digest.to_string())
                .or_insert_with(|| repo.to_string());
        }
    }

    /// Pushes `image` into repository `image.name` under each of `tags` (or `image.tag` if
    /// `tags` is empty); the manifests of an image index go first, each under its tag of
    /// `child_tags` (or by digest alone when `child_tags` is empty). Blobs the repository
    /// has are skipped (a re-run resumes), blobs another repository of this registry was
    /// seen holding are mounted, the others stream from the release, [`PUSH_CONCURRENCY`]
    /// at a time. Each tag's digest is then checked to be `image.digest`.
    pub async fn push(
        &self,
        image: &LocalImage,
        tags: &[String],
        child_tags: &[String],
        progress: &dyn Progress,
    ) -> Result<PushReport> {
        let own_tag = [image.tag.clone()];
        let tags = if tags.is_empty() { &own_tag[..] } else { tags };
        let detail = format!("{} to {}", image.reference(), self.name);
        progress.step(Step::PushingImages, &detail);

        let blobs = image.blobs();
        let total: u64 = blobs.iter().map(|b| b.size).sum();
        let done = Arc::new(AtomicU64::new(0));
        let work = stream::iter(blobs)
            .map(|blob| {
                let done = done.clone();
                async move { self.ensure_blob(&image.name, blob, done).await }
            })
            .buffer_unordered(PUSH_CONCURRENCY)
            .try_collect::<Vec<BlobOutcome>>();
        tokio::pin!(work);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let outcomes = loop {
            tokio::select! {
                r = &mut work => break r?,
                _ = tick.tick() => {
                    let d = done.load(Ordering::Relaxed);
                    progress.percent(Step::PushingImages, percent_of(d, total), &detail);
                    progress.bytes(Step::PushingImages, d.min(total), Some(total));
                }
            }
        };
        let mut report = PushReport::default();
        for outcome in outcomes {
            match outcome {
                BlobOutcome::Uploaded(size) => {
                    report.blobs_pushed += 1;
                    report.bytes_pushed += size;
                }
                BlobOutcome::Mounted => report.blobs_mounted += 1,
                BlobOutcome::Present => report.blobs_skipped += 1,
            }
        }
        progress.bytes(Step::PushingImages, total, Some(total));

        for (i, child) in image.children().iter().enumerate() {
            let reference = child_tags.get(i).unwrap_or(&child.digest);
            self.put_platform_manifest(&image.name, reference, child)
                .await?;
        }
        for tag in tags {
            self.put_manifest(&image.name, tag, &image.media_type, &image.manifest)
                .await?;
            self.expect_digest(&image.name, tag, &image.digest).await?;
        }
        progress.percent(Step::PushingImages, 100, &detail);
        progress.info(&format!(
            "{}: pushed {} ({} blobs pushed, {} already present, {} mounted)",
            self.name,
            image.reference(),
            report.blobs_pushed,
            report.blobs_skipped,
            report.blobs_mounted
        ));
        Ok(report)
    }

    async fn put_platform_manifest(
        &self,
        repo: &str,
        reference: &str,
        child: &PlatformManifest,
    ) -> Result<()> {
        let answered = self
            .put_manifest(repo, reference, &child.media_type, &child.manifest)
            .await?;
        match answered {
            Some(d) if d == child.digest => Ok(()),
            Some(d) => Err(self.error(format!(
                "{repo}:{reference}: the registry stored {d}, expected {}",
                child.digest
            ))),
            None => self.expect_digest(repo, reference, &child.digest).await,
        }
    }

    /// Checks that `repo:reference` resolves to `digest`.
    async fn expect_digest(&self, repo: &str, reference: &str, digest: &str) -> Result<()> {
        match self.manifest_digest(repo, reference).await? {
            Some(d) if d == digest => Ok(()),
            Some(d) => Err(self.error(format!(
                "{repo}:{reference} points at {d} after the push, expected {digest}"
            ))),
            None => Err(self.error(format!(
                "{repo}:{reference} is missing right after its push"
            ))),
        }
    }

    /// PUTs manifest bytes under `reference` (a tag or a digest); returns the digest the
    /// registry answered with, if it said.
    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Option<String>> {
        let what = format!("push of manifest {repo}:{reference}");
        let content_type = HeaderValue::from_str(media_type)
            .map_err(|_| self.error(format!("{what}: bad media type {media_type:?}")))?;
        let url = self.url(&format!("{repo}/manifests/{reference}"));
        let scope = Scope::push(repo);
        let body = bytes::Bytes::copy_from_slice(bytes);
        let res = self
            .send(&what, &scope, || {
                self.http
                    .put(&url)
                    .header(CONTENT_TYPE, content_type.clone())
                    .body(body.clone())
            })
            .await?;
        if res.status() != StatusCode::CREATED && !res.status().is_success() {
            return Err(self.status_error(&what, &scope, res).await);
        }
        Ok(res
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }

    /// Makes sure the repository has `blob`: present, mounted, or uploaded.
    async fn ensure_blob(
        &self,
        repo: &str,
        blob: &Blob,
        done: Arc<AtomicU64>,
    ) -> Result<BlobOutcome> {
        if self.blob_exists(repo, &blob.digest).await? {
            done.fetch_add(blob.size, Ordering::Relaxed);
            self.remember(&blob.digest, repo);
            return Ok(BlobOutcome::Present);
        }
        let from = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&blob.digest)
            .filter(|r| r.as_str() != repo)
            .cloned();
        let outcome = self.upload(repo, blob, done, from).await?;
        self.remember(&blob.digest, repo);
        Ok(outcome)
    }

    /// Starts an upload session (mounting from `from` when given) and, unless the mount
    /// succeeded, streams the blob into it with one PUT.
    async fn upload(
        &self,
        repo: &str,
        blob: &Blob,
        done: Arc<AtomicU64>,
        from: Option<String>,
    ) -> Result<BlobOutcome> {
        let what = format!("push of blob {} to {repo}", blob.digest);
        let mut url = reqwest::Url::parse(&self.url(&format!("{repo}/blobs/uploads/")))
            .map_err(|e| self.error(format!("{what}: {e}")))?;
        let mut scope = Scope::push(repo);
        if let Some(src) = &from {
            url.query_pairs_mut()
                .append_pair("mount", &blob.digest)
                .append_pair("from", src);
            scope = scope.and_pull(src);
        }
        let res = self
            .send(&what, &scope, || {
                self.http.post(url.clone()).header(CONTENT_LENGTH, 0)
            })
            .await?;
        let location = match res.status() {
            StatusCode::CREATED if from.is_some() => {
                done.fetch_add(blob.size, Ordering::Relaxed);
                return Ok(BlobOutcome::Mounted);
            }
            StatusCode::ACCEPTED => res
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| self.error(format!("{what}: no Location in the 202 answer")))?,
            // The source may be out of reach for these credentials: a plain upload then.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if from.is_some() => {
                return Box::pin(self.upload(repo, blob, done, None)).await;
            }
            _ => return Err(self.status_error(&what, &scope, res).await),
        };
        let base =
            reqwest::Url::parse(&self.url("")).map_err(|e| self.error(format!("{what}: {e}")))?;
        let mut put = base
            .join(&location)
            .map_err(|e| self.error(format!("{what}: bad upload location: {e}")))?;
        if put.origin() != base.origin() {
            return Err(self.error(format!(
                "{what}: the upload location is on another host ({}): refused",
                put.origin().ascii_serialization()
            )));
        }
        put.query_pairs_mut().append_pair("digest", &blob.digest);
        let scope = Scope::push(repo);
        let sent_before = done.load(Ordering::Relaxed);
        let res = self
            .send(&what, &scope, || {
                // A retry streams the blob again from its start.
                done.store(sent_before, Ordering::Relaxed);
                self.http
                    .put(put.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, blob.size)
                    .body(reqwest::Body::wrap_stream(blob_stream(
                        blob.clone(),
                        done.clone(),
                    )))
            })
            .await?;
        if res.status() != StatusCode::CREATED && !res.status().is_success() {
            return Err(self.status_error(&what, &scope, res).await);
        }
        Ok(BlobOutcome::Uploaded(blob.size))
    }

    /// The digest `repo:tag` (or `repo@digest`) points at, from a HEAD accepting every
    /// manifest media type; `None` if the registry answers 404.
    pub async fn manifest_digest(&self, repo: &str, tag: &str) -> Result<Option<String>> {
        let what = format!("HEAD manifest {repo}:{tag}");
        let url = self.url(&format!("{repo}/manifests/{tag}"));
        let scope = Scope::pull(repo);
        let res = self
            .send(&what, &scope, || {
                self.http
                    .head(&url)
                    .header(ACCEPT, MANIFEST_MEDIA_TYPES.join(", "))
            })
            .await?;
        match res.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => match res.headers().get("Docker-Content-Digest") {
                Some(d) => Ok(Some(
                    d.to_str()
                        .map_err(|_| self.error(format!("{what}: unreadable digest header")))?
                        .to_string(),
                )),
                None => self.manifest_digest_by_get(repo, tag).await.map(Some),
            },
            _ => Err(self.status_error(&what, &scope, res).await),
        }
    }

    /// For registries that do not send `Docker-Content-Digest`: the digest of the body.
    async fn manifest_digest_by_get(&self, repo: &str, tag: &str) -> Result<String> {
        let what = format!("GET manifest {repo}:{tag}");
        let url = self.url(&format!("{repo}/manifests/{tag}"));
        let scope = Scope::pull(repo);
        let res = self
            .send(&what, &scope, || {
                self.http
                    .get(&url)
                    .header(ACCEPT, MANIFEST_MEDIA_TYPES.join(", "))
            })
            .await?;
        if !res.status().is_success() {
            return Err(self.status_error(&what, &scope, res).await);
        }
        let body = res
            .bytes()
            .await
            .map_err(|e| self.error(format!("{what}: {}", describe(e))))?;
        Ok(sha256_digest(&body))
    }

    /// Whether the registry has the blob `digest` in `repo`.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let what = format!("HEAD blob {digest} in {repo}");
        let url = self.url(&format!("{repo}/blobs/{digest}"));
        let scope = Scope::pull(repo);
        let res = self.send(&what, &scope, || self.http.head(&url)).await?;
        match res.status() {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            _ => Err(self.status_error(&what, &scope, res).await),
        }
    }

    /// The tags of `repo` (empty if the repository does not exist), sorted.
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let what = format!("tags of {repo}");
        let scope = Scope::pull(repo);
        let mut url = self.url(&format!("{repo}/tags/list?n=1000"));
        let mut out = Vec::new();
        // Follows `Link: <...>; rel="next"` pagination, at most 1000 pages.
        for _ in 0..1000 {
            let res = self.send(&what, &scope, || self.http.get(&url)).await?;
            if res.status() == StatusCode::NOT_FOUND {
                return Ok(Vec::new());
            }
            if !res.status().is_success() {
                return Err(self.status_error(&what, &scope, res).await);
            }
            let next = res
                .headers()
                .get("Link")
                .and_then(|l| l.to_str().ok())
                .and_then(|l| {
                    let start = l.find('<')? + 1;
                    let end = l.find('>')?;
                    l.contains("rel=\"next\"")
                        .then(|| l[start..end].to_string())
                });
            let list: TagList = res
                .json()
                .await
                .map_err(|e| self.error(format!("{what}: {}", describe(e))))?;
            out.extend(list.tags.unwrap_or_default());
            match next {
                Some(n) if n.starts_with('/') => {
                    url = format!("{}://{}{n}", self.scheme, self.name);
                }
                Some(n) if n.starts_with(&format!("{}://{}/", self.scheme, self.name)) => {
                    url = n;
                }
                Some(n) => {
                    return Err(self.error(format!("{what}: refusing next page at {n}")));
                }
                None => break,
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Removes the tag `repo:tag`, leaving the manifest it pointed at (and every other tag
    /// pointing at that manifest) in place. Returns whether the tag existed.
    ///
    /// Distribution 2.8 cannot delete a tag alone, and deleting a manifest by digest removes
    /// every tag pointing at it, which would break other releases sharing that manifest. So
    /// the tag is first moved onto a unique "tombstone" manifest (a config blob naming the
    /// tag and a nonce, no layers), and the tombstone is deleted by digest: the tag goes with
    /// it, and the shared manifest stays (garbage collection removes it once untagged). An
    /// interrupted untag leaves the tag on a tombstone, which the next untag removes.
    pub async fn untag(&self, repo: &str, tag: &str) -> Result<bool> {
        if self.manifest_digest(repo, tag).await?.is_none() {
            return Ok(false);
        }
        let nonce = format!(
            "{}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
            NONCE.fetch_add(1, Ordering::Relaxed)
        );
        let config = Blob::from_bytes(
            serde_json::to_vec(&serde_json::json!({
                "tenet.tombstone": format!("{repo}:{tag}"),
                "nonce": nonce,
            }))
            .expect("JSON"),
            OCI_CONFIG,
        );
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
            "layers": [],
        }))
        .expect("JSON");
        let digest = sha256_digest(&manifest);
        let tombstone = LocalImage {
            name: repo.to_string(),
            tag: tag.to_string(),
            digest: digest.clone(),
            manifest: manifest.clone(),
            media_type: OCI_MANIFEST.to_string(),
            platforms: vec![PlatformManifest {
                digest,
                media_type: OCI_MANIFEST.to_string(),
                manifest,
                platform: None,
                config,
                layers: Vec::new(),
            }],
        };
        self.push(
            &tombstone,
            &[tag.to_string()],
            &[],
            &crate::progress::NoProgress,
        )
        .await?;
        self.delete_manifest(repo, &tombstone.digest).await?;
        if let Some(d) = self.manifest_digest(repo, tag).await? {
            return Err(self.error(format!(
                "{repo}:{tag} still points at {d} after deleting its tombstone"
            )));
        }
        Ok(true)
    }

    /// Deletes the manifest `digest` from `repo` (and with it every tag pointing at it).
    /// Returns whether it existed.
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> Result<bool> {
        let what = format!("DELETE manifest {repo}@{digest}");
        let url = self.url(&format!("{repo}/manifests/{digest}"));
        let scope = Scope::delete(repo);
        let res = self
            .send(&what, &scope, || {
                self.http
                    .delete(&url)
                    .header(ACCEPT, MANIFEST_MEDIA_TYPES.join(", "))
            })
            .await?;
        match res.status() {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            StatusCode::METHOD_NOT_ALLOWED => Err(self.error(format!(
                "{what}: HTTP 405: deletes are disabled (storage.delete.enabled: true)"
            ))),
            _ => Err(self.status_error(&what, &scope, res).await),
        }
    }
}

static NONCE: AtomicU64 = AtomicU64::new(0);

/// The blob's bytes as a stream of chunks, read from its location as the upload goes,
/// counting them into `done`.
fn blob_stream(
    blob: Blob,
    done: Arc<AtomicU64>,
) -> impl Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    enum State {
        Start(Blob),
        Reading(tokio::io::Take<tokio::fs::File>, u64),
        Done,
    }
    stream::unfold(State::Start(blob), move |state| {
        let done = done.clone();
        async move {
            let (mut reader, remaining) = match state {
                State::Done => return None,
                State::Start(blob) => match blob.location {
                    BlobLocation::Bytes(b) => {
                        done.fetch_add(b.len() as u64, Ordering::Relaxed);
                        return Some((Ok(bytes::Bytes::from(b)), State::Done));
                    }
                    BlobLocation::File(ref path) => match tokio::fs::File::open(path).await {
                        Ok(f) => (f.take(blob.size), blob.size),
                        Err(e) => return Some((Err(e), State::Done)),
                    },
                    BlobLocation::TarEntry { ref tar, offset } => {
                        let opened = async {
                            let mut f = tokio::fs::File::open(tar).await?;
                            f.seek(std::io::SeekFrom::Start(offset)).await?;
                            Ok::<_, std::io::Error>(f)
                        };
                        match opened.await {
                            Ok(f) => (f.take(blob.size), blob.size),
                            Err(e) => return Some((Err(e), State::Done)),
                        }
                    }
                },
                State::Reading(r, remaining) => (r, remaining),
            };
            if remaining == 0 {
                return None;
            }
            let mut buf = vec![0u8; READ_CHUNK.min(remaining as usize)];
            match reader.read(&mut buf).await {
                Ok(0) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the blob's file is shorter than its size",
                    )),
                    State::Done,
                )),
                Ok(n) => {
                    buf.truncate(n);
                    done.fetch_add(n as u64, Ordering::Relaxed);
                    Some((
                        Ok(bytes::Bytes::from(buf)),
                        State::Reading(reader, remaining - n as u64),
                    ))
                }
                Err(e) => Some((Err(e), State::Done)),
            }
        }
    })
}

/// Checks every expected tag on every registry (HEADs, [`CHECK_CONCURRENCY`] at once).
/// Returns what is missing or wrong where, one message each, in registry then image order
/// (`127.0.0.1:5001: calico/cni:v3.26.1 missing`); empty means all is as expected. A
/// registry that cannot be reached yields one message per image, not an error.
pub async fn check_images(
    registries: &[Registry],
    expected: &[ExpectedImage],
) -> Result<Vec<String>> {
    let jobs = registries.iter().enumerate().flat_map(|(ri, r)| {
        expected
            .iter()
            .enumerate()
            .map(move |(ei, e)| (ri, r, ei, e))
    });
    let mut found: Vec<(usize, usize, Option<String>)> = stream::iter(jobs)
        .map(|(ri, r, ei, e)| async move {
            let at = format!("{}: {}:{}", r.name(), e.repo, e.tag);
            let msg = match r.manifest_digest(&e.repo, &e.tag).await {
                Ok(None) => Some(format!("{at} missing")),
                Ok(Some(d)) if d == e.digest => None,
                Ok(Some(d)) => Some(format!("{at} points at {d}, expected {}", e.digest)),
                Err(err) => Some(format!("{at}: {err}")),
            };
            (ri, ei, msg)
        })
        .buffer_unordered(CHECK_CONCURRENCY)
        .collect()
        .await;
    found.sort_by_key(|(ri, ei, _)| (*ri, *ei));
    Ok(found.into_iter().filter_map(|(_, _, m)| m).collect())
}

/// Runs a registry's garbage collection `command` (e.g. `docker-registry garbage-collect
/// --delete-untagged /etc/docker/registry/config.yml`) and returns its output (stdout then
/// stderr). The error names the command and the tail of its stderr.
pub fn garbage_collect(command: &[String]) -> Result<String> {
    let Some((program, args)) = command.split_first() else {
        return Err(Error::Rule("garbage collection command is empty".into()));
    };
    let line = command.join(" ");
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::Command {
            command: line.clone(),
            message: e.to_string(),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let all = if stderr.trim().is_empty() {
            &stdout
        } else {
            &stderr
        };
        let lines: Vec<&str> = all.lines().collect();
        return Err(Error::Command {
            command: line,
            message: format!(
                "{}: {}",
                out.status,
                lines[lines.len().saturating_sub(5)..].join("\n")
            ),
        });
    }
    Ok(format!("{stdout}{stderr}"))
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::load_image;
    use crate::manifest::ImageEntry;
    use crate::testing::{
        RegistryProcess, TestImage, TokenServer, write_docker_archive, write_oci_index_layout,
        write_oci_layout,
    };
    use std::sync::Mutex;

    /// Records what a push reports.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(Step, u8)>>);
    impl Progress for Recorder {
        fn step(&self, _step: Step, _detail: &str) {}
        fn percent(&self, step: Step, percent: u8, _detail: &str) {
            self.0.lock().unwrap().push((step, percent));
        }
        fn info(&self, _message: &str) {}
    }

    fn skopeo(args: &[&str]) -> Vec<u8> {
        let out = crate::testing::tool("skopeo").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "skopeo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A release dir with `team/app:v1` as an OCI layout and `team/app:v2` as a
    /// docker-archive; both share the layer "shared" (blobs are per repository in a
    /// registry, so sharing is between images of one repository).
    fn release() -> (tempfile::TempDir, LocalImage, LocalImage) {
        let dir = tempfile::tempdir().unwrap();
        let a = TestImage::new("app", &[b"shared", b"app only"]);
        let b = TestImage::new("arch", &[b"shared", b"arch only"]);
        write_oci_layout(&dir.path().join("images/app"), &[(&a, "v1")]).unwrap();
        write_docker_archive(&dir.path().join("images/app-v2.tar"), &b, "team/app:v2").unwrap();
        let a = load_image(
            dir.path(),
            &ImageEntry {
                name: "team/app".into(),
                tag: "v1".into(),
                path: "images/app".into(),
            },
        )
        .unwrap();
        let b = load_image(
            dir.path(),
            &ImageEntry {
                name: "team/app".into(),
                tag: "v2".into(),
                path: "images/app-v2.tar".into(),
            },
        )
        .unwrap();
        (dir, a, b)
    }

    #[test]
    fn specs_parse() {
        let r = Registry::parse("http://127.0.0.1:5001", None).unwrap();
        assert_eq!((r.name(), r.scheme), ("127.0.0.1:5001", "http"));
        let r = Registry::parse("lir.example:5000", None).unwrap();
        assert_eq!((r.name(), r.scheme), ("lir.example:5000", "https"));
        let r = Registry::parse("https://lir.example/", None).unwrap();
        assert_eq!((r.name(), r.scheme), ("lir.example", "https"));
        for bad in ["", "ftp://h", "h:1/path", "u:p@h:1", "h:port", "http://"] {
            assert!(Registry::parse(bad, None).is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let err = Registry::parse("h:1", Some(&ca)).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[tokio::test]
    async fn push_resumes_shares_layers_and_agrees_with_skopeo() {
        let reg = RegistryProcess::start().unwrap();
        let r = Registry::parse(&reg.url(), None).unwrap();
        let (_dir, a, b) = release();
        let tags = vec!["v1".to_string(), "9999.0-v1".to_string()];

        let progress = Recorder::default();
        let first = r.push(&a, &tags, &[], &progress).await.unwrap();
        assert_eq!(
            first,
            PushReport {
                blobs_pushed: 3,
                blobs_skipped: 0,
                blobs_mounted: 0,
                bytes_pushed: a.blobs_size()
            }
        );
        assert_eq!(
            progress.0.lock().unwrap().last(),
            Some(&(Step::PushingImages, 100))
        );

        // Independently: skopeo sees our exact manifest under both tags.
        for tag in &tags {
            let raw = skopeo(&[
                "inspect",
                "--tls-verify=false",
                "--raw",
                &format!("docker://{}/team/app:{tag}", reg.addr()),
            ]);
            assert_eq!(raw, a.manifest);
            assert_eq!(sha256_digest(&raw), a.digest);
        }
        let listed: serde_json::Value = serde_json::from_slice(&skopeo(&[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{}/team/app", reg.addr()),
        ]))
        .unwrap();
        let mut skopeo_tags: Vec<String> = serde_json::from_value(listed["Tags"].clone()).unwrap();
        skopeo_tags.sort();
        assert_eq!(skopeo_tags, vec!["9999.0-v1".to_string(), "v1".to_string()]);
        assert_eq!(r.tags("team/app").await.unwrap(), skopeo_tags);
        assert!(r.tags("team/none").await.unwrap().is_empty());

        // A second push uploads nothing.
        let second = r.push(&a, &tags, &[], &crate::NoProgress).await.unwrap();
        assert_eq!(
            second,
            PushReport {
                blobs_pushed: 0,
                blobs_skipped: 3,
                blobs_mounted: 0,
                bytes_pushed: 0
            }
        );

        // The docker-archive image shares the layer "shared": it is not pushed again.
        let third = r.push(&b, &[], &[], &crate::NoProgress).await.unwrap();
        assert_eq!((third.blobs_pushed, third.blobs_skipped), (2, 1));
        let raw = skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{}/team/app:v2", reg.addr()),
        ]);
        assert_eq!(sha256_digest(&raw), b.digest);
        // skopeo can read the config through our manifest (layers and config are sound).
        let inspect: serde_json::Value = serde_json::from_slice(&skopeo(&[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/team/app:v2", reg.addr()),
        ]))
        .unwrap();
        assert_eq!(inspect["Labels"]["test.image"], "arch");
        assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn untag_keeps_shared_manifests_and_gc_removes_only_unique_blobs() {
        let reg = RegistryProcess::start().unwrap();
        let r = Registry::parse(&reg.url(), None).unwrap();
        let (_dir, a, b) = release();
        // Two releases share v1's manifest; release r1 also has v2 (sharing a layer).
        r.push(
            &a,
            &["r1-v1".into(), "r2-v1".into()],
            &[],
            &crate::NoProgress,
        )
        .await
        .unwrap();
        r.push(&b, &["r1-v2".into()], &[], &crate::NoProgress)
            .await
            .unwrap();

        assert!(r.untag("team/app", "r1-v1").await.unwrap());
        assert_eq!(r.manifest_digest("team/app", "r1-v1").await.unwrap(), None);
        assert_eq!(
            r.manifest_digest("team/app", "r2-v1").await.unwrap(),
            Some(a.digest.clone())
        );
        assert_eq!(
            r.tags("team/app").await.unwrap(),
            vec!["r1-v2".to_string(), "r2-v1".to_string()]
        );
        assert!(!r.untag("team/app", "r1-v1").await.unwrap());
        // The shared manifest is still reachable by digest too.
        assert_eq!(
            r.manifest_digest("team/app", &a.digest).await.unwrap(),
            Some(a.digest.clone())
        );

        // Removing release r1's own image: untag, delete its manifest, collect garbage.
        assert!(r.untag("team/app", "r1-v2").await.unwrap());
        assert!(r.delete_manifest("team/app", &b.digest).await.unwrap());
        assert!(!r.delete_manifest("team/app", &b.digest).await.unwrap());
        for blob in b.blobs() {
            assert!(r.blob_exists("team/app", &blob.digest).await.unwrap());
        }
        let out = garbage_collect(&reg.gc_command()).unwrap();
        assert!(out.contains("blob eligible for deletion"), "{out}");

        let v2_only = &b.platforms[0].layers[1].digest;
        assert!(!r.blob_exists("team/app", v2_only).await.unwrap());
        assert!(
            !r.blob_exists("team/app", &b.platforms[0].config.digest)
                .await
                .unwrap()
        );
        for blob in a.blobs() {
            assert!(
                r.blob_exists("team/app", &blob.digest).await.unwrap(),
                "{}",
                blob.digest
            );
        }
        // The shared layer stays (app still uses it) and app is still whole.
        assert_eq!(
            b.platforms[0].layers[0].digest,
            a.platforms[0].layers[0].digest
        );
        let inspect: serde_json::Value = serde_json::from_slice(&skopeo(&[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/team/app:r2-v1", reg.addr()),
        ]))
        .unwrap();
        assert_eq!(inspect["Labels"]["test.image"], "app");
    }

    #[tokio::test]
    async fn check_images_reports_what_is_missing_or_wrong_where() {
        let reg = RegistryProcess::start().unwrap();
        let empty = RegistryProcess::start().unwrap();
        let r = Registry::parse(&reg.url(), None).unwrap();
        let e = Registry::parse(&empty.url(), None).unwrap();
        let (_dir, a, b) = release();
        r.push(&a, &[], &[], &crate::NoProgress).await.unwrap();
        r.push(&b, &[], &[], &crate::NoProgress).await.unwrap();
        let expect = |repo: &str, tag: &str, digest: &str| ExpectedImage {
            repo: repo.into(),
            tag: tag.into(),
            digest: digest.into(),
        };
        let expected = [
            expect("team/app", "v1", &a.digest),
            expect("team/app", "v2", &a.digest),
            expect("team/app", "v3", &a.digest),
        ];
        assert!(
            check_images(std::slice::from_ref(&r), &expected[..1])
                .await
                .unwrap()
                .is_empty()
        );
        let problems = check_images(&[r.clone(), e.clone()], &expected)
            .await
            .unwrap();
        assert_eq!(
            problems,
            vec![
                format!(
                    "{}: team/app:v2 points at {}, expected {}",
                    r.name(),
                    b.digest,
                    a.digest
                ),
                format!("{}: team/app:v3 missing", r.name()),
                format!("{}: team/app:v1 missing", e.name()),
                format!("{}: team/app:v2 missing", e.name()),
                format!("{}: team/app:v3 missing", e.name()),
            ]
        );

        // Registry errors name the registry and the HTTP status and body.
        let err = r
            .delete_manifest("team/app", "sha256:abc")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("registry {}: DELETE manifest", r.name())),
            "{err}"
        );
        assert!(err.contains("HTTP 400"), "{err}");

        // An unreachable registry is named in the message.
        let addr = empty.addr();
        drop(empty);
        let problems = check_images(&[e], &expected[..1]).await.unwrap();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with(&format!("{addr}: team/app:v1: registry {addr}: HEAD")),
            "{problems:?}"
        );
    }

    fn image_at(dir: &Path, name: &str, tag: &str, path: &str) -> LocalImage {
        load_image(
            dir,
            &ImageEntry {
                name: name.into(),
                tag: tag.into(),
                path: path.into(),
            },
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_multi_platform_index_is_pushed_whole_with_tagged_children() {
        let reg = RegistryProcess::start().unwrap();
        let r = Registry::parse(&reg.url(), None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let amd = TestImage::for_platform("multi", "amd64", &[b"base", b"amd64 bits"]);
        let arm = TestImage::for_platform("multi", "arm64", &[b"base", b"arm64 bits"]);
        let index = write_oci_index_layout(&dir.path().join("l"), &[&amd, &arm], "v1").unwrap();
        let img = image_at(dir.path(), "team/multi", "v1", "l");
        let child_tags = img.child_tags("9.0-v1");
        let report = r
            .push(
                &img,
                &["v1".into(), "9.0-v1".into()],
                &child_tags,
                &crate::NoProgress,
            )
            .await
            .unwrap();
        // Two configs and three layers (the base layer once).
        assert_eq!((report.blobs_pushed, report.blobs_skipped), (5, 0));
        // skopeo sees the index, byte for byte, with both platforms.
        let raw = skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{}/team/multi:9.0-v1", reg.addr()),
        ]);
        assert_eq!(raw, index);
        for (arch, image) in [("amd64", &amd), ("arm64", &arm)] {
            let v: serde_json::Value = serde_json::from_slice(&skopeo(&[
                "inspect",
                "--tls-verify=false",
                "--override-arch",
                arch,
                &format!("docker://{}/team/multi:v1", reg.addr()),
            ]))
            .unwrap();
            assert_eq!(v["Architecture"], arch);
            let layers: Vec<String> = image.layers.iter().map(|l| sha256_digest(l)).collect();
            assert_eq!(v["Layers"], serde_json::json!(layers));
        }
        // Each child under its own tag, so garbage collection of untagged manifests keeps it.
        assert_eq!(
            r.tags("team/multi").await.unwrap(),
            vec!["9.0-v1", "9.0-v1-linux-amd64", "9.0-v1-linux-arm64", "v1"]
        );
        assert_eq!(
            r.manifest_digest("team/multi", "9.0-v1-linux-arm64")
                .await
                .unwrap(),
            Some(arm.digest.clone())
        );
        let out = garbage_collect(&reg.gc_command()).unwrap();
        assert!(!out.contains("manifest eligible for deletion"), "{out}");
        let v: serde_json::Value = serde_json::from_slice(&skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--override-arch",
            "arm64",
            &format!("docker://{}/team/multi:v1", reg.addr()),
        ]))
        .unwrap();
        assert_eq!(v["Architecture"], "arm64");
        // A second push uploads nothing.
        let again = r
            .push(&img, &["v1".into()], &child_tags, &crate::NoProgress)
            .await
            .unwrap();
        assert_eq!((again.blobs_pushed, again.blobs_skipped), (0, 5));
    }

    #[tokio::test]
    async fn a_blob_another_repository_holds_is_mounted_not_uploaded() {
        let reg = RegistryProcess::start().unwrap();
        let r = Registry::parse(&reg.url(), None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let a = TestImage::new("a", &[b"a big shared base layer", b"a only"]);
        let b = TestImage::new("b", &[b"a big shared base layer", b"b only"]);
        write_oci_layout(&dir.path().join("a"), &[(&a, "v1")]).unwrap();
        write_oci_layout(&dir.path().join("b"), &[(&b, "v1")]).unwrap();
        let a = image_at(dir.path(), "team/a", "v1", "a");
        let b = image_at(dir.path(), "team/b", "v1", "b");
        r.push(&a, &[], &[], &crate::NoProgress).await.unwrap();
        let uploads = reg.blob_uploads().len();
        assert_eq!(uploads, 3, "{:#?}", reg.access_log());
        let report = r.push(&b, &[], &[], &crate::NoProgress).await.unwrap();
        assert_eq!(
            (
                report.blobs_pushed,
                report.blobs_mounted,
                report.blobs_skipped
            ),
            (2, 1, 0)
        );
        // The registry's own log: one mount of the shared layer, from team/a, into team/b,
        // and only b's own config and layer uploaded.
        let shared = &b.platforms[0].layers[0].digest;
        let mounts = reg.blob_mounts();
        assert_eq!(mounts.len(), 1, "{mounts:#?}");
        assert!(
            mounts[0].contains("/v2/team/b/blobs/uploads/")
                && mounts[0].contains(&shared["sha256:".len()..])
                && mounts[0].contains("from=team%2Fa"),
            "{mounts:#?}"
        );
        let new_uploads = reg.blob_uploads()[uploads..].to_vec();
        assert_eq!(new_uploads.len(), 2, "{new_uploads:#?}");
        assert!(new_uploads.iter().all(|l| !l.contains(shared.as_str())));
        assert!(r.blob_exists("team/b", shared).await.unwrap());
        // A mount from a repository that lacks the blob falls back to an upload.
        let fresh = Registry::parse(&reg.url(), None).unwrap();
        fresh.remember(&a.platforms[0].layers[1].digest, "team/none");
        let c = TestImage::new("c", &[b"a only"]);
        write_oci_layout(&dir.path().join("c"), &[(&c, "v1")]).unwrap();
        let c = image_at(dir.path(), "team/c", "v1", "c");
        let report = fresh.push(&c, &[], &[], &crate::NoProgress).await.unwrap();
        assert_eq!((report.blobs_pushed, report.blobs_mounted), (2, 0));
    }

    #[tokio::test]
    async fn a_token_registry_works_with_credentials_and_says_why_without() {
        let token = TokenServer::start("lir", "s3cret-pw").unwrap();
        let reg = RegistryProcess::start_with_token(&token).unwrap();
        let (_dir, a, b) = release();

        // Anonymous: the realm refuses, and the error says what to configure.
        let anon = Registry::parse(&reg.url(), None).unwrap();
        let err = anon
            .push(&a, &[], &[], &crate::NoProgress)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&reg.addr()) && err.contains("set username and password_file"),
            "{err}"
        );
        // A wrong password: refused, naming the user, never the password.
        let wrong = Registry::parse(&reg.url(), None)
            .unwrap()
            .with_credentials("lir".into(), "not-it".into());
        let err = wrong
            .manifest_digest("team/app", "v1")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("refused the credentials of user lir"), "{err}");
        assert!(!err.contains("not-it"), "{err}");

        // The right credentials: push (and its HEAD checks), tags, untag, all through tokens.
        let r = Registry::parse(&reg.url(), None)
            .unwrap()
            .with_credentials("lir".into(), "s3cret-pw".into());
        r.push(&a, &["v1".into(), "9.0-v1".into()], &[], &crate::NoProgress)
            .await
            .unwrap();
        r.push(&b, &["v2".into()], &[], &crate::NoProgress)
            .await
            .unwrap();
        assert_eq!(
            r.manifest_digest("team/app", "9.0-v1").await.unwrap(),
            Some(a.digest.clone())
        );
        assert_eq!(
            r.tags("team/app").await.unwrap(),
            vec!["9.0-v1", "v1", "v2"]
        );
        assert!(r.untag("team/app", "9.0-v1").await.unwrap());
        assert_eq!(r.manifest_digest("team/app", "9.0-v1").await.unwrap(), None);
        // Tokens were asked per scope and reused: far fewer token requests than registry
        // requests; the delete scope was asked for the untag.
        let requests = token.requests();
        assert!(requests.iter().all(|q| q.status != 200 || q.authenticated));
        assert!(
            requests
                .iter()
                .any(|q| q.scopes == ["repository:team/app:delete"]),
            "{requests:#?}"
        );
        let granted = requests.iter().filter(|q| q.status == 200).count();
        assert!(
            granted * 3 < reg.access_log().len(),
            "{granted} tokens for {} requests",
            reg.access_log().len()
        );
        // A mount between repositories asks one token for both.
        let c = TestImage::new("c", &[b"shared"]);
        let dir = tempfile::tempdir().unwrap();
        write_oci_layout(&dir.path().join("c"), &[(&c, "v1")]).unwrap();
        let c = image_at(dir.path(), "team/other", "v1", "c");
        let report = r.push(&c, &[], &[], &crate::NoProgress).await.unwrap();
        assert_eq!(report.blobs_mounted, 1, "{report:?}");
        assert!(
            token.requests().iter().any(|q| q.scopes
                == [
                    "repository:team/other:pull,push",
                    "repository:team/app:pull"
                ]),
            "{:#?}",
            token.requests()
        );
        // Confirmed by skopeo with the same credentials.
        let out = crate::testing::tool("skopeo")
            .args(["inspect", "--tls-verify=false", "--creds", "lir:s3cret-pw"])
            .arg(format!("docker://{}/team/app:v1", reg.addr()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn garbage_collection_errors_name_the_command() {
        let err = garbage_collect(&[
            "docker-registry".into(),
            "garbage-collect".into(),
            "/nonexistent/config.yml".into(),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("docker-registry garbage-collect /nonexistent/config.yml: exit status"),
            "{err}"
        );
        assert!(garbage_collect(&[]).is_err());
    }
}

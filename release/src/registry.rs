//! OCI registries: pushing a release's images (resuming: blobs already there are not pushed
//! again), checking that tags point at the expected manifests, removing tags without
//! touching manifests other tags share, and running a registry's garbage collection.
//!
//! Blob existence, blob upload and manifest upload go through `oci-client`; manifest HEAD,
//! tag listing and manifest DELETE (which `oci-client` does not offer, or does not report as
//! we need: the `Docker-Content-Digest` of a tag, 404 as "absent") go through a `reqwest`
//! client with the same TLS settings.
//!
//! Invariants:
//! - TLS is verified (system roots plus an optional CA file); plain HTTP only for a spec
//!   written `http://`.
//! - A push ends with a HEAD of every tag, whose `Docker-Content-Digest` must be the image's
//!   digest: a registry that rewrote the manifest is an error, not a silent success.
//! - [`Registry::untag`] never deletes a manifest another tag may point at (see there).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{Stream, StreamExt, TryStreamExt, stream};
use oci_client::Reference;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::error::{Error, Result};
use crate::image::{
    Blob, BlobLocation, LocalImage, MANIFEST_MEDIA_TYPES, OCI_CONFIG, OCI_MANIFEST, sha256_digest,
};
use crate::progress::{Progress, Step, percent_of};

/// Blobs uploaded at once by [`Registry::push`] (each streams from its file, so memory is
/// bounded by this times the read buffer).
pub const PUSH_CONCURRENCY: usize = 4;
/// HEAD requests in flight at once in [`check_images`].
pub const CHECK_CONCURRENCY: usize = 32;
const READ_CHUNK: usize = 1 << 20;

/// An OCI registry (distribution API v2), anonymous or with HTTP Basic credentials (the
/// distribution registry's `htpasswd` auth).
#[derive(Clone)]
pub struct Registry {
    name: String,
    scheme: &'static str,
    client: oci_client::Client,
    http: reqwest::Client,
    /// Username and password; the password never appears in errors, logs or `Debug`.
    credentials: Option<(String, String)>,
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
    /// Blobs the registry already had.
    pub blobs_skipped: usize,
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
        let mut oci_certs = Vec::new();
        let mut http_certs = Vec::new();
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
                http_certs.push(
                    reqwest::Certificate::from_pem(b.as_bytes())
                        .map_err(|e| bad(&format!("CA file {}: {e}", ca.display())))?,
                );
                oci_certs.push(Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: b.into_bytes(),
                });
            }
        }
        let config = ClientConfig {
            protocol: if scheme == "http" {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            // One PUT per blob, streamed from its file: no 4 MiB PATCH round trips.
            use_monolithic_push: true,
            extra_root_certificates: oci_certs,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(300)),
            ..Default::default()
        };
        let client =
            oci_client::Client::try_from(config).map_err(|e| bad(&format!("client: {e}")))?;
        let http = reqwest::Client::builder()
            .tls_certs_merge(http_certs)
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| bad(&format!("client: {e}")))?;
        Ok(Registry {
            name: name.to_string(),
            scheme,
            client,
            http,
            credentials: None,
        })
    }

    /// The same registry, accessed with HTTP Basic credentials.
    pub fn with_credentials(mut self, username: String, password: String) -> Registry {
        self.credentials = Some((username, password));
        self
    }

    fn oci_auth(&self) -> RegistryAuth {
        match &self.credentials {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
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

    fn oci_error(&self, what: &str, e: OciDistributionError) -> Error {
        let detail = match e {
            OciDistributionError::ServerError { code, message, .. } => {
                format!("HTTP {code}: {}", snippet(&message))
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                format!("{envelope}")
            }
            other => other.to_string(),
        };
        self.error(format!("{what}: {detail}"))
    }

    fn reference(&self, repo: &str, tag: &str) -> Reference {
        Reference::with_tag(self.name.clone(), repo.to_string(), tag.to_string())
    }

    fn url(&self, path: &str) -> String {
        format!("{}://{}/v2/{path}", self.scheme, self.name)
    }

    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let req = match &self.credentials {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        };
        req.send()
            .await
            .map_err(|e| self.error(format!("{what}: {e}")))
    }

    async fn status_error(&self, what: &str, res: reqwest::Response) -> Error {
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        if body.trim().is_empty() {
            self.error(format!("{what}: HTTP {status}"))
        } else {
            self.error(format!("{what}: HTTP {status}: {}", snippet(&body)))
        }
    }

    /// Pushes `image` into repository `image.name` under each of `tags` (or `image.tag` if
    /// `tags` is empty). Blobs the registry has are skipped (a re-run resumes); the others
    /// stream from the release, [`PUSH_CONCURRENCY`] at a time. Then the manifest bytes go
    /// under every tag, and each tag's digest is checked to be `image.digest`.
    pub async fn push(
        &self,
        image: &LocalImage,
        tags: &[String],
        progress: &dyn Progress,
    ) -> Result<PushReport> {
        let own_tag = [image.tag.clone()];
        let tags = if tags.is_empty() { &own_tag[..] } else { tags };
        let reference = self.reference(&image.name, &tags[0]);
        self.client
            .store_auth_if_needed(&self.name, &self.oci_auth())
            .await;
        let detail = format!("{} to {}", image.reference(), self.name);
        progress.step(Step::PushingImages, &detail);

        let blobs = image.blobs();
        let total: u64 = blobs.iter().map(|b| b.size).sum();
        let done = Arc::new(AtomicU64::new(0));
        let work = stream::iter(blobs)
            .map(|blob| {
                let done = done.clone();
                let reference = &reference;
                async move {
                    let exists = self
                        .client
                        .blob_exists(reference, &blob.digest)
                        .await
                        .map_err(|e| self.oci_error(&format!("HEAD blob {}", blob.digest), e))?;
                    if exists {
                        done.fetch_add(blob.size, Ordering::Relaxed);
                        return Ok::<_, Error>(None);
                    }
                    self.client
                        .push_blob_stream(
                            reference,
                            blob_stream(blob.clone(), done),
                            &blob.digest,
                            Some(blob.size),
                        )
                        .await
                        .map_err(|e| {
                            self.oci_error(
                                &format!("push of blob {} to {}", blob.digest, image.name),
                                e,
                            )
                        })?;
                    Ok(Some(blob.size))
                }
            })
            .buffer_unordered(PUSH_CONCURRENCY)
            .try_collect::<Vec<Option<u64>>>();
        tokio::pin!(work);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let outcomes = loop {
            tokio::select! {
                r = &mut work => break r?,
                _ = tick.tick() => progress.percent(
                    Step::PushingImages,
                    percent_of(done.load(Ordering::Relaxed), total),
                    &detail,
                ),
            }
        };
        let mut report = PushReport::default();
        for pushed in outcomes {
            match pushed {
                Some(size) => {
                    report.blobs_pushed += 1;
                    report.bytes_pushed += size;
                }
                None => report.blobs_skipped += 1,
            }
        }

        let content_type = HeaderValue::from_str(&image.media_type)
            .map_err(|_| self.error(format!("bad media type {:?}", image.media_type)))?;
        for tag in tags {
            self.client
                .push_manifest_raw(
                    &self.reference(&image.name, tag),
                    image.manifest.clone(),
                    content_type.clone(),
                )
                .await
                .map_err(|e| {
                    self.oci_error(&format!("push of manifest {}:{tag}", image.name), e)
                })?;
            match self.manifest_digest(&image.name, tag).await? {
                Some(d) if d == image.digest => {}
                Some(d) => {
                    return Err(self.error(format!(
                        "{}:{tag} points at {d} after the push, expected {}",
                        image.name, image.digest
                    )));
                }
                None => {
                    return Err(self.error(format!(
                        "{}:{tag} is missing right after its push",
                        image.name
                    )));
                }
            }
        }
        progress.percent(Step::PushingImages, 100, &detail);
        progress.info(&format!(
            "{}: pushed {} ({} blobs pushed, {} already present)",
            self.name,
            image.reference(),
            report.blobs_pushed,
            report.blobs_skipped
        ));
        Ok(report)
    }

    /// The digest `repo:tag` (or `repo@digest`) points at, from a HEAD accepting every
    /// manifest media type; `None` if the registry answers 404.
    pub async fn manifest_digest(&self, repo: &str, tag: &str) -> Result<Option<String>> {
        let what = format!("HEAD manifest {repo}:{tag}");
        let res = self
            .send(
                &what,
                self.http
                    .head(self.url(&format!("{repo}/manifests/{tag}")))
                    .header(ACCEPT, MANIFEST_MEDIA_TYPES.join(", ")),
            )
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
            _ => Err(self.status_error(&what, res).await),
        }
    }

    /// For registries that do not send `Docker-Content-Digest`: the digest of the body.
    async fn manifest_digest_by_get(&self, repo: &str, tag: &str) -> Result<String> {
        let what = format!("GET manifest {repo}:{tag}");
        let res = self
            .send(
                &what,
                self.http
                    .get(self.url(&format!("{repo}/manifests/{tag}")))
                    .header(ACCEPT, MANIFEST_MEDIA_TYPES.join(", ")),
            )
            .await?;
        if !res.status().is_success() {
            return Err(self.status_error(&what, res).await);
        }
        let body = res
            .bytes()
            .await
            .map_err(|e| self.error(format!("{what}: {e}")))?;
        Ok(sha256_digest(&body))
    }

    /// Whether the registry has the blob `digest` in `repo`.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        self.client
            .store_auth_if_needed(&self.name, &self.oci_auth())
            .await;
        self.client
            .blob_exists(&self.reference(repo, "latest"), digest)
            .await
            .map_err(|e| self.oci_error(&format!("HEAD blob {digest}"), e))
    }

    /// The tags of `repo` (empty if the repository does not exist), sorted.
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let what = format!("tags of {repo}");
        let mut url = self.url(&format!("{repo}/tags/list?n=1000"));
        let mut out = Vec::new();
        // Follows `Link: <...>; rel="next"` pagination, at most 1000 pages.
        for _ in 0..1000 {
            let res = self.send(&what, self.http.get(&url)).await?;
            if res.status() == StatusCode::NOT_FOUND {
                return Ok(Vec::new());
            }
            if !res.status().is_success() {
                return Err(self.status_error(&what, res).await);
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
                .map_err(|e| self.error(format!("{what}: {e}")))?;
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
        let tombstone = LocalImage {
            name: repo.to_string(),
            tag: tag.to_string(),
            digest: sha256_digest(&manifest),
            manifest,
            media_type: OCI_MANIFEST.to_string(),
            config,
            layers: Vec::new(),
        };
        self.push(&tombstone, &[tag.to_string()], &crate::progress::NoProgress)
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
        let res = self
            .send(
                &what,
                self.http
                    .delete(self.url(&format!("{repo}/manifests/{digest}")))
                    .header(ACCEPT, MANIFEST_MEDIA_TYPES.join(", ")),
            )
            .await?;
        match res.status() {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            StatusCode::METHOD_NOT_ALLOWED => Err(self.error(format!(
                "{what}: HTTP 405: deletes are disabled (storage.delete.enabled: true)"
            ))),
            _ => Err(self.status_error(&what, res).await),
        }
    }
}

static NONCE: AtomicU64 = AtomicU64::new(0);

/// The blob's bytes as a stream of chunks, read from its location as the upload goes,
/// counting them into `done`.
fn blob_stream(
    blob: Blob,
    done: Arc<AtomicU64>,
) -> impl Stream<Item = Result<bytes::Bytes, OciDistributionError>> + Send + 'static {
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
                        Err(e) => return Some((Err(e.into()), State::Done)),
                    },
                    BlobLocation::TarEntry { ref tar, offset } => {
                        let opened = async {
                            let mut f = tokio::fs::File::open(tar).await?;
                            f.seek(std::io::SeekFrom::Start(offset)).await?;
                            Ok::<_, std::io::Error>(f)
                        };
                        match opened.await {
                            Ok(f) => (f.take(blob.size), blob.size),
                            Err(e) => return Some((Err(e.into()), State::Done)),
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
                    )
                    .into()),
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
                Err(e) => Some((Err(e.into()), State::Done)),
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
mod tests {
    use super::*;
    use crate::image::load_image;
    use crate::manifest::ImageEntry;
    use crate::testing::{RegistryProcess, TestImage, write_docker_archive, write_oci_layout};
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
        let out = std::process::Command::new("skopeo")
            .args(args)
            .output()
            .unwrap();
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
        let first = r.push(&a, &tags, &progress).await.unwrap();
        assert_eq!(
            first,
            PushReport {
                blobs_pushed: 3,
                blobs_skipped: 0,
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
        let second = r.push(&a, &tags, &crate::NoProgress).await.unwrap();
        assert_eq!(
            second,
            PushReport {
                blobs_pushed: 0,
                blobs_skipped: 3,
                bytes_pushed: 0
            }
        );

        // The docker-archive image shares the layer "shared": it is not pushed again.
        let third = r.push(&b, &[], &crate::NoProgress).await.unwrap();
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
        r.push(&a, &["r1-v1".into(), "r2-v1".into()], &crate::NoProgress)
            .await
            .unwrap();
        r.push(&b, &["r1-v2".into()], &crate::NoProgress)
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

        let v2_only = &b.layers[1].digest;
        assert!(!r.blob_exists("team/app", v2_only).await.unwrap());
        assert!(!r.blob_exists("team/app", &b.config.digest).await.unwrap());
        for blob in a.blobs() {
            assert!(
                r.blob_exists("team/app", &blob.digest).await.unwrap(),
                "{}",
                blob.digest
            );
        }
        // The shared layer stays (app still uses it) and app is still whole.
        assert_eq!(b.layers[0].digest, a.layers[0].digest);
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
        r.push(&a, &[], &crate::NoProgress).await.unwrap();
        r.push(&b, &[], &crate::NoProgress).await.unwrap();
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

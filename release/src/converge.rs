//! Converging a release: `add` (toward present), `remove` (toward absent) and `check`, step
//! by step as lir-svc does, each step idempotent and reported.
//!
//! add: scale lir-data up → find replicas → download (Range resume) → verify digest and
//! signature → unsquash → check layout → sync files to the primary file store → push images to
//! the primary registry (`name:tag` and `name:<version>-<tag>`) → replicate to every replica
//! registry and file store → check → record as present → scale back → clean the work dir.
//! A failure records `failed` with the error and keeps the work dir, so the next run resumes
//! (a verified download is reused; blobs already in a registry are skipped).
//!
//! An operation first checks: a release recorded present (absent) whose check is clean is
//! left alone, without a request to its source or a blob upload ([`ApplyOptions::force`]
//! runs every step anyway). After a successful add, the verified squashfs, its signature and
//! the release's files stay in the work dir (bounded by `[release] keep`), so a re-fix after
//! drift pushes from disk, and `rsync://` stores are checked against the kept files.
//!
//! remove: scale up → untag the version's tags on every registry (the plain `name:tag` too
//! unless another present release has it) → remove its files from every file store → run each
//! registry's garbage collection → verify nothing of the version remains → record as absent →
//! scale back. Manifests are never deleted by digest: that would also drop the tags of other
//! releases sharing the manifest; untagged manifests and unreferenced blobs go at GC, and
//! blobs other releases use stay.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::download::{FetchOptions, fetch, http_client};
use crate::error::{Error, Result};
use crate::filestore::FileStore;
use crate::image::{LocalImage, load_image};
use crate::k8s::DeploymentRef;
use crate::manifest::{FileEntry, ReleaseManifest};
use crate::progress::{Progress, Step};
use crate::registry::{ExpectedImage, Registry, check_images, garbage_collect};
use crate::rule::{DesiredState, K8sSettings, KeepSettings, ReleaseSpec};
use crate::status::{self, PushedImage, PushedPlatform, ReleaseState, ReleaseStatus};

/// Status writes for percent changes are at most this frequent.
const STATUS_INTERVAL: Duration = Duration::from_millis(500);

/// Where the operation runs: the agent's state dir (statuses, lock, default work dir).
#[derive(Debug, Clone)]
pub struct Context {
    /// The agent's var dir (under the root prefix).
    pub var_dir: PathBuf,
}

/// How [`apply`] runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Run every step even when the release is recorded as wanted and its check is clean.
    pub force: bool,
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The release's status afterwards.
    pub status: ReleaseStatus,
    /// False when the release was already as wanted and nothing was done.
    pub changed: bool,
}

/// The file in a work dir that marks a kept download (see [`KeepSettings`]).
const KEPT_MARKER: &str = "kept.json";
/// The squashfs in a work dir.
const SQUASHFS: &str = "release.squashfs";
/// The verified detached signature kept next to it.
const SIGNATURE: &str = "release.squashfs.sig";
/// The release's files, kept after a successful add.
const KEPT_FILES: &str = "files";

/// What a kept download is.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct KeptMarker {
    version: String,
    sha256: Option<String>,
    /// Seconds since the epoch, when it was kept (the newest are kept longest).
    kept_at: u64,
}

/// Progress that also keeps the release's status file current.
struct Reporter {
    var_dir: PathBuf,
    verb: &'static str,
    status: Mutex<(ReleaseStatus, Instant)>,
    outer: Arc<dyn Progress>,
}

impl Reporter {
    fn update(&self, force: bool, f: impl FnOnce(&mut ReleaseStatus)) {
        let mut g = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g.0);
        if force || g.1.elapsed() >= STATUS_INTERVAL {
            g.0.updated_at = status::now_text();
            if let Err(e) = status::save(&self.var_dir, &g.0) {
                tracing::warn!("cannot write the release status: {e}");
            }
            g.1 = Instant::now();
        }
    }

    fn snapshot(&self) -> ReleaseStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }
}

impl Progress for Reporter {
    fn step(&self, step: Step, detail: &str) {
        let message = if detail.is_empty() {
            format!("{}: {step}", self.verb)
        } else {
            format!("{}: {step}: {detail}", self.verb)
        };
        self.update(true, |s| {
            s.step = Some(step);
            s.percent = None;
            s.message = message.clone();
        });
        self.outer.step(step, detail);
    }

    fn percent(&self, step: Step, percent: u8, detail: &str) {
        let message = format!("{}: {step} ({percent}%)", self.verb);
        self.update(percent >= 100, |s| {
            s.step = Some(step);
            s.percent = Some(percent);
            s.message = message;
        });
        self.outer.percent(step, percent, detail);
    }

    fn info(&self, message: &str) {
        self.outer.info(message);
    }

    fn bytes(&self, step: Step, done: u64, total: Option<u64>) {
        self.outer.bytes(step, done, total);
    }

    fn items(&self, step: Step, done: u64, total: u64) {
        self.outer.items(step, done, total);
    }
}

/// The progress of one image after another: each push's bytes are offset by the images
/// before it, so the bytes of a step grow from 0 to the total of all images.
struct Offset<'a> {
    outer: &'a dyn Progress,
    offset: u64,
    total: u64,
}

impl Progress for Offset<'_> {
    fn step(&self, step: Step, detail: &str) {
        self.outer.step(step, detail);
    }
    fn percent(&self, step: Step, percent: u8, detail: &str) {
        self.outer.percent(step, percent, detail);
    }
    fn info(&self, message: &str) {
        self.outer.info(message);
    }
    fn bytes(&self, step: Step, done: u64, _total: Option<u64>) {
        self.outer
            .bytes(step, (self.offset + done).min(self.total), Some(self.total));
    }
}

/// Replication to several registries at once, shown as one step: the bytes and images of
/// every replica added up.
struct Replication<'a> {
    outer: &'a dyn Progress,
    bytes: Vec<std::sync::atomic::AtomicU64>,
    images: Vec<std::sync::atomic::AtomicU64>,
    total_bytes: u64,
    total_images: u64,
}

/// One replica's share of a [`Replication`]. Its pushes' own steps stay out of the status
/// (the step is Replicating), as their lines did.
struct ReplicaSlot<'a> {
    all: &'a Replication<'a>,
    index: usize,
}

impl Progress for ReplicaSlot<'_> {
    fn step(&self, _step: Step, _detail: &str) {}
    fn percent(&self, _step: Step, _percent: u8, _detail: &str) {}
    fn info(&self, _message: &str) {}
    fn bytes(&self, _step: Step, done: u64, _total: Option<u64>) {
        use std::sync::atomic::Ordering::Relaxed;
        self.all.bytes[self.index].store(done, Relaxed);
        let sum = self.all.bytes.iter().map(|b| b.load(Relaxed)).sum();
        self.all
            .outer
            .bytes(Step::Replicating, sum, Some(self.all.total_bytes));
    }
    fn items(&self, _step: Step, done: u64, _total: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.all.images[self.index].store(done, Relaxed);
        let sum = self.all.images.iter().map(|b| b.load(Relaxed)).sum();
        self.all
            .outer
            .items(Step::Replicating, sum, self.all.total_images);
    }
}

/// The registries and file stores an operation acts on: the spec's, plus the replicas found
/// through k8s.
struct Targets {
    registries: Vec<(Registry, Option<Vec<String>>)>,
    file_stores: Vec<FileStore>,
}

async fn targets(
    spec: &ReleaseSpec,
    k8s: Option<&(DeploymentRef, crate::k8s::Client)>,
    progress: &dyn Progress,
) -> Result<Targets> {
    let mut registries = Vec::new();
    for r in &spec.registries {
        let mut registry = Registry::parse(r.url(), spec.ca_file.as_deref())?;
        if let Some((user, file)) = r.credentials() {
            registry = registry.with_credentials(user.to_string(), read_password(file)?);
        }
        registries.push((registry, r.gc().map(<[String]>::to_vec)));
    }
    let replica_credentials = match spec.k8s.as_ref().and_then(|k| {
        k.registry_username
            .as_deref()
            .zip(k.registry_password_file.as_deref())
    }) {
        Some((user, file)) => Some((user.to_string(), read_password(file)?)),
        None => None,
    };
    let mut file_stores = Vec::new();
    for f in &spec.file_stores {
        file_stores.push(file_store(f, spec)?);
    }
    if let (Some(settings), Some((dep, client))) = (&spec.k8s, k8s)
        && (settings.registry_template.is_some() || settings.file_store_template.is_some())
    {
        progress.info(&format!(
            "Retrieving IPs of all {} replicas",
            settings.deployment
        ));
        let ips = dep.replica_endpoints(client).await?;
        progress.info(&format!(
            "Found {} replica IPs: {:?}",
            settings.deployment, ips
        ));
        for ip in ips {
            let ip = match ip {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            if let Some(t) = &settings.registry_template {
                let mut r = Registry::parse(&t.replace("{ip}", &ip), spec.ca_file.as_deref())?;
                if let Some((user, password)) = &replica_credentials {
                    r = r.with_credentials(user.clone(), password.clone());
                }
                if !registries.iter().any(|(x, _)| x.name() == r.name()) {
                    registries.push((r, None));
                }
            }
            if let Some(t) = &settings.file_store_template {
                let f = file_store(&t.replace("{ip}", &ip), spec)?;
                if !file_stores.iter().any(|x| x.to_string() == f.to_string()) {
                    file_stores.push(f);
                }
            }
        }
    }
    Ok(Targets {
        registries,
        file_stores,
    })
}

/// The first line of a password file (never logged).
fn read_password(file: &str) -> Result<String> {
    let password = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    Ok(password.lines().next().unwrap_or("").to_string())
}

fn file_store(text: &str, spec: &ReleaseSpec) -> Result<FileStore> {
    Ok(FileStore::parse(text)?.with_password_file(spec.rsync_password_file.clone()))
}

fn deployment(k: &K8sSettings) -> DeploymentRef {
    DeploymentRef {
        kubeconfig: k.kubeconfig.as_ref().map(PathBuf::from),
        context: k.context.clone(),
        namespace: k.namespace.clone(),
        name: k.deployment.clone(),
    }
}

/// Scales lir-data up for the operation; returns the deployment, its client and the replica
/// count to go back to.
async fn scale_up(
    spec: &ReleaseSpec,
    progress: &dyn Progress,
) -> Result<Option<(DeploymentRef, crate::k8s::Client, i32)>> {
    let Some(k) = &spec.k8s else {
        return Ok(None);
    };
    let dep = deployment(k);
    let client = dep.client().await?;
    let before = dep.replicas(&client).await?;
    progress.info(&format!(
        "Current {} replicas: {}, Expected {} replicas: {}",
        k.deployment, before.spec, k.deployment, k.replicas
    ));
    if before.spec < k.replicas {
        progress.step(
            Step::Scaling,
            &format!("{} to {}", k.deployment, k.replicas),
        );
        dep.scale(&client, k.replicas).await?;
    }
    let want = before.spec.max(k.replicas);
    dep.wait_ready(&client, want, spec.k8s_timeout(), progress)
        .await?;
    Ok(Some((dep, client, before.spec)))
}

async fn scale_back(
    spec: &ReleaseSpec,
    k8s: &Option<(DeploymentRef, crate::k8s::Client, i32)>,
    progress: &dyn Progress,
) -> Result<()> {
    if let (Some(k), Some((dep, client, before))) = (&spec.k8s, k8s)
        && *before < k.replicas
    {
        progress.step(Step::ScalingBack, &format!("{} to {before}", k.deployment));
        dep.scale(client, *before).await?;
        dep.wait_ready(client, *before, spec.k8s_timeout(), progress)
            .await?;
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Rule(format!("a release step panicked: {e}")))?
}

/// Strips `user:password@` from a URL for display.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{host}{path}"),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// The work dir of a version.
pub fn work_dir(spec: &ReleaseSpec) -> PathBuf {
    spec.work_dir.join(&spec.version)
}

/// Marks a release as queued (a task was accepted for it), unless an operation is running.
pub fn mark_queued(ctx: &Context, version: &str, operation: &str) -> Result<()> {
    let mut s = status::load(&ctx.var_dir, version)?
        .unwrap_or_else(|| ReleaseStatus::new(version, operation, ReleaseState::Queued));
    if matches!(s.state, ReleaseState::Adding | ReleaseState::Removing) {
        return Ok(());
    }
    s.state = ReleaseState::Queued;
    s.operation = operation.to_string();
    s.step = None;
    s.percent = None;
    s.message = format!(
        "{}: queued",
        if operation == "add" {
            "AddRelease"
        } else {
            "RemoveRelease"
        }
    );
    s.updated_at = status::now_text();
    status::save(&ctx.var_dir, &s)
}

/// Runs the operation the spec's state asks for (add for present, remove for absent), under
/// the node's release lock. The status file records every step, the outcome and the error.
///
/// Unless `opts.force`, a release already recorded in the wanted state whose check is clean
/// is left as it is: nothing is written, fetched or pushed, and `progress` gets one Ready
/// step saying so.
pub async fn apply(
    ctx: &Context,
    spec: &ReleaseSpec,
    opts: ApplyOptions,
    progress: Arc<dyn Progress>,
) -> Result<Applied> {
    let var_dir = ctx.var_dir.clone();
    let _lock = blocking(move || status::OperationLock::acquire(&var_dir)).await?;
    let (verb, operation, state) = match spec.state {
        DesiredState::Present => ("AddRelease", "add", ReleaseState::Adding),
        DesiredState::Absent => ("RemoveRelease", "remove", ReleaseState::Removing),
    };
    if !opts.force
        && let Some((st, detail)) = already_as_wanted(ctx, spec).await
    {
        progress.step(Step::Ready, &detail);
        return Ok(Applied {
            status: st,
            changed: false,
        });
    }
    let mut st = status::load(&ctx.var_dir, &spec.version)?
        .unwrap_or_else(|| ReleaseStatus::new(&spec.version, operation, state));
    st.state = state;
    st.operation = operation.to_string();
    st.last_error = None;
    st.started_at = Some(status::now_text());
    st.source = spec.source.as_deref().map(redact_url);
    let reporter = Arc::new(Reporter {
        var_dir: ctx.var_dir.clone(),
        verb,
        status: Mutex::new((st, Instant::now())),
        outer: progress,
    });
    reporter.update(true, |_| {});
    let mut k8s = None;
    let result = async {
        k8s = scale_up(spec, reporter.as_ref()).await?;
        let kc = k8s.as_ref().map(|(d, c, _)| (d.clone(), c.clone()));
        let t = targets(spec, kc.as_ref(), reporter.as_ref()).await?;
        match spec.state {
            DesiredState::Present => add(spec, &t, &reporter).await,
            DesiredState::Absent => remove(ctx, spec, &t, &reporter).await,
        }
    }
    .await;
    // Scale back whatever happened: lir-data must not stay scaled up after a failure.
    let back = scale_back(spec, &k8s, reporter.as_ref()).await;
    let result = result.and(back);
    match result {
        Ok(()) => {
            reporter.step(Step::Cleaning, "");
            match spec.state {
                DesiredState::Present => {
                    let files = reporter.snapshot().files;
                    let sha256 = reporter.snapshot().sha256;
                    let (spec2, outer) = (spec.clone(), reporter.clone());
                    if let Err(e) = blocking(move || {
                        keep_download(&spec2, &files, sha256, outer.as_ref() as &dyn Progress)
                    })
                    .await
                    {
                        reporter.info(&format!("cannot keep the download: {e}"));
                    }
                }
                DesiredState::Absent => {
                    let dir = work_dir(spec);
                    if let Err(e) = remove_tree(&dir) {
                        reporter.info(&format!("cannot remove {}: {e}", dir.display()));
                    }
                }
            }
            let done = match spec.state {
                DesiredState::Present => ReleaseState::Present,
                DesiredState::Absent => ReleaseState::Absent,
            };
            reporter.update(true, |s| {
                s.state = done;
                s.step = Some(Step::Ready);
                s.percent = None;
                s.message = format!("{verb}: Ready");
            });
            reporter.outer.step(Step::Ready, "");
            Ok(Applied {
                status: reporter.snapshot(),
                changed: true,
            })
        }
        Err(e) => {
            let at = reporter.snapshot().step;
            reporter.update(true, |s| {
                s.state = ReleaseState::Failed;
                s.last_error = Some(e.to_string());
                s.message = match at {
                    Some(step) => format!("{verb}: failed at {step}: {e}"),
                    None => format!("{verb}: failed: {e}"),
                };
            });
            Err(e)
        }
    }
}

/// The recorded status and a line saying so, when the release is recorded in the wanted
/// state and its check finds nothing wrong (a check that cannot run is not "as wanted").
/// Reads only: the status file, then the check's HEADs and listings.
pub async fn already_as_wanted(
    ctx: &Context,
    spec: &ReleaseSpec,
) -> Option<(ReleaseStatus, String)> {
    let st = status::load(&ctx.var_dir, &spec.version).ok()??;
    let recorded = match spec.state {
        DesiredState::Present => ReleaseState::Present,
        DesiredState::Absent => ReleaseState::Absent,
    };
    if st.state != recorded {
        return None;
    }
    let problems = check(ctx, spec).await.ok()?;
    if !problems.is_empty() {
        return None;
    }
    let detail = match spec.state {
        DesiredState::Present => format!(
            "release {} is already present: {} images checked on {} registries, {} files on {} \
             file stores; nothing to do (--force runs every step again)",
            spec.version,
            st.images.len(),
            st.registries.len(),
            st.files.len(),
            st.file_stores.len()
        ),
        DesiredState::Absent => format!(
            "release {} is already absent: nothing of it remains; nothing to do (--force runs \
             every step again)",
            spec.version
        ),
    };
    Some((st, detail))
}

fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Size of a tree in bytes (files only; unreadable entries count 0).
fn tree_size(path: &Path) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !md.is_dir() {
        return md.len();
    }
    std::fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}

/// After a successful add: keeps the verified squashfs, its signature and the release's
/// files in the work dir (the unpacked images go), records it, and evicts the oldest kept
/// downloads beyond `keep`; with `keep.releases = 0`, removes the work dir.
fn keep_download(
    spec: &ReleaseSpec,
    files: &[FileEntry],
    sha256: Option<String>,
    progress: &dyn Progress,
) -> Result<()> {
    let work = work_dir(spec);
    if spec.keep.releases == 0 {
        return remove_tree(&work).map_err(|e| Error::io(&work, e));
    }
    let tree = work.join("tree");
    let kept_files = work.join(KEPT_FILES);
    let tree_files = tree.join(crate::manifest::FILES_DIR);
    remove_tree(&kept_files).map_err(|e| Error::io(&kept_files, e))?;
    if tree_files.is_dir() {
        std::fs::rename(&tree_files, &kept_files).map_err(|e| Error::io(&kept_files, e))?;
    } else {
        std::fs::create_dir_all(&kept_files).map_err(|e| Error::io(&kept_files, e))?;
    }
    for leftover in ["tree", "tree.partial", "empty-files"] {
        let p = work.join(leftover);
        remove_tree(&p).map_err(|e| Error::io(&p, e))?;
    }
    // The hashes were just verified against release.toml: cache them, so checks of rsync
    // stores against these files read metadata only.
    crate::filestore::verify_tree(
        &kept_files,
        &kept_cache(&kept_files),
        files,
        "kept files",
        true,
    )?;
    let marker = KeptMarker {
        version: spec.version.clone(),
        sha256,
        kept_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let path = work.join(KEPT_MARKER);
    let bytes = serde_json::to_vec(&marker).expect("JSON");
    tenet_fsutil::atomic_write(&path, &bytes, tenet_fsutil::DEFAULT_MODE, false)
        .map_err(|e| Error::io(&path, e))?;
    progress.info(&format!(
        "Kept the verified download of {} in {} (keep: {} releases{})",
        spec.version,
        work.display(),
        spec.keep.releases,
        spec.keep
            .bytes
            .map(|b| format!(", {b} bytes"))
            .unwrap_or_default()
    ));
    evict(&spec.work_dir, &spec.keep, progress)
}

fn kept_cache(kept_files: &Path) -> PathBuf {
    kept_files.with_file_name("files.sha256-cache")
}

/// The kept downloads under `root` (work dirs with a marker), newest first.
fn kept_downloads(root: &Path) -> Vec<(KeptMarker, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut kept: Vec<(KeptMarker, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let dir = e.path();
            let bytes = std::fs::read(dir.join(KEPT_MARKER)).ok()?;
            let marker: KeptMarker = serde_json::from_slice(&bytes).ok()?;
            Some((marker, dir))
        })
        .collect();
    kept.sort_by(|a, b| {
        b.0.kept_at
            .cmp(&a.0.kept_at)
            .then_with(|| b.0.version.cmp(&a.0.version))
    });
    kept
}

/// Removes the kept downloads beyond `keep` (oldest first).
fn evict(root: &Path, keep: &KeepSettings, progress: &dyn Progress) -> Result<()> {
    let mut count = 0u32;
    let mut bytes = 0u64;
    for (marker, dir) in kept_downloads(root) {
        let size = tree_size(&dir);
        let fits = count < keep.releases && keep.bytes.is_none_or(|max| bytes + size <= max);
        if fits {
            count += 1;
            bytes += size;
            continue;
        }
        remove_tree(&dir).map_err(|e| Error::io(&dir, e))?;
        progress.info(&format!(
            "Removed the kept download of {} ({size} bytes): beyond keep",
            marker.version
        ));
    }
    Ok(())
}

/// The kept files of a version, if its download is kept (the reference `rsync://` stores
/// are checked against).
fn kept_files(spec: &ReleaseSpec) -> Option<PathBuf> {
    let work = work_dir(spec);
    (work.join(KEPT_MARKER).is_file() && work.join(KEPT_FILES).is_dir())
        .then(|| work.join(KEPT_FILES))
}

async fn add(spec: &ReleaseSpec, t: &Targets, reporter: &Arc<Reporter>) -> Result<()> {
    let progress: &dyn Progress = reporter.as_ref();
    let source = spec.source.as_deref().ok_or_else(|| {
        Error::Rule(format!(
            "release {}: source: required when present",
            spec.version
        ))
    })?;
    let work = work_dir(spec);
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;

    // Download and verify: nothing goes anywhere before both pass.
    let client = http_client(spec.ca_file.as_deref())?;
    let squashfs = work.join(SQUASHFS);
    let opts = FetchOptions {
        ca_file: spec.ca_file.clone(),
        ..FetchOptions::default()
    };
    let dl = fetch(
        &client,
        source,
        &squashfs,
        spec.sha256.as_deref(),
        &opts,
        progress,
    )
    .await?;
    if dl.reused {
        progress.info(&format!(
            "{} already downloaded and verified (sha256 {})",
            squashfs.display(),
            dl.sha256
        ));
    } else {
        progress.info(&format!(
            "Downloaded {} bytes (resumed from {}), sha256 {} matches the {}",
            dl.size, dl.resumed_from, dl.sha256, dl.digest_source
        ));
    }
    reporter.update(true, |s| s.sha256 = Some(dl.sha256.clone()));

    progress.step(Step::Verifying, "code signing");
    let pem = spec
        .public_key_pem
        .clone()
        .ok_or_else(|| Error::Signature(format!("release {}: no public key", spec.version)))?;
    let kept_sig = work.join(SIGNATURE);
    // A reused download comes with the signature verified with it: no request to the source.
    let mut verified = None;
    if dl.reused
        && let Ok(sig) = std::fs::read(&kept_sig)
    {
        let (file, key) = (dl.path.clone(), pem.clone());
        match blocking(move || crate::signature::verify_detached(&file, &sig, &key)).await {
            Ok(kind) => verified = Some(kind),
            Err(e) => progress.info(&format!(
                "the kept signature does not verify ({e}); fetching it again"
            )),
        }
    }
    let kind = match verified {
        Some(kind) => kind,
        None => {
            let sig_source = spec.signature.clone().unwrap_or_default();
            let sig = fetch_small(&client, &sig_source).await?;
            let (file, key, keep) = (dl.path.clone(), pem.clone(), sig.clone());
            let kind =
                blocking(move || crate::signature::verify_detached(&file, &sig, &key)).await?;
            tenet_fsutil::atomic_write(&kept_sig, &keep, tenet_fsutil::DEFAULT_MODE, false)
                .map_err(|e| Error::io(&kept_sig, e))?;
            kind
        }
    };
    progress.info(&format!("Code signing verification successful ({kind:?})"));

    // Unpack and check the layout.
    let tree = work.join("tree");
    let (img, dest) = (dl.path.clone(), tree.clone());
    let outer = reporter.clone();
    let stats =
        blocking(move || crate::unsquash::unsquash(&img, &dest, outer.as_ref() as &dyn Progress))
            .await?;
    progress.info(&format!(
        "Unsquashed to {} ({} files, {} bytes)",
        tree.display(),
        stats.files,
        stats.bytes
    ));
    progress.step(Step::CheckingLayout, "");
    let (root, version) = (tree.clone(), spec.version.clone());
    let manifest = blocking(move || {
        let m = ReleaseManifest::load(&root)?;
        m.check_layout(&root, &version)?;
        Ok(m)
    })
    .await?;

    // Files to the primary store, images to the primary registry.
    let files_dir = tree.join(crate::manifest::FILES_DIR);
    let empty = work.join("empty-files");
    let files_src = if files_dir.is_dir() {
        files_dir
    } else {
        std::fs::create_dir_all(&empty).map_err(|e| Error::io(&empty, e))?;
        empty
    };
    if let Some(primary) = t.file_stores.first() {
        progress.step(Step::SyncingFiles, &primary.to_string());
        let (store, src, version) = (primary.clone(), files_src.clone(), spec.version.clone());
        let outer = reporter.clone();
        blocking(move || store.sync(&src, &version, outer.as_ref() as &dyn Progress)).await?;
    }
    let (root, entries) = (tree.clone(), manifest.images.clone());
    let images: Vec<LocalImage> = blocking(move || {
        entries
            .iter()
            .map(|e| load_image(&root, e))
            .collect::<Result<Vec<_>>>()
    })
    .await?;
    let pushed: Vec<PushedImage> = images
        .iter()
        .map(|im| {
            let version_tag = format!("{}-{}", spec.version, im.tag);
            let platforms = im
                .children()
                .iter()
                .zip(im.child_tags(&version_tag))
                .map(|(c, tag)| PushedPlatform {
                    platform: c.platform.clone(),
                    tag,
                    digest: c.digest.clone(),
                })
                .collect();
            PushedImage {
                name: im.name.clone(),
                tag: im.tag.clone(),
                version_tag,
                digest: im.digest.clone(),
                platforms,
            }
        })
        .collect();
    if let Some((primary, _)) = t.registries.first() {
        progress.step(Step::PushingImages, primary.name());
        push_all(primary, &images, &pushed, Step::PushingImages, progress).await?;
    }

    // Replicas: every other registry and file store, at once.
    if t.registries.len() > 1 || t.file_stores.len() > 1 {
        let n = (t.registries.len() + t.file_stores.len()).saturating_sub(2);
        progress.step(Step::Replicating, &format!("{n} replicas"));
        let replicas = t.registries.len().saturating_sub(1);
        let image_bytes: u64 = images.iter().map(LocalImage::blobs_size).sum();
        let all = Replication {
            outer: progress,
            bytes: (0..replicas).map(|_| Default::default()).collect(),
            images: (0..replicas).map(|_| Default::default()).collect(),
            total_bytes: image_bytes * replicas as u64,
            total_images: (images.len() * replicas) as u64,
        };
        let regs = t
            .registries
            .iter()
            .skip(1)
            .enumerate()
            .map(|(index, (r, _))| {
                let (images, pushed, all) = (&images, &pushed, &all);
                async move {
                    progress.info(&format!("Replicating images to {}", r.name()));
                    let slot = ReplicaSlot { all, index };
                    push_all(r, images, pushed, Step::Replicating, &slot).await
                }
            });
        let stores =
            t.file_stores.iter().skip(1).map(|f| {
                let (src, version) = (files_src.clone(), spec.version.clone());
                let f = f.clone();
                async move {
                    blocking(move || f.sync(&src, &version, &crate::progress::NoProgress)).await
                }
            });
        let (a, b) = futures_util::join!(join_all(regs), join_all(stores));
        a.into_iter().chain(b).collect::<Result<Vec<()>>>()?;
    }

    // Present only once every replica says so.
    progress.step(Step::Checking, "");
    reporter.update(true, |s| {
        s.images = pushed.clone();
        s.files = manifest.files.clone();
        s.registries = t
            .registries
            .iter()
            .map(|(r, _)| r.name().to_string())
            .collect();
        s.file_stores = t.file_stores.iter().map(|f| f.to_string()).collect();
    });
    let problems = check_targets(
        &spec.version,
        t,
        &pushed,
        &manifest.files,
        Some(files_src.clone()),
    )
    .await?;
    if !problems.is_empty() {
        return Err(Error::Layout(format!(
            "after replication: {}",
            problems.join("; ")
        )));
    }
    Ok(())
}

/// Pushes the images one after another, both tags each (and the child tags of an index),
/// reporting bytes and images done of the whole under `step`.
async fn push_all(
    registry: &Registry,
    images: &[LocalImage],
    pushed: &[PushedImage],
    step: Step,
    progress: &dyn Progress,
) -> Result<()> {
    let total: u64 = images.iter().map(LocalImage::blobs_size).sum();
    let mut offset = 0u64;
    progress.items(step, 0, images.len() as u64);
    for (i, (im, p)) in images.iter().zip(pushed).enumerate() {
        progress.info(&format!(
            "Pushing {}:{} to {} ({} of {})",
            im.name,
            im.tag,
            registry.name(),
            i + 1,
            images.len()
        ));
        let child_tags: Vec<String> = p.platforms.iter().map(|c| c.tag.clone()).collect();
        let shifted = Offset {
            outer: progress,
            offset,
            total,
        };
        let report = registry
            .push(
                im,
                &[p.tag.clone(), p.version_tag.clone()],
                &child_tags,
                &shifted,
            )
            .await?;
        offset += im.blobs_size();
        progress.items(step, i as u64 + 1, images.len() as u64);
        progress.info(&format!(
            "Tagged {}/{}:{} with tag {} ({} blobs pushed, {} already present, {} mounted{})",
            registry.name(),
            im.name,
            im.tag,
            p.version_tag,
            report.blobs_pushed,
            report.blobs_skipped,
            report.blobs_mounted,
            if p.platforms.is_empty() {
                String::new()
            } else {
                format!("; {} platforms", p.platforms.len())
            }
        ));
    }
    Ok(())
}

async fn fetch_small(client: &reqwest::Client, source: &str) -> Result<Vec<u8>> {
    let err = |m: String| Error::Download {
        url: redact_url(source),
        message: m,
    };
    if let Some(path) = source
        .strip_prefix("file://")
        .or_else(|| source.starts_with('/').then_some(source))
    {
        return std::fs::read(path).map_err(|e| Error::io(path, e));
    }
    let resp = client
        .get(source)
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP {}", resp.status())));
    }
    if resp.content_length().is_some_and(|n| n > 1 << 20) {
        return Err(err("a signature larger than 1 MiB".into()));
    }
    let body = resp.bytes().await.map_err(|e| err(e.to_string()))?;
    Ok(body.to_vec())
}

/// The tags a present release's images must resolve: both tags of each image, and the tag
/// of every manifest of a multi-platform image's index.
fn expected_tags(images: &[PushedImage]) -> Vec<ExpectedImage> {
    images
        .iter()
        .flat_map(|p| {
            [p.tag.clone(), p.version_tag.clone()]
                .map(|tag| ExpectedImage {
                    repo: p.name.clone(),
                    tag,
                    digest: p.digest.clone(),
                })
                .into_iter()
                .chain(p.platforms.iter().map(|c| ExpectedImage {
                    repo: p.name.clone(),
                    tag: c.tag.clone(),
                    digest: c.digest.clone(),
                }))
        })
        .collect()
}

/// What is wrong with a present release on the targets (empty: all good). `reference`: the
/// release's files on this node, which `rsync://` stores are compared with.
async fn check_targets(
    version: &str,
    t: &Targets,
    images: &[PushedImage],
    files: &[FileEntry],
    reference: Option<PathBuf>,
) -> Result<Vec<String>> {
    let registries: Vec<Registry> = t.registries.iter().map(|(r, _)| r.clone()).collect();
    let expected = expected_tags(images);
    let stores = t.file_stores.iter().map(|f| {
        let (f, version, files) = (f.clone(), version.to_string(), files.to_vec());
        let reference = reference.clone();
        async move {
            blocking(move || f.check_with_reference(&version, &files, reference.as_deref())).await
        }
    });
    let (problems, files) =
        futures_util::join!(check_images(&registries, &expected), join_all(stores));
    let mut problems = problems?;
    for f in files {
        problems.extend(f?);
    }
    Ok(problems)
}

async fn remove(
    ctx: &Context,
    spec: &ReleaseSpec,
    t: &Targets,
    reporter: &Arc<Reporter>,
) -> Result<()> {
    let progress: &dyn Progress = reporter.as_ref();
    let record = reporter.snapshot();
    // Plain tags another present release also has stay.
    let others: Vec<ReleaseStatus> = status::load_all(&ctx.var_dir)?
        .into_iter()
        .filter(|s| s.version != spec.version && s.state == ReleaseState::Present)
        .collect();
    let shared = |p: &PushedImage| {
        others
            .iter()
            .any(|o| o.images.iter().any(|q| q.name == p.name && q.tag == p.tag))
    };
    progress.step(Step::DeletingImages, "");
    let jobs = t.registries.iter().map(|(r, _)| {
        let (record, shared) = (&record, &shared);
        async move {
            for p in &record.images {
                let own = std::iter::once(&p.version_tag).chain(p.platforms.iter().map(|c| &c.tag));
                for tag in own {
                    if r.untag(&p.name, tag).await? {
                        progress.info(&format!("Untagged {}/{}:{tag}", r.name(), p.name));
                    }
                }
                if shared(p) {
                    progress.info(&format!(
                        "Keeping {}/{}:{}: another present release has it",
                        r.name(),
                        p.name,
                        p.tag
                    ));
                } else if r.manifest_digest(&p.name, &p.tag).await?.as_deref()
                    == Some(p.digest.as_str())
                    && r.untag(&p.name, &p.tag).await?
                {
                    progress.info(&format!("Untagged {}/{}:{}", r.name(), p.name, p.tag));
                }
            }
            Ok::<(), Error>(())
        }
    });
    join_all(jobs)
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()?;

    progress.step(Step::RemovingFiles, "");
    for f in &t.file_stores {
        let (f, version) = (f.clone(), spec.version.clone());
        blocking(move || f.remove(&version).map(|_| ())).await?;
    }

    progress.step(Step::GarbageCollecting, "");
    for (r, gc) in &t.registries {
        match gc {
            Some(cmd) => {
                let cmd = cmd.clone();
                let out = blocking(move || garbage_collect(&cmd)).await?;
                let last = out.lines().last().unwrap_or("").to_string();
                progress.info(&format!("Garbage collection on {}: {last}", r.name()));
            }
            None => progress.info(&format!(
                "{}: no gc command configured; untagged manifests and unreferenced blobs stay until its garbage collection runs",
                r.name()
            )),
        }
    }

    progress.step(Step::Checking, "");
    let problems = check_absent(&spec.version, t, &record.images).await?;
    if !problems.is_empty() {
        return Err(Error::Layout(format!(
            "after removal: {}",
            problems.join("; ")
        )));
    }
    Ok(())
}

/// What of the release remains on the targets (empty: nothing).
async fn check_absent(version: &str, t: &Targets, images: &[PushedImage]) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for (r, _) in &t.registries {
        for p in images {
            let own = std::iter::once(&p.version_tag).chain(p.platforms.iter().map(|c| &c.tag));
            for tag in own {
                if let Some(d) = r.manifest_digest(&p.name, tag).await? {
                    problems.push(format!(
                        "{}: {}:{tag} still resolves to {d}",
                        r.name(),
                        p.name
                    ));
                }
            }
        }
    }
    for f in &t.file_stores {
        let (store, v) = (f.clone(), version.to_string());
        if blocking(move || store.holds(&v)).await? {
            problems.push(format!("{f}: {version} is still there"));
        }
    }
    Ok(problems)
}

/// The outcome of a check: empty when compliant, else what is wrong where.
pub async fn check(ctx: &Context, spec: &ReleaseSpec) -> Result<Vec<String>> {
    let st = status::load(&ctx.var_dir, &spec.version)?;
    let kc = match &spec.k8s {
        Some(k) if k.registry_template.is_some() || k.file_store_template.is_some() => {
            let dep = deployment(k);
            let client = dep.client().await?;
            Some((dep, client))
        }
        _ => None,
    };
    let t = targets(spec, kc.as_ref(), &crate::progress::NoProgress).await?;
    match spec.state {
        DesiredState::Present => {
            let Some(st) = st else {
                return Ok(vec!["has not been added on this node".to_string()]);
            };
            if st.state != ReleaseState::Present {
                return Ok(vec![match &st.last_error {
                    Some(e) => format!("{}: {e}", st.state.as_str()),
                    None => format!("is {}", st.state.as_str()),
                }]);
            }
            let mut problems = Vec::new();
            if let (Some(want), Some(have)) = (&spec.sha256, &st.sha256)
                && want != have
            {
                problems.push(format!(
                    "was added from a squashfs of sha256 {have}, the rule says {want}"
                ));
            }
            problems.extend(
                check_targets(&spec.version, &t, &st.images, &st.files, kept_files(spec)).await?,
            );
            Ok(problems)
        }
        DesiredState::Absent => {
            let images = st.as_ref().map(|s| s.images.clone()).unwrap_or_default();
            let mut problems = check_absent(&spec.version, &t, &images).await?;
            if let Some(st) = &st
                && problems.is_empty()
                && matches!(
                    st.state,
                    ReleaseState::Present | ReleaseState::Adding | ReleaseState::Removing
                )
            {
                problems.push(format!("recorded as {}", st.state.as_str()));
            }
            Ok(problems)
        }
    }
}

/// Runs a future to completion on a runtime of its own (the object classes and the CLI are
/// synchronous).
pub fn block_on<F: Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io(Path::new("tokio runtime"), e))?;
    Ok(rt.block_on(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(root: &Path, version: &str, kept_at: u64, size: usize) {
        let dir = root.join(version);
        std::fs::create_dir_all(dir.join(KEPT_FILES)).unwrap();
        std::fs::write(dir.join(SQUASHFS), vec![0u8; size]).unwrap();
        let marker = KeptMarker {
            version: version.into(),
            sha256: None,
            kept_at,
        };
        std::fs::write(dir.join(KEPT_MARKER), serde_json::to_vec(&marker).unwrap()).unwrap();
    }

    #[test]
    fn eviction_keeps_the_newest_within_both_bounds_and_leaves_failed_work_dirs() {
        let root = tempfile::tempdir().unwrap();
        kept(root.path(), "1.0", 100, 1000);
        kept(root.path(), "2.0", 200, 1000);
        kept(root.path(), "3.0", 300, 1000);
        // A failed add's work dir has no marker: eviction never touches it.
        std::fs::create_dir_all(root.path().join("4.0")).unwrap();
        std::fs::write(root.path().join("4.0").join(SQUASHFS), b"partial").unwrap();

        evict(
            root.path(),
            &KeepSettings {
                releases: 2,
                bytes: None,
            },
            &crate::NoProgress,
        )
        .unwrap();
        let left = |v: &str| root.path().join(v).exists();
        assert!(left("3.0") && left("2.0") && !left("1.0") && left("4.0"));

        // A byte bound smaller than two downloads keeps only the newest.
        evict(
            root.path(),
            &KeepSettings {
                releases: 5,
                bytes: Some(1500),
            },
            &crate::NoProgress,
        )
        .unwrap();
        assert!(left("3.0") && !left("2.0") && left("4.0"));
        // One larger than the bound alone is not kept at all.
        evict(
            root.path(),
            &KeepSettings {
                releases: 5,
                bytes: Some(10),
            },
            &crate::NoProgress,
        )
        .unwrap();
        assert!(!left("3.0") && left("4.0"));
    }
}

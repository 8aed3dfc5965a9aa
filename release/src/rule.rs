//! The `release` rule and the node's release settings, and their resolution into a
//! [`ReleaseSpec`]: everything an operation needs, checked before anything is touched.
//!
//! A rule (a variable of class `release`) names the release; where it goes (registries, file
//! stores), how it is verified (public key) and how lir-data is scaled come from the rule or,
//! when the rule leaves them out, from the `[release]` section of the node configuration:
//!
//! ```toml
//! [release]
//! registries = ["https://lir.example:5000",                    # the first is the primary
//!               { url = "http://127.0.0.1:5001", gc = ["docker-registry", "garbage-collect",
//!                 "--delete-untagged", "/etc/docker/registry/config.yml"] }]
//! file_stores = ["/srv/lir-f", "rsync://lir@10.0.0.2:8873/lir-data/lir-f"]
//! public_key = "/etc/tenet/release-signing.pub"                # PEM, or the PEM text itself
//! ca_file = "/etc/tenet/lir-ca.pem"                            # extra CA for https sources/registries
//! rsync_password_file = "/etc/tenet/rsync.secret"
//! work_dir = "/var/lib/tenet/release/work"                     # default <var>/release/work
//! keep = { releases = 2, bytes = 10737418240 }                 # kept downloads (default 2, no byte cap)
//! [release.k8s]                                                # scale lir-data during operations
//! namespace = "cm"
//! deployment = "lir-data"
//! replicas = 3                                                 # during the operation
//! kubeconfig = "/etc/kubernetes/admin.conf"
//! timeout = 300
//! registry_template = "http://{ip}:5000"                       # replicas found by pod IP
//! file_store_template = "rsync://{ip}:8873/lir-data/lir-f"
//! registry_username = "lir"                                    # replica registries' credentials
//! registry_password_file = "/etc/tenet/lir.password"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::validate_version;

/// present or absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// The release's images and files are on every registry and file store.
    #[default]
    Present,
    /// Nothing of the release remains.
    Absent,
}

/// A registry as written in a rule or the settings: its URL, and optionally the command that
/// garbage-collects it (run after a release is removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RegistrySetting {
    /// `"http://127.0.0.1:5000"`, `"https://lir:5000"` or `"lir:5000"` (https).
    Url(String),
    /// `{ url = "...", gc = ["docker-registry", "garbage-collect", "--delete-untagged", "cfg"],
    /// username = "lir", password_file = "/etc/tenet/lir.password" }`.
    Full {
        /// As [`RegistrySetting::Url`].
        url: String,
        /// The garbage-collection command (argv), run on this node.
        #[serde(default)]
        gc: Option<Vec<String>>,
        /// HTTP Basic username (the distribution registry's htpasswd auth).
        #[serde(default)]
        username: Option<String>,
        /// The file holding the password (its first line; never logged).
        #[serde(default)]
        password_file: Option<String>,
    },
}

impl RegistrySetting {
    /// The URL.
    pub fn url(&self) -> &str {
        match self {
            RegistrySetting::Url(u) | RegistrySetting::Full { url: u, .. } => u,
        }
    }

    /// The GC command, if any.
    pub fn gc(&self) -> Option<&[String]> {
        match self {
            RegistrySetting::Url(_) => None,
            RegistrySetting::Full { gc, .. } => gc.as_deref(),
        }
    }

    /// The username and the password file, if the registry wants credentials.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        match self {
            RegistrySetting::Full {
                username: Some(u),
                password_file: Some(p),
                ..
            } => Some((u, p)),
            _ => None,
        }
    }
}

/// Scaling of the lir-data deployment around an operation, and discovery of its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sSettings {
    /// The deployment's namespace.
    pub namespace: String,
    /// The deployment (lir-data).
    pub deployment: String,
    /// Replicas during the operation (scaled back to the count found before, afterwards).
    pub replicas: i32,
    /// The kubeconfig (default: kube's inference: `$KUBECONFIG`, `~/.kube/config`, in-cluster).
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// The kubeconfig context.
    #[serde(default)]
    pub context: Option<String>,
    /// Seconds to wait for the replicas to be ready (default 300).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// A registry URL per replica pod, `{ip}` replaced by the pod IP (replicas are added to
    /// the registries).
    #[serde(default)]
    pub registry_template: Option<String>,
    /// A file store per replica pod, `{ip}` replaced by the pod IP.
    #[serde(default)]
    pub file_store_template: Option<String>,
    /// The user name for the replica registries (HTTP Basic or token realm), with
    /// `registry_password_file`.
    #[serde(default)]
    pub registry_username: Option<String>,
    /// The file holding the replica registries' password (its first line; never logged).
    #[serde(default)]
    pub registry_password_file: Option<String>,
}

/// How much of what was downloaded is kept after a successful add, so that a re-fix after
/// drift pushes from disk instead of downloading again: the verified squashfs, its
/// signature and the release's files, per version, newest first while both bounds hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepSettings {
    /// The most releases kept (default 2; 0 keeps nothing, the work dir is removed).
    #[serde(default = "default_keep_releases")]
    pub releases: u32,
    /// The most bytes kept in all (default: no limit); a release larger than this alone is
    /// not kept.
    #[serde(default)]
    pub bytes: Option<u64>,
}

impl Default for KeepSettings {
    fn default() -> Self {
        KeepSettings {
            releases: default_keep_releases(),
            bytes: None,
        }
    }
}

fn default_keep_releases() -> u32 {
    2
}

fn default_timeout() -> u64 {
    300
}

/// The `[release]` section of the node configuration: defaults for every release rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSettings {
    /// Registries; the first is the primary, the others are replicas.
    #[serde(default)]
    pub registries: Vec<RegistrySetting>,
    /// File stores (directories or `rsync://` URLs); the first is the primary.
    #[serde(default)]
    pub file_stores: Vec<String>,
    /// The PEM public key the release signatures are checked with: a path, or the PEM text.
    #[serde(default)]
    pub public_key: Option<String>,
    /// An extra CA (PEM file) trusted for https sources and registries.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// The rsync password file for `rsync://user@...` stores (never logged).
    #[serde(default)]
    pub rsync_password_file: Option<String>,
    /// Where releases are downloaded and unpacked (default `<var>/release/work`).
    #[serde(default)]
    pub work_dir: Option<String>,
    /// lir-data scaling and replica discovery.
    #[serde(default)]
    pub k8s: Option<K8sSettings>,
    /// What is kept of a release after a successful add (default: the last 2 releases).
    #[serde(default)]
    pub keep: Option<KeepSettings>,
}

/// A `release` rule: a variable of class `release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRule {
    /// The release version (`9999.0.0.0-1052647`): tags are `name:<version>-<tag>`, files go
    /// to `<store>/<version>/`.
    pub version: String,
    /// present (default) or absent.
    #[serde(default)]
    pub state: DesiredState,
    /// The squashfs URL (http, https, file); required when present.
    #[serde(default)]
    pub source: Option<String>,
    /// The squashfs sha256 (hex). Without it, the server's `Digest`/`Repr-Digest` header must
    /// give it.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The detached signature: a URL or path (default `<source>.sig`).
    #[serde(default)]
    pub signature: Option<String>,
    /// Overrides the settings' public key.
    #[serde(default)]
    pub public_key: Option<String>,
    /// Overrides the settings' registries.
    #[serde(default)]
    pub registries: Option<Vec<RegistrySetting>>,
    /// Overrides the settings' file stores.
    #[serde(default)]
    pub file_stores: Option<Vec<String>>,
    /// Overrides the settings' k8s scaling.
    #[serde(default)]
    pub k8s: Option<K8sSettings>,
}

/// A rule resolved against the settings: what an operation runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseSpec {
    /// The version.
    pub version: String,
    /// present or absent.
    pub state: DesiredState,
    /// The source URL (present only).
    pub source: Option<String>,
    /// The expected sha256 of the squashfs (lower-case hex).
    pub sha256: Option<String>,
    /// The signature URL or path.
    pub signature: Option<String>,
    /// The public key PEM text (present only).
    pub public_key_pem: Option<String>,
    /// Registries, primary first.
    pub registries: Vec<RegistrySetting>,
    /// File stores, primary first.
    pub file_stores: Vec<String>,
    /// Extra CA file.
    pub ca_file: Option<PathBuf>,
    /// rsync password file.
    pub rsync_password_file: Option<PathBuf>,
    /// Work dir root.
    pub work_dir: PathBuf,
    /// Scaling and discovery.
    pub k8s: Option<K8sSettings>,
    /// What is kept after a successful add.
    pub keep: KeepSettings,
}

impl ReleaseSpec {
    /// The k8s wait timeout.
    pub fn k8s_timeout(&self) -> Duration {
        Duration::from_secs(self.k8s.as_ref().map_or(300, |k| k.timeout))
    }
}

/// Reads a `[release]` section out of a node configuration table (missing: defaults).
pub fn settings_from_config(table: &toml::Table, origin: &str) -> Result<ReleaseSettings> {
    match table.get("release") {
        None => Ok(ReleaseSettings::default()),
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| Error::Rule(format!("{origin}: [release]: {e}"))),
    }
}

impl ReleaseRule {
    /// Resolves the rule against the settings. Files the rule or the settings name (public
    /// key, CA, password file, kubeconfig, work dir) are taken under `root`, the agent's root
    /// prefix; `var_dir` is the agent's state dir (already under the root). Every error names
    /// the rule (`release <version>`) and the field.
    pub fn resolve(
        &self,
        settings: &ReleaseSettings,
        var_dir: &Path,
        root: &Path,
    ) -> Result<ReleaseSpec> {
        let under = |p: &str| under_root(root, p);
        let who = format!("release {}", self.version);
        let bad = |field: &str, why: String| Error::Rule(format!("{who}: {field}: {why}"));
        validate_version(&self.version).map_err(|e| bad("version", e))?;
        if let Some(h) = &self.sha256
            && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(bad("sha256", format!("{h:?} is not 64 hex digits")));
        }
        let registries = self
            .registries
            .clone()
            .unwrap_or_else(|| settings.registries.clone());
        let file_stores = self
            .file_stores
            .clone()
            .unwrap_or_else(|| settings.file_stores.clone());
        let k8s = self.k8s.clone().or_else(|| settings.k8s.clone());
        let mut registries = registries;
        for r in &mut registries {
            crate::registry::Registry::parse(r.url(), None)
                .map_err(|e| bad("registries", e.to_string()))?;
            if let RegistrySetting::Full {
                url,
                username,
                password_file,
                ..
            } = r
            {
                match (username.as_deref(), password_file.as_mut()) {
                    (Some(_), Some(p)) => *p = under(p).to_string_lossy().into_owned(),
                    (None, None) => {}
                    _ => {
                        return Err(bad(
                            "registries",
                            format!("{url}: username and password_file go together"),
                        ));
                    }
                }
            }
        }
        for f in &file_stores {
            crate::filestore::FileStore::parse(f).map_err(|e| bad("file_stores", e.to_string()))?;
        }
        let discovers = k8s
            .as_ref()
            .is_some_and(|k| k.registry_template.is_some() || k.file_store_template.is_some());
        if registries.is_empty() && file_stores.is_empty() && !discovers {
            return Err(bad(
                "registries",
                "no registry and no file store: set them in the rule or in [release] of the node configuration".into(),
            ));
        }
        if let Some(k) = &k8s {
            if k.replicas < 0 {
                return Err(bad("k8s.replicas", "must be 0 or more".into()));
            }
            if k.registry_username.is_some() != k.registry_password_file.is_some() {
                return Err(bad(
                    "k8s.registry_username",
                    "registry_username and registry_password_file go together".into(),
                ));
            }
            for (field, t) in [
                ("k8s.registry_template", &k.registry_template),
                ("k8s.file_store_template", &k.file_store_template),
            ] {
                if let Some(t) = t
                    && !t.contains("{ip}")
                {
                    return Err(bad(field, format!("{t:?} has no {{ip}}")));
                }
            }
        }
        let (source, public_key_pem, signature) = match self.state {
            DesiredState::Absent => (None, None, None),
            DesiredState::Present => {
                let source = self
                    .source
                    .clone()
                    .ok_or_else(|| bad("source", "required when state is present".into()))?;
                if !(source.starts_with("http://")
                    || source.starts_with("https://")
                    || source.starts_with("file://")
                    || source.starts_with('/'))
                {
                    return Err(bad(
                        "source",
                        format!(
                            "{source:?}: expected an http(s):// or file:// URL or an absolute path"
                        ),
                    ));
                }
                let key = self
                    .public_key
                    .clone()
                    .or_else(|| settings.public_key.clone())
                    .ok_or_else(|| {
                        bad(
                            "public_key",
                            "missing: a release is only accepted signed; set public_key in the rule or in [release]".into(),
                        )
                    })?;
                let pem = if key.trim_start().starts_with("-----BEGIN") {
                    key
                } else {
                    std::fs::read_to_string(under(&key))
                        .map_err(|e| bad("public_key", format!("{key}: {e}")))?
                };
                let signature = self
                    .signature
                    .clone()
                    .unwrap_or_else(|| format!("{source}.sig"));
                (Some(source), Some(pem), Some(signature))
            }
        };
        Ok(ReleaseSpec {
            version: self.version.clone(),
            state: self.state,
            source,
            sha256: self.sha256.as_ref().map(|s| s.to_ascii_lowercase()),
            signature,
            public_key_pem,
            registries,
            file_stores,
            ca_file: settings.ca_file.as_deref().map(under),
            rsync_password_file: settings.rsync_password_file.as_deref().map(under),
            work_dir: settings
                .work_dir
                .as_deref()
                .map(under)
                .unwrap_or_else(|| var_dir.join("release/work")),
            k8s: k8s.map(|mut k| {
                k.kubeconfig = k
                    .kubeconfig
                    .as_deref()
                    .map(|p| under(p).to_string_lossy().into_owned());
                k.registry_password_file = k
                    .registry_password_file
                    .as_deref()
                    .map(|p| under(p).to_string_lossy().into_owned());
                k
            }),
            keep: settings.keep.unwrap_or_default(),
        })
    }
}

/// The host path of `path`, an absolute path of the managed system, under the root prefix,
/// its symbolic links resolved as the managed system would resolve them: an absolute target
/// starts again at the root prefix, `..` stops at it. The result never leaves the root prefix,
/// whatever links the tree holds; components that do not exist are appended as they are (a
/// work dir to create). `/` leaves the path as it is; a relative path stays relative.
///
/// The path is resolved once, here: the code that later opens it resolves it again as the
/// host does, so a link planted in between could still redirect that use. These are files the
/// operator configures (keys, CA, password files, kubeconfig, the work dir), not files a
/// managed system's user controls. (tenet-modules resolves the paths of its classes with
/// `openat2(RESOLVE_IN_ROOT)` at each use; this crate depends on no tenet crate.)
pub fn under_root(root: &Path, path: &str) -> PathBuf {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    if root == Path::new("/") || !path.starts_with('/') {
        return PathBuf::from(path);
    }
    let parts = |p: &Path| -> VecDeque<OsString> {
        p.components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n.to_os_string()),
                std::path::Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect()
    };
    // The resolved directories below the root; never a link, never `..`.
    let mut names: Vec<OsString> = Vec::new();
    let mut todo = parts(Path::new(path));
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            names.pop();
            continue;
        }
        let here: PathBuf = root.join(names.iter().collect::<PathBuf>()).join(&name);
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() && links < 40 => {
                links += 1;
                let Ok(target) = std::fs::read_link(&here) else {
                    names.push(name);
                    continue;
                };
                if target.is_absolute() {
                    names.clear();
                }
                for c in parts(&target).into_iter().rev() {
                    todo.push_front(c);
                }
            }
            Ok(_) => names.push(name),
            Err(_) => {
                // Not there: the rest is taken as written (`..` still stopping at the root).
                names.push(name);
                for rest in todo.drain(..) {
                    if rest == ".." {
                        names.pop();
                    } else {
                        names.push(rest);
                    }
                }
            }
        }
    }
    root.join(names.iter().collect::<PathBuf>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> ReleaseRule {
        toml::from_str(text).unwrap()
    }

    fn settings(text: &str) -> ReleaseSettings {
        settings_from_config(&text.parse().unwrap(), "node.toml").unwrap()
    }

    #[test]
    fn the_rule_overrides_the_settings_and_files_are_under_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/k.pub"),
            "-----BEGIN PUBLIC KEY-----\n",
        )
        .unwrap();
        let s = settings(
            r#"[release]
registries = ["https://primary:5000", { url = "http://127.0.0.1:5001", gc = ["gc"] }]
file_stores = ["/srv/lir-f"]
public_key = "/etc/k.pub"
ca_file = "/etc/ca.pem"
[release.k8s]
namespace = "cm"
deployment = "lir-data"
replicas = 3
kubeconfig = "/etc/kube.conf"
"#,
        );
        let spec = rule(
            r#"version = "1.0"
source = "https://x/r.squashfs"
file_stores = ["rsync://h:873/m"]"#,
        )
        .resolve(&s, Path::new("/var/t"), root.path())
        .unwrap();
        assert_eq!(spec.registries.len(), 2);
        assert_eq!(spec.registries[1].gc(), Some(&["gc".to_string()][..]));
        assert_eq!(spec.file_stores, ["rsync://h:873/m"]);
        assert_eq!(spec.signature.as_deref(), Some("https://x/r.squashfs.sig"));
        assert!(spec.public_key_pem.unwrap().starts_with("-----BEGIN"));
        assert_eq!(spec.ca_file, Some(root.path().join("etc/ca.pem")));
        assert_eq!(
            spec.k8s.unwrap().kubeconfig,
            Some(root.path().join("etc/kube.conf").display().to_string())
        );
        assert_eq!(spec.work_dir, Path::new("/var/t/release/work"));
        assert_eq!(spec.keep, KeepSettings::default());
        assert_eq!(spec.keep.releases, 2);
    }

    #[test]
    fn keep_and_replica_credentials_are_read() {
        let root = Path::new("/r");
        let s = settings(
            r#"[release]
registries = ["http://127.0.0.1:5000"]
keep = { releases = 1, bytes = 5000000000 }
[release.k8s]
namespace = "cm"
deployment = "lir-data"
replicas = 3
registry_template = "https://{ip}:5000"
registry_username = "lir"
registry_password_file = "/etc/tenet/lir.password"
"#,
        );
        let spec = rule("version = \"1\"\nstate = \"absent\"")
            .resolve(&s, Path::new("/var/t"), root)
            .unwrap();
        assert_eq!(
            spec.keep,
            KeepSettings {
                releases: 1,
                bytes: Some(5_000_000_000)
            }
        );
        let k = spec.k8s.unwrap();
        assert_eq!(k.registry_username.as_deref(), Some("lir"));
        assert_eq!(
            k.registry_password_file.as_deref(),
            Some("/r/etc/tenet/lir.password")
        );
        // Unknown keep fields are refused, naming the section.
        let err = settings_from_config(
            &"[release]\nkeep = { release = 1 }\n".parse().unwrap(),
            "node.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("node.toml: [release]") && err.contains("release"),
            "{err}"
        );
    }

    #[test]
    fn paths_are_resolved_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("srv")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("k.pub"), "-----BEGIN outside\n").unwrap();
        let link = |t: &Path, at: &str| std::os::unix::fs::symlink(t, root.join(at)).unwrap();
        link(&outside, "etc");
        link(Path::new("../../outside"), "srv/rel");
        link(Path::new("/srv/rel"), "chain");
        link(Path::new("../../../../../.."), "up");
        let inside = root.join(outside.strip_prefix("/").unwrap());
        assert_eq!(under_root(&root, "/etc/k.pub"), inside.join("k.pub"));
        assert_eq!(
            under_root(&root, "/srv/rel/k.pub"),
            root.join("outside/k.pub")
        );
        assert_eq!(
            under_root(&root, "/chain/k.pub"),
            root.join("outside/k.pub")
        );
        assert_eq!(under_root(&root, "/up/srv/x"), root.join("srv/x"));
        assert_eq!(under_root(&root, "/new/../../x"), root.join("x"));
        assert_eq!(
            under_root(Path::new("/"), "/etc/k.pub"),
            Path::new("/etc/k.pub")
        );
        assert_eq!(under_root(&root, "rel/x"), Path::new("rel/x"));
        // The key behind the link is not read from outside the root.
        let s = settings(
            "[release]\nregistries = [\"http://127.0.0.1:5000\"]\npublic_key = \"/etc/k.pub\"\n",
        );
        let err = rule("version = \"1\"\nsource = \"https://x\"")
            .resolve(&s, Path::new("/var/t"), &root)
            .unwrap_err()
            .to_string();
        assert!(err.contains("public_key"), "{err}");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("k.pub"), "-----BEGIN inside\n").unwrap();
        let spec = rule("version = \"1\"\nsource = \"https://x\"")
            .resolve(&s, Path::new("/var/t"), &root)
            .unwrap();
        assert_eq!(spec.public_key_pem.as_deref(), Some("-----BEGIN inside\n"));
    }

    #[test]
    fn bad_rules_name_the_release_and_the_field() {
        let root = Path::new("/nonexistent-root");
        let s = settings("[release]\nregistries = [\"http://127.0.0.1:5000\"]\n");
        for (text, field) in [
            ("version = \"../x\"\nsource = \"https://x\"", "version"),
            ("version = \"1\"", "source"),
            ("version = \"1\"\nsource = \"ftp://x\"", "source"),
            ("version = \"1\"\nsource = \"https://x\"", "public_key"),
            (
                "version = \"1\"\nsource = \"https://x\"\npublic_key = \"/etc/missing.pub\"",
                "public_key",
            ),
            ("version = \"1\"\nsha256 = \"abc\"", "sha256"),
            ("version = \"1\"\nregistries = [\"ftp://r\"]", "registries"),
            (
                "version = \"1\"\nstate = \"absent\"\nregistries = [{ url = \"http://r:5000\", username = \"u\" }]",
                "username and password_file go together",
            ),
            (
                "version = \"1\"\nregistries = []\nfile_stores = []",
                "registries",
            ),
            (
                "version = \"1\"\nstate = \"absent\"\nk8s = { namespace = \"cm\", deployment = \"d\", replicas = 1, registry_template = \"http://x:5000\" }",
                "k8s.registry_template",
            ),
            (
                "version = \"1\"\nstate = \"absent\"\nk8s = { namespace = \"cm\", deployment = \"d\", replicas = 1, registry_template = \"http://{ip}:5000\", registry_username = \"u\" }",
                "k8s.registry_username",
            ),
        ] {
            let err = rule(text)
                .resolve(&s, Path::new("/var/t"), root)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("release "), "{text}: {err}");
            assert!(err.contains(field), "{text}: {err}");
        }
        // An absent release needs no source and no key.
        rule("version = \"1\"\nstate = \"absent\"")
            .resolve(&s, Path::new("/var/t"), root)
            .unwrap();
        // Unknown fields are refused.
        assert!(toml::from_str::<ReleaseRule>("version = \"1\"\nsoruce = \"x\"").is_err());
    }
}

//! Reading a container image from an unpacked release: an OCI image layout directory or a
//! docker-archive `.tar` (what `docker save` and `skopeo copy ... docker-archive:` write).
//!
//! The result, [`LocalImage`], is what a registry push needs: the exact manifest bytes (whose
//! sha256 is the digest the registry must report back) and where every blob's bytes are. An
//! OCI layout may hold a multi-platform image: its `index.json` entry then names an image
//! index (OCI index or Docker manifest list), loaded whole: the index bytes, and every
//! manifest it lists with its config and layers ([`PlatformManifest`]).
//! Blobs are never copied: they are read from the layout's files, or from the archive at the
//! offsets of their tar entries, when they are pushed.
//!
//! Invariants:
//! - No path outside the image's own directory or archive is ever read (blob paths come from
//!   digests that are checked to be `sha256:` + 64 hex digits, and symlinks are resolved and
//!   checked to stay in the layout).
//! - A docker-archive always yields the same manifest bytes, hence the same digest, so a
//!   re-run of a push finds the manifest (and every blob) already there.
//!
//! Loading reads every docker-archive layer once to compute its digest (no extraction): call
//! [`load_image`] from a blocking context (`tokio::task::spawn_blocking`) in async code.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manifest::{ImageEntry, safe_relative};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed OCI layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// gzip-compressed OCI layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// zstd-compressed OCI layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Every manifest media type a registry may answer with (for `Accept`).
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// The annotation an OCI layout's `index.json` names a manifest's tag with.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One blob of an image: a config or a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// The media type the manifest gives it.
    pub media_type: String,
    /// Where its bytes are.
    pub location: BlobLocation,
}

/// Where a blob's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobLocation {
    /// A whole file (an OCI layout's `blobs/sha256/<hex>`).
    File(PathBuf),
    /// `size` bytes at `offset` in a tar archive (a docker-archive entry).
    TarEntry {
        /// The archive.
        tar: PathBuf,
        /// Offset of the entry's data in the archive.
        offset: u64,
    },
    /// In memory (small blobs: configs, tombstones).
    Bytes(Vec<u8>),
}

impl Blob {
    /// A blob held in memory, with its digest computed.
    pub fn from_bytes(data: Vec<u8>, media_type: &str) -> Blob {
        Blob {
            digest: sha256_digest(&data),
            size: data.len() as u64,
            media_type: media_type.to_string(),
            location: BlobLocation::Bytes(data),
        }
    }

    /// A reader over the blob's bytes (exactly `size` of them, or fewer if the file was
    /// truncated: the registry then refuses the digest).
    pub fn reader(&self) -> Result<Box<dyn Read + Send>> {
        match &self.location {
            BlobLocation::Bytes(b) => Ok(Box::new(std::io::Cursor::new(b.clone()))),
            BlobLocation::File(path) => {
                let f = File::open(path).map_err(|e| Error::io(path, e))?;
                Ok(Box::new(f.take(self.size)))
            }
            BlobLocation::TarEntry { tar, offset } => {
                let mut f = File::open(tar).map_err(|e| Error::io(tar, e))?;
                f.seek(SeekFrom::Start(*offset))
                    .map_err(|e| Error::io(tar, e))?;
                Ok(Box::new(f.take(self.size)))
            }
        }
    }

    /// The blob's bytes, all in memory (for small blobs and tests).
    pub fn read_to_vec(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.size.min(1 << 24) as usize);
        self.reader()?
            .read_to_end(&mut out)
            .map_err(|e| Error::io(self.path_for_errors(), e))?;
        Ok(out)
    }

    fn path_for_errors(&self) -> PathBuf {
        match &self.location {
            BlobLocation::File(p) => p.clone(),
            BlobLocation::TarEntry { tar, .. } => tar.clone(),
            BlobLocation::Bytes(_) => PathBuf::from("<memory>"),
        }
    }
}

/// One single-platform image manifest: its exact bytes, its config and its layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformManifest {
    /// `sha256:<hex>` of `manifest`.
    pub digest: String,
    /// The manifest's media type (OCI or Docker v2 schema 2).
    pub media_type: String,
    /// The manifest, exactly the bytes to push.
    pub manifest: Vec<u8>,
    /// `os/architecture[/variant]` as the index says (`None` for a single-platform image, or
    /// an index entry without a platform such as an attestation manifest).
    pub platform: Option<String>,
    /// The config blob.
    pub config: Blob,
    /// The layers, in manifest order.
    pub layers: Vec<Blob>,
}

/// An image ready to be pushed: a single-platform manifest, or an image index (OCI index or
/// Docker manifest list) with the manifests it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    /// Repository name (`calico/cni`).
    pub name: String,
    /// Tag (`v3.26.1`).
    pub tag: String,
    /// The top manifest (the image manifest, or the index), exactly the bytes to push (its
    /// sha256 is [`LocalImage::digest`]).
    pub manifest: Vec<u8>,
    /// The top manifest's media type.
    pub media_type: String,
    /// `sha256:<hex>` of `manifest`.
    pub digest: String,
    /// A single-platform image: one entry, the manifest itself. An index: the manifests it
    /// lists, in its order (pushed before the index, which the registry checks).
    pub platforms: Vec<PlatformManifest>,
}

impl LocalImage {
    /// `name:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    /// Whether the top manifest is an image index (several platforms).
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_MANIFEST_LIST
    }

    /// The manifests an index lists (empty for a single-platform image).
    pub fn children(&self) -> &[PlatformManifest] {
        if self.is_index() {
            &self.platforms
        } else {
            &[]
        }
    }

    /// Every config and layer of every platform, configs first within each platform, each
    /// digest once (platforms and layers may share blobs).
    pub fn blobs(&self) -> Vec<&Blob> {
        let mut seen = std::collections::HashSet::new();
        self.platforms
            .iter()
            .flat_map(|p| std::iter::once(&p.config).chain(p.layers.iter()))
            .filter(|b| seen.insert(b.digest.as_str()))
            .collect()
    }

    /// Total size of [`LocalImage::blobs`].
    pub fn blobs_size(&self) -> u64 {
        self.blobs().iter().map(|b| b.size).sum()
    }

    /// The tags the manifests of an index are pushed under, one per child, derived from the
    /// release's version tag: `<version_tag>-<os>-<arch>[-<variant>]`, or
    /// `<version_tag>-<n>` (n from 1, in index order) for a child without a platform or
    /// sharing its platform with another. Tagging the children keeps them from the
    /// distribution registry's `garbage-collect --delete-untagged`, which (up to 2.8)
    /// deletes every untagged manifest, the children of a tagged index included. Empty for
    /// a single-platform image.
    pub fn child_tags(&self, version_tag: &str) -> Vec<String> {
        let children = self.children();
        let names: Vec<Option<String>> = children
            .iter()
            .map(|c| {
                c.platform.as_ref().map(|p| {
                    p.chars()
                        .map(|ch| {
                            if ch.is_ascii_alphanumeric() || ch == '_' || ch == '.' {
                                ch
                            } else {
                                '-'
                            }
                        })
                        .collect::<String>()
                })
            })
            .collect();
        names
            .iter()
            .enumerate()
            .map(|(i, name)| match name {
                Some(n) if names.iter().filter(|m| m.as_ref() == Some(n)).count() == 1 => {
                    format!("{version_tag}-{n}")
                }
                _ => format!("{version_tag}-{}", i + 1),
            })
            .collect()
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The hex part of a `sha256:` digest, if it is one (64 lower-case hex digits).
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(hex)
}

/// Loads the image `entry` of the release unpacked at `release_root`.
pub fn load_image(release_root: &Path, entry: &ImageEntry) -> Result<LocalImage> {
    let err = |message: String| Error::Image {
        image: entry.reference(),
        message,
    };
    safe_relative(&entry.path).map_err(|e| err(format!("path {:?}: {e}", entry.path)))?;
    let path = release_root.join(&entry.path);
    let root = release_root
        .canonicalize()
        .map_err(|e| Error::io(release_root, e))?;
    let real = path.canonicalize().map_err(|e| Error::io(&path, e))?;
    if !real.starts_with(&root) {
        return Err(err(format!("{} leaves the release", entry.path)));
    }
    let md = std::fs::metadata(&real).map_err(|e| Error::io(&real, e))?;
    let (manifest, media_type, platforms) = if md.is_dir() {
        load_oci_layout(&real, &entry.tag).map_err(|e| into_image_error(e, entry))?
    } else if md.is_file() {
        load_docker_archive(&real, entry).map_err(|e| into_image_error(e, entry))?
    } else {
        return Err(err(format!(
            "{} is neither a directory nor a file",
            entry.path
        )));
    };
    Ok(LocalImage {
        name: entry.name.clone(),
        tag: entry.tag.clone(),
        digest: sha256_digest(&manifest),
        manifest,
        media_type,
        platforms,
    })
}

/// Messages found while reading are plain strings; I/O errors keep their path.
enum LoadError {
    Msg(String),
    Other(Error),
}

impl From<Error> for LoadError {
    fn from(e: Error) -> Self {
        LoadError::Other(e)
    }
}

fn into_image_error(e: LoadError, entry: &ImageEntry) -> Error {
    match e {
        LoadError::Msg(message) => Error::Image {
            image: entry.reference(),
            message,
        },
        LoadError::Other(e) => e,
    }
}

/// The top manifest's bytes, its media type, and its platform manifests.
type Loaded = (Vec<u8>, String, Vec<PlatformManifest>);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: Option<String>,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

impl Platform {
    /// `os/architecture[/variant]`.
    fn text(&self) -> String {
        match &self.variant {
            Some(v) if !v.is_empty() => format!("{}/{}/{v}", self.os, self.architecture),
            _ => format!("{}/{}", self.os, self.architecture),
        }
    }
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    media_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// At most this many manifests in an index (a release image has a handful of platforms).
const MAX_INDEX_MANIFESTS: usize = 64;

fn load_oci_layout(dir: &Path, tag: &str) -> Result<Loaded, LoadError> {
    let layout_file = dir.join("oci-layout");
    let layout: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&layout_file).map_err(|e| Error::io(&layout_file, e))?,
    )
    .map_err(|e| LoadError::Msg(format!("oci-layout: {e}")))?;
    if layout.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
        return Err(LoadError::Msg(
            "oci-layout: imageLayoutVersion is not \"1.0.0\"".into(),
        ));
    }
    let index_file = dir.join("index.json");
    let index: Index =
        serde_json::from_slice(&std::fs::read(&index_file).map_err(|e| Error::io(&index_file, e))?)
            .map_err(|e| LoadError::Msg(format!("index.json: {e}")))?;
    let chosen = match index
        .manifests
        .iter()
        .filter(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
        .collect::<Vec<_>>()
        .as_slice()
    {
        [one] => *one,
        [] if index.manifests.len() == 1 => &index.manifests[0],
        [] if index.manifests.is_empty() => {
            return Err(LoadError::Msg("index.json lists no manifest".into()));
        }
        [] => {
            let names: Vec<&str> = index
                .manifests
                .iter()
                .filter_map(|d| d.annotations.get(REF_NAME).map(String::as_str))
                .collect();
            return Err(LoadError::Msg(format!(
                "index.json lists {} manifests and none is annotated {REF_NAME}={tag:?} \
                 (annotated: {names:?}); multi-manifest layouts need that annotation",
                index.manifests.len()
            )));
        }
        _ => {
            return Err(LoadError::Msg(format!(
                "index.json lists several manifests annotated {REF_NAME}={tag:?}"
            )));
        }
    };
    let (bytes, parsed) = read_manifest(dir, chosen)?;
    let media_type = chosen
        .media_type
        .clone()
        .or(parsed.media_type.clone())
        .unwrap_or_else(|| OCI_MANIFEST.to_string());
    if media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST || parsed.manifests.is_some() {
        if media_type != OCI_INDEX && media_type != DOCKER_MANIFEST_LIST {
            return Err(LoadError::Msg(format!(
                "manifest {} lists manifests but has the media type {media_type}",
                chosen.digest
            )));
        }
        let children = parsed.manifests.as_deref().unwrap_or_default();
        if children.is_empty() {
            return Err(LoadError::Msg(format!(
                "image index {} lists no manifest",
                chosen.digest
            )));
        }
        if children.len() > MAX_INDEX_MANIFESTS {
            return Err(LoadError::Msg(format!(
                "image index {} lists {} manifests (at most {MAX_INDEX_MANIFESTS})",
                chosen.digest,
                children.len()
            )));
        }
        let platforms = children
            .iter()
            .map(|d| {
                let (child_bytes, child) = read_manifest(dir, d)?;
                let mut p = platform_manifest(dir, d, child_bytes, &child)?;
                p.platform = d.platform.as_ref().map(Platform::text);
                Ok(p)
            })
            .collect::<Result<Vec<_>, LoadError>>()?;
        return Ok((bytes, media_type, platforms));
    }
    let platform = platform_manifest(dir, chosen, bytes.clone(), &parsed)?;
    Ok((bytes, media_type, vec![platform]))
}

/// The manifest blob a descriptor names, checked against its digest, and parsed.
fn read_manifest(dir: &Path, d: &Descriptor) -> Result<(Vec<u8>, ManifestDoc), LoadError> {
    let bytes = layout_blob(dir, d, "manifest")?.read_to_vec()?;
    if sha256_digest(&bytes) != d.digest {
        return Err(LoadError::Msg(format!(
            "manifest blob {} does not have its digest",
            d.digest
        )));
    }
    let parsed: ManifestDoc = serde_json::from_slice(&bytes)
        .map_err(|e| LoadError::Msg(format!("manifest {}: {e}", d.digest)))?;
    Ok((bytes, parsed))
}

/// A single-platform manifest with its config and layers found in the layout.
fn platform_manifest(
    dir: &Path,
    d: &Descriptor,
    bytes: Vec<u8>,
    parsed: &ManifestDoc,
) -> Result<PlatformManifest, LoadError> {
    let media_type = d
        .media_type
        .clone()
        .or(parsed.media_type.clone())
        .unwrap_or_else(|| OCI_MANIFEST.to_string());
    if media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST || parsed.manifests.is_some() {
        return Err(LoadError::Msg(format!(
            "manifest {} is an image index inside an image index (not supported)",
            d.digest
        )));
    }
    if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
        return Err(LoadError::Msg(format!(
            "manifest {} has the unsupported media type {media_type}",
            d.digest
        )));
    }
    let config_desc = parsed
        .config
        .as_ref()
        .ok_or_else(|| LoadError::Msg(format!("manifest {} has no config", d.digest)))?;
    let config = layout_blob(dir, config_desc, "config")?;
    let layers = parsed
        .layers
        .iter()
        .map(|l| layout_blob(dir, l, "layer"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PlatformManifest {
        digest: d.digest.clone(),
        media_type,
        manifest: bytes,
        platform: None,
        config,
        layers,
    })
}

/// The blob a descriptor names, checked to be a regular file in `dir/blobs/sha256/` of the
/// descriptor's size.
fn layout_blob(dir: &Path, d: &Descriptor, what: &str) -> Result<Blob, LoadError> {
    let hex = sha256_hex(&d.digest).ok_or_else(|| {
        LoadError::Msg(format!(
            "{what} digest {:?} is not sha256: + 64 hex digits",
            d.digest
        ))
    })?;
    let path = dir.join("blobs").join("sha256").join(hex);
    let real = path.canonicalize().map_err(|e| Error::io(&path, e))?;
    if !real.starts_with(dir) {
        return Err(LoadError::Msg(format!(
            "{what} blob {} is a symlink leaving the layout",
            d.digest
        )));
    }
    let md = std::fs::metadata(&real).map_err(|e| Error::io(&real, e))?;
    if !md.is_file() {
        return Err(LoadError::Msg(format!(
            "{what} blob {} is not a regular file",
            d.digest
        )));
    }
    if md.len() != d.size {
        return Err(LoadError::Msg(format!(
            "{what} blob {} has {} bytes, the manifest says {}",
            d.digest,
            md.len(),
            d.size
        )));
    }
    Ok(Blob {
        digest: d.digest.clone(),
        size: d.size,
        media_type: d.media_type.clone().unwrap_or_default(),
        location: BlobLocation::File(real),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

enum TarNode {
    File {
        offset: u64,
        size: u64,
    },
    /// A symlink, relative to the entry's directory.
    Symlink(String),
    /// A hard link: the archive path of its target.
    Hardlink(String),
}

/// An archive path normalised: no `./`, no empty components; `..` is resolved against `base`
/// and may not climb above the archive root.
fn normalise(base: &[String], path: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = if path.starts_with('/') {
        Vec::new()
    } else {
        base.to_vec()
    };
    for c in Path::new(path).components() {
        match c {
            Component::Normal(s) => out.push(s.to_str()?.to_string()),
            Component::ParentDir => {
                out.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

fn load_docker_archive(tar_path: &Path, entry: &ImageEntry) -> Result<Loaded, LoadError> {
    let file = File::open(tar_path).map_err(|e| Error::io(tar_path, e))?;
    let mut archive = tar::Archive::new(file);
    let mut nodes: HashMap<String, TarNode> = HashMap::new();
    let mut manifest_json = None;
    let bad = |e: std::io::Error| LoadError::Msg(format!("not a readable tar archive: {e}"));
    for item in archive.entries().map_err(bad)? {
        let mut item = item.map_err(bad)?;
        let raw = item.path().map_err(bad)?.to_string_lossy().into_owned();
        let Some(parts) = normalise(&[], &raw) else {
            continue; // climbs above the root: never referenced, never read
        };
        let key = parts.join("/");
        let kind = item.header().entry_type();
        let node = if kind.is_file() || kind.is_contiguous() {
            if key == "manifest.json" {
                let mut buf = Vec::new();
                item.read_to_end(&mut buf).map_err(bad)?;
                manifest_json = Some(buf);
            }
            TarNode::File {
                offset: item.raw_file_position(),
                size: item.size(),
            }
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = item
                .link_name()
                .map_err(bad)?
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if kind.is_symlink() {
                TarNode::Symlink(target)
            } else {
                TarNode::Hardlink(target)
            }
        } else if kind.is_gnu_sparse() {
            return Err(LoadError::Msg(format!(
                "{key} is a sparse tar entry (not supported)"
            )));
        } else {
            continue;
        };
        nodes.insert(key, node);
    }
    let manifest_json = manifest_json.ok_or_else(|| {
        LoadError::Msg("no manifest.json: not a docker-archive (nor an OCI layout dir)".into())
    })?;
    let images: Vec<ArchiveImage> = serde_json::from_slice(&manifest_json)
        .map_err(|e| LoadError::Msg(format!("manifest.json: {e}")))?;
    let wanted = entry.reference();
    let tagged = |t: &String| t == &wanted || t.ends_with(&format!("/{wanted}"));
    let chosen = match images
        .iter()
        .filter(|im| im.repo_tags.iter().flatten().any(tagged))
        .collect::<Vec<_>>()
        .as_slice()
    {
        [one] => *one,
        [] if images.len() == 1 => &images[0],
        [] => {
            return Err(LoadError::Msg(format!(
                "manifest.json lists {} images and none is tagged {wanted}",
                images.len()
            )));
        }
        _ => {
            return Err(LoadError::Msg(format!(
                "manifest.json lists several images tagged {wanted}"
            )));
        }
    };

    let locate = |name: &str| -> Result<(u64, u64), LoadError> {
        let mut parts = normalise(&[], name)
            .ok_or_else(|| LoadError::Msg(format!("{name:?} climbs above the archive")))?;
        for _ in 0..16 {
            match nodes.get(&parts.join("/")) {
                Some(TarNode::File { offset, size }) => return Ok((*offset, *size)),
                Some(TarNode::Symlink(target)) => {
                    let base = &parts[..parts.len() - 1];
                    parts = normalise(base, target).ok_or_else(|| {
                        LoadError::Msg(format!("{name:?}: a symlink climbs above the archive"))
                    })?;
                }
                Some(TarNode::Hardlink(target)) => {
                    parts = normalise(&[], target).ok_or_else(|| {
                        LoadError::Msg(format!("{name:?}: a link climbs above the archive"))
                    })?;
                }
                None => {
                    return Err(LoadError::Msg(format!(
                        "{name:?} is not a file in the archive"
                    )));
                }
            }
        }
        Err(LoadError::Msg(format!("{name:?}: too many links")))
    };

    let (config_offset, config_size) = locate(&chosen.config)?;
    let config_bytes = read_at(tar_path, config_offset, config_size)?;
    let config = Blob::from_bytes(config_bytes, OCI_CONFIG);

    let mut hashed: HashMap<(u64, u64), Blob> = HashMap::new();
    let mut layers = Vec::new();
    for name in &chosen.layers {
        let (offset, size) = locate(name)?;
        if let Some(b) = hashed.get(&(offset, size)) {
            layers.push(b.clone());
            continue;
        }
        let (digest, media_type) = hash_layer(tar_path, offset, size)?;
        let blob = Blob {
            digest,
            size,
            media_type: media_type.to_string(),
            location: BlobLocation::TarEntry {
                tar: tar_path.to_path_buf(),
                offset,
            },
        };
        hashed.insert((offset, size), blob.clone());
        layers.push(blob);
    }

    let descriptor = |b: &Blob| serde_json::json!({"mediaType": b.media_type, "digest": b.digest, "size": b.size});
    // Field order is fixed (serde_json preserve_order) so the bytes, hence the digest, are
    // the same on every run.
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(&config),
        "layers": layers.iter().map(descriptor).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&manifest).expect("a JSON value serialises");
    let platform = PlatformManifest {
        digest: sha256_digest(&bytes),
        media_type: OCI_MANIFEST.to_string(),
        manifest: bytes.clone(),
        platform: None,
        config,
        layers,
    };
    Ok((bytes, OCI_MANIFEST.to_string(), vec![platform]))
}

fn read_at(path: &Path, offset: u64, size: u64) -> Result<Vec<u8>> {
    let blob = Blob {
        digest: String::new(),
        size,
        media_type: String::new(),
        location: BlobLocation::TarEntry {
            tar: path.to_path_buf(),
            offset,
        },
    };
    blob.read_to_vec()
}

/// The digest of a layer in the archive and its media type, from its first bytes (docker
/// save writes uncompressed layers; other tools may gzip or zstd them).
fn hash_layer(path: &Path, offset: u64, size: u64) -> Result<(String, &'static str)> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io(path, e))?;
    let mut r = f.take(size);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        if head.len() < 4 {
            head.extend_from_slice(&buf[..n.min(4 - head.len())]);
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    if total != size {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the archive ends inside a layer",
            ),
        ));
    }
    let media_type = if head.starts_with(&[0x1f, 0x8b]) {
        OCI_LAYER_GZIP
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        OCI_LAYER_ZSTD
    } else {
        OCI_LAYER_TAR
    };
    Ok((format!("sha256:{}", hex::encode(h.finalize())), media_type))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        TestImage, write_docker_archive, write_oci_index_layout, write_oci_layout,
    };

    fn entry(name: &str, tag: &str, path: &str) -> ImageEntry {
        ImageEntry {
            name: name.into(),
            tag: tag.into(),
            path: path.into(),
        }
    }

    #[test]
    fn an_oci_layout_loads_with_its_exact_manifest_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let img = TestImage::new("app", &[b"layer one", b"layer two"]);
        write_oci_layout(&dir.path().join("images/app"), &[(&img, "v1")]).unwrap();
        let loaded = load_image(dir.path(), &entry("app", "v1", "images/app")).unwrap();
        assert_eq!(loaded.manifest, img.manifest);
        assert_eq!(loaded.digest, img.digest);
        assert!(!loaded.is_index());
        let p = &loaded.platforms[0];
        assert_eq!(p.layers.len(), 2);
        assert_eq!(p.layers[1].read_to_vec().unwrap(), img.layers[1]);
        assert_eq!(p.config.read_to_vec().unwrap(), img.config);
    }

    #[test]
    fn a_multi_manifest_layout_is_chosen_by_its_ref_name_annotation() {
        let dir = tempfile::tempdir().unwrap();
        let a = TestImage::new("a", &[b"a"]);
        let b = TestImage::new("b", &[b"b"]);
        write_oci_layout(&dir.path().join("l"), &[(&a, "v1"), (&b, "v2")]).unwrap();
        let loaded = load_image(dir.path(), &entry("x", "v2", "l")).unwrap();
        assert_eq!(loaded.digest, b.digest);
        let err = load_image(dir.path(), &entry("x", "v3", "l"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("none is annotated"), "{err}");
    }

    #[test]
    fn a_multi_platform_index_loads_whole() {
        let dir = tempfile::tempdir().unwrap();
        let amd = TestImage::for_platform("app", "amd64", &[b"shared", b"amd64 only"]);
        let arm = TestImage::for_platform("app", "arm64", &[b"shared", b"arm64 only"]);
        let layout = dir.path().join("l");
        let index = write_oci_index_layout(&layout, &[&amd, &arm], "v1").unwrap();
        let loaded = load_image(dir.path(), &entry("app", "v1", "l")).unwrap();
        assert!(loaded.is_index());
        assert_eq!(loaded.media_type, OCI_INDEX);
        assert_eq!(loaded.manifest, index);
        assert_eq!(loaded.digest, sha256_digest(&index));
        let platforms: Vec<_> = loaded
            .children()
            .iter()
            .map(|p| (p.platform.clone().unwrap(), p.digest.clone()))
            .collect();
        assert_eq!(
            platforms,
            vec![
                ("linux/amd64".to_string(), amd.digest.clone()),
                ("linux/arm64".to_string(), arm.digest.clone())
            ]
        );
        assert_eq!(loaded.platforms[1].manifest, arm.manifest);
        assert_eq!(
            loaded.platforms[1].config.read_to_vec().unwrap(),
            arm.config
        );
        // The shared layer is one blob: 2 configs + 3 distinct layers.
        assert_eq!(loaded.blobs().len(), 5);
        assert_eq!(
            loaded.child_tags("9.0-v1"),
            vec![
                "9.0-v1-linux-amd64".to_string(),
                "9.0-v1-linux-arm64".to_string()
            ]
        );

        // A child manifest missing from the layout is named.
        std::fs::remove_file(
            layout
                .join("blobs/sha256")
                .join(sha256_hex(&arm.digest).unwrap()),
        )
        .unwrap();
        let err = load_image(dir.path(), &entry("app", "v1", "l"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(sha256_hex(&arm.digest).unwrap()), "{err}");
    }

    #[test]
    fn nested_indexes_and_children_without_platform_are_handled() {
        let dir = tempfile::tempdir().unwrap();
        let img = TestImage::new("app", &[b"x"]);
        let layout = dir.path().join("l");
        write_oci_layout(&layout, &[(&img, "v1")]).unwrap();
        let put = |v: &serde_json::Value| {
            let b = serde_json::to_vec(v).unwrap();
            let d = sha256_digest(&b);
            std::fs::write(
                layout.join("blobs/sha256").join(sha256_hex(&d).unwrap()),
                &b,
            )
            .unwrap();
            (d, b.len())
        };
        // Two children without a platform: tagged by position.
        let (inner, inner_len) = put(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": img.digest, "size": img.manifest.len()},
            {"mediaType": OCI_MANIFEST, "digest": img.digest, "size": img.manifest.len()},
        ]}));
        let top = |d: &str, n: usize| {
            serde_json::json!({"schemaVersion": 2, "manifests": [
                {"mediaType": OCI_INDEX, "digest": d, "size": n,
                 "annotations": {"org.opencontainers.image.ref.name": "v1"}}]})
            .to_string()
        };
        std::fs::write(layout.join("index.json"), top(&inner, inner_len)).unwrap();
        let loaded = load_image(dir.path(), &entry("app", "v1", "l")).unwrap();
        assert_eq!(
            loaded.child_tags("v"),
            vec!["v-1".to_string(), "v-2".to_string()]
        );
        // An index inside an index is refused, naming it.
        let (outer, outer_len) = put(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_INDEX, "digest": inner, "size": inner_len}]}));
        std::fs::write(layout.join("index.json"), top(&outer, outer_len)).unwrap();
        let err = load_image(dir.path(), &entry("app", "v1", "l"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("image app:v1") && err.contains("inside an image index"),
            "{err}"
        );
    }

    #[test]
    fn blob_paths_may_not_leave_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let img = TestImage::new("app", &[b"x"]);
        let layout = dir.path().join("l");
        write_oci_layout(&layout, &[(&img, "v1")]).unwrap();
        // A layer blob replaced by a symlink to a file outside the layout.
        std::fs::write(dir.path().join("outside"), &img.layers[0]).unwrap();
        let layer = layout
            .join("blobs/sha256")
            .join(sha256_hex(&sha256_digest(&img.layers[0])).unwrap());
        std::fs::remove_file(&layer).unwrap();
        std::os::unix::fs::symlink("../../../outside", &layer).unwrap();
        let err = load_image(dir.path(), &entry("app", "v1", "l"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("leaving the layout"), "{err}");
        // And an entry path leaving the release.
        let err = load_image(&layout, &entry("app", "v1", "../l"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`..`"), "{err}");
    }

    #[test]
    fn a_docker_archive_yields_the_same_manifest_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let img = TestImage::new("arch", &[b"first layer", b"second layer"]);
        let tar = dir.path().join("arch.tar");
        write_docker_archive(&tar, &img, "arch/app:v1").unwrap();
        let e = entry("arch/app", "v1", "arch.tar");
        let one = load_image(dir.path(), &e).unwrap();
        let two = load_image(dir.path(), &e).unwrap();
        assert_eq!(one.digest, two.digest);
        assert_eq!(one.manifest, two.manifest);
        let p = &one.platforms[0];
        assert_eq!(p.digest, one.digest);
        assert_eq!(p.layers[0].digest, sha256_digest(&img.layers[0]));
        assert_eq!(p.layers[0].media_type, OCI_LAYER_TAR);
        assert_eq!(p.layers[1].read_to_vec().unwrap(), img.layers[1]);
        assert_eq!(p.config.read_to_vec().unwrap(), img.config);
        assert!(matches!(
            p.layers[0].location,
            BlobLocation::TarEntry { .. }
        ));
    }
}

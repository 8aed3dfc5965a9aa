//! The release manifest, `release.toml` at the root of a release's squashfs, and the layout
//! check of an unpacked release.
//!
//! ```toml
//! version = "9999.0.0.0-1052647"      # must equal the rule's version
//!
//! [[files]]                            # every file under files/, and nothing else
//! path = "install-control.yaml"        # relative to files/; goes to <store>/<version>/<path>
//! size = 4120
//! sha256 = "5d41402abc4b2a76b9719d911017c592..."
//!
//! [[images]]
//! name = "calico/apiserver"            # repository in the registries
//! tag = "v3.26.1"                      # pushed as name:tag and name:<version>-<tag>
//! path = "images/calico-apiserver"     # an OCI image layout directory, or a docker-archive .tar
//! ```
//!
//! Invariant: a manifest that passed [`ReleaseManifest::parse`] has safe relative paths (no
//! `..`, not absolute), valid OCI repository names and tags (including `<version>-<tag>`), and
//! no duplicate file paths or `name:tag`s.

use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The manifest's file name at the release root.
pub const MANIFEST_FILE: &str = "release.toml";
/// The directory, at the release root, whose files go to the file stores.
pub const FILES_DIR: &str = "files";

/// What a release holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseManifest {
    /// The release version.
    pub version: String,
    /// Files for the file stores.
    #[serde(default)]
    pub files: Vec<FileEntry>,
    /// Images for the registries.
    #[serde(default)]
    pub images: Vec<ImageEntry>,
}

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path relative to `files/` (and to `<store>/<version>/`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256, lower-case hex.
    pub sha256: String,
}

/// One image of a release.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    /// The repository name (`calico/apiserver`).
    pub name: String,
    /// The tag (`v3.26.1`).
    pub tag: String,
    /// Path relative to the release root: an OCI image layout directory, or a docker-archive
    /// `.tar` (what `docker save` / `skopeo copy ... docker-archive:` write).
    pub path: String,
}

impl ImageEntry {
    /// `name:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    /// The version-scoped tag, `<version>-<tag>` (lir-svc's convention).
    pub fn version_tag(&self, version: &str) -> String {
        format!("{version}-{}", self.tag)
    }
}

impl ReleaseManifest {
    /// Parses and validates a manifest (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<ReleaseManifest> {
        let m: ReleaseManifest = toml::from_str(text)
            .map_err(|e| Error::Layout(format!("{origin}: {}", e.to_string().trim_end())))?;
        m.validate(origin)?;
        Ok(m)
    }

    /// Reads `release.toml` under `root`.
    pub fn load(root: &Path) -> Result<ReleaseManifest> {
        let path = root.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Layout(format!("{MANIFEST_FILE} is missing at the release root"))
            } else {
                Error::io(&path, e)
            }
        })?;
        ReleaseManifest::parse(&text, MANIFEST_FILE)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let bad = |what: String| Err(Error::Layout(format!("{origin}: {what}")));
        if let Err(e) = validate_version(&self.version) {
            return bad(format!("version: {e}"));
        }
        let mut paths = HashSet::new();
        for (i, f) in self.files.iter().enumerate() {
            if let Err(e) = safe_relative(&f.path) {
                return bad(format!("files[{i}].path {:?}: {e}", f.path));
            }
            if f.sha256.len() != 64
                || !f
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return bad(format!(
                    "files[{i}].sha256 {:?}: not 64 lower-case hex digits",
                    f.sha256
                ));
            }
            if !paths.insert(f.path.as_str()) {
                return bad(format!("files[{i}].path {:?} is listed twice", f.path));
            }
        }
        let mut refs = HashSet::new();
        for (i, im) in self.images.iter().enumerate() {
            if let Err(e) = validate_repository(&im.name) {
                return bad(format!("images[{i}].name {:?}: {e}", im.name));
            }
            if let Err(e) = validate_tag(&im.tag) {
                return bad(format!("images[{i}].tag {:?}: {e}", im.tag));
            }
            if let Err(e) = validate_tag(&im.version_tag(&self.version)) {
                return bad(format!(
                    "images[{i}]: the version tag {:?}: {e}",
                    im.version_tag(&self.version)
                ));
            }
            if let Err(e) = safe_relative(&im.path) {
                return bad(format!("images[{i}].path {:?}: {e}", im.path));
            }
            if !refs.insert(im.reference()) {
                return bad(format!("images[{i}] {} is listed twice", im.reference()));
            }
        }
        Ok(())
    }

    /// Checks an unpacked release against this manifest: the version is `version`, every
    /// listed file exists under `files/` with its size and sha256, no unlisted file is there,
    /// and every image path exists. Returns every problem, not only the first.
    pub fn check_layout(&self, root: &Path, version: &str) -> Result<()> {
        let mut problems = Vec::new();
        if self.version != version {
            problems.push(format!(
                "{MANIFEST_FILE} is for version {:?}, not {version:?}",
                self.version
            ));
        }
        let files_dir = root.join(FILES_DIR);
        let mut listed = BTreeSet::new();
        for f in &self.files {
            listed.insert(PathBuf::from(&f.path));
            let path = files_dir.join(&f.path);
            match std::fs::symlink_metadata(&path) {
                Err(_) => problems.push(format!("{FILES_DIR}/{} is missing", f.path)),
                Ok(md) if !md.is_file() => {
                    problems.push(format!("{FILES_DIR}/{} is not a regular file", f.path))
                }
                Ok(md) if md.len() != f.size => problems.push(format!(
                    "{FILES_DIR}/{}: size {} instead of {}",
                    f.path,
                    md.len(),
                    f.size
                )),
                Ok(_) => {
                    let actual = sha256_file(&path)?;
                    if actual != f.sha256 {
                        problems.push(format!(
                            "{FILES_DIR}/{}: sha256 {actual} instead of {}",
                            f.path, f.sha256
                        ));
                    }
                }
            }
        }
        if files_dir.is_dir() {
            for rel in walk_files(&files_dir)? {
                if !listed.contains(&rel) {
                    problems.push(format!(
                        "{FILES_DIR}/{} is not listed in {MANIFEST_FILE}",
                        rel.display()
                    ));
                }
            }
        }
        for im in &self.images {
            if std::fs::symlink_metadata(root.join(&im.path)).is_err() {
                problems.push(format!("image {}: {} is missing", im.reference(), im.path));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Layout(problems.join("; ")))
        }
    }
}

/// The sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Regular files under `dir`, as paths relative to it, sorted (symlinks are listed as files:
/// the unsquash step has already refused any that leave the tree).
pub fn walk_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        let rd = std::fs::read_dir(&abs).map_err(|e| Error::io(&abs, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(&abs, e))?;
            let ft = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
            let child = rel.join(entry.file_name());
            if ft.is_dir() {
                stack.push(child);
            } else {
                out.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A relative path that stays where it is put: not empty, not absolute, no `..`.
pub fn safe_relative(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty".into());
    }
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("contains `..`".into()),
            Component::RootDir | Component::Prefix(_) => return Err("is absolute".into()),
        }
    }
    Ok(())
}

/// A release version: a tag's alphabet (`[A-Za-z0-9_][A-Za-z0-9._-]*`), at most 100 chars,
/// since it becomes part of tags and of file-store paths.
pub fn validate_version(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("empty".into());
    }
    if v.len() > 100 {
        return Err("longer than 100 characters".into());
    }
    if v.starts_with(['.', '-']) {
        return Err("must start with a letter, digit or `_`".into());
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "character {c:?} is not allowed (letters, digits, . _ -)"
        ));
    }
    Ok(())
}

/// An OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn validate_tag(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 128 {
        return Err("a tag has 1 to 128 characters".into());
    }
    if t.starts_with(['.', '-']) {
        return Err("a tag starts with a letter, digit or `_`".into());
    }
    if let Some(c) = t
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("character {c:?} is not allowed in a tag"));
    }
    Ok(())
}

/// An OCI repository name: `/`-separated components of `[a-z0-9]+` joined by `.`, `_`, `__`
/// or `-`s.
pub fn validate_repository(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err("a repository name has 1 to 255 characters".into());
    }
    for comp in name.split('/') {
        let ok = !comp.is_empty()
            && comp.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && comp.as_bytes()[0].is_ascii_alphanumeric()
            && comp.as_bytes()[comp.len() - 1].is_ascii_alphanumeric()
            && !comp.contains("..")
            && !comp.contains("___")
            && !comp.contains("._")
            && !comp.contains("_.")
            && !comp.contains(".-")
            && !comp.contains("-.");
        if !ok {
            return Err(format!(
                "component {comp:?} is not lower-case letters and digits joined by `.`, `_`, `__` or `-`"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
version = "9999.0.0.0-1052647"
[[files]]
path = "install-control.yaml"
size = 3
sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
[[images]]
name = "calico/apiserver"
tag = "v3.26.1"
path = "images/calico-apiserver"
"#;

    #[test]
    fn a_good_manifest_parses_and_names_its_tags() {
        let m = ReleaseManifest::parse(GOOD, "release.toml").unwrap();
        assert_eq!(m.images[0].reference(), "calico/apiserver:v3.26.1");
        assert_eq!(
            m.images[0].version_tag(&m.version),
            "9999.0.0.0-1052647-v3.26.1"
        );
    }

    #[test]
    fn bad_manifests_name_the_field() {
        for (edit, needle) in [
            (("install-control.yaml", "../etc/passwd"), "files[0].path"),
            (("install-control.yaml", "/etc/passwd"), "is absolute"),
            (("calico/apiserver", "Calico/API"), "images[0].name"),
            (("v3.26.1", "-v3"), "images[0].tag"),
            (("9999.0.0.0-1052647", "9999 0"), "version"),
            (("ba7816bf", "BA7816BF"), "files[0].sha256"),
            (("path = \"images/", "paht = \"images/"), "unknown field"),
        ] {
            let text = GOOD.replacen(edit.0, edit.1, 1);
            let err = ReleaseManifest::parse(&text, "release.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{edit:?}: {err}");
        }
    }

    #[test]
    fn layout_check_lists_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("files/sub")).unwrap();
        std::fs::write(root.join("files/install-control.yaml"), "abd").unwrap();
        std::fs::write(root.join("files/sub/extra"), "x").unwrap();
        let m = ReleaseManifest::parse(GOOD, "release.toml").unwrap();
        let err = m.check_layout(root, "other").unwrap_err().to_string();
        assert!(err.contains("not \"other\""), "{err}");
        assert!(err.contains("files/install-control.yaml: sha256"), "{err}");
        assert!(err.contains("files/sub/extra is not listed"), "{err}");
        assert!(err.contains("images/calico-apiserver is missing"), "{err}");

        std::fs::write(root.join("files/install-control.yaml"), "abc").unwrap();
        std::fs::remove_file(root.join("files/sub/extra")).unwrap();
        std::fs::create_dir_all(root.join("images/calico-apiserver")).unwrap();
        m.check_layout(root, "9999.0.0.0-1052647").unwrap();
    }
}

//! Release test parts: a release builder (OCI image layouts, files, `release.toml`, a squashfs
//! made by the real `mksquashfs`, a detached signature made by the real `openssl`) and an HTTP
//! file server on 127.0.0.1 that honours `Range`, sends a `Digest` header on request, and can
//! drop a connection midway or corrupt a byte, recording every request it got.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// One request the server got.
#[derive(Debug, Clone)]
pub struct Request {
    /// The path.
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

/// How the server misbehaves for a path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Drop the connection after this many body bytes, on the first N requests.
    pub drop_after: Option<(u64, u32)>,
    /// Flip the byte at this offset in every response.
    pub corrupt_at: Option<u64>,
    /// Send `Digest: sha-256=<base64>` of the (uncorrupted) file.
    pub digest_header: bool,
}

#[derive(Default)]
struct ServerState {
    files: HashMap<String, PathBuf>,
    faults: HashMap<String, Faults>,
    drops_done: HashMap<String, u32>,
    requests: Vec<Request>,
}

/// An HTTP/1.1 file server on 127.0.0.1 (a thread per connection; stops with the process).
pub struct FileServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    state: Arc<Mutex<ServerState>>,
}

impl FileServer {
    /// Starts serving on a free port.
    pub fn start() -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(ServerState::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &st);
                });
            }
        });
        FileServer { base, state }
    }

    /// Serves `file` at `/name`; returns its URL.
    pub fn add(&self, name: &str, file: &Path) -> String {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(format!("/{name}"), file.to_path_buf());
        format!("{}/{name}", self.base)
    }

    /// Sets the faults of `/name`.
    pub fn set_faults(&self, name: &str, faults: Faults) {
        let mut st = self.state.lock().unwrap();
        st.faults.insert(format!("/{name}"), faults);
        st.drops_done.remove(&format!("/{name}"));
    }

    /// The requests received so far for `/name`.
    pub fn requests(&self, name: &str) -> Vec<Request> {
        let path = format!("/{name}");
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

fn serve(conn: TcpStream, state: &Mutex<ServerState>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut range = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("range")
            {
                range = Some(v.trim().to_string());
            }
        }
        let (file, faults, drop_now) = {
            let mut st = state.lock().unwrap();
            st.requests.push(Request {
                path: path.clone(),
                range: range.clone(),
            });
            let file = st.files.get(&path).cloned();
            let faults = st.faults.get(&path).copied().unwrap_or_default();
            let drop_now = match faults.drop_after {
                Some((_, times)) => {
                    let done = st.drops_done.entry(path.clone()).or_insert(0);
                    if *done < times {
                        *done += 1;
                        true
                    } else {
                        false
                    }
                }
                None => false,
            };
            (file, faults, drop_now)
        };
        let Some(file) = file else {
            out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        };
        let mut data = std::fs::read(&file)?;
        let total = data.len() as u64;
        let mut headers = String::new();
        if faults.digest_header {
            let d = Sha256::digest(&data);
            headers.push_str(&format!(
                "Digest: sha-256={}\r\n",
                base64::engine::general_purpose::STANDARD.encode(d)
            ));
        }
        if let Some(at) = faults.corrupt_at
            && (at as usize) < data.len()
        {
            data[at as usize] ^= 0xff;
        }
        let start = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| *s < total);
        let (status, body) = match start {
            Some(s) => {
                headers.push_str(&format!(
                    "Content-Range: bytes {s}-{}/{total}\r\n",
                    total - 1
                ));
                ("206 Partial Content", &data[s as usize..])
            }
            None => ("200 OK", &data[..]),
        };
        out.write_all(
            format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nETag: \"v1\"\r\n{headers}\r\n",
                body.len()
            )
            .as_bytes(),
        )?;
        if method == "HEAD" {
            continue;
        }
        match (drop_now, faults.drop_after) {
            (true, Some((after, _))) => {
                let n = (after as usize).min(body.len());
                out.write_all(&body[..n])?;
                out.flush()?;
                let _ = out.shutdown(std::net::Shutdown::Both);
                return Ok(());
            }
            _ => out.write_all(body)?,
        }
    }
}

/// A generated release on disk.
pub struct BuiltRelease {
    /// The version.
    pub version: String,
    /// The squashfs.
    pub squashfs: PathBuf,
    /// Its detached signature (`openssl dgst -sha256 -sign`).
    pub signature: PathBuf,
    /// The public key (PEM).
    pub public_key: PathBuf,
    /// The squashfs sha256 (hex).
    pub sha256: String,
    /// `(name, tag)` of its images.
    pub images: Vec<(String, String)>,
    /// Paths (relative to files/) of its files.
    pub files: Vec<String>,
}

/// What to put in a release.
pub struct ReleaseRecipe<'a> {
    /// The version.
    pub version: &'a str,
    /// Images: `(name, tag, layers)`; each layer is `(file name in the layer, content)`.
    pub images: Vec<(&'a str, &'a str, Vec<(String, Vec<u8>)>)>,
    /// Files: `(relative path, content)`.
    pub files: Vec<(&'a str, Vec<u8>)>,
    /// A symlink to put in the tree `(path, target)` (to test refusals).
    pub symlink: Option<(&'a str, &'a str)>,
}

fn tar_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    // A plain ustar archive, deterministic (mtime 0, root-owned, mode 0644).
    let mut out = Vec::new();
    for (name, data) in entries {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn put_blob(layout: &Path, data: &[u8]) -> (String, u64) {
    let hex = hex::encode(Sha256::digest(data));
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&hex), data).unwrap();
    (format!("sha256:{hex}"), data.len() as u64)
}

/// Writes an OCI image layout for one image.
pub fn write_oci_layout(dir: &Path, tag: &str, layers: &[(String, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (name, data) in layers {
        let tar = tar_of(&[(name.clone(), data.clone())]);
        diff_ids.push(format!("sha256:{}", hex::encode(Sha256::digest(&tar))));
        let (digest, size) = put_blob(dir, &tar);
        layer_descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest, "size": size
        }));
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"org.opencontainers.image.version": tag}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    });
    let (cdigest, csize) = put_blob(dir, &serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": csize},
        "layers": layer_descs
    });
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    let (mdigest, msize) = put_blob(dir, &mbytes);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": mdigest, "size": msize,
            "annotations": {"org.opencontainers.image.ref.name": tag}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Runs a command, panicking with its stderr when it fails.
pub fn must(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (is it installed? .ci/run installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An ECDSA P-256 signing key made by openssl in `dir`: (private key, public key).
pub fn signing_key(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("signing.key");
    let public = dir.join("signing.pub");
    if !key.exists() {
        must(
            Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                ])
                .arg(&key),
        );
        must(
            Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(&public),
        );
    }
    (key, public)
}

/// Builds a release in `dir`: the tree, `release.toml`, the squashfs and its signature.
pub fn build_release(dir: &Path, recipe: &ReleaseRecipe) -> BuiltRelease {
    let tree = dir.join(format!("tree-{}", recipe.version));
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(tree.join("files")).unwrap();
    let mut manifest = format!("version = \"{}\"\n", recipe.version);
    for (path, data) in &recipe.files {
        let p = tree.join("files").join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        manifest.push_str(&format!(
            "\n[[files]]\npath = \"{path}\"\nsize = {}\nsha256 = \"{}\"\n",
            data.len(),
            hex::encode(Sha256::digest(data))
        ));
    }
    for (name, tag, layers) in &recipe.images {
        let rel = format!("images/{}-{tag}", name.replace('/', "-"));
        write_oci_layout(&tree.join(&rel), tag, layers);
        manifest.push_str(&format!(
            "\n[[images]]\nname = \"{name}\"\ntag = \"{tag}\"\npath = \"{rel}\"\n"
        ));
    }
    if let Some((path, target)) = recipe.symlink {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    }
    std::fs::write(tree.join("release.toml"), manifest).unwrap();
    let squashfs = dir.join(format!("{}.squashfs", recipe.version));
    let _ = std::fs::remove_file(&squashfs);
    must(Command::new("mksquashfs").arg(&tree).arg(&squashfs).args([
        "-noappend",
        "-quiet",
        "-no-progress",
        "-all-root",
    ]));
    let (key, public_key) = signing_key(dir);
    let signature = dir.join(format!("{}.squashfs.sig", recipe.version));
    must(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&key)
            .arg("-out")
            .arg(&signature)
            .arg(&squashfs),
    );
    let mut bytes = Vec::new();
    std::fs::File::open(&squashfs)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    BuiltRelease {
        version: recipe.version.to_string(),
        sha256: hex::encode(Sha256::digest(&bytes)),
        squashfs,
        signature,
        public_key,
        images: recipe
            .images
            .iter()
            .map(|(n, t, _)| (n.to_string(), t.to_string()))
            .collect(),
        files: recipe.files.iter().map(|(p, _)| p.to_string()).collect(),
    }
}

/// Deterministic filler bytes (a layer's content), `n` long, varying with `seed`.
pub fn filler(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

//! Test helpers (feature `testing`, and the crate's own tests): a real `docker-registry` and a
//! real `rsync --daemon` on 127.0.0.1, and tiny test images written as OCI layouts or
//! docker-archives.
//!
//! **These spawn processes** (`docker-registry serve`, `rsync --daemon --no-detach`) with
//! their config and data in a temp dir; each is killed and waited for when its handle is
//! dropped, and the temp dir removed. They write nothing outside the temp dir (no /etc).
//! Ports are free ports found by binding 127.0.0.1:0 (a small race with other processes
//! is possible; start retries once on another port).

use std::io::Write;

use base64::Engine as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::image::{OCI_CONFIG, OCI_INDEX, OCI_LAYER_TAR, OCI_MANIFEST, sha256_digest, sha256_hex};

/// The Debian package that provides each external program the tests run.
const TOOL_PACKAGES: &[(&str, &str)] = &[
    ("docker-registry", "docker-registry"),
    ("skopeo", "skopeo"),
    ("rsync", "rsync"),
    ("mksquashfs", "squashfs-tools"),
    ("unsquashfs", "squashfs-tools"),
    ("dnsmasq", "dnsmasq-base"),
    ("ip", "iproute2"),
    ("openssl", "openssl"),
    ("unshare", "util-linux"),
    ("mount", "mount"),
    ("dpkg-deb", "dpkg"),
    ("python3", "python3"),
    ("script", "bsdutils"),
    ("crontab", "cron"),
    ("visudo", "sudo"),
    ("pwck", "passwd"),
    ("grpck", "passwd"),
    ("useradd", "passwd"),
    ("ssh-keygen", "openssh-client"),
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
];

/// A `Command` for an external program a test needs. When the program is not on `PATH` the
/// test fails at once with one line naming the Debian package to install (and the script
/// that installs them all), instead of an obscure spawn error later.
pub fn tool(program: &str) -> Command {
    // /usr/sbin and /sbin too: dnsmasq lives there, off a non-root user's PATH.
    let dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]);
    let found = dirs.map(|d| d.join(program)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    });
    let Some(found) = found else {
        let package = TOOL_PACKAGES
            .iter()
            .find(|(p, _)| *p == program)
            .map_or(program, |(_, package)| package);
        panic!(
            "{program} not found on PATH: install the Debian package {package} \
             (scripts/install-test-deps installs every package the tests use)"
        );
    };
    Command::new(found)
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("127.0.0.1:0", e))?;
    Ok(l.local_addr()
        .map_err(|e| Error::io("127.0.0.1:0", e))?
        .port())
}

fn command_error(command: &str, message: impl Into<String>) -> Error {
    Error::Command {
        command: command.to_string(),
        message: message.into(),
    }
}

/// Waits until something accepts TCP connections on `port`, or the child exits, or 20 s
/// pass (a start-up wait, not an assertion about time).
fn wait_listening(
    child: &mut Child,
    ip: Ipv4Addr,
    port: u16,
    what: &str,
    log: &Path,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect((ip, port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(command_error(
                what,
                format!("exited with {status} before listening: {}", tail(&log)),
            ));
        }
        if Instant::now() > deadline {
            return Err(command_error(what, format!("not listening on {port}")));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// A `docker-registry serve` on 127.0.0.1 with deletes enabled and storage in a temp dir.
/// Killed on drop.
pub struct RegistryProcess {
    child: Child,
    ip: Ipv4Addr,
    port: u16,
    tls: bool,
    dir: tempfile::TempDir,
}

impl RegistryProcess {
    /// Starts a registry on a free port and waits until it listens.
    pub fn start() -> Result<RegistryProcess> {
        match Self::start_once(Ipv4Addr::LOCALHOST, None) {
            Ok(r) => Ok(r),
            Err(_) => Self::start_once(Ipv4Addr::LOCALHOST, None), // the free port may have been taken meanwhile
        }
    }

    /// Starts a registry on `ip:port` (a loopback address such as 127.0.0.9 stands for a
    /// replica pod of that IP).
    pub fn start_at(ip: Ipv4Addr, port: u16) -> Result<RegistryProcess> {
        Self::start_once(ip, Some(port))
    }

    /// Starts a registry on a free port serving HTTPS with `cert`/`key` and requiring the
    /// HTTP Basic credentials of the `htpasswd` file (bcrypt entries).
    pub fn start_secured(cert: &Path, key: &Path, htpasswd: &Path) -> Result<RegistryProcess> {
        let secured = format!(
            "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: tenet-test\n    path: {}\n",
            cert.display(),
            key.display(),
            htpasswd.display()
        );
        let mut r = Self::start_with(Ipv4Addr::LOCALHOST, None, &secured)?;
        r.tls = true;
        Ok(r)
    }

    /// Starts a registry on a free port (plain HTTP) whose `auth: token` trusts `token`'s
    /// signing certificate (`rootcertbundle`) and sends clients to its realm.
    pub fn start_with_token(token: &TokenServer) -> Result<RegistryProcess> {
        Self::start_at_with_token(Ipv4Addr::LOCALHOST, None, token)
    }

    /// [`RegistryProcess::start_with_token`] on `ip` and `port` (a free one when `None`).
    pub fn start_at_with_token(
        ip: Ipv4Addr,
        port: Option<u16>,
        token: &TokenServer,
    ) -> Result<RegistryProcess> {
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            token.realm(),
            TokenServer::SERVICE,
            TokenServer::ISSUER,
            token.certificate().display()
        );
        Self::start_with(ip, port, &auth)
    }

    fn start_once(ip: Ipv4Addr, port: Option<u16>) -> Result<RegistryProcess> {
        Self::start_with(ip, port, "")
    }

    fn start_with(ip: Ipv4Addr, port: Option<u16>, extra: &str) -> Result<RegistryProcess> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let data = dir.path().join("data");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: {ip}:{port}\n{extra}",
            data.display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).map_err(|e| Error::io(&cfg, e))?;
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
        let log2 = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
        let mut child = tool("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| command_error("docker-registry serve", e.to_string()))?;
        if let Err(e) = wait_listening(&mut child, ip, port, "docker-registry serve", &log_path) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(RegistryProcess {
            child,
            ip,
            port,
            tls: false,
            dir,
        })
    }

    /// `127.0.0.1:<port>` (or the address it was started at).
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// `http://<addr>` (`https://` when secured), the spec for
    /// [`crate::registry::Registry::parse`].
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr())
    }

    /// The registry's config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// The storage root directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The garbage collection command for this registry (deleting untagged manifests).
    pub fn gc_command(&self) -> Vec<String> {
        vec![
            "docker-registry".into(),
            "garbage-collect".into(),
            "--delete-untagged".into(),
            self.config_path().display().to_string(),
        ]
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The access log lines so far (`127.0.0.1 - - [...] "PUT /v2/... HTTP/1.1" 201 ...`).
    pub fn access_log(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("\" ") && l.contains(" HTTP/1.1\" "))
            .map(str::to_string)
            .collect()
    }

    /// The blob uploads the registry completed so far (one `PUT .../blobs/uploads/...`
    /// answered 201 per blob), as access log lines.
    pub fn blob_uploads(&self) -> Vec<String> {
        self.access_log()
            .into_iter()
            .filter(|l| {
                l.contains("\"PUT /v2/") && l.contains("/blobs/uploads/") && l.contains("\" 201 ")
            })
            .collect()
    }

    /// The cross-repository mounts the registry completed so far (`POST ...?mount=...`
    /// answered 201), as access log lines.
    pub fn blob_mounts(&self) -> Vec<String> {
        self.access_log()
            .into_iter()
            .filter(|l| l.contains("\"POST /v2/") && l.contains("mount=") && l.contains("\" 201 "))
            .collect()
    }
}

/// One request a [`TokenServer`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The `scope` values asked for.
    pub scopes: Vec<String>,
    /// Whether it carried the right credentials.
    pub authenticated: bool,
    /// The HTTP status answered.
    pub status: u16,
}

struct TokenState {
    requests: Vec<TokenRequest>,
    tokens: Vec<String>,
}

/// A token server for the distribution token protocol on 127.0.0.1, as a registry's
/// `auth.token.realm`: `GET /token?service=...&scope=...` with the right HTTP Basic
/// credentials gets a JWT (ES256, signed with a P-256 key whose self-signed certificate,
/// made by the real `openssl`, is in the `x5c` header and is the registry's
/// `rootcertbundle`) granting every action asked for; without them, or with wrong ones, a
/// 401. Stops when dropped.
pub struct TokenServer {
    port: u16,
    dir: tempfile::TempDir,
    state: std::sync::Arc<std::sync::Mutex<TokenState>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TokenServer {
    /// The registry's service name (the tokens' audience).
    pub const SERVICE: &'static str = "tenet-test-registry";
    /// The tokens' issuer.
    pub const ISSUER: &'static str = "tenet-test-issuer";

    /// Starts a token server accepting `username` / `password`.
    pub fn start(username: &str, password: &str) -> Result<TokenServer> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let key = dir.path().join("token.key");
        let cert = dir.path().join("token.crt");
        let der_key = dir.path().join("token.p8");
        let der_cert = dir.path().join("token.der");
        must(
            tool("openssl")
                .args(["genpkey", "-algorithm", "EC"])
                .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
                .arg(&key),
        )?;
        must(
            tool("openssl")
                .args(["req", "-x509", "-new", "-key"])
                .arg(&key)
                .args(["-subj", "/CN=tenet test token signer", "-days", "2", "-out"])
                .arg(&cert),
        )?;
        must(
            tool("openssl")
                .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(&der_key),
        )?;
        must(
            tool("openssl")
                .args(["x509", "-outform", "DER", "-in"])
                .arg(&cert)
                .arg("-out")
                .arg(&der_cert),
        )?;
        let pkcs8 = std::fs::read(&der_key).map_err(|e| Error::io(&der_key, e))?;
        let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
            .map_err(|e| command_error("token key", e.to_string()))?;
        let x5c = base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(&der_cert).map_err(|e| Error::io(&der_cert, e))?);
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("127.0.0.1:0", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("127.0.0.1:0", e))?
            .port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(TokenState {
            requests: Vec::new(),
            tokens: Vec::new(),
        }));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        );
        let shared = std::sync::Arc::new((signer, x5c, expected, username.to_string()));
        let (st, halt) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, shared) = (st.clone(), shared.clone());
                std::thread::spawn(move || {
                    let (signer, x5c, expected, user) = &*shared;
                    let _ = serve_token(conn, &st, signer, x5c, expected, user);
                });
            }
        });
        Ok(TokenServer {
            port,
            dir,
            state,
            stop,
        })
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The signing certificate (PEM), the registry's `rootcertbundle`.
    pub fn certificate(&self) -> PathBuf {
        self.dir.path().join("token.crt")
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .requests
            .clone()
    }

    /// Every token issued so far (to check that none leaks into outputs).
    pub fn tokens(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tokens
            .clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(())
                {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn serve_token(
    mut conn: TcpStream,
    state: &std::sync::Mutex<TokenState>,
    signer: &aws_lc_rs::signature::EcdsaKeyPair,
    x5c: &str,
    expected: &str,
    user: &str,
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader};
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut authorization = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("authorization")
        {
            authorization = Some(v.trim().to_string());
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "scope")
        .map(|(_, v)| percent_decode(v))
        .collect();
    let authenticated = authorization.as_deref() == Some(expected);
    let (status, body) = if path != "/token" {
        (404, r#"{"details":"not found"}"#.to_string())
    } else if !authenticated {
        (401, r#"{"details":"authentication required"}"#.to_string())
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                let mut parts = s.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                Some(serde_json::json!({
                    "type": kind, "name": name,
                    "actions": actions.split(',').collect::<Vec<_>>(),
                }))
            })
            .collect();
        let n = state.lock().unwrap_or_else(|p| p.into_inner()).tokens.len();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
        let claims = serde_json::json!({
            "iss": TokenServer::ISSUER, "sub": user, "aud": TokenServer::SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("tenet-test-{n}"),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let sig = signer
            .sign(&rng, signing_input.as_bytes())
            .map_err(|_| std::io::Error::other("signing"))?;
        let token = format!("{signing_input}.{}", b64url(sig.as_ref()));
        state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tokens
            .push(token.clone());
        (
            200,
            serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
                .to_string(),
        )
    };
    state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .requests
        .push(TokenRequest {
            scopes,
            authenticated,
            status,
        });
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `rsync --daemon --no-detach` on 127.0.0.1 with one writable module `data` in a temp
/// dir. Killed on drop.
pub struct RsyncDaemon {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl RsyncDaemon {
    /// Starts the daemon on a free port and waits until it listens.
    pub fn start() -> Result<RsyncDaemon> {
        match Self::start_once() {
            Ok(r) => Ok(r),
            Err(_) => Self::start_once(),
        }
    }

    fn start_once() -> Result<RsyncDaemon> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let port = free_port()?;
        let module = dir.path().join("module");
        std::fs::create_dir(&module).map_err(|e| Error::io(&module, e))?;
        let log_path = dir.path().join("rsyncd.log");
        let conf = format!(
            "pid file = {pid}\nlog file = {log}\naddress = 127.0.0.1\nport = {port}\n\
             use chroot = no\n[data]\n    path = {module}\n    read only = false\n    \
             uid = root\n    gid = root\n",
            pid = dir.path().join("rsyncd.pid").display(),
            log = log_path.display(),
            module = module.display(),
        );
        let cfg = dir.path().join("rsyncd.conf");
        std::fs::write(&cfg, conf).map_err(|e| Error::io(&cfg, e))?;
        let mut child = tool("rsync")
            .arg("--daemon")
            .arg("--no-detach")
            .arg(format!("--config={}", cfg.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| command_error("rsync --daemon", e.to_string()))?;
        if let Err(e) = wait_listening(
            &mut child,
            Ipv4Addr::LOCALHOST,
            port,
            "rsync --daemon",
            &log_path,
        ) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(RsyncDaemon { child, port, dir })
    }

    /// `rsync://127.0.0.1:<port>/data`.
    pub fn url(&self) -> String {
        format!("rsync://127.0.0.1:{}/data", self.port)
    }

    /// The module's directory on disk (to look at or corrupt what was synced).
    pub fn module_dir(&self) -> PathBuf {
        self.dir.path().join("module")
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny test image: each layer is a real tar holding one file, the config names the
/// image (so two images with the same layers still differ), the manifest is OCI.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// The architecture its config names (`amd64`, `arm64`).
    pub architecture: String,
    /// The config blob.
    pub config: Vec<u8>,
    /// The layer blobs (uncompressed tars).
    pub layers: Vec<Vec<u8>>,
    /// The manifest bytes.
    pub manifest: Vec<u8>,
    /// The manifest's digest.
    pub digest: String,
}

/// A tar holding one file `content.txt` with `content` (fixed metadata, so the same content
/// always gives the same bytes).
pub fn tar_layer(content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, "content.txt", content)
        .expect("writing to memory");
    b.into_inner().expect("writing to memory")
}

impl TestImage {
    /// An image named `label` whose layers are tars of `contents` (linux/amd64).
    pub fn new(label: &str, contents: &[&[u8]]) -> TestImage {
        Self::for_platform(label, "amd64", contents)
    }

    /// An image named `label` for linux/`architecture` whose layers are tars of `contents`.
    pub fn for_platform(label: &str, architecture: &str, contents: &[&[u8]]) -> TestImage {
        let layers: Vec<Vec<u8>> = contents.iter().map(|c| tar_layer(c)).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": architecture,
            "os": "linux",
            "config": {"Labels": {"test.image": label}},
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|l| sha256_digest(l)).collect::<Vec<_>>(),
            },
        }))
        .expect("JSON");
        let desc = |media_type: &str, b: &[u8]| serde_json::json!({"mediaType": media_type, "digest": sha256_digest(b), "size": b.len()});
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": desc(OCI_CONFIG, &config),
            "layers": layers.iter().map(|l| desc(OCI_LAYER_TAR, l)).collect::<Vec<_>>(),
        }))
        .expect("JSON");
        let digest = sha256_digest(&manifest);
        TestImage {
            architecture: architecture.to_string(),
            config,
            layers,
            manifest,
            digest,
        }
    }

    /// The digests of its config and layers.
    pub fn blob_digests(&self) -> Vec<String> {
        std::iter::once(&self.config)
            .chain(self.layers.iter())
            .map(|b| sha256_digest(b))
            .collect()
    }
}

/// Writes an OCI image layout at `dir` holding `images`, each annotated with its tag.
pub fn write_oci_layout(dir: &Path, images: &[(&TestImage, &str)]) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
    let write =
        |name: &Path, data: &[u8]| std::fs::write(name, data).map_err(|e| Error::io(name, e));
    write(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let mut manifests = Vec::new();
    for (img, tag) in images {
        for b in std::iter::once(&img.config)
            .chain(img.layers.iter())
            .chain(std::iter::once(&img.manifest))
        {
            let d = sha256_digest(b);
            write(&blobs.join(sha256_hex(&d).expect("sha256")), b)?;
        }
        manifests.push(serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": img.digest,
            "size": img.manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": manifests});
    write(
        &dir.join("index.json"),
        &serde_json::to_vec(&index).expect("JSON"),
    )
}

/// Writes an OCI image layout at `dir` holding one multi-platform image: an OCI image index
/// listing `images` (each with its `linux/<architecture>` platform), annotated with `tag` in
/// `index.json`, as `skopeo copy --all` or `buildx --output type=oci` write it. Returns the
/// index bytes.
pub fn write_oci_index_layout(dir: &Path, images: &[&TestImage], tag: &str) -> Result<Vec<u8>> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
    let write =
        |name: &Path, data: &[u8]| std::fs::write(name, data).map_err(|e| Error::io(name, e));
    write(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let mut manifests = Vec::new();
    for img in images {
        for b in std::iter::once(&img.config)
            .chain(img.layers.iter())
            .chain(std::iter::once(&img.manifest))
        {
            let d = sha256_digest(b);
            write(&blobs.join(sha256_hex(&d).expect("sha256")), b)?;
        }
        manifests.push(serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": img.digest,
            "size": img.manifest.len(),
            "platform": {"architecture": img.architecture, "os": "linux"},
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
    .expect("JSON");
    let digest = sha256_digest(&index);
    write(&blobs.join(sha256_hex(&digest).expect("sha256")), &index)?;
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_INDEX,
        "digest": digest,
        "size": index.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }]});
    write(
        &dir.join("index.json"),
        &serde_json::to_vec(&top).expect("JSON"),
    )?;
    Ok(index)
}

/// Writes a docker-archive (`docker save` style: `<id>/layer.tar`, `<id>.json`,
/// `manifest.json`) of `img` tagged `repo_tag`; the last layer is stored through a symlink
/// as older `docker save` does for repeated layers.
pub fn write_docker_archive(path: &Path, img: &TestImage, repo_tag: &str) -> Result<()> {
    let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut b = tar::Builder::new(f);
    let io = |e: std::io::Error| Error::io(path, e);
    let append = |b: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, data)
    };
    let config_hex = sha256_hex(&sha256_digest(&img.config))
        .expect("sha256")
        .to_string();
    append(&mut b, &format!("{config_hex}.json"), &img.config).map_err(io)?;
    let mut names = Vec::new();
    for (i, layer) in img.layers.iter().enumerate() {
        let id = format!("{:064x}", i + 1);
        if i + 1 == img.layers.len() && i > 0 {
            // Stored under a real directory, referenced through a symlinked one.
            append(&mut b, &format!("real{id}/layer.tar"), layer).map_err(io)?;
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            h.set_mtime(0);
            b.append_link(
                &mut h,
                format!("{id}/layer.tar"),
                format!("../real{id}/layer.tar"),
            )
            .map_err(io)?;
        } else {
            append(&mut b, &format!("{id}/layer.tar"), layer).map_err(io)?;
        }
        names.push(format!("{id}/layer.tar"));
    }
    let manifest = serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": [repo_tag],
        "Layers": names,
    }]);
    append(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("JSON"),
    )
    .map_err(io)?;
    b.into_inner().map_err(io)?.flush().map_err(io)?;
    Ok(())
}

/// A multi-platform image of a test release: `(name, tag, [(architecture, layer
/// contents)])`.
pub type MultiPlatformImage<'a> = (&'a str, &'a str, Vec<(&'a str, Vec<Vec<u8>>)>);

/// What to put in a test release.
pub struct ReleaseRecipe<'a> {
    /// The version.
    pub version: &'a str,
    /// Images: `(name, tag, layer contents)`; equal contents give equal (shared) layers.
    pub images: Vec<(&'a str, &'a str, Vec<Vec<u8>>)>,
    /// Multi-platform images (an OCI index in the layout).
    pub multi_platform: Vec<MultiPlatformImage<'a>>,
    /// Files under `files/`: `(relative path, content)`.
    pub files: Vec<(&'a str, Vec<u8>)>,
    /// A symlink to put in the tree, `(path, target)` (to test refusals).
    pub symlink: Option<(&'a str, &'a str)>,
}

/// A test release on disk.
pub struct BuiltRelease {
    /// The version.
    pub version: String,
    /// The squashfs (made by the real `mksquashfs`).
    pub squashfs: PathBuf,
    /// Its detached signature, `<squashfs>.sig` (made by `openssl dgst -sha256 -sign`).
    pub signature: PathBuf,
    /// The public key (PEM).
    pub public_key: PathBuf,
    /// The squashfs sha256 (hex).
    pub sha256: String,
}

fn must(cmd: &mut Command) -> Result<()> {
    let what = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| command_error(&what, format!("{e} (is it installed?)")))?;
    if !out.status.success() {
        return Err(command_error(
            &what,
            format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        ));
    }
    Ok(())
}

/// An ECDSA P-256 signing key made by openssl in `dir` (made once): (private, public PEM).
pub fn signing_key(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let key = dir.join("signing.key");
    let public = dir.join("signing.pub");
    if !key.exists() {
        must(
            tool("openssl")
                .args(["genpkey", "-algorithm", "EC"])
                .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
                .arg(&key),
        )?;
        must(
            tool("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(&public),
        )?;
    }
    Ok((key, public))
}

/// Builds a release in `dir`: its tree (`release.toml`, `files/`, OCI layouts under
/// `images/`), the squashfs and its signature by [`signing_key`].
pub fn build_release(dir: &Path, recipe: &ReleaseRecipe) -> Result<BuiltRelease> {
    let io = |p: &Path, e| Error::io(p, e);
    let tree = dir.join(format!("tree-{}", recipe.version));
    let _ = std::fs::remove_dir_all(&tree);
    let files = tree.join("files");
    std::fs::create_dir_all(&files).map_err(|e| io(&files, e))?;
    let mut manifest = format!("version = \"{}\"\n", recipe.version);
    for (path, data) in &recipe.files {
        let p = files.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&p, data).map_err(|e| io(&p, e))?;
        manifest.push_str(&format!(
            "\n[[files]]\npath = \"{path}\"\nsize = {}\nsha256 = \"{}\"\n",
            data.len(),
            &sha256_digest(data)["sha256:".len()..]
        ));
    }
    for (name, tag, layers) in &recipe.images {
        let rel = format!("images/{}-{tag}", name.replace('/', "-"));
        let contents: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
        write_oci_layout(&tree.join(&rel), &[(&TestImage::new(name, &contents), tag)])?;
        manifest.push_str(&format!(
            "\n[[images]]\nname = \"{name}\"\ntag = \"{tag}\"\npath = \"{rel}\"\n"
        ));
    }
    for (name, tag, platforms) in &recipe.multi_platform {
        let rel = format!("images/{}-{tag}", name.replace('/', "-"));
        let images: Vec<TestImage> = platforms
            .iter()
            .map(|(arch, layers)| {
                let contents: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
                TestImage::for_platform(name, arch, &contents)
            })
            .collect();
        let refs: Vec<&TestImage> = images.iter().collect();
        write_oci_index_layout(&tree.join(&rel), &refs, tag)?;
        manifest.push_str(&format!(
            "\n[[images]]\nname = \"{name}\"\ntag = \"{tag}\"\npath = \"{rel}\"\n"
        ));
    }
    if let Some((path, target)) = recipe.symlink {
        let p = tree.join(path);
        std::os::unix::fs::symlink(target, &p).map_err(|e| io(&p, e))?;
    }
    let m = tree.join(crate::manifest::MANIFEST_FILE);
    std::fs::write(&m, manifest).map_err(|e| io(&m, e))?;
    let squashfs = dir.join(format!("{}.squashfs", recipe.version));
    let _ = std::fs::remove_file(&squashfs);
    must(tool("mksquashfs").arg(&tree).arg(&squashfs).args([
        "-noappend",
        "-quiet",
        "-no-progress",
        "-all-root",
    ]))?;
    let (key, public_key) = signing_key(dir)?;
    let signature = dir.join(format!("{}.squashfs.sig", recipe.version));
    must(
        tool("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&key)
            .arg("-out")
            .arg(&signature)
            .arg(&squashfs),
    )?;
    Ok(BuiltRelease {
        version: recipe.version.to_string(),
        sha256: crate::manifest::sha256_file(&squashfs)?,
        squashfs,
        signature,
        public_key,
    })
}

/// Deterministic filler bytes (layer or file content), `n` long, varying with `seed`.
pub fn filler(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

//! A real `tenet-collector serve` on 127.0.0.1 with a temporary database, and the calls tests
//! make to it (HTTP with reqwest, or through the `tenet-collector` CLI).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::collector_bin;

/// A running collector; killed when dropped.
pub struct CollectorProcess {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its port.
    pub port: u16,
    /// The database file.
    pub db: PathBuf,
    log: PathBuf,
}

impl CollectorProcess {
    /// Starts a collector on a free port.
    pub fn start(db: &Path) -> CollectorProcess {
        Self::start_on(db, 0)
    }

    /// Starts a collector on `port` (0: a free one), waiting until it listens.
    pub fn start_on(db: &Path, port: u16) -> CollectorProcess {
        Self::start_with(db, port, &[])
    }

    /// Starts an HTTPS collector with this certificate and key.
    pub fn start_tls(db: &Path, cert: &Path, key: &Path) -> CollectorProcess {
        Self::start_with(
            db,
            0,
            &[
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ],
        )
    }

    /// Starts a collector on a free port with extra `serve` options.
    pub fn start_with_options(db: &Path, extra: &[&str]) -> CollectorProcess {
        Self::start_with(db, 0, extra)
    }

    /// Starts a collector on a free port with extra `serve` options and environment.
    pub fn start_with_env(db: &Path, extra: &[&str], env: &[(&str, &str)]) -> CollectorProcess {
        Self::start_full(db, 0, extra, env)
    }

    fn start_with(db: &Path, port: u16, extra: &[&str]) -> CollectorProcess {
        Self::start_full(db, port, extra, &[])
    }

    fn start_full(db: &Path, port: u16, extra: &[&str], env: &[(&str, &str)]) -> CollectorProcess {
        let log = db.with_extension(format!("serve-{}.log", std::process::id()));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("collector log");
        let mut last_err = String::new();
        // Rebinding a port just released may race a TIME_WAIT socket: retry briefly.
        for _ in 0..50 {
            let mut child = Command::new(collector_bin())
                .args(["serve", "--listen"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("--db")
                .arg(db)
                .args(extra)
                .env_remove("TENET_COLLECTOR_DB")
                .env("TENET_LOG", "info")
                .envs(env.iter().copied())
                .stdout(Stdio::piped())
                .stderr(stderr.try_clone().expect("log fd"))
                .spawn()
                .expect("cannot start tenet-collector");
            let stdout = child.stdout.take().expect("stdout piped");
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            if let Some(url) = line.trim().strip_prefix("tenet-collector listening on ") {
                let port = url.rsplit(':').next().unwrap().parse().unwrap();
                return CollectorProcess {
                    child: Some(child),
                    url: url.to_string(),
                    port,
                    db: db.to_path_buf(),
                    log,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_err = std::fs::read_to_string(&log).unwrap_or_default();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the collector did not start:\n{last_err}");
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("the collector did not stop within 30 s of SIGTERM");
        }
    }

    /// The process id (while running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Resident memory, in KiB (`VmRSS` of /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Open file descriptors.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Whether the process is still running (reaping it if it exited).
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends SIGTERM and returns at once.
    pub fn sigterm(&self) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }

    /// The collector's log so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An HTTP client for this collector.
    pub fn client(&self) -> Api {
        Api {
            url: self.url.clone(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            auth: None,
        }
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `tenet-collector ARGS`, returning (exit code, stdout, stderr).
pub fn collector_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(collector_bin())
        .args(args)
        .env_remove("TENET_COLLECTOR_DB")
        .output()
        .expect("cannot run tenet-collector");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tenet-collector token create --admin --db DB`: the token printed.
pub fn admin_token(db: &Path) -> String {
    let (code, out, err) =
        collector_cli(&["token", "create", "--admin", "--db", db.to_str().unwrap()]);
    assert_eq!(code, 0, "token create failed: {err}");
    out.trim().to_string()
}

/// `tenet-collector import FILE --db DB`, asserting success.
pub fn import(db: &Path, file: &Path) {
    let (code, out, err) = collector_cli(&[
        "import",
        file.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "import failed:\n{out}\n{err}");
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body text.
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// Asserts the status.
    pub fn expect(self, status: u16) -> Answer {
        assert_eq!(self.status, status, "unexpected answer: {}", self.body);
        self
    }
}

/// A client of the API, anonymous or authenticated.
#[derive(Clone)]
pub struct Api {
    url: String,
    http: reqwest::blocking::Client,
    auth: Option<String>,
}

impl Api {
    /// Authenticated with an admin token.
    pub fn admin(mut self, token: &str) -> Api {
        self.auth = Some(format!("Bearer {token}"));
        self
    }

    /// Authenticated as a node.
    pub fn node(mut self, id: &str, secret: &str) -> Api {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        self.auth = Some(format!("Basic {b}"));
        self
    }

    /// Any request; panics when the collector cannot be reached.
    pub fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Answer {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Any request; `Err` when the collector cannot be reached.
    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, String> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.http.request(m, format!("{}{path}", self.url));
        if let Some(a) = &self.auth {
            rb = rb.header("Authorization", a);
        }
        if let Some(b) = body {
            rb = rb.header("Content-Type", "application/json").body(b);
        }
        let resp = rb.send().map_err(|e| e.to_string())?;
        Ok(Answer {
            status: resp.status().as_u16(),
            body: resp.text().map_err(|e| e.to_string())?,
        })
    }

    /// GET.
    pub fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None)
    }

    /// POST JSON.
    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.call("POST", path, Some(serde_json::to_vec(body).unwrap()))
    }

    /// PUT JSON.
    pub fn put(&self, path: &str, body: &Value) -> Answer {
        self.call("PUT", path, Some(serde_json::to_vec(body).unwrap()))
    }

    /// Registers a node (admin): (node id, secret).
    pub fn register(&self, name: &str) -> (String, String) {
        let a = self
            .post("/api/v1/nodes", &serde_json::json!({ "name": name }))
            .expect(201)
            .json();
        (
            a["node_id"].as_str().unwrap().to_string(),
            a["secret"].as_str().unwrap().to_string(),
        )
    }
}

/// A minimal results document for `run_id`.
pub fn results(run_id: &str) -> Value {
    serde_json::json!({
        "run_id": run_id, "agent_version": "test", "action": "check", "policy_hash": "h",
        "modules": [{"module": "m1", "moduleset": "ms", "status": "ok",
                     "actions": [{"action": "check", "exit_code": 0, "log": "fine", "duration_ms": 1}],
                     "duration_ms": 1}],
        "summary": {"ok": 1, "nok": 0, "na": 0}, "duration_ms": 1
    })
}

/// A CA and a server certificate for 127.0.0.1 made with the real `openssl`:
/// (ca.pem, server.pem, server.key).
pub fn make_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = crate::tool("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tenet test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

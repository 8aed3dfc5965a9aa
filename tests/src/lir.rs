//! Release test parts: an HTTP file server on 127.0.0.1 that honours `Range`, sends a `Digest`
//! header on request, and can drop a connection midway or corrupt a byte, recording every
//! request it got. The release builder (OCI layouts, `release.toml`, the real `mksquashfs`
//! and `openssl`) is `tenet_release::testing::build_release`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
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

    /// Every request received so far, whatever its path.
    pub fn all_requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
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

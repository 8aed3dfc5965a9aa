//! Script modules: `NN-name` executables in a modules directory, run with one argument
//! (`check`, `fixable`, `fix`) and read back through their exit code (0 ok, 1 nok, 2 n/a), as
//! the OpenSVC agent runs them.
//!
//! Differences from OpenSVC, all deliberate (rows of `docs/opensvc-compat.md`): module names
//! are matched literally (OpenSVC treats them as regexes); an unsafe script (not owned by
//! root, or writable by group or others) fails that module only instead of the whole run;
//! every run has a timeout that kills the module's whole process group.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::status::{LogLine, Stream};

/// A script module found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Module name (without the `NN-` prefix).
    pub name: String,
    /// The executable to run.
    pub path: PathBuf,
    /// The `NN` ordering number.
    pub order: u64,
}

/// Finds the script of module `name` in `dir`: an entry named `[S]NN[-]name`, whose
/// executable is the entry itself, `entry/main` or `entry/scripts/main` (the last existing
/// one, as OpenSVC). `Ok(None)` when no entry matches; an error when several do.
pub fn find(dir: &Path, name: &str) -> Result<Option<Script>> {
    let re = regex::Regex::new(&format!("^S*([0-9]+)-*{}$", regex::escape(name)))
        .map_err(|e| Error::Rule(e.to_string()))?;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let file_name = e.file_name().to_string_lossy().into_owned();
        if let Some(c) = re.captures(&file_name) {
            let order = c[1].parse::<u64>().unwrap_or(u64::MAX);
            found.push((file_name, e.path(), order));
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => {
            let (_, entry, order) = found.remove(0);
            let path = [
                entry.join("scripts/main"),
                entry.join("main"),
                entry.clone(),
            ]
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| Error::Module {
                module: name.into(),
                message: format!(
                    "{} holds no executable (main or scripts/main)",
                    entry.display()
                ),
            })?;
            Ok(Some(Script {
                name: name.into(),
                path,
                order,
            }))
        }
        _ => Err(Error::Module {
            module: name.into(),
            message: format!(
                "matches too many entries in {}: {}",
                dir.display(),
                found
                    .iter()
                    .map(|f| f.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Refuses scripts anyone but root could have changed: the file must be owned by root and
/// not writable by group or others, and so must the directories it sits in up to `dir`.
pub fn verify_safe(script: &Script, dir: &Path) -> Result<()> {
    let mut p = Some(script.path.as_path());
    while let Some(path) = p {
        let m = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let problem = if m.uid() != 0 {
            Some(format!("is owned by uid {}, not root", m.uid()))
        } else if m.mode() & 0o022 != 0 {
            Some(format!(
                "is writable by group or others (mode {:o})",
                m.mode() & 0o7777
            ))
        } else if path == script.path && m.mode() & 0o111 == 0 {
            Some("is not executable".to_string())
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(Error::Module {
                module: script.name.clone(),
                message: format!(
                    "refusing to run {}: {} {problem}",
                    script.path.display(),
                    path.display()
                ),
            });
        }
        if path == dir {
            break;
        }
        p = path.parent().filter(|pp| pp.starts_with(dir));
    }
    Ok(())
}

/// What one execution produced.
#[derive(Debug, Clone)]
pub struct Execution {
    /// Exit code (1 when the script could not start, was killed, or timed out).
    pub exit_code: i32,
    /// stdout and stderr lines, interleaved in arrival order.
    pub log: Vec<LogLine>,
    /// Wall time.
    pub duration: Duration,
}

/// Runs `program arg` with `env` added to the inherited environment, in its own process
/// group, killing the whole group after `timeout`.
pub fn execute(
    program: &Path,
    arg: &str,
    env: &[(String, String)],
    timeout: Duration,
) -> Execution {
    let start = Instant::now();
    let log: Arc<Mutex<Vec<LogLine>>> = Arc::default();
    let push = |log: &Arc<Mutex<Vec<LogLine>>>, stream, text: String| {
        if let Ok(mut l) = log.lock() {
            l.push(LogLine { stream, text });
        }
    };
    let mut cmd = Command::new(program);
    cmd.arg(arg)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let why = match e.raw_os_error() {
                Some(libc::ENOENT) => "file not found or bad interpreter".to_string(),
                Some(libc::ENOEXEC) => "exec format error".to_string(),
                _ => e.to_string(),
            };
            push(
                &log,
                Stream::Err,
                format!("{}: execution error ({why})", program.display()),
            );
            return finish(1, log, start);
        }
    };
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| (Box::new(s) as Box<dyn Read + Send>, Stream::Out)),
        child
            .stderr
            .take()
            .map(|s| (Box::new(s) as Box<dyn Read + Send>, Stream::Err)),
    ]
    .into_iter()
    .flatten()
    .map(|(pipe, stream)| {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                match line {
                    Ok(l) => push(&log, stream, l),
                    Err(_) => break,
                }
            }
        })
    })
    .collect();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let code = match rx.recv_timeout(timeout) {
        Ok(Ok(status)) => status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            push(
                &log,
                Stream::Err,
                format!("killed by signal {}", status.signal().unwrap_or(0)),
            );
            1
        }),
        Ok(Err(e)) => {
            push(&log, Stream::Err, format!("wait failed: {e}"));
            1
        }
        Err(_) => {
            // The script may have forked: kill everything in its group, not just the leader.
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = rx.recv_timeout(Duration::from_secs(5));
            push(
                &log,
                Stream::Err,
                format!(
                    "timed out after {}s: process group killed",
                    timeout.as_secs_f64()
                ),
            );
            1
        }
    };
    // A descendant that left the group may still hold the pipes: don't wait for it forever.
    let deadline = Instant::now() + Duration::from_secs(2);
    for r in readers {
        while !r.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if r.is_finished() {
            let _ = r.join();
        }
    }
    finish(code, log, start)
}

fn finish(exit_code: i32, log: Arc<Mutex<Vec<LogLine>>>, start: Instant) -> Execution {
    let log = log.lock().map(|l| l.clone()).unwrap_or_default();
    Execution {
        exit_code,
        log,
        duration: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn finds_by_name_literally() {
        let d = tempfile::tempdir().unwrap();
        script(d.path(), "50-spdc.kernel", "#!/bin/sh\n", 0o755);
        script(d.path(), "10-spdcXkernel", "#!/bin/sh\n", 0o755);
        let s = find(d.path(), "spdc.kernel").unwrap().unwrap();
        assert_eq!(s.order, 50);
        assert!(find(d.path(), "nope").unwrap().is_none());
    }

    #[test]
    fn refuses_group_writable() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        script(d.path(), "10-w", "#!/bin/sh\n", 0o775);
        let s = find(d.path(), "w").unwrap().unwrap();
        let e = verify_safe(&s, d.path()).unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
    }

    #[test]
    fn captures_and_times_out() {
        let d = tempfile::tempdir().unwrap();
        let p = script(
            d.path(),
            "10-x",
            "#!/bin/sh\necho out $1\necho bad >&2\nexit 2\n",
            0o755,
        );
        let x = execute(&p, "check", &[], Duration::from_secs(10));
        assert_eq!(x.exit_code, 2);
        assert!(
            x.log
                .iter()
                .any(|l| l.text == "out check" && l.stream == Stream::Out)
        );
        assert!(
            x.log
                .iter()
                .any(|l| l.text == "bad" && l.stream == Stream::Err)
        );

        let marker = d.path().join("survivor");
        let body = format!(
            "#!/bin/sh\n(sleep 3; touch {}) &\nsleep 30\n",
            marker.display()
        );
        let p = script(d.path(), "20-slow", &body, 0o755);
        let x = execute(&p, "check", &[], Duration::from_millis(300));
        assert_eq!(x.exit_code, 1);
        assert!(x.log.iter().any(|l| l.text.contains("timed out")));
        std::thread::sleep(Duration::from_secs(4));
        assert!(
            !marker.exists(),
            "a forked child of the module survived the timeout"
        );
    }
}

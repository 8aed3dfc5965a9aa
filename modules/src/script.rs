//! Script modules: `NN-name` executables in a modules directory, run with one argument
//! (`check`, `fixable`, `fix`) and read back through their exit code (0 ok, 1 nok, 2 n/a), as
//! the OpenSVC agent runs them.
//!
//! Differences from OpenSVC, all deliberate: module names are matched literally (OpenSVC
//! treats them as regexes); an unsafe script (not owned by root, or writable by group or
//! others) fails that module only instead of the whole run; every run has a timeout that
//! kills the module's whole process group.
//!
//! Output: stdout and stderr are read as bytes to the end (a line that is not UTF-8 is
//! decoded lossily, never a reason to stop reading, which would kill the script with SIGPIPE).
//! What is kept is bounded: the first [`OUTPUT_HEAD_BYTES`] and the last
//! [`OUTPUT_TAIL_BYTES`] of lines, with one line `… N bytes truncated (M lines)` between them;
//! the rest is read and dropped. A line longer than [`OUTPUT_LINE_BYTES`] is split.

use std::collections::VecDeque;
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

/// Output kept from the start of a script's run (bytes of text, plus
/// [`OUTPUT_LINE_OVERHEAD`] per line).
pub const OUTPUT_HEAD_BYTES: usize = 512 * 1024;
/// Output kept from the end of a script's run (same accounting as [`OUTPUT_HEAD_BYTES`]).
pub const OUTPUT_TAIL_BYTES: usize = 512 * 1024;
/// A longer line is kept as several lines of at most this many bytes (cut at a character
/// boundary when the text is UTF-8).
pub const OUTPUT_LINE_BYTES: usize = 64 * 1024;
/// What each kept line costs on top of its text, so that millions of empty lines are bounded
/// too (roughly a `LogLine`'s size).
pub const OUTPUT_LINE_OVERHEAD: usize = 64;

/// The bounded log of one execution: a head, then a tail that drops its oldest lines.
#[derive(Debug, Default)]
struct Capture {
    head: Vec<LogLine>,
    head_cost: usize,
    /// Lines after the head: (line, bytes of output it stood for).
    tail: VecDeque<(LogLine, u64)>,
    tail_cost: usize,
    /// Once a line missed the head, every later one goes to the tail (order is kept).
    head_full: bool,
    dropped_bytes: u64,
    dropped_lines: u64,
}

impl Capture {
    /// Adds a line that stood for `raw` bytes of output (its text and newline, if any).
    fn push(&mut self, stream: Stream, text: String, raw: u64) {
        let cost = text.len() + OUTPUT_LINE_OVERHEAD;
        let line = LogLine { stream, text };
        if !self.head_full && self.head_cost + cost <= OUTPUT_HEAD_BYTES {
            self.head_cost += cost;
            self.head.push(line);
            return;
        }
        self.head_full = true;
        self.tail_cost += cost;
        self.tail.push_back((line, raw));
        while self.tail_cost > OUTPUT_TAIL_BYTES && self.tail.len() > 1 {
            let Some((old, old_raw)) = self.tail.pop_front() else {
                break;
            };
            self.tail_cost -= old.text.len() + OUTPUT_LINE_OVERHEAD;
            self.dropped_bytes += old_raw;
            self.dropped_lines += 1;
        }
    }

    /// The kept lines, with the truncation notice between head and tail.
    fn lines(&self) -> Vec<LogLine> {
        let mut out = self.head.clone();
        if self.dropped_lines > 0 {
            out.push(LogLine {
                stream: Stream::Err,
                text: format!(
                    "\u{2026} {} bytes truncated ({} lines)",
                    self.dropped_bytes, self.dropped_lines
                ),
            });
        }
        out.extend(self.tail.iter().map(|(l, _)| l.clone()));
        out
    }
}

/// Reads `pipe` to its end, calling `emit(text, raw bytes)` per line (without its `\n` or
/// `\r\n`, decoded lossily; a line longer than [`OUTPUT_LINE_BYTES`] in several parts).
/// Only an I/O error stops it early, never the content.
fn read_lines(pipe: impl Read, mut emit: impl FnMut(String, u64)) {
    let mut reader = BufReader::with_capacity(64 * 1024, pipe);
    let mut line: Vec<u8> = Vec::new();
    let mut finish = |line: &mut Vec<u8>, newline: bool| {
        let raw = line.len() as u64 + u64::from(newline);
        if newline && line.last() == Some(&b'\r') {
            line.pop();
        }
        emit(String::from_utf8_lossy(line).into_owned(), raw);
        line.clear();
    };
    loop {
        let buf = match reader.fill_buf() {
            Ok([]) => break,
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let (chunk, consumed, newline) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        line.extend_from_slice(chunk);
        reader.consume(consumed);
        while line.len() > OUTPUT_LINE_BYTES {
            // Cut before a UTF-8 continuation byte, so a character is not split in two.
            let mut cut = OUTPUT_LINE_BYTES;
            while cut > OUTPUT_LINE_BYTES - 3 && line[cut] & 0xC0 == 0x80 {
                cut -= 1;
            }
            let rest = line.split_off(cut);
            finish(&mut line, false);
            line = rest;
        }
        if newline {
            finish(&mut line, true);
        }
    }
    if !line.is_empty() {
        finish(&mut line, false);
    }
}

/// Runs `program arg` with `env` added to the inherited environment, in its own process
/// group, killing the whole group after `timeout`. Output is read to the end and kept
/// bounded (see the module documentation).
pub fn execute(
    program: &Path,
    arg: &str,
    env: &[(String, String)],
    timeout: Duration,
) -> Execution {
    let start = Instant::now();
    let log: Arc<Mutex<Capture>> = Arc::default();
    let push = |log: &Arc<Mutex<Capture>>, stream, text: String| {
        if let Ok(mut l) = log.lock() {
            l.push(stream, text, 0);
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
            read_lines(pipe, |text, raw| {
                if let Ok(mut l) = log.lock() {
                    l.push(stream, text, raw);
                }
            });
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

fn finish(exit_code: i32, log: Arc<Mutex<Capture>>, start: Instant) -> Execution {
    let log = log.lock().map(|l| l.lines()).unwrap_or_default();
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

    fn text_of(x: &Execution, stream: Stream) -> Vec<&str> {
        x.log
            .iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.text.as_str())
            .collect()
    }

    /// Issue 12 item 10: a line that is not UTF-8 used to stop the reader, close the pipe and
    /// kill the script with SIGPIPE, losing the rest of its output and its exit code.
    #[test]
    fn invalid_utf8_is_decoded_lossily_and_the_script_runs_to_its_end() {
        let d = tempfile::tempdir().unwrap();
        let p = script(
            d.path(),
            "10-latin1",
            "#!/bin/sh\n\
             echo before\n\
             printf 'caf\\351 \\377\\376 half \\303\\r\\n'\n\
             printf 'bad on stderr \\200\\n' >&2\n\
             i=0; while [ $i -lt 5000 ]; do echo \"line $i\"; i=$((i+1)); done\n\
             echo done >&2\n\
             exit 3\n",
            0o755,
        );
        let x = execute(&p, "check", &[], Duration::from_secs(60));
        assert_eq!(x.exit_code, 3, "{:?}", &x.log[..x.log.len().min(5)]);
        let out = text_of(&x, Stream::Out);
        assert_eq!(out[0], "before");
        assert_eq!(out[1], "caf\u{fffd} \u{fffd}\u{fffd} half \u{fffd}");
        assert_eq!(out.len(), 2 + 5000);
        assert_eq!(out[out.len() - 1], "line 4999");
        assert_eq!(text_of(&x, Stream::Err), ["bad on stderr \u{fffd}", "done"]);
    }

    /// Issue 12 item 10: output is kept bounded (head and tail, a truncation notice with the
    /// exact number of bytes left out), all of it is read (the script is not killed by
    /// SIGPIPE: its last line and exit code arrive), and a long line without a newline is
    /// split rather than held whole.
    #[test]
    fn large_output_keeps_head_and_tail_and_says_what_was_dropped() {
        let d = tempfile::tempdir().unwrap();
        // 20,000,000 bytes of 92-byte lines (the last one cut, then ended), a 3,000,000-byte
        // line, then "last line".
        let p = script(
            d.path(),
            "10-loud",
            "#!/bin/sh\n\
             yes 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890 | head -c 20000000\n\
             echo\n\
             head -c 3000000 /dev/zero | tr '\\000' y\n\
             echo\n\
             echo last line\n\
             echo stderr end >&2\n\
             exit 0\n",
            0o755,
        );
        let total: u64 = 20_000_001 + 3_000_001 + "last line\n".len() as u64;
        let x = execute(&p, "check", &[], Duration::from_secs(120));
        assert_eq!(x.exit_code, 0, "{:?}", x.log.last());
        let kept: usize = x
            .log
            .iter()
            .map(|l| l.text.len() + OUTPUT_LINE_OVERHEAD)
            .sum();
        assert!(
            kept <= OUTPUT_HEAD_BYTES + OUTPUT_TAIL_BYTES + 2 * OUTPUT_LINE_OVERHEAD + 100,
            "{kept} bytes kept"
        );
        assert!(x.log.iter().all(|l| l.text.len() <= OUTPUT_LINE_BYTES));
        let first = "0123456789".repeat(9) + "0";
        assert_eq!(x.log[0].text, first);
        let out = text_of(&x, Stream::Out);
        assert_eq!(out[out.len() - 1], "last line");
        assert_eq!(text_of(&x, Stream::Err).last(), Some(&"stderr end"));
        // The notice accounts for every byte of stdout that is not in a kept line.
        let notices: Vec<&LogLine> = x
            .log
            .iter()
            .filter(|l| l.text.starts_with('\u{2026}'))
            .collect();
        assert_eq!(notices.len(), 1, "{notices:?}");
        let dropped: u64 = notices[0]
            .text
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap();
        let kept_out: u64 = out
            .iter()
            .map(|l| {
                // The 45 full parts of the long line had no newline of their own.
                let split_part = l.len() == OUTPUT_LINE_BYTES && l.bytes().all(|b| b == b'y');
                l.len() as u64 + u64::from(!split_part)
            })
            .sum();
        assert_eq!(dropped + kept_out, total, "{}", notices[0].text);
        assert!(notices[0].text.ends_with(" lines)"), "{}", notices[0].text);
    }

    #[test]
    fn lines_are_split_at_character_boundaries() {
        let mut parts = Vec::new();
        let text = "\u{e9}".repeat(OUTPUT_LINE_BYTES); // 2 bytes each
        read_lines(format!("{text}\nend").as_bytes(), |t, raw| {
            parts.push((t, raw))
        });
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|(t, _)| !t.contains('\u{fffd}')));
        assert_eq!(parts[0].0.len(), OUTPUT_LINE_BYTES);
        assert_eq!(parts[0].1 + parts[1].1, 2 * OUTPUT_LINE_BYTES as u64 + 1);
        assert_eq!(parts[2], ("end".to_string(), 3));
    }
}

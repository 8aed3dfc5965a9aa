//! `fix` killed midway (SIGKILL) leaves every managed file either wholly old or wholly new.
//!
//! A TOML policy of 300 file rules of 64 KiB each, in 10 modules of 30; the root holds distinct
//! old content for every file. `tenet compliance fix` is started and killed after a varied
//! delay, many times, from a fresh old state each time. Old and new contents share most lines
//! (so the diff check prints stays cheap) but differ in the first, middle and last line: a torn
//! or truncated file matches neither.
//!
//! A module's writes are staged as temporary files and renamed at the end of its fix, so a kill
//! lands while a module stages (its files all old, temporary files left), while it renames, or
//! between modules (the earlier modules' files new, the later ones' old). The kill delays are
//! spread over the writing time of an uninterrupted run, measured first. A fix after a kill
//! converges and removes the temporary files the killed run left.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use tenet_tests::*;

const FILES: usize = 300;
const MODULES: usize = 10;
const LINES: usize = 1024; // of 64 bytes: 64 KiB per file
const ITERATIONS: usize = 15;

fn content(i: usize, generation: &str) -> String {
    let mut s = String::with_capacity(LINES * 64);
    for l in 0..LINES {
        let tag = if l == 0 || l == LINES / 2 || l == LINES - 1 {
            generation
        } else {
            "same"
        };
        // 63 characters + newline.
        let _ = writeln!(
            s,
            "file {i:03} line {l:04} {tag} {}",
            "x".repeat(43 - tag.len())
        );
    }
    debug_assert_eq!(s.len(), LINES * 64);
    s
}

fn path_of(i: usize) -> String {
    format!("/srv/atomic/f{i:03}.conf")
}

fn policy_toml() -> String {
    let names: Vec<String> = (0..MODULES).map(|m| format!("\"atomic{m}\"")).collect();
    let modules: Vec<String> = names.iter().map(|n| format!("{{ name = {n} }}")).collect();
    let mut t = format!(
        "[[moduleset]]\nname = \"atomic\"\nmodules = [{}]\nrulesets = [{}]\n",
        modules.join(", "),
        names.join(", ")
    );
    for i in 0..FILES {
        if i % (FILES / MODULES) == 0 {
            let _ = write!(
                t,
                "\n[[ruleset]]\nname = \"atomic{}\"\ntype = \"explicit\"\n",
                i / (FILES / MODULES)
            );
        }
        let fmt = content(i, "new").replace('\n', "\\n");
        let _ = write!(
            t,
            "\n[[ruleset.variable]]\nname = \"f{i:03}\"\nclass = \"file\"\nvalue = {{ path = \"{}\", fmt = \"{fmt}\", mode = 644 }}\n",
            path_of(i)
        );
    }
    t
}

fn old_root() -> TestRoot {
    let root = TestRoot::builder().build();
    for i in 0..FILES {
        write(&root.under_root(&path_of(i)), content(i, "old"));
    }
    root
}

/// (old, new, other) counts; `other` lists the files that are neither.
fn classify(root: &TestRoot) -> (usize, usize, Vec<String>) {
    let (mut old, mut new, mut other) = (0, 0, Vec::new());
    for i in 0..FILES {
        match root.read(&path_of(i)) {
            Some(c) if c == content(i, "old") => old += 1,
            Some(c) if c == content(i, "new") => new += 1,
            Some(c) => other.push(format!("{} ({} bytes)", path_of(i), c.len())),
            None => other.push(format!("{} (missing)", path_of(i))),
        }
    }
    (old, new, other)
}

/// xorshift64*, seeded from the clock (or `TENET_E2E_SEED`), printed for reproduction.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("TENET_E2E_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("atomic_fix: seed {seed} (set TENET_E2E_SEED to replay)");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1).max(1)
    }
}

fn fix(policy: &Path, root: &TestRoot, var: &Path) -> Tenet {
    Tenet::compliance("fix")
        .policy(policy)
        .root(root.path())
        .var_dir(var)
}

/// The modification time of the directory holding the managed files (it moves when the fix
/// creates its first temporary file there).
fn dir_mtime(root: &TestRoot) -> Option<std::time::SystemTime> {
    std::fs::metadata(root.under_root("/srv/atomic"))
        .and_then(|m| m.modified())
        .ok()
}

/// The temporary files in the directory of the managed files.
fn temporary_files(root: &TestRoot) -> usize {
    std::fs::read_dir(root.under_root("/srv/atomic"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until `child` creates its first temporary file (or exits); returns how long it took.
fn wait_first_write(root: &TestRoot, child: &mut std::process::Child) -> Duration {
    let started = Instant::now();
    let untouched = dir_mtime(root);
    while dir_mtime(root) == untouched && child.try_wait().expect("wait for tenet").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "fix wrote nothing in 120 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    started.elapsed()
}

#[test]
fn killed_fix_leaves_each_file_old_or_new() {
    let policy_dir = tempdir();
    write(&policy_dir.path().join("atomic.toml"), policy_toml());
    let policy = policy_dir.path();
    let mut rng = Rng::new();

    // How long an uninterrupted fix writes (from its first temporary file to its exit): the
    // kills are spread over that time, whatever the build profile and the machine's load.
    let writing = {
        let root = old_root();
        let var = tempdir();
        let mut child = fix(policy, &root, var.path()).spawn_quiet();
        wait_first_write(&root, &mut child);
        let from_first_write = Instant::now();
        let status = child.wait().expect("wait for tenet");
        assert!(status.success(), "uninterrupted fix: {status:?}");
        assert_eq!(classify(&root).1, FILES, "uninterrupted fix");
        from_first_write.elapsed()
    };
    eprintln!("atomic_fix: an uninterrupted fix writes for {writing:?}");
    let writing_ms = (writing.as_millis() as u64).max(10);

    // Every third run is killed 5..200 ms after it starts (while it loads the policy or checks);
    // the second of three at a random point of the writing time (loading 19 MiB of policy takes
    // seconds on a debug build, so a delay counted from the start would never land in the
    // writes); the third 0..3 ms after the first module's staged files are seen (staging is
    // brief next to checking 64 KiB files: a random delay seldom lands in it).
    let mut mixed = 0;
    let mut staging = 0;
    let mut leftover_tmp = 0;
    let mut mixed_root = None;
    let mut staged_root = None;
    for i in 0..ITERATIONS {
        let from_start = i % 3 == 0;
        let when_staged = i % 3 == 2;
        let delay = if from_start {
            rng.between(5, 200)
        } else if when_staged {
            rng.between(0, 3)
        } else {
            rng.between(1, writing_ms)
        };
        let root = old_root();
        let var = tempdir();
        let started = Instant::now();
        let mut child = fix(policy, &root, var.path()).spawn_quiet();
        if !from_start {
            wait_first_write(&root, &mut child);
        }
        if when_staged {
            while temporary_files(&root) == 0 && child.try_wait().expect("wait for tenet").is_none()
            {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let writes_at = started.elapsed();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().expect("wait for tenet");
        let (old, new, other) = classify(&root);
        let tmp = temporary_files(&root);
        leftover_tmp += tmp;
        if tmp > 0 {
            staging += 1;
        }
        let when = if from_start {
            "start".to_string()
        } else if when_staged {
            format!("staged files appeared (first write at {writes_at:?})")
        } else {
            format!("first write (at {writes_at:?})")
        };
        eprintln!(
            "atomic_fix: killed {delay} ms after {when} ({status:?}): {old} old, {new} new, {tmp} temporary files left"
        );
        assert!(
            other.is_empty(),
            "after a SIGKILL {delay} ms after {when}, {} files are neither old nor new: {other:?}",
            other.len()
        );
        if old > 0 && new > 0 {
            mixed += 1;
            mixed_root = Some((root, var));
        } else if tmp > 0 {
            staged_root = Some((root, var));
        }
    }
    eprintln!(
        "atomic_fix: {mixed} of {ITERATIONS} runs killed mid-write, {staging} with staged files \
         left; {leftover_tmp} temporary files left in all"
    );
    assert!(
        mixed > 0,
        "no run was killed while writing (some files old, some new): the test proved nothing"
    );
    assert!(
        staging > 0,
        "no run was killed while staging (temporary files left): the test proved nothing"
    );

    // A fix after the kill converges, and removes what the killed run left.
    for (root, var) in [mixed_root, staged_root].into_iter().flatten() {
        fix(policy, &root, var.path()).run().assert_code(0);
        let (old, new, other) = classify(&root);
        assert_eq!(
            (old, new, other.len()),
            (0, FILES, 0),
            "fix after a kill: {other:?}"
        );
        assert_eq!(
            temporary_files(&root),
            0,
            "temporary files of the killed run are left after the next fix"
        );
    }
}

//! # tenet-tests: end-to-end tests of the `tenet` binary
//!
//! A small DSL the tests in `tests/` share:
//! - [`tenet_bin`] and [`fixtures_dir`] locate the binary under test and `tests/fixtures`;
//! - [`TestRoot`] builds a throw-away managed system (a root prefix in a temporary directory:
//!   `etc/passwd`, `etc/group`, `proc/sys` files, a dpkg database, `etc/sysctl.conf`, ...);
//! - [`Tenet`] runs the binary (optionally inside a private mount namespace, or with
//!   [`Tenet::in_netns`] inside a network namespace made by [`Netns`]) and returns its exit
//!   code, stdout and stderr ([`Run`]), with [`Run::json`] for `--format json`;
//! - [`dns_query_a`] is a minimal DNS client, to ask a dnsmasq a test started;
//! - [`require_root`] skips privileged tests (or fails them when
//!   `TENET_REQUIRE_PRIVILEGED_TESTS=1`, as CI sets it);
//! - [`PathStubs`] puts harmless `ifup` / `update-grub` stand-ins first on `PATH`, so the
//!   fixture scripts never touch the host's network or boot loader;
//! - report helpers ([`module`], [`rule`], [`action_log`], [`assert_report_consistent`]) read
//!   the JSON contract of `tenet compliance ... --format json`.
//!
//! - [`browser::Browser`] drives a real headless Chromium (WebDriver, chromedriver) for the
//!   web console's tests, and saves screenshots.
//!
//! Nothing here writes outside temporary directories: every run gets `--root <tempdir>`.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub mod browser;
pub mod collector;
pub mod lir;
pub use tenet_modules::testing::{Entry, Netns, diff_snapshots, require_root, snapshot};
pub use tenet_release::testing::tool;

/// The `tenet` binary of this build: `target/<profile>/tenet`, next to the `deps` directory the
/// running test executable lives in.
pub fn tenet_bin() -> PathBuf {
    workspace_bin("tenet-agent", "tenet")
}

/// The `tenet-collector` binary of this build (built on first use, like [`tenet_bin`]).
pub fn collector_bin() -> PathBuf {
    workspace_bin("tenet-collector", "tenet-collector")
}

fn workspace_bin(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("cannot locate the test executable");
    let deps = exe
        .parent()
        .expect("test executable has no parent directory");
    let profile_dir = if deps.file_name() == Some(OsStr::new("deps")) {
        deps.parent().expect("deps directory has no parent")
    } else {
        deps
    };
    let bin = profile_dir.join(name);
    // `cargo test --workspace` builds both binaries in its own build step (the agent and
    // collector packages have integration tests), so they are normally fresh here. A narrower
    // run (`cargo test -p tenet-tests`) may find one missing or older than the sources: then
    // build it, once, visibly. (Always running a nested `cargo build -p` would rebuild it with
    // that package's own feature set, unlike the workspace's, and churn the target dir.)
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    // A test that re-runs its own executable to measure it sets this once it built them.
    let prebuilt = std::env::var_os("TENET_E2E_PREBUILT").is_some_and(|v| v == "1");
    if !prebuilt && !built.iter().any(|b| b == name) {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        if binary_is_stale(&bin, &workspace) {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            eprintln!("tenet-tests: building the {name} binary (cargo build -p {package})");
            cmd.args(["build", "-p", package, "--bin", name])
                .current_dir(&workspace);
            if profile_dir.file_name() == Some(OsStr::new("release")) {
                cmd.arg("--release");
            }
            let status = cmd
                .status()
                .unwrap_or_else(|e| panic!("cannot run cargo to build {name}: {e}"));
            assert!(status.success(), "building the {name} binary failed");
        }
        built.push(name.to_string());
    }
    assert!(
        bin.is_file(),
        "{} does not exist after building it",
        bin.display()
    );
    bin
}

/// `bin` is missing, or older than a source file or manifest of a workspace crate the
/// binaries are built from.
fn binary_is_stale(bin: &Path, workspace: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return true;
    };
    fn newer(path: &Path, than: std::time::SystemTime) -> bool {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return false;
        };
        if meta.is_dir() {
            return std::fs::read_dir(path)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| newer(&e.path(), than));
        }
        meta.modified().is_ok_and(|m| m > than)
    }
    let crates = [
        "fsutil",
        "rulesets",
        "templates",
        "release",
        "modules",
        "agent",
        "collector",
    ];
    newer(&workspace.join("Cargo.toml"), built)
        || newer(&workspace.join("Cargo.lock"), built)
        || crates.iter().any(|c| {
            ["src", "Cargo.toml", "library", "build.rs"]
                .iter()
                .any(|part| newer(&workspace.join(c).join(part), built))
        })
}

/// `tests/fixtures` of the project: the data tests use (OpenSVC exports, forms, MachineConfigs)
/// and the OpenSVC-convention module scripts written for the tests.
pub fn fixtures_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    assert!(d.is_dir(), "fixtures directory {} not found", d.display());
    d.canonicalize().unwrap_or(d)
}

/// `tests/fixtures/opensvc-spd`: the sharded-database deployment exports and module scripts.
pub fn spd_fixtures() -> PathBuf {
    fixtures_dir().join("opensvc-spd")
}

/// The node export of the sharded-database deployment (6 modulesets).
pub fn node_export() -> PathBuf {
    spd_fixtures().join("node-export.json")
}

/// The service export of the sharded-database deployment (`spdc.svc.db.cnf`).
pub fn service_export() -> PathBuf {
    spd_fixtures().join("service-export.json")
}

/// A bundle shipped in `rulesets/library/` (`spdc-node`, `spdc-svc`).
pub fn library_bundle(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rulesets/library")
        .join(name);
    assert!(d.is_dir(), "library bundle {} not found", d.display());
    d.canonicalize().unwrap_or(d)
}

/// What "the same file" means between two runs: kind, mode, uid, gid, content (no times, no
/// inodes).
pub type TreeEntry = (String, u32, u32, u32, Option<Vec<u8>>);

/// The tree of a root as [`TreeEntry`] per path: what two runs must agree on to have
/// produced "the same files".
pub fn tree(root: &Path) -> BTreeMap<PathBuf, TreeEntry> {
    snapshot(root)
        .into_iter()
        .map(|(p, e)| (p, (e.kind, e.mode, e.uid, e.gid, e.content)))
        .collect()
}

/// A temporary directory (removed on drop).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(".tenet-e2e-")
        .tempdir()
        .expect("create a temporary directory")
}

/// Writes `content` to `path`, creating its parents.
pub fn write(path: &Path, content: impl AsRef<[u8]>) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    }
    std::fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Sets the permission bits of `path`.
pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, path.display()));
}

/// Reads `path` as text, `None` when it does not exist.
pub fn read(path: &Path) -> Option<String> {
    match std::fs::read(path) {
        Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("read {}: {e}", path.display()),
    }
}

// ---------------------------------------------------------------------------------------------
// Test roots

/// Builds a [`TestRoot`].
#[derive(Debug, Default)]
pub struct TestRootBuilder {
    proc_sys: Vec<(String, String)>,
    packages: Option<Vec<(String, String)>>,
    sysctl_conf: Option<String>,
    files: Vec<(String, Vec<u8>)>,
    no_os_release: bool,
}

impl TestRootBuilder {
    /// A live kernel parameter: `<root>/proc/sys/<key with . as />` holding `value` + newline.
    pub fn proc_sys(mut self, key: &str, value: &str) -> Self {
        self.proc_sys.push((key.to_string(), value.to_string()));
        self
    }

    /// The live values of the spdc.kernel parameters on a stock kernel (non-compliant with
    /// the spdc policy for `ip_local_port_range[1]` and `max_map_count`).
    pub fn stock_kernel(self) -> Self {
        self.proc_sys("net.ipv4.ip_local_port_range", "32768\t60999")
            .proc_sys("vm.max_map_count", "65530")
            .proc_sys("vm.swappiness", "60")
    }

    /// Records `names` as installed in `<root>/var/lib/dpkg/status` (version `1.0`). Without
    /// this call the root has an empty dpkg database.
    pub fn installed(mut self, names: &[&str]) -> Self {
        let list = self.packages.get_or_insert_with(Vec::new);
        list.extend(names.iter().map(|n| (n.to_string(), "1.0".to_string())));
        self
    }

    /// `<root>/etc/sysctl.conf` content (default: a comment line only).
    pub fn sysctl_conf(mut self, text: &str) -> Self {
        self.sysctl_conf = Some(text.to_string());
        self
    }

    /// Any other file, by its absolute path in the managed system.
    pub fn file(mut self, abs: &str, content: impl AsRef<[u8]>) -> Self {
        self.files
            .push((abs.to_string(), content.as_ref().to_vec()));
        self
    }

    /// Leaves out `etc/os-release` (default: a Debian 12 one).
    pub fn without_os_release(mut self) -> Self {
        self.no_os_release = true;
        self
    }

    /// Creates the root.
    pub fn build(self) -> TestRoot {
        let dir = tempdir();
        let root = TestRoot { dir };
        let p = root.path();
        write(
            &p.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nmysql:x:999:999:MySQL Server:/var/lib/mysql:/usr/sbin/nologin\n",
        );
        write(&p.join("etc/group"), "root:x:0:\nmysql:x:999:\n");
        if !self.no_os_release {
            write(
                &p.join("etc/os-release"),
                "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n",
            );
        }
        write(
            &p.join("etc/sysctl.conf"),
            self.sysctl_conf
                .as_deref()
                .unwrap_or("# /etc/sysctl.conf - test root\n"),
        );
        for (key, value) in &self.proc_sys {
            let rel: PathBuf = key.split('.').collect();
            write(&p.join("proc/sys").join(rel), format!("{value}\n"));
        }
        let packages = self.packages.unwrap_or_default();
        let installed: Vec<(&str, &str)> = packages
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        tenet_modules::testing::dpkg::init_dpkg_root(p, &installed);
        for (abs, content) in &self.files {
            write(&root.under_root(abs), content);
        }
        root
    }
}

/// A managed system under a temporary root prefix (removed on drop).
#[derive(Debug)]
pub struct TestRoot {
    dir: tempfile::TempDir,
}

impl TestRoot {
    /// A builder; `TestRoot::builder().build()` is a minimal Debian-like root.
    pub fn builder() -> TestRootBuilder {
        TestRootBuilder::default()
    }

    /// The root prefix.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The real path of an absolute path of the managed system (`/etc/x` → `<root>/etc/x`;
    /// unlike `Path::join`, an absolute path does not replace the root).
    pub fn under_root(&self, abs: &str) -> PathBuf {
        self.path().join(abs.trim_start_matches('/'))
    }

    /// Reads a file of the managed system, `None` when missing.
    pub fn read(&self, abs: &str) -> Option<String> {
        read(&self.under_root(abs))
    }

    /// A snapshot of the whole root (content, mode, owner, mtime, inode of every entry).
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Entry> {
        snapshot(self.path())
    }

    /// Installed package names in the root's dpkg status file (state `install ok installed`).
    pub fn installed_packages(&self) -> Vec<String> {
        let text = self.read("/var/lib/dpkg/status").unwrap_or_default();
        text.split("\n\n")
            .filter(|stanza| {
                stanza
                    .lines()
                    .any(|l| l.trim() == "Status: install ok installed")
            })
            .filter_map(|stanza| stanza.lines().find_map(|l| l.strip_prefix("Package: ")))
            .map(|s| s.trim().to_string())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Running tenet

/// What a run of the binary produced.
#[derive(Debug, Clone)]
pub struct Run {
    /// Exit code; 128 + signal when killed by a signal.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The command line, for messages.
    pub command: String,
}

impl Run {
    /// Parses stdout as JSON, panicking with the whole output when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout of `{}` is not JSON ({e}):\n{}",
                self.command,
                self.describe()
            )
        })
    }

    /// Asserts the exit code.
    pub fn assert_code(&self, want: i32) -> &Self {
        assert_eq!(
            self.code,
            want,
            "`{}` exited {} instead of {want}:\n{}",
            self.command,
            self.code,
            self.describe()
        );
        self
    }

    /// stdout and stderr together, for messages.
    pub fn describe(&self) -> String {
        format!(
            "--- exit code {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A `tenet` command line being built.
#[derive(Debug, Clone)]
pub struct Tenet {
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    setup: Option<String>,
    netns: Option<String>,
    hostname: Option<String>,
}

/// Environment variables of the test process that would change what the binary does.
const SCRUBBED_ENV: &[&str] = &[
    "TENET_POLICY",
    "TENET_ROOT",
    "TENET_MODULES_DIR",
    "TENET_VAR_DIR",
    "TENET_PACKAGE_DIR",
    "TENET_NODE_CONFIG",
    "TENET_NODENAME",
    "TENET_LOG",
    "TENET_CONFIG",
    "TENET_ADMIN_TOKEN",
    "TENET_COLLECTOR_DB",
    "TENET_TEMPLATE_DIR",
    "TENET_RESOLVE",
];

impl Tenet {
    /// `tenet <args...>`.
    pub fn new<I, S>(args: I) -> Tenet
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Tenet {
            args: args
                .into_iter()
                .map(|a| a.as_ref().to_os_string())
                .collect(),
            env: Vec::new(),
            setup: None,
            netns: None,
            hostname: None,
        }
    }

    /// `tenet compliance <action>` (check, fix, fixable, auto, env, list, show, ...).
    pub fn compliance(action: &str) -> Tenet {
        Tenet::new(["compliance", action])
    }

    /// Adds one argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Tenet {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Tenet {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Adds `--name value`.
    pub fn opt(self, name: &str, value: impl AsRef<OsStr>) -> Tenet {
        self.arg(format!("--{name}")).arg(value)
    }

    /// `--policy PATH`.
    pub fn policy(self, p: impl AsRef<OsStr>) -> Tenet {
        self.opt("policy", p)
    }

    /// `--root DIR`.
    pub fn root(self, p: impl AsRef<OsStr>) -> Tenet {
        self.opt("root", p)
    }

    /// `--var-dir DIR`.
    pub fn var_dir(self, p: impl AsRef<OsStr>) -> Tenet {
        self.opt("var-dir", p)
    }

    /// `--modules-dir DIR`.
    pub fn modules_dir(self, p: impl AsRef<OsStr>) -> Tenet {
        self.opt("modules-dir", p)
    }

    /// `--package-dir DIR`.
    pub fn package_dir(self, p: impl AsRef<OsStr>) -> Tenet {
        self.opt("package-dir", p)
    }

    /// `--moduleset a,b`.
    pub fn moduleset(self, ms: &str) -> Tenet {
        self.opt("moduleset", ms)
    }

    /// `--module m`.
    pub fn module(self, m: &str) -> Tenet {
        self.opt("module", m)
    }

    /// `--format json`.
    pub fn format_json(self) -> Tenet {
        self.opt("format", "json")
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Tenet {
        self.env
            .push((k.as_ref().to_os_string(), v.as_ref().to_os_string()));
        self
    }

    /// Puts `stubs` first on the `PATH` of the process.
    pub fn path_stubs(self, stubs: &PathStubs) -> Tenet {
        let path = stubs.path_env();
        self.env("PATH", path)
    }

    /// Runs the binary in a private mount namespace (`unshare -m --propagation private`),
    /// after the shell commands `setup` (mounts) succeeded. Needs root.
    pub fn in_private_mount_ns(mut self, setup: &str) -> Tenet {
        self.setup = Some(setup.to_string());
        self
    }

    /// Runs the binary inside network namespace `name` (`ip netns exec NAME tenet ...`), one
    /// the test created ([`Netns`]). Needs root.
    pub fn in_netns(mut self, name: &str) -> Tenet {
        self.netns = Some(name.to_string());
        self
    }

    /// Runs the binary in a private UTS namespace whose host name is `name` (what `hostname`
    /// prints, for scripts and for the node facts), and a private mount namespace (combined
    /// with [`Tenet::in_private_mount_ns`] if also given). Needs root; the host's name is
    /// not changed.
    pub fn with_hostname(mut self, name: &str) -> Tenet {
        self.hostname = Some(name.to_string());
        self
    }

    /// The command, ready to spawn.
    pub fn command(&self) -> Command {
        let mut cmd = match (&self.setup, &self.hostname, &self.netns) {
            (None, None, Some(ns)) => {
                let mut c = tool("ip");
                c.args(["netns", "exec", ns])
                    .arg(tenet_bin())
                    .args(&self.args);
                c
            }
            (None, None, None) => {
                let mut c = Command::new(tenet_bin());
                c.args(&self.args);
                c
            }
            (setup, hostname, netns) => {
                assert!(
                    netns.is_none(),
                    "in_netns cannot be combined with a private mount or UTS namespace"
                );
                let mut c = tool("unshare");
                c.args(["-m", "--propagation", "private"]);
                let mut steps = Vec::new();
                if let Some(h) = hostname {
                    c.arg("-u");
                    steps.push(format!("hostname '{}'", h.replace('\'', "")));
                }
                steps.extend(setup.iter().cloned());
                c.args(["sh", "-c"])
                    .arg(format!("set -e; {}; exec \"$0\" \"$@\"", steps.join("; ")))
                    .arg(tenet_bin())
                    .args(&self.args);
                c
            }
        };
        for k in SCRUBBED_ENV {
            cmd.env_remove(k);
        }
        cmd.env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// The command line, for messages.
    pub fn display(&self) -> String {
        let mut s = String::from("tenet");
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        if let Some(setup) = &self.setup {
            s = format!("[mount ns: {setup}] {s}");
        }
        if let Some(ns) = &self.netns {
            s = format!("[netns {ns}] {s}");
        }
        if let Some(h) = &self.hostname {
            s = format!("[hostname {h}] {s}");
        }
        s
    }

    /// Runs to completion.
    pub fn run(&self) -> Run {
        let out = self
            .command()
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", self.display()));
        use std::os::unix::process::ExitStatusExt;
        let code = out
            .status
            .code()
            .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
        Run {
            code,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            command: self.display(),
        }
    }

    /// Starts the binary with output discarded (for runs a test kills).
    pub fn spawn_quiet(&self) -> Child {
        self.command()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.display()))
    }
}

// ---------------------------------------------------------------------------------------------
// PATH stubs

/// A temporary directory of stand-in commands put first on `PATH`: each prints what it was
/// called with, appends the call to `calls.log` in the directory, and exits 0.
#[derive(Debug)]
pub struct PathStubs {
    dir: tempfile::TempDir,
}

impl PathStubs {
    /// Stubs for `ifup` and `update-grub`.
    pub fn network_and_grub() -> PathStubs {
        PathStubs::new(&["ifup", "update-grub"])
    }

    /// Stubs for these command names.
    pub fn new(names: &[&str]) -> PathStubs {
        let dir = tempdir();
        chmod(dir.path(), 0o755);
        let log = dir.path().join("calls.log");
        for name in names {
            let p = dir.path().join(name);
            write(
                &p,
                format!(
                    "#!/bin/sh\necho \"stub {name} $*\"\necho \"{name} $*\" >> '{}'\nexit 0\n",
                    log.display()
                ),
            );
            chmod(&p, 0o755);
        }
        PathStubs { dir }
    }

    /// `PATH` with the stub directory first.
    pub fn path_env(&self) -> OsString {
        let mut p = self.dir.path().as_os_str().to_os_string();
        if let Some(old) = std::env::var_os("PATH") {
            p.push(":");
            p.push(old);
        }
        p
    }

    /// The calls made so far (`ifup br0`, ...).
    pub fn calls(&self) -> Vec<String> {
        read(&self.dir.path().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Script modules

/// A modules directory (mode 0755) holding copies of the fixture scripts of
/// `opensvc-spd/modules` (mode 0755), ready for `install-compat`.
pub fn spd_modules_dir() -> tempfile::TempDir {
    let dir = tempdir();
    chmod(dir.path(), 0o755);
    let src = spd_fixtures().join("modules");
    for e in std::fs::read_dir(&src).unwrap_or_else(|e| panic!("read {}: {e}", src.display())) {
        let e = e.expect("read dir entry");
        let to = dir.path().join(e.file_name());
        std::fs::copy(e.path(), &to)
            .unwrap_or_else(|err| panic!("copy {}: {err}", e.path().display()));
        chmod(&to, 0o755);
    }
    dir
}

/// Writes an executable script module `dir/<name>` with `body` and `mode`.
pub fn script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    write(&p, body);
    chmod(&p, mode);
    p
}

// ---------------------------------------------------------------------------------------------
// Report helpers (the `--format json` contract)

/// The module named `name` of a run report.
pub fn module<'a>(report: &'a Value, name: &str) -> &'a Value {
    let modules = report["modules"]
        .as_array()
        .unwrap_or_else(|| panic!("report has no modules array: {report:#}"));
    modules
        .iter()
        .find(|m| m["module"] == name)
        .unwrap_or_else(|| {
            let names: Vec<&str> = modules
                .iter()
                .filter_map(|m| m["module"].as_str())
                .collect();
            panic!("module {name} not in the report; modules: {names:?}")
        })
}

/// A module's final status (`ok`, `nok`, `n/a`).
pub fn status(module: &Value) -> &str {
    module["status"]
        .as_str()
        .unwrap_or_else(|| panic!("module without status: {module:#}"))
}

/// The rule of an auto-module for variable `variable`.
pub fn rule<'a>(module: &'a Value, variable: &str) -> &'a Value {
    let rules = module["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("module has no rules array: {module:#}"));
    rules
        .iter()
        .find(|r| r["variable"] == variable)
        .unwrap_or_else(|| {
            let names: Vec<&str> = rules
                .iter()
                .filter_map(|r| r["variable"].as_str())
                .collect();
            panic!(
                "variable {variable} not in the rules of {}; rules: {names:?}",
                module["module"]
            )
        })
}

/// The logs of every sub-action named `action` of a module, joined.
pub fn action_log(module: &Value, action: &str) -> String {
    module["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| x["action"] == action)
                .filter_map(|x| x["log"].as_str())
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}

/// Every sub-action log of a module, joined, for messages and broad asserts.
pub fn all_logs(module: &Value) -> String {
    module["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["log"].as_str())
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}

/// The names of the sub-actions a module ran, in order.
pub fn actions_run(module: &Value) -> Vec<String> {
    module["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["action"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts the report's shape: the JSON contract fields are present, statuses are valid, and
/// `summary` counts what `modules` holds.
pub fn assert_report_consistent(report: &Value) {
    for k in ["action", "policy_hash", "modules", "summary", "duration_ms"] {
        assert!(report.get(k).is_some(), "report lacks {k}: {report:#}");
    }
    let modules = report["modules"].as_array().expect("modules is an array");
    let count = |s: &str| modules.iter().filter(|m| m["status"] == s).count() as u64;
    for m in modules {
        for k in [
            "module",
            "moduleset",
            "kind",
            "status",
            "actions",
            "duration_ms",
        ] {
            assert!(m.get(k).is_some(), "module lacks {k}: {m:#}");
        }
        assert!(
            matches!(m["status"].as_str(), Some("ok" | "nok" | "n/a")),
            "bad module status: {m:#}"
        );
        assert!(
            matches!(m["kind"].as_str(), Some("script" | "auto")),
            "bad module kind: {m:#}"
        );
        for a in m["actions"].as_array().expect("actions is an array") {
            for k in ["action", "exit_code", "log", "duration_ms"] {
                assert!(a.get(k).is_some(), "action lacks {k}: {a:#}");
            }
        }
        if let Some(rules) = m.get("rules").and_then(Value::as_array) {
            for r in rules {
                for k in ["variable", "class", "status", "message"] {
                    assert!(r.get(k).is_some(), "rule lacks {k}: {r:#}");
                }
            }
        }
    }
    let s = &report["summary"];
    assert_eq!(s["ok"].as_u64(), Some(count("ok")), "summary.ok: {s}");
    assert_eq!(s["nok"].as_u64(), Some(count("nok")), "summary.nok: {s}");
    assert_eq!(s["na"].as_u64(), Some(count("n/a")), "summary.na: {s}");
}

/// `module name → status` of a report.
pub fn statuses(report: &Value) -> BTreeMap<String, String> {
    report["modules"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (
                        m["module"].as_str().unwrap_or("?").to_string(),
                        m["status"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The text of a variable's value in the node export (`var_value`), parsed as JSON.
pub fn export_variable(export: &Path, variable: &str) -> Value {
    let text = std::fs::read_to_string(export)
        .unwrap_or_else(|e| panic!("read {}: {e}", export.display()));
    let doc: Value = serde_json::from_str(&text).expect("export is JSON");
    for rs in doc["rulesets"].as_array().into_iter().flatten() {
        for v in rs["variables"].as_array().into_iter().flatten() {
            if v["var_name"] == variable {
                let raw = v["var_value"].as_str().unwrap_or_default();
                return serde_json::from_str(raw).unwrap_or(Value::String(raw.to_string()));
            }
        }
    }
    panic!("variable {variable} not in {}", export.display())
}

// ---------------------------------------------------------------------------------------------
// DNS

/// Asks `server` (UDP) for the A records of `name`: a minimal RFC 1035 client, enough to prove
/// a dnsmasq the test started answers. Retries for up to `wait` while nothing answers (the
/// server may still be starting); returns the addresses of the first answer.
pub fn dns_query_a(
    server: std::net::SocketAddr,
    name: &str,
    wait: std::time::Duration,
) -> Result<Vec<std::net::Ipv4Addr>, String> {
    use std::time::{Duration, Instant};
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    let n = loop {
        let _ = sock.send_to(&q, server);
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => break n,
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("no answer from {server} within {wait:?}: {e}"));
            }
            Err(_) => continue,
        }
    };
    let r = &buf[..n];
    if r.len() < 12 || r[0..2] != [0x12, 0x34] {
        return Err(format!("not an answer to our query: {r:?}"));
    }
    let rcode = r[3] & 0x0f;
    if rcode != 0 {
        return Err(format!("rcode {rcode}"));
    }
    let ancount = u16::from_be_bytes([r[6], r[7]]) as usize;
    let skip_name = |mut i: usize| -> Option<usize> {
        loop {
            let len = *r.get(i)? as usize;
            if len == 0 {
                return Some(i + 1);
            }
            if len & 0xc0 == 0xc0 {
                return Some(i + 2);
            }
            i += 1 + len;
        }
    };
    let mut i = skip_name(12).ok_or("truncated question")? + 4;
    let mut out = Vec::new();
    for _ in 0..ancount {
        i = skip_name(i).ok_or("truncated answer")?;
        let h = r.get(i..i + 10).ok_or("truncated answer")?;
        let (kind, rdlen) = (
            u16::from_be_bytes([h[0], h[1]]),
            u16::from_be_bytes([h[8], h[9]]) as usize,
        );
        let data = r.get(i + 10..i + 10 + rdlen).ok_or("truncated rdata")?;
        if kind == 1 && rdlen == 4 {
            out.push(std::net::Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        i += 10 + rdlen;
    }
    Ok(out)
}

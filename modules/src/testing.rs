//! The class contract, as one test helper every class's tests call.
//!
//! [`assert_class_contract`] takes a rule and a host whose root the caller prepared in a
//! non-compliant state, and proves: check reports nok and writes nothing; fix reports ok and
//! a check after it is ok, both before [`Host::sync`] commits the staged writes and after; a
//! second fix reports ok and changes nothing at all (no file rewritten, no mtime moved, no
//! backup taken). [`assert_check_only_contract`] is its counterpart for check-only classes
//! (`mount`). [`require_root`] gates privileged tests, and [`Netns`] gives tests a network
//! namespace of their own (removed on drop); [`dpkg`] builds `.deb` files and dpkg roots.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::class::{Class, ClassEntry, DynRule, RuleContext};
use crate::host::Host;
use crate::status::{Log, Status};

/// Everything observable about one path of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `file`, `dir`, `symlink -> target` or `other`.
    pub kind: String,
    /// Mode bits (with file type).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, nanoseconds.
    pub mtime_ns: i128,
    /// Inode (a rename-over changes it even when content and mtime are equal).
    pub ino: u64,
    /// Content of regular files.
    pub content: Option<Vec<u8>>,
}

/// A snapshot of every path under `root` (symlinks not followed).
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let ft = m.file_type();
            let kind = if ft.is_symlink() {
                format!(
                    "symlink -> {}",
                    std::fs::read_link(&p)
                        .map(|t| t.display().to_string())
                        .unwrap_or_default()
                )
            } else if ft.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else if ft.is_file() {
                "file".into()
            } else {
                "other".into()
            };
            let content = ft.is_file().then(|| std::fs::read(&p).unwrap_or_default());
            out.insert(
                p.strip_prefix(root).unwrap_or(&p).to_path_buf(),
                Entry {
                    kind,
                    mode: m.mode(),
                    uid: m.uid(),
                    gid: m.gid(),
                    mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                    ino: m.ino(),
                    content,
                },
            );
        }
    }
    out
}

/// Describes how two snapshots differ (empty when equal).
pub fn diff_snapshots(a: &BTreeMap<PathBuf, Entry>, b: &BTreeMap<PathBuf, Entry>) -> Vec<String> {
    let mut d = Vec::new();
    for (p, e) in a {
        match b.get(p) {
            None => d.push(format!("removed {}", p.display())),
            Some(f) if f != e => d.push(format!(
                "changed {}: {:?} -> {:?}",
                p.display(),
                summary(e),
                summary(f)
            )),
            _ => {}
        }
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        d.push(format!("added {}", p.display()));
    }
    d
}

fn summary(e: &Entry) -> String {
    format!(
        "{} mode={:o} {}:{} mtime={} ino={} len={}",
        e.kind,
        e.mode,
        e.uid,
        e.gid,
        e.mtime_ns,
        e.ino,
        e.content.as_ref().map_or(0, |c| c.len())
    )
}

fn load<C: Class>(rule: &Value, ctx: &RuleContext) -> Vec<Box<dyn DynRule>> {
    let rules = (ClassEntry::of::<C>().load)(rule, ctx)
        .unwrap_or_else(|e| panic!("class {}: rule {rule} does not load: {e}", C::NAME));
    assert!(
        !rules.is_empty(),
        "class {}: rule {rule} gave no rules",
        C::NAME
    );
    rules
}

fn run_all(
    rules: &[Box<dyn DynRule>],
    f: impl Fn(&dyn DynRule, &mut Log) -> Status,
) -> (Status, Vec<String>) {
    let mut log = Log::new();
    let st = Status::merge_all(rules.iter().map(|r| f(r.as_ref(), &mut log)));
    (st, log.take().into_iter().map(|l| l.text).collect())
}

/// Asserts the class contract for `rule` (a variable value) of class `C` on `host`, whose root
/// `watch` (usually the root prefix, and the var dir when it lies elsewhere) the caller prepared
/// so that the rule is NOT complied with. Returns the first check's log, for further asserts.
pub fn assert_class_contract<C: Class>(host: &Host, watch: &[&Path], rule: Value) -> Vec<String> {
    assert_class_contract_in::<C>(&RuleContext::default(), host, watch, rule)
}

/// [`assert_class_contract`] for a rule loaded in `ctx` (templates and template data).
pub fn assert_class_contract_in<C: Class>(
    ctx: &RuleContext,
    host: &Host,
    watch: &[&Path],
    rule: Value,
) -> Vec<String> {
    let snap = || watch.iter().map(|w| snapshot(w)).collect::<Vec<_>>();
    let rules = load::<C>(&rule, ctx);

    let before = snap();
    let (first, first_log) = run_all(&rules, |r, l| r.check(host.view(), l));
    assert_eq!(
        first,
        Status::Nok,
        "class {}: check of {rule} on the prepared root should be nok; log: {first_log:#?}",
        C::NAME
    );
    let after_check = snap();
    for (a, b) in before.iter().zip(&after_check) {
        let d = diff_snapshots(a, b);
        assert!(
            d.is_empty(),
            "class {}: check wrote to the system: {d:#?}",
            C::NAME
        );
    }

    let (fixed, log) = run_all(&rules, |r, l| r.fix(host, l));
    assert_eq!(
        fixed,
        Status::Ok,
        "class {}: fix of {rule} should be ok; log: {log:#?}",
        C::NAME
    );
    // Before the commit, the check reads the staged writes; after it, the files on disk.
    let (again, log) = run_all(&rules, |r, l| r.check(host.view(), l));
    assert_eq!(
        again,
        Status::Ok,
        "class {}: check after fix of {rule}, before the commit, should be ok; log: {log:#?}",
        C::NAME
    );
    host.sync()
        .unwrap_or_else(|e| panic!("class {}: committing the fix of {rule}: {e}", C::NAME));
    let (again, log) = run_all(&rules, |r, l| r.check(host.view(), l));
    assert_eq!(
        again,
        Status::Ok,
        "class {}: check after fix of {rule} should be ok; log: {log:#?}",
        C::NAME
    );

    let settled = snap();
    let (second, log) = run_all(&rules, |r, l| r.fix(host, l));
    host.sync().unwrap_or_else(|e| {
        panic!(
            "class {}: committing the second fix of {rule}: {e}",
            C::NAME
        )
    });
    assert_eq!(
        second,
        Status::Ok,
        "class {}: second fix of {rule} should be ok; log: {log:#?}",
        C::NAME
    );
    for (a, b) in settled.iter().zip(&snap()) {
        let d = diff_snapshots(a, b);
        assert!(
            d.is_empty(),
            "class {}: a second fix changed the system: {d:#?}",
            C::NAME
        );
    }
    first_log
}

/// Runs check of `rule` and returns its status and log lines (for negative cases).
pub fn check<C: Class>(host: &Host, rule: Value) -> (Status, Vec<String>) {
    check_in::<C>(&RuleContext::default(), host, rule)
}

/// Runs fix of `rule`, commits its writes as the engine does, and returns its status and log
/// lines (for negative cases); a failed commit is a panic.
pub fn fix<C: Class>(host: &Host, rule: Value) -> (Status, Vec<String>) {
    fix_in::<C>(&RuleContext::default(), host, rule)
}

/// [`check`] for a rule loaded in `ctx`.
pub fn check_in<C: Class>(ctx: &RuleContext, host: &Host, rule: Value) -> (Status, Vec<String>) {
    let rules = load::<C>(&rule, ctx);
    run_all(&rules, |r, l| r.check(host.view(), l))
}

/// [`fix`] for a rule loaded in `ctx`.
pub fn fix_in<C: Class>(ctx: &RuleContext, host: &Host, rule: Value) -> (Status, Vec<String>) {
    let rules = load::<C>(&rule, ctx);
    let out = run_all(&rules, |r, l| r.fix(host, l));
    host.sync()
        .unwrap_or_else(|e| panic!("class {}: committing the fix of {rule}: {e}", C::NAME));
    out
}

/// Whether the tests run as root. When not: prints `SKIP <name>: needs root` and returns
/// false, unless `TENET_REQUIRE_PRIVILEGED_TESTS=1`, where it panics (so CI cannot skip).
pub fn require_root(test_name: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("TENET_REQUIRE_PRIVILEGED_TESTS").as_deref() == Ok("1") {
        panic!("{test_name}: needs root, and TENET_REQUIRE_PRIVILEGED_TESTS=1 forbids skipping it");
    }
    eprintln!("SKIP {test_name}: needs root");
    false
}

/// The contract of a check-only class (`fixable` and `fix` are n/a, like `mount`): on a host
/// prepared NOT to comply, check is nok and writes nothing; fixable and fix are n/a, say why,
/// and change nothing; check is still nok after them. Returns the first check's log.
pub fn assert_check_only_contract<C: Class>(
    host: &Host,
    watch: &[&Path],
    rule: Value,
) -> Vec<String> {
    let snap = || watch.iter().map(|w| snapshot(w)).collect::<Vec<_>>();
    let rules = load::<C>(&rule, &RuleContext::default());
    let before = snap();
    let (first, first_log) = run_all(&rules, |r, l| r.check(host.view(), l));
    assert_eq!(
        first,
        Status::Nok,
        "class {}: check of {rule} on the prepared root should be nok; log: {first_log:#?}",
        C::NAME
    );
    let (fixable, log) = run_all(&rules, |r, l| r.fixable(host.view(), l));
    assert_eq!(
        fixable,
        Status::NotApplicable,
        "class {}: fixable of a check-only class should be n/a; log: {log:#?}",
        C::NAME
    );
    let (fixed, log) = run_all(&rules, |r, l| r.fix(host, l));
    assert_eq!(
        fixed,
        Status::NotApplicable,
        "class {}: fix of a check-only class should be n/a; log: {log:#?}",
        C::NAME
    );
    assert!(
        !log.is_empty(),
        "class {}: a fix that does nothing must say why",
        C::NAME
    );
    let (again, _) = run_all(&rules, |r, l| r.check(host.view(), l));
    assert_eq!(again, Status::Nok, "class {}: still nok after fix", C::NAME);
    for (a, b) in before.iter().zip(&snap()) {
        let d = diff_snapshots(a, b);
        assert!(
            d.is_empty(),
            "class {}: a check-only class wrote to the system: {d:#?}",
            C::NAME
        );
    }
    first_log
}

/// A network namespace a test creates (`ip netns add tenet-test-<pid>-<tag>`), deleted on
/// drop, panics included. Tests use it to run the bridge class and servers (dnsmasq) away from
/// the host's network: [`Netns::run`] runs a closure on a thread that entered the namespace.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and brings its loopback up. Needs root; panics on failure.
    pub fn new(tag: &str) -> Netns {
        let name = format!("tenet-test-{}-{tag}", std::process::id());
        // A namespace left behind by a killed earlier run with the same pid and tag.
        let _ = tenet_release::testing::tool("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let ns = Netns { name };
        ns.sh(&["ip", "netns", "add", &ns.name]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace name (for `ip netns exec NAME ...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME args...` (test setup only: the agent itself never runs `ip`),
    /// panicking with its stderr on failure.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        self.sh(&all);
    }

    fn sh(&self, argv: &[&str]) {
        let out = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
        assert!(
            out.status.success(),
            "{argv:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `f` on a thread that entered the namespace (`setns`), returning its result (a
    /// panic in `f` is re-raised here). Other threads stay where they are.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                f()
            });
            match handle.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = tenet_release::testing::tool("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Helpers to build `.deb` files and private dpkg roots, for the `package` class's tests and
/// the end-to-end tests of other crates. They panic on failure.
pub mod dpkg {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// Builds `<dir>/<name>_<version>_all.deb` with `dpkg-deb --build`: a package without
    /// maintainer scripts holding one file, `/usr/share/doc/<name>/marker`.
    pub fn build_test_deb(dir: &Path, name: &str, version: &str) -> PathBuf {
        build_test_deb_with(dir, name, version, "")
    }

    /// Like [`build_test_deb`], with extra control fields (`"Depends: foo\n"`).
    pub fn build_test_deb_with(dir: &Path, name: &str, version: &str, extra: &str) -> PathBuf {
        let tree = tempfile_dir(dir, &format!(".build-{name}-{version}"));
        let doc = tree.join("usr/share/doc").join(name);
        std::fs::create_dir_all(tree.join("DEBIAN")).expect("create DEBIAN");
        std::fs::create_dir_all(&doc).expect("create doc dir");
        std::fs::write(doc.join("marker"), format!("{name} {version}\n")).expect("write marker");
        std::fs::write(
            tree.join("DEBIAN/control"),
            format!(
                "Package: {name}\nVersion: {version}\nArchitecture: all\n\
                 Maintainer: Tenet Tests <tests@example.invalid>\n{extra}\
                 Description: test package {name}\n"
            ),
        )
        .expect("write control");
        let deb = dir.join(format!("{name}_{}_all.deb", version.replace(':', "%3a")));
        let out = Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&tree)
            .arg(&deb)
            .output()
            .expect("run dpkg-deb");
        assert!(
            out.status.success(),
            "dpkg-deb --build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_dir_all(&tree).expect("remove build tree");
        deb
    }

    /// Creates a minimal dpkg database under `root` (`var/lib/dpkg/{status,available,info,
    /// updates,triggers}`) recording `installed` (name, version) as installed, architecture
    /// `all`, each with an empty file list.
    pub fn init_dpkg_root(root: &Path, installed: &[(&str, &str)]) {
        let db = root.join("var/lib/dpkg");
        for d in ["info", "updates", "triggers"] {
            std::fs::create_dir_all(db.join(d)).expect("create dpkg dirs");
        }
        let mut status = String::new();
        for (name, version) in installed {
            status.push_str(&format!(
                "Package: {name}\nStatus: install ok installed\nPriority: optional\n\
                 Section: misc\nMaintainer: Tenet Tests <tests@example.invalid>\n\
                 Architecture: all\nVersion: {version}\nDescription: test package {name}\n\
                 \x20a longer description\n\n"
            ));
            std::fs::write(db.join("info").join(format!("{name}.list")), "")
                .expect("write file list");
        }
        std::fs::write(db.join("status"), status).expect("write status");
        std::fs::write(db.join("available"), "").expect("write available");
    }

    fn tempfile_dir(parent: &Path, name: &str) -> PathBuf {
        let p = parent.join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create build dir");
        p
    }
}

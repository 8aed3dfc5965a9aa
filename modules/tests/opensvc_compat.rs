//! Compatibility with OpenSVC's compliance objects, one table per class.
//!
//! Each `tests/fixtures/opensvc-compat/<class>.json` row is a variable value (one rule or a
//! list, as the collector gives it), a starting tree, and what OpenSVC's own object
//! (`var/compliance/com.opensvc/<class>.py`, run unmodified under Python 3) does with it: the
//! check result, the fix result, the tree it leaves and the check after the fix. The rows were
//! written from reading the upstream objects and are verified against them by
//! `bench/compat/diff.py --tables` when an upstream checkout is at hand.
//!
//! This test runs every row through Tenet the way OpenSVC modules call objects
//! ([`tenet_modules::object::run_object`], a `PREFIX` and the variable in the environment) on
//! a temporary root, and requires OpenSVC's outcome, unless the row has a `tenet` part: a
//! deliberate difference, whose `deviation` id must be a row of `docs/opensvc-compat.md`
//! (`#id`), and whose fields replace OpenSVC's in what Tenet must do.
//!
//! Tree entries: `d PATH [MODE] [UID:GID]`, `f PATH [MODE] [UID:GID] =CONTENT`,
//! `l PATH -> TARGET`; `{R}` stands for the root (the rules' paths are absolute paths of the
//! managed system). A mode left out means 0755 for a directory and 0644 for a file; an owner
//! left out is not compared. sysctl and nodeconf rows give a `state` instead of a tree: the
//! live and persisted value of each key, the node configuration's keys as text.
//!
//! Rows that set or compare owners need root; they run in a separate `*_owners` test, marked
//! ignored when the tests are built by another user (see `modules/build.rs`).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tenet_modules::class::RuleContext;
use tenet_modules::{Host, Status, classes, object};

const PREFIX: &str = "OSVC_COMP_COMPAT_";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/opensvc-compat")
}

/// The deviation ids `docs/opensvc-compat.md` documents (its `` `#id` `` markers).
fn documented() -> Vec<String> {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/opensvc-compat.md");
    let text = fs::read_to_string(&doc).expect("docs/opensvc-compat.md");
    text.split("`#")
        .skip(1)
        .filter_map(|rest| rest.split_once('`').map(|(id, _)| id.to_owned()))
        .filter(|id| {
            !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        .collect()
}

/// One path of a tree, as a row writes it or as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: char,
    mode: Option<u32>,
    owner: Option<(u32, u32)>,
    /// File content or link target.
    data: String,
}

fn bad(entry: &str) -> ! {
    panic!("bad tree entry {entry:?}")
}

fn parse_entry(entry: &str) -> (String, Node) {
    let kind = entry.chars().next().unwrap_or_else(|| bad(entry));
    let rest = entry.get(2..).unwrap_or_else(|| bad(entry));
    if kind == 'l' {
        let (path, target) = rest.split_once(" -> ").unwrap_or_else(|| bad(entry));
        let node = Node {
            kind,
            mode: None,
            owner: None,
            data: target.to_owned(),
        };
        return (path.to_owned(), node);
    }
    let (head, data) = match kind {
        'f' => {
            let (head, data) = rest.split_once(" =").unwrap_or_else(|| bad(entry));
            (head, data.to_owned())
        }
        'd' => (rest, String::new()),
        _ => bad(entry),
    };
    let mut words = head.split(' ');
    let path = words.next().unwrap_or_else(|| bad(entry)).to_owned();
    let mut node = Node {
        kind,
        mode: None,
        owner: None,
        data,
    };
    for w in words {
        if let Some((u, g)) = w.split_once(':') {
            node.owner = Some((
                u.parse().unwrap_or_else(|_| bad(entry)),
                g.parse().unwrap_or_else(|_| bad(entry)),
            ));
        } else {
            node.mode = Some(u32::from_str_radix(w, 8).unwrap_or_else(|_| bad(entry)));
        }
    }
    (path, node)
}

fn build(root: &Path, tree: &[String]) {
    for entry in tree {
        let (path, node) = parse_entry(entry);
        let p = root.join(&path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        match node.kind {
            'd' => {
                fs::create_dir_all(&p).unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(node.mode.unwrap_or(0o755)))
                    .unwrap();
            }
            'f' => {
                fs::write(&p, node.data.as_bytes()).unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(node.mode.unwrap_or(0o644)))
                    .unwrap();
            }
            _ => std::os::unix::fs::symlink(node.data.replace("{R}", ""), &p).unwrap(),
        }
        if let Some((u, g)) = node.owner {
            std::os::unix::fs::lchown(&p, Some(u), Some(g)).unwrap();
        }
    }
}

fn tree_of(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let ft = m.file_type();
            let (kind, data) = if ft.is_symlink() {
                (
                    'l',
                    fs::read_link(&p).unwrap().to_string_lossy().into_owned(),
                )
            } else if ft.is_dir() {
                stack.push(p.clone());
                ('d', String::new())
            } else if ft.is_file() {
                (
                    'f',
                    String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned(),
                )
            } else {
                ('?', String::new())
            };
            let node = Node {
                kind,
                mode: (kind != 'l').then_some(m.mode() & 0o7777),
                owner: Some((m.uid(), m.gid())),
                data,
            };
            out.insert(rel, node);
        }
    }
    out
}

/// The differences between the tree a row expects and the one on disk.
fn tree_diff(want: &[String], have: &BTreeMap<String, Node>) -> Vec<String> {
    let mut want_map = BTreeMap::new();
    for entry in want {
        let (path, mut node) = parse_entry(entry);
        node.data = node.data.replace("{R}", "");
        if node.kind != 'l' && node.mode.is_none() {
            node.mode = Some(if node.kind == 'd' { 0o755 } else { 0o644 });
        }
        want_map.insert(path, node);
    }
    let mut out = Vec::new();
    for (path, w) in &want_map {
        match have.get(path) {
            None => out.push(format!("{path}: missing, expected {w:?}")),
            Some(h) => {
                let same = h.kind == w.kind
                    && h.data == w.data
                    && h.mode == w.mode
                    && (w.owner.is_none() || h.owner == w.owner);
                if !same {
                    out.push(format!("{path}: {h:?}, expected {w:?}"));
                }
            }
        }
    }
    for (path, h) in have {
        if !want_map.contains_key(path) {
            out.push(format!("{path}: unexpected {h:?}"));
        }
    }
    out
}

/// The sysctl state of the keys a row names: `KEY live` and `KEY persisted` (what
/// `sysctl --system` applies: `etc/sysctl.d/*.conf` by name, then `etc/sysctl.conf`; the
/// last assignment wins), values as whitespace-joined text.
fn sysctl_state(root: &Path, keys: &[&str]) -> BTreeMap<String, Value> {
    let mut files: Vec<PathBuf> = fs::read_dir(root.join("etc/sysctl.d"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.push(root.join("etc/sysctl.conf"));
    let mut out = BTreeMap::new();
    for key in keys {
        let live = fs::read_to_string(root.join("proc/sys").join(key.replace('.', "/")))
            .ok()
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "));
        let mut persisted = None;
        for f in &files {
            for line in fs::read_to_string(f).unwrap_or_default().lines() {
                let line = line.trim();
                if line.starts_with(['#', ';']) {
                    continue;
                }
                if let Some((k, v)) = line.split_once('=')
                    && k.trim().trim_start_matches('-').trim() == *key
                {
                    persisted = Some(v.split_whitespace().collect::<Vec<_>>().join(" "));
                }
            }
        }
        out.insert(
            format!("{key} live"),
            live.map_or(Value::Null, Value::String),
        );
        out.insert(
            format!("{key} persisted"),
            persisted.map_or(Value::Null, Value::String),
        );
    }
    out
}

/// The node configuration's keys (`section.option`) as text, as `nodemgr get` prints them.
fn nodeconf_state(root: &Path) -> BTreeMap<String, Value> {
    let Ok(text) = fs::read_to_string(root.join("node.toml")) else {
        return BTreeMap::new();
    };
    let table: toml::Table = text.parse().expect("node.toml");
    let mut out = BTreeMap::new();
    for (section, t) in &table {
        for (k, v) in t.as_table().into_iter().flatten() {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.insert(format!("{section}.{k}"), Value::String(text));
        }
    }
    out
}

fn status(v: &Value) -> Status {
    match v.as_str() {
        Some("ok") => Status::Ok,
        Some("nok") => Status::Nok,
        Some("n/a") => Status::NotApplicable,
        _ => panic!("bad status {v}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// Runs one class's table, the rows that need root (owners) or those that do not; returns
/// the failures and how many rows ran.
fn run_table(class: &str, privileged: bool) -> (Vec<String>, usize) {
    let path = fixtures().join(format!("{class}.json"));
    let table: Value =
        serde_json::from_str(&fs::read_to_string(&path).expect("fixture")).expect("json");
    let entry = classes::find(class).expect("class");
    let documented = documented();
    let mut failures = Vec::new();
    let mut ran = 0;
    for row in table["rows"].as_array().expect("rows") {
        let name = row["name"].as_str().expect("name");
        let upstream = &row["opensvc"];
        let tenet = row.get("tenet");
        if let Some(t) = tenet {
            let id = t["deviation"]
                .as_str()
                .expect("a tenet part names its deviation");
            if !documented.iter().any(|d| d == id) {
                failures.push(format!(
                    "{name}: deviation #{id} is not in docs/opensvc-compat.md"
                ));
            }
            let overrides: Vec<&String> = t
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "deviation")
                .collect();
            if overrides
                .iter()
                .all(|k| upstream.get(k.as_str()) == t.get(k.as_str()))
            {
                failures.push(format!(
                    "{name}: the tenet part does not differ from OpenSVC's"
                ));
            }
        }
        let want = |field: &str| -> Option<&Value> {
            tenet
                .and_then(|t| t.get(field))
                .or_else(|| upstream.get(field))
        };
        let rule_text = row["rule"].to_string().replace("{R}", "");
        let tree = strings(&row["tree"]);
        let needs_root = rule_text.contains("\"uid\"")
            || rule_text.contains("\"gid\"")
            || tree
                .iter()
                .chain(want("tree").map(strings).iter().flatten())
                .any(|e| e.split(" =").next().unwrap_or_default().contains(':'));
        if needs_root != privileged {
            continue;
        }
        ran += 1;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(&root).unwrap();
        build(&root, &tree);
        // The processes are the machine's: process rows run with root `/` (their trees are
        // empty), as OpenSVC's object reads the real `ps`.
        let host_root = if class == "process" {
            Path::new("/")
        } else {
            root.as_path()
        };
        let host = Host::new(host_root)
            .with_var_dir(dir.path().join("var"))
            .with_node_config(root.join("node.toml"))
            .with_hostname("node1.example.com");
        let env = vec![(format!("{PREFIX}1"), rule_text.clone())];
        let ctx = RuleContext::default();
        let run = |action: &str| {
            object::run_object(entry, PREFIX, action, &env, &|_: &str| None, &host, &ctx)
        };
        let mut fail = |what: String| failures.push(format!("{class}: {name}: {what}"));
        let got = run("check");
        let expected = status(want("check").expect("check"));
        if got != expected {
            fail(format!("check {got:?}, expected {expected:?}"));
        }
        let Some(fix_status) = want("fix") else {
            continue;
        };
        let got = run("fix");
        if got != status(fix_status) {
            fail(format!("fix {got:?}, expected {fix_status}"));
        }
        if let Some(t) = want("tree") {
            for d in tree_diff(&strings(t), &tree_of(&root)) {
                fail(format!("after fix, {d}"));
            }
        }
        if let Some(Value::Object(s)) = want("state") {
            let want_state: BTreeMap<String, Value> =
                s.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let have = if class == "sysctl" {
                let keys: Vec<&str> = s.keys().filter_map(|k| k.strip_suffix(" live")).collect();
                sysctl_state(&root, &keys)
            } else {
                nodeconf_state(&root)
            };
            if have != want_state {
                fail(format!(
                    "after fix, state {have:?}, expected {want_state:?}"
                ));
            }
        }
        if let Some(recheck) = want("recheck") {
            let got = run("check");
            if got != status(recheck) {
                fail(format!("check after fix {got:?}, expected {recheck}"));
            }
        }
    }
    (failures, ran)
}

fn assert_table(class: &str, privileged: bool) {
    // Files and directories are created as OpenSVC's Python creates them under umask 022.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let (failures, ran) = run_table(class, privileged);
    assert!(ran > 0, "{class}: no row ran (privileged: {privileged})");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn file() {
    assert_table("file", false);
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn file_owners() {
    assert_table("file", true);
}

#[test]
fn fileprop() {
    assert_table("fileprop", false);
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn fileprop_owners() {
    assert_table("fileprop", true);
}

#[test]
fn symlink() {
    assert_table("symlink", false);
}

#[test]
fn remove_files() {
    assert_table("remove_files", false);
}

#[test]
fn sysctl() {
    assert_table("sysctl", false);
}

#[test]
fn package() {
    assert_table("package", false);
}

#[test]
fn nodeconf() {
    assert_table("nodeconf", false);
}

#[test]
fn keyval() {
    assert_table("keyval", false);
}

#[test]
fn fileinc() {
    assert_table("fileinc", false);
}

#[test]
fn tar() {
    assert_table("tar", false);
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn cron_owners() {
    assert_table("cron", true);
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn crontabentry_owners() {
    assert_table("crontabentry", true);
}

#[test]
fn self_signed_cert() {
    assert_table("self_signed_cert", false);
}

#[test]
fn timedatectl() {
    assert_table("timedatectl", false);
}

#[test]
fn process() {
    assert_table("process", false);
}

#[test]
fn vuln() {
    assert_table("vuln", false);
}

#[test]
fn systemd_unit_state() {
    assert_table("systemd_unit_state", false);
}

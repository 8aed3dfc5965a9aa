//! Policy load and filterset evaluation benchmark (issue 12): a bundle of 100,000 filtersets
//! (chains of 10, two filters each), 10,000 public contextual rulesets (one per chain head,
//! two variables each) and 100 modulesets, loaded as a Tenet TOML folder and as an OpenSVC
//! export JSON, then resolved for a node and evaluated filterset by filterset. Prints one line
//! per phase: wall time (best of RUNS) and the throughput.
//!
//!     cargo bench -p tenet-rulesets --bench load
//!
//! Environment: FILTERSETS (100000), RUNS (3). Figures are recorded in the top-level README
//! ("Policy load"); a benchmark, not a timed test.

use std::path::Path;
use std::time::{Duration, Instant};

use tenet_rulesets::filter::Evaluator;
use tenet_rulesets::indexmap::IndexMap;
use tenet_rulesets::{
    Bundle, Filter, FilterEntry, FilterOp, FilterTest, Filterset, LogicalOp, Meta, ModuleRef,
    Moduleset, NodeFacts, PackageFact, Policy, Ruleset, RulesetType, Selection, VarValue, Variable,
    export, toml_format,
};

const CHAIN: usize = 10;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bundle(filtersets: usize) -> Bundle {
    let mut b = Bundle::default();
    for i in 0..filtersets {
        let mut filters = vec![
            FilterEntry {
                logical_op: LogicalOp::And,
                order: 0,
                test: FilterTest::Filter(Filter {
                    table: "nodes".into(),
                    field: "os_name".into(),
                    op: FilterOp::Eq,
                    value: if i % 3 == 0 { "SunOS" } else { "Linux" }.into(),
                    id: None,
                }),
            },
            FilterEntry {
                logical_op: LogicalOp::Or,
                order: 1,
                test: FilterTest::Filter(Filter {
                    table: "packages".into(),
                    field: "pkg_name".into(),
                    op: FilterOp::Like,
                    value: format!("pkg{}%", i % 50),
                    id: None,
                }),
            },
        ];
        if i % CHAIN != CHAIN - 1 && i + 1 < filtersets {
            filters.push(FilterEntry {
                logical_op: LogicalOp::And,
                order: 2,
                test: FilterTest::Filterset(format!("fs{}", i + 1)),
            });
        }
        let name = format!("fs{i}");
        b.filtersets.insert(
            name.clone(),
            Filterset {
                name,
                stats: false,
                id: None,
                filters,
            },
        );
    }
    let rulesets = filtersets.div_ceil(CHAIN);
    for r in 0..rulesets {
        let name = format!("rs{r}");
        let variables = (0..2)
            .map(|v| Variable {
                name: format!("rs{r}.var{v}"),
                class: if v == 0 { "file" } else { "raw" }.into(),
                value: if v == 0 {
                    VarValue::Json(serde_json::json!({
                        "path": format!("/etc/app/{r}.conf"), "fmt": "key = %%ENV:X%%\n", "mode": 644
                    }))
                } else {
                    VarValue::Text(format!("svc:/network/app{r}:default"))
                },
                id: None,
                author: None,
                updated: None,
            })
            .collect();
        b.rulesets.insert(
            name.clone(),
            Ruleset {
                name,
                kind: RulesetType::Contextual,
                filterset: Some(format!("fs{}", r * CHAIN)),
                public: true,
                children: vec![],
                variables,
                meta: Meta::default(),
            },
        );
    }
    for m in 0..100 {
        let name = format!("ms{m}");
        b.modulesets.insert(
            name.clone(),
            Moduleset {
                name,
                modules: vec![ModuleRef {
                    name: format!("module{m}"),
                    autofix: false,
                }],
                children: vec![],
                rulesets: (0..rulesets)
                    .filter(|r| r % 100 == m)
                    .take(5)
                    .map(|r| format!("rs{r}"))
                    .collect(),
                meta: Meta::default(),
            },
        );
    }
    b
}

fn facts() -> NodeFacts {
    let mut node = IndexMap::new();
    node.insert("nodename".to_string(), "node1".to_string());
    node.insert("os_name".to_string(), "Linux".to_string());
    NodeFacts {
        node,
        // 200 packages; `pkg0`..`pkg9` make the package filters of one filterset in five
        // match, so some chains (and their rulesets) apply.
        packages: (0..200)
            .map(|i| PackageFact {
                name: if i < 10 {
                    format!("pkg{i}")
                } else {
                    format!("lib{i}")
                },
                version: "1.0".into(),
                arch: "amd64".into(),
            })
            .collect(),
        tags: vec!["prod".into()],
        service: None,
    }
}

/// CPU time of this thread so far (`/proc/thread-self/schedstat`, nanoseconds on a CPU), to
/// report alongside the wall time on a machine shared with other work.
fn cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// Best wall time and best CPU time of `runs` runs of `f`, and its last result.
fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> ((Duration, Duration), T) {
    let (mut wall, mut cpu) = (Duration::MAX, Duration::MAX);
    let mut out = None;
    for _ in 0..runs.max(1) {
        let (t, c) = (Instant::now(), cpu_time());
        let r = f();
        wall = wall.min(t.elapsed());
        cpu = cpu.min(cpu_time().saturating_sub(c));
        out = Some(r);
    }
    (
        (wall, cpu),
        out.unwrap_or_else(|| unreachable!("at least one run")),
    )
}

fn report(phase: &str, (wall, cpu): (Duration, Duration), objects: usize, extra: &str) {
    // Below a millisecond the scheduler's accounting is too coarse for a rate.
    let rate = if cpu >= Duration::from_millis(1) {
        format!("{:.0}", objects as f64 / cpu.as_secs_f64())
    } else {
        "-".to_string()
    };
    println!(
        "{phase:<42} {:>9.3} ms wall {:>9.3} ms cpu {rate:>9} objects/s (cpu)  {extra}",
        wall.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e3,
    );
}

fn size(path: &Path) -> u64 {
    if path.is_dir() {
        std::fs::read_dir(path)
            .map(|d| d.flatten().map(|e| size(&e.path())).sum())
            .unwrap_or(0)
    } else {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}

fn main() {
    let n = env_usize("FILTERSETS", 100_000);
    let runs = env_usize("RUNS", 3);
    let b = bundle(n);
    let objects = b.filtersets.len() + b.rulesets.len() + b.modulesets.len();
    println!(
        "bundle: {} filtersets (chains of {CHAIN}), {} rulesets, {} modulesets = {objects} objects; best of {runs}",
        b.filtersets.len(),
        b.rulesets.len(),
        b.modulesets.len()
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));

    // TOML folder: files of 1,000 objects each (written plainly: `write_dir` writes one
    // file per object, each fsynced, which measures the disk rather than the loader).
    let folder = dir.path().join("policy");
    std::fs::create_dir_all(&folder).unwrap_or_else(|e| panic!("{e}"));
    let mut part = Bundle::default();
    let mut parts = 0;
    let mut flush = |part: &mut Bundle| {
        let file = folder.join(format!("part-{parts:04}.toml"));
        std::fs::write(&file, toml_format::to_toml_string(part))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        parts += 1;
        *part = Bundle::default();
    };
    for f in b.filtersets.values() {
        part.filtersets.insert(f.name.clone(), f.clone());
        if part.filtersets.len() == 1000 {
            flush(&mut part);
        }
    }
    for r in b.rulesets.values() {
        part.rulesets.insert(r.name.clone(), r.clone());
        if part.rulesets.len() == 1000 {
            flush(&mut part);
        }
    }
    for m in b.modulesets.values() {
        part.modulesets.insert(m.name.clone(), m.clone());
    }
    flush(&mut part);
    let (d, loaded) = best(runs, || toml_format::load_dir(&folder));
    let loaded = loaded.unwrap_or_else(|e| panic!("load_dir: {e}"));
    // Same objects (the folder's file order puts filtersets first).
    assert_eq!(
        (
            loaded.filtersets.len(),
            loaded.rulesets.len(),
            loaded.modulesets.len()
        ),
        (b.filtersets.len(), b.rulesets.len(), b.modulesets.len())
    );
    assert!(
        loaded
            .rulesets
            .values()
            .all(|r| b.rulesets.get(&r.name) == Some(r))
    );
    report(
        "load TOML folder (load_dir)",
        d,
        objects,
        &format!("{:.1} MB", size(&folder) as f64 / 1e6),
    );

    // One TOML document (what the collector's import takes).
    let text = toml_format::to_toml_string(&b);
    let (d, one) = best(runs, || toml_format::from_toml_str(&text, "bench.toml"));
    assert!(one.is_ok_and(|x| x == b));
    report(
        "load one TOML document (from_toml_str)",
        d,
        objects,
        &format!("{:.1} MB", text.len() as f64 / 1e6),
    );

    // OpenSVC export JSON.
    let json = export::to_json(&b);
    let (d, from_json) = best(runs, || export::from_json(&json, "bench.json"));
    assert!(from_json.is_ok_and(|x| x == b));
    report(
        "load export JSON (from_json)",
        d,
        objects,
        &format!("{:.1} MB", json.len() as f64 / 1e6),
    );

    // Validation alone (the collector runs it on every edit).
    let (d, v) = best(runs, || b.validate());
    assert!(v.is_ok());
    report("validate (references, cycles, depth)", d, objects, "");

    // Resolution: every public contextual ruleset's filterset chain is evaluated.
    let facts = facts();
    let sel = Selection {
        modulesets: Some(vec![]),
        ..Default::default()
    };
    let (d, policy) = best(runs, || Policy::resolve(&b, &facts, &sel));
    let policy = policy.unwrap_or_else(|e| panic!("resolve: {e}"));
    report(
        "resolve a node's policy (Policy::resolve)",
        d,
        objects,
        &format!("{} rulesets apply", policy.rulesets.len()),
    );

    // Every filterset, one evaluator: each evaluated once.
    let (d, evals) = best(runs, || {
        let mut e = Evaluator::new(&b, &facts);
        for name in b.filtersets.keys() {
            let _ = e.matches(name);
        }
        e.evaluations()
    });
    report(
        "evaluate every filterset (one Evaluator)",
        d,
        b.filtersets.len(),
        &format!("{evals} evaluations"),
    );

    // The diamond: f(i) = f(i+1) AND f(i+1), 40 levels.
    let mut diamond = Bundle::default();
    for i in 0..=40 {
        let filters = if i < 40 {
            (0..2)
                .map(|k| FilterEntry {
                    logical_op: LogicalOp::And,
                    order: k,
                    test: FilterTest::Filterset(format!("d{}", i + 1)),
                })
                .collect()
        } else {
            b.filtersets["fs1"].filters[..2].to_vec()
        };
        let name = format!("d{i}");
        diamond.filtersets.insert(
            name.clone(),
            Filterset {
                name,
                stats: false,
                id: None,
                filters,
            },
        );
    }
    let (d, evals) = best(runs, || {
        let mut e = Evaluator::new(&diamond, &facts);
        let _ = e.matches("d0");
        e.evaluations()
    });
    report(
        "evaluate a 40-level diamond",
        d,
        41,
        &format!("{evals} evaluations"),
    );
}

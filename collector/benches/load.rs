//! Collector load benchmark (issue 3): 10,000 registered nodes, 300 rulesets, 50 filtersets.
//! Measures policy fetches per second with latency percentiles (cold: every node's first fetch
//! resolves its policy; warm: cached), then result posts per second. The server is the release
//! `tenet-collector serve` in its own process on 127.0.0.1; this process is the load generator.
//!
//!     cargo bench -p tenet-collector --bench load
//!
//! Environment: NODES (10000), CONCURRENCY (64), SECONDS (10) per measured phase.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tenet_collector::store::sqlite::SqliteStore;
use tenet_collector::store::{AttachKind, Store, Target};
use tenet_rulesets::indexmap::IndexMap;
use tenet_rulesets::{
    Bundle, Filter, FilterEntry, FilterOp, FilterTest, Filterset, LogicalOp, Meta, ModuleRef,
    Moduleset, NodeFacts, PackageFact, Ruleset, RulesetType, VarValue, Variable,
};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// 250 explicit rulesets in 25 modulesets, 50 contextual public rulesets each with its
/// filterset (on os, team, packages, nested).
fn bundle() -> Bundle {
    let mut b = Bundle::default();
    let var = |rs: usize, i: usize| Variable {
        name: format!("rs{rs}.file{i}"),
        class: "file".into(),
        value: VarValue::Json(serde_json::json!({
            "path": format!("/etc/bench/{rs}/{i}.conf"), "mode": "644", "owner": "root",
            "fmt": format!("key{i} = value {rs}\n"),
        })),
        id: None,
        author: None,
        updated: None,
    };
    for f in 0..50 {
        let filters = match f % 5 {
            0 => vec![("nodes", "os_name", FilterOp::Eq, "Linux".to_string())],
            1 => vec![(
                "nodes",
                "team_responsible",
                FilterOp::In,
                format!("team{},team{}", f % 7, (f + 1) % 7),
            )],
            2 => vec![(
                "packages",
                "pkg_name",
                FilterOp::Eq,
                format!("pkg{}", f % 40),
            )],
            3 => vec![
                ("nodes", "os_release", FilterOp::Ge, "11".to_string()),
                (
                    "nodes",
                    "nodename",
                    FilterOp::Like,
                    format!("node{}%", f % 10),
                ),
            ],
            _ => vec![("nodes", "env", FilterOp::Ne, "PRD".to_string())],
        };
        let mut entries: Vec<FilterEntry> = filters
            .into_iter()
            .enumerate()
            .map(|(i, (t, field, op, value))| FilterEntry {
                logical_op: if i == 0 {
                    LogicalOp::And
                } else {
                    LogicalOp::Or
                },
                order: i as i64,
                test: FilterTest::Filter(Filter {
                    table: t.into(),
                    field: field.into(),
                    op,
                    value,
                    id: None,
                }),
            })
            .collect();
        if f % 5 == 4 && f >= 5 {
            entries.push(FilterEntry {
                logical_op: LogicalOp::AndNot,
                order: 9,
                test: FilterTest::Filterset(format!("fs{}", f - 5)),
            });
        }
        b.filtersets.insert(
            format!("fs{f}"),
            Filterset {
                name: format!("fs{f}"),
                stats: false,
                id: None,
                filters: entries,
            },
        );
    }
    for r in 0..300 {
        let contextual = r >= 250;
        let name = format!("rs{r}");
        b.rulesets.insert(
            name.clone(),
            Ruleset {
                name,
                kind: if contextual {
                    RulesetType::Contextual
                } else {
                    RulesetType::Explicit
                },
                filterset: contextual.then(|| format!("fs{}", r - 250)),
                public: true,
                children: Vec::new(),
                variables: (0..3).map(|i| var(r, i)).collect(),
                meta: Meta::default(),
            },
        );
    }
    for m in 0..25 {
        let name = format!("ms{m}");
        b.modulesets.insert(
            name.clone(),
            Moduleset {
                name,
                modules: (0..4)
                    .map(|i| ModuleRef {
                        name: format!("rs{}", m * 10 + i),
                        autofix: i == 0,
                    })
                    .collect(),
                children: Vec::new(),
                rulesets: (0..10).map(|i| format!("rs{}", m * 10 + i)).collect(),
                meta: Meta::default(),
            },
        );
    }
    b
}

fn facts(n: usize) -> NodeFacts {
    let mut node = IndexMap::new();
    node.insert("nodename".to_string(), format!("node{n}"));
    node.insert("fqdn".to_string(), format!("node{n}.bench.example"));
    node.insert("os_name".to_string(), "Linux".to_string());
    node.insert("os_vendor".to_string(), "Debian".to_string());
    node.insert("os_release".to_string(), format!("{}", 10 + n % 4));
    node.insert("os_arch".to_string(), "x86_64".to_string());
    node.insert("team_responsible".to_string(), format!("team{}", n % 7));
    node.insert(
        "env".to_string(),
        if n.is_multiple_of(3) { "PRD" } else { "DEV" }.to_string(),
    );
    node.insert("mem_bytes".to_string(), "34359738368".to_string());
    node.insert("cpu_threads".to_string(), "16".to_string());
    NodeFacts {
        node,
        packages: (0..60)
            .map(|p| PackageFact {
                name: format!("pkg{}", (n + p) % 80),
                version: "1.0".into(),
                arch: "amd64".into(),
            })
            .collect(),
        tags: Vec::new(),
        service: None,
    }
}

/// Registers the fleet through the store (many writer threads, so commits group).
fn populate(db: &Path, nodes: usize) -> Vec<(String, String)> {
    let store = Arc::new(SqliteStore::open(db).expect("open store"));
    let b = bundle();
    store
        .edit_bundle(
            "bench",
            Box::new(move |x| {
                *x = b;
                Ok(("import".into(), "bench".into(), String::new()))
            }),
        )
        .expect("import");
    let creds: Vec<(String, String)> = (0..nodes)
        .map(|n| {
            (
                format!("00000000-0000-4000-8000-{n:012}"),
                format!("secret-{n}-bench"),
            )
        })
        .collect();
    let next = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let (store, creds, next) = (store.clone(), creds.clone(), next.clone());
            std::thread::spawn(move || {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= creds.len() {
                        break;
                    }
                    let (id, secret) = &creds[n];
                    store
                        .register_node(
                            id,
                            &format!("node{n}"),
                            &tenet_collector::auth::digest(secret),
                            "bench",
                        )
                        .unwrap();
                    let f = facts(n);
                    let hash = format!("{n}");
                    store
                        .put_facts(
                            id,
                            &f,
                            &hash,
                            tenet_rulesets::api::DEFAULT_LISTENER_PORT,
                            &[],
                        )
                        .unwrap();
                    let t = Target::Node(id.clone());
                    store
                        .attach(&t, AttachKind::Moduleset, &format!("ms{}", n % 25), "bench")
                        .unwrap();
                    store
                        .attach(
                            &t,
                            AttachKind::Moduleset,
                            &format!("ms{}", (n + 7) % 25),
                            "bench",
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    creds
}

struct Phase {
    requests: usize,
    errors: usize,
    seconds: f64,
    latencies_us: Vec<u64>,
    /// CPU the server process spent in the phase (user + system). Unlike requests per second,
    /// this does not move when other work shares the machine, so it is the figure to compare
    /// two builds with on a busy host.
    server_cpu: Duration,
}

/// User + system CPU time of a process so far, from `/proc/PID/stat` (fields 14 and 15).
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name (field 2) may hold spaces; the fields after it start past its `)`.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // /proc counts in USER_HZ ticks, which Linux fixes at 100 on the architectures we build for.
    Duration::from_millis(ticks * 10)
}

impl Phase {
    fn report(&mut self, label: &str) {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| {
            let i =
                ((self.latencies_us.len() as f64 * p) as usize).min(self.latencies_us.len() - 1);
            self.latencies_us[i] as f64 / 1000.0
        };
        println!(
            "{label:<28} {:>8.0} req/s  server {:>5.0} µs CPU/req  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  ({} requests, {} errors, {:.1} s)",
            self.requests as f64 / self.seconds,
            self.server_cpu.as_secs_f64() * 1e6 / self.requests as f64,
            pct(0.50),
            pct(0.99),
            *self.latencies_us.last().unwrap() as f64 / 1000.0,
            self.requests,
            self.errors,
            self.seconds
        );
    }
}

async fn drive(
    server: u32,
    url: &str,
    creds: Arc<Vec<(String, String)>>,
    concurrency: usize,
    limit: Limit,
    post: bool,
) -> Phase {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = process_cpu(server);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, creds, next, url) =
            (client.clone(), creds.clone(), next.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                match limit {
                    Limit::Count(n) if i >= n => break,
                    Limit::Time(d) if start.elapsed() >= d => break,
                    _ => {}
                }
                let (id, secret) = &creds[i % creds.len()];
                let auth = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
                );
                let t = Instant::now();
                let resp = if post {
                    let body = serde_json::json!({
                        "run_id": format!("bench-{i}"), "agent_version": "bench", "action": "check",
                        "policy_hash": "h",
                        "modules": [{"module": "rs0", "moduleset": "ms0", "status": if i % 5 == 0 {"nok"} else {"ok"},
                                     "actions": [{"action": "check", "exit_code": 0, "log": "all good", "duration_ms": 3}],
                                     "duration_ms": 3}],
                        "summary": {"ok": 1, "nok": 0, "na": 0}, "duration_ms": 3
                    });
                    client
                        .post(format!("{url}/api/v1/nodes/{id}/results"))
                        .header("Authorization", auth)
                        .json(&body)
                        .send()
                        .await
                } else {
                    client
                        .get(format!("{url}/api/v1/nodes/{id}/policy"))
                        .header("Authorization", auth)
                        .send()
                        .await
                };
                match resp {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => errors += 1,
                }
                lat.push(t.elapsed().as_micros() as u64);
            }
            (lat, errors)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies_us.extend(l);
        errors += e;
    }
    Phase {
        requests: latencies_us.len(),
        errors,
        seconds: start.elapsed().as_secs_f64(),
        latencies_us,
        server_cpu: process_cpu(server).saturating_sub(cpu_before),
    }
}

#[derive(Clone, Copy)]
enum Limit {
    Count(usize),
    Time(Duration),
}

fn main() {
    let nodes = env_usize("NODES", 10_000);
    let concurrency = env_usize("CONCURRENCY", 64);
    let seconds = env_usize("SECONDS", 10) as u64;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let t = Instant::now();
    let creds = Arc::new(populate(&db, nodes));
    println!(
        "setup: {nodes} nodes, 300 rulesets, 50 filtersets, 25 modulesets in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()))
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "tenet-collector",
            "--bin",
            "tenet-collector",
        ])
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(status.success());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut server = Command::new(target.join("release/tenet-collector"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env("TENET_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("tenet-collector listening on ")
        .expect("listening line")
        .to_string();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pid = server.id();
    rt.block_on(async {
        let mut cold = drive(
            pid,
            &url,
            creds.clone(),
            concurrency,
            Limit::Count(nodes),
            false,
        )
        .await;
        cold.report("policy fetch, cold (resolve)");
        let mut warm = drive(
            pid,
            &url,
            creds.clone(),
            concurrency,
            Limit::Time(Duration::from_secs(seconds)),
            false,
        )
        .await;
        warm.report("policy fetch, warm (cached)");
        let mut posts = drive(
            pid,
            &url,
            creds.clone(),
            concurrency,
            Limit::Time(Duration::from_secs(seconds)),
            true,
        )
        .await;
        posts.report("result post");
    });
    let _ = server.kill();
    let _ = server.wait();
}

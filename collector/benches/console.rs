//! Web console benchmark (issue 15): server time of the fleet and node pages with 10,000
//! nodes and 30 days of history. Target: p95 under 100 ms.
//!
//!     cargo bench -p tenet-collector --bench console
//!
//! The store is filled as 30 days of agents reporting would have left it: every node with its
//! facts (10 fields, 40 packages), the latest status of 10 modules (auto-modules with two
//! rules each, about 1 in 12 nok), one run a day with its 10 module results, and the daily
//! aggregates the retention roll-up writes (`node_daily`, `module_daily`). It is written with
//! SQL in bulk (one transaction) because going through `record_run` cannot date runs in the
//! past; the tables, indexes and triggers are the collector's own (the store is opened first,
//! so migrations run). Pages are then asked of the router in this process, one at a time, from
//! the request to the last byte of the body: the server's time, without the network.
//!
//! Environment: NODES (10000), DAYS (30), MODULES (10), REQUESTS (200) per page.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, header};
use rusqlite::params;
use tenet_collector::api::{AppState, router};
use tenet_collector::store::sqlite::SqliteStore;
use tenet_collector::store::{Store, TokenRole};
use tower::ServiceExt as _;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `YYYY-MM-DD` of `days` before today (UTC).
fn day(back: i64) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]");
    (time::OffsetDateTime::now_utc() - time::Duration::days(back))
        .date()
        .format(&f)
        .unwrap()
}

/// Deterministic pseudo-random numbers (no dependency, same fleet every run).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

fn populate(db: &std::path::Path, nodes: usize, days: i64, modules: usize) {
    let started = Instant::now();
    {
        // The shipped spdc-node policy, attached to every node below: the node page resolves
        // it (the policy cache starts cold, as after a restart).
        let store = SqliteStore::open(db).expect("open store (migrations)");
        let library =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rulesets/library/spdc-node");
        let bundle = tenet_rulesets::load_path(&library).expect("the spdc-node library");
        store
            .edit_bundle(
                "bench",
                Box::new(move |b| {
                    *b = bundle;
                    Ok(("import".into(), "policy".into(), String::new()))
                }),
            )
            .unwrap();
    }
    let mut c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch("PRAGMA synchronous = OFF; PRAGMA journal_mode = WAL;")
        .unwrap();
    let tx = c.transaction().unwrap();
    let mut rng = Lcg(42);
    let module_names: Vec<String> = (0..modules).map(|m| format!("bench.mod{m:02}")).collect();
    {
        let mut node = tx
            .prepare(
                "INSERT INTO nodes (id, name, secret_hash, created_at, last_seen, facts, facts_hash)
                 VALUES (?1, ?2, 'x', ?3, ?4, ?5, ?6)",
            )
            .unwrap();
        let mut status = tx
            .prepare(
                "INSERT INTO module_status (node_id, service, module, moduleset, status, action, log, policy_hash, rules, updated_at)
                 VALUES (?1, '', ?2, 'bench', ?3, 'check', ?4, 'h', ?5, ?6)",
            )
            .unwrap();
        let mut run = tx
            .prepare(
                "INSERT INTO runs (node_id, run_id, service, action, policy_hash, agent_version, started_at, received_at, duration_ms, ok, nok, na)
                 VALUES (?1, ?2, '', 'check', 'h', 'bench', ?3, ?3, 1200, ?4, ?5, 0)",
            )
            .unwrap();
        let mut result = tx
            .prepare(
                "INSERT INTO module_results (run_pk, module, moduleset, status, duration_ms, detail)
                 VALUES (?1, ?2, 'bench', ?3, 100, ?4)",
            )
            .unwrap();
        let mut daily = tx
            .prepare(
                "INSERT INTO node_daily (node_id, service, day, runs, ok, nok, na) VALUES (?1, '', ?2, 1, ?3, ?4, 0)",
            )
            .unwrap();
        let moduleset: i64 = tx
            .query_row(
                "SELECT id FROM modulesets WHERE name = 'spdc.node'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let mut attach = tx
            .prepare(
                "INSERT INTO node_modulesets (node_id, moduleset_id, attached_at, attached_by) VALUES (?1, ?2, ?3, 'admin:bench')",
            )
            .unwrap();
        for n in 0..nodes {
            let id = format!("{n:08x}-0000-4000-8000-{:012x}", rng.next());
            let name = format!("node{n:05}");
            let os = ["Linux", "SunOS", "AIX"][n % 3];
            let env = ["PRD", "DEV"][n % 2];
            let mut facts = serde_json::json!({
                "node": {"nodename": name, "fqdn": format!("{name}.example"), "os_name": os,
                         "os_release": format!("{}", 10 + n % 3), "os_arch": "x86_64",
                         "cpu_threads": "8", "mem_bytes": "17179869184",
                         "team_responsible": format!("team{}", n % 7), "env": env,
                         "loc_city": "Paris"},
                "packages": [], "tags": [], "service": null
            });
            facts["packages"] = (0..40)
                .map(|p| serde_json::json!({"name": format!("pkg{p}"), "version": "1.0-1", "arch": "amd64"}))
                .collect();
            let last_seen = format!("{} 06:{:02}:00", day(0), n % 60);
            node.execute(params![
                id,
                name,
                format!("{} 00:00:00", day(days + 1)),
                last_seen,
                facts.to_string(),
                format!("{n:064x}")
            ])
            .unwrap();
            attach
                .execute(params![
                    id,
                    moduleset,
                    format!("{} 00:00:00", day(days + 1))
                ])
                .unwrap();
            let mut states = Vec::with_capacity(modules);
            for m in &module_names {
                let nok = rng.next().is_multiple_of(12);
                let st = if nok { "nok" } else { "ok" };
                states.push(nok);
                let rules = serde_json::json!([
                    {"variable": format!("{m}.file"), "class": "file", "status": st,
                     "message": if nok { "/etc/bench.conf: content differs" } else { "" }},
                    {"variable": format!("{m}.sysctl"), "class": "sysctl", "status": "ok", "message": ""}
                ]);
                let log = if nok {
                    format!(
                        "ERR: {m}.file: /etc/bench.conf: content differs\nERR: {m}.file: --- /etc/bench.conf\nERR: {m}.file: +++ /etc/bench.conf\nERR: {m}.file: -old\nERR: {m}.file: +new\n"
                    )
                } else {
                    String::new()
                };
                status
                    .execute(params![id, m, st, log, rules.to_string(), last_seen])
                    .unwrap();
            }
            for back in (0..days).rev() {
                let at = format!("{} 06:{:02}:00", day(back), n % 60);
                let nok_today =
                    states.iter().filter(|x| **x).count() as i64 * i64::from(back % 5 != 0);
                run.execute(params![
                    id,
                    format!("run-{n}-{back}"),
                    at,
                    modules as i64 - nok_today,
                    nok_today
                ])
                .unwrap();
                let pk = tx.last_insert_rowid();
                for (i, m) in module_names.iter().enumerate() {
                    let nok = states[i] && back % 5 != 0;
                    let detail = serde_json::json!({"kind": "auto", "actions": [
                        {"action": "check", "exit_code": i32::from(nok), "log": if nok { "ERR: x: differs\n" } else { "" }, "duration_ms": 10}],
                        "rules": null});
                    result
                        .execute(params![
                            pk,
                            m,
                            if nok { "nok" } else { "ok" },
                            detail.to_string()
                        ])
                        .unwrap();
                }
                if back > 0 {
                    daily
                        .execute(params![
                            id,
                            day(back),
                            modules as i64 - nok_today,
                            nok_today
                        ])
                        .unwrap();
                }
            }
            if n % 2000 == 1999 {
                eprintln!("  {} nodes written ({:.0?})", n + 1, started.elapsed());
            }
        }
        let mut mdaily = tx
            .prepare(
                "INSERT INTO module_daily (module, day, ok, nok, na) VALUES (?1, ?2, ?3, ?4, 0)",
            )
            .unwrap();
        for back in 1..days {
            for m in &module_names {
                mdaily
                    .execute(params![
                        m,
                        day(back),
                        nodes as i64 * 11 / 12,
                        nodes as i64 / 12
                    ])
                    .unwrap();
            }
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'rolled_up_through'",
            [day(1)],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    c.execute_batch("ANALYZE; PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let size = std::fs::metadata(db).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "fleet written: {nodes} nodes, {days} days, {modules} modules, {:.0} MB, in {:.1?}",
        size as f64 / 1e6,
        started.elapsed()
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let nodes = env_usize("NODES", 10_000);
    let days = env_usize("DAYS", 30) as i64;
    let modules = env_usize("MODULES", 10);
    let requests = env_usize("REQUESTS", 200);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("console.db");
    populate(&db, nodes, days, modules);

    let store = Arc::new(SqliteStore::open(&db).unwrap());
    let token = tenet_collector::auth::new_admin_token();
    store
        .create_token(
            "bench",
            &tenet_collector::auth::digest(&token),
            TokenRole::Admin,
        )
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = router(AppState::new(store.clone() as Arc<dyn Store>));
    let cookie = rt.block_on(async {
        let resp = app
            .clone()
            .oneshot(
                Request::post("/ui/login")
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(format!("token={token}")))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 303, "sign-in");
        resp.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    });
    let get = |path: String| {
        let app = app.clone();
        let cookie = cookie.clone();
        rt.block_on(async move {
            let t = Instant::now();
            let resp = app
                .oneshot(
                    Request::get(&path)
                        .header(header::COOKIE, cookie)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            let took = t.elapsed();
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
            (took, body.len())
        })
    };
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "page (server time)", "p50 ms", "p95 ms", "p99 ms", "max ms", "KB"
    );
    let mut rng = Lcg(7);
    type PathOf = Box<dyn Fn(&mut Lcg) -> String>;
    let pages: Vec<(&str, PathOf)> = vec![
        ("fleet /ui/", Box::new(|_| "/ui/".to_string())),
        (
            "fleet, page k of 200",
            Box::new(|r| format!("/ui/?page={}", 1 + r.next() % 200)),
        ),
        (
            "fleet ?q=status:nok",
            Box::new(|_| "/ui/?q=status%3Anok".to_string()),
        ),
        (
            "fleet ?q=os_name=SunOS",
            Box::new(|_| "/ui/?q=os_name%3DSunOS".to_string()),
        ),
        (
            "fleet ?q=node0421 (10 nodes)",
            Box::new(|_| "/ui/?q=node0421".to_string()),
        ),
        (
            "node /ui/nodes/NAME",
            Box::new(move |r| format!("/ui/nodes/node{:05}", r.next() as usize % nodes)),
        ),
    ];
    let mut worst_p95 = Duration::ZERO;
    for (label, path) in &pages {
        // The first request of each page is not counted (it warms caches: the bundle, the
        // usual intervals, SQLite's page cache); it is shown apart.
        let (first, _) = get(path(&mut rng));
        let mut times = Vec::with_capacity(requests);
        let mut bytes = 0;
        for _ in 0..requests {
            let (t, b) = get(path(&mut rng));
            times.push(t);
            bytes = b;
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let p95 = percentile(&times, 0.95);
        worst_p95 = worst_p95.max(p95);
        println!(
            "{label:<34} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.0}   (first: {:.1} ms)",
            ms(percentile(&times, 0.5)),
            ms(p95),
            ms(percentile(&times, 0.99)),
            ms(*times.last().unwrap()),
            bytes as f64 / 1024.0,
            ms(first)
        );
    }
    println!(
        "worst p95: {:.1} ms (target: under 100 ms)",
        worst_p95.as_secs_f64() * 1000.0
    );
}

//! Resource bounds of the collector (issue 13, items 3-8 and 15), each against the real
//! `tenet-collector serve` on 127.0.0.1: floods bounded in count and time, with `/health`
//! probed during the attack and the collector's RSS read from /proc. The bounds asserted are
//! the ones documented in docs/collector.md ("Limits").

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tenet_tests::collector::{CollectorProcess, admin_token, import, make_tls, results};
use tenet_tests::{Tenet, tempdir, write};

/// RSS the collector stays under with `--max-connections N` and `--policy-cache-size C`
/// (docs/collector.md): 96 MiB, plus 96 KiB per connection, plus the cache.
fn rss_bound_kib(max_connections: u64, cache_bytes: u64) -> u64 {
    96 * 1024 + 96 * max_connections + cache_bytes / 1024
}

fn raise_own_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// `/health` on a fresh connection answers 200 within a second.
fn health_within_1s(url: &str, ca: Option<&Path>) {
    let mut b = reqwest::blocking::Client::builder().timeout(Duration::from_secs(1));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).unwrap();
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    let start = Instant::now();
    let resp = b
        .build()
        .unwrap()
        .get(format!("{url}/health"))
        .send()
        .unwrap_or_else(|e| panic!("/health did not answer within 1 s: {e}"));
    assert_eq!(resp.status().as_u16(), 200);
    assert!(start.elapsed() < Duration::from_secs(1));
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

fn started(dir: &Path, extra: &[&str]) -> (CollectorProcess, String) {
    let db = dir.join("collector.db");
    let token = admin_token(&db);
    (CollectorProcess::start_with_options(&db, extra), token)
}

#[test]
fn slow_clients_are_shed_at_the_cap_and_health_answers() {
    raise_own_fd_limit();
    let dir = tempdir();
    let (c, _) = started(
        dir.path(),
        &["--max-connections", "300", "--header-read-timeout", "3s"],
    );
    let mut slow = Vec::new();
    for i in 0..3000 {
        let mut s = TcpStream::connect(("127.0.0.1", c.port)).expect("connect");
        // Headers that never end.
        let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        slow.push(s);
        if i % 250 == 249 {
            health_within_1s(&c.url, None);
        }
    }
    let fds = c.fd_count();
    assert!(fds < 300 + 100, "{fds} descriptors open");
    let rss = c.rss_kib();
    assert!(rss < rss_bound_kib(300, 256 << 20), "RSS {rss} KiB");
    health_within_1s(&c.url, None);
    // Past the header timeout the server has closed every one of them.
    std::thread::sleep(Duration::from_secs(4));
    for s in slow.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) | Err(_) => {}
            // hyper may answer 408 before closing.
            Ok(n) => assert!(
                String::from_utf8_lossy(&buf[..n]).contains("408"),
                "{}",
                String::from_utf8_lossy(&buf[..n])
            ),
        }
    }
    assert!(
        c.fd_count() < 100,
        "{} descriptors still open",
        c.fd_count()
    );
}

#[test]
fn tls_clients_that_stall_before_or_after_the_handshake_are_bounded() {
    raise_own_fd_limit();
    let dir = tempdir();
    let (ca, cert, key) = make_tls(dir.path());
    let (c, _) = started(
        dir.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--max-connections",
            "200",
            "--tls-handshake-timeout",
            "2s",
            "--header-read-timeout",
            "3s",
        ],
    );
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut held = Vec::new();
    let mut raw = Vec::new();
    let mut handshakes = 0;
    for i in 0..900 {
        if i % 3 == 0 {
            // Never starts the handshake.
            raw.push(TcpStream::connect(("127.0.0.1", c.port)).unwrap());
        } else {
            // Completes the handshake, then sends nothing.
            let mut sock = TcpStream::connect(("127.0.0.1", c.port)).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut conn = rustls::ClientConnection::new(config.clone(), name.clone()).unwrap();
            let mut ok = true;
            while conn.is_handshaking() {
                if conn.complete_io(&mut sock).is_err() {
                    ok = false;
                    break;
                }
            }
            handshakes += usize::from(ok);
            held.push((conn, sock));
        }
        if i % 150 == 149 {
            health_within_1s(&c.url, Some(&ca));
        }
    }
    assert!(handshakes > 500, "{handshakes} handshakes completed");
    assert!(c.fd_count() < 200 + 100, "{} descriptors", c.fd_count());
    let rss = c.rss_kib();
    assert!(rss < rss_bound_kib(200, 256 << 20), "RSS {rss} KiB");
    // Both kinds are closed after their timeouts.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        c.fd_count() < 100,
        "{} descriptors still open",
        c.fd_count()
    );
    health_within_1s(&c.url, Some(&ca));
}

#[test]
fn invented_methods_share_one_metrics_label() {
    let dir = tempdir();
    let (c, _) = started(dir.path(), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = (0..4)
        .map(|t| {
            let url = c.url.clone();
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                for i in 0..2500 {
                    let m = reqwest::Method::from_bytes(format!("M{t}X{i}").as_bytes()).unwrap();
                    let r = http
                        .request(m, format!("{url}/api/v1/nodes"))
                        .send()
                        .unwrap();
                    assert!(r.status().is_client_error());
                }
            })
        })
        .collect();
    let probe = {
        let (url, stop) = (c.url.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                health_within_1s(&url, None);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    for f in floods {
        f.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    probe.join().unwrap();
    let metrics = c.client().get("/metrics").expect(200).body;
    assert!(
        metrics.len() < 64 * 1024,
        "/metrics is {} bytes",
        metrics.len()
    );
    assert!(
        metrics.contains("method=\"other\",status=\"405\"} 10000"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("M0X"),
        "an invented method became a label"
    );
    let rss = c.rss_kib();
    assert!(rss < rss_bound_kib(4096, 256 << 20), "RSS {rss} KiB");
}

/// A bundle whose policy is about 100 KB (one large variable) in three modulesets.
fn big_policy_bundle(dir: &Path) -> std::path::PathBuf {
    let blob = "x".repeat(100_000);
    let mut toml = format!(
        "[[ruleset]]\nname = \"big\"\n[[ruleset.variable]]\nname = \"blob\"\nclass = \"raw\"\nvalue = \"{blob}\"\n"
    );
    for m in ["ms1", "ms2", "ms3"] {
        toml.push_str(&format!(
            "[[moduleset]]\nname = \"{m}\"\nrulesets = [\"big\"]\nmodules = [{{ name = \"{m}-mod\" }}]\n"
        ));
    }
    let path = dir.join("big.toml");
    write(&path, toml);
    path
}

#[test]
fn a_node_churning_facts_and_selections_cannot_grow_the_policy_cache() {
    let dir = tempdir();
    let db = dir.path().join("collector.db");
    import(&db, &big_policy_bundle(dir.path()));
    let token = admin_token(&db);
    let c = CollectorProcess::start_with_options(&db, &["--policy-cache-size", "8M"]);
    let admin = c.client().admin(&token);
    let (a, a_secret) = admin.register("node-a");
    let (b, b_secret) = admin.register("node-b");
    for node in [&a, &b] {
        for m in ["ms1", "ms2", "ms3"] {
            admin
                .call(
                    "POST",
                    &format!("/api/v1/nodes/{node}/modulesets/{m}"),
                    None,
                )
                .expect(200);
        }
    }
    let node_a = c.client().node(&a, &a_secret);
    let selections = [
        "ms1,ms1,ms1,ms1",
        "ms2,ms1",
        "ms1,ms2",
        "ms3,ms3,ms2,ms1,ms2",
        "ms3",
    ];
    for i in 0..1500 {
        node_a
            .put(
                &format!("/api/v1/nodes/{a}/facts"),
                &json!({"facts": {"node": {"churn": i.to_string()}}}),
            )
            .expect(204);
        let sel = selections[i % selections.len()];
        node_a
            .get(&format!("/api/v1/nodes/{a}/policy?moduleset={sel}"))
            .expect(200);
        node_a.get(&format!("/api/v1/nodes/{a}/policy")).expect(200);
        if i % 100 == 0 {
            health_within_1s(&c.url, None);
        }
    }
    let metrics = c.client().get("/metrics").expect(200).body;
    let bytes = metric(&metrics, "tenet_policy_cache_bytes");
    assert!(bytes <= 8.0 * 1024.0 * 1024.0, "{bytes}");
    assert!(metric(&metrics, "tenet_policy_cache_entries") <= 16.0);
    let rss = c.rss_kib();
    assert!(rss < rss_bound_kib(4096, 8 << 20), "RSS {rss} KiB");

    // A selection is a set: duplicates and order make one policy.
    let p1 = node_a.get(&format!("/api/v1/nodes/{a}/policy?moduleset=ms2,ms1,ms1"));
    let p2 = node_a.get(&format!("/api/v1/nodes/{a}/policy?moduleset=ms1,ms2"));
    assert_eq!(p1.expect(200).body, p2.expect(200).body);

    // A second node resolving to the same policy shares the cached copy, whatever its other
    // facts: its request costs a key and its own facts.
    let facts = json!({"facts": {"node": {"churn": "same"}}});
    node_a
        .put(&format!("/api/v1/nodes/{a}/facts"), &facts)
        .expect(204);
    let one = node_a.get(&format!("/api/v1/nodes/{a}/policy")).expect(200);
    let before = metric(
        &c.client().get("/metrics").expect(200).body,
        "tenet_policy_cache_bytes",
    );
    let node_b = c.client().node(&b, &b_secret);
    let facts_b = json!({"facts": {"node": {"churn": "other", "nodename": "b"}}});
    node_b
        .put(&format!("/api/v1/nodes/{b}/facts"), &facts_b)
        .expect(204);
    let two = node_b.get(&format!("/api/v1/nodes/{b}/policy")).expect(200);
    assert!(one.body.len() > 100_000);
    let (mut one, mut two) = (one.json(), two.json());
    assert_eq!(one["facts"]["node"]["churn"], "same");
    assert_eq!(two["facts"]["node"]["churn"], "other");
    one.as_object_mut().unwrap().remove("facts");
    two.as_object_mut().unwrap().remove("facts");
    assert_eq!(one, two);
    let after = metric(
        &c.client().get("/metrics").expect(200).body,
        "tenet_policy_cache_bytes",
    );
    assert!(after - before < 2048.0, "{before} -> {after}");
}

#[test]
fn an_oversized_body_gets_413_not_a_broken_pipe() {
    let dir = tempdir();
    let (c, token) = started(dir.path(), &[]);
    let (id, secret) = c.client().admin(&token).register("n1");
    let auth = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{id}:{secret}")
        )
    );
    let http = reqwest::blocking::Client::new();
    let url = format!("{}/api/v1/nodes/{id}/results", c.url);
    let big = vec![b' '; 5 * 1024 * 1024];
    // With a Content-Length.
    let r = http
        .post(&url)
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .body(big.clone())
        .send()
        .expect("the client gets an answer, not a broken pipe");
    assert_eq!(r.status().as_u16(), 413);
    assert!(r.text().unwrap().contains("over the limit"));
    // Chunked (no length announced).
    let r = http
        .post(&url)
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(big)))
        .send()
        .expect("the client gets an answer, not a broken pipe");
    assert_eq!(r.status().as_u16(), 413);
    health_within_1s(&c.url, None);
}

fn spooled(id: &str, log_bytes: usize, action: &str) -> Value {
    let mut r = results(id);
    r["action"] = json!(action);
    r["modules"][0]["module"] = json!(format!("mod-{id}"));
    r["modules"][0]["actions"][0]["log"] = json!("y".repeat(log_bytes));
    r
}

#[test]
fn the_agent_delivers_an_oversized_report_cut_and_sets_a_refused_one_aside() {
    let dir = tempdir();
    let (c, token) = started(dir.path(), &[]);
    let config = dir.path().join("node.toml");
    let var = dir.path().join("var");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    Tenet::new(["--config".as_ref(), config.as_os_str()])
        .args(["register", "--collector", &c.url, "--name", "n1"])
        .arg("--insecure-http")
        .env("TENET_NODENAME", "n1")
        .env("TENET_ADMIN_TOKEN", &token)
        .run()
        .assert_code(0);
    // Three reports queued by an earlier agent: one far over the limit, one the collector
    // refuses for good (an unknown action), one ordinary.
    let spool = var.join("collector/spool");
    for (n, (id, log, action)) in [
        ("big", 3_000_000, "check"),
        ("bad", 10, "bogus"),
        ("good", 10, "check"),
    ]
    .into_iter()
    .enumerate()
    {
        write(
            &spool.join(format!("{n:024}-{id}.json")),
            serde_json::to_vec(&spooled(id, log, action)).unwrap(),
        );
    }
    Tenet::new(["--config".as_ref(), config.as_os_str()])
        .args(["pushasset", "--root"])
        .arg(&root)
        .opt("var-dir", &var)
        .env("TENET_NODENAME", "n1")
        .run()
        .assert_code(0);
    let dead = spool.join("dead-letter");
    let reason: Value = serde_json::from_slice(
        &std::fs::read(dead.join(format!("{:024}-bad.reason.json", 1))).unwrap(),
    )
    .unwrap();
    assert_eq!(reason["status"], 400, "{reason}");
    assert!(
        reason["error"].as_str().unwrap().contains("bogus"),
        "{reason}"
    );
    assert!(dead.join(format!("{:024}-bad.json", 1)).exists());
    let left: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .collect();
    assert!(left.is_empty(), "still spooled: {left:?}");
    let admin = c.client().admin(&token);
    let runs = admin.get("/api/v1/nodes/n1/runs").expect(200).json();
    let ids: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["good", "big"]);
    let status = admin.get("/api/v1/nodes/n1/status").expect(200).json();
    let big = status["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["module"] == "mod-big")
        .unwrap_or_else(|| panic!("{status}"));
    let log = big["log"].as_str().unwrap();
    assert!(log.contains("bytes cut to fit the collector's limit"));
    assert!(log.len() < 1024 * 1024);
}

#[test]
fn failed_authentication_is_throttled_per_address_and_logged_at_a_bounded_rate() {
    let dir = tempdir();
    let (c, token) = started(dir.path(), &[]);
    let (id, secret) = c.client().admin(&token).register("n1");
    let wrong = c.client().node(&id, "not-the-secret");
    let mut statuses = Vec::new();
    let mut retry_after = None;
    let http = reqwest::blocking::Client::new();
    for _ in 0..40 {
        let r = http
            .get(format!("{}/api/v1/nodes/{id}/status", c.url))
            .basic_auth(&id, Some("not-the-secret"))
            .send()
            .unwrap();
        if r.status().as_u16() == 429 {
            retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
        }
        statuses.push(r.status().as_u16());
    }
    let first_429 = statuses.iter().position(|s| *s == 429).expect("throttled");
    assert!((5..=12).contains(&first_429), "{statuses:?}");
    assert!(statuses[..first_429].iter().all(|s| *s == 401));
    assert!(
        statuses[first_429..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
    let wait = retry_after.expect("Retry-After");
    assert!((1..=5).contains(&wait), "{wait}");
    // While throttled, the address is refused before its credentials are checked.
    let right = c.client().node(&id, &secret);
    assert_eq!(right.get(&format!("/api/v1/nodes/{id}/status")).status, 429);
    // Another kind of wrong credentials counts the same.
    assert_eq!(wrong.get("/api/v1/nodes").status, 429);
    std::thread::sleep(Duration::from_secs(wait + 1));
    right.get(&format!("/api/v1/nodes/{id}/status")).expect(200);
    let log = c.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("authentication failed from 127.0.0.1"))
        .count();
    assert!((1..=3).contains(&lines), "{lines} log lines:\n{log}");
    assert!(log.contains("wrong secret for node"), "{log}");
    assert!(!log.contains("not-the-secret"), "a secret reached the log");
}

#[test]
fn sigterm_exits_within_the_grace_period_while_a_store_call_blocks() {
    let dir = tempdir();
    let (mut c, token) = started(dir.path(), &["--shutdown-grace", "2s"]);
    let (id, secret) = c.client().admin(&token).register("n1");
    // Another process holds the database's write lock: the collector's writes wait for it
    // (up to its busy timeout, 10 s, each).
    let lock = rusqlite::Connection::open(&c.db).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let posts: Vec<_> = (0..4)
        .map(|i| {
            let api = c.client().node(&id, &secret);
            std::thread::spawn(move || {
                let _ = api.try_call(
                    "POST",
                    &format!("/api/v1/nodes/{}/results", "n1"),
                    Some(serde_json::to_vec(&results(&format!("r{i}"))).unwrap()),
                );
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    c.sigterm();
    while c.running() && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    assert!(!c.running(), "still running 15 s after SIGTERM");
    // The grace period plus the one second documented for blocking work, with slack for a
    // loaded machine; the blocked writes alone would hold it 10 s.
    assert!(took < Duration::from_secs(6), "exit took {took:?}");
    assert!(c.log().contains("stopped"), "{}", c.log());
    drop(lock);
    for p in posts {
        p.join().unwrap();
    }
}

/// libfaketime, which moves the collector's clock (not its monotonic timers).
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

#[test]
fn retention_keeps_the_database_bounded_over_60_simulated_days() {
    assert!(
        Path::new(FAKETIME).exists(),
        "{FAKETIME} is missing: apt-get install faketime (listed in .ci/run)"
    );
    let dir = tempdir();
    let db = dir.path().join("collector.db");
    let token = admin_token(&db);
    let clock = dir.path().join("faketime");
    write(&clock, "+0d\n");
    let c = CollectorProcess::start_with_env(
        &db,
        &["--retention", "30d", "--prune-interval", "200ms"],
        &[
            ("LD_PRELOAD", FAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", clock.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let admin = c.client().admin(&token);
    const NODES: usize = 10;
    const RUNS_PER_DAY: usize = 4;
    const MODULES: usize = 20;
    let nodes: Vec<(String, String)> = (0..NODES)
        .map(|i| admin.register(&format!("node{i}")))
        .collect();
    let report = |run_id: &str, day: usize, node: usize| {
        let modules: Vec<Value> = (0..MODULES)
            .map(|m| {
                // Each node is nok on one module every third day.
                let status = if day.is_multiple_of(3) && m == node {
                    "nok"
                } else {
                    "ok"
                };
                json!({"module": format!("mod{m:02}"), "moduleset": "ms", "status": status,
                       "actions": [{"action": "check", "exit_code": 0,
                                    "log": "l".repeat(200), "duration_ms": 3}],
                       "duration_ms": 3})
            })
            .collect();
        json!({"run_id": run_id, "agent_version": "test", "action": "check",
               "policy_hash": "h", "modules": modules,
               "summary": {"ok": MODULES, "nok": 0, "na": 0}, "duration_ms": 60})
    };
    let size = || {
        let wal = db.with_extension("db-wal");
        std::fs::metadata(&db).map_or(0, |m| m.len())
            + std::fs::metadata(&wal).map_or(0, |m| m.len())
    };
    let mut full_window = 0u64;
    for day in 0..60usize {
        write(&clock, format!("+{day}d\n"));
        for (n, (id, secret)) in nodes.iter().enumerate() {
            let api = c.client().node(id, secret);
            for k in 0..RUNS_PER_DAY {
                api.post(
                    &format!("/api/v1/nodes/{id}/results"),
                    &report(&format!("d{day}-n{n}-r{k}"), day, n),
                )
                .expect(201);
            }
        }
        // The pruner catches up: node0 keeps at most the window's runs.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let runs = admin
                .get("/api/v1/nodes/node0/runs?limit=10000")
                .expect(200)
                .json();
            if runs.as_array().unwrap().len() <= (31 * RUNS_PER_DAY).max(RUNS_PER_DAY) {
                break;
            }
            assert!(Instant::now() < deadline, "day {day}: runs not pruned");
            std::thread::sleep(Duration::from_millis(100));
        }
        let s = size();
        if day == 31 {
            full_window = s;
        }
        // docs/collector.md: at most 1 KiB per module result kept (0.55 KB measured), so a
        // node reporting 4 runs of 20 modules a day needs at most 80 KiB per day of window;
        // plus 2 MiB of fixed overhead.
        let bound = 2 * 1024 * 1024 + (NODES * RUNS_PER_DAY * MODULES * 1024 * 31) as u64;
        assert!(s <= bound, "day {day}: database {s} bytes > {bound}");
        if day > 31 {
            assert!(
                s <= full_window + full_window / 4,
                "day {day}: {s} bytes, {full_window} when the window filled"
            );
        }
    }
    // The trend covers all 60 days (59 finished ones at least), runs only the window.
    let trend = admin
        .get("/api/v1/compliance/daily?days=90")
        .expect(200)
        .json();
    let days = trend.as_array().unwrap();
    assert!(days.len() >= 59, "{} days of aggregates", days.len());
    let first = &days[0];
    assert_eq!(first["subjects"], NODES);
    // Day 0: every node nok on one module; day 1: every node compliant.
    assert_eq!(first["compliant"], 0, "{first}");
    assert_eq!(days[1]["compliant"], NODES, "{}", days[1]);
    let m = admin
        .get("/api/v1/compliance/daily?days=90&module=mod00")
        .expect(200)
        .json();
    assert!(m.as_array().unwrap().len() >= 59);
    let status = admin.get("/api/v1/nodes/node0/status").expect(200).json();
    assert_eq!(status["modules"].as_array().unwrap().len(), MODULES);
    println!(
        "database: {} bytes with the window full (day 31), {} bytes at day 60",
        full_window,
        size()
    );
}

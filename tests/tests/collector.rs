//! End-to-end tests of the collector (issue 3): the real `tenet-collector serve` on 127.0.0.1
//! with a temporary SQLite database, and the real `tenet` binary registered with it, running
//! against temporary roots.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tenet_tests::collector::{
    CollectorProcess, admin_token, collector_cli, import, make_tls, results,
};
use tenet_tests::{Tenet, TestRoot, node_export, tempdir, write};

const NODE_MS: &str = "spdc.node";
const DEQUEUE: &str = "com.opensvc.sys.opensvc.dequeue-actions-listener";

/// A node of a test: its configuration file, var dir, root and name.
struct Node {
    name: String,
    config: PathBuf,
    var: PathBuf,
    root: TestRoot,
}

impl Node {
    fn new(dir: &Path, name: &str, root: TestRoot) -> Node {
        let config = dir.join(name).join("node.toml");
        write(&config, "");
        Node {
            name: name.to_string(),
            config,
            var: dir.join(name).join("var"),
            root,
        }
    }

    /// `tenet --config CONFIG <args>` with this node's name.
    fn tenet<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(&self, args: I) -> Tenet {
        Tenet::new(["--config".as_ref(), self.config.as_os_str()])
            .args(args)
            .env("TENET_NODENAME", &self.name)
    }

    /// Registers in the team the spdc modulesets are published to (`--team SPD`, assigned
    /// by the admin token), so the node may attach them itself.
    fn register(&self, url: &str, token: &str) {
        self.register_with(url, token, &[]);
    }

    /// The same, with more `tenet register` options.
    fn register_with(&self, url: &str, token: &str, extra: &[&str]) {
        let mut t = self
            .tenet(["register", "--collector", url, "--name", &self.name])
            .args(["--team", "SPD"])
            .args(extra);
        if url.starts_with("http://") {
            t = t.arg("--insecure-http");
        }
        t.env("TENET_ADMIN_TOKEN", token).run().assert_code(0);
    }

    fn config_value(&self, key: &str) -> String {
        let t: toml::Table = std::fs::read_to_string(&self.config)
            .unwrap()
            .parse()
            .unwrap();
        t[key].as_str().unwrap().to_string()
    }

    fn pushasset(&self) -> tenet_tests::Run {
        self.tenet(["pushasset", "--root"])
            .arg(self.root.path())
            .opt("var-dir", &self.var)
            .run()
    }

    fn check(&self) -> tenet_tests::Run {
        self.tenet(["compliance", "check"])
            .root(self.root.path())
            .var_dir(&self.var)
            .format_json()
            .run()
    }
}

/// Collector with the node export imported, an admin token, and a running server.
fn collector(dir: &Path) -> (CollectorProcess, String) {
    let db = dir.join("collector.db");
    import(&db, &node_export());
    let token = admin_token(&db);
    (CollectorProcess::start(&db), token)
}

fn module_statuses(report: &Value) -> BTreeMap<String, String> {
    report["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["module"].as_str().unwrap().to_string(),
                m["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn collector_statuses(status: &Value) -> BTreeMap<String, String> {
    status["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["module"].as_str().unwrap().to_string(),
                m["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn two_nodes_register_push_facts_attach_check_and_the_collector_agrees() {
    let dir = tempdir();
    let (server, token) = collector(dir.path());
    let with_systemd = Node::new(
        dir.path(),
        "node1",
        TestRoot::builder().installed(&["systemd"]).build(),
    );
    let without = Node::new(dir.path(), "node2", TestRoot::builder().build());
    for n in [&with_systemd, &without] {
        n.register(&server.url, &token);
        // The secret is a private file; the configuration names it and the collector URL.
        let secret = PathBuf::from(n.config_value("secret_file"));
        let mode = std::fs::metadata(&secret).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600,
            "{}",
            secret.display()
        );
        assert_eq!(n.config_value("collector"), server.url);
        n.pushasset().assert_code(0);
        n.tenet(["compliance", "attach", "--moduleset", NODE_MS])
            .run()
            .assert_code(0);
    }

    let mut reports = Vec::new();
    for n in [&with_systemd, &without] {
        let run = n.check();
        // The roots are empty: the node policy is not met, so the run exits 1.
        run.assert_code(1);
        let report = run.json();
        let printed = module_statuses(&report);
        assert!(printed.contains_key(DEQUEUE), "{report:#}");
        // The collector's view of the node is what the agent printed.
        let status = n
            .tenet(["compliance", "show", "status", "--format", "json"])
            .run();
        status.assert_code(0);
        let status = status.json();
        assert_eq!(collector_statuses(&status), printed, "{status:#}");
        assert_eq!(status["name"], n.name.as_str());
        assert_eq!(status["summary"]["nok"], report["summary"]["nok"]);
        reports.push((report, status));
    }

    // Contextual rulesets follow the facts each node pushed: with systemd, the dequeue-actions
    // listener checks the two unit files; without systemd nor xinetd it has nothing to do.
    let dequeue = |r: &Value| {
        r["modules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["module"] == DEQUEUE)
            .cloned()
            .unwrap()
    };
    let m1 = dequeue(&reports[0].0);
    let m2 = dequeue(&reports[1].0);
    assert_eq!(m1["status"], "nok", "{m1:#}");
    assert_eq!(m1["rules"].as_array().unwrap().len(), 2, "{m1:#}");
    assert_eq!(m2["status"], "n/a", "{m2:#}");
    // The contextual children are merged into the listener's ruleset of each node's policy.
    let listener_variables = |n: &Node| -> Vec<String> {
        let run = n
            .tenet(["compliance", "show", "ruleset", "--format", "json"])
            .root(n.root.path())
            .run();
        run.assert_code(0);
        let rulesets = run.json();
        let rs = rulesets
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == DEQUEUE)
            .cloned()
            .unwrap_or_else(|| panic!("no {DEQUEUE} in {rulesets:#}"));
        rs["variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listener_variables(&with_systemd).len(), 2);
    assert!(listener_variables(&without).is_empty());

    // The admin listing carries each node's compliance summary.
    let nodes = server
        .client()
        .admin(&token)
        .get("/api/v1/nodes")
        .expect(200)
        .json();
    let listed: BTreeMap<String, Value> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["compliance"].clone(),
            )
        })
        .collect();
    assert_eq!(listed["node1"], reports[0].1["summary"]);
    assert_eq!(listed["node2"], reports[1].1["summary"]);
}

#[test]
fn offline_runs_use_the_cached_policy_and_results_are_delivered_once_after_restart() {
    let dir = tempdir();
    let (mut server, token) = collector(dir.path());
    let node = Node::new(
        dir.path(),
        "node1",
        TestRoot::builder().installed(&["systemd"]).build(),
    );
    node.register(&server.url, &token);
    node.pushasset().assert_code(0);
    node.tenet(["compliance", "attach", "--moduleset", NODE_MS])
        .run()
        .assert_code(0);
    let first = node.check();
    first.assert_code(1);
    let online_hash = first.json()["policy_hash"].clone();

    server.kill9();
    let mut offline_runs = Vec::new();
    for _ in 0..2 {
        let run = node.check();
        run.assert_code(1);
        assert!(
            run.stderr.contains("collector unreachable")
                && run.stderr.contains("using the cached policy"),
            "{}",
            run.describe()
        );
        assert!(
            run.stderr.contains("old)"),
            "the age is said: {}",
            run.describe()
        );
        assert!(run.stderr.contains("results queued"), "{}", run.describe());
        assert_eq!(run.json()["policy_hash"], online_hash);
        offline_runs.push(run);
    }

    // Restart on the same port and database; the next agent call delivers the queue.
    let port = server.port;
    let mut server = CollectorProcess::start_on(&server.db.clone(), port);
    let run = node.pushasset();
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("2 queued result(s) delivered, 0 waiting"),
        "{}",
        run.describe()
    );
    // Nothing left to deliver: a second push delivers none.
    let run = node.pushasset();
    assert!(
        run.stdout
            .contains("0 queued result(s) delivered, 0 waiting"),
        "{}",
        run.describe()
    );

    let admin = server.client().admin(&token);
    let node_id = node.config_value("node_id");
    let runs = admin
        .get(&format!("/api/v1/nodes/{node_id}/runs"))
        .expect(200)
        .json();
    let ids: Vec<String> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids.len(),
        3,
        "one online and two offline runs, each once: {runs:#}"
    );
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 3);

    // A retry of an already recorded run (the agent lost the answer) is acknowledged, not stored.
    let secret = std::fs::read_to_string(node.config_value("secret_file")).unwrap();
    let as_node = server.client().node(&node_id, secret.trim());
    let again = results(&ids[0]);
    let a = as_node
        .post(&format!("/api/v1/nodes/{node_id}/results"), &again)
        .expect(200)
        .json();
    assert_eq!(a["new"], false);
    let runs = admin
        .get(&format!("/api/v1/nodes/{node_id}/runs"))
        .expect(200)
        .json();
    assert_eq!(runs.as_array().unwrap().len(), 3);
    server.stop();
}

/// Every endpoint but /health, /ready and /metrics.
const PROTECTED: &[(&str, &str)] = &[
    ("GET", "/api/v1/nodes"),
    ("POST", "/api/v1/nodes"),
    ("GET", "/api/v1/nodes/x"),
    ("DELETE", "/api/v1/nodes/x"),
    ("PUT", "/api/v1/nodes/x/facts"),
    ("GET", "/api/v1/nodes/x/policy"),
    ("POST", "/api/v1/nodes/x/results"),
    ("GET", "/api/v1/nodes/x/status"),
    ("GET", "/api/v1/nodes/x/runs"),
    ("GET", "/api/v1/nodes/x/attachments"),
    ("POST", "/api/v1/nodes/x/modulesets/m"),
    ("DELETE", "/api/v1/nodes/x/rulesets/r"),
    ("GET", "/api/v1/services/s/attachments"),
    ("POST", "/api/v1/services/s/modulesets/m"),
    ("DELETE", "/api/v1/services/s/rulesets/r"),
    ("GET", "/api/v1/rulesets"),
    ("POST", "/api/v1/rulesets"),
    ("GET", "/api/v1/rulesets/r"),
    ("PATCH", "/api/v1/rulesets/r"),
    ("DELETE", "/api/v1/rulesets/r"),
    ("PUT", "/api/v1/rulesets/r/variables/v"),
    ("DELETE", "/api/v1/rulesets/r/variables/v"),
    ("POST", "/api/v1/rulesets/r/children/c"),
    ("DELETE", "/api/v1/rulesets/r/children/c"),
    ("GET", "/api/v1/filtersets"),
    ("POST", "/api/v1/filtersets"),
    ("GET", "/api/v1/filtersets/f"),
    ("PUT", "/api/v1/filtersets/f"),
    ("DELETE", "/api/v1/filtersets/f"),
    ("GET", "/api/v1/modulesets"),
    ("POST", "/api/v1/modulesets"),
    ("GET", "/api/v1/modulesets/m"),
    ("DELETE", "/api/v1/modulesets/m"),
    ("PUT", "/api/v1/modulesets/m/modules/x"),
    ("DELETE", "/api/v1/modulesets/m/modules/x"),
    ("POST", "/api/v1/modulesets/m/children/c"),
    ("DELETE", "/api/v1/modulesets/m/children/c"),
    ("POST", "/api/v1/modulesets/m/rulesets/r"),
    ("DELETE", "/api/v1/modulesets/m/rulesets/r"),
    ("GET", "/api/v1/export"),
    ("POST", "/api/v1/import"),
    ("GET", "/api/v1/policies/abc"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/services/s/config"),
    ("GET", "/api/v1/forms"),
    ("POST", "/api/v1/forms/f"),
    ("GET", "/api/v1/actions"),
    ("POST", "/api/v1/actions"),
    ("GET", "/api/v1/actions/1"),
    ("POST", "/api/v1/actions/1/cancel"),
    ("GET", "/api/v1/nodes/x/actions"),
    ("POST", "/api/v1/nodes/x/actions/dequeue"),
    ("POST", "/api/v1/nodes/x/actions/ack"),
    ("POST", "/api/v1/nodes/x/actions/result"),
    ("PUT", "/api/v1/nodes/x/releases/1.0"),
    ("GET", "/api/v1/nodes/x/releases"),
    ("GET", "/api/v1/releases"),
];

#[test]
fn security_no_credentials_means_401_on_every_endpoint_but_health() {
    let dir = tempdir();
    let (server, _token) = collector(dir.path());
    let anon = server.client();
    for (method, path) in PROTECTED {
        let a = anon.call(method, path, Some(b"{}".to_vec()));
        assert_eq!(
            a.status, 401,
            "{method} {path} without credentials: {}",
            a.body
        );
        assert!(
            a.json()["error"]
                .as_str()
                .unwrap()
                .contains("authentication")
        );
    }
    // Wrong credentials of both kinds are 401 too.
    assert_eq!(
        anon.clone()
            .admin("tenet_admin_wrong")
            .get("/api/v1/nodes")
            .status,
        401
    );
    assert_eq!(
        anon.clone()
            .node("nobody", "x")
            .get("/api/v1/nodes/nobody/policy")
            .status,
        401
    );
    for path in ["/health", "/ready", "/metrics"] {
        anon.get(path).expect(200);
    }
}

#[test]
fn security_a_node_reaches_only_its_own_data() {
    let dir = tempdir();
    let (server, token) = collector(dir.path());
    let admin = server.client().admin(&token);
    let (a_id, a_secret) = admin.register("node-a");
    let (b_id, _) = admin.register("node-b");
    let a = server.client().node(&a_id, &a_secret);
    a.get(&format!("/api/v1/nodes/{a_id}/policy")).expect(200);
    // B's policy, results, status, facts and attachments are out of A's reach (by id or name).
    for path in [
        format!("/api/v1/nodes/{b_id}/policy"),
        "/api/v1/nodes/node-b/policy".to_string(),
        format!("/api/v1/nodes/{b_id}/status"),
        format!("/api/v1/nodes/{b_id}/runs"),
    ] {
        a.get(&path).expect(403);
    }
    a.post(&format!("/api/v1/nodes/{b_id}/results"), &results("r1"))
        .expect(403);
    a.put(
        &format!("/api/v1/nodes/{b_id}/facts"),
        &json!({"facts": {"node": {}, "packages": [], "tags": [], "service": null}}),
    )
    .expect(403);
    a.call(
        "POST",
        &format!("/api/v1/nodes/{b_id}/modulesets/{NODE_MS}"),
        None,
    )
    .expect(403);
    // A wrong secret for a real node id is 401.
    server
        .client()
        .node(&b_id, &a_secret)
        .get(&format!("/api/v1/nodes/{b_id}/policy"))
        .expect(401);
    // Nothing was recorded for B.
    let runs = admin
        .get(&format!("/api/v1/nodes/{b_id}/runs"))
        .expect(200)
        .json();
    assert!(runs.as_array().unwrap().is_empty());
}

#[test]
fn security_a_node_cannot_call_admin_endpoints() {
    let dir = tempdir();
    let (server, token) = collector(dir.path());
    let (id, secret) = server.client().admin(&token).register("node-a");
    let node = server.client().node(&id, &secret);
    for (method, path) in PROTECTED {
        if path.starts_with("/api/v1/nodes/x") {
            continue; // node endpoints, covered by the own-data test
        }
        let a = node.call(method, path, Some(b"{}".to_vec()));
        assert_eq!(a.status, 403, "{method} {path} as a node: {}", a.body);
    }
}

#[test]
fn security_secrets_and_tokens_are_stored_as_digests_only() {
    let dir = tempdir();
    let (server, token) = collector(dir.path());
    let (id, secret) = server.client().admin(&token).register("node-a");
    drop(server);
    let conn = rusqlite::Connection::open(dir.path().join("collector.db")).unwrap();
    let stored: String = conn
        .query_row("SELECT secret_hash FROM nodes WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    use sha2::Digest as _;
    assert_eq!(stored, hex::encode(sha2::Sha256::digest(secret.as_bytes())));
    assert_ne!(stored, secret);
    // Neither the secret nor the token appear anywhere in the database files.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("collector.db")
        {
            let bytes = std::fs::read(&p).unwrap();
            for needle in [secret.as_bytes(), token.as_bytes()] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} holds a secret in clear",
                    p.display()
                );
            }
        }
    }
}

#[test]
fn security_request_bodies_are_size_limited() {
    use std::io::{Read as _, Write as _};
    let dir = tempdir();
    let (server, token) = collector(dir.path());
    let (id, secret) = server.client().admin(&token).register("node-a");
    // A raw request announcing 2 MiB: the collector answers 413 from the announced length,
    // without reading (or storing) the body. (An HTTP client sending the whole body may see
    // the connection closed under it instead of the answer, so the test speaks HTTP itself.)
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{id}:{secret}"),
    );
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "POST /api/v1/nodes/{id}/results HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        2 * 1024 * 1024
    )
    .unwrap();
    tcp.write_all(&[b' '; 4096]).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // A normal one goes through, and nothing of the big one was stored.
    let node = server.client().node(&id, &secret);
    node.post(&format!("/api/v1/nodes/{id}/results"), &results("small"))
        .expect(201);
    let runs = node
        .get(&format!("/api/v1/nodes/{id}/runs"))
        .expect(200)
        .json();
    assert_eq!(runs.as_array().unwrap().len(), 1);
}

#[test]
fn security_sql_is_parameterised_hostile_names_are_data() {
    let dir = tempdir();
    let (server, token) = collector(dir.path());
    let admin = server.client().admin(&token);
    // Node and variable names have strict grammars (no quotes); labels such as ruleset names
    // and teams may hold SQL metacharacters, and values anything.
    let hostile = "x'); DROP TABLE nodes; --";
    let (id, secret) = admin.register("node-a");
    admin
        .post(
            "/api/v1/rulesets",
            &json!({"name": hostile, "variables": [{"name": "v", "class": "raw", "value": "1' OR '1'='1 --"}]}),
        )
        .expect(201);
    admin
        .put(
            &format!("/api/v1/nodes/{id}"),
            &json!({"team_responsible": hostile}),
        )
        .expect(200);
    let got = admin
        .get(&format!(
            "/api/v1/rulesets/{}",
            "x%27%29%3B%20DROP%20TABLE%20nodes%3B%20--"
        ))
        .expect(200)
        .json();
    assert_eq!(got["name"], hostile);
    assert_eq!(got["variables"][0]["name"], "v");
    assert!(got.to_string().contains("1' OR '1'='1 --"), "{got}");
    let node = server.client().node(&id, &secret);
    node.put(
        &format!("/api/v1/nodes/{id}/facts"),
        &json!({"facts": {"node": {"nodename": "a' OR 1=1 --"}, "packages": [{"name": "p'; DELETE FROM runs; --", "version": "1", "arch": "x"}], "tags": [], "service": null}}),
    )
    .expect(204);
    let nodes = admin.get("/api/v1/nodes").expect(200).json();
    assert_eq!(nodes[0]["name"], "node-a");
    assert_eq!(nodes[0]["team_responsible"], hostile);

    // And in the source: no SQL text is ever built with format!; values are bound (?N).
    let store_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../collector/src/store");
    let mut files = Vec::new();
    let mut dirs = vec![store_dir];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 7, "{files:?}");
    for p in files {
        let text = std::fs::read_to_string(&p).unwrap();
        for (i, line) in text.lines().enumerate() {
            let l = line.to_uppercase();
            let sqlish = ["SELECT ", "INSERT ", "UPDATE ", "DELETE ", " WHERE "]
                .iter()
                .any(|k| l.contains(k));
            assert!(
                !(sqlish && line.contains("format!")),
                "{}:{}: SQL built with format!: {line}",
                p.display(),
                i + 1
            );
        }
        assert!(!text.contains("execute(&format!") && !text.contains("prepare(&format!"));
    }
}

#[test]
fn bad_input_malformed_import_is_refused_whole_and_names_the_field() {
    let dir = tempdir();
    let (server, token) = collector(dir.path());
    let admin = server.client().admin(&token);
    let before = admin.get("/api/v1/export").expect(200).body;
    let mut doc: Value =
        serde_json::from_str(&std::fs::read_to_string(node_export()).unwrap()).unwrap();
    // A valid new ruleset first, then a bad operator: nothing of the document may land.
    doc["rulesets"].as_array_mut().unwrap().insert(
        0,
        json!({"fset_name": null, "ruleset_name": "brand.new", "ruleset_type": "explicit",
               "ruleset_public": true, "variables": [], "rulesets": [], "publications": [],
               "responsibles": []}),
    );
    doc["filtersets"][0]["filters"][0]["filter"]["f_op"] = json!("~=");
    let a = admin.call(
        "POST",
        "/api/v1/import",
        Some(serde_json::to_vec(&doc).unwrap()),
    );
    assert_eq!(a.status, 400, "{}", a.body);
    let msg = a.json()["error"].as_str().unwrap().to_string();
    assert!(msg.contains("f_op") || msg.contains("~="), "{msg}");
    assert_eq!(admin.get("/api/v1/export").expect(200).body, before);
    admin.get("/api/v1/rulesets/brand.new").expect(404);

    // Not JSON at all.
    let a = admin.call("POST", "/api/v1/import", Some(b"{\"rulesets\": [".to_vec()));
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(admin.get("/api/v1/export").expect(200).body, before);

    // The CLI refuses the same file with exit 2 and the same message, changing nothing.
    let bad = dir.path().join("bad.json");
    write(&bad, serde_json::to_vec(&doc).unwrap());
    let db = dir.path().join("collector.db");
    let (code, _, err) = collector_cli(&[
        "import",
        bad.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.json") && (err.contains("f_op") || err.contains("~=")),
        "{err}"
    );
    assert_eq!(admin.get("/api/v1/export").expect(200).body, before);
}

#[test]
fn bad_input_attaching_an_unknown_moduleset_is_404_with_a_message() {
    let dir = tempdir();
    let (server, token) = collector(dir.path());
    let admin = server.client().admin(&token);
    let (id, _) = admin.register("node-a");
    let a = admin
        .call(
            "POST",
            &format!("/api/v1/nodes/{id}/modulesets/no.such.moduleset"),
            None,
        )
        .expect(404);
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("no.such.moduleset")
    );
    // Asking a policy for a moduleset that is not attached says which are.
    admin
        .call(
            "POST",
            &format!("/api/v1/nodes/{id}/modulesets/{NODE_MS}"),
            None,
        )
        .expect(200);
    let a = admin
        .get(&format!(
            "/api/v1/nodes/{id}/policy?moduleset=spdc.kernel,nope"
        ))
        .expect(404);
    let msg = a.json()["error"].as_str().unwrap().to_string();
    assert!(msg.contains("nope") && msg.contains(NODE_MS), "{msg}");
}

#[test]
fn durability_every_acknowledged_result_survives_kill_9() {
    let dir = tempdir();
    let (mut server, token) = collector(dir.path());
    let admin = server.client().admin(&token);
    let (id, secret) = admin.register("node-a");
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = server.client().node(&id, &secret);
    let workers: Vec<_> = (0..50)
        .map(|w| {
            let (client, acked, stop, id) =
                (client.clone(), acked.clone(), stop.clone(), id.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let run_id = format!("w{w}-{i}");
                    let path = format!("/api/v1/nodes/{id}/results");
                    let body = serde_json::to_vec(&results(&run_id)).unwrap();
                    // A refused connection after the kill ends this worker.
                    match client.try_call("POST", &path, Some(body)) {
                        Ok(a) if a.status == 201 => acked.lock().unwrap().push(run_id),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    // Let the load build up, then kill without warning.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 300 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 300,
        "only {} results acknowledged",
        acked.len()
    );

    let server = CollectorProcess::start(&server.db.clone());
    let runs = server
        .client()
        .admin(&token)
        .get(&format!("/api/v1/nodes/{id}/runs?limit=10000"))
        .expect(200)
        .json();
    let stored: BTreeSet<String> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|r| !stored.contains(*r)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged results lost after kill -9: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
}

#[test]
fn metrics_count_requests_and_report_nodes_and_nok_modules() {
    let dir = tempdir();
    let (server, token) = collector(dir.path());
    let admin = server.client().admin(&token);
    let (id, secret) = admin.register("node-a");
    let node = server.client().node(&id, &secret);
    let mut nok = results("r1");
    nok["modules"][0]["status"] = json!("nok");
    node.post(&format!("/api/v1/nodes/{id}/results"), &nok)
        .expect(201);
    node.get(&format!("/api/v1/nodes/{id}/policy")).expect(200);
    let m = server.client().get("/metrics").expect(200).body;
    assert!(m.contains("tenet_nodes 1"), "{m}");
    assert!(m.contains("tenet_modules_nok 1"), "{m}");
    assert!(
        m.contains(r#"tenet_http_requests_total{route="/api/v1/nodes/{node}/policy",method="GET",status="200"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(
            r#"tenet_http_request_duration_seconds_count{route="/api/v1/nodes/{node}/results"} 1"#
        ),
        "{m}"
    );
    assert!(
        server
            .client()
            .get("/ready")
            .expect(200)
            .body
            .contains("schema version")
    );
}

#[test]
fn admin_edits_change_what_nodes_get_and_are_audited() {
    let dir = tempdir();
    let (server, token) = collector(dir.path());
    let admin = server.client().admin(&token);
    let (id, secret) = admin.register("node-a");
    let node = server.client().node(&id, &secret);
    admin
        .post("/api/v1/rulesets", &json!({"name": "site.motd", "variables": [{"name": "motd", "class": "raw", "value": "hello"}]}))
        .expect(201);
    admin
        .post(
            "/api/v1/modulesets",
            &json!({"name": "site", "modules": [{"name": "site.motd"}], "rulesets": ["site.motd"]}),
        )
        .expect(201);
    admin
        .call("POST", &format!("/api/v1/nodes/{id}/modulesets/site"), None)
        .expect(200);
    let p1 = node
        .get(&format!("/api/v1/nodes/{id}/policy"))
        .expect(200)
        .json();
    assert_eq!(p1["rulesets"][0]["variables"][0]["value"]["value"], "hello");
    admin
        .put(
            "/api/v1/rulesets/site.motd/variables/motd",
            &json!({"class": "raw", "value": "bye"}),
        )
        .expect(200);
    let p2 = node
        .get(&format!("/api/v1/nodes/{id}/policy"))
        .expect(200)
        .json();
    assert_eq!(p2["rulesets"][0]["variables"][0]["value"]["value"], "bye");
    assert_ne!(p1["hash"], p2["hash"]);
    // The served policy is kept by hash.
    admin
        .get(&format!(
            "/api/v1/policies/{}",
            p2["hash"].as_str().unwrap()
        ))
        .expect(200);
    // Deleting a ruleset a moduleset uses is refused, naming the moduleset.
    let a = admin
        .call("DELETE", "/api/v1/rulesets/site.motd", None)
        .expect(400);
    assert!(
        a.json()["error"].as_str().unwrap().contains("site"),
        "{}",
        a.body
    );
    // Unknown fields and bad values name the field.
    let a = admin
        .post("/api/v1/rulesets", &json!({"name": "x", "colour": "red"}))
        .expect(422);
    assert!(a.body.contains("colour"), "{}", a.body);
    let a = admin
        .post("/api/v1/filtersets", &json!({"name": "f", "filters": [{"table": "nodes", "field": "os_name", "op": "~", "value": "x"}]}))
        .expect(400);
    assert!(a.body.contains("filters[0].op"), "{}", a.body);
    let audit = admin.get("/api/v1/audit").expect(200).json();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in [
        "variable.set",
        "attach",
        "moduleset.create",
        "ruleset.create",
        "node.register",
        "import",
    ] {
        assert!(actions.contains(&want), "{want} not audited: {actions:?}");
    }
}

#[test]
fn tls_the_agent_verifies_the_collector_certificate() {
    let dir = tempdir();
    let (ca, cert, key) = make_tls(dir.path());
    let db = dir.path().join("collector.db");
    import(&db, &node_export());
    let token = admin_token(&db);
    let server = CollectorProcess::start_tls(&db, &cert, &key);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );

    // Without the CA the certificate is unknown: registration fails, nothing is written.
    let untrusting = Node::new(dir.path(), "node0", TestRoot::builder().build());
    let run = untrusting
        .tenet(["register", "--collector", &server.url, "--name", "node0"])
        .env("TENET_ADMIN_TOKEN", &token)
        .run();
    run.assert_code(1);
    assert!(
        run.stderr.to_lowercase().contains("certificate"),
        "{}",
        run.describe()
    );
    assert!(!untrusting.config.with_file_name("node.secret").exists());

    // With it, the whole cycle works over TLS.
    let node = Node::new(
        dir.path(),
        "node1",
        TestRoot::builder().installed(&["systemd"]).build(),
    );
    node.register_with(&server.url, &token, &["--ca-file", ca.to_str().unwrap()]);
    assert_eq!(node.config_value("ca_file"), ca.display().to_string());
    node.pushasset().assert_code(0);
    node.tenet(["compliance", "attach", "--moduleset", NODE_MS])
        .run()
        .assert_code(0);
    let run = node.check();
    run.assert_code(1);
    assert!(!run.stderr.contains("unreachable"), "{}", run.describe());
    let status = node
        .tenet(["compliance", "show", "status", "--format", "json"])
        .run();
    status.assert_code(0);
    assert_eq!(
        collector_statuses(&status.json()),
        module_statuses(&run.json())
    );
}

#[test]
fn service_runs_use_the_service_attachments_and_are_reported_per_service() {
    let dir = tempdir();
    let (server, token) = collector(dir.path());
    let admin = server.client().admin(&token);
    admin
        .call("POST", "/api/v1/services/svc1/modulesets/spdc.kernel", None)
        .expect(200);
    let node = Node::new(dir.path(), "node1", TestRoot::builder().build());
    // The admin assigns svc1 to node1 at registration; node2 only says it hosts it.
    node.register_with(&server.url, &token, &["--service", "svc1"]);
    let other = Node::new(dir.path(), "node2", TestRoot::builder().build());
    write(&other.config, "services = [\"svc1\"]\n");
    other.register(&server.url, &token);
    for n in [&node, &other] {
        n.pushasset().assert_code(0);
    }
    let run = node
        .tenet(["compliance", "check", "--service", "svc1"])
        .root(node.root.path())
        .var_dir(&node.var)
        .format_json()
        .run();
    let report = run.json();
    assert_eq!(
        module_statuses(&report).keys().collect::<Vec<_>>(),
        vec!["spdc.kernel"],
        "{}",
        run.describe()
    );
    let status = node
        .tenet(["compliance", "show", "status", "--format", "json"])
        .run()
        .json();
    assert_eq!(status["modules"][0]["service"], "svc1", "{status:#}");
    assert_eq!(status["modules"][0]["module"], "spdc.kernel");
    // A node that only reports hosting the service is refused, and says why.
    let run = other
        .tenet(["compliance", "check", "--service", "svc1"])
        .root(other.root.path())
        .var_dir(&other.var)
        .run();
    run.assert_code(2);
    assert!(
        run.stderr.contains("is not assigned service svc1"),
        "{}",
        run.describe()
    );
}

#[test]
fn forms_render_a_service_configuration_that_its_nodes_pull() {
    let dir = tempdir();
    let (server, token) = collector(dir.path());
    let admin = server.client().admin(&token);
    let spd = tenet_tests::spd_fixtures();
    let inputs: Value = serde_json::from_str(
        &std::fs::read_to_string(spd.join("service-form.inputs.json")).unwrap(),
    )
    .unwrap();
    let expected = std::fs::read(spd.join("service-form.expected.conf")).unwrap();

    // Bad inputs are refused, naming the input, and nothing is stored.
    let mut bad = inputs.clone();
    bad["npods"] = json!(31);
    let a = admin
        .post("/api/v1/forms/spd-service", &json!({"inputs": bad}))
        .expect(400);
    assert!(
        a.body.contains("npods") || a.body.contains("divisible"),
        "{}",
        a.body
    );
    admin
        .post("/api/v1/forms/no-such-form", &json!({"inputs": {}}))
        .expect(404);

    let a = admin
        .post("/api/v1/forms/spd-service", &json!({"inputs": inputs}))
        .expect(201)
        .json();
    let svc = a["service"].as_str().unwrap().to_string();
    use sha2::Digest as _;
    assert_eq!(a["sha256"], hex::encode(sha2::Sha256::digest(&expected)));
    let served = admin
        .get(&format!("/api/v1/services/{svc}/config"))
        .expect(200);
    assert_eq!(served.body.as_bytes(), expected.as_slice());

    // A node the admin assigned the service pulls it, byte for byte; a second pull changes
    // nothing.
    let node = Node::new(dir.path(), "node1", TestRoot::builder().build());
    write(&node.config, format!("services = [\"{svc}\"]\n"));
    node.register_with(&server.url, &token, &["--service", &svc]);
    node.pushasset().assert_code(0);
    let pull = || {
        node.tenet(["svc", "pull", &svc, "--format", "json", "--root"])
            .arg(node.root.path())
            .run()
    };
    let first = pull();
    first.assert_code(0);
    assert_eq!(first.json()["changed"], true);
    let path = node
        .root
        .under_root(&format!("/etc/tenet/services/{svc}.conf"));
    assert_eq!(std::fs::read(&path).unwrap(), expected);
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let second = pull();
    second.assert_code(0);
    assert_eq!(second.json()["changed"], false);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);

    // A node that only says it hosts it is refused.
    let other = Node::new(dir.path(), "node2", TestRoot::builder().build());
    write(&other.config, format!("services = [\"{svc}\"]\n"));
    other.register(&server.url, &token);
    other.pushasset().assert_code(0);
    let run = other
        .tenet(["svc", "pull", &svc, "--root"])
        .arg(other.root.path())
        .run();
    run.assert_code(2);
    assert!(
        run.stderr.contains("is not assigned service"),
        "{}",
        run.describe()
    );
}

/// `n` filtersets `{prefix}0` → `{prefix}1` → ... (each nests the next; the last matches
/// every node), as one TOML document.
fn filterset_chain(prefix: &str, n: usize) -> String {
    let mut doc = String::new();
    for i in 0..n {
        doc.push_str(&format!("[[filterset]]\nname = \"{prefix}{i}\"\n"));
        if i + 1 < n {
            doc.push_str(&format!(
                "filter = [{{ filterset = \"{prefix}{}\" }}]\n",
                i + 1
            ));
        } else {
            doc.push_str(
                "filter = [{ table = \"nodes\", field = \"nodename\", op = \"LIKE\", value = \"%\" }]\n",
            );
        }
    }
    doc
}

/// Issue 12 item 3: a 10,000-deep filterset chain used to be accepted, then overflow the
/// stack of every policy fetch (and again after a restart). Now the import is refused with a
/// 400 naming the filterset, edits that would go over the limit too, and a chain at the limit
/// is served.
#[test]
fn bad_input_nesting_beyond_the_limit_is_refused_and_the_collector_stays_up() {
    let dir = tempdir();
    let (server, token) = collector(dir.path());
    let admin = server.client().admin(&token);
    let before = admin.get("/api/v1/export").expect(200).body;

    let a = admin.call(
        "POST",
        "/api/v1/import",
        Some(filterset_chain("deep", 10_000).into_bytes()),
    );
    assert_eq!(a.status, 400, "{}", a.body);
    let msg = a.json()["error"].as_str().unwrap().to_string();
    assert!(
        msg.contains("filterset deep0")
            && msg.contains("nesting depth 10000 exceeds the limit of 100"),
        "{msg}"
    );
    assert_eq!(admin.get("/api/v1/export").expect(200).body, before);
    server.client().get("/health").expect(200);

    // At the limit: accepted, and a public contextual ruleset on it reaches a node.
    let doc = filterset_chain("ok", 100)
        + "[[ruleset]]\nname = \"deep.rs\"\ntype = \"contextual\"\npublic = true\n\
           filterset = \"ok0\"\n[[ruleset.variable]]\nname = \"deep_var\"\nvalue = \"yes\"\n";
    admin
        .call("POST", "/api/v1/import", Some(doc.into_bytes()))
        .expect(200);
    let (id, secret) = admin.register("node-deep");
    admin
        .call(
            "POST",
            &format!("/api/v1/nodes/{id}/modulesets/{NODE_MS}"),
            None,
        )
        .expect(200);
    let node = server.client().node(&id, &secret);
    let policy = node
        .get(&format!("/api/v1/nodes/{id}/policy"))
        .expect(200)
        .json();
    let names: Vec<&str> = policy["rulesets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"deep.rs"), "{names:?}");

    // One more level through an admin edit: 400 naming the new top of the chain.
    let a = admin
        .post(
            "/api/v1/filtersets",
            &json!({"name": "over", "filters": [{"filterset": "ok0"}]}),
        )
        .expect(400);
    let msg = a.json()["error"].as_str().unwrap().to_string();
    assert!(
        msg.contains("filterset over") && msg.contains("nesting depth 101"),
        "{msg}"
    );
    admin.get("/api/v1/filtersets/over").expect(404);
    node.get(&format!("/api/v1/nodes/{id}/policy")).expect(200);
}

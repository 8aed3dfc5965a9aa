//! Issue 13 against a real `tenet-collector serve` on 127.0.0.1: authorization a node cannot
//! grant itself, names, honest errors, private database files, and the agent's transport
//! (plain HTTP refused, a pinned self-signed certificate accepted).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use tenet_tests::collector::{Api, CollectorProcess, admin_token, collector_cli, import, results};
use tenet_tests::{Tenet, library_bundle, tempdir, write};

/// A collector with the shipped spdc-node bundle (`spdc.packages` is published to OpenSVC and
/// SPD, `spdc.kernel` to OpenSVC only), an admin client and its token.
fn collector(dir: &Path) -> (CollectorProcess, Api, String) {
    let db = dir.join("collector.db");
    import(&db, &library_bundle("spdc-node"));
    let token = admin_token(&db);
    let server = CollectorProcess::start(&db);
    let admin = server.client().admin(&token);
    (server, admin, token)
}

fn error_of(a: &tenet_tests::collector::Answer) -> String {
    a.json()["error"].as_str().unwrap_or_default().to_string()
}

/// The configuration a form renders for `svc` (the shipped spd-service form, defaults).
fn render_config(admin: &Api, svc: &str) {
    admin
        .post(
            "/api/v1/forms/spd-service",
            &json!({"inputs": {"svcname": svc, "npods": 2, "nodes": "n1 n2", "app": "a"}, "defaults": true}),
        )
        .expect(201);
}

#[test]
fn item1_facts_a_node_reports_grant_nothing_admin_attributes_do() {
    let dir = tempdir();
    let (server, admin, _) = collector(dir.path());
    let (id, secret) = admin.register("node-a");
    let node = server.client().node(&id, &secret);
    admin
        .call(
            "POST",
            "/api/v1/services/secretsvc/modulesets/spdc.kernel",
            None,
        )
        .expect(200);
    render_config(&admin, "secretsvc");

    // The node claims the team and the service in what it reports.
    node.put(
        &format!("/api/v1/nodes/{id}/facts"),
        &json!({"facts": {"node": {"team_responsible": "SPD"}}, "services": ["secretsvc"]}),
    )
    .expect(204);
    let refused = |a: tenet_tests::collector::Answer, what: &str| {
        assert_eq!(a.status, 403, "{what}: {}", a.body);
        error_of(&a)
    };
    let e = refused(
        node.call(
            "POST",
            &format!("/api/v1/nodes/{id}/modulesets/spdc.packages"),
            None,
        ),
        "attach",
    );
    assert!(e.contains("the node's team: none assigned"), "{e}");
    let e = refused(
        node.get("/api/v1/services/secretsvc/config"),
        "service config",
    );
    assert!(e.contains("is not assigned service secretsvc"), "{e}");
    refused(
        node.get(&format!("/api/v1/nodes/{id}/policy?service=secretsvc")),
        "service policy",
    );
    let mut run = results("svc-run");
    run["service"] = json!("secretsvc");
    refused(
        node.post(&format!("/api/v1/nodes/{id}/results"), &run),
        "service results",
    );
    // What it reported is shown to admins, as reported.
    let info = admin.get(&format!("/api/v1/nodes/{id}")).expect(200).json();
    assert_eq!(info["reported_services"], json!(["secretsvc"]));
    assert_eq!(info["services"], json!([]));
    assert_eq!(info["team_responsible"], Value::Null);

    // An admin assigns them: now the same calls succeed.
    let a = admin
        .put(
            &format!("/api/v1/nodes/{id}"),
            &json!({"team_responsible": "SPD", "services": ["secretsvc"]}),
        )
        .expect(200)
        .json();
    assert_eq!(a["services"], json!(["secretsvc"]));
    node.call(
        "POST",
        &format!("/api/v1/nodes/{id}/modulesets/spdc.packages"),
        None,
    )
    .expect(200);
    // Published to OpenSVC only: still not for SPD.
    node.call(
        "POST",
        &format!("/api/v1/nodes/{id}/modulesets/spdc.kernel"),
        None,
    )
    .expect(403);
    let cfg = node.get("/api/v1/services/secretsvc/config").expect(200);
    assert!(cfg.body.contains("secretsvc"), "{}", cfg.body);
    let policy = node
        .get(&format!("/api/v1/nodes/{id}/policy?service=secretsvc"))
        .expect(200)
        .json();
    assert_eq!(policy["modules"][0]["name"], "spdc.kernel", "{policy:#}");
    node.post(&format!("/api/v1/nodes/{id}/results"), &run)
        .expect(201);

    // The node cannot change its own attributes; taking them away takes the access away.
    node.put(&format!("/api/v1/nodes/{id}"), &json!({"services": []}))
        .expect(403);
    admin
        .put(&format!("/api/v1/nodes/{id}"), &json!({}))
        .expect(200);
    node.get("/api/v1/services/secretsvc/config").expect(403);
    let audit = admin.get("/api/v1/audit?limit=5").expect(200).json();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "node.attributes" && e["actor"] == "admin:admin"),
        "{audit:#}"
    );

    // Attributes given at registration, checked like the rest.
    let a = admin
        .post(
            "/api/v1/nodes",
            &json!({"name": "node-b", "team_responsible": "SPD", "services": ["s1", "s2"]}),
        )
        .expect(201)
        .json();
    let b = admin
        .get(&format!("/api/v1/nodes/{}", a["node_id"].as_str().unwrap()))
        .expect(200)
        .json();
    assert_eq!(b["team_responsible"], "SPD");
    assert_eq!(b["services"], json!(["s1", "s2"]));
    let e = error_of(
        &admin
            .post(
                "/api/v1/nodes",
                &json!({"name": "node-c", "services": ["a/b"]}),
            )
            .expect(400),
    );
    assert!(e.contains("services: invalid service name \"a/b\""), "{e}");
    admin.get("/api/v1/nodes/node-c").expect(404);
}

#[test]
fn item1_the_agent_registers_with_admin_attributes_and_pushasset_grants_nothing() {
    let dir = tempdir();
    let (server, admin, token) = collector(dir.path());
    let config = dir.path().join("n1/node.toml");
    // The node's configuration claims a service and a team in its site facts.
    write(
        &config,
        "services = [\"claimed\"]\n[facts]\nteam_responsible = \"SPD\"\n",
    );
    let tenet = || Tenet::new(["--config".as_ref(), config.as_os_str()]);
    tenet()
        .args(["register", "--collector", &server.url, "--name", "n1"])
        .args(["--insecure-http", "--team", "OpenSVC", "--service", "given"])
        .env("TENET_ADMIN_TOKEN", &token)
        .run()
        .assert_code(0);
    tenet()
        .args(["pushasset", "--root"])
        .arg(dir.path().join("n1"))
        .run()
        .assert_code(0);
    let info = admin.get("/api/v1/nodes/n1").expect(200).json();
    assert_eq!(info["team_responsible"], "OpenSVC");
    assert_eq!(info["services"], json!(["given"]));
    assert_eq!(info["reported_services"], json!(["claimed"]));
    assert_eq!(info["facts"]["node"]["team_responsible"], "SPD");
    // The team assigned (OpenSVC) decides, not the one reported (SPD).
    tenet()
        .args(["compliance", "attach", "--moduleset", "spdc.kernel"])
        .run()
        .assert_code(0);
    let run = tenet()
        .args(["svc", "pull", "claimed", "--root"])
        .arg(dir.path().join("n1"))
        .run();
    run.assert_code(2);
    assert!(
        run.stderr.contains("is not assigned service claimed"),
        "{}",
        run.describe()
    );
    // Bad attributes are refused before anything is sent.
    let run = tenet()
        .args(["register", "--collector", &server.url, "--name", "n2"])
        .args(["--insecure-http", "--service", "a b"])
        .env("TENET_ADMIN_TOKEN", &token)
        .run();
    run.assert_code(2);
    assert!(run.stderr.contains("--service"), "{}", run.describe());
    admin.get("/api/v1/nodes/n2").expect(404);
}

#[test]
fn item2_a_node_detaches_only_what_it_attached_itself() {
    let dir = tempdir();
    let (server, admin, _) = collector(dir.path());
    let (id, secret) = admin.register("node-a");
    admin
        .put(
            &format!("/api/v1/nodes/{id}"),
            &json!({"team_responsible": "SPD"}),
        )
        .expect(200);
    let node = server.client().node(&id, &secret);
    admin
        .call(
            "POST",
            &format!("/api/v1/nodes/{id}/modulesets/spdc.kernel"),
            None,
        )
        .expect(200);
    node.call(
        "POST",
        &format!("/api/v1/nodes/{id}/modulesets/spdc.packages"),
        None,
    )
    .expect(200);

    // The admin's attachment stays, and the answer says who made it.
    let a = node.call(
        "DELETE",
        &format!("/api/v1/nodes/{id}/modulesets/spdc.kernel"),
        None,
    );
    assert_eq!(a.status, 403, "{}", a.body);
    let e = error_of(&a);
    assert!(
        e.contains("moduleset spdc.kernel was attached by admin:admin")
            && e.contains("a node detaches only what it attached itself"),
        "{e}"
    );
    let attachments = node
        .get(&format!("/api/v1/nodes/{id}/attachments"))
        .expect(200)
        .json();
    let by = |name: &str| {
        attachments["detail"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .map(|a| a["attached_by"].clone())
    };
    assert_eq!(by("spdc.kernel"), Some(json!("admin:admin")));
    assert_eq!(by("spdc.packages"), Some(json!("node:node-a")));

    // Its own it may detach; the admin detaches anything.
    node.call(
        "DELETE",
        &format!("/api/v1/nodes/{id}/modulesets/spdc.packages"),
        None,
    )
    .expect(200);
    admin
        .call(
            "DELETE",
            &format!("/api/v1/nodes/{id}/modulesets/spdc.kernel"),
            None,
        )
        .expect(200);
    let left = node
        .get(&format!("/api/v1/nodes/{id}/attachments"))
        .expect(200)
        .json();
    assert_eq!(left["modulesets"], json!([]));
}

#[test]
fn item9_duplicates_are_400_naming_them_and_500s_carry_only_a_request_id() {
    let dir = tempdir();
    let (mut server, admin, _) = collector(dir.path());
    let e = error_of(
        &admin
            .post(
                "/api/v1/modulesets",
                &json!({"name": "dup", "modules": [{"name": "m1"}, {"name": "m2"}, {"name": "m1"}]}),
            )
            .expect(400),
    );
    assert!(
        e.contains("moduleset dup: module \"m1\" is listed twice (modules 1 and 3)"),
        "{e}"
    );
    assert!(!e.to_lowercase().contains("constraint"), "{e}");
    let e = error_of(
        &admin
            .post(
                "/api/v1/rulesets",
                &json!({"name": "dupvars", "variables": [
                    {"name": "v", "class": "raw", "value": 1},
                    {"name": "v", "class": "raw", "value": 2}]}),
            )
            .expect(400),
    );
    assert!(
        e.contains("ruleset dupvars: variable \"v\" is defined twice (variables 1 and 2)"),
        "{e}"
    );
    admin.get("/api/v1/modulesets/dup").expect(404);
    admin.get("/api/v1/rulesets/dupvars").expect(404);

    // An internal error: a table the store needs is gone under the running collector.
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    conn.execute_batch("DROP TABLE audit_log").unwrap();
    drop(conn);
    let a = admin.post("/api/v1/rulesets", &json!({"name": "after"}));
    assert_eq!(a.status, 500, "{}", a.body);
    let body = a.json();
    let request_id = body["request_id"].as_str().unwrap().to_string();
    let e = body["error"].as_str().unwrap();
    assert_eq!(
        e,
        format!("internal error (request id {request_id}: the collector's log has the details)")
    );
    assert!(
        !a.body.contains("audit_log") && !a.body.contains("SQL"),
        "{}",
        a.body
    );
    server.stop();
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains(&request_id))
        .unwrap_or_else(|| panic!("no log line with {request_id}:\n{log}"));
    assert!(line.contains("audit_log"), "{line}");
}

#[test]
fn item10_names_follow_one_grammar_in_the_api_import_and_agent() {
    let dir = tempdir();
    let (server, admin, _) = collector(dir.path());
    let huge = "r".repeat(100_000);
    for (name, why) in [
        ("a/b", "holds '/'"),
        ("..", "holds \"..\""),
        ("a..b", "holds \"..\""),
        ("a\nb", "control character '\\n'"),
        ("a\0b", "control character '\\0'"),
        ("a\u{202E}b", "invisible character U+202E"),
        (huge.as_str(), "100000 bytes, over the limit of 200"),
    ] {
        for (path, body) in [
            ("/api/v1/rulesets", json!({"name": name})),
            ("/api/v1/modulesets", json!({"name": name})),
            ("/api/v1/filtersets", json!({"name": name, "filters": []})),
            (
                "/api/v1/rulesets",
                json!({"name": "ok", "variables": [{"name": name, "class": "raw", "value": 1}]}),
            ),
            ("/api/v1/nodes", json!({"name": name})),
        ] {
            let a = admin.post(path, &body);
            assert_eq!(
                a.status,
                400,
                "{path} {:?}: {}",
                &name[..name.len().min(20)],
                a.body
            );
            let e = error_of(&a);
            assert!(e.contains(why), "{path}: {e}");
            // A hostile name never comes back whole: cut and escaped.
            assert!(
                e.len() < 600 && !e.contains('\n') && !e.contains('\0'),
                "{e}"
            );
        }
    }
    // Variables are OpenSVC identifiers (issue 12 item 13).
    admin
        .post("/api/v1/rulesets", &json!({"name": "r"}))
        .expect(201);
    let e = error_of(
        &admin
            .put(
                "/api/v1/rulesets/r/variables/a=b",
                &json!({"class": "raw", "value": 1}),
            )
            .expect(400),
    );
    assert!(
        e.contains("invalid variable name \"a=b\": holds '='"),
        "{e}"
    );
    // Services created by a first attachment, node names at registration.
    admin
        .call(
            "POST",
            "/api/v1/services/a%20b/modulesets/spdc.kernel",
            None,
        )
        .expect(400);
    admin
        .post("/api/v1/nodes", &json!({"name": "-node"}))
        .expect(400);

    // The same grammar at import (CLI and API), naming file and variable.
    let policy = dir.path().join("bad");
    write(
        &policy.join("rulesets/r.toml"),
        "[[ruleset]]\nname = \"r2\"\n[[ruleset.variable]]\nname = \"x=1\"\nclass = \"raw\"\nvalue = 1\n",
    );
    let (code, _, err) = collector_cli(&[
        "import",
        policy.to_str().unwrap(),
        "--db",
        server.db.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("r.toml") && err.contains("ruleset r2: invalid variable name \"x=1\""),
        "{err}"
    );
    let a = admin.call(
        "POST",
        "/api/v1/import",
        Some(
            std::fs::read(policy.join("rulesets/r.toml"))
                .unwrap()
                .to_vec(),
        ),
    );
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(error_of(&a).contains("invalid variable name \"x=1\""));
    // And in the agent, masterless.
    let run = Tenet::new(["compliance", "check", "--policy"])
        .arg(&policy)
        .arg("--root")
        .arg(dir.path())
        .run();
    run.assert_code(2);
    assert!(
        run.stderr.contains("invalid variable name \"x=1\""),
        "{}",
        run.describe()
    );
    // The shipped library follows the grammar (it imported above).
    admin.get("/api/v1/modulesets/spdc.node").expect(200);
}

#[test]
fn item11_unknown_fields_are_422_naming_them_and_every_error_is_json() {
    let dir = tempdir();
    let (server, admin, _) = collector(dir.path());
    let (id, secret) = admin.register("node-a");
    let node = server.client().node(&id, &secret);
    let unknown = |a: tenet_tests::collector::Answer, field: &str| {
        assert_eq!(a.status, 422, "{field}: {}", a.body);
        let e = error_of(&a);
        assert!(e.contains(&format!("unknown field `{field}`")), "{e}");
    };
    unknown(
        admin.post("/api/v1/rulesets", &json!({"name": "r", "bogus": 1})),
        "bogus",
    );
    unknown(
        admin.put(&format!("/api/v1/nodes/{id}"), &json!({"team": "x"})),
        "team",
    );
    let mut run = results("r1");
    run["modules"][0]["extra"] = json!(true);
    unknown(
        node.post(&format!("/api/v1/nodes/{id}/results"), &run),
        "extra",
    );
    unknown(
        node.put(
            &format!("/api/v1/nodes/{id}/facts"),
            &json!({"facts": {"node": {}, "hostname": "x"}}),
        ),
        "hostname",
    );
    // Query strings, path parameters, methods: JSON errors too.
    for (method, path, status, needle) in [
        (
            "GET",
            format!("/api/v1/nodes/{id}/runs?limit=abc"),
            400,
            "limit",
        ),
        (
            "GET",
            format!("/api/v1/nodes/{id}/runs?bogus=1"),
            400,
            "bogus",
        ),
        ("GET", "/api/v1/audit?limit=-1".to_string(), 400, "limit"),
        (
            "GET",
            "/api/v1/actions/notanumber".to_string(),
            400,
            "notanumber",
        ),
        (
            "PATCH",
            "/api/v1/nodes".to_string(),
            405,
            "method not allowed",
        ),
        ("GET", "/nowhere".to_string(), 404, "no such endpoint"),
    ] {
        let a = admin.call(method, &path, None);
        assert_eq!(a.status, status, "{method} {path}: {}", a.body);
        let e = error_of(&a);
        assert!(e.to_lowercase().contains(needle), "{method} {path}: {e}");
    }
}

#[test]
fn item12_the_database_is_created_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempdir();
    let data = dir.path().join("var/lib/tenet-collector");
    let db = data.join("db.sqlite");
    let token = admin_token(&db);
    let mut server = CollectorProcess::start(&db);
    let admin = server.client().admin(&token);
    admin.register("node-a");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&dir.path().join("var")), 0o700);
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    server.stop();
    // A database left readable by an older collector is made private at start.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _server = CollectorProcess::start(&db);
    assert_eq!(mode(&db), 0o600);
}

#[test]
fn item13_register_refuses_plain_http_unless_told() {
    let dir = tempdir();
    let (server, admin, token) = collector(dir.path());
    let config = dir.path().join("n1/node.toml");
    let tenet = || Tenet::new(["--config".as_ref(), config.as_os_str()]);
    let run = tenet()
        .args(["register", "--collector", &server.url, "--name", "n1"])
        .env("TENET_ADMIN_TOKEN", &token)
        .run();
    run.assert_code(2);
    assert!(
        run.stderr.contains("plain HTTP") && run.stderr.contains("--insecure-http"),
        "{}",
        run.describe()
    );
    assert!(!config.exists() && !config.with_file_name("node.secret").exists());
    // Nothing reached the collector.
    admin.get("/api/v1/nodes/n1").expect(404);
    let help = Tenet::new(["register", "--help"]).run();
    help.assert_code(0);
    assert!(help.stdout.contains("--insecure-http"), "{}", help.stdout);
    assert!(help.stdout.contains("in clear"), "{}", help.stdout);

    tenet()
        .args(["register", "--collector", &server.url, "--name", "n1"])
        .arg("--insecure-http")
        .env("TENET_ADMIN_TOKEN", &token)
        .run()
        .assert_code(0);
    let cfg: toml::Table = std::fs::read_to_string(&config).unwrap().parse().unwrap();
    assert_eq!(cfg["insecure_http"].as_bool(), Some(true));
    tenet()
        .args(["pushasset", "--root"])
        .arg(dir.path())
        .run()
        .assert_code(0);
    // Without the recorded consent, the node's calls refuse plain HTTP too.
    let mut cfg = cfg;
    cfg.remove("insecure_http");
    write(&config, toml::to_string(&cfg).unwrap());
    let run = tenet().args(["pushasset", "--root"]).arg(dir.path()).run();
    run.assert_code(2);
    assert!(run.stderr.contains("insecure_http"), "{}", run.describe());
}

/// A self-signed certificate made by the real `openssl req -x509` (so `CA:TRUE`, as openssl
/// makes them), for `san`: (cert.pem, key.pem).
fn self_signed(dir: &Path, name: &str, san: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=tenet collector",
            "-addext",
        ])
        .arg(format!("subjectAltName={san}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
        "openssl req -x509 makes CA certificates"
    );
    (cert, key)
}

#[test]
fn item14_a_pinned_self_signed_certificate_is_accepted_and_only_that_one() {
    let dir = tempdir();
    let (cert, key) = self_signed(dir.path(), "collector", "IP:127.0.0.1");
    let (other, _) = self_signed(dir.path(), "other", "IP:127.0.0.1");
    let (wrong_name, wrong_key) = self_signed(dir.path(), "elsewhere", "DNS:elsewhere.example");
    let db = dir.path().join("collector.db");
    import(&db, &library_bundle("spdc-node"));
    let token = admin_token(&db);
    let server = CollectorProcess::start_tls(&db, &cert, &key);
    let register = |name: &str, ca: &Path| {
        let config = dir.path().join(name).join("node.toml");
        let run = Tenet::new(["--config".as_ref(), config.as_os_str()])
            .args(["register", "--collector", &server.url, "--name", name])
            .arg("--ca-file")
            .arg(ca)
            .env("TENET_ADMIN_TOKEN", &token)
            .run();
        (config, run)
    };
    // Another self-signed certificate in the file: the collector's is not trusted.
    let (config, run) = register("n0", &other);
    run.assert_code(1);
    assert!(
        run.stderr.to_lowercase().contains("certificate"),
        "{}",
        run.describe()
    );
    assert!(!config.exists());
    // The collector's own certificate, pinned: registration and node calls work.
    let (config, run) = register("n1", &cert);
    run.assert_code(0);
    Tenet::new(["--config".as_ref(), config.as_os_str()])
        .args(["pushasset", "--root"])
        .arg(dir.path())
        .run()
        .assert_code(0);
    Tenet::new(["--config".as_ref(), config.as_os_str()])
        .args(["compliance", "show", "status"])
        .run()
        .assert_code(0);
    drop(server);
    // Pinned, but for another name than the one connected to: refused.
    let db2 = dir.path().join("c2.db");
    let token2 = admin_token(&db2);
    let server = CollectorProcess::start_tls(&db2, &wrong_name, &wrong_key);
    let config = dir.path().join("n2/node.toml");
    let run = Tenet::new(["--config".as_ref(), config.as_os_str()])
        .args(["register", "--collector", &server.url, "--name", "n2"])
        .arg("--ca-file")
        .arg(&wrong_name)
        .env("TENET_ADMIN_TOKEN", &token2)
        .run();
    run.assert_code(1);
    assert!(
        run.stderr.to_lowercase().contains("name"),
        "{}",
        run.describe()
    );
}

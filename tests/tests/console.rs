//! End-to-end tests of the web console (issue 15): a real headless Chromium (Debian's
//! `chromium`, driven by `chromium-driver`) against the real `tenet-collector serve` on
//! 127.0.0.1, holding a fleet: the OpenSVC node export and a small policy imported, one real
//! `tenet` node (registered, facts pushed, checked against a root whose /etc/motd drifted, its
//! daemon running for queued actions) and nodes whose results were posted through the API
//! (ok, nok, n/a, never reported). Screenshots of each page go to `target/screenshots/`
//! (docs/console.md).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tenet_tests::browser::Browser;
use tenet_tests::collector::{Api, CollectorProcess, admin_token, collector_cli, import};
use tenet_tests::{Tenet, TestRoot, node_export, spd_fixtures, tempdir, write};

/// One browser at a time: two Chromiums on a 2-core machine only slow each other down.
static BROWSER: Mutex<()> = Mutex::new(());

const POLICY: &str = r#"
[[ruleset]]
name = "console.motd"
[[ruleset.variable]]
name = "motd"
class = "file"
value = { path = "/etc/motd", fmt = "welcome to the fleet\n" }

[[moduleset]]
name = "console"
rulesets = ["console.motd"]
modules = [{ name = "console.motd" }]
"#;

/// The fleet of a test.
struct Fleet {
    dir: tempfile::TempDir,
    server: CollectorProcess,
    admin_token: String,
    viewer_token: String,
    admin: Api,
    /// The real node.
    node_config: PathBuf,
    node_var: PathBuf,
    root: TestRoot,
    listener_port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A module result posted for a node through the API.
fn module(name: &str, status: &str, rules: Value, log: &str) -> Value {
    json!({"module": name, "moduleset": name, "kind": "auto", "status": status,
           "actions": [{"action": "check", "exit_code": match status { "ok" => 0, "nok" => 1, _ => 2 },
                        "log": log, "duration_ms": 3}],
           "rules": rules, "duration_ms": 3})
}

/// Thirty days of daily aggregates for the nodes registered so far, as the retention
/// roll-up would have left them (the runs of those days are not needed for the trend): some
/// days with a node nok, so the chart has a shape. Written by another connection while the
/// collector runs, as `tenet-collector` commands do.
fn seed_history(db: &std::path::Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let ids: Vec<String> = c
        .prepare("SELECT id FROM nodes ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let today = time_today();
    for back in 1..=30i64 {
        let day = day_text(today - back);
        for (i, id) in ids.iter().enumerate() {
            let nok = i64::from((back * 31 + i as i64 * 17) % 7 < 2);
            c.execute(
                "INSERT INTO node_daily (node_id, service, day, runs, ok, nok, na) VALUES (?1, '', ?2, 4, ?3, ?4, 0)",
                rusqlite::params![id, day, 2 - nok, nok],
            )
            .unwrap();
        }
    }
}

/// Days since the epoch, today (UTC).
fn time_today() -> i64 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400) as i64
}

/// `YYYY-MM-DD` of a day counted from the epoch.
fn day_text(days: i64) -> String {
    // Civil date from days (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempdir();
        let db = dir.path().join("collector.db");
        import(&db, &node_export());
        write(&dir.path().join("policy/console.toml"), POLICY);
        import(&db, &dir.path().join("policy"));
        let admin_token = admin_token(&db);
        let (code, out, err) = collector_cli(&[
            "token",
            "create",
            "--viewer",
            "--name",
            "auditor",
            "--db",
            db.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "token create --viewer: {err}");
        let viewer_token = out.trim().to_string();
        assert!(viewer_token.starts_with("tenet_viewer_"));
        let server = CollectorProcess::start(&db);
        let admin = server.client().admin(&admin_token);

        // Nodes reporting through the API: ok, nok (with a rule's diff), n/a, never reported.
        let nodes = [
            ("db01", "Linux", Some("ok")),
            ("db02", "Linux", Some("nok")),
            ("db03", "SunOS", Some("n/a")),
            ("db04", "Linux", None),
        ];
        for (i, (name, os, state)) in nodes.iter().enumerate() {
            let reg = admin
                .post(
                    "/api/v1/nodes",
                    &json!({"name": name, "team_responsible": "SPD"}),
                )
                .expect(201)
                .json();
            let node = server.client().node(
                reg["node_id"].as_str().unwrap(),
                reg["secret"].as_str().unwrap(),
            );
            let Some(state) = state else { continue };
            node.put(
                &format!("/api/v1/nodes/{name}/facts"),
                &json!({"facts": {"node": {"nodename": name, "os_name": os, "team_responsible": "SPD"},
                                   "packages": [], "tags": [], "service": null}}),
            )
            .expect(204);
            let kernel = match *state {
                "nok" => module(
                    "spdc.kernel",
                    "nok",
                    json!([{"variable": "spdc.kernel.sysctl", "class": "sysctl", "status": "nok",
                            "message": "vm.swappiness: 60, expected 10"}]),
                    "spdc.kernel.sysctl: vm.swappiness: 60, expected 10\n",
                ),
                s => module(
                    "spdc.kernel",
                    s,
                    json!([{"variable": "spdc.kernel.sysctl", "class": "sysctl", "status": s,
                            "message": "fine"}]),
                    "spdc.kernel.sysctl: fine\n",
                ),
            };
            let network = module(
                "spdc.network",
                if *state == "n/a" { "n/a" } else { "ok" },
                json!([]),
                "",
            );
            let (ok, nok, na) = match *state {
                "ok" => (2, 0, 0),
                "nok" => (1, 1, 0),
                _ => (0, 0, 2),
            };
            node.post(
                &format!("/api/v1/nodes/{name}/results"),
                &json!({"run_id": format!("run-{i}"), "agent_version": "test", "action": "check",
                        "policy_hash": "h", "modules": [kernel, network],
                        "summary": {"ok": ok, "nok": nok, "na": na}, "duration_ms": 6}),
            )
            .expect(201);
            if *name == "db01" {
                node.put(
                    "/api/v1/nodes/db01/releases/2026.11",
                    &json!({"version": "2026.11", "state": "adding", "operation": "add",
                            "step": "push", "percent": 42, "message": "pushing images",
                            "last_error": null, "updated_at": "2026-11-22 10:00:00"}),
                )
                .expect(204);
            }
        }

        seed_history(&db);

        // The real node: registered, facts pushed, the console moduleset attached, checked
        // against a root whose /etc/motd drifted.
        let listener_port = free_port();
        let node_var = dir.path().join("web01/var");
        let node_config = dir.path().join("web01/node.toml");
        write(
            &node_config,
            format!(
                "var_dir = \"{}\"\nlistener_addr = \"127.0.0.1\"\nlistener_port = {listener_port}\n\n[compliance]\nschedule = \"@0\"\n[pushasset]\nschedule = \"@0\"\n[dequeue_actions]\nschedule = \"@0\"\n",
                node_var.display()
            ),
        );
        let root = TestRoot::builder().build();
        write(&root.path().join("etc/motd"), "drifted\n");
        let fleet = Fleet {
            dir,
            server,
            admin_token,
            viewer_token,
            admin,
            node_config,
            node_var,
            root,
            listener_port,
        };
        fleet
            .tenet([
                "register",
                "--collector",
                &fleet.server.url.clone(),
                "--name",
                "web01",
                "--insecure-http",
            ])
            .env("TENET_ADMIN_TOKEN", &fleet.admin_token)
            .run()
            .assert_code(0);
        fleet
            .tenet(["pushasset", "--root"])
            .arg(fleet.root.path())
            .run()
            .assert_code(0);
        fleet
            .admin
            .post("/api/v1/nodes/web01/modulesets/console", &json!({}))
            .expect(200);
        let check = fleet
            .tenet(["compliance", "check"])
            .root(fleet.root.path())
            .var_dir(&fleet.node_var)
            .format_json()
            .run();
        check.assert_code(1);
        fleet
    }

    fn tenet<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(&self, args: I) -> Tenet {
        Tenet::new(["--config".as_ref(), self.node_config.as_os_str()])
            .args(args)
            .env("TENET_NODENAME", "web01")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url)
    }

    /// Starts the real node's daemon, waiting until its listener accepts.
    fn start_daemon(&self) -> Child {
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).unwrap();
        let child = self
            .tenet(["daemon", "--root"])
            .arg(self.root.path())
            .env("TENET_LOG", "info")
            .command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start tenet daemon");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.listener_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the daemon did not listen:\n{}",
                std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// Signs in with the browser.
    fn sign_in(&self, b: &Browser, token: &str) {
        b.goto(&self.url("/ui/"));
        assert_eq!(
            b.path(),
            "/ui/login",
            "not signed in: the console sends to the sign-in page"
        );
        b.fill("#token", token);
        b.click("form[action='/ui/login'] button[type=submit]");
        b.wait_until(10, "the fleet page", |b| b.path() == "/ui/");
    }
}

/// An `application/x-www-form-urlencoded` body.
fn form_body(fields: &[(&str, &str)]) -> String {
    let enc = |t: &str| {
        t.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A session opened over plain HTTP (no browser): its cookie and CSRF token.
struct Direct {
    http: reqwest::blocking::Client,
    base: String,
    cookie: String,
    csrf: String,
}

impl Direct {
    fn sign_in(fleet: &Fleet, token: &str) -> Direct {
        let http = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let resp = http
            .post(fleet.url("/ui/login"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form_body(&[("token", token)]))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 303);
        let cookie = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("a session cookie")
            .to_string();
        let page = http
            .get(fleet.url("/ui/"))
            .header("Cookie", &cookie)
            .send()
            .unwrap()
            .text()
            .unwrap();
        let csrf = page
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a CSRF field in the page")
            .to_string();
        assert!(!page.contains(token), "the token is not in the page");
        Direct {
            http,
            base: fleet.server.url.clone(),
            cookie,
            csrf,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }

    /// A form post; `csrf` false leaves the token out.
    fn post(&self, path: &str, fields: &[(&str, &str)], csrf: bool) -> (u16, String) {
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        if csrf {
            form.push(("csrf", &self.csrf));
        }
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form_body(&form))
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }
}

/// Asserts two texts are the same bytes, showing where they part (not the whole texts).
fn same_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let around = |t: &[u8]| {
        String::from_utf8_lossy(&t[at.saturating_sub(40)..(at + 40).min(t.len())]).into_owned()
    };
    panic!(
        "{what}: {} bytes, expected {}; they differ at byte {at}:\n got: {:?}\nwant: {:?}",
        got.len(),
        want.len(),
        around(got),
        around(want)
    );
}

/// The fleet counts as the API gives them: (nodes, ok, nok, n/a nodes; module ok, nok, n/a).
fn api_counts(admin: &Api) -> BTreeMap<&'static str, u64> {
    let nodes = admin.get("/api/v1/nodes").expect(200).json();
    let mut c: BTreeMap<&'static str, u64> = BTreeMap::new();
    for n in nodes.as_array().unwrap() {
        let s = &n["compliance"];
        let (ok, nok, na) = (
            s["ok"].as_u64().unwrap(),
            s["nok"].as_u64().unwrap(),
            s["na"].as_u64().unwrap(),
        );
        *c.entry("nodes-total").or_default() += 1;
        let state = if nok > 0 {
            "nodes-nok"
        } else if ok > 0 {
            "nodes-ok"
        } else {
            "nodes-na"
        };
        *c.entry(state).or_default() += 1;
        *c.entry("modules-ok").or_default() += ok;
        *c.entry("modules-nok").or_default() += nok;
        *c.entry("modules-na").or_default() += na;
    }
    c
}

fn page_counts(b: &Browser) -> BTreeMap<&'static str, u64> {
    [
        "nodes-total",
        "nodes-ok",
        "nodes-nok",
        "nodes-na",
        "modules-ok",
        "modules-nok",
        "modules-na",
    ]
    .into_iter()
    .map(|id| {
        let v = b.text(&format!("#{id}")).trim().parse().unwrap();
        (id, v)
    })
    .filter(|(_, v)| *v > 0)
    .collect()
}

#[test]
fn an_admin_signs_in_reads_the_fleet_fills_the_form_runs_an_action_and_signs_out() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let fleet = Fleet::new();
    let mut daemon = fleet.start_daemon();
    let b = Browser::start();

    // Sign-in page, then the fleet.
    b.goto(&fleet.url("/ui/"));
    b.screenshot("login");
    fleet.sign_in(&b, &fleet.admin_token);
    let cookies = b.run(b.client.get_all_cookies()).unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name() == "tenet_session")
        .expect("the session cookie");
    assert_eq!(session.http_only(), Some(true), "HttpOnly");
    assert_eq!(
        format!("{:?}", session.same_site()),
        "Some(Strict)",
        "SameSite=Strict"
    );
    assert_eq!(session.path(), Some("/ui"));
    let source = b.run(b.client.source()).unwrap();
    assert!(!source.contains(&fleet.admin_token), "no token in a page");
    assert!(!b.path().contains("token"), "no token in a URL");
    assert_eq!(
        b.js("return document.cookie"),
        json!(""),
        "scripts cannot read the session cookie"
    );

    // The fleet counts are the API's.
    let expected = api_counts(&fleet.admin);
    assert_eq!(page_counts(&b), expected);
    assert_eq!(expected["nodes-total"], 5);
    assert_eq!(expected["nodes-nok"], 2, "db02 and web01");
    // The trend is the API's compliance per day.
    let daily = fleet
        .admin
        .get("/api/v1/compliance/daily?days=30")
        .expect(200)
        .json();
    let daily = daily.as_array().unwrap();
    assert_eq!(daily.len(), 30, "thirty days of history");
    let rows = b.js(
        "return Array.from(document.querySelectorAll('#trend-table tbody tr')).map(r => Array.from(r.cells).map(c => c.textContent))",
    );
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), daily.len());
    for (row, day) in rows.iter().zip(daily) {
        assert_eq!(row[0], day["day"]);
        assert_eq!(row[1].as_str().unwrap(), day["subjects"].to_string());
        assert_eq!(row[2].as_str().unwrap(), day["compliant"].to_string());
    }
    let points = b.js("return document.querySelectorAll('#trend-chart circle.point').length");
    assert_eq!(points, json!(30));
    b.screenshot("fleet");

    // The filter narrows every panel.
    b.fill("#q", "status:nok");
    b.click("form.filter button[type=submit]");
    b.wait_until(10, "the filtered page", |b| {
        b.path().contains("status%3Anok")
    });
    assert_eq!(b.text("#nodes-total"), "2");
    assert_eq!(b.text("#nodes-ok"), "0");
    let worst = b.text("#worst");
    assert!(
        worst.contains("spdc.kernel") && worst.contains("console.motd"),
        "{worst}"
    );
    let listed = b.text("#nodes tbody");
    assert!(listed.contains("web01") && listed.contains("db02") && !listed.contains("db01"));
    b.fill("#q", "os_name=SunOS");
    b.click("form.filter button[type=submit]");
    b.wait_until(10, "the fact filter", |b| b.path().contains("SunOS"));
    assert_eq!(b.text("#nodes-total"), "1");
    assert_eq!(b.text("#nodes-na"), "1", "db03");
    assert!(
        b.text("section[aria-labelledby='worst-h']")
            .contains("No module is nok")
    );
    b.screenshot("fleet-filtered");
    b.fill("#q", "colour:blue");
    b.click("form.filter button[type=submit]");
    assert!(b.text("#q-error").contains("unknown filter"));

    // A nok node, and its rule's diff.
    b.goto(&fleet.url("/ui/?q=status%3Anok"));
    b.click("#nodes a[href='/ui/nodes/web01']");
    b.wait_until(10, "the node page", |b| b.path() == "/ui/nodes/web01");
    let diff = b.text("tr.rule[data-variable='motd'] pre.diff");
    assert!(
        diff.contains("-drifted") && diff.contains("+welcome to the fleet"),
        "the rule's diff: {diff}"
    );
    let status = fleet
        .admin
        .get("/api/v1/nodes/web01/status")
        .expect(200)
        .json();
    let rule = &status["modules"][0]["rules"][0];
    assert_eq!(rule["variable"], "motd");
    let message = b.text("tr.rule[data-variable='motd'] p.message");
    assert_eq!(message, rule["message"].as_str().unwrap());
    let applies = b.text("#modulesets");
    assert!(
        applies.contains("console") && applies.contains("attached by admin:admin"),
        "{applies}"
    );
    assert!(b.text("#rulesets").contains("attached via its moduleset"));
    assert!(
        b.has("#timeline rect.cell.nok"),
        "the run history shows the nok run"
    );
    assert_eq!(b.text("#facts dd:nth-of-type(1)"), "web01");
    b.screenshot("node");

    // The module across the fleet, its rules and their edits.
    b.goto(&fleet.url("/ui/modules/spdc.kernel"));
    assert!(b.text("#module-counts").contains("1 nok"));
    assert!(b.text("#nok-nodes").contains("db02"));
    assert!(
        b.text("#nok-nodes")
            .contains("vm.swappiness: 60, expected 10")
    );
    b.screenshot("module");
    b.goto(&fleet.url("/ui/rulesets/console.motd"));
    assert!(b.text("table.variables").contains("/etc/motd"));
    b.screenshot("ruleset");

    // The spd-service form: a wrong input shows its message next to the field, then the same
    // bytes as the API.
    let spd = spd_fixtures();
    let inputs: serde_json::Map<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(spd.join("service-form.inputs.json")).unwrap(),
    )
    .unwrap();
    let expected_conf = std::fs::read(spd.join("service-form.expected.conf")).unwrap();
    fleet
        .admin
        .post("/api/v1/forms/spd-service", &json!({ "inputs": inputs }))
        .expect(201);
    let by_api = fleet
        .admin
        .get("/api/v1/services/spdsvc01/config")
        .expect(200);
    same_bytes(
        "the API's configuration",
        by_api.body.as_bytes(),
        &expected_conf,
    );

    b.goto(&fleet.url("/ui/forms"));
    b.click("#forms a[href='/ui/forms/spd-service']");
    b.wait_until(10, "the form", |b| b.path() == "/ui/forms/spd-service");
    b.screenshot("form");
    for (k, v) in &inputs {
        let text = v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        b.fill(&format!("#in-{k}"), &text);
    }
    b.fill("#in-npods", "30");
    b.click("#submit-button");
    b.wait_until(10, "the refusal", |b| b.has("#form-errors"));
    let err = b.text("#err-npods");
    assert!(err.contains("multiple of the number of nodes"), "{err}");
    assert_eq!(b.attr("#in-npods", "aria-invalid").as_deref(), Some("true"));
    assert!(!b.has("#err-svcname"), "only the wrong input has a message");
    b.screenshot("form-invalid");
    b.fill("#in-npods", "32");
    b.fill("#in-myrootpwd", "secret");
    b.click("#preview-button");
    b.wait_until(10, "the preview", |b| b.has("#preview"));
    let preview = b.js("return document.getElementById('preview').textContent");
    same_bytes(
        "the preview",
        preview.as_str().unwrap().as_bytes(),
        &expected_conf,
    );
    b.screenshot("form-preview");
    b.fill("#in-myrootpwd", "secret");
    b.click("#submit-button");
    b.wait_until(10, "the stored notice", |b| b.has("#stored"));
    assert_eq!(b.text("#stored-service"), "spdsvc01");
    assert_eq!(
        b.text("#stored-sha"),
        hex::encode(Sha256::digest(&expected_conf))
    );
    let by_console = fleet
        .admin
        .get("/api/v1/services/spdsvc01/config")
        .expect(200);
    same_bytes(
        "the configuration stored by the console",
        by_console.body.as_bytes(),
        by_api.body.as_bytes(),
    );
    let audit = fleet.admin.get("/api/v1/audit?limit=5").expect(200).json();
    assert!(audit.to_string().contains("service.config"), "{audit}");

    // An action: queued in the browser, followed without a reload until it finishes.
    b.goto(&fleet.url("/ui/actions"));
    b.fill("#command", "compliance check");
    b.fill("#node", "web01");
    b.click("#queue-button");
    b.wait_until(10, "the action page", |b| {
        b.path().starts_with("/ui/actions/")
    });
    let id: i64 = b.path().rsplit('/').next().unwrap().parse().unwrap();
    b.goto(&fleet.url("/ui/actions"));
    b.js("window.__noReload = 'still here'; return null");
    let cell = format!("td[data-action-id='{id}']");
    b.wait_until(90, "the action to finish", |b| {
        b.attr(&cell, "data-status").as_deref() == Some("T")
    });
    assert_eq!(
        b.js("return window.__noReload"),
        json!("still here"),
        "the status changed without a reload"
    );
    assert_eq!(
        b.text(&format!("#ret-{id}")),
        "1",
        "the check found the drift"
    );
    b.screenshot("actions");
    b.goto(&fleet.url(&format!("/ui/actions/{id}")));
    assert!(b.text("#stdout").contains("console.motd"), "its output");
    b.screenshot("action");

    // Cancel: an action for a node without a daemon stays queued until cancelled.
    b.goto(&fleet.url("/ui/actions"));
    b.fill("#command", "pushasset");
    b.fill("#node", "db01");
    b.click("#queue-button");
    b.wait_until(10, "the action page", |b| b.has("#action-status"));
    let other: i64 = b.path().rsplit('/').next().unwrap().parse().unwrap();
    b.click(&format!("#cancel-{other} button"));
    b.wait_until(10, "the cancellation", |b| {
        b.attr("#action-status", "data-status").as_deref() == Some("C")
    });
    let api_action = fleet
        .admin
        .get(&format!("/api/v1/actions/{other}"))
        .expect(200)
        .json();
    assert_eq!(api_action["status"], "C");

    // Releases, policy, audit.
    b.goto(&fleet.url("/ui/releases"));
    let releases = b.text("table.releases");
    assert!(releases.contains("db01") && releases.contains("push") && releases.contains("42%"));
    b.screenshot("releases");
    b.goto(&fleet.url("/ui/policy"));
    b.screenshot("policy");
    b.goto(&fleet.url("/ui/audit"));
    b.screenshot("audit");

    // Sign out: the console refuses the browser, and the old cookie too.
    let old = format!("tenet_session={}", session.value());
    b.click("#logout");
    b.wait_until(10, "the sign-in page", |b| b.path() == "/ui/login");
    b.goto(&fleet.url("/ui/"));
    assert_eq!(b.path(), "/ui/login", "signed out: refused");
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let replay = http
        .get(fleet.url("/ui/"))
        .header("Cookie", &old)
        .send()
        .unwrap();
    assert_eq!(replay.status().as_u16(), 303, "the old session is gone");
    let replay = http
        .post(fleet.url("/ui/actions"))
        .header("Cookie", &old)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form_body(&[("command", "pushasset"), ("node", "web01")]))
        .send()
        .unwrap();
    assert_eq!(replay.status().as_u16(), 401);

    b.close();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = daemon.wait();
}

#[test]
fn a_viewer_sees_everything_and_every_change_is_refused_also_when_sent_directly() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let fleet = Fleet::new();
    let b = Browser::start();
    fleet.sign_in(&b, &fleet.viewer_token);
    assert!(b.text("#who").contains("auditor (viewer)"));
    assert_eq!(
        page_counts(&b),
        api_counts(&fleet.admin),
        "a viewer reads the fleet"
    );
    b.screenshot("viewer-fleet");
    for page in [
        "/ui/nodes/web01",
        "/ui/modules/console.motd",
        "/ui/rulesets/console.motd",
        "/ui/forms/spd-service",
        "/ui/actions",
        "/ui/releases",
        "/ui/audit",
    ] {
        b.goto(&fleet.url(page));
        assert!(b.has("main h1"), "{page} reads");
        assert!(!b.text("main").contains("Read-only session"), "{page}");
    }
    // The browser shows the forms; the collector refuses what they send.
    b.goto(&fleet.url("/ui/actions"));
    b.fill("#node", "web01");
    b.click("#queue-button");
    b.wait_until(10, "the refusal", |b| b.has("#error-message"));
    assert!(b.text("h1").contains("Read-only session"));
    b.screenshot("viewer-refused");
    b.close();

    // Sent directly, with the session's own CSRF token: every state-changing request is 403.
    let viewer = Direct::sign_in(&fleet, &fleet.viewer_token);
    let queued = fleet
        .admin
        .post(
            "/api/v1/actions",
            &json!({"node": "db01", "command": "pushasset"}),
        )
        .expect(201)
        .json();
    let id = queued["id"].as_i64().unwrap();
    for (path, fields) in [
        (
            "/ui/actions",
            vec![("command", "pushasset"), ("node", "web01")],
        ),
        (
            "/ui/actions",
            vec![("command", "pushasset"), ("filter", "status:nok")],
        ),
        (&format!("/ui/actions/{id}/cancel") as &str, vec![]),
        (
            "/ui/forms/spd-service",
            vec![("npods", "32"), ("svcname", "viewer01")],
        ),
    ] {
        let (status, body) = viewer.post(path, &fields, true);
        assert_eq!(status, 403, "POST {path}: {body}");
        assert!(body.contains("viewer token"), "{body}");
    }
    // The preview changes nothing: a viewer may ask for it.
    let (status, _) = viewer.post(
        "/ui/forms/spd-service/preview",
        &[("npods", "32"), ("svcname", "viewer01")],
        true,
    );
    assert_ne!(status, 403);
    assert_eq!(
        fleet
            .admin
            .get(&format!("/api/v1/actions/{id}"))
            .expect(200)
            .json()["status"],
        queued["status"],
        "not cancelled"
    );
    let actions = fleet.admin.get("/api/v1/actions").expect(200).json();
    assert_eq!(
        actions["actions"].as_array().unwrap().len(),
        1,
        "nothing queued"
    );
    let config = fleet.admin.get("/api/v1/services/viewer01/config");
    assert_eq!(config.status, 404, "nothing stored");

    // The API with the viewer token: reads pass, every other method is 403.
    let api = fleet.server.client().admin(&fleet.viewer_token);
    api.get("/api/v1/nodes").expect(200);
    api.get("/api/v1/rulesets/console.motd").expect(200);
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/actions",
            json!({"node": "db01", "command": "pushasset"}),
        ),
        (
            "POST",
            &format!("/api/v1/actions/{id}/cancel") as &str,
            json!({}),
        ),
        ("POST", "/api/v1/nodes", json!({"name": "intruder"})),
        ("PUT", "/api/v1/nodes/db01", json!({"services": []})),
        ("DELETE", "/api/v1/nodes/db01", json!({})),
        ("POST", "/api/v1/forms/spd-service", json!({"inputs": {}})),
        (
            "PUT",
            "/api/v1/rulesets/console.motd/variables/x",
            json!({"class": "raw", "value": 1}),
        ),
        ("POST", "/api/v1/import", json!({})),
        ("POST", "/api/v1/nodes/db01/modulesets/console", json!({})),
    ] {
        let a = api.call(method, path, Some(serde_json::to_vec(&body).unwrap()));
        assert_eq!(a.status, 403, "{method} {path}: {}", a.body);
        assert!(a.body.contains("read-only"), "{}", a.body);
    }
    assert_eq!(
        fleet
            .admin
            .get("/api/v1/nodes")
            .expect(200)
            .json()
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn a_forged_post_without_the_csrf_token_is_refused() {
    let fleet = Fleet::new();
    let admin = Direct::sign_in(&fleet, &fleet.admin_token);
    let fields = [("command", "pushasset"), ("node", "db01")];
    let (status, body) = admin.post("/ui/actions", &fields, false);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("CSRF"));
    let forged = admin
        .http
        .post(fleet.url("/ui/actions"))
        .header("Cookie", &admin.cookie)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("command", "pushasset"),
            ("node", "db01"),
            ("csrf", "guessed"),
        ]))
        .send()
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    // Another site's page posting with the right token (a leaked one) is refused too.
    let cross = admin
        .http
        .post(fleet.url("/ui/actions"))
        .header("Cookie", &admin.cookie)
        .header("Origin", "https://evil.example")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("command", "pushasset"),
            ("node", "db01"),
            ("csrf", admin.csrf.as_str()),
        ]))
        .send()
        .unwrap();
    assert_eq!(cross.status().as_u16(), 403);
    let actions = fleet.admin.get("/api/v1/actions").expect(200).json();
    assert!(
        actions["actions"].as_array().unwrap().is_empty(),
        "nothing queued"
    );
    // The same request with the token goes through.
    let (status, _) = admin.post("/ui/actions", &fields, true);
    assert_eq!(status, 303);
    let actions = fleet.admin.get("/api/v1/actions").expect(200).json();
    assert_eq!(actions["actions"].as_array().unwrap().len(), 1);
    // Sign-out needs the token as well.
    let (status, _) = admin.post("/ui/logout", &[], false);
    assert_eq!(status, 403);
    assert_eq!(admin.get("/ui/").0, 200, "still signed in");
    let (status, _) = admin.post("/ui/logout", &[], true);
    assert_eq!(status, 303);
    assert_eq!(admin.get("/ui/").0, 303, "signed out");
}

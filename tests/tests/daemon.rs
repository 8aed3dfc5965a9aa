//! End-to-end tests of the daemon (issue 4): the real `tenet-collector serve` and the real
//! `tenet daemon` on 127.0.0.1 (the listener on a free port), collector-queued actions run one
//! at a time through the runner, `kill -9` of the daemon mid-action, SIGTERM with a grace
//! period, a missed window run late, and `tenet schedule explain`.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tenet_tests::collector::{Api, CollectorProcess, admin_token, import};
use tenet_tests::{Tenet, TestRoot, require_root, script, tempdir, write};

const POLICY: &str = r#"
[[moduleset]]
name = "jobs"
modules = [{ name = "a" }, { name = "b" }, { name = "c" }, { name = "hang" }]
"#;

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for `f` to give `Some`, polling every 50 ms, at most `secs`.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A collector with the job policy, and a registered node whose daemon can be started.
struct Fleet {
    dir: tempfile::TempDir,
    server: CollectorProcess,
    admin: Api,
    node_id: String,
    config: PathBuf,
    var: PathBuf,
    modules: PathBuf,
    log: PathBuf,
    root: TestRoot,
    port: u16,
}

impl Fleet {
    /// `extra` is appended to the node configuration.
    fn new(extra: &str) -> Fleet {
        let dir = tempdir();
        let db = dir.path().join("collector.db");
        write(&dir.path().join("policy/jobs.toml"), POLICY);
        import(&db, &dir.path().join("policy"));
        let token = admin_token(&db);
        let server = CollectorProcess::start(&db);
        let admin = server.client().admin(&token);

        // Script modules: each logs its start and end, sleeps, and says who it is.
        let modules = dir.path().join("modules");
        std::fs::create_dir_all(&modules).unwrap();
        tenet_tests::chmod(&modules, 0o755);
        let log = dir.path().join("runs.log");
        for (file, name, secs) in [
            ("10-a", "a", 1),
            ("20-b", "b", 1),
            ("30-c", "c", 1),
            ("40-hang", "hang", 60),
        ] {
            script(
                &modules,
                file,
                &format!(
                    "#!/bin/sh\necho \"start {name} $(date +%s.%N)\" >> '{log}'\nsleep {secs}\necho \"end {name} $(date +%s.%N)\" >> '{log}'\necho \"module {name} $1\"\nexit 0\n",
                    log = log.display()
                ),
                0o755,
            );
        }

        let port = free_port();
        let var = dir.path().join("var");
        let config = dir.path().join("node.toml");
        write(
            &config,
            format!(
                "var_dir = \"{}\"\nlistener_addr = \"127.0.0.1\"\nlistener_port = {port}\n\n[compliance]\nschedule = \"@0\"\n[pushasset]\nschedule = \"@0\"\n[dequeue_actions]\nschedule = \"@0\"\n{extra}",
                var.display()
            ),
        );
        let root = TestRoot::builder().build();
        let mut fleet = Fleet {
            dir,
            server,
            admin,
            node_id: String::new(),
            config,
            var,
            modules,
            log,
            root,
            port,
        };
        fleet
            .tenet([
                "register",
                "--collector",
                &fleet.server.url.clone(),
                "--name",
                "n1",
            ])
            .env("TENET_ADMIN_TOKEN", &token)
            .run()
            .assert_code(0);
        let cfg: toml::Table = std::fs::read_to_string(&fleet.config)
            .unwrap()
            .parse()
            .unwrap();
        fleet.node_id = cfg["node_id"].as_str().unwrap().to_string();
        // The facts push tells the collector the listener port and where the node is.
        fleet
            .tenet(["pushasset", "--root"])
            .arg(fleet.root.path())
            .run()
            .assert_code(0);
        fleet
            .admin
            .post(
                &format!("/api/v1/nodes/{}/modulesets/jobs", fleet.node_id),
                &json!({}),
            )
            .expect(200);
        fleet
    }

    fn tenet<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(&self, args: I) -> Tenet {
        Tenet::new(["--config".as_ref(), self.config.as_os_str()])
            .args(args)
            .env("TENET_NODENAME", "n1")
    }

    fn daemon_log(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// Starts `tenet daemon`, waiting until it wrote its state.
    fn start_daemon(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.daemon_log())
            .unwrap();
        let child = self
            .tenet(["daemon", "--root"])
            .arg(self.root.path())
            .env("TENET_MODULES_DIR", &self.modules)
            .env("TENET_LOG", "info")
            .command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start tenet daemon");
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.state()
                && s["pid"] == pid
                && s["running"] == true
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not start:\n{}",
                std::fs::read_to_string(self.daemon_log()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // and to listen
        wait_for(10, "the listener", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port))
                .ok()
                .map(|_| ())
        });
        child
    }

    fn state(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.var.join("daemon/tasks.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn queue(&self, command: &str) -> i64 {
        self.admin
            .post(
                "/api/v1/actions",
                &json!({ "node": "n1", "command": command }),
            )
            .expect(201)
            .json()["id"]
            .as_i64()
            .unwrap()
    }

    fn action(&self, id: i64) -> Value {
        self.admin
            .get(&format!("/api/v1/actions/{id}"))
            .expect(200)
            .json()
    }

    fn runs(&self) -> Vec<(String, String, f64)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let p: Vec<&str> = l.split_whitespace().collect();
                (p[0].to_string(), p[1].to_string(), p[2].parse().unwrap())
            })
            .collect()
    }
}

fn stop(child: &mut Child) -> i32 {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Seconds since the epoch of an RFC 3339 UTC time with milliseconds.
fn epoch(rfc3339: &str) -> f64 {
    let ts: jiff_like::Ts = rfc3339.parse().unwrap();
    ts.0
}

mod jiff_like {
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` to seconds since the epoch (UTC), without a date crate.
    pub struct Ts(pub f64);
    impl std::str::FromStr for Ts {
        type Err = String;
        fn from_str(s: &str) -> Result<Ts, String> {
            let s = s.trim_end_matches('Z');
            let (d, t) = s.split_once('T').ok_or("no T")?;
            let d: Vec<i64> = d.split('-').map(|x| x.parse().unwrap()).collect();
            let t: Vec<f64> = t.split(':').map(|x| x.parse().unwrap()).collect();
            let (y, m) = if d[1] <= 2 {
                (d[0] - 1, d[1] + 9)
            } else {
                (d[0], d[1] - 3)
            };
            let era = y.div_euclid(400);
            let yoe = y - era * 400;
            let doy = (153 * m + 2) / 5 + d[2] - 1;
            let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
            let days = era * 146_097 + doe - 719_468;
            Ok(Ts(days as f64 * 86400.0
                + t[0] * 3600.0
                + t[1] * 60.0
                + t[2]))
        }
    }
}

fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn queued_actions_run_in_order_one_at_a_time_and_results_reach_the_collector() {
    if !require_root("queued_actions_run_in_order_one_at_a_time_and_results_reach_the_collector") {
        return; // script modules must be owned by root
    }
    let fleet = Fleet::new("");
    let mut daemon = fleet.start_daemon();

    // Outside the allow-list: refused by the collector, and logged.
    let refused = fleet.admin.post(
        "/api/v1/actions",
        &json!({ "node": "n1", "command": "compliance check --policy /tmp/evil" }),
    );
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("not allowed"), "{}", refused.body);
    let refused = fleet.admin.post(
        "/api/v1/actions",
        &json!({ "node": "n1", "command": "rm -rf /" }),
    );
    assert_eq!(refused.status, 400, "{}", refused.body);
    wait_for(10, "the refusal in the collector log", || {
        fleet.server.log().contains("refused command").then_some(())
    });

    // A malformed notification: rejected and logged by the daemon, nothing dequeued.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", fleet.port)).unwrap();
        s.write_all(b"dequeue_actions; rm -rf /").unwrap();
    }
    wait_for(10, "the rejection in the daemon log", || {
        std::fs::read_to_string(fleet.daemon_log())
            .unwrap()
            .contains("rejected a malformed notification")
            .then_some(())
    });

    // Three actions, queued at once: the collector notifies the daemon.
    let ids: Vec<i64> = ["a", "b", "c"]
        .iter()
        .map(|m| fleet.queue(&format!("compliance check --module {m}")))
        .collect();
    // Results visible through the API within 2 s of each task's end.
    let mut seen_done: Vec<Option<f64>> = vec![None; ids.len()];
    wait_for(90, "three terminated actions", || {
        for (i, id) in ids.iter().enumerate() {
            if seen_done[i].is_none() && fleet.action(*id)["status"] == "T" {
                seen_done[i] = Some(now_epoch());
            }
        }
        seen_done.iter().all(Option::is_some).then_some(())
    });
    let state = fleet.state().unwrap();
    for (i, id) in ids.iter().enumerate() {
        let a = fleet.action(*id);
        assert_eq!(a["ret"], 0, "{a}");
        assert!(a["stdout"].as_str().unwrap().contains("module"), "{a}");
        assert!(a["acked_at"].is_string() && a["sent_at"].is_string(), "{a}");
        let task = state["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["action_id"] == *id)
            .unwrap_or_else(|| panic!("no task for action {id}: {state}"));
        assert_eq!(task["origin"], "action");
        assert_eq!(task["state"], "done");
        assert_eq!(task["exit_code"], 0);
        let ended = epoch(task["ended_at"].as_str().unwrap());
        let visible = seen_done[i].unwrap();
        assert!(
            visible - ended < 2.0,
            "action {id}: result visible {:.3} s after the task ended",
            visible - ended
        );
    }

    // In order, one at a time: each module ends before the next starts.
    let runs = fleet.runs();
    let order: Vec<(String, String)> = runs
        .iter()
        .map(|(e, m, _)| (e.clone(), m.clone()))
        .collect();
    let want: Vec<(String, String)> = ["a", "b", "c"]
        .iter()
        .flat_map(|m| {
            [
                ("start".to_string(), m.to_string()),
                ("end".to_string(), m.to_string()),
            ]
        })
        .collect();
    assert_eq!(order, want, "{runs:?}");
    for w in runs.windows(2) {
        assert!(w[0].2 <= w[1].2, "{runs:?}");
    }

    // `tenet tasks` lists them.
    let listed = fleet.tenet(["tasks", "--format", "json"]).run();
    listed.assert_code(0);
    let listed = listed.json();
    assert_eq!(listed["running"], true);
    let names: Vec<&str> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for id in &ids {
        assert!(
            names.contains(&format!("action:{id}").as_str()),
            "{names:?}"
        );
    }
    let text = fleet.tenet(["tasks"]).run();
    text.assert_code(0);
    assert!(text.stdout.contains("daemon: running"), "{}", text.stdout);

    // A task submitted from the command line runs too (origin cli).
    let sub = fleet
        .tenet([
            "tasks",
            "--submit",
            "compliance check --module a",
            "--format",
            "json",
        ])
        .run();
    sub.assert_code(0);
    let tid = sub.json()["id"].as_u64().unwrap();
    wait_for(60, "the cli task", || {
        let s = fleet.state()?;
        let t = s["tasks"]
            .as_array()?
            .iter()
            .find(|t| t["id"] == tid)?
            .clone();
        (t["state"] == "done").then_some(())
    });
    let bad = fleet.tenet(["tasks", "--submit", "rm -rf /"]).run();
    bad.assert_code(2);

    assert_eq!(stop(&mut daemon), 0);
    let s = fleet.state().unwrap();
    assert_eq!(s["running"], false);
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn a_daemon_killed_during_an_action_reports_it_failed_on_restart_and_never_reruns_it() {
    if !require_root(
        "a_daemon_killed_during_an_action_reports_it_failed_on_restart_and_never_reruns_it",
    ) {
        return;
    }
    let fleet = Fleet::new("");
    let mut daemon = fleet.start_daemon();
    let hang = fleet.queue("compliance check --module hang");
    wait_for(30, "the hanging module to start", || {
        fleet
            .runs()
            .iter()
            .any(|(e, m, _)| e == "start" && m == "hang")
            .then_some(())
    });
    assert_eq!(fleet.action(hang)["status"], "R");
    daemon.kill().unwrap(); // SIGKILL
    daemon.wait().unwrap();

    // Another action queued while the daemon is down: notified in vain, still waiting.
    let after = fleet.queue("compliance check --module a");
    let mut daemon = fleet.start_daemon();
    let a = wait_for(30, "the interrupted action's result", || {
        let a = fleet.action(hang);
        (a["status"] == "T").then_some(a)
    });
    assert_ne!(a["ret"], 0, "{a}");
    assert!(a["stderr"].as_str().unwrap().contains("interrupted"), "{a}");
    // The one queued meanwhile runs (dequeued at start-up).
    let b = wait_for(60, "the action queued while the daemon was down", || {
        let b = fleet.action(after);
        (b["status"] == "T").then_some(b)
    });
    assert_eq!(b["ret"], 0, "{b}");
    // Never run twice.
    let hang_starts = fleet
        .runs()
        .iter()
        .filter(|(e, m, _)| e == "start" && m == "hang")
        .count();
    assert_eq!(hang_starts, 1, "{:?}", fleet.runs());
    let journal: Value = serde_json::from_str(
        &std::fs::read_to_string(fleet.var.join("daemon/actions.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        journal["actions"][hang.to_string()]["step"],
        "reported",
        "{journal}"
    );
    assert_eq!(stop(&mut daemon), 0);
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn sigterm_lets_the_running_task_finish_within_the_grace_period() {
    if !require_root("sigterm_lets_the_running_task_finish_within_the_grace_period") {
        return;
    }
    let fleet = Fleet::new("[daemon]\ngrace_period = 30\n");
    let mut daemon = fleet.start_daemon();
    let id = fleet.queue("compliance check --module b");
    let queued_later = fleet.queue("compliance check --module c");
    wait_for(30, "module b to start", || {
        fleet
            .runs()
            .iter()
            .any(|(e, m, _)| e == "start" && m == "b")
            .then_some(())
    });
    assert_eq!(stop(&mut daemon), 0);
    let a = wait_for(10, "b's result", || {
        let a = fleet.action(id);
        (a["status"] == "T").then_some(a)
    });
    assert_eq!(a["ret"], 0, "{a}");
    // c was not started: it waits (acknowledged) for the next start of the daemon.
    assert!(!fleet.runs().iter().any(|(_, m, _)| m == "c"));
    assert_eq!(fleet.action(queued_later)["status"], "R");
    let mut daemon = fleet.start_daemon();
    let c = wait_for(60, "c after the restart", || {
        let c = fleet.action(queued_later);
        (c["status"] == "T").then_some(c)
    });
    assert_eq!(c["ret"], 0, "{c}");
    assert_eq!(stop(&mut daemon), 0);
}

#[test]
#[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
fn a_window_missed_while_the_daemon_was_down_runs_once_at_start_up_late() {
    if !require_root("a_window_missed_while_the_daemon_was_down_runs_once_at_start_up_late") {
        return;
    }
    // A short grace period: the run (which includes the hanging module) is stopped with it.
    let fleet = Fleet::new("[daemon]\ngrace_period = 1\n");
    // compliance_auto once a day; it last ran three days ago.
    let cfg = std::fs::read_to_string(&fleet.config).unwrap().replacen(
        "[compliance]\nschedule = \"@0\"",
        "[compliance]\nschedule = \"@1440\"",
        1,
    );
    std::fs::write(&fleet.config, cfg).unwrap();
    let stamp = fleet.var.join("scheduler/last_comp_check");
    let three_days_ago = now_epoch() - 3.0 * 86400.0;
    write(&stamp, format!("{three_days_ago:.6}\n"));
    let mut daemon = fleet.start_daemon();
    let task = wait_for(60, "the late compliance_auto run", || {
        let s = fleet.state()?;
        let t = s["tasks"]
            .as_array()?
            .iter()
            .find(|t| t["name"] == "compliance_auto")?
            .clone();
        (t["state"] == "running").then_some(t)
    });
    assert_eq!(task["late"], true, "{task}");
    assert_eq!(task["origin"], "schedule", "{task}");
    assert!(task["progress"].is_string(), "{task}");
    let last: f64 = std::fs::read_to_string(&stamp)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(last > three_days_ago + 86400.0, "stamp not updated");
    // SIGTERM: the run outlives the 1 s grace period, so it is stopped; the daemon exits 0.
    assert_eq!(stop(&mut daemon), 0);
    let s = fleet.state().unwrap();
    let runs: Vec<&Value> = s["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == "compliance_auto")
        .collect();
    assert_eq!(runs.len(), 1, "{s}");
    assert_eq!(runs[0]["state"], "failed", "{s}");
    // The next run is planned a day after this one.
    let plan = s["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["task"] == "compliance_auto")
        .unwrap()
        .clone();
    assert!(plan["next_run"].is_string(), "{plan}");
    assert!(plan["last_run"].is_string(), "{plan}");
}

#[test]
fn schedule_explain_answers_in_json_and_names_the_bad_token() {
    let run = Tenet::new([
        "schedule",
        "explain",
        "00:00-06:00@60 mon-fri",
        "--now",
        "2015-02-27 03:00",
        "--last",
        "2015-02-27 02:30",
        "--format",
        "json",
    ])
    .run();
    run.assert_code(0);
    assert_eq!(
        run.json(),
        json!({"allowed": false, "reason": "last run is too soon", "next": "2015-02-27 03:30:00"})
    );
    let run = Tenet::new([
        "schedule",
        "explain",
        "* * * jan-feb%2+1",
        "--now",
        "2015-01-06 10:00",
        "--format",
        "json",
    ])
    .run();
    run.assert_code(0);
    assert_eq!(run.json()["allowed"], true);
    let bad = Tenet::new(["schedule", "explain", "23:00-23:59@61 freday"]).run();
    bad.assert_code(2);
    assert!(bad.stderr.contains("freday"), "{}", bad.stderr);
    let never = Tenet::new(["schedule", "explain", "@0", "--format", "json"]).run();
    never.assert_code(0);
    assert_eq!(never.json()["next"], Value::Null);
}

#[test]
fn the_action_queue_api_offers_again_what_is_not_acknowledged_and_keeps_nodes_apart() {
    let dir = tempdir();
    let db = dir.path().join("collector.db");
    let token = admin_token(&db);
    let server =
        CollectorProcess::start_with_options(&db, &["--ack-timeout", "1", "--notify-timeout", "1"]);
    let admin = server.client().admin(&token);
    let (id1, s1) = admin.register("n1");
    let (id2, s2) = admin.register("n2");
    let n1 = server.client().node(&id1, &s1);
    let n2 = server.client().node(&id2, &s2);
    let queue = |cmd: &str| -> i64 {
        admin
            .post("/api/v1/actions", &json!({"node": "n1", "command": cmd}))
            .expect(201)
            .json()["id"]
            .as_i64()
            .unwrap()
    };
    let a = queue("pushasset");
    let b = queue("compliance fix --moduleset=spdc.node");
    let c = queue("compliance check");
    let got = admin
        .get(&format!("/api/v1/actions/{b}"))
        .expect(200)
        .json();
    assert_eq!(got["command"], "compliance fix --moduleset spdc.node");
    // The node never pushed facts: it cannot be notified; the actions wait (W) with the
    // reason, for the node's poll.
    wait_for(10, "the notification error", || {
        let x = admin
            .get(&format!("/api/v1/actions/{a}"))
            .expect(200)
            .json();
        x["notify_error"].is_string().then_some(())
    });
    assert_eq!(
        admin.get(&format!("/api/v1/actions/{a}")).json()["status"],
        "W"
    );
    // Nodes may not queue, and see only their own actions.
    n1.post(
        "/api/v1/actions",
        &json!({"node": "n1", "command": "pushasset"}),
    )
    .expect(403);
    n2.call(
        "POST",
        &format!("/api/v1/nodes/{id1}/actions/dequeue"),
        None,
    )
    .expect(403);
    let none = n2
        .call(
            "POST",
            &format!("/api/v1/nodes/{id2}/actions/dequeue"),
            None,
        )
        .expect(200)
        .json();
    assert_eq!(none["actions"], json!([]));
    // Cancel one before it is sent.
    admin
        .call("POST", &format!("/api/v1/actions/{c}/cancel"), None)
        .expect(200);
    // Dequeue: a and b are sent (S).
    let sent = n1
        .call(
            "POST",
            &format!("/api/v1/nodes/{id1}/actions/dequeue"),
            None,
        )
        .expect(200)
        .json();
    let ids: Vec<i64> = sent["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![a, b]);
    assert_eq!(
        admin.get(&format!("/api/v1/actions/{a}")).json()["status"],
        "S"
    );
    // Not acknowledged within the ack timeout: offered again.
    let again = n1
        .call(
            "POST",
            &format!("/api/v1/nodes/{id1}/actions/dequeue"),
            None,
        )
        .expect(200)
        .json();
    assert_eq!(again["actions"], json!([]), "offered again too early");
    std::thread::sleep(Duration::from_millis(2100));
    let again = n1
        .call(
            "POST",
            &format!("/api/v1/nodes/{id1}/actions/dequeue"),
            None,
        )
        .expect(200)
        .json();
    assert_eq!(again["actions"].as_array().unwrap().len(), 2, "{again}");
    assert_eq!(
        admin.get(&format!("/api/v1/actions/{a}")).json()["sent_count"],
        2
    );
    // Acknowledge a only: R. Another node cannot acknowledge it.
    let acked = n2
        .post(
            &format!("/api/v1/nodes/{id2}/actions/ack"),
            &json!({"ids": [a]}),
        )
        .expect(200)
        .json();
    assert_eq!(acked["ids"], json!([]));
    let acked = n1
        .post(
            &format!("/api/v1/nodes/{id1}/actions/ack"),
            &json!({"ids": [a]}),
        )
        .expect(200)
        .json();
    assert_eq!(acked["ids"], json!([a]));
    // Running: no cancel any more.
    admin
        .call("POST", &format!("/api/v1/actions/{a}/cancel"), None)
        .expect(409);
    // The result: T, visible; the same result again is fine, another one is not.
    let result = json!({"id": a, "ret": 0, "stdout": "pushed\n", "stderr": ""});
    let done = n1
        .post(&format!("/api/v1/nodes/{id1}/actions/result"), &result)
        .expect(200)
        .json();
    assert_eq!(done["status"], "T");
    n1.post(&format!("/api/v1/nodes/{id1}/actions/result"), &result)
        .expect(200);
    n1.post(
        &format!("/api/v1/nodes/{id1}/actions/result"),
        &json!({"id": a, "ret": 1, "stdout": "", "stderr": "x"}),
    )
    .expect(409);
    n1.post(
        &format!("/api/v1/nodes/{id1}/actions/result"),
        &json!({"id": c, "ret": 0, "stdout": "", "stderr": ""}),
    )
    .expect(409);
    // Listings by status, and the node's own view.
    let list = admin
        .get("/api/v1/actions?node=n1&status=T,C")
        .expect(200)
        .json();
    let st: Vec<(i64, String)> = list["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["id"].as_i64().unwrap(),
                x["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(st, vec![(c, "C".to_string()), (a, "T".to_string())]);
    let own = n1
        .get(&format!("/api/v1/nodes/{id1}/actions"))
        .expect(200)
        .json();
    assert_eq!(own["actions"].as_array().unwrap().len(), 3);
    admin.get("/api/v1/actions?status=X").expect(400);
    // The audit log names who queued and cancelled.
    let audit = admin.get("/api/v1/audit").expect(200).body;
    assert!(
        audit.contains("action.queue") && audit.contains("action.cancel"),
        "{audit}"
    );
}

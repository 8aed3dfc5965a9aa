//! End-to-end tests of releases (issue 7) on real parts, all on 127.0.0.1: three real
//! `docker-registry` instances (a primary and two replicas, deletes enabled), a real rsync
//! daemon and a local directory as file stores, an HTTP server serving squashfs images built
//! by the real `mksquashfs` and signed by the real `openssl`. Results are confirmed
//! independently with `skopeo` and the registries' HTTP API.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tenet_release::testing::{
    BuiltRelease, RegistryProcess, ReleaseRecipe, RsyncDaemon, build_release, filler, signing_key,
};
use tenet_tests::lir::{Faults, FileServer, must};
use tenet_tests::{Run, Tenet, tempdir, write};

/// The parts of a local image repository, and a node configured to use them.
struct Lir {
    dir: tempfile::TempDir,
    registries: Vec<RegistryProcess>,
    rsync: RsyncDaemon,
    server: FileServer,
    store: PathBuf,
    root: PathBuf,
    var: PathBuf,
    config: PathBuf,
}

impl Lir {
    fn new() -> Lir {
        let dir = tempdir();
        let registries: Vec<RegistryProcess> = (0..3)
            .map(|_| RegistryProcess::start().expect("docker-registry starts"))
            .collect();
        let rsync = RsyncDaemon::start().expect("rsync daemon starts");
        let server = FileServer::start();
        let root = dir.path().join("root");
        let var = dir.path().join("var");
        let store = dir.path().join("lir-f");
        std::fs::create_dir_all(&store).unwrap();
        let config = root.join("etc/tenet/node.toml");
        let lir = Lir {
            dir,
            registries,
            rsync,
            server,
            store,
            root,
            var,
            config,
        };
        lir.configure(None);
        lir
    }

    /// Writes the node configuration; `registries` replaces the three running ones.
    fn configure(&self, registries: Option<&str>) {
        let regs = registries.map(str::to_string).unwrap_or_else(|| {
            let items: Vec<String> = self
                .registries
                .iter()
                .map(|r| {
                    format!(
                        "{{ url = \"{}\", gc = {} }}",
                        r.url(),
                        serde_json::to_string(&r.gc_command()).unwrap()
                    )
                })
                .collect();
            format!("[{}]", items.join(", "))
        });
        // The key is inside the root, named as the node sees it.
        let key = self.root.join("etc/tenet/release-signing.pub");
        let (_, public) = signing_key(self.dir.path()).unwrap();
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        std::fs::copy(public, &key).unwrap();
        write(
            &self.config,
            format!(
                "var_dir = \"{}\"\n\n[release]\nregistries = {regs}\nfile_stores = [\"{}\", \"{}\"]\npublic_key = \"/etc/tenet/release-signing.pub\"\n",
                self.var.display(),
                self.store.display(),
                self.rsync.url()
            ),
        );
    }

    fn tenet<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(&self, args: I) -> Tenet {
        Tenet::new(["--config".as_ref(), self.config.as_os_str()]).args(args)
    }

    fn release(&self, recipe: &ReleaseRecipe) -> (BuiltRelease, String) {
        let built = build_release(self.dir.path(), recipe).unwrap();
        let name = format!("{}.squashfs", built.version);
        let url = self.server.add(&name, &built.squashfs);
        self.server.add(&format!("{name}.sig"), &built.signature);
        (built, url)
    }

    fn add(&self, built: &BuiltRelease, url: &str) -> Run {
        self.tenet([
            "release",
            "add",
            url,
            "--version",
            &built.version,
            "--sha256",
            &built.sha256,
            "--foreground",
            "--root",
        ])
        .arg(&self.root)
        .run()
    }

    fn remove(&self, version: &str) -> Run {
        self.tenet(["release", "remove", version, "--foreground", "--root"])
            .arg(&self.root)
            .run()
    }

    fn status(&self, version: &str) -> Value {
        let run = self
            .tenet(["release", "status", version, "--format", "json", "--root"])
            .arg(&self.root)
            .run();
        run.assert_code(0);
        run.json()
    }

    /// `tenet compliance check|fix` of a policy holding one release rule.
    fn compliance(&self, action: &str, rule: &str) -> Run {
        let policy = self.dir.path().join("policy");
        write(
            &policy.join("lir.toml"),
            format!(
                "[[moduleset]]\nname = \"lir\"\nrulesets = [\"lir\"]\nmodules = [{{ name = \"lir\", autofix = true }}]\n\n[[ruleset]]\nname = \"lir\"\ntype = \"explicit\"\n\n[[ruleset.variable]]\nname = \"lir_release\"\nclass = \"release\"\nvalue = {rule}\n"
            ),
        );
        self.tenet(["compliance", action, "--policy"])
            .arg(&policy)
            .arg("--root")
            .arg(&self.root)
            .args(["--var-dir"])
            .arg(&self.var)
            .args(["--format", "json"])
            .run()
    }
}

/// A release of three images (two of them sharing a layer with `other`) and two files.
fn recipe<'a>(version: &'a str, shared_seed: u64, unique_seed: u64) -> ReleaseRecipe<'a> {
    let shared = filler(shared_seed, 64 * 1024);
    ReleaseRecipe {
        version,
        images: vec![
            (
                "calico/apiserver",
                "v3.26.1",
                vec![shared.clone(), filler(unique_seed, 32 * 1024)],
            ),
            (
                "calico/cni",
                "v3.26.1",
                vec![shared.clone(), filler(unique_seed + 1, 16 * 1024)],
            ),
            (
                "hexos/container-base-2.0",
                "2.0.0-10",
                vec![filler(unique_seed + 2, 48 * 1024)],
            ),
        ],
        files: vec![
            (
                "install-control.yaml",
                format!("release: {version}\n").into_bytes(),
            ),
            (
                "charts/FleetOS-charts.tar.gz",
                filler(unique_seed + 3, 20 * 1024),
            ),
        ],
        multi_platform: Vec::new(),
        symlink: None,
    }
}

fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo runs (.ci/run installs it)")
}

fn skopeo_tags(registry: &RegistryProcess, repo: &str) -> Vec<String> {
    let out = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/{repo}", registry.addr()),
    ]);
    if !out.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut tags: Vec<String> = v["Tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    tags.sort();
    tags
}

fn skopeo_digest(registry: &RegistryProcess, reference: &str) -> Option<String> {
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/{reference}", registry.addr()),
    ]);
    out.status.success().then(|| {
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["Digest"].as_str().unwrap().to_string()
    })
}

fn catalog(registry: &RegistryProcess) -> Vec<String> {
    let body = reqwest::blocking::get(format!("{}/v2/_catalog", registry.url()))
        .unwrap()
        .json::<Value>()
        .unwrap();
    body["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

fn blob_exists(registry: &RegistryProcess, repo: &str, digest: &str) -> bool {
    reqwest::blocking::Client::new()
        .head(format!("{}/v2/{repo}/blobs/{digest}", registry.url()))
        .send()
        .unwrap()
        .status()
        .is_success()
}

fn assert_nothing_pushed(lir: &Lir) {
    for r in &lir.registries {
        assert!(catalog(r).is_empty(), "{}: {:?}", r.addr(), catalog(r));
    }
    assert!(
        std::fs::read_dir(&lir.store).unwrap().next().is_none(),
        "the file store got files"
    );
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = tenet_release::manifest::walk_files(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.display().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn add_makes_the_release_present_on_every_registry_and_file_store() {
    let lir = Lir::new();
    let (built, url) = lir.release(&recipe("9999.0.0.0-1052647", 1, 10));

    // Not yet added: check says so, and writes nothing.
    let run = lir.compliance(
        "check",
        &format!("{{ version = \"{}\", source = \"{url}\" }}", built.version),
    );
    run.assert_code(1);
    assert!(run.stdout.contains("has not been added"), "{}", run.stdout);
    assert_nothing_pushed(&lir);

    let run = lir.add(&built, &url);
    run.assert_code(0);
    for step in [
        "Downloading",
        "Verifying",
        "Unsquashing",
        "Pushing images",
        "Replicating",
        "Ready",
    ] {
        assert!(
            run.stdout.contains(step),
            "no {step} step in:\n{}",
            run.stdout
        );
    }
    let status = lir.status(&built.version);
    assert_eq!(status["state"], "present", "{status:#}");
    assert_eq!(status["last_error"], Value::Null);
    assert_eq!(status["images"].as_array().unwrap().len(), 3);

    // Confirmed independently: skopeo sees both tags on every registry, with our digests.
    for reg in &lir.registries {
        for im in status["images"].as_array().unwrap() {
            let (name, tag, vtag) = (
                im["name"].as_str().unwrap(),
                im["tag"].as_str().unwrap(),
                im["version_tag"].as_str().unwrap(),
            );
            assert_eq!(vtag, format!("{}-{tag}", built.version));
            let tags = skopeo_tags(reg, name);
            assert!(
                tags.contains(&tag.to_string()) && tags.contains(&vtag.to_string()),
                "{}: {name}: {tags:?}",
                reg.addr()
            );
            for t in [tag, vtag] {
                assert_eq!(
                    skopeo_digest(reg, &format!("{name}:{t}")).as_deref(),
                    im["digest"].as_str(),
                    "{}: {name}:{t}",
                    reg.addr()
                );
            }
        }
    }
    // Files on both stores: the directory and the rsync daemon's module.
    let want = vec![
        "charts/FleetOS-charts.tar.gz".to_string(),
        "install-control.yaml".to_string(),
    ];
    assert_eq!(files_in(&lir.store.join(&built.version)), want);
    assert_eq!(files_in(&lir.rsync.module_dir().join(&built.version)), want);

    // The rule is compliant, and a fix changes nothing.
    let rule = format!(
        "{{ version = \"{}\", source = \"{url}\", sha256 = \"{}\" }}",
        built.version, built.sha256
    );
    lir.compliance("check", &rule).assert_code(0);
    let requests = lir
        .server
        .requests(&format!("{}.squashfs", built.version))
        .len();
    lir.compliance("fix", &rule).assert_code(0);
    assert_eq!(
        lir.server
            .requests(&format!("{}.squashfs", built.version))
            .len(),
        requests,
        "a fix of a present release downloaded again"
    );

    // Drift: a tag deleted behind Tenet's back on a replica makes check nok, naming it.
    let replica = &lir.registries[2];
    let digest = status["images"][1]["digest"].as_str().unwrap();
    let resp = reqwest::blocking::Client::new()
        .delete(format!(
            "{}/v2/calico/cni/manifests/{digest}",
            replica.url()
        ))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let run = lir.compliance("check", &rule);
    run.assert_code(1);
    assert!(
        run.stdout.contains(&replica.addr()) && run.stdout.contains("calico/cni"),
        "{}",
        run.stdout
    );
    // fix re-converges, and check is ok again.
    lir.compliance("fix", &rule).assert_code(0);
    lir.compliance("check", &rule).assert_code(0);
    assert_eq!(
        skopeo_digest(replica, "calico/cni:v3.26.1").as_deref(),
        Some(digest)
    );
}

#[test]
fn an_interrupted_download_resumes_with_range() {
    let lir = Lir::new();
    let (built, url) = lir.release(&recipe("1.0.0", 2, 20));
    let name = format!("{}.squashfs", built.version);
    let half = std::fs::metadata(&built.squashfs).unwrap().len() / 2;
    lir.server.set_faults(
        &name,
        Faults {
            drop_after: Some((half, 1)),
            ..Faults::default()
        },
    );
    let run = lir.add(&built, &url);
    run.assert_code(0);
    let requests = lir.server.requests(&name);
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].range, None);
    assert_eq!(
        requests[1].range.as_deref(),
        Some(format!("bytes={half}-").as_str())
    );
    assert_eq!(lir.status(&built.version)["state"], "present");
}

#[test]
fn a_corrupted_byte_is_a_digest_mismatch_and_nothing_is_pushed() {
    let lir = Lir::new();
    let (built, url) = lir.release(&recipe("1.0.1", 3, 30));
    lir.server.set_faults(
        &format!("{}.squashfs", built.version),
        Faults {
            corrupt_at: Some(1000),
            ..Faults::default()
        },
    );
    let run = lir.add(&built, &url);
    run.assert_code(1);
    let status = lir.status(&built.version);
    assert_eq!(status["state"], "failed");
    let err = status["last_error"].as_str().unwrap();
    assert!(
        err.contains("digest mismatch") && err.contains(&built.sha256),
        "{err}"
    );
    assert_nothing_pushed(&lir);

    // Also without a sha256 in the rule: the server's Digest header is what is checked.
    lir.server.set_faults(
        &format!("{}.squashfs", built.version),
        Faults {
            corrupt_at: Some(1000),
            digest_header: true,
            ..Faults::default()
        },
    );
    let run = lir
        .tenet([
            "release",
            "add",
            &url,
            "--version",
            &built.version,
            "--foreground",
            "--root",
        ])
        .arg(&lir.root)
        .run();
    run.assert_code(1);
    assert!(
        lir.status(&built.version)["last_error"]
            .as_str()
            .unwrap()
            .contains("digest mismatch")
    );
    assert_nothing_pushed(&lir);
}

#[test]
fn a_bad_signature_is_refused_and_nothing_is_pushed() {
    let lir = Lir::new();
    let (built, url) = lir.release(&recipe("1.0.2", 4, 40));
    // Sign with another key: the node's public key does not verify it.
    let other = lir.dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (key, _) = signing_key(&other).unwrap();
    must(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&key)
            .arg("-out")
            .arg(&built.signature)
            .arg(&built.squashfs),
    );
    let run = lir.add(&built, &url);
    run.assert_code(1);
    let status = lir.status(&built.version);
    assert_eq!(status["state"], "failed");
    assert!(
        status["last_error"].as_str().unwrap().contains("signature"),
        "{status:#}"
    );
    assert_nothing_pushed(&lir);
}

#[test]
fn path_traversal_inside_the_squashfs_is_refused() {
    let lir = Lir::new();
    let mut r = recipe("1.0.3", 5, 50);
    r.symlink = Some(("files/evil", "../../../../etc/passwd"));
    let (built, url) = lir.release(&r);
    let run = lir.add(&built, &url);
    run.assert_code(1);
    let status = lir.status(&built.version);
    assert_eq!(status["state"], "failed");
    let err = status["last_error"].as_str().unwrap();
    assert!(err.contains("evil"), "{err}");
    assert_nothing_pushed(&lir);
}

#[test]
fn remove_untags_everywhere_runs_gc_and_keeps_blobs_other_releases_use() {
    let lir = Lir::new();
    // a and b share the base layer of two images.
    let (a, url_a) = lir.release(&recipe("2.0.0", 6, 60));
    let (b, url_b) = lir.release(&recipe("2.0.1", 6, 70));
    lir.add(&a, &url_a).assert_code(0);
    lir.add(&b, &url_b).assert_code(0);
    let sa = lir.status(&a.version);
    // A blob only a has: its hexos layer.
    let layer_of = |reg: &RegistryProcess, reference: &str| -> Vec<String> {
        let out = skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{}/{reference}", reg.addr()),
        ]);
        let m: Value = serde_json::from_slice(&out.stdout).unwrap();
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    let primary = &lir.registries[0];
    let only_a = layer_of(
        primary,
        &format!("hexos/container-base-2.0:{}-2.0.0-10", a.version),
    );
    let shared = layer_of(primary, &format!("calico/cni:{}-v3.26.1", a.version))[0].clone();
    assert_eq!(
        shared,
        layer_of(primary, &format!("calico/cni:{}-v3.26.1", b.version))[0]
    );

    let run = lir.remove(&a.version);
    run.assert_code(0);
    assert!(run.stdout.contains("Garbage collect"), "{}", run.stdout);
    assert_eq!(lir.status(&a.version)["state"], "absent");
    for reg in &lir.registries {
        for im in sa["images"].as_array().unwrap() {
            let tags = skopeo_tags(reg, im["name"].as_str().unwrap());
            assert!(
                !tags.contains(&im["version_tag"].as_str().unwrap().to_string()),
                "{}: {tags:?}",
                reg.addr()
            );
            // b (present) also has name:tag: it stays.
            assert!(
                tags.contains(&im["tag"].as_str().unwrap().to_string()),
                "{}: {tags:?}",
                reg.addr()
            );
        }
        // GC ran: a's own layer is gone; the shared one stays, and b is still pullable.
        assert!(
            !blob_exists(reg, "hexos/container-base-2.0", &only_a[0]),
            "{}: a's blob survived GC",
            reg.addr()
        );
        assert!(blob_exists(reg, "calico/cni", &shared));
        let out_dir = lir
            .dir
            .path()
            .join(format!("pull-{}", reg.addr().replace(':', "_")));
        let policy = lir.dir.path().join("policy.json");
        write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        );
        let out = skopeo(&[
            "copy",
            "--policy",
            policy.to_str().unwrap(),
            "--src-tls-verify=false",
            &format!("docker://{}/calico/cni:{}-v3.26.1", reg.addr(), b.version),
            &format!("oci:{}:b", out_dir.display()),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!lir.store.join(&a.version).exists());
    assert!(!lir.rsync.module_dir().join(&a.version).exists());
    assert!(lir.store.join(&b.version).exists());
    // The absent rule is compliant; b's present rule still is.
    lir.compliance(
        "check",
        &format!("{{ version = \"{}\", state = \"absent\" }}", a.version),
    )
    .assert_code(0);
    lir.compliance(
        "check",
        &format!("{{ version = \"{}\", source = \"{url_b}\" }}", b.version),
    )
    .assert_code(0);
}

#[test]
fn bad_rules_give_clear_errors_and_nothing_is_presented_as_present() {
    let lir = Lir::new();
    let (built, url) = lir.release(&recipe("3.0.0", 7, 80));

    // An unreachable registry: the add fails naming it, the release is not present.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    drop(std::net::TcpListener::bind(dead));
    lir.configure(Some(&format!(
        "[\"{}\", \"http://{dead}\"]",
        lir.registries[0].url()
    )));
    let run = lir.add(&built, &url);
    run.assert_code(1);
    let status = lir.status(&built.version);
    assert_eq!(status["state"], "failed");
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains(&dead.to_string()),
        "{status:#}"
    );
    let rule = format!("{{ version = \"{}\", source = \"{url}\" }}", built.version);
    let check = lir.compliance("check", &rule);
    check.assert_code(1);
    assert!(check.stdout.contains("failed"), "{}", check.stdout);

    // Mended, the re-run resumes: the verified download is not fetched again, and the
    // primary, which got every image before the failure, receives no blob again.
    let name = format!("{}.squashfs", built.version);
    let fetched = lir.server.requests(&name).len();
    lir.configure(Some(&format!("[\"{}\"]", lir.registries[0].url())));
    let run = lir.add(&built, &url);
    run.assert_code(0);
    assert_eq!(
        lir.server.requests(&name).len(),
        fetched,
        "downloaded again"
    );
    assert!(
        run.stdout.contains("already downloaded and verified"),
        "{}",
        run.stdout
    );
    let tagged: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("Tagged "))
        .collect();
    assert_eq!(tagged.len(), 3, "{}", run.stdout);
    for line in tagged {
        assert!(line.contains("(0 blobs pushed,"), "{line}");
    }
    assert_eq!(lir.status(&built.version)["state"], "present");

    // A registry that is not a URL: refused before anything, naming the field.
    lir.configure(Some("[\"http://[::1\"]"));
    let run = lir.add(&built, &url);
    run.assert_code(2);
    assert!(run.stderr.contains("registries"), "{}", run.stderr);

    // An unreachable source.
    lir.configure(None);
    let gone = format!("http://{dead}/gone.squashfs");
    let run = lir
        .tenet([
            "release",
            "add",
            &gone,
            "--version",
            "3.0.1",
            "--foreground",
            "--root",
        ])
        .arg(&lir.root)
        .run();
    run.assert_code(1);
    let status = lir.status("3.0.1");
    assert_eq!(status["state"], "failed");
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("gone.squashfs"),
        "{status:#}"
    );

    // No public key: refused, naming the field.
    write(
        &lir.config,
        format!(
            "var_dir = \"{}\"\n[release]\nregistries = [\"{}\"]\n",
            lir.var.display(),
            lir.registries[0].url()
        ),
    );
    let run = lir.add(&built, &url);
    run.assert_code(2);
    assert!(run.stderr.contains("public_key"), "{}", run.stderr);
}

/// Waits for `f` to give `Some`, polling every 100 ms, at most `secs`.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn release_tasks_run_one_at_a_time_in_the_daemon_and_the_collector_shows_their_status() {
    use tenet_tests::collector::{CollectorProcess, admin_token};
    let lir = Lir::new();
    let db = lir.dir.path().join("collector.db");
    let token = admin_token(&db);
    let collector = CollectorProcess::start(&db);
    let admin = collector.client().admin(&token);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = std::fs::read_to_string(&lir.config).unwrap();
    cfg = format!(
        "listener_addr = \"127.0.0.1\"\nlistener_port = {port}\n{cfg}\n[compliance]\nschedule = \"@0\"\n[pushasset]\nschedule = \"@0\"\n[dequeue_actions]\nschedule = \"@0\"\n"
    );
    write(&lir.config, cfg);
    lir.tenet(["register", "--collector", &collector.url, "--name", "n1"])
        .env("TENET_ADMIN_TOKEN", &token)
        .run()
        .assert_code(0);
    lir.tenet(["pushasset", "--root"])
        .arg(&lir.root)
        .run()
        .assert_code(0);

    let (a, url_a) = lir.release(&recipe("4.0.0", 8, 90));
    let (b, url_b) = lir.release(&recipe("4.0.1", 8, 100));

    // Without a daemon, queueing says how to start one (and --foreground runs in place).
    let run = lir
        .tenet(["release", "add", &url_a, "--version", &a.version, "--root"])
        .arg(&lir.root)
        .run();
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("--foreground"), "{}", run.stderr);

    /// Stops the daemon however the test ends.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.0.wait();
        }
    }
    let log = std::fs::File::create(lir.dir.path().join("daemon.log")).unwrap();
    let daemon = lir
        .tenet(["daemon", "--root"])
        .arg(&lir.root)
        .env("TENET_LOG", "info")
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _daemon = Stop(daemon);
    let tasks = || -> Option<Value> {
        let run = lir
            .tenet(["tasks", "--format", "json", "--root"])
            .arg(&lir.root)
            .run();
        (run.code == 0)
            .then(|| run.json())
            .filter(|v| v["running"] == true)
    };
    wait_for(30, "the daemon", tasks);

    // Two adds from the CLI, then a remove queued on the collector: accepted at once, run in order.
    for (built, url) in [(&a, &url_a), (&b, &url_b)] {
        let run = lir
            .tenet([
                "release",
                "add",
                url,
                "--version",
                &built.version,
                "--sha256",
                &built.sha256,
                "--root",
            ])
            .arg(&lir.root)
            .run();
        run.assert_code(0);
        assert!(run.stdout.contains("queued"), "{}", run.stdout);
    }
    admin
        .post("/api/v1/actions", &serde_json::json!({ "node": "n1", "command": format!("release remove {}", a.version) }))
        .expect(201);
    // A command outside the allow-list is refused by the collector.
    admin
        .post("/api/v1/actions", &serde_json::json!({ "node": "n1", "command": "release add file:///etc/shadow --version 1" }))
        .expect(400);

    let done = wait_for(180, "the three release tasks", || {
        let v = tasks()?;
        let list: Vec<Value> = v["tasks"]
            .as_array()?
            .iter()
            .filter(|t| {
                t["command"]
                    .as_str()
                    .is_some_and(|c| c.contains(" release run "))
            })
            .cloned()
            .collect();
        (list.len() == 3
            && list
                .iter()
                .all(|t| t["state"] == "done" || t["state"] == "failed"))
        .then_some(list)
    });
    for t in &done {
        assert_eq!(
            t["state"],
            "done",
            "{t:#}\n{}",
            std::fs::read_to_string(lir.dir.path().join("daemon.log")).unwrap()
        );
    }
    // One at a time: each started after the previous ended.
    for w in done.windows(2) {
        assert!(
            w[1]["started_at"].as_str().unwrap() >= w[0]["ended_at"].as_str().unwrap(),
            "{w:#?}"
        );
    }
    assert_eq!(lir.status(&a.version)["state"], "absent");
    let local_b = lir.status(&b.version);
    assert_eq!(local_b["state"], "present");

    // The collector shows what the node shows.
    let all = wait_for(10, "the collector's release statuses", || {
        let v = admin.get("/api/v1/releases").expect(200).json();
        let rows = v.as_array()?.clone();
        let b_row = rows
            .iter()
            .find(|r| r["version"] == b.version.as_str())?
            .clone();
        (b_row["status"] == local_b).then_some(rows)
    });
    let a_row = all
        .iter()
        .find(|r| r["version"] == a.version.as_str())
        .unwrap();
    assert_eq!(a_row["node"], "n1");
    assert_eq!(a_row["state"], "absent");
}

#[test]
fn add_scales_lir_data_up_replicates_to_its_ready_pods_and_scales_back() {
    use std::net::Ipv4Addr;
    use tenet_release::k8s_fake::FakeApiServer;
    let lir = Lir::new();
    // The lir-data pods' IPs are loopback addresses, where real registries stand for them.
    let kube = FakeApiServer::start();
    kube.set_pod_network([127, 0, 0]);
    kube.add_deployment("cm", "lir-data", &[("app", "lir-data")], 1);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pods: Vec<RegistryProcess> = [8u8, 9, 10]
        .iter()
        .map(|o| {
            RegistryProcess::start_at(Ipv4Addr::new(127, 0, 0, *o), port)
                .expect("a pod's registry starts")
        })
        .collect();
    let kubeconfig = lir.root.join("etc/kubernetes/admin.conf");
    std::fs::create_dir_all(kubeconfig.parent().unwrap()).unwrap();
    kube.write_kubeconfig(&kubeconfig, "default").unwrap();
    let (_, public) = signing_key(lir.dir.path()).unwrap();
    std::fs::copy(public, lir.root.join("etc/tenet/release-signing.pub")).unwrap();
    write(
        &lir.config,
        format!(
            "var_dir = \"{}\"\n\n[release]\nregistries = [\"{}\"]\nfile_stores = [\"{}\"]\npublic_key = \"/etc/tenet/release-signing.pub\"\n\n[release.k8s]\nnamespace = \"cm\"\ndeployment = \"lir-data\"\nreplicas = 3\nkubeconfig = \"/etc/kubernetes/admin.conf\"\ntimeout = 30\nregistry_template = \"http://{{ip}}:{port}\"\n",
            lir.var.display(),
            lir.registries[0].url(),
            lir.store.display()
        ),
    );
    let (built, url) = lir.release(&recipe("5.0.0", 9, 110));
    let run = lir.add(&built, &url);
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("Initializing replica pods: lir-data to 3"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("Scaling back: lir-data to 1"),
        "{}",
        run.stdout
    );

    // Scaled up through the scale subresource, then back to where it was.
    let writes: Vec<String> = kube
        .writes()
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.body))
        .collect();
    assert_eq!(writes.len(), 2, "{writes:#?}");
    assert!(
        writes[0].contains("/deployments/lir-data/scale") && writes[0].contains("\"replicas\":3"),
        "{writes:#?}"
    );
    assert!(writes[1].contains("\"replicas\":1"), "{writes:#?}");
    assert_eq!(kube.replicas("cm", "lir-data"), Some(1));

    // Every ready pod's registry got the release, as the primary did.
    let status = lir.status(&built.version);
    assert_eq!(
        status["registries"].as_array().unwrap().len(),
        4,
        "{status:#}"
    );
    for reg in pods.iter().chain([&lir.registries[0]]) {
        for im in status["images"].as_array().unwrap() {
            assert_eq!(
                skopeo_digest(
                    reg,
                    &format!(
                        "{}:{}",
                        im["name"].as_str().unwrap(),
                        im["version_tag"].as_str().unwrap()
                    )
                )
                .as_deref(),
                im["digest"].as_str(),
                "{}",
                reg.addr()
            );
        }
    }
}

#[test]
fn a_registry_behind_tls_and_htpasswd_is_used_with_its_ca_and_credentials_only() {
    let lir = Lir::new();
    let certs = lir.dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let (ca, cert, key) = tenet_tests::collector::make_tls(&certs);
    // A bcrypt htpasswd entry, as `htpasswd -B` writes it.
    let entry = must(Command::new("python3").args([
        "-W",
        "ignore",
        "-c",
        "import crypt; print('lir:' + crypt.crypt('s3cret', crypt.mksalt(crypt.METHOD_BLOWFISH)))",
    ]));
    let htpasswd = certs.join("htpasswd");
    write(&htpasswd, entry);
    let secured =
        RegistryProcess::start_secured(&cert, &key, &htpasswd).expect("a TLS registry starts");
    std::fs::copy(&ca, lir.root.join("etc/tenet/lir-ca.pem")).unwrap();
    write(&lir.root.join("etc/tenet/lir.password"), "s3cret\n");
    let (built, url) = lir.release(&recipe("6.0.0", 11, 120));
    let config = |registry: &str, ca: bool| {
        format!(
            "var_dir = \"{}\"\n[release]\nregistries = [{registry}]\npublic_key = \"/etc/tenet/release-signing.pub\"\n{}",
            lir.var.display(),
            if ca {
                "ca_file = \"/etc/tenet/lir-ca.pem\"\n"
            } else {
                ""
            }
        )
    };
    let with_credentials = format!(
        "{{ url = \"{}\", username = \"lir\", password_file = \"/etc/tenet/lir.password\" }}",
        secured.url()
    );

    // Without the CA, the certificate is refused (verification is never switched off).
    write(&lir.config, config(&with_credentials, false));
    let run = lir.add(&built, &url);
    run.assert_code(1);
    assert!(run.stderr.contains(&secured.addr()), "{}", run.stderr);
    // Without credentials, the registry says 401.
    write(&lir.config, config(&format!("\"{}\"", secured.url()), true));
    let run = lir.add(&built, &url);
    run.assert_code(1);
    assert!(
        run.stderr.contains("401") || run.stderr.to_lowercase().contains("unauthorized"),
        "{}",
        run.stderr
    );
    // With both, the release is present; the password is in no output and no status.
    write(&lir.config, config(&with_credentials, true));
    let run = lir.add(&built, &url);
    run.assert_code(0);
    assert!(!run.stdout.contains("s3cret") && !run.stderr.contains("s3cret"));
    let status = lir.status(&built.version);
    assert_eq!(status["state"], "present");
    assert!(!status.to_string().contains("s3cret"));
    let rule = format!(
        "{{ version = \"{}\", source = \"{url}\", sha256 = \"{}\" }}",
        built.version, built.sha256
    );
    lir.compliance("check", &rule).assert_code(0);
    // Confirmed independently with skopeo, with the CA and the credentials.
    let skopeo_certs = lir.dir.path().join("skopeo-certs");
    std::fs::create_dir_all(&skopeo_certs).unwrap();
    std::fs::copy(&ca, skopeo_certs.join("ca.crt")).unwrap();
    let out = skopeo(&[
        "inspect",
        "--cert-dir",
        skopeo_certs.to_str().unwrap(),
        "--creds",
        "lir:s3cret",
        &format!(
            "docker://{}/calico/cni:{}-v3.26.1",
            secured.addr(),
            built.version
        ),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! End-to-end tests of releases (issue 7) on real parts, all on 127.0.0.1: three real
//! `docker-registry` instances (a primary and two replicas, deletes enabled), a real rsync
//! daemon and a local directory as file stores, an HTTP server serving squashfs images built
//! by the real `mksquashfs` and signed by the real `openssl`. Results are confirmed
//! independently with `skopeo` and the registries' HTTP API.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tenet_release::testing::{
    BuiltRelease, RegistryProcess, ReleaseRecipe, RsyncDaemon, TokenServer, build_release, filler,
    signing_key,
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
    tenet_tests::tool("skopeo")
        .args(args)
        .output()
        .expect("skopeo runs")
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
    skopeo_digest_as(registry, reference, None)
}

/// [`skopeo_digest`] with `user:password` credentials.
fn skopeo_digest_as(
    registry: &RegistryProcess,
    reference: &str,
    creds: Option<&str>,
) -> Option<String> {
    let target = format!("docker://{}/{reference}", registry.addr());
    let mut args = vec!["inspect", "--tls-verify=false"];
    if let Some(c) = creds {
        args.extend(["--creds", c]);
    }
    args.push(&target);
    let out = skopeo(&args);
    out.status.success().then(|| {
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["Digest"].as_str().unwrap().to_string()
    })
}

/// The layer digests of `reference`'s manifest, as skopeo reads them.
fn layer_digests(registry: &RegistryProcess, reference: &str) -> Vec<String> {
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}/{reference}", registry.addr()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
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
    // calico/cni shares its base layer with calico/apiserver: on every registry it was
    // mounted from calico/apiserver, never uploaded twice (the registries' own logs).
    let shared = layer_digests(&lir.registries[0], "calico/cni:v3.26.1")[0].clone();
    for reg in &lir.registries {
        let mounts = reg.blob_mounts();
        assert_eq!(mounts.len(), 1, "{}: {mounts:#?}", reg.addr());
        assert!(
            mounts[0].contains("/v2/calico/cni/blobs/uploads/")
                && mounts[0].contains("from=calico%2Fapiserver")
                && mounts[0].contains(&shared["sha256:".len()..]),
            "{mounts:#?}"
        );
        let uploads_of_shared = reg
            .blob_uploads()
            .iter()
            .filter(|l| l.contains(&shared["sha256:".len()..]))
            .count();
        assert_eq!(uploads_of_shared, 1, "{}", reg.addr());
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
    // fix re-converges from the download kept by the add: not one request to the source
    // (neither the squashfs nor its signature), and check is ok again.
    let asked = lir.server.all_requests().len();
    let fix = lir.compliance("fix", &rule);
    fix.assert_code(0);
    assert_eq!(
        lir.server.all_requests().len(),
        asked,
        "the re-fix fetched from the source:\n{}",
        fix.stdout
    );
    assert!(
        fix.stdout.contains("already downloaded and verified"),
        "{}",
        fix.stdout
    );
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
        tenet_tests::tool("openssl")
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
    lir.tenet([
        "register",
        "--collector",
        &collector.url,
        "--name",
        "n1",
        "--insecure-http",
    ])
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
    // The pods' registries sit behind a token realm: the template's credentials get tokens.
    let token = TokenServer::start("lir-pods", "p0d-secret").expect("the token server starts");
    let pods: Vec<RegistryProcess> = [8u8, 9, 10]
        .iter()
        .map(|o| {
            RegistryProcess::start_at_with_token(Ipv4Addr::new(127, 0, 0, *o), Some(port), &token)
                .expect("a pod's registry starts")
        })
        .collect();
    write(&lir.root.join("etc/tenet/pods.password"), "p0d-secret\n");
    let kubeconfig = lir.root.join("etc/kubernetes/admin.conf");
    std::fs::create_dir_all(kubeconfig.parent().unwrap()).unwrap();
    kube.write_kubeconfig(&kubeconfig, "default").unwrap();
    let (_, public) = signing_key(lir.dir.path()).unwrap();
    std::fs::copy(public, lir.root.join("etc/tenet/release-signing.pub")).unwrap();
    write(
        &lir.config,
        format!(
            "var_dir = \"{}\"\n\n[release]\nregistries = [\"{}\"]\nfile_stores = [\"{}\"]\npublic_key = \"/etc/tenet/release-signing.pub\"\n\n[release.k8s]\nnamespace = \"cm\"\ndeployment = \"lir-data\"\nreplicas = 3\nkubeconfig = \"/etc/kubernetes/admin.conf\"\ntimeout = 30\nregistry_template = \"http://{{ip}}:{port}\"\nregistry_username = \"lir-pods\"\nregistry_password_file = \"/etc/tenet/pods.password\"\n",
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

    // Every ready pod's registry got the release, as the primary did, through tokens.
    assert!(
        token
            .requests()
            .iter()
            .any(|q| q.authenticated && q.status == 200),
        "{:#?}",
        token.requests()
    );
    assert!(!run.stdout.contains("p0d-secret") && !run.stderr.contains("p0d-secret"));
    let status = lir.status(&built.version);
    assert_eq!(
        status["registries"].as_array().unwrap().len(),
        4,
        "{status:#}"
    );
    let with_creds = pods
        .iter()
        .map(|p| (p, Some("lir-pods:p0d-secret")))
        .chain([(&lir.registries[0], None)]);
    for (reg, creds) in with_creds {
        for im in status["images"].as_array().unwrap() {
            assert_eq!(
                skopeo_digest_as(
                    reg,
                    &format!(
                        "{}:{}",
                        im["name"].as_str().unwrap(),
                        im["version_tag"].as_str().unwrap()
                    ),
                    creds
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
    let entry = must(tenet_tests::tool("python3").args([
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

/// The step names of a pipe's output, in order, each once (percent lines left out).
fn step_names(stdout: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in stdout.lines().filter(|l| !l.starts_with("  ")) {
        let rest = line.strip_prefix("AddRelease: ").unwrap_or(line);
        let name = rest
            .split([':', '('])
            .next()
            .unwrap_or(rest)
            .trim()
            .to_string();
        if out.last() != Some(&name) {
            out.push(name);
        }
    }
    out
}

#[test]
fn a_second_add_of_a_present_release_does_nothing_and_force_runs_it_again() {
    let lir = Lir::new();
    let (built, url) = lir.release(&recipe("7.0.0", 12, 130));
    let run = lir.add(&built, &url);
    run.assert_code(0);
    // Piped, the output is one line per step, as it always was: no bar, no escape, no \r.
    assert!(
        !run.stdout.contains('\x1b') && !run.stdout.contains('\r'),
        "{:?}",
        run.stdout
    );
    assert!(
        run.stdout
            .lines()
            .all(|l| l.starts_with("AddRelease: ") || l.starts_with("  ")),
        "{}",
        run.stdout
    );
    assert_eq!(
        step_names(&run.stdout),
        [
            "Downloading",
            "Verifying",
            "Unsquashing",
            "Checking layout",
            "Syncing files",
            "Pushing images",
            "Replicating",
            "Checking",
            "Cleaning up",
            "Ready"
        ],
        "{}",
        run.stdout
    );
    let status = lir.status(&built.version);
    let asked = lir.server.all_requests().len();
    let uploads: Vec<usize> = lir
        .registries
        .iter()
        .map(|r| r.blob_uploads().len())
        .collect();
    assert!(uploads.iter().all(|n| *n > 0), "{uploads:?}");

    // The second add: no request to the source, no upload, the status untouched, exit 0.
    let again = lir.add(&built, &url);
    again.assert_code(0);
    assert!(
        again.stdout.contains(&format!(
            "AddRelease: Ready: release {} is already present: 3 images checked on 3 registries, 2 files on 2 file stores; nothing to do (--force runs every step again)",
            built.version
        )),
        "{}",
        again.stdout
    );
    assert_eq!(lir.server.all_requests().len(), asked);
    for (r, n) in lir.registries.iter().zip(&uploads) {
        assert_eq!(r.blob_uploads().len(), *n, "{}", r.addr());
    }
    assert_eq!(lir.status(&built.version), status);
    // Queued the same way (no daemon runs here): nothing is queued, and it says why.
    let queued = lir
        .tenet([
            "release",
            "add",
            &url,
            "--version",
            &built.version,
            "--root",
        ])
        .arg(&lir.root)
        .run();
    queued.assert_code(0);
    assert!(
        queued.stdout.contains("is already present"),
        "{}",
        queued.stdout
    );
    assert_eq!(lir.server.all_requests().len(), asked);

    // --force runs every step again (from the kept download, so still nothing fetched; the
    // registries have every blob, so nothing uploaded).
    let forced = lir
        .tenet([
            "release",
            "add",
            &url,
            "--version",
            &built.version,
            "--sha256",
            &built.sha256,
            "--force",
            "--foreground",
            "--root",
        ])
        .arg(&lir.root)
        .run();
    forced.assert_code(0);
    for step in [
        "Verifying",
        "Unsquashing",
        "Pushing images",
        "Replicating",
        "Checking",
    ] {
        assert!(forced.stdout.contains(step), "{step}: {}", forced.stdout);
    }
    assert_eq!(lir.server.all_requests().len(), asked);
    for (r, n) in lir.registries.iter().zip(&uploads) {
        assert_eq!(r.blob_uploads().len(), *n, "{}", r.addr());
    }
    let after = lir.status(&built.version);
    assert_eq!(after["state"], "present");
    assert_ne!(after["started_at"], status["started_at"].clone(), "re-ran");

    // keep bounds what stays: with one release kept, a second release's add evicts the
    // first's download, and a re-fix of the first fetches it again.
    let cfg = std::fs::read_to_string(&lir.config).unwrap();
    write(
        &lir.config,
        cfg.replace("[release]\n", "[release]\nkeep = { releases = 1 }\n"),
    );
    // The same images (two present releases sharing `name:tag` must agree on its digest).
    let (second, url2) = lir.release(&recipe("7.0.1", 12, 130));
    let run = lir.add(&second, &url2);
    run.assert_code(0);
    assert!(
        run.stdout
            .contains(&format!("Removed the kept download of {}", built.version)),
        "{}",
        run.stdout
    );
    let work = lir.var.join("release/work");
    assert!(!work.join(&built.version).exists());
    assert!(
        work.join(&second.version)
            .join("release.squashfs")
            .is_file()
    );
    assert!(
        work.join(&second.version)
            .join("files/install-control.yaml")
            .is_file()
    );
    assert!(!work.join(&second.version).join("tree").exists());
    let squashfs = format!("{}.squashfs", built.version);
    let fetched = lir.server.requests(&squashfs).len();
    lir.add(&built, &url).assert_code(0); // still present: nothing to do
    assert_eq!(lir.server.requests(&squashfs).len(), fetched);
    let forced = lir
        .tenet([
            "release",
            "add",
            &url,
            "--version",
            &built.version,
            "--force",
        ])
        .args(["--sha256", &built.sha256, "--foreground", "--root"])
        .arg(&lir.root)
        .run();
    forced.assert_code(0);
    assert_eq!(lir.server.requests(&squashfs).len(), fetched + 1);
}

#[test]
fn a_two_platform_image_lands_whole_on_three_registries_and_remove_untags_all_of_it() {
    let lir = Lir::new();
    let mut r = recipe("8.0.0", 13, 150);
    r.multi_platform = vec![(
        "lir/multi",
        "v1",
        vec![
            ("amd64", vec![filler(13, 40 * 1024), filler(151, 8 * 1024)]),
            ("arm64", vec![filler(13, 40 * 1024), filler(152, 8 * 1024)]),
        ],
    )];
    let (built, url) = lir.release(&r);
    let run = lir.add(&built, &url);
    run.assert_code(0);
    let status = lir.status(&built.version);
    let multi = status["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "lir/multi")
        .unwrap()
        .clone();
    let children: Vec<(String, String)> = multi["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["platform"].as_str().unwrap().to_string(),
                p["tag"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let vtag = format!("{}-v1", built.version);
    assert_eq!(
        children,
        vec![
            ("linux/amd64".to_string(), format!("{vtag}-linux-amd64")),
            ("linux/arm64".to_string(), format!("{vtag}-linux-arm64")),
        ]
    );
    let policy = lir.dir.path().join("policy.json");
    write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    );
    for reg in &lir.registries {
        // The index, with both platforms, under both tags.
        for tag in ["v1", vtag.as_str()] {
            let out = skopeo(&[
                "inspect",
                "--tls-verify=false",
                "--raw",
                &format!("docker://{}/lir/multi:{tag}", reg.addr()),
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let index: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                index["mediaType"],
                "application/vnd.oci.image.index.v1+json"
            );
            let mut archs: Vec<&str> = index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["platform"]["architecture"].as_str().unwrap())
                .collect();
            archs.sort();
            assert_eq!(archs, ["amd64", "arm64"], "{}", reg.addr());
            assert_eq!(
                tenet_release::image::sha256_digest(&out.stdout),
                multi["digest"].as_str().unwrap()
            );
        }
        // skopeo pulls the arm64 image.
        let out_dir = lir
            .dir
            .path()
            .join(format!("arm64-{}", reg.addr().replace(':', "_")));
        let out = skopeo(&[
            "copy",
            "--policy",
            policy.to_str().unwrap(),
            "--src-tls-verify=false",
            "--override-arch",
            "arm64",
            &format!("docker://{}/lir/multi:{vtag}", reg.addr()),
            &format!("oci:{}:arm", out_dir.display()),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let top: Value =
            serde_json::from_slice(&std::fs::read(out_dir.join("index.json")).unwrap()).unwrap();
        let blob = |d: &str| {
            std::fs::read(out_dir.join("blobs/sha256").join(&d["sha256:".len()..])).unwrap()
        };
        let manifest: Value =
            serde_json::from_slice(&blob(top["manifests"][0]["digest"].as_str().unwrap())).unwrap();
        let config: Value =
            serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
        assert_eq!(config["architecture"], "arm64", "{}", reg.addr());
        // The config pulled is the arm64 manifest's (skopeo may rewrite the manifest it
        // stores, never the config).
        let out = skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{}/lir/multi:{vtag}-linux-arm64", reg.addr()),
        ]);
        assert_eq!(
            tenet_release::image::sha256_digest(&out.stdout),
            multi["platforms"][1]["digest"].as_str().unwrap()
        );
        let arm: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            manifest["config"]["digest"],
            arm["config"]["digest"],
            "{}",
            reg.addr()
        );
    }
    // check resolves the index and each child, and a deleted child is drift.
    let rule = format!(
        "{{ version = \"{}\", source = \"{url}\", sha256 = \"{}\" }}",
        built.version, built.sha256
    );
    lir.compliance("check", &rule).assert_code(0);
    let replica = &lir.registries[1];
    let resp = reqwest::blocking::Client::new()
        .delete(format!(
            "{}/v2/lir/multi/manifests/{}",
            replica.url(),
            multi["platforms"][1]["digest"].as_str().unwrap()
        ))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let check = lir.compliance("check", &rule);
    check.assert_code(1);
    assert!(
        check.stdout.contains(&format!("{vtag}-linux-arm64")),
        "{}",
        check.stdout
    );
    lir.compliance("fix", &rule).assert_code(0);
    lir.compliance("check", &rule).assert_code(0);

    // remove untags all of it: no tag of lir/multi remains anywhere, and GC keeps nothing.
    lir.remove(&built.version).assert_code(0);
    for reg in &lir.registries {
        assert!(
            skopeo_tags(reg, "lir/multi").is_empty(),
            "{}: {:?}",
            reg.addr(),
            skopeo_tags(reg, "lir/multi")
        );
        for p in multi["platforms"].as_array().unwrap() {
            let resp = reqwest::blocking::Client::new()
                .head(format!(
                    "{}/v2/lir/multi/manifests/{}",
                    reg.url(),
                    p["digest"].as_str().unwrap()
                ))
                .send()
                .unwrap();
            assert_eq!(resp.status().as_u16(), 404, "{}", reg.addr());
        }
    }
}

#[test]
fn a_registry_behind_a_token_realm_is_used_with_credentials_only() {
    let lir = Lir::new();
    let token = TokenServer::start("lir", "t0ken-pw").expect("the token server starts");
    let secured = RegistryProcess::start_with_token(&token).expect("a token registry starts");
    write(&lir.root.join("etc/tenet/lir.password"), "t0ken-pw\n");
    write(&lir.root.join("etc/tenet/wrong.password"), "nope-pw\n");
    let (built, url) = lir.release(&recipe("9.0.0", 14, 160));
    let entry = |password_file: Option<&str>| match password_file {
        Some(f) => format!(
            "[{{ url = \"{}\", username = \"lir\", password_file = \"{f}\" }}]",
            secured.url()
        ),
        None => format!("[\"{}\"]", secured.url()),
    };

    // Without credentials: refused, saying what to configure.
    lir.configure(Some(&entry(None)));
    let run = lir.add(&built, &url);
    run.assert_code(1);
    assert!(
        run.stderr.contains(&secured.addr())
            && run.stderr.contains("set username and password_file"),
        "{}",
        run.stderr
    );
    // A wrong password: refused, naming the user.
    lir.configure(Some(&entry(Some("/etc/tenet/wrong.password"))));
    let run = lir.add(&built, &url);
    run.assert_code(1);
    assert!(
        run.stderr.contains("refused the credentials of user lir"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("nope-pw") && !run.stdout.contains("nope-pw"));
    // The right one: present, and check is ok through tokens too.
    lir.configure(Some(&entry(Some("/etc/tenet/lir.password"))));
    let run = lir.add(&built, &url);
    run.assert_code(0);
    let rule = format!(
        "{{ version = \"{}\", source = \"{url}\", sha256 = \"{}\" }}",
        built.version, built.sha256
    );
    let check = lir.compliance("check", &rule);
    check.assert_code(0);
    let status = lir.status(&built.version);
    assert_eq!(status["state"], "present");
    // Neither the password nor any token issued appears in any output or status.
    let tokens = token.tokens();
    assert!(!tokens.is_empty());
    let status_text = std::fs::read_to_string(
        lir.var
            .join("release/status")
            .join(format!("{}.json", built.version)),
    )
    .unwrap();
    for text in [
        &run.stdout,
        &run.stderr,
        &check.stdout,
        &check.stderr,
        &status_text,
    ] {
        assert!(!text.contains("t0ken-pw"));
        for t in &tokens {
            assert!(!text.contains(t.as_str()));
        }
    }
    // Confirmed by skopeo with the credentials.
    assert_eq!(
        skopeo_digest_as(
            &secured,
            &format!("calico/cni:{}-v3.26.1", built.version),
            Some("lir:t0ken-pw")
        )
        .as_deref(),
        status["images"][1]["digest"].as_str()
    );
    assert!(skopeo_digest(&secured, "calico/cni:v3.26.1").is_none());
}

#[test]
fn a_terminal_gets_live_progress_bars() {
    let lir = Lir::new();
    let (built, url) = lir.release(&recipe("10.0.0", 15, 170));
    // `script` runs the add on a pseudo-terminal; what the terminal got comes out on stdout.
    let cmd = format!(
        "stty cols 160; exec {} --config {} release add {url} --version {} --sha256 {} --foreground --root {}",
        tenet_tests::tenet_bin().display(),
        lir.config.display(),
        built.version,
        built.sha256,
        lir.root.display()
    );
    let out = tenet_tests::tool("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .expect("script runs");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}\n{screen:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Bars redraw in place (\r and escapes), show bytes with binary units, and the info
    // lines are printed above them.
    assert!(
        screen.contains('\r') && screen.contains('\x1b'),
        "{screen:?}"
    );
    assert!(screen.contains("AddRelease: Downloading"), "{screen}");
    assert!(screen.contains("AddRelease: Pushing images"), "{screen}");
    assert!(screen.contains("KiB"), "{screen}");
    assert!(screen.contains("3/3 images ["), "{screen}");
    assert!(screen.contains("6/6 images ["), "{screen}");
    assert!(
        screen.contains("  Code signing verification successful"),
        "{screen}"
    );
    assert!(screen.contains("AddRelease: Ready"), "{screen}");
    assert_eq!(lir.status(&built.version)["state"], "present");
}

"""Release benchmark (issues 7 and 17): Tenet's `release add` against the shell pipeline
`curl; sha256sum; unsquashfs; skopeo copy` (per image per registry), in the same run, on the
same machine, each with a primary and two replica registries of its own (real docker-registry
on 127.0.0.1), then a second `release add` of the present release (a check, nothing else), and
`check` of the present release.

    python3 bench/release.py TARGET_DIR [SIZE_MB] [IMAGES]

Builds a release of IMAGES OCI images of random (incompressible) layers totalling SIZE_MB,
squashed with mksquashfs and signed with openssl; serves it with a local HTTP server.
"""

import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

TARGET = sys.argv[1]
SIZE_MB = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
IMAGES = int(sys.argv[3]) if len(sys.argv) > 3 else 20
VERSION = "9999.0.0.0-1052647"
TENET = os.path.join(TARGET, "tenet")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def blob(layout, data):
    h = hashlib.sha256(data).hexdigest()
    d = os.path.join(layout, "blobs", "sha256")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, h), "wb") as f:
        f.write(data)
    return "sha256:" + h, len(data)


def layer_tar(name, size):
    # One file of random bytes in a ustar archive, built in memory.
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = 0
        t.addfile(info, io.BytesIO(os.urandom(size)))
    return buf.getvalue()


def build(work):
    tree = os.path.join(work, "tree")
    os.makedirs(os.path.join(tree, "files"))
    per_image = SIZE_MB * 1024 * 1024 // IMAGES
    manifest = f'version = "{VERSION}"\n'
    images = []
    for i in range(IMAGES):
        name, tag = f"bench/image-{i:02d}", "v1.0.0"
        rel = f"images/image-{i:02d}"
        layout = os.path.join(tree, rel)
        os.makedirs(layout)
        with open(os.path.join(layout, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        layers = []
        diff_ids = []
        # Two layers per image: most of the bytes, and a small one.
        for j, size in enumerate([per_image - 4096, 4096]):
            tar = layer_tar(f"layer{j}.bin", size)
            diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
            d, n = blob(layout, tar)
            layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n})
        cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        cd, cn = blob(layout, cfg)
        m = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
            "layers": layers,
        }).encode()
        md, mn = blob(layout, m)
        with open(os.path.join(layout, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn,
                "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)
        manifest += f'\n[[images]]\nname = "{name}"\ntag = "{tag}"\npath = "{rel}"\n'
        images.append((name, tag, rel))
    with open(os.path.join(tree, "release.toml"), "w") as f:
        f.write(manifest)
    sqfs = os.path.join(work, "release.squashfs")
    run("mksquashfs", tree, sqfs, "-noappend", "-quiet", "-no-progress", "-all-root", "-noI", "-noD", "-noF", "-noX")
    shutil.rmtree(tree)
    key, pub = os.path.join(work, "k.pem"), os.path.join(work, "k.pub")
    run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    run("openssl", "pkey", "-pubout", "-in", key, "-out", pub)
    run("openssl", "dgst", "-sha256", "-sign", key, "-out", sqfs + ".sig", sqfs)
    h = hashlib.sha256()
    with open(sqfs, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return sqfs, pub, h.hexdigest(), images


REQUESTS = []  # (method, path) of every request the source server got


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def send_head(self):
        REQUESTS.append((self.command, self.path))
        return super().send_head()


def serve(directory):
    port = free_port()
    handler = lambda *a, **k: Quiet(*a, directory=directory, **k)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{port}"


def registry(work, name):
    d = os.path.join(work, name)
    os.makedirs(d)
    port = free_port()
    cfg = os.path.join(d, "config.yml")
    with open(cfg, "w") as f:
        f.write(f"version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {d}/data}}\n  delete: {{enabled: true}}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    p = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return p, f"127.0.0.1:{port}"


def main():
    work = tempfile.mkdtemp(prefix="tenet-release-bench-", dir=os.environ.get("BENCH_DIR"))
    procs = []
    try:
        t0 = time.time()
        sqfs, pub, sha, images = build(work)
        size = os.path.getsize(sqfs)
        print(f"release: {IMAGES} images, squashfs {size / 1e9:.2f} GB, built in {time.time() - t0:.0f} s", flush=True)
        base = serve(work)
        url = f"{base}/release.squashfs"
        regs = {}
        for side in ["tenet", "pipeline"]:
            regs[side] = []
            for i in range(3):
                p, addr = registry(work, f"{side}-reg{i}")
                procs.append(p)
                regs[side].append(addr)

        # The shell pipeline, as an operator would script it.
        pipe = os.path.join(work, "pipeline")
        os.makedirs(pipe)
        policy = os.path.join(work, "policy.json")
        with open(policy, "w") as f:
            f.write('{"default":[{"type":"insecureAcceptAnything"}]}')
        script = f"""set -e
cd {pipe}
curl -sfS -o release.squashfs {url}
echo "{sha}  release.squashfs" | sha256sum -c --quiet
unsquashfs -q -n -d tree release.squashfs
"""
        for name, tag, rel in images:
            for addr in regs["pipeline"]:
                script += f"skopeo copy -q --policy {policy} --dest-tls-verify=false oci:tree/{rel}:{tag} docker://{addr}/{name}:{tag}\n"
        t = time.time()
        run("bash", "-c", script)
        pipeline = time.time() - t
        shutil.rmtree(pipe)
        print(f"pipeline (curl; sha256sum; unsquashfs; skopeo copy x {IMAGES} x 3): {pipeline:.1f} s", flush=True)

        # Tenet: the same, plus the signature, both tags, the layout check and the final check.
        root = os.path.join(work, "root")
        var = os.path.join(work, "var")
        os.makedirs(os.path.join(root, "etc/tenet"))
        shutil.copy(pub, os.path.join(root, "etc/tenet/release.pub"))
        cfg = os.path.join(root, "etc/tenet/node.toml")
        with open(cfg, "w") as f:
            r = ", ".join(f'"http://{a}"' for a in regs["tenet"])
            f.write(f'var_dir = "{var}"\n[release]\nregistries = [{r}]\npublic_key = "/etc/tenet/release.pub"\n')
        t = time.time()
        run(TENET, "--config", cfg, "release", "add", url, "--version", VERSION, "--sha256", sha,
            "--foreground", "--root", root, stdout=subprocess.DEVNULL)
        tenet = time.time() - t
        print(f"tenet release add: {tenet:.1f} s  ({tenet / pipeline:.2f}x the pipeline; target <= 0.8x)", flush=True)

        # A second add of the present release: a check, then nothing (no download, no upload).
        asked = len(REQUESTS)
        times = []
        for _ in range(5):
            t = time.time()
            run(TENET, "--config", cfg, "release", "add", url, "--version", VERSION, "--sha256", sha,
                "--foreground", "--root", root, stdout=subprocess.DEVNULL)
            times.append(time.time() - t)
        times.sort()
        print(f"tenet release add again (present: check only): median {times[2] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms, "
              f"{len(REQUESTS) - asked} requests to the source in 5 re-adds", flush=True)

        # check of the present release, a few times.
        pol = os.path.join(work, "policy")
        os.makedirs(pol)
        with open(os.path.join(pol, "lir.toml"), "w") as f:
            f.write(f'[[moduleset]]\nname = "lir"\nrulesets = ["lir"]\nmodules = [{{ name = "lir" }}]\n\n[[ruleset]]\nname = "lir"\ntype = "explicit"\n\n[[ruleset.variable]]\nname = "r"\nclass = "release"\nvalue = {{ version = "{VERSION}", source = "{url}" }}\n')
        times = []
        for _ in range(5):
            t = time.time()
            run(TENET, "--config", cfg, "compliance", "check", "--policy", pol, "--root", root, "--var-dir", var, stdout=subprocess.DEVNULL)
            times.append(time.time() - t)
        times.sort()
        print(f"tenet compliance check (release present, {IMAGES} images x 2 tags x 3 registries): median {times[2] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms", flush=True)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


main()

"""Measures tenet daemon: idle RSS/CPU and queue-to-start latency of collector actions.
Usage: daemon.py TARGET_DIR N (see bench/daemon.sh)."""
import json, os, socket, subprocess, sys, tempfile, time, urllib.request
from datetime import datetime, timezone

target, n = sys.argv[1], int(sys.argv[2])
tenet, collector = f"{target}/tenet", f"{target}/tenet-collector"
work = tempfile.mkdtemp(prefix="tenet-bench-")
db = f"{work}/c.db"
token = subprocess.check_output([collector, "token", "create", "--admin", "--db", db], text=True).strip()
srv = subprocess.Popen([collector, "serve", "--listen", "127.0.0.1:0", "--db", db],
                       stdout=subprocess.PIPE, stderr=open(f"{work}/collector.log", "w"), text=True)
url = srv.stdout.readline().strip().rsplit(" ", 1)[1]

def call(method, path, body=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)

s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
cfg, var, root = f"{work}/node.toml", f"{work}/var", f"{work}/root"
os.makedirs(root)
open(cfg, "w").write(f'var_dir = "{var}"\nlistener_addr = "127.0.0.1"\nlistener_port = {port}\n'
                     '[compliance]\nschedule = "@0"\n[pushasset]\nschedule = "@0"\n[dequeue_actions]\nschedule = "@0"\n')
env = dict(os.environ, TENET_NODENAME="bench1", TENET_ADMIN_TOKEN=token)
subprocess.check_call([tenet, "--config", cfg, "register", "--collector", url, "--name", "bench1", "--insecure-http"], env=env, stdout=subprocess.DEVNULL)
subprocess.check_call([tenet, "--config", cfg, "pushasset", "--root", root], env=env, stdout=subprocess.DEVNULL)
d = subprocess.Popen([tenet, "--config", cfg, "daemon", "--root", root], env=env,
                     stderr=open(f"{work}/daemon.log", "w"))

def state():
    try:
        return json.load(open(f"{var}/daemon/tasks.json"))
    except (OSError, ValueError):
        return None

while not (state() or {}).get("running"):
    time.sleep(0.05)
time.sleep(1)

def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])

rss_start = rss_kb(d.pid)
lat = []
for i in range(n):
    t0 = time.time()
    a = call("POST", "/api/v1/actions", {"node": "bench1", "command": "pushasset"})
    while True:
        t = next((t for t in (state() or {}).get("tasks", []) if t.get("action_id") == a["id"] and t.get("started_at")), None)
        if t:
            break
        time.sleep(0.002)
    started = datetime.strptime(t["started_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
    lat.append((started - t0) * 1000)
    while call("GET", f"/api/v1/actions/{a['id']}")["status"] != "T":
        time.sleep(0.01)

time.sleep(2)
rss_idle = rss_kb(d.pid)
c0 = cpu_ticks(d.pid); time.sleep(10); c1 = cpu_ticks(d.pid)
hz = os.sysconf("SC_CLK_TCK")
lat.sort()
print(f"idle RSS: {rss_idle / 1024:.1f} MB (at start {rss_start / 1024:.1f} MB); " + " ".join(l.split(":")[0] + "=" + l.split()[1] + "kB" for l in open(f"/proc/{d.pid}/status") if l.startswith(("RssAnon", "RssFile", "Threads"))))
print(f"idle CPU over 10 s: {(c1 - c0) / hz * 1000:.0f} ms")
print(f"queue-to-start latency over {n} actions (POST /actions -> notification -> dequeue -> ack -> task started):"
      f" min {lat[0]:.1f} ms, median {lat[len(lat) // 2]:.1f} ms, max {lat[-1]:.1f} ms")
d.terminate(); d.wait(); srv.terminate(); srv.wait()
subprocess.call(["rm", "-rf", work])

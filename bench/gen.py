#!/usr/bin/env python3
"""Generates the benchmark policy (OpenSVC export JSON) and root: N file rules + M sysctl rules.

usage: gen.py DIR [FILES] [SYSCTLS]   -> DIR/policy.json, DIR/root/
"""
import json, os, sys

d = sys.argv[1]
nfiles = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
nsysctl = int(sys.argv[3]) if len(sys.argv) > 3 else 200
root = os.path.join(d, "root")
os.makedirs(os.path.join(root, "etc"), exist_ok=True)
with open(os.path.join(root, "etc/passwd"), "w") as f:
    f.write("root:x:0:0:root:/root:/bin/sh\n")
with open(os.path.join(root, "etc/group"), "w") as f:
    f.write("root:x:0:\n")
psys = os.path.join(root, "proc/sys/bench")
os.makedirs(psys, exist_ok=True)
variables = []
for i in range(nfiles):
    value = {"path": f"/etc/bench/d{i % 20}/f{i}.conf", "fmt": f"# bench file {i}\nkey{i} = value{i}\n" * 4,
             "mode": 644, "uid": 0, "gid": 0}
    variables.append({"var_name": f"bench_file_{i}", "var_class": "file", "var_value": json.dumps(value),
                      "var_author": None, "var_updated": None, "id": None})
for i in range(nsysctl):
    with open(os.path.join(psys, f"k{i}"), "w") as f:
        f.write("0\n")
    value = {"key": f"bench.k{i}", "index": 0, "op": ">=", "value": 10}
    variables.append({"var_name": f"bench_sysctl_{i}", "var_class": "sysctl", "var_value": json.dumps(value),
                      "var_author": None, "var_updated": None, "id": None})
export = {
    "modulesets": [{"modset_name": "bench", "id": None, "modules": [{"modset_mod_name": "bench", "autofix": True}],
                    "modulesets": [], "rulesets": ["bench"], "publications": [], "responsibles": []}],
    "filtersets": [],
    "rulesets": [{"ruleset_name": "bench", "ruleset_type": "explicit", "ruleset_public": False, "fset_name": None,
                  "id": None, "rulesets": [], "variables": variables, "publications": [], "responsibles": []}],
}
with open(os.path.join(d, "policy.json"), "w") as f:
    json.dump(export, f)

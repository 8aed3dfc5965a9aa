#!/usr/bin/env python3
"""Differential comparison of Tenet's object classes with OpenSVC's own compliance objects.

Generates random cases per class (rules, a starting tree), runs them through an unmodified
checkout of OpenSVC's `var/compliance/com.opensvc/` objects (the oracle, given by path: nothing
of it is copied here) and through `tenet object CLASS PREFIX ACTION`, each on its own copy of
the tree, and compares: the check result, then the fix result and the tree it leaves, then
the check after fix. Every disagreement is either explained by a row of
docs/opensvc-compat.md (the row's id is printed) or counted as undocumented: a bug.

    python3 bench/compat/diff.py --upstream /path/to/opensvc/var/compliance/com.opensvc \
        [--tenet target/debug/tenet] [--cases 300] [--seed 1] [--class file ...] [--show 5]

Without --upstream (or $OPENSVC_COMPLIANCE_DIR) it prints a message and exits 0: nothing in
CI depends on it. Needs root (owners, mount namespaces), python3, dpkg and unshare.

How each class is run:
- file, fileprop, symlink, remove_files: rules name absolute paths inside a temporary
  directory (the upstream objects have no root prefix); Tenet runs with root `/`.
- sysctl: a fake kernel tree `R/proc/sys` and `R/etc/sysctl.conf`. Tenet runs with root R.
  OpenSVC runs in a private mount namespace where R/etc is bind-mounted over /etc, with a
  `sysctl` shim (written by this script) reading and writing R/proc/sys. Trees are compared
  by meaning: the live values and the value `sysctl --system` would apply for each key.
- package (check only: a fix would change the host): a dpkg status file R/var/lib/dpkg/status.
  OpenSVC calls `dpkg -l`, shimmed to the real dpkg with `--admindir=R/var/lib/dpkg`.
- nodeconf: OpenSVC drives `nodemgr get|set|unset`; a shim edits the same TOML file Tenet
  manages (R/node.toml), values stored as text as in OpenSVC's node.conf. Compared by meaning.
"""

import argparse
import fnmatch
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

PREFIX = "OSVC_COMP_DIFF_"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DOC = os.path.join(REPO, "docs", "opensvc-compat.md")

# ---------------------------------------------------------------------------------------------
# Shims the oracle calls instead of the host's tools (project-authored fakes).

SYSCTL_SHIM = r'''#!PYTHON
import os, sys
root = os.environ["FAKE_SYSCTL_ROOT"]
def proc(key):
    return os.path.join(root, "proc/sys", key.replace(".", "/"))
args = sys.argv[1:]
if args[:2] == ["-e", "-p"]:
    for line in open("/etc/sysctl.conf", encoding="utf-8", errors="replace"):
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        k, v = line.split("=", 1)
        k = k.strip().lstrip("-").strip()
        p = proc(k)
        if os.path.isfile(p):
            with open(p, "w") as f:
                f.write(" ".join(v.split()) + "\n")
    sys.exit(0)
key = args[0]
p = proc(key)
if not os.path.isfile(p):
    sys.stderr.write("sysctl: cannot stat %s: No such file or directory\n" % p)
    sys.exit(255)
print("%s = %s" % (key, open(p).read().strip("\n")))
'''

DPKG_SHIM = r'''#!/bin/sh
exec /usr/bin/dpkg --admindir="$FAKE_DPKG_ADMINDIR" "$@"
'''

NODEMGR_SHIM = r'''#!PYTHON
import os, sys, tomllib
path = os.environ["FAKE_NODE_CONFIG"]
try:
    data = tomllib.load(open(path, "rb"))
except FileNotFoundError:
    data = {}
args = sys.argv[1:]
param = args[args.index("--param") + 1]
section, _, option = param.partition(".")
def text(v):
    return ("true" if v else "false") if isinstance(v, bool) else str(v)
if args[0] == "get":
    if section in data and option in data[section]:
        print(text(data[section][option]))
        sys.exit(0)
    print("None")
    sys.exit(0)
if args[0] == "set":
    data.setdefault(section, {})[option] = args[args.index("--value") + 1]
elif args[0] == "unset":
    data.get(section, {}).pop(option, None)
def q(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
out = []
for s, t in data.items():
    out.append("[%s]" % q(s))
    for k, v in t.items():
        out.append("%s = %s" % (q(k), q(text(v))))
open(path, "w").write("\n".join(out) + "\n")
'''


# ---------------------------------------------------------------------------------------------
# Trees


def build(root, tree):
    """Creates a starting tree: entries (kind, relpath, ...) with {R} standing for root."""
    os.makedirs(root, exist_ok=True)
    for e in tree:
        kind, rel = e[0], e[1]
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if kind == "file":
            content, mode, owner = e[2], e[3], e[4]
            with open(p, "wb") as f:
                f.write(content.replace("{R}", root).encode())
            os.chmod(p, mode)
            os.lchown(p, owner, owner)
        elif kind == "dir":
            os.makedirs(p, exist_ok=True)
            os.chmod(p, e[2])
            os.lchown(p, e[3], e[3])
        elif kind == "link":
            os.symlink(e[2].replace("{R}", root), p)


def snapshot(root):
    """What a tree holds, with the root's own path replaced by {R}."""
    out = {}
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(d, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            fmt = st.st_mode & 0o170000
            attrs = (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid)
            if fmt == 0o120000:
                out[rel] = ("link", os.readlink(p).replace(root, "{R}"))
            elif fmt == 0o040000:
                out[rel] = ("dir",) + attrs
            elif fmt == 0o100000:
                data = open(p, "rb").read()
                text = data.replace(root.encode(), b"{R}")
                out[rel] = ("file", hashlib.sha256(text).hexdigest()[:12], len(data)) + attrs
            else:
                out[rel] = ("other",) + attrs
    return out


def tree_diff(a, b):
    lines = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            lines.append("  %s: opensvc %s / tenet %s" % (k, a.get(k), b.get(k)))
    return lines


# ---------------------------------------------------------------------------------------------
# Cases. A case: {"rules": [json value, ...], "tree": [...], "tags": set(), "fix": bool}.
# Tags name what a case contains that a documented deviation is about.

OWNERS = [0, 65534]


def pick(rng, weighted):
    items, weights = zip(*weighted)
    return rng.choices(items, weights=weights)[0]


def py_str(v):
    """Python's str() of a JSON scalar, as OpenSVC writes an integer fmt."""
    if isinstance(v, bool):
        return "True" if v else "False"
    return str(v)


FMTS = [("hello", 4), ("hello\n", 3), ("", 2), ("line1\nline2", 2), ("h\u00e9llo \u2713", 1),
        ("%%HOSTNAME%%.x", 1), ("a\r\nb\r\n", 1), (42, 2), (0, 1), (-7, 1), (True, 1),
        (2.5, 1), (100.0, 1), (1e16, 1), (1.5e-7, 1), (None, 1)]
MODES = [(None, 4), (644, 3), ("644", 2), ("0644", 2), ("0o600", 1), (600, 2), (755, 1),
         ("0755", 1), (4755, 1), (1777, 1), (640, 1), (0, 1), ("abc", 1), (999, 1)]
UIDS = [(None, 6), (0, 2), ("0", 1), ("root", 1), (65534, 2), ("nobody", 1), ("nosuchuser9", 1)]
GIDS = [(None, 6), (0, 2), ("root", 1), (65534, 2), ("nogroup", 1), ("nosuchgroup9", 1)]


def gen_start(rng, rel, want_content, tags, allow=("none", "same", "other", "dir", "link",
                                                    "dangling", "nonl")):
    """A starting state for the path `rel` (no trailing slash)."""
    kind = rng.choice(allow)
    mode = rng.choice([0o644, 0o600, 0o755])
    owner = rng.choice(OWNERS)
    if kind == "none":
        return []
    if kind == "same":
        return [("file", rel, want_content, mode, owner)]
    if kind == "nonl":
        return [("file", rel, want_content.rstrip("\n"), mode, owner)]
    if kind == "other":
        return [("file", rel, "something else\n", mode, owner)]
    if kind == "dir":
        return [("dir", rel, 0o755, owner), ("file", rel + "/inner", "x", 0o644, 0)]
    if kind == "link":
        tags.add("symlink-at-path")
        return [("file", rel + ".real", want_content, mode, owner), ("link", rel, "{R}/" + rel + ".real")]
    if kind == "dangling":
        tags.add("symlink-at-path")
        return [("link", rel, "{R}/nowhere/x")]
    raise AssertionError(kind)


def content_of(fmt):
    s = py_str(fmt) if fmt is not None else ""
    s = s.replace("%%HOSTNAME%%", os.uname().nodename)
    return s if s.endswith("\n") else s + "\n"


def gen_file(rng):
    tags = set()
    rules, tree = [], [("dir", "a", 0o755, 0)]
    for n in range(pick(rng, [(1, 5), (2, 1)])):
        rel = pick(rng, [("a/f%d" % n, 6), ("a/new%d/deep/f" % n, 1), ("a/d%d/" % n, 2)])
        rule = {"path": "{R}/" + rel}
        if rel.endswith("/"):
            tree += gen_start(rng, rel.rstrip("/"), "", tags, ("none", "dir", "dir", "other", "link"))
            if rng.random() < 0.15:
                rule["fmt"] = "ignored"
                tags.add("fmt-on-directory")
        else:
            fmt = pick(rng, FMTS)
            if isinstance(fmt, float):
                tags.add("float-fmt")
                tags.add("bad-rule")
            if fmt is None:
                tags.add("bad-rule")
            rule["fmt"] = fmt
            if fmt is not None:
                tree += gen_start(rng, rel, content_of(fmt), tags)
            if rng.random() < 0.05:
                del rule["fmt"]
                tags.add("no-content")
        for field, table in (("mode", MODES), ("uid", UIDS), ("gid", GIDS)):
            v = pick(rng, table)
            if v is not None:
                rule[field] = v
        if rule.get("mode") in ("abc", 999):
            tags.add("malformed-mode")
        base = rel.rstrip("/")
        if any(e[1] == base and e[0] == ("file" if rel.endswith("/") else "dir") for e in tree):
            tags.add("wrong-kind")
        if str(rule.get("mode", "")).lstrip("0o")[:1] in ("2", "4", "6") and len(str(rule.get("mode")).lstrip("0o")) == 4 \
                and ("uid" in rule or "gid" in rule):
            tags.add("setuid")
        if rule.get("uid") == "nosuchuser9" or rule.get("gid") == "nosuchgroup9":
            tags.add("unknown-owner")
        if "new" in rel and ("uid" in rule or "gid" in rule):
            tags.add("parent-owner")
        rules.append(rule)
    return {"rules": rules, "tree": tree, "tags": tags, "fix": True}


def gen_fileprop(rng):
    tags = set()
    rules, tree = [], [("dir", "a", 0o755, 0)]
    for n in range(pick(rng, [(1, 5), (2, 1)])):
        rel = pick(rng, [("a/f%d" % n, 5), ("a/new%d/f" % n, 1), ("a/d%d/" % n, 3)])
        rule = {"path": "{R}/" + rel}
        if rel.endswith("/"):
            tree += gen_start(rng, rel.rstrip("/"), "", tags, ("none", "dir", "dir", "other", "link"))
            if any(e[0] == "file" and e[1] == rel.rstrip("/") for e in tree):
                tags.add("file-where-directory")
        else:
            tree += gen_start(rng, rel, "content\n", tags, ("none", "same", "same", "dir", "link", "dangling"))
        for field, table in (("mode", MODES), ("uid", UIDS), ("gid", GIDS)):
            v = pick(rng, table)
            if v is not None:
                rule[field] = v
        if "mode" in rule:
            tags.add("fileprop-mode")
        if "uid" in rule or "gid" in rule:
            tags.add("fileprop-owner")
        if rule.get("mode") in ("abc", 999):
            tags.add("malformed-mode")
        rules.append(rule)
    return {"rules": rules, "tree": tree, "tags": tags, "fix": True}


def gen_symlink(rng):
    tags = set()
    tree = [("dir", "a", 0o755, 0), ("file", "a/t1", "t1\n", 0o644, 0), ("file", "a/file", "f\n", 0o644, 0)]
    rel = pick(rng, [("a/l", 8), ("a/n/m/l", 1), ("a/file/l", 1), ("a/l/", 1)])
    target = pick(rng, [("t1", 3), ("../a/t1", 1), ("{R}/a/t1", 2), ("{R}/a/t2", 1), ("missing", 1)])
    if rel.endswith("/"):
        tags.add("trailing-slash")
    start = pick(rng, [("none", 4), ("same", 3), ("other", 3), ("file", 1), ("dir", 1)])
    base = rel.rstrip("/")
    if rel.startswith("a/l"):
        if start == "same":
            tree.append(("link", base, target))
        elif start == "other":
            tree.append(("link", base, pick(rng, [("t2", 1), ("{R}/a/t1x", 1)])))
            tags.add("wrong-target")
        elif start == "file":
            tree.append(("file", base, "data\n", 0o644, 0))
        elif start == "dir":
            tree.append(("dir", base, 0o755, 0))
    rule = {"symlink": "{R}/" + rel, "target": target}
    return {"rules": [rule], "tree": tree, "tags": tags, "fix": True}


def gen_remove_files(rng):
    tags = set()
    tree = [("dir", "a", 0o755, 0)]
    entries = {
        "f1": [("file", "a/f1", "1", 0o644, 0)],
        "f2": [("file", "a/f2", "2", 0o644, 0)],
        "hidden": [("file", "a/.h", "h", 0o644, 0)],
        "d1": [("dir", "a/d1", 0o755, 0), ("file", "a/d1/x", "x", 0o644, 0)],
        "d2": [("dir", "a/d2", 0o755, 0)],
        "dfile": [("file", "a/dfile", "data", 0o644, 0)],
        "sl": [("link", "a/sl", "f1")],
        "dl": [("link", "a/dl", "gone")],
        "dsl": [("dir", "b", 0o755, 0), ("file", "b/y", "y", 0o644, 0), ("link", "a/dsl", "../b")],
    }
    present = [k for k in entries if rng.random() < 0.6]
    for k in present:
        tree += entries[k]
    pats = ["a/f1", "a/f*", "a/*", "a/d*/", "a/dfile/", "a/.h*", "a/*/x", "a/dsl/*", "a/dsl/",
            "a/dsl", "a/nomatch*", "a/?1", "a/[fd]1", "a/**", "a/dl", "a/sl", "a/*/"]
    rules = ["{R}/" + p for p in rng.sample(pats, pick(rng, [(1, 4), (2, 1)]))]
    # A link that dangles, or will once the same fix removed its target.
    matched = lambda rel: any(fnmatch.fnmatchcase(rel, r[len("{R}/"):].replace("**", "*")) and
                              not (rel.rsplit("/", 1)[-1].startswith(".")) for r in rules)
    if "dl" in present and matched("a/dl"):
        tags.add("dangling-link")
    if "sl" in present and matched("a/sl") and ("f1" not in present or matched("a/f1")):
        tags.add("dangling-link")
    if "dsl" in present and any(r.endswith(("dsl/*", "dsl/", "a/*/", "a/d*/", "a/*/x")) for r in rules):
        tags.add("through-dir-link")
    if rng.random() < 0.15:
        rules = rules[0]
    return {"rules": [rules] if isinstance(rules, list) else [rules], "tree": tree, "tags": tags, "fix": True}


SYSCTL_KEYS = {"fake.one": 1, "fake.range": 3, "fake.word": 1}


def sysctl_value(rng, key, near=None):
    if key == "fake.word":
        return rng.choice(["cubic", "bbr", "reno"])
    return str(rng.choice([0, 1, 5, 10, 20, 100]) if near is None else near)


def gen_sysctl(rng):
    tags = set()
    tree = [("dir", "etc", 0o755, 0)]
    live = {}
    for key, n in SYSCTL_KEYS.items():
        vals = [sysctl_value(rng, key) for _ in range(n)]
        live[key] = vals
        tree.append(("file", "proc/sys/" + key.replace(".", "/"), "\t".join(vals) + "\n", 0o644, 0))
    if rng.random() < 0.92:
        lines = ["# sysctl.conf"]
        for key, n in SYSCTL_KEYS.items():
            r = rng.random()
            if r < 0.25:
                continue
            vals = list(live[key]) if r < 0.6 else [sysctl_value(rng, key) for _ in range(n)]
            sep = rng.choice([" = ", "=", "  =  "])
            lines.append("%s%s%s" % (key, sep, " ".join(vals)))
        if rng.random() < 0.2:
            lines.append("fake.unknown = 3")
        tree.append(("file", "etc/sysctl.conf", "\n".join(lines) + "\n", 0o644, 0))
    else:
        tags.add("no-sysctl-conf")
    key = pick(rng, [("fake.one", 4), ("fake.range", 3), ("fake.word", 2), ("fake.unknown", 1)])
    if key == "fake.unknown":
        tags.add("unknown-key")
    form = pick(rng, [("dict", 5), ("list", 2), ("flat", 2), ("partial", 1)])
    word = key == "fake.word"

    def target():
        if word:
            return rng.choice(["cubic", "bbr"])
        v = rng.choice([0, 1, 5, 10, 20, 100])
        return pick(rng, [(v, 4), (str(v), 1), ("0%d" % v, 1 if v else 0)])

    def op():
        return pick(rng, [("=", 5), (">=", 2 if not word else 0), ("<=", 2 if not word else 0), (">", 1)])

    if form == "dict":
        o, t = op(), target()
        rule = {"key": key, "index": rng.choice([0, 0, 1, 2]) if key == "fake.range" else 0, "op": o, "value": t}
    elif form == "partial":
        rule = {"key": key, "value": target()}
        tags.add("partial-rule")
        o, t = "=", rule["value"]
    elif form == "list":
        pairs = [[op(), target()] for _ in range(rng.choice([1, 2, 3]) if key == "fake.range" else 1)]
        rule = {"key": key, "value": pairs}
        for o, t in pairs:
            if o in (">=", "<=") and isinstance(t, str):
                tags.add("ge-string")
            if o in (">", "<"):
                tags.add("strict-op")
            if isinstance(t, str) and t.startswith("0") and len(t) > 1:
                tags.add("leading-zero")
            if o in (">=", "<="):
                tags.add("inequality")
        o, t = "=", 0
    else:
        o, t = op(), target()
        rule = {"key": key, "value": [o, t]}
    if o in (">=", "<=") and isinstance(t, str):
        tags.add("ge-string")
    if o in (">", "<"):
        tags.add("strict-op")
    if isinstance(t, str) and t.startswith("0") and len(t) > 1:
        tags.add("leading-zero")
    if o in (">=", "<="):
        tags.add("inequality")
    return {"rules": [rule], "tree": tree, "tags": tags, "fix": True, "keys": [key]}


DPKG_STATES = [("install ok installed", 6), ("hold ok installed", 1), ("deinstall ok installed", 1),
               ("install ok triggers-awaited", 1), ("install ok triggers-pending", 1),
               ("install ok half-configured", 1), ("install ok unpacked", 1),
               ("deinstall ok config-files", 1), ("install reinstreq half-installed", 1),
               ("purge ok not-installed", 1)]


def gen_package(rng):
    tags = set()
    stanzas = []
    names = ["pa", "pb", "pc", "pd", "pe"]
    for n in names:
        if rng.random() < 0.25:
            continue
        state = pick(rng, DPKG_STATES)
        archs = pick(rng, [(["amd64"], 4), (["all"], 1), (["i386"], 1), (["amd64", "i386"], 1)])
        for a in archs:
            stanza = ("Package: %s\nStatus: %s\nMaintainer: t <t@example.org>\nArchitecture: %s\n"
                      "Version: 1.0\nDescription: test\n" % (n, state, a))
            if len(archs) > 1:
                stanza += "Multi-Arch: same\n"
            if "triggers-awaited" in state:
                stanza += "Triggers-Awaited: pa\n"
            if "triggers-pending" in state:
                stanza += "Triggers-Pending: some-trigger\n"
            stanzas.append(stanza)
    tree = [("file", "var/lib/dpkg/status", "\n".join(stanzas), 0o644, 0),
            ("file", "var/lib/dpkg/available", "", 0o644, 0),
            ("dir", "var/lib/dpkg/info", 0o755, 0), ("dir", "var/lib/dpkg/updates", 0o755, 0)]
    status_text = "\n".join(stanzas)
    rule = []
    for n in rng.sample(names + ["zz"], rng.choice([1, 1, 2, 3])):
        sign = pick(rng, [("", 4), ("+", 1), ("-", 2)])
        arch = pick(rng, [("", 6), (":amd64", 1), (":i386", 1)])
        rule.append(sign + n + arch)
        if arch:
            tags.add("arch-qualifier")
        for state, _ in DPKG_STATES:
            if ("Package: %s\nStatus: %s" % (n, state)) in status_text and not state.startswith("install ok installed"):
                if state.endswith(" installed") or "triggers" in state:
                    tags.add("installed-not-ii")
    value = rule if len(rule) > 1 or rng.random() < 0.7 else rule[0]
    return {"rules": [value], "tree": tree, "tags": tags, "fix": False}


def gen_nodeconf(rng):
    tags = set()
    tree = []
    keys = ["node.a", "node.b", "sec.c"]
    current = {}
    if rng.random() < 0.85:
        lines = []
        for sec in ("node", "sec"):
            lines.append("[%s]" % sec)
            for k in keys:
                s, o = k.split(".")
                if s != sec or rng.random() < 0.3:
                    continue
                v = pick(rng, [(5, 2), (10, 2), ('"5"', 1), ('"text"', 1), ("true", 1)])
                current[k] = v
                lines.append("%s = %s" % (o, v))
        tree.append(("file", "node.toml", "\n".join(lines) + "\n", 0o600, 0))
    rules = []
    for k in rng.sample(keys, rng.choice([1, 1, 2])):
        op = pick(rng, [("=", 5), (">=", 2), ("<=", 2), ("unset", 2)])
        v = pick(rng, [(5, 3), (10, 2), ("5", 1), ("text", 1), (True, 1), ("true", 1)])
        rule = {"key": k, "op": op, "value": v}
        if op == "=" and rng.random() < 0.3:
            del rule["op"]
        if op == "unset" and rng.random() < 0.5:
            del rule["value"]
            tags.add("unset-without-value")
        if isinstance(v, bool) or current.get(k) == "true":
            tags.add("boolean")
        if op in (">=", "<=") and isinstance(v, str):
            tags.add("ge-string")
        rules.append(rule)
    return {"rules": [rules if len(rules) > 1 else rules[0]], "tree": tree, "tags": tags, "fix": True}


# ---------------------------------------------------------------------------------------------
# Classes: generator, upstream script, how the tree is compared, and the documented
# deviations (doc ids) a disagreement may be explained by.

CLASSES = {
    "file": {"script": "file.py", "gen": gen_file, "rooted": False},
    "fileprop": {"script": "fileprop.py", "gen": gen_fileprop, "rooted": False},
    "symlink": {"script": "symlink.py", "gen": gen_symlink, "rooted": False},
    "remove_files": {"script": "remove_files.py", "gen": gen_remove_files, "rooted": False},
    "sysctl": {"script": "sysctl.py", "gen": gen_sysctl, "rooted": True},
    "package": {"script": "package.py", "gen": gen_package, "rooted": True},
    "nodeconf": {"script": "nodeconf.py", "gen": gen_nodeconf, "rooted": True},
    # Issue 14's classes: compatibility tables only (no random generator yet). `binds`: the
    # root's directories bind-mounted over the host's for the upstream object, which has no
    # root prefix (cron.py and crontabentry.py read /etc/cron.d and the cron spool).
    "keyval": {"script": "keyval.py", "gen": None, "rooted": False},
    "fileinc": {"script": "fileinc.py", "gen": None, "rooted": False},
    "tar": {"script": "tar.py", "gen": None, "rooted": False},
    "self_signed_cert": {"script": "self_signed_cert.py", "gen": None, "rooted": False},
    "process": {"script": "process.py", "gen": None, "rooted": False},
    "vuln": {"script": "vuln.py", "gen": None, "rooted": True},
    "cron": {"script": "cron.py", "gen": None, "rooted": True, "binds": ["etc", "var/spool"],
             "raw": True},
    "crontabentry": {"script": "crontabentry.py", "gen": None, "rooted": True,
                     "binds": ["etc", "var/spool"]},
    "timedatectl": {"script": "timedatectl.py", "gen": None, "rooted": True, "binds": ["etc"]},
    # (systemd_unit_state.json is not here: its upstream object needs a running systemd.)
}

# tag → documented deviation id (docs/opensvc-compat.md), per class; "bad-rule" (a rule that
# makes the upstream object crash, taking its other rules down) applies to every class.
DEVIATIONS = {
    "file": {"symlink-at-path": "file-symlink", "float-fmt": "file-float-fmt",
             "malformed-mode": "file-malformed",
             "unknown-owner": "file-unknown-owner", "fmt-on-directory": "file-dir-content",
             "no-content": "file-no-content", "parent-owner": "file-parent-owner",
             "wrong-kind": "file-wrong-kind", "setuid": "file-setuid"},
    "fileprop": {"fileprop-mode": "fileprop-mode", "fileprop-owner": "fileprop-owner",
                 "symlink-at-path": "fileprop-symlink", "file-where-directory": "fileprop-no-delete",
                 "malformed-mode": "file-malformed"},
    "symlink": {"wrong-target": "symlink-replace", "trailing-slash": "symlink-trailing-slash"},
    "remove_files": {"dangling-link": "remove-dangling", "through-dir-link": "remove-dir-link"},
    "sysctl": {"no-sysctl-conf": "sysctl-conf-file", "unknown-key": "sysctl-unknown-key",
               "ge-string": "sysctl-ge-string", "strict-op": "sysctl-strict-op",
               "partial-rule": "sysctl-defaults", "leading-zero": "sysctl-numeric-eq",
               "inequality": "sysctl-keep-compliant", "reload-scope": "sysctl-reload-scope"},
    "package": {"installed-not-ii": "package-states", "arch-qualifier": "package-arch"},
    "nodeconf": {"boolean": "nodeconf-boolean", "ge-string": "nodeconf-ge-string",
                 "unset-without-value": "nodeconf-unset"},
}


class Runner:
    def __init__(self, upstream, tenet, work):
        self.upstream = upstream
        self.tenet = tenet
        self.work = work
        self.shims = os.path.join(work, "shims")
        os.makedirs(self.shims, exist_ok=True)
        for name, text in (("sysctl", SYSCTL_SHIM), ("dpkg", DPKG_SHIM), ("nodemgr", NODEMGR_SHIM)):
            p = os.path.join(self.shims, name)
            with open(p, "w") as f:
                f.write(text.replace("#!PYTHON", "#!" + sys.executable))
            os.chmod(p, 0o755)

    def env(self, rules, root, raw=False):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
               "LC_ALL": "C.UTF-8", "COLUMNS": "200"}
        for i, rule in enumerate(rules):
            # cron.py reads its variables raw (the collector's `cron` form is a template
            # string, not JSON); the others decode JSON.
            text = rule if raw and isinstance(rule, str) else json.dumps(rule)
            env["%s%d" % (PREFIX, i + 1)] = text.replace("{R}", root)
        return env

    def run(self, side, cls, case, root, action, tenet=None):
        spec = CLASSES[cls]
        env = self.env(case["rules"], root, raw=spec.get("raw", False))
        if side == "opensvc":
            env["PATH"] = self.shims + ":" + env["PATH"]
            env["FAKE_SYSCTL_ROOT"] = root
            env["FAKE_DPKG_ADMINDIR"] = os.path.join(root, "var/lib/dpkg")
            env["FAKE_NODE_CONFIG"] = os.path.join(root, "node.toml")
            env["OSVC_COMP_NODES_OS_VENDOR"] = "Debian"
            cmd = [sys.executable, os.path.join(self.upstream, spec["script"]), PREFIX, action]
            binds = ["etc"] if cls == "sysctl" else spec.get("binds", [])
            if binds:
                script = "; ".join('mount --bind "%s" /%s' % (os.path.join(root, b), b) for b in binds)
                cmd = ["unshare", "-m", "--propagation", "private", "sh", "-ec",
                       script + '; exec "$@"', "sh"] + cmd
        else:
            env["TENET_VAR_DIR"] = os.path.join(os.path.dirname(root), "var-" + os.path.basename(root))
            if spec["rooted"]:
                env["TENET_ROOT"] = root
            env["TENET_NODE_CONFIG"] = os.path.join(root, "node.toml")
            cmd = [tenet or self.tenet, "object", cls, PREFIX, action]
        p = subprocess.run(cmd, env=env, capture_output=True, timeout=120, cwd=os.path.dirname(root),
                           preexec_fn=lambda: os.umask(0o022))
        return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


def sysctl_state(root, keys):
    """Live values and what `sysctl --system` would apply, per key."""
    def conf_lines():
        files = []
        for d in ("etc/sysctl.d", "run/sysctl.d", "usr/local/lib/sysctl.d", "usr/lib/sysctl.d", "lib/sysctl.d"):
            p = os.path.join(root, d)
            if os.path.isdir(p):
                files += [(n, os.path.join(p, n)) for n in os.listdir(p) if n.endswith(".conf")]
        seen, ordered = set(), []
        for n, p in sorted(files, key=lambda x: x[0]):
            if n not in seen:
                seen.add(n)
                ordered.append(p)
        ordered.append(os.path.join(root, "etc/sysctl.conf"))
        for p in ordered:
            if os.path.isfile(p):
                yield from open(p, encoding="utf-8", errors="replace").read().splitlines()

    state = {}
    for key in keys or SYSCTL_KEYS:
        p = os.path.join(root, "proc/sys", key.replace(".", "/"))
        state[key + " live"] = " ".join(open(p).read().split()) if os.path.exists(p) else None
        val = None
        for line in conf_lines():
            line = line.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            k, v = line.split("=", 1)
            if k.strip().lstrip("-").strip() == key:
                val = " ".join(v.split())
        state[key + " persisted"] = val
    return state


def nodeconf_state(root):
    p = os.path.join(root, "node.toml")
    try:
        data = tomllib.load(open(p, "rb"))
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as e:
        return {"error": str(e)}

    def text(v):
        return ("true" if v else "false") if isinstance(v, bool) else str(v)
    return {"%s.%s" % (s, k): text(v) for s, t in data.items() for k, v in t.items()}


def state(cls, root, case):
    if cls == "sysctl":
        return sysctl_state(root, [])
    if cls == "nodeconf":
        return nodeconf_state(root)
    return snapshot(root)


for _ids in DEVIATIONS.values():
    _ids["bad-rule"] = "general-bad-rule"


def run_case(runner, cls, case, n, tenets):
    """Runs a case through OpenSVC and each Tenet binary of `tenets` (label -> path)."""
    out = {}
    base = os.path.join(runner.work, "%s-%d" % (cls, n))
    for side in ["opensvc"] + list(tenets):
        root = os.path.join(base, side)
        build(root, case["tree"])
        r = {}
        binary = tenets.get(side)
        r["check"], r["check_log"] = runner.run(side, cls, case, root, "check", binary)
        if case["fix"]:
            r["fix"], r["fix_log"] = runner.run(side, cls, case, root, "fix", binary)
            r["tree"] = state(cls, root, case)
            r["recheck"], r["recheck_log"] = runner.run(side, cls, case, root, "check", binary)
        out[side] = r
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(os.path.join(base, "var-" + side), ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)
    return out


def compare(case, res):
    """The aspects on which OpenSVC and Tenet disagree."""
    o, t = res["opensvc"], res["tenet"]
    bad = []
    if o["check"] != t["check"]:
        bad.append("check")
    if case["fix"]:
        if o["fix"] != t["fix"] or o["tree"] != t["tree"]:
            bad.append("fix")
        if "keys" in case and o["tree"] != t["tree"]:
            # OpenSVC's reload (`sysctl -e -p`) also applies the file's other keys.
            differ = [k for k in o["tree"] if o["tree"][k] != t["tree"].get(k)]
            if differ and all(k.split(" ")[0] not in case["keys"] for k in differ):
                case["tags"].add("reload-scope")
        if o["recheck"] != t["recheck"]:
            bad.append("recheck")
    return bad


# ---------------------------------------------------------------------------------------------
# Tables: modules/tests/fixtures/opensvc-compat/<class>.json, the rows the Rust test
# (modules/tests/opensvc_compat.rs) runs through Tenet. Here their `opensvc` part is checked
# against the upstream objects themselves.


def parse_entry(entry):
    kind, rest = entry[0], entry[2:]
    if kind == "l":
        path, target = rest.split(" -> ", 1)
        return path, {"kind": "l", "mode": None, "owner": None, "data": target}
    data = ""
    if kind == "f":
        rest, data = rest.split(" =", 1)
    words = rest.split(" ")
    node = {"kind": kind, "mode": None, "owner": None, "data": data}
    for w in words[1:]:
        if ":" in w:
            u, g = w.split(":")
            node["owner"] = (int(u), int(g))
        else:
            node["mode"] = int(w, 8)
    return words[0], node


def table_build(root, tree):
    os.makedirs(root, exist_ok=True)
    for entry in tree:
        path, n = parse_entry(entry)
        p = os.path.join(root, path)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if n["kind"] == "d":
            os.makedirs(p, exist_ok=True)
            os.chmod(p, n["mode"] if n["mode"] is not None else 0o755)
        elif n["kind"] == "f":
            with open(p, "wb") as f:
                f.write(n["data"].encode())
            os.chmod(p, n["mode"] if n["mode"] is not None else 0o644)
        else:
            os.symlink(n["data"].replace("{R}", root), p)
        if n["owner"]:
            os.lchown(p, *n["owner"])


def table_tree(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            fmt = st.st_mode & 0o170000
            rel = os.path.relpath(p, root)
            if fmt == 0o120000:
                out[rel] = {"kind": "l", "mode": None, "owner": None, "data": os.readlink(p).replace(root, "{R}")}
            elif fmt == 0o040000:
                out[rel] = {"kind": "d", "mode": st.st_mode & 0o7777, "owner": (st.st_uid, st.st_gid), "data": ""}
            else:
                data = open(p, "rb").read().decode(errors="replace") if fmt == 0o100000 else ""
                out[rel] = {"kind": "f" if fmt == 0o100000 else "?", "mode": st.st_mode & 0o7777,
                            "owner": (st.st_uid, st.st_gid), "data": data}
    return out


def table_tree_diff(want, have):
    wmap = {}
    for entry in want:
        path, n = parse_entry(entry)
        if n["kind"] != "l" and n["mode"] is None:
            n["mode"] = 0o755 if n["kind"] == "d" else 0o644
        wmap[path] = n
    out = []
    for path, w in sorted(wmap.items()):
        h = have.get(path)
        if h is None:
            out.append("%s: missing, expected %s" % (path, w))
        elif (h["kind"], h["data"], h["mode"]) != (w["kind"], w["data"], w["mode"]) or \
                (w["owner"] is not None and tuple(h["owner"]) != tuple(w["owner"])):
            out.append("%s: %s, expected %s" % (path, h, w))
    for path, h in sorted(have.items()):
        if path not in wmap:
            out.append("%s: unexpected %s" % (path, h))
    return out


def run_tables(runner, tables_dir, classes):
    """Checks every row's `opensvc` part against the upstream objects; returns the count of
    rows that disagree."""
    names = {"ok": 0, "nok": 1, "n/a": 2}
    bad_rows = 0
    total = 0
    for cls in classes:
        path = os.path.join(tables_dir, cls + ".json")
        if not os.path.exists(path):
            continue
        table = json.load(open(path))
        for i, row in enumerate(table["rows"]):
            total += 1
            want = row["opensvc"]
            root = os.path.join(runner.work, "table-%s-%d" % (cls, i), "root")
            table_build(root, row["tree"])
            case = {"rules": [row["rule"]], "keys": []}
            problems = []
            logs = []
            rc, log = runner.run("opensvc", cls, case, root, "check")
            logs.append(("check", log))
            if rc != names[want["check"]]:
                problems.append("check %s, row says %s" % (rc, want["check"]))
            if "fix" in want:
                rc, log = runner.run("opensvc", cls, case, root, "fix")
                logs.append(("fix", log))
                if rc != names[want["fix"]]:
                    problems.append("fix %s, row says %s" % (rc, want["fix"]))
                if "tree" in want:
                    problems += ["after fix, " + d for d in table_tree_diff(want["tree"], table_tree(root))]
                if "state" in want:
                    if cls == "sysctl":
                        keys = sorted({k.rsplit(" ", 1)[0] for k in want["state"]})
                        have = sysctl_state(root, keys)
                    else:
                        have = nodeconf_state(root)
                    if have != want["state"]:
                        problems.append("after fix, state %s, row says %s" % (have, want["state"]))
                if "recheck" in want:
                    rc, log = runner.run("opensvc", cls, case, root, "check")
                    logs.append(("recheck", log))
                    if rc != names[want["recheck"]]:
                        problems.append("check after fix %s, row says %s" % (rc, want["recheck"]))
            shutil.rmtree(os.path.dirname(root), ignore_errors=True)
            if problems:
                bad_rows += 1
                print("=== table %s row %d %r: OpenSVC does not do what the row says" % (cls, i, row["name"]))
                for p in problems:
                    print("  " + p)
                for step, log in logs:
                    if log.strip():
                        print("  [%s] %s" % (step, log.strip().replace("\n", "\n      ")[:1200]))
    print("tables: %d rows, %d where OpenSVC disagrees with the row" % (total, bad_rows))
    return bad_rows


def documented_ids():
    try:
        text = open(DOC, encoding="utf-8").read()
    except FileNotFoundError:
        return set()
    return set(re.findall(r"`#([a-z0-9-]+)`", text))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", default=os.environ.get("OPENSVC_COMPLIANCE_DIR"),
                    help="an OpenSVC checkout's var/compliance/com.opensvc directory")
    ap.add_argument("--tenet", default=os.path.join(REPO, "target/debug/tenet"))
    ap.add_argument("--cases", type=int, default=200, help="cases per class")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--class", dest="classes", action="append", choices=sorted(CLASSES))
    ap.add_argument("--show", type=int, default=3, help="undocumented disagreements shown per class")
    ap.add_argument("--show-documented", action="store_true", help="also show documented ones")
    ap.add_argument("--baseline", metavar="BIN",
                    help="another tenet binary (an older build) run on the same cases, for before/after figures")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--dump", metavar="FILE", help="write every case and its results (JSON lines)")
    ap.add_argument("--tables", metavar="DIR", nargs="?", const=os.path.join(REPO, "modules/tests/fixtures/opensvc-compat"),
                    help="instead of random cases, check the compatibility tables' OpenSVC columns "
                         "(default DIR: modules/tests/fixtures/opensvc-compat)")
    args = ap.parse_args()
    if not args.upstream or not os.path.isfile(os.path.join(args.upstream, "comp.py")):
        print("compat diff: skipped: give --upstream (or OPENSVC_COMPLIANCE_DIR), an OpenSVC "
              "var/compliance/com.opensvc directory")
        return 0
    if os.geteuid() != 0:
        print("compat diff: skipped: needs root (owners, mount namespaces)")
        return 0
    ids = documented_ids()
    if args.tables:
        with tempfile.TemporaryDirectory(prefix="tenet-compat-") as work:
            runner = Runner(os.path.abspath(args.upstream), os.path.abspath(args.tenet), work)
            return 1 if run_tables(runner, args.tables, args.classes or list(CLASSES)) else 0
    tenets = {"tenet": os.path.abspath(args.tenet)}
    if args.baseline:
        tenets["baseline"] = os.path.abspath(args.baseline)
    figures = {label: {} for label in tenets}
    header = "%-9s %-13s %6s %13s %13s %11s %13s" % ("tenet", "class", "cases", "check agree",
                                                     "fix agree", "documented", "undocumented")
    if not args.json:
        print(header, flush=True)
    dump = open(args.dump, "w") if args.dump else None
    with tempfile.TemporaryDirectory(prefix="tenet-compat-") as work:
        runner = Runner(os.path.abspath(args.upstream), os.path.abspath(args.tenet), work)
        for cls in args.classes or [c for c in CLASSES if CLASSES[c]["gen"]]:
            if not CLASSES[cls]["gen"]:
                print("%s: no random cases (compatibility tables only: --tables)" % cls)
                continue
            rng = random.Random("%s-%d" % (cls, args.seed))
            figs = {label: {"cases": 0, "check_agree": 0, "fix_cases": 0, "fix_agree": 0,
                            "agree": 0, "documented": {}, "undocumented": 0} for label in tenets}
            shown = 0
            for n in range(args.cases):
                case = CLASSES[cls]["gen"](rng)
                res = run_case(runner, cls, case, n, tenets)
                if dump:
                    dump.write(json.dumps({"class": cls, "n": n, "case": dict(case, tags=sorted(case["tags"])),
                                           "results": res}, default=str) + "\n")
                for label, fig in figs.items():
                    case_l = dict(case, tags=set(case["tags"]))
                    pair = {"opensvc": res["opensvc"], "tenet": res[label]}
                    bad = compare(case_l, pair)
                    fig["cases"] += 1
                    fig["check_agree"] += "check" not in bad
                    if case["fix"]:
                        fig["fix_cases"] += 1
                        fig["fix_agree"] += "fix" not in bad and "recheck" not in bad
                    if not bad:
                        fig["agree"] += 1
                        continue
                    why = sorted({DEVIATIONS[cls][t] for t in case_l["tags"] if t in DEVIATIONS[cls]})
                    missing = [w for w in why if w not in ids]
                    if why and not missing:
                        for w in why:
                            fig["documented"][w] = fig["documented"].get(w, 0) + 1
                        if not args.show_documented:
                            continue
                    else:
                        fig["undocumented"] += 1
                    if label == "tenet" and (shown < args.show or (why and args.show_documented)):
                        shown += 1
                        report(cls, n, case_l, pair, bad, why, missing)
            for label, f in figs.items():
                figures[label][cls] = f
                if not args.json:
                    pct = lambda a, b: "%d/%d" % (a, b) if b else "-"
                    print("%-9s %-13s %6d %13s %13s %11d %13d" % (
                        label, cls, f["cases"], pct(f["check_agree"], f["cases"]),
                        pct(f["fix_agree"], f["fix_cases"]), f["cases"] - f["agree"] - f["undocumented"],
                        f["undocumented"]), flush=True)
                    if f["documented"] and label == "tenet":
                        print("    documented deviations: " + ", ".join(
                            "%s %d" % kv for kv in sorted(f["documented"].items())), flush=True)
    if args.json:
        print(json.dumps(figures, indent=2))
    return 1 if any(f["undocumented"] for f in figures["tenet"].values()) else 0


def report(cls, n, case, res, bad, why, missing):
    o, t = res["opensvc"], res["tenet"]
    print("=== %s case %d: disagree on %s%s" % (cls, n, ", ".join(bad),
          " (documented: %s)" % ", ".join(why) if why and not missing else
          " (tags %s, undocumented ids %s)" % (sorted(case["tags"]), missing) if why else ""))
    print("rules: %s" % json.dumps(case["rules"]))
    print("tree: %s" % json.dumps(case["tree"]))
    for step in ("check", "fix", "recheck"):
        if step in o:
            print("%s: opensvc %s / tenet %s" % (step, o[step], t[step]))
    if case["fix"] and o["tree"] != t["tree"]:
        if isinstance(o["tree"], dict):
            print("\n".join(tree_diff(o["tree"], t["tree"])))
    for side, r in res.items():
        for step in ("check", "fix"):
            log = r.get(step + "_log", "").strip()
            if log:
                print("  [%s %s] %s" % (side, step, log.replace("\n", "\n      ")[:1500]))
    print()


if __name__ == "__main__":
    sys.exit(main())

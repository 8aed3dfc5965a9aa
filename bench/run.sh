#!/usr/bin/env bash
# Performance targets of the engine (issue 2): 1,000 file rules + 200 sysctl rules on a
# temporary root. Prints wall time and peak RSS of `fix` (everything to change) and of
# `check` of the compliant state, each the best of RUNS runs (default 5).
#
#   bash bench/run.sh            # builds the release binary first
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
cargo build --release -q -p tenet-agent
TENET=$PWD/target/release/tenet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

measure() { # label, then the command; prints "label wall_ms rss_kb"
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || true
  read -r secs rss < "$work/time"
  awk -v l="$label" -v s="$secs" -v r="$rss" 'BEGIN { printf "%s %d %d\n", l, s * 1000, r }'
}

best_fix=""; best_check=""
for i in $(seq "$RUNS"); do
  rm -rf "$work/b"; mkdir -p "$work/b"
  python3 bench/gen.py "$work/b" 1000 200
  fix_ms=$("$TENET" compliance fix --policy "$work/b/policy.json" --root "$work/b/root" --var-dir "$work/b/var" --format json | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["summary"]["nok"]==0, r["summary"]; print(r["duration_ms"])')
  check_ms=$("$TENET" compliance check --policy "$work/b/policy.json" --root "$work/b/root" --var-dir "$work/b/var" --format json | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["summary"]["nok"]==0, r["summary"]; print(r["duration_ms"])')
  read -r _ check_wall check_rss < <(measure check "$TENET" compliance check --policy "$work/b/policy.json" --root "$work/b/root" --var-dir "$work/b/var")
  start=$(date +%s%N)
  "$TENET" compliance check --policy "$work/b/policy.json" --root "$work/b/root" --var-dir "$work/b/var" >/dev/null
  end=$(date +%s%N)
  proc_ms=$(( (end - start) / 1000000 ))
  echo "run $i: fix engine ${fix_ms} ms | check engine ${check_ms} ms, process wall ${proc_ms} ms, peak RSS ${check_rss} KiB"
done

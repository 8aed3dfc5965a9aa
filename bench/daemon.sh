#!/usr/bin/env bash
# Daemon figures (issue 4): idle RSS and CPU of `tenet daemon`, and the latency from queuing
# an action on the collector (which notifies the node over TCP) to the start of its task, on
# loopback. Release builds; a temporary collector database and node.
#
#   bash bench/daemon.sh           # N=20 actions by default
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tenet-agent -p tenet-collector
exec python3 bench/daemon.py "$PWD/target/release" "${N:-20}"

#!/usr/bin/env bash
# Release figures (issues 7 and 17): `tenet release add` of a 1 GB release of 20 images to a
# primary and two replica registries, against the shell pipeline `curl; sha256sum; unsquashfs;
# skopeo copy` per image per registry, measured in the same run; then a re-add of the present
# release (a check only; the requests it sent to the source are counted) and `check` of the
# present release.
# Needs docker-registry, skopeo, squashfs-tools, openssl, curl; about 10 x SIZE_MB of free disk
# at the peak (the source, six registries, Tenet's work dir and kept download; BENCH_DIR chooses
# where the work goes, default $TMPDIR).
#
#   bash bench/release.sh                      # SIZE_MB=1024 IMAGES=20
#   SIZE_MB=256 bash bench/release.sh          # a quarter of it, on a short disk
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tenet-agent
exec python3 bench/release.py "$PWD/target/release" "${SIZE_MB:-1024}" "${IMAGES:-20}"

#!/usr/bin/env bash
# End-to-end produce benchmark (docs/CLI.md, BENCHMARKS.md): three `keel server` processes on
# 127.0.0.1, replication 3, fsync always, then `keel bench produce` against them.
#
#   scripts/bench-cluster.sh [MESSAGES] [SIZE] [PRODUCERS] [extra keel bench args...]
#
# Data lives under target/bench-cluster (the real disk, never tmpfs: fsync must cost what it
# costs). Every server is stopped when the script exits (scripts/lib-cluster.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-cluster.sh

messages=${1:-200000}
size=${2:-1024}
producers=${3:-4}
shift $(( $# < 3 ? $# : 3 ))

cluster_start bench-cluster
echo "server pids: 1=${node_pids[1]} 2=${node_pids[2]} 3=${node_pids[3]}" >&2

"$keel" bench produce --bootstrap "$bootstrap" --ca "$ca" \
  --topic bench --messages "$messages" --size "$size" --producers "$producers" "$@"

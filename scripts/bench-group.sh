#!/usr/bin/env bash
# Consumer-group consume benchmark (BENCHMARKS.md): three `keel server` processes on 127.0.0.1,
# replication 3, fsync always; fills a topic, then in the same run reads it back twice: one
# consumer assigned every partition (the baseline), and `--consumers` members of a consumer
# group sharing them.
#
#   scripts/bench-group.sh [MESSAGES] [SIZE] [PARTITIONS] [CONSUMERS]
#
# Prints both figures as JSON lines (target/bench-group/*.json). Data lives under
# target/bench-group; every server is stopped when the script exits (scripts/lib-cluster.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-cluster.sh

messages=${1:-400000}
size=${2:-1024}
partitions=${3:-6}
consumers=${4:-3}

cluster_start bench-group
common=(--bootstrap "$bootstrap" --ca "$ca" --topic bench --messages "$messages" --size "$size")

"$keel" topic create bench --partitions "$partitions" --replication 3 \
  --bootstrap "$bootstrap" --ca "$ca" >/dev/null
"$keel" bench produce "${common[@]}" --producers 4 --json "$root/produce.json" >&2
"$keel" bench consume "${common[@]}" --json "$root/consume-assigned.json" >&2
"$keel" bench consume "${common[@]}" --group bench-group --consumers "$consumers" \
  --json "$root/consume-group.json" >&2
for run in produce consume-assigned consume-group; do
  echo "$run $(cat "$root/$run.json")"
done

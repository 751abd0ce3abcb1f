#!/usr/bin/env bash
# The produce bench of scripts/bench-cluster.sh (3 servers, replication 3, fsync always, 4
# producers, window 256) with the CPU it cost: utime+stime of each server and of the bench
# client, and their sum per message. CPU per message moves less with the machine's noise than
# throughput does, so before/after comparisons of a change use it (BENCHMARKS.md).
#
#   scripts/bench-cpu.sh [MESSAGES] [SIZE] [extra keel bench args...]
#   KEEL_BIN=/tmp/keel-before scripts/bench-cpu.sh 400000    # another build, for before/after
#   scripts/bench-cpu.sh 400000 1024 --compression lz4      # extra args go to `keel bench produce`
#   KEEL_SEGMENT_BYTES=16777216 KEEL_RETENTION_BYTES=67108864 scripts/bench-cpu.sh 400000
#                     # the bench topic made first with that retention: segments go while it runs
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-cluster.sh

messages=${1:-400000}
size=${2:-1024}
shift $(( $# < 2 ? $# : 2 ))

cluster_start bench-cluster >/dev/null 2>&1
if [[ -n ${KEEL_RETENTION_BYTES:-} ]]; then
  "$keel" topic create bench --bootstrap "$bootstrap" --ca "$ca" \
    --retention-bytes "$KEEL_RETENTION_BYTES" >/dev/null
fi
cpu_seconds() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat"; }
declare -A before=()
for id in 1 2 3; do before[$id]=$(cpu_seconds "${node_pids[$id]}"); done
# The subshell's `times` (a bash builtin: nothing to install) reports its children's CPU.
output=$( ( "$keel" bench produce --bootstrap "$bootstrap" --ca "$ca" --topic bench \
  --messages "$messages" --size "$size" --producers 4 --window 256 "$@" 2>&1
  echo "times:"; times ) )
servers=()
for id in 1 2 3; do
  servers+=("$(echo "$(cpu_seconds "${node_pids[$id]}") ${before[$id]}" | awk '{printf "%.2f", $1 - $2}')")
done
# `times` prints the shell's user and system time, then its children's ("0m1.234s 0m0.321s").
client=$(echo "$output" | awk '/^times:/ { line = NR } line && NR == line + 2 {
  total = 0
  for (field = 1; field <= 2; field++) { split($field, part, "m"); total += part[1] * 60 + part[2] }
  printf "%.2f", total }')
result=$(echo "$output" | grep -oE "[0-9.]+ msgs/s.*max [0-9]+")
total=$(echo "${servers[*]} $client" | awk '{printf "%.2f", $1 + $2 + $3 + $4}')
per_message=$(echo "$total $messages" | awk '{printf "%.1f", $1 * 1e6 / $2}')
# Bytes the partitions' segments hold on node 1: segments are preallocated, so each counts up
# to its last non-zero byte (the storage engine zeroes everything past its last frame).
log_bytes=$(python3 - "$root/node-1/groups" <<'PY'
import pathlib, sys
total = 0
for segment in pathlib.Path(sys.argv[1]).glob("*/log/*.log"):
    if segment.parts[-3] == "00000000000000000000":
        continue  # group 0: the metadata log
    try:
        data = segment.read_bytes()
    except FileNotFoundError:
        continue  # deleted by retention meanwhile
    total += len(data.rstrip(b"\0"))
print(total)
PY
)
echo "$result | cpu s: servers ${servers[*]} client $client total $total = $per_message us/msg | partition log bytes (node 1) $log_bytes"

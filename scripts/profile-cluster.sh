#!/usr/bin/env bash
# CPU profile of the end-to-end produce bench (BENCHMARKS.md): the cluster and the bench of
# scripts/bench-cluster.sh, except that the topic `bench` is created first so its leader is
# known, then `perf record -g` (or PERF_CALL_GRAPH=dwarf,...) runs on the leader and on one follower for the whole bench.
#
#   scripts/profile-cluster.sh [MESSAGES] [SIZE] [PRODUCERS] [extra keel bench args...]
#
# Writes target/profile-cluster/{leader,follower}.perf.data and the flat reports
# (`perf report --no-children --percent-limit 1.5 --stdio`) beside them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-cluster.sh

messages=${1:-200000}
size=${2:-1024}
producers=${3:-4}
shift $(( $# < 3 ? $# : 3 ))
frequency=${PERF_FREQUENCY:-999}
# `fp` (perf -g) or e.g. `dwarf,16384`: Rust release code has no frame pointers, so only dwarf
# unwinding shows the callers of a hot function (at a much larger cost per sample).
call_graph=${PERF_CALL_GRAPH:-fp}

cluster_start profile-cluster
"$keel" topic create bench --partitions 1 --replication 3 \
  --bootstrap "$bootstrap" --ca "$ca" >&2
leader=
for _ in $(seq 1 50); do
  leader=$("$keel" cluster status --bootstrap "$bootstrap" --ca "$ca" --json |
    jq -r '.partitions[] | select(.topic == "bench" and .partition == 0) | .leader // empty')
  [[ -n "$leader" ]] && break
  sleep 0.1
done
[[ -n "$leader" ]] || { echo "no leader for bench/0" >&2; exit 1; }
follower=
for id in 1 2 3; do [[ "$id" != "$leader" ]] && { follower=$id; break; }; done
echo "bench/0 leader: node $leader (pid ${node_pids[$leader]}), profiled follower: node $follower (pid ${node_pids[$follower]})" >&2

perf_pids=()
for role in leader follower; do
  id=${!role}
  perf record -F "$frequency" --call-graph "$call_graph" -p "${node_pids[$id]}" -o "$root/$role.perf.data" 2>"$root/$role.perf.log" &
  perf_pids+=($!)
  cluster_track $!
done
sleep 1
echo "load average before the bench: $(cat /proc/loadavg)" >&2
"$keel" bench produce --bootstrap "$bootstrap" --ca "$ca" \
  --topic bench --messages "$messages" --size "$size" --producers "$producers" "$@"
echo "load average after the bench: $(cat /proc/loadavg)" >&2
for pid in "${perf_pids[@]}"; do kill -INT "$pid"; done
for pid in "${perf_pids[@]}"; do wait "$pid" || true; done
for role in leader follower; do
  perf report -i "$root/$role.perf.data" --no-children --percent-limit 1.5 --stdio \
    >"$root/$role.report.txt" 2>/dev/null
  echo "== $role: $root/$role.report.txt" >&2
done

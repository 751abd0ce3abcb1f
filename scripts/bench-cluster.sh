#!/usr/bin/env bash
# End-to-end produce benchmark (DESIGN.md 9, BENCHMARKS.md): three `keel server` processes on
# 127.0.0.1, replication 3, fsync always, then `keel bench produce` against them.
#
#   scripts/bench-cluster.sh [MESSAGES] [SIZE] [PRODUCERS] [extra keel bench args...]
#
# Data lives under target/bench-cluster (the real disk, never tmpfs: fsync must cost what it
# costs). Every server is stopped when the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."

messages=${1:-200000}
size=${2:-1024}
producers=${3:-4}
shift $(( $# < 3 ? $# : 3 ))

cargo build --release --bin keel >&2
keel=target/release/keel
root=target/bench-cluster
rm -rf "$root"
mkdir -p "$root"
"$keel" certs init --dir "$root/tls" --nodes 3 >/dev/null

# Below the kernel's ephemeral port range (32768+), so a node never races a client port.
base=$(( 10000 + RANDOM % 20000 ))
peers="1=127.0.0.1:$base,2=127.0.0.1:$((base + 1)),3=127.0.0.1:$((base + 2))"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
for id in 1 2 3; do
  RUST_LOG=warn,keel=info "$keel" server --id "$id" --data-dir "$root/node-$id" \
    --listen "127.0.0.1:$((base + id - 1))" --tls-dir "$root/tls" --peers "$peers" \
    --fsync always 2>"$root/node-$id.log" &
  pids+=($!)
done
for id in 1 2 3; do
  for _ in $(seq 1 300); do
    grep -q ready "$root/node-$id.log" && break
    sleep 0.1
  done
  grep -q ready "$root/node-$id.log" || { echo "node $id not ready" >&2; cat "$root/node-$id.log" >&2; exit 1; }
done

"$keel" bench produce --bootstrap "127.0.0.1:$base" --ca "$root/tls/ca.pem" \
  --topic bench --messages "$messages" --size "$size" --producers "$producers" "$@"

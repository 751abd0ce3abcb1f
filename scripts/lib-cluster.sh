# Shared by the end-to-end bench scripts (sourced, not run): builds `keel`, starts three
# `keel server` processes on 127.0.0.1 (fsync always, data under target/<name>, the real disk)
# and kills every process it started when the calling script exits.
#
#   source scripts/lib-cluster.sh
#   cluster_start bench-cluster     # sets keel, root, base, bootstrap, ca, node_pids[1..3]
#
# KEEL_FSYNC=never|interval:<ms> measures without a sync per write (diagnosis only).
# KEEL_BIN=path runs another build of `keel` (e.g. a copy of an earlier one, for before/after).
# KEEL_SEGMENT_BYTES=N gives the servers N-byte segments (retention deletes whole segments).
#
# The caller runs `set -euo pipefail` and `cd`s to the repository root first.

cluster_pids=()
declare -A node_pids=()

cluster_cleanup() {
  local pid
  for pid in "${cluster_pids[@]}"; do
    # A stopped process cannot die until it runs again (SIGKILL still works, but resume it
    # first so nothing is left in state T if the kill races).
    kill -CONT "$pid" 2>/dev/null || true
    kill -9 "$pid" 2>/dev/null || true
  done
}
trap cluster_cleanup EXIT

# Registers a process the caller started in the background, so it dies with the script.
cluster_track() { cluster_pids+=("$1"); }

cluster_start() {
  local name=${1:-bench-cluster}
  nice -n 10 cargo build --release --bin keel >&2
  keel=${KEEL_BIN:-target/release/keel}
  root=target/$name
  rm -rf "$root"
  mkdir -p "$root"
  "$keel" certs init --dir "$root/tls" --nodes 3 >/dev/null
  ca=$root/tls/ca.pem

  # Below the kernel's ephemeral port range (32768+), so a node never races a client port.
  base=$(( 10000 + RANDOM % 20000 ))
  bootstrap=127.0.0.1:$base
  local peers="1=127.0.0.1:$base,2=127.0.0.1:$((base + 1)),3=127.0.0.1:$((base + 2))"
  local id config=()
  if [[ -n ${KEEL_SEGMENT_BYTES:-} ]]; then
    echo "segment_bytes = $KEEL_SEGMENT_BYTES" >"$root/keel.toml"
    config=(--config "$root/keel.toml")
  fi
  for id in 1 2 3; do
    RUST_LOG=warn,keel=info "$keel" server --id "$id" --data-dir "$root/node-$id" \
      --listen "127.0.0.1:$((base + id - 1))" --tls-dir "$root/tls" --peers "$peers" \
      --fsync "${KEEL_FSYNC:-always}" "${config[@]}" 2>"$root/node-$id.log" &
    node_pids[$id]=$!
    cluster_track $!
  done
  for id in 1 2 3; do
    for _ in $(seq 1 300); do
      grep -q ready "$root/node-$id.log" && break
      sleep 0.1
    done
    grep -q ready "$root/node-$id.log" || { echo "node $id not ready" >&2; cat "$root/node-$id.log" >&2; exit 1; }
  done
}

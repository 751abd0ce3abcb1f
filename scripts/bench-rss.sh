#!/usr/bin/env bash
# Memory under a paused follower (BENCHMARKS.md): three `keel server` processes on 127.0.0.1,
# replication 3, fsync always, 1 partition, `keel bench produce` with 4 producers for about
# 70 s. Every server's RssAnon (/proc/PID/status) is sampled every 0.5 s; about 15 s into the
# run one follower of the bench topic's partition 0 gets SIGSTOP, and SIGCONT 30 s later.
#
#   scripts/bench-rss.sh [MESSAGES] [extra keel bench args...]
#
# Without MESSAGES a 100,000-message calibration run (topic `calibrate`) measures the rate and
# the main run gets rate * 70 s * 3/4 messages (bounded to 50,000..5,000,000): the sustained
# rate with a paused and then catching-up follower was about 3/4 of the short calibration's
# (34,441 against 47,763 msgs/s on 2026-12-01), so the run lasts about 70 s. Prints the max
# RssAnon per node (overall, before, during and after the pause) and the bench summary.
# Samples go to target/bench-rss/rss.tsv. Every process is killed when the script exits.
# PAUSE_AT_S (default 15) and PAUSE_FOR_S (default 30, may be fractional) move the pause.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib-cluster.sh

producers=4
size=1024
run_seconds=70
pause_at_s=${PAUSE_AT_S:-15}
pause_for_s=${PAUSE_FOR_S:-30}
bar_kib=$(( 512 * 1024 ))

messages=${1:-}
shift $(( $# < 1 ? $# : 1 ))

cluster_start bench-rss
echo "server pids: 1=${node_pids[1]} 2=${node_pids[2]} 3=${node_pids[3]}" >&2

if [[ -z "$messages" ]]; then
  "$keel" bench produce --bootstrap "$bootstrap" --ca "$ca" --topic calibrate \
    --messages 100000 --size "$size" --producers "$producers" --json "$root/calibrate.json" \
    "$@" >&2
  rate=$(jq -r '.msgs_per_s | floor' "$root/calibrate.json")
  messages=$(( rate * run_seconds * 3 / 4 ))
  (( messages < 50000 )) && messages=50000
  (( messages > 5000000 )) && messages=5000000
  echo "calibration: $rate msgs/s -> --messages $messages" >&2
fi

# The topic exists before the run, so its leader can be looked up while the bench runs.
"$keel" topic create bench --partitions 1 --replication 3 --if-not-exists \
  --bootstrap "$bootstrap" --ca "$ca" >&2

# Sampler: one line per 0.5 s, "elapsed_s phase rss1 rss2 rss3" (KiB). The phase comes from a
# file the pause logic rewrites.
phase_file=$root/phase
samples=$root/rss.tsv
echo before >"$phase_file"
rss_kib() { awk '/^RssAnon:/ { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0; }
(
  start=$(date +%s.%N)
  while true; do
    now=$(date +%s.%N)
    printf '%.1f\t%s\t%s\t%s\t%s\n' "$(echo "$now - $start" | bc)" "$(cat "$phase_file")" \
      "$(rss_kib "${node_pids[1]}")" "$(rss_kib "${node_pids[2]}")" "$(rss_kib "${node_pids[3]}")"
    sleep 0.5
  done
) >"$samples" &
cluster_track $!

timeout 900 "$keel" bench produce --bootstrap "$bootstrap" --ca "$ca" --topic bench \
  --messages "$messages" --size "$size" --producers "$producers" --json "$root/bench.json" \
  "$@" >"$root/bench.out" 2>"$root/bench.err" &
bench_pid=$!
cluster_track "$bench_pid"

# Pause one follower of bench/0 (the leader as the cluster reports it at that moment).
(
  sleep "$pause_at_s"
  status=$("$keel" cluster status --bootstrap "$bootstrap" --ca "$ca" --json)
  leader=$(jq -r '.partitions[] | select(.topic == "bench" and .partition == 0) | .leader' <<<"$status")
  follower=
  for id in 1 2 3; do [[ "$id" != "$leader" ]] && { follower=$id; break; }; done
  echo "$leader $follower" >"$root/paused"
  echo "$(date +%T) bench/0 leader: node $leader; SIGSTOP node $follower (pid ${node_pids[$follower]})" >&2
  echo paused >"$phase_file"
  kill -STOP "${node_pids[$follower]}"
  sleep "$pause_for_s"
  kill -CONT "${node_pids[$follower]}"
  echo after >"$phase_file"
  echo "$(date +%T) SIGCONT node $follower" >&2
) &
pauser_pid=$!
cluster_track "$pauser_pid"

bench_status=0
wait "$bench_pid" || bench_status=$?
wait "$pauser_pid" || true
sleep 5 # the resumed follower catching up after the bench, still sampled
echo "load average at the end: $(cat /proc/loadavg)" >&2

read -r leader follower <"$root/paused"
echo
echo "bench summary (exit $bench_status, --messages $messages):"
cat "$root/bench.out"
echo
echo "bench/0 leader: node $leader; paused follower: node $follower (${pause_for_s} s from ${pause_at_s} s)"
awk -F'\t' -v leader="$leader" -v follower="$follower" -v bar="$bar_kib" '
  {
    for (n = 1; n <= 3; n++) {
      v = $(n + 2); if (v > max[n]) max[n] = v
      if (v > phase[n, $2]) phase[n, $2] = v
    }
  }
  END {
    printf "node  role      max RssAnon   before pause   during pause   after resume\n"
    ok = 1
    for (n = 1; n <= 3; n++) {
      role = (n == leader) ? "leader" : (n == follower ? "paused" : "follower")
      printf "%-5d %-9s %8.1f MiB   %8.1f MiB   %8.1f MiB   %8.1f MiB\n", n, role,
        max[n] / 1024, phase[n, "before"] / 1024, phase[n, "paused"] / 1024, phase[n, "after"] / 1024
      if (max[n] >= bar) ok = 0
    }
    printf "samples: %d (every 0.5 s); bar RssAnon < 512 MiB on every node: %s\n", NR, ok ? "met" : "MISSED"
  }' "$samples"
exit "$bench_status"

#!/usr/bin/env bash
# A series of keel-chaos runs (BENCHMARKS.md "Fault tests"): every seed from FIRST to LAST on
# NODES nodes for DURATION seconds of faults each, default faults (kill, pause, partition,
# wipe). Prints each run's summary line, then the totals. Exits 1 if any run failed.
#
#   scripts/chaos-series.sh NODES FIRST LAST [DURATION_S]
#
# Uses the binaries under $KEEL_BIN (default target/release) so a series can run from a copy
# while the tree is rebuilt. Run dirs go to target/chaos-series/ (kept when a run fails).
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=$1 first=$2 last=$3 duration=${4:-150}
bin=${KEEL_BIN:-target/release}
out=target/chaos-series
mkdir -p "$out"
failed=0
for seed in $(seq "$first" "$last"); do
  dir="$out/n$nodes-seed-$seed"
  rm -rf "$dir"
  started=$(date +%s)
  if line=$("$bin/keel-chaos" --nodes "$nodes" --duration-s "$duration" --seed "$seed" \
      --keel "$bin/keel" --dir "$dir" 2>"$dir.stderr" | tail -1); then
    status=ok
  else
    status=FAILED failed=1
  fi
  echo "$line status=$status wall_s=$(( $(date +%s) - started ))"
done | tee "$out/series-n$nodes-$first-$last.txt"
awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] ~ /^(acked|lost|duplicated|reordered|dirty_reads|group_reads|group_commits|group_lost|group_gap|offset_fetch_stale|group_dirty|wall_s)$/) sum[kv[1]] += kv[2];
       if (kv[1] == "faults") { n = split(kv[2], fs, ","); for (j = 1; j <= n; j++) { split(fs[j], f, ":"); sum[f[1]] += f[2] } } }
       if ($0 ~ /status=FAILED/) bad++ }
     END { printf "runs=%d failed=%d acked=%d lost=%d duplicated=%d reordered=%d dirty_reads=%d group_reads=%d group_commits=%d group_lost=%d group_gap=%d offset_fetch_stale=%d group_dirty=%d kill=%d pause=%d partition=%d wipe=%d wall_s=%d\n",
           NR, bad, sum["acked"], sum["lost"], sum["duplicated"], sum["reordered"], sum["dirty_reads"], sum["group_reads"], sum["group_commits"], sum["group_lost"], sum["group_gap"], sum["offset_fetch_stale"], sum["group_dirty"], sum["kill"], sum["pause"], sum["partition"], sum["wipe"], sum["wall_s"] }' \
  "$out/series-n$nodes-$first-$last.txt"
grep -q "status=FAILED" "$out/series-n$nodes-$first-$last.txt" && exit 1 || exit 0

#!/bin/sh
# run_fuzz.sh FUZZER SEEDS_DIR REGRESSIONS_DIR WORKDIR SECONDS
# Replays every regression input (past crashes, must not crash now), then fuzzes for SECONDS from the seeds
# in a fresh corpus under WORKDIR. Exit 0 only if nothing crashed; crash inputs land in WORKDIR/crashes/.
set -eu
fuzzer=$1 seeds=$2 regressions=$3 work=$4 seconds=$5
[ -x "$fuzzer" ] || { echo "fuzz target $fuzzer not built"; exit 1; }
rm -rf "$work" && mkdir -p "$work/corpus" "$work/crashes"
if [ -n "$(ls "$regressions" 2>/dev/null)" ]; then
  "$fuzzer" -runs=0 "$regressions"/* > "$work/regressions.txt" 2>&1 || {
    tail -n 30 "$work/regressions.txt"; echo "FAIL: a regression input in $regressions crashes $(basename "$fuzzer")"; exit 1; }
  echo "regressions: $(grep -c '^Executed' "$work/regressions.txt") inputs replayed, no crash"
fi
"$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=25 -print_final_stats=1 \
  -artifact_prefix="$work/crashes/" "$work/corpus" "$seeds" > "$work/log.txt" 2>&1 || {
  tail -n 40 "$work/log.txt"; echo "FAIL: $(basename "$fuzzer") crashed; input in $work/crashes/"; exit 1; }
grep -E "^stat::number_of_executed_units|^Done" "$work/log.txt"

#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) with its committed seeds, one after the
# other, on a corpus copied to $WORK (default /tmp/gallop-fuzz). Needs nightly and cargo-fuzz.
# Prints one summary line per target: executions, seconds, crashes.
set -uo pipefail
cd "$(dirname "$0")"
export ASAN_OPTIONS=detect_odr_violation=0
SECONDS_EACH=${1:-600}
WORK=${WORK:-/tmp/gallop-fuzz}
for target in $(cargo +nightly fuzz list); do
  mkdir -p "$WORK/corpus/$target" "$WORK/artifacts/$target"
  cp -n seeds/"$target"/* "$WORK/corpus/$target/" 2>/dev/null || true
  cargo +nightly fuzz run "$target" "$WORK/corpus/$target" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$WORK/artifacts/$target/" > "$WORK/$target.log" 2>&1
  status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$WORK/$target.log" | grep -o '[0-9]*$')
  crashes=$(ls "$WORK/artifacts/$target" | wc -l)
  echo "$target: exit $status, ${runs:-?} executions in ${SECONDS_EACH} s, $crashes crash files"
done

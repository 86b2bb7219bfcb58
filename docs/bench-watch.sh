#!/usr/bin/env bash
# Latency of `berth watch`: from a small bundle landing (renamed) in a watched folder to its
# change being committed at central. Prints the median and the 90th percentile over N drops.
#   docs/bench-watch.sh events  [--settle-ms 1000]
#   docs/bench-watch.sh polling [--settle-ms 1000] [--poll 1]
# Env: BERTH (default target/release/berth), N (default 50). Needs sqlite3.
# A benchmark, not a test: figures go to docs/BENCHMARKS.md.
set -euo pipefail
B=$(realpath "${BERTH:-target/release/berth}")
N=${N:-50}
MODE=${1:-events}; shift || true
EXTRA=("$@")
[ "$MODE" = polling ] && EXTRA+=(--no-events)
tmp=$(mktemp -d)
trap 'kill "$WATCH" 2>/dev/null || true; rm -rf "$tmp"' EXIT
cd "$tmp"
echo "CREATE TABLE item(id TEXT PRIMARY KEY, v TEXT);" > s.sql
mkdir usb inbox side
"$B" init central hq --schema s.sql >/dev/null
"$B" init node laptop --name alice --via usb >/dev/null
"$B" node add alice --site hq --via usb >/dev/null
"$B" dock --site laptop --via usb >/dev/null
"$B" watch --site hq --via inbox --debounce-ms 600000 "${EXTRA[@]}" > watch.log 2>&1 &
WATCH=$!
sleep 1
: > lat.txt
for i in $(seq 1 "$N"); do
  sqlite3 laptop/data.db "INSERT INTO item VALUES('k$i', 'v')"
  "$B" dock --upload-only --site laptop --via side >/dev/null
  f=$(ls side)
  t0=$(date +%s%N)
  mv "side/$f" "inbox/$f"
  until [ "$(sqlite3 hq/data.db "SELECT COUNT(*) FROM item WHERE id='k$i'" 2>/dev/null)" = 1 ]; do sleep 0.005; done
  t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000000 )) >> lat.txt
done
sort -n lat.txt | awk -v mode="$MODE" -v extra="${EXTRA[*]}" '{a[NR]=$1} END {
  m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2;
  p90 = a[int(NR*0.9 + 0.5)];
  printf "%s %s: n=%d median %d ms, p90 %d ms, min %d ms, max %d ms\n", mode, extra, NR, m, p90, a[1], a[NR] }'

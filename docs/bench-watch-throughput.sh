#!/usr/bin/env bash
# Throughput of one large bundle through `berth watch` against `berth dock` on the same bundle
# at two identical copies of central. Rows carry SIZE_MB MiB of random blobs in total.
#   SIZE_MB=1024 docs/bench-watch-throughput.sh
# Env: BERTH (default target/release/berth), SIZE_MB (default 1024). Needs sqlite3.
# The watcher's time runs from the bundle's rename into the watched folder to its `applied`
# event, so it includes the settle time (--settle-ms, 1000 by default) once.
set -euo pipefail
B=$(realpath "${BERTH:-target/release/berth}")
SIZE_MB=${SIZE_MB:-1024}
SETTLE=${SETTLE:-1000}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench.XXXXXX")
trap 'kill "$WATCH" 2>/dev/null || true; rm -rf "$tmp"' EXIT
WATCH=
cd "$tmp"
echo "CREATE TABLE item(id TEXT PRIMARY KEY, v TEXT, b BLOB);" > s.sql
mkdir usb side a b
"$B" init central hq --schema s.sql >/dev/null
"$B" init node laptop --name alice --via usb >/dev/null
"$B" node add alice --site hq --via usb >/dev/null
"$B" dock --site laptop --via usb >/dev/null
sqlite3 laptop/data.db "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < $SIZE_MB) INSERT INTO item SELECT 'k' || i, 'v', randomblob(1048576) FROM c"
"$B" dock --upload-only --site laptop --via side >/dev/null
f=$(ls side)
size=$(stat -c %s "side/$f")
cp -r hq hq-dock; cp -r hq hq-watch
run_dock() {
  cp "side/$f" a/
  sync
  s0=$(date +%s%N)
  "$B" dock --download-only --site hq-dock --via a >/dev/null
  s1=$(date +%s%N)
  dock_ms=$(( (s1 - s0) / 1000000 ))
}
run_watch() {
  "$B" watch --site hq-watch --via b --json --settle-ms "$SETTLE" > watch.log 2>&1 &
  WATCH=$!
  until grep -qs '"started"' watch.log; do sleep 0.05; done
  cp "side/$f" "b/.$f.tmp"
  sync
  w0=$(date +%s%N)
  mv "b/.$f.tmp" "b/$f"
  until grep -qs '"event":"applied"' watch.log; do sleep 0.01; done
  w1=$(date +%s%N)
  watch_ms=$(( (w1 - w0) / 1000000 ))
}
# The second run meets the first one's dirty pages: ORDER=watch-first swaps them.
if [ "${ORDER:-dock-first}" = watch-first ]; then run_watch; sync; run_dock; else run_dock; sync; run_watch; fi
rows_dock=$(sqlite3 -cmd ".timeout 30000" hq-dock/data.db "SELECT COUNT(*) FROM item")
rows_watch=$(sqlite3 -cmd ".timeout 30000" hq-watch/data.db "SELECT COUNT(*) FROM item")
echo "bundle $((size / 1048576)) MiB ($SIZE_MB rows of 1 MiB): dock ${dock_ms} ms, watch ${watch_ms} ms (incl. ${SETTLE} ms settle), ratio $(awk -v w="$watch_ms" -v d="$dock_ms" 'BEGIN{printf "%.2f", w/d}'); rows $rows_dock / $rows_watch"

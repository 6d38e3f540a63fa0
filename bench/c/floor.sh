#!/usr/bin/env bash
# The machine's round-trip floor (bench/c/floor.c): 64-byte ping-pong over a
# Unix socket against a C echo server (thread per connection), a Node.js echo
# server in one process, and one with two cluster workers; then the one-process
# Node server with client and server pinned to the same CPU, which shows what
# a cross-CPU wake-up costs on this machine.
#   bench/c/floor.sh        (npm run bench:floor builds dist/ first)
# Env: BENCH_SECONDS per cell (default 2), BENCH_CLIENTS (default "1 4").
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
SECS=${BENCH_SECONDS:-2}
CLIENTS=${BENCH_CLIENTS:-"1 4"}
die() { echo "floor: $*" >&2; exit 1; }
make -C "$here" build/floor >/dev/null || die "build failed"
[ -f "$root/dist/bench/echo-server.js" ] || die "dist/bench/echo-server.js missing: run npm run build"
work=$(mktemp -d "${TMPDIR:-/tmp}/p11floor.XXXXXX")
pid=
stop() { [ -n "$pid" ] && { kill -TERM -- "-$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }; pid=; }
trap 'stop; rm -rf "$work"' EXIT

start() { # pin-cpu|"" command...
  local pin=$1; shift
  : > "$work/out"
  if [ -n "$pin" ]; then setsid taskset -c "$pin" "$@" > "$work/out" 2>&1 &
  else setsid "$@" > "$work/out" 2>&1 & fi
  pid=$!
  for _ in $(seq 1 200); do grep -q READY "$work/out" && return 0; sleep 0.05; done
  die "server did not start: $(cat "$work/out")"
}

printf '%-34s %7s %10s %8s %8s\n' server clients ops/s p50_us p99_us
cell() { # label pin server-command...
  local label=$1 pin=$2; shift 2
  start "$pin" "$@"
  for k in $CLIENTS; do
    if [ -n "$pin" ]; then line=$(taskset -c "$pin" "$here/build/floor" run -p "$k" -t "$SECS" "$work/sock")
    else line=$("$here/build/floor" run -p "$k" -t "$SECS" "$work/sock"); fi
    [ -n "$line" ] || die "$label: no result"
    printf '%-34s %7s %10s %8s %8s\n' "$label" "$k" \
      "$(sed -n 's/.*ops_s=\([^ ]*\).*/\1/p' <<<"$line")" \
      "$(sed -n 's/.*p50_us=\([^ ]*\).*/\1/p' <<<"$line")" \
      "$(sed -n 's/.*p99_us=\([^ ]*\).*/\1/p' <<<"$line")"
  done
  stop
}
cell "C, thread per connection" "" "$here/build/floor" serve "$work/sock"
cell "Node, one process" "" node "$root/dist/bench/echo-server.js" "$work/sock"
cell "Node, 2 cluster workers" "" node "$root/dist/bench/echo-server.js" "$work/sock" 2
CLIENTS=1 cell "Node, one process, all on CPU 0" 0 node "$root/dist/bench/echo-server.js" "$work/sock"

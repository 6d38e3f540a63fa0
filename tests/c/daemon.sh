#!/usr/bin/env bash
# Starts, stops or restarts the daemon under test for the C client tests.
#   daemon.sh start|stop|restart WORKDIR
# DAEMON=camlcrush (default): Debian's Caml Crush pkcs11proxyd.
# DAEMON=ours: our daemon, started with OURS_CMD, a shell command in which
#   {socket}, {workdir}, {alias} and {module} are replaced
#   (the daemon must serve alias {alias} on unix socket {socket}).
# The daemon runs in its own process group (setsid) so stop reaches its
# worker processes; WORKDIR holds its pid, socket, logs and configs.
set -euo pipefail

action=${1:?start|stop|restart}
work=${2:?workdir}
DAEMON=${DAEMON:-camlcrush}
SOFTHSM_LIB=${SOFTHSM_LIB:-/usr/lib/softhsm/libsofthsm2.so}
ALIAS=${P11TEST_ALIAS:-softhsm}
sock="$work/pkcs11proxyd.sock"
pidfile="$work/daemon.pid"

# shellcheck source=netplex-conf.sh
. "$(dirname "$0")/netplex-conf.sh"
write_camlcrush_conf() {
  write_netplex_conf "$work" "$SOFTHSM_LIB" "$ALIAS" "address { type = \"local\"; path = \"$sock\"; };"
}

start() {
  rm -f "$sock"
  case "$DAEMON" in
  camlcrush)
    write_camlcrush_conf
    setsid pkcs11proxyd -fg -conf "$work/pkcs11proxyd.conf" \
      >>"$work/daemon.log" 2>&1 < /dev/null &
    ;;
  ours)
    # Our daemon reads the same Caml Crush configuration files.
    write_camlcrush_conf
    root=$(cd "$(dirname "$0")/../.." && pwd)
    OURS_CMD=${OURS_CMD:-"node $root/dist/src/cli.js -fg -conf {workdir}/pkcs11proxyd.conf"}
    cmd=${OURS_CMD//\{socket\}/$sock}
    cmd=${cmd//\{workdir\}/$work}
    cmd=${cmd//\{alias\}/$ALIAS}
    cmd=${cmd//\{module\}/$SOFTHSM_LIB}
    setsid bash -c "exec $cmd" >>"$work/daemon.log" 2>&1 < /dev/null &
    ;;
  *)
    echo "unknown DAEMON=$DAEMON" >&2
    exit 2
    ;;
  esac
  echo $! > "$pidfile"
  # Ready when the socket exists.
  for _ in $(seq 1 200); do
    [ -S "$sock" ] && return 0
    kill -0 "$(cat "$pidfile")" 2>/dev/null || break
    sleep 0.05
  done
  echo "daemon did not create $sock; log:" >&2
  cat "$work/daemon.log" >&2
  exit 1
}

stop() {
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    pgrep -g "$pid" >/dev/null 2>&1 || break
    sleep 0.05
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pidfile" "$sock"
}

case "$action" in
start) start ;;
stop) stop ;;
restart) stop; start ;;
*) echo "usage: daemon.sh start|stop|restart WORKDIR" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Conformance run with google/pkcs11test (not packaged by Debian, so not part
# of `make test`): every case in its own process, so a crash in one case
# costs only that case. Counts pass / fail / crash for a client library
# against a daemon, over a fresh SoftHSM2 token.
#
#   PKCS11TEST=/path/to/pkcs11test [LIST=1] tests/conformance/pkcs11test.sh CLIENT DAEMON
#     CLIENT: ours | camlcrush | direct (SoftHSM2 loaded by pkcs11test itself)
#     DAEMON: ours | camlcrush (ignored for direct)
# P11TEST_ARGS adds pkcs11test options (e.g. -I for the token
# initialisation tests; the token is a throw-away one).
# Build pkcs11test from https://github.com/google/pkcs11test with `make`.
# Last line: "client=... daemon=... cases=N pass=N fail=N crash=N"; the
# crashing cases are listed before it (with LIST=1 the failing ones too, for
# diffing two runs).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
client=${1:?client: ours|camlcrush|direct}
daemon=${2:-ours}
T=${PKCS11TEST:?set PKCS11TEST to a pkcs11test binary}
SOFTHSM_LIB=/usr/lib/softhsm/libsofthsm2.so
case $client in
  ours) lib=$root/client/build/libp11client.so ;;
  camlcrush) lib=/usr/lib/x86_64-linux-gnu/caml-crush/libp11clientunix.so ;;
  direct) lib=$SOFTHSM_LIB ;;
  *) echo "unknown client $client" >&2; exit 64 ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/p11conf.XXXXXX")
pid=
trap '[ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null; rm -rf "$work"' EXIT
. "$root/tests/c/netplex-conf.sh"
write_softhsm_conf "$work"
write_softhsm_conf "$work/client"
SOFTHSM2_CONF=$work/softhsm2.conf softhsm2-util --init-token --free --label conformance \
  --pin 1234 --so-pin 12345678 >/dev/null || exit 1

if [ "$client" = direct ]; then
  export SOFTHSM2_CONF=$work/softhsm2.conf
else
  write_netplex_conf "$work" "$SOFTHSM_LIB" softhsm "address { type = \"local\"; path = \"$work/sock\"; };"
  if [ "$daemon" = ours ]; then
    SOFTHSM2_CONF=$work/softhsm2.conf setsid node "$root/dist/src/cli.js" -fg -conf "$work/pkcs11proxyd.conf" \
      >"$work/out" 2>"$work/err" &
  else
    SOFTHSM2_CONF=$work/softhsm2.conf setsid /usr/bin/pkcs11proxyd -fg -conf "$work/pkcs11proxyd.conf" \
      >"$work/out" 2>"$work/err" &
  fi
  pid=$!
  for _ in $(seq 1 200); do [ -S "$work/sock" ] && break; sleep 0.05; done
  # A client of the proxy must not reach SoftHSM2 itself.
  export SOFTHSM2_CONF=$work/client/softhsm2.conf
  export PKCS11PROXY_SOCKET_PATH=$work/sock PKCS11PROXY_LIBNAME=softhsm PKCS11PROXY_RPC_TIMEOUT=30
  export PKCS11PROXY_CONF=$work/client.conf
  : > "$PKCS11PROXY_CONF"
fi

# pkcs11test wants the slot ID; pkcs11-tool prints it in hex.
hex=$(pkcs11-tool --module "$lib" -L 2>/dev/null | sed -n 's/^Slot [0-9]* (\(0x[0-9a-f]*\)).*/\1/p' | head -n 1)
[ -n "$hex" ] || { echo "no slot through $lib" >&2; exit 1; }
slot=$((hex))
run() { (cd "$(dirname "$lib")" && "$T" -m "$(basename "$lib")" -l "$(dirname "$lib")" -s "$slot" -u 1234 -o 12345678 ${P11TEST_ARGS:-} "$@"); }
run --gtest_list_tests 2>/dev/null | awk '/^[^ ]/{suite=$1} /^  [^ ]/{print suite $1}' > "$work/cases"

pass=0 fail=0 crash=0
while read -r c; do
  timeout 120 bash -c "$(declare -f run); lib='$lib' T='$T' slot='$slot' run --gtest_filter='$c'" >/dev/null 2>&1
  case $? in
    0) pass=$((pass + 1)) ;;
    1) fail=$((fail + 1)); [ "${LIST:-0}" = 1 ] && echo "fail: $c" ;;
    *) crash=$((crash + 1)); echo "crash: $c" ;;
  esac
done < "$work/cases"
echo "client=$client daemon=$([ "$client" = direct ] && echo none || echo "$daemon") cases=$(wc -l < "$work/cases") pass=$pass fail=$fail crash=$crash"

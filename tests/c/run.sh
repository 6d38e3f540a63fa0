#!/usr/bin/env bash
# C client tests: builds client/ and the test program, starts the daemon
# under test in front of a fresh SoftHSM2 token, runs the C tests under
# valgrind, and pkcs11-tool, p11tool and OpenSSL's pkcs11 engine through
# the library.
#   tests/c/run.sh [camlcrush|ours]     (or DAEMON=...; default camlcrush)
#   VALGRIND=0 disables valgrind. KEEP_WORKDIR=1 keeps the temp dir.
#   SANITIZERS=1 builds the library and the test program with ASan + UBSan
#   (client/build-san/) and runs the C test groups with them instead of
#   valgrind; the real-client checks are skipped (their programs are not
#   instrumented).
# Last line: "N passed, M failed"; exit status non-zero on any failure.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export DAEMON=${1:-${DAEMON:-camlcrush}}
export PKCS11PROXYD_ALLOW_ROOT=1 # our daemon runs as root here without service.user
VALGRIND=${VALGRIND:-1}
SANITIZERS=${SANITIZERS:-0}
lib="$root/client/build/libp11client.so"
test_client="$here/build/test_client"
san=
if [ "$SANITIZERS" = 1 ]; then
  VALGRIND=0
  lib="$root/client/build-san/libp11client.so"
  test_client="$here/build/test_client-san"
  san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
  make -C "$root/client" BUILD=build-san EXTRA_CFLAGS="$san" EXTRA_LDFLAGS="$san" >/dev/null ||
    { echo "0 passed, 1 failed"; exit 1; }
  make -C "$here" build/test_client-san >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=98
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "PASS $*"; }
ko() { failed=$((failed + 1)); echo "FAIL $*"; }

make -C "$root/client" >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
make -C "$here" build/test_client build/test_attrs >/dev/null || { echo "0 passed, 1 failed"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/p11client-tests.XXXXXX")
cleanup() {
  "$here/daemon.sh" stop "$work" || true
  if [ "${KEEP_WORKDIR:-0}" = 1 ]; then echo "workdir: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# shellcheck source=netplex-conf.sh
. "$here/netplex-conf.sh"
write_softhsm_conf "$work"
export SOFTHSM2_CONF="$work/softhsm2.conf"
softhsm2-util --init-token --free --label test --pin 1234 --so-pin 123456 >/dev/null

"$here/daemon.sh" start "$work" || { echo "0 passed, 1 failed"; exit 1; }

export P11CLIENT_LIB="$lib"
export PKCS11PROXY_SOCKET_PATH="$work/pkcs11proxyd.sock"
export PKCS11PROXY_LIBNAME=${P11TEST_ALIAS:-softhsm}
export PKCS11PROXY_CONF="$work/client.conf" # empty: settings come from env
: > "$PKCS11PROXY_CONF"
export P11TEST_RESTART_CMD="$here/daemon.sh restart $work"

# ---- C tests ----
vg=()
if [ "$VALGRIND" = 1 ]; then
  vg=(valgrind --quiet --error-exitcode=97 --leak-check=full
      --errors-for-leak-kinds=definite,possible
      --suppressions="$here/valgrind.supp")
fi
groups="args sizes threads fork forkthread manysessions restart config mechanisms app timeout"
# Caml Crush forks one daemon process per connection, each calling
# C_Initialize on the same SoftHSM2 store; SoftHSM2 2.6.1 races when several
# processes do that at once, so four threads opening sessions together fail
# there at random. The threads group exercises our client's concurrency and
# runs against our daemon; the interop run keeps every other group.
if [ "$DAEMON" = camlcrush ]; then groups="args sizes fork forkthread manysessions restart config mechanisms app"; fi
# run_group LABEL GROUP: one test_client group; its checks count one by one,
# and a run that ends badly (valgrind or sanitizer error, crash) counts one
# more failure.
run_group() {
  local label=$1 group=$2
  local out="$work/test-${label//[^a-z]/_}.log"
  "${vg[@]}" "$test_client" "$group" >"$out" 2>&1
  local rc=$?
  local summary gp=0 gf=0
  summary=$(tail -n 1 "$out")
  if [[ $summary =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    gp=${BASH_REMATCH[1]} gf=${BASH_REMATCH[2]}
  fi
  if [ $rc -eq 0 ] && [ "$gf" -eq 0 ] && [ "$gp" -gt 0 ]; then
    passed=$((passed + gp))
    echo "PASS C tests [$label]: $summary"
  else
    passed=$((passed + gp))
    failed=$((failed + gf + 1))
    echo "FAIL C tests [$label] (exit $rc${vg:+, valgrind}${san:+, sanitizers}): $summary"
    sed 's/^/    /' "$out" | tail -n 40
  fi
}
for group in $groups; do run_group "$group" "$group"; done

# The same calls with every reply split into fragments that arrive in
# pieces (tests/c/refragment.py relays to the daemon under test).
python3 "$here/refragment.py" "$work/refragment.sock" "$PKCS11PROXY_SOCKET_PATH" \
  2>"$work/refragment.log" &
refragment_pid=$!
for _ in $(seq 1 100); do [ -S "$work/refragment.sock" ] && break; sleep 0.05; done
for group in sizes mechanisms; do
  PKCS11PROXY_SOCKET_PATH="$work/refragment.sock" run_group "$group, fragmented replies" "$group"
done
kill "$refragment_pid" 2>/dev/null
wait "$refragment_pid" 2>/dev/null

# The same groups over tls:// (TLS 1.3, client certificate, resumption).
# Against our daemon: a second instance of it serving TLS itself (use_ssl,
# two workers, so each session's connection is routed by its join ALPN name)
# on the same token store. Against Caml Crush (whose TLS needs a GnuTLS
# build and TLS 1.2): tests/c/tls_relay.py terminates TLS in front of it.
# Fork groups check that a child never uses the parent's TLS state.
tls_pki() { # DIR: CA, server certificate for DNS:localhost, client certificate
  local d=$1 ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  mkdir -p "$d" && cd "$d" || return 1
  openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj /CN=tls-test-ca &&
  printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' > server.ext &&
  printf 'extendedKeyUsage=clientAuth\n' > client.ext &&
  for n in server client; do
    openssl req "${ec[@]}" -keyout $n.key -out $n.csr -subj "/CN=$n" &&
    openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile $n.ext -out $n.pem || return 1
  done
  cd - >/dev/null
}
# start_tls_server: sets tls_port and tls_pid, or returns 1.
start_tls_server() {
  tls_port=
  if [ "$DAEMON" = ours ]; then
    mkdir -p "$work/tlsd"
    write_netplex_conf "$work/tlsd" "${SOFTHSM_LIB:-/usr/lib/softhsm/libsofthsm2.so}" "$PKCS11PROXY_LIBNAME" \
      'address { type = "internet"; bind = "127.0.0.1:0"; };'
    sed -i "s|use_ssl = false;|use_ssl = true; tls { x509 { key { crt_file = \"$work/pki/server.pem\"; key_file = \"$work/pki/server.key\" }; trust { crt_file = \"$work/pki/ca.pem\" }; }; };|" \
      "$work/tlsd/pkcs11proxyd.conf"
    setsid node "$root/dist/src/cli.js" -fg -conf "$work/tlsd/pkcs11proxyd.conf" -workers 2 \
      >"$work/tls-daemon.log" 2>&1 </dev/null &
    tls_pid=$!
    for _ in $(seq 1 200); do
      tls_port=$(sed -n 's/^READY .*"port":\([0-9][0-9]*\)}.*$/\1/p' "$work/tls-daemon.log" 2>/dev/null | head -n 1)
      [ -n "$tls_port" ] && return 0
      kill -0 "$tls_pid" 2>/dev/null || break
      sleep 0.05
    done
  else
    python3 "$here/tls_relay.py" "$work/tls.port" "$PKCS11PROXY_SOCKET_PATH" \
      "$work/pki/ca.pem" "$work/pki/server.pem" "$work/pki/server.key" 2>"$work/tls-daemon.log" &
    tls_pid=$!
    for _ in $(seq 1 100); do [ -f "$work/tls.port" ] && tls_port=$(cat "$work/tls.port") && return 0; sleep 0.05; done
  fi
  return 1
}
if tls_pki "$work/pki" >"$work/pki.log" 2>&1 && start_tls_server; then
  tls_groups="args sizes fork forkthread mechanisms app"
  [ "$DAEMON" = ours ] && tls_groups="args sizes threads fork forkthread mechanisms app"
  # The restart check restarts the Unix daemon; our TLS server is another instance (its
  # restart is the Unix run's check), so it runs without one there.
  [ "$DAEMON" = ours ] && unset P11TEST_RESTART_CMD
  for group in $tls_groups; do
    PKCS11PROXY_SOCKET_PATH="tls://localhost:$tls_port" \
    PKCS11PROXY_CA_FILE="$work/pki/ca.pem" PKCS11PROXY_CERT_FILE="$work/pki/client.pem" \
    PKCS11PROXY_PRIVKEY_FILE="$work/pki/client.key" PKCS11PROXY_TLS_STATS="$work/tls-stats-$group.json" \
      run_group "$group, tls" "$group"
  done
  # threads/app open a connection per session: all but the first resume.
  if grep -Eq '"full_handshakes":1,"resumed_handshakes":[1-9]' "$work/tls-stats-app.json" 2>/dev/null; then
    ok "tls: connections after the first resume ($(cat "$work/tls-stats-app.json"))"
  else
    ko "tls: connections after the first resume ($(cat "$work/tls-stats-app.json" 2>/dev/null))"
  fi
  export P11TEST_RESTART_CMD="$here/daemon.sh restart $work"
  # Our TLS daemon runs in its own session: the group reaches its workers.
  if [ "$DAEMON" = ours ]; then kill -TERM -- "-$tls_pid" 2>/dev/null; else kill "$tls_pid" 2>/dev/null; fi
  wait "$tls_pid" 2>/dev/null
else
  ko "tls: test PKI or TLS server"; sed 's/^/    /' "$work/pki.log" "$work/tls-daemon.log" 2>/dev/null | tail -n 20
  [ -n "${tls_pid:-}" ] && kill -- "-$tls_pid" "$tls_pid" 2>/dev/null
fi

# ---- attribute value shapes (test_attrs.c) ----
# Our library under valgrind or the sanitizers; against our daemon also
# Caml Crush's client library (uninstrumented: OCaml's runtime is not ours).
run_attrs() { # name, library, command prefix...
  local name=$1 attrs_lib=$2; shift 2
  local out="$work/test-attrs-$name.log"
  P11CLIENT_LIB="$attrs_lib" "$@" >"$out" 2>&1
  local rc=$? summary gp=0 gf=0
  summary=$(tail -n 1 "$out")
  if [[ $summary =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    gp=${BASH_REMATCH[1]} gf=${BASH_REMATCH[2]}
  fi
  passed=$((passed + gp))
  if [ $rc -eq 0 ] && [ "$gf" -eq 0 ] && [ "$gp" -gt 0 ]; then
    echo "PASS C tests [attrs, $name]: $summary"
  else
    failed=$((failed + gf + 1))
    echo "FAIL C tests [attrs, $name] (exit $rc): $summary"
    sed 's/^/    /' "$out" | tail -n 40
  fi
}
attrs_bin="$here/build/test_attrs"
if [ "$SANITIZERS" = 1 ]; then
  make -C "$here" build/test_attrs-san >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
  attrs_bin="$here/build/test_attrs-san"
fi
run_attrs ours "$lib" "${vg[@]}" "$attrs_bin"
camlcrush_client=/usr/lib/x86_64-linux-gnu/caml-crush/libp11clientunix.so
if [ "$DAEMON" = ours ] && [ "$SANITIZERS" != 1 ]; then
  P11TEST_CLIENT=camlcrush run_attrs camlcrush "$camlcrush_client" "$here/build/test_attrs"
fi

if [ "$SANITIZERS" = 1 ]; then
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
fi

# ---- pkcs11-tool through the library ----
p11() { timeout 300 pkcs11-tool --module "$lib" "$@"; }
check() { # name, command...
  local name=$1; shift
  if "$@" >"$work/cmd.log" 2>&1; then ok "$name"; else
    ko "$name"; sed 's/^/    /' "$work/cmd.log" | tail -n 20; fi
}
check "pkcs11-tool -L" bash -c "$(declare -f p11); lib='$lib'; p11 -L | grep -q 'token label *: test'"
check "pkcs11-tool --keypairgen EC:prime256v1" \
  p11 --login --pin 1234 --keypairgen --key-type EC:prime256v1 --label tool-ec --id 11
check "pkcs11-tool --keypairgen rsa:2048" \
  p11 --login --pin 1234 --keypairgen --key-type rsa:2048 --label tool-rsa --id 12
check "pkcs11-tool -O --login lists both private keys" bash -c \
  "$(declare -f p11); lib='$lib'; out=\$(p11 -O --login --pin 1234) && \
   grep -q 'label: *tool-ec' <<<\"\$out\" && grep -q 'label: *tool-rsa' <<<\"\$out\" && \
   [ \$(grep -c 'Private Key Object' <<<\"\$out\") -ge 2 ]"
printf 'pkcs11proxyd client test data\n' > "$work/data"
check "pkcs11-tool --sign SHA256-RSA-PKCS, openssl verifies" bash -c "
  $(declare -f p11); lib='$lib'; cd '$work' &&
  p11 --login --pin 1234 --sign --mechanism SHA256-RSA-PKCS --id 12 -i data -o rsa.sig &&
  p11 --read-object --type pubkey --id 12 -o rsa.der &&
  openssl pkey -pubin -inform DER -in rsa.der -out rsa.pem &&
  openssl dgst -sha256 -verify rsa.pem -signature rsa.sig data"
check "pkcs11-tool --sign ECDSA, openssl verifies" bash -c "
  $(declare -f p11); lib='$lib'; cd '$work' &&
  openssl dgst -sha256 -binary data > data.sha256 &&
  p11 --login --pin 1234 --sign --mechanism ECDSA --signature-format openssl \
      --id 11 -i data.sha256 -o ec.sig &&
  p11 --read-object --type pubkey --id 11 -o ec.der &&
  openssl pkey -pubin -inform DER -in ec.der -out ec.pem &&
  openssl pkeyutl -verify -pubin -inkey ec.pem -in data.sha256 -sigfile ec.sig"
check "pkcs11-tool --test-fork" p11 --test-fork

# ---- p11tool and OpenSSL's pkcs11 engine through the library ----
. "$here/real_clients.sh"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

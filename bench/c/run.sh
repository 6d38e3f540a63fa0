#!/usr/bin/env bash
# PKCS#11 benchmark through five paths to SoftHSM2, in one interleaved run:
#   direct     SoftHSM2 loaded in the benchmark process
#   ours-unix  libp11client.so -> our pkcs11proxyd, Unix socket
#   ours-tcp   libp11client.so -> our pkcs11proxyd, TCP 127.0.0.1
#   camlcrush  Debian's libp11clientunix.so -> Debian's pkcs11proxyd, Unix socket
#   p11kit     p11-kit-client.so -> p11-kit server, Unix socket
# and, when named in BENCH_SYSTEMS, two filtering configurations:
#   ours-filter  ours-unix with filter.conf.example (the secure default)
#   caml-filter  camlcrush with Debian's /etc/pkcs11proxyd/filter.conf
#                (patchset 1; SoftHSM2 path fixed, wrapping_format_key added)
# and TLS systems (our client over tls://, TLS 1.3, client certificate) against
# our daemon's own TLS server:
#   ours-tls       libp11client.so -> our daemon over TLS 1.3
#   ours-tls-full  ours-tls with PKCS11PROXY_TLS_RESUMPTION=0 (every new
#                  connection a full handshake; for the newconn workload)
# and, for an A/B experiment on our daemon within one interleaved run:
#   ours-b         ours-unix with the daemon under `env $BENCH_B_ENV` and
#                  node options $BENCH_B_NODE_FLAGS, the daemon's build
#                  $BENCH_B_DIST (default dist/; another build must sit beside
#                  dist/, e.g. `git stash; npx tsc -p tsconfig.build.json
#                  --outDir dist-b; git stash pop`, so that it finds native/),
#                  the client library $BENCH_B_LIB (default: ours-unix's); e.g.
#                  BENCH_SYSTEMS="ours-unix ours-b" BENCH_B_ENV="MALLOC_ARENA_MAX=1"
# and the module in a helper process of each worker (module_isolation):
#   ours-helper    ours-unix with module_isolation mode "helper" for softhsm
#                  (npm run bench:helper: ours-unix vs ours-helper)
# e.g. BENCH_SYSTEMS="ours-tcp ours-tls ours-tls-full"
#      BENCH_WORKLOADS="sessioninfo ecdsa newconn"
# Each system has its own copy of one SoftHSM2 store (same token, same keys).
# Cells run one after another, row by row (workload x client processes). In a
# cell every system's client processes are set up first, then the systems take
# turns in slices of BENCH_SLICE seconds until each has had BENCH_SECONDS, the
# first system of each round rotating: this machine's speed changes within a
# second (direct RSA alone: 700 and 1,050 ops/s in consecutive 0.2 s cells), and
# a system that ran its whole cell in a slow or a fast spell moved a ratio by
# up to 30 %; in slices of 0.1 s two identical systems measure within 3 %.
#
#   bench/c/run.sh            (npm run bench:c builds dist/ first)
# Env: BENCH_SECONDS per cell and system (default 2), BENCH_SLICE (default
#   0.1; 0: each system runs its cell in one piece, one after another),
#   BENCH_CLIENTS (default "1 4"),
#   BENCH_WARMUP_OPS (operations of untimed load per workload and system
#   before the first run, shared by the largest client count's processes;
#   default 10000, 0 for none), BENCH_WARMUP (at most this many seconds of
#   it; default 20),
#   BENCH_RUNS (default 1: the whole matrix N times over the same daemons,
#   each run starting the system rotation one further; with N > 1 the tables
#   are medians of the runs, and ratios medians of per-run ratios),
#   BENCH_WORKLOADS (default "sessioninfo getattr find ecdsa rsa aescbc"),
#   BENCH_SYSTEMS (default all five), BENCH_OURS_WORKERS (our daemon's
#   -workers; default: its own, one per core), KEEP_WORKDIR=1,
#   BENCH_RESULTS=FILE (also write the raw RESULT lines there),
#   BENCH_OURS_NODE_FLAGS (node options of our daemon, e.g. --perf-basic-prof
#   to profile it with perf),
#   BENCH_OURS_LIB (the client library of the ours-* systems; default
#   client/build/libp11client.so, e.g. an older build to compare).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export PKCS11PROXYD_ALLOW_ROOT=1 # our daemon runs as root here without service.user
SECONDS_PER_CELL=${BENCH_SECONDS:-2}
SLICE=${BENCH_SLICE:-0.1}
CLIENTS=${BENCH_CLIENTS:-"1 4"}
WORKLOADS=${BENCH_WORKLOADS:-"sessioninfo getattr find ecdsa rsa aescbc"}
SYSTEMS=${BENCH_SYSTEMS:-"direct ours-unix ours-tcp camlcrush p11kit"}
SOFTHSM_LIB=/usr/lib/softhsm/libsofthsm2.so
OURS_LIB=${BENCH_OURS_LIB:-"$root/client/build/libp11client.so"}
RUNS=${BENCH_RUNS:-1}
CAML_LIB=/usr/lib/x86_64-linux-gnu/caml-crush/libp11clientunix.so
P11KIT_LIB=/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so
PIN=1234

die() { echo "bench: $*" >&2; exit 1; }

make -C "$root/client" >/dev/null || die "client build failed"
make -C "$here" >/dev/null || die "bench build failed"
[ -f "$root/dist/src/cli.js" ] || die "dist/src/cli.js missing: run npm run build"
for f in "$SOFTHSM_LIB" "$CAML_LIB" "$P11KIT_LIB" /usr/bin/pkcs11proxyd; do
  [ -e "$f" ] || die "$f missing"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/p11bench.XXXXXX")
declare -A PID MODULE ENVS SID
cleanup() {
  local s p
  for s in "${!PID[@]}"; do
    p=${PID[$s]}
    kill -TERM -- "-$p" 2>/dev/null || true
  done
  for s in "${!PID[@]}"; do
    p=${PID[$s]}
    for _ in $(seq 1 100); do pgrep -s "$p" >/dev/null 2>&1 || break; sleep 0.05; done
    kill -KILL -- "-$p" 2>/dev/null || true
  done
  if [ "${KEEP_WORKDIR:-0}" = 1 ]; then echo "workdir: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=../../tests/c/netplex-conf.sh
. "$root/tests/c/netplex-conf.sh"

# ---- one store with the keys, copied for every system ----
write_softhsm_conf "$work/template"
export SOFTHSM2_CONF="$work/template/softhsm2.conf"
tool() { timeout -k 5 120 pkcs11-tool --module "$SOFTHSM_LIB" --login --pin "$PIN" "$@" >/dev/null 2>&1; }
softhsm2-util --init-token --free --label bench --pin "$PIN" --so-pin 12345678 >/dev/null ||
  die "softhsm2-util --init-token failed"
tool --keypairgen --key-type EC:prime256v1 --label bench-ec --id 21 || die "EC key generation failed"
tool --keypairgen --key-type rsa:2048 --label bench-rsa --id 22 || die "RSA key generation failed"
# Encrypt/decrypt only, sensitive, not extractable: a key that secure policies
# (ours and Caml Crush's patchset 1) let be used. pkcs11-tool cannot clear
# CKA_WRAP/CKA_UNWRAP (SoftHSM2 defaults them to TRUE, and wrap+decrypt is a
# conflicting pair that hides the key), so the template is given in full here.
node -e '
const { PKCS11 } = require(process.argv[1]);
const p = new PKCS11(); p.load(process.argv[2]); p.C_Initialize();
const s = p.C_OpenSession(p.C_GetSlotList(true)[0], 6);
p.C_Login(s, 1, process.argv[3]);
const t = (type, value) => ({ type, value });
p.C_GenerateKey(s, { mechanism: 0x1080 /* CKM_AES_KEY_GEN */ }, [
  t(0x0 /* CKA_CLASS */, 4), t(0x1 /* CKA_TOKEN */, true), t(0x3 /* CKA_LABEL */, "bench-aes"), t(0x102 /* CKA_ID */, Buffer.from([0x23])),
  t(0x161 /* CKA_VALUE_LEN */, 32), t(0x104 /* CKA_ENCRYPT */, true), t(0x105 /* CKA_DECRYPT */, true),
  t(0x106 /* CKA_WRAP */, false), t(0x107 /* CKA_UNWRAP */, false), t(0x108 /* CKA_SIGN */, false), t(0x10a /* CKA_VERIFY */, false),
  t(0x103 /* CKA_SENSITIVE */, true), t(0x162 /* CKA_EXTRACTABLE */, false)]);
p.C_Logout(s); p.C_Finalize();' "$root/node_modules/pkcs11js" "$SOFTHSM_LIB" "$PIN" || die "AES key generation failed"
# Clients of a proxy get a SoftHSM2 configuration with no token, so a module
# that reached SoftHSM2 directly (p11-kit registers it system-wide) finds nothing.
write_softhsm_conf "$work/no-token"

store() { # system: private copy of the template store
  write_softhsm_conf "$work/$1"
  cp -a "$work/template/tokens/." "$work/$1/tokens/"
}

netplex_conf() { # system, address block
  write_netplex_conf "$work/$1" "$SOFTHSM_LIB" softhsm "$2"
}

wait_for() { # description, test command...
  local what=$1; shift
  for _ in $(seq 1 400); do
    "$@" && return 0
    sleep 0.05
  done
  die "$what"
}

# Starts a server in its own session: its pid is the session id the bench
# program sums CPU time over (workers and per-connection children included).
spawn() { # system, command...
  local sys=$1; shift
  SOFTHSM2_CONF="$work/$sys/softhsm2.conf" setsid "$@" \
    >"$work/$sys/stdout" 2>"$work/$sys/stderr" </dev/null &
  PID[$sys]=$!
  SID[$sys]=$!
}

# filter_conf_from SRC DEST: SRC with the path of its `softhsm` module (or, without
# one, its whole `modules`) set to this bench's SoftHSM2 and a wrapping_format_key set (patchset 1 needs one).
filter_conf_from() {
  python3 - "$1" "$2" "$SOFTHSM_LIB" <<'PY'
import re, sys
src, dest, lib = sys.argv[1:4]
text = open(src).read()
# Comments are OCaml (* ... *), nested, outside strings; drop them so a
# commented-out key is not edited.
out, depth, i, instr = [], 0, 0, False
while i < len(text):
    c, two = text[i], text[i:i + 2]
    if depth == 0 and c == '"' and (i == 0 or text[i - 1] != '\\'):
        instr = not instr
    if not instr and two == '(*':
        depth += 1; i += 2; continue
    if not instr and depth and two == '*)':
        depth -= 1; i += 2; continue
    if depth == 0:
        out.append(c)
    i += 1
text = ''.join(out)
# Keep the other aliases (Caml Crush loads a module only when a client asks for it).
if re.search(r'\("softhsm",\s*"[^"]*"\)', text):
    text = re.sub(r'\("softhsm",\s*"[^"]*"\)', '("softhsm", "%s")' % lib, text)
else:
    text = re.sub(r'(?m)^\s*modules\s*=\s*\[[^\]]*\]', 'modules = [("softhsm", "%s")]' % lib, text)
text = re.sub(r'(?m)^\s*wrapping_format_key\s*=.*$', '', text)
text += '\nwrapping_format_key = "00112233445566778899aabbccddeeff"\n'
open(dest, 'w').write(text)
PY
}

# bench_pki DIR: CA, server certificate for DNS:localhost, client certificate.
bench_pki() {
  local d=$1 n ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  mkdir -p "$d" && (
    cd "$d" &&
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca &&
    printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' > server.ext &&
    printf 'extendedKeyUsage=clientAuth\n' > client.ext &&
    for n in server client; do
      openssl req "${ec[@]}" -keyout $n.key -out $n.csr -subj "/CN=$n" &&
      openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile $n.ext -out $n.pem || exit 1
    done
  ) >"$d.log" 2>&1
}

ours_args=()
[ -n "${BENCH_OURS_WORKERS:-}" ] && ours_args=(-workers "$BENCH_OURS_WORKERS")
# Our daemon for system $1, listening on the netplex address $2; optional: $3 its
# build (default dist/), $4 node options (default $BENCH_OURS_NODE_FLAGS), $5
# VAR=value words for its environment.
start_ours() {
  netplex_conf "$1" "$2"
  # shellcheck disable=SC2086 # node options and the environment are word lists (e.g. --perf-basic-prof)
  spawn "$1" env ${5:-} node ${4-${BENCH_OURS_NODE_FLAGS:-}} "${3:-$root/dist}/src/cli.js" -fg -conf "$work/$1/pkcs11proxyd.conf" "${ours_args[@]}"
  wait_for "our daemon ($1) not ready: $(cat "$work/$1/stderr")" grep -q '^READY ' "$work/$1/stdout"
}
# A call that gets no reply fails after 30 s instead of the default 600 s.
client_env="SOFTHSM2_CONF=$work/no-token/softhsm2.conf PKCS11PROXY_CONF=$work/no-token/client.conf PKCS11PROXY_RPC_TIMEOUT=30"
: > "$work/no-token/client.conf"

for sys in $SYSTEMS; do
  store "$sys"
  case $sys in
  direct)
    MODULE[$sys]=$SOFTHSM_LIB
    ENVS[$sys]="SOFTHSM2_CONF=$work/$sys/softhsm2.conf"
    ;;
  ours-unix)
    start_ours "$sys" "address { type = \"local\"; path = \"$work/$sys/sock\"; };"
    MODULE[$sys]=$OURS_LIB
    ENVS[$sys]="$client_env PKCS11PROXY_SOCKET_PATH=$work/$sys/sock PKCS11PROXY_LIBNAME=softhsm"
    ;;
  ours-b)
    start_ours "$sys" "address { type = \"local\"; path = \"$work/$sys/sock\"; };" \
      "${BENCH_B_DIST:-}" "${BENCH_B_NODE_FLAGS:-}" "${BENCH_B_ENV:-}"
    MODULE[$sys]=${BENCH_B_LIB:-$OURS_LIB}
    ENVS[$sys]="$client_env PKCS11PROXY_SOCKET_PATH=$work/$sys/sock PKCS11PROXY_LIBNAME=softhsm"
    ;;
  ours-tcp)
    start_ours "$sys" 'address { type = "internet"; bind = "127.0.0.1:0"; };'
    # READY [{"addr":{...,"port":0},"port":N}]: N is the bound port.
    port=$(node -e '
      const l = require("fs").readFileSync(process.argv[1], "utf8").split("\n").find((x) => x.startsWith("READY "));
      const e = JSON.parse(l.slice(6)).find((x) => x.addr.type === "internet");
      process.stdout.write(String(e.port));' "$work/$sys/stdout")
    [ -n "$port" ] || die "no port in READY line: $(cat "$work/$sys/stdout")"
    MODULE[$sys]=$OURS_LIB
    ENVS[$sys]="$client_env PKCS11PROXY_SOCKET_PATH=127.0.0.1:$port PKCS11PROXY_LIBNAME=softhsm"
    ;;
  ours-tls | ours-tls-full)
    [ -f "$work/pki/ca.pem" ] || bench_pki "$work/pki" || die "test PKI failed"
    netplex_conf "$sys" 'address { type = "internet"; bind = "127.0.0.1:0"; };'
    sed -i "s|use_ssl = false;|use_ssl = true; tls { x509 { key { crt_file = \"$work/pki/server.pem\"; key_file = \"$work/pki/server.key\" }; trust { crt_file = \"$work/pki/ca.pem\" }; }; };|" "$work/$sys/pkcs11proxyd.conf"
    spawn "$sys" node "$root/dist/src/cli.js" -fg -conf "$work/$sys/pkcs11proxyd.conf" "${ours_args[@]}"
    wait_for "our daemon ($sys) not ready: $(cat "$work/$sys/stderr")" grep -q '^READY ' "$work/$sys/stdout"
    port=$(node -e '
      const l = require("fs").readFileSync(process.argv[1], "utf8").split("\n").find((x) => x.startsWith("READY "));
      const e = JSON.parse(l.slice(6)).find((x) => x.addr.type === "internet");
      process.stdout.write(String(e.port));' "$work/$sys/stdout")
    [ -n "$port" ] || die "no port in READY line: $(cat "$work/$sys/stdout")"
    tls_env="PKCS11PROXY_CA_FILE=$work/pki/ca.pem PKCS11PROXY_CERT_FILE=$work/pki/client.pem PKCS11PROXY_PRIVKEY_FILE=$work/pki/client.key"
    [ "$sys" = ours-tls-full ] && tls_env="$tls_env PKCS11PROXY_TLS_RESUMPTION=0"
    MODULE[$sys]=$OURS_LIB
    ENVS[$sys]="$client_env $tls_env PKCS11PROXY_SOCKET_PATH=tls://localhost:$port PKCS11PROXY_LIBNAME=softhsm"
    ;;
  ours-helper)
    netplex_conf "$sys" "address { type = \"local\"; path = \"$work/$sys/sock\"; };"
    printf 'module_isolation = { softhsm = { mode = "helper" } }\n' >> "$work/$sys/filter.conf"
    spawn "$sys" node "$root/dist/src/cli.js" -fg -conf "$work/$sys/pkcs11proxyd.conf" "${ours_args[@]}"
    wait_for "our daemon ($sys) not ready: $(cat "$work/$sys/stderr")" grep -q '^READY ' "$work/$sys/stdout"
    MODULE[$sys]=$OURS_LIB
    ENVS[$sys]="$client_env PKCS11PROXY_SOCKET_PATH=$work/$sys/sock PKCS11PROXY_LIBNAME=softhsm"
    ;;
  ours-filter)
    netplex_conf "$sys" "address { type = \"local\"; path = \"$work/$sys/sock\"; };"
    filter_conf_from "$root/filter.conf.example" "$work/$sys/filter.conf"
    spawn "$sys" node "$root/dist/src/cli.js" -fg -conf "$work/$sys/pkcs11proxyd.conf" "${ours_args[@]}"
    wait_for "our daemon ($sys) not ready: $(cat "$work/$sys/stderr")" grep -q '^READY ' "$work/$sys/stdout"
    MODULE[$sys]=$OURS_LIB
    ENVS[$sys]="$client_env PKCS11PROXY_SOCKET_PATH=$work/$sys/sock PKCS11PROXY_LIBNAME=softhsm"
    ;;
  caml-filter)
    netplex_conf "$sys" "address { type = \"local\"; path = \"$work/$sys/sock\"; };"
    filter_conf_from /etc/pkcs11proxyd/filter.conf "$work/$sys/filter.conf"
    spawn "$sys" /usr/bin/pkcs11proxyd -fg -conf "$work/$sys/pkcs11proxyd.conf"
    wait_for "Caml Crush ($sys) did not create its socket: $(cat "$work/$sys/stderr")" test -S "$work/$sys/sock"
    MODULE[$sys]=$CAML_LIB
    ENVS[$sys]="$client_env PKCS11PROXY_SOCKET_PATH=$work/$sys/sock PKCS11PROXY_LIBNAME=softhsm"
    ;;
  camlcrush)
    netplex_conf "$sys" "address { type = \"local\"; path = \"$work/$sys/sock\"; };"
    spawn "$sys" /usr/bin/pkcs11proxyd -fg -conf "$work/$sys/pkcs11proxyd.conf"
    wait_for "Caml Crush did not create its socket: $(cat "$work/$sys/stderr")" test -S "$work/$sys/sock"
    MODULE[$sys]=$CAML_LIB
    ENVS[$sys]="$client_env PKCS11PROXY_SOCKET_PATH=$work/$sys/sock PKCS11PROXY_LIBNAME=softhsm"
    ;;
  p11kit)
    spawn "$sys" p11-kit server -f -n "$work/$sys/sock" --provider "$SOFTHSM_LIB" "pkcs11:token=bench"
    wait_for "p11-kit server did not create its socket: $(cat "$work/$sys/stderr")" test -S "$work/$sys/sock"
    MODULE[$sys]=$P11KIT_LIB
    ENVS[$sys]="$client_env P11_KIT_SERVER_ADDRESS=unix:path=$work/$sys/sock"
    ;;
  *) die "unknown system $sys" ;;
  esac
done

# ---- cells ----
results="$work/results"
: > "$results"
read -ra systems <<<"$SYSTEMS"
nsys=${#systems[@]}
cells=0
for _ in $WORKLOADS; do for _ in $CLIENTS; do cells=$((cells + nsys)); done; done
echo "bench: $RUNS x $cells cells of ${SECONDS_PER_CELL}s in slices of ${SLICE}s; systems: $SYSTEMS" >&2
# run_bench SYS WORKLOAD CLIENTS SECONDS [bench options...]: one cell's client processes.
run_bench() {
  local sys=$1 wl=$2 k=$3 secs=$4
  shift 4
  # shellcheck disable=SC2086 # ENVS holds VAR=value words
  env ${ENVS[$sys]} timeout -k 5 $((120 + 3 * k)) "$here/build/bench" -m "${MODULE[$sys]}" -w "$wl" -p "$k" -t "$secs" "$@"
}
# A daemon that compiles its code at run time (ours: V8) would otherwise pay
# for that inside the first timed cell of each workload; a long-running proxy
# pays it once. Every system gets the same untimed load; its results are dropped.
# Counted in operations, not seconds: V8 tiers our daemon's code up by calls, so
# a workload of 1,300 calls/s (RSA at one client) was still being compiled
# (4.8 % of the worker's CPU) in cells after a 1 s warm-up.
WARMUP_OPS=${BENCH_WARMUP_OPS:-10000}
WARMUP=${BENCH_WARMUP:-20}
kmax=0
for k in $CLIENTS; do [ "$k" -gt "$kmax" ] && kmax=$k; done
if [ "$WARMUP_OPS" != 0 ] && [ "$WARMUP" != 0 ]; then
  echo "bench: warm-up, $WARMUP_OPS operations (at most ${WARMUP}s) per workload and system at $kmax clients" >&2
  for wl in $WORKLOADS; do
    for sys in $SYSTEMS; do
      run_bench "$sys" "$wl" "$kmax" "$WARMUP" -n $(((WARMUP_OPS + kmax - 1) / kmax)) >/dev/null 2>&1 || true
    done
  done
fi
# A cell: one bench process runs every system's clients (bench -S), in slices.
specs=()
for sys in "${systems[@]}"; do specs+=(-S "$sys ${SID[$sys]:-0} ${MODULE[$sys]} ${ENVS[$sys]}"); done
cell_timeout=$(awk -v n="$nsys" -v s="$SECONDS_PER_CELL" 'BEGIN { printf "%d", 120 + 2 * n * s }')
for ((run = 1; run <= RUNS; run++)); do
  row=0
  for wl in $WORKLOADS; do
    for k in $CLIENTS; do
      out=$(timeout -k 5 $((cell_timeout + 3 * k * nsys)) "$here/build/bench" "${specs[@]}" -q "$SLICE" \
        -o $(((row + run - 1) % nsys)) -w "$wl" -p "$k" -t "$SECONDS_PER_CELL" 2>"$work/cell.err")
      for sys in "${systems[@]}"; do
        line=$(grep "^RESULT sys=$sys " <<<"$out" | tail -n 1)
        if [ -n "$line" ]; then
          line="RESULT ${line#RESULT sys=$sys }"
        else
          line="RESULT status=error reason=no result (exit or timeout); $(tr '\n' ' ' <"$work/cell.err" | cut -c1-200)"
        fi
        echo "$wl $k $sys ${line#RESULT } run=$run" >> "$results"
        printf '  %d %-11s %d  %-9s %s\n' "$run" "$wl" "$k" "$sys" "${line#RESULT }" >&2
      done
      row=$((row + 1))
    done
  done
done
[ -n "${BENCH_RESULTS:-}" ] && cp "$results" "$BENCH_RESULTS"
if [ "$RUNS" -gt 1 ]; then
  node "$root/dist/bench/c-summary.js" "$results" "$SYSTEMS"
  exit 0
fi

# ---- tables ----
awk -v systems="$SYSTEMS" -v secs="$SECONDS_PER_CELL" '
function field(line, key,    m) {
  if (match(line, "(^| )" key "=[^ ]*")) { m = substr(line, RSTART, RLENGTH); sub(/^ /, "", m); return substr(m, length(key) + 2) }
  return ""
}
function fmt_us(v) { return v < 10 ? sprintf("%.1f", v) : sprintf("%.0f", v) }
function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "-" : sprintf(a / b < 0.1 ? "%.3f" : "%.2f", a / b) }
{
  key = $1 " " $2; sys = $3
  if (!(key in seen)) { seen[key] = 1; rows[++nrows] = key }
  line = $0
  st[key, sys] = field(line, "status")
  if (st[key, sys] == "ok") {
    ops[key, sys] = field(line, "ops_s"); p50[key, sys] = field(line, "p50_us"); p99[key, sys] = field(line, "p99_us")
    ccpu[key, sys] = field(line, "client_cpu_us_op"); scpu[key, sys] = field(line, "server_cpu_us_op")
    spct[key, sys] = field(line, "server_cpu_pct")
    csys[key, sys] = field(line, "client_sys_pct"); ssys[key, sys] = field(line, "server_sys_pct")
  } else {
    r = line; sub(/^.*reason=/, "", r); reason[key, sys] = r
  }
}
END {
  n = split(systems, S, " ")
  printf "Throughput (ops/s) and latency (p50/p99 us), %ss per cell, interleaved\n\n", secs
  printf "%-16s", "workload x procs"
  for (i = 1; i <= n; i++) printf " | %-22s", S[i]
  printf " | %-9s %-9s %-9s %-9s %-9s\n", "ours/p11k", "ours/caml", "ours/dir", "filt/ours", "filt/cfil"
  for (r = 1; r <= nrows; r++) {
    key = rows[r]; split(key, kk, " ")
    printf "%-16s", kk[1] " x" kk[2]
    for (i = 1; i <= n; i++) {
      s = S[i]
      if (st[key, s] == "ok") cell = sprintf("%7d %6s/%-7s", ops[key, s], fmt_us(p50[key, s]), fmt_us(p99[key, s]))
      else cell = (st[key, s] == "na" ? "n/a" : st[key, s] == "" ? "-" : "ERROR")
      printf " | %-22s", cell
    }
    o = ops[key, "ours-unix"]
    f = ops[key, "ours-filter"]
    printf " | %-9s %-9s %-9s %-9s %-9s\n", ratio(o, ops[key, "p11kit"]), ratio(o, ops[key, "camlcrush"]), ratio(o, ops[key, "direct"]), ratio(f, o), ratio(f, ops[key, "caml-filter"])
  }
  printf "\nRatios: ops/s of ours-unix divided by the other system (> 1: ours faster);\n"
  printf "filt/ours: ours-filter / ours-unix (cost of the secure policy); filt/cfil: ours-filter / caml-filter.\n"
  printf "\nCPU time per operation (us): client processes / server processes,\n"
  printf "[server CPU in %% of one core], (kernel share of client / server CPU)\n\n"
  printf "%-16s", "workload x procs"
  for (i = 1; i <= n; i++) printf " | %-28s", S[i]
  printf "\n"
  for (r = 1; r <= nrows; r++) {
    key = rows[r]; split(key, kk, " ")
    printf "%-16s", kk[1] " x" kk[2]
    for (i = 1; i <= n; i++) {
      s = S[i]
      if (st[key, s] != "ok") cell = (st[key, s] == "na" ? "n/a" : st[key, s] == "" ? "-" : "ERROR")
      else if (scpu[key, s] == "") cell = sprintf("%s / - (%s%%)", fmt_us(ccpu[key, s]), csys[key, s])
      else cell = sprintf("%s / %s [%s%%] (%s%%/%s%%)", fmt_us(ccpu[key, s]), fmt_us(scpu[key, s]), spct[key, s], csys[key, s], ssys[key, s])
      printf " | %-28s", cell
    }
    printf "\n"
  }
  nnotes = 0
  for (r = 1; r <= nrows; r++) for (i = 1; i <= n; i++) {
    key = rows[r]; s = S[i]
    if (st[key, s] != "ok" && st[key, s] != "") {
      if (!nnotes++) printf "\nNot measured:\n"
      printf "  %s, %s: %s: %s\n", key, s, st[key, s] == "na" ? "n/a" : "ERROR", reason[key, s]
    }
  }
}' "$results"

# ---- TLS against TCP, same daemon code, same run ----
if grep -q ' ours-tls ' "$results" && grep -q ' ours-tcp ' "$results"; then
  awk '
  function field(line, key,    m) {
    if (match(line, "(^| )" key "=[^ ]*")) { m = substr(line, RSTART, RLENGTH); sub(/^ /, "", m); return substr(m, length(key) + 2) }
    return ""
  }
  { if (field($0, "status") == "ok") { ops[$1 " " $2, $3] = field($0, "ops_s"); p50[$1 " " $2, $3] = field($0, "p50_us") }
    if (!(($1 " " $2) in seen)) { seen[$1 " " $2] = 1; rows[++n] = $1 " " $2 } }
  END {
    printf "\nTLS cost: p50 latency ours-tls / ours-tcp (target <= 1.3), ops/s tcp, tls, tls-full\n"
    for (r = 1; r <= n; r++) {
      k = rows[r]; a = p50[k, "ours-tls"]; b = p50[k, "ours-tcp"]
      printf "  %-16s p50 %s  ops/s %s / %s / %s\n", k, (a == "" || b == "" || b == 0) ? "-" : sprintf("%.2f", a / b), ops[k, "ours-tcp"], ops[k, "ours-tls"], ops[k, "ours-tls-full"]
    }
  }' "$results"
fi

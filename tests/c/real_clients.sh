# Sourced by run.sh after its pkcs11-tool steps, which leave the key pairs
# tool-ec (EC P-256, id 11) and tool-rsa (RSA-2048, id 12) on token "test".
# Runs GnuTLS p11tool and OpenSSL 3 with the pkcs11 engine (libp11) through
# libp11client.so. Uses $work, $lib and check() from run.sh.
#
# SoftHSM2 is registered with p11-kit system-wide, so a client that ignored
# --provider/PKCS11_MODULE_PATH could reach the token store directly through
# p11-kit-proxy. The clients therefore get a SOFTHSM2_CONF whose token
# directory is empty, and each step requires libp11client's debug lines on
# stderr as proof that the library was the module used.

rc_dir="$work/real-clients"
mkdir -p "$rc_dir/empty-tokens"
cat > "$rc_dir/softhsm2.conf" <<CONF
directories.tokendir = $rc_dir/empty-tokens
objectstore.backend = file
log.level = ERROR
CONF
cat > "$rc_dir/openssl.cnf" <<CONF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
MODULE_PATH = $lib
CONF
printf 'pkcs11proxyd real client test data\n' > "$rc_dir/data"
openssl dgst -sha256 -binary "$rc_dir/data" > "$rc_dir/data.sha256"

# rc_run COMMAND...: runs COMMAND as a client of libp11client.so, stdin
# closed (a PIN prompt fails instead of waiting), bounded by 60 s; stdout
# passes through, stderr minus the library's debug lines goes to stderr.
rc_run() {
  SOFTHSM2_CONF="$rc_dir/softhsm2.conf" PKCS11PROXY_DEBUG=1 \
    timeout -k 5 60 "$@" </dev/null 2>"$rc_dir/stderr"
  local rc=$?
  grep -v '^libp11client\[' "$rc_dir/stderr" >&2
  if [ $rc -ne 0 ]; then echo "exit $rc: $*" >&2; return $rc; fi
  grep -q '^libp11client\[' "$rc_dir/stderr" ||
    { echo "libp11client.so was not used by: $*" >&2; return 1; }
}

rc_p11tool_tokens() {
  local out
  out=$(rc_run p11tool --provider "$lib" --list-tokens) || return 1
  echo "$out"
  grep -q 'Label: test$' <<<"$out"
}
rc_p11tool_public() {
  local out
  out=$(rc_run p11tool --provider "$lib" --list-all 'pkcs11:token=test') || return 1
  echo "$out"
  grep -q 'object=tool-ec;type=public' <<<"$out" &&
    grep -q 'object=tool-rsa;type=public' <<<"$out" &&
    ! grep -q 'type=private' <<<"$out"
}
rc_p11tool_login() {
  local out
  out=$(rc_run env GNUTLS_PIN=1234 p11tool --provider "$lib" --login \
    --list-all 'pkcs11:token=test') || return 1
  echo "$out"
  grep -q 'Type: Private key (EC/ECDSA-SECP256R1)' <<<"$out" &&
    grep -q 'Type: Private key (RSA-2048)' <<<"$out" &&
    grep -q 'object=tool-ec;type=private' <<<"$out" &&
    grep -q 'object=tool-rsa;type=private' <<<"$out"
}
rc_p11tool_test_sign() {
  local key
  for key in tool-ec tool-rsa; do
    rc_run p11tool --provider "$lib" --login --set-pin=1234 \
      --test-sign "pkcs11:token=test;object=$key;type=private" || return 1
  done
}
rc_openssl_ec() {
  cd "$rc_dir" || return 1
  rm -f ec-engine.sig ec-tool.der ec-tool.pem
  rc_run env PKCS11_MODULE_PATH="$lib" openssl pkeyutl -engine pkcs11 -keyform engine \
    -inkey 'pkcs11:token=test;object=tool-ec;type=private?pin-value=1234' \
    -sign -in data.sha256 -out ec-engine.sig || return 1
  rc_run pkcs11-tool --module "$lib" --read-object --type pubkey \
    --label tool-ec -o ec-tool.der || return 1
  openssl pkey -pubin -inform DER -in ec-tool.der -out ec-tool.pem &&
    openssl pkeyutl -verify -pubin -inkey ec-tool.pem -in data.sha256 \
      -sigfile ec-engine.sig
}
rc_openssl_rsa() {
  cd "$rc_dir" || return 1
  rm -f rsa-engine.sig rsa-engine.pem
  rc_run env OPENSSL_CONF="$rc_dir/openssl.cnf" openssl pkeyutl -engine pkcs11 \
    -keyform engine -inkey 'pkcs11:token=test;object=tool-rsa;type=private?pin-value=1234' \
    -sign -pkeyopt digest:sha256 -in data.sha256 -out rsa-engine.sig || return 1
  rc_run env OPENSSL_CONF="$rc_dir/openssl.cnf" openssl pkey -engine pkcs11 \
    -inform engine -pubin -in 'pkcs11:token=test;object=tool-rsa;type=public' \
    -out rsa-engine.pem || return 1
  openssl rsa -pubin -in rsa-engine.pem -noout -text | grep -q 'Public-Key: (2048 bit)' &&
    openssl dgst -sha256 -verify rsa-engine.pem -signature rsa-engine.sig data
}

check "p11tool --list-tokens shows token test" rc_p11tool_tokens
check "p11tool --list-all without login: public keys only" rc_p11tool_public
check "p11tool --login (GNUTLS_PIN) --list-all: private keys too" rc_p11tool_login
check "p11tool --login --set-pin --test-sign EC and RSA" rc_p11tool_test_sign
check "openssl pkcs11 engine (PKCS11_MODULE_PATH) ECDSA P-256 sign, openssl verifies" rc_openssl_ec
check "openssl pkcs11 engine (openssl.cnf) RSA-2048 SHA-256 sign, openssl verifies" rc_openssl_rsa

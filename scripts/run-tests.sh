#!/usr/bin/env bash
# Runs every suite and ends with one line "N passed, N failed" summing them all.
set -u
cd "$(dirname "$0")/.."
mkdir -p .tmp
# The suites run as root with configurations without service.user: allow_root for all (src/server/supervision/privilege.ts).
export PKCS11PROXYD_ALLOW_ROOT=1
passed=0
failed=0
status=0

echo "== lint"
if npx eslint . ; then passed=$((passed+1)); else failed=$((failed+1)); status=1; fi
echo "== typecheck"
if npx tsc -p tsconfig.json --noEmit ; then passed=$((passed+1)); else failed=$((failed+1)); status=1; fi
echo "== import cycles"
if npx madge --circular --extensions ts src tools; then passed=$((passed+1)); else failed=$((failed+1)); status=1; fi

echo "== jest"
npx jest --ci --json --outputFile=.tmp/jest.json 2>&1 | tail -n 60
if [ -f .tmp/jest.json ]; then
  jp=$(node -e 'const r=require("./.tmp/jest.json");console.log(r.numPassedTests)')
  jf=$(node -e 'const r=require("./.tmp/jest.json");console.log(r.numFailedTests + (r.numRuntimeErrorTestSuites||0))')
  passed=$((passed+jp)); failed=$((failed+jf))
  [ "$jf" -eq 0 ] || status=1
else
  echo "jest produced no report"; failed=$((failed+1)); status=1
fi

# C client suite against our daemon (under valgrind), against Debian's Caml Crush daemon (interop),
# and against ours again built with ASan + UBSan.
for run in ours camlcrush ours-sanitizers; do
  daemon=${run%-sanitizers}
  sanitizers=0; [ "$run" = "$daemon" ] || sanitizers=1
  echo "== C tests ($run)"
  SANITIZERS=$sanitizers bash tests/c/run.sh "$daemon" 2>&1 | tee ".tmp/c-tests-$run.log"
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' ".tmp/c-tests-$run.log" | tail -n 1)
  if [ -n "$line" ]; then
    cp=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/'); cf=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
    passed=$((passed+cp)); failed=$((failed+cf)); [ "$cf" -eq 0 ] || status=1
  else
    echo "C tests printed no summary"; failed=$((failed+1)); status=1
  fi
done

# The client's daemon-list failover (tests/ts/client-failover*.test.ts) again, with the
# ASan + UBSan build of the client the run above made (client/build-san/).
echo "== jest (client failover, sanitizers)"
P11CLIENT_SANITIZERS=1 npx jest --ci --json --outputFile=.tmp/jest-san.json tests/ts/client-failover 2>&1 | tail -n 20
if [ -f .tmp/jest-san.json ]; then
  jp=$(node -e 'const r=require("./.tmp/jest-san.json");console.log(r.numPassedTests)')
  jf=$(node -e 'const r=require("./.tmp/jest-san.json");console.log(r.numFailedTests + (r.numRuntimeErrorTestSuites||0))')
  passed=$((passed+jp)); failed=$((failed+jf))
  [ "$jf" -eq 0 ] || status=1
else
  echo "jest produced no report"; failed=$((failed+1)); status=1
fi

echo "$passed passed, $failed failed"
exit $status

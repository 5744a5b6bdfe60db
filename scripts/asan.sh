#!/bin/bash
# `npm run test:asan`: the addon's tests under AddressSanitizer and UndefinedBehaviorSanitizer.
#
# Builds the addon with -fsanitize=address,undefined in a scratch copy of the checkout
# (build/ here is left alone), then runs the native tier (test/native: the libxenstore
# conformance suite against the mock xenstored, event channels and grant tables over the
# fake Xen libraries, libxl over its fakes, handle life cycles in workers and child
# processes) and the native-backed conformance files with both runtimes preloaded into
# Node. Any sanitizer report fails the run, even when every test passed.
#
#   npm run test:asan                    test/native and test/conformance
#   npm run test:asan -- test/native/grants.test.ts     other vitest arguments
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
GCC_LIB=$(dirname "$(g++ -print-file-name=libasan.so)")
ASAN=$GCC_LIB/libasan.so
UBSAN=$GCC_LIB/libubsan.so
[ -f "$ASAN" ] && [ -f "$UBSAN" ] || { echo "test:asan needs g++'s sanitizer runtimes (apt-get install g++)"; exit 1; }
T=$(mktemp -d /tmp/xenode-asan.XXXXXX)
trap 'rm -rf "$T"' EXIT
echo "[test:asan] copying the checkout to $T"
(cd "$HERE" && tar -cf - --exclude=./node_modules --exclude=./build --exclude=./dist --exclude=./prebuilds \
  --exclude=./docs/api --exclude=./.git .) | (cd "$T" && tar -xf -)
ln -s "$HERE/node_modules" "$T/node_modules"
NODE_GYP=${npm_config_node_gyp:-$(dirname "$(realpath "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js}
NODEDIR=${npm_config_nodedir:-$(dirname "$(dirname "$(realpath "$(command -v node)")")")}
FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -g -O1"
echo "[test:asan] building the addon with $FLAGS"
(cd "$T" && CFLAGS="$FLAGS" CXXFLAGS="$FLAGS" LDFLAGS="-fsanitize=address,undefined" \
  node "$NODE_GYP" rebuild --nodedir="$NODEDIR" >"$T/build.log" 2>&1) || { tail -30 "$T/build.log"; exit 1; }
(cd "$T" && npx tsc -p tsconfig.build.json && node scripts/finish-build.mjs)
mkdir -p "$T/reports"
ARGS=("$@")
[ ${#ARGS[@]} -gt 0 ] || ARGS=(test/native test/conformance)
echo "[test:asan] vitest run ${ARGS[*]}"
set +e
(cd "$T" && LD_PRELOAD="$ASAN $UBSAN" \
  ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$T/reports/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$T/reports/ubsan" \
  npx vitest run "${ARGS[@]}")
status=$?
set -e
# Node itself is not instrumented: detect_leaks=0, since V8 frees nothing at exit.
if compgen -G "$T/reports/*" >/dev/null; then
  echo "[test:asan] sanitizer reports:"
  cat "$T"/reports/*
  exit 1
fi
[ $status -eq 0 ] && echo "[test:asan] no sanitizer reports"
exit $status

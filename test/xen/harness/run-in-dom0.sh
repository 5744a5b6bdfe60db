#!/bin/sh
# Runs INSIDE dom0: starts the Xen services, then xenode's real-Xen tier (test/xen)
# from a copy in tmpfs (9p is too slow for vitest's module loading under TCG).
R=/mnt/host/results; mkdir -p $R
S=$R/summary.txt; : > $S
say() { echo "XENCI: $*"; echo "$*" >> $S; }
/etc/init.d/xen start > $R/xen-init.txt 2>&1; say "xen start rc=$?"
modprobe xen-gntalloc; modprobe xen-gntdev
say "devices: $(ls /dev/xen | tr '\n' ' ')"
mkdir -p /tmp/x && cd /tmp/x && tar -xf /mnt/host/xenode.tar || exit 1
say "unpacked; addon files: $(ls build/Release/*.node prebuilds/*/*.node 2>&1 | tr '\n' ' ')"
export PATH=/opt/node20/bin:$PATH XENODE_BACKEND=native XENODE_XEN_TIER=1 HOME=/root
say "node $(node -v); addon: $(node -e "console.log(require('node-gyp-build').path('.'))" 2>&1)"
timeout 900 node node_modules/vitest/vitest.mjs run --config test/xen/vitest.config.ts --reporter=verbose > $R/vitest.txt 2>&1
say "vitest rc=$?"
grep -E "✓|×|↓|Tests|Test Files" $R/vitest.txt | sed 's/^/XENCI: /'
say "DONE"

#!/bin/sh
# The payload of the real-Xen tier, run by dom0's init (scripts/xen/image/dom0-init)
# from the checkout that the host shares. Starts Xen's services with the xenstored this
# boot asks for, runs the vitest suites of test/xen/, and leaves everything in /mnt/out
# (the host's run folder): vitest.json (the verdict), vitest.log, and Xen's logs.
out=/mnt/out
. $out/dom0.env
export XENODE_SRC XENODE_XENSTORED XENODE_VITEST_ARGS
say() { echo "XENODE: $*"; }
uptime() { cut -d' ' -f1 /proc/uptime; }

# /etc/init.d/xen runs $XENSTORED when set, else oxenstored when it is installed.
case "$XENODE_XENSTORED" in
  oxenstored) export XENSTORED=/usr/sbin/oxenstored ;;
  xenstored) export XENSTORED=/usr/lib/xen-4.17/bin/xenstored ;;
esac
/etc/init.d/xen start >$out/xen-start.log 2>&1
rc=$?
# the init script loads evtchn, gntdev and privcmd; grant-table tests need gntalloc too,
# and guests' disks and NICs need the kernel's block and network backends
for m in xen-gntalloc xen-blkback xen-netback xen-pciback; do modprobe $m || say "modprobe $m failed"; done
say "xen services started (rc=$rc, $XENSTORED), uptime $(uptime)s, capabilities $(cat /proc/xen/capabilities)"

cd "$XENODE_SRC" || exit 1
export XENODE_XEN_TIER=1 XENODE_BACKEND=native CI=true NO_COLOR=1
# shellcheck disable=SC2086
node node_modules/vitest/vitest.mjs run --config vitest.xen.config.ts \
  --reporter=verbose --reporter=json --outputFile.json=$out/vitest.json $XENODE_VITEST_ARGS 2>&1 |
  tee $out/vitest.log | sed 's/^/XENODE: | /'
say "vitest done, uptime $(uptime)s"

xl dmesg >$out/xl-dmesg.log 2>&1
dmesg >$out/dom0-dmesg.log 2>&1
mkdir -p $out/xen-logs && cp -r /var/log/xen/. $out/xen-logs/ 2>/dev/null
echo "$(uptime)" >$out/finished

#!/bin/sh
# The payload of the real-Xen tier, run by dom0's init (scripts/xen/image/dom0-init)
# from the checkout that the host shares. Starts Xen's services with the xenstored this
# boot asks for, runs the vitest suites of test/xen/, and leaves everything in /mnt/out
# (the host's run folder): vitest.json (the verdict), vitest.log, and Xen's logs.
out=/mnt/out
. $out/dom0.env
export XENODE_SRC XENODE_XENSTORED XENODE_VITEST_ARGS XENODE_VITEST_MODULES
say() { echo "XENODE: $*"; }
uptime() { cut -d' ' -f1 /proc/uptime; }

# Xen's services, started as /etc/init.d/xen starts them (xenfs, the event channel and
# grant devices, xenstored, xen-init-dom0, xenconsoled) but without the twenty-odd helper
# processes its script runs on the way (xen-dir, start-stop-daemon, a xenstore-read every
# second...): under TCG a PV dom0 pays about a second per process, and the script took
# 40-50 s of each boot. Also loaded: gntalloc for the grant-table tests, and the kernel's
# block and network backends for guests' disks and NICs.
bin=/usr/lib/xen-4.17/bin
case "$XENODE_XENSTORED" in
  oxenstored) XENSTORED=$bin/oxenstored ;;
  xenstored) XENSTORED=$bin/xenstored ;;
esac
rc=0
{
# netback offers as many queues per NIC as dom0 has vCPUs unless told, and dom0 has one
# here (run.mjs): four, so that the guests' NICs are multi-queue as on a larger host
modprobe xen-netback max_queues=4 || { say "modprobe xen-netback failed"; rc=1; }
modprobe -a xenfs xen-evtchn xen-gntdev xen-gntalloc xen-blkback xen-netback xen-pciback || { say "modprobe failed"; rc=1; }
[ -e /proc/xen/capabilities ] || mount -t xenfs xenfs /proc/xen || rc=1
mkdir -p /run/xenstored && mkdir -p -m 700 /run/xen
XENSTORED_ROOTDIR=/run/xenstored choom -n -1000 -- "$XENSTORED" --pid-file /run/xenstore.pid || rc=1
# the daemon listens on its socket before it serves: requests wait in the backlog
n=0
while [ ! -S /run/xenstored/socket ] && [ $n -lt 150 ]; do sleep 0.2; n=$((n + 1)); done
$bin/xen-init-dom0 >/dev/null || rc=1
$bin/xenconsoled --log=guest --pid-file /run/xenconsoled.pid || rc=1
} >$out/xen-start.log 2>&1
say "xen services started (rc=$rc, $XENSTORED), uptime $(uptime)s, capabilities $(cat /proc/xen/capabilities)"

cd "$XENODE_SRC" || exit 1
export XENODE_XEN_TIER=1 XENODE_BACKEND=native CI=true NO_COLOR=1
# the modules the host transforms while dom0 boots (run.mjs warmModuleCache): wait for
# them (two minutes at most), and use them if the host could warm them
cache=
n=0
while [ ! -e $out/modules.done ] && [ $n -lt 240 ]; do sleep 0.5; n=$((n + 1)); done
if [ "$(cat $out/modules.done 2>/dev/null)" = warm ]; then
  cache="--experimental.fsModuleCache --experimental.fsModuleCachePath=$XENODE_VITEST_MODULES"
else
  say "running without the host's transforms ($(cat $out/modules.done 2>/dev/null || echo 'none after 120 s'))"
fi
# shellcheck disable=SC2086
node node_modules/vitest/vitest.mjs run --config vitest.xen.config.ts $cache \
  --reporter=verbose --reporter=json --outputFile.json=$out/vitest.json $XENODE_VITEST_ARGS 2>&1 |
  tee $out/vitest.log | sed 's/^/XENODE: | /'
say "vitest done, uptime $(uptime)s"

xl dmesg >$out/xl-dmesg.log 2>&1
dmesg >$out/dom0-dmesg.log 2>&1
mkdir -p $out/xen-logs && cp -r /var/log/xen/. $out/xen-logs/ 2>/dev/null
echo "$(uptime)" >$out/finished

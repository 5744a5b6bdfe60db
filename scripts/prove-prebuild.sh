#!/bin/bash
# Proves that the prebuild in prebuilds/ loads on a machine that has Xen's runtime
# libraries but neither the Xen headers nor a compiler (issue 3: "the prebuild built on
# Debian 12 must load on a machine that has the Xen runtime libraries but no headers and
# no compiler").
#
# Usage (root): scripts/prove-prebuild.sh ROOTFS
#   ROOTFS  a Debian 12 root filesystem with the Xen runtime libraries installed, e.g. the
#           dom0 rootfs the Xen-in-QEMU harness builds (debootstrap … --include=xen-utils-4.17).
#
# It mounts an overlay on ROOTFS (ROOTFS itself is not changed), purges libxen-dev there,
# checks that no Xen header, compiler, make or python is left, copies in only what a user
# installing the package would have (package.json, dist/, prebuilds/, node-gyp-build and
# the node binary; no build/, no native/ sources), and in a chroot:
#   1. node-gyp-build picks prebuilds/linux-x64/xenode.glibc.node and it loads;
#   2. the Xen libraries it dlopens are found (each open reaches the device step:
#      XEN_UNAVAILABLE naming /dev/xen/…, not a missing library), the version check runs;
#   3. the mock backend works;
#   4. with the runtime libraries removed too, opening says which library is missing.
set -euo pipefail
ROOTFS=${1:?usage: $0 ROOTFS}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PREBUILD=$HERE/prebuilds/linux-x64/xenode.glibc.node
[ -f "$PREBUILD" ] || { echo "no $PREBUILD: run npm run prebuild first"; exit 1; }
[ -f "$HERE/dist/index.js" ] || { echo "no dist/: run npm run build first"; exit 1; }
T=$(mktemp -d /tmp/xenode-prebuild-proof.XXXXXX)
cleanup() { umount "$T/root/proc" 2>/dev/null || true; umount "$T/root" 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
mkdir -p "$T"/{upper,work,root}
mount -t overlay overlay -o "lowerdir=$ROOTFS,upperdir=$T/upper,workdir=$T/work" "$T/root"
R=$T/root
chroot "$R" dpkg --purge libxen-dev >/dev/null 2>&1 || true
for f in /usr/include/xenctrl.h /usr/include/xenevtchn.h /usr/include/xenstore.h; do
  [ ! -e "$R$f" ] || { echo "FAIL: $f is still there"; exit 1; }
done
for tool in cc gcc g++ c++ clang make pkg-config; do
  ! chroot "$R" sh -c "command -v $tool" >/dev/null 2>&1 || { echo "FAIL: $tool is installed"; exit 1; }
done
echo "chroot: no Xen headers, no compiler, make or pkg-config (node-gyp cannot run)"
P=$R/opt/xenode
mkdir -p "$P/node_modules" "$R/opt/node/bin"
cp "$HERE/package.json" "$P/"
cp -r "$HERE/dist" "$HERE/prebuilds" "$P/"
cp -r "$HERE/node_modules/node-gyp-build" "$P/node_modules/"
cp "$(readlink -f "$(command -v node)")" "$R/opt/node/bin/node"
mount -t proc proc "$R/proc"
cat > "$P/proof.mjs" <<'JS'
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const file = require('node-gyp-build').path('/opt/xenode');
const addon = require(file);
const settle = (p) => p.then(() => ({ ok: true }), (e) => ({ code: e.code, op: e.op, path: e.path, message: e.message }));
const out = {
  file,
  xenVersion: addon.xenVersion,
  releaseCheck: addon.checkXenRelease((4 << 16) | 17),
  evtchn: await settle(addon.openEventChannels(() => {})),
  gnttab: await settle(addon.openGrants()),
  xenctrl: await settle(addon.openXenCtrl()),
};
const { connect } = await import('/opt/xenode/dist/index.js');
const xen = await connect({ backend: 'mock' });
await xen.xenstore.write('/proof', 'ok');
const a = await xen.eventChannels.bindUnbound(0);
out.mock = { xenstore: await xen.xenstore.read('/proof'), port: a.port };
await xen.close();
console.log(JSON.stringify(out, null, 1));
JS
echo "--- with the Xen runtime libraries"
chroot "$R" /opt/node/bin/node /opt/xenode/proof.mjs | tee "$T/with.json"
grep -q '"file": "/opt/xenode/prebuilds/linux-x64/xenode.glibc.node"' "$T/with.json"
grep -q '"op": "xenevtchn_open"' "$T/with.json"
grep -q '"op": "xengnttab_open"' "$T/with.json"
grep -q '"op": "xc_interface_open"' "$T/with.json"
grep -q '"xenstore": "ok"' "$T/with.json"
echo "--- without them"
rm -f "$R"/usr/lib/x86_64-linux-gnu/libxenevtchn.so* "$R"/usr/lib/x86_64-linux-gnu/libxenctrl.so*
chroot "$R" /opt/node/bin/node /opt/xenode/proof.mjs | tee "$T/without.json"
grep -q 'libxenevtchn.so.1 cannot be loaded' "$T/without.json"
grep -q 'libxenctrl.so.4.17 cannot be loaded' "$T/without.json"
echo "PROVED: the prebuild loads and works without headers or compiler; missing libraries are named"

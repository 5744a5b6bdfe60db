#!/bin/bash
# Runs test/xen in a dom0 of real Xen 4.17 under QEMU: a stopgap until the real-Xen CI
# tier lands. It reuses the image that the shared Xen-in-QEMU harness (run.sh,
# STEPS=build) built under $W (xen-4.17-amd64, vmlinuz, boot.cpio.gz, rootfs/), puts
# this checkout in its share as a tarball (prebuilds/ but not build/, so dom0 loads the
# prebuild), boots, and prints share/results/summary.txt; the full vitest output is in
# $W/share/results/vitest.txt. Needs: npm run prebuilds. Run as root.
set -uo pipefail
SRC=$(cd "$(dirname "$0")/../../.." && pwd)
W=${W:-/tmp/xen-vm}; cd $W
rm -rf share/results share/xenode share/xenode.tar; mkdir -p share/results
cp "$SRC/test/xen/harness/run-in-dom0.sh" share/run-in-dom0.sh
tar -C $SRC --exclude=.git --exclude=docs --exclude=build --exclude=bench --exclude=examples \
  --exclude=node_modules/typescript --exclude=node_modules/typedoc --exclude='node_modules/@typescript-eslint' \
  --exclude=node_modules/eslint --exclude='node_modules/.vite' --exclude='node_modules/.vitest' \
  --exclude='node_modules/@eslint' --exclude=node_modules/prebuildify --exclude=node_modules/fast-check \
  -cf share/xenode.tar .
ls -la share/xenode.tar
: > share/dom0.env
timeout ${QEMU_TIMEOUT:-1500} qemu-system-x86_64 \
    -machine q35 -accel tcg,thread=multi -cpu qemu64,+svm -smp 2 -m 2G \
    -nographic -no-reboot -monitor none -serial stdio \
    -kernel xen-4.17-amd64 \
    -append "console=com1 com1=115200 dom0_mem=1024M,max:1024M dom0_max_vcpus=2 loglvl=all guest_loglvl=all" \
    -initrd "vmlinuz console=hvc0 earlyprintk=xen,boot.cpio.gz" \
    -virtfs local,path=$W/rootfs,mount_tag=rootfs,security_model=none,readonly=on,id=rootfs \
    -virtfs local,path=$W/share,mount_tag=host0,security_model=none,id=host0 \
    < /dev/null > serial.log 2>&1
echo "qemu rc=$?"
cat share/results/summary.txt

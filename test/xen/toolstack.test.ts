/**
 * The toolstack conformance suite on real Xen (the factory and what this host can and
 * cannot do: toolstack-host.ts), in the C xenstored boot: every group but the ones that
 * run in the oxenstored boot to even out the two boots' wall time — `save and restore`
 * and `migration` (migrate.test.ts, with a PVH guest's live migration) and `live disk
 * snapshots` (live-snapshot.test.ts).
 *
 * `assignablePci` is QEMU's `edu` device at 00:10.0 (test/xen/tier.ts): run.mjs gives this
 * (the C xenstored) boot QEMU's emulated VT-d IOMMU, so Xen assigns devices (xl dmesg: "I/O
 * virtualisation enabled"), and beforeAll binds the function to pciback
 * (`xl pci-assignable-add`); the guest's xen-pcifront connects to it. It is a plain
 * function, not an SR-IOV virtual one (QEMU 7.2's SR-IOV device, nvme, needs dom0's nvme
 * driver to create its virtual functions); Xen and libxl assign a virtual function like
 * any other.
 */
import { afterAll, beforeAll, describe } from 'vitest';
import { toolstackConformance } from '../conformance/toolstack-suite.js';
import { assignablePci, xl } from './tier.js';
import { realXenToolstack, setUpDevices, tearDownDevices } from './toolstack-host.js';

describe('native toolstack on real Xen', () => {
  beforeAll(async () => {
    await setUpDevices(['/srv/conf-root.img', '/srv/conf-data.img'], true);
    // pciback takes the function, so that libxl can hand it to a guest
    if (assignablePci !== undefined) await xl(['pci-assignable-add', assignablePci]);
  });
  afterAll(() => tearDownDevices());

  toolstackConformance('native (libxl) on real Xen', {
    ...realXenToolstack({ except: ['save and restore', 'migration', 'live disk snapshots'] }),
    ...(assignablePci === undefined ? {} : { assignablePci }),
  });
});

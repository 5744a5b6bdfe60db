/**
 * Save, restore and live migration on real Xen, through the public API with
 * `connect({ backend: 'native' })` (lib/native/migration.ts over libxl). Runs in the
 * oxenstored boot only (vitest.xen.config.ts), the shorter of the two.
 *
 * - The toolstack conformance suite's `save and restore` and `migration` groups, with the
 *   tier's PV guest (128 MiB: it does not boot in less): a save to a Writable and a
 *   restore from a Readable; a migration to this host through a stream pair; a
 *   destination that refuses and a link that breaks mid-way, the source running on.
 *   Debian's Xen 4.17 has no shadow paging, so a PV guest cannot enter log-dirty mode:
 *   the suite expects `XEN_MIGRATION_UNSUPPORTED` for a live migration and moves it with
 *   `live: false` (`liveMigration` in `missing`).
 * - One PVH guest (log-dirty through HAP: the tier's QEMU gives Xen nested paging)
 *   migrated live to this host through a stream pair, then asked to power off. Suspending
 *   for the migration and powering off both need the guest's kernel to act on xenstore
 *   requests, so they show that it really runs after the move. (Saving to a file path
 *   wraps the same stream code; the mock's suite covers it, and it cost this boot three
 *   minutes.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Domain, type MigrationProgress, type Xen, connect } from '../../lib/index.js';
import { streamPair, toolstackConformance } from '../conformance/toolstack-suite.js';
import { guest, guestReady } from './tier.js';


describe('save, restore and migration on real Xen', () => {
  toolstackConformance('native (libxl) on real Xen: save and migration', {
    kernel: guest.kernel,
    guestConfig: { type: 'pv', memory: 128, ramdisk: guest.ramdisk, cmdline: 'console=hvc0 quiet' },
    missing: ['hotplug', 'frontends', 'liveSnapshot', 'liveMigration'],
    only: ['save and restore', 'migration'],
    ready: (domid) => guestReady(domid),
    timeoutMs: 90_000,
    connect: () => connect({ backend: 'native' }),
    cleanup: async () => undefined,
  });

  describe('a PVH guest migrated live to this host', { timeout: 600_000 }, () => {
    const name = 'xenode-migrate';
    let xen: Xen;
    let dom: Domain;

    beforeAll(async () => {
      xen = await connect({ backend: 'native' });
      dom = await xen.domains.create({ name, type: 'pvh', kernel: guest.kernel, ramdisk: guest.ramdisk, cmdline: 'console=hvc0 quiet', memory: 128, vcpus: 1 });
      await guestReady(dom.domid);
    }, 300_000);

    afterAll(async () => {
      for (const d of (await xen?.domains.list().catch(() => [])) ?? []) {
        if (d.name.startsWith(name)) await (await xen.domains.get(d.domid)).destroy().catch(() => undefined);
      }
      await xen?.close();
    }, 120_000);

    it('migrates live through a stream pair, and the guest then powers off on request', async () => {
      const before = dom.domid;
      const [a, b] = streamPair();
      const arriving = xen.domains.receiveMigration(b);
      const seen: MigrationProgress[] = [];
      await dom.migrate(a, { live: true, onProgress: (p) => seen.push(p) });
      const moved = await arriving;
      expect(moved.domid).not.toBe(before);
      expect(moved.uuid).toBe(dom.uuid);
      const i = await moved.info();
      expect(i.name).toBe(name);
      expect(['running', 'blocked']).toContain(i.state);
      expect(seen.at(-1)).toMatchObject({ phase: 'done' });
      expect(seen.at(-1)?.bytes).toBeGreaterThan(16 << 20);
      await expect(xen.domains.get(before)).rejects.toMatchObject({ code: 'ESRCH' });
      await moved.shutdown({ wait: true, timeoutMs: 180_000 });
      await expect(xen.domains.get(name)).rejects.toMatchObject({ code: 'ESRCH' });
    });
  });
});

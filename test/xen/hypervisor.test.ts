/**
 * Event channels, grant tables and libxenctrl against a real hypervisor, in dom0: the
 * conformance suite through the native backend, then what only a real host shows.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { VIRQ, type XenError, connect } from '../../lib/index.js';
import { XenCtrl } from '../../lib/native/xenctrl.js';
import { hypervisorConformance } from '../conformance/hypervisor-suite.js';
import { guest, onRealXen } from './tier.js';

const run = promisify(execFile);

describe.skipIf(!onRealXen)('real Xen', () => {
  hypervisorConformance('native (real Xen)', {
    connect: () => connect({ backend: 'native' }),
    // VIRQ_CON_RING: new text in the hypervisor's console ring, which `xl debug-keys`
    // produces. (xenstored holds VIRQ_DOM_EXC, and xenconsoled takes CON_RING only with --log=hv.)
    virq: {
      number: VIRQ.CON_RING,
      raise: async () => {
        await run('xl', ['debug-keys', 'h']);
      },
    },
    detachesViews: true,
    cleanup: async () => undefined,
  });

  describe('xenctrl', () => {
    it('reports the version, the machine and the domains', async () => {
      const xc = await XenCtrl.open();
      const v = await xc.version();
      expect(`${v.major}.${v.minor}`).toBe('4.17');
      expect(v.version).toMatch(/^4\.17\.\d+/);
      expect(v.capabilities).toContain('xen-3.0-x86_64');
      const p = await xc.physinfo();
      expect(p.nrCpus).toBeGreaterThanOrEqual(1);
      expect(p.sockets).toBeGreaterThanOrEqual(1);
      expect(p.totalMemoryKb).toBeGreaterThan(p.freeMemoryKb);
      expect(p.capabilities).toContain('pv');
      const domains = await xc.listDomains();
      const dom0 = domains.find((d) => d.domid === 0);
      expect(dom0).toMatchObject({ domid: 0, dying: false, hvm: false });
      expect(dom0?.memoryKb).toBeGreaterThan(0);
      expect(dom0?.onlineVcpus).toBeGreaterThanOrEqual(1);
      const aff = await xc.getVcpuAffinity(0, 0);
      expect(aff.hard.length).toBeGreaterThanOrEqual(1);
      const stats = await xc.sharingStats();
      expect(stats.freedPages).toBeGreaterThanOrEqual(0);
      console.log(JSON.stringify({ version: v.version, physinfo: { ...p, hwCap: undefined }, domains: domains.length, affinity: aff, stats }));
      await xc.close();
      await xc.close();
      await expect(xc.physinfo()).rejects.toMatchObject({ code: 'XEN_CLOSED' });
    });

    it('fetches machine-check telemetry (none under QEMU: XEN_MC_NODATA)', async () => {
      const xc = await XenCtrl.open();
      const r = await xc.fetchMachineChecks();
      console.log(`mca fetch: ${JSON.stringify({ ok: r.ok, flags: r.flags, entries: r.entries.length })}`);
      // XEN_MC_OK with entries on hardware that logged a machine check, XEN_MC_NODATA otherwise.
      expect(r.ok ? r.entries.length : r.flags & 0x2).toBeGreaterThan(0);
      await xc.close();
    });

    it('pauses, caps memory and pins vCPUs of a guest; unknown domains are ESRCH', { timeout: 120_000 }, async () => {
      const xc = await XenCtrl.open();
      await run('xl', ['create', '-p', guest.config, 'name="tiny"']);
      try {
        const { stdout } = await run('xl', ['domid', 'tiny']);
        const domid = Number(stdout.trim());
        expect((await xc.domainInfo(domid)).paused).toBe(true);
        await xc.unpause(domid);
        expect((await xc.domainInfo(domid)).paused).toBe(false);
        await xc.pause(domid);
        expect((await xc.domainInfo(domid)).paused).toBe(true);
        await xc.setMaxMemory(domid, 256 * 1024);
        expect((await xc.domainInfo(domid)).maxMemoryKb).toBeGreaterThanOrEqual(256 * 1024);
        await xc.setVcpuAffinity(domid, 0, { hard: [0] });
        expect((await xc.getVcpuAffinity(domid, 0)).hard).toEqual([0]);
        const share = await xc.setMemorySharing(domid, true).then(
          () => 'enabled',
          (err: XenError) => err.code,
        );
        console.log(`memshr on a PV guest: ${share}`);
        await expect(xc.pause(31999)).rejects.toMatchObject({ code: 'ESRCH', op: 'xenctrl.pause', domid: 31999 });
      } finally {
        await run('xl', ['destroy', 'tiny']).catch(() => undefined);
        await xc.close();
      }
    });
  });
});

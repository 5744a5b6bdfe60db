/**
 * Host facts as dom0 sees them on a real Xen 4.17: the hypervisor is there, this domain
 * is the control domain, and the toolstack answers. Plain node and xl for now; the
 * library's host API is checked here once it exists.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadAddon } from '../../lib/native/load.js';
import { readTrimmed, xl, xlInfo, xenstored } from './tier.js';

describe('a real Xen host, seen from dom0', () => {
  it('runs on Xen 4.17 as the control domain', () => {
    expect(readTrimmed('/sys/hypervisor/type')).toBe('xen');
    const major = readTrimmed('/sys/hypervisor/version/major');
    const minor = readTrimmed('/sys/hypervisor/version/minor');
    expect(`${major}.${minor}`).toBe('4.17');
    // xenfs: "control_d" is what marks dom0 (a domU's capabilities file is empty)
    expect(readTrimmed('/proc/xen/capabilities')).toBe('control_d');
  });

  it('has the devices the native backend opens', () => {
    const devices = readdirSync('/dev/xen');
    for (const d of ['privcmd', 'evtchn', 'gntdev', 'gntalloc', 'xenbus']) expect(devices).toContain(d);
  });

  it('answers xl info with the version, capabilities and memory', async () => {
    const info = await xlInfo();
    expect(info.get('xen_major')).toBe('4');
    expect(info.get('xen_minor')).toBe('17');
    expect(info.get('xen_version')).toMatch(/^4\.17\.\d+/);
    expect(info.get('xen_caps')).toContain('xen-3.0-x86_64');
    expect(info.get('virt_caps')).toContain('pv');
    expect(Number(info.get('nr_cpus'))).toBeGreaterThanOrEqual(1);
    const total = Number(info.get('total_memory'));
    const free = Number(info.get('free_memory'));
    expect(total).toBeGreaterThan(1024);
    expect(free).toBeGreaterThan(128); // room for the test guest
    expect(free).toBeLessThan(total);
  });

  it('lists Domain-0 as domain 0', async () => {
    const lines = (await xl(['list'])).trim().split('\n').slice(1);
    const dom0 = lines.map((l) => l.trim().split(/\s+/)).find((f) => f[1] === '0');
    expect(dom0?.[0]).toBe('Domain-0');
  });

  it(`runs the xenstored this boot asked for (${xenstored})`, () => {
    const running = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .map((p) => {
        try {
          return readFileSync(`/proc/${p}/comm`, 'utf8').trim();
        } catch {
          return '';
        }
      });
    expect(running).toContain(xenstored);
    expect(running).not.toContain(xenstored === 'oxenstored' ? 'xenstored' : 'oxenstored');
  });

  it('loads an addon built for the Xen release that runs', async () => {
    const info = await xlInfo();
    const [major, minor] = loadAddon().xenVersion.split('.');
    expect(`${major}.${minor}`).toBe(`${info.get('xen_major')}.${info.get('xen_minor')}`);
  });
});

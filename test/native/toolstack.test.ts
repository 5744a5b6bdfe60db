/**
 * The native toolstack's mapping, over fakes of libxl, libxenctrl and xenstore: what it
 * asks libxl for, how libxl's dominfo and xenstore's device trees become the contract's
 * records, which error codes come out, and what it does when a domain shuts down. The
 * same code against real Xen is still to join the real-Xen tier (test/xen/).
 */
import { spawn, spawnSync } from 'node:child_process';
import { readSync, writeSync } from 'node:fs';
import { PassThrough, Writable } from 'node:stream';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DiskServer, DomainEvent, ServedDiskHandle } from '../../lib/backend-toolstack.js';
import { VirtualDisk } from '../../lib/vhd/disk.js';
import { toLibxlConfig } from '../../lib/config/libxl-json.js';
import { XenError } from '../../lib/errors.js';
import type { LibxlDomInfo, LibxlJson } from '../../lib/native/libxl.js';
import { NativeToolstack, SAVE_MAGIC, domainState, shutdownReason, type LibxlPort, type XenCtrlPort, type XenStorePort } from '../../lib/native/toolstack.js';
import { loadAddon } from '../../lib/native/load.js';
import type { PhysInfo, XenVersion } from '../../lib/native/xenctrl.js';

const notFound = (domid: number) => new XenError('XEN_ERROR_DOMAIN_NOTFOUND', 'libxl: no such domain', { op: 'libxl_domain_info', domid });

interface FakeDom {
  info: LibxlDomInfo;
  config: LibxlJson;
}

/** A tiny simulated host: libxl calls change `doms` and `store`; `calls` records them. */
class FakeHost {
  readonly doms = new Map<number, FakeDom>([[0, { info: { domid: 0, running: true, current_memkb: 1048576, max_memkb: 1048576, vcpu_online: 2, vcpu_max_id: 1, cpu_time: 5e9 }, config: {} }]]);
  readonly store = new Map<string, string>([['/local/domain/0/name', 'Domain-0']]);
  readonly calls: unknown[][] = [];
  closed: string[] = [];
  next = 1;
  freeKb = 512 * 1024;
  image = Buffer.from('LIBXL-STREAM');
  restoredBytes: Buffer | undefined;

  private dom(domid: number): FakeDom {
    const d = this.doms.get(domid);
    if (d === undefined) throw notFound(domid);
    return d;
  }

  add(config: LibxlJson, paused: boolean): number {
    const domid = this.next++;
    const c = config as { c_info: { name: string; uuid?: string }; b_info: { target_memkb: number; max_memkb: number; max_vcpus: number; avail_vcpus: number[] } };
    this.doms.set(domid, {
      info: { domid, uuid: c.c_info.uuid ?? `00000000-0000-0000-0000-00000000000${domid}`, vcpu_online: 1, paused, blocked: !paused, current_memkb: c.b_info.target_memkb, max_memkb: c.b_info.max_memkb + 1024, vcpu_max_id: c.b_info.max_vcpus - 1, cpu_time: 0 },
      config,
    });
    this.store.set(`/local/domain/${domid}/name`, c.c_info.name);
    this.store.set(`/local/domain/${domid}/memory/target`, String(c.b_info.target_memkb));
    this.store.set(`/local/domain/${domid}/memory/static-max`, String(c.b_info.max_memkb));
    this.store.set(`/local/domain/${domid}/vm`, `/vm/${this.doms.get(domid)?.info.uuid}`);
    for (let i = 0; i < c.b_info.max_vcpus; i++) this.store.set(`/local/domain/${domid}/cpu/${i}/availability`, c.b_info.avail_vcpus.includes(i) ? 'online' : 'offline');
    return domid;
  }

  remove(domid: number): void {
    this.doms.delete(domid);
    for (const k of [...this.store.keys()]) if (k.startsWith(`/local/domain/${domid}/`)) this.store.delete(k);
  }

  readonly libxl: LibxlPort = {
    xenVersion: '4.17.5',
    createDomain: async (config, options) => {
      this.calls.push(['create', config, options]);
      return this.add(config as LibxlJson, options?.paused ?? false);
    },
    restoreDomain: async (config, fd, options) => {
      const buf = Buffer.alloc(64);
      const n = readSync(fd, buf, 0, 64, 0);
      this.restoredBytes = buf.subarray(0, n);
      this.calls.push(['restore', config, options]);
      return this.add(config as LibxlJson, options?.paused ?? false);
    },
    destroyDomain: async (domid) => {
      this.dom(domid);
      this.calls.push(['destroy', domid]);
      this.remove(domid);
    },
    shutdownDomain: async (domid) => void this.calls.push(['shutdown', this.dom(domid).info.domid]),
    rebootDomain: async (domid) => void this.calls.push(['reboot', this.dom(domid).info.domid]),
    pauseDomain: async (domid) => {
      this.dom(domid).info.paused = true;
    },
    unpauseDomain: async (domid) => {
      this.calls.push(['unpause', domid]);
      this.dom(domid).info.paused = false;
    },
    listDomains: async () => [...this.doms.values()].map((d) => ({ ...d.info })),
    domainInfo: async (domid) => ({ ...this.dom(domid).info }),
    domainConfig: async (domid) => structuredClone(this.dom(domid).config),
    setMemoryTarget: async (domid, kb, options) => void this.calls.push(['memtarget', this.dom(domid).info.domid, kb, options]),
    setMaxMemory: async (domid, kb) => void this.calls.push(['maxmem', this.dom(domid).info.domid, kb]),
    setVcpuCount: async (domid, n) => void this.calls.push(['vcpus', this.dom(domid).info.domid, n]),
    addDevice: async (domid, kind, json) => {
      this.calls.push(['add', domid, kind, json]);
      if (kind === 'disk') this.vbd(domid, 51728, (json as { vdev: string }).vdev, (json as { pdev_path: string }).pdev_path);
    },
    removeDevice: async (domid, kind, json) => void this.calls.push(['remove', domid, kind, json]),
    suspendDomain: async (domid, fd) => {
      this.calls.push(['suspend', domid]);
      writeSync(fd, this.image);
      Object.assign(this.dom(domid).info, { shutdown: true, shutdown_reason: 'suspend' });
    },
    resumeDomain: async (domid) => {
      this.calls.push(['resume', domid]);
      Object.assign(this.dom(domid).info, { shutdown: false, shutdown_reason: undefined });
    },
    makePipe: () => {
      const pipe = loadAddon().makePipe;
      if (pipe === undefined) throw new Error('the addon has no makePipe: rebuild it');
      return pipe();
    },
    consoleTty: async () => '/dev/null',
    renameDomain: async (domid, name) => {
      this.calls.push(['rename', domid, name]);
      this.store.set(`/local/domain/${domid}/name`, name);
    },
    close: async () => void this.closed.push('libxl'),
  };

  readonly xc: XenCtrlPort = {
    version: async () => ({ major: 4, minor: 17, version: '4.17.5', capabilities: ['xen-3.0-x86_64', 'hvm-3.0-x86_64'], changeset: '' }) as XenVersion,
    physinfo: async () => ({ nrCpus: 4, maxCpuId: 3, threadsPerCore: 2, coresPerSocket: 2, sockets: 1, nrNodes: 1, totalMemoryKb: 4 << 20, freeMemoryKb: this.freeKb }) as PhysInfo,
    setVcpuAffinity: async (domid, vcpu, aff) => void this.calls.push(['affinity', domid, vcpu, aff]),
    close: async () => void this.closed.push('xc'),
  };

  readonly xs: XenStorePort = {
    read: async (_tx, path) => {
      const v = this.store.get(path);
      if (v === undefined) throw XenError.fromErrno('ENOENT', { op: 'xenstore.read', path });
      return Buffer.from(v);
    },
    directory: async (_tx, path) => [...new Set([...this.store.keys()].filter((k) => k.startsWith(`${path}/`)).map((k) => k.slice(path.length + 1).split('/')[0] as string))],
    close: async () => void this.closed.push('xs'),
  };


  vbd(domid: number, devid: number, vdev: string, params: string, state = '4'): void {
    const fe = `/local/domain/${domid}/device/vbd/${devid}`;
    const be = `/local/domain/0/backend/vbd/${domid}/${devid}`;
    for (const [k, v] of Object.entries({ backend: be, 'backend-id': '0', state })) this.store.set(`${fe}/${k}`, v);
    for (const [k, v] of Object.entries({ params, dev: vdev, mode: 'w', type: 'phy', state })) this.store.set(`${be}/${k}`, v);
  }

  toolstack(): NativeToolstack {
    return new NativeToolstack(this.libxl, this.xc, this.xs, { pollMs: 5 });
  }
}

const cfg = { name: 'vm1', type: 'pv' as const, kernel: '/boot/k', memory: 128, maxMemory: 256, vcpus: 1, maxVcpus: 2 };
const tick = () => new Promise((r) => setTimeout(r, 20));

describe('native toolstack: records', () => {
  it('maps state flags and shutdown reasons as xl list does', () => {
    expect(domainState({ domid: 1, running: true })).toBe('running');
    expect(domainState({ domid: 1 })).toBe('blocked');
    expect(domainState({ domid: 1, paused: true, blocked: true })).toBe('paused');
    expect(domainState({ domid: 1, shutdown: true })).toBe('shutdown');
    expect(domainState({ domid: 1, shutdown: true, shutdown_reason: 'crash' })).toBe('crashed');
    expect(domainState({ domid: 1, shutdown: true, dying: true })).toBe('dying');
    expect(shutdownReason(undefined)).toBe('poweroff');
    expect(shutdownReason(1)).toBe('reboot');
    expect(shutdownReason('soft_reset')).toBe('soft_reset');
    expect(shutdownReason(-1)).toBe('unknown');
    expect(shutdownReason('weird')).toBe('unknown');
  });

  it('lists domains with names, memory in MiB, vCPUs and CPU seconds', async () => {
    const host = new FakeHost();
    const ts = host.toolstack();
    const domid = await ts.createDomain(cfg);
    const [dom0, vm] = await ts.listDomains();
    expect(dom0).toMatchObject({ domid: 0, name: 'Domain-0', state: 'running', cpuTime: 5, vcpus: { online: 2, max: 2 }, memory: { current: 1024 } });
    expect(vm).toEqual({ domid, name: 'vm1', uuid: expect.any(String), state: 'blocked', memory: { current: 128, target: 128, max: 256 }, vcpus: { online: 1, max: 2 }, cpuTime: 0 });
    expect(await ts.domidByName('vm1')).toBe(domid);
    // Real libxl leaves the uuid out of dominfo, and Xen counts vCPUs only once the guest brought them up.
    const two = await ts.createDomain({ ...cfg, name: 'vm2', vcpus: 2, maxVcpus: 3 });
    const uuid = host.doms.get(two)?.info.uuid;
    delete host.doms.get(two)?.info.uuid;
    expect(await ts.domainInfo(two)).toMatchObject({ uuid, vcpus: { online: 2, max: 3 } });
    await expect(ts.domidByName('nobody')).rejects.toMatchObject({ code: 'ESRCH' });
    expect(await ts.domainConfig(domid)).toMatchObject({ name: 'vm1', memory: 128, maxMemory: 256, vcpus: 1, maxVcpus: 2 });
  });

  it('describes the host from physinfo and the version', async () => {
    const h = await new FakeHost().toolstack().hostInfo();
    expect(h).toMatchObject({ xenVersion: '4.17.5', cpus: 4, cores: 2, threadsPerCore: 2, sockets: 1, numaNodes: 1, totalMemory: 4096, freeMemory: 512 });
    expect(h.cpus).toBe(h.cores * h.threadsPerCore);
  });
});

describe('native toolstack: lifecycle', () => {
  it('creates paused from toLibxlConfig, then unpauses, as xl does', async () => {
    const host = new FakeHost();
    const uuid = '5b0f2c1e-8d3a-4e6f-9a7b-1c2d3e4f5a6b';
    const domid = await host.toolstack().createDomain({ ...cfg, uuid });
    expect(host.calls.filter((c) => c[0] === 'create')).toEqual([['create', toLibxlConfig({ ...cfg, uuid }), { paused: true }]]);
    expect(host.calls).toContainEqual(['unpause', domid]);
  });

  it('makes up a uuid when the config has none, as xl does (libxl would use the nil one, dom0\'s)', async () => {
    const host = new FakeHost();
    await host.toolstack().createDomain(cfg);
    await host.toolstack().createDomain({ ...cfg, name: 'other' });
    const uuids = host.calls.filter((c) => c[0] === 'create').map((c) => (c[1] as { c_info: { uuid?: string } }).c_info.uuid);
    expect(uuids).toHaveLength(2);
    for (const u of uuids) expect(u).toMatch(/^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$/);
    expect(uuids[0]).not.toBe(uuids[1]);
  });

  it('refuses a name in use (XEN_ERROR_INVAL) and memory the host lacks (ENOMEM) before creating', async () => {
    const host = new FakeHost();
    const ts = host.toolstack();
    await ts.createDomain(cfg);
    await expect(ts.createDomain(cfg)).rejects.toMatchObject({ code: 'XEN_ERROR_INVAL' });
    await expect(ts.createDomain({ ...cfg, name: 'big', memory: 1024, maxMemory: 1024 })).rejects.toMatchObject({ code: 'ENOMEM' });
    expect(host.calls.filter((c) => c[0] === 'create')).toHaveLength(1);
  });

  it('an aborted creation creates nothing', async () => {
    const host = new FakeHost();
    const ac = new AbortController();
    ac.abort();
    await expect(host.toolstack().createDomain(cfg, { signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
    expect(host.calls.some((c) => c[0] === 'create')).toBe(false);
  });

  it("turns libxl's ERROR_DOMAIN_NOTFOUND into ESRCH everywhere", async () => {
    const ts = new FakeHost().toolstack();
    for (const p of [ts.domainInfo(7), ts.pause(7), ts.unpause(7), ts.destroy(7), ts.shutdown(7, 'poweroff'), ts.setMemoryTarget(7, 1), ts.setVcpus(7, 1), ts.pinVcpu(7, 0, [0]), ts.rename(7, 'x'), ts.listDevices(7), ts.domainConfig(7)]) {
      await expect(p).rejects.toMatchObject({ code: 'ESRCH', domid: 7 });
    }
  });

  it('pauses once however often asked (Xen counts pauses), and says ESRCH when libxl answers for another domid', async () => {
    const host = new FakeHost();
    const ts = host.toolstack();
    const domid = await ts.createDomain(cfg);
    let pauses = 0;
    const pause = host.libxl.pauseDomain;
    host.libxl.pauseDomain = (d) => (pauses++, pause(d));
    await ts.pause(domid);
    await ts.pause(domid);
    expect(pauses).toBe(1);
    host.libxl.domainInfo = async () => ({ domid: 0 });
    await expect(ts.domainInfo(30000)).rejects.toMatchObject({ code: 'ESRCH', domid: 30000 });
  });

  it('refuses to pause, shut down, destroy or save dom0', async () => {
    const ts = new FakeHost().toolstack();
    for (const p of [ts.pause(0), ts.shutdown(0, 'reboot'), ts.destroy(0), ts.save(0, new PassThrough())]) await expect(p).rejects.toMatchObject({ code: 'XEN_ERROR_INVAL' });
  });

  it('asks libxl to shut down or reboot', async () => {
    const host = new FakeHost();
    const ts = host.toolstack();
    const domid = await ts.createDomain(cfg);
    await ts.shutdown(domid, 'poweroff');
    await ts.shutdown(domid, 'reboot');
    expect(host.calls.filter((c) => c[0] === 'shutdown' || c[0] === 'reboot')).toEqual([['shutdown', domid], ['reboot', domid]]);
  });

  it('checks memory, vCPU and pinning requests against the domain and the host', async () => {
    const host = new FakeHost();
    const ts = host.toolstack();
    const domid = await ts.createDomain(cfg);
    await ts.setMemoryTarget(domid, 64);
    await expect(ts.setMemoryTarget(domid, 512)).rejects.toMatchObject({ code: 'XEN_ERROR_INVAL' });
    await ts.setMaxMemory(domid, 300);
    await expect(ts.setMaxMemory(domid, 100)).rejects.toMatchObject({ code: 'XEN_ERROR_INVAL' });
    await ts.setVcpus(domid, 2);
    await expect(ts.setVcpus(domid, 3)).rejects.toMatchObject({ code: 'XEN_ERROR_INVAL' });
    await ts.pinVcpu(domid, 1, [0, 3]);
    await expect(ts.pinVcpu(domid, 2, [0])).rejects.toMatchObject({ code: 'XEN_ERROR_INVAL' });
    await expect(ts.pinVcpu(domid, 0, [4])).rejects.toMatchObject({ code: 'XEN_ERROR_INVAL' });
    expect(host.calls.filter((c) => ['memtarget', 'maxmem', 'vcpus', 'affinity'].includes(c[0] as string))).toEqual([
      ['memtarget', domid, 65536, { enforce: true }],
      ['maxmem', domid, 307200],
      ['vcpus', domid, 2],
      ['affinity', domid, 1, { hard: [0, 3] }],
    ]);
  });

  it('renames, refusing a name in use', async () => {
    const host = new FakeHost();
    const ts = host.toolstack();
    const a = await ts.createDomain(cfg);
    await ts.createDomain({ ...cfg, name: 'vm2' });
    await expect(ts.rename(a, 'vm2')).rejects.toMatchObject({ code: 'XEN_ERROR_INVAL' });
    await ts.rename(a, 'fresh');
    expect((await ts.domainInfo(a)).name).toBe('fresh');
  });
});

describe('native toolstack: devices', () => {
  it('lists devices from the xenstore trees with both states, attaches and detaches through libxl JSON', async () => {
    const host = new FakeHost();
    const ts = host.toolstack();
    const domid = await ts.createDomain(cfg);
    host.vbd(domid, 51712, 'xvda', '/srv/root.img');
    expect(await ts.listDevices(domid)).toEqual([
      {
        kind: 'vbd',
        devid: 51712,
        backendDomid: 0,
        frontendPath: `/local/domain/${domid}/device/vbd/51712`,
        backendPath: `/local/domain/0/backend/vbd/${domid}/51712`,
        frontendState: 'connected',
        backendState: 'connected',
        config: { target: '/srv/root.img', vdev: 'xvda', backendType: 'phy' },
      },
    ]);
    const dev = await ts.attachDevice(domid, { kind: 'disk', disk: { target: '/srv/data.img', vdev: 'xvdb', access: 'ro' } });
    expect(dev).toMatchObject({ kind: 'vbd', devid: 51728, backendState: 'connected', config: { vdev: 'xvdb', target: '/srv/data.img' } });
    expect(host.calls).toContainEqual(['add', domid, 'disk', { pdev_path: '/srv/data.img', vdev: 'xvdb', format: 'raw' }]);
    await expect(ts.attachDevice(domid, { kind: 'disk', disk: { target: '/x', vdev: 'xvdb' } })).rejects.toMatchObject({ code: 'XEN_ERROR_DEVICE_EXISTS' });
    await ts.detachDevice(domid, 'vbd', 51728);
    expect(host.calls).toContainEqual(['remove', domid, 'disk', { vdev: 'xvdb', backend_domid: 0, backend: 'phy' }]);
    await expect(ts.detachDevice(domid, 'vif', 0)).rejects.toMatchObject({ code: 'XEN_ERROR_NOTFOUND' });
  });

  it("waits for the guest's frontend to connect a new device, reporting the NIC's negotiated queues", async () => {
    const host = new FakeHost();
    const ts = new NativeToolstack(host.libxl, host.xc, host.xs, { pollMs: 5, connectWaitMs: 5000 });
    const domid = await ts.createDomain(cfg);
    // libxl returns with the backend in initwait; the guest's netfront connects later
    host.libxl.addDevice = async (id, kind) => {
      host.calls.push(['add', id, kind]);
      const fe = `/local/domain/${id}/device/vif/0`;
      const be = `/local/domain/0/backend/vif/${id}/0`;
      for (const [k, v] of Object.entries({ backend: be, 'backend-id': '0', state: '1' })) host.store.set(`${fe}/${k}`, v);
      for (const [k, v] of Object.entries({ mac: '00:16:3e:00:00:01', bridge: 'xenbr0', state: '2', 'multi-queue-max-queues': '2' })) host.store.set(`${be}/${k}`, v);
      setTimeout(() => {
        host.store.set(`${fe}/multi-queue-num-queues`, '2');
        host.store.set(`${fe}/state`, '3');
      }, 30);
      setTimeout(() => host.store.set(`${be}/state`, '4'), 60);
      setTimeout(() => host.store.set(`${fe}/state`, '4'), 90);
    };
    const nic = await ts.attachDevice(domid, { kind: 'nic', nic: { bridge: 'xenbr0', queues: 4 } });
    expect(nic).toMatchObject({ kind: 'vif', devid: 0, frontendState: 'connected', backendState: 'connected', config: { mac: '00:16:3e:00:00:01', bridge: 'xenbr0', queues: 2 } });
    expect((await ts.listDevices(domid))[0]?.config).toMatchObject({ queues: 2 });
  });

  it('gives up waiting for a frontend after connectWaitMs, or at once for a paused domain', async () => {
    const host = new FakeHost();
    const ts = new NativeToolstack(host.libxl, host.xc, host.xs, { pollMs: 5, connectWaitMs: 100 });
    const domid = await ts.createDomain(cfg);
    host.libxl.addDevice = async (id, _kind, json) => host.vbd(id, 51728, (json as { vdev: string }).vdev, '/srv/data.img', '2');
    const started = Date.now();
    const disk = await ts.attachDevice(domid, { kind: 'disk', disk: { target: '/srv/data.img', vdev: 'xvdb' } });
    expect(disk).toMatchObject({ devid: 51728, frontendState: 'initwait', backendState: 'initwait' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(90);
    const paused = new NativeToolstack(host.libxl, host.xc, host.xs, { pollMs: 5, connectWaitMs: 60_000 });
    await paused.pause(domid);
    host.libxl.addDevice = async (id, _kind, json) => host.vbd(id, 51744, (json as { vdev: string }).vdev, '/srv/more.img', '2');
    expect(await paused.attachDevice(domid, { kind: 'disk', disk: { target: '/srv/more.img', vdev: 'xvdc' } })).toMatchObject({ devid: 51744, backendState: 'initwait' });
    const ac = new AbortController();
    await paused.unpause(domid);
    host.libxl.addDevice = async (id, _kind, json) => {
      host.vbd(id, 51760, (json as { vdev: string }).vdev, '/srv/last.img', '2');
      setTimeout(() => ac.abort(), 20);
    };
    await expect(paused.attachDevice(domid, { kind: 'disk', disk: { target: '/srv/last.img', vdev: 'xvdd' } }, { signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
    expect((await paused.listDevices(domid)).map((d) => d.devid)).toContain(51760);
    await Promise.all([ts.close(), paused.close()]);
  });

  it("refuses a live snapshot of libxl's disks, saying why, without touching libxl or the disk", async () => {
    const host = new FakeHost();
    const ts = host.toolstack();
    // Without a disk server (none is lent here) a VHD disk is libxl's: qdisk serves it.
    const domid = await ts.createDomain({ ...cfg, disks: [{ target: '/srv/root.vhd', vdev: 'xvda', format: 'vhd' }, { target: '/dev/vg/data', vdev: 'xvdb' }] });
    host.vbd(domid, 51712, 'xvda', '/srv/root.vhd');
    host.vbd(domid, 51728, 'xvdb', '/dev/vg/data');
    const before = host.calls.length;
    const err = await ts.snapshotDisk(domid, 'xvda', '/srv/root-1.vhd').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'XEN_LIVE_SNAPSHOT_UNSUPPORTED', domid, path: '/srv/root-1.vhd' });
    expect((err as Error).message).toMatch(/blktap2.*qdisk/);
    await expect(ts.snapshotDisk(domid, 'xvdb', '/srv/data-1.vhd')).rejects.toMatchObject({ code: 'XEN_DISK_NOT_VHD', domid, path: '/dev/vg/data' });
    await expect(ts.snapshotDisk(domid, 'xvdc', '/srv/c-1.vhd')).rejects.toMatchObject({ code: 'XEN_ERROR_NOTFOUND', domid });
    expect(host.calls.slice(before).filter((c) => c[0] !== 'domainInfo')).toEqual([]);
    await expect(ts.snapshotDisk(99, 'xvda', '/srv/x.vhd')).rejects.toMatchObject({ code: 'ESRCH' });
  });
});

/** A DiskServer that records what it is asked and serves nothing: its handles end on close(). */
class FakeDiskServer implements DiskServer {
  readonly served: { domid: number; vdev: string; path: string; readOnly: boolean; closed: boolean }[] = [];
  fail: Error | undefined;

  constructor(private readonly host: FakeHost) {}

  async serve(domid: number, vdev: string, disk: VirtualDisk, options: { readOnly: boolean }): Promise<ServedDiskHandle> {
    this.host.calls.push(['serve', domid, vdev, disk.path, options.readOnly, this.host.doms.get(domid)?.info.paused]);
    if (this.fail) throw this.fail;
    const record = { domid, vdev, path: disk.path, readOnly: options.readOnly, closed: false };
    this.served.push(record);
    let end!: (why: string) => void;
    const closed = new Promise<string>((r) => (end = r));
    return {
      vdev,
      get path() {
        return record.path;
      },
      readOnly: options.readOnly,
      closed,
      close: async () => {
        if (!record.closed) await disk.close();
        record.closed = true;
        end('closed');
      },
    };
  }
}

describe('native toolstack: VHD disks served by xenode', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xenode-native-served-'));
    await (await VirtualDisk.create(join(dir, 'root.vhd'), { size: 8 << 20, type: 'dynamic' })).close();
    await writeFile(join(dir, 'raw.img'), Buffer.alloc(1 << 20));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  const withServer = () => {
    const host = new FakeHost();
    const server = new FakeDiskServer(host);
    const ts = host.toolstack();
    ts.useDiskServer(server);
    return { host, server, ts };
  };

  it('creates the domain paused without the VHD disk, serves it, then unpauses; config and destroy follow', async () => {
    const { host, server, ts } = withServer();
    const root = join(dir, 'root.vhd');
    const domid = await ts.createDomain({ ...cfg, disks: [{ target: root, vdev: 'xvda', format: 'vhd' }, { target: '/dev/vg/data', vdev: 'xvdb' }] }, { serveVhd: true });
    const steps = host.calls.filter((c) => ['create', 'serve', 'unpause'].includes(c[0] as string));
    expect(steps.map((c) => c[0])).toEqual(['create', 'serve', 'unpause']);
    // libxl is given only its own disk; the VHD is served while the domain is still paused.
    expect((steps[0]?.[1] as { disks: { vdev: string }[] }).disks.map((d) => d.vdev)).toEqual(['xvdb']);
    expect(steps[1]).toEqual(['serve', domid, 'xvda', root, false, true]);
    const config = await ts.domainConfig(domid);
    expect(config.disks?.map((d) => [d.vdev, d.target, d.format ?? 'raw'])).toEqual([
      ['xvda', root, 'vhd'],
      ['xvdb', '/dev/vg/data', 'raw'],
    ]);
    // After a live snapshot the disk is served from the child: the config says so.
    (server.served[0] as { path: string }).path = join(dir, 'root-1.vhd');
    expect((await ts.domainConfig(domid)).disks?.[0]?.target).toBe(join(dir, 'root-1.vhd'));
    await ts.destroy(domid);
    expect(server.served[0]?.closed).toBe(true);
  });

  it('hands VHD disks to libxl unless the call asks for serveVhd', async () => {
    const { host, server, ts } = withServer();
    const root = join(dir, 'root.vhd');
    const domid = await ts.createDomain({ ...cfg, disks: [{ target: root, vdev: 'xvda', format: 'vhd' }] });
    const created = host.calls.find((c) => c[0] === 'create')?.[1] as { disks: { pdev_path: string; format: string }[] };
    expect(created.disks).toMatchObject([{ pdev_path: root, format: 'vhd' }]);
    await ts.attachDevice(domid, { kind: 'disk', disk: { target: root, vdev: 'xvdb', format: 'vhd' } });
    expect(host.calls.filter((c) => c[0] === 'add')).toMatchObject([['add', domid, 'disk', { pdev_path: root, vdev: 'xvdb', format: 'vhd' }]]);
    expect(server.served).toEqual([]);
  });

  it('fails before building anything for a missing image or one that is no VHD', async () => {
    const { host, server, ts } = withServer();
    await expect(ts.createDomain({ ...cfg, disks: [{ target: join(dir, 'none.vhd'), vdev: 'xvda', format: 'vhd' }] }, { serveVhd: true })).rejects.toMatchObject({ code: 'ENOENT' });
    const err = await ts.createDomain({ ...cfg, disks: [{ target: join(dir, 'raw.img'), vdev: 'xvda', format: 'vhd' }] }, { serveVhd: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(XenError);
    expect((err as XenError).code).toMatch(/^VHD_/);
    expect(host.calls.filter((c) => c[0] === 'create')).toEqual([]);
    expect(server.served).toEqual([]);
  });

  it('destroys the paused domain when serving fails, and leaves the image closed', async () => {
    const { host, server, ts } = withServer();
    server.fail = new XenError('XEN_ERROR_DEVICE_EXISTS', 'XEN_ERROR_DEVICE_EXISTS: taken (blockBackend.serve)', { op: 'blockBackend.serve' });
    await expect(ts.createDomain({ ...cfg, disks: [{ target: join(dir, 'root.vhd'), vdev: 'xvda', format: 'vhd' }] }, { serveVhd: true })).rejects.toMatchObject({ code: 'XEN_ERROR_DEVICE_EXISTS' });
    expect(host.calls.filter((c) => ['create', 'serve', 'destroy', 'unpause'].includes(c[0] as string)).map((c) => c[0])).toEqual(['create', 'serve', 'destroy']);
    expect(host.doms.size).toBe(1);
    // The image was closed: it opens read-write again.
    await (await VirtualDisk.open(join(dir, 'root.vhd'))).close();
  });

  it('serves a VHD disk attached at run time, and detaching it ends the service', async () => {
    const { host, server, ts } = withServer();
    const domid = await ts.createDomain(cfg);
    const served = server.serve.bind(server);
    // The fake server writes the device's nodes as xenode's block backend does.
    server.serve = async (d, vdev, disk, options) => {
      const handle = await served(d, vdev, disk, options);
      host.vbd(d, 51728, vdev, disk.path);
      return handle;
    };
    const dev = await ts.attachDevice(domid, { kind: 'disk', disk: { target: join(dir, 'root.vhd'), vdev: 'xvdb', format: 'vhd', access: 'ro' } }, { serveVhd: true });
    expect(dev).toMatchObject({ kind: 'vbd', devid: 51728, config: { vdev: 'xvdb', target: join(dir, 'root.vhd') } });
    expect(host.calls.filter((c) => c[0] === 'add')).toEqual([]);
    expect(server.served[0]).toMatchObject({ vdev: 'xvdb', readOnly: true });
    await ts.detachDevice(domid, 'vbd', 51728);
    expect(server.served[0]?.closed).toBe(true);
    expect(host.calls.filter((c) => c[0] === 'remove')).toEqual([]);
  });
});

describe('native toolstack: events and shutdown actions', () => {
  it('reports created, shutdown with its reason, and death; destroys on poweroff as xl would', async () => {
    const host = new FakeHost();
    const ts = host.toolstack();
    const seen: DomainEvent[] = [];
    ts.subscribe((e) => seen.push(e));
    await tick();
    const domid = await ts.createDomain(cfg);
    await tick();
    Object.assign(host.doms.get(domid)?.info ?? {}, { shutdown: true, shutdown_reason: 'poweroff' });
    await tick();
    expect(seen).toEqual([
      { type: 'created', domid, name: 'vm1' },
      { type: 'shutdown', domid, name: 'vm1', reason: 'poweroff' },
      { type: 'death', domid, name: 'vm1' },
    ]);
    expect(host.calls).toContainEqual(['destroy', domid]);
  });

  it('restarts a rebooting domain with the same configuration (on_reboot=restart)', async () => {
    const host = new FakeHost();
    const ts = host.toolstack();
    const seen: string[] = [];
    ts.subscribe((e) => seen.push(`${e.type}:${e.domid}`));
    const domid = await ts.createDomain(cfg);
    await tick();
    Object.assign(host.doms.get(domid)?.info ?? {}, { shutdown: true, shutdown_reason: 'reboot' });
    await tick();
    const again = await ts.domidByName('vm1');
    expect(again).not.toBe(domid);
    expect(seen).toEqual([`created:${domid}`, `shutdown:${domid}`, `death:${domid}`, `created:${again}`]);
    expect(host.calls.filter((c) => c[0] === 'create').map((c) => (c[1] as { c_info: unknown }).c_info)).toHaveLength(2);
  });

  it('preserves a domain whose on_poweroff is preserve, and leaves domains it did not create alone', async () => {
    const host = new FakeHost();
    const ts = host.toolstack();
    const kept = await ts.createDomain({ ...cfg, onPoweroff: 'preserve' });
    const other = host.add(toLibxlConfig({ ...cfg, name: 'other' }) as LibxlJson, false);
    await ts.listDomains();
    await tick();
    for (const d of [kept, other]) Object.assign(host.doms.get(d)?.info ?? {}, { shutdown: true });
    await tick();
    expect(await ts.domainInfo(kept)).toMatchObject({ state: 'shutdown', shutdownReason: 'poweroff' });
    expect((await ts.domainInfo(other)).state).toBe('shutdown');
    expect(host.calls.some((c) => c[0] === 'destroy')).toBe(false);
  });
});

describe('native toolstack: polling', () => {
  it('compares the domain list only while someone needs events', async () => {
    const host = new FakeHost();
    let lists = 0;
    const list = host.libxl.listDomains;
    host.libxl.listDomains = () => (lists++, list());
    const ts = host.toolstack();
    const stop = ts.subscribe(() => undefined);
    await tick();
    expect(lists).toBeGreaterThan(1);
    stop();
    await tick();
    const after = lists;
    await tick();
    expect(lists).toBe(after);
    await ts.close();
  });
});

describe('native toolstack: save and restore', () => {
  it('writes a header with the libxl config before the stream, destroys, and restores from it', async () => {
    const host = new FakeHost();
    const ts = host.toolstack();
    const domid = await ts.createDomain(cfg);
    const chunks: Buffer[] = [];
    const out = new PassThrough();
    out.on('data', (c: Buffer) => chunks.push(c));
    await ts.save(domid, out);
    const image = Buffer.concat(chunks);
    expect(image.subarray(0, SAVE_MAGIC.length)).toEqual(SAVE_MAGIC);
    expect(image.subarray(image.length - host.image.length)).toEqual(host.image);
    expect(host.doms.has(domid)).toBe(false);
    const back = await ts.restore(PassThrough.from(image));
    expect(host.restoredBytes).toEqual(host.image);
    expect((await ts.domainInfo(back)).name).toBe('vm1');
    await expect(ts.restore(PassThrough.from(Buffer.from('not an image')))).rejects.toMatchObject({ code: 'XEN_ERROR_INVAL' });
  });

  it('brings the domain back when the output fails, rejecting with its error', async () => {
    const host = new FakeHost();
    const ts = host.toolstack();
    const domid = await ts.createDomain(cfg);
    const broken = new Writable({ write: (_c, _e, cb) => cb(new Error('disk full')) });
    broken.on('error', () => undefined);
    await expect(ts.save(domid, broken)).rejects.toThrow('disk full');
    expect((await ts.listDomains()).map((d) => d.name)).toContain('vm1');
  });
});

/** Plays xenconsoled: holds a pty's master, prints the slave's path, echoes upper-cased, closes the master on a line "bye". */
const PTY_PEER = `
import os, pty, sys
m, s = pty.openpty()
import tty; tty.setraw(s)
print(os.ttyname(s), flush=True)
# keep the slave open, as xenconsoled does, so the master reads no EIO before the client opens it
buf = b''
while True:
    d = os.read(m, 100)
    buf += d
    if b'bye' in buf:
        break
    os.write(m, d.upper())
os.close(m)
sys.stdin.read()
`;
const hasPython = spawnSync('python3', ['-c', 'import pty'], { stdio: 'ignore' }).status === 0;

describe.skipIf(!hasPython)('native toolstack: console', () => {
  it('opens the pty libxl names as a Duplex that ends when the master goes', async () => {
    const peer = spawn('python3', ['-c', PTY_PEER], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      const path = await new Promise<string>((resolve) => peer.stdout.once('data', (c: Buffer) => resolve(c.toString().trim())));
      const host = new FakeHost();
      host.libxl.consoleTty = async () => path;
      const ts = host.toolstack();
      const domid = await ts.createDomain(cfg);
      const con = await ts.openConsole(domid);
      let text = '';
      const got = new Promise<void>((resolve) => con.on('data', (c: Buffer) => ((text += c.toString()), text.includes('HELLO') && resolve())));
      con.write('hello');
      await got;
      const ended = new Promise((r) => con.once('end', r));
      con.write('bye');
      await ended;
      con.destroy();
      con.destroy();
      await expect(ts.openConsole(99)).rejects.toMatchObject({ code: 'ESRCH' });
      await ts.close();
    } finally {
      peer.kill();
    }
  });
});

describe('native toolstack: closing', () => {
  it('closes libxl, xenctrl and xenstore once, then rejects with XEN_CLOSED', async () => {
    const host = new FakeHost();
    const ts = host.toolstack();
    await ts.close();
    await ts.close();
    expect(host.closed.sort()).toEqual(['libxl', 'xc', 'xs']);
    await expect(ts.listDomains()).rejects.toMatchObject({ code: 'XEN_CLOSED' });
  });
});

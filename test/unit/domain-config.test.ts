/**
 * DomainConfig: validation, the libxl JSON conversion, and xl.cfg reading and writing,
 * on a corpus of real-world style configs and on broken ones; round trips are property
 * tests over generated configurations.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { XenError, type DomainConfig } from '../../lib/index.js';
import { fromLibxlConfig, toLibxlConfig } from '../../lib/config/libxl-json.js';
import { formatCpuList, formatRate, parseCpuList, parseRate } from '../../lib/config/syntax.js';
import { validateDomainConfig } from '../../lib/config/validate.js';
import { formatXlConfig, parseXlConfig, readXlConfig } from '../../lib/config/xlcfg.js';

const root = join(import.meta.dirname, '..', '..');
const corpus = join(root, 'test', 'fixtures', 'xlcfg');

function configError(fn: () => unknown): XenError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(XenError);
    expect((err as XenError).code).toBe('XEN_INVALID_CONFIG');
    return err as XenError;
  }
  throw new Error('expected XEN_INVALID_CONFIG');
}

const base: DomainConfig = { name: 'vm', type: 'pv', memory: 512, vcpus: 1, kernel: '/boot/vmlinuz' };

describe('libxl-types.gen.ts', () => {
  it('is what the generator makes from the installed header', () => {
    const run = spawnSync(process.execPath, [join(root, 'scripts', 'gen-libxl-types.mjs'), '--check'], { encoding: 'utf8' });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
  });
});

describe('validateDomainConfig', () => {
  it('accepts a good config', () => {
    expect(() => validateDomainConfig({ ...base, disks: [{ target: '/a', vdev: 'xvda' }], nics: [{ mac: '00:16:3e:00:00:01' }], pcis: [{ bdf: '03:00.0' }] })).not.toThrow();
  });

  it('throws TypeError for a non-object', () => {
    expect(() => validateDomainConfig('name=x')).toThrow(TypeError);
  });

  it.each([
    [{ name: '' }, 'name'],
    [{ name: '123' }, 'name'],
    [{ name: 'a b' }, 'name'],
    [{ name: 'Domain-0' }, 'name'],
    [{ type: 'kvm' }, 'type'],
    [{ uuid: 'not-a-uuid' }, 'uuid'],
    [{ uuid: '00000000-0000-0000-0000-000000000000' }, 'uuid'],
    [{ memory: 0 }, 'memory'],
    [{ memory: 1.5 }, 'memory'],
    [{ memory: '512' }, 'memory'],
    [{ maxMemory: 256 }, 'maxMemory'],
    [{ vcpus: 0 }, 'vcpus'],
    [{ vcpus: 4, maxVcpus: 2 }, 'maxVcpus'],
    [{ cpus: '0-3,x' }, 'cpus'],
    [{ cpus: 'nodes:0' }, 'cpus'],
    [{ cpus: '3-1' }, 'cpus'],
    [{ cpus: [] }, 'cpus'],
    [{ cpus: '1', vcpuAffinity: ['1'] }, 'vcpuAffinity'],
    [{ kernel: undefined }, 'kernel'],
    [{ type: 'pvh', kernel: undefined }, 'kernel'],
    [{ ramdisk: '/r', kernel: undefined, bootloader: 'pygrub' }, 'ramdisk'],
    [{ disks: [{ target: '/a', vdev: 'xvda' }, { target: '/b', vdev: 'xvda' }] }, 'disks[1].vdev'],
    [{ disks: [{ target: '/a', vdev: 'hda' }, { target: '/b', vdev: 'xvda' }] }, 'disks[1].vdev'],
    [{ disks: [{ target: '/a', vdev: 'vda' }] }, 'disks[0].vdev'],
    [{ disks: [{ target: '', vdev: 'xvda' }] }, 'disks[0].target'],
    [{ disks: [{ target: '/a', vdev: 'xvda', format: 'vmdk' }] }, 'disks[0].format'],
    [{ nics: [{ mac: '00:16:3e:00:00' }] }, 'nics[0].mac'],
    [{ nics: [{ mac: '01:16:3e:00:00:01' }] }, 'nics[0].mac'],
    [{ nics: [{ mac: '00:16:3e:00:00:01' }, { mac: '00:16:3E:00:00:01' }] }, 'nics[1].mac'],
    [{ nics: [{ ip: '10.0.0.300' }] }, 'nics[0].ip'],
    [{ nics: [{ rate: 'fast' }] }, 'nics[0].rate'],
    [{ nics: [{ queues: 0 }] }, 'nics[0].queues'],
    [{ nics: [{ vifname: 'a-very-long-interface' }] }, 'nics[0].vifname'],
    [{ pcis: [{ bdf: '03:00' }] }, 'pcis[0].bdf'],
    [{ pcis: [{ bdf: '03:20.0' }] }, 'pcis[0].bdf'],
    [{ pcis: [{ bdf: '03:00.0' }, { bdf: '0000:03:00.0' }] }, 'pcis[1].bdf'],
    [{ pcis: [{ bdf: '03:00.1' }, { bdf: '03:00.*' }] }, 'pcis[1].bdf'],
    [{ pcis: [{ bdf: '03:00.0', vslot: 40 }] }, 'pcis[0].vslot'],
    [{ onReboot: 'reboot' }, 'onReboot'],
    [{ maxmem: 1024 }, 'maxmem'],
  ])('rejects %j (field %s)', (patch, field) => {
    const err = configError(() => validateDomainConfig({ ...base, ...patch }));
    expect(err.field).toBe(field);
    expect(err.message).toContain(field);
  });
});

describe('syntax helpers', () => {
  it('reads and writes CPU lists', () => {
    expect(parseCpuList('0-3,5,^1')).toEqual([0, 2, 3, 5]);
    expect(parseCpuList('all')).toBeUndefined();
    expect(formatCpuList([5, 0, 1, 2, 3])).toBe('0-3,5');
  });

  it('reads rates like xlu_vif_parse_rate', () => {
    expect(parseRate('10Mb/s')).toEqual({ bytesPerInterval: 62500, intervalUsecs: 50000 });
    expect(parseRate('1MB/s@20ms')).toEqual({ bytesPerInterval: 20000, intervalUsecs: 20000 });
    expect(formatRate(parseRate('10Mb/s'))).toBe('1250KB/s');
  });
});

describe('parseXlConfig', () => {
  it('names line and key of a bad value', () => {
    const err = configError(() => parseXlConfig('name = "x"\nmemory = "lots"\nvcpus = 2\n'));
    expect(err.message).toBe('xl.cfg line 2: memory: expected a number of MiB, got "lots"');
    expect(err.line).toBe(2);
    expect(err.field).toBe('memory');
  });

  it('names the file, and the line of a semantic fault', () => {
    const err = configError(() => parseXlConfig('name="x"\nkernel="/k"\nmemory=512\nmaxmem=256\n', { filename: 'x.cfg' }));
    expect(err.message).toBe('x.cfg line 4: maxmem: must be at least memory (512 MiB), got 256');
    expect(err.path).toBe('x.cfg');
  });

  it('points at the list item of a bad device', () => {
    const err = configError(() => parseXlConfig('name="x"\nkernel="/k"\nmemory=512\ndisk=[\n "/a,,xvda",\n "/b,,xvda",\n]\n'));
    expect(err.line).toBe(6);
    expect(err.field).toBe('disk[1].vdev');
  });

  it.each([
    ['name = "x\nmemory=1\n', 1, 'unterminated string'],
    ['name = "x"\nmemory 512\n', 2, 'expected "="'],
    ['name = "x"\ndisk = [ "a" "b" ]\n', 2, 'expected "," or "]"'],
    ['name = "x"\nmemory = 512 512\n', 2, 'end of the line'],
    ['name = "x"\nmemory = @\n', 2, 'unexpected character'],
    ['= 5\n', 1, 'expected KEY = VALUE'],
  ])('reports syntax errors with their line: %j', (text, line, reason) => {
    const err = configError(() => parseXlConfig(text));
    expect(err.line).toBe(line);
    expect(err.message).toContain(reason);
  });

  it.each([
    ['memory = 512\nkernel="/k"\n', 'name'],
    ['name = "x"\nkernel="/k"\n', 'memory'],
    ['name = "x"\nmemory = 512\ntype = "kvm"\n', 'type'],
    ['name = "x"\nmemory = 512\nbuilder = "linux"\n', 'builder'],
    ['name = "x"\nmemory = 512\nkernel="/k"\non_crash = "explode"\n', 'on_crash'],
    ['name = "x"\nmemory = 512\nkernel="/k"\ndisk = [ "/a,vmdk,xvda" ]\n', 'disk[0]'],
    ['name = "x"\nmemory = 512\nkernel="/k"\ndisk = [ "/a" ]\n', 'disk[0]'],
    ['name = "x"\nmemory = 512\nkernel="/k"\npci = [ "name=gpu" ]\n', 'pci[0]'],
    ['name = "x"\nmemory = 512\nkernel="/k"\nvif = [ "type=tap" ]\n', 'vif[0]'],
    ['name = "x"\nmemory = 512\nkernel="/k"\ncpus = "nodes:1"\n', 'cpus'],
    ['name = "x"\nmemory = [ 512 ]\n', 'memory'],
    ['name = "x"\nmemory = 512\n', 'kernel'],
  ])('rejects broken config %j (key %s)', (text, key) => {
    expect(configError(() => parseXlConfig(text)).field).toBe(key);
  });

  it('reads the corpus', () => {
    const read = (f: string) => readXlConfig(readFileSync(join(corpus, f), 'utf8'), { filename: f });
    const pv = read('pv-debian.cfg');
    expect(pv.config).toEqual({
      name: 'deb', type: 'pv', memory: 512, maxMemory: 1024, vcpus: 2,
      kernel: '/boot/vmlinuz-6.1.0-18-amd64', ramdisk: '/boot/initrd.img-6.1.0-18-amd64', cmdline: 'root=/dev/xvda2 ro elevator=noop',
      disks: [{ target: '/dev/vg0/deb-disk', vdev: 'xvda2' }, { target: '/dev/vg0/deb-swap', vdev: 'xvda1' }],
      nics: [{ mac: '00:16:3E:12:34:56', bridge: 'xenbr0' }],
      onPoweroff: 'destroy', onReboot: 'restart', onCrash: 'restart',
    });
    expect(pv.warnings.map((w) => [w.key, w.line])).toEqual([['dhcp', 17]]);

    const pvh = read('pvh-direct.cfg').config;
    expect(pvh).toMatchObject({ name: 'pvh1', type: 'pvh', vcpus: 2, maxVcpus: 4, cpus: '0-3,^1', cmdline: 'console=hvc0 root=/dev/xvda', uuid: '3f1b7d4c-2a5e-4e8b-9c1d-0a2b3c4d5e6f', onCrash: 'coredump-restart' });
    expect(pvh.disks).toEqual([{ target: '/srv/xen/pvh1.qcow2', vdev: 'xvda', format: 'qcow2' }, { target: '/srv/xen/data.img', vdev: 'xvdb', access: 'ro' }]);
    expect(pvh.nics).toEqual([
      { bridge: 'xenbr0', vifname: 'pvh1.0', rate: '10Mb/s@20ms', ip: '192.0.2.10 2001:db8::10' },
      { bridge: 'xenbr1', script: 'vif-route', mtu: 9000 },
    ]);

    const hvm = read('hvm-win.cfg');
    expect(hvm.config).toMatchObject({ type: 'hvm', vcpuAffinity: ['2', '3', '4-5', '6-7'] });
    expect(hvm.config.disks).toEqual([{ target: '/srv/xen/win10.img', vdev: 'hda' }, { target: '', vdev: 'hdc', devtype: 'cdrom' }]);
    expect(hvm.config.nics).toEqual([{ type: 'ioemu', model: 'e1000', mac: '00:16:3e:aa:bb:cc', bridge: 'xenbr0' }]);
    expect(hvm.config.pcis).toEqual([
      { bdf: '0000:03:00.0', vslot: 8, permissive: true, msitranslate: true },
      { bdf: '0000:03:10.*', msitranslate: true },
      { bdf: '0000:05:00.1', msitranslate: true, rdmPolicy: 'relaxed' },
    ]);
    expect(hvm.warnings.map((w) => w.key)).toEqual(['boot', 'vnc', 'vnclisten', 'serial', 'usbdevice']);

    const boot = read('bootloader.cfg').config;
    expect(boot).toEqual({ name: 'pygrub-guest', type: 'pv', memory: 256, vcpus: 1, bootloader: 'pygrub', disks: [{ target: '/srv/xen/guest.img', vdev: 'xvda' }], nics: [{}] });
  });

  it('reads every corpus file, and formatXlConfig writes what it reads back', () => {
    for (const f of readdirSync(corpus)) {
      const config = parseXlConfig(readFileSync(join(corpus, f), 'utf8'));
      expect(parseXlConfig(formatXlConfig(config)), f).toEqual(config);
    }
  });

  it('honours xl syntax details: ; separators, += , octal/hex numbers, escapes', () => {
    const c = parseXlConfig('name="ab" ; memory=0x200\nvcpus=010\nkernel=\'/k\'\ncmdline="a\\"b\\tc"\ndisk=["/a,,xvda"]\ndisk+=["/b,,xvdb"]\n', {});
    expect(c).toMatchObject({ name: 'ab', memory: 512, vcpus: 8, cmdline: 'a"b\tc' });
    expect(c.disks?.map((d) => d.vdev)).toEqual(['xvda', 'xvdb']);
  });
});

// --- property tests -------------------------------------------------------------------

const hex2 = fc.integer({ min: 0, max: 255 }).map((n) => n.toString(16).padStart(2, '0'));
const arbMac = fc.tuple(hex2, hex2, hex2, hex2, hex2).map((o) => `00:${o.join(':')}`);
const arbPath = fc.stringMatching(/^\/[a-z0-9_.\/-]{1,20}$/);
const arbWord = fc.stringMatching(/^[a-z][a-z0-9_.-]{0,10}$/);

const arbConfig: fc.Arbitrary<DomainConfig> = fc
  .record({
    name: fc.stringMatching(/^[a-z][a-z0-9_.-]{0,20}$/),
    type: fc.constantFrom('pv' as const, 'pvh' as const, 'hvm' as const),
    uuid: fc.option(fc.uuid().filter((u) => !/^[0-]+$/.test(u)), { nil: undefined }),
    memory: fc.integer({ min: 1, max: 1 << 20 }),
    extraMemory: fc.option(fc.integer({ min: 1, max: 4096 }), { nil: undefined }),
    vcpus: fc.integer({ min: 1, max: 16 }),
    extraVcpus: fc.option(fc.integer({ min: 1, max: 16 }), { nil: undefined }),
    cpus: fc.option(fc.uniqueArray(fc.integer({ min: 0, max: 63 }), { minLength: 1, maxLength: 8 }).map((a) => formatCpuList(a)), { nil: undefined }),
    kernel: arbPath,
    ramdisk: fc.option(arbPath, { nil: undefined }),
    cmdline: fc.option(fc.stringMatching(/^[a-z0-9=\/ _.-]{1,30}$/), { nil: undefined }),
    disks: fc.uniqueArray(
      fc.record({
        n: fc.integer({ min: 0, max: 25 }),
        target: arbPath,
        format: fc.option(fc.constantFrom('qcow' as const, 'qcow2' as const, 'vhd' as const, 'qed' as const), { nil: undefined }),
        ro: fc.boolean(),
        cdrom: fc.boolean(),
        backendType: fc.option(fc.constantFrom('phy' as const, 'qdisk' as const), { nil: undefined }),
        script: fc.option(arbWord, { nil: undefined }),
      }),
      { selector: (d) => d.n, maxLength: 4 },
    ),
    nics: fc.uniqueArray(
      fc.record({
        mac: fc.option(arbMac, { nil: undefined }),
        bridge: fc.option(arbWord, { nil: undefined }),
        model: fc.option(fc.constantFrom('e1000', 'rtl8139'), { nil: undefined }),
        vifname: fc.option(fc.stringMatching(/^[a-z][a-z0-9.]{0,14}$/), { nil: undefined }),
        rate: fc.option(fc.constantFrom('10Mb/s', '1MB/s@20ms', '100KB/s@1s', '5GB/s'), { nil: undefined }),
        type: fc.option(fc.constantFrom('vif' as const, 'ioemu' as const), { nil: undefined }),
      }),
      { selector: (n) => n.mac ?? Math.random(), maxLength: 3 },
    ),
    pcis: fc.uniqueArray(
      fc.record({ bus: fc.integer({ min: 0, max: 255 }), dev: fc.integer({ min: 0, max: 31 }), func: fc.constantFrom(0, 1, 7, '*' as const), vslot: fc.option(fc.integer({ min: 1, max: 31 }), { nil: undefined }), permissive: fc.boolean(), seize: fc.boolean() }),
      { selector: (p) => `${p.bus}:${p.dev}`, maxLength: 3 },
    ),
    onReboot: fc.option(fc.constantFrom('destroy' as const, 'rename-restart' as const, 'preserve' as const), { nil: undefined }),
    onCrash: fc.option(fc.constantFrom('restart' as const, 'coredump-destroy' as const), { nil: undefined }),
  })
  .map((r) => {
    const c: DomainConfig = { name: r.name, type: r.type, memory: r.memory, vcpus: r.vcpus, kernel: r.kernel };
    if (r.uuid) c.uuid = r.uuid;
    if (r.extraMemory) c.maxMemory = r.memory + r.extraMemory;
    if (r.extraVcpus) c.maxVcpus = r.vcpus + r.extraVcpus;
    if (r.cpus) c.cpus = r.cpus;
    if (r.ramdisk) c.ramdisk = r.ramdisk;
    if (r.cmdline) c.cmdline = r.cmdline;
    if (r.disks.length) {
      c.disks = r.disks.map((d) => ({
        target: d.target, vdev: `xvd${String.fromCharCode(97 + d.n)}`,
        ...(d.format ? { format: d.format } : {}), ...(d.ro && !d.cdrom ? { access: 'ro' as const } : {}), ...(d.cdrom ? { devtype: 'cdrom' as const } : {}),
        ...(d.backendType ? { backendType: d.backendType } : {}), ...(d.script ? { script: d.script } : {}),
      }));
    }
    if (r.nics.length) c.nics = r.nics.map((n) => Object.fromEntries(Object.entries(n).filter(([, v]) => v !== undefined)));
    if (r.pcis.length) {
      c.pcis = r.pcis.map((p) => ({
        bdf: `0000:${p.bus.toString(16).padStart(2, '0')}:${p.dev.toString(16).padStart(2, '0')}.${p.func}`,
        ...(p.vslot ? { vslot: p.vslot } : {}), ...(p.permissive ? { permissive: true } : {}), ...(p.seize ? { seize: true } : {}),
      }));
    }
    if (r.onReboot) c.onReboot = r.onReboot;
    if (r.onCrash) c.onCrash = r.onCrash;
    return c;
  });

/** The config as fromLibxlConfig gives it back: rates in canonical spelling, uuid lower-case. */
export function canonical(c: DomainConfig): DomainConfig {
  const out = structuredClone(c);
  if (out.uuid) out.uuid = out.uuid.toLowerCase();
  for (const n of out.nics ?? []) {
    if (n.rate) n.rate = formatRate(parseRate(n.rate));
    if (n.mac) n.mac = n.mac.toLowerCase();
  }
  return out;
}

export { arbConfig };

describe('round trips', () => {
  it('fromLibxlConfig(toLibxlConfig(c)) is c', () => {
    fc.assert(fc.property(arbConfig, (c) => {
      expect(fromLibxlConfig(toLibxlConfig(c))).toEqual(canonical(c));
    }), { numRuns: 300 });
  });

  it('parseXlConfig(formatXlConfig(c)) is c', () => {
    fc.assert(fc.property(arbConfig, (c) => {
      expect(parseXlConfig(formatXlConfig(c))).toEqual(c);
    }), { numRuns: 300 });
  });

  it('keeps per-vCPU affinity, and maps actions to libxl names', () => {
    const c: DomainConfig = { ...base, vcpus: 2, vcpuAffinity: ['2', '3-8,^5'], onReboot: 'rename-restart', onSoftReset: 'destroy' };
    const json = toLibxlConfig(c);
    expect(json.b_info?.vcpu_hard_affinity).toEqual([[2], [3, 4, 6, 7, 8]]);
    expect(json.on_reboot).toBe('restart_rename');
    expect(json.on_soft_reset).toBeUndefined();
    expect(fromLibxlConfig(json)).toEqual({ ...c, vcpuAffinity: ['2', '3-4,6-8'] });
  });

  it('reads the kernel from older JSON that has it in type.pv', () => {
    const back = fromLibxlConfig({ c_info: { type: 'pv', name: 'old' }, b_info: { max_memkb: 262144, target_memkb: 262144, max_vcpus: 1, avail_vcpus: [0], 'type.pv': { kernel: '/k', cmdline: 'ro' } } });
    expect(back).toEqual({ name: 'old', type: 'pv', memory: 256, vcpus: 1, kernel: '/k', cmdline: 'ro', onReboot: 'destroy', onSoftReset: 'destroy' });
  });
});

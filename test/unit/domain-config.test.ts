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
import { arbConfig, canonical } from '../helpers/domain-config-arb.js';
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

  it('accepts two functions of one PCI device, as SR-IOV virtual functions are', () => {
    expect(() => validateDomainConfig({ ...base, pcis: [{ bdf: '03:10.0' }, { bdf: '03:10.1' }] })).not.toThrow();
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
    [{ pcis: [{ bdf: '03:00.*' }, { bdf: '03:00.1' }] }, 'pcis[1].bdf'],
    [{ pcis: [{ bdf: '03:00.0', vslot: 0x20 }] }, 'pcis[0].vslot'],
    [{ passthrough: 'on' }, 'passthrough'],
    [{ passthrough: 'share_pt' }, 'passthrough'],
    [{ type: 'pvh', passthrough: 'enabled' }, 'passthrough'],
    [{ passthrough: 'disabled', pcis: [{ bdf: '03:10.0' }] }, 'passthrough'],
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
    ['name = "x"\nmemory = 512\nkernel="/k"\npassthrough = "yes"\n', 'passthrough'],
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

  it('warns about what it reads but does not apply', () => {
    const { config, warnings } = readXlConfig('name="x"\nmemory=512\nkernel="/k"\ncmdline="quiet"\nroot="/dev/xvda"\ndisk=[ "discard,/a,,xvda" ]\nvif=[ "bridge=br0,gatewaydev=eth0,colour=red" ]\ncpus="all"\n');
    expect(config.cmdline).toBe('quiet');
    expect(config.cpus).toBe('all');
    expect(warnings.map((w) => [w.line, w.key])).toEqual([[5, 'root'], [6, 'disk'], [7, 'vif'], [7, 'vif']]);
    expect(warnings[3]?.message).toContain('unknown option colour');
    expect(toLibxlConfig(config).b_info?.vcpu_hard_affinity).toBeUndefined();
  });

  it('leaves out nics[].queues, which neither xl nor libxl can express', () => {
    const c: DomainConfig = { ...base, nics: [{ bridge: 'br0', queues: 4 }] };
    expect(toLibxlConfig(c).nics).toEqual([{ bridge: 'br0' }]);
    expect(formatXlConfig(c)).not.toContain('queues');
  });

  it('refuses to write a device value that a spec string cannot hold', () => {
    expect(configError(() => formatXlConfig({ ...base, nics: [{ bridge: 'a,b' }] })).field).toBe('nics[0]');
  });

  it('honours xl syntax details: ; separators, += , octal/hex numbers, escapes', () => {
    const c = parseXlConfig('name="ab" ; memory=0x200\nvcpus=010\nkernel=\'/k\'\ncmdline="a\\"b\\tc"\ndisk=["/a,,xvda"]\ndisk+=["/b,,xvdb"]\n', {});
    expect(c).toMatchObject({ name: 'ab', memory: 512, vcpus: 8, cmdline: 'a"b\tc' });
    expect(c.disks?.map((d) => d.vdev)).toEqual(['xvda', 'xvdb']);
  });
});

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

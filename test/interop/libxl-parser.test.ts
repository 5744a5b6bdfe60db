/**
 * libxl's own parsers judge xenode's configuration code: the JSON toLibxlConfig makes must
 * be accepted by libxl_domain_config_from_json with every field surviving (libxl silently
 * drops a field whose JSON type is wrong, so "accepted" alone proves little), the enum
 * names in the generated types must be libxl's, and the xl.cfg reader must agree with
 * libxlutil on the cfg syntax and on disk, pci and rate specs.
 *
 * Runs test/fixtures/libxl-check.c; needs cc and libxen-dev (a failure when CI=true).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { DomainConfig } from '../../lib/index.js';
import { LIBXL_ENUMS, LIBXL_STRUCTS, type LibxlFieldKind, type LibxlDeviceDisk, type LibxlDevicePci, type LibxlDomainConfig } from '../../lib/config/libxl-types.gen.js';
import { fromLibxlConfig, toLibxlConfig } from '../../lib/config/libxl-json.js';
import { parseRate } from '../../lib/config/syntax.js';
import { parseDiskSpec, parsePciSpec } from '../../lib/config/xlcfg-devices.js';
import { formatXlConfig, parseXlConfig } from '../../lib/config/xlcfg.js';
import { parseXlSyntax, type XlValue } from '../../lib/config/xlcfg-syntax.js';
import { arbConfig, canonical } from '../helpers/domain-config-arb.js';
import { buildLibxlCheck, hasLibxlHeaders, libxlCheck } from '../helpers/libxl-check.js';
import { requireTool } from '../helpers/tools.js';

const ready = requireTool('cc') && requireTool('libxenlight', hasLibxlHeaders, { aptPackage: 'libxen-dev' });
const corpus = join(import.meta.dirname, '..', 'fixtures', 'xlcfg');

/** Every leaf of `mine` is in `theirs` with the same value. */
function expectSurvives(mine: unknown, theirs: unknown, path = '$'): void {
  if (Array.isArray(mine)) {
    expect(Array.isArray(theirs), path).toBe(true);
    expect((theirs as unknown[]).length, path).toBe(mine.length);
    mine.forEach((v, i) => expectSurvives(v, (theirs as unknown[])[i], `${path}[${i}]`));
  } else if (typeof mine === 'object' && mine !== null) {
    expect(typeof theirs, path).toBe('object');
    for (const [k, v] of Object.entries(mine)) expectSurvives(v, (theirs as Record<string, unknown>)[k], `${path}.${k}`);
  } else {
    expect(theirs, path).toEqual(mine);
  }
}

const samples: Record<string, DomainConfig> = {
  pv: { name: 'pv1', type: 'pv', memory: 512, maxMemory: 1024, vcpus: 2, maxVcpus: 4, kernel: '/boot/vmlinuz', ramdisk: '/boot/initrd.img', cmdline: 'root=/dev/xvda1 ro', uuid: '3f1b7d4c-2a5e-4e8b-9c1d-0a2b3c4d5e6f' },
  pvBootloader: { name: 'pv2', type: 'pv', memory: 256, vcpus: 1, bootloader: 'pygrub', onReboot: 'destroy', onCrash: 'coredump-restart', onWatchdog: 'preserve', onPoweroff: 'rename-restart' },
  pvh: { name: 'pvh1', type: 'pvh', memory: 1024, vcpus: 2, cpus: '0-3,^1', kernel: '/boot/vmlinuz', onSoftReset: 'destroy' },
  hvm: { name: 'hvm1', type: 'hvm', memory: 4096, vcpus: 4, vcpuAffinity: ['2', '3', '4-5', '6-7'] },
  disks: {
    name: 'disks', type: 'hvm', memory: 1024, vcpus: 1,
    disks: [
      { target: '/srv/a.img', vdev: 'hda' },
      { target: '/srv/b.qcow2', vdev: 'hdb', format: 'qcow2', access: 'ro', backendType: 'qdisk' },
      { target: '', vdev: 'hdc', devtype: 'cdrom' },
      { target: '/srv/tools.iso', vdev: 'hdd', devtype: 'cdrom' },
      { target: '/dev/vg/x', vdev: 'xvde', backendType: 'phy', backendDomain: 'storage', script: 'block-drbd' },
    ],
  },
  nics: {
    name: 'nics', type: 'pv', memory: 512, vcpus: 1, kernel: '/k',
    nics: [
      { mac: '00:16:3e:00:00:01', bridge: 'xenbr0', vifname: 'nics.0', script: 'vif-bridge', ip: '192.0.2.1 2001:db8::1', rate: '10Mb/s@20ms', mtu: 9000 },
      { type: 'ioemu', model: 'e1000', backendDomain: 'netdom', rate: '1GB/s' },
      { type: 'vif' },
    ],
  },
  pci: {
    name: 'pci', type: 'hvm', memory: 2048, vcpus: 2,
    pcis: [
      { bdf: '0000:03:00.0', vslot: 8, permissive: true, msitranslate: true },
      { bdf: '0000:03:10.*', seize: true, powerMgmt: true },
      { bdf: '0001:05:00.1', rdmPolicy: 'relaxed' },
    ],
  },
};

describe.skipIf(!ready)("libxl's parser accepts xenode's JSON", () => {
  const bin = ready ? buildLibxlCheck() : '';

  it('knows every enum value by the name libxl gives it', () => {
    for (const [name, values] of Object.entries(LIBXL_ENUMS)) {
      const entries = Object.entries(values);
      expect(libxlCheck(bin, ['enum', name, ...entries.map(([, v]) => String(v))]), name).toEqual(entries.map(([k]) => k));
    }
  });

  it.each(Object.entries(samples))('keeps every field of the %s config', (_name, config) => {
    const mine = toLibxlConfig(config);
    const theirs = libxlCheck(bin, ['config'], JSON.stringify(mine)) as LibxlDomainConfig;
    expectSurvives(mine, theirs);
    expect(fromLibxlConfig(theirs)).toEqual(canonical(config));
  });

  it('keeps every field of generated configs', () => {
    fc.assert(fc.property(arbConfig, (config) => {
      const mine = toLibxlConfig(config);
      const theirs = libxlCheck(bin, ['config'], JSON.stringify(mine)) as LibxlDomainConfig;
      expectSurvives(mine, theirs);
      expect(fromLibxlConfig(theirs)).toEqual(canonical(config));
    }), { numRuns: 40 });
  });

  it('rejects what libxl rejects: a wrong enum name', () => {
    const json = { ...toLibxlConfig(samples.pv as DomainConfig), on_reboot: 'reboot' };
    expect(() => libxlCheck(bin, ['config'], JSON.stringify(json))).toThrow();
  });
});

const wrap = (extra: Partial<LibxlDomainConfig>): LibxlDomainConfig => ({ c_info: { type: 'hvm', name: 'x' }, b_info: { max_memkb: 1024, target_memkb: 1024, max_vcpus: 1, avail_vcpus: [0] }, ...extra });

describe.skipIf(!ready)('the xl.cfg reader agrees with libxlutil', () => {
  const bin = ready ? buildLibxlCheck() : '';

  const diskSpecs = [
    '/dev/vg/guest-volume,,hda', '/dev/vg/guest-volume,raw,hda,rw', 'format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume',
    'raw:/dev/vg/guest-volume,hda,w', '/root/image.iso,,hdc,cdrom', '/root/image.iso,,hdc,,cdrom', '/root/image.iso,raw,hdc,devtype=cdrom',
    'format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso', 'raw:/root/image.iso,hdc:cdrom,ro', ',hdc:cdrom,r',
    'phy:/dev/vg/x,xvda,w', 'file:/srv/img,xvda1,w', 'tap:aio:/srv/img,xvda,w', 'tap:qcow2:/srv/img.qcow2,xvdb,r', 'qcow2:/img,xvda,w',
    'iscsi:iqn.2001-05.com.example:disk,xvda,w', '/img,qcow2,xvda', 'vdev=xvda,target=/img,with,comma', '/dev/sdb,,xvdb,r',
    'backend=dd,script=block-x,/i,,xvdc', 'backendtype=qdisk,/i.vhd,vhd,xvdd,w', 'discard,/i,,xvdd', '  /spaced,  raw,  xvde',
  ];
  const badDiskSpecs = ['/img,xvda,w', 'xvda', '/img,vmdk,xvda', '/img,,xvda,rx', 'foo:/img,xvda,w', 'vdev=xvda'];

  it.each(diskSpecs)('reads disk %j like xlu_disk_parse', (spec) => {
    const [theirs] = libxlCheck(bin, ['disk', spec]) as [LibxlDeviceDisk];
    const mine = parseDiskSpec(spec, () => {});
    expect(mine).toEqual(fromLibxlConfig(wrap({ disks: [theirs] })).disks?.[0]);
  });

  it.each(badDiskSpecs)('rejects disk %j like xlu_disk_parse', (spec) => {
    expect(() => libxlCheck(bin, ['disk', spec])).toThrow();
    expect(() => parseDiskSpec(spec, () => {})).toThrow();
  });

  const pciSpecs = ['0000:03:00.0', '03:00.1', '03:00.*', '36:00.0@1f,seize=1', '36:00.0,vslot=10,seize=1', 'bdf=36:00.0,vslot=0x10,seize=1', '0001:05:1f.7,permissive=1,msitranslate=1,power_mgmt=1,rdm_policy=relaxed'];

  it.each(pciSpecs)('reads pci %j like xlu_pci_parse_spec_string', (spec) => {
    const [theirs] = libxlCheck(bin, ['pci', spec]) as [LibxlDevicePci];
    expect(parsePciSpec(spec, {})).toEqual(fromLibxlConfig(wrap({ pcidevs: [theirs] })).pcis?.[0]);
  });

  // The first is xl-pci-configuration(5)'s own example, which libxlutil 4.17 refuses (slot 0x20 > 0x1f).
  it.each(['36:00.0@20,seize=1', '36:00.0,vslot=0x20', '03:00', '03:00.8'])('rejects pci %j like xlu_pci_parse_spec_string', (spec) => {
    expect(() => libxlCheck(bin, ['pci', spec])).toThrow();
    expect(() => parsePciSpec(spec, {})).toThrow();
  });

  it('reads rates like xlu_vif_parse_rate', () => {
    const rates = ['10Mb/s', '1MB/s@20ms', '100KB/s@1s', '5GB/s', '123B/s@250us', '1Gb/s@3', '7Kb/s@010ms'];
    const theirs = libxlCheck(bin, ['rate', ...rates]) as { rate_bytes_per_interval: number; rate_interval_usecs: number }[];
    expect(rates.map(parseRate)).toEqual(theirs.map((t) => ({ bytesPerInterval: t.rate_bytes_per_interval, intervalUsecs: t.rate_interval_usecs })));
  });

  it.each(readdirSync(corpus))('reads the syntax of %s like xlu_cfg_readdata', (file) => {
    const text = readFileSync(join(corpus, file), 'utf8');
    const settings = parseXlSyntax(text);
    const flat = (v: XlValue): unknown => (v.kind === 'list' ? v.items.map((i) => (i.kind === 'list' ? null : i.text)) : v.text);
    const theirs = libxlCheck(bin, ['cfg', ...settings.map((s) => s.key)], text);
    expect(Object.fromEntries(settings.map((s) => [s.key, flat(s.value)]))).toEqual(theirs);
  });
});

/** A value of `kind` that is not libxl's default for it, so libxl's writer keeps it. */
function sample(kind: LibxlFieldKind, depth = 0): unknown {
  switch (kind.t) {
    case 'int': return 7;
    case 'bool': return true;
    case 'string': return 'xenode';
    case 'defbool': return 'True';
    case 'uuid': return '3f1b7d4c-2a5e-4e8b-9c1d-0a2b3c4d5e6f';
    case 'mac': return '00:16:3e:01:02:03';
    case 'bitmap': return [1, 3];
    case 'string_list': return ['a', 'b'];
    case 'key_value_list': return { k: 'v', empty: null };
    case 'hwcap': return [1, 2, 3, 4];
    case 'ms_vm_genid': return Array.from({ length: 16 }, (_, i) => i + 1);
    case 'cpuid_policy_list': return undefined; // libxl_cpuid.c's own format, not generated
    case 'enum': {
      const values = Object.keys(LIBXL_ENUMS[kind.name]);
      return values[values.length - 1];
    }
    case 'struct': return sampleFields((LIBXL_STRUCTS[kind.name] as { fields: Record<string, LibxlFieldKind> }).fields, depth + 1);
    case 'array': return [sample(kind.of, depth + 1)];
    case 'object': return sampleFields(kind.fields, depth + 1);
  }
}

function sampleFields(fields: Record<string, LibxlFieldKind>, depth: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const unions = new Set<string>();
  for (const [key, kind] of Object.entries(fields)) {
    // One member per keyed union, preferring one with fields.
    if (kind.t === 'object' && kind.union !== undefined) {
      if (unions.has(kind.union) || Object.keys(kind.fields).length === 0) continue;
      unions.add(kind.union);
    }
    const v = sample(kind, depth);
    if (v !== undefined) out[key] = v;
  }
  return out;
}

describe.skipIf(!ready)('the generated types match libxl for every struct', () => {
  const bin = ready ? buildLibxlCheck() : '';
  const readable = Object.entries(LIBXL_STRUCTS).filter(([, s]) => s.fromJson);

  it('covers the structs libxl can read', () => {
    expect(readable.map(([n]) => n)).toEqual(expect.arrayContaining(['domain_config', 'domain_build_info', 'device_disk', 'device_nic', 'device_pci', 'device_channel', 'device_usbdev']));
  });

  it.each(readable.map(([n]) => n))('libxl reads and writes back every field of %s', (name) => {
    const mine = sampleFields((LIBXL_STRUCTS[name] as { fields: Record<string, LibxlFieldKind> }).fields, 0);
    const theirs = libxlCheck(bin, ['struct', name], JSON.stringify(mine));
    expectSurvives(mine, theirs);
  });

  const unionMembers = readable.flatMap(([name, s]) =>
    Object.entries(s.fields).filter(([, k]) => k.t === 'object' && k.union !== undefined).map(([key, kind]) => [name, key, kind] as const),
  );

  it.each(unionMembers.map(([n, k, kind]) => [n, k, kind]))('libxl reads and writes back %s["%s"]', (name, key, kind) => {
    const mine = { [key]: sample(kind) };
    expectSurvives(mine, libxlCheck(bin, ['struct', name], JSON.stringify(mine)));
  });
});

describe.skipIf(!ready)('libxlutil reads what formatXlConfig writes', () => {
  const bin = ready ? buildLibxlCheck() : '';
  const keys = ['name', 'type', 'uuid', 'memory', 'maxmem', 'vcpus', 'maxvcpus', 'cpus', 'kernel', 'ramdisk', 'cmdline', 'bootloader', 'disk', 'vif', 'pci', 'on_poweroff', 'on_reboot', 'on_crash', 'on_watchdog', 'on_soft_reset'];

  function check(config: DomainConfig): void {
    const text = formatXlConfig(config);
    const got = libxlCheck(bin, ['cfg', ...keys], text) as Record<string, string | string[]>;
    expect(got.name).toBe(config.name);
    expect(got.type).toBe(config.type);
    expect(Number(got.memory)).toBe(config.memory);
    expect(got.maxmem === undefined ? undefined : Number(got.maxmem)).toBe(config.maxMemory);
    expect(Number(got.vcpus)).toBe(config.vcpus);
    for (const [key, field] of [['kernel', 'kernel'], ['ramdisk', 'ramdisk'], ['cmdline', 'cmdline'], ['bootloader', 'bootloader'], ['uuid', 'uuid']] as const) {
      expect(got[key], key).toBe(config[field]);
    }
    const disks = (got.disk ?? []) as string[];
    const theirDisks = disks.length ? (libxlCheck(bin, ['disk', ...disks]) as LibxlDeviceDisk[]) : [];
    expect(fromLibxlConfig(wrap({ disks: theirDisks })).disks).toEqual(config.disks);
    const pcis = (got.pci ?? []) as string[];
    const theirPcis = pcis.length ? (libxlCheck(bin, ['pci', ...pcis]) as LibxlDevicePci[]) : [];
    expect(fromLibxlConfig(wrap({ pcidevs: theirPcis })).pcis).toEqual(config.pcis);
    const vifs = (got.vif ?? []) as string[];
    expect(vifs.length).toBe(config.nics?.length ?? 0);
    expect(parseXlConfig(text)).toEqual(config);
  }

  it.each(Object.entries(samples))('for the %s config', (_name, config) => check(config));

  it('for generated configs', () => {
    fc.assert(fc.property(arbConfig, (config) => check(config)), { numRuns: 30 });
  });
});

describe.skipIf(!ready)('the xl.cfg lexer agrees with libxlutil on edge cases', () => {
  const bin = ready ? buildLibxlCheck() : '';
  const snippets = [
    'a=0x200', 'a=0xff', 'a=0777', 'a=1e5', 'a=5abc', 'a = "x" # comment', 'a=[]', 'a=[ "1", 2, ]', 'a="x"\na+="y"', 'a=1\na=2',
    'a.b=1', 'a_9=1', 'a="\\r\\a\\t"', "a='q\\'r'", 'a=1;b=2', 'a=[\n  "x",\n\n  "y"\n]',
    'a=-1', 'a=1.5', 'a=+5', 'a=.5', 'a=0xFF', 'a=1_000', 'A=1', '_a=1', 'ab-c=1', 'a="x"b="y"', 'a=[,]', 'a=[1,,2]', 'a=abc',
    "a='x\\qy'", 'a="\\x41"', 'a="\\0"', 'a="unterminated', 'a=',
  ];

  it.each(snippets)('%j', (text) => {
    const keys = ['a', 'b', 'a.b', 'a_9', 'A', '_a'];
    let theirs: unknown;
    try {
      theirs = libxlCheck(bin, ['cfg', ...keys], `${text}\n`);
    } catch {
      theirs = 'rejected';
    }
    let mine: unknown;
    try {
      const flat = (v: XlValue): unknown => (v.kind === 'list' ? v.items.map((i) => (i.kind === 'list' ? null : i.text)) : v.text);
      mine = Object.fromEntries(parseXlSyntax(`${text}\n`).map((s) => [s.key, flat(s.value)]));
    } catch {
      mine = 'rejected';
    }
    expect(mine).toEqual(theirs);
  });
});

/** fast-check arbitraries for DomainConfig, shared by the unit and the libxl interop tests. */
import fc from 'fast-check';
import type { DomainConfig } from '../../lib/index.js';
import { formatCpuList, formatRate, parseCpuList, parseRate } from '../../lib/config/syntax.js';

const hex2 = fc.integer({ min: 0, max: 255 }).map((n) => n.toString(16).padStart(2, '0'));
const arbMac = fc.tuple(hex2, hex2, hex2, hex2, hex2).map((o) => `00:${o.join(':')}`);
const arbPath = fc.stringMatching(/^\/[a-z0-9_./-]{1,20}$/);
const arbWord = fc.stringMatching(/^[a-z][a-z0-9_.-]{0,10}$/);

export const arbConfig: fc.Arbitrary<DomainConfig> = fc
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
    cmdline: fc.option(fc.stringMatching(/^[a-z0-9=/ _.-]{1,30}$/), { nil: undefined }),
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
    passthrough: fc.option(fc.constantFrom('enabled' as const, 'disabled' as const, 'sync_pt' as const, 'share_pt' as const), { nil: undefined }),
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
    // libxl's rules: no shared tables for PV, no passthrough for PVH, no devices without an IOMMU
    if (r.passthrough && !(r.passthrough === 'share_pt' && r.type === 'pv') && !(r.passthrough !== 'disabled' && r.type === 'pvh') && !(r.passthrough === 'disabled' && c.pcis)) c.passthrough = r.passthrough;
    if (r.onReboot) c.onReboot = r.onReboot;
    if (r.onCrash) c.onCrash = r.onCrash;
    return c;
  });

/** The config as fromLibxlConfig gives it back: rates in canonical spelling, uuid lower-case. */
export function canonical(c: DomainConfig): DomainConfig {
  const out = structuredClone(c);
  if (out.uuid) out.uuid = out.uuid.toLowerCase();
  if (out.cpus !== undefined) {
    const cpus = typeof out.cpus === 'string' ? parseCpuList(out.cpus) : out.cpus;
    if (cpus === undefined) delete out.cpus;
    else out.cpus = formatCpuList(cpus);
  }
  // `disabled` is what libxl stores for a domain without devices anyway: it is not read back
  if (out.passthrough === 'disabled') delete out.passthrough;
  if (out.vcpuAffinity) out.vcpuAffinity = out.vcpuAffinity.map((l) => formatCpuList(parseCpuList(l) ?? []));
  for (const n of out.nics ?? []) {
    if (n.rate) n.rate = formatRate(parseRate(n.rate));
    if (n.mac) n.mac = n.mac.toLowerCase();
  }
  return out;
}

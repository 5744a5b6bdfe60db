/**
 * Checks a {@link DomainConfig} before anything is created: every wrong field is reported
 * by name with the reason (TypeError for a wrong type, RangeError for a value out of
 * range). Resource limits of the host (memory that does not fit…) are the backend's to
 * report, as XenError.
 */
import type { DomainConfig } from './domain-config.js';

const TYPES = ['pv', 'pvh', 'hvm'];
const ACTIONS = ['destroy', 'restart', 'rename-restart', 'preserve', 'coredump-destroy', 'coredump-restart', 'soft-reset'];
const NAME = /^[A-Za-z0-9_.:+-][A-Za-z0-9_.:+@-]{0,63}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
const BDF = /^(?:[0-9a-f]{1,4}:)?[0-9a-f]{1,2}:[0-1]?[0-9a-f]\.[0-7]$/i;
const VDEV = /^(xvd|hd|sd)[a-z]+\d*$/;

function fail(field: string, why: string, range = false): never {
  const msg = `domain config: ${field} ${why}`;
  throw range ? new RangeError(msg) : new TypeError(msg);
}

function str(v: unknown, field: string, optional = true): string | undefined {
  if (v === undefined && optional) return undefined;
  if (typeof v !== 'string') fail(field, `must be a string, got ${v === null ? 'null' : typeof v}`);
  return v;
}

function int(v: unknown, field: string, min: number, optional = true): number | undefined {
  if (v === undefined && optional) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) fail(field, `must be an integer, got ${JSON.stringify(v)}`);
  if (v < min) fail(field, `must be at least ${min}, got ${v}`, true);
  return v;
}

function oneOf(v: unknown, field: string, allowed: readonly string[]): void {
  if (v === undefined) return;
  if (typeof v !== 'string' || !allowed.includes(v)) fail(field, `must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
}

function list(v: unknown, field: string): unknown[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) fail(field, 'must be an array');
  return v;
}

function obj(v: unknown, field: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(field, 'must be an object');
  return v as Record<string, unknown>;
}

/**
 * Checks `config` and returns it as a {@link DomainConfig} (a copy with the same fields).
 *
 * @example
 * ```ts
 * import { validateDomainConfig } from 'xenode';
 * try {
 *   validateDomainConfig({ name: 'web', type: 'pv', memory: -1, vcpus: 1 });
 * } catch (err) {
 *   console.log(err.message);   // 'domain config: memory must be at least 1, got -1'
 * }
 * ```
 */
export function validateDomainConfig(config: unknown): DomainConfig {
  const c = obj(config, 'config');
  const name = str(c.name, 'name', false) as string;
  if (!NAME.test(name)) fail('name', `must be 1-64 characters of letters, digits and _.:+-@, got ${JSON.stringify(name)}`, true);
  oneOf(c.type, 'type', TYPES);
  if (c.type === undefined) fail('type', `must be one of ${TYPES.join(', ')}`);
  if (c.uuid !== undefined && !UUID.test(str(c.uuid, 'uuid') as string)) fail('uuid', `is not a UUID: ${JSON.stringify(c.uuid)}`, true);
  const memory = int(c.memory, 'memory', 1, false) as number;
  const maxMemory = int(c.maxMemory, 'maxMemory', 1);
  if (maxMemory !== undefined && maxMemory < memory) fail('maxMemory', `(${maxMemory}) must not be below memory (${memory})`, true);
  const vcpus = int(c.vcpus, 'vcpus', 1, false) as number;
  const maxVcpus = int(c.maxVcpus, 'maxVcpus', 1);
  if (maxVcpus !== undefined && maxVcpus < vcpus) fail('maxVcpus', `(${maxVcpus}) must not be below vcpus (${vcpus})`, true);
  if (c.cpus !== undefined && typeof c.cpus !== 'string') list(c.cpus, 'cpus').forEach((x, i) => int(x, `cpus[${i}]`, 0, false));
  for (const key of ['kernel', 'ramdisk', 'cmdline', 'bootloader']) str(c[key], key);
  if (c.type !== 'hvm' && c.kernel === undefined && c.bootloader === undefined) fail('kernel', `is required for a ${String(c.type)} domain (or give a bootloader)`);
  for (const key of ['onPoweroff', 'onReboot', 'onCrash', 'onWatchdog', 'onSoftReset']) oneOf(c[key], key, ACTIONS);
  const vdevs = new Set<string>();
  list(c.disks, 'disks').forEach((x, i) => {
    const d = obj(x, `disks[${i}]`);
    str(d.target, `disks[${i}].target`, false);
    const vdev = str(d.vdev, `disks[${i}].vdev`, false) as string;
    if (!VDEV.test(vdev)) fail(`disks[${i}].vdev`, `must name a virtual disk (xvda, hda, sdb…), got ${JSON.stringify(vdev)}`, true);
    if (vdevs.has(vdev)) fail(`disks[${i}].vdev`, `${vdev} is used twice`, true);
    vdevs.add(vdev);
    oneOf(d.format, `disks[${i}].format`, ['raw', 'qcow', 'qcow2', 'vhd', 'qed']);
    oneOf(d.access, `disks[${i}].access`, ['rw', 'ro']);
    oneOf(d.devtype, `disks[${i}].devtype`, ['disk', 'cdrom']);
    oneOf(d.backendType, `disks[${i}].backendType`, ['phy', 'qdisk', 'tap', 'standalone']);
  });
  list(c.nics, 'nics').forEach((x, i) => {
    const n = obj(x, `nics[${i}]`);
    const mac = str(n.mac, `nics[${i}].mac`);
    if (mac !== undefined && !MAC.test(mac)) fail(`nics[${i}].mac`, `is not a MAC address: ${JSON.stringify(mac)}`, true);
    for (const key of ['bridge', 'model', 'ip', 'script', 'vifname', 'backendDomain', 'rate']) str(n[key], `nics[${i}].${key}`);
    int(n.queues, `nics[${i}].queues`, 1);
  });
  list(c.pcis, 'pcis').forEach((x, i) => {
    const p = obj(x, `pcis[${i}]`);
    const bdf = str(p.bdf, `pcis[${i}].bdf`, false) as string;
    if (!BDF.test(bdf)) fail(`pcis[${i}].bdf`, `is not a PCI address ([DDDD:]BB:DD.F): ${JSON.stringify(bdf)}`, true);
    int(p.vslot, `pcis[${i}].vslot`, 0);
  });
  return structuredClone(c) as unknown as DomainConfig;
}

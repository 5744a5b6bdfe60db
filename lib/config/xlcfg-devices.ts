/**
 * The device spec strings inside xl.cfg's `disk`, `vif` and `pci` lists, read as
 * libxlutil reads them (xl-disk-configuration(5), xl-network-configuration(5),
 * xl-pci-configuration(5)) and written back in their key=value form. Parsers throw a
 * plain `Error` with the reason, and report settings xenode has no field for through
 * `warn`.
 */
import type { DiskConfig, NicConfig, PciConfig } from './domain-config.js';
import { formatBdf, parseBdf } from './syntax.js';

type Warn = (message: string) => void;

const FORMATS = ['raw', 'qcow', 'qcow2', 'vhd', 'qed'] as const;
/** Deprecated target prefixes: formats, block scripts, and prefixes xl strips and ignores. */
const PREFIX_FORMATS: Record<string, DiskConfig['format']> = { raw: 'raw', qcow: 'qcow', qcow2: 'qcow2', vhd: 'vhd', qed: 'qed' };
const PREFIX_SCRIPTS = new Set(['iscsi', 'nbd', 'enbd', 'drbd']);
const PREFIX_IGNORED = new Set(['tapdisk', 'tap2', 'aio', 'ioemu', 'file', 'phy', 'tap']);
const IGNORED_DISK_FLAGS = new Set(['direct-io-safe', 'discard', 'no-discard', 'trusted', 'untrusted', 'colo']);
const IGNORED_DISK_KEYS = new Set(['specification', 'colo-host', 'colo-port', 'colo-export', 'active-disk', 'hidden-disk']);

function access(value: string): 'rw' | 'ro' {
  if (value === 'r' || value === 'ro') return 'ro';
  if (value === 'w' || value === 'rw') return 'rw';
  throw new Error(`access must be r, ro, w or rw, got "${value}"`);
}

/** Strips deprecated `prefix:` parts off a target, applying what they mean. */
function stripPrefixes(target: string, disk: Partial<DiskConfig>): string {
  for (;;) {
    const m = /^([a-z0-9]+):/.exec(target);
    if (!m) return target;
    const p = m[1] as string;
    if (p in PREFIX_FORMATS) disk.format = PREFIX_FORMATS[p];
    else if (PREFIX_SCRIPTS.has(p)) disk.script = `block-${p}`;
    else if (!PREFIX_IGNORED.has(p)) throw new Error(`unknown deprecated disk prefix "${p}:"`);
    target = target.slice(m[0].length);
  }
}

/** Reads one DISKSPEC (`/img,qcow2,xvda,rw`, `format=raw, vdev=hda, target=/dev/vg/x`, `phy:/dev/x,xvda,w`). */
export function parseDiskSpec(spec: string, warn: Warn): DiskConfig {
  const disk: Partial<DiskConfig> & { access?: 'rw' | 'ro' } = {};
  const given = new Set<string>();
  let positional = ['target', 'format', 'vdev', 'access'];
  const set = (key: string, value: string) => {
    if (given.has(key)) throw new Error(`${key} given twice`);
    given.add(key);
    if (value === '') return; // an empty value means the default
    switch (key) {
      case 'target':
        disk.target = value;
        break;
      case 'format':
        if (!(FORMATS as readonly string[]).includes(value)) throw new Error(`unknown format "${value}" (raw, qcow, qcow2, vhd or qed)`);
        disk.format = value as DiskConfig['format'];
        break;
      case 'vdev':
        disk.vdev = value;
        break;
      case 'access':
        disk.access = access(value);
        break;
      case 'devtype':
        if (value !== 'cdrom') throw new Error(`devtype must be cdrom, got "${value}"`);
        disk.devtype = 'cdrom';
        break;
      case 'backend':
        disk.backendDomain = value;
        break;
      case 'backendtype':
        if (!['phy', 'qdisk', 'tap', 'standalone'].includes(value)) throw new Error(`unknown backendtype "${value}" (phy, qdisk, standalone)`);
        disk.backendType = value as DiskConfig['backendType'];
        break;
      case 'script':
        disk.script = value;
        break;
      default:
        if (IGNORED_DISK_KEYS.has(key)) warn(`disk "${spec}": ${key}= is not supported by xenode and is ignored`);
        else throw new Error(`unknown disk parameter "${key}"`);
    }
  };

  let rest = spec;
  while (rest !== undefined) {
    const comma = rest.indexOf(',');
    let part = (comma < 0 ? rest : rest.slice(0, comma)).replace(/^\s+/, '');
    let after: string | undefined = comma < 0 ? undefined : rest.slice(comma + 1);
    if (part.startsWith('target=')) {
      // target= takes the rest of the spec, commas and all.
      part = rest.replace(/^\s+/, '');
      after = undefined;
      given.delete('target');
      set('target', part.slice('target='.length));
    } else if (part.includes('=')) {
      const eq = part.indexOf('=');
      set(part.slice(0, eq), part.slice(eq + 1));
    } else if (part === 'cdrom') {
      set('devtype', 'cdrom');
    } else if (IGNORED_DISK_FLAGS.has(part)) {
      warn(`disk "${spec}": ${part} is not supported by xenode and is ignored`);
    } else {
      const key = positional.find((k) => !given.has(k));
      if (key === undefined) throw new Error(`too many positional parameters at "${part}"`);
      if (key === 'target' && /^[a-z0-9]+:/.test(part)) {
        part = stripPrefixes(part, disk);
        positional = ['target', 'vdev', 'access']; // the deprecated form has no format field
      } else if (key === 'target' && part === '' && after !== undefined && /^\s*[a-z0-9]+:/.test(after)) {
        positional = ['target', 'vdev', 'access']; // ",hdc:cdrom,r": an empty drive, deprecated form
      }
      if (key === 'vdev') {
        const m = /^([^:]*):(cdrom|disk)$/.exec(part);
        if (m) {
          if (m[2] === 'cdrom') set('devtype', 'cdrom');
          part = m[1] as string;
        }
      }
      set(key, part);
    }
    rest = after as string;
  }
  if (disk.vdev === undefined) throw new Error(`no vdev specified in "${spec}"`);
  if (disk.target === undefined && disk.devtype !== 'cdrom') throw new Error(`no target specified in "${spec}"`);
  const out: DiskConfig = { target: disk.target ?? '', vdev: disk.vdev };
  if (disk.format !== undefined && disk.format !== 'raw') out.format = disk.format;
  if (disk.access === 'ro' && disk.devtype !== 'cdrom') out.access = 'ro';
  if (disk.devtype === 'cdrom') out.devtype = 'cdrom';
  if (disk.backendType !== undefined) out.backendType = disk.backendType;
  if (disk.backendDomain !== undefined) out.backendDomain = disk.backendDomain;
  if (disk.script !== undefined) out.script = disk.script;
  return out;
}

function plain(what: string, value: string): string {
  if (/[,=]/.test(value) || value !== value.trim()) throw new Error(`${what} "${value}" cannot be written in a spec string (it holds a comma, = or surrounding space)`);
  return value;
}

/** Writes a disk as a key=value DISKSPEC, target last (so it may hold commas). */
export function formatDiskSpec(d: DiskConfig): string {
  const parts = [`format=${d.format ?? 'raw'}`, `vdev=${plain('vdev', d.vdev)}`, `access=${d.devtype === 'cdrom' ? 'ro' : (d.access ?? 'rw')}`];
  if (d.devtype === 'cdrom') parts.push('devtype=cdrom');
  if (d.backendType !== undefined) parts.push(`backendtype=${d.backendType}`);
  if (d.backendDomain !== undefined) parts.push(`backend=${plain('backend', d.backendDomain)}`);
  if (d.script !== undefined) parts.push(`script=${plain('script', d.script)}`);
  parts.push(`target=${d.target}`);
  return parts.join(', ');
}

/** Reads one NET_SPEC_STRING (`mac=00:16:3e:00:00:01,bridge=xenbr0,rate=10Mb/s`). */
export function parseVifSpec(spec: string, warn: Warn): NicConfig {
  const nic: NicConfig = {};
  for (const raw of spec.split(',')) {
    const part = raw.trim();
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq < 0) throw new Error(`"${part}" is not KEY=VALUE`);
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    switch (key) {
      case 'mac': nic.mac = value; break;
      case 'bridge': nic.bridge = value; break;
      case 'model': nic.model = value; break;
      case 'ip': nic.ip = value; break;
      case 'script': nic.script = value; break;
      case 'vifname': nic.vifname = value; break;
      case 'backend': nic.backendDomain = value; break;
      case 'rate': nic.rate = value; break;
      case 'type':
        if (value !== 'vif' && value !== 'ioemu') throw new Error(`type must be vif or ioemu, got "${value}"`);
        nic.type = value;
        break;
      case 'mtu':
        if (!/^\d+$/.test(value)) throw new Error(`mtu must be a number, got "${value}"`);
        nic.mtu = Number(value);
        break;
      case 'gatewaydev':
      case 'devid':
      case 'accel':
      case 'trusted':
      case 'untrusted':
        warn(`vif "${spec}": ${key} is not supported by xenode and is ignored`);
        break;
      default:
        warn(`vif "${spec}": unknown option ${key} ignored (as xl does)`);
    }
  }
  return nic;
}

/** Writes a NIC as a NET_SPEC_STRING. `queues` has no xl key and is left out. */
export function formatVifSpec(n: NicConfig): string {
  const parts: string[] = [];
  const add = (key: string, value: string | number | undefined) => {
    if (value !== undefined) parts.push(`${key}=${plain(key, String(value))}`);
  };
  add('mac', n.mac);
  add('bridge', n.bridge);
  add('type', n.type);
  add('model', n.model);
  add('vifname', n.vifname);
  add('script', n.script);
  add('ip', n.ip);
  add('backend', n.backendDomain);
  add('rate', n.rate);
  add('mtu', n.mtu);
  return parts.join(',');
}

const bool = (key: string, v: string) => {
  if (!/^-?\d+$/.test(v)) throw new Error(`${key} must be 0 or 1, got "${v}"`);
  return Number(v) !== 0;
};

/** Defaults the xl.cfg `pci_permissive`, `pci_msitranslate`, … keys set for every device. */
export type PciDefaults = Pick<PciConfig, 'permissive' | 'msitranslate' | 'seize' | 'powerMgmt'>;

/** Reads one PCI_SPEC_STRING (`0000:03:00.1@8,permissive=1`, `bdf=03:00.0,vslot=8`). */
export function parsePciSpec(spec: string, defaults: PciDefaults): PciConfig {
  const parts = spec.split(',').map((p) => p.trim());
  let bdf: string | undefined;
  let vslot: string | undefined;
  const pci: Partial<PciConfig> = { ...defaults };
  parts.forEach((part, i) => {
    if (part === '') return;
    const eq = part.indexOf('=');
    if (eq < 0) {
      if (i !== 0) throw new Error(`"${part}" is not KEY=VALUE`);
      [bdf, vslot] = part.split('@') as [string, string | undefined];
      return;
    }
    const key = part.slice(0, eq);
    const value = part.slice(eq + 1);
    switch (key) {
      case 'bdf': if (bdf !== undefined) throw new Error('bdf given twice'); bdf = value; break;
      case 'vslot': if (vslot !== undefined) throw new Error('vslot given twice'); vslot = value; break;
      case 'permissive': pci.permissive = bool(key, value); break;
      case 'msitranslate': pci.msitranslate = bool(key, value); break;
      case 'seize': pci.seize = bool(key, value); break;
      case 'power_mgmt': pci.powerMgmt = bool(key, value); break;
      case 'rdm_policy':
        if (value !== 'strict' && value !== 'relaxed') throw new Error(`rdm_policy must be strict or relaxed, got "${value}"`);
        pci.rdmPolicy = value;
        break;
      case 'name': throw new Error('name= (a named assignable device) is not supported by xenode; give the BDF');
      default: throw new Error(`unknown PCI option "${key}"`);
    }
  });
  if (bdf === undefined) throw new Error(`no BDF in "${spec}"`);
  const out: PciConfig = { bdf: formatBdf(parseBdf(bdf)) };
  if (vslot !== undefined && vslot !== '') {
    if (!/^(0x)?[0-9a-fA-F]{1,2}$/.test(vslot) || parseInt(vslot, 16) > 0x1f) throw new Error(`vslot "${vslot}" is not a hexadecimal slot number from 0 to 1f`);
    out.vslot = parseInt(vslot, 16);
  }
  for (const key of ['permissive', 'msitranslate', 'seize', 'powerMgmt'] as const) if (pci[key]) out[key] = true;
  if (pci.rdmPolicy !== undefined) out.rdmPolicy = pci.rdmPolicy;
  return out;
}

/** Writes a PCI device as a PCI_SPEC_STRING. */
export function formatPciSpec(p: PciConfig): string {
  const parts = [formatBdf(parseBdf(p.bdf))];
  if (p.vslot !== undefined) parts[0] += `@${p.vslot.toString(16)}`;
  if (p.permissive) parts.push('permissive=1');
  if (p.msitranslate) parts.push('msitranslate=1');
  if (p.seize) parts.push('seize=1');
  if (p.powerMgmt) parts.push('power_mgmt=1');
  if (p.rdmPolicy !== undefined) parts.push(`rdm_policy=${p.rdmPolicy}`);
  return parts.join(',');
}

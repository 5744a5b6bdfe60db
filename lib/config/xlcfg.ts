/**
 * Reads xl.cfg(5) files into a {@link DomainConfig}: `KEY = VALUE` lines with strings,
 * numbers and `[ … ]` lists (which may span lines), `#` comments. Covers the common keys:
 * name, type/builder, uuid, memory, maxmem, vcpus, maxvcpus, cpus, kernel, ramdisk,
 * extra/cmdline, root, bootloader, disk (xl-disk-configuration(5)), vif
 * (xl-network-configuration(5)), pci, on_*. Errors are `SyntaxError`s naming the file,
 * line, key and reason; the result is checked by {@link validateDomainConfig}.
 */
import type { DiskConfig, DomainConfig, NicConfig, PciConfig } from './domain-config.js';
import { validateDomainConfig } from './validate.js';

type Value = string | number | Value[];

interface Setting {
  key: string;
  value: Value;
  line: number;
}

class Reader {
  pos = 0;
  line = 1;
  constructor(
    readonly text: string,
    readonly where: string,
  ) {}

  error(why: string, line = this.line, key?: string): SyntaxError {
    return new SyntaxError(`${this.where}:${line}: ${key ? `${key}: ` : ''}${why}`);
  }

  peek(): string {
    return this.text[this.pos] ?? '';
  }

  /** Skips blanks and comments; with `newlines`, line ends too. */
  skip(newlines: boolean): void {
    for (;;) {
      const ch = this.peek();
      if (ch === ' ' || ch === '\t' || ch === '\r') this.pos++;
      else if (ch === '#') while (this.pos < this.text.length && this.peek() !== '\n') this.pos++;
      else if (newlines && ch === '\n') {
        this.pos++;
        this.line++;
      } else return;
    }
  }

  value(key: string): Value {
    this.skip(false);
    const ch = this.peek();
    if (ch === '"' || ch === "'") {
      const end = this.text.indexOf(ch, this.pos + 1);
      const nl = this.text.indexOf('\n', this.pos + 1);
      if (end === -1 || (nl !== -1 && nl < end)) throw this.error('unterminated string', this.line, key);
      const s = this.text.slice(this.pos + 1, end);
      this.pos = end + 1;
      return s;
    }
    if (ch === '[') {
      this.pos++;
      const items: Value[] = [];
      for (;;) {
        this.skip(true);
        if (this.peek() === ']') {
          this.pos++;
          return items;
        }
        if (this.pos >= this.text.length) throw this.error("list not closed with ']'", this.line, key);
        items.push(this.value(key));
        this.skip(true);
        if (this.peek() === ',') this.pos++;
        else if (this.peek() !== ']') throw this.error(`expected ',' or ']' in the list, got '${this.peek()}'`, this.line, key);
      }
    }
    const m = /^(0x[0-9a-f]+|-?\d+(\.\d+)?)/i.exec(this.text.slice(this.pos));
    if (m) {
      this.pos += m[0].length;
      return Number(m[0]);
    }
    throw this.error(`expected a string, a number or a list, got '${this.text.slice(this.pos).split('\n')[0]}'`, this.line, key);
  }

  settings(): Setting[] {
    const out: Setting[] = [];
    for (;;) {
      this.skip(true);
      if (this.pos >= this.text.length) return out;
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(this.text.slice(this.pos));
      if (!m) throw this.error(`expected KEY = VALUE, got '${this.text.slice(this.pos).split('\n')[0]}'`);
      const key = m[0];
      const line = this.line;
      this.pos += key.length;
      this.skip(false);
      if (this.peek() !== '=') throw this.error(`expected '=' after the key`, line, key);
      this.pos++;
      const value = this.value(key);
      this.skip(false);
      out.push({ key, value, line });
      // Settings may share a line when separated by ';'.
      if (this.peek() === ';') {
        this.pos++;
        continue;
      }
      if (this.pos < this.text.length && this.peek() !== '\n') throw this.error(`unexpected '${this.peek()}' after the value`, this.line, key);
    }
  }
}

/** `k=v, k=v` and bare positional items of a device spec string. */
function specItems(spec: string): { positional: string[]; named: Map<string, string> } {
  const positional: string[] = [];
  const named = new Map<string, string>();
  for (const raw of spec.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    const eq = item.indexOf('=');
    if (eq === -1) positional.push(item);
    else named.set(item.slice(0, eq).trim(), item.slice(eq + 1).trim());
  }
  return { positional, named };
}

function parseDisk(spec: string, fail: (why: string) => never): DiskConfig {
  const { positional, named } = specItems(spec);
  // Legacy positional form: [format:]target, vdev, access[, devtype]
  let [target, vdev, access, devtype] = [named.get('target'), named.get('vdev'), named.get('access'), named.get('devtype')];
  let format = named.get('format');
  const pos = [...positional];
  if (target === undefined && pos.length > 0) {
    let t = pos.shift() as string;
    const pre = /^(phy|file|tap|tap2|aio|raw|qcow2?|vhd|qed):(.*)$/.exec(t);
    if (pre) {
      if (['raw', 'qcow', 'qcow2', 'vhd', 'qed'].includes(pre[1] as string)) format ??= pre[1];
      t = pre[2] as string;
      if (pre[1] === 'tap' || pre[1] === 'tap2') {
        const inner = /^(aio|vhd|qcow2?|raw):(.*)$/.exec(t);
        if (inner) {
          if (inner[1] !== 'aio') format ??= inner[1];
          t = inner[2] as string;
        }
      }
    }
    target = t;
  }
  vdev ??= pos.shift();
  if (access === undefined && pos.length > 0) access = pos.shift();
  if (vdev?.includes(':')) {
    const [v, kind] = vdev.split(':');
    vdev = v;
    if (kind === 'cdrom') devtype = 'cdrom';
  }
  if (vdev === undefined) fail('no vdev (the device name the guest sees, e.g. xvda)');
  if (target === undefined) fail('no target');
  const disk: DiskConfig = { target, vdev };
  if (format !== undefined) {
    if (!['raw', 'qcow', 'qcow2', 'vhd', 'qed'].includes(format)) fail(`unknown format '${format}'`);
    disk.format = format as DiskConfig['format'];
  }
  if (access !== undefined) {
    const a = { r: 'ro', ro: 'ro', w: 'rw', rw: 'rw' }[access];
    if (a === undefined) fail(`access must be r, ro, w or rw, got '${access}'`);
    disk.access = a as DiskConfig['access'];
  }
  if (devtype !== undefined) {
    if (devtype !== 'cdrom' && devtype !== 'disk') fail(`devtype must be disk or cdrom, got '${devtype}'`);
    disk.devtype = devtype;
  }
  const backendtype = named.get('backendtype');
  if (backendtype !== undefined) disk.backendType = backendtype as DiskConfig['backendType'];
  const script = named.get('script');
  if (script !== undefined) disk.script = script;
  return disk;
}

function parseVif(spec: string, fail: (why: string) => never): NicConfig {
  const { positional, named } = specItems(spec);
  if (positional.length > 0) fail(`expected KEY=VALUE items, got '${positional[0]}'`);
  const nic: NicConfig = {};
  for (const [k, v] of named) {
    if (k === 'mac' || k === 'bridge' || k === 'model' || k === 'ip' || k === 'script' || k === 'vifname' || k === 'rate') nic[k] = v;
    else if (k === 'backend') nic.backendDomain = v;
    else if (k === 'queues') {
      if (!/^\d+$/.test(v) || Number(v) < 1) fail(`queues must be a positive integer, got '${v}'`);
      nic.queues = Number(v);
    } else if (k !== 'type' && k !== 'gatewaydev' && k !== 'mtu') fail(`unknown key '${k}'`);
  }
  return nic;
}

function parsePci(spec: string, fail: (why: string) => never): PciConfig {
  const [head = '', ...rest] = spec.split(',').map((s) => s.trim());
  const [bdf = '', vslot] = head.split('@');
  if (!/^(?:[0-9a-f]{1,4}:)?[0-9a-f]{1,2}:[0-1]?[0-9a-f]\.[0-7]$/i.test(bdf)) fail(`'${bdf}' is not a PCI address ([DDDD:]BB:DD.F)`);
  const pci: PciConfig = { bdf };
  if (vslot !== undefined) pci.vslot = Number.parseInt(vslot, 16);
  for (const item of rest) {
    const [k, v] = item.split('=').map((s) => s.trim());
    const on = v === '1';
    if (k === 'permissive') pci.permissive = on;
    else if (k === 'seize') pci.seize = on;
    else if (k === 'msitranslate') pci.msitranslate = on;
    else if (k === 'power_mgmt') pci.powerMgmt = on;
    else if (k !== 'rdm_policy') fail(`unknown option '${k}'`);
  }
  return pci;
}

const ACTION_KEYS: Record<string, keyof DomainConfig> = {
  on_poweroff: 'onPoweroff',
  on_reboot: 'onReboot',
  on_crash: 'onCrash',
  on_watchdog: 'onWatchdog',
  on_soft_reset: 'onSoftReset',
};

/**
 * Parses the text of an xl.cfg file.
 *
 * @example
 * ```ts
 * import { parseXlConfig } from 'xenode';
 * const cfg = parseXlConfig(`
 * name = "web1"
 * type = "pvh"
 * kernel = "/boot/vmlinuz"
 * memory = 512
 * vcpus = 2
 * disk = [ 'format=raw, vdev=xvda, access=rw, target=/srv/web1.img' ]
 * vif = [ 'mac=00:16:3e:00:00:01, bridge=xenbr0' ]
 * `);
 * console.log(cfg.name, cfg.memory, cfg.disks?.[0]?.vdev);   // web1 512 xvda
 * ```
 */
export function parseXlConfig(text: string, options: { filename?: string } = {}): DomainConfig {
  if (typeof text !== 'string') throw new TypeError('parseXlConfig: text must be a string');
  const reader = new Reader(text, options.filename ?? 'xl.cfg');
  const config: Record<string, unknown> = {};
  let root: string | undefined;
  let extra: string | undefined;
  for (const { key, value, line } of reader.settings()) {
    const fail = (why: string): never => {
      throw reader.error(why, line, key);
    };
    const asString = (): string => (typeof value === 'string' ? value : fail(`expected a string, got ${JSON.stringify(value)}`));
    const asNumber = (): number => {
      const n = typeof value === 'number' ? value : typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : NaN;
      if (!Number.isInteger(n) || n < 0) fail(`expected a non-negative integer, got ${JSON.stringify(value)}`);
      return n;
    };
    const asList = (): string[] => {
      const items = Array.isArray(value) ? value : typeof value === 'string' ? [value] : fail(`expected a list of strings, got ${JSON.stringify(value)}`);
      return items.map((v, i) => (typeof v === 'string' ? v : fail(`item ${i + 1} must be a string`)));
    };
    switch (key) {
      case 'name':
      case 'uuid':
      case 'kernel':
      case 'ramdisk':
      case 'bootloader':
        config[key] = asString();
        break;
      case 'type':
      case 'builder': {
        const t = asString();
        const type = key === 'builder' ? (t === 'hvm' ? 'hvm' : t === 'generic' || t === 'linux' ? 'pv' : undefined) : t;
        if (type !== 'pv' && type !== 'pvh' && type !== 'hvm') fail(`must be pv, pvh or hvm, got '${t}'`);
        config.type = type;
        break;
      }
      case 'memory':
        config.memory = asNumber();
        break;
      case 'maxmem':
        config.maxMemory = asNumber();
        break;
      case 'vcpus':
        config.vcpus = asNumber();
        break;
      case 'maxvcpus':
        config.maxVcpus = asNumber();
        break;
      case 'cpus':
        config.cpus = typeof value === 'number' ? String(value) : asString();
        break;
      case 'extra':
      case 'cmdline':
        extra = asString();
        break;
      case 'root':
        root = asString();
        break;
      case 'disk':
        config.disks = asList().map((s, i) => parseDisk(s, (why) => fail(`item ${i + 1}: ${why}`)));
        break;
      case 'vif':
        config.nics = asList().map((s, i) => parseVif(s, (why) => fail(`item ${i + 1}: ${why}`)));
        break;
      case 'pci':
        config.pcis = asList().map((s, i) => parsePci(s, (why) => fail(`item ${i + 1}: ${why}`)));
        break;
      default: {
        const action = ACTION_KEYS[key];
        if (action !== undefined) config[action] = asString();
        // Other xl.cfg keys are accepted and ignored, as xl ignores keys it does not know.
      }
    }
  }
  config.type ??= 'pv';
  if (root !== undefined || extra !== undefined) config.cmdline = [root === undefined ? undefined : `root=${root}`, extra].filter(Boolean).join(' ');
  try {
    return validateDomainConfig(config);
  } catch (err) {
    const message = (err as Error).message.replace(/^domain config: /, '');
    const field = /^(\w+)/.exec(message)?.[1];
    const xlKey = { maxMemory: 'maxmem', maxVcpus: 'maxvcpus', disks: 'disk', nics: 'vif', pcis: 'pci', cmdline: 'extra' }[field ?? ''] ?? field;
    throw new SyntaxError(`${reader.where}: ${xlKey === field ? message : `${xlKey} (${message})`}`);
  }
}

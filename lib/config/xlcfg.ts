import { XenError } from '../errors.js';
import type { DomainAction, DomainConfig, DomainType, Passthrough } from './domain-config.js';
import { formatDiskSpec, formatPciSpec, formatVifSpec, parseDiskSpec, parsePciSpec, parseVifSpec, type PciDefaults } from './xlcfg-devices.js';
import { parseXlSyntax, quoteXl, XlSyntaxFault, type XlSetting, type XlValue } from './xlcfg-syntax.js';
import { configError, validateDomainConfig } from './validate.js';

/** Options of {@link parseXlConfig} and {@link readXlConfig}. */
export interface ParseXlConfigOptions {
  /** The file's name, used in error messages and as the error's `path`; `xl.cfg` when absent. */
  filename?: string;
}

/** A setting xenode read but does not apply: an unknown key, or a known one it has no field for. */
export interface XlConfigWarning {
  line: number;
  key: string;
  message: string;
}

/** What {@link readXlConfig} returns. */
export interface XlConfigResult {
  config: DomainConfig;
  warnings: XlConfigWarning[];
}

const ACTIONS: readonly DomainAction[] = ['destroy', 'restart', 'rename-restart', 'preserve', 'coredump-destroy', 'coredump-restart', 'soft-reset'];
const ACTION_KEYS = { on_poweroff: 'onPoweroff', on_reboot: 'onReboot', on_crash: 'onCrash', on_watchdog: 'onWatchdog', on_soft_reset: 'onSoftReset' } as const;
/** DomainConfig field → the xl.cfg key that sets it, for errors found after reading. */
const FIELD_KEYS: Record<string, string> = {
  name: 'name', type: 'type', uuid: 'uuid', memory: 'memory', maxMemory: 'maxmem', vcpus: 'vcpus', maxVcpus: 'maxvcpus',
  cpus: 'cpus', vcpuAffinity: 'cpus', kernel: 'kernel', ramdisk: 'ramdisk', cmdline: 'cmdline', bootloader: 'bootloader',
  disks: 'disk', nics: 'vif', pcis: 'pci', passthrough: 'passthrough', onPoweroff: 'on_poweroff', onReboot: 'on_reboot', onCrash: 'on_crash', onWatchdog: 'on_watchdog', onSoftReset: 'on_soft_reset',
};
/** Keys xl knows that xenode reads without a DomainConfig field: they are reported, not applied. */
const HANDLED = new Set(['name', 'type', 'builder', 'memory', 'maxmem', 'vcpus', 'maxvcpus', 'cpus', 'kernel', 'ramdisk', 'extra', 'cmdline', 'root', 'bootloader', 'disk', 'vif', 'pci', 'passthrough', 'uuid', 'pci_permissive', 'pci_msitranslate', 'pci_seize', 'pci_power_mgmt', ...Object.keys(ACTION_KEYS)]);

class Reader {
  readonly warnings: XlConfigWarning[] = [];
  private readonly file: string;

  constructor(
    private readonly settings: Map<string, XlSetting>,
    options: ParseXlConfigOptions,
  ) {
    this.file = options.filename ?? 'xl.cfg';
  }

  fail(line: number | undefined, key: string, reason: string): XenError {
    const where = line === undefined ? this.file : `${this.file} line ${line}`;
    return configError(key, reason, { prefix: where, line, path: this.file });
  }

  get(key: string): XlSetting | undefined {
    return this.settings.get(key);
  }

  string(key: string): string | undefined {
    const s = this.get(key);
    if (!s) return undefined;
    if (s.value.kind === 'list') throw this.fail(s.line, key, 'expected a string, got a list');
    return s.value.text;
  }

  /** A number as xl's xlu_cfg_get_long reads it (decimal, 0octal, 0xhex; quoted or not). */
  number(key: string, what: string): number | undefined {
    const s = this.get(key);
    if (!s) return undefined;
    const text = s.value.kind === 'list' ? undefined : s.value.text.trim();
    let n = Number.NaN;
    if (text !== undefined && /^[+-]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.test(text)) {
      const neg = text.startsWith('-');
      const body = text.replace(/^[+-]/, '');
      n = (neg ? -1 : 1) * (/^0[xX]/.test(body) ? parseInt(body.slice(2), 16) : /^0[0-7]+$/.test(body) ? parseInt(body, 8) : Number(body));
    }
    if (!Number.isSafeInteger(n)) throw this.fail(s.line, key, `expected ${what}, got ${text === undefined ? 'a list' : JSON.stringify(text)}`);
    return n;
  }

  /** A list of strings (each a device spec); a single string counts as a one-item list, as in xl. */
  list(key: string): { text: string; line: number }[] | undefined {
    const s = this.get(key);
    if (!s) return undefined;
    const items: XlValue[] = s.value.kind === 'list' ? s.value.items : [s.value];
    return items.map((v, i) => {
      if (v.kind === 'list') throw this.fail(v.line, `${key}[${i}]`, 'expected a string, got a nested list');
      return { text: v.text, line: v.line };
    });
  }

  bool(key: string): boolean | undefined {
    const n = this.number(key, '0 or 1');
    return n === undefined ? undefined : n !== 0;
  }

  warn(line: number, key: string, message: string): void {
    this.warnings.push({ line, key, message });
  }
}

function domainType(r: Reader): DomainType {
  const type = r.string('type');
  if (type !== undefined) {
    if (type !== 'pv' && type !== 'pvh' && type !== 'hvm') throw r.fail(r.get('type')?.line, 'type', `expected "pv", "pvh" or "hvm", got ${JSON.stringify(type)}`);
    return type;
  }
  const builder = r.string('builder');
  if (builder === undefined || builder === 'generic') return 'pv';
  if (builder === 'hvm') return 'hvm';
  throw r.fail(r.get('builder')?.line, 'builder', `expected "generic" or "hvm", got ${JSON.stringify(builder)}`);
}

/** xl's rule: `cmdline` wins; otherwise `root=ROOT` and `extra` joined by a space. */
function cmdline(r: Reader): string | undefined {
  const cmd = r.string('cmdline');
  const root = r.string('root');
  const extra = r.string('extra');
  if (cmd !== undefined) {
    for (const k of ['root', 'extra']) if (r.get(k)) r.warn((r.get(k) as XlSetting).line, k, `${k} is ignored because cmdline is set (as xl does)`);
    return cmd;
  }
  if (root === undefined && extra === undefined) return undefined;
  return [root === undefined ? undefined : `root=${root}`, extra].filter((s) => s !== undefined).join(' ');
}

function devices(r: Reader, config: DomainConfig): void {
  const guard = <T>(key: string, line: number, i: number, fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      if (err instanceof XenError) throw err;
      throw r.fail(line, `${key}[${i}]`, (err as Error).message);
    }
  };
  const disks = r.list('disk');
  if (disks) config.disks = disks.map((d, i) => guard('disk', d.line, i, () => parseDiskSpec(d.text, (m) => r.warn(d.line, 'disk', m))));
  const vifs = r.list('vif');
  if (vifs) config.nics = vifs.map((v, i) => guard('vif', v.line, i, () => parseVifSpec(v.text, (m) => r.warn(v.line, 'vif', m))));
  const defaults: PciDefaults = {};
  for (const [key, field] of [['pci_permissive', 'permissive'], ['pci_msitranslate', 'msitranslate'], ['pci_seize', 'seize'], ['pci_power_mgmt', 'powerMgmt']] as const) {
    const b = r.bool(key);
    if (b !== undefined) defaults[field] = b;
  }
  const pcis = r.list('pci');
  if (pcis) config.pcis = pcis.map((p, i) => guard('pci', p.line, i, () => parsePciSpec(p.text, defaults)));
}

function build(r: Reader): DomainConfig {
  const name = r.string('name');
  if (name === undefined) throw r.fail(undefined, 'name', 'missing: name is mandatory');
  const memory = r.number('memory', 'a number of MiB');
  if (memory === undefined) throw r.fail(undefined, 'memory', 'missing: give the memory in MiB');
  const config: DomainConfig = { name, type: domainType(r), memory, vcpus: r.number('vcpus', 'a number of vCPUs') ?? 1 };
  const uuid = r.string('uuid');
  if (uuid !== undefined) config.uuid = uuid;
  const maxmem = r.number('maxmem', 'a number of MiB');
  if (maxmem !== undefined) config.maxMemory = maxmem;
  const maxvcpus = r.number('maxvcpus', 'a number of vCPUs');
  if (maxvcpus !== undefined) config.maxVcpus = maxvcpus;
  const cpus = r.get('cpus');
  if (cpus?.value.kind === 'list') config.vcpuAffinity = (r.list('cpus') ?? []).map((c) => c.text);
  else if (cpus) config.cpus = cpus.value.text;
  for (const key of ['kernel', 'ramdisk', 'bootloader'] as const) {
    const v = r.string(key);
    if (v !== undefined) config[key] = v;
  }
  const cmd = cmdline(r);
  if (cmd !== undefined) config.cmdline = cmd;
  devices(r, config);
  // checked with the rest of the config (validateDomainConfig), at its line
  const passthrough = r.string('passthrough');
  if (passthrough !== undefined) config.passthrough = passthrough as Passthrough;
  for (const [key, field] of Object.entries(ACTION_KEYS)) {
    const action = r.string(key);
    if (action === undefined) continue;
    if (!(ACTIONS as readonly string[]).includes(action)) throw r.fail(r.get(key)?.line, key, `expected one of ${ACTIONS.join(', ')}, got ${JSON.stringify(action)}`);
    config[field] = action as DomainAction;
  }
  return config;
}

/** Re-raises a validation fault with the xl.cfg line and key that set the field. */
function locate(r: Reader, err: XenError): XenError {
  const field = err.field ?? '';
  const m = /^(\w+)(?:\[(\d+)\])?/.exec(field);
  const top = m?.[1] ?? field;
  const key = FIELD_KEYS[top] ?? top;
  const setting = r.get(key) ?? (top === 'type' ? r.get('builder') : undefined);
  let line = setting?.line;
  if (setting?.value.kind === 'list' && m?.[2] !== undefined) line = setting.value.items[Number(m[2])]?.line ?? line;
  const reason = err.message.replace(/^[^:]*: [^:]*: /, '');
  const sub = field.slice(top.length);
  return r.fail(line, `${key}${sub}`, reason);
}

/**
 * Reads an xl.cfg(5) file into a {@link DomainConfig}, with the warnings for settings it
 * does not apply. See {@link parseXlConfig}.
 *
 * @example
 * ```ts
 * import { readXlConfig } from 'xenode';
 * const { config, warnings } = readXlConfig('name = "vm"\nmemory = 256\nkernel = "/boot/vmlinuz"\nvfb = [ "vnc=1" ]\n');
 * console.log(config.name, warnings[0]?.message); // vm vfb is not supported by xenode and is ignored
 * ```
 */
export function readXlConfig(text: string, options: ParseXlConfigOptions = {}): XlConfigResult {
  if (typeof text !== 'string') throw new TypeError(`xl.cfg text must be a string, got ${typeof text}`);
  let settings: XlSetting[];
  const file = options.filename ?? 'xl.cfg';
  try {
    settings = parseXlSyntax(text);
  } catch (err) {
    if (!(err instanceof XlSyntaxFault)) throw err;
    throw new XenError('XEN_INVALID_CONFIG', `${file} line ${err.line}: syntax error: ${err.reason}`, { op: 'config', line: err.line, path: file, field: 'syntax' });
  }
  const r = new Reader(new Map(settings.map((s) => [s.key, s])), options);
  for (const s of settings) {
    if (!HANDLED.has(s.key)) r.warn(s.line, s.key, `${s.key} is not supported by xenode and is ignored`);
  }
  const config = build(r);
  try {
    validateDomainConfig(config);
  } catch (err) {
    if (err instanceof XenError && err.field !== undefined) throw locate(r, err);
    throw err;
  }
  r.warnings.sort((a, b) => a.line - b.line);
  return { config, warnings: r.warnings };
}

/**
 * Reads an xl.cfg(5) file — the syntax and the keys of Xen's `xl create` — into a
 * validated {@link DomainConfig}. Keys read: name, type (and the old builder), memory,
 * maxmem, vcpus, maxvcpus, cpus, kernel, ramdisk, cmdline, extra and root (folded into
 * cmdline as xl does), bootloader, uuid, disk, vif, pci (with pci_permissive & co.), passthrough,
 * on_poweroff, on_reboot, on_crash, on_watchdog, on_soft_reset. Other keys are accepted
 * and ignored, like xl ignores keys it does not know; {@link readXlConfig} lists them.
 *
 * A fault throws a {@link XenError} with code `XEN_INVALID_CONFIG`, whose message names
 * the file, line, key and reason, and whose `line` and `field` (the xl key) say the same.
 *
 * @example
 * ```ts
 * import { parseXlConfig } from 'xenode';
 * const config = parseXlConfig(`
 *   name = "web1"
 *   type = "pvh"
 *   memory = 1024
 *   vcpus = 2
 *   kernel = "/boot/vmlinuz"
 *   root = "/dev/xvda1"
 *   extra = "console=hvc0"
 *   disk = [ 'phy:/dev/vg/web1,xvda,w', '/srv/iso/tools.iso,,xvdc,cdrom' ]
 *   vif = [ 'mac=00:16:3e:00:00:01,bridge=xenbr0' ]
 * `, { filename: 'web1.cfg' });
 * console.log(config.cmdline, config.disks?.[1]?.devtype); // root=/dev/xvda1 console=hvc0 cdrom
 * ```
 */
export function parseXlConfig(text: string, options: ParseXlConfigOptions = {}): DomainConfig {
  return readXlConfig(text, options).config;
}

/**
 * Writes a {@link DomainConfig} as xl.cfg(5) text that `xl create` and
 * {@link parseXlConfig} read back to the same configuration. The config is validated
 * first. `nics[].queues` has no xl key and is left out; a device value holding a comma
 * (other than a disk target) cannot be written and is a `XEN_INVALID_CONFIG`.
 *
 * @example
 * ```ts
 * import { formatXlConfig } from 'xenode';
 * console.log(formatXlConfig({ name: 'db', type: 'hvm', memory: 2048, vcpus: 2, disks: [{ target: '/srv/db.img', vdev: 'hda' }] }));
 * ```
 */
export function formatXlConfig(config: DomainConfig): string {
  validateDomainConfig(config);
  const lines: string[] = [];
  const put = (key: string, value: string | number | undefined) => {
    if (value !== undefined) lines.push(`${key} = ${typeof value === 'number' ? value : quoteXl(value)}`);
  };
  const putList = (key: string, items: string[]) => {
    lines.push(`${key} = [`, ...items.map((i) => `    ${quoteXl(i)},`), ']');
  };
  put('name', config.name);
  put('type', config.type);
  put('uuid', config.uuid);
  put('memory', config.memory);
  put('maxmem', config.maxMemory);
  put('vcpus', config.vcpus);
  put('maxvcpus', config.maxVcpus);
  if (config.cpus !== undefined) put('cpus', typeof config.cpus === 'string' ? config.cpus : config.cpus.join(','));
  if (config.vcpuAffinity !== undefined) putList('cpus', config.vcpuAffinity);
  put('kernel', config.kernel);
  put('ramdisk', config.ramdisk);
  put('cmdline', config.cmdline);
  put('bootloader', config.bootloader);
  const device = <T>(key: string, field: string, items: T[] | undefined, fmt: (x: T) => string) => {
    if (!items?.length) return;
    putList(key, items.map((x, i) => {
      try {
        return fmt(x);
      } catch (err) {
        throw configError(`${field}[${i}]`, (err as Error).message);
      }
    }));
  };
  device('disk', 'disks', config.disks, formatDiskSpec);
  device('vif', 'nics', config.nics, formatVifSpec);
  device('pci', 'pcis', config.pcis, formatPciSpec);
  put('passthrough', config.passthrough);
  for (const [key, field] of Object.entries(ACTION_KEYS)) put(key, config[field]);
  return `${lines.join('\n')}\n`;
}

/**
 * The small value syntaxes xl uses inside a domain configuration — CPU lists, virtual disk
 * names, MAC addresses, PCI addresses, rate limits, UUIDs — read and written the way xl
 * and libxlutil do. Parsers throw a plain `Error` whose message is the reason; callers
 * turn it into an `XEN_INVALID_CONFIG` naming the field.
 */

/** `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hex, as libxl_uuid_from_string reads it. */
export const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** `xx:xx:xx:xx:xx:xx` in hex (libxl also takes one-digit octets, xenode asks for two). */
export const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

/**
 * Reads an xl CPU list ("0-3,5,^1") into the sorted set of CPU numbers. `all` alone is
 * "no restriction" and gives `undefined`. NUMA selectors (`node:`/`nodes:`) and `all`
 * combined with exclusions need the host's topology, which a configuration does not
 * have: they are refused with a reason.
 */
export function parseCpuList(text: string): number[] | undefined {
  const parts = text.split(',').map((p) => p.trim());
  if (parts.length === 1 && parts[0] === 'all') return undefined;
  const set = new Set<number>();
  const excluded = new Set<number>();
  for (const part of parts) {
    if (part === '') throw new Error(`empty element in CPU list "${text}"`);
    if (/^\^?nodes?:/.test(part)) throw new Error(`NUMA node selectors ("${part}") need the host's topology; list the CPUs instead`);
    if (part === 'all' || part === '^all') throw new Error(`"all" combined with other elements needs the host's CPU count; list the CPUs instead`);
    const m = /^(\^)?(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new Error(`"${part}" is not a CPU number, range (N-M) or exclusion (^N)`);
    const from = Number(m[2]);
    const to = m[3] === undefined ? from : Number(m[3]);
    if (to < from) throw new Error(`range "${part}" ends before it starts`);
    if (to > 65535) throw new Error(`CPU ${to} is out of range`);
    for (let c = from; c <= to; c++) (m[1] ? excluded : set).add(c);
  }
  for (const c of excluded) set.delete(c);
  if (set.size === 0) throw new Error(`CPU list "${text}" selects no CPU`);
  return [...set].sort((a, b) => a - b);
}

/** Writes a sorted CPU set as an xl CPU list with ranges: `[0,1,2,3,5]` → `"0-3,5"`. */
export function formatCpuList(cpus: readonly number[]): string {
  const sorted = [...new Set(cpus)].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === (sorted[j] as number) + 1) j++;
    out.push(j === i ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return out.join(',');
}

/**
 * The disk a vdev names, as `disk:partition`, following xen-vbd-interface(7): `xvda`,
 * `hda`, `sda` and `d0` all name disk 0, so two of them in one domain clash. Returns
 * undefined when `vdev` is not a name xl accepts.
 */
export function vdevDisk(vdev: string): string | undefined {
  let m = /^(xvd|hd|sd)([a-z]+)(\d*)$/.exec(vdev);
  if (m) {
    let disk = 0;
    for (const ch of m[2] as string) disk = disk * 26 + (ch.charCodeAt(0) - 96);
    disk -= 1;
    const part = m[3] === '' ? 0 : Number(m[3]);
    if (m[1] === 'hd' && disk > 3) return undefined; // IDE has four drives
    if (m[1] === 'sd' && (disk > 15 || part > 15)) return undefined;
    return `${disk}:${part}`;
  }
  m = /^d(\d+)(?:p(\d+))?$/.exec(vdev);
  if (m) return `${Number(m[1])}:${m[2] === undefined ? 0 : Number(m[2])}`;
  return undefined;
}

/** A host PCI address. `func` is `'*'` for "every function of the device". */
export interface Bdf {
  domain: number;
  bus: number;
  dev: number;
  func: number | '*';
}

/** Reads `[DDDD:]BB:DD.F` (hex; F may be `*`), as xl-pci-configuration(5) describes. */
export function parseBdf(text: string): Bdf {
  const m = /^(?:([0-9a-fA-F]{1,4}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7*])$/.exec(text);
  if (!m) throw new Error(`"${text}" is not a PCI address [DDDD:]BB:DD.F`);
  const dev = parseInt(m[3] as string, 16);
  if (dev > 0x1f) throw new Error(`device number ${m[3]} in "${text}" is above 1f`);
  return { domain: m[1] === undefined ? 0 : parseInt(m[1], 16), bus: parseInt(m[2] as string, 16), dev, func: m[4] === '*' ? '*' : Number(m[4]) };
}

const hex = (n: number, width: number) => n.toString(16).padStart(width, '0');

/** Writes a PCI address the way lspci and xl print it: `0000:03:00.1`. */
export function formatBdf(bdf: Bdf): string {
  return `${hex(bdf.domain, 4)}:${hex(bdf.bus, 2)}:${hex(bdf.dev, 2)}.${bdf.func}`;
}

/** A NIC rate limit as libxl holds it. */
export interface Rate {
  bytesPerInterval: number;
  intervalUsecs: number;
}

/** An unsigned number as C's strtoull(…, 0) reads the digits xl allows: a leading 0 means octal. */
function cNumber(digits: string, what: string): bigint {
  if (digits.length > 1 && digits.startsWith('0')) {
    if (!/^[0-7]+$/.test(digits)) throw new Error(`${what}: "${digits}" starts with 0, so it is octal, but has a digit 8 or 9`);
    return BigInt(`0o${digits.slice(1)}`);
  }
  return BigInt(digits);
}

/**
 * Reads an xl rate (`10Mb/s`, `1MB/s@20ms`) exactly as libxlutil's xlu_vif_parse_rate
 * does: numbers as C reads them (a leading 0 is octal), decimal units (K = 1000), `b` for bits, a replenishment interval in s, ms or us
 * (default 50 ms), and bytes per interval rounded down.
 */
export function parseRate(text: string): Rate {
  const [amount, interval, extra] = text.split('@');
  if (extra !== undefined) throw new Error(`rate "${text}" has more than one @`);
  const m = /^(\d+)([GMK]?)([Bb])\/s$/.exec(amount ?? '');
  if (!m) throw new Error(`rate "${text}" is not of the form N[GMK]{B,b}/s[@INTERVAL]`);
  let perSec = cNumber(m[1] as string, 'rate');
  if (perSec === 0n || perSec > 0xffffffffn) throw new Error(`rate "${text}" is zero or too large`);
  perSec *= { G: 1_000_000_000n, M: 1_000_000n, K: 1000n, '': 1n }[m[2] as 'G' | 'M' | 'K' | ''];
  if (m[3] === 'b') perSec /= 8n;
  let usecs = 50_000n;
  if (interval !== undefined) {
    const i = /^(\d+)([mu]?)s?$/.exec(interval);
    if (!i) throw new Error(`replenishment interval "${interval}" is not of the form N[s|ms|us]`);
    usecs = cNumber(i[1] as string, 'replenishment interval');
    if (usecs === 0n || usecs > 0xffffffffn) throw new Error(`replenishment interval "${interval}" is zero or too large`);
    usecs *= i[2] === 'm' ? 1000n : i[2] === 'u' ? 1n : 1_000_000n;
    if (usecs > 0xffffffffn) throw new Error(`replenishment interval "${interval}" is too large`);
  }
  return { bytesPerInterval: Number((perSec * usecs) / 1_000_000n), intervalUsecs: Number(usecs) };
}

/** Writes a rate back in xl's syntax, in bytes per second, largest exact unit first. */
export function formatRate(rate: Rate): string {
  const perSec = Math.round((rate.bytesPerInterval * 1_000_000) / rate.intervalUsecs);
  let amount = `${perSec}B/s`;
  for (const [unit, size] of [['G', 1e9], ['M', 1e6], ['K', 1e3]] as const) {
    if (perSec % size === 0 && perSec / size <= 0xffffffff) {
      amount = `${perSec / size}${unit}B/s`;
      break;
    }
  }
  if (rate.intervalUsecs === 50_000) return amount;
  const interval = rate.intervalUsecs % 1000 === 0 ? `${rate.intervalUsecs / 1000}ms` : `${rate.intervalUsecs}us`;
  return `${amount}@${interval}`;
}

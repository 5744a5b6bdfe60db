/**
 * The mock's save image. It starts like an `xl save` file (the 32-byte magic
 * `"Xen saved domain, xl format\n \0 \r"`) so tools that sniff files recognise it, then
 * carries a 4-byte little-endian length and a JSON record of what the simulated guest is:
 * its configuration, memory, vCPUs, CPU time and console log. (Real images follow with
 * libxc's migration stream; the simulated guest has no pages to stream.)
 */
import type { DomainConfig } from '../config/domain-config.js';
import { XenError } from '../errors.js';

export const XL_SAVE_MAGIC = Buffer.from('Xen saved domain, xl format\n \0 \r', 'latin1');
const KIND = 'xenode-mock-domain';
/** The largest image `decodeImage` accepts. */
export const MAX_IMAGE = 64 * 1024 * 1024;

export interface SaveImage {
  config: DomainConfig;
  memCurrent: number;
  memTarget: number;
  vcpusOnline: number;
  cpuTime: number;
  /** Console log, base64. */
  console: string;
}

export function encodeImage(image: SaveImage): Buffer {
  const json = Buffer.from(JSON.stringify({ kind: KIND, version: 1, ...image }), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(json.length);
  return Buffer.concat([XL_SAVE_MAGIC, len, json]);
}

function bad(why: string): XenError {
  return new XenError('XEN_ERROR_INVAL', `XEN_ERROR_INVAL: not a domain save image: ${why} (domain.restore)`, { op: 'domain.restore' });
}

export function decodeImage(data: Buffer): SaveImage {
  if (data.length < XL_SAVE_MAGIC.length + 4 || !data.subarray(0, XL_SAVE_MAGIC.length).equals(XL_SAVE_MAGIC)) throw bad('wrong magic');
  const len = data.readUInt32LE(XL_SAVE_MAGIC.length);
  const body = data.subarray(XL_SAVE_MAGIC.length + 4);
  if (body.length < len) throw bad(`truncated (${body.length} of ${len} bytes)`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.subarray(0, len).toString('utf8'));
  } catch {
    throw bad('its record is not JSON');
  }
  const r = parsed as Partial<SaveImage> & { kind?: unknown };
  if (r.kind !== KIND) throw bad('written by another toolstack (only images of the mock host restore on the mock host)');
  if (typeof r.config?.name !== 'string' || typeof r.memCurrent !== 'number' || typeof r.memTarget !== 'number' || typeof r.vcpusOnline !== 'number') throw bad('fields missing');
  return { config: r.config, memCurrent: r.memCurrent, memTarget: r.memTarget, vcpusOnline: r.vcpusOnline, cpuTime: r.cpuTime ?? 0, console: r.console ?? '' };
}

/**
 * The XenStore wire protocol, as `xen/io/xs_wire.h` defines it: a 16-byte header
 * (type, req_id, tx_id, len; host byte order, little-endian on every platform Xen's
 * socket interface runs) followed by at most 4096 bytes of payload, usually
 * NUL-terminated strings. One implementation, used by the client and by the mock server.
 */
import { XenError } from '../errors.js';

/** Message types of `enum xsd_sockmsg_type`. */
export const XsType = {
  CONTROL: 0,
  DIRECTORY: 1,
  READ: 2,
  GET_PERMS: 3,
  WATCH: 4,
  UNWATCH: 5,
  TRANSACTION_START: 6,
  TRANSACTION_END: 7,
  INTRODUCE: 8,
  RELEASE: 9,
  GET_DOMAIN_PATH: 10,
  WRITE: 11,
  MKDIR: 12,
  RM: 13,
  SET_PERMS: 14,
  WATCH_EVENT: 15,
  ERROR: 16,
  IS_DOMAIN_INTRODUCED: 17,
  RESUME: 18,
  SET_TARGET: 19,
  // 20 was XS_RESTRICT, removed from Xen.
  RESET_WATCHES: 21,
  DIRECTORY_PART: 22,
  TYPE_COUNT: 23,
  INVALID: 0xffff,
} as const;

export type XsTypeName = keyof typeof XsType;
export type XsTypeValue = (typeof XsType)[XsTypeName];

const typeNames: string[] = [];
for (const [name, value] of Object.entries(XsType)) if (value < XsType.TYPE_COUNT) typeNames[value] = name;

/** `XS_READ` for 2, `XS_22`-style for values the header does not name. */
export function typeName(type: number): string {
  return typeNames[type] !== undefined ? `XS_${typeNames[type]}` : `XS_${type}`;
}

/** Size of `struct xsd_sockmsg`. */
export const HEADER_SIZE = 16;
/** `XENSTORE_PAYLOAD_MAX`: a longer payload is a protocol violation. */
export const PAYLOAD_MAX = 4096;
/** `XENSTORE_ABS_PATH_MAX`: longer absolute paths are refused with EINVAL. */
export const ABS_PATH_MAX = 3072;
/** `XENSTORE_REL_PATH_MAX`: longer relative paths are refused with EINVAL. */
export const REL_PATH_MAX = 2048;

/** The errno names xenstored sends in `XS_ERROR` replies, in `xsd_errors` order. */
export const XS_ERRORS = [
  'EINVAL', 'EACCES', 'EEXIST', 'EISDIR', 'ENOENT', 'ENOMEM', 'ENOSPC', 'EIO',
  'ENOTEMPTY', 'ENOSYS', 'EROFS', 'EBUSY', 'EAGAIN', 'EISCONN', 'E2BIG', 'EPERM',
] as const;
export type XsErrorName = (typeof XS_ERRORS)[number];

const xsErrorSet = new Set<string>(XS_ERRORS);
/** True when `name` is an errno name the protocol can carry. */
export function isXsError(name: string): name is XsErrorName {
  return xsErrorSet.has(name);
}

/** One framed message. */
export interface XsMessage {
  type: number;
  reqId: number;
  txId: number;
  payload: Buffer;
}

/** Frames one message. Throws `E2BIG` when the payload exceeds {@link PAYLOAD_MAX}. */
export function encodeMessage(type: number, reqId: number, txId: number, payload: Buffer): Buffer {
  if (payload.length > PAYLOAD_MAX) {
    throw new XenError('E2BIG', `E2BIG: ${typeName(type)} payload of ${payload.length} bytes exceeds ${PAYLOAD_MAX}`, { op: typeName(type) });
  }
  const out = Buffer.allocUnsafe(HEADER_SIZE + payload.length);
  out.writeUInt32LE(type, 0);
  out.writeUInt32LE(reqId >>> 0, 4);
  out.writeUInt32LE(txId >>> 0, 8);
  out.writeUInt32LE(payload.length, 12);
  payload.copy(out, HEADER_SIZE);
  return out;
}

/**
 * Splits a byte stream into messages. Feed it chunks as they arrive; it returns the
 * complete messages each chunk finishes. A header announcing more than
 * {@link PAYLOAD_MAX} bytes throws `XEN_PROTOCOL`: the stream cannot be resynchronised,
 * so the connection must be closed.
 */
export class FrameDecoder {
  private pending: Buffer | undefined;

  /** Bytes received but not yet part of a complete message. */
  get buffered(): number {
    return this.pending?.length ?? 0;
  }

  push(chunk: Buffer): XsMessage[] {
    let buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = undefined;
    const out: XsMessage[] = [];
    let off = 0;
    while (buf.length - off >= HEADER_SIZE) {
      const len = buf.readUInt32LE(off + 12);
      if (len > PAYLOAD_MAX) {
        throw new XenError('XEN_PROTOCOL', `XenStore frame announces ${len} payload bytes, more than ${PAYLOAD_MAX}`, { op: 'xenstore.wire' });
      }
      if (buf.length - off < HEADER_SIZE + len) break;
      out.push({
        type: buf.readUInt32LE(off),
        reqId: buf.readUInt32LE(off + 4),
        txId: buf.readUInt32LE(off + 8),
        // A copy, so a message never pins a large socket chunk in memory.
        payload: Buffer.from(buf.subarray(off + HEADER_SIZE, off + HEADER_SIZE + len)),
      });
      off += HEADER_SIZE + len;
    }
    if (off < buf.length) {
      buf = buf.subarray(off);
      this.pending = Buffer.from(buf);
    }
    return out;
  }
}

const NUL = Buffer.from([0]);

/** Payload of NUL-terminated strings, e.g. `strings('/a', 'tok')` is `"/a\0tok\0"`. */
export function strings(...parts: string[]): Buffer {
  const bufs: Buffer[] = [];
  for (const p of parts) bufs.push(Buffer.from(p, 'utf8'), NUL);
  return Buffer.concat(bufs);
}

/** `"path\0"` followed by raw bytes without a terminator, the layout of `XS_WRITE`. */
export function pathAndValue(path: string, value: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(path, 'utf8'), NUL, value]);
}

/** Splits a payload on NUL bytes; a trailing NUL does not produce an empty last element. */
export function parseStrings(payload: Buffer): string[] {
  const out: string[] = [];
  let start = 0;
  for (;;) {
    const nul = payload.indexOf(0, start);
    if (nul === -1) {
      if (start < payload.length) out.push(payload.toString('utf8', start));
      return out;
    }
    out.push(payload.toString('utf8', start, nul));
    start = nul + 1;
  }
}

/** Splits `"path\0rest"` into the path and the remaining bytes (the layout of `XS_WRITE`). */
export function splitFirst(payload: Buffer): [string, Buffer] | undefined {
  const nul = payload.indexOf(0);
  if (nul === -1) return undefined;
  return [payload.toString('utf8', 0, nul), payload.subarray(nul + 1)];
}

/**
 * One entry of a node's permission list. The first entry names the owner and, through
 * its flags, what every domain not listed later may do; later entries grant or deny
 * specific domains (first match wins). The owner and dom0 may always do everything.
 */
export interface XsPermission {
  domid: number;
  read: boolean;
  write: boolean;
}

/** `{ domid: 5, read: true, write: false }` → `"r5"` (`n` none, `r` read, `w` write, `b` both). */
export function formatPermission(p: XsPermission): string {
  const letter = p.read ? (p.write ? 'b' : 'r') : p.write ? 'w' : 'n';
  return `${letter}${p.domid}`;
}

/** Parses `"b0"`, `"r5"` …; returns undefined for anything else. */
export function parsePermission(text: string): XsPermission | undefined {
  const m = /^([nrwb])(\d{1,10})$/.exec(text);
  if (!m) return undefined;
  const domid = Number(m[2]);
  if (domid > 0xffff) return undefined;
  const l = m[1];
  return { domid, read: l === 'r' || l === 'b', write: l === 'w' || l === 'b' };
}

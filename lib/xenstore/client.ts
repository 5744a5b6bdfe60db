/**
 * The TypeScript XenStore client: the {@link XenStoreConnection} contract spoken over the
 * xs_wire.h protocol on any duplex stream — a unix socket to a real xenstored (or to the
 * mock one), or an in-memory pair in tests.
 *
 * Requests are pipelined: each gets its own req_id and replies are matched by it, so any
 * number may be outstanding. Frames queued in the same tick leave in one write.
 */
import { Socket, connect as netConnect } from 'node:net';
import type { Duplex } from 'node:stream';
import { debuglog } from 'node:util';
import type { XenStoreConnection } from '../backend.js';
import { XenError, closedError } from '../errors.js';
import { invokeCallback } from '../callback.js';
import { FrameWriter } from './frame-writer.js';
import {
  HEADER_SIZE,
  PAYLOAD_MAX,
  XsType,
  formatPermission,
  parsePermission,
  parseStrings,
  typeName,
  type XsPermission,
} from './wire.js';

const debug = debuglog('xenode:xenstore');

/** Options of {@link openWireConnection}. */
export interface WireConnectionOptions {
  /** The domain the peer knows this connection as, reported as `domid` (0 for a dom0 socket). */
  domid?: number;
}

/** How a successful reply's payload becomes the promised value. */
const enum Decode {
  Void,
  Bytes,
  Text,
  Strings,
  TxId,
  Perms,
  /** DIRECTORY_PART: handed over as is, parsed by the caller. */
  Raw,
}

/** One request awaiting its reply. */
class Pending {
  resolve!: (value: never) => void;
  reject!: (reason: Error) => void;
  constructor(
    readonly id: number,
    readonly type: number,
    readonly decode: Decode,
    readonly op: string,
    readonly path: string | undefined,
  ) {}
}

/** Worst-case UTF-8 size of a string plus its NUL: at most 3 bytes per UTF-16 unit. */
function maxBytes(text: string): number {
  return text.length * 3 + 1;
}

class WireConnection implements XenStoreConnection {
  readonly domid: number | undefined;
  onWatchEvent: ((path: string, token: string) => void) | undefined;
  onDisconnect: ((reason: Error) => void) | undefined;

  private readonly pending = new Map<number, Pending>();
  private readonly watches = new Set<string>();
  private readonly out: FrameWriter;
  private readonly socket: Socket | undefined;
  private nextReqId = 0;
  /** Bytes of an incomplete frame carried over to the next chunk. */
  private rest: Buffer | undefined;
  /** Why the connection ended; set once. */
  private ended: { reason: XenError; byClose: boolean } | undefined;
  private refed = false;

  constructor(
    private readonly stream: Duplex,
    options: WireConnectionOptions,
  ) {
    this.domid = options.domid;
    this.socket = stream instanceof Socket ? stream : undefined;
    this.out = new FrameWriter((chunk) => {
      stream.write(chunk);
    });
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('end', () => this.disconnect(new XenError('XEN_CLOSED', 'the connection to xenstored closed', { op: 'xenstore.connection' })));
    stream.on('close', () => this.disconnect(new XenError('XEN_CLOSED', 'the connection to xenstored closed', { op: 'xenstore.connection' })));
    stream.on('error', (err: Error) => {
      this.disconnect(new XenError('XEN_CLOSED', `the connection to xenstored failed: ${err.message}`, { op: 'xenstore.connection', cause: err }));
    });
    this.socket?.unref();
    if (stream.destroyed) this.disconnect(new XenError('XEN_CLOSED', 'the stream to xenstored was already closed', { op: 'xenstore.connection' }));
  }

  read(tx: number, path: string): Promise<Buffer> {
    return this.simple(XsType.READ, Decode.Bytes, 'xenstore.read', tx, path);
  }

  write(tx: number, path: string, value: Uint8Array): Promise<void> {
    const op = 'xenstore.write';
    if (path.length + 1 + value.length > PAYLOAD_MAX) return this.tooBig(op, path);
    const p = this.start(XsType.WRITE, Decode.Void, op, path, tx, maxBytes(path) + value.length);
    if (p === undefined) return this.refuse(op, path);
    this.out.string(path);
    this.out.bytes(value);
    return this.finish(p);
  }

  mkdir(tx: number, path: string): Promise<void> {
    return this.simple(XsType.MKDIR, Decode.Void, 'xenstore.mkdir', tx, path);
  }

  rm(tx: number, path: string): Promise<void> {
    return this.simple(XsType.RM, Decode.Void, 'xenstore.rm', tx, path);
  }

  async directory(tx: number, path: string): Promise<string[]> {
    try {
      return await this.simple<string[]>(XsType.DIRECTORY, Decode.Strings, 'xenstore.directory', tx, path);
    } catch (err) {
      // E2BIG from the daemon: the list does not fit one reply. (A path too long to send
      // fails the same way in the part loop, before anything is sent.)
      if (!(err instanceof XenError) || err.code !== 'E2BIG') throw err;
      return this.directoryParts(tx, path);
    }
  }

  getPermissions(tx: number, path: string): Promise<XsPermission[]> {
    return this.simple(XsType.GET_PERMS, Decode.Perms, 'xenstore.getPermissions', tx, path);
  }

  setPermissions(tx: number, path: string, perms: readonly XsPermission[]): Promise<void> {
    const op = 'xenstore.setPermissions';
    const texts = perms.map(formatPermission);
    // Permission strings are ASCII, so their size is exact; only the path's may grow.
    let permBytes = 0;
    for (const t of texts) permBytes += t.length + 1;
    if (path.length + 1 + permBytes > PAYLOAD_MAX) return this.tooBig(op, path);
    const p = this.start(XsType.SET_PERMS, Decode.Void, op, path, tx, maxBytes(path) + permBytes);
    if (p === undefined) return this.refuse(op, path);
    this.out.string(path);
    for (const t of texts) this.out.string(t);
    return this.finish(p);
  }

  transactionStart(): Promise<number> {
    return this.simple(XsType.TRANSACTION_START, Decode.TxId, 'xenstore.transactionStart', 0, '', undefined);
  }

  transactionEnd(tx: number, commit: boolean): Promise<void> {
    return this.simple(XsType.TRANSACTION_END, Decode.Void, 'xenstore.transactionEnd', tx, commit ? 'T' : 'F', undefined);
  }

  async watch(path: string, token: string): Promise<void> {
    await this.pair(XsType.WATCH, 'xenstore.watch', path, token);
    this.watches.add(`${path}\0${token}`);
    this.updateRef();
  }

  async unwatch(path: string, token: string): Promise<void> {
    try {
      await this.pair(XsType.UNWATCH, 'xenstore.unwatch', path, token);
    } finally {
      this.watches.delete(`${path}\0${token}`);
      this.updateRef();
    }
  }

  getDomainPath(domid: number): Promise<string> {
    return this.simple(XsType.GET_DOMAIN_PATH, Decode.Text, 'xenstore.getDomainPath', 0, String(domid), undefined);
  }

  close(): Promise<void> {
    if (this.ended === undefined) {
      this.ended = { reason: closedError('xenstore.close'), byClose: true };
      this.out.stop();
      this.failAll((p) => new XenError('XEN_CLOSED', `${p.op}: the connection was closed`, { op: p.op, path: p.path }));
      this.stream.destroy();
    }
    if (this.stream.closed) return Promise.resolve();
    return new Promise((resolve) => this.stream.once('close', () => resolve()));
  }

  /** A request whose payload is one string: the path, or `arg` when `path` is not a node. */
  private simple<T>(type: number, decode: Decode, op: string, tx: number, arg: string, path: string | undefined = arg): Promise<T> {
    if (arg.length >= PAYLOAD_MAX) return this.tooBig(op, path);
    const p = this.start(type, decode, op, path, tx, maxBytes(arg));
    if (p === undefined) return this.refuse(op, path);
    this.out.string(arg);
    return this.finish(p);
  }

  /** WATCH / UNWATCH: "path\0token\0". */
  private pair(type: number, op: string, path: string, token: string): Promise<void> {
    if (path.length + token.length + 2 > PAYLOAD_MAX) return this.tooBig(op, path);
    if (token.includes('\0')) return Promise.reject(new XenError('EINVAL', `EINVAL: ${op}: the token contains a NUL byte`, { op, path }));
    const p = this.start(type, Decode.Void, op, path, 0, maxBytes(path) + maxBytes(token));
    if (p === undefined) return this.refuse(op, path);
    this.out.string(path);
    this.out.string(token);
    return this.finish(p);
  }

  /**
   * Starts framing a request, or returns undefined when it cannot be sent: the connection
   * has ended, or the path holds a NUL byte (which would shift every later field, so the
   * daemon could not refuse it itself).
   */
  private start(type: number, decode: Decode, op: string, path: string | undefined, tx: number, maxPayload: number): Pending | undefined {
    if (this.ended !== undefined || (path !== undefined && path.includes('\0'))) return undefined;
    let id = this.nextReqId;
    while (this.pending.has(id)) id = (id + 1) >>> 0;
    this.nextReqId = (id + 1) >>> 0;
    this.out.begin(type, id, tx, maxPayload);
    const p = new Pending(id, type, decode, op, path);
    this.pending.set(id, p);
    return p;
  }

  /** Commits the frame begun by {@link start}; E2BIG (and nothing sent) when it is too large. */
  private finish<T>(p: Pending): Promise<T> {
    if (this.out.end() < 0) {
      this.pending.delete(p.id);
      return this.tooBig(p.op, p.path);
    }
    if (!this.refed) this.updateRef();
    return new Promise<T>((resolve, reject) => {
      p.resolve = resolve as (value: never) => void;
      p.reject = reject;
    });
  }

  private tooBig<T>(op: string, path: string | undefined): Promise<T> {
    const where = path === undefined ? '' : ` (${path})`;
    return Promise.reject(new XenError('E2BIG', `E2BIG: ${op}: the request exceeds the ${PAYLOAD_MAX}-byte XenStore payload${where}`, { op, path }));
  }

  private refuse<T>(op: string, path: string | undefined): Promise<T> {
    const ended = this.ended;
    if (ended === undefined) return Promise.reject(new XenError('EINVAL', `EINVAL: ${op}: the path contains a NUL byte`, { op, path }));
    if (ended.byClose) return Promise.reject(new XenError('XEN_CLOSED', `${op}: the handle is closed`, { op, path }));
    return Promise.reject(new XenError('XEN_CLOSED', `${op}: ${ended.reason.message}`, { op, path, cause: ended.reason }));
  }

  /** Reads the list in parts, restarting whenever the node's generation changes (libxenstore's algorithm). */
  private async directoryParts(tx: number, path: string): Promise<string[]> {
    const op = 'xenstore.directory';
    let generation: string | undefined;
    let parts: Buffer[] = [];
    let offset = 0;
    // Parts are views of the chunks they arrived in (a stream never reuses a chunk it has
    // emitted), joined once at the end.
    for (;;) {
      const p = this.start(XsType.DIRECTORY_PART, Decode.Raw, op, path, tx, maxBytes(path) + 11);
      if (p === undefined) return this.refuse(op, path);
      this.out.string(path);
      this.out.string(String(offset));
      let reply: Buffer;
      try {
        reply = await this.finish<Buffer>(p);
      } catch (err) {
        // A daemon without DIRECTORY_PART: the list is simply too big.
        if (err instanceof XenError && err.code === 'ENOSYS') throw XenError.fromErrno('E2BIG', { op, path });
        throw err;
      }
      const nul = reply.indexOf(0);
      if (nul < 0) throw new XenError('XEN_PROTOCOL', `${op}: XS_DIRECTORY_PART reply without a generation (${path})`, { op, path });
      const gen = reply.toString('latin1', 0, nul);
      if (generation !== undefined && gen !== generation) {
        debug('directory %s changed while being read in parts; restarting', path);
        generation = undefined;
        parts = [];
        offset = 0;
        continue;
      }
      generation = gen;
      const children = reply.subarray(nul + 1);
      parts.push(children);
      offset += children.length;
      // The list ends with an empty name, i.e. with two NULs. An empty part ends it too,
      // rather than asking for the same offset forever.
      if (children.length === 0 || offset <= 1 || lastByte(parts, 1) === 0) break;
    }
    // Drop the terminating empty name's NUL; what remains is "child\0child\0…".
    return offset <= 1 ? [] : parseStrings(Buffer.concat(parts, offset).subarray(0, offset - 1));
  }

  private onData(chunk: Buffer): void {
    if (this.ended !== undefined) return;
    let buf = chunk;
    if (this.rest !== undefined) {
      buf = Buffer.concat([this.rest, chunk]);
      this.rest = undefined;
    }
    let off = 0;
    while (buf.length - off >= HEADER_SIZE) {
      const len = buf.readUInt32LE(off + 12);
      if (len > PAYLOAD_MAX) {
        this.protocolError(`xenstored sent a frame announcing ${len} payload bytes, more than ${PAYLOAD_MAX}`);
        return;
      }
      const end = off + HEADER_SIZE + len;
      if (end > buf.length) break;
      this.dispatch(buf.readUInt32LE(off), buf.readUInt32LE(off + 4), buf.subarray(off + HEADER_SIZE, end));
      if (this.ended !== undefined) return;
      off = end;
    }
    // A copy, so that a few leftover bytes do not pin a whole socket chunk.
    if (off < buf.length) this.rest = Buffer.from(buf.subarray(off));
  }

  private dispatch(type: number, reqId: number, payload: Buffer): void {
    if (type === XsType.WATCH_EVENT) return this.watchEvent(payload);
    const p = this.pending.get(reqId);
    if (p === undefined) {
      this.protocolError(`xenstored sent a ${typeName(type)} reply to req_id ${reqId}, which is not outstanding`);
      return;
    }
    this.pending.delete(reqId);
    if (this.pending.size === 0) this.updateRef();
    if (type === XsType.ERROR) {
      const nul = payload.indexOf(0);
      const name = payload.toString('latin1', 0, nul < 0 ? payload.length : nul);
      return p.reject(XenError.fromErrno(name, { op: p.op, path: p.path }));
    }
    if (type !== p.type) {
      const err = this.protocolError(`xenstored answered ${typeName(p.type)} (req_id ${reqId}) with ${typeName(type)}`);
      return p.reject(err);
    }
    let value: unknown;
    switch (p.decode) {
      case Decode.Void:
        break;
      case Decode.Bytes:
        // A copy, so that a stored value does not pin the socket chunk it arrived in.
        value = Buffer.from(payload);
        break;
      case Decode.Raw:
        value = payload;
        break;
      case Decode.Text: {
        const nul = payload.indexOf(0);
        value = payload.toString('utf8', 0, nul < 0 ? payload.length : nul);
        break;
      }
      case Decode.Strings:
        value = parseStrings(payload);
        break;
      case Decode.TxId: {
        const nul = payload.indexOf(0);
        const text = payload.toString('latin1', 0, nul < 0 ? payload.length : nul);
        const id = /^\d{1,10}$/.test(text) ? Number(text) : 0;
        if (id === 0 || id > 0xffffffff) return p.reject(this.badReply(p, text));
        value = id;
        break;
      }
      case Decode.Perms: {
        const perms: XsPermission[] = [];
        for (const text of parseStrings(payload)) {
          const perm = parsePermission(text);
          if (perm === undefined) return p.reject(this.badReply(p, text));
          perms.push(perm);
        }
        value = perms;
        break;
      }
    }
    p.resolve(value as never);
  }

  /** A reply whose framing is sound but whose content is not: fails that request only. */
  private badReply(p: Pending, text: string): XenError {
    return new XenError('XEN_PROTOCOL', `${p.op}: xenstored sent a malformed ${typeName(p.type)} reply ${JSON.stringify(text)}`, { op: p.op, path: p.path });
  }

  private watchEvent(payload: Buffer): void {
    const [path, token] = parseStrings(payload);
    if (path === undefined || token === undefined) {
      this.protocolError(`xenstored sent a malformed XS_WATCH_EVENT ${JSON.stringify(payload.toString('latin1'))}`);
      return;
    }
    invokeCallback(this.onWatchEvent, path, token);
  }

  /** The stream can no longer be trusted: fail everything and drop it. */
  private protocolError(message: string): XenError {
    const err = new XenError('XEN_PROTOCOL', message, { op: 'xenstore.connection' });
    debug('protocol error: %s', message);
    this.disconnect(err);
    this.stream.destroy();
    return err;
  }

  /** The connection ended by itself: fail pending requests with `reason`, tell onDisconnect once. */
  private disconnect(reason: XenError): void {
    if (this.ended !== undefined) return;
    this.ended = { reason, byClose: false };
    this.out.stop();
    this.failAll(() => reason);
    this.stream.destroy();
    invokeCallback(this.onDisconnect, reason);
  }

  private failAll(errorFor: (p: Pending) => Error): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    this.watches.clear();
    this.updateRef();
    for (const p of all) p.reject(errorFor(p));
  }

  /** Keeps the process alive only while a reply is awaited or a watch is registered. */
  private updateRef(): void {
    const socket = this.socket;
    if (socket === undefined) return;
    const busy = this.ended === undefined && (this.pending.size > 0 || this.watches.size > 0);
    if (busy === this.refed) return;
    this.refed = busy;
    if (busy) socket.ref();
    else socket.unref();
  }
}

/** The byte `back` positions before the end of the concatenated parts. */
function lastByte(parts: readonly Buffer[], back: number): number | undefined {
  for (let i = parts.length - 1; i >= 0; i--) {
    const part = parts[i] as Buffer;
    if (back < part.length) return part[part.length - 1 - back];
    back -= part.length;
  }
  return undefined;
}

/**
 * Speaks the XenStore wire protocol over `stream` and returns the connection. The
 * connection owns the stream: `close()` destroys it. When `stream` is a `net.Socket`, it
 * is unref'd while nothing is outstanding and no watch is registered, so an idle
 * connection does not keep the process alive.
 *
 * @example
 * ```ts
 * import { connect } from 'node:net';
 * import { openWireConnection } from 'xenode';
 * const socket = connect(process.env.XENSTORED_PATH ?? '/var/run/xenstored/socket');
 * const conn = openWireConnection(socket, { domid: 0 });
 * console.log(await conn.directory(0, '/local/domain'));
 * await conn.close();
 * ```
 */
export function openWireConnection(stream: Duplex, options: WireConnectionOptions = {}): XenStoreConnection {
  return new WireConnection(stream, options);
}

/**
 * The unix socket libxenstore would use: `$XENSTORED_PATH`, else `$XENSTORED_RUNDIR/socket`,
 * else `/var/run/xenstored/socket`.
 */
export function xenstoredSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.XENSTORED_PATH || `${env.XENSTORED_RUNDIR || '/var/run/xenstored'}/socket`;
}

/**
 * Connects to a xenstored. A string is a unix socket path (default: see
 * {@link xenstoredSocketPath}) and the connection acts as dom0; a duplex stream is used
 * as it is. A socket that cannot be opened rejects with a XenError whose code is the
 * system's (ENOENT, ECONNREFUSED, EACCES, …), with `op` `xenstore.connect` and `path` set.
 *
 * @example
 * ```ts
 * import { connectXenStore } from 'xenode';
 * const conn = await connectXenStore();          // $XENSTORED_PATH or the default socket
 * console.log(await conn.directory(0, '/local/domain'));   // e.g. ['0', '3']
 * await conn.close();
 * ```
 */
export async function connectXenStore(target?: string | Duplex): Promise<XenStoreConnection> {
  if (target !== undefined && typeof target !== 'string') return openWireConnection(target);
  const path = target ?? xenstoredSocketPath();
  const socket = await new Promise<Socket>((resolve, reject) => {
    const s = netConnect(path);
    const onError = (err: NodeJS.ErrnoException): void => reject(connectError(err, path));
    s.once('error', onError);
    s.once('connect', () => {
      s.off('error', onError);
      resolve(s);
    });
  });
  return openWireConnection(socket, { domid: 0 });
}

function connectError(err: NodeJS.ErrnoException, path: string): XenError {
  const code = err.code ?? 'EIO';
  const fix: Record<string, string> = {
    ENOENT: 'no socket there. Is xenstored running (this must be a Xen Dom0)? Set XENSTORED_PATH to its socket, or use the mock backend',
    ECONNREFUSED: 'nothing accepts connections there. Is xenstored running? Set XENSTORED_PATH to its socket, or use the mock backend',
    EACCES: 'permission denied. xenstored only accepts root: run as root, or set XENSTORED_PATH to a socket you may open',
  };
  const message = `${code}: cannot connect to xenstored at ${path}: ${fix[code] ?? `${err.message}. Set XENSTORED_PATH to xenstored's socket`}`;
  return new XenError(code, message, { op: 'xenstore.connect', path, cause: err });
}

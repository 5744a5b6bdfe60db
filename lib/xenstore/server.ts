/**
 * The mock xenstored on the wire: serves a {@link XenStoreEngine} over the xs_wire.h
 * protocol on unix sockets (or any duplex stream), as C xenstored of Xen 4.17 answers.
 * Point libxenstore clients at it with `XENSTORED_PATH`.
 *
 * Every frame of a received chunk is handled at once (the engine is synchronous) and all
 * the replies and watch events they cause leave in one write per connection.
 */
import { chmod, lstat, unlink } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import type { Duplex } from 'node:stream';
import { debuglog } from 'node:util';
import { XenError } from '../errors.js';
import { atoi, runControl } from './control.js';
import { XenStoreEngine, type EngineConnection } from './engine.js';
import { DOMID_FIRST_RESERVED } from './paths.js';
import { parsePermissionList } from './permissions.js';
import { ReplyWriter } from './reply-writer.js';
import { XsFail, fail } from './store.js';
import { FrameDecoder, XsType, formatPermission, isXsError, typeName, type XsErrorName, type XsMessage } from './wire.js';

const debug = debuglog('xenode:xenstored');

const OK = Buffer.from('OK\0', 'latin1');

/** Requests C xenstored accepts only from privileged connections (XS_FLAG_PRIV). */
const PRIVILEGED_ONLY = new Set<number>([
  XsType.CONTROL,
  XsType.INTRODUCE,
  XsType.RELEASE,
  XsType.IS_DOMAIN_INTRODUCED,
  XsType.RESUME,
  XsType.SET_TARGET,
]);

/** Requests the server answers: every type below XS_TYPE_COUNT but the reply-only ones and the removed XS_RESTRICT. */
const SUPPORTED = new Set<number>(
  Object.values(XsType).filter((t) => t < XsType.TYPE_COUNT && t !== XsType.WATCH_EVENT && t !== XsType.ERROR),
);

/** Options of {@link XenStoreServer.serveStream} and {@link XenStoreServer.listen}. */
export interface ServeOptions {
  /**
   * The domain the peer acts as. 0 (the default) is dom0, privileged, as every socket
   * client of xenstored is; another domain is unprivileged, as its ring connection would be.
   */
  domid?: number;
}

function checkServeOptions(op: string, options: ServeOptions): number {
  if (options === null || typeof options !== 'object') throw new TypeError(`${op}: options must be an object`);
  const domid = options.domid ?? 0;
  if (!Number.isInteger(domid) || domid < 0 || domid >= DOMID_FIRST_RESERVED) {
    throw new RangeError(`${op}: domid must be an integer 0..${DOMID_FIRST_RESERVED - 1}, got ${String(domid)}`);
  }
  return domid;
}

/** C's `onearg`: the payload must be one string with its NUL and nothing after. */
function oneArg(payload: Buffer): string {
  const len = payload.length;
  if (len === 0 || payload.indexOf(0) !== len - 1) fail('EINVAL');
  return payload.toString('latin1', 0, len - 1);
}

/** The NUL-terminated strings of a payload (bytes after the last NUL are ignored, as C does). */
function argStrings(payload: Buffer): string[] {
  const out: string[] = [];
  let start = 0;
  for (let nul = payload.indexOf(0); nul !== -1; nul = payload.indexOf(0, start)) {
    out.push(payload.toString('latin1', start, nul));
    start = nul + 1;
  }
  return out;
}

/** The errno name a failure is answered with. */
function errnoOf(err: unknown): XsErrorName {
  if (err instanceof XsFail) return err.code;
  if (err instanceof XenError && isXsError(err.code)) return err.code;
  // Not a daemon answer but a fault here; C xenstored sends EINVAL for anything untranslatable.
  debug('request failed unexpectedly: %O', err);
  return 'EINVAL';
}

/** One connection being served. */
class Served {
  readonly decoder = new FrameDecoder();
  readonly out = new ReplyWriter();
  /** On the server's list of connections with output to write. */
  queued = false;
  ended = false;
  paused = false;

  constructor(
    readonly stream: Duplex,
    readonly conn: EngineConnection,
  ) {}
}

/**
 * A xenstored speaking the wire protocol for a {@link XenStoreEngine}.
 *
 * A frame announcing more than 4096 bytes is a protocol violation: that connection is
 * dropped, nothing else is affected. Unknown requests are answered ENOSYS, malformed ones
 * EINVAL, privileged ones from an unprivileged connection EACCES.
 *
 * @example
 * ```ts
 * import { XenStoreEngine, XenStoreServer } from 'xenode';
 * const server = new XenStoreServer(new XenStoreEngine());
 * await server.listen('/tmp/xenstored.sock');
 * // XENSTORED_PATH=/tmp/xenstored.sock xenstore-ls /
 * await server.close();
 * ```
 */
export class XenStoreServer {
  /** The engine served. */
  readonly engine: XenStoreEngine;
  private readonly served = new Set<Served>();
  private readonly listeners = new Map<string, Server>();
  private toFlush: Served[] = [];
  /** Handling a chunk: output is written when it is done, not before. */
  private busy = false;
  private flushQueued = false;
  private closing: Promise<void> | undefined;
  private readonly flushTask = (): void => {
    this.flushQueued = false;
    this.flush();
  };

  constructor(engine: XenStoreEngine) {
    if (!(engine instanceof XenStoreEngine)) throw new TypeError('XenStoreServer: engine must be a XenStoreEngine');
    this.engine = engine;
  }

  /** Connections being served. */
  get connections(): number {
    return this.served.size;
  }

  /**
   * Serves one connection on `stream` until either side ends it. The stream is destroyed
   * at once if the server is closed.
   */
  serveStream(stream: Duplex, options: ServeOptions = {}): void {
    const domid = checkServeOptions('XenStoreServer.serveStream', options);
    if (this.closing !== undefined) {
      stream.destroy();
      return;
    }
    const s = new Served(stream, this.engine.connect(domid));
    this.served.add(s);
    s.conn.onWatchEvent = (path, token) => {
      // As xenstored: an event too long for one frame is not sent.
      if (s.out.strings(XsType.WATCH_EVENT, 0, 0, [path, token])) this.queue(s);
      else debug('dropping watch event %s: too long', path);
    };
    // A stream set to decode text would hand over strings: take the bytes back.
    stream.on('data', (chunk: Buffer | string) => this.receive(s, typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk));
    stream.on('end', () => this.end(s));
    stream.on('close', () => this.drop(s));
    stream.on('error', (err: Error) => {
      debug('connection error: %s', err.message);
      this.drop(s);
    });
  }

  /**
   * Listens on the unix socket `socketPath` (mode 0600), replacing a stale socket file left
   * there; each accepted connection is served as {@link serveStream} does. Resolves once
   * connections are accepted. As a `net.Server`, a listening server keeps the process alive
   * until {@link close}. Fails with a XenError whose code is the system's (EADDRINUSE, EACCES…).
   */
  async listen(socketPath: string, options: ServeOptions = {}): Promise<void> {
    const op = 'XenStoreServer.listen';
    if (typeof socketPath !== 'string' || socketPath === '') throw new TypeError(`${op}: socketPath must be a non-empty string`);
    checkServeOptions(op, options);
    if (this.closing !== undefined) throw new XenError('XEN_CLOSED', `${op}: the server is closed`, { op, path: socketPath });
    const server = createServer((socket) => this.serveStream(socket, options));
    try {
      const st = await lstat(socketPath).catch(() => undefined);
      if (st?.isSocket()) await unlink(socketPath);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw XenError.fromErrno(typeof code === 'string' ? code : 'EIO', { op, path: socketPath, cause: err });
    }
    server.on('error', (err) => debug('listener %s: %s', socketPath, err.message));
    this.listeners.set(socketPath, server);
    // xenstored's socket is for root only; failing to tighten it is not worth failing for.
    await chmod(socketPath, 0o600).catch((err: Error) => debug('chmod %s: %s', socketPath, err.message));
  }

  /** Stops listening (removing the socket files) and closes every connection. Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const closed = [...this.listeners].map(
        ([path, server]) =>
          new Promise<void>((resolve) => {
            server.close(() => {
              unlink(path).then(resolve, () => resolve());
            });
          }),
      );
      for (const s of [...this.served]) {
        this.drop(s);
        s.stream.destroy();
      }
      await Promise.all(closed);
      this.listeners.clear();
    })();
    return this.closing;
  }

  /** Same as {@link close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  private receive(s: Served, chunk: Buffer): void {
    if (s.ended) return;
    let messages: XsMessage[];
    try {
      messages = s.decoder.push(chunk);
    } catch (err) {
      // A header announcing more than the protocol allows: the stream cannot be resynchronised.
      debug('dropping connection: %s', (err as Error).message);
      this.drop(s);
      s.stream.destroy();
      return;
    }
    this.busy = true;
    try {
      for (const m of messages) {
        if (s.ended) break;
        try {
          this.dispatch(s, m);
        } catch (err) {
          s.out.strings(XsType.ERROR, m.reqId, m.txId, [errnoOf(err)]);
        }
      }
      if (s.out.pending) this.queue(s);
    } finally {
      this.busy = false;
      this.flush();
    }
  }

  /** Handles one request, framing its reply; a failure is thrown for the caller to answer. */
  private dispatch(s: Served, m: XsMessage): void {
    const { type, reqId, txId, payload } = m;
    const { conn, out } = s;
    // In C xenstored's order: unknown request, privilege, transaction.
    if (!SUPPORTED.has(type)) {
      debug('unsupported request %s', typeName(type));
      fail('ENOSYS');
    }
    if (PRIVILEGED_ONLY.has(type) && !conn.privileged) fail('EACCES');
    // WATCH and UNWATCH ignore the transaction id; every other request must name an open one, or 0.
    if (txId !== 0 && type !== XsType.WATCH && type !== XsType.UNWATCH && !conn.hasTransaction(txId)) fail('ENOENT');
    switch (type) {
      case XsType.READ:
        // As every reply, one that would not fit a frame is answered E2BIG.
        if (!out.bytes(type, reqId, txId, conn.read(txId, oneArg(payload)))) fail('E2BIG');
        return;
      case XsType.WRITE: {
        const nul = payload.indexOf(0);
        if (nul === -1) fail('EINVAL');
        conn.write(txId, payload.toString('latin1', 0, nul), payload.subarray(nul + 1));
        break;
      }
      case XsType.MKDIR:
        conn.mkdir(txId, oneArg(payload));
        break;
      case XsType.RM:
        conn.rm(txId, oneArg(payload));
        break;
      case XsType.DIRECTORY:
        // The reply must fit one frame: E2BIG tells the client to use DIRECTORY_PART.
        if (!out.strings(type, reqId, txId, conn.directory(txId, oneArg(payload)))) fail('E2BIG');
        return;
      case XsType.DIRECTORY_PART: {
        const args = argStrings(payload);
        if (args.length !== 2) fail('EINVAL');
        const part = conn.directoryPart(txId, args[0], atoi(args[1]) >>> 0);
        if (!out.strings(type, reqId, txId, [part.generation, ...part.children], !part.more)) fail('E2BIG');
        return;
      }
      case XsType.GET_PERMS:
        if (!out.strings(type, reqId, txId, conn.getPermissions(txId, oneArg(payload)).map(formatPermission))) fail('E2BIG');
        return;
      case XsType.SET_PERMS: {
        const args = argStrings(payload);
        if (args.length < 2) fail('EINVAL');
        conn.setPermissions(txId, args[0], parsePermissionList(args.slice(1)) ?? fail('EINVAL'));
        break;
      }
      case XsType.WATCH:
      case XsType.UNWATCH: {
        const args = argStrings(payload);
        if (args.length !== 2) fail('EINVAL');
        if (type === XsType.WATCH) conn.watch(args[0], args[1]);
        else conn.unwatch(args[0], args[1]);
        break;
      }
      case XsType.TRANSACTION_START:
        // Transactions do not nest.
        if (txId !== 0) fail('EBUSY');
        out.strings(type, reqId, txId, [String(conn.transactionStart())]);
        return;
      case XsType.TRANSACTION_END: {
        const arg = oneArg(payload);
        if (arg !== 'T' && arg !== 'F') fail('EINVAL');
        if (txId === 0) fail('ENOENT');
        conn.transactionEnd(txId, arg === 'T');
        break;
      }
      case XsType.GET_DOMAIN_PATH:
        out.strings(type, reqId, txId, [conn.getDomainPath(atoi(oneArg(payload)) >>> 0)]);
        return;
      case XsType.IS_DOMAIN_INTRODUCED:
        out.strings(type, reqId, txId, [conn.isDomainIntroduced(atoi(oneArg(payload)) >>> 0) ? 'T' : 'F']);
        return;
      case XsType.INTRODUCE: {
        // domid, gfn, event channel: the mock has no ring to map, so only the domid counts.
        const args = argStrings(payload);
        if (args.length < 3 || atoi(args[2]) <= 0) fail('EINVAL');
        conn.introduceDomain(atoi(args[0]) >>> 0);
        break;
      }
      case XsType.RELEASE:
        conn.releaseDomain(atoi(oneArg(payload)) >>> 0);
        break;
      case XsType.RESUME:
        conn.resumeDomain(atoi(oneArg(payload)) >>> 0);
        break;
      case XsType.SET_TARGET: {
        const args = argStrings(payload);
        if (args.length < 2) fail('EINVAL');
        conn.setTarget(atoi(args[0]) >>> 0, atoi(args[1]) >>> 0);
        break;
      }
      case XsType.RESET_WATCHES:
        conn.resetWatches();
        break;
      case XsType.CONTROL: {
        const args = argStrings(payload);
        if (args.length < 1) fail('EINVAL');
        if (!out.bytes(type, reqId, txId, runControl(this.engine, args))) fail('E2BIG');
        return;
      }
      default:
        fail('ENOSYS');
    }
    out.bytes(type, reqId, txId, OK);
  }

  /** Puts `s` on the list of connections to write; writes at once unless a chunk is being handled. */
  private queue(s: Served): void {
    if (!s.queued) {
      s.queued = true;
      this.toFlush.push(s);
    }
    if (!this.busy && !this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushTask);
    }
  }

  private flush(): void {
    if (this.toFlush.length === 0) return;
    const list = this.toFlush;
    this.toFlush = [];
    for (const s of list) {
      s.queued = false;
      const data = s.out.take();
      if (data === undefined || s.ended) continue;
      // A peer that does not read its replies is not fed more requests until it does.
      if (!s.stream.write(data) && !s.paused) {
        s.paused = true;
        s.stream.pause();
        s.stream.once('drain', () => {
          s.paused = false;
          s.stream.resume();
        });
      }
    }
  }

  /** The peer finished sending: what was answered is flushed, then the connection ends. */
  private end(s: Served): void {
    if (s.ended) return;
    this.flush();
    this.drop(s);
    s.stream.end();
  }

  private drop(s: Served): void {
    if (s.ended) return;
    s.ended = true;
    this.served.delete(s);
    s.conn.close();
  }
}

/**
 * A deliberately small XenStore wire client for tests: raw frames in and out
 * ({@link RawXenStore}), and the {@link XenStoreConnection} contract on top of it
 * ({@link wireTestConnection}), independent of lib/xenstore/client.ts so the server can be
 * tested on its own.
 */
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import type { XenStoreConnection, XsPermission } from '../../lib/backend.js';
import { XenError, closedError } from '../../lib/errors.js';
import {
  FrameDecoder,
  PAYLOAD_MAX,
  XsType,
  encodeMessage,
  formatPermission,
  parsePermission,
  parseStrings,
  pathAndValue,
  strings,
  type XsMessage,
} from '../../lib/xenstore/wire.js';

/** One socket to a xenstored, speaking frames. Replies are matched to requests by req_id. */
export class RawXenStore {
  /** Every WATCH_EVENT received, in order. */
  readonly events: XsMessage[] = [];
  /** Every frame received, in order (replies and events). */
  readonly received: XsMessage[] = [];
  onEvent: ((m: XsMessage) => void) | undefined;
  /** Resolves when the socket has closed. */
  readonly closed: Promise<void>;
  private readonly decoder = new FrameDecoder();
  private readonly waiting = new Map<number, (m: XsMessage) => void>();
  private nextId = 1;

  private constructor(readonly socket: Socket) {
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => {
      for (const m of this.decoder.push(chunk)) {
        this.received.push(m);
        if (m.type === XsType.WATCH_EVENT) {
          this.events.push(m);
          this.onEvent?.(m);
          continue;
        }
        const w = this.waiting.get(m.reqId);
        this.waiting.delete(m.reqId);
        w?.(m);
      }
    });
    socket.on('error', () => undefined);
    socket.once('close', () => {
      for (const [id, w] of this.waiting) w({ type: -1, reqId: id, txId: 0, payload: Buffer.alloc(0) });
      this.waiting.clear();
    });
  }

  static connect(path: string): Promise<RawXenStore> {
    return new Promise((resolve, reject) => {
      const socket = connect(path);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new RawXenStore(socket));
      });
    });
  }

  /** Sends one request and resolves with its reply (type -1 if the connection closed first). */
  request(type: number, payload: Buffer, txId = 0, reqId = this.nextId++): Promise<XsMessage> {
    return new Promise((resolve) => {
      this.waiting.set(reqId, resolve);
      this.socket.write(encodeMessage(type, reqId, txId, payload));
    });
  }

  /** Registers interest in the reply to `reqId` without sending anything (for hand-made frames). */
  reply(reqId: number): Promise<XsMessage> {
    return new Promise((resolve) => this.waiting.set(reqId, resolve));
  }

  /** Writes bytes as they are. */
  sendRaw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  close(): Promise<void> {
    this.socket.destroy();
    return this.closed;
  }
}

/** The errno name of an XS_ERROR reply, or undefined for any other reply. */
export function errorOf(m: XsMessage): string | undefined {
  return m.type === XsType.ERROR ? m.payload.toString('latin1').replace(/\0$/, '') : undefined;
}

function check(m: XsMessage, op: string, path: string | undefined): XsMessage {
  if (m.type === -1) throw closedError(op);
  const code = errorOf(m);
  if (code !== undefined) throw XenError.fromErrno(code, { op, path });
  return m;
}

class WireTestConnection implements XenStoreConnection {
  onWatchEvent: ((path: string, token: string) => void) | undefined;
  onDisconnect: ((reason: Error) => void) | undefined;

  constructor(
    private readonly raw: RawXenStore,
    readonly domid: number,
  ) {
    raw.onEvent = (m) => {
      const [path, token] = parseStrings(m.payload);
      this.onWatchEvent?.(path, token);
    };
  }

  private async call(op: string, path: string | undefined, type: number, payload: Buffer, tx = 0): Promise<XsMessage> {
    if (this.raw.socket.destroyed) throw closedError(op);
    // As libxenstore: a request that does not fit one frame is refused before sending.
    if (payload.length > PAYLOAD_MAX) throw XenError.fromErrno('E2BIG', { op, path });
    return check(await this.raw.request(type, payload, tx), op, path);
  }

  async read(tx: number, path: string): Promise<Buffer> {
    return (await this.call('xenstore.read', path, XsType.READ, strings(path), tx)).payload;
  }

  async write(tx: number, path: string, value: Uint8Array): Promise<void> {
    await this.call('xenstore.write', path, XsType.WRITE, pathAndValue(path, value), tx);
  }

  async mkdir(tx: number, path: string): Promise<void> {
    await this.call('xenstore.mkdir', path, XsType.MKDIR, strings(path), tx);
  }

  async rm(tx: number, path: string): Promise<void> {
    await this.call('xenstore.rm', path, XsType.RM, strings(path), tx);
  }

  async directory(tx: number, path: string): Promise<string[]> {
    try {
      return parseStrings((await this.call('xenstore.directory', path, XsType.DIRECTORY, strings(path), tx)).payload);
    } catch (err) {
      if (!(err instanceof XenError) || err.code !== 'E2BIG') throw err;
    }
    // Too long for one reply: read it in parts, starting over if the node changes meanwhile.
    for (;;) {
      const names: string[] = [];
      let offset = 0;
      let generation: string | undefined;
      for (;;) {
        const m = await this.call('xenstore.directory', path, XsType.DIRECTORY_PART, strings(path, String(offset)), tx);
        const p = m.payload;
        const gen = p.toString('latin1', 0, p.indexOf(0));
        if (generation !== undefined && gen !== generation) break;
        generation = gen;
        const rest = p.subarray(gen.length + 1);
        const last = rest.length === 1 || (rest.length >= 2 && rest[rest.length - 1] === 0 && rest[rest.length - 2] === 0);
        const body = last ? rest.subarray(0, rest.length - 1) : rest;
        names.push(...parseStrings(body));
        offset += body.length;
        if (last) return names;
      }
    }
  }

  async getPermissions(tx: number, path: string): Promise<XsPermission[]> {
    const m = await this.call('xenstore.getPermissions', path, XsType.GET_PERMS, strings(path), tx);
    return parseStrings(m.payload).map((t) => parsePermission(t) as XsPermission);
  }

  async setPermissions(tx: number, path: string, perms: readonly XsPermission[]): Promise<void> {
    await this.call('xenstore.setPermissions', path, XsType.SET_PERMS, strings(path, ...perms.map(formatPermission)), tx);
  }

  async transactionStart(): Promise<number> {
    const m = await this.call('xenstore.transactionStart', undefined, XsType.TRANSACTION_START, strings(''));
    return Number(parseStrings(m.payload)[0]);
  }

  async transactionEnd(tx: number, commit: boolean): Promise<void> {
    await this.call('xenstore.transactionEnd', undefined, XsType.TRANSACTION_END, strings(commit ? 'T' : 'F'), tx);
  }

  async watch(path: string, token: string): Promise<void> {
    await this.call('xenstore.watch', path, XsType.WATCH, strings(path, token));
  }

  async unwatch(path: string, token: string): Promise<void> {
    await this.call('xenstore.unwatch', path, XsType.UNWATCH, strings(path, token));
  }

  async getDomainPath(domid: number): Promise<string> {
    const m = await this.call('xenstore.getDomainPath', undefined, XsType.GET_DOMAIN_PATH, strings(String(domid)));
    return parseStrings(m.payload)[0];
  }

  close(): Promise<void> {
    return this.raw.close();
  }
}

/** The {@link XenStoreConnection} contract over a {@link RawXenStore}. */
export function wireTestConnection(raw: RawXenStore, domid: number): XenStoreConnection {
  return new WireTestConnection(raw, domid);
}

/**
 * The mock host's XenStore socket, served from a worker thread so that it keeps answering
 * while the main thread is busy or blocked (a script that runs `execFileSync('xenstore-ls')`
 * against its own mock host must not deadlock — a real xenstored is another process too).
 *
 * The tree stays in the main thread's engine, the one source of truth. The worker holds a
 * read replica, kept current by a privileged watch on `/` in the main thread that sends
 * every changed node (value, permissions, children in order) to the worker before any
 * reply that follows the change. The worker answers plain reads (`XS_READ`,
 * `XS_DIRECTORY`, `XS_GET_PERMS` outside transactions, canonical absolute paths) from the
 * replica when the client has nothing else outstanding; every other request — writes,
 * transactions, watches, anything unusual — goes to the main thread's XenStoreServer
 * over a message channel, byte for byte, and its replies and watch events come back the
 * same way. So the semantics are the engine's, and only reads can be answered while the
 * main thread is blocked.
 */
import { Duplex } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { debuglog } from 'node:util';
import { NO_TRANSACTION } from '../backend.js';
import { XenError } from '../errors.js';
import type { EngineConnection, XenStoreEngine } from '../xenstore/engine.js';
import type { XenStoreServer } from '../xenstore/server.js';
import { formatPermission } from '../xenstore/wire.js';

const debug = debuglog('xenode:mock');

interface NodeRecord {
  path: string;
  value: Uint8Array;
  perms: string[];
  children: string[];
}

type ToWorker =
  | { type: 'sync'; records: NodeRecord[]; removed?: string }
  | { type: 'data'; id: number; bytes: Uint8Array }
  | { type: 'end'; id: number }
  | { type: 'stop' };

type FromWorker =
  | { type: 'listening' }
  | { type: 'error'; code: string; message: string }
  | { type: 'open'; id: number }
  | { type: 'data'; id: number; bytes: Uint8Array }
  | { type: 'close'; id: number };

/** The worker: plain JavaScript with node: built-ins only, so it runs from lib/ and dist/ alike. */
const WORKER_SOURCE = String.raw`
const { parentPort, workerData, receiveMessageOnPort } = require('node:worker_threads');
const net = require('node:net');
const fs = require('node:fs');
const PAYLOAD_MAX = 4096;
const nodes = new Map();
const clients = new Map();
let nextId = 1;
const CANONICAL = /^\/$|^\/[A-Za-z0-9_@-]+(\/[A-Za-z0-9_@-]+)*$/;

function frame(type, reqId, txId, payload) {
  const h = Buffer.alloc(16);
  h.writeUInt32LE(type, 0); h.writeUInt32LE(reqId, 4); h.writeUInt32LE(txId, 8); h.writeUInt32LE(payload.length, 12);
  return Buffer.concat([h, payload]);
}
function strings(list) { return Buffer.from(list.map((s) => s + '\0').join(''), 'latin1'); }

function apply(msg) {
  if (msg.type === 'sync') {
    if (msg.removed !== undefined) {
      const prefix = msg.removed === '/' ? '/' : msg.removed + '/';
      for (const k of [...nodes.keys()]) if (k === msg.removed || k.startsWith(prefix)) nodes.delete(k);
    }
    for (const r of msg.records) nodes.set(r.path, { value: Buffer.from(r.value), perms: r.perms, children: r.children });
  } else if (msg.type === 'data') {
    const c = clients.get(msg.id);
    if (c) fromMain(c, Buffer.from(msg.bytes));
  } else if (msg.type === 'end') {
    const c = clients.get(msg.id);
    if (c) c.sock.end();
  } else if (msg.type === 'stop') {
    server.close();
    for (const c of clients.values()) c.sock.destroy();
    try { fs.unlinkSync(workerData.path); } catch {}
    process.exit(0);
  }
}
parentPort.on('message', apply);
// Changes the main thread made before a client's request was sent are applied first.
function drain() { for (let m = receiveMessageOnPort(parentPort); m; m = receiveMessageOnPort(parentPort)) apply(m.message); }

function fromMain(c, bytes) {
  c.out = c.out.length ? Buffer.concat([c.out, bytes]) : bytes;
  while (c.out.length >= 16) {
    const len = c.out.readUInt32LE(12);
    if (c.out.length < 16 + len) break;
    const f = c.out.subarray(0, 16 + len);
    c.out = c.out.subarray(16 + len);
    if (f.readUInt32LE(0) !== 15) c.pending--;
    c.sock.write(f);
  }
}

function answerLocally(c, f) {
  const type = f.readUInt32LE(0);
  if (type !== 1 && type !== 2 && type !== 3) return false;
  if (c.pending > 0 || f.readUInt32LE(8) !== 0) return false;
  const payload = f.subarray(16);
  if (payload.length < 2 || payload.indexOf(0) !== payload.length - 1) return false;
  const path = payload.toString('latin1', 0, payload.length - 1);
  if (!CANONICAL.test(path) || path.length > 3072) return false;
  drain();
  const node = nodes.get(path);
  const reqId = f.readUInt32LE(4);
  let reply;
  if (node === undefined) reply = frame(16, reqId, 0, strings(['ENOENT']));
  else if (type === 2) reply = frame(2, reqId, 0, node.value);
  else if (type === 1) reply = frame(1, reqId, 0, strings(node.children));
  else reply = frame(3, reqId, 0, strings(node.perms));
  if (reply.length - 16 > PAYLOAD_MAX) return false;
  c.sock.write(reply);
  return true;
}

const server = net.createServer((sock) => {
  const id = nextId++;
  const c = { sock, pending: 0, out: Buffer.alloc(0), inBuf: Buffer.alloc(0) };
  clients.set(id, c);
  parentPort.postMessage({ type: 'open', id });
  sock.on('data', (chunk) => {
    c.inBuf = c.inBuf.length ? Buffer.concat([c.inBuf, chunk]) : chunk;
    while (c.inBuf.length >= 16) {
      const len = c.inBuf.readUInt32LE(12);
      // An oversized frame goes to the main thread whole, which refuses it as xenstored does.
      const take = len > PAYLOAD_MAX ? c.inBuf.length : 16 + len;
      if (len <= PAYLOAD_MAX && c.inBuf.length < take) break;
      const f = Buffer.from(c.inBuf.subarray(0, take));
      c.inBuf = c.inBuf.subarray(take);
      if (answerLocally(c, f)) continue;
      c.pending++;
      parentPort.postMessage({ type: 'data', id, bytes: f });
    }
  });
  sock.on('error', () => {});
  sock.on('close', () => { clients.delete(id); parentPort.postMessage({ type: 'close', id }); });
});
server.on('error', (err) => parentPort.postMessage({ type: 'error', code: err.code || 'EIO', message: err.message }));
try { if (fs.lstatSync(workerData.path).isSocket()) fs.unlinkSync(workerData.path); } catch {}
server.listen(workerData.path, () => {
  try { fs.chmodSync(workerData.path, 0o600); } catch {}
  parentPort.postMessage({ type: 'listening' });
});
`;

/** Serves `server`'s engine on a unix socket from a worker thread (see the file comment). */
export class ThreadedXenStoreListener {
  private worker: Worker | undefined;
  private exited: Promise<void> | undefined;
  private readonly streams = new Map<number, Duplex>();
  private sync: EngineConnection | undefined;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly engine: XenStoreEngine,
    private readonly server: XenStoreServer,
  ) {}

  /** Resolves once the socket accepts connections; a XenError with the system's code otherwise. */
  async listen(path: string): Promise<void> {
    const sync = this.engine.connect(0);
    this.sync = sync;
    sync.onWatchEvent = (p) => this.sendSync(p);
    sync.watch('/', 'xenode-replica');
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { path } });
    this.worker = worker;
    this.exited = new Promise((resolve) => worker.once('exit', () => resolve()));
    this.post({ type: 'sync', records: this.dump() });
    await new Promise<void>((resolve, reject) => {
      const fail = (err: Error) => reject(err);
      worker.once('error', fail);
      worker.on('message', (msg: FromWorker) => {
        if (msg.type === 'listening') {
          worker.off('error', fail);
          worker.on('error', (err) => debug('xenstore thread: %s', err.message));
          resolve();
        } else if (msg.type === 'error') {
          reject(XenError.fromErrno(msg.code, { op: 'XenStoreServer.listen', path, cause: new Error(msg.message) }));
        } else this.fromWorker(msg);
      });
    }).catch(async (err: unknown) => {
      await this.close();
      throw err;
    });
  }

  private post(msg: ToWorker): void {
    this.worker?.postMessage(msg);
  }

  private fromWorker(msg: FromWorker): void {
    if (msg.type === 'open') {
      const id = msg.id;
      const stream = new Duplex({
        read: () => undefined,
        write: (chunk: Buffer, _enc, cb) => {
          this.post({ type: 'data', id, bytes: Buffer.from(chunk) });
          cb();
        },
        final: (cb) => {
          this.post({ type: 'end', id });
          cb();
        },
      });
      this.streams.set(id, stream);
      this.server.serveStream(stream);
    } else if (msg.type === 'data') {
      this.streams.get(msg.id)?.push(Buffer.from(msg.bytes));
    } else if (msg.type === 'close') {
      const s = this.streams.get(msg.id);
      this.streams.delete(msg.id);
      s?.push(null);
      s?.destroy();
    }
  }

  private record(path: string): NodeRecord | undefined {
    const conn = this.sync as EngineConnection;
    try {
      return {
        path,
        value: conn.read(NO_TRANSACTION, path),
        perms: conn.getPermissions(NO_TRANSACTION, path).map(formatPermission),
        children: conn.directory(NO_TRANSACTION, path),
      };
    } catch (err) {
      if (err instanceof XenError && err.code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /** Every node, parents first. */
  private dump(): NodeRecord[] {
    const out: NodeRecord[] = [];
    const walk = (path: string) => {
      const r = this.record(path);
      if (r === undefined) return;
      out.push(r);
      for (const child of r.children) walk(path === '/' ? `/${child}` : `${path}/${child}`);
    };
    walk('/');
    return out;
  }

  /** Sends `path` and its ancestors as they are now; `removed` when the node is gone. */
  private sendSync(path: string): void {
    if (!path.startsWith('/') || this.closing) return;
    const records: NodeRecord[] = [];
    const parts = path.split('/').filter(Boolean);
    let missing: string | undefined;
    for (let i = 0; i <= parts.length; i++) {
      const p = `/${parts.slice(0, i).join('/')}`;
      const r = this.record(p);
      if (r === undefined) {
        missing = p;
        break;
      }
      records.push(r);
    }
    this.post(missing === undefined ? { type: 'sync', records } : { type: 'sync', records, removed: missing });
  }

  /** Stops the worker (removing the socket) and ends every forwarded connection. Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.sync?.close();
      for (const s of this.streams.values()) s.destroy();
      this.streams.clear();
      this.worker?.postMessage({ type: 'stop' } satisfies ToWorker);
      await this.exited;
    })();
    return this.closing;
  }
}

/**
 * The mock host's toolstack control socket: the {@link ToolstackConnection} contract,
 * served to other processes (`xenode list --mock-host PATH`, {@link connectMockHost}).
 *
 * Protocol (docs/mock-host.md): newline-delimited JSON over a unix socket. A request is
 * `{"id":N,"method":M,"params":[…]}` with M a contract method; the answer is
 * `{"id":N,"result":R}` or `{"id":N,"error":{"code","message","op","domid"}}`.
 * `{"id":N,"method":"cancel","params":[K]}` aborts request K (its `signal`).
 * `subscribe` answers with a subscription id and then sends `{"event":E,"sub":S}` lines
 * until `unsubscribe` [S]. `save` answers with the image in base64; `restore` takes one;
 * so do `migrateSuspend` [domid, live] (the domain stays suspended) and `migrateRestore`
 * [image, name] (restored paused).
 * `openConsole` [domid], answered with `{"id":N,"result":true}`, turns the rest of that
 * connection into the raw console byte stream, both ways.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import { debuglog } from 'node:util';
import type { ToolstackConnection } from '../backend-toolstack.js';
import { XenError } from '../errors.js';

const debug = debuglog('xenode:mock');

/** The most a request line may hold (a restore image in base64 is the largest). */
const MAX_LINE = 96 * 1024 * 1024;

/** Methods of the contract callable as `method: [params…]`. */
const PLAIN = new Set([
  'hostInfo',
  'createDomain',
  'listDomains',
  'domainInfo',
  'domidByName',
  'domainConfig',
  'pause',
  'unpause',
  'shutdown',
  'destroy',
  'setMemoryTarget',
  'setMaxMemory',
  'setVcpus',
  'pinVcpu',
  'rename',
  'attachDevice',
  'detachDevice',
  'listDevices',
  'snapshotDisk',
  'migrateResume',
]);
/** Those among them whose last parameter is `{ signal }`. */
const ABORTABLE: Record<string, number> = { createDomain: 1, attachDevice: 2, detachDevice: 3 };

interface Request {
  id: number;
  method: string;
  params: unknown[];
}

/** An error as a line: the XenError's code and details, or a generic failure. */
export function encodeError(err: unknown): Record<string, unknown> {
  if (err instanceof XenError) return { code: err.code, message: err.message, op: err.op, domid: err.domid, errno: err.errno };
  const e = err as Error;
  return { name: e?.name ?? 'Error', message: e?.message ?? String(err) };
}

export class ToolstackServer {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private closing: Promise<void> | undefined;

  constructor(private readonly open: () => ToolstackConnection) {}

  listen(path: string): Promise<void> {
    const server = createServer((sock) => this.serve(sock));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  private serve(sock: Socket): void {
    this.sockets.add(sock);
    const ts = this.open();
    const subs = new Map<number, () => void>();
    const running = new Map<number, AbortController>();
    let nextSub = 1;
    let buffer: Buffer = Buffer.alloc(0);
    let raw = false;
    const send = (msg: unknown) => {
      if (!sock.destroyed) sock.write(`${JSON.stringify(msg)}\n`);
    };
    const cleanup = () => {
      this.sockets.delete(sock);
      for (const ac of running.values()) ac.abort();
      void ts.close();
    };
    sock.on('close', cleanup);
    sock.on('error', (err) => debug('toolstack client: %s', err.message));

    const handle = async (req: Request): Promise<void> => {
      const { id, method, params } = req;
      try {
        if (method === 'cancel') {
          running.get(Number(params[0]))?.abort();
          return send({ id, result: null });
        }
        if (method === 'subscribe') {
          const sub = nextSub++;
          subs.set(sub, ts.subscribe((event) => send({ sub, event })));
          return send({ id, result: sub });
        }
        if (method === 'unsubscribe') {
          subs.get(Number(params[0]))?.();
          subs.delete(Number(params[0]));
          return send({ id, result: null });
        }
        if (method === 'save') {
          const out = new PassThrough();
          const chunks: Buffer[] = [];
          out.on('data', (c: Buffer) => chunks.push(c));
          const ac = new AbortController();
          running.set(id, ac);
          await ts.save(Number(params[0]), out, { signal: ac.signal });
          return send({ id, result: Buffer.concat(chunks).toString('base64') });
        }
        if (method === 'restore') {
          const ac = new AbortController();
          running.set(id, ac);
          const input = new PassThrough();
          input.end(Buffer.from(String(params[0]), 'base64'));
          return send({ id, result: await ts.restore(input, { signal: ac.signal }) });
        }
        if (method === 'migrateSuspend') {
          const out = new PassThrough();
          const chunks: Buffer[] = [];
          out.on('data', (c: Buffer) => chunks.push(c));
          const ac = new AbortController();
          running.set(id, ac);
          await ts.migrateSuspend(Number(params[0]), out, { live: params[1] === true, signal: ac.signal });
          return send({ id, result: Buffer.concat(chunks).toString('base64') });
        }
        if (method === 'migrateRestore') {
          const ac = new AbortController();
          running.set(id, ac);
          const input = new PassThrough();
          input.end(Buffer.from(String(params[0]), 'base64'));
          return send({ id, result: await ts.migrateRestore(input, { name: String(params[1]), signal: ac.signal }) });
        }
        if (method === 'openConsole') {
          raw = true;
          const con = await ts.openConsole(Number(params[0]));
          send({ id, result: true });
          if (buffer.length > 0) con.write(buffer);
          buffer = Buffer.alloc(0);
          con.pipe(sock);
          sock.pipe(con);
          sock.on('close', () => con.destroy());
          return;
        }
        if (!PLAIN.has(method)) throw new TypeError(`unknown method '${method}'`);
        const args = [...params];
        const at = ABORTABLE[method];
        if (at !== undefined) {
          const ac = new AbortController();
          running.set(id, ac);
          args[at] = { signal: ac.signal };
        }
        const fn = (ts as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[method] as (...a: unknown[]) => Promise<unknown>;
        const result = await fn.apply(ts, args);
        send({ id, result: result ?? null });
      } catch (err) {
        send({ id, error: encodeError(err) });
        if (method === 'openConsole') sock.end();
      } finally {
        running.delete(id);
      }
    };

    sock.on('data', (chunk: Buffer) => {
      if (raw) return;
      buffer = Buffer.concat([buffer, chunk]);
      if (buffer.length > MAX_LINE) {
        sock.destroy();
        return;
      }
      for (let nl = buffer.indexOf(10); nl !== -1 && !raw; nl = buffer.indexOf(10)) {
        const line = buffer.subarray(0, nl).toString('utf8');
        buffer = buffer.subarray(nl + 1);
        let req: Request;
        try {
          req = JSON.parse(line) as Request;
          if (typeof req.id !== 'number' || typeof req.method !== 'string' || !Array.isArray(req.params)) throw new Error('bad request');
        } catch {
          send({ id: null, error: { name: 'TypeError', message: 'each line must be {"id":N,"method":M,"params":[…]}' } });
          continue;
        }
        if (req.method === 'openConsole') {
          // Nothing after this line is JSON any more: the socket becomes the console.
          raw = true;
          sock.removeAllListeners('data');
          sock.pause();
        }
        void handle(req);
      }
    });
  }

  /** Stops listening and drops every client. Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      for (const s of this.sockets) s.destroy();
      if (this.server === undefined) return resolve();
      this.server.close(() => resolve());
    });
    return this.closing;
  }
}

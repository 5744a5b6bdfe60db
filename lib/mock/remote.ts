/**
 * A backend for a mock host running in another process (`xenode mock-host`): XenStore
 * over its xenstored socket, the toolstack over its control socket (found under
 * `/tool/xenode/toolstack-socket` in that xenstore). Protocol: lib/mock/toolstack-server.ts.
 */
import { createConnection, type Socket } from 'node:net';
import type { Duplex, Readable, Writable } from 'node:stream';
import type {
  DeviceInfo,
  DeviceKind,
  DeviceSpec,
  DiskSnapshot,
  DomainEvent,
  DomainInfo,
  HostInfo,
  ShutdownRequest,
  ToolstackCallOptions,
  ToolstackConnection,
} from '../backend-toolstack.js';
import type { XenBackend, XenStoreConnection } from '../backend.js';
import type { DomainConfig } from '../config/domain-config.js';
import { XenError, abortError, closedError } from '../errors.js';
import { connectXenStore } from '../xenstore/client.js';
import { MAX_IMAGE } from './save-image.js';
import { readAll, writeAll } from './toolstack.js';

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

function decodeError(e: Record<string, unknown>): Error {
  const message = String(e.message ?? 'remote failure');
  if (typeof e.code === 'string') {
    return new XenError(e.code, message, {
      ...(typeof e.op === 'string' ? { op: e.op } : {}),
      ...(typeof e.domid === 'number' ? { domid: e.domid } : {}),
      ...(typeof e.errno === 'number' ? { errno: e.errno } : {}),
    });
  }
  const err = e.name === 'TypeError' ? new TypeError(message) : e.name === 'RangeError' ? new RangeError(message) : new Error(message);
  if (typeof e.name === 'string' && err.name !== e.name) err.name = e.name;
  return err;
}

function connectSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    sock.once('connect', () => {
      sock.off('error', reject);
      resolve(sock);
    });
    sock.once('error', reject);
  });
}

/** The toolstack of a mock host in another process. */
export class RemoteToolstack implements ToolstackConnection {
  private readonly pending = new Map<number, Pending>();
  /** Local listeners, fed by the one server-side subscription opened at connect time. */
  private readonly listeners = new Set<(ev: DomainEvent) => void>();
  private readonly consoles = new Set<Socket>();
  private nextId = 1;
  private buffer: Buffer = Buffer.alloc(0);
  private closed = false;

  private constructor(
    private readonly sock: Socket,
    private readonly path: string,
  ) {
    sock.on('data', (chunk: Buffer) => this.receive(chunk));
    sock.on('error', () => undefined);
    sock.on('close', () => this.fail(closedError('toolstack')));
    sock.unref();
  }

  /**
   * Connects to the control socket at `path` and subscribes to the host's events at once:
   * events travel on the same socket as replies, in order, so an event caused by a request
   * made after a local subscribe() always arrives — no round trip per subscription.
   */
  static async connect(path: string): Promise<RemoteToolstack> {
    const ts = new RemoteToolstack(await connectSocket(path), path);
    try {
      await ts.request('subscribe', []);
    } catch (err) {
      await ts.close();
      throw err;
    }
    return ts;
  }

  private receive(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (let nl = this.buffer.indexOf(10); nl !== -1; nl = this.buffer.indexOf(10)) {
      const msg = JSON.parse(this.buffer.subarray(0, nl).toString('utf8')) as { id?: number; result?: unknown; error?: Record<string, unknown>; sub?: number; event?: DomainEvent };
      this.buffer = this.buffer.subarray(nl + 1);
      if (msg.sub !== undefined && msg.event !== undefined) {
        for (const l of [...this.listeners]) l(msg.event);
        continue;
      }
      const p = msg.id === undefined ? undefined : this.pending.get(msg.id);
      if (p === undefined) continue;
      this.pending.delete(msg.id as number);
      if (msg.error) p.reject(decodeError(msg.error));
      else p.resolve(msg.result);
    }
    if (this.pending.size === 0) this.sock.unref();
  }

  private fail(err: Error): void {
    this.closed = true;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.listeners.clear();
  }

  private request<T>(method: string, params: unknown[], signal?: AbortSignal): Promise<T> {
    if (this.closed) return Promise.reject(closedError(`toolstack.${method}`));
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => {
        this.sock.write(`${JSON.stringify({ id: this.nextId++, method: 'cancel', params: [id] })}\n`);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(id, {
        resolve: (v) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(v as T);
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      });
      // A call in flight keeps the process alive; an idle session does not.
      this.sock.ref();
      this.sock.write(`${JSON.stringify({ id, method, params })}\n`);
    });
  }

  hostInfo(): Promise<HostInfo> {
    return this.request('hostInfo', []);
  }
  createDomain(config: DomainConfig, options: ToolstackCallOptions = {}): Promise<number> {
    return this.request('createDomain', [config], options.signal);
  }
  listDomains(): Promise<DomainInfo[]> {
    return this.request('listDomains', []);
  }
  domainInfo(domid: number): Promise<DomainInfo> {
    return this.request('domainInfo', [domid]);
  }
  domidByName(name: string): Promise<number> {
    return this.request('domidByName', [name]);
  }
  domainConfig(domid: number): Promise<DomainConfig> {
    return this.request('domainConfig', [domid]);
  }
  pause(domid: number): Promise<void> {
    return this.request('pause', [domid]);
  }
  unpause(domid: number): Promise<void> {
    return this.request('unpause', [domid]);
  }
  shutdown(domid: number, request: ShutdownRequest): Promise<void> {
    return this.request('shutdown', [domid, request]);
  }
  destroy(domid: number): Promise<void> {
    return this.request('destroy', [domid]);
  }
  setMemoryTarget(domid: number, mib: number): Promise<void> {
    return this.request('setMemoryTarget', [domid, mib]);
  }
  setMaxMemory(domid: number, mib: number): Promise<void> {
    return this.request('setMaxMemory', [domid, mib]);
  }
  setVcpus(domid: number, count: number): Promise<void> {
    return this.request('setVcpus', [domid, count]);
  }
  pinVcpu(domid: number, vcpu: number, cpus: readonly number[]): Promise<void> {
    return this.request('pinVcpu', [domid, vcpu, cpus]);
  }
  rename(domid: number, name: string): Promise<void> {
    return this.request('rename', [domid, name]);
  }
  attachDevice(domid: number, device: DeviceSpec, options: ToolstackCallOptions = {}): Promise<DeviceInfo> {
    return this.request('attachDevice', [domid, device], options.signal);
  }
  detachDevice(domid: number, kind: DeviceKind, devid: number, options: ToolstackCallOptions = {}): Promise<void> {
    return this.request('detachDevice', [domid, kind, devid], options.signal);
  }
  listDevices(domid: number): Promise<DeviceInfo[]> {
    return this.request('listDevices', [domid]);
  }
  snapshotDisk(domid: number, vdev: string, childPath: string): Promise<DiskSnapshot> {
    return this.request('snapshotDisk', [domid, vdev, childPath]);
  }

  subscribe(listener: (event: DomainEvent) => void): () => void {
    if (this.closed) return () => undefined;
    const wrapped = (ev: DomainEvent) => listener(ev);
    this.listeners.add(wrapped);
    return () => void this.listeners.delete(wrapped);
  }

  async openConsole(domid: number): Promise<Duplex> {
    if (this.closed) throw closedError('toolstack.openConsole');
    const sock = await connectSocket(this.path);
    sock.write(`${JSON.stringify({ id: 1, method: 'openConsole', params: [domid] })}\n`);
    // The first line answers; everything after it is console output.
    await new Promise<void>((resolve, reject) => {
      let head: Buffer = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk]);
        const nl = head.indexOf(10);
        if (nl === -1) return;
        sock.off('data', onData);
        sock.pause();
        const msg = JSON.parse(head.subarray(0, nl).toString('utf8')) as { error?: Record<string, unknown> };
        const rest = head.subarray(nl + 1);
        if (rest.length > 0) sock.unshift(rest);
        if (msg.error) {
          sock.destroy();
          reject(decodeError(msg.error));
        } else resolve();
      };
      sock.on('data', onData);
      sock.once('error', reject);
      sock.once('close', () => reject(closedError('toolstack.openConsole')));
    });
    this.consoles.add(sock);
    sock.once('close', () => this.consoles.delete(sock));
    // Paused while the answer was read; flowing starts after the caller attached its reader.
    sock.resume();
    return sock;
  }

  async save(domid: number, out: Writable, options: ToolstackCallOptions = {}): Promise<void> {
    const image = await this.request<string>('save', [domid], options.signal);
    await writeAll(out, Buffer.from(image, 'base64'));
  }

  async restore(input: Readable, options: ToolstackCallOptions = {}): Promise<number> {
    const data = await readAll(input, MAX_IMAGE, options.signal);
    return this.request('restore', [data.toString('base64')], options.signal);
  }

  async migrateSuspend(domid: number, out: Writable, options: ToolstackCallOptions & { live?: boolean } = {}): Promise<void> {
    const image = Buffer.from(await this.request<string>('migrateSuspend', [domid, options.live ?? false], options.signal), 'base64');
    try {
      await writeAll(out, image);
    } catch (err) {
      // The image did not make it: the domain must not be left suspended.
      await this.migrateResume(domid).catch(() => undefined);
      throw err;
    }
  }

  migrateResume(domid: number): Promise<void> {
    return this.request('migrateResume', [domid]);
  }

  async migrateRestore(input: Readable, options: ToolstackCallOptions & { name: string }): Promise<number> {
    const data = await readAll(input, MAX_IMAGE, options.signal);
    return this.request('migrateRestore', [data.toString('base64'), options.name], options.signal);
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.fail(closedError('toolstack'));
      for (const c of this.consoles) c.destroy();
      this.sock.destroy();
    }
    return Promise.resolve();
  }
}

/**
 * A backend for the mock host serving XenStore on `xenstoreSocket` (`xenode mock-host
 * --xenstore-socket PATH`), in this or another process; use it with `connect({ backend })`.
 * Its toolstack is found through the host's xenstore key `/tool/xenode/toolstack-socket`.
 *
 * @example
 * ```ts
 * import { MockHost, connect, connectMockHost } from 'xenode';
 * import { tmpdir } from 'node:os';
 * import { join } from 'node:path';
 * const socket = join(tmpdir(), `xs-remote-${process.pid}.sock`);
 * const host = await MockHost.create({ xenstoreSocket: socket, toolstackSocket: `${socket}.ts`, timing: 'instant' });
 * const xen = await connect({ backend: connectMockHost(socket) });
 * console.log((await xen.domains.list()).map((d) => d.name));   // ['Domain-0']
 * await xen.close();
 * await host.close();
 * ```
 */
export function connectMockHost(xenstoreSocket: string): XenBackend {
  if (typeof xenstoreSocket !== 'string' || xenstoreSocket === '') throw new TypeError('connectMockHost: xenstoreSocket must be a path');
  const opened = new Set<{ close(): Promise<void> }>();
  return {
    name: 'mock',
    async openXenStore(): Promise<XenStoreConnection> {
      const conn = await connectXenStore(xenstoreSocket);
      opened.add(conn);
      return conn;
    },
    async openToolstack(): Promise<ToolstackConnection> {
      const xs = await connectXenStore(xenstoreSocket);
      let path: string;
      try {
        path = (await xs.read(0, '/tool/xenode/toolstack-socket')).toString('utf8');
      } catch (err) {
        if (err instanceof XenError && err.code === 'ENOENT') {
          throw new XenError('XEN_UNAVAILABLE', `XEN_UNAVAILABLE: the mock host on ${xenstoreSocket} serves no toolstack (start it with xenode mock-host, or MockHost.create({ toolstackSocket }))`, { op: 'toolstack.open', path: xenstoreSocket });
        }
        throw err;
      } finally {
        await xs.close();
      }
      const ts = await RemoteToolstack.connect(path);
      opened.add(ts);
      return ts;
    },
    async close(): Promise<void> {
      await Promise.all([...opened].map((c) => c.close()));
      opened.clear();
    },
  };
}

/**
 * The mock host's {@link ToolstackConnection}: a session on its simulated hypervisor.
 * Synchronous failures of the hypervisor become rejections, as they would from libxl.
 */
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
import type { DomainConfig } from '../config/domain-config.js';
import { XenError, abortError, closedError } from '../errors.js';
import type { Hypervisor } from './hypervisor.js';
import { MAX_IMAGE } from './save-image.js';

/** Reads a stream to its end (at most `limit` bytes), honouring `signal`. */
export async function readAll(input: Readable, limit: number, signal?: AbortSignal): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of input) {
    if (signal?.aborted) throw abortError(signal);
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    total += buf.length;
    if (total > limit) throw new XenError('XEN_ERROR_INVAL', `XEN_ERROR_INVAL: save image larger than ${limit} bytes (domain.restore)`, { op: 'domain.restore' });
    chunks.push(buf);
  }
  return Buffer.concat(chunks);
}

/** Writes `data` to `out` and waits until it is flushed (not ending it). */
export function writeAll(out: Writable, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    out.write(data, (err) => (err ? reject(err) : resolve()));
  });
}

/** The mock writes a migration image in pieces of this size. */
const MIGRATION_CHUNK = 16 * 1024;

export class MockToolstack implements ToolstackConnection {
  private closed = false;
  private readonly subscriptions = new Set<() => void>();
  private readonly consoles = new Set<Duplex>();
  /** Domains this session left suspended for a migration: how to resume each. */
  private readonly suspended = new Map<number, () => void>();

  constructor(private readonly hv: Hypervisor) {}

  /** Runs `fn` unless closed; its throw becomes a rejection. */
  private async call<T>(op: string, fn: () => T | Promise<T>): Promise<T> {
    if (this.closed || this.hv.isClosed) throw closedError(op);
    return fn();
  }

  hostInfo(): Promise<HostInfo> {
    return this.call('host.info', () => this.hv.hostInfo());
  }

  createDomain(config: DomainConfig, options: ToolstackCallOptions = {}): Promise<number> {
    return this.call('domain.create', () => this.hv.create(config, options.signal));
  }

  listDomains(): Promise<DomainInfo[]> {
    return this.call('domain.list', () => this.hv.list());
  }

  domainInfo(domid: number): Promise<DomainInfo> {
    return this.call('domain.info', () => this.hv.info(domid));
  }

  domidByName(name: string): Promise<number> {
    return this.call('domain.byName', () => this.hv.domidByName(name));
  }

  domainConfig(domid: number): Promise<DomainConfig> {
    return this.call('domain.config', () => this.hv.config(domid));
  }

  pause(domid: number): Promise<void> {
    return this.call('domain.pause', () => this.hv.pause(domid));
  }

  unpause(domid: number): Promise<void> {
    return this.call('domain.unpause', () => this.hv.unpause(domid));
  }

  shutdown(domid: number, request: ShutdownRequest): Promise<void> {
    return this.call('domain.shutdown', () => this.hv.requestShutdown(domid, request));
  }

  destroy(domid: number): Promise<void> {
    return this.call('domain.destroy', () => this.hv.destroy(domid));
  }

  setMemoryTarget(domid: number, mib: number): Promise<void> {
    return this.call('domain.setMemoryTarget', () => this.hv.setMemoryTarget(domid, mib));
  }

  setMaxMemory(domid: number, mib: number): Promise<void> {
    return this.call('domain.setMaxMemory', () => this.hv.setMaxMemory(domid, mib));
  }

  setVcpus(domid: number, count: number): Promise<void> {
    return this.call('domain.setVcpus', () => this.hv.setVcpus(domid, count));
  }

  pinVcpu(domid: number, vcpu: number, cpus: readonly number[]): Promise<void> {
    return this.call('domain.pinVcpu', () => this.hv.pinVcpu(domid, vcpu, cpus));
  }

  rename(domid: number, name: string): Promise<void> {
    return this.call('domain.rename', () => this.hv.rename(domid, name));
  }

  attachDevice(domid: number, device: DeviceSpec, options: ToolstackCallOptions = {}): Promise<DeviceInfo> {
    return this.call('device.attach', () => this.hv.attach(domid, device, options.signal));
  }

  detachDevice(domid: number, kind: DeviceKind, devid: number, options: ToolstackCallOptions = {}): Promise<void> {
    return this.call('device.detach', () => this.hv.detach(domid, kind, devid, options.signal));
  }

  listDevices(domid: number): Promise<DeviceInfo[]> {
    return this.call('device.list', () => this.hv.devices(domid));
  }

  snapshotDisk(domid: number, vdev: string, childPath: string): Promise<DiskSnapshot> {
    return this.call('domain.snapshotDisk', () => this.hv.snapshotDisk(domid, vdev, childPath));
  }

  subscribe(listener: (event: DomainEvent) => void): () => void {
    if (this.closed) return () => undefined;
    const stop = this.hv.subscribe(listener);
    const unsubscribe = () => {
      stop();
      this.subscriptions.delete(unsubscribe);
    };
    this.subscriptions.add(unsubscribe);
    return unsubscribe;
  }

  openConsole(domid: number): Promise<Duplex> {
    return this.call('domain.console', () => {
      const stream = this.hv.console(domid).open();
      this.consoles.add(stream);
      stream.once('close', () => this.consoles.delete(stream));
      return stream;
    });
  }

  save(domid: number, out: Writable, options: ToolstackCallOptions = {}): Promise<void> {
    return this.call('domain.save', async () => {
      const { image, finish, resume } = await this.hv.save(domid, options.signal);
      try {
        await writeAll(out, image);
      } catch (err) {
        // The image did not make it: the domain must not be lost with it.
        resume();
        throw err;
      }
      await finish();
    });
  }

  restore(input: Readable, options: ToolstackCallOptions = {}): Promise<number> {
    return this.call('domain.restore', async () => this.hv.restore(await readAll(input, MAX_IMAGE, options.signal), options.signal));
  }

  migrateSuspend(domid: number, out: Writable, options: ToolstackCallOptions & { live?: boolean } = {}): Promise<void> {
    return this.call('domain.migrate', async () => {
      const { image, resume } = await this.hv.save(domid, options.signal);
      try {
        // In pieces, as a real stream arrives: a broken stream fails part-way.
        for (let at = 0; at < image.length; at += MIGRATION_CHUNK) {
          if (options.signal?.aborted) throw abortError(options.signal);
          await writeAll(out, image.subarray(at, at + MIGRATION_CHUNK));
        }
      } catch (err) {
        resume();
        throw err;
      }
      this.suspended.set(domid, resume);
    });
  }

  migrateResume(domid: number): Promise<void> {
    return this.call('domain.migrate', () => {
      const resume = this.suspended.get(domid);
      this.suspended.delete(domid);
      if (resume === undefined) throw new XenError('XEN_ERROR_INVAL', `XEN_ERROR_INVAL: domain ${domid} was not suspended for a migration (domain.migrate)`, { op: 'domain.migrate', domid });
      resume();
    });
  }

  migrateRestore(input: Readable, options: ToolstackCallOptions & { name: string }): Promise<number> {
    return this.call('domains.receiveMigration', async () => this.hv.restore(await readAll(input, MAX_IMAGE, options.signal), options.signal, { name: options.name, paused: true }));
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      for (const u of [...this.subscriptions]) u();
      for (const c of this.consoles) c.destroy();
      this.consoles.clear();
    }
    return Promise.resolve();
  }
}

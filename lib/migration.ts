/**
 * Live migration between two hosts (or to the same host) over any byte stream the user
 * connects: a TCP socket, an ssh pipe, a socketpair. {@link Domain.migrate} runs the
 * sending side, {@link Domains.receiveMigration} the receiving one; this module is the
 * protocol between them, the same for every backend (each backend only suspends into a
 * stream, resumes, and restores from one).
 *
 * The protocol follows `xl migrate`'s order so that a domain never runs twice and is
 * never lost. Frames are `type (1 octet) · length (4, big-endian) · payload`:
 *
 * | step | sender → receiver | receiver → sender |
 * |---|---|---|
 * | 1 | `H` the offer: JSON `{ version, name, uuid, memory, live }` | |
 * | 2 | | `Y` accepted, or `N` refused (JSON `{ message }`): the source runs on untouched |
 * | 3 | `D`… the save image, then `E` (the source is now suspended) | |
 * | 4 | | `R` restored, paused, as `<name>--incoming`; or `F` failed: the source resumes |
 * | 5 | renames the source `<name>--migratedaway`, `G` go | |
 * | 6 | | renames it `<name>`, unpauses it, `K` running; or `F`: the source takes its name back and resumes |
 * | 7 | destroys the source | |
 *
 * `X` (JSON `{ message }`) from the sender at any point before `G` aborts: the receiver
 * destroys what it restored.
 * @internal
 */
import type { Duplex, Readable } from 'node:stream';
import { Readable as ReadableStream, Writable } from 'node:stream';
import type { ToolstackConnection } from './backend-toolstack.js';
import { XenError, abortError } from './errors.js';

/** Options of {@link Domain.migrate}. */
export interface MigrateOptions {
  /**
   * Copy memory while the guest runs and pause it only for the last pass (default true,
   * as `xl migrate`). Needs log-dirty mode: HAP for HVM/PVH guests, shadow paging for PV
   * ones; the native backend rejects with `XEN_MIGRATION_UNSUPPORTED` where the host
   * lacks it. `false` suspends the guest first and copies it whole.
   */
  live?: boolean;
  /** Aborts the migration before the hand-over: the source resumes, the call rejects with an AbortError. */
  signal?: AbortSignal;
  /** Called as the migration goes on. */
  onProgress?: (progress: MigrationProgress) => void;
}

/** How far a migration has got, for {@link MigrateOptions.onProgress}. */
export interface MigrationProgress {
  /** `offer` (waiting for the destination), `image` (sending memory and state), `restore` (the destination restores), `handover`, `done`. */
  phase: 'offer' | 'image' | 'restore' | 'handover' | 'done';
  /** Octets of the image sent so far. */
  bytes: number;
}

/** Options of {@link Domains.receiveMigration}. */
export interface ReceiveMigrationOptions {
  /** The name the domain takes here (default: its name at the source). */
  name?: string;
  /** Leave the domain paused once it has arrived (default: it runs). */
  paused?: boolean;
  /** Aborts before the hand-over: what was restored is destroyed, the source resumes. */
  signal?: AbortSignal;
}

const VERSION = 1;
const MAX_FRAME = 1 << 20;
const HEADER = 5;
/** Suffixes of the two copies while both exist on one host, as `xl migrate` names them. */
export const INCOMING = '--incoming';
export const MIGRATED_AWAY = '--migratedaway';

type FrameType = 'H' | 'Y' | 'N' | 'D' | 'E' | 'R' | 'F' | 'G' | 'K' | 'X';
interface Frame {
  type: FrameType;
  payload: Buffer;
}

function migrationError(code: 'XEN_MIGRATION_REFUSED' | 'XEN_MIGRATION_FAILED' | 'XEN_MIGRATION_UNCONFIRMED', message: string, op: string, domid?: number, cause?: unknown): XenError {
  return new XenError(code, `${code}: ${message} (${op})`, { op, domid, ...(cause === undefined ? {} : { cause }) });
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** One side's view of the stream: frames out, frames in (queued, or routed to the image). */
class Channel {
  private buffer: Buffer = Buffer.alloc(0);
  private readonly queue: Frame[] = [];
  private waiter: { resolve: (f: Frame) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;
  private readonly sending = new Set<(err?: Error | null) => void>();
  /** While set, `D` and `E` frames go here; false asks for the stream to pause. */
  route: ((frame: Frame) => boolean) | undefined;
  /** Called when the stream fails or ends (after every queued frame). */
  onFailure: ((err: Error) => void) | undefined;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- one list for listeners of different events
  private readonly listeners: [string, (...args: any[]) => void][];

  constructor(private readonly stream: Duplex) {
    const onData = (chunk: Buffer | string) => this.receive(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    const onEnd = () => this.fail(new Error('the stream ended'));
    const onClose = () => this.fail(new Error('the stream closed'));
    const onError = (err: Error) => this.fail(err);
    this.listeners = [
      ['data', onData],
      ['end', onEnd],
      ['close', onClose],
      ['error', onError],
    ];
    for (const [ev, fn] of this.listeners) stream.on(ev, fn);
  }

  resume(): void {
    this.stream.resume();
  }

  private receive(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    while (this.buffer.length >= HEADER && this.failure === undefined) {
      const type = String.fromCharCode(this.buffer[0] as number) as FrameType;
      const len = this.buffer.readUInt32BE(1);
      if (!'HYNDERFGKX'.includes(type) || len > MAX_FRAME) {
        this.fail(new Error('the peer does not speak xenode migration protocol'));
        return;
      }
      if (this.buffer.length < HEADER + len) return;
      const frame = { type, payload: this.buffer.subarray(HEADER, HEADER + len) };
      this.buffer = this.buffer.subarray(HEADER + len);
      if (this.route !== undefined && (type === 'D' || type === 'E')) {
        if (!this.route(frame)) this.stream.pause();
      } else if (this.waiter !== undefined) {
        const w = this.waiter;
        this.waiter = undefined;
        w.resolve(frame);
      } else this.queue.push(frame);
    }
  }

  private fail(err: Error): void {
    if (this.failure !== undefined) return;
    this.failure = err;
    this.onFailure?.(err);
    for (const settle of [...this.sending]) settle(err);
    if (this.waiter !== undefined && this.queue.length === 0) {
      const w = this.waiter;
      this.waiter = undefined;
      w.reject(err);
    }
  }

  /** The next frame not routed to the image; rejects once the stream has failed. */
  next(signal?: AbortSignal): Promise<Frame> {
    const queued = this.queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.waiter = undefined;
        reject(abortError(signal as AbortSignal));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiter = {
        resolve: (f) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(f);
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
    });
  }

  send(type: FrameType, payload: Buffer | string = Buffer.alloc(0)): Promise<void> {
    const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
    const head = Buffer.alloc(HEADER);
    head.write(type, 0, 'latin1');
    head.writeUInt32BE(body.length, 1);
    return new Promise((resolve, reject) => {
      if (this.failure !== undefined || this.stream.destroyed || this.stream.writableEnded) {
        reject(this.failure ?? new Error('the stream closed'));
        return;
      }
      // A stream destroyed under a write may never call it back: its failure settles it.
      const settle = (err?: Error | null) => {
        this.sending.delete(settle);
        if (err) reject(err);
        else resolve();
      };
      this.sending.add(settle);
      this.stream.write(Buffer.concat([head, body]), settle);
    });
  }

  sendJson(type: FrameType, value: unknown): Promise<void> {
    return this.send(type, JSON.stringify(value));
  }

  detach(): void {
    for (const [ev, fn] of this.listeners) this.stream.off(ev, fn);
    this.route = undefined;
    this.onFailure = undefined;
  }
}

function parseJson<T>(frame: Frame): T {
  try {
    return JSON.parse(frame.payload.toString('utf8')) as T;
  } catch {
    throw new Error(`the peer sent a malformed ${frame.type} frame`);
  }
}

function checkStream(stream: unknown, op: string): asserts stream is Duplex {
  const s = stream as Duplex | null;
  if (s === null || typeof s !== 'object' || typeof s.write !== 'function' || typeof s.on !== 'function' || typeof s.pause !== 'function') {
    throw new TypeError(`${op}: expected a Duplex stream (combine a Readable and a Writable with stream.Duplex.from({ readable, writable }))`);
  }
}

/**
 * The sending side, for {@link Domain.migrate}: resolves once the destination runs the
 * domain and the source is destroyed.
 */
export async function sendMigration(ts: ToolstackConnection, domid: number, stream: Duplex, options: MigrateOptions = {}): Promise<void> {
  const op = 'domain.migrate';
  checkStream(stream, op);
  const { signal, onProgress } = options;
  const live = options.live ?? true;
  if (typeof live !== 'boolean') throw new TypeError(`${op}: live must be a boolean`);
  if (onProgress !== undefined && typeof onProgress !== 'function') throw new TypeError(`${op}: onProgress must be a function`);
  if (signal?.aborted) throw abortError(signal);
  const info = await ts.domainInfo(domid);
  if (domid === 0) throw new XenError('XEN_ERROR_INVAL', `XEN_ERROR_INVAL: dom0 cannot be migrated (${op})`, { op, domid });
  let bytes = 0;
  const progress = (phase: MigrationProgress['phase']) => onProgress?.({ phase, bytes });
  const ch = new Channel(stream);
  ch.resume();
  try {
    // 1-2: the offer
    progress('offer');
    let answer: Frame;
    try {
      await ch.sendJson('H', { version: VERSION, name: info.name, uuid: info.uuid, memory: info.memory.current, live });
      answer = await ch.next(signal);
    } catch (err) {
      if ((err as Error).name === 'AbortError') throw err;
      throw migrationError('XEN_MIGRATION_FAILED', `no answer to the offer: ${reason(err)}`, op, domid, err);
    }
    if (answer.type === 'N') throw migrationError('XEN_MIGRATION_REFUSED', `the destination refused: ${parseJson<{ message?: string }>(answer).message ?? 'no reason given'}`, op, domid);
    if (answer.type !== 'Y') throw migrationError('XEN_MIGRATION_FAILED', `the destination answered ${answer.type} to the offer`, op, domid);

    // 3: the image; on failure the backend has resumed the domain
    progress('image');
    const sink = new Writable({
      highWaterMark: MAX_FRAME,
      write(chunk: Buffer, _enc, cb) {
        const parts: Buffer[] = [];
        for (let at = 0; at < chunk.length; at += MAX_FRAME) parts.push(chunk.subarray(at, at + MAX_FRAME));
        (async () => {
          for (const part of parts) {
            await ch.send('D', part);
            bytes += part.length;
            progress('image');
          }
        })().then(() => cb(), cb);
      },
    });
    sink.on('error', () => undefined);
    try {
      await ts.migrateSuspend(domid, sink, { live, ...(signal === undefined ? {} : { signal }) });
    } catch (err) {
      await ch.sendJson('X', { message: reason(err) }).catch(() => undefined);
      if ((err as Error).name === 'AbortError' || (err instanceof XenError && err.code === 'XEN_MIGRATION_UNSUPPORTED')) throw err;
      throw migrationError('XEN_MIGRATION_FAILED', `sending the image failed, the domain runs on here: ${reason(err)}`, op, domid, err);
    }

    // 4: the destination restores; from here the source waits, suspended
    const resume = async (why: string, cause?: unknown): Promise<never> => {
      await ts.migrateResume(domid).catch(() => undefined);
      throw migrationError('XEN_MIGRATION_FAILED', `${why}; the domain was resumed here`, op, domid, cause);
    };
    try {
      await ch.send('E');
      progress('restore');
      answer = await ch.next(signal);
    } catch (err) {
      await ch.sendJson('X', { message: reason(err) }).catch(() => undefined);
      if ((err as Error).name === 'AbortError') {
        await ts.migrateResume(domid).catch(() => undefined);
        throw err;
      }
      return await resume(`the stream failed before the destination restored the domain: ${reason(err)}`, err);
    }
    if (answer.type !== 'R') return await resume(`the destination failed to restore the domain: ${answer.type === 'F' ? parseJson<{ message?: string }>(answer).message : `answered ${answer.type}`}`);

    // 5-6: the hand-over
    progress('handover');
    try {
      await ts.rename(domid, `${info.name}${MIGRATED_AWAY}`);
    } catch (err) {
      await ch.sendJson('X', { message: reason(err) }).catch(() => undefined);
      return await resume(`renaming the source before the hand-over failed: ${reason(err)}`, err);
    }
    try {
      await ch.send('G');
      answer = await ch.next();
    } catch (err) {
      // The destination may run the domain already: leave ours suspended, under its away name.
      throw migrationError('XEN_MIGRATION_UNCONFIRMED', `the stream failed after the hand-over; the domain may run at the destination, and is left suspended here as ${info.name}${MIGRATED_AWAY} (destroy it, or resume it only if the destination has not started it)`, op, domid, err);
    }
    if (answer.type !== 'K') {
      await ts.rename(domid, info.name).catch(() => undefined);
      return await resume(`the destination could not start the domain: ${answer.type === 'F' ? parseJson<{ message?: string }>(answer).message : `answered ${answer.type}`}`);
    }

    // 7: the destination runs it
    await ts.destroy(domid);
    progress('done');
  } finally {
    ch.detach();
  }
}

/**
 * The receiving side, for {@link Domains.receiveMigration}: resolves with the domid of
 * the domain once it runs here (paused with `options.paused`).
 */
export async function receiveMigration(ts: ToolstackConnection, stream: Duplex, options: ReceiveMigrationOptions = {}): Promise<number> {
  const op = 'domains.receiveMigration';
  checkStream(stream, op);
  const { signal } = options;
  if (options.name !== undefined && (typeof options.name !== 'string' || options.name === '')) throw new TypeError(`${op}: name must be a non-empty string`);
  if (signal?.aborted) throw abortError(signal);
  const ch = new Channel(stream);
  ch.resume();
  let domid: number | undefined;
  try {
    // 1-2: the offer
    let offer: { version?: unknown; name?: unknown; uuid?: unknown; memory?: unknown };
    try {
      const frame = await ch.next(signal);
      if (frame.type !== 'H') throw new Error(`the peer began with ${frame.type}, not an offer`);
      offer = parseJson(frame);
    } catch (err) {
      if ((err as Error).name === 'AbortError') throw err;
      throw migrationError('XEN_MIGRATION_FAILED', `no migration offer: ${reason(err)}`, op, undefined, err);
    }
    if (offer.version !== VERSION || typeof offer.name !== 'string' || typeof offer.uuid !== 'string' || typeof offer.memory !== 'number') {
      await ch.sendJson('N', { message: `unsupported offer (version ${String(offer.version)})` }).catch(() => undefined);
      throw migrationError('XEN_MIGRATION_FAILED', 'the offer is not one this version of xenode understands', op);
    }
    const name = options.name ?? offer.name;
    const refusal = await refuse(ts, name, offer.uuid, offer.memory);
    if (refusal !== undefined) {
      await ch.sendJson('N', { message: refusal }).catch(() => undefined);
      throw migrationError('XEN_MIGRATION_REFUSED', refusal, op);
    }

    // 3-4: the image, restored paused under the incoming name (routed before the answer goes)
    // the restore reads the image at its pace: a full image pauses the stream
    const image = new ReadableStream({ read: () => ch.resume() });
    ch.route = (frame) => (frame.type === 'E' ? (image.push(null), true) : image.push(frame.payload));
    ch.onFailure = (err) => image.destroy(err);
    // The first frame after the image: G once R is sent, or X when the sender gives up.
    const after = ch.next().then(
      (f) => (f.type === 'G' ? f : new Error(f.type === 'X' ? `the sender gave up: ${parseJson<{ message?: string }>(f).message ?? ''}` : `the sender sent ${f.type} instead of the hand-over`)),
      (err: unknown) => err as Error,
    );
    void after.then((v) => {
      if (v instanceof Error) image.destroy(v);
    });
    try {
      await ch.send('Y');
    } catch (err) {
      throw migrationError('XEN_MIGRATION_FAILED', `the stream failed after the offer: ${reason(err)}`, op, undefined, err);
    }
    try {
      domid = await ts.migrateRestore(image as Readable, { name: `${name}${INCOMING}`, ...(signal === undefined ? {} : { signal }) });
    } catch (err) {
      await ch.sendJson('F', { message: reason(err) }).catch(() => undefined);
      if ((err as Error).name === 'AbortError') throw err;
      throw migrationError('XEN_MIGRATION_FAILED', `restoring the domain failed: ${reason(err)}`, op, undefined, err);
    }
    ch.route = undefined;
    ch.onFailure = undefined;
    // the image's last push may have paused the stream
    ch.resume();

    // 5-6: the hand-over
    let go: Error | Frame;
    try {
      await ch.sendJson('R', { domid });
      go = await (signal === undefined ? after : Promise.race([after, abortedBy(signal)]));
    } catch (err) {
      go = err as Error;
    }
    if (go instanceof Error) {
      const why = go;
      await ts.destroy(domid).catch(() => undefined);
      domid = undefined;
      if (why.name === 'AbortError') throw why;
      throw migrationError('XEN_MIGRATION_FAILED', `no hand-over from the sender: ${why.message}`, op, undefined, why);
    }
    try {
      await ts.rename(domid, name);
      if (!options.paused) await ts.unpause(domid);
    } catch (err) {
      await ch.sendJson('F', { message: reason(err) }).catch(() => undefined);
      await ts.destroy(domid).catch(() => undefined);
      throw migrationError('XEN_MIGRATION_FAILED', `starting the domain failed: ${reason(err)}`, op, domid, err);
    }
    // The domain is ours now; the sender destroys its copy when this arrives.
    await ch.send('K').catch(() => undefined);
    return domid;
  } finally {
    ch.detach();
  }
}

/** Resolves with an AbortError once `signal` aborts. */
function abortedBy(signal: AbortSignal): Promise<Error> {
  if (signal.aborted) return Promise.resolve(abortError(signal));
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(abortError(signal)), { once: true }));
}

/** Why this host refuses the offer, or undefined. */
async function refuse(ts: ToolstackConnection, name: string, uuid: string, memory: number): Promise<string | undefined> {
  const domains = await ts.listDomains();
  for (const d of domains) {
    // The source itself, when migrating to the same host, holds the name until the hand-over.
    if (d.name === name && d.uuid !== uuid) return `the name ${name} is in use by domain ${d.domid}`;
    if (d.name === `${name}${INCOMING}`) return `a migration of ${name} is already arriving (domain ${d.domid})`;
  }
  const free = (await ts.hostInfo()).freeMemory;
  if (memory > free) return `the domain needs ${memory} MiB and this host has ${free} MiB free`;
  return undefined;
}

/**
 * Event channels: Xen's doorbells between domains. `xen.eventChannels` binds ports;
 * each {@link EventChannel} sends with `notify()` and receives as `'event'` events or
 * through an async iterator.
 */
import { EventEmitter } from 'node:events';
import type { EventChannelConnection, XenBackend } from './backend.js';
import { XenError, abortError, closedError } from './errors.js';
import { VIRQ } from './mock/event-channels.js';

export { VIRQ };

/** What an event on an {@link EventChannel} carries. */
export interface EventChannelEvent {
  /** The local port it arrived on. */
  port: number;
}

/** Options of {@link EventChannel.events}. */
export interface EventChannelEventsOptions {
  /** Ends the iteration (with an AbortError) when aborted. */
  signal?: AbortSignal;
}

function checkDomid(domid: unknown, op: string): number {
  if (typeof domid !== 'number') throw new TypeError(`${op}: domid must be a number`);
  if (!Number.isInteger(domid) || domid < 0 || domid >= 0x7ff0) throw new RangeError(`${op}: domid must be an integer in 0..32751, got ${domid}`);
  return domid;
}

function checkPort(port: unknown, op: string): number {
  if (typeof port !== 'number') throw new TypeError(`${op}: port must be a number`);
  if (!Number.isInteger(port) || port <= 0 || port > 0xffffffff) throw new RangeError(`${op}: port must be a positive integer, got ${port}`);
  return port;
}

/**
 * The event channel ports of a connection to a Xen host. The event channel device is
 * opened on the first bind (so a host without it fails there, with `XEN_UNAVAILABLE`,
 * and XenStore keeps working); closing the `Xen` object unbinds every port.
 *
 * @example
 * ```ts
 * import { connect } from 'xenode';
 * const xen = await connect({ backend: 'mock' });
 * // A channel from dom0 to itself: one end unbound, the other bound to it.
 * const a = await xen.eventChannels.bindUnbound(0);
 * const b = await xen.eventChannels.bindInterdomain(0, a.port);
 * a.once('event', () => console.log('a got an event'));
 * await b.notify();
 * await new Promise((r) => setTimeout(r, 10));
 * await xen.close();
 * ```
 */
export class EventChannels {
  private conn: Promise<EventChannelConnection> | undefined;
  private readonly channels = new Map<number, EventChannel>();
  private listening = 0;
  private closing: Promise<void> | undefined;

  /** @internal Use `xen.eventChannels`. */
  constructor(private readonly backend: XenBackend) {}

  /**
   * Allocates a port that domain `remoteDomid` may connect to (with its own
   * `bindInterdomain(ourDomid, port)`); pass the port to it, e.g. through XenStore.
   */
  async bindUnbound(remoteDomid: number): Promise<EventChannel> {
    checkDomid(remoteDomid, 'eventChannels.bindUnbound');
    const conn = await this.connection('eventChannels.bindUnbound');
    const port = await conn.bindUnbound(remoteDomid);
    return this.adopt(port, { kind: 'unbound', remoteDomid });
  }

  /** Connects to `remotePort`, an unbound port that domain `remoteDomid` allocated for this domain. */
  async bindInterdomain(remoteDomid: number, remotePort: number): Promise<EventChannel> {
    checkDomid(remoteDomid, 'eventChannels.bindInterdomain');
    checkPort(remotePort, 'eventChannels.bindInterdomain');
    const conn = await this.connection('eventChannels.bindInterdomain');
    const port = await conn.bindInterdomain(remoteDomid, remotePort);
    return this.adopt(port, { kind: 'interdomain', remoteDomid, remotePort });
  }

  /**
   * Binds a virtual interrupt (see {@link VIRQ}): e.g. `VIRQ.DOM_EXC`, raised when a
   * domain dies or shuts down. EEXIST when it is bound already (a global VIRQ can be
   * bound once on the whole host; on a real dom0 xenstored holds `DOM_EXC`).
   */
  async bindVirq(virq: number): Promise<EventChannel> {
    if (typeof virq !== 'number') throw new TypeError('eventChannels.bindVirq: virq must be a number');
    if (!Number.isInteger(virq) || virq < 0 || virq > 0xffff) throw new RangeError(`eventChannels.bindVirq: virq must be a small non-negative integer, got ${virq}`);
    const conn = await this.connection('eventChannels.bindVirq');
    const port = await conn.bindVirq(virq);
    return this.adopt(port, { kind: 'virq', virq });
  }

  /** Unbinds every port and closes the device. Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const conn = await this.conn?.catch(() => undefined);
      for (const ch of this.channels.values()) ch.markClosed();
      this.channels.clear();
      await conn?.close();
    })();
    return this.closing;
  }

  private connection(op: string): Promise<EventChannelConnection> {
    if (this.closing !== undefined) return Promise.reject(closedError(op));
    if (this.conn === undefined) {
      const open = this.backend.openEventChannels?.bind(this.backend);
      if (open === undefined) {
        return Promise.reject(new XenError('XEN_UNAVAILABLE', `the ${this.backend.name} backend has no event channels`, { op }));
      }
      const opening = open();
      this.conn = opening.then((conn) => {
        conn.onEvent = (port) => this.channels.get(port)?.dispatch();
        return conn;
      });
      // A failed open is not remembered: the next bind tries again.
      opening.catch(() => {
        this.conn = undefined;
      });
    }
    return this.conn;
  }

  private async adopt(port: number, about: EventChannelInfo): Promise<EventChannel> {
    const conn = await (this.conn as Promise<EventChannelConnection>);
    const ch = new EventChannel(port, about, {
      notify: () => conn.notify(port),
      unbind: async () => {
        this.channels.delete(port);
        if (this.closing === undefined) await conn.unbind(port);
      },
      listening: (delta) => {
        const before = this.listening;
        this.listening += delta;
        if ((before === 0) !== (this.listening === 0)) conn.keepAlive(this.listening > 0);
      },
    });
    this.channels.set(port, ch);
    return ch;
  }
}

/** What a port is bound to. */
interface EventChannelInfo {
  kind: 'unbound' | 'interdomain' | 'virq';
  remoteDomid?: number;
  remotePort?: number;
  virq?: number;
}

interface ChannelOps {
  notify(): Promise<void>;
  unbind(): Promise<void>;
  listening(delta: number): void;
}

/**
 * One bound port. Emits `'event'` ({@link EventChannelEvent}) each time the other end
 * notifies it (notifications that arrive close together may coalesce into one event,
 * as in Xen). While it has an `'event'` listener or a running {@link events} iterator,
 * it keeps the process alive; otherwise it does not.
 *
 * @example
 * ```ts
 * import { connect } from 'xenode';
 * const xen = await connect({ backend: 'mock' });
 * const a = await xen.eventChannels.bindUnbound(0);
 * const b = await xen.eventChannels.bindInterdomain(0, a.port);
 * const ac = new AbortController();
 * setTimeout(() => void b.notify(), 5);
 * for await (const ev of a.events({ signal: ac.signal })) {
 *   console.log('event on port', ev.port);
 *   break;
 * }
 * await a.close();
 * await b.close();
 * await xen.close();
 * ```
 */
export class EventChannel extends EventEmitter {
  /** The local port. */
  readonly port: number;
  /** How the port was bound. */
  readonly kind: 'unbound' | 'interdomain' | 'virq';
  /** The domain at the other end (`unbound`: the one allowed to connect). */
  readonly remoteDomid: number | undefined;
  /** The other end's port, for an `interdomain` channel. */
  readonly remotePort: number | undefined;
  /** The virtual interrupt, for a `virq` channel. */
  readonly virq: number | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;
  private iterators = new Set<(ev: EventChannelEvent | null) => void>();
  private counted = false;

  /** @internal Use {@link EventChannels}. */
  constructor(
    port: number,
    about: EventChannelInfo,
    private readonly ops: ChannelOps,
  ) {
    super();
    this.port = port;
    this.kind = about.kind;
    this.remoteDomid = about.remoteDomid;
    this.remotePort = about.remotePort;
    this.virq = about.virq;
    this.on('newListener', (name: string | symbol) => name === 'event' && queueMicrotask(() => this.updateListening()));
    this.on('removeListener', (name: string | symbol) => name === 'event' && this.updateListening());
  }

  /** Sends an event to the other end (nothing for an unbound or VIRQ port). XEN_CLOSED once closed. */
  async notify(): Promise<void> {
    if (this.closed) throw closedError('eventChannel.notify');
    await this.ops.notify();
  }

  /**
   * The events of this port, as an async iterator; it ends when the port is closed, or
   * with an AbortError when `signal` aborts. Events that arrive while the loop body runs
   * are queued.
   */
  async *events(options: EventChannelEventsOptions = {}): AsyncGenerator<EventChannelEvent, void, undefined> {
    const { signal } = options;
    if (signal?.aborted) throw abortError(signal);
    if (this.closed) return;
    const queue: (EventChannelEvent | null)[] = [];
    let wake: (() => void) | undefined;
    const push = (ev: EventChannelEvent | null) => {
      queue.push(ev);
      wake?.();
    };
    const onAbort = () => wake?.();
    this.iterators.add(push);
    this.updateListening();
    signal?.addEventListener('abort', onAbort);
    try {
      for (;;) {
        if (signal?.aborted) throw abortError(signal);
        const next = queue.shift();
        if (next === null) return;
        if (next !== undefined) {
          yield next;
          continue;
        }
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.iterators.delete(push);
      this.updateListening();
    }
  }

  /** Unbinds the port (the other end of an interdomain channel becomes unbound). Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const wasClosed = this.closed;
      this.markClosed();
      if (!wasClosed) await this.ops.unbind();
    })();
    return this.closing;
  }

  /** Same as {@link close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** @internal An event arrived. */
  dispatch(): void {
    if (this.closed) return;
    const ev = { port: this.port };
    for (const push of this.iterators) push(ev);
    this.emit('event', ev);
  }

  /** @internal The port is gone (closed, or its device closed): end iterators, stop keeping alive. */
  markClosed(): void {
    if (this.closed) return;
    this.closed = true;
    for (const push of this.iterators) push(null);
    this.updateListening();
  }

  private updateListening(): void {
    const want = !this.closed && (this.listenerCount('event') > 0 || this.iterators.size > 0);
    if (want !== this.counted) {
      this.counted = want;
      this.ops.listening(want ? 1 : -1);
    }
  }
}

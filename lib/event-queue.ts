/**
 * The async iterator behind `xen.domains.events()` and `domain.events()`: events are
 * queued (none is merged: each says something different) until taken; the iteration
 * ends when the consumer breaks out, the signal aborts (AbortError) or the source closes.
 *
 * An iterator nobody waits on does not keep the process alive; a pending `next()` does
 * (someone awaits an event, as a pending request would), whatever the transport.
 */
import { abortError } from './errors.js';

export class EventQueue<T> implements AsyncIterableIterator<T> {
  private readonly queued: T[] = [];
  private readers: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void }[] = [];
  private error: unknown;
  private done = false;
  private readonly onAbort: () => void;
  private keepAlive: NodeJS.Timeout | undefined;

  /** `stop` is called once when the iteration ends, for any reason. */
  constructor(
    private readonly stop: () => void,
    private readonly signal?: AbortSignal,
  ) {
    this.onAbort = () => this.fail(abortError(signal as AbortSignal));
    if (signal?.aborted) this.fail(abortError(signal));
    else signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  push(value: T): void {
    if (this.done) return;
    const reader = this.readers.shift();
    if (reader) reader.resolve({ value, done: false });
    else this.queued.push(value);
    this.hold();
  }

  /** Ends with an error: waiting readers reject, or the next `next()` does. */
  fail(err: unknown): void {
    if (this.done) return;
    this.finish();
    const readers = this.readers.splice(0);
    if (readers.length === 0) this.error = err;
    for (const r of readers) r.reject(err);
  }

  /** Ends normally (after the events already queued). */
  end(): void {
    if (this.done) return;
    this.finish();
    if (this.queued.length === 0) for (const r of this.readers.splice(0)) r.resolve({ value: undefined, done: true });
  }

  /** Holds the event loop open exactly while a reader waits. */
  private hold(): void {
    if (this.readers.length > 0 && !this.done) this.keepAlive ??= setInterval(() => undefined, 1 << 30);
    else if (this.keepAlive !== undefined) {
      clearInterval(this.keepAlive);
      this.keepAlive = undefined;
    }
  }

  private finish(): void {
    this.done = true;
    this.hold();
    this.signal?.removeEventListener('abort', this.onAbort);
    this.stop();
  }

  next(): Promise<IteratorResult<T>> {
    if (this.queued.length > 0 && this.error === undefined) return Promise.resolve({ value: this.queued.shift() as T, done: false });
    if (this.done) {
      if (this.error !== undefined) {
        const err = this.error;
        this.error = undefined;
        this.queued.length = 0;
        return Promise.reject(err);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    const pending = new Promise<IteratorResult<T>>((resolve, reject) => this.readers.push({ resolve, reject }));
    this.hold();
    return pending;
  }

  async return(): Promise<IteratorResult<T>> {
    this.queued.length = 0;
    this.error = undefined;
    this.end();
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}

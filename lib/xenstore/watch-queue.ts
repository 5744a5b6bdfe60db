import type { WatchEvent } from './xenstore.js';

/**
 * The async iterator behind `XenStore#watch`: a queue of events not yet taken, in which a
 * path already waiting is not queued twice (a watch event means "look again", so merging
 * loses nothing and bounds memory by the number of distinct paths).
 */
export class WatchQueue implements AsyncIterableIterator<WatchEvent> {
  private readonly events: WatchEvent[] = [];
  private readonly waiting = new Set<string>();
  private readers: { resolve: (r: IteratorResult<WatchEvent>) => void; reject: (e: unknown) => void }[] = [];
  private error: unknown;
  private done = false;
  /** Called once when the iteration ends for any reason. */
  onEnd: (() => void) | undefined;

  constructor(private readonly unregister: () => Promise<void>) {}

  push(event: WatchEvent): void {
    if (this.done) return;
    const reader = this.readers.shift();
    if (reader) return reader.resolve({ value: event, done: false });
    if (this.waiting.has(event.path)) return;
    this.waiting.add(event.path);
    this.events.push(event);
  }

  /** Ends the iteration with an error: queued events are dropped, readers reject. */
  fail(err: unknown): void {
    if (this.done) return;
    this.finish();
    const readers = this.readers.splice(0);
    // The error is reported once: to the readers waiting now, else to the next next().
    if (readers.length === 0) this.error = err;
    for (const r of readers) r.reject(err);
  }

  /** Ends the iteration normally: readers get `done`. */
  end(): void {
    if (this.done) return;
    this.finish();
    for (const r of this.readers.splice(0)) r.resolve({ value: undefined, done: true });
  }

  private finish(): void {
    this.done = true;
    this.events.length = 0;
    this.waiting.clear();
    this.onEnd?.();
  }

  next(): Promise<IteratorResult<WatchEvent>> {
    const event = this.events.shift();
    if (event) {
      this.waiting.delete(event.path);
      return Promise.resolve({ value: event, done: false });
    }
    if (this.done) {
      if (this.error !== undefined) {
        const err = this.error;
        this.error = undefined; // reported once; the iterator is finished afterwards
        return Promise.reject(err);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => this.readers.push({ resolve, reject }));
  }

  async return(): Promise<IteratorResult<WatchEvent>> {
    const wasDone = this.done;
    this.end();
    this.error = undefined;
    if (!wasDone) await this.unregister();
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<WatchEvent> {
    return this;
  }
}

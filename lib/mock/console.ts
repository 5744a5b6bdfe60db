/**
 * The simulated console: what xenconsoled keeps of a guest's output (a bounded log, like
 * its ring plus buffer) and the byte streams `openConsole` hands out. The simulated guest
 * writes to it; a stream's writes go to the guest's input handler.
 */
import { Duplex } from 'node:stream';

/** How much output the console keeps for streams opened later (bytes). */
export const CONSOLE_KEEP = 16 * 1024;

export class ConsoleRing {
  private log: Buffer = Buffer.alloc(0);
  private readonly readers = new Set<Duplex>();
  private ended = false;

  /** Receives what a console stream writes (the guest's keyboard). */
  constructor(private readonly onInput: (data: Buffer) => void) {}

  /** The guest writes output. */
  write(data: string | Buffer): void {
    if (this.ended) return;
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    this.log = Buffer.concat([this.log, buf]);
    if (this.log.length > CONSOLE_KEEP) this.log = this.log.subarray(this.log.length - CONSOLE_KEEP);
    for (const r of this.readers) r.push(buf);
  }

  /** Everything kept so far. */
  contents(): Buffer {
    return Buffer.from(this.log);
  }

  /** Replaces the kept output (a restored domain brings its console log along). */
  restore(log: Buffer): void {
    this.log = Buffer.from(log.subarray(Math.max(0, log.length - CONSOLE_KEEP)));
  }

  /**
   * A stream on the console: first what is kept, then new output; writes go to the guest.
   * Destroying it detaches it; the domain's death ends it.
   */
  open(): Duplex {
    const stream = new Duplex({
      read: () => undefined,
      write: (chunk: Buffer, _enc, cb) => {
        if (!this.ended) this.onInput(Buffer.from(chunk));
        cb();
      },
      final: (cb) => {
        this.readers.delete(stream);
        cb();
      },
      destroy: (err, cb) => {
        this.readers.delete(stream);
        cb(err);
      },
    });
    if (this.ended) {
      stream.push(null);
      return stream;
    }
    if (this.log.length > 0) stream.push(Buffer.from(this.log));
    this.readers.add(stream);
    return stream;
  }

  /** The domain is gone: every stream ends. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    for (const r of this.readers) r.push(null);
    this.readers.clear();
  }
}

/**
 * Outgoing side of a XenStore connection: frames are written straight into a shared
 * slab and every frame queued in the same tick leaves in one `write()` call. A pipelined
 * client then costs one syscall per batch instead of one per request, and no Buffer is
 * allocated per message.
 */
import { HEADER_SIZE, PAYLOAD_MAX } from './wire.js';

/** Smallest slab allocated; frames are at most 4112 bytes, so one holds many. */
const SLAB_SIZE = 64 * 1024;

/**
 * Builds frames in place and flushes them, batched, to `sink`.
 *
 * Usage per frame: {@link begin}, then {@link string} / {@link bytes} for the payload, then
 * {@link end}, which either commits the frame (and schedules a flush) or, when the payload
 * exceeds {@link PAYLOAD_MAX}, rolls it back so nothing of it is ever sent.
 */
export class FrameWriter {
  private slab: Buffer = Buffer.allocUnsafeSlow(SLAB_SIZE);
  /** Start of the bytes committed but not yet flushed. */
  private flushed = 0;
  /** End of the committed bytes. */
  private committed = 0;
  /** Write position inside the frame being built. */
  private cursor = 0;
  /** Slab regions filled before the current slab ran out, still to be flushed. */
  private full: Buffer[] = [];
  private scheduled = false;
  private stopped = false;
  private readonly flushNow = (): void => this.flush();

  constructor(private readonly sink: (chunk: Buffer) => void) {}

  /**
   * Starts a frame. `maxPayload` bounds the bytes the payload may take (3 per UTF-16 unit
   * of a string, plus its NUL), so the frame never straddles two slabs.
   */
  begin(type: number, reqId: number, txId: number, maxPayload: number): void {
    const need = HEADER_SIZE + maxPayload;
    if (this.slab.length - this.committed < need) this.newSlab(need);
    const s = this.slab;
    const at = this.committed;
    s.writeUInt32LE(type, at);
    s.writeUInt32LE(reqId, at + 4);
    s.writeUInt32LE(txId >>> 0, at + 8);
    this.cursor = at + HEADER_SIZE;
  }

  /** Appends `text` in UTF-8 and its terminating NUL. */
  string(text: string): void {
    this.cursor += this.slab.write(text, this.cursor, 'utf8');
    this.slab[this.cursor++] = 0;
  }

  /** Appends raw bytes, without a terminator. */
  bytes(data: Uint8Array): void {
    this.slab.set(data, this.cursor);
    this.cursor += data.length;
  }

  /**
   * Finishes the frame. Returns its payload length, or -1 when that exceeds
   * {@link PAYLOAD_MAX}: the frame is then dropped and nothing is queued.
   */
  end(): number {
    const len = this.cursor - this.committed - HEADER_SIZE;
    if (len > PAYLOAD_MAX) return -1;
    this.slab.writeUInt32LE(len, this.committed + 12);
    this.committed = this.cursor;
    if (!this.scheduled) {
      this.scheduled = true;
      // nextTick runs once the current microtask queue has drained, so requests issued by
      // every promise continuation of one batch of replies share a single write.
      process.nextTick(this.flushNow);
    }
    return len;
  }

  /** Hands every committed frame to the sink now. */
  flush(): void {
    this.scheduled = false;
    if (this.stopped) return;
    if (this.full.length > 0) {
      for (const chunk of this.full) this.sink(chunk);
      this.full = [];
    }
    if (this.committed > this.flushed) {
      this.sink(this.slab.subarray(this.flushed, this.committed));
      this.flushed = this.committed;
    }
  }

  /** Drops whatever is queued; later frames are built but never sent. */
  stop(): void {
    this.stopped = true;
    this.full = [];
    this.flushed = this.committed;
  }

  private newSlab(need: number): void {
    if (this.committed > this.flushed) this.full.push(this.slab.subarray(this.flushed, this.committed));
    // Earlier regions of the old slab may still sit in the stream's queue; they are never
    // written to again, so abandoning the slab is safe.
    this.slab = Buffer.allocUnsafeSlow(Math.max(SLAB_SIZE, need));
    this.flushed = 0;
    this.committed = 0;
  }
}

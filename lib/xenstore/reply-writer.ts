/**
 * The outgoing side of a served connection: replies and watch events are framed straight
 * into a slab and taken out as one chunk per batch, so answering a pipelined burst of
 * requests costs one socket write and no allocation per message.
 */
import { HEADER_SIZE, PAYLOAD_MAX } from './wire.js';

const SLAB_SIZE = 64 * 1024;

/** Frames messages into a growing batch; {@link take} hands the batch over. */
export class ReplyWriter {
  private slab: Buffer = Buffer.allocUnsafeSlow(SLAB_SIZE);
  /** Start of the bytes not yet taken. */
  private start = 0;
  /** End of the framed bytes. */
  private end = 0;
  /** Earlier slabs' untaken bytes, when a batch outgrew one slab. */
  private full: Buffer[] = [];

  /** Whether anything waits to be taken. */
  get pending(): boolean {
    return this.end > this.start || this.full.length > 0;
  }

  /** A frame whose payload is `payload` as is. Returns false, framing nothing, past PAYLOAD_MAX. */
  bytes(type: number, reqId: number, txId: number, payload: Uint8Array): boolean {
    if (payload.length > PAYLOAD_MAX) return false;
    const at = this.header(type, reqId, txId, payload.length);
    this.slab.set(payload, at);
    this.end = at + payload.length;
    return true;
  }

  /**
   * A frame whose payload is `parts`, each in latin1 and NUL-terminated, plus one more NUL
   * when `terminator` is set. Returns false, framing nothing, when that exceeds PAYLOAD_MAX.
   */
  strings(type: number, reqId: number, txId: number, parts: readonly string[], terminator = false): boolean {
    let len = terminator ? 1 : 0;
    for (const p of parts) len += p.length + 1;
    if (len > PAYLOAD_MAX) return false;
    let at = this.header(type, reqId, txId, len);
    const slab = this.slab;
    for (const p of parts) {
      at += slab.write(p, at, 'latin1');
      slab[at++] = 0;
    }
    if (terminator) slab[at++] = 0;
    this.end = at;
    return true;
  }

  /** The framed bytes since the last call, or undefined when there are none. */
  take(): Buffer | undefined {
    if (!this.pending) return undefined;
    const tail = this.slab.subarray(this.start, this.end);
    this.start = this.end;
    if (this.full.length === 0) return tail;
    const out = Buffer.concat([...this.full, tail]);
    this.full = [];
    return out;
  }

  /** Writes a header for a payload of `len` bytes, making room first; returns where the payload goes. */
  private header(type: number, reqId: number, txId: number, len: number): number {
    const need = HEADER_SIZE + len;
    if (this.slab.length - this.end < need) {
      // Bytes already taken may still be queued in the socket: never overwrite, start a new slab.
      if (this.end > this.start) this.full.push(this.slab.subarray(this.start, this.end));
      this.slab = Buffer.allocUnsafeSlow(Math.max(SLAB_SIZE, need));
      this.start = 0;
      this.end = 0;
    }
    const s = this.slab;
    const at = this.end;
    s.writeUInt32LE(type, at);
    s.writeUInt32LE(reqId >>> 0, at + 4);
    s.writeUInt32LE(txId >>> 0, at + 8);
    s.writeUInt32LE(len, at + 12);
    return at + HEADER_SIZE;
  }
}

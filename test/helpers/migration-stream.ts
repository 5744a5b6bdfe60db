/**
 * Follows a libxl migration stream as it is written (docs/specs/libxl-migration-stream and
 * libxc-migration-stream in Xen's documentation) and counts what a test wants to know:
 * libxc's CHECKPOINT records, one per Remus checkpoint, and libxl's CHECKPOINT_END.
 *
 * Layout: the libxl header (ident "LibxlFmt", version, options: 16 octets), libxl records;
 * the LIBXC_CONTEXT record (type 1, empty) hands the stream to libxc, whose image header
 * and domain header (40 octets) come next, then libxc records. In a checkpointed stream
 * libxc's CHECKPOINT record hands it back to libxl for its records up to CHECKPOINT_END,
 * after which libxc's records of the next checkpoint follow with no new header. Every
 * record is `type u32, body_length u32` (little-endian), the body, and zero padding to 8.
 */

const LIBXL_IDENT = Buffer.from('LibxlFmt', 'latin1');
const LIBXL_HEADER = 16;
const LIBXC_HEADER = 40;
const LIBXL_LIBXC_CONTEXT = 1;
const LIBXL_CHECKPOINT_END = 4;
const LIBXC_END = 0;
const LIBXC_CHECKPOINT = 14;
/** The highest record type either level defines (libxc's X86_MSR_POLICY). */
const HIGHEST_TYPE = 0x12;

type Level = 'libxl-header' | 'libxl' | 'libxc-header' | 'libxc' | 'done';

export class MigrationStreamFollower {
  /** libxc CHECKPOINT records seen: one per checkpoint sent. */
  checkpoints = 0;
  /** libxl CHECKPOINT_END records seen. */
  checkpointEnds = 0;
  /** Records seen at each level. */
  records = { libxl: 0, libxc: 0 };
  /** Bytes seen. */
  bytes = 0;
  /** Set when the stream is not what the format says; nothing more is parsed. */
  error: string | undefined;
  private level: Level = 'libxl-header';
  private pending: Buffer = Buffer.alloc(0);
  /** Body (with padding) still to skip, without buffering it. */
  private skip = 0;

  get finished(): boolean {
    return this.level === 'done';
  }

  push(chunk: Buffer): void {
    this.bytes += chunk.length;
    if (this.error !== undefined || this.level === 'done') return;
    if (this.skip > 0) {
      const n = Math.min(this.skip, chunk.length);
      this.skip -= n;
      chunk = chunk.subarray(n);
    }
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    for (;;) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, this.pending.length);
        this.skip -= n;
        this.pending = this.pending.subarray(n);
        if (this.skip > 0) return;
      }
      if (!this.step()) return;
    }
  }

  /** Consumes one header or record header from `pending`; false when more bytes are needed. */
  private step(): boolean {
    const p = this.pending;
    switch (this.level) {
      case 'done':
        return false;
      case 'libxl-header':
        if (p.length < LIBXL_HEADER) return false;
        if (!p.subarray(0, 8).equals(LIBXL_IDENT)) return this.fail(`no libxl stream ident (got ${p.subarray(0, 8).toString('hex')})`);
        this.pending = p.subarray(LIBXL_HEADER);
        this.level = 'libxl';
        return true;
      case 'libxc-header':
        if (p.length < LIBXC_HEADER) return false;
        if (p.readBigUInt64BE(0) !== 0xffffffffffffffffn || p.readUInt32BE(8) !== 0x58454e46) return this.fail('no libxc image header after LIBXC_CONTEXT');
        this.pending = p.subarray(LIBXC_HEADER);
        this.level = 'libxc';
        return true;
      default: {
        if (p.length < 8) return false;
        const type = p.readUInt32LE(0);
        const length = p.readUInt32LE(4);
        if (type > HIGHEST_TYPE && type < 0x80000000) return this.fail(`unknown ${this.level} record type ${type}`);
        this.pending = p.subarray(8);
        this.skip = Math.ceil(length / 8) * 8;
        this.records[this.level]++;
        if (this.level === 'libxl') {
          if (type === LIBXL_LIBXC_CONTEXT) this.level = this.records.libxc === 0 ? 'libxc-header' : 'libxc';
          else if (type === LIBXL_CHECKPOINT_END) {
            this.checkpointEnds++;
            this.level = 'libxc';
          } else if (type === 0) this.level = 'done';
        } else if (type === LIBXC_CHECKPOINT) {
          this.checkpoints++;
          this.level = 'libxl';
        } else if (type === LIBXC_END) this.level = 'libxl';
        return true;
      }
    }
  }

  private fail(why: string): false {
    this.error = why;
    return false;
  }
}

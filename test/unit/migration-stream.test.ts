/**
 * The migration-stream follower the real-Xen Remus test counts checkpoints with
 * (test/helpers/migration-stream.ts), on streams built here by the format's rules.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MigrationStreamFollower } from '../helpers/migration-stream.js';

function record(type: number, body: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32LE(type, 0);
  head.writeUInt32LE(body.length, 4);
  return Buffer.concat([head, body, Buffer.alloc((8 - (body.length % 8)) % 8)]);
}

function libxlHeader(): Buffer {
  const h = Buffer.alloc(16);
  h.write('LibxlFmt', 0, 'latin1');
  h.writeUInt32BE(2, 8);
  return h;
}

function libxcHeaders(): Buffer {
  const h = Buffer.alloc(40);
  h.writeBigUInt64BE(0xffffffffffffffffn, 0);
  h.writeUInt32BE(0x58454e46, 8);
  h.writeUInt32BE(3, 12);
  h.writeUInt32LE(1, 24); // x86 PV
  h.writeUInt16LE(12, 28);
  h.writeUInt32LE(4, 32);
  h.writeUInt32LE(17, 36);
  return h;
}

/** A Remus stream of `n` checkpoints, each with some page data. */
function remusStream(n: number, pageBytes: number[]): Buffer {
  const parts = [libxlHeader(), record(1), libxcHeaders(), record(2, Buffer.alloc(24)), record(7, Buffer.alloc(4096))];
  for (let i = 0; i < n; i++) {
    parts.push(record(1, Buffer.alloc(pageBytes[i % pageBytes.length] ?? 4096, i)), record(4, Buffer.alloc(123)), record(14));
    parts.push(record(4)); // libxl CHECKPOINT_END
  }
  return Buffer.concat(parts);
}

/** A plain (save or migration) stream: libxc's END, then libxl's END. */
function plainStream(): Buffer {
  return Buffer.concat([libxlHeader(), record(1), libxcHeaders(), record(1, Buffer.alloc(8192)), record(0), record(0)]);
}

describe('MigrationStreamFollower', () => {
  it('counts the checkpoints of a Remus stream however it is split into chunks', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 6 }), fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 4 }), fc.array(fc.integer({ min: 1, max: 9000 }), { minLength: 1 }), (n, pages, cuts) => {
        const stream = remusStream(n, pages);
        const f = new MigrationStreamFollower();
        let at = 0;
        for (let i = 0; at < stream.length; i++) {
          const size = cuts[i % cuts.length] as number;
          f.push(stream.subarray(at, at + size));
          at += size;
        }
        expect(f.error).toBeUndefined();
        expect(f.checkpoints).toBe(n);
        expect(f.checkpointEnds).toBe(n);
        expect(f.bytes).toBe(stream.length);
      }),
    );
  });

  it('sees the end of a plain stream and no checkpoint', () => {
    const f = new MigrationStreamFollower();
    f.push(plainStream());
    expect(f).toMatchObject({ checkpoints: 0, finished: true, error: undefined, records: { libxl: 2, libxc: 2 } });
  });

  it('reports a stream that is not a libxl stream, or a record type no level defines', () => {
    const f = new MigrationStreamFollower();
    f.push(Buffer.alloc(64, 7));
    expect(f.error).toMatch(/no libxl stream ident/);
    const g = new MigrationStreamFollower();
    g.push(Buffer.concat([libxlHeader(), record(1), libxcHeaders(), record(0x4242)]));
    expect(g.error).toMatch(/unknown libxc record type 16962/);
    const h = new MigrationStreamFollower();
    h.push(Buffer.concat([libxlHeader(), record(1), Buffer.alloc(40)]));
    expect(h.error).toMatch(/no libxc image header/);
  });
});

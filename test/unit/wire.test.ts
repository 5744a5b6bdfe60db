import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  FrameDecoder,
  HEADER_SIZE,
  PAYLOAD_MAX,
  XsType,
  encodeMessage,
  formatPermission,
  parsePermission,
  parseStrings,
  pathAndValue,
  splitFirst,
  strings,
  typeName,
} from '../../lib/xenstore/wire.js';
import { XenError } from '../../lib/errors.js';

describe('wire framing', () => {
  it('lays out the xsd_sockmsg header little-endian', () => {
    const buf = encodeMessage(XsType.READ, 0x01020304, 7, strings('/a'));
    expect(buf.length).toBe(HEADER_SIZE + 3);
    expect([...buf.subarray(0, 16)]).toEqual([2, 0, 0, 0, 4, 3, 2, 1, 7, 0, 0, 0, 3, 0, 0, 0]);
    expect(buf.subarray(16).toString('latin1')).toBe('/a\0');
  });

  it('numbers every message type as xs_wire.h does', () => {
    expect(XsType.SET_TARGET).toBe(19);
    expect(XsType.RESET_WATCHES).toBe(21);
    expect(XsType.DIRECTORY_PART).toBe(22);
    expect(typeName(XsType.WATCH_EVENT)).toBe('XS_WATCH_EVENT');
    expect(typeName(20)).toBe('XS_20');
  });

  it('refuses a payload over 4096 bytes with E2BIG', () => {
    expect(() => encodeMessage(XsType.WRITE, 1, 0, Buffer.alloc(PAYLOAD_MAX + 1))).toThrow(
      expect.objectContaining({ code: 'E2BIG' }),
    );
    expect(encodeMessage(XsType.WRITE, 1, 0, Buffer.alloc(PAYLOAD_MAX)).length).toBe(HEADER_SIZE + PAYLOAD_MAX);
  });

  it('decodes any sequence of messages however the stream is chunked', () => {
    const msg = fc.record({
      type: fc.integer({ min: 0, max: 22 }),
      reqId: fc.nat({ max: 0xffffffff }),
      txId: fc.nat({ max: 0xffffffff }),
      payload: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
    });
    fc.assert(
      fc.property(fc.array(msg, { maxLength: 20 }), fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1 }), (msgs, cuts) => {
        const stream = Buffer.concat(msgs.map((m) => encodeMessage(m.type, m.reqId, m.txId, m.payload)));
        const dec = new FrameDecoder();
        const got = [];
        let off = 0;
        for (let i = 0; off < stream.length; i++) {
          const n = cuts[i % cuts.length] as number;
          got.push(...dec.push(stream.subarray(off, off + n)));
          off += n;
        }
        expect(dec.buffered).toBe(0);
        expect(got).toEqual(msgs);
      }),
    );
  });

  it('treats a header announcing more than 4096 bytes as a protocol violation', () => {
    const hdr = Buffer.alloc(HEADER_SIZE);
    hdr.writeUInt32LE(XsType.READ, 0);
    hdr.writeUInt32LE(PAYLOAD_MAX + 1, 12);
    const dec = new FrameDecoder();
    let err: unknown;
    try {
      dec.push(hdr);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(XenError);
    expect((err as XenError).code).toBe('XEN_PROTOCOL');
  });
});

describe('payload helpers', () => {
  it('joins and splits NUL-terminated strings', () => {
    expect(strings('a', '', 'b').toString('latin1')).toBe('a\0\0b\0');
    expect(parseStrings(Buffer.from('a\0\0b\0'))).toEqual(['a', '', 'b']);
    expect(parseStrings(Buffer.from('a\0b'))).toEqual(['a', 'b']);
    expect(parseStrings(Buffer.alloc(0))).toEqual([]);
  });

  it('keeps a written value byte for byte, NULs included', () => {
    const value = Buffer.from([0, 1, 2, 0, 255]);
    const split = splitFirst(pathAndValue('/p', value));
    expect(split?.[0]).toBe('/p');
    expect(split?.[1].equals(value)).toBe(true);
    expect(splitFirst(Buffer.from('no-nul'))).toBeUndefined();
  });

  it('formats and parses permission entries', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), fc.boolean(), fc.boolean(), (domid, read, write) => {
        const p = { domid, read, write };
        expect(parsePermission(formatPermission(p))).toEqual(p);
      }),
    );
    expect(formatPermission({ domid: 5, read: true, write: false })).toBe('r5');
    expect(formatPermission({ domid: 0, read: false, write: false })).toBe('n0');
    for (const bad of ['', 'x1', 'r', 'r-1', 'b70000', 'r 1', 'R1']) expect(parsePermission(bad)).toBeUndefined();
  });
});

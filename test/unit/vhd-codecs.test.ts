import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BAT_UNUSED, batBytes, decodeBat, encodeBat } from '../../lib/vhd/bat.js';
import { BATMAP_VERSION, batmapChecksum, batmapSectors, decodeBatmapHeader, encodeBatmapHeader, verifyBatmap } from '../../lib/vhd/batmap.js';
import { allSet, bitmapBytes, setBit, testBit } from '../../lib/vhd/bitmap.js';
import { onesComplementChecksum } from '../../lib/vhd/checksum.js';
import { fromVhdTimestamp, toVhdTimestamp, uuidFromBytes, uuidToBytes } from '../../lib/vhd/fields.js';
import { DiskType, FOOTER_SIZE, type VhdFooter, decodeFooter, encodeFooter } from '../../lib/vhd/footer.js';
import { chsGeometry } from '../../lib/vhd/geometry.js';
import { HEADER_SIZE, type VhdHeader, decodeHeader, encodeHeader } from '../../lib/vhd/header.js';
import { LocatorCode, decodeLocatorData, encodeLocatorData, parentCandidates } from '../../lib/vhd/locator.js';

const uuid = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => uuidFromBytes(b));
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u64 = fc.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn });

const footerArb: fc.Arbitrary<VhdFooter> = fc.record({
  features: u32,
  formatVersion: u32,
  dataOffset: u64,
  timestamp: u32,
  creatorApplication: fc.string({ unit: fc.constantFrom('t', 'a', 'p', ' ', '\0', 'q', 'm'), minLength: 4, maxLength: 4 }),
  creatorVersion: u32,
  creatorHostOs: u32,
  originalSize: u64,
  currentSize: u64,
  geometry: fc.record({ cylinders: fc.integer({ min: 0, max: 0xffff }), heads: fc.integer({ min: 0, max: 255 }), sectorsPerTrack: fc.integer({ min: 0, max: 255 }) }),
  diskType: fc.constantFrom(DiskType.fixed, DiskType.dynamic, DiskType.differencing),
  uuid,
  savedState: fc.boolean(),
  hidden: fc.boolean(),
});

const headerArb: fc.Arbitrary<VhdHeader> = fc.record({
  dataOffset: u64,
  tableOffset: u64,
  headerVersion: u32,
  maxTableEntries: u32,
  blockSize: u32,
  parentUuid: uuid,
  parentTimestamp: u32,
  parentUnicodeName: fc.string({ maxLength: 255, unit: 'grapheme-composite' }).filter((s) => !s.includes('\0') && Buffer.byteLength(s, 'utf16le') <= 510),
  parentLocators: fc.array(fc.record({ code: u32, dataSpace: u32, dataLength: u32, dataOffset: u64 }), { minLength: 8, maxLength: 8 }),
});

describe('VHD footer', () => {
  it('round-trips every field', () => {
    fc.assert(
      fc.property(footerArb, (f) => {
        const b = encodeFooter(f);
        expect(b.length).toBe(FOOTER_SIZE);
        expect(decodeFooter(b, 'x')).toEqual(f);
      }),
    );
  });

  it('lays fields out big-endian at the spec offsets, with a one\'s-complement checksum', () => {
    const f: VhdFooter = {
      features: 2, formatVersion: 0x00010000, dataOffset: 512n, timestamp: 0x01020304, creatorApplication: 'tap\0',
      creatorVersion: 0x00010003, creatorHostOs: 0x5769326b, originalSize: 0x1_0000_0000n, currentSize: 0x1_0000_0000n,
      geometry: { cylinders: 8322, heads: 16, sectorsPerTrack: 63 }, diskType: 3, uuid: '00112233-4455-6677-8899-aabbccddeeff',
      savedState: false, hidden: true,
    };
    const b = encodeFooter(f);
    expect(b.toString('latin1', 0, 8)).toBe('conectix');
    expect(b.readUInt32BE(12)).toBe(0x00010000);
    expect(b.readBigUInt64BE(16)).toBe(512n);
    expect(b.toString('latin1', 28, 32)).toBe('tap\0');
    expect(b.readBigUInt64BE(48)).toBe(0x1_0000_0000n);
    expect([...b.subarray(56, 60)]).toEqual([0x20, 0x82, 16, 63]);
    expect(b.readUInt32BE(60)).toBe(3);
    expect(b.toString('hex', 68, 84)).toBe('00112233445566778899aabbccddeeff');
    expect(b[85]).toBe(1);
    let sum = 0;
    for (let i = 0; i < 512; i++) if (i < 64 || i >= 68) sum += b[i] as number;
    expect(b.readUInt32BE(64)).toBe(~sum >>> 0);
  });

  it('rejects a flipped byte with VHD_BAD_CHECKSUM and a wrong cookie with VHD_BAD_FOOTER', () => {
    fc.assert(
      fc.property(footerArb, fc.integer({ min: 8, max: 511 }), fc.integer({ min: 1, max: 255 }), (f, at, x) => {
        const b = encodeFooter(f);
        b[at] = (b[at] as number) ^ x;
        // Changing only the checksum field's own bytes, or the disk type, may fail either way.
        expect(() => decodeFooter(b, '/d.vhd')).toThrow(expect.objectContaining({ code: expect.stringMatching(/^VHD_BAD_(CHECKSUM|FOOTER)$/), path: '/d.vhd' }));
      }),
    );
    const b = encodeFooter(fc.sample(footerArb, 1)[0] as VhdFooter);
    b.write('conectiX', 0, 'latin1');
    expect(() => decodeFooter(b, '/d.vhd')).toThrow(expect.objectContaining({ code: 'VHD_BAD_FOOTER' }));
  });
});

describe('VHD dynamic header', () => {
  it('round-trips every field, the parent name as UTF-16BE', () => {
    fc.assert(
      fc.property(headerArb, (h) => {
        const b = encodeHeader(h);
        expect(b.length).toBe(HEADER_SIZE);
        expect(decodeHeader(b, 'x')).toEqual(h);
      }),
    );
  });

  it('stores the parent name big-endian and checks cookie and checksum', () => {
    const h = fc.sample(headerArb, 1)[0] as VhdHeader;
    const b = encodeHeader({ ...h, parentUnicodeName: 'pé' });
    expect(b.toString('latin1', 0, 8)).toBe('cxsparse');
    expect([...b.subarray(64, 68)]).toEqual([0x00, 0x70, 0x00, 0xe9]);
    const flipped = Buffer.from(b);
    flipped[100] = (flipped[100] as number) ^ 1;
    expect(() => decodeHeader(flipped, 'x')).toThrow(expect.objectContaining({ code: 'VHD_BAD_CHECKSUM' }));
    const cookie = Buffer.from(b);
    cookie[0] = 0;
    expect(() => decodeHeader(cookie, 'x')).toThrow(expect.objectContaining({ code: 'VHD_BAD_HEADER' }));
  });
});

describe('BAT, bitmaps and batmap', () => {
  it('round-trips a BAT padded to a sector with unused entries', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(u32, fc.constant(BAT_UNUSED)), { minLength: 1, maxLength: 400 }), (entries) => {
        const bat = Uint32Array.from(entries);
        const b = encodeBat(bat);
        expect(b.length).toBe(batBytes(bat.length));
        expect(b.length % 512).toBe(0);
        expect(b.subarray(bat.length * 4).every((x) => x === 0xff)).toBe(true);
        expect(b.readUInt32BE(0)).toBe(bat[0]);
        expect(decodeBat(b, bat.length)).toEqual(bat);
        expect(decodeBat(Buffer.concat([Buffer.alloc(1), encodeBat(bat)]).subarray(1), bat.length)).toEqual(bat);
      }),
    );
  });

  it('numbers bits most significant first', () => {
    const map = new Uint8Array(2);
    setBit(map, 0);
    setBit(map, 9);
    expect([...map]).toEqual([0x80, 0x40]);
    expect(testBit(map, 0) && testBit(map, 9) && !testBit(map, 1)).toBe(true);
    expect(bitmapBytes(4096)).toBe(512);
    expect(bitmapBytes(8)).toBe(512);
    expect(allSet(new Uint8Array([0xff, 0xe0]), 11)).toBe(true);
    expect(allSet(new Uint8Array([0xff, 0xc0]), 11)).toBe(false);
  });

  it('round-trips the tdbatmap header and verifies the map checksum', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 512, maxLength: 1024 }), u64, (map, offset) => {
        const h = { batmapOffset: offset, batmapSize: 2, batmapVersion: BATMAP_VERSION, checksum: batmapChecksum(map) };
        const b = encodeBatmapHeader(h);
        expect(b.toString('latin1', 0, 8)).toBe('tdbatmap');
        expect(decodeBatmapHeader(b)).toEqual(h);
        verifyBatmap(h, map, 'x');
        let sum = 0;
        for (const x of map) sum += x;
        expect(h.checksum).toBe(~sum >>> 0);
      }),
    );
    expect(decodeBatmapHeader(Buffer.alloc(512))).toBeUndefined();
    expect(() => verifyBatmap({ batmapOffset: 0n, batmapSize: 1, batmapVersion: BATMAP_VERSION, checksum: 1 }, new Uint8Array(512), '/x')).toThrow(
      expect.objectContaining({ code: 'VHD_BAD_CHECKSUM', path: '/x' }),
    );
    expect(batmapSectors(4096)).toBe(1);
    expect(batmapSectors(4097)).toBe(2);
  });

  it('computes the one\'s-complement sum skipping the checksum field', () => {
    expect(onesComplementChecksum(new Uint8Array([1, 2, 3]))).toBe(~6 >>> 0);
    expect(onesComplementChecksum(new Uint8Array([1, 9, 9, 9, 9, 2]), 1)).toBe(~3 >>> 0);
  });
});

describe('CHS geometry (the spec\'s algorithm)', () => {
  it.each([
    [10 * 1024 * 1024, { cylinders: 301, heads: 4, sectorsPerTrack: 17 }],
    [100 * 1024 * 1024, { cylinders: 1003, heads: 12, sectorsPerTrack: 17 }],
    [1024 ** 3, { cylinders: 2080, heads: 16, sectorsPerTrack: 63 }],
    [4 * 1024 ** 3, { cylinders: 8322, heads: 16, sectorsPerTrack: 63 }],
    [127 * 1024 ** 3, { cylinders: 65278, heads: 16, sectorsPerTrack: 255 }],
    [2040 * 1024 ** 3, { cylinders: 65535, heads: 16, sectorsPerTrack: 255 }],
  ])('%d bytes', (size, g) => {
    expect(chsGeometry(size)).toEqual(g);
  });

  it('never describes more sectors than the disk has (below the CHS maximum)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 65535 * 16 * 255 }), (sectors) => {
        const g = chsGeometry(sectors * 512);
        expect(g.cylinders * g.heads * g.sectorsPerTrack).toBeLessThanOrEqual(sectors);
      }),
    );
  });
});

describe('fields and parent locators', () => {
  it('round-trips UUIDs and timestamps from 2000-01-01', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (b) => {
      expect([...uuidToBytes(uuidFromBytes(b))]).toEqual([...b]);
    }));
    expect(toVhdTimestamp(new Date('2000-01-01T00:00:10Z'))).toBe(10);
    expect(fromVhdTimestamp(10).toISOString()).toBe('2000-01-01T00:00:10.000Z');
  });

  it('writes W2ku absolute and W2ru relative in UTF-16LE, MacX as a UTF-8 file:// URL', () => {
    const w2ku = encodeLocatorData(LocatorCode.W2ku, '/srv/vhd/base é.vhd', '/srv/vhd/kids/child.vhd');
    expect(w2ku.toString('utf16le')).toBe('/srv/vhd/base é.vhd');
    expect(encodeLocatorData(LocatorCode.W2ru, '/srv/vhd/base.vhd', '/srv/vhd/kids/child.vhd').toString('utf16le')).toBe('../base.vhd');
    const macx = encodeLocatorData(LocatorCode.MacX, '/srv/vhd/base é.vhd', '/srv/vhd/child.vhd');
    expect(macx.toString('utf8')).toBe('file://./base%20%C3%A9.vhd');
    expect(decodeLocatorData(LocatorCode.MacX, macx)).toBe('./base é.vhd');
    expect(decodeLocatorData(LocatorCode.W2ku, w2ku)).toBe('/srv/vhd/base é.vhd');
    expect(decodeLocatorData(LocatorCode.W2ru, Buffer.from('.\\dir\\p.vhd', 'utf16le'))).toBe('./dir/p.vhd');
    expect(decodeLocatorData(0x4d616320, Buffer.from('alias'))).toBeUndefined();
  });

  it('tries relative locators before absolute ones, resolved against the child', () => {
    const got = parentCandidates(
      [
        { code: LocatorCode.W2ku, path: '/old/place/p.vhd' },
        { code: LocatorCode.MacX, path: './p.vhd' },
        { code: LocatorCode.W2ru, path: './p.vhd' },
      ],
      '/new/place/c.vhd',
    );
    expect(got).toEqual(['/new/place/p.vhd', '/old/place/p.vhd']);
  });
});

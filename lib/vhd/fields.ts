/** Field encodings shared by the footer and the dynamic header. */

/** 2000-01-01T00:00:00Z, the epoch of VHD timestamps, in Unix seconds. */
export const VHD_EPOCH = 946_684_800;

/** Seconds since the VHD epoch for a Date (clamped to the u32 range). */
export function toVhdTimestamp(date: Date): number {
  const secs = Math.floor(date.getTime() / 1000) - VHD_EPOCH;
  return Math.min(Math.max(secs, 0), 0xffffffff);
}

/** The Date a VHD timestamp stands for. */
export function fromVhdTimestamp(secs: number): Date {
  return new Date((secs + VHD_EPOCH) * 1000);
}

/** A 16-byte UUID field, as stored (network byte order), to its canonical text form. */
export function uuidFromBytes(buf: Uint8Array): string {
  const hex = Buffer.from(buf).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** The 16 stored bytes of a UUID given in text form. */
export function uuidToBytes(uuid: string): Buffer {
  const hex = uuid.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new TypeError(`not a UUID: ${uuid}`);
  return Buffer.from(hex, 'hex');
}

/** The all-zero UUID, which a disk without a parent carries as its parent UUID. */
export const NIL_UUID = '00000000-0000-0000-0000-000000000000';

/** Bytes rounded up to a whole number of 512-byte sectors. */
export function padToSector(bytes: number): number {
  return Math.ceil(bytes / 512) * 512;
}

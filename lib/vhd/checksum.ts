/**
 * The VHD checksum: the one's complement of the byte sum of a structure, taken with its own
 * checksum field counted as zero. `skip` is the offset of that 4-byte field, if it lies inside.
 */
export function onesComplementChecksum(buf: Uint8Array, skip = -1): number {
  let sum = 0;
  for (let i = 0; i < buf.length; i++) {
    if (skip >= 0 && i >= skip && i < skip + 4) continue;
    sum = (sum + (buf[i] as number)) >>> 0;
  }
  return ~sum >>> 0;
}

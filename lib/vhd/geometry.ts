/** CHS geometry of a VHD footer. */
export interface Geometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

/**
 * The CHS geometry the VHD specification's algorithm assigns to a disk of `size` bytes
 * (appendix "CHS Calculation"). The footer's current size, not this, is the disk's size:
 * geometry only approximates sizes that are not a multiple of it.
 */
export function chsGeometry(size: number): Geometry {
  let total = Math.floor(size / 512);
  if (total > 65535 * 16 * 255) total = 65535 * 16 * 255;
  let spt: number;
  let heads: number;
  let cth: number;
  if (total >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cth = Math.floor(total / spt);
  } else {
    spt = 17;
    cth = Math.floor(total / spt);
    heads = Math.max(Math.floor((cth + 1023) / 1024), 4);
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cth = Math.floor(total / spt);
    }
    if (cth >= heads * 1024) {
      spt = 63;
      heads = 16;
      cth = Math.floor(total / spt);
    }
  }
  return { cylinders: Math.floor(cth / heads), heads, sectorsPerTrack: spt };
}

import type { FileHandle } from 'node:fs/promises';
import { BAT_UNUSED } from './bat.js';
import { BATMAP_HEADER_SIZE, batmapChecksum, encodeBatmapHeader } from './batmap.js';
import { setBit } from './bitmap.js';
import { type ImageAnalysis, type VhdProblem, type VhdProblemCode, analyseImage, checkImage } from './check.js';
import { writeAll } from './create.js';
import { fsError, vhdError } from './errors.js';
import type { VhdFiles } from './files.js';
import { FOOTER_SIZE } from './footer.js';

/** One change {@link VirtualDisk.repair} made, named by the problem it fixed. */
export interface RepairAction {
  /** The {@link VhdProblem} code of what was fixed. */
  code: VhdProblemCode;
  /** What was done, in a sentence. */
  message: string;
  /** Byte offset in the file of what was written. */
  offset: number;
}

/** What {@link VirtualDisk.repair} did, and what it found still wrong afterwards. */
export interface RepairReport {
  /** Absolute path of the image. */
  path: string;
  /** Changes made, in the order made; empty when the image needed none. */
  actions: RepairAction[];
  /** Problems `check()` still finds after the repair: ones repair does not fix. */
  problems: VhdProblem[];
}

/**
 * Repairs the image at `path` from the state a crash can leave: the end footer restored
 * from the copy at offset 0 (placed after the last block the BAT records, so the storage of
 * a block whose BAT entry was never written is dropped), the copy at 0 rewritten from a
 * valid end footer it differs from, and the batmap recomputed from the sector bitmaps.
 * Running it again on the result changes nothing.
 */
export async function repairImage(path: string, files: VhdFiles): Promise<RepairReport> {
  let fh: FileHandle;
  try {
    fh = await files.open(path, 'r+');
  } catch (err) {
    throw fsError(err, 'vhd.repair', path);
  }
  try {
    const actions: RepairAction[] = [];
    const analysis = await analyseImage(fh, path);
    if (!analysis.footer) {
      const first = analysis.problems[0];
      throw vhdError(
        first?.code === 'VHD_TRUNCATED' ? 'VHD_TRUNCATED' : 'VHD_BAD_FOOTER',
        `no valid footer at the end of the file or at offset 0: nothing to rebuild the image from${first ? ` (${first.message})` : ''}`,
        path,
        'vhd.repair',
      );
    }
    await repairFooters(fh, path, analysis, actions);
    await repairBatmap(fh, analysis, actions);
    if (actions.length > 0) await fh.datasync();
    return { path, actions, problems: await checkImage(fh, path, files) };
  } catch (err) {
    throw fsError(err, 'vhd.repair', path);
  } finally {
    await fh.close();
  }
}

async function repairFooters(fh: FileHandle, path: string, a: ImageAnalysis, actions: RepairAction[]): Promise<void> {
  const { end, copy, sparse } = a;
  if (!end) {
    if (!copy || !sparse) {
      throw vhdError('VHD_BAD_FOOTER', 'the end footer is damaged and the header is unusable: the image cannot be rebuilt', path, 'vhd.repair');
    }
    // The footer goes where the last block recorded in the BAT ends: storage written for a
    // block whose BAT entry never was is dropped, and a block cut short is completed by a hole.
    const at = Math.max(sparse.metadataEnd, sparse.blocksEnd);
    await writeAll(fh, copy.raw, at);
    await fh.truncate(at + FOOTER_SIZE);
    const cut = a.fileSize - at;
    const detail = cut > 0 ? `, in place of ${cut} bytes after the last block that no BAT entry records` : '';
    actions.push({ code: 'VHD_BAD_FOOTER', message: `restored the end footer at offset ${at} from the copy at offset 0${detail}`, offset: at });
  } else if (sparse && !(copy && copy.raw.equals(end.raw))) {
    await writeAll(fh, end.raw, 0);
    actions.push({ code: 'VHD_FOOTER_MISMATCH', message: 'rewrote the footer copy at offset 0 from the end footer', offset: 0 });
  }
}

async function repairBatmap(fh: FileHandle, a: ImageAnalysis, actions: RepairAction[]): Promise<void> {
  const sparse = a.sparse;
  const batmap = sparse?.batmap;
  if (!sparse || !batmap) return;
  const map = Buffer.alloc(batmap.map.length);
  for (let i = 0; i < Math.min(sparse.entries, map.length * 8); i++) {
    if (sparse.bat[i] !== BAT_UNUSED && sparse.sound.has(i) && sparse.full[i]) setBit(map, i);
  }
  const checksum = batmapChecksum(map, batmap.header.batmapVersion);
  if (map.equals(batmap.map) && checksum === batmap.header.checksum) return;
  const header = encodeBatmapHeader({ ...batmap.header, checksum });
  const mapOffset = Number(batmap.header.batmapOffset);
  // One write where the map follows its header, so no crash separates map and checksum.
  if (mapOffset === batmap.headerOffset + BATMAP_HEADER_SIZE) await writeAll(fh, Buffer.concat([header, map]), batmap.headerOffset);
  else {
    await writeAll(fh, map, mapOffset);
    await writeAll(fh, header, batmap.headerOffset);
  }
  actions.push({ code: 'VHD_BATMAP_MISMATCH', message: 'recomputed the batmap from the sector bitmaps', offset: batmap.headerOffset });
}

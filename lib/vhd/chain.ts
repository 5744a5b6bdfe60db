import { access } from 'node:fs/promises';
import { vhdError } from './errors.js';
import type { VhdImage } from './image.js';
import { parentCandidates } from './locator.js';

/** Deepest chain allowed, counting the leaf: XenServer's limit. */
export const MAX_CHAIN_DEPTH = 30;

/**
 * The file of a differencing image's parent: the first of its locators (MacX, then W2ru,
 * then W2ku) that names an existing file. VHD_PARENT_MISSING when none does.
 */
export async function findParentPath(image: VhdImage, childPath: string): Promise<string> {
  const candidates = parentCandidates(image.sparse?.locators ?? [], childPath);
  for (const candidate of candidates) {
    try {
      await access(candidate);
      return candidate;
    } catch {
      // try the next locator
    }
  }
  const name = image.sparse?.header.parentUnicodeName ?? '';
  const tried = candidates.length > 0 ? `tried ${candidates.join(', ')}` : 'it has no usable parent locator';
  throw vhdError('VHD_PARENT_MISSING', `parent "${name}" not found: ${tried}`, childPath);
}

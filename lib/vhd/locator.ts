import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';

/** Platform codes of the parent locators xenode reads and writes. */
export const LocatorCode = {
  /** Windows absolute path, UTF-16LE. */
  W2ku: 0x57326b75,
  /** Windows relative path, UTF-16LE. */
  W2ru: 0x57327275,
  /** A `file://` URL, UTF-8 (blktap's choice on Linux). */
  MacX: 0x4d616358,
} as const;

/** The order a reader tries locators in: the relative ones first, so a moved chain still opens. */
const PREFERENCE = [LocatorCode.MacX, LocatorCode.W2ru, LocatorCode.W2ku];

function relativeTo(childPath: string, parentPath: string): string {
  const rel = relative(dirname(resolve(childPath)), resolve(parentPath)).split(sep).join('/');
  return rel.startsWith('.') ? rel : `./${rel}`;
}

/**
 * The locator data for `code` that points from the child at `childPath` to `parentPath`:
 * W2ku the absolute path, W2ru the relative path, MacX `file://` and the relative path.
 */
export function encodeLocatorData(code: number, parentPath: string, childPath: string): Buffer {
  switch (code) {
    case LocatorCode.W2ku:
      return Buffer.from(resolve(parentPath), 'utf16le');
    case LocatorCode.W2ru:
      return Buffer.from(relativeTo(childPath, parentPath), 'utf16le');
    case LocatorCode.MacX:
      return Buffer.from(`file://${encodeURI(relativeTo(childPath, parentPath))}`, 'utf8');
    default:
      throw new RangeError(`unsupported parent locator code 0x${code.toString(16)}`);
  }
}

/** The path a locator's data names, as written (relative or absolute), or undefined if unreadable. */
export function decodeLocatorData(code: number, data: Buffer): string | undefined {
  let text: string;
  if (code === LocatorCode.W2ku || code === LocatorCode.W2ru) {
    text = data.toString('utf16le');
  } else if (code === LocatorCode.MacX) {
    text = data.toString('utf8');
    if (text.startsWith('file://')) text = text.slice('file://'.length);
    try {
      text = decodeURI(text);
    } catch {
      // not percent-encoded after all: keep the text as it is
    }
  } else {
    return undefined;
  }
  text = text.replace(/\0+$/, '').replace(/\\/g, '/');
  return text === '' ? undefined : text;
}

/** A decoded locator: its code and the path it names. */
export interface LocatorPath {
  code: number;
  path: string;
}

/**
 * Absolute candidate paths of the parent, best first: relative locators resolved against the
 * child's directory, then absolute ones. Duplicates are dropped.
 */
export function parentCandidates(locators: LocatorPath[], childPath: string): string[] {
  const out: string[] = [];
  const ordered = [...locators].sort((a, b) => PREFERENCE.indexOf(a.code as never) - PREFERENCE.indexOf(b.code as never));
  for (const l of ordered) {
    const abs = isAbsolute(l.path) ? l.path : resolve(dirname(resolve(childPath)), l.path);
    if (!out.includes(abs)) out.push(abs);
  }
  return out;
}

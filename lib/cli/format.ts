import { XenError } from '../errors.js';
import { formatPermission, type XsPermission } from '../xenstore/wire.js';
import type { XenStoreOps } from '../xenstore/xenstore.js';

/**
 * Shows a value the way xenstore-read and xenstore-ls do (libxenstore's sanitise_value):
 * printable ASCII as is, `\t` `\n` `\r` `\\` escaped, bytes below 8 as three-digit octal
 * (`\001`), any other byte as `\xNN`. Output is then safe to print and to feed back to
 * {@link unescapeValue}.
 */
export function escapeValue(value: Uint8Array): string {
  let out = '';
  for (const c of value) {
    if (c >= 0x20 && c <= 0x7e && c !== 0x5c) out += String.fromCharCode(c);
    else if (c === 0x09) out += '\\t';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x5c) out += '\\\\';
    else if (c < 8) out += `\\${c.toString(8).padStart(3, '0')}`;
    else out += `\\x${c.toString(16).padStart(2, '0')}`;
  }
  return out;
}

const HEX = /^[0-9a-fA-F]{1,2}/;
const OCT = /^[0-7]{1,3}/;

/**
 * Reads a value given on a command line the way xenstore-write does (unsanitise_value):
 * `\t` `\n` `\r` `\\`, `\xNN` (one or two hex digits), `\NNN` (one to three octal digits);
 * a backslash before any other character drops the backslash, and a trailing backslash
 * becomes a NUL byte, as in the C tool.
 */
export function unescapeValue(text: string): Buffer {
  const src = Buffer.from(text, 'utf8');
  const out: number[] = [];
  for (let i = 0; i < src.length; i++) {
    const c = src[i] as number;
    if (c !== 0x5c) {
      out.push(c);
      continue;
    }
    if (i + 1 >= src.length) {
      out.push(0);
      break;
    }
    const next = String.fromCharCode(src[i + 1] as number);
    const hex = HEX.exec(src.toString('latin1', i + 2, i + 4));
    if (next === 't') out.push(0x09);
    else if (next === 'n') out.push(0x0a);
    else if (next === 'r') out.push(0x0d);
    else if (next === 'x' && hex) {
      out.push(parseInt(hex[0], 16));
      i += hex[0].length;
    } else if (next >= '0' && next <= '7') {
      const digits = (OCT.exec(src.toString('latin1', i + 1, i + 4)) as RegExpExecArray)[0];
      out.push(parseInt(digits, 8) & 0xff);
      i += digits.length - 1;
    } else out.push(src[i + 1] as number);
    i++;
  }
  return Buffer.from(out);
}

/** `(n0,r5)`: a permission list as xenstore-ls -p prints it. */
export function formatPermissions(perms: readonly XsPermission[]): string {
  return `(${perms.map(formatPermission).join(',')})`;
}

/** Options of {@link formatTree}. */
export interface FormatTreeOptions {
  /** Full paths on every line (xenstore-ls -f) instead of names indented by depth. */
  fullPaths?: boolean;
  /** Append each node's permissions (xenstore-ls -p). */
  permissions?: boolean;
}

// xenstore-ls pads the permission column to this width with ". . ." unless -f is given.
const PERMS_COLUMN = 60;

function childPath(parent: string, name: string): string {
  return parent.endsWith('/') ? `${parent}${name}` : `${parent}/${name}`;
}

/** `op()`'s result, or undefined when the node is unreadable or vanished meanwhile. */
async function unlessDenied<T>(op: () => Promise<T>): Promise<T | undefined> {
  try {
    return await op();
  } catch (err) {
    // Like xenstore-ls, such a node is shown without a value (or permissions), not an error.
    if (err instanceof XenError && (err.code === 'EACCES' || err.code === 'ENOENT')) return undefined;
    throw err;
  }
}

/**
 * The lines xenstore-ls prints for everything below `root` (not `root` itself), depth
 * first in the order the store lists children: `name = "value"` indented one space per
 * level, or `/full/path = "value"`; a node whose value cannot be read ends in `:` and is
 * not descended into.
 * Values are escaped with {@link escapeValue}; unlike xenstore-ls, long values are not
 * cut to the terminal width.
 */
export function formatTree(xs: XenStoreOps, root: string, options: FormatTreeOptions = {}): AsyncGenerator<string> {
  return walk(xs, root, options, 0);
}

async function* walk(xs: XenStoreOps, root: string, options: FormatTreeOptions, level: number): AsyncGenerator<string> {
  for (const name of await xs.list(root)) {
    const path = childPath(root, name);
    let line = options.fullPaths ? path : `${' '.repeat(level)}${name}`;
    const value = await unlessDenied(() => xs.readBytes(path));
    if (value === undefined) line += ':';
    else {
      line += ` = "${escapeValue(value)}"`;
      if (options.permissions) {
        line += ' ';
        if (!options.fullPaths) for (let w = line.length; w < PERMS_COLUMN; w++) line += w % 2 === 1 ? '.' : ' ';
      }
    }
    if (options.permissions) {
      const perms = await unlessDenied(() => xs.getPermissions(path));
      if (perms) line += `  ${formatPermissions(perms)}`;
    }
    yield line;
    // A node that cannot be read cannot be listed either: show it as a leaf.
    if (value !== undefined) yield* walk(xs, path, options, level + 1);
  }
}

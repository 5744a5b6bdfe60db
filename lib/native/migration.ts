/**
 * The native halves of a migration, under {@link NativeToolstack}: libxl reads and writes
 * the stream on a file descriptor (in its save helper process), so each half makes a
 * pipe, hands libxl one end and carries the bytes between the other end and the
 * caller's stream on the event loop (a `net.Socket` over the pipe, never a pool thread
 * blocked in a read). The image is the one `save` writes: {@link SAVE_MAGIC}, the
 * length and JSON of the domain's libxl configuration, then libxl's stream.
 * @internal
 */
import { close as closeFd } from 'node:fs';
import { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { XenError, abortError } from '../errors.js';
import type { LibxlConnection, LibxlJson } from './libxl.js';
import type { XenCtrl } from './xenctrl.js';

/** The first bytes of a xenode save image; a 4-byte big-endian length and the libxl config JSON follow, then libxl's stream. */
export const SAVE_MAGIC = Buffer.from('xenode-save-v1\n\0', 'latin1');

/** What the migration halves use of libxl. */
export type MigrationLibxl = Pick<LibxlConnection, 'domainConfig' | 'domainInfo' | 'suspendDomain' | 'resumeDomain' | 'restoreDomain' | 'destroyDomain' | 'makePipe'>;

function closeQuietly(fd: number): Promise<void> {
  return new Promise((resolve) => closeFd(fd, () => resolve()));
}

/** Writes `data` to `out`, resolving once it is taken (after `drain` when the buffer is full). */
export function writeChunk(out: Writable, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    if (out.destroyed || out.writableEnded) {
      reject(XenError.fromErrno('EPIPE', { op: 'domain.migrate' }));
      return;
    }
    const ok = out.write(data, (err) => {
      if (err) reject(err);
      else if (ok) resolve();
    });
    if (!ok) {
      const done = (err?: Error) => {
        out.off('drain', onDrain).off('error', onError).off('close', onClose);
        if (err) reject(err);
        else resolve();
      };
      const onDrain = () => done();
      const onError = (err: Error) => done(err);
      // destroyed without an error: no drain will come
      const onClose = () => done(XenError.fromErrno('EPIPE', { op: 'domain.migrate' }));
      out.once('drain', onDrain).once('error', onError).once('close', onClose);
    }
  });
}

/** The image's header: magic, length, the libxl configuration. */
export function imageHeader(config: LibxlJson): Buffer {
  const json = Buffer.from(JSON.stringify(config));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(json.length);
  return Buffer.concat([SAVE_MAGIC, len, json]);
}

/**
 * Reads an image's header from `input`: resolves with the configuration and an iterator
 * over the rest (libxl's stream, the bytes after the header first). `XEN_ERROR_INVAL`
 * (from `notImage`) when the stream is not a xenode save image.
 */
export async function readImageHeader(input: Readable, notImage: () => Error, signal?: AbortSignal): Promise<{ config: LibxlJson; rest: AsyncGenerator<Buffer> }> {
  const it = input[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>;
  let head = Buffer.alloc(0);
  for (;;) {
    if (signal?.aborted) throw abortError(signal);
    const next = await it.next();
    if (next.done) throw notImage();
    const chunk = typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
    head = Buffer.concat([head, chunk]);
    const n = Math.min(head.length, SAVE_MAGIC.length);
    if (!head.subarray(0, n).equals(SAVE_MAGIC.subarray(0, n))) throw notImage();
    if (head.length < SAVE_MAGIC.length + 4) continue;
    const len = head.readUInt32BE(SAVE_MAGIC.length);
    if (len > 16 << 20) throw notImage();
    const end = SAVE_MAGIC.length + 4 + len;
    if (head.length < end) continue;
    let config: LibxlJson;
    try {
      config = JSON.parse(head.subarray(SAVE_MAGIC.length + 4, end).toString()) as LibxlJson;
    } catch {
      throw notImage();
    }
    const first = head.subarray(end);
    async function* rest(): AsyncGenerator<Buffer> {
      if (first.length > 0) yield first;
      for (;;) {
        if (signal?.aborted) throw abortError(signal);
        const n = await it.next();
        if (n.done) return;
        yield typeof n.value === 'string' ? Buffer.from(n.value) : n.value;
      }
    }
    return { config, rest: rest() };
  }
}

/**
 * Why this host cannot migrate the domain live, or undefined when it can: live migration
 * puts the guest in log-dirty mode, which Xen gives a PV guest only through shadow
 * paging, and an HVM or PVH guest through HAP or shadow paging. Debian's Xen 4.17 is
 * built without shadow paging, so there a PV guest moves only with `live: false`.
 */
export async function liveMigrationObstacle(libxl: MigrationLibxl, xc: Pick<XenCtrl, 'physinfo'>, domid: number): Promise<string | undefined> {
  const [config, phys] = await Promise.all([libxl.domainConfig(domid), xc.physinfo()]);
  const type = String((config as { c_info?: { type?: unknown } }).c_info?.type ?? 'pv').toLowerCase();
  const caps = phys.capabilities;
  if (type === 'pv' && !caps.includes('shadow')) return 'a PV guest needs shadow paging for log-dirty mode, and this hypervisor has none (migrate it with live: false, or run it as PVH)';
  if (type !== 'pv' && !caps.includes('hap') && !caps.includes('shadow')) return `a ${type.toUpperCase()} guest needs HAP or shadow paging for log-dirty mode, and this host offers neither`;
  return undefined;
}

/**
 * Writes the domain's image to `out` through libxl_domain_suspend and leaves it
 * suspended. On failure (the stream broke, libxl failed, `signal` aborted) the domain is
 * resumed if it had been suspended, and the call rejects.
 */
export async function suspendInto(libxl: MigrationLibxl, domid: number, out: Writable, options: { live: boolean; signal?: AbortSignal }): Promise<void> {
  const { signal } = options;
  if (signal?.aborted) throw abortError(signal);
  await writeChunk(out, imageHeader(await libxl.domainConfig(domid)));
  const [readFd, writeFd] = libxl.makePipe();
  const reader = new Socket({ fd: readFd, readable: true, writable: false });
  let copyError: unknown;
  const copied = (async () => {
    try {
      for await (const chunk of reader) {
        await writeChunk(out, chunk as Buffer);
      }
    } catch (err) {
      copyError ??= err;
      // libxl's next write then fails (EPIPE), and the suspension stops.
      reader.destroy();
    }
  })();
  const onAbort = () => {
    copyError ??= abortError(signal as AbortSignal);
    reader.destroy();
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  let suspendError: unknown;
  try {
    await libxl.suspendDomain(domid, writeFd, { live: options.live });
  } catch (err) {
    suspendError = err;
  } finally {
    // libxl's helper has exited: ours is the last write end, and closing it ends the copy.
    await closeQuietly(writeFd);
    if (suspendError !== undefined) reader.destroy();
    await copied;
    signal?.removeEventListener('abort', onAbort);
  }
  const failure = copyError ?? suspendError;
  if (failure === undefined) return;
  await resumeIfSuspended(libxl, domid);
  throw failure;
}

/** Resumes the domain if a suspension left it shut down for suspend; nothing otherwise. */
export async function resumeIfSuspended(libxl: MigrationLibxl, domid: number): Promise<void> {
  const info = await libxl.domainInfo(domid).catch(() => undefined);
  if (info === undefined || info.domid !== domid || !info.shutdown) return;
  await libxl.resumeDomain(domid, { suspendCancel: true });
}

/**
 * Restores the image read from `input` as a paused domain called `name`
 * (libxl_domain_create_restore reading the pipe that the stream is copied into).
 */
export async function restoreFrom(libxl: MigrationLibxl, input: Readable, options: { name: string; signal?: AbortSignal; notImage: () => Error }): Promise<number> {
  const { signal } = options;
  if (signal?.aborted) throw abortError(signal);
  const { config, rest } = await readImageHeader(input, options.notImage, signal);
  const cInfo = ((config as { c_info?: Record<string, unknown> }).c_info ??= {});
  cInfo.name = options.name;
  const [readFd, writeFd] = libxl.makePipe();
  const writer = new Socket({ fd: writeFd, readable: false, writable: true });
  writer.on('error', () => undefined);
  let copyError: unknown;
  const copied = (async () => {
    try {
      for await (const chunk of rest) await writeChunk(writer, chunk);
      writer.end();
    } catch (err) {
      copyError ??= err;
      // libxl reads the end of the stream and fails the restore.
      writer.destroy();
    }
  })();
  const onAbort = () => {
    copyError ??= abortError(signal as AbortSignal);
    writer.destroy();
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const domid = await libxl.restoreDomain(config, readFd, { paused: true });
    if (copyError !== undefined) {
      await libxl.destroyDomain(domid).catch(() => undefined);
      throw copyError;
    }
    return domid;
  } catch (err) {
    throw copyError ?? err;
  } finally {
    writer.destroy();
    await closeQuietly(readFd);
    await copied;
    signal?.removeEventListener('abort', onAbort);
  }
}

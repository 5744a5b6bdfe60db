/**
 * Remus on real Xen, in blackhole mode (as `xl remus -b`): the test guest is checkpointed
 * every 200 ms into a stream nobody restores. The stream goes through a FIFO that the test
 * reads and follows (test/helpers/migration-stream.ts), so a checkpoint is counted when
 * libxc's CHECKPOINT record and libxl's CHECKPOINT_END have really been written, not
 * guessed from timing. Replication is ended from the backup's side, as when a backup
 * host fails: the stream's reader goes away, libxl stops and resumes the primary, which
 * keeps running. (Destroying the primary while a checkpoint is under way, xl's other way
 * out, once crashed Xen 4.17 itself in the tier: hvmemul_cancel from a setvcpucontext
 * domctl on the dying domain.)
 *
 * The guest is PVH: checkpoints put it in log-dirty mode, which Debian's Xen (built
 * without shadow paging) offers only through HAP, so never to a PV guest
 * ("Failed to enable logdirty: EOPNOTSUPP"); the tier's QEMU gives Xen nested paging.
 */
import { closeSync, constants, openSync, rmSync } from 'node:fs';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LibxlConnection } from '../../lib/native/libxl.js';
import { MigrationStreamFollower } from '../helpers/migration-stream.js';
import { run } from '../helpers/run.js';
import { guestDomainJson, guestReady, waitUntil } from './tier.js';

const name = 'xenode-remus';
const config = guestDomainJson(name, 'pvh');

describe('Remus in blackhole mode on real Xen', { timeout: 600_000 }, () => {
  let conn: LibxlConnection;
  let domid = -1;
  const fifo = join(tmpdir(), `xenode-remus-${process.pid}.fifo`);
  const fds: number[] = [];
  const errors: Error[] = [];
  /** Ends replication from the backup's side and waits for libxl to stop; set while it runs. */
  let stopReplication: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    conn = await LibxlConnection.open();
    conn.on('error', (err) => errors.push(err));
    domid = await conn.createDomain(config);
    await guestReady(domid);
  }, 300_000);

  afterAll(async () => {
    // Never destroy a domain in the middle of a checkpoint (see above): stop Remus first.
    await stopReplication?.().catch(() => {});
    if (domid > 0) await conn.destroyDomain(domid).catch(() => {});
    for (const fd of fds.splice(0)) {
      try {
        closeSync(fd);
      } catch {
        // already closed
      }
    }
    rmSync(fifo, { force: true });
    await conn?.close();
  }, 120_000);

  it('sends checkpoint after checkpoint while the guest runs, and stops when the backup goes, leaving the primary running', async () => {
    const mk = await run('mkfifo', [fifo]);
    expect(mk.code, mk.stderr).toBe(0);
    // The reading end first, non-blocking, so that opening the writing end does not wait.
    const readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const writeFd = openSync(fifo, constants.O_WRONLY);
    const nullFd = openSync('/dev/null', 'r');
    fds.push(writeFd, nullFd);
    const follower = new MigrationStreamFollower();
    const reader = new Socket({ fd: readFd, readable: true, writable: false });
    reader.on('data', (chunk: Buffer) => follower.push(chunk));
    const ended = new Promise<void>((resolve) => reader.once('end', resolve).once('close', resolve));

    // colo and userspace_colo_proxy: left out on purpose, remusStart fills in xl's defaults
    const info = { interval: 200, allow_unsafe: 'True', blackhole: 'True', compression: 'False', netbuf: 'False', diskbuf: 'False' };
    let settled: { ok: boolean; error?: unknown } | undefined;
    const replication = conn.remusStart(domid, info, writeFd, nullFd).then(
      () => (settled = { ok: true }),
      (error: unknown) => (settled = { ok: false, error }),
    );
    stopReplication = async () => {
      reader.destroy();
      await ended;
      await Promise.race([replication, new Promise((_, reject) => setTimeout(() => reject(new Error('Remus did not stop within 120 s of losing its backup')), 120_000))]);
      stopReplication = undefined;
    };

    // libxl writes its CHECKPOINT_END after libxc's CHECKPOINT: wait for the end of the third
    await waitUntil(() => follower.checkpointEnds >= 3 || settled !== undefined || follower.error !== undefined, 'three checkpoints', 300_000, 200);
    expect(follower.error).toBeUndefined();
    expect(settled, `Remus stopped early: ${String((settled?.error as Error | undefined)?.message)}`).toBeUndefined();
    expect(follower.checkpoints).toBeGreaterThanOrEqual(follower.checkpointEnds);
    // Each checkpoint suspends the guest for a moment (shut down with reason suspend);
    // between checkpoints it runs again, and nothing else ever stops it.
    const suspendedOnly = (i: { shutdown?: boolean; shutdown_reason?: unknown }) => !i.shutdown || i.shutdown_reason === 'suspend' || i.shutdown_reason === 2;
    await waitUntil(async () => {
      const i = await conn.domainInfo(domid);
      expect(suspendedOnly(i), `the guest stopped: ${JSON.stringify(i.shutdown_reason)}`).toBe(true);
      return !i.shutdown;
    }, 'the guest to run between checkpoints', 60_000, 20);
    const before = follower.checkpointEnds;
    await waitUntil(() => follower.checkpointEnds > before, 'one more checkpoint', 120_000, 200);
    expect(follower.error).toBeUndefined();
    expect(follower.bytes).toBeGreaterThan(1 << 20); // at least the first full copy of the guest's memory

    // The backup goes away: libxl's next write fails, replication stops, the primary lives on.
    await stopReplication();
    expect(settled).toBeDefined();
    const after = await conn.domainInfo(domid);
    expect(after.domid).toBe(domid);
    expect(after.dying).toBeFalsy();
    expect(errors).toEqual([]);
  });
});

/**
 * Live snapshots of a disk that another process serves (`xenode blkback serve`, or any
 * program using `xen.blockBackend`): the request goes through xenstore, below the disk's
 * backend node, which only dom0 may write. The requester writes
 * `<backend>/snapshot-request/<id>` = the child's path; the serving process takes it,
 * snapshots, and answers in `<backend>/snapshot-result/<id>` with the outcome as JSON.
 */
import type { DiskSnapshot } from '../backend-toolstack.js';
import { XenError } from '../errors.js';

/** The xenstore operations a requester needs (dom0's connection). */
export interface SnapshotRequestStore {
  read(path: string): Promise<string | undefined>;
  write(path: string, value: string): Promise<void>;
  remove(path: string): Promise<void>;
}

/** What the serving process writes back. */
export type SnapshotAnswer = { ok: DiskSnapshot } | { error: { code: string; message: string } };

let counter = 0;

/**
 * Asks the process serving the disk at `backendPath` for a live snapshot into `childPath`,
 * and waits (polling every `stepMs`) for its answer, at most `timeoutMs`. Rejects with the
 * serving process's error, or `ETIMEDOUT` when nobody answers (the serving process is gone).
 */
export async function requestSnapshot(xs: SnapshotRequestStore, backendPath: string, childPath: string, op: string, domid: number, timeoutMs = 120_000, stepMs = 20): Promise<DiskSnapshot> {
  const id = `${process.pid}-${Date.now()}-${++counter}`;
  const result = `${backendPath}/snapshot-result/${id}`;
  await xs.write(`${backendPath}/snapshot-request/${id}`, childPath);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const raw = await xs.read(result);
    if (raw !== undefined) {
      await xs.remove(result).catch(() => undefined);
      const answer = JSON.parse(raw) as SnapshotAnswer;
      if ('ok' in answer) return answer.ok;
      throw new XenError(answer.error.code, answer.error.message, { op, domid, path: childPath });
    }
    if (Date.now() > deadline || (await xs.read(`${backendPath}/state`)) === undefined) {
      await xs.remove(`${backendPath}/snapshot-request/${id}`).catch(() => undefined);
      throw new XenError('ETIMEDOUT', `ETIMEDOUT: the process serving ${backendPath} did not answer a snapshot request (${op})`, { op, domid, path: childPath, errno: 110 });
    }
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

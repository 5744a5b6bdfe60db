import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** `qemu-img ARGS…` as a function: its stdout, or a rejection when it exits non-zero. */
export function qemuImgRunner(timeout = 30_000): (...args: string[]) => Promise<string> {
  return async (...args) => (await run('qemu-img', args, { timeout, maxBuffer: 64 * 1024 * 1024 })).stdout;
}

/**
 * The native layer's life cycle, where a single test process cannot see it: in child
 * processes (does an idle handle let the process exit? what happens without
 * libxenstore.so.4?) and in worker threads (the environment cleanup hook closes what a
 * worker left open, without crashing the process).
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XenError } from '../../lib/errors.js';
import type { RawXenError } from '../../lib/native/addon.js';
import { fromNative } from '../../lib/native/errors.js';
import type { EngineConnection } from '../../lib/xenstore/engine.js';
import { XenStoreEngine } from '../../lib/xenstore/engine.js';
import { XenStoreServer } from '../../lib/xenstore/server.js';
import { hasNativeAddon, packageRoot, waitFor } from './tier.js';

const child = fileURLToPath(new URL('./fixtures/child.mjs', import.meta.url));

interface ChildResult {
  code: number | null;
  lines: string[];
  ms: number;
}

/** Runs fixtures/child.mjs with `mode`; resolves when it exits (rejects after 10 s). */
function runChild(mode: string, env: NodeJS.ProcessEnv): Promise<ChildResult> {
  const start = Date.now();
  const proc = spawn(process.execPath, [child, mode], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  proc.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill();
      reject(new Error(`child ${mode} did not exit: ${out}`));
    }, 10_000);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, lines: out.split('\n').filter(Boolean), ms: Date.now() - start });
    });
  });
}

/**
 * A worker thread running `body` (CommonJS, `addon` and `parentPort` in scope), with its
 * first message and its exit code. Both are listened for from the start: a worker that
 * exits right after posting can emit 'exit' before an `await` on the message resumes.
 */
function startWorker(body: string): { worker: Worker; message: Promise<unknown>; exit: Promise<number> } {
  const code = `
    const { parentPort } = require('node:worker_threads');
    const root = ${JSON.stringify(packageRoot)};
    const addon = require('node:module').createRequire(root + '/package.json')('node-gyp-build')(root);
    (async () => { ${body} })().catch((err) => parentPort.postMessage('error: ' + err.message));`;
  const worker = new Worker(code, { eval: true });
  const message = new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  const exit = new Promise<number>((resolve) => worker.once('exit', resolve));
  return { worker, message, exit };
}

describe.skipIf(!hasNativeAddon)('native handles across processes and threads', () => {
  let dir: string;
  let socket: string;
  let server: XenStoreServer;
  /** Every connection the mock xenstored accepted, to check that each gets closed. */
  const accepted: EngineConnection[] = [];
  const stillOpen = (): number => accepted.filter((c) => !c.closed).length;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xenode-lifecycle-'));
    socket = join(dir, 'xenstored.sock');
    const engine = new XenStoreEngine();
    const connect = engine.connect.bind(engine);
    engine.connect = (...args: Parameters<XenStoreEngine['connect']>) => {
      const conn = connect(...args);
      accepted.push(conn);
      return conn;
    };
    server = new XenStoreServer(engine);
    await server.listen(socket);
    process.env.XENSTORED_PATH = socket;
  });

  afterAll(async () => {
    await server?.close();
    delete process.env.XENSTORED_PATH;
    await rm(dir, { recursive: true, force: true });
  });

  it('an idle open handle does not keep a process alive', async () => {
    const r = await runChild('idle', { XENSTORED_PATH: socket });
    expect(r).toMatchObject({ code: 0, lines: ['ready'] });
  });

  it('a registered watch keeps a process alive until it is removed', async () => {
    const r = await runChild('watch', { XENSTORED_PATH: socket });
    expect(r.code).toBe(0);
    expect(r.lines).toEqual(['event /child/watch', 'unwatch']);
    expect(r.ms).toBeGreaterThanOrEqual(300);
  });

  it('without libxenstore.so.4, opening rejects with XEN_UNAVAILABLE naming the library and the fix', async () => {
    // A library of that name that is not one, found first through LD_LIBRARY_PATH.
    const shadow = join(dir, 'no-libxenstore');
    await mkdir(shadow, { recursive: true });
    await writeFile(join(shadow, 'libxenstore.so.4'), '');
    const r = await runChild('open', { XENSTORED_PATH: socket, LD_LIBRARY_PATH: shadow });
    expect(r.code).toBe(0);
    const raw = JSON.parse(r.lines[0] as string) as RawXenError;
    expect(raw).toMatchObject({ name: 'XenError', code: 'XEN_UNAVAILABLE', op: 'dlopen' });
    expect(raw.message).toMatch(/^libxenstore\.so\.4 cannot be loaded \(.*\): .*apt-get install libxenstore4.*backend: 'mock'/);
    const err = fromNative(Object.assign(new Error(raw.message), raw), 'xenstore.connect');
    expect(err).toBeInstanceOf(XenError);
    expect(err).toMatchObject({ code: 'XEN_UNAVAILABLE', op: 'dlopen' });
  });

  it('a worker thread can open, use and close a handle', async () => {
    const { message, exit } = startWorker(`
      const h = await addon.openXenStore(() => {});
      await h.write(0, '/worker/closed', Buffer.from('1'));
      await h.watch('/worker/closed', 't');
      await h.close();
      parentPort.postMessage(h.closed ? 'closed' : 'open');`);
    expect(await message).toBe('closed');
    expect(await exit).toBe(0);
  });

  it('a worker that exits or is terminated with open handles, watches and requests in flight has them closed', async () => {
    const before = accepted.length;
    const body = (end: string): string => `
      const handles = [];
      for (let i = 0; i < 3; i++) {
        const h = await addon.openXenStore(() => {});
        await h.watch('/worker/w' + i, 'tok');
        handles.push(h);
      }
      for (const h of handles) for (let i = 0; i < 50; i++) h.read(0, '/worker/w0').catch(() => {});
      handles[0].close();
      parentPort.postMessage('busy');
      ${end}`;
    for (const end of ['process.exit(0);', '', 'await new Promise(() => {});']) {
      const { worker, message, exit } = startWorker(body(end));
      expect(await message).toBe('busy');
      // The handles hold watches, so a worker that does not exit by itself is terminated.
      if (end !== 'process.exit(0);') await worker.terminate();
      expect(await exit).toBeTypeOf('number');
    }
    expect(accepted.length - before).toBe(9);
    await waitFor(() => stillOpen() === 0);
  });
});

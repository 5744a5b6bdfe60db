/**
 * The native layer's life cycle against the real xenstored (test/native/lifecycle.test.ts
 * checks the same against the mock): child processes that exit by themselves or stay
 * alive for a watch, and worker threads that open, use, close or abandon handles.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { createNativeBackend } from '../../lib/native/backend.js';
import { packageRoot } from '../native/tier.js';
import './tier.js';

const child = fileURLToPath(new URL('../native/fixtures/child.mjs', import.meta.url));

function runChild(mode: string): Promise<{ code: number | null; lines: string[]; ms: number }> {
  const start = Date.now();
  const env = { ...process.env };
  delete env.XENSTORED_PATH;
  const proc = spawn(process.execPath, [child, mode], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  proc.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill();
      reject(new Error(`child ${mode} did not exit: ${out}`));
    }, 60_000);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, lines: out.split('\n').filter(Boolean), ms: Date.now() - start });
    });
  });
}

function startWorker(body: string): { worker: Worker; message: Promise<unknown>; exit: Promise<number> } {
  const code = `
    const { parentPort } = require('node:worker_threads');
    const addon = require('node:module').createRequire(${JSON.stringify(packageRoot)} + '/package.json')('node-gyp-build')(${JSON.stringify(packageRoot)});
    (async () => { ${body} })().catch((err) => parentPort.postMessage('error: ' + err.message));`;
  const worker = new Worker(code, { eval: true });
  const message = new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  const exit = new Promise<number>((resolve) => worker.once('exit', resolve));
  return { worker, message, exit };
}

describe('native handles on real Xen, across processes and threads', () => {
  it('an idle open handle does not keep a process alive', async () => {
    const r = await runChild('idle');
    expect(r).toMatchObject({ code: 0, lines: ['ready'] });
  });

  it('a registered watch keeps a process alive until it is removed', async () => {
    const r = await runChild('watch');
    expect(r.code).toBe(0);
    expect(r.lines).toEqual(['event /child/watch', 'unwatch']);
    expect(r.ms).toBeGreaterThanOrEqual(300);
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

  it('workers that exit or are terminated with handles, watches and requests in flight leave xenstored serving', async () => {
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
      if (end !== 'process.exit(0);') await worker.terminate();
      expect(await exit).toBeTypeOf('number');
    }
    const backend = await createNativeBackend();
    const conn = await backend.openXenStore();
    await conn.write(0, '/worker/after', Buffer.from('ok'));
    expect((await conn.read(0, '/worker/after')).toString()).toBe('ok');
    await backend.close();
  });
});

/**
 * The addon's event channel and grant table handles, exercised here without Xen: a fake
 * libxenevtchn.so.1 / libxengnttab.so.1 (fake-xen/fake-xen.c, built now with cc) is put
 * first on LD_LIBRARY_PATH of child processes, which then run
 * - the conformance suite through the native backend (notify/receive through uv_poll,
 *   unmask, unbind, close, XEN_CLOSED, detaching ArrayBuffers on unmap);
 * - life-cycle checks: idle handles let a process exit, a worker thread that exits with
 *   open handles and mappings has them all closed by the environment cleanup hook (the
 *   fake reports what was left open when the process ends).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { onPath } from '../helpers/tools.js';
import { hasNativeAddon, packageRoot } from './tier.js';

const source = fileURLToPath(new URL('./fake-xen/fake-xen.c', import.meta.url));
const canBuild = hasNativeAddon && onPath('cc');

function runNode(code: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string; err: string; ms: number }> {
  const prelude = `const root = ${JSON.stringify(packageRoot)};
    const addon = require('node:module').createRequire(root + '/package.json')('node-gyp-build')(root);
    const { Worker } = require('node:worker_threads');`;
  const start = Date.now();
  const proc = spawn(process.execPath, ['-e', prelude + code], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout.on('data', (c: Buffer) => (out += c.toString()));
  proc.stderr.on('data', (c: Buffer) => (err += c.toString()));
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      proc.kill();
      reject(new Error(`child did not exit: ${out} ${err}`));
    }, 30_000);
    proc.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, out, err, ms: Date.now() - start });
    });
  });
}

describe.skipIf(!canBuild)('native event channels and grants over fake Xen libraries', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'xenode-fake-xen-'));
    const lib = join(dir, 'libfake-xen.so');
    const cc = spawnSync('cc', ['-shared', '-fPIC', '-O1', '-o', lib, source], { encoding: 'utf8' });
    if (cc.status !== 0) throw new Error(`cc failed: ${cc.stderr}`);
    for (const name of ['libxenevtchn.so.1', 'libxengnttab.so.1']) spawnSync('ln', ['-s', lib, join(dir, name)]);
    env = { LD_LIBRARY_PATH: dir };
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('pass the conformance suite', { timeout: 120_000 }, async () => {
    const socket = join(dir, 'xenstored.sock');
    const r = spawnSync(process.execPath, [join(packageRoot, 'node_modules/vitest/vitest.mjs'), 'run', '--config', 'test/native/fake-xen/vitest.config.ts'], {
      cwd: packageRoot,
      env: { ...process.env, ...env, XENSTORED_PATH: socket, NO_COLOR: '1', FORCE_COLOR: '0' },
      encoding: 'utf8',
      timeout: 110_000,
    });
    const output = `${r.stdout}${r.stderr}`;
    expect(output, output).toMatch(/Tests\s+\S*\s*\d+ passed/);
    expect(r.status, output).toBe(0);
  });

  it('idle handles let the process exit; a listened port keeps it until the event', async () => {
    const idle = await runNode(
      `(async () => {
        const h = await addon.openEventChannels(() => {});
        await h.bindUnbound(0);
        const g = await addon.openGrants();
        await g.share(0, 1, true);
        console.log('idle');
      })()`,
      env,
    );
    expect(idle).toMatchObject({ code: 0, out: 'idle\n' });
    const listened = await runNode(
      `(async () => {
        const h = await addon.openEventChannels((port) => { console.log('event ' + port); h.keepAlive(false); });
        const a = await h.bindUnbound(0);
        const b = await h.bindInterdomain(0, a);
        h.keepAlive(true);
        setTimeout(() => h.notify(b), 300).unref();
      })()`,
      env,
    );
    expect(listened.code).toBe(0);
    expect(listened.out).toBe('event 1\n');
    expect(listened.ms).toBeGreaterThanOrEqual(300);
  });

  it('closing rejects running calls with XEN_CLOSED, detaches mapped buffers, and is harmless twice', async () => {
    const r = await runNode(
      `(async () => {
        const h = await addon.openEventChannels(() => {});
        const bind = h.bindUnbound(0);
        const closing = h.close();
        const err = await bind.then(() => null, (e) => e.code);
        await closing; await h.close();
        const after = await h.notify(1).then(() => null, (e) => e.code);
        const g = await addon.openGrants();
        const s = await g.share(0, 1, true);
        const m = await g.map(0, s.refs, true);
        const view = new Uint8Array(m.buffer);
        new Uint8Array(s.buffer)[5] = 9;
        const seen = view[5];
        const unmapped = g.unmap(m.id), again = g.unmap(m.id);
        const kept = new Uint8Array(s.buffer);
        await g.close(); await g.close();
        console.log(JSON.stringify({ err, after, closed: h.closed, seen, unmapped, again, view: view.length, detached: m.buffer.byteLength, kept: kept.length }));
      })()`,
      env,
    );
    expect(JSON.parse(r.out)).toEqual({ err: 'XEN_CLOSED', after: 'XEN_CLOSED', closed: true, seen: 9, unmapped: true, again: false, view: 0, detached: 0, kept: 0 });
    expect(r.err).toContain('fake-xen: handles 0 mappings 0');
  });

  it('a worker that exits or is terminated with open handles and mappings has them all closed', async () => {
    const r = await runNode(
      `(async () => {
        for (const end of ['return', 'process.exit(0)', 'terminate']) {
          const w = new Worker(\`
            const root = \${JSON.stringify(root)};
            const addon = require('node:module').createRequire(root + '/package.json')('node-gyp-build')(root);
            const { parentPort } = require('node:worker_threads');
            (async () => {
              const h = await addon.openEventChannels(() => {});
              const a = await h.bindUnbound(0);
              const b = await h.bindInterdomain(0, a);
              h.keepAlive(true);
              const g = await addon.openGrants();
              const s = await g.share(0, 2, true);
              await g.map(0, s.refs, true);
              h.bindUnbound(0);
              g.share(0, 1, true);
              parentPort.postMessage('open');
              if ('\${end}' === 'process.exit(0)') process.exit(0);
            })();\`, { eval: true });
          const exited = new Promise((resolve) => w.once('exit', resolve));
          await new Promise((resolve) => w.once('message', resolve));
          if (end !== 'process.exit(0)') await w.terminate();
          await exited;
        }
        console.log('done');
      })()`,
      env,
    );
    expect(r.code).toBe(0);
    expect(r.out).toBe('done\n');
    expect(r.err).toContain('fake-xen: handles 0 mappings 0');
  });
});

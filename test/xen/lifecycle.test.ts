/**
 * Native hypervisor handles across processes and threads on real Xen: an idle bound port
 * does not keep a process alive, a listened one does; a worker thread that exits with
 * open event channel, grant and xenctrl handles (and a mapped region) has them closed by
 * the environment cleanup hook, without harming the process.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { onRealXen } from './tier.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const prelude = `
  const root = ${JSON.stringify(root)};
  const addon = require('node:module').createRequire(root + '/package.json')('node-gyp-build')(root);`;

function runNode(code: string, ms = 20_000): Promise<{ code: number | null; out: string; ms: number }> {
  const start = Date.now();
  const proc = spawn(process.execPath, ['-e', prelude + code], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  proc.stdout.on('data', (c: Buffer) => (out += c.toString()));
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      proc.kill();
      reject(new Error(`did not exit: ${out}`));
    }, ms);
    proc.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, out, ms: Date.now() - start });
    });
  });
}

describe.skipIf(!onRealXen)('native hypervisor handles: life cycle on real Xen', () => {
  it('an idle bound port does not keep the process alive', async () => {
    const r = await runNode(`(async () => {
      const h = await addon.openEventChannels(() => {});
      const port = await h.bindUnbound(0);
      const g = await addon.openGrants();
      await g.share(0, 1, true);
      const xc = await addon.openXenCtrl();
      await xc.physinfo();
      console.log('bound ' + port);
    })()`);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^bound \d+/);
  });

  it('a listened port keeps it alive until an event arrives', async () => {
    const r = await runNode(`(async () => {
      const h = await addon.openEventChannels((port) => { console.log('event ' + port); h.keepAlive(false); });
      const a = await h.bindUnbound(0);
      const b = await h.bindInterdomain(0, a);
      h.keepAlive(true);
      setTimeout(() => h.notify(b), 300).unref();
    })()`);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^event \d+/);
    expect(r.ms).toBeGreaterThanOrEqual(300);
  });

  it('a worker that exits with open handles has them closed by the cleanup hook', async () => {
    for (const end of ['return', 'process.exit(0)']) {
      const worker = new Worker(
        `${prelude}
        const { parentPort } = require('node:worker_threads');
        (async () => {
          const h = await addon.openEventChannels(() => {});
          const a = await h.bindUnbound(0);
          await h.bindInterdomain(0, a);
          h.keepAlive(true);
          const g = await addon.openGrants();
          const s = await g.share(0, 2, true);
          const m = await g.map(0, s.refs, true);
          new Uint8Array(m.buffer)[0] = 1;
          const xc = await addon.openXenCtrl();
          const pending = xc.physinfo();
          parentPort.postMessage('open');
          ${end};
        })();`,
        { eval: true },
      );
      const message = new Promise((resolve) => worker.once('message', resolve));
      const exit = new Promise<number>((resolve) => worker.once('exit', resolve));
      expect(await message).toBe('open');
      if (end === 'return') await worker.terminate();
      expect(typeof (await exit)).toBe('number');
    }
    // The process is fine, and the devices still work.
    const r = await runNode(`(async () => { const h = await addon.openEventChannels(() => {}); await h.bindUnbound(0); await h.close(); console.log('ok'); })()`);
    expect(r.out.trim()).toBe('ok');
  });
});

/**
 * The migration protocol's edges on the mock host, beyond the conformance suite: a peer
 * that does not speak it, an abort, the options checked before anything is sent.
 */
import { describe, expect, it } from 'vitest';
import { connect, type Xen } from '../../lib/index.js';
import { streamPair } from '../conformance/toolstack-suite.js';

async function withHost<T>(fn: (xen: Xen) => Promise<T>): Promise<T> {
  const xen = await connect({ backend: 'mock' });
  try {
    return await fn(xen);
  } finally {
    await xen.close();
  }
}

const web = { name: 'web', type: 'pvh' as const, kernel: '/boot/vmlinuz', memory: 256, vcpus: 1 };

describe('migration protocol', () => {
  it('fails on a peer that does not speak it, on both sides, the source running on', async () => {
    await withHost(async (xen) => {
      const dom = await xen.domains.create(web);
      const [a, b] = streamPair();
      b.on('data', () => b.write('HTTP/1.1 400 Bad Request\r\n\r\n'));
      await expect(dom.migrate(a)).rejects.toMatchObject({ code: 'XEN_MIGRATION_FAILED' });
      expect((await dom.info()).state).toBe('running');
      const [c, d] = streamPair();
      const receiving = xen.domains.receiveMigration(d);
      c.write('GET / HTTP/1.1\r\n\r\n');
      await expect(receiving).rejects.toMatchObject({ code: 'XEN_MIGRATION_FAILED' });
      expect((await xen.domains.list()).map((x) => x.name)).toEqual(['Domain-0', 'web']);
    });
  });

  it('aborts on the sender before the hand-over: the source resumes, the destination keeps nothing', async () => {
    await withHost(async (xen) => {
      const dom = await xen.domains.create(web);
      const [a, b] = streamPair();
      const ac = new AbortController();
      const receiving = xen.domains.receiveMigration(b).catch((err: unknown) => err);
      const sending = dom.migrate(a, { signal: ac.signal, onProgress: (p) => p.phase === 'restore' && ac.abort() });
      await expect(sending).rejects.toMatchObject({ name: 'AbortError' });
      expect(await receiving).toMatchObject({ code: 'XEN_MIGRATION_FAILED' });
      expect((await dom.info()).state).toBe('running');
      await expect.poll(async () => (await xen.domains.list()).map((x) => x.name)).toEqual(['Domain-0', 'web']);
    });
  });

  it('receives under another name, paused, and checks its arguments first', async () => {
    await withHost(async (xen) => {
      const dom = await xen.domains.create(web);
      const [a, b] = streamPair();
      const receiving = xen.domains.receiveMigration(b, { name: 'web2', paused: true });
      await dom.migrate(a, { live: false });
      const moved = await receiving;
      expect(await moved.info()).toMatchObject({ name: 'web2', state: 'paused', uuid: dom.uuid });
      await expect(moved.migrate(streamPair()[0], { live: 'yes' as unknown as boolean })).rejects.toThrow(TypeError);
      await expect(xen.domains.receiveMigration(streamPair()[1], { name: '' })).rejects.toThrow(TypeError);
      await expect(xen.domains.receiveMigration('host:1' as never)).rejects.toThrow(TypeError);
    });
  });
});

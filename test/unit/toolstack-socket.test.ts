/**
 * The mock host's toolstack socket at the level of its protocol (docs/mock-host.md):
 * newline-delimited JSON, errors as codes, events in order with replies, and discovery
 * through the host's XenStore.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MockHost, XenStore, connect, connectMockHost } from '../../lib/index.js';

describe('the toolstack socket', () => {
  let dir: string;
  let host: MockHost;
  let tsPath: string;
  let xsPath: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xenode-tsock-'));
    xsPath = join(dir, 'xs.sock');
    tsPath = join(dir, 'ts.sock');
    host = await MockHost.create({ xenstoreSocket: xsPath, toolstackSocket: tsPath, timing: 'instant' });
  });
  afterAll(async () => {
    await host?.close();
    await host?.close(); // twice is harmless
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** A raw client: sends lines, returns parsed lines as they come. */
  async function raw(): Promise<{ sock: Socket; send(obj: unknown): void; next(): Promise<Record<string, unknown>> }> {
    const sock = createConnection(tsPath);
    await new Promise((r) => sock.once('connect', r));
    let buf = '';
    const lines: Record<string, unknown>[] = [];
    const waiters: ((l: Record<string, unknown>) => void)[] = [];
    sock.setEncoding('utf8').on('data', (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n')) {
        const msg = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
        buf = buf.slice(nl + 1);
        const w = waiters.shift();
        if (w) w(msg);
        else lines.push(msg);
      }
    });
    return {
      sock,
      send: (obj) => sock.write(`${typeof obj === 'string' ? obj : JSON.stringify(obj)}\n`),
      next: () => new Promise((resolve) => (lines.length > 0 ? resolve(lines.shift() as Record<string, unknown>) : waiters.push(resolve))),
    };
  }

  it('is recorded in the host XenStore for discovery', async () => {
    const xs = await XenStore.connect(xsPath);
    expect(await xs.read('/tool/xenode/toolstack-socket')).toBe(tsPath);
    await xs.close();
  });

  it('answers requests, errors with codes, and junk with a TypeError line', async () => {
    const c = await raw();
    c.send({ id: 1, method: 'listDomains', params: [] });
    expect(await c.next()).toMatchObject({ id: 1, result: [{ domid: 0, name: 'Domain-0' }] });
    c.send({ id: 2, method: 'domainInfo', params: [4242] });
    expect(await c.next()).toMatchObject({ id: 2, error: { code: 'ESRCH', op: 'domain.info', domid: 4242 } });
    c.send({ id: 3, method: 'close', params: [] });
    expect(await c.next()).toMatchObject({ id: 3, error: { name: 'TypeError' } });
    c.send('not json');
    expect(await c.next()).toMatchObject({ id: null, error: { name: 'TypeError' } });
    c.sock.destroy();
  });

  it('sends events before the reply of the request that caused them', async () => {
    const c = await raw();
    c.send({ id: 1, method: 'subscribe', params: [] });
    const sub = (await c.next()).result;
    c.send({ id: 2, method: 'createDomain', params: [{ name: 'ev', type: 'pv', kernel: '/k', memory: 64, vcpus: 1 }] });
    const created = await c.next();
    expect(created).toMatchObject({ sub, event: { type: 'created', name: 'ev' } });
    const reply = await c.next();
    expect(reply).toMatchObject({ id: 2 });
    c.send({ id: 3, method: 'destroy', params: [reply.result] });
    expect(await c.next()).toMatchObject({ sub, event: { type: 'death' } });
    expect(await c.next()).toMatchObject({ id: 3, result: null });
    c.sock.destroy();
  });

  it('gives the console as raw bytes after the answer line, and an error for a bad domid', async () => {
    const xen = await connect({ backend: connectMockHost(xsPath) });
    const dom = await xen.domains.create({ name: 'con', type: 'pv', kernel: '/k', memory: 64, vcpus: 1 });
    const con = await dom.console();
    const seen = new Promise<string>((resolve) => {
      let text = '';
      con.on('data', (c: Buffer) => {
        text += c.toString('latin1');
        if (text.includes('\u00e9t\u00e9')) resolve(text);
      });
    });
    host.writeConsole(dom.domid, Buffer.from('\u00e9t\u00e9', 'latin1'));
    expect(await seen).toContain('con login: ');
    con.destroy();
    await expect(xen.domains.get(9999)).rejects.toMatchObject({ code: 'ESRCH' });
    await dom.destroy();
    await xen.close();
  });

  it('says XEN_UNAVAILABLE when the host serves no toolstack', async () => {
    const plain = join(dir, 'plain.sock');
    const other = await MockHost.create({ xenstoreSocket: plain });
    try {
      const xen = await connect({ backend: connectMockHost(plain) });
      await expect(xen.domains.list()).rejects.toMatchObject({ code: 'XEN_UNAVAILABLE' });
      await xen.close();
    } finally {
      await other.close();
    }
  });
});

/**
 * The mock xenstored against the conformance suite, in process and over its unix socket,
 * plus what only the wire shows: framing, malformed requests, DIRECTORY_PART, batching.
 */
import { link, lstat, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { XenStoreConnection } from '../../lib/backend.js';
import { XenStoreEngine } from '../../lib/xenstore/engine.js';
import { openWireConnection } from '../../lib/xenstore/client.js';
import { openLocalConnection } from '../../lib/xenstore/local.js';
import type { XenStoreQuota } from '../../lib/xenstore/quota.js';
import { XenStoreServer } from '../../lib/xenstore/server.js';
import { HEADER_SIZE, XsType, encodeMessage, parseStrings, pathAndValue, strings, type XsMessage } from '../../lib/xenstore/wire.js';
import { RawXenStore, errorOf, wireTestConnection } from './wire-test-client.js';
import { xenStoreConformance, type XenStoreSuiteFactory } from './xenstore-suite.js';
import { DomainSockets } from './domain-sockets.js';

/** The engine used directly through openLocalConnection. */
class InProcessFactory implements XenStoreSuiteFactory {
  readonly unprivileged = true;
  private engine: XenStoreEngine | undefined;
  private readonly conns: XenStoreConnection[] = [];

  constructor(private readonly quota?: Partial<XenStoreQuota>) {}

  private get store(): XenStoreEngine {
    this.engine ??= new XenStoreEngine({ quota: this.quota });
    return this.engine;
  }

  async open(domid: number): Promise<XenStoreConnection> {
    const c = openLocalConnection(this.store, domid);
    this.conns.push(c);
    return c;
  }

  async introduce(domid: number): Promise<void> {
    this.store.introduceDomain(domid);
  }

  async release(domid: number): Promise<void> {
    this.store.releaseDomain(domid);
  }

  async withQuota(quota: Partial<XenStoreQuota>): Promise<XenStoreSuiteFactory> {
    return new InProcessFactory(quota);
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.conns.splice(0).map((c) => c.close()));
  }
}

/** A client of the contract over a unix socket. */
type SocketClient = (path: string, domid: number) => Promise<XenStoreConnection>;

/** The test's own minimal wire client. */
const testClient: SocketClient = async (path, domid) => wireTestConnection(await RawXenStore.connect(path), domid);

/** lib/xenstore/client.ts, the TypeScript client of the library. */
const libraryClient: SocketClient = (path, domid) =>
  new Promise((resolve, reject) => {
    const socket = connect(path);
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(openWireConnection(socket, { domid }));
    });
  });

/** The engine behind XenStoreServer on unix sockets, one per domain; domains are introduced over the wire. */
class SocketFactory implements XenStoreSuiteFactory {
  readonly unprivileged = true;
  private readonly sockets: DomainSockets;
  private readonly raws: RawXenStore[] = [];
  private readonly conns: XenStoreConnection[] = [];

  constructor(
    private readonly client: SocketClient,
    private readonly quota?: Partial<XenStoreQuota>,
  ) {
    this.sockets = new DomainSockets(quota);
  }

  private socketOf(domid: number): Promise<string> {
    return this.sockets.socketOf(domid);
  }

  async raw(domid = 0): Promise<RawXenStore> {
    const raw = await RawXenStore.connect(await this.socketOf(domid));
    this.raws.push(raw);
    return raw;
  }

  async open(domid: number): Promise<XenStoreConnection> {
    const conn = await this.client(await this.socketOf(domid), domid);
    this.conns.push(conn);
    return conn;
  }

  private async privileged(type: number, payload: Buffer): Promise<void> {
    const raw = await this.raw(0);
    const reply = await raw.request(type, payload);
    await raw.close();
    const code = errorOf(reply);
    if (code !== undefined) throw new Error(`${type}: ${code}`);
  }

  introduce(domid: number): Promise<void> {
    return this.privileged(XsType.INTRODUCE, strings(String(domid), '0', '1'));
  }

  release(domid: number): Promise<void> {
    return this.privileged(XsType.RELEASE, strings(String(domid)));
  }

  async withQuota(quota: Partial<XenStoreQuota>): Promise<XenStoreSuiteFactory> {
    return new SocketFactory(this.client, quota);
  }

  async cleanup(): Promise<void> {
    await Promise.all([...this.raws.splice(0), ...this.conns.splice(0)].map((c) => c.close()));
    await this.sockets.close();
  }
}

const transports: { name: string; factory: XenStoreSuiteFactory }[] = [
  { name: 'in-process', factory: new InProcessFactory() },
  { name: 'socket', factory: new SocketFactory(testClient) },
  { name: 'socket, library client', factory: new SocketFactory(libraryClient) },
];

describe.each(transports)('mock xenstored ($name)', ({ factory }) => {
  xenStoreConformance('conformance', factory);
});

describe('mock xenstored on the wire', () => {
  let dir: string;
  let engine: XenStoreEngine;
  let server: XenStoreServer;
  let sock: string;
  let guestSock: string;
  const raws: RawXenStore[] = [];
  const connect = async (path = sock): Promise<RawXenStore> => {
    const r = await RawXenStore.connect(path);
    raws.push(r);
    return r;
  };
  const text = (m: XsMessage): string[] => parseStrings(m.payload);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xenode-xsw-'));
    engine = new XenStoreEngine();
    server = new XenStoreServer(engine);
    sock = join(dir, 'xenstored.sock');
    guestSock = join(dir, 'guest.sock');
    await server.listen(sock);
    await server.listen(guestSock, { domid: 9 });
  });
  afterEach(async () => {
    await Promise.all(raws.splice(0).map((r) => r.close()));
  });
  afterAll(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("answers with the request's type, req_id and tx_id", async () => {
    const r = await connect();
    const w = await r.request(XsType.WRITE, pathAndValue('/wire/echo', Buffer.from('v')), 0, 0xdeadbeef);
    expect(w).toMatchObject({ type: XsType.WRITE, reqId: 0xdeadbeef, txId: 0 });
    expect(w.payload.toString('latin1')).toBe('OK\0');
    const start = await r.request(XsType.TRANSACTION_START, strings(''));
    const tx = Number(text(start)[0]);
    const read = await r.request(XsType.READ, strings('/wire/echo'), tx, 77);
    expect(read).toMatchObject({ type: XsType.READ, reqId: 77, txId: tx });
    expect(read.payload.toString()).toBe('v');
    const missing = await r.request(XsType.READ, strings('/wire/none'), tx, 78);
    expect(missing).toMatchObject({ type: XsType.ERROR, reqId: 78, txId: tx });
    expect(missing.payload.toString('latin1')).toBe('ENOENT\0');
  });

  it('answers DIRECTORY with E2BIG past one payload, and serves it in DIRECTORY_PART pieces', async () => {
    const r = await connect();
    const names = Array.from({ length: 300 }, (_, i) => `entry-number-${String(i).padStart(5, '0')}`);
    for (const n of names) await r.request(XsType.MKDIR, strings(`/wire/big/${n}`));
    expect(errorOf(await r.request(XsType.DIRECTORY, strings('/wire/big')))).toBe('E2BIG');
    const got: string[] = [];
    const generations = new Set<string>();
    let offset = 0;
    let parts = 0;
    for (;;) {
      const m = await r.request(XsType.DIRECTORY_PART, strings('/wire/big', String(offset)));
      expect(m.type).toBe(XsType.DIRECTORY_PART);
      expect(m.payload.length).toBeLessThanOrEqual(4096);
      parts++;
      const p = m.payload;
      const gen = p.toString('latin1', 0, p.indexOf(0));
      generations.add(gen);
      const rest = p.subarray(gen.length + 1);
      const last = rest[rest.length - 1] === 0 && (rest.length === 1 || rest[rest.length - 2] === 0);
      const body = last ? rest.subarray(0, rest.length - 1) : rest;
      got.push(...parseStrings(body));
      offset += body.length;
      if (last) break;
    }
    expect(got).toEqual(names);
    expect(parts).toBeGreaterThan(1);
    expect(generations.size).toBe(1);
    // Past the end: only the generation and the terminator.
    const end = await r.request(XsType.DIRECTORY_PART, strings('/wire/big', String(offset + 10)));
    expect(end.payload.toString('latin1')).toBe(`${[...generations][0]}\0\0`);
    // A change of the list changes the generation.
    await r.request(XsType.MKDIR, strings('/wire/big/another'));
    const after = await r.request(XsType.DIRECTORY_PART, strings('/wire/big', '0'));
    expect(text(after)[0]).not.toBe([...generations][0]);
  });

  it('drops a connection that announces an oversized frame, and only that one', async () => {
    const bad = await connect();
    const good = await connect();
    const header = Buffer.alloc(HEADER_SIZE);
    header.writeUInt32LE(XsType.READ, 0);
    header.writeUInt32LE(1, 4);
    header.writeUInt32LE(5000, 12);
    bad.sendRaw(header);
    await bad.closed;
    expect(bad.socket.destroyed).toBe(true);
    const ok = await good.request(XsType.WRITE, pathAndValue('/wire/alive', Buffer.from('yes')));
    expect(ok.type).toBe(XsType.WRITE);
    expect((await good.request(XsType.READ, strings('/wire/alive'))).payload.toString()).toBe('yes');
  });

  it('answers ENOSYS to unknown and reply-only message types', async () => {
    const r = await connect();
    for (const type of [XsType.WATCH_EVENT, XsType.ERROR, 20, XsType.TYPE_COUNT, 999]) {
      const m = await r.request(type, strings('/'));
      expect(m.type).toBe(XsType.ERROR);
      expect(errorOf(m)).toBe('ENOSYS');
    }
  });

  it('answers EINVAL to malformed payloads', async () => {
    const r = await connect();
    const cases: [number, Buffer][] = [
      [XsType.READ, Buffer.from('/wire')], // no NUL
      [XsType.READ, Buffer.from('/wire\0/x\0')], // two strings
      [XsType.READ, Buffer.alloc(0)],
      [XsType.WRITE, Buffer.from('/wire/nonul')],
      [XsType.SET_PERMS, strings('/wire')], // no permission
      [XsType.SET_PERMS, strings('/wire', 'x0')],
      [XsType.SET_PERMS, strings('/wire', 'r')],
      [XsType.SET_PERMS, strings('/wire', 'r70000')],
      [XsType.WATCH, strings('/wire')],
      [XsType.WATCH, strings('/wire', 'tok', '1')], // 4.17 takes no depth
      [XsType.UNWATCH, Buffer.from('/wire\0tok')],
      [XsType.DIRECTORY_PART, strings('/wire')],
      [XsType.TRANSACTION_END, strings('X')],
      [XsType.GET_DOMAIN_PATH, Buffer.alloc(0)],
      [XsType.INTRODUCE, strings('5', '0')],
      [XsType.INTRODUCE, strings('5', '0', '0')], // no event channel
    ];
    for (const [type, payload] of cases) {
      const m = await r.request(type, payload);
      expect(errorOf(m), `${type} ${JSON.stringify(payload.toString('latin1'))}`).toBe('EINVAL');
    }
  });

  it('keeps transactions apart: EBUSY to nest one, ENOENT for an unknown id', async () => {
    const r = await connect();
    const tx = Number(text(await r.request(XsType.TRANSACTION_START, strings('')))[0]);
    expect(tx).toBeGreaterThan(0);
    expect(errorOf(await r.request(XsType.TRANSACTION_START, strings(''), tx))).toBe('EBUSY');
    expect(errorOf(await r.request(XsType.TRANSACTION_START, strings(''), tx + 1000))).toBe('ENOENT');
    expect(errorOf(await r.request(XsType.GET_DOMAIN_PATH, strings('1'), tx + 1000))).toBe('ENOENT');
    expect(errorOf(await r.request(XsType.TRANSACTION_END, strings('T')))).toBe('ENOENT');
    // WATCH ignores the transaction id.
    expect((await r.request(XsType.WATCH, strings('/wire/w', 't'), tx + 1000)).type).toBe(XsType.WATCH);
    expect((await r.request(XsType.TRANSACTION_END, strings('T'), tx)).type).toBe(XsType.TRANSACTION_END);
  });

  it('sends the WATCH reply before the first event, events with req_id and tx_id 0', async () => {
    const r = await connect();
    const reply = await r.request(XsType.WATCH, strings('/wire/ev', 'token'), 0, 555);
    expect(reply.type).toBe(XsType.WATCH);
    await r.request(XsType.WRITE, pathAndValue('/wire/ev/x', Buffer.from('1')));
    const frames = r.received.filter((m) => m.reqId === 555 || m.type === XsType.WATCH_EVENT);
    expect(frames.map((m) => m.type)).toEqual([XsType.WATCH, XsType.WATCH_EVENT, XsType.WATCH_EVENT]);
    expect(r.events.map((m) => [m.reqId, m.txId, m.payload.toString('latin1')])).toEqual([
      [0, 0, '/wire/ev\0token\0'],
      [0, 0, '/wire/ev/x\0token\0'],
    ]);
  });

  it('carries tokens byte for byte', async () => {
    const r = await connect();
    const token = Buffer.from([0x74, 0xff, 0x80, 0xc3, 0x28]);
    await r.request(XsType.WATCH, Buffer.concat([Buffer.from('/wire/tok\0'), token, Buffer.from([0])]));
    await r.request(XsType.WRITE, pathAndValue('/wire/tok', Buffer.from('1')));
    expect(r.events.map((m) => m.payload)).toEqual([Buffer.concat([Buffer.from('/wire/tok\0'), token, Buffer.from([0])]), Buffer.concat([Buffer.from('/wire/tok\0'), token, Buffer.from([0])])]);
  });

  it('answers a pipelined burst in order', async () => {
    const r = await connect();
    const frames: Buffer[] = [];
    const replies: Promise<XsMessage>[] = [];
    for (let i = 1; i <= 200; i++) {
      frames.push(encodeMessage(XsType.WRITE, 10_000 + i, 0, pathAndValue(`/wire/burst/k${i % 7}`, Buffer.from(String(i)))));
      replies.push(r.reply(10_000 + i));
    }
    r.sendRaw(Buffer.concat(frames));
    const got = await Promise.all(replies);
    expect(got.every((m) => m.type === XsType.WRITE)).toBe(true);
    const order = r.received.map((m) => m.reqId).filter((id) => id > 10_000);
    expect(order).toEqual(Array.from({ length: 200 }, (_, i) => 10_001 + i));
    expect((await r.request(XsType.READ, strings('/wire/burst/k4'))).payload.toString()).toBe('200');
  });

  it('refuses privileged requests from an unprivileged connection with EACCES', async () => {
    const g = await connect(guestSock);
    for (const [type, payload] of [
      [XsType.INTRODUCE, strings('12', '0', '1')],
      [XsType.RELEASE, strings('12')],
      [XsType.IS_DOMAIN_INTRODUCED, strings('0')],
      [XsType.RESUME, strings('12')],
      [XsType.SET_TARGET, strings('12', '13')],
      [XsType.CONTROL, strings('help')],
    ] as [number, Buffer][]) {
      expect(errorOf(await g.request(type, payload))).toBe('EACCES');
    }
    expect(text(await g.request(XsType.GET_DOMAIN_PATH, strings('9')))).toEqual(['/local/domain/9']);
  });

  it('manages domains: INTRODUCE, IS_DOMAIN_INTRODUCED, RELEASE', async () => {
    const r = await connect();
    await r.request(XsType.WATCH, strings('@releaseDomain', 'rel'));
    expect(text(await r.request(XsType.IS_DOMAIN_INTRODUCED, strings('21')))).toEqual(['F']);
    expect(text(await r.request(XsType.IS_DOMAIN_INTRODUCED, strings('0')))).toEqual(['T']);
    expect(text(await r.request(XsType.IS_DOMAIN_INTRODUCED, strings(String(0x7ff0))))).toEqual(['T']);
    expect((await r.request(XsType.INTRODUCE, strings('21', '12345', '3'))).type).toBe(XsType.INTRODUCE);
    expect(text(await r.request(XsType.IS_DOMAIN_INTRODUCED, strings('21')))).toEqual(['T']);
    expect((await r.request(XsType.RELEASE, strings('21'))).type).toBe(XsType.RELEASE);
    expect(text(await r.request(XsType.IS_DOMAIN_INTRODUCED, strings('21')))).toEqual(['F']);
    expect(errorOf(await r.request(XsType.RELEASE, strings('21')))).toBe('ENOENT');
    expect(errorOf(await r.request(XsType.RELEASE, strings('0')))).toBe('EINVAL');
    expect(errorOf(await r.request(XsType.RESUME, strings('22')))).toBe('ENOENT');
    expect(r.events.map((m) => text(m))).toEqual([
      ['@releaseDomain', 'rel'],
      ['@releaseDomain', 'rel'],
    ]);
  });

  it('answers XS_CONTROL check, print, help and quota', async () => {
    const r = await connect();
    expect((await r.request(XsType.CONTROL, strings('check'))).payload.toString('latin1')).toBe('OK\0');
    expect((await r.request(XsType.CONTROL, strings('print', 'hello'))).payload.toString('latin1')).toBe('OK\0');
    expect((await r.request(XsType.CONTROL, strings('help'))).payload.toString()).toContain('quota\t');
    expect(errorOf(await r.request(XsType.CONTROL, strings('no-such-command')))).toBe('EINVAL');
    expect((await r.request(XsType.CONTROL, strings('quota', 'set', 'nodes', '77'))).payload.toString('latin1')).toBe('OK\0');
    expect(engine.quota.nodes).toBe(77);
    const shown = (await r.request(XsType.CONTROL, strings('quota'))).payload.toString();
    expect(shown).toMatch(/^Quota settings:\n/);
    expect(shown).toMatch(/nodes\s+:\s+77 Nodes per domain/);
    expect(errorOf(await r.request(XsType.CONTROL, strings('quota', 'set', 'nodes', '0')))).toBe('EINVAL');
    expect((await r.request(XsType.CONTROL, strings('quota', '0'))).payload.toString()).toMatch(/^Domain 0:\nnodes\s+:\s+\d+/);
    expect(errorOf(await r.request(XsType.CONTROL, strings('quota', '4000')))).toBe('ENOENT');
    engine.setQuota({ nodes: 1000 });
  });

  it('answers every well-framed request, whatever its content, and keeps serving', async () => {
    const fuzzDir = await mkdtemp(join(tmpdir(), 'xenode-xsf-'));
    const fuzzServer = new XenStoreServer(new XenStoreEngine());
    const path = join(fuzzDir, 'fuzz.sock');
    await fuzzServer.listen(path);
    await fuzzServer.listen(join(fuzzDir, 'guest.sock'), { domid: 4 });
    try {
      const word = fc.constantFrom('/', '/a', '/a/b', 'rel', 'rel/x', '@introduceDomain', '@releaseDomain', '', 'T', 'F', '0', '4', '7', 'r4', 'b0', 'n7', 'x9', '-1', '99999999999', 'quota', 'help', 'check', 'print', '/a//b', 'é');
      const structured = fc.array(word, { maxLength: 4 }).map((ws) => strings(...ws));
      const payload = fc.oneof(structured, fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)), structured.map((p) => p.subarray(0, Math.max(0, p.length - 1))));
      const frame = fc.record({ type: fc.integer({ min: 0, max: 30 }), tx: fc.constantFrom(0, 0, 1, 2, 0xffffffff), payload });
      await fc.assert(
        fc.asyncProperty(fc.array(frame, { minLength: 1, maxLength: 40 }), fc.boolean(), async (frames, asGuest) => {
          const r = await RawXenStore.connect(asGuest ? join(fuzzDir, 'guest.sock') : path);
          try {
            const replies = frames.map((_, i) => r.reply(i + 1));
            r.sendRaw(Buffer.concat(frames.map((f, i) => encodeMessage(f.type, i + 1, f.tx, f.payload))));
            const got = await Promise.all(replies);
            for (const [i, m] of got.entries()) {
              expect(m.reqId).toBe(i + 1);
              expect(m.txId).toBe(frames[i].tx);
              expect([frames[i].type, XsType.ERROR]).toContain(m.type);
            }
            expect(text(await r.request(XsType.GET_DOMAIN_PATH, strings('1')))).toEqual(['/local/domain/1']);
          } finally {
            await r.close();
          }
        }),
        { numRuns: 60 },
      );
    } finally {
      await fuzzServer.close();
      await rm(fuzzDir, { recursive: true, force: true });
    }
  });

  it('counts its connections, closes idempotently and replaces a stale socket file', async () => {
    const local = new XenStoreServer(new XenStoreEngine());
    const path = join(dir, 'second.sock');
    await local.listen(path);
    const a = await RawXenStore.connect(path);
    const b = await RawXenStore.connect(path);
    await a.request(XsType.GET_DOMAIN_PATH, strings('0'));
    await b.request(XsType.GET_DOMAIN_PATH, strings('0'));
    expect(local.connections).toBe(2);
    await a.close();
    await new Promise((r) => setTimeout(r, 20));
    expect(local.connections).toBe(1);
    await Promise.all([local.close(), local.close()]);
    await b.closed;
    expect(local.connections).toBe(0);
    await expect(local.listen(path)).rejects.toMatchObject({ code: 'XEN_CLOSED' });

    // A socket file nobody listens on any more is replaced; a regular file is not. A hard
    // link keeps the file of a closed listener, as a crashed server leaves it.
    const first = new XenStoreServer(new XenStoreEngine());
    const live = join(dir, 'live.sock');
    const stale = join(dir, 'stale.sock');
    await first.listen(live);
    await link(live, stale);
    await first.close();
    expect((await lstat(stale)).isSocket()).toBe(true);
    const again = new XenStoreServer(new XenStoreEngine());
    await again.listen(stale);
    const c = await RawXenStore.connect(stale);
    expect(text(await c.request(XsType.GET_DOMAIN_PATH, strings('3')))).toEqual(['/local/domain/3']);
    await c.close();
    await again.close();
    const plain = join(dir, 'plain-file');
    await writeFile(plain, 'not a socket');
    const third = new XenStoreServer(new XenStoreEngine());
    await expect(third.listen(plain)).rejects.toThrow();
    await third.close();
  });
});

import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { XenStoreConnection } from '../../lib/backend.js';
import { XenError } from '../../lib/errors.js';
import { connectXenStore, openWireConnection, xenstoredSocketPath } from '../../lib/xenstore/client.js';
import { FrameDecoder, XsType, encodeMessage, strings, type XsMessage } from '../../lib/xenstore/wire.js';

/** Two connected in-memory streams; `writes` counts the chunks the client side wrote. */
function duplexPair(): { client: Duplex; server: Duplex; writes: { count: number } } {
  const writes = { count: 0 };
  // eslint-disable-next-line prefer-const -- the two ends refer to each other
  let server: Duplex;
  const client = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      writes.count++;
      server.push(chunk);
      cb();
    },
    final(cb) {
      server.push(null);
      cb();
    },
  });
  server = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      client.push(chunk);
      cb();
    },
    final(cb) {
      client.push(null);
      cb();
    },
  });
  return { client, server, writes };
}

/** A scripted xenstored: records requests and answers exactly as a test tells it. */
class FakeXenstored {
  readonly seen: XsMessage[] = [];
  private readonly queue: XsMessage[] = [];
  private waiters: ((m: XsMessage) => void)[] = [];
  private readonly decoder = new FrameDecoder();
  dataEvents = 0;

  constructor(readonly stream: Duplex) {
    stream.on('data', (chunk: Buffer) => {
      this.dataEvents++;
      for (const m of this.decoder.push(chunk)) {
        this.seen.push(m);
        const w = this.waiters.shift();
        if (w) w(m);
        else this.queue.push(m);
      }
    });
    stream.on('error', () => {});
  }

  next(): Promise<XsMessage> {
    const m = this.queue.shift();
    if (m) return Promise.resolve(m);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  async take(n: number): Promise<XsMessage[]> {
    const out: XsMessage[] = [];
    for (let i = 0; i < n; i++) out.push(await this.next());
    return out;
  }

  frame(req: XsMessage, payload: string | Buffer, type: number = req.type): Buffer {
    return encodeMessage(type, req.reqId, req.txId, typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload);
  }

  reply(req: XsMessage, payload: string | Buffer = 'OK\0', type?: number): void {
    this.stream.write(this.frame(req, payload, type));
  }

  error(req: XsMessage, name: string): void {
    this.reply(req, `${name}\0`, XsType.ERROR);
  }

  event(path: string, token: string): Buffer {
    return encodeMessage(XsType.WATCH_EVENT, 0, 0, strings(path, token));
  }
}

const text = (m: XsMessage): string => m.payload.toString('latin1');

async function rejection(promise: Promise<unknown>): Promise<XenError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(XenError);
    return err as XenError;
  }
  throw new Error('expected the promise to reject');
}

describe('wire client over an in-memory stream', () => {
  let pair: ReturnType<typeof duplexPair>;
  let xs: FakeXenstored;
  let conn: XenStoreConnection;

  beforeEach(() => {
    pair = duplexPair();
    xs = new FakeXenstored(pair.server);
    conn = openWireConnection(pair.client, { domid: 7 });
  });

  afterEach(async () => {
    await conn.close();
  });

  it('frames a read and resolves with the value as a Buffer', async () => {
    expect(conn.domid).toBe(7);
    const value = conn.read(3, '/local/domain/7/name');
    const req = await xs.next();
    expect(req.type).toBe(XsType.READ);
    expect(req.txId).toBe(3);
    expect(text(req)).toBe('/local/domain/7/name\0');
    xs.reply(req, Buffer.from([0x68, 0x69, 0x00, 0xff]));
    const got = await value;
    expect(Buffer.isBuffer(got)).toBe(true);
    expect([...got]).toEqual([0x68, 0x69, 0x00, 0xff]);
  });

  it('matches replies sent out of order by req_id', async () => {
    const reads = ['/a', '/b', '/c'].map((p) => conn.read(0, p));
    const reqs = await xs.take(3);
    expect(new Set(reqs.map((r) => r.reqId)).size).toBe(3);
    for (const req of [...reqs].reverse()) xs.reply(req, `value of ${text(req).slice(0, -1)}`);
    const values = await Promise.all(reads);
    expect(values.map((v) => v.toString())).toEqual(['value of /a', 'value of /b', 'value of /c']);
  });

  it('sends every request of one tick in a single write', async () => {
    const ops = Array.from({ length: 20 }, (_, i) => conn.write(0, `/n/${i}`, Buffer.from(String(i))));
    const reqs = await xs.take(20);
    expect(pair.writes.count).toBe(1);
    expect(xs.dataEvents).toBe(1);
    expect(text(reqs[5] as XsMessage)).toBe('/n/5\x005');
    for (const r of reqs) xs.reply(r);
    await Promise.all(ops);
  });

  it('keeps frames whole and in order when one tick fills more than a slab', async () => {
    const values = Array.from({ length: 40 }, (_, i) => Buffer.alloc(4000, i));
    const ops = values.map((v, i) => conn.write(0, `/big/${i}`, v));
    const reqs = await xs.take(40);
    reqs.forEach((r, i) => {
      expect(r.payload.subarray(0, r.payload.indexOf(0)).toString()).toBe(`/big/${i}`);
      expect(r.payload.subarray(r.payload.indexOf(0) + 1).equals(values[i] as Buffer)).toBe(true);
    });
    for (const r of reqs) xs.reply(r);
    await Promise.all(ops);
  });

  it('rejects an XS_ERROR reply with a XenError naming op and path', async () => {
    const value = conn.read(0, '/missing');
    xs.error(await xs.next(), 'ENOENT');
    const err = await rejection(value);
    expect(err.code).toBe('ENOENT');
    expect(err.errno).toBe(constants.errno.ENOENT);
    expect(err.op).toBe('xenstore.read');
    expect(err.path).toBe('/missing');
    // The connection is still usable.
    const again = conn.read(0, '/there');
    xs.reply(await xs.next(), 'yes');
    expect((await again).toString()).toBe('yes');
  });

  it('delivers watch events interleaved with replies, in stream order', async () => {
    const log: string[] = [];
    conn.onWatchEvent = (path, token) => log.push(`event ${path} ${token}`);
    const watched = conn.watch('/vm', 'tok').then(() => log.push('watch acked'));
    const wreq = await xs.next();
    expect(wreq.type).toBe(XsType.WATCH);
    expect(text(wreq)).toBe('/vm\0tok\0');
    const read = conn.read(0, '/vm/x').then((v) => log.push(`read ${v.toString()}`));
    const rreq = await xs.next();
    // Ack, first event, a change event, then the read's reply, all in one chunk.
    pair.server.write(Buffer.concat([xs.frame(wreq, 'OK\0'), xs.event('/vm', 'tok'), xs.event('/vm/x', 'tok'), xs.frame(rreq, '1')]));
    await Promise.all([watched, read]);
    // Events are handed over while the chunk is parsed; promises settle after that.
    expect(log.slice(0, 2)).toEqual(['event /vm tok', 'event /vm/x tok']);
    expect(log.slice(2).sort()).toEqual(['read 1', 'watch acked']);
  });

  it('reassembles frames delivered a byte at a time', async () => {
    const events: string[] = [];
    conn.onWatchEvent = (path) => events.push(path);
    const value = conn.read(0, '/slow');
    const req = await xs.next();
    const bytes = Buffer.concat([xs.event('/w', 't'), xs.frame(req, 'slowly')]);
    for (const b of bytes) pair.server.write(Buffer.from([b]));
    expect((await value).toString()).toBe('slowly');
    expect(events).toEqual(['/w']);
  });

  it('lists a directory', async () => {
    const list = conn.directory(0, '/d');
    const req = await xs.next();
    expect(req.type).toBe(XsType.DIRECTORY);
    xs.reply(req, 'a\0bb\0c\0');
    expect(await list).toEqual(['a', 'bb', 'c']);
    const empty = conn.directory(0, '/e');
    xs.reply(await xs.next(), '');
    expect(await empty).toEqual([]);
  });

  it('falls back to XS_DIRECTORY_PART when the list is too big', async () => {
    const list = conn.directory(5, '/big');
    xs.error(await xs.next(), 'E2BIG');
    const p1 = await xs.next();
    expect(p1.type).toBe(XsType.DIRECTORY_PART);
    expect(p1.txId).toBe(5);
    expect(text(p1)).toBe('/big\x000\0');
    xs.reply(p1, '7\0alpha\0beta\0');
    const p2 = await xs.next();
    expect(text(p2)).toBe('/big\x0011\0');
    xs.reply(p2, '7\0gamma\0\0');
    expect(await list).toEqual(['alpha', 'beta', 'gamma']);
  });

  it('restarts a DIRECTORY_PART read when the generation changes', async () => {
    const list = conn.directory(0, '/big');
    xs.error(await xs.next(), 'E2BIG');
    const p1 = await xs.next();
    xs.reply(p1, '7\0a\0b\0');
    const p2 = await xs.next();
    expect(text(p2)).toBe('/big\x004\0');
    xs.reply(p2, '8\0x\0\0');
    const p3 = await xs.next();
    expect(text(p3)).toBe('/big\x000\0');
    xs.reply(p3, '8\0a\0x\0');
    const p4 = await xs.next();
    expect(text(p4)).toBe('/big\x004\0');
    xs.reply(p4, '8\0\0');
    expect(await list).toEqual(['a', 'x']);
  });

  it('turns ENOSYS for XS_DIRECTORY_PART into E2BIG, as libxenstore does', async () => {
    const list = conn.directory(0, '/big');
    xs.error(await xs.next(), 'E2BIG');
    xs.error(await xs.next(), 'ENOSYS');
    const err = await rejection(list);
    expect(err.code).toBe('E2BIG');
    expect(err.path).toBe('/big');
  });

  it('starts and ends transactions', async () => {
    const start = conn.transactionStart();
    const sreq = await xs.next();
    expect(sreq.type).toBe(XsType.TRANSACTION_START);
    expect(sreq.txId).toBe(0);
    expect(text(sreq)).toBe('\0');
    xs.reply(sreq, '42\0');
    expect(await start).toBe(42);

    const commit = conn.transactionEnd(42, true);
    const creq = await xs.next();
    expect(creq.txId).toBe(42);
    expect(text(creq)).toBe('T\0');
    xs.error(creq, 'EAGAIN');
    expect((await rejection(commit)).code).toBe('EAGAIN');

    const abort = conn.transactionEnd(43, false);
    const areq = await xs.next();
    expect(text(areq)).toBe('F\0');
    xs.reply(areq);
    await abort;
  });

  it('rejects a transaction id that is not a positive decimal with XEN_PROTOCOL', async () => {
    const start = conn.transactionStart();
    xs.reply(await xs.next(), 'x1\0');
    expect((await rejection(start)).code).toBe('XEN_PROTOCOL');
  });

  it('gets and sets permissions', async () => {
    const get = conn.getPermissions(0, '/p');
    const greq = await xs.next();
    expect(greq.type).toBe(XsType.GET_PERMS);
    xs.reply(greq, 'w3\0r5\0n7\0b9\0');
    expect(await get).toEqual([
      { domid: 3, read: false, write: true },
      { domid: 5, read: true, write: false },
      { domid: 7, read: false, write: false },
      { domid: 9, read: true, write: true },
    ]);

    const set = conn.setPermissions(2, '/p', [
      { domid: 0, read: false, write: false },
      { domid: 5, read: true, write: false },
    ]);
    const sreq = await xs.next();
    expect(sreq.type).toBe(XsType.SET_PERMS);
    expect(sreq.txId).toBe(2);
    expect(text(sreq)).toBe('/p\0n0\0r5\0');
    xs.reply(sreq);
    await set;
  });

  it('frames write, mkdir, rm, unwatch and getDomainPath', async () => {
    const w = conn.write(0, 'rel/name', Buffer.from('v\0x'));
    const wreq = await xs.next();
    expect([wreq.type, text(wreq)]).toEqual([XsType.WRITE, 'rel/name\0v\0x']);
    xs.reply(wreq);
    await w;

    const m = conn.mkdir(0, '/m');
    const mreq = await xs.next();
    expect([mreq.type, text(mreq)]).toEqual([XsType.MKDIR, '/m\0']);
    xs.reply(mreq);
    await m;

    const r = conn.rm(0, '/m');
    const rreq = await xs.next();
    expect([rreq.type, text(rreq)]).toEqual([XsType.RM, '/m\0']);
    xs.reply(rreq);
    await r;

    const u = conn.unwatch('@releaseDomain', 't');
    const ureq = await xs.next();
    expect([ureq.type, text(ureq)]).toEqual([XsType.UNWATCH, '@releaseDomain\0t\0']);
    xs.error(ureq, 'ENOENT');
    expect((await rejection(u)).code).toBe('ENOENT');

    const d = conn.getDomainPath(5);
    const dreq = await xs.next();
    expect([dreq.type, text(dreq)]).toEqual([XsType.GET_DOMAIN_PATH, '5\0']);
    xs.reply(dreq, '/local/domain/5\0');
    expect(await d).toBe('/local/domain/5');
  });

  it('rejects payloads over 4096 bytes with E2BIG before sending anything', async () => {
    const tooLong = await rejection(conn.write(0, '/big', Buffer.alloc(4096)));
    expect(tooLong.code).toBe('E2BIG');
    expect(tooLong.op).toBe('xenstore.write');
    expect(tooLong.path).toBe('/big');
    // 1500 euro signs are 4500 bytes of UTF-8 though only 1500 UTF-16 units.
    expect((await rejection(conn.read(0, `/${'€'.repeat(1500)}`))).code).toBe('E2BIG');
    expect((await rejection(conn.watch('/w', 't'.repeat(4094)))).code).toBe('E2BIG');

    // Exactly 4096 bytes of payload is allowed: "/big\0" plus 4091 bytes.
    const fits = conn.write(0, '/big', Buffer.alloc(4091, 1));
    const req = await xs.next();
    expect(req.payload.length).toBe(4096);
    xs.reply(req);
    await fits;
    expect(xs.seen).toHaveLength(1);
  });

  it('refuses a path holding a NUL byte with EINVAL', async () => {
    expect((await rejection(conn.read(0, '/a\0/b'))).code).toBe('EINVAL');
    expect((await rejection(conn.watch('/a', 't\0u'))).code).toBe('EINVAL');
    expect(xs.seen).toHaveLength(0);
  });

  it('skips req_ids still outstanding when the counter wraps', async () => {
    const first = conn.read(0, '/first');
    const r0 = await xs.next();
    expect(r0.reqId).toBe(0);
    // White-box: move the u32 counter to its last value.
    (conn as unknown as { nextReqId: number }).nextReqId = 0xffffffff;
    const second = conn.read(0, '/second');
    const third = conn.read(0, '/third');
    const [r1, r2] = await xs.take(2);
    expect(r1?.reqId).toBe(0xffffffff);
    expect(r2?.reqId).toBe(1);
    for (const r of [r2, r1, r0] as XsMessage[]) xs.reply(r, text(r));
    expect((await Promise.all([first, second, third])).map(String)).toEqual(['/first\0', '/second\0', '/third\0']);
  });

  it('a frame announcing more than 4096 bytes destroys the connection', async () => {
    const reasons: Error[] = [];
    conn.onDisconnect = (r) => reasons.push(r);
    const a = conn.read(0, '/a');
    const b = conn.directory(0, '/b');
    await xs.take(2);
    const bad = Buffer.alloc(16);
    bad.writeUInt32LE(XsType.READ, 0);
    bad.writeUInt32LE(5000, 12);
    pair.server.write(bad);
    const [ea, eb] = await Promise.all([rejection(a), rejection(b)]);
    expect(ea.code).toBe('XEN_PROTOCOL');
    expect(eb).toBe(ea);
    expect(reasons).toEqual([ea]);
    expect(pair.client.destroyed).toBe(true);
    const later = await rejection(conn.read(0, '/c'));
    expect(later.code).toBe('XEN_CLOSED');
    await conn.close();
    expect(reasons).toHaveLength(1);
  });

  it('a reply to a req_id not outstanding destroys the connection', async () => {
    const reasons: Error[] = [];
    conn.onDisconnect = (r) => reasons.push(r);
    const a = conn.read(0, '/a');
    const req = await xs.next();
    pair.server.write(encodeMessage(XsType.READ, req.reqId + 100, 0, Buffer.from('x')));
    const err = await rejection(a);
    expect(err.code).toBe('XEN_PROTOCOL');
    expect(err.message).toMatch(/not outstanding/);
    expect(reasons).toEqual([err]);
  });

  it('a reply of the wrong type destroys the connection', async () => {
    const reasons: Error[] = [];
    conn.onDisconnect = (r) => reasons.push(r);
    const a = conn.read(0, '/a');
    xs.reply(await xs.next(), 'OK\0', XsType.WRITE);
    const err = await rejection(a);
    expect(err.code).toBe('XEN_PROTOCOL');
    expect(reasons).toEqual([err]);
  });

  it('when the peer closes, pending calls reject with XEN_CLOSED and onDisconnect runs once', async () => {
    const reasons: Error[] = [];
    conn.onDisconnect = (r) => reasons.push(r);
    const a = conn.read(0, '/a');
    const w = conn.watch('/w', 't');
    await xs.take(2);
    pair.server.end();
    const [ea, ew] = await Promise.all([rejection(a), rejection(w)]);
    expect(ea.code).toBe('XEN_CLOSED');
    expect(ea.message).toBe('the connection to xenstored closed');
    expect(ew).toBe(ea);
    await new Promise((r) => setImmediate(r));
    expect(reasons).toEqual([ea]);
    const later = await rejection(conn.mkdir(0, '/m'));
    expect(later.code).toBe('XEN_CLOSED');
    expect(later.op).toBe('xenstore.mkdir');
  });

  it('close() rejects pending calls, may be called twice, and does not call onDisconnect', async () => {
    const onDisconnect = vi.fn();
    conn.onDisconnect = onDisconnect;
    const a = conn.read(0, '/a');
    const t = conn.transactionStart();
    await xs.take(2);
    await Promise.all([conn.close(), conn.close()]);
    await conn.close();
    const [ea, et] = await Promise.all([rejection(a), rejection(t)]);
    expect(ea.code).toBe('XEN_CLOSED');
    expect(ea.op).toBe('xenstore.read');
    expect(ea.path).toBe('/a');
    expect(et.code).toBe('XEN_CLOSED');
    expect((await rejection(conn.read(0, '/b'))).code).toBe('XEN_CLOSED');
    expect(onDisconnect).not.toHaveBeenCalled();
    expect(pair.client.destroyed).toBe(true);
  });

  it('a reply arriving after close() is ignored', async () => {
    const a = conn.read(0, '/a');
    const req = await xs.next();
    await conn.close();
    xs.reply(req, 'late');
    expect((await rejection(a)).code).toBe('XEN_CLOSED');
  });
});

describe('wire client over a unix socket', () => {
  let dir: string;
  let server: Server;
  let peer: Promise<Socket>;
  let accepted: Socket[];

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'xenode-client-'));
    accepted = [];
    let accept!: (s: Socket) => void;
    peer = new Promise((r) => (accept = r));
    server = createServer((s) => {
      accepted.push(s);
      accept(s);
    });
    await new Promise<void>((r) => server.listen(join(dir, 'sock'), r));
  });

  afterEach(async () => {
    for (const s of accepted) s.destroy();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  it('connects as dom0 to the socket at XENSTORED_PATH', async () => {
    vi.stubEnv('XENSTORED_PATH', join(dir, 'sock'));
    try {
      const conn = await connectXenStore();
      expect(conn.domid).toBe(0);
      const xs = new FakeXenstored(await peer);
      const value = conn.read(0, '/x');
      xs.reply(await xs.next(), 'over a socket');
      expect((await value).toString()).toBe('over a socket');
      await conn.close();
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it('holds a ref on the socket only while a reply is awaited or a watch is registered', async () => {
    const conn = await connectXenStore(join(dir, 'sock'));
    const xs = new FakeXenstored(await peer);
    // Observe the state the connection leaves the socket in through ref()/unref().
    const socket = (conn as unknown as { socket: Socket }).socket;
    let refed: boolean | undefined;
    const origRef = socket.ref.bind(socket);
    const origUnref = socket.unref.bind(socket);
    vi.spyOn(socket, 'ref').mockImplementation(() => ((refed = true), origRef()));
    vi.spyOn(socket, 'unref').mockImplementation(() => ((refed = false), origUnref()));

    const read = conn.read(0, '/a');
    expect(refed).toBe(true);
    xs.reply(await xs.next(), 'v');
    await read;
    expect(refed).toBe(false);

    const watch = conn.watch('/w', 't');
    xs.reply(await xs.next());
    await watch;
    expect(refed).toBe(true); // a registered watch keeps the process alive

    const unwatch = conn.unwatch('/w', 't');
    xs.reply(await xs.next());
    await unwatch;
    expect(refed).toBe(false);

    const pending = conn.read(0, '/b');
    expect(refed).toBe(true);
    await conn.close();
    await rejection(pending);
    expect(refed).toBe(false);
  });

  it('turns a missing socket into ENOENT with a hint', async () => {
    const path = join(dir, 'nothing-here');
    const err = await rejection(connectXenStore(path));
    expect(err.code).toBe('ENOENT');
    expect(err.op).toBe('xenstore.connect');
    expect(err.path).toBe(path);
    expect(err.message).toMatch(/xenstored running/);
    expect(err.message).toMatch(/XENSTORED_PATH/);
  });

  it('uses a duplex stream as it is', async () => {
    const pair = duplexPair();
    const conn = await connectXenStore(pair.client);
    expect(conn.domid).toBeUndefined();
    const xs = new FakeXenstored(pair.server);
    const value = conn.getDomainPath(0);
    xs.reply(await xs.next(), '/local/domain/0\0');
    expect(await value).toBe('/local/domain/0');
    await conn.close();
  });
});

describe('xenstoredSocketPath', () => {
  it('follows libxenstore: XENSTORED_PATH, then XENSTORED_RUNDIR, then the default', () => {
    expect(xenstoredSocketPath({ XENSTORED_PATH: '/x/s' })).toBe('/x/s');
    expect(xenstoredSocketPath({ XENSTORED_RUNDIR: '/run/xs' })).toBe('/run/xs/socket');
    expect(xenstoredSocketPath({})).toBe('/var/run/xenstored/socket');
  });
});

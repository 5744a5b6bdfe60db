/**
 * The XenStore conformance suite (test/conformance/xenstore-suite.ts) against the real
 * xenstored of this boot (oxenstored or C xenstored), through each way xenode reaches it:
 *   - the native backend, libxenstore on xenstored's unix socket;
 *   - the TypeScript client on /var/run/xenstored/socket.
 * Unprivileged connections are real guests' own: two test guests booted in relay mode
 * lend theirs over their consoles (guest-relay.ts), so xenstored itself decides what an
 * unprivileged domain may do. Introducing and releasing a domain is what the toolstack
 * does: `xl create -p` and `xl destroy`. The kernel's xenbus device, libxenstore's other
 * transport, is checked at the end.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { readdir, readFile, readlink, writeFile } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import type { XenBackend, XenStoreConnection } from '../../lib/backend.js';
import { createNativeBackend } from '../../lib/native/backend.js';
import { connectXenStore } from '../../lib/xenstore/client.js';
import { encodeMessage, FrameDecoder, strings, XsType } from '../../lib/xenstore/wire.js';
import type { XenStoreQuota } from '../../lib/xenstore/quota.js';
import { run } from '../helpers/run.js';
import { xenStoreConformance, type XenStoreSuiteFactory } from '../conformance/xenstore-suite.js';
import { RelayGuest } from './guest-relay.js';
import { guest, xenstored, xl } from './tier.js';

const socket = '/var/run/xenstored/socket';

/** The unprivileged domains of every factory here: booted once for the file. */
const relays: RelayGuest[] = [];
let introduced = 0;

beforeAll(async () => {
  for (const g of await Promise.all(['a', 'b'].map((n) => RelayGuest.boot(`xenode-relay-${n}-${process.pid}`)))) relays.push(g);
}, 600_000);

afterAll(async () => {
  // a quota case that failed before its cleanup ran must not leave oxenstored limited
  await restoreOxenstored?.();
  await Promise.all(relays.map((g) => g.destroy()));
});

/** What the real-Xen factories share: guests through the relay, the toolstack for domains. */
abstract class RealXenFactory implements XenStoreSuiteFactory {
  readonly implementation = xenstored;
  readonly unprivileged = true;
  /** A fifth of the mock's: the model case took 100-155 s per transport at 25 under TCG. */
  readonly modelRuns = 5;
  abstract readonly oversizedReply: string;
  /**
   * C xenstored 4.17 validates a special name as a path before anything else, so a
   * guest's XS_SET_PERMS of `@introduceDomain` gets EINVAL rather than EACCES (and so does
   * anyone's XS_GET_PERMS of it); in two of four boots the guest's connection got no
   * answer at all afterwards, and every later case of the boot needs it. So the guest does
   * not try there; the watches' half of the case runs on both daemons.
   */
  readonly guestGrantsSpecialName = xenstored !== 'xenstored';

  get guests(): number[] {
    return relays.map((g) => g.domid);
  }

  protected abstract openDom0(): Promise<XenStoreConnection>;

  async open(domid: number): Promise<XenStoreConnection> {
    if (domid === 0) return this.openDom0();
    const relay = relays.find((g) => g.domid === domid);
    if (!relay) throw new Error(`domain ${domid} is not one of the relay guests`);
    return relay.open();
  }

  /** A paused guest: libxl introduces it to xenstored while building it. */
  async introduce(): Promise<number> {
    const name = `xenode-intro-${process.pid}-${++introduced}`;
    await xl(['create', '-p', guest.config, `name="${name}"`]);
    return Number((await xl(['domid', name])).trim());
  }

  async release(domid: number): Promise<void> {
    await xl(['destroy', String(domid)]);
  }

  /**
   * C xenstored sets its quotas at run time (`xenstore-control quota set`), for every
   * unprivileged domain at once. A real guest already owns nodes (its devices, its
   * console) and its kernel holds watches, so the quotas set are the ones asked for plus
   * what the first guest holds beyond its home; cleanup() puts the old ones back.
   * oxenstored reads its quotas from oxenstored.conf when it starts: the factory writes
   * them there and has the daemon re-execute itself (a live update), and does both again
   * with the old file in cleanup().
   */
  readonly withQuota = (quota: Partial<XenStoreQuota>): Promise<XenStoreSuiteFactory> =>
    xenstored === 'xenstored' ? withRuntimeQuota(this, quota) : withLiveUpdateQuota(this, quota);

  /**
   * oxenstored's own answers past a quota (measured on Xen 4.17): EQUOTA for nodes and
   * transactions, E2BIG for a value too large; a watch past the quota is EQUOTA too, which
   * the guest kernel's xenbus turns into EINVAL (its table of xenstored's error names has
   * no EQUOTA), and that is what a program in the guest sees. It has no quota on
   * permission entries.
   */
  readonly quotaErrors = xenstored === 'oxenstored' ? ({ nodes: 'EQUOTA', nodeSize: 'E2BIG', transactions: 'EQUOTA', watches: 'EINVAL', permissions: null } as const) : undefined;

  abstract cleanup(): Promise<void>;
}

/** `xenstore-control ARGS`; throws unless it exits 0. */
async function xenstoreControl(args: readonly string[]): Promise<string> {
  const r = await run('xenstore-control', args, { timeout: 60_000 });
  if (r.code !== 0) throw new Error(`xenstore-control ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** The `name : value` lines of `xenstore-control quota [domid]`. */
async function quotaLines(args: readonly string[]): Promise<Map<string, number>> {
  const values = new Map<string, number>();
  for (const line of (await xenstoreControl(['quota', ...args])).split('\n')) {
    const m = /^\s*(\S+)\s*:\s*(\d+)/.exec(line);
    if (m) values.set(m[1] as string, Number(m[2]));
  }
  return values;
}

const quotaNames: Record<keyof XenStoreQuota, string> = {
  nodes: 'nodes',
  watches: 'watches',
  transactions: 'transactions',
  transactionNodes: 'transaction-nodes',
  nodeSize: 'node-size',
  permissions: 'permissions',
};

/** Leaves the first guest's home as the suite's guest() does: owned by it, no conformance/ nodes. */
async function resetHome(domid: number): Promise<void> {
  const home = `/local/domain/${domid}`;
  const dom0 = await connectXenStore(socket);
  try {
    await dom0.setPermissions(0, home, [{ domid, read: false, write: false }]);
    await dom0.rm(0, `${home}/conformance`);
  } finally {
    await dom0.close();
  }
}

/** The factory `base` with `cleanup` replaced. */
function limitedFactory(base: RealXenFactory, cleanup: () => Promise<void>): XenStoreSuiteFactory {
  const limited = Object.create(base) as RealXenFactory;
  Object.defineProperty(limited, 'cleanup', { value: cleanup });
  return limited;
}

async function withRuntimeQuota(base: RealXenFactory, quota: Partial<XenStoreQuota>): Promise<XenStoreSuiteFactory> {
  const domid = base.guests[0] as number;
  await resetHome(domid);
  const before = await quotaLines([]);
  const held = await quotaLines([String(domid)]);
  const extra: Partial<Record<keyof XenStoreQuota, number>> = {
    nodes: (held.get('nodes') ?? 1) - 1,
    watches: held.get('watches') ?? 0,
    transactions: held.get('transactions') ?? 0,
  };
  for (const [key, value] of Object.entries(quota) as [keyof XenStoreQuota, number][]) {
    await xenstoreControl(['quota', 'set', quotaNames[key], String(value + (extra[key] ?? 0))]);
  }
  return limitedFactory(base, async () => {
    for (const key of Object.keys(quota) as (keyof XenStoreQuota)[]) {
      const old = before.get(quotaNames[key]);
      if (old !== undefined) await xenstoreControl(['quota', 'set', quotaNames[key], String(old)]);
    }
  });
}

const oxenstoredConf = '/etc/xen/oxenstored.conf';

/** The oxenstored.conf keys of the quotas oxenstored has (none limits permission entries). */
const oxenstoredKeys: Partial<Record<keyof XenStoreQuota, string>> = {
  nodes: 'quota-maxentity',
  nodeSize: 'quota-maxsize',
  watches: 'quota-maxwatch',
  transactions: 'quota-transaction',
};

/** The `key = value` line of oxenstored.conf's text, as a pattern. */
const confLine = (key: string): RegExp => new RegExp(`^[ \\t]*${key}[ \\t]*=[ \\t]*(-?\\d+)[ \\t]*$`, 'm');

/** The number `key` is set to in oxenstored.conf's text, if it is. */
function confValue(text: string, key: string): number | undefined {
  const m = confLine(key).exec(text);
  return m ? Number(m[1]) : undefined;
}

/** `text` with `key = value` in place of the key's line, or appended. */
function setConfValue(text: string, key: string, value: number): string {
  const line = confLine(key);
  return line.test(text) ? text.replace(line, `${key} = ${value}`) : `${text.trimEnd()}\n${key} = ${value}\n`;
}

/**
 * XS_CONTROL requests, as `xenstore-control` sends them, on one connection to xenstored's
 * socket, one at a time; in process, because a process per command costs seconds in dom0
 * under emulation.
 */
class Control {
  private readonly decoder = new FrameDecoder();
  private waiting: { resolve(reply: string): void; reject(err: Error): void } | undefined;

  private constructor(private readonly sock: Socket) {
    sock.on('data', (chunk: Buffer) => {
      for (const m of this.decoder.push(chunk)) {
        const w = this.waiting;
        this.waiting = undefined;
        const text = m.payload.toString('latin1').replace(/\0+$/, '');
        if (m.type === XsType.ERROR) w?.reject(new Error(`XS_CONTROL: ${text}`));
        else w?.resolve(text);
      }
    });
    const fail = (err?: Error): void => {
      this.waiting?.reject(err ?? new Error('xenstored closed the control connection'));
      this.waiting = undefined;
    };
    sock.on('error', fail);
    sock.on('close', () => fail());
  }

  static async open(): Promise<Control> {
    const sock = createConnection(socket);
    await once(sock, 'connect');
    return new Control(sock);
  }

  /** The reply to `XS_CONTROL args…`, its trailing NULs cut; a minute at most. */
  ask(...args: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        reject(new Error(`XS_CONTROL ${args.join(' ')}: no reply in 60 s`));
      }, 60_000);
      const done = (): void => clearTimeout(timer);
      this.waiting = {
        resolve: (reply) => (done(), resolve(reply)),
        reject: (err) => (done(), reject(err)),
      };
      this.sock.write(encodeMessage(XsType.CONTROL, 1, 0, strings(...args)));
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

/** How many watches each domain's connection holds, from oxenstored's `watches`. */
async function watchesByDomain(ctl: Control): Promise<Map<number, number>> {
  const counts = new Map<number, number>();
  for (const line of (await ctl.ask('watches')).split('\n')) {
    const m = /^watch D(\d+): /.exec(line);
    if (m) counts.set(Number(m[1]), (counts.get(Number(m[1])) ?? 0) + 1);
  }
  return counts;
}

/** The nodes `domid` owns and the most it may own, from oxenstored's `quota <domid>`. */
async function entries(ctl: Control, domid: number): Promise<{ owned: number; max: number }> {
  const reply = await ctl.ask('quota', String(domid));
  const m = /quota: (\d+)\/(\d+)/.exec(reply);
  if (!m) throw new Error(`XS_CONTROL quota ${domid}: no "quota: owned/max" in ${JSON.stringify(reply)}`);
  return { owned: Number(m[1]), max: Number(m[2]) };
}

/** The running oxenstored's executable, which a live update executes again. */
async function oxenstoredBinary(): Promise<string> {
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
    if (comm.trim() === 'oxenstored') return readlink(`/proc/${pid}/exe`);
  }
  throw new Error('no oxenstored process');
}

/**
 * Has oxenstored re-execute `binary` (a live update), as `xenstore-control live-update`
 * does: the new daemon reads oxenstored.conf again and takes over the store, the domains'
 * rings and the socket connections with their watches (this one included, which then
 * answers OK). `domid`'s entry limit afterwards shows that it runs with `conf`'s quotas.
 */
async function liveUpdate(binary: string, conf: string, domid: number): Promise<void> {
  const ctl = await Control.open();
  try {
    const loaded = await ctl.ask('live-update', '-f', binary);
    if (loaded !== 'OK') throw new Error(`live-update -f ${binary}: ${loaded}`);
    const deadline = Date.now() + 60_000;
    let started: string;
    // BUSY until the old daemon has handed over
    while ((started = await ctl.ask('live-update', '-s', '-t', '60')) === 'BUSY' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 1000));
    }
    if (started !== 'OK') throw new Error(`live-update -s: ${started}`);
    const { max } = await entries(ctl, domid);
    const want = confValue(conf, 'quota-maxentity');
    if (want !== undefined && max !== want) throw new Error(`after a live update oxenstored allows ${max} nodes per domain, not ${want} as oxenstored.conf says`);
  } finally {
    ctl.close();
  }
}

/** Restores oxenstored.conf and the daemon's quotas; set while a limited store is live. */
let restoreOxenstored: (() => Promise<void>) | undefined;

/**
 * oxenstored's quotas are the `quota-*` keys of oxenstored.conf, global and read when it
 * starts: the factory writes them there and live-updates the daemon, and cleanup() does
 * both again with the old file. As for C xenstored, the nodes and watches the first
 * guest already holds are added. `quota-maxsize` counts a node's value only and refuses a
 * longer one, so `nodeSize` becomes `nodeSize - 1`.
 *
 * The new daemon rebuilds the store and the watches from the old one's dump with the
 * checks a request meets (dom0's for nodes, which the node count does not limit), and Xen
 * 4.17's restore skips an entry that fails them: a value longer than `quota-maxsize`, a
 * watch past a connection's `quota-maxwatch`. Rather than let a quota case lose part of
 * the store every other case shares, the factory refuses a smaller `quota-maxsize` than
 * the file's, and a watch quota below what some guest already holds.
 */
async function withLiveUpdateQuota(base: RealXenFactory, quota: Partial<XenStoreQuota>): Promise<XenStoreSuiteFactory> {
  const domid = base.guests[0] as number;
  await resetHome(domid);
  const ctl = await Control.open();
  let owned: number;
  let watching: Map<number, number>;
  try {
    owned = (await entries(ctl, domid)).owned;
    watching = await watchesByDomain(ctl);
  } finally {
    ctl.close();
  }
  const value: Partial<Record<keyof XenStoreQuota, number>> = {
    nodes: quota.nodes === undefined ? undefined : quota.nodes + owned - 1,
    nodeSize: quota.nodeSize === undefined ? undefined : quota.nodeSize - 1,
    watches: quota.watches === undefined ? undefined : quota.watches + (watching.get(domid) ?? 0),
    transactions: quota.transactions,
  };
  const original = await readFile(oxenstoredConf, 'utf8');
  const maxsize = confValue(original, 'quota-maxsize');
  if (value.nodeSize !== undefined && (maxsize === undefined || value.nodeSize < maxsize)) {
    throw new Error(`a node size quota of ${quota.nodeSize} would have oxenstored drop the store's values longer than ${value.nodeSize} bytes (its quota-maxsize is ${maxsize ?? 'not set'})`);
  }
  // a connection keeps one watch past quota-maxwatch (the check counts those it holds)
  const maxwatch = value.watches;
  for (const [d, n] of watching) {
    if (d !== 0 && maxwatch !== undefined && n > maxwatch + 1) throw new Error(`domain ${d} holds ${n} watches: a watch quota of ${maxwatch} would have oxenstored drop some`);
  }
  let limited = original;
  for (const [key, name] of Object.entries(oxenstoredKeys) as [keyof XenStoreQuota, string][]) {
    const v = value[key];
    if (v !== undefined) limited = setConfValue(limited, name, v);
  }
  const binary = await oxenstoredBinary();
  const restore = async (): Promise<void> => {
    await writeFile(oxenstoredConf, original);
    await liveUpdate(binary, original, domid);
    restoreOxenstored = undefined;
  };
  restoreOxenstored = restore;
  await writeFile(oxenstoredConf, limited);
  try {
    await liveUpdate(binary, limited, domid);
  } catch (err) {
    await restore();
    throw err;
  }
  return limitedFactory(base, restore);
}

/** libxenstore picks its transport when xs_open runs, from XENSTORED_PATH: one open at a time. */
let opening: Promise<unknown> = Promise.resolve();

class NativeFactory extends RealXenFactory {
  /** libxenstore's reader refuses the frame and drops the connection. */
  readonly oversizedReply = 'XEN_CLOSED';
  private backend: Promise<XenBackend> | undefined;
  constructor(private readonly xenstoredPath: string) {
    super();
  }

  protected async openDom0(): Promise<XenStoreConnection> {
    this.backend ??= createNativeBackend();
    const backend = await this.backend;
    const next = opening.then(async () => {
      process.env.XENSTORED_PATH = this.xenstoredPath;
      try {
        return await backend.openXenStore();
      } finally {
        delete process.env.XENSTORED_PATH;
      }
    });
    opening = next.catch(() => undefined);
    return next;
  }

  async cleanup(): Promise<void> {
    await (await this.backend)?.close();
  }
}

class ClientFactory extends RealXenFactory {
  readonly oversizedReply = 'XEN_PROTOCOL';

  protected async openDom0(): Promise<XenStoreConnection> {
    return connectXenStore(socket);
  }

  async cleanup(): Promise<void> {}
}

/** The suite writes below /conformance: start each transport from a clean store. */
async function clearConformanceTree(): Promise<void> {
  const conn = await connectXenStore(socket);
  try {
    await conn.rm(0, '/conformance');
  } finally {
    await conn.close();
  }
}

describe('real xenstored through libxenstore (socket)', () => {
  beforeAll(clearConformanceTree);
  xenStoreConformance('conformance', new NativeFactory(socket));
});

describe('real xenstored through the TypeScript client (socket)', () => {
  beforeAll(clearConformanceTree);
  xenStoreConformance('conformance', new ClientFactory());
});

describe('real xenstored through libxenstore on /dev/xen/xenbus', () => {
  it('reads, writes, lists and watches through the kernel device', async () => {
    // XENSTORED_PATH names the device: no socket is there, so libxenstore opens it as one
    const factory = new NativeFactory('/dev/xen/xenbus');
    try {
      const conn = await factory.open(0);
      const events: string[] = [];
      conn.onWatchEvent = (path) => events.push(path);
      await conn.write(0, '/conformance/device/x', Buffer.from('via xenbus'));
      expect((await conn.read(0, '/conformance/device/x')).toString()).toBe('via xenbus');
      expect(await conn.directory(0, '/conformance/device')).toEqual(['x']);
      expect((await conn.read(0, '/local/domain/0/name')).toString()).toBe('Domain-0');
      await conn.watch('/conformance/device', 'dev');
      await conn.rm(0, '/conformance/device/x');
      await conn.getDomainPath(0);
      await new Promise((r) => setTimeout(r, 200));
      expect(events).toEqual(['/conformance/device', '/conformance/device/x']);
      await conn.close();
    } finally {
      await factory.cleanup();
    }
  });
});

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
import type { XenBackend, XenStoreConnection } from '../../lib/backend.js';
import { createNativeBackend } from '../../lib/native/backend.js';
import { connectXenStore } from '../../lib/xenstore/client.js';
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
   * oxenstored takes its quotas from oxenstored.conf when it starts, so it has none.
   */
  readonly withQuota = xenstored === 'xenstored' ? (quota: Partial<XenStoreQuota>) => withRuntimeQuota(this, quota) : undefined;

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

async function withRuntimeQuota(base: RealXenFactory, quota: Partial<XenStoreQuota>): Promise<XenStoreSuiteFactory> {
  const domid = base.guests[0] as number;
  const home = `/local/domain/${domid}`;
  const dom0 = await connectXenStore(socket);
  try {
    // as the suite's guest() leaves the home: owned by the guest, no conformance/ nodes
    await dom0.setPermissions(0, home, [{ domid, read: false, write: false }]);
    await dom0.rm(0, `${home}/conformance`);
  } finally {
    await dom0.close();
  }
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
  const limited = Object.create(base) as RealXenFactory;
  Object.defineProperty(limited, 'cleanup', {
    value: async () => {
      for (const key of Object.keys(quota) as (keyof XenStoreQuota)[]) {
        const old = before.get(quotaNames[key]);
        if (old !== undefined) await xenstoreControl(['quota', 'set', quotaNames[key], String(old)]);
      }
    },
  });
  return limited;
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

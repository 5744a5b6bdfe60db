/**
 * The XenStore conformance suite (test/conformance/xenstore-suite.ts) against the real
 * xenstored of this boot (oxenstored or C xenstored), through each way xenode reaches it:
 *   - the native backend, libxenstore on xenstored's unix socket;
 *   - the TypeScript client on /var/run/xenstored/socket.
 * Every connection here is dom0's, so the suite's unprivileged, introduce and quota cases
 * do not apply; a real unprivileged domain is tested in guest-xenstore.test.ts. The
 * kernel's xenbus device, libxenstore's other transport, is checked at the end.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { XenBackend, XenStoreConnection } from '../../lib/backend.js';
import { createNativeBackend } from '../../lib/native/backend.js';
import { connectXenStore } from '../../lib/xenstore/client.js';
import { xenStoreConformance, type XenStoreSuiteFactory } from '../conformance/xenstore-suite.js';
import { xenstored } from './tier.js';

const socket = '/var/run/xenstored/socket';

/** libxenstore picks its transport when xs_open runs, from XENSTORED_PATH: one open at a time. */
let opening: Promise<unknown> = Promise.resolve();

class NativeFactory implements XenStoreSuiteFactory {
  readonly implementation = xenstored;
  private backend: Promise<XenBackend> | undefined;
  constructor(private readonly xenstoredPath: string) {}

  async open(domid: number): Promise<XenStoreConnection> {
    if (domid !== 0) throw new Error('only dom0 connections here');
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

class ClientFactory implements XenStoreSuiteFactory {
  readonly implementation = xenstored;

  async open(domid: number): Promise<XenStoreConnection> {
    if (domid !== 0) throw new Error('only dom0 connections here');
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

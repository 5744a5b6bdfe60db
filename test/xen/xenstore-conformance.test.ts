/**
 * The XenStore conformance suite (test/conformance/xenstore-suite.ts) against the real
 * xenstored of this boot (oxenstored or C xenstored), through each way xenode reaches it:
 *   - the native backend, libxenstore on xenstored's unix socket;
 *   - the native backend, libxenstore on the kernel's xenbus device (/dev/xen/xenbus),
 *     which libxenstore falls back to when the socket is not there;
 *   - the TypeScript client on /var/run/xenstored/socket.
 * Every connection here is dom0's, so the suite's unprivileged, introduce and quota cases
 * do not apply; a real unprivileged domain is tested in guest-xenstore.test.ts.
 */
import { beforeAll, describe } from 'vitest';
import type { XenBackend, XenStoreConnection } from '../../lib/backend.js';
import { createNativeBackend } from '../../lib/native/backend.js';
import { connectXenStore } from '../../lib/xenstore/client.js';
import { xenStoreConformance, type XenStoreSuiteFactory } from '../conformance/xenstore-suite.js';
import './tier.js';

const socket = '/var/run/xenstored/socket';

/** libxenstore picks its transport when xs_open runs, from XENSTORED_PATH: one open at a time. */
let opening: Promise<unknown> = Promise.resolve();

class NativeFactory implements XenStoreSuiteFactory {
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

describe('real xenstored through libxenstore (/dev/xen/xenbus)', () => {
  beforeAll(clearConformanceTree);
  xenStoreConformance('conformance', new NativeFactory('/nonexistent/xenstored-socket'));
});

describe('real xenstored through the TypeScript client (socket)', () => {
  beforeAll(clearConformanceTree);
  xenStoreConformance('conformance', new ClientFactory());
});

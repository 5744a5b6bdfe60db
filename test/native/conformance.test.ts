/**
 * The XenStore conformance suite (test/conformance/xenstore-suite.ts) against the native
 * backend: every request goes through the addon and Xen's own libxenstore to the mock
 * xenstored. libxenstore connects to the socket XENSTORED_PATH names when xs_open runs,
 * so the factory points it at the socket of the domain to act as, one open at a time.
 */
import { describe } from 'vitest';
import type { XenBackend, XenStoreConnection } from '../../lib/backend.js';
import { createNativeBackend } from '../../lib/native/backend.js';
import type { XenStoreQuota } from '../../lib/xenstore/quota.js';
import { xenStoreConformance, type XenStoreSuiteFactory } from '../conformance/xenstore-suite.js';
import { hasNativeAddon } from './tier.js';
import { DomainSockets } from '../conformance/domain-sockets.js';

/** Opens are serialised: XENSTORED_PATH is one per process. */
let opening: Promise<unknown> = Promise.resolve();

class NativeFactory implements XenStoreSuiteFactory {
  readonly unprivileged = true;
  private readonly sockets: DomainSockets;
  private backend: Promise<XenBackend> | undefined;

  constructor(private readonly quota?: Partial<XenStoreQuota>) {
    this.sockets = new DomainSockets(quota);
  }

  async open(domid: number): Promise<XenStoreConnection> {
    this.backend ??= createNativeBackend();
    const backend = await this.backend;
    const socket = await this.sockets.socketOf(domid);
    const next = opening.then(async () => {
      process.env.XENSTORED_PATH = socket;
      return backend.openXenStore();
    });
    opening = next.catch(() => undefined);
    return next;
  }

  async introduce(domid: number): Promise<void> {
    this.sockets.engine.introduceDomain(domid);
  }

  async release(domid: number): Promise<void> {
    this.sockets.engine.releaseDomain(domid);
  }

  async withQuota(quota: Partial<XenStoreQuota>): Promise<XenStoreSuiteFactory> {
    return new NativeFactory(quota);
  }

  async cleanup(): Promise<void> {
    await (await this.backend)?.close();
    await this.sockets.close();
  }
}

describe.skipIf(!hasNativeAddon)('native backend (libxenstore against the mock xenstored)', () => {
  xenStoreConformance('conformance', new NativeFactory());
});

/**
 * The XenStore conformance suite (test/conformance/xenstore-suite.ts) against the native
 * backend: every request goes through the addon and Xen's own libxenstore to the mock
 * xenstored. libxenstore connects to the socket XENSTORED_PATH names when xs_open runs,
 * so the factory points it at the socket of the domain to act as, one open at a time.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe } from 'vitest';
import type { XenBackend, XenStoreConnection } from '../../lib/backend.js';
import { createNativeBackend } from '../../lib/native/backend.js';
import { XenStoreEngine } from '../../lib/xenstore/engine.js';
import type { XenStoreQuota } from '../../lib/xenstore/quota.js';
import { XenStoreServer } from '../../lib/xenstore/server.js';
import { xenStoreConformance, type XenStoreSuiteFactory } from '../conformance/xenstore-suite.js';
import { hasNativeAddon } from './tier.js';

/** Opens are serialised: XENSTORED_PATH is one per process. */
let opening: Promise<unknown> = Promise.resolve();

class NativeFactory implements XenStoreSuiteFactory {
  readonly unprivileged = true;
  private setup: Promise<{ dir: string; engine: XenStoreEngine; server: XenStoreServer; backend: XenBackend }> | undefined;
  private readonly sockets = new Map<number, Promise<string>>();

  constructor(private readonly quota?: Partial<XenStoreQuota>) {}

  private started(): Promise<{ dir: string; engine: XenStoreEngine; server: XenStoreServer; backend: XenBackend }> {
    this.setup ??= (async () => {
      const engine = new XenStoreEngine({ quota: this.quota });
      return {
        dir: await mkdtemp(join(tmpdir(), 'xenode-native-conf-')),
        engine,
        server: new XenStoreServer(engine),
        backend: await createNativeBackend(),
      };
    })();
    return this.setup;
  }

  /** xenstored's socket for `domid`: the mock serves a connection as the domain its socket was made for. */
  private socketOf(domid: number): Promise<string> {
    let p = this.sockets.get(domid);
    if (p === undefined) {
      p = (async () => {
        const { dir, server } = await this.started();
        const path = join(dir, `dom${domid}.sock`);
        await server.listen(path, { domid });
        return path;
      })();
      this.sockets.set(domid, p);
    }
    return p;
  }

  async open(domid: number): Promise<XenStoreConnection> {
    const { backend } = await this.started();
    const socket = await this.socketOf(domid);
    const next = opening.then(async () => {
      process.env.XENSTORED_PATH = socket;
      return backend.openXenStore();
    });
    opening = next.catch(() => undefined);
    return next;
  }

  async introduce(domid: number): Promise<void> {
    (await this.started()).engine.introduceDomain(domid);
  }

  async release(domid: number): Promise<void> {
    (await this.started()).engine.releaseDomain(domid);
  }

  async withQuota(quota: Partial<XenStoreQuota>): Promise<XenStoreSuiteFactory> {
    return new NativeFactory(quota);
  }

  async cleanup(): Promise<void> {
    if (this.setup === undefined) return;
    const { dir, server, backend } = await this.setup;
    await backend.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
}

describe.skipIf(!hasNativeAddon)('native backend (libxenstore against the mock xenstored)', () => {
  xenStoreConformance('conformance', new NativeFactory());
});

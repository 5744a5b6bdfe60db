import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XenStoreEngine } from '../../lib/xenstore/engine.js';
import type { XenStoreQuota } from '../../lib/xenstore/quota.js';
import { XenStoreServer } from '../../lib/xenstore/server.js';

/**
 * A mock xenstored serving one unix socket per domain: a connection acts as the domain
 * its socket was made for, which is how socket-based transports (the TS client,
 * libxenstore) reach the conformance suite as unprivileged domains. Started lazily.
 */
export class DomainSockets {
  private setup: Promise<{ dir: string; server: XenStoreServer }> | undefined;
  private readonly sockets = new Map<number, Promise<string>>();
  /** The engine behind every socket. */
  readonly engine: XenStoreEngine;

  constructor(quota?: Partial<XenStoreQuota>) {
    this.engine = new XenStoreEngine({ quota });
  }

  private started(): Promise<{ dir: string; server: XenStoreServer }> {
    this.setup ??= (async () => ({
      dir: await mkdtemp(join(tmpdir(), 'xenode-xs-')),
      server: new XenStoreServer(this.engine),
    }))();
    return this.setup;
  }

  /** The socket whose connections act as `domid`. */
  socketOf(domid: number): Promise<string> {
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

  /** Closes the server and its connections and removes the sockets' folder. */
  async close(): Promise<void> {
    if (this.setup === undefined) return;
    const { dir, server } = await this.setup;
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The limits C xenstored puts on unprivileged domains (xenstored_core.c of Xen 4.17 and
 * its `-E -S -W -t -A -Q` options). Privileged connections (dom0) are never limited.
 */

/** Quotas of a {@link XenStoreEngine}; a value of 0 turns that check off. */
export interface XenStoreQuota {
  /**
   * Nodes a domain may own (`-E`, default 1000). Creating a node when the domain already
   * owns this many fails with ENOSPC.
   */
  nodes: number;
  /**
   * Size limit of one node as xenstored stores it (`-S`, default 2048): a 24-byte header,
   * 8 bytes per permission entry, the value, and the child names with their NULs. A write
   * by an unprivileged domain that makes a node this big or bigger fails with ENOSPC.
   */
  nodeSize: number;
  /**
   * Watches per connection (`-W`, default 128). As in C xenstored, XS_WATCH fails with E2BIG
   * once the connection holds more than this many, so one more than the quota fits.
   */
  watches: number;
  /**
   * Transactions open per connection (`-t`, default 10). As in C xenstored, START fails with
   * ENOSPC once more than this many are open, so one more than the quota fits.
   */
  transactions: number;
  /** Permission entries per node (`-A`, default 5); a longer list is refused with ENOSPC. */
  permissions: number;
  /**
   * Nodes one transaction may touch (`-Q transaction-nodes=`, default 1024). Touching one
   * more fails with ENOSPC and dooms the transaction: its commit then fails with ENOMEM.
   */
  transactionNodes: number;
}

/** C xenstored's defaults. */
export const DEFAULT_QUOTA: Readonly<XenStoreQuota> = Object.freeze({
  nodes: 1000,
  nodeSize: 2048,
  watches: 128,
  transactions: 10,
  permissions: 5,
  transactionNodes: 1024,
});

/** The names `XS_CONTROL quota` shows and sets, in C xenstored's order, with their descriptions. */
export const QUOTA_NAMES: readonly (readonly [name: string, key: keyof XenStoreQuota, description: string])[] = [
  ['nodes', 'nodes', 'Nodes per domain'],
  ['watches', 'watches', 'Watches per connection'],
  ['transactions', 'transactions', 'Transactions per connection'],
  ['transaction-nodes', 'transactionNodes', 'Max. number of accessed nodes per transaction'],
  ['node-size', 'nodeSize', 'Max. size of a node'],
  ['permissions', 'permissions', 'Max. number of permissions per node'],
];

/**
 * Merges `partial` over `base`. Throws `TypeError` for an unknown key and `RangeError` for a
 * value that is not a non-negative integer.
 */
export function mergeQuota(base: Readonly<XenStoreQuota>, partial: Partial<XenStoreQuota> | undefined, op: string): XenStoreQuota {
  const out: XenStoreQuota = { ...base };
  if (partial === undefined) return out;
  if (partial === null || typeof partial !== 'object') throw new TypeError(`${op}: quota must be an object`);
  for (const [key, value] of Object.entries(partial)) {
    if (!(key in DEFAULT_QUOTA)) throw new TypeError(`${op}: unknown quota '${key}'`);
    if (value === undefined) continue;
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new RangeError(`${op}: quota ${key} must be a non-negative integer, got ${String(value)}`);
    }
    out[key as keyof XenStoreQuota] = value;
  }
  return out;
}

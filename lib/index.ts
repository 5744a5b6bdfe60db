/**
 * xenode: drive a Xen host from Node.js.
 *
 * Start with {@link connect}; use {@link MockHost} to run the same code on a simulated
 * host. See the README for a tour.
 *
 * @packageDocumentation
 */
export { connect, Xen, type ConnectOptions, type BackendChoice } from './xen.js';
export { XenError, type XenErrorCode, type XenErrorDetails } from './errors.js';
export type { VhdErrorCode } from './vhd/errors.js';
export {
  XenStore,
  XenStoreTransaction,
  type XenStoreOps,
  type WatchEvent,
  type WatchOptions,
  type TransactionOptions,
} from './xenstore/xenstore.js';
export type { XsPermission } from './xenstore/wire.js';
export { MockHost, type MockHostOptions, type OpenXenStoreOptions } from './mock/host.js';
export type { XenBackend, XenStoreConnection } from './backend.js';
export {
  XenStoreEngine,
  EngineConnection,
  DEFAULT_QUOTA,
  type XenStoreQuota,
  type XenStoreEngineOptions,
  type DomainUsage,
  type DirectoryPart,
  type EngineConnectOptions,
} from './xenstore/engine.js';
export { XenStoreServer, type ServeOptions } from './xenstore/server.js';
export { openLocalConnection } from './xenstore/local.js';
export { openWireConnection, connectXenStore, xenstoredSocketPath, type WireConnectionOptions } from './xenstore/client.js';
export { NO_TRANSACTION } from './backend.js';
export {
  VirtualDisk,
  type VirtualDiskType,
  type VirtualDiskInfo,
  type CreateDiskOptions,
  type OpenDiskOptions,
  type ImportDiskOptions,
  type ConvertDiskOptions,
  type DiskReadStreamOptions,
  type TransferProgress,
  type TransferResult,
} from './vhd/disk.js';
export type { VhdProblem, VhdProblemCode } from './vhd/check.js';
export type { RepairReport, RepairAction } from './vhd/repair.js';
export type { CoalesceOptions, CoalesceProgress, CoalesceResult } from './vhd/coalesce.js';

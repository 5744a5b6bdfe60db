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
export type { EventChannelConnection, GrantConnection, GrantRegion } from './backend.js';
export { EventChannels, EventChannel, VIRQ, type EventChannelEvent, type EventChannelEventsOptions } from './event-channel.js';
export { GrantTable, GrantRegionHandle, GRANT_PAGE_SIZE, type ShareOptions, type MapOptions } from './grant-table.js';
export { MockEventChannels, MockEventChannelConnection } from './mock/event-channels.js';
export { MockGrantTables, MockGrantConnection } from './mock/grant-tables.js';
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
export { BlockBackends, BLOCK_BACKEND_TYPE, type ServeDiskOptions } from './blkback/block-backend.js';
export { ServedDisk, type ServedDiskEnd } from './blkback/served-disk.js';
export type { RingStats } from './blkback/engine.js';
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
export type {
  DiskConfig,
  DomainAction,
  DomainConfig,
  DomainType,
  NicConfig,
  Passthrough,
  PciConfig,
} from './config/domain-config.js';
export { validateDomainConfig } from './config/validate.js';
export {
  parseXlConfig,
  readXlConfig,
  formatXlConfig,
  type ParseXlConfigOptions,
  type XlConfigResult,
  type XlConfigWarning,
} from './config/xlcfg.js';
export { toLibxlConfig, fromLibxlConfig } from './config/libxl-json.js';
export * as libxl from './config/libxl-types.gen.js';
export { Domains, type CreateOptions, type DomainEventsOptions } from './domains.js';
export type { MigrateOptions, MigrationProgress, ReceiveMigrationOptions } from './migration.js';
export {
  Domain,
  type ShutdownOptions,
  type WaitForOptions,
  type WaitState,
  type DomainCallOptions,
  type AttachDiskOptions,
} from './domain.js';
export { Host, detectXen, type XenDetection, type DetectXenOptions } from './host.js';
export type {
  DomainState,
  ShutdownReason,
  DomainInfo,
  HostInfo,
  DeviceSpec,
  DeviceKind,
  DeviceInfo,
  DiskSnapshot,
  XenbusState,
  DomainEvent,
  ShutdownRequest,
  ToolstackCallOptions,
  ToolstackConnection,
  ToolstackBackend,
  DiskServer,
  ServedDiskHandle,
} from './backend-toolstack.js';
export { connectMockHost } from './mock/remote.js';
export type { MockTiming } from './mock/domain-sim.js';
export type { MockMachine } from './mock/hypervisor.js';
export type { MockPciDevice } from './mock/pci.js';
export type { VhdProblem, VhdProblemCode } from './vhd/check.js';
export type { RepairReport, RepairAction } from './vhd/repair.js';
export type { CoalesceOptions, CoalesceProgress, CoalesceResult } from './vhd/coalesce.js';

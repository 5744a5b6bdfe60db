/**
 * libxl, the Xen toolstack library, through the addon's XlHandle: the native building
 * blocks of domains (create, destroy, save/restore, Remus, devices, death events). The
 * public Domain API is built on these; nothing here is exported from the package root.
 *
 * Data crosses as libxl's own JSON (DESIGN decision 5): a domain config is the object
 * `libxl_domain_config_to_json` prints (what `xl -N create` shows), in and out.
 * Failures are {@link XenError}s: `XEN_ERROR_<NAME>` for libxl's `ERROR_<NAME>` with
 * `op` the libxl function and `domid` the domain; `XEN_CLOSED` after `close()`;
 * `XEN_UNAVAILABLE` / `XEN_VERSION_MISMATCH` when libxl cannot be used here.
 * @internal
 */
import { EventEmitter } from 'node:events';
import { debuglog } from 'node:util';
import { XenError } from '../errors.js';
import type { LibxlJsonType, NativeAddon, XlHandle } from './addon.js';
import { isRawXenError } from './errors.js';
import { loadAddon } from './load.js';
import type { LibxlDominfo } from '../config/libxl-types.gen.js';

const debug = debuglog('xenode:libxl');

/** A libxl JSON object: a `libxl_domain_config`, `libxl_device_disk` … as libxl prints it. */
export type LibxlJson = Record<string, unknown>;

/**
 * One domain as `libxl_dominfo_to_json` prints it (the generated {@link LibxlDominfo}).
 * libxl's JSON omits every field at its default (0, false, null): `domid` is filled in
 * here (dom0's would be missing); for the others, absent means 0 / false.
 */
export type LibxlDomInfo = Omit<LibxlDominfo, 'domid'> & { domid: number };

/** A domain event (`libxl_event`) from a death watch: the domain shut down, or is gone. */
export interface LibxlDomainEvent {
  /** `'domain_shutdown'` or `'domain_death'` (libxl's event type names, from its `"type.<name>"` key). */
  type: string;
  domid: number;
  /** The watch that asked for it ({@link LibxlConnection.watchDomain}). */
  watchId: number;
  /** For `domain_shutdown`: the guest's reason, as libxl gives it. */
  shutdownReason?: string | number;
  /** libxl's event, as `libxl_event_to_json` printed it. */
  raw: LibxlJson;
}

/** The XenError for an addon failure of a libxl call, keeping libxl's function as `op`. */
export function fromLibxl(err: unknown): unknown {
  if (!isRawXenError(err)) return err;
  return new XenError(err.code, err.message, { op: err.op, path: err.path, errno: err.errno, domid: err.domid });
}

/** The addon's libxl part; XEN_UNAVAILABLE when the addon predates it. */
function libxlAddon(addon: NativeAddon): Required<Pick<NativeAddon, 'openLibxl' | 'validateLibxlJson'>> {
  if (typeof addon.openLibxl !== 'function' || typeof addon.validateLibxlJson !== 'function') {
    throw new XenError('XEN_UNAVAILABLE', 'this build of the xenode addon has no libxl binding: rebuild it with npm rebuild xenode', { op: 'native.load' });
  }
  return addon as Required<Pick<NativeAddon, 'openLibxl' | 'validateLibxlJson'>>;
}

function jsonText(value: string | LibxlJson, what: string): string {
  if (typeof value === 'string') return value;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new TypeError(`${what} must be a JSON string or an object`);
  return JSON.stringify(value);
}

/**
 * `info` with the defaults `xl remus` sets before calling libxl_domain_remus_start.
 * @internal
 */
export function remusDefaults(info: string | LibxlJson): LibxlJson {
  let parsed: unknown = info;
  if (typeof info === 'string') {
    try {
      parsed = JSON.parse(info);
    } catch {
      throw new TypeError('info must be a JSON string or an object');
    }
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new TypeError('info must be a JSON string or an object');
  const out: LibxlJson = { ...(parsed as LibxlJson) };
  const isSet = (key: string): boolean => out[key] !== undefined && out[key] !== '<default>';
  for (const key of ['colo', 'userspace_colo_proxy', 'blackhole']) if (!isSet(key)) out[key] = 'False';
  if (out.colo !== 'True' && out.colo !== true && !out.interval) out.interval = 200;
  return out;
}

/**
 * Runs libxl's own parser on `json` (an object or JSON text) as a libxl `type`, and
 * resolves with what libxl understood, printed back by libxl and parsed. Fields libxl
 * does not know are dropped from that result, so comparing it with the input shows them.
 * Works without a hypervisor (libxenlight must be installed); rejects with
 * `XEN_ERROR_FAIL` (libxl's log lines in the message) when libxl refuses the JSON.
 */
export async function validateLibxlJson(type: LibxlJsonType, json: string | LibxlJson, addon: NativeAddon = loadAddon()): Promise<LibxlJson> {
  const text = jsonText(json, 'json');
  try {
    return JSON.parse(await libxlAddon(addon).validateLibxlJson(type, text)) as LibxlJson;
  } catch (err) {
    throw fromLibxl(err);
  }
}

/**
 * {@link validateLibxlJson} for a `libxl_domain_config`, e.g.
 * `{ c_info: { type: 'pv', name: 'vm1' }, b_info: { max_memkb: 131072, kernel: '/boot/vmlinuz', 'type.pv': {} } }`.
 */
export function validateDomainConfigJson(config: string | LibxlJson, addon?: NativeAddon): Promise<LibxlJson> {
  return validateLibxlJson('domain_config', config, addon);
}

function domInfo(info: Partial<LibxlDomInfo>): LibxlDomInfo {
  return { ...info, domid: info.domid ?? 0 };
}

function domidArg(domid: unknown): number {
  if (typeof domid !== 'number') throw new TypeError('domid must be a number');
  if (!Number.isInteger(domid) || domid < 0 || domid > 0x7fef) throw new RangeError('domid must be an integer in 0..32751');
  return domid;
}

function fdArg(fd: unknown, what: string): number {
  if (typeof fd !== 'number') throw new TypeError(`${what} must be a file descriptor number`);
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) throw new RangeError(`${what} must be a file descriptor`);
  return fd;
}

/** Events of a {@link LibxlConnection}. */
export interface LibxlConnectionEvents {
  /** A domain event from a death watch. */
  domain: [event: LibxlDomainEvent];
  /** libxl can no longer report events (`XEN_LIBXL_DISASTER`): close the connection and open another. */
  error: [err: XenError];
}

/**
 * One libxl context. Calls may overlap (libxl is thread-safe); each returns a promise.
 * Listen for `'error'`: like any EventEmitter, an unheard error is thrown.
 */
export class LibxlConnection extends EventEmitter<LibxlConnectionEvents> {
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly handle: XlHandle,
    private readonly addon: NativeAddon,
  ) {
    super();
  }

  /** Opens a context: XEN_UNAVAILABLE off a dom0, XEN_VERSION_MISMATCH on another Xen. */
  static async open(addon: NativeAddon = loadAddon()): Promise<LibxlConnection> {
    const self: { conn?: LibxlConnection } = {};
    let handle: XlHandle;
    try {
      handle = await libxlAddon(addon).openLibxl(
        (json) => self.conn?.dispatch(json),
        (err) => self.conn?.emit('error', fromLibxl(err) as XenError),
      );
    } catch (err) {
      throw fromLibxl(err);
    }
    const conn = new LibxlConnection(handle, addon);
    self.conn = conn;
    debug('libxl context open (Xen %s)', handle.xenVersion);
    return conn;
  }

  /** The running hypervisor's version, e.g. `'4.17.7'`. */
  get xenVersion(): string {
    return this.handle.xenVersion;
  }

  /** True once {@link close} has been called. */
  get closed(): boolean {
    return this.handle.closed;
  }

  /** Creates a domain from a `libxl_domain_config`; it runs unless `paused`. Resolves with its domid. */
  async createDomain(config: string | LibxlJson, options: { paused?: boolean } = {}): Promise<number> {
    const text = jsonText(config, 'config');
    const domid = await this.call(() => this.handle.createDomain(text));
    if (!options.paused) await this.unpauseDomain(domid);
    return domid;
  }

  /**
   * Creates a domain from a save stream read from `fd` (see {@link suspendDomain}); keep
   * `fd` open until this settles. `params` is a `libxl_domain_restore_params`; its
   * `stream_version` is 2 unless given (what {@link suspendDomain} writes; libxl's own
   * default, 1, means a pre-4.6 stream that libxl converts with a python helper).
   */
  async restoreDomain(config: string | LibxlJson, fd: number, options: { params?: string | LibxlJson; paused?: boolean } = {}): Promise<number> {
    const text = jsonText(config, 'config');
    const params = options.params === undefined ? undefined : jsonText(options.params, 'params');
    fdArg(fd, 'fd');
    const domid = await this.call(() => this.handle.restoreDomain(text, fd, params));
    if (!options.paused) await this.unpauseDomain(domid);
    return domid;
  }

  /** Destroys the domain at once (no guest shutdown). */
  destroyDomain(domid: number): Promise<void> {
    domidArg(domid);
    return this.call(() => this.handle.destroyDomain(domid));
  }

  /** Asks the guest to shut down; resolves once asked (watch the domain to see it go). */
  shutdownDomain(domid: number): Promise<void> {
    domidArg(domid);
    return this.call(() => this.handle.shutdownDomain(domid));
  }

  /** Asks the guest to reboot. */
  rebootDomain(domid: number): Promise<void> {
    domidArg(domid);
    return this.call(() => this.handle.rebootDomain(domid));
  }

  pauseDomain(domid: number): Promise<void> {
    domidArg(domid);
    return this.call(() => this.handle.pauseDomain(domid));
  }

  unpauseDomain(domid: number): Promise<void> {
    domidArg(domid);
    return this.call(() => this.handle.unpauseDomain(domid));
  }

  /** Every domain, dom0 included. */
  async listDomains(): Promise<LibxlDomInfo[]> {
    const list = JSON.parse(await this.call(() => this.handle.listDomains())) as Partial<LibxlDomInfo>[];
    return list.map(domInfo);
  }

  /** One domain; `XEN_ERROR_DOMAIN_NOTFOUND` when there is none with that id. */
  async domainInfo(domid: number): Promise<LibxlDomInfo> {
    domidArg(domid);
    return domInfo(JSON.parse(await this.call(() => this.handle.domainInfo(domid))) as Partial<LibxlDomInfo>);
  }

  /** The domain's current configuration as a `libxl_domain_config`. */
  async domainConfig(domid: number): Promise<LibxlJson> {
    domidArg(domid);
    return JSON.parse(await this.call(() => this.handle.domainConfig(domid))) as LibxlJson;
  }

  /** Sets the balloon target, in KiB (`relative`: add to the current one). */
  setMemoryTarget(domid: number, targetKiB: number, options: { relative?: boolean; enforce?: boolean } = {}): Promise<void> {
    domidArg(domid);
    if (typeof targetKiB !== 'number') throw new TypeError('targetKiB must be a number');
    if (!Number.isSafeInteger(targetKiB) || (!options.relative && targetKiB < 0)) throw new RangeError('targetKiB must be a whole number of KiB');
    return this.call(() => this.handle.setMemoryTarget(domid, targetKiB, options.relative ?? false, options.enforce ?? true));
  }

  /** Sets the domain's maximum memory, in KiB. */
  setMaxMemory(domid: number, maxKiB: number): Promise<void> {
    domidArg(domid);
    if (typeof maxKiB !== 'number') throw new TypeError('maxKiB must be a number');
    if (!Number.isSafeInteger(maxKiB) || maxKiB < 0) throw new RangeError('maxKiB must be a whole number of KiB');
    return this.call(() => this.handle.setMaxMemory(domid, maxKiB));
  }

  /** Puts vcpus `0..count-1` online and the others offline (`count` ≤ the domain's maxvcpus). */
  setVcpuCount(domid: number, count: number): Promise<void> {
    domidArg(domid);
    if (typeof count !== 'number') throw new TypeError('count must be a number');
    if (!Number.isInteger(count) || count < 1 || count > 4096) throw new RangeError('count must be an integer in 1..4096');
    return this.call(() => this.handle.setVcpuCount(domid, count));
  }

  /** Attaches a `libxl_device_disk`, `_nic` or `_pci` given as JSON. */
  addDevice(domid: number, kind: 'disk' | 'nic' | 'pci', device: string | LibxlJson): Promise<void> {
    domidArg(domid);
    const text = jsonText(device, 'device');
    return this.call(() => this.handle.addDevice(domid, kind, text));
  }

  /** Detaches a device (the JSON needs only what identifies it, e.g. a disk's `vdev`). */
  removeDevice(domid: number, kind: 'disk' | 'nic' | 'pci', device: string | LibxlJson): Promise<void> {
    domidArg(domid);
    const text = jsonText(device, 'device');
    return this.call(() => this.handle.removeDevice(domid, kind, text));
  }

  /**
   * Writes the domain's save stream to `fd` (a file, or a socket for migration). The
   * domain is left suspended, not destroyed: destroy it once the stream is safe (as
   * `xl save` does), or restore from the stream under another name. `live` keeps it
   * running while memory is copied.
   */
  suspendDomain(domid: number, fd: number, options: { live?: boolean; debug?: boolean } = {}): Promise<void> {
    domidArg(domid);
    fdArg(fd, 'fd');
    return this.call(() => this.handle.suspendDomain(domid, fd, options.live ?? false, options.debug ?? false));
  }

  /**
   * Brings back a domain that {@link suspendDomain} left suspended, when its stream was
   * not used after all (a migration's destination failed). `suspendCancel` (the default)
   * resumes it co-operatively: the guest returns from its suspend call and carries on.
   */
  resumeDomain(domid: number, options: { suspendCancel?: boolean } = {}): Promise<void> {
    domidArg(domid);
    const handle = this.handle;
    if (typeof handle.resumeDomain !== 'function') return Promise.reject(new XenError('XEN_UNAVAILABLE', 'this build of the xenode addon cannot resume a domain: rebuild it with npm rebuild xenode', { op: 'libxl_domain_resume', domid }));
    return this.call(() => (handle.resumeDomain as NonNullable<XlHandle['resumeDomain']>).call(handle, domid, options.suspendCancel ?? true));
  }

  /**
   * A pipe for a save or migration stream: `[readFd, writeFd]`, both close-on-exec and
   * blocking (libxl's save helper writes and reads them with plain blocking calls). Give
   * libxl one end and carry the bytes of the other; close both when done.
   */
  makePipe(): [number, number] {
    if (typeof this.addon.makePipe !== 'function') throw new XenError('XEN_UNAVAILABLE', 'this build of the xenode addon cannot make pipes: rebuild it with npm rebuild xenode', { op: 'pipe2' });
    try {
      return this.addon.makePipe();
    } catch (err) {
      throw fromLibxl(err);
    }
  }

  /**
   * Starts Remus replication to a backup reading `sendFd` (and acking on `recvFd`), with a
   * `libxl_domain_remus_info`. Settles only when replication stops (the primary destroyed,
   * the backup gone, or an error). libxl refuses an info whose `colo` is left at its
   * default, so the defaults `xl remus` applies are filled in where `info` leaves them
   * out: `colo`, `userspace_colo_proxy` and `blackhole` false, `interval` 200 ms unless
   * COLO.
   */
  remusStart(domid: number, info: string | LibxlJson, sendFd: number, recvFd: number): Promise<void> {
    domidArg(domid);
    const text = jsonText(remusDefaults(info), 'info');
    fdArg(sendFd, 'sendFd');
    fdArg(recvFd, 'recvFd');
    return this.call(() => this.handle.remusStart(domid, text, sendFd, recvFd));
  }

  /**
   * Reports the domain's shutdown and death as `'domain'` events carrying the returned
   * watch id, until {@link unwatchDomain}. While a watch is set the process stays alive.
   */
  watchDomain(domid: number): Promise<number> {
    domidArg(domid);
    return this.call(() => this.handle.watchDomain(domid));
  }

  unwatchDomain(watchId: number): Promise<void> {
    if (typeof watchId !== 'number') throw new TypeError('watchId must be a number');
    return this.call(() => this.handle.unwatchDomain(watchId));
  }

  /** The pty of the domain's console (`xl console` attaches there). */
  consoleTty(domid: number, options: { consoleNumber?: number; type?: 'pv' | 'serial' } = {}): Promise<string> {
    domidArg(domid);
    return this.call(() => this.handle.consoleTty(domid, options.consoleNumber ?? 0, options.type ?? 'pv'));
  }

  /** Renames the domain; with `oldName`, only if it is still called that. */
  renameDomain(domid: number, newName: string, oldName?: string): Promise<void> {
    domidArg(domid);
    return this.call(() => this.handle.renameDomain(domid, newName, oldName));
  }

  /** Aborts what is in flight, frees the context. Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= this.handle.close();
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw fromLibxl(err);
    }
  }

  private dispatch(json: string): void {
    let raw: LibxlJson;
    try {
      raw = JSON.parse(json) as LibxlJson;
    } catch {
      debug('unparsable libxl event: %s', json);
      return;
    }
    // libxl prints a keyed union as `"type.<name>": { …its fields }`, and omits fields at
    // their default (a shutdown_reason of 0, poweroff).
    const key = Object.keys(raw).find((k) => k.startsWith('type.'));
    const u = ((key === undefined ? raw.u : raw[key]) ?? {}) as LibxlJson;
    const event: LibxlDomainEvent = {
      type: key === undefined ? String(raw.type) : key.slice('type.'.length),
      domid: Number(raw.domid ?? 0),
      watchId: Number(raw.for_user ?? 0),
      raw,
    };
    if (event.type === 'domain_shutdown') event.shutdownReason = (u.shutdown_reason as string | number | undefined) ?? 0;
    debug('event %s domain %d: %s', event.type, event.domid, json);
    this.emit('domain', event);
  }
}

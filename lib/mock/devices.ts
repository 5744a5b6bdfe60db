/**
 * Split-driver devices of the simulated host, written to xenstore as libxl and the
 * Linux backends/frontends write them: `/local/domain/0/backend/<kind>/<domid>/<devid>/…`
 * and `/local/domain/<domid>/device/<kind>/<devid>/…`, with the xenbus `state` keys going
 * 1 → 2 → 3 → 4 on attach and 5 → 6 on detach (xen/io/xenbus.h).
 */
import type { DeviceInfo, DeviceKind, XenbusState } from '../backend-toolstack.js';
import type { DiskConfig, NicConfig, PciConfig } from '../config/domain-config.js';
import { XenError } from '../errors.js';
import type { SimBlockBackend } from './block-backend.js';
import type { XsWriter } from './xs-writer.js';

/** xenbus states by number, as xen/io/xenbus.h numbers them. */
export const XENBUS_STATES: readonly XenbusState[] = [
  'unknown',
  'initialising',
  'initwait',
  'initialised',
  'connected',
  'closing',
  'closed',
  'reconfiguring',
  'reconfigured',
];

/** One device of a simulated domain. */
export interface SimDevice {
  kind: DeviceKind;
  devid: number;
  backendDomid: number;
  config: DiskConfig | NicConfig | PciConfig;
  /** A vbd's block backend, serving the guest's I/O from the image. */
  backend?: SimBlockBackend;
}

/** The paths of both ends of a device. */
export function devicePaths(domid: number, dev: Pick<SimDevice, 'kind' | 'devid' | 'backendDomid'>): { fe: string; be: string } {
  return {
    fe: `/local/domain/${domid}/device/${dev.kind}/${dev.devid}`,
    be: `/local/domain/${dev.backendDomid}/backend/${dev.kind}/${domid}/${dev.devid}`,
  };
}

/**
 * The vbd device number of a virtual disk name, as docs/misc/vbd-interface.txt defines it
 * (`xvda` 51712, `hda` 768, `sda` 2048, `xvdaa` 268439552 …). EINVAL for a name it does not cover.
 */
export function vdevToDevid(vdev: string): number {
  const m = /^(xvd|hd|sd)([a-z]+)(\d*)$/.exec(vdev);
  const letters = m?.[2];
  if (m === null || letters === undefined) {
    throw new XenError('XEN_ERROR_INVAL', `'${vdev}' is not a virtual disk name (xvdX, hdX, sdX)`, { op: 'device.disk' });
  }
  let disk = 0;
  for (const ch of letters) disk = disk * 26 + (ch.charCodeAt(0) - 96);
  disk -= 1;
  const part = m[3] === '' ? 0 : Number(m[3]);
  const prefix = m[1];
  if (prefix === 'xvd' && disk < 16 && part < 16) return (202 << 8) | (disk << 4) | part;
  if (prefix === 'xvd' && part < 256) return (1 << 28) | (disk << 8) | part;
  if (prefix === 'hd' && disk < 4 && part < 64) return ([3, 3, 22, 22][disk] as number) * 256 + (disk % 2) * 64 + part;
  if (prefix === 'sd' && disk < 16 && part < 16) return (8 << 8) | (disk << 4) | part;
  throw new XenError('XEN_ERROR_INVAL', `'${vdev}' is out of the range of its naming scheme`, { op: 'device.disk' });
}

/** A MAC under Xen's 00:16:3e prefix, as libxl picks one when the config gives none. */
export function randomMac(): string {
  const b = [0x00, 0x16, 0x3e, Math.floor(Math.random() * 0x80), Math.floor(Math.random() * 0x100), Math.floor(Math.random() * 0x100)];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** The queues netback offers (multi-queue-max-queues): one per host CPU, as Linux's xen-netback does by default. */
export const NETBACK_MAX_QUEUES = 8;

/**
 * Writes both ends of a new device at state 1 (Initialising), with the keys libxl writes
 * (libxl_device.c, libxl_disk.c, libxl_nic.c, libxl_pci.c), and perms as libxl sets them:
 * the frontend owned by the guest and readable by the backend, the backend owned by the
 * backend domain and readable by the guest.
 */
export function writeDevice(xs: XsWriter, domid: number, dev: SimDevice): void {
  const { fe, be } = devicePaths(domid, dev);
  xs.mkdir(fe, [{ domid, read: false, write: false }, { domid: dev.backendDomid, read: true, write: false }]);
  xs.mkdir(be, [{ domid: dev.backendDomid, read: false, write: false }, { domid, read: true, write: false }]);
  const common = { frontend: fe, 'frontend-id': String(domid), online: '1', state: '1' };
  const front = { backend: be, 'backend-id': String(dev.backendDomid), state: '1' };
  if (dev.kind === 'vbd') {
    const d = dev.config as DiskConfig;
    const cdrom = d.devtype === 'cdrom';
    xs.writeAll(be, {
      ...common,
      removable: cdrom ? '1' : '0',
      bootable: '1',
      type: d.backendType === 'qdisk' || d.format === 'qcow2' || d.format === 'qcow' || d.format === 'qed' ? 'qdisk' : d.backendType ?? 'phy',
      dev: d.vdev,
      'device-type': cdrom ? 'cdrom' : 'disk',
      params: d.format === 'vhd' ? `vhd:${d.target}` : d.target,
      mode: d.access === 'ro' || cdrom ? 'r' : 'w',
      'discard-enable': '1',
      'specification': 'xen',
      ...(d.script ? { script: d.script } : {}),
    });
    xs.writeAll(fe, { ...front, 'virtual-device': String(dev.devid), 'device-type': cdrom ? 'cdrom' : 'disk' });
  } else if (dev.kind === 'vif') {
    const n = dev.config as NicConfig;
    xs.writeAll(be, {
      ...common,
      script: n.script ?? '/etc/xen/scripts/vif-bridge',
      mac: n.mac ?? '',
      bridge: n.bridge ?? 'xenbr0',
      handle: String(dev.devid),
      type: 'vif',
      ...(n.ip ? { ip: n.ip } : {}),
      ...(n.vifname ? { vifname: n.vifname } : {}),
      ...(n.rate ? { rate: n.rate } : {}),
    });
    xs.writeAll(fe, { ...front, handle: String(dev.devid), mac: n.mac ?? '' });
  } else {
    const p = dev.config as PciConfig;
    const opts = [`msitranslate=${p.msitranslate ? 1 : 0}`, `power_mgmt=${p.powerMgmt ? 1 : 0}`, `permissive=${p.permissive ? 1 : 0}`].join(',');
    xs.writeAll(be, {
      ...common,
      domain: '',
      'num_devs': '1',
      'key-0': normaliseBdf(p.bdf),
      'dev-0': normaliseBdf(p.bdf),
      'vdevfn-0': p.vslot === undefined ? '0' : (p.vslot << 3).toString(16),
      'opts-0': opts,
      'state-0': '1',
    });
    xs.writeAll(fe, front);
  }
}

/** The backend finished its setup and ran the hotplug script: InitWait (2). */
export function backendReady(xs: XsWriter, domid: number, dev: SimDevice): void {
  const { be } = devicePaths(domid, dev);
  if (dev.kind === 'vbd') {
    xs.writeAll(be, {
      'hotplug-status': 'connected',
      'physical-device': 'fe:0',
      'feature-flush-cache': '1',
      'feature-discard': '1',
      'feature-persistent': '1',
      'max-ring-page-order': '4',
    });
  } else if (dev.kind === 'vif') {
    xs.writeAll(be, {
      'hotplug-status': 'connected',
      'feature-sg': '1',
      'feature-gso-tcpv4': '1',
      'feature-gso-tcpv6': '1',
      'feature-rx-copy': '1',
      'feature-split-event-channels': '1',
      'multi-queue-max-queues': String(NETBACK_MAX_QUEUES),
    });
  }
  xs.write(`${be}/state`, '2');
}

/** The guest's frontend set up its rings: Initialised (3), with the keys of its protocol. */
export function frontendInitialised(xs: XsWriter, domid: number, dev: SimDevice, ring: () => number): void {
  const { fe } = devicePaths(domid, dev);
  if (dev.kind === 'vbd') {
    xs.writeAll(fe, { 'ring-ref': String(ring()), 'event-channel': String(ring() % 64), protocol: 'x86_64-abi', 'feature-persistent': '1' });
  } else if (dev.kind === 'vif') {
    const wanted = (dev.config as NicConfig).queues ?? NETBACK_MAX_QUEUES;
    const queues = Math.max(1, Math.min(wanted, NETBACK_MAX_QUEUES));
    if (queues > 1) {
      xs.write(`${fe}/multi-queue-num-queues`, String(queues));
      for (let q = 0; q < queues; q++) {
        xs.writeAll(`${fe}/queue-${q}`, { 'tx-ring-ref': String(ring()), 'rx-ring-ref': String(ring()), 'event-channel-tx': String(ring() % 64), 'event-channel-rx': String(ring() % 64) });
      }
    } else {
      xs.writeAll(fe, { 'tx-ring-ref': String(ring()), 'rx-ring-ref': String(ring()), 'event-channel': String(ring() % 64) });
    }
    xs.writeAll(fe, { 'request-rx-copy': '1', 'feature-rx-notify': '1', 'feature-sg': '1', 'feature-gso-tcpv4': '1' });
  }
  xs.write(`${fe}/state`, '3');
}

/** The backend connected to the rings (4), then the frontend too (4). */
export function connect(xs: XsWriter, domid: number, dev: SimDevice): void {
  const { fe, be } = devicePaths(domid, dev);
  if (dev.kind === 'vbd') xs.writeAll(be, { 'sector-size': '512', 'physical-sector-size': '512', sectors: '2097152', info: (dev.config as DiskConfig).devtype === 'cdrom' ? '5' : '0' });
  if (dev.kind === 'pci') xs.write(`${be}/state-0`, '4');
  xs.write(`${be}/state`, '4');
  xs.write(`${fe}/state`, '4');
}

/**
 * The steps of a removal the toolstack asked for: the backend goes Closing (5), the
 * frontend answers Closed (6), the backend follows (6). Each call does the next step.
 */
export const closeSteps: readonly ((xs: XsWriter, domid: number, dev: SimDevice) => void)[] = [
  (xs, domid, dev) => {
    const { be } = devicePaths(domid, dev);
    xs.write(`${be}/online`, '0');
    xs.write(`${be}/state`, '5');
  },
  (xs, domid, dev) => xs.write(`${devicePaths(domid, dev).fe}/state`, '6'),
  (xs, domid, dev) => xs.write(`${devicePaths(domid, dev).be}/state`, '6'),
];

/** Removes both ends (libxl does this once the backend reports Closed). */
export function remove(xs: XsWriter, domid: number, dev: SimDevice): void {
  const { fe, be } = devicePaths(domid, dev);
  xs.rm(fe);
  xs.rm(be);
}

/** The device as the contract reports it, with the states read back from xenstore. */
export function describe(xs: XsWriter, domid: number, dev: SimDevice): DeviceInfo {
  const { fe, be } = devicePaths(domid, dev);
  const state = (p: string): XenbusState => XENBUS_STATES[Number(xs.readOr(`${p}/state`, '0'))] ?? 'unknown';
  const config = structuredClone(dev.config);
  if (dev.kind === 'vif') {
    // As the native backend lists it: the queues the frontend set up, once it has.
    const nic = config as NicConfig;
    const queues = xs.readOr(`${fe}/multi-queue-num-queues`, '');
    const feState = Number(xs.readOr(`${fe}/state`, '0'));
    if (queues !== '') nic.queues = Number(queues);
    else if (feState === 3 || feState === 4) nic.queues = 1;
    else delete nic.queues;
  }
  return {
    kind: dev.kind,
    devid: dev.devid,
    backendDomid: dev.backendDomid,
    frontendPath: fe,
    backendPath: be,
    frontendState: state(fe),
    backendState: state(be),
    config,
  };
}

/** `[DDDD:]BB:DD.F` as `DDDD:BB:DD.F`, lower case; XEN_ERROR_INVAL when it is not a BDF. */
export function normaliseBdf(bdf: string): string {
  const m = /^(?:([0-9a-f]{1,4}):)?([0-9a-f]{1,2}):([0-1]?[0-9a-f])\.([0-7])$/i.exec(bdf.trim());
  if (m === null) throw new XenError('XEN_ERROR_INVAL', `'${bdf}' is not a PCI address ([DDDD:]BB:DD.F)`, { op: 'device.pci' });
  const [, dom = '0', bus = '', dev = '', fn = ''] = m;
  return `${dom.padStart(4, '0')}:${bus.padStart(2, '0')}:${dev.padStart(2, '0')}.${fn}`.toLowerCase();
}

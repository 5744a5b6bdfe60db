/**
 * The simulated host's PCI devices that can be passed through: a few ordinary devices and
 * an SR-IOV network card whose virtual functions are bound to pciback (assignable), while
 * its physical function stays with dom0's driver.
 */
import { XenError } from '../errors.js';
import { normaliseBdf } from './devices.js';

/** One PCI function of the simulated host. */
export interface MockPciDevice {
  /** `DDDD:BB:DD.F`. */
  bdf: string;
  description: string;
  /** Bound to pciback, so `xl pci-assignable-list` shows it. */
  assignable: boolean;
  /** For an SR-IOV virtual function: its physical function. */
  physfn?: string;
}

function sriovCard(): MockPciDevice[] {
  const vfs = Array.from({ length: 8 }, (_, i) => ({
    bdf: `0000:03:10.${i}`,
    description: 'Intel Corporation 82599 Ethernet Controller Virtual Function',
    assignable: true,
    physfn: '0000:03:00.0',
  }));
  return [{ bdf: '0000:03:00.0', description: 'Intel Corporation 82599ES 10-Gigabit SFI/SFP+ Network Connection', assignable: false }, ...vfs];
}

/** The devices a MockHost has unless told otherwise. */
export const DEFAULT_PCI: readonly MockPciDevice[] = [
  ...sriovCard(),
  { bdf: '0000:05:00.0', description: 'NVIDIA Corporation GA102GL [A10]', assignable: true },
];

export class MockPciBus {
  private readonly devices = new Map<string, MockPciDevice>();
  private readonly owners = new Map<string, number>();

  constructor(devices: readonly MockPciDevice[] = DEFAULT_PCI) {
    for (const d of devices) this.devices.set(normaliseBdf(d.bdf), { ...d, bdf: normaliseBdf(d.bdf) });
  }

  /** Every function, with the domain it is assigned to. */
  list(): (MockPciDevice & { domid?: number })[] {
    return [...this.devices.values()].map((d) => {
      const domid = this.owners.get(d.bdf);
      return domid === undefined ? { ...d } : { ...d, domid };
    });
  }

  /** XEN_ERROR_FAIL unless the function exists, is bound to pciback and is free (libxl's checks). */
  checkAssignable(bdf: string, op: string): void {
    const key = normaliseBdf(bdf);
    const d = this.devices.get(key);
    const fail = (why: string) => new XenError('XEN_ERROR_FAIL', `XEN_ERROR_FAIL: PCI ${key} ${why} (${op})`, { op });
    if (d === undefined) throw fail('does not exist on this host');
    if (!d.assignable) throw fail('is not assignable (not bound to pciback; see xl pci-assignable-add)');
    const owner = this.owners.get(key);
    if (owner !== undefined) throw fail(`is already assigned to domain ${owner}`);
  }

  assign(bdf: string, domid: number): void {
    this.owners.set(normaliseBdf(bdf), domid);
  }

  release(bdf: string): void {
    this.owners.delete(normaliseBdf(bdf));
  }
}

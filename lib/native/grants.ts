/**
 * The {@link GrantConnection} contract over libxengnttab, through the addon's GntHandle.
 */
import type { GrantConnection, GrantRegion } from '../backend.js';
import type { GntHandle, NativeAddon } from './addon.js';
import { fromNative } from './errors.js';

export class NativeGrantConnection implements GrantConnection {
  /** Unknown: the grant devices act as whatever domain this runs in (dom0 on a host). */
  readonly domid = undefined;
  private releasing: Promise<void> | undefined;

  private constructor(
    private readonly handle: GntHandle,
    private readonly onClose: () => void,
  ) {}

  /** Opens /dev/xen/gntdev (and gntalloc); XEN_UNAVAILABLE when libxengnttab.so.1 or gntdev is missing. */
  static async open(addon: NativeAddon, onClose: () => void = () => {}): Promise<NativeGrantConnection> {
    try {
      return new NativeGrantConnection(await addon.openGrants(), onClose);
    } catch (err) {
      throw fromNative(err, 'grants.open');
    }
  }

  async share(domid: number, count: number, writable: boolean): Promise<GrantRegion & { refs: number[] }> {
    try {
      const r = await this.handle.share(domid, count, writable);
      return { id: r.id, refs: r.refs, buffer: r.buffer, byteOffset: 0, byteLength: r.buffer.byteLength };
    } catch (err) {
      throw fromNative(err, 'grants.share');
    }
  }

  async map(domid: number, refs: readonly number[], writable: boolean): Promise<GrantRegion> {
    try {
      const r = await this.handle.map(domid, refs, writable);
      return { id: r.id, buffer: r.buffer, byteOffset: 0, byteLength: r.buffer.byteLength };
    } catch (err) {
      throw fromNative(err, 'grants.map');
    }
  }

  unmap(id: number): boolean {
    return this.handle.closed ? false : this.handle.unmap(id);
  }

  close(): Promise<void> {
    this.releasing ??= this.handle.close().then(this.onClose);
    return this.releasing;
  }
}

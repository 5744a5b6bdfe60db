/**
 * The {@link EventChannelConnection} contract over libxenevtchn, through the addon's
 * EvtchnHandle: names operations as the other backends do and re-creates errors as
 * {@link XenError}s.
 */
import type { EventChannelConnection } from '../backend.js';
import { invokeCallback } from '../callback.js';
import type { EvtchnHandle, NativeAddon } from './addon.js';
import { fromNative } from './errors.js';

export class NativeEventChannelConnection implements EventChannelConnection {
  /** Unknown: /dev/xen/evtchn acts as whatever domain this runs in (dom0 on a host). */
  readonly domid = undefined;
  onEvent: ((port: number) => void) | undefined;
  private releasing: Promise<void> | undefined;

  private constructor(
    private readonly handle: EvtchnHandle,
    private readonly onClose: () => void,
  ) {}

  /** Opens /dev/xen/evtchn; XEN_UNAVAILABLE when libxenevtchn.so.1 or the device is missing. */
  static async open(addon: NativeAddon, onClose: () => void = () => {}): Promise<NativeEventChannelConnection> {
    const self: { conn?: NativeEventChannelConnection } = {};
    let handle: EvtchnHandle;
    try {
      handle = await addon.openEventChannels((port) => self.conn?.dispatch(port));
    } catch (err) {
      throw fromNative(err, 'eventChannels.open');
    }
    self.conn = new NativeEventChannelConnection(handle, onClose);
    return self.conn;
  }

  bindUnbound(remoteDomid: number): Promise<number> {
    return this.call('eventChannels.bindUnbound', () => this.handle.bindUnbound(remoteDomid));
  }

  bindInterdomain(remoteDomid: number, remotePort: number): Promise<number> {
    return this.call('eventChannels.bindInterdomain', () => this.handle.bindInterdomain(remoteDomid, remotePort));
  }

  bindVirq(virq: number): Promise<number> {
    return this.call('eventChannels.bindVirq', () => this.handle.bindVirq(virq));
  }

  notify(port: number): Promise<void> {
    return this.call('eventChannel.notify', () => this.handle.notify(port));
  }

  unbind(port: number): Promise<void> {
    return this.call('eventChannel.unbind', () => this.handle.unbind(port));
  }

  keepAlive(on: boolean): void {
    if (!this.handle.closed) this.handle.keepAlive(on);
  }

  close(): Promise<void> {
    this.releasing ??= this.handle.close().then(this.onClose);
    return this.releasing;
  }

  private async call<T>(op: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw fromNative(err, op);
    }
  }

  private dispatch(port: number): void {
    invokeCallback(this.onEvent, port);
  }
}

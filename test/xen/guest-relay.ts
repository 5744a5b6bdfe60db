/**
 * Unprivileged XenStore connections for dom0's tests: a real guest lends its own.
 *
 * A real xenstored knows exactly one kind of unprivileged connection, a guest's ring, so
 * {@link RelayGuest.boot} starts the tier's test guest in relay mode (`xenode.relay` on
 * its kernel command line): its init runs scripts/xen/image/guest-relay.c, which opens
 * /dev/xen/xenbus once per connection dom0 asks for and carries the bytes over the
 * guest console. Dom0 reaches that console through the pty xenconsoled gives it
 * (`/local/domain/<domid>/console/tty`, what `xl console` opens). Each relayed connection
 * is a Duplex stream handed to xenode's TypeScript client unchanged, so a test sees a
 * plain {@link XenStoreConnection} that xenstored takes for the guest itself.
 *
 * Frames are lines, `~<H|G><chan:2 hex><op><hex payload>:<fnv1a-32, 8 hex>`; see the C
 * file for the ops. Lines that are not frames (the guest's boot messages) are ignored;
 * a frame that fails its checksum ends every open channel with an error, since bytes of
 * a XenStore stream were lost.
 */
import { constants, openSync } from 'node:fs';
import { Duplex } from 'node:stream';
import { ReadStream, WriteStream } from 'node:tty';
import type { XenStoreConnection } from '../../lib/backend.js';
import { connectXenStore } from '../../lib/xenstore/client.js';
import { run } from '../helpers/run.js';
import { guest, waitUntil, xl } from './tier.js';

const CHANNELS = 16;
/** Payload bytes per frame: a xenstore message (4112 bytes at most) takes a few lines. */
const CHUNK = 1024;

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h >>> 0;
}

function frame(chan: number, op: string, payload: Buffer = Buffer.alloc(0)): string {
  const body = `H${chan.toString(16).padStart(2, '0')}${op}${payload.toString('hex')}`;
  return `~${body}:${fnv1a(body).toString(16).padStart(8, '0')}\n`;
}

/** One relayed connection's byte stream. */
class Channel extends Duplex {
  open = true;
  constructor(
    private readonly relay: RelayGuest,
    readonly chan: number,
  ) {
    super();
  }
  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (!this.open) return cb(new Error(`relay channel ${this.chan} is closed`));
    for (let off = 0; off < chunk.length; off += CHUNK) this.relay.send(this.chan, 'D', chunk.subarray(off, off + CHUNK));
    cb();
  }
  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.open) this.relay.send(this.chan, 'C');
    this.relay.forget(this.chan);
    cb(err);
  }
  /** The guest closed the channel (or the relay broke): end the stream. */
  ended(why?: Error): void {
    this.open = false;
    if (why) this.destroy(why);
    else this.push(null);
  }
}

/** A guest booted in relay mode; {@link open} gives connections that act as it. */
export class RelayGuest {
  private input!: ReadStream;
  private output!: WriteStream;
  private buffered = '';
  private readonly channels = new Map<number, Channel>();
  private readonly waiting = new Map<string, (payload: Buffer) => void>();
  private broken: Error | undefined;

  private constructor(
    readonly name: string,
    readonly domid: number,
  ) {}

  /** Creates the guest `name` in relay mode and waits until its relay answers. */
  static async boot(name: string): Promise<RelayGuest> {
    await xl([
      'create',
      guest.config,
      `name="${name}"`,
      'extra="console=hvc0 quiet loglevel=1 xenode.relay"',
    ]);
    const domid = Number((await xl(['domid', name])).trim());
    const relay = new RelayGuest(name, domid);
    try {
      await relay.attach();
    } catch (err) {
      await xl(['destroy', name]).catch(() => undefined);
      throw err;
    }
    return relay;
  }

  private async attach(): Promise<void> {
    const dom0 = await connectXenStore();
    let tty = '';
    try {
      await waitUntil(
        async () => {
          tty = await dom0.read(0, `/local/domain/${this.domid}/console/tty`).then(
            (b) => b.toString(),
            () => '',
          );
          return tty !== '';
        },
        `the console pty of ${this.name}`,
        60_000,
        250,
      );
    } finally {
      await dom0.close();
    }
    // xenconsoled makes the pty raw already; say so anyway: an echo would send the
    // guest's own frames back to it
    const stty = await run('stty', ['-F', tty, 'raw', '-echo']);
    if (stty.code !== 0) throw new Error(`stty -F ${tty}: ${stty.stderr}`);
    // O_NOCTTY: the pty must not become this process's controlling terminal
    const flags = constants.O_RDWR | constants.O_NOCTTY;
    this.input = new ReadStream(openSync(tty, flags));
    this.output = new WriteStream(openSync(tty, flags));
    this.input.setEncoding('latin1');
    this.input.on('data', (s: string) => this.received(s));
    this.input.on('error', (err) => this.fail(err));
    // The guest boots under TCG: ping until its relay runs.
    let answered = false;
    const pong = this.expect(0, 'P').then(() => (answered = true));
    await waitUntil(
      () => {
        if (!answered) this.send(0, 'P');
        return answered;
      },
      `the relay of ${this.name} to answer`,
      240_000,
      2000,
    );
    await pong;
  }

  /** Opens a new XenStore connection of the guest's, through its own /dev/xen/xenbus. */
  async open(): Promise<XenStoreConnection> {
    if (this.broken) throw this.broken;
    let chan = 1;
    while (this.channels.has(chan)) chan++;
    if (chan >= CHANNELS) throw new Error(`${this.name}: all ${CHANNELS - 1} relay channels are in use`);
    const channel = new Channel(this, chan);
    this.channels.set(chan, channel);
    const opened = this.expect(chan, 'O');
    this.send(chan, 'O');
    const error = (await opened).toString();
    if (error !== '') {
      this.channels.delete(chan);
      throw new Error(`${this.name}: the guest could not open /dev/xen/xenbus: ${error}`);
    }
    return connectXenStore(channel);
  }

  /** Destroys the guest. */
  async destroy(): Promise<void> {
    for (const c of this.channels.values()) c.ended(new Error('the relay guest was destroyed'));
    this.input?.destroy();
    this.output?.destroy();
    await xl(['destroy', this.name]).catch(() => undefined);
  }

  /** @internal */
  send(chan: number, op: string, payload?: Buffer): void {
    this.output.write(frame(chan, op, payload), 'latin1');
  }

  /** @internal */
  forget(chan: number): void {
    this.channels.delete(chan);
  }

  private expect(chan: number, op: string): Promise<Buffer> {
    return new Promise((resolve) => this.waiting.set(`${chan}${op}`, resolve));
  }

  private received(s: string): void {
    this.buffered += s;
    const lines = this.buffered.split(/[\r\n]/);
    this.buffered = lines.pop() ?? '';
    for (const line of lines) this.line(line);
  }

  private line(line: string): void {
    const m = /~(G([0-9a-f]{2})([POCDE])([0-9a-f]*)):([0-9a-f]{8})$/.exec(line);
    if (!m) {
      if (line.includes('~G')) this.fail(new Error(`${this.name}: a relay frame was cut into: ${JSON.stringify(line)}`));
      return;
    }
    const [, body, chanHex, op, hex, sum] = m as unknown as [string, string, string, string, string, string];
    if (fnv1a(body) !== parseInt(sum, 16)) {
      this.fail(new Error(`${this.name}: a relay frame failed its checksum: ${JSON.stringify(line)}`));
      return;
    }
    const chan = parseInt(chanHex, 16);
    const payload = Buffer.from(hex, 'hex');
    if (op === 'E') {
      this.fail(new Error(`${this.name}: the guest got a bad frame from dom0: ${payload.toString('latin1')}`));
      return;
    }
    if (op === 'D') {
      this.channels.get(chan)?.push(payload);
      return;
    }
    if (op === 'C') {
      const c = this.channels.get(chan);
      this.channels.delete(chan);
      c?.ended();
      return;
    }
    const waiter = this.waiting.get(`${chan}${op}`);
    this.waiting.delete(`${chan}${op}`);
    waiter?.(payload);
  }

  private fail(err: Error): void {
    this.broken ??= err;
    for (const c of [...this.channels.values()]) c.ended(err);
    this.channels.clear();
  }
}


/**
 * `xenode blkback serve DOMAIN VDEV FILE`: serves a disk image to a running domain from
 * this process, in the foreground, until SIGINT or SIGTERM (which detach the disk) or
 * until the domain or its frontend lets go. While it runs, `xenode block-snapshot DOMAIN
 * VDEV CHILD` from another shell takes a live snapshot of the disk.
 */
import { connect } from '../xen.js';
import { EXIT_OK, UsageError, nextSignal, parseCommandLine, type Command } from './common.js';

/** Usage text of `xenode blkback`. */
export const BLKBACK_USAGE = `Usage: xenode blkback serve [--read-only] [--raw] DOMAIN VDEV FILE

Serve the disk image FILE (a VHD, any chain; --raw for a plain image) to the running
domain DOMAIN (a name or a domid) as its virtual disk VDEV (xvdb…), from this process:
xenode is the disk's backend. It stays in the foreground: the guest's disk works only as
long as it runs. SIGINT or SIGTERM detaches the disk (the guest is asked to let go) and
exits. 'xenode block-snapshot DOMAIN VDEV CHILD' takes a live snapshot meanwhile.

Options:
  --read-only     the guest sees the disk read-only
  --raw           FILE is a raw image, not a VHD
  -h, --help      show this help`;

const options = {
  'read-only': { type: 'boolean' },
  raw: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const blkbackCommand: Command = async (args) => {
  const { values, positionals } = parseCommandLine(args, options, BLKBACK_USAGE);
  if (values.help) {
    process.stdout.write(`${BLKBACK_USAGE}\n`);
    return EXIT_OK;
  }
  const [sub, domain, vdev, file, ...extra] = positionals;
  if (sub !== 'serve') throw new UsageError(sub === undefined ? 'missing subcommand' : `unknown subcommand '${sub}'`, BLKBACK_USAGE);
  if (domain === undefined || vdev === undefined || file === undefined || extra.length > 0) throw new UsageError('serve takes DOMAIN VDEV FILE', BLKBACK_USAGE);
  if (!/^(xvd|hd|sd)[a-z]+\d*$/.test(vdev)) throw new UsageError(`'${vdev}' is not a virtual disk name (xvdb, hdc, sdb…)`, BLKBACK_USAGE);
  const xen = await connect();
  try {
    const dom = await xen.domains.get(domain);
    const served = await xen.blockBackend.serve(dom.domid, vdev, file, { readOnly: values['read-only'] === true, format: values.raw ? 'raw' : 'vhd' });
    process.stdout.write(`xenode blkback: serving ${served.path} to ${dom.name} (domain ${dom.domid}) as ${vdev}, backend ${served.backendPath}\n`);
    const stop = new AbortController();
    const why = await Promise.race([nextSignal(stop.signal).then((sig) => `${sig}`), served.closed]);
    stop.abort();
    await served.close();
    process.stdout.write(`xenode blkback: ${vdev} of ${dom.name} detached (${why}); last image ${served.path}\n`);
    return EXIT_OK;
  } finally {
    await xen.close();
  }
};

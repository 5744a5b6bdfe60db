import { connect } from '../xen.js';
import { XenStore } from '../xenstore/xenstore.js';
import { EXIT_OK, UsageError, parseCommandLine, nextSignal, type Command } from './common.js';
import { escapeValue, formatTree, unescapeValue } from './format.js';

/** Usage text of `xenode xenstore`. */
export const XENSTORE_USAGE = `Usage: xenode xenstore <subcommand> [--socket PATH] …

Small equivalents of the xenstore-* tools. Without --socket they use the backend
connect() picks: $XENODE_BACKEND, else native (libxenstore on a Xen dom0, which honours
$XENSTORED_PATH). With --socket PATH they use xenode's TypeScript client on that socket.
Values are shown and parsed like the C tools do (\\t \\n \\\\ \\xNN escapes).

  read PATH…                  print each value; several paths are read in one transaction
  write PATH VALUE [PATH VALUE]…
                              write values (creating parents); several in one transaction
  ls [-f] [-p] [PATH]         the tree below PATH (default /): -f full paths, -p permissions
  rm PATH…                    remove nodes and everything below them
  watch [-n COUNT] PATH       print the path of each event (the first one included) until
                              COUNT events were printed or SIGINT/SIGTERM

Options:
  --socket PATH               talk to the xenstored serving this unix socket
  -h, --help                  show this help`;

const options = {
  socket: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  full: { type: 'boolean', short: 'f' },
  perms: { type: 'boolean', short: 'p' },
  number: { type: 'string', short: 'n' },
} as const;

type Values = { full?: boolean; perms?: boolean; number?: string };

interface Subcommand {
  /** Throws a UsageError for arguments it cannot take; runs before anything connects. */
  check(args: string[], values: Values): void;
  run(xs: XenStore, args: string[], values: Values, out: NodeJS.WritableStream): Promise<void>;
}

function need(cond: boolean, message: string): void {
  if (!cond) throw new UsageError(message, XENSTORE_USAGE);
}

function watchCount(values: Values): number {
  return values.number === undefined ? Infinity : Number(values.number);
}

const subcommands: Record<string, Subcommand> = {
  read: {
    check: (args) => need(args.length > 0, 'xenstore read: give at least one PATH'),
    async run(xs, paths, _values, out) {
      const values =
        paths.length === 1
          ? [await xs.readBytes(paths[0] as string)]
          : await xs.transaction((tx) => Promise.all(paths.map((p) => tx.readBytes(p))));
      for (const v of values) out.write(`${escapeValue(v)}\n`);
    },
  },

  write: {
    check: (args) => need(args.length > 0 && args.length % 2 === 0, 'xenstore write: give PATH VALUE pairs'),
    async run(xs, args) {
      const pairs: [string, Buffer][] = [];
      for (let i = 0; i < args.length; i += 2) pairs.push([args[i] as string, unescapeValue(args[i + 1] as string)]);
      await xs.transaction(async (tx) => {
        for (const [p, v] of pairs) await tx.write(p, v);
      });
    },
  },

  ls: {
    check: (args) => need(args.length <= 1, 'xenstore ls: give at most one PATH'),
    async run(xs, paths, values, out) {
      const lines = formatTree(xs, paths[0] ?? '/', { fullPaths: values.full, permissions: values.perms });
      for await (const line of lines) out.write(`${line}\n`);
    },
  },

  rm: {
    check: (args) => need(args.length > 0, 'xenstore rm: give at least one PATH'),
    async run(xs, paths) {
      for (const p of paths) await xs.remove(p);
    },
  },

  watch: {
    check(args, values) {
      need(args.length === 1, 'xenstore watch: give exactly one PATH');
      const n = watchCount(values);
      need(n === Infinity || (Number.isInteger(n) && n > 0), `xenstore watch: -n wants a positive integer, got '${values.number}'`);
    },
    async run(xs, paths, values, out) {
      const count = watchCount(values);
      const ac = new AbortController();
      void nextSignal(ac.signal).then(() => ac.abort());
      let seen = 0;
      try {
        for await (const ev of xs.watch(paths[0] as string, { signal: ac.signal })) {
          out.write(`${ev.path}\n`);
          if (++seen >= count) break;
        }
      } catch (err) {
        // An interrupt is how a watch without -n is meant to end.
        if (!(ac.signal.aborted && (err as Error).name === 'AbortError')) throw err;
      } finally {
        ac.abort();
      }
    },
  },
};

async function open(socket: string | undefined): Promise<{ xs: XenStore; close(): Promise<void> }> {
  if (socket !== undefined) {
    const xs = await XenStore.connect(socket);
    return { xs, close: () => xs.close() };
  }
  const xen = await connect();
  return { xs: xen.xenstore, close: () => xen.close() };
}

/** `xenode xenstore read|write|ls|rm|watch …`. */
export const xenstoreCommand: Command = async (args) => {
  const { values, positionals } = parseCommandLine(args, options, XENSTORE_USAGE);
  if (values.help) {
    process.stdout.write(`${XENSTORE_USAGE}\n`);
    return EXIT_OK;
  }
  const [name, ...rest] = positionals;
  if (name === undefined) throw new UsageError('xenstore: missing subcommand', XENSTORE_USAGE);
  const sub = Object.hasOwn(subcommands, name) ? subcommands[name] : undefined;
  if (sub === undefined) throw new UsageError(`xenstore: unknown subcommand '${name}'`, XENSTORE_USAGE);
  if ((values.full || values.perms) && name !== 'ls') throw new UsageError(`xenstore ${name}: -f and -p belong to ls`, XENSTORE_USAGE);
  if (values.number !== undefined && name !== 'watch') throw new UsageError(`xenstore ${name}: -n belongs to watch`, XENSTORE_USAGE);
  sub.check(rest, values);
  const { xs, close } = await open(values.socket);
  try {
    await sub.run(xs, rest, values, process.stdout);
    return EXIT_OK;
  } finally {
    await close();
  }
};

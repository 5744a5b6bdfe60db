#!/usr/bin/env node
/**
 * The `xenode` command: dispatches to one module per command and turns failures into a
 * one-line message and an exit code (1 for a failed operation, 2 for a bad command line).
 */
import { readFileSync } from 'node:fs';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError, reportError, type Command } from './common.js';
import { blkbackCommand } from './blkback.js';
import { demoCommand } from './demo.js';
import { DOMAIN_COMMANDS, domainCommand } from './domains.js';
import { diskCommand } from './disk.js';
import { mockHostCommand } from './mock-host.js';
import { xenstoreCommand } from './xenstore.js';

/** Usage text of `xenode`. */
const USAGE = `Usage: xenode <command> [options]

Drive a Xen host from Node.js.

Commands:
  blkback serve DOMAIN VDEV FILE     serve a disk image to a domain from this process
                                     (in the foreground; live snapshots then work)
  demo                               a guided walk through XenStore on a simulated host
  disk create|info|snapshot|clone|coalesce|resize|check|repair|convert|export …
                                     VHD disk images
  mock-host --xenstore-socket PATH   run a simulated Xen host, serving XenStore on PATH
  xenstore read|write|ls|rm|watch …  small xenstore-* equivalents
  list | info | create FILE | destroy | pause | unpause | shutdown | reboot |
  mem-set | vcpu-set | block-snapshot | console | save | restore |
  migrate | migrate-receive | top
                                     manage domains as xl does (--mock-host PATH, --json)

Run 'xenode <command> --help' for a command's options.

Options:
  -h, --help      show this help
  -v, --version   print xenode's version

Environment:
  XENODE_BACKEND    'native' (default) or 'mock': the backend connect() uses
  XENSTORED_PATH    the xenstored socket libxenstore and XenStore.connect() use
  DEBUG, NODE_DEBUG show stack traces on errors (NODE_DEBUG=xenode:* also logs)`;

const commands: Record<string, Command> = {
  blkback: blkbackCommand,
  demo: demoCommand,
  disk: diskCommand,
  'mock-host': mockHostCommand,
  xenstore: xenstoreCommand,
  ...Object.fromEntries(DOMAIN_COMMANDS.map((name) => [name, domainCommand(name)])),
};

function version(): string {
  // dist/cli/main.js and lib/cli/main.ts both sit two levels below package.json.
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Runs the command line `argv` (without node and the script) and resolves to the exit code. */
async function main(argv: readonly string[]): Promise<number> {
  const [first, ...rest] = argv;
  try {
    if (first === '-h' || first === '--help' || first === 'help') {
      process.stdout.write(`${USAGE}\n`);
      return EXIT_OK;
    }
    if (first === '-v' || first === '--version') {
      process.stdout.write(`${version()}\n`);
      return EXIT_OK;
    }
    if (first === undefined) throw new UsageError('missing command', USAGE);
    const command = Object.hasOwn(commands, first) ? commands[first] : undefined;
    if (command === undefined) throw new UsageError(`unknown command '${first}'`, USAGE);
    return await command(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`xenode: ${err.message}\n\n${err.usage}\n`);
      return EXIT_USAGE;
    }
    reportError(err);
    return EXIT_FAILURE;
  }
}

// A reader that goes away (`xenode xenstore ls | head`) ends the output, not in a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') reportError(err);
  process.exit(err.code === 'EPIPE' ? EXIT_OK : EXIT_FAILURE);
});

process.exitCode = await main(process.argv.slice(2));

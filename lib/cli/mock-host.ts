import { lstat, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockHost } from '../mock/host.js';
import { EXIT_OK, UsageError, nextSignal, parseCommandLine, type Command } from './common.js';

/** Usage text of `xenode mock-host`. */
export const MOCK_HOST_USAGE = `Usage: xenode mock-host --xenstore-socket PATH [--toolstack-socket PATH2] [--timing T]

Runs a simulated Xen host in the foreground and serves its XenStore on the unix socket
PATH, speaking the real wire protocol: point libxenstore clients at it with
XENSTORED_PATH=PATH (e.g. XENSTORED_PATH=PATH xenstore-ls /). Every connection on the
socket acts as dom0. Its toolstack (domains) is served on PATH2, recorded in its
XenStore at /tool/xenode/toolstack-socket: 'xenode list --mock-host PATH' finds it there.
Stops on SIGINT or SIGTERM, closing its clients and removing both sockets.

Options:
  --xenstore-socket PATH    where to serve XenStore
  --toolstack-socket PATH2  where to serve the toolstack (default PATH.toolstack)
  --timing T                'realistic' (default) or 'instant' simulated delays
  -h, --help                show this help`;

const options = {
  'xenstore-socket': { type: 'string' },
  'toolstack-socket': { type: 'string' },
  timing: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Resolves true when something accepts connections on the unix socket `path`. */
function isListening(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createConnection(path);
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

/**
 * A socket file left by a server that died is removed so the host can bind; a live one,
 * or any other kind of file, is refused rather than clobbered.
 */
async function clearStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (st === undefined) return;
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket; choose another path`);
  if (await isListening(path)) throw new Error(`${path} is in use by a running server`);
  await rm(path, { force: true });
}

/** `PATH.toolstack`, unless that is too long for a unix socket (108 bytes on Linux). */
function defaultToolstackSocket(xenstoreSocket: string): string {
  const next = `${xenstoreSocket}.toolstack`;
  return Buffer.byteLength(next) < 100 ? next : join(tmpdir(), `xenode-toolstack-${process.pid}.sock`);
}

/** `xenode mock-host --xenstore-socket PATH`. */
export const mockHostCommand: Command = async (args) => {
  const { values, positionals } = parseCommandLine(args, options, MOCK_HOST_USAGE);
  if (values.help) {
    process.stdout.write(`${MOCK_HOST_USAGE}\n`);
    return EXIT_OK;
  }
  if (positionals.length > 0) throw new UsageError(`mock-host: unexpected argument '${positionals[0]}'`, MOCK_HOST_USAGE);
  const socket = values['xenstore-socket'];
  if (socket === undefined || socket === '') throw new UsageError('mock-host: --xenstore-socket PATH is required', MOCK_HOST_USAGE);
  const timing = values.timing ?? 'realistic';
  if (timing !== 'realistic' && timing !== 'instant') throw new UsageError(`mock-host: --timing must be 'realistic' or 'instant', got '${timing}'`, MOCK_HOST_USAGE);
  const toolstack = values['toolstack-socket'] ?? defaultToolstackSocket(socket);

  // Listening before the host exists, so a signal during start-up still shuts down cleanly.
  const failed = new AbortController();
  const stop = nextSignal(failed.signal);
  // The process must stay up while idle, whatever the server does with its own handles.
  const keepAlive = setInterval(() => undefined, 2 ** 30);
  try {
    await clearStaleSocket(socket);
    await clearStaleSocket(toolstack);
    const host = await MockHost.create({ xenstoreSocket: socket, toolstackSocket: toolstack, timing });
    process.stdout.write(`xenode mock-host: XenStore on ${socket} (XENSTORED_PATH=${socket} xenstore-ls /)\n`);
    process.stdout.write(`xenode mock-host: toolstack on ${toolstack} (xenode list --mock-host ${socket})\n`);
    await stop;
    await host.close();
    // The servers unlink their sockets on close; this covers one that could not.
    await rm(socket, { force: true });
    await rm(toolstack, { force: true });
    return EXIT_OK;
  } finally {
    failed.abort();
    clearInterval(keepAlive);
  }
};

import { parseArgs, type ParseArgsConfig } from 'node:util';
import { XenError } from '../errors.js';

/** A command's entry point: takes the arguments after the command name, resolves to an exit code. */
export type Command = (args: string[]) => Promise<number>;

/** Exit code for success. */
export const EXIT_OK = 0;
/** Exit code for a failed operation (a XenError, an I/O error…). */
export const EXIT_FAILURE = 1;
/** Exit code for a command line that could not be understood. */
export const EXIT_USAGE = 2;

/**
 * A command line that could not be understood. The entry point prints the message and the
 * usage text it carries on stderr and exits with {@link EXIT_USAGE}.
 */
export class UsageError extends Error {
  /** The usage text of the command concerned, printed after the message. */
  readonly usage: string;

  constructor(message: string, usage: string) {
    super(message);
    this.name = 'UsageError';
    this.usage = usage;
  }
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** What {@link parseCommandLine} returns: typed option values and the positional arguments. */
export type ParsedCommandLine<O extends Options> = ReturnType<typeof parseArgs<{ options: O; allowPositionals: true; strict: true }>>;

/**
 * `parseArgs` in strict mode, with its errors (unknown option, missing value, unexpected
 * argument) turned into a {@link UsageError} carrying `usage`.
 */
export function parseCommandLine<O extends Options>(args: string[], options: O, usage: string): ParsedCommandLine<O> {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_')) throw new UsageError((err as Error).message, usage);
    throw err;
  }
}

/** Whether the user asked for stack traces (DEBUG or NODE_DEBUG set to anything). */
export function wantsStack(env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(env.DEBUG) || Boolean(env.NODE_DEBUG);
}

/**
 * One line for an error, without its stack: the XenError code always appears (its message
 * usually starts with it already), other errors show their name when it says something.
 */
export function describeError(err: unknown): string {
  if (err instanceof XenError) {
    return err.message.includes(err.code) ? err.message : `${err.code}: ${err.message}`;
  }
  if (err instanceof Error) {
    const name = err.name;
    // A plain Error's name adds nothing; TypeError, AbortError, TimeoutError… do.
    return name === 'Error' || err.message.startsWith(name) ? err.message : `${name}: ${err.message}`;
  }
  return String(err);
}

/** Prints `xenode: <message>` on stderr, and the stack (with causes) when {@link wantsStack}. */
export function reportError(err: unknown, stderr: NodeJS.WritableStream = process.stderr): void {
  stderr.write(`xenode: ${describeError(err)}\n`);
  if (!wantsStack()) return;
  let cur: unknown = err;
  for (let depth = 0; cur instanceof Error && depth < 5; depth++) {
    stderr.write(`${depth === 0 ? '' : 'caused by: '}${cur.stack ?? cur.message}\n`);
    cur = cur.cause;
  }
}

/**
 * Resolves on the first SIGINT or SIGTERM, removing its handlers, so that a second signal
 * gets Node's default behaviour (terminate) should a clean shutdown hang. Aborting `until`
 * removes the handlers without resolving.
 */
export function nextSignal(until?: AbortSignal): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    if (until?.aborted) return;
    const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];
    const handlers = new Map<NodeJS.Signals, () => void>();
    const remove = () => {
      for (const [s, h] of handlers) process.removeListener(s, h);
      until?.removeEventListener('abort', remove);
    };
    for (const sig of signals) {
      const handler = () => {
        remove();
        resolve(sig);
      };
      handlers.set(sig, handler);
      process.on(sig, handler);
    }
    until?.addEventListener('abort', remove, { once: true });
  });
}

/**
 * Running other programs from tests: always an argument vector (execFile/spawn, never a
 * shell string), always with a timeout, and without throwing for a non-zero exit so tests
 * can assert on exit codes.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

/** The project root (this file is test/helpers/run.ts). */
export const projectRoot = fileURLToPath(new URL('../../', import.meta.url));

/** The built CLI, as `npm test`'s `pretest` leaves it. */
export const cliPath = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

/** What a finished program did. */
export interface RunResult {
  /** Exit code, or null when a signal ended it. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Options of {@link run}. */
export interface RunOptions {
  /** Added to (not replacing) the current environment. */
  env?: Record<string, string | undefined>;
  /** Killed after this many milliseconds. Default 10 s. */
  timeout?: number;
  cwd?: string;
}

/** Runs `file` with `args` to completion and reports what it did. */
export function run(file: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { env: { ...process.env, ...options.env }, timeout: options.timeout ?? 10_000, cwd: options.cwd ?? projectRoot, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals | null }) | null;
        // A spawn failure (ENOENT…) is a test bug, not an outcome to assert on.
        if (e && typeof e.code === 'string') return reject(e);
        resolve({ code: e ? ((e.code as number | undefined) ?? null) : 0, signal: e?.signal ?? null, stdout, stderr });
      },
    );
  });
}

/** A running program whose stdout is read line by line. */
export class LineProcess {
  readonly child: ChildProcess;
  /** Resolves with the exit code (null after a signal) once the program ended. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Everything written to stderr so far. */
  stderr = '';
  private readonly lines: string[] = [];
  private readonly waiters: ((line: string | undefined) => void)[] = [];
  private partial = '';
  private ended = false;
  private readonly timer: NodeJS.Timeout;

  constructor(file: string, args: readonly string[], options: RunOptions = {}) {
    this.child = spawn(file, args, { env: { ...process.env, ...options.env }, cwd: options.cwd ?? projectRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    this.timer = setTimeout(() => this.child.kill('SIGKILL'), options.timeout ?? 15_000);
    this.child.stdout?.setEncoding('utf8').on('data', (chunk: string) => this.feed(chunk));
    this.child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    this.exited = once(this.child, 'exit').then(([code, signal]) => {
      clearTimeout(this.timer);
      return { code: code as number | null, signal: signal as NodeJS.Signals | null };
    });
    this.child.stdout?.on('end', () => {
      this.ended = true;
      for (const w of this.waiters.splice(0)) w(undefined);
    });
  }

  private feed(chunk: string): void {
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop() ?? '';
    for (const line of parts) {
      const w = this.waiters.shift();
      if (w) w(line);
      else this.lines.push(line);
    }
  }

  /** The next line of stdout; rejects after `timeout` ms, resolves undefined at end of output. */
  nextLine(timeout = 5_000): Promise<string | undefined> {
    const line = this.lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    if (this.ended) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        const i = this.waiters.indexOf(done);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`no output line within ${timeout} ms; stderr: ${this.stderr.trim()}`));
      }, timeout);
      const done = (l: string | undefined) => {
        clearTimeout(t);
        resolve(l);
      };
      this.waiters.push(done);
    });
  }

  /** Whether a line is waiting to be read. */
  get hasLine(): boolean {
    return this.lines.length > 0;
  }

  /** Sends `signal` (default SIGTERM) if still running, and waits for the exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}

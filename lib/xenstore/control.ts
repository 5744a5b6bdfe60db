/**
 * `XS_CONTROL` commands of the mock xenstored (xenstored_control.c of Xen 4.17), the ones
 * that mean something without a real daemon behind: check, log, print, quota, help.
 * Others (logfile, memreport, quota-soft, live-update) are unknown here, so EINVAL, as C
 * xenstored answers an unknown command.
 */
import { debuglog } from 'node:util';
import type { XenStoreEngine } from './engine.js';
import { DOMID_FIRST_RESERVED } from './paths.js';
import { QUOTA_NAMES } from './quota.js';
import { fail } from './store.js';

const debug = debuglog('xenode:xenstored');

const OK = Buffer.from('OK\0', 'latin1');

/** Command, parameter synopsis, as `help` lists them. */
const COMMANDS: readonly (readonly [string, string])[] = [
  ['check', ''],
  ['log', 'on|off'],
  ['print', '<string>'],
  ['quota', '[set <name> <val>|<domid>]'],
  ['help', ''],
];

/** C's `atoi`: leading blanks, an optional sign, digits; 0 when there are none. */
export function atoi(text: string): number {
  const m = /^[ \t\n\v\f\r]*([+-]?\d+)/.exec(text);
  return m === null ? 0 : Number(m[1]);
}

function quotaSettings(engine: XenStoreEngine): Buffer {
  const q = engine.quota;
  let text = 'Quota settings:\n';
  for (const [name, key, description] of QUOTA_NAMES) text += `${name.padEnd(17)}: ${String(q[key]).padStart(8)} ${description}\n`;
  return Buffer.from(`${text}\0`, 'latin1');
}

function quotaSet(engine: XenStoreEngine, args: readonly string[]): Buffer {
  if (args.length !== 2) fail('EINVAL');
  const value = atoi(args[1]);
  if (value < 1 || !Number.isSafeInteger(value)) fail('EINVAL');
  const entry = QUOTA_NAMES.find(([name]) => name === args[0]) ?? fail('EINVAL');
  engine.setQuota({ [entry[1]]: value });
  return OK;
}

function quotaOfDomain(engine: XenStoreEngine, arg: string): Buffer {
  const domid = atoi(arg) >>> 0;
  if (domid >= DOMID_FIRST_RESERVED || !engine.knowsDomain(domid)) fail('ENOENT');
  const u = engine.domainUsage(domid);
  const line = (name: string, n: number): string => `${name.padEnd(16)}: ${String(n).padStart(8)}\n`;
  const text = `Domain ${domid}:\n${line('nodes', u.nodes)}${line('watches', u.watches)}${line('transactions', u.transactions)}`;
  return Buffer.from(`${text}\0`, 'latin1');
}

/**
 * Runs one control command (`args[0]`, then its parameters) and returns the reply payload.
 * The caller has checked the connection is privileged. Failures are thrown with `fail`.
 */
export function runControl(engine: XenStoreEngine, args: readonly string[]): Buffer {
  const [command, ...params] = args;
  switch (command) {
    case 'check':
      // The store is kept consistent by construction; there is nothing to repair.
      if (params.length !== 0) fail('EINVAL');
      return OK;
    case 'log':
      if (params.length !== 1 || (params[0] !== 'on' && params[0] !== 'off')) fail('EINVAL');
      return OK;
    case 'print':
      if (params.length !== 1) fail('EINVAL');
      debug('control: %s', params[0]);
      return OK;
    case 'quota':
      if (params.length === 0) return quotaSettings(engine);
      if (params[0] === 'set') return quotaSet(engine, params.slice(1));
      if (params.length !== 1) fail('EINVAL');
      return quotaOfDomain(engine, params[0]);
    case 'help': {
      if (params.length !== 0) fail('EINVAL');
      // As C xenstored: one "command<TAB>parameters" line each, no terminating NUL.
      return Buffer.from(COMMANDS.map(([c, p]) => `${c}\t${p}\n`).join(''), 'latin1');
    }
    default:
      return fail('EINVAL');
  }
}

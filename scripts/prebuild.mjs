// `npm run prebuild`: builds the addon into prebuilds/<platform>-<arch>/xenode.<libc>.node
// with prebuildify (--napi --strip --tag-libc), the file node-gyp-build loads in
// preference to a local build, so that a host with Xen's runtime libraries but no headers
// or compiler can use xenode's native backend (scripts/prove-prebuild.sh proves it).
//
// npm also runs a script named `prebuild` before every `npm run build` (its pre-hook
// convention), and building the addon there would add a full native compile to every
// TypeScript build. So this script acts only when it was asked for by name: when npm was
// invoked as `npm run build` (or `npm test`, `npm ci` … through prepare/pretest), it
// returns at once. npm gives both cases the same environment, so the command line of the
// npm process that runs this script decides (/proc on Linux, the only platform a dom0
// runs; elsewhere it builds, as asked). XENODE_PREBUILD=1 forces a build, =0 skips it.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The parent pid of `pid`, from /proc; undefined where /proc is not there. */
function parentOf(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ')'
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

function commandLine(pid) {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    // npm sets its process title to "npm run build", which replaces argv with one string
    return argv.length === 1 ? argv[0].trim().split(/\s+/) : argv;
  } catch {
    return undefined;
  }
}

/**
 * Whether npm runs this as the pre-hook of `build` rather than as `npm run prebuild`: the
 * nearest ancestor whose command line runs a script through npm says which script.
 */
function runAsHookOfBuild() {
  if (process.env.npm_lifecycle_event !== 'prebuild') return false;
  for (let pid = process.ppid, hops = 0; pid > 1 && hops < 6; pid = parentOf(pid), hops++) {
    const argv = commandLine(pid);
    if (argv === undefined) return false;
    const at = argv.findIndex((a) => a === 'run' || a === 'run-script' || a === 'rum' || a === 'urn');
    if (at >= 0 && /(^|\/)npm(-cli\.js)?$/.test(argv[at - 1] ?? '')) {
      const script = argv.slice(at + 1).find((a) => !a.startsWith('-'));
      return script !== 'prebuild';
    }
    // npm test / npm ci / npm install run build through pretest or prepare
    if (argv.some((a) => /(^|\/)npm(-cli\.js)?$/.test(a))) return true;
  }
  return false;
}

const forced = process.env.XENODE_PREBUILD;
const skip = forced === '0' || (forced !== '1' && runAsHookOfBuild());
// For xenode's own test of the decision (test/unit/prebuild-script.test.ts).
if (process.env.XENODE_PREBUILD_DRY_RUN === '1') {
  console.log(skip ? 'prebuild: skipped' : 'prebuild: would build');
  process.exit(0);
}
if (skip) process.exit(0);

const prebuildify = createRequire(resolve(root, 'package.json')).resolve('prebuildify/bin.js');
const args = [prebuildify, '--napi', '--strip', '--tag-libc'];
// node-gyp under prebuildify must not download Node's headers: use npm's nodedir or the
// headers installed beside this Node.js, as scripts/install.mjs does.
const nodedir = process.env.npm_config_nodedir || resolve(dirname(process.execPath), '..');
const r = spawnSync(process.execPath, args, {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, npm_config_nodedir: nodedir },
});
if (r.error) {
  console.error(`xenode: prebuildify could not run: ${r.error.message}`);
  process.exit(1);
}
process.exit(r.status ?? 1);

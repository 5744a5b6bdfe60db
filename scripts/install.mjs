// xenode's install script (package.json "install"), run by npm install and npm rebuild.
//
// 1. A prebuild in prebuilds/ for this platform, arch and libc that loads: nothing to do
//    (unless --build-from-source).
// 2. No Xen headers, or no toolchain to build with: say so in one line and succeed. The
//    mock backend works without the addon; the native backend then explains the fix.
// 3. Otherwise build the addon with node-gyp; if that fails, the install fails, loudly.
//
// It never downloads anything: node-gyp is pointed at the headers of the Node.js that
// runs it (npm's nodedir setting, or the headers installed beside it).
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, realpathSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = 'xenode';

function say(line) {
  console.log(`${pkg}: ${line}`);
}

function run(command, args, options = {}) {
  return spawnSync(command, args, { encoding: 'utf8', ...options });
}

function isExecutable(path) {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** The command's path: as given when it has a slash, else looked up on PATH. */
function which(command) {
  if (command.includes('/')) return isExecutable(command) ? command : undefined;
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && isExecutable(join(dir, command))) return join(dir, command);
  }
  return undefined;
}

function buildFromSource() {
  const v = process.env.npm_config_build_from_source;
  return v === 'true' || v === '' || v?.split(',').includes(pkg);
}

/** The prebuild node-gyp-build would pick for this process, if one exists and loads. */
function usablePrebuild() {
  process.env.PREBUILDS_ONLY = '1';
  let file;
  try {
    file = createRequire(join(root, 'package.json'))('node-gyp-build').path(root);
  } catch {
    return undefined;
  } finally {
    delete process.env.PREBUILDS_ONLY;
  }
  // Loaded in a child, so that a prebuild this system cannot load (an older libc …) only
  // means "build from source".
  const probe = run(process.execPath, ['-e', 'require(process.argv[1])', file]);
  return probe.status === 0 ? file : undefined;
}

function pkgConfig(...args) {
  const r = run('pkg-config', args);
  return r.status === 0 ? r.stdout.trim() : undefined;
}

function isFile(path) {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

function xenHeadersFound() {
  if (pkgConfig('--exists', 'xenstore', 'xencontrol', 'xenlight', 'xentoollog') === undefined) return false;
  const includedir = pkgConfig('--variable=includedir', 'xenstore') || '/usr/include';
  return isFile(join(includedir, 'xenstore.h'));
}

/** What is missing to run node-gyp, or an empty list. */
function missingTools() {
  const missing = [];
  if (!which('make')) missing.push('make');
  const cxx = process.env.CXX?.split(' ')[0];
  if (cxx ? !which(cxx) : !(which('g++') || which('c++') || which('clang++'))) missing.push('a C++ compiler');
  const python = process.env.npm_config_python || process.env.PYTHON;
  if (python ? !which(python) : !(which('python3') || which('python'))) missing.push('python3');
  return missing;
}

/** node-gyp's --nodedir: npm's setting, else the headers installed with this Node.js. */
function nodeHeaders() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = resolve(dirname(process.execPath), '..');
  if (isFile(join(prefix, 'include', 'node', 'common.gypi'))) return prefix;
  return undefined;
}

/** The node-gyp npm ships with, found from the npm on PATH (when run outside npm). */
function npmBundledNodeGyp() {
  const npm = which('npm');
  if (!npm) return undefined;
  for (let dir = dirname(realpathSync(npm)); dir !== dirname(dir); dir = dirname(dir)) {
    const script = join(dir, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    if (existsSync(join(dir, 'package.json')) && existsSync(script)) return script;
  }
  return undefined;
}

/**
 * How to run node-gyp: the copy npm names for scripts, one on PATH, npm's bundled copy,
 * else through npm exec (which may fetch it from npm's registry).
 */
function nodeGyp() {
  const script = process.env.npm_config_node_gyp;
  if (script && existsSync(script)) return [process.execPath, [script]];
  const onPath = which('node-gyp');
  if (onPath) return [onPath, []];
  const bundled = npmBundledNodeGyp();
  if (bundled) return [process.execPath, [bundled]];
  return ['npm', ['exec', '--yes', '--', 'node-gyp']];
}

function main() {
  if (!buildFromSource()) {
    const prebuild = usablePrebuild();
    if (prebuild) {
      say(`using the prebuilt addon ${prebuild.slice(root.length + 1)}`);
      return 0;
    }
  }
  if (!xenHeadersFound()) {
    say(
      'Xen headers not found; the native backend is not built, the mock backend works. To build it: apt-get install libxen-dev && npm rebuild xenode',
    );
    return 0;
  }
  const missing = missingTools();
  if (missing.length > 0) {
    say(
      `cannot build the native addon without ${missing.join(', ')}; the native backend is not built, the mock backend works. To build it: apt-get install build-essential python3 && npm rebuild xenode`,
    );
    return 0;
  }
  const nodedir = nodeHeaders();
  if (nodedir === undefined) {
    say(
      `the headers of Node.js ${process.version} are not installed beside it, and ${pkg} never downloads them; the native backend is not built, the mock backend works. To build it: set npm's nodedir to a Node.js source or install tree && npm rebuild xenode`,
    );
    return 0;
  }
  const [command, prefix] = nodeGyp();
  const args = [...prefix, 'rebuild', `--nodedir=${nodedir}`];
  say(`building the native addon: ${[command, ...args].join(' ')}`);
  const build = spawnSync(command, args, { cwd: root, stdio: 'inherit' });
  if (build.status !== 0) {
    const why = build.error ? build.error.message : `exit code ${build.status ?? build.signal}`;
    console.error(`${pkg}: building the native addon FAILED (${why}); see node-gyp's output above.`);
    return build.status || 1;
  }
  return 0;
}

process.exitCode = main();

// Runs benchmarks: `npm run bench -- [name…] [--flag [value]…]`. A benchmark is a
// bench/<name>.mjs whose first line starts with `// bench:`; with no name every benchmark
// runs. Everything from the first flag on is passed to each. `--list` lists them. Exits
// non-zero when any benchmark does.
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** name → one-line description, for every bench/*.mjs that declares itself a benchmark. */
function discover() {
  const found = new Map();
  for (const file of readdirSync(here).sort()) {
    if (!file.endsWith('.mjs') || file === 'run.mjs') continue;
    const first = readFileSync(join(here, file), 'utf8').split('\n', 1)[0];
    if (first.startsWith('// bench:')) found.set(file.slice(0, -'.mjs'.length), first.slice('// bench:'.length).trim());
  }
  return found;
}

const args = process.argv.slice(2);
const firstFlag = args.findIndex((a) => a.startsWith('-'));
const names = firstFlag < 0 ? args : args.slice(0, firstFlag);
const flags = firstFlag < 0 ? [] : args.slice(firstFlag);
const benches = discover();

if (flags.includes('--list')) {
  for (const [name, about] of benches) console.log(`${name.padEnd(12)} ${about}`);
  process.exit(0);
}

const unknown = names.filter((n) => !benches.has(n));
if (unknown.length > 0) {
  console.error(`bench: no benchmark named ${unknown.join(', ')}; available: ${[...benches.keys()].join(', ')}`);
  process.exit(2);
}

let status = 0;
for (const name of names.length > 0 ? names : benches.keys()) {
  const run = spawnSync(process.execPath, [join(here, `${name}.mjs`), ...flags], { stdio: 'inherit' });
  const code = run.status ?? 1;
  if (code !== 0) {
    console.error(`bench: ${name} failed (${run.signal ?? `exit code ${code}`})`);
    status = status || code;
  }
}
process.exit(status);

/**
 * Every `@example` in the JSDoc (which TypeDoc publishes as the API reference) is run as a
 * script against the built package, so the reference never shows code that does not work.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MockHost } from '../../lib/index.js';

const root = join(import.meta.dirname, '..', '..');
const run = promisify(execFile);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [join(dir, e.name)] : [],
  );
}

interface Example {
  where: string;
  code: string;
}

function examples(): Example[] {
  const out: Example[] = [];
  for (const file of sourceFiles(join(root, 'lib'))) {
    const lines = readFileSync(file, 'utf8').split('\n');
    for (let i = 0; i < lines.length; i++) {
      if (!/^\s*\*\s*@example\b/.test(lines[i] as string)) continue;
      const start = lines.findIndex((l, j) => j > i && /^\s*\*\s*```/.test(l));
      const end = lines.findIndex((l, j) => j > start && /^\s*\*\s*```\s*$/.test(l));
      if (start < 0 || end < 0) throw new Error(`${file}:${i + 1}: @example without a fenced code block`);
      const code = lines.slice(start + 1, end).map((l) => l.replace(/^\s*\* ?/, '')).join('\n');
      out.push({ where: `${relative(root, file)}:${i + 1}`, code });
      i = end;
    }
  }
  return out;
}

// Inside the project, so that `import 'xenode'` resolves to the package itself (dist/).
const dir = mkdtempSync(join(root, 'test', 'docs', '.run-'));
// Examples written for a Dom0 find xenstored through XENSTORED_PATH, as libxenstore does.
let host: MockHost;
beforeAll(async () => {
  host = await MockHost.create({ xenstoreSocket: join(dir, 'xenstored.sock') });
});
afterAll(async () => {
  await host.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('JSDoc @example blocks', () => {
  const all = examples();
  it('exist', () => expect(all.length).toBeGreaterThan(5));
  it.each(all.map((e) => [e.where, e] as const))('%s runs', async (_where, example) => {
    const js = ts.transpileModule(example.code, {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    }).outputText;
    const file = join(dir, `${example.where.replace(/[/:.]/g, '_')}.mjs`);
    writeFileSync(file, js);
    const { stderr } = await run(process.execPath, [file], { cwd: root, timeout: 15_000, env: { ...process.env, XENSTORED_PATH: join(dir, 'xenstored.sock') } });
    expect(stderr).toBe('');
  });
});

#!/usr/bin/env node
// Creates three domains from the xl.cfg files in examples/xl/, waits until they run, prints
// them as a table, then shuts them down and waits for each to be gone.
// Runs as-is against the mock host: XENODE_BACKEND=mock node examples/three-domains.mjs
import { readFile } from 'node:fs/promises';
import { connect } from 'xenode';

const files = ['web.cfg', 'db.cfg', 'router.cfg'].map((f) => new URL(`./xl/${f}`, import.meta.url));
const xen = await connect();
try {
  const domains = await Promise.all(files.map(async (file) => xen.domains.create(await readFile(file, 'utf8'), { filename: file.pathname })));
  await Promise.all(domains.map((d) => d.waitFor('running', { timeoutMs: 10_000 })));

  const rows = (await xen.domains.list()).map((d) => [d.name, d.domid, d.memory.current, d.vcpus.online, d.state]);
  const header = ['Name', 'ID', 'Mem(MiB)', 'VCPUs', 'State'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  for (const row of [header, ...rows]) console.log(row.map((c, i) => String(c).padEnd(widths[i])).join('  ').trimEnd());
  for (const d of domains) {
    const devices = await d.listDevices();
    console.log(`${d.name}: ${devices.map((x) => `${x.kind}/${x.devid} ${x.backendState}`).join(', ')}`);
  }

  await Promise.all(domains.map((d) => d.shutdown({ wait: true, timeoutMs: 10_000 })));
  console.log(`left: ${(await xen.domains.list()).map((d) => d.name).join(', ')}`);
} finally {
  await xen.close();
}

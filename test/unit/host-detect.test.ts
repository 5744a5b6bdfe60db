import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { detectXen } from '../../lib/index.js';

const roots: string[] = [];
afterAll(async () => {
  for (const r of roots) await rm(r, { recursive: true, force: true });
});

async function fakeRoot(files: Record<string, string>): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'xenode-root-'));
  roots.push(root);
  for (const [path, text] of Object.entries(files)) {
    await mkdir(join(root, path, '..'), { recursive: true });
    await writeFile(join(root, path), text);
  }
  return root;
}

describe('detectXen', () => {
  it('recognises a PVOps dom0', async () => {
    const root = await fakeRoot({ 'sys/hypervisor/type': 'xen\n', 'sys/hypervisor/guest_type': 'PV\n', 'proc/xen/capabilities': 'control_d\n', 'proc/filesystems': 'nodev\txenfs\n' });
    expect(await detectXen({ root })).toEqual({ hypervisor: 'xen', isXen: true, isDom0: true, guestType: 'PV', pvops: true, xenfs: true, capabilities: ['control_d'] });
  });

  it('recognises a domU, and an old XenLinux kernel without guest_type or xenfs', async () => {
    const domU = await fakeRoot({ 'sys/hypervisor/type': 'xen', 'sys/hypervisor/guest_type': 'PVH', 'proc/xen/capabilities': '' });
    expect(await detectXen({ root: domU })).toMatchObject({ isXen: true, isDom0: false, guestType: 'PVH', pvops: true });
    const xenlinux = await fakeRoot({ 'proc/xen/capabilities': 'control_d', 'proc/filesystems': 'ext4\n' });
    expect(await detectXen({ root: xenlinux })).toMatchObject({ isXen: true, isDom0: true, pvops: false });
  });

  it('says no on bare metal or another hypervisor', async () => {
    expect(await detectXen({ root: await fakeRoot({}) })).toMatchObject({ hypervisor: undefined, isXen: false, isDom0: false, pvops: false, capabilities: [] });
    expect(await detectXen({ root: await fakeRoot({ 'sys/hypervisor/type': 'kvm' }) })).toMatchObject({ hypervisor: 'kvm', isXen: false });
  });
});

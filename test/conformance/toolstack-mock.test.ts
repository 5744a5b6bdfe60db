/**
 * The toolstack conformance suite against the mock host: in process with instant and with
 * realistic timing, and from "another process" through its XenStore and toolstack sockets
 * (connectMockHost, as `xenode … --mock-host PATH` uses them).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockHost, connect, connectMockHost, type MockTiming } from '../../lib/index.js';
import { toolstackConformance, type ToolstackSuiteFactory } from './toolstack-suite.js';

function inProcess(timing: MockTiming): ToolstackSuiteFactory {
  let host: Promise<MockHost> | undefined;
  const get = () => (host ??= MockHost.create({ timing }));
  return {
    kernel: '/boot/vmlinuz',
    timeoutMs: timing === 'instant' ? 1000 : 3000,
    assignablePci: '0000:03:10.1',
    consoleBanner: /login: $/,
    connect: async () => connect({ backend: await get() }),
    guest: {
      crash: (domid) => void get().then((h) => h.crashDomain(domid)),
      shutdown: (domid, reason) => void get().then((h) => h.guestShutdown(domid, reason)),
      writeConsole: (domid, text) => void get().then((h) => h.writeConsole(domid, text)),
      diskWrite: async (domid, vdev, offset, data) => (await get()).guestDiskWrite(domid, vdev, offset, data),
      diskRead: async (domid, vdev, offset, length) => (await get()).guestDiskRead(domid, vdev, offset, length),
    },
    cleanup: async () => (await host)?.close(),
  };
}

function overSockets(): ToolstackSuiteFactory {
  const dir = mkdtempSync(join(tmpdir(), 'xenode-ts-'));
  const socket = join(dir, 'xs.sock');
  let host: Promise<MockHost> | undefined;
  const get = () => (host ??= MockHost.create({ timing: 'instant', xenstoreSocket: socket, toolstackSocket: join(dir, 'ts.sock') }));
  return {
    kernel: '/boot/vmlinuz',
    timeoutMs: 2000,
    assignablePci: '0000:03:10.2',
    consoleBanner: /login: $/,
    connect: async () => {
      await get();
      return connect({ backend: connectMockHost(socket) });
    },
    guest: {
      crash: (domid) => void get().then((h) => h.crashDomain(domid)),
      shutdown: (domid, reason) => void get().then((h) => h.guestShutdown(domid, reason)),
      writeConsole: (domid, text) => void get().then((h) => h.writeConsole(domid, text)),
      diskWrite: async (domid, vdev, offset, data) => (await get()).guestDiskWrite(domid, vdev, offset, data),
      diskRead: async (domid, vdev, offset, length) => (await get()).guestDiskRead(domid, vdev, offset, length),
    },
    cleanup: async () => {
      await (await host)?.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

toolstackConformance('mock host, instant', inProcess('instant'));
toolstackConformance('mock host, realistic timing', inProcess('realistic'));
toolstackConformance('mock host over its sockets', overSockets());

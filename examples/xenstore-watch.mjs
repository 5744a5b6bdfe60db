#!/usr/bin/env node
// Waits until a guest's network backend reports XenbusState Connected (4), the way a Dom0
// script waits for a device to come up after `xl create` or a hotplug, with a time limit.
//
//   XENODE_BACKEND=mock node examples/xenstore-watch.mjs            # on any machine
//   sudo node examples/xenstore-watch.mjs --domid 7 --timeout 30000  # on a Xen dom0
//
// On the mock host nothing drives the device, so the script plays the backend driver
// itself (clearly marked below); on a real host, netback does.
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { connect } from 'xenode';

/** Device states of xen/io/xenbus.h. */
const XenbusState = { Unknown: 0, Initialising: 1, InitWait: 2, Initialised: 3, Connected: 4, Closing: 5, Closed: 6 };
const stateName = (n) => Object.keys(XenbusState).find((k) => XenbusState[k] === n) ?? `state ${n}`;

/**
 * Resolves once the node at `path` holds `wanted`; rejects if the device closes instead,
 * or with an AbortError when `signal` fires. No separate first read is needed: a watch's
 * first event arrives at once, and each later one means "look again".
 */
async function waitForState(xs, path, wanted, { signal }) {
  for await (const _event of xs.watch(path, { signal })) {
    const text = await xs.read(path).catch((err) => {
      if (err.code === 'ENOENT') return undefined; // not created yet: keep waiting
      throw err;
    });
    if (text === undefined) continue;
    const state = Number(text);
    console.log(`${path} = ${state} (${stateName(state)})`);
    if (state === wanted) return;
    if (state === XenbusState.Closing || state === XenbusState.Closed) throw new Error(`the device closed (${stateName(state)}) before it connected`);
  }
}

/** Stands in for netback on the mock host: walks the backend through its states until `signal`. */
async function simulateBackend(xs, path, signal) {
  try {
    for (const state of [XenbusState.Initialising, XenbusState.InitWait, XenbusState.Initialised, XenbusState.Connected]) {
      await sleep(20, undefined, { signal });
      await xs.write(path, String(state));
    }
  } catch (err) {
    if (err.name !== 'AbortError') throw err;
  }
}

const { values } = parseArgs({
  options: {
    domid: { type: 'string', default: '7' },
    device: { type: 'string', default: 'vif/0' },
    timeout: { type: 'string', default: '5000' },
  },
});

const xen = await connect();
try {
  const [type, index] = values.device.split('/');
  const path = `/local/domain/0/backend/${type}/${values.domid}/${index}/state`;
  const timeout = Number(values.timeout);
  console.log(`waiting up to ${timeout} ms for ${path} to reach Connected (backend: ${xen.backend.name})`);
  // ---- mock host only: play the backend driver ----
  const stopDriver = new AbortController();
  const driver = xen.backend.name === 'mock' ? simulateBackend(xen.xenstore, path, stopDriver.signal) : undefined;
  try {
    await waitForState(xen.xenstore, path, XenbusState.Connected, { signal: AbortSignal.timeout(timeout) });
    console.log('device connected');
  } finally {
    stopDriver.abort();
    await driver;
  }
} catch (err) {
  process.exitCode = 1;
  console.error(err.name === 'AbortError' ? `timed out after ${values.timeout} ms` : `failed: ${err.message}`);
} finally {
  await xen.close();
}

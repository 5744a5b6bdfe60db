/**
 * The event channel and grant table conformance suite through the native addon over
 * fake-xen.c (run by test/native/fake-xen.test.ts in a child vitest whose
 * LD_LIBRARY_PATH puts the fake libxenevtchn.so.1 / libxengnttab.so.1 first).
 */
import { MockHost, connect } from '../../../lib/index.js';
import { hypervisorConformance } from '../../conformance/hypervisor-suite.js';

let host: MockHost | undefined;
hypervisorConformance('native over fake libxenevtchn / libxengnttab', {
  connect: async () => {
    host ??= await MockHost.create({ xenstoreSocket: process.env.XENSTORED_PATH });
    return connect({ backend: 'native' });
  },
  detachesViews: true,
  cleanup: async () => {
    await host?.close();
  },
});

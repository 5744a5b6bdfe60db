/**
 * The toolstack conformance suite's live snapshot cases on real Xen (the factory:
 * toolstack-host.ts), in the oxenstored boot: the guest's own kernel writes and reads a
 * VHD disk that xenode's block backend serves in this process (`serveVhd`), before,
 * during and after a live snapshot, and bad requests change nothing. The raw disk the
 * second case also attaches is a loop device behind /srv/conf-raw.img.
 */
import { afterAll, beforeAll, describe } from 'vitest';
import { toolstackConformance } from '../conformance/toolstack-suite.js';
import { realXenToolstack, setUpDevices, tearDownDevices } from './toolstack-host.js';

describe('live disk snapshots on real Xen', () => {
  beforeAll(() => setUpDevices(['/srv/conf-raw.img'], false));
  afterAll(() => tearDownDevices());

  toolstackConformance('native (libxl) on real Xen: live snapshots', realXenToolstack({ only: ['live disk snapshots'] }));
});

/**
 * The toolstack conformance suite on real Xen (the factory and what this host can and
 * cannot do: toolstack-host.ts), in the C xenstored boot: every group but the ones that
 * run in the oxenstored boot to even out the two boots' wall time — `save and restore`
 * and `migration` (migrate.test.ts, with a PVH guest's live migration) and `live disk
 * snapshots` (live-snapshot.test.ts).
 */
import { afterAll, beforeAll, describe } from 'vitest';
import { toolstackConformance } from '../conformance/toolstack-suite.js';
import { realXenToolstack, setUpDevices, tearDownDevices } from './toolstack-host.js';

describe('native toolstack on real Xen', () => {
  beforeAll(() => setUpDevices(['/srv/conf-root.img', '/srv/conf-data.img'], true));
  afterAll(() => tearDownDevices());

  toolstackConformance('native (libxl) on real Xen', realXenToolstack({ except: ['save and restore', 'migration', 'live disk snapshots'] }));
});

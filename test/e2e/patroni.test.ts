import assert from 'node:assert/strict';
import path from 'node:path';
import {after, before, describe, it} from 'node:test';
import type {TestContext} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {PatroniCluster} from '../helpers/patroni';
import type {NodeName, PgWriter} from '../helpers/patroni';
import {isRoot, requireRoot, waitFor} from '../helpers/rig';

/** Long enough for the leader key (ttl 15) to expire while the old primary's Patroni is stopped. */
const HANG_MS = 20_000;

// The control case the rig guarantees, without ebsmon: a real cluster, a real hang, and back.
describe('Patroni cluster whose primary\'s disk hangs (control, no fencing)', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false, timeout: 300_000}, () => {
  let cleanupDir: () => Promise<void>;
  let cluster: PatroniCluster | undefined;
  let writer: PgWriter;
  let hangAt = 0;
  let resumedAt = 0;

  before(async () => {
    let dir: string;
    ({path: dir, cleanup: cleanupDir} = await tmpDir({unsafeCleanup: true}));
    // A directory of its own: the cluster removes it when it stops.
    cluster = await PatroniCluster.start(path.join(dir, 'cluster'));
  });

  after(async () => {
    await cluster?.stop();
    await cleanupDir?.();
  });

  it('starts: pg1 holds the leader key and is primary, pg2 streams from it, the application commits on pg1', async (t: TestContext) => {
    requireRoot(t);
    const c = cluster!;
    assert.equal(c.leader(), 'pg1');
    assert.equal(c.api(c.node('pg1'), '/primary').code, 200);
    assert.equal(c.api(c.node('pg2'), '/replica').code, 200);
    assert.deepEqual(c.streamingTo(c.node('pg1')), ['pg2']);
    writer = c.startWriter();
    await waitFor('commits acknowledged', () => writer.acks().length >= 50, 30_000, 100);
    assert.deepEqual([...new Set(writer.acks().map(e => e.node))], ['pg1']);
  });

  it('a hung disk (cache warm, Patroni stopped): the old primary\'s commits stall, locally too, until the resume', async (t: TestContext) => {
    requireRoot(t);
    const c = cluster!;
    const pg1 = c.node('pg1');
    hangAt = c.hang('pg1', {dropCache: false, stallPatroni: true});
    try {
      const stalled = await waitFor('the application\'s commit on pg1 timing out', () => writer.events().find(e => e.ev === 'error' && e.op === 'query' && e.t >= hangAt), 15_000, 100);
      assert.equal(stalled.node, 'pg1');
      assert.equal(stalled.kind, 'timeout', 'the commit never answered (not refused, not reset)');
      // On the node itself, over its local socket: the commit waits on the disk (psql is given 5 s).
      assert.throws(() => c.sql(pg1, 'INSERT INTO t (id) VALUES (-1)'), /timeout|failed \(124\)/);
      await waitFor('the hang\'s length', () => Date.now() - hangAt >= HANG_MS, HANG_MS + 5_000, 250);
      const lastPg1Ack = writer.acks(hangAt).filter(e => e.node === 'pg1').at(-1);
      assert.ok(lastPg1Ack === undefined || lastPg1Ack.t < stalled.t, 'pg1 acknowledged nothing once its commits stalled');
    } finally {
      c.resume('pg1');
      resumedAt = Date.now();
    }
    t.diagnostic(`first stalled commit ${writer.events().find(e => e.ev === 'error' && e.t >= hangAt)!.t - hangAt} ms after the hang`);
  });

  it('after the resume: one leader, the other node streaming from it, the application committing on the leader', async (t: TestContext) => {
    requireRoot(t);
    const c = cluster!;
    const leader: NodeName = await c.waitHealthy(120_000);
    const healthyAt = Date.now();
    const other = c.other(leader);
    assert.notEqual(c.api(other, '/primary').code, 200, 'one primary only');
    assert.deepEqual(c.streamingTo(c.node(leader)), [other.name]);
    await waitFor('commits on the leader after the resume', () => writer.acks(healthyAt).some(e => e.node === leader), 60_000, 100);
    await writer.proc.stop();
    const verdict = c.verify(writer, {hangAt, oldPrimary: 'pg1'});
    assert.equal(verdict.finalPrimary, leader);
    assert.ok(verdict.acked > 50);
    const failover = c.observations().some(o => o.src === 'etcd' && o.t >= hangAt && o.leader === 'pg2');
    t.diagnostic(`leader ${leader} (failover: ${failover ? 'yes' : 'no'}), healthy ${healthyAt - resumedAt} ms after the resume; acknowledged ${verdict.acked}, lost ${verdict.lost.length}, acknowledged by pg1 after the hang ${verdict.oldAcksAfterHang.length}`);
  });
});

import assert from 'node:assert/strict';
import path from 'node:path';
import {after, before, describe, it} from 'node:test';
import type {TestContext} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {ebsmonTable} from '../helpers/firewall';
import {API_PORT, DCS, ETCD_PORT, PG_PORT, PatroniCluster, keyHistory} from '../helpers/patroni';
import type {HangOptions, NodeEbsmon, NodeName, PgWriter} from '../helpers/patroni';
import {tcpTry} from '../helpers/proc';
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

/** The rejoin stages as `ebsmon status` words them (written out: the text under test). */
const VOICE_LINE = 'rejoin: coordinator reachable again, clients still fenced';
const PROGRAM_LINE = 'rejoin: its disks answer again; fenced, waiting for its rejoin program';

// The same hang with ebsmon on both nodes: the primary loses its voice and its clients at
// ebsmon's deadline (well before Patroni's ttl), the replica takes over, and the old primary
// comes back only as a replica, in two stages its rejoin program decides.
// Two hangs: the page cache dropped (Patroni's loop may block on the disk), and the cache warm
// with Patroni itself stopped (it can neither renew nor give up its key: only the fence acts).
const VARIANTS: ReadonlyArray<{label: string, hang: HangOptions}> = [
  {label: 'cache dropped', hang: {dropCache: true}},
  {label: 'cache warm, Patroni stopped', hang: {dropCache: false, stallPatroni: true}},
];

for (const variant of VARIANTS) {
  describe(`Patroni cluster whose primary's disk hangs (${variant.label}), with ebsmon on every node`, {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false, timeout: 600_000}, () => {
    let cleanupDir: () => Promise<void>;
    let cluster: PatroniCluster | undefined;
    const guards = new Map<NodeName, NodeEbsmon>();
    let writer: PgWriter;
    let hangAt = 0;
    let resumedAt = 0;

    before(async () => {
      let dir: string;
      ({path: dir, cleanup: cleanupDir} = await tmpDir({unsafeCleanup: true}));
      cluster = await PatroniCluster.start(path.join(dir, 'cluster'));
      try {
        for (const name of ['pg1', 'pg2'] as const)
          guards.set(name, await cluster.startEbsmon(name));
      } catch (error) {
        throw new Error(`${(error as Error).message}\n${cluster.logTail()}`);
      }
    });

    after(async () => {
      await cluster?.stop();
      await cleanupDir?.();
    });

    /** Fails with every log's tail, so a failure says what the cluster and ebsmon were doing. */
    const withLogs = async (body: () => Promise<void>) => {
      try {
        await body();
      } catch (error) {
        throw new Error(`${(error as Error).message}\n${cluster!.logTail()}`);
      }
    };

    it('arms: pg1\'s table guards 5432 and 8008 and lets it reach etcd, each with a deadline; the application commits on pg1', async (t: TestContext) => {
      requireRoot(t);
      const c = cluster!;
      const table = await waitFor('pg1\'s table armed', () => {
        const read = ebsmonTable(c.node('pg1').ns);
        return read !== null && read.alive.has(PG_PORT) && read.alive.has(API_PORT) && read.reachable.has(ETCD_PORT) ? read : null;
      }, 10_000, 100);
      assert.deepEqual([...table.guarded.keys()].sort(), [PG_PORT, API_PORT].sort());
      assert.deepEqual([...table.isolated.keys()], [ETCD_PORT]);
      assert.ok(table.ruleIn.has('input'));
      assert.ok((table.alive.get(PG_PORT)?.timeoutS ?? 0) > 0, 'the clients\' deadline is the kernel\'s');
      assert.ok((table.reachable.get(ETCD_PORT)?.timeoutS ?? 0) > 0, 'the voice\'s deadline is the kernel\'s');
      writer = c.startWriter();
      await waitFor('commits acknowledged', () => writer.acks().length >= 50, 30_000, 100);
      assert.deepEqual([...new Set(writer.acks().map(e => e.node))], ['pg1']);
    });

    it('the disk hangs: pg1 refuses remote clients and cannot reach etcd before its leader key can expire; pg2 takes the key and commits', async (t: TestContext) => {
      requireRoot(t);
      const c = cluster!;
      const pg1 = c.node('pg1');
      await withLogs(async () => {
        hangAt = c.hang('pg1', variant.hang);
        try {
          // Before Patroni's ttl: until then the key is pg1's, so fencing any later would leave a window.
          const fencedAt = await waitFor('pg1 fenced in its kernel', () => {
            const read = ebsmonTable(pg1.ns);
            return read !== null && read.guarded.has(PG_PORT) && !read.alive.has(PG_PORT) && !read.alive.has(API_PORT)
              && read.isolated.has(ETCD_PORT) && !read.reachable.has(ETCD_PORT) ? Date.now() : null;
          }, Math.max(1, hangAt + DCS.ttl * 1000 - Date.now()), 100);
          t.diagnostic(`fenced in the kernel ${fencedAt - hangAt} ms after the hang (ttl ${DCS.ttl} s)`);
          assert.equal(await tcpTry(c.client.ns, pg1.ip, PG_PORT), 'refused', 'a new client connection to 5432 is reset');
          assert.equal(await tcpTry(c.client.ns, pg1.ip, API_PORT), 'refused', 'Patroni\'s API (the router\'s health check) is reset');
          assert.equal(await tcpTry(pg1.ns, c.etcd.ip, ETCD_PORT), 'refused', 'pg1 cannot reach etcd');
          assert.equal(c.curl(c.other('pg1').ns, `http://${c.etcd.ip}:${ETCD_PORT}/health`).code, 200, 'pg2 still reaches etcd');

          await waitFor('pg2 holding the leader key', () => c.leader() === 'pg2', 90_000, 250);
          await waitFor('commits acknowledged by pg2', () => writer.acks(hangAt).some(e => e.node === 'pg2'), 90_000, 100);
          assert.notEqual(c.leader(), 'pg1');
        } finally {
          c.resume('pg1');
          resumedAt = Date.now();
        }
      });
      t.diagnostic(`first commit on pg2 ${writer.acks(hangAt).find(e => e.node === 'pg2')!.t - hangAt} ms after the hang; resumed ${resumedAt - hangAt} ms after it`);
    });

    it('after the resume: pg1 gets its voice back once it is no primary, its clients only once it streams from pg2, and never the key', async (t: TestContext) => {
      requireRoot(t);
      const c = cluster!;
      const pg1 = guards.get('pg1')!;
      const said: Array<string> = [];
      let streamingAtLift: Array<string> = [];
      await withLogs(async () => {
        await waitFor('pg1\'s fence lifted', async () => {
          if (c.leader() === 'pg1')
            throw new Error(`pg1 took the leader key back after the resume; ebsmon status said: ${said.join(' | ')}`);
          const status = await pg1.status();
          const rejoin = status.split('\n').map(l => l.trim()).find(l => l.startsWith('rejoin:'));
          if (rejoin !== undefined && said.at(-1) !== rejoin)
            said.push(rejoin);
          if (pg1.record()?.state !== 'healthy')
            return false;
          // At once: the fence lifted, so pg1 streamed from pg2 when its program said so.
          streamingAtLift = c.streamingTo(c.node('pg2'));
          return true;
        }, 180_000, 250);
      });
      t.diagnostic(`fence lifted ${Date.now() - resumedAt} ms after the resume; ebsmon status said:\n${said.join('\n')}`);
      const voiceAt = said.findIndex(l => l.startsWith(VOICE_LINE));
      assert.ok(voiceAt >= 0, `ebsmon status showed the voice given back: ${said.join(' | ')}`);
      assert.ok(said.slice(0, voiceAt).every(l => l.startsWith(PROGRAM_LINE)), `before it, only the program's answers: ${said.join(' | ')}`);
      assert.deepEqual(streamingAtLift, ['pg1'], 'the fence lifted only once pg1 streamed from pg2');
      // The kernel gives both back; a real request reaches pg1's API and its replica answers from outside.
      const table = ebsmonTable(c.node('pg1').ns);
      assert.ok(table?.alive.has(PG_PORT) === true && table.reachable.has(ETCD_PORT), 'pg1\'s clients and voice armed again');
      assert.equal(c.api(c.node('pg1'), '/replica').code, 200);
    });

    it('no acknowledged commit lost, and the key never went back to pg1', async (t: TestContext) => {
      requireRoot(t);
      const c = cluster!;
      const since = Date.now();
      // On whichever node leads now: a broken build's leader must still show its verdict.
      const leader = await waitFor('a leader', () => c.leader(), 60_000, 250);
      const committing = await waitFor(`commits on the leader (${leader}) after the rejoin`, () => writer.acks(since).some(e => e.node === leader), 60_000, 100).then(() => true, () => false);
      await writer.proc.stop();
      const verdict = c.verify(writer, {hangAt, oldPrimary: 'pg1'});
      const key = keyHistory(c.observations(), hangAt);
      t.diagnostic(`leader key: ${key.map(k => `${k.holder ?? 'none'} +${k.t - hangAt} ms`).join(' -> ')}; acknowledged ${verdict.acked}, lost ${verdict.lost.length}, by pg1 after the hang ${verdict.oldAcksAfterHang.length}`);
      assert.deepEqual(verdict.lost, [], 'every acknowledged commit is on the final primary');
      assert.ok(committing, `the application commits on the leader (${leader}) again`);
      assert.equal(verdict.finalPrimary, 'pg2');
      const tookOver = key.findIndex(k => k.holder === 'pg2');
      assert.ok(tookOver >= 0, 'pg2 took the key');
      assert.ok(!key.slice(tookOver).some(k => k.holder === 'pg1'), 'pg1 never took the key back');
    });
  });
}

// A three-node MariaDB Galera cluster whose third node's disk hangs (page cache
// dropped), then resumes: without fencing, and with ebsmon on that node as
// contrib/galera deploys it. A fresh cluster per run; one table row per run.
import path from 'node:path';

import {GaleraCluster, longestStall, startEbsmon} from '../test/helpers/galera';
import type {EbsmonOnNode} from '../test/helpers/galera';
import {waitFor} from '../test/helpers/rig';

import {line, results} from './stats';

type Mode = 'none' | 'ebsmon';

export type GaleraRun = {
  mode: Mode;
  hangSeconds: number;
  /** The longest pause of the healthy nodes' commits from the hang to the end, and when the first commit after it came (ms after the hang). */
  pauseMs: number;
  firstCommitAfterPauseMs: number;
  /** When g1 first said it was in a Primary component of 2 (ms after the hang); null: never during the hang. */
  evictedMs: number | null;
  /** What ended the wait of the client on the hung node, and when (ms after the hang); null: nothing during the hang. */
  waiter: {kind: string, ms: number} | null;
  /** What the hung node said about itself over its local socket, 3 s into the hang. */
  hungSaid: string;
  /** From the resume: the fence lifted (ebsmon), and the node Synced in a Primary component of 3. */
  liftedAfterResumeMs: number | null;
  syncedAfterResumeMs: number | null;
  acked: number;
  lost: number;
  /** The reporter's evidence from ebsmon-check-galera, if it gave any. */
  evidence: string | null;
};

async function galeraRun(dir: string, mode: Mode, hangSeconds: number): Promise<GaleraRun> {
  const cluster = await GaleraCluster.start(path.join(dir, 'cluster'));
  let on: EbsmonOnNode | undefined;
  try {
    const [g1, g3] = [cluster.node('g1'), cluster.node('g3')];
    if (mode === 'ebsmon')
      on = await startEbsmon(g3, path.join(dir, 'ebsmon'), {timeout: 2});
    const writers = [cluster.startWriter('g1', {firstId: 1}), cluster.startWriter('g2', {firstId: 1_000_000})];
    const waiter = cluster.startWriter('g3', {firstId: 2_000_000, timeout: 600, pause: 0.05});
    await waitFor('commits on all three nodes', () => [...writers, waiter].every(w => w.acks().length >= 20), 30_000, 100);
    const hangAt = cluster.hang('g3');
    let evictedAt: number | null = null;
    let hungSaid = '';
    let evidence: string | null = null;
    try {
      while (Date.now() - hangAt < hangSeconds * 1000) {
        if (evictedAt === null && cluster.status(g1).wsrep_cluster_size === '2')
          evictedAt = Date.now();
        if (hungSaid === '' && Date.now() - hangAt >= 3000) {
          const s = cluster.status(g3);
          hungSaid = s.wsrep_local_state_comment === undefined ? 'no answer in 3 s' : `${s.wsrep_local_state_comment}, wsrep_ready=${s.wsrep_ready}, recv queue ${s.wsrep_local_recv_queue}`;
        }
        const failure = on?.failure();
        if (evidence === null && failure !== undefined && /receive queue full/.test(failure))
          evidence = /receive queue full[^;]*/.exec(failure)![0];
        await new Promise(resolve => setTimeout(resolve, 250));
      }
    } finally {
      cluster.resume('g3');
    }
    const resumedAt = Date.now();
    const lifted = on === undefined ? null : await waitFor('the fence lifted', () => on!.state() === 'healthy' && Date.now(), 60_000, 100).catch(() => null);
    const synced = await cluster.waitSynced(g3, 3, 180_000).then(() => Date.now(), () => null);
    await waitFor('commits after the resume', () => writers.every(w => w.acks(Date.now() - 2_000).length > 0), 60_000, 200).catch(() => undefined);
    for (const w of [...writers, waiter])
      await w.proc.stop();
    const stall = longestStall(writers, hangAt);
    const cut = waiter.firstError(hangAt);
    const verdict = cluster.verify([...writers, waiter], 'g1');
    return {
      mode, hangSeconds,
      pauseMs: stall.to - stall.from,
      firstCommitAfterPauseMs: stall.to - hangAt,
      evictedMs: evictedAt === null ? null : evictedAt - hangAt,
      waiter: cut === undefined || cut.t > resumedAt ? null : {kind: cut.kind ?? 'other', ms: cut.t - hangAt},
      hungSaid,
      liftedAfterResumeMs: lifted === null ? null : lifted - resumedAt,
      syncedAfterResumeMs: synced === null ? null : synced - resumedAt,
      acked: verdict.acked,
      lost: verdict.lost.length,
      evidence,
    };
  } finally {
    await on?.reporter.stop();
    await on?.monitor.stop();
    await cluster.stop();
  }
}

const cell = (v: number | null | undefined) => (v === null || v === undefined ? '-' : `${(v / 1000).toFixed(1)} s`);

/** BENCH_GALERA_HANG (30 s), BENCH_GALERA_RUNS (2 a mode; about 70 s a run), BENCH_GALERA_MODES (none,ebsmon). */
export async function galeraHangs(dir: string): Promise<void> {
  const hangSeconds = Number(process.env.BENCH_GALERA_HANG ?? 30);
  const runs = Number(process.env.BENCH_GALERA_RUNS ?? 2);
  const modes = (process.env.BENCH_GALERA_MODES ?? 'none,ebsmon').split(',') as Array<Mode>;
  line(`Galera: g3's disk hangs ${hangSeconds} s (page cache dropped), then resumes`, `writers on g1 and g2; ebsmon: --timeout=2 --interval=0.5 --probe-timeout=1 --recover=2; ${runs} run(s) a mode`);
  process.stdout.write(`  ${'mode'.padEnd(8)} ${'commits paused'.padEnd(15)} ${'first commit after'.padEnd(19)} ${'evicted'.padEnd(8)} ${'g3 client'.padEnd(14)} ${'lifted'.padEnd(7)} ${'Synced'.padEnd(7)} lost/acked  g3 said at +3 s\n`);
  const all: Array<GaleraRun> = [];
  for (const mode of modes) {
    for (let i = 0; i < runs; i++) {
      const r = await galeraRun(path.join(dir, `galera-${mode}-${i}`), mode, hangSeconds);
      all.push(r);
      const waiter = r.waiter === null ? '-' : `${r.waiter.kind} ${cell(r.waiter.ms)}`;
      process.stdout.write(`  ${mode.padEnd(8)} ${cell(r.pauseMs).padEnd(15)} ${cell(r.firstCommitAfterPauseMs).padEnd(19)} ${cell(r.evictedMs).padEnd(8)} ${waiter.padEnd(14)} ${cell(r.liftedAfterResumeMs).padEnd(7)} ${cell(r.syncedAfterResumeMs).padEnd(7)} ${`${r.lost}/${r.acked}`.padEnd(11)} ${r.hungSaid}\n`);
      if (r.evidence !== null)
        process.stdout.write(`      check: ${r.evidence}\n`);
    }
  }
  results.galera = {hangSeconds, runs: all};
}

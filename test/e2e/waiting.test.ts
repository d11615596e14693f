import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import path from 'node:path';
import {beforeEach, describe, it} from 'node:test';
import type {TestContext} from 'node:test';

import {Waiters, ms, nowNs} from '../helpers/cutter';
import {clearEbsmon} from '../helpers/firewall';
import {HELPER, Proc, ebsmon, reporterIn} from '../helpers/proc';
import {createNetRig, isRoot, processState, requireRoot, waitFor} from '../helpers/rig';
import type {NetRig} from '../helpers/rig';
import {useScratch} from '../helpers/suite';

/**
 * Clients that sent their query and wait for an answer send nothing more: no
 * firewall rule ever sees a packet of theirs. The monitor's socket cutter
 * destroys their connections at the deadline, on its own, with the monitor
 * running or stopped; a healthy reporter's clients are never cut.
 */
const BASE = 7701;
/** A reset before the deadline is a bug; after it, a loaded machine's bound. */
const EARLY_MS = 50;
const LATE_MS = 1_500;

describe('nftables: clients waiting on a fenced port are cut at the deadline', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let rig: NetRig;
  const scratch = useScratch(async ({teardown, track}) => {
    rig = createNetRig(teardown);
    const silent = track(new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, HELPER('silent.mjs'), String(BASE), '4'], {stdio: ['ignore', 'pipe', 'pipe']})));
    await waitFor('the silent service', () => silent.stdout.includes('listening'));
  });
  const {track} = scratch;
  beforeEach(() => {
    if (rig !== undefined)
      clearEbsmon(rig.srv);
  });
  const dirs = (name: string) => {
    const stateDir = path.join(scratch.dir, name);
    return {stateDir, fifo: path.join(stateDir, 'ebsmon.fifo')};
  };
  const monitor = (stateDir: string) => track(ebsmon(['monitor', '--firewall=nftables', `--fifo=${path.join(stateDir, 'ebsmon.fifo')}`, `--state-dir=${stateDir}`, '--timeout=2', '--recover=2', '--log-level=debug'], {ns: rig.srv}));
  const ready = (proc: Proc) => waitFor('the monitor', () => proc.logs().some(l => l.message === 'monitor running'));
  const heartbeater = (fifo: string, name: string, port: number, intervalMs = 200) => track(new Proc(spawn(process.execPath, [HELPER('heartbeater.mjs'), fifo, name, String(port), String(intervalMs)], {stdio: ['ignore', 'pipe', 'pipe']})));
  const waiters = (host: string, port: number, perPort = 1) => {
    const w = Waiters.start(rig.cli, host, port, {perPort});
    track(w.proc);
    return w;
  };

  it('the monitor says its cutter runs; with the monitor stopped, clients waiting over IPv4 and IPv6 are reset at the deadline; a healthy reporter\'s clients and a port re-armed just before its deadline are never cut', {timeout: 120_000}, async (t: TestContext) => {
    requireRoot(t);
    const {stateDir, fifo} = dirs('cut');
    const mon = monitor(stateDir);
    await ready(mon);
    assert.match(mon.stderr, /socket cutter running \(pid \d+\)/);
    const hung = heartbeater(fifo, 'hung', BASE);
    await waitFor('healthy', () => reporterIn(stateDir, 'hung')?.state === 'healthy');
    const v4 = waiters(rig.srvV4, BASE, 2);
    const v6 = waiters(rig.srvV6, BASE, 2);
    for (const w of [v4, v6])
      await w.connected();

    // Its disk hangs; the monitor cannot run either. The last heartbeat was at most an interval before.
    await hung.stop();
    const stoppedNs = nowNs();
    mon.kill('SIGSTOP');
    try {
      await waitFor('the monitor stopped', () => processState(mon.pid) === 'T');
      const deadline = stoppedNs + 2_000_000_000n;
      for (const w of [v4, v6]) {
        const ends = await waitFor('the waiting clients reset', () => w.ends().length === 2 && w.ends(), 10_000);
        for (const end of ends) {
          assert.equal(end.word, 'reset');
          const after = ms(end.ns - deadline);
          // The heartbeat behind the deadline came up to one interval (200 ms) before the stop.
          assert.ok(after > -200 - EARLY_MS && after < LATE_MS, `reset ${after.toFixed(1)} ms after the deadline`);
        }
      }
    } finally {
      mon.kill('SIGCONT');
    }
    await waitFor('fenced in the monitor\'s eyes', () => reporterIn(stateDir, 'hung')?.state === 'fenced');

    const healthy = heartbeater(fifo, 'healthy', BASE + 1);
    // Re-armed 300 ms before each deadline (--timeout=2).
    const late = heartbeater(fifo, 'late', BASE + 2, 1_700);
    await waitFor('both healthy', () => ['healthy', 'late'].every(name => reporterIn(stateDir, name)?.state === 'healthy'));
    const fine = waiters(rig.srvV4, BASE + 1, 2);
    const edge = waiters(rig.srvV6, BASE + 2, 2);
    for (const w of [fine, edge])
      await w.connected();
    const until = Date.now() + 6_000;
    await waitFor('three deadlines later', () => Date.now() > until, 10_000, 100);
    assert.deepEqual(fine.ends(), [], 'a healthy reporter\'s waiting clients are never cut');
    assert.deepEqual(edge.ends(), [], 'a port re-armed before its deadline is never cut');
    assert.ok(mon.logs().some(l => /^cut 4 connection\(s\) of clients waiting on fenced port 7701$/.test(String(l.message))), 'the cut is logged');
    for (const p of [healthy, late])
      await p.stop();
    await mon.stop();
  });
});

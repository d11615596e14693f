import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import path from 'node:path';
import {beforeEach, describe, it} from 'node:test';
import type {TestContext} from 'node:test';

import {clearEbsmon, ebsmonTable} from '../helpers/firewall';
import {HELPER, Proc, ebsmon, reporterIn, tcpTry} from '../helpers/proc';
import {createNetRig, isRoot, processState, requireRoot, waitFor} from '../helpers/rig';
import type {NetRig} from '../helpers/rig';
import {useScratch} from '../helpers/suite';

/**
 * A fenced node loses its voice in its cluster at the kernel's deadline: its
 * own connections to the coordinator's port break and new ones are refused,
 * and nothing its service completes late leaves a fenced port. The monitor
 * may be stopped: the kernel does it all.
 */
const PORT = 7501;
const COORDINATOR = 2379;
/** The service answers this long after a request: longer than the fence takes. */
const LATE_MS = 3_500;

describe('nftables: isolation from the coordinator and held replies, at the kernel\'s deadline', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let rig: NetRig;
  const scratch = useScratch(async ({teardown, track}) => {
    rig = createNetRig(teardown);
    const late = track(new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, HELPER('late.mjs'), String(LATE_MS), String(PORT)], {stdio: ['ignore', 'pipe', 'pipe']})));
    await waitFor('the late service', () => late.stdout.includes('listening'));
    const coordinator = track(new Proc(spawn('ip', ['netns', 'exec', rig.cli, process.execPath, HELPER('server.mjs'), String(COORDINATOR)], {stdio: ['ignore', 'pipe', 'pipe']})));
    await waitFor('the coordinator', () => coordinator.stdout.includes('listening'));
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
  const monitor = (stateDir: string, backend = 'nftables') => track(ebsmon(['monitor', `--firewall=${backend}`, `--fifo=${path.join(stateDir, 'ebsmon.fifo')}`, `--state-dir=${stateDir}`, '--timeout=2', '--recover=2', '--log-level=debug'], {ns: rig.srv}));
  const ready = (proc: Proc) => waitFor('the monitor', () => proc.logs().some(l => l.message === 'monitor running'));
  const heartbeater = (fifo: string) => track(new Proc(spawn(process.execPath, [HELPER('heartbeater.mjs'), fifo, 'pg', String(PORT), '200', JSON.stringify({isolate: [COORDINATOR]})], {stdio: ['ignore', 'pipe', 'pipe']})));
  /** A connection held open, from `ns` to host:port: "connected", then "pong" per answer, "reset" or "closed". */
  const holder = (ns: string, host: string, port: number, mode: 'talk' | 'idle') => track(new Proc(spawn('ip', ['netns', 'exec', ns, process.execPath, HELPER('holder.mjs'), host, String(port), mode], {stdio: ['ignore', 'pipe', 'pipe']})));
  const lines = (proc: Proc) => proc.stdout.split('\n').filter(Boolean);

  it('cuts the host\'s link to its coordinator and holds late replies at the deadline, the monitor stopped; heartbeats give both back', {timeout: 120_000}, async (t: TestContext) => {
    requireRoot(t);
    const {stateDir, fifo} = dirs('isolate');
    const mon = monitor(stateDir);
    await ready(mon);
    let beats = heartbeater(fifo);
    await waitFor('healthy', () => reporterIn(stateDir, 'pg')?.state === 'healthy');
    assert.deepEqual(reporterIn(stateDir, 'pg')?.isolate, [COORDINATOR]);
    await waitFor('the coordinator reachable, with a deadline', () => (ebsmonTable(rig.srv)?.reachable.get(COORDINATOR)?.timeoutS ?? null) !== null);

    // Control: while healthy, a late answer reaches its client.
    const control = holder(rig.cli, rig.srvV4, PORT, 'idle');
    await waitFor('the late answer while healthy', () => lines(control).includes('pong'), LATE_MS + 5_000);
    await control.stop();

    const voice = holder(rig.srv, rig.cliV4, COORDINATOR, 'talk');
    await waitFor('the host talking to its coordinator', () => lines(voice).includes('pong'));
    const waiting = holder(rig.cli, rig.srvV4, PORT, 'idle');
    await waitFor('a client waiting for its answer', () => lines(waiting).includes('connected'));
    const askedAt = Date.now();
    // The disk hangs: no more heartbeats; and the monitor cannot run either.
    await beats.stop();
    mon.kill('SIGSTOP');
    try {
      await waitFor('the monitor stopped', () => processState(mon.pid) === 'T');
      // Reset by its next packet, or destroyed first by the socket cutter (ECONNABORTED): either way cut at the deadline.
      await waitFor('the host\'s link to its coordinator cut', () => ['reset', 'error:ECONNABORTED'].includes(lines(voice).at(-1) ?? ''), 10_000);
      assert.equal(await tcpTry(rig.srv, rig.cliV4, COORDINATOR), 'refused', 'a new connection to the coordinator is refused');
      assert.equal(await tcpTry(rig.srv, '127.0.0.1', PORT) !== 'refused', true, 'loopback is spared');
      // Past the moment the service answers: the answer must not reach the client.
      const until = askedAt + LATE_MS + 1_500;
      await waitFor('past the late answer', () => Date.now() > until, LATE_MS + 5_000, 50);
      assert.ok(!lines(waiting).includes('pong'), `the late answer was held: ${lines(waiting).join(',')}`);
    } finally {
      mon.kill('SIGCONT');
    }
    await waitFor('fenced in the monitor\'s eyes too', () => reporterIn(stateDir, 'pg')?.state === 'fenced');
    assert.deepEqual(reporterIn(stateDir, 'pg')?.rejoin, {mode: 'auto', stage: 'fenced', waiting: 'disks'});
    await waiting.stop();
    await voice.stop();

    beats = heartbeater(fifo);
    await waitFor('healthy again', () => reporterIn(stateDir, 'pg')?.state === 'healthy');
    await waitFor('the coordinator reachable again', async () => await tcpTry(rig.srv, rig.cliV4, COORDINATOR) === 'ok');
    const after = holder(rig.cli, rig.srvV4, PORT, 'idle');
    await waitFor('answers reach clients again', () => lines(after).includes('pong'), LATE_MS + 5_000);
    await after.stop();

    // A clean stop leaves the healthy reporter's voice open, with no deadline, as its clients.
    await mon.stop();
    assert.equal(mon.exitCode, 0);
    assert.deepEqual(ebsmonTable(rig.srv)?.reachable.get(COORDINATOR), {timeoutS: null, expiresS: null});
    await beats.stop();
  });

  it('with --firewall=iptables, which has no outbound chain of its own, a reporter asking for isolation is told once that it is not isolated; its ports are still fenced', {timeout: 60_000}, async (t: TestContext) => {
    requireRoot(t);
    const {stateDir, fifo} = dirs('iptables');
    const mon = monitor(stateDir, 'iptables');
    await ready(mon);
    const beats = heartbeater(fifo);
    await waitFor('healthy', () => reporterIn(stateDir, 'pg')?.state === 'healthy');
    const said = () => mon.logs().filter(l => l.level === 'warn' && String(l.message).startsWith('pg asks that this host be cut from port(s) 2379 while fenced, but --firewall=iptables does not isolate'));
    await waitFor('the warning', () => said().length === 1);
    await beats.stop();
    await waitFor('fenced', () => reporterIn(stateDir, 'pg')?.state === 'fenced');
    assert.equal(await tcpTry(rig.cli, rig.srvV4, PORT), 'refused');
    const tried = await tcpTry(rig.srv, rig.cliV4, COORDINATOR);
    assert.equal(tried, 'ok', `not isolated: iptables cannot (${tried})`);
    assert.equal(said().length, 1, 'said once');
    await mon.stop();
  });
});

import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {beforeEach, describe, it} from 'node:test';
import type {TestContext} from 'node:test';

import {encodeMessage} from '../../src/heartbeat';
import {readSnapshot} from '../../src/state';
import {FifoWriter} from '../../src/transport';
import {clearEbsmon, ebsmonTable, fencedFor, foreignRules} from '../helpers/firewall';
import {HELPER, Proc, ebsmon, ebsmonOnce, reporterIn, scrubbedEnv, tcpTry} from '../helpers/proc';
import {LoopVolume, createNetRig, descendants, inNs, isRoot, processState, requireRoot, sh, waitFor} from '../helpers/rig';
import type {NetRig} from '../helpers/rig';
import {useScratch} from '../helpers/suite';

const PORT = 7000;
const PORTS = [7101, 7102, 7103, 7104, 7105, 7301, 7302, 7303];

/** The watcher's record of one port: every change of outcome, timestamped. */
type Seen = Array<{state: string, t: number}>;
const seen = (proc: Proc): Seen => proc.stdout.split('\n').filter(Boolean).map(line => JSON.parse(line) as {state: string, t: number});

describe('nftables: the kernel holds every deadline', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let rig: NetRig;
  let volume: LoopVolume;
  const scratch = useScratch(async ({dir, teardown, track, first}) => {
    rig = createNetRig(teardown);
    volume = LoopVolume.create(dir, teardown);
    first(() => volume.thaw());
    sh(['mkdir', path.join(volume.mountpoint, 'www')]);
    const server = track(new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, HELPER('server.mjs'), String(PORT), ...PORTS.map(String)], {stdio: ['ignore', 'pipe', 'pipe']})));
    await waitFor('the server', () => server.stdout.includes('listening'));
  });
  const {track} = scratch;
  beforeEach(() => {
    if (rig !== undefined)
      clearEbsmon(rig.srv);
  });

  const paths = (name: string) => {
    const stateDir = path.join(scratch.dir, name);
    return {stateDir, fifo: path.join(stateDir, 'ebsmon.fifo')};
  };
  const monitor = (stateDir: string, timeout = 2) => track(ebsmon(['monitor', '--firewall=nftables', `--fifo=${path.join(stateDir, 'ebsmon.fifo')}`, `--state-dir=${stateDir}`, `--timeout=${timeout}`, '--recover=2', '--log-level=debug'], {ns: rig.srv}));
  const ready = (proc: Proc) => waitFor('the monitor', () => proc.logs().some(l => l.message === 'monitor running'));
  const heartbeater = (fifo: string, name: string, port: number) => track(new Proc(spawn(process.execPath, [HELPER('heartbeater.mjs'), fifo, name, String(port), '200'], {stdio: ['ignore', 'pipe', 'pipe']})));
  const watcher = (port: number, host = rig.srvV4) => track(new Proc(spawn('ip', ['netns', 'exec', rig.cli, process.execPath, HELPER('watcher.mjs'), host, String(port)], {stdio: ['ignore', 'pipe', 'pipe']})));
  const stateOf = (stateDir: string, name: string) => reporterIn(stateDir, name)?.state;
  const pulseAge = (stateDir: string) => {
    try {
      return Date.now() - (readSnapshot(stateDir)?.monitor.writtenAt ?? 0);
    } catch {
      return Infinity;
    }
  };

  it('a SIGSTOPped monitor: the kernel fences at the deadline by itself; SIGCONT, and the monitor agrees', async (t: TestContext) => {
    requireRoot(t);
    const {stateDir, fifo} = paths('frozen-monitor');
    const mon = monitor(stateDir);
    await ready(mon);
    const reporter = track(ebsmon(['report', `--monitor=${path.join(volume.mountpoint, 'www')}`, `--ports=${PORT}`, `--fifo=${fifo}`, '--interval=0.2', '--probe-timeout=0.5', '--log-level=debug']));
    await waitFor('healthy', () => stateOf(stateDir, 'www') === 'healthy');
    // A remote client over IPv4 and one over IPv6: the kernel's deadline holds for both.
    const watches = {IPv4: watcher(PORT), IPv6: watcher(PORT, rig.srvV6)};
    await waitFor('the remote clients connecting', () => Object.values(watches).every(w => seen(w).at(-1)?.state === 'ok'));

    mon.kill('SIGSTOP');
    const stoppedAt = Date.now();
    await waitFor('the monitor stopped', () => processState(mon.pid) === 'T');
    volume.freeze();
    try {
      await waitFor('the remote clients refused', () => Object.values(watches).every(w => seen(w).at(-1)?.state === 'refused'));
      assert.equal(processState(mon.pid), 'T', 'fenced while the monitor was stopped: by the kernel alone');
      // The deadline runs from the last heartbeat the monitor re-armed before it stopped:
      // at most an interval (0.2 s) and a batch (0.1 s) before the stop.
      for (const [family, watch] of Object.entries(watches)) {
        const refusedAt = seen(watch).at(-1)!.t - stoppedAt;
        assert.ok(refusedAt >= 2_000 - 300 - 100, `${family}: not before the deadline: ${refusedAt} ms after the stop`);
        assert.ok(refusedAt < 4_000, `${family}: at the deadline, not whenever: ${refusedAt} ms after the stop`);
      }
      assert.equal(await tcpTry(rig.srv, '127.0.0.1', PORT), 'ok', 'loopback still reaches the service');
      assert.equal(await tcpTry(rig.srv, '::1', PORT), 'ok');

      mon.kill('SIGCONT');
      await waitFor('the monitor\'s own verdict', () => stateOf(stateDir, 'www') === 'fenced');
      const status = await ebsmonOnce(['status', `--state-dir=${stateDir}`, '--nagios']);
      assert.equal(status.code, 2);
      assert.match(status.stdout, /^CRITICAL: 1 of 1 reporters fenced \(www\)/);
    } finally {
      mon.kill('SIGCONT');
      volume.thaw();
    }
    await waitFor('healthy after the thaw', () => stateOf(stateDir, 'www') === 'healthy');
    await waitFor('the remote clients back', () => Object.values(watches).every(w => seen(w).at(-1)?.state === 'ok'));
    await reporter.stop();
    await mon.stop();
    assert.equal(mon.exitCode, 0);
  });

  it('kill -9 with 3 reporters fenced and 2 healthy: the successor never opens a fenced port nor fences a healthy one', async (t: TestContext) => {
    requireRoot(t);
    const {stateDir, fifo} = paths('kill9');
    const first = monitor(stateDir, 4);
    await ready(first);
    const ports = [7101, 7102, 7103, 7104, 7105];
    const beaters = ports.map((port, i) => heartbeater(fifo, `k${i + 1}`, port));
    await waitFor('all healthy', () => ports.every((_, i) => stateOf(stateDir, `k${i + 1}`) === 'healthy'));
    for (const beater of beaters.slice(0, 3))
      await beater.stop();
    await waitFor('three fenced', () => [1, 2, 3].every(i => stateOf(stateDir, `k${i}`) === 'fenced'));
    const watchers = ports.map(port => watcher(port));
    await waitFor('the watchers see the start state', () => watchers.every((w, i) => seen(w).at(-1)?.state === (i < 3 ? 'refused' : 'ok')));

    // The deadlines the first monitor leaves in the kernel: the successor must re-arm the healthy ones before they pass.
    const left = ebsmonTable(rig.srv);
    const killedAt = Date.now();
    first.kill('SIGKILL');
    await first.exited;
    const lastDeadline = killedAt + Math.max(...[7104, 7105].map(port => left?.alive.get(port)?.expiresS ?? 4) ) * 1000 + 1_000;
    const second = monitor(stateDir, 4);
    await ready(second);
    await waitFor('past every deadline the first monitor left, the healthy ports re-armed by the successor', () => Date.now() > lastDeadline
      && [7104, 7105].every(port => (ebsmonTable(rig.srv)?.alive.get(port)?.timeoutS ?? null) !== null), 30_000, 100);
    // A connect that times out is the server's listen backlog under a tight loop, not a verdict.
    for (const [i, w] of watchers.entries()) {
      const states = seen(w).map(s => s.state);
      if (i < 3)
        assert.ok(!states.includes('ok'), `k${i + 1} (fenced) never accepted a connection: ${states.join(',')}`);
      else
        assert.ok(!states.includes('refused'), `k${i + 1} (healthy) was never refused: ${states.join(',')}`);
    }
    assert.deepEqual(ports.map((_, i) => stateOf(stateDir, `k${i + 1}`)), ['fenced', 'fenced', 'fenced', 'healthy', 'healthy']);
    assert.ok(second.logs().some(l => /adopted 5 reporter/.test(String(l.message))));
    const table = ebsmonTable(rig.srv);
    assert.ok((table?.alive.get(7104)?.expiresS ?? Infinity) <= 4, 'the healthy ones are re-armed with a deadline');
    for (const w of [...watchers, ...beaters])
      await w.stop();
    await second.stop();
  });

  it('SIGTERM fences nothing: healthy ports stay open with no deadline, fenced ones stay fenced, the next monitor re-arms', async (t: TestContext) => {
    requireRoot(t);
    const {stateDir, fifo} = paths('sigterm');
    const first = monitor(stateDir);
    await ready(first);
    const up = heartbeater(fifo, 'up', 7104);
    const down = heartbeater(fifo, 'down', 7101);
    await waitFor('both healthy', () => stateOf(stateDir, 'up') === 'healthy' && stateOf(stateDir, 'down') === 'healthy');
    await down.stop();
    await waitFor('down fenced', () => stateOf(stateDir, 'down') === 'fenced');
    await first.stop();
    assert.equal(first.exitCode, 0, first.stderr.split('\n').filter(l => !/"debug"/.test(l)).slice(-30).join('\n'));
    assert.deepEqual(ebsmonTable(rig.srv)?.alive.get(7104), {timeoutS: null, expiresS: null}, 'open, no deadline');
    assert.equal(ebsmonTable(rig.srv)?.alive.has(7101), false, 'still fenced');
    const watch = watcher(7104);
    await waitFor('up reachable', () => seen(watch).at(-1)?.state === 'ok');
    await up.stop();
    // Past the deadline its last heartbeat would have had (--timeout, 2 s): a stopped monitor fences nothing.
    const deadline = Date.now() + 2_000 + 500;
    await waitFor('past the last heartbeat\'s deadline', () => Date.now() > deadline, 10_000, 100);
    assert.equal(await tcpTry(rig.cli, rig.srvV4, 7104), 'ok', 'a connect after the deadline');
    assert.equal(await tcpTry(rig.cli, rig.srvV6, 7104), 'ok');
    // A fence answers with a reset (refused); a connect that times out is the listen backlog of a loaded machine.
    const states = seen(watch).map(s => s.state);
    assert.ok(!states.includes('refused'), `never refused: ${states.join(',')}`);

    const second = monitor(stateDir);
    await ready(second);
    const again = heartbeater(fifo, 'up', 7104);
    await waitFor('re-armed by the next monitor', () => (ebsmonTable(rig.srv)?.alive.get(7104)?.timeoutS ?? null) !== null);
    assert.equal(stateOf(stateDir, 'down'), 'fenced');
    await again.stop();
    await watch.stop();
    await second.stop();
  });

  it('flush ruleset and a deleted table behind its back: every fence and deadline is back at once; a foreign accept cannot bypass a fence', async (t: TestContext) => {
    requireRoot(t);
    const {stateDir, fifo} = paths('flush');
    const mon = monitor(stateDir);
    await ready(mon);
    const up = heartbeater(fifo, 'alive1', 7104);
    const once = heartbeater(fifo, 'dead1', 7101);
    await waitFor('both known', () => stateOf(stateDir, 'alive1') === 'healthy' && stateOf(stateDir, 'dead1') === 'healthy');
    await once.stop();
    await waitFor('dead1 fenced', () => stateOf(stateDir, 'dead1') === 'fenced' && fencedFor('nftables', rig.srv, 'dead1', 7101));

    // An accept in a base chain that runs first (priority -100) ends only that chain: ours still rejects.
    sh(inNs(rig.srv, ['nft', '-f', '-']), {input: 'table inet foreign {\n chain early {\n  type filter hook input priority -100; policy accept;\n  tcp dport 7101 accept\n }\n}\n'});
    const before0 = foreignRules('nftables', rig.srv);
    assert.equal(await tcpTry(rig.cli, rig.srvV4, 7101), 'refused');
    assert.equal(await tcpTry(rig.cli, rig.srvV4, 7104), 'ok');
    assert.equal(foreignRules('nftables', rig.srv), before0);

    for (const [what, argv] of [['flush ruleset', ['nft', 'flush', 'ruleset']], ['delete table', ['nft', 'delete', 'table', 'inet', 'ebsmon']]] as const) {
      const logged = mon.logs().filter(l => /deleted behind/.test(String(l.message))).length;
      sh(inNs(rig.srv, [...argv]));
      await waitFor(`the table back after ${what}`, () => fencedFor('nftables', rig.srv, 'dead1', 7101) && (ebsmonTable(rig.srv)?.alive.get(7104)?.expiresS ?? Infinity) <= 2);
      await waitFor(`${what} noticed in the log`, () => mon.logs().filter(l => /deleted behind/.test(String(l.message))).length > logged);
      assert.equal(await tcpTry(rig.cli, rig.srvV4, 7101), 'refused');
      assert.equal(await tcpTry(rig.cli, rig.srvV4, 7104), 'ok');
    }

    // Our rule removed from inside our table: the periodic read-back (at least every 10 s) repairs it.
    sh(inNs(rig.srv, ['nft', 'flush', 'chain', 'inet', 'ebsmon', 'input']));
    await waitFor('the rule back', () => ebsmonTable(rig.srv)?.ruleIn.has('input') === true, 15_000);
    assert.equal(await tcpTry(rig.cli, rig.srvV4, 7101), 'refused');
    await waitFor('the repair logged', () => mon.logs().some(l => /changed behind its back/.test(String(l.message))));
    await up.stop();
    await mon.stop();
  });

  it('a table deleted behind its back is back within a second by nft monitor alone: no heartbeat arriving, the read-back an hour away', async (t: TestContext) => {
    requireRoot(t);
    const {stateDir, fifo} = paths('watcher');
    // From source: the command line has no setting for the read-back (10 s), which would also repair the table.
    const mon = track(new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, '--import', 'tsx', HELPER('monitor-source.ts'), String(3_600_000), fifo, stateDir, '2'], {stdio: ['ignore', 'pipe', 'pipe'], env: scrubbedEnv()})));
    await ready(mon);
    // One heartbeat each, then silence: gone is fenced at its deadline, held is opened by hand (no deadline). After
    // that nothing re-arms, so no failed re-arm can notice the missing table either.
    const writer = new FifoWriter(fifo);
    for (const [name, port] of [['gone', 7102], ['held', 7103]] as const)
      assert.ok(writer.send(encodeMessage({v: 1, kind: 'heartbeat', name, pid: 4242, ports: [port], interval: 1, probeTimeout: 0.5, seq: 1, sentAt: Date.now(), probeMs: 1})).ok);
    writer.close();
    await waitFor('both fenced', () => fencedFor('nftables', rig.srv, 'gone', 7102) && fencedFor('nftables', rig.srv, 'held', 7103));
    const unblocked = await ebsmonOnce(['unblock', '--reporter=held', `--fifo=${fifo}`, `--state-dir=${stateDir}`]);
    assert.equal(unblocked.code, 0, unblocked.stderr);
    const restored = () => fencedFor('nftables', rig.srv, 'gone', 7102) && ebsmonTable(rig.srv)?.alive.get(7103)?.timeoutS === null;
    await waitFor('held open', restored);

    for (const [what, argv] of [['delete table', ['nft', 'delete', 'table', 'inet', 'ebsmon']], ['flush ruleset', ['nft', 'flush', 'ruleset']]] as const) {
      const logged = mon.logs().filter(l => /deleted behind/.test(String(l.message))).length;
      const deletedAt = performance.now();
      sh(inNs(rig.srv, [...argv]));
      await waitFor(`the table back within 1 s of ${what}`, restored, 1_000, 10);
      t.diagnostic(`${what}: table inet ebsmon back ${Math.round(performance.now() - deletedAt)} ms later`);
      await waitFor(`${what} noticed in the log`, () => mon.logs().filter(l => /deleted behind/.test(String(l.message))).length > logged);
      assert.equal(await tcpTry(rig.cli, rig.srvV4, 7102), 'refused');
      assert.equal(await tcpTry(rig.cli, rig.srvV6, 7102), 'refused');
      assert.equal(await tcpTry(rig.cli, rig.srvV4, 7103), 'ok');
      assert.equal(await tcpTry(rig.cli, rig.srvV6, 7103), 'ok');
    }
    await mon.stop();
    assert.equal(mon.exitCode, 0);
  });

  it('a killed writer and a hung writer are replaced; fences land meanwhile; the pulse never stops', async (t: TestContext) => {
    requireRoot(t);
    const {stateDir, fifo} = paths('writer');
    const mon = monitor(stateDir);
    await ready(mon);
    const writers = () => descendants(mon.pid).filter(pid => /^nft\0-i\0/.test(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')));
    const first = writers();
    assert.equal(first.length, 1, 'one long-lived nft -i');

    const victim = heartbeater(fifo, 'w0', 7301);
    await waitFor('w0 healthy', () => stateOf(stateDir, 'w0') === 'healthy');
    process.kill(first[0]!, 'SIGKILL');
    await victim.stop();
    await waitFor('w0 refused (the kernel\'s deadline)', async () => await tcpTry(rig.cli, rig.srvV4, 7301) === 'refused');
    await waitFor('w0 fenced', () => stateOf(stateDir, 'w0') === 'fenced');
    const beat1 = heartbeater(fifo, 'w1', 7302);
    await waitFor('a new writer guards w1', () => ebsmonTable(rig.srv)?.guarded.has(7302) === true);
    const second = writers();
    assert.equal(second.length, 1);
    assert.notEqual(second[0], first[0]);

    process.kill(second[0]!, 'SIGSTOP');
    let worstPulse = 0;
    const beat2 = heartbeater(fifo, 'w2', 7303);
    await waitFor('the hung writer replaced, w2 guarded', () => {
      worstPulse = Math.max(worstPulse, pulseAge(stateDir));
      return ebsmonTable(rig.srv)?.guarded.has(7303) === true;
    }, 30_000, 50);
    assert.ok(worstPulse < 3_000, `the pulse kept going (worst age ${worstPulse} ms)`);
    await waitFor('the hung writer killed', () => processState(second[0]!) === null);
    await waitFor('the replacement logged', () => mon.logs().some(l => /stopped answering; starting a new one/.test(String(l.message))));
    assert.equal(writers().length, 1);
    await beat1.stop();
    await beat2.stop();
    await mon.stop();
  });
});

import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import path from 'node:path';
import {beforeEach, describe, it} from 'node:test';
import type {TestContext} from 'node:test';

import {BACKENDS, clearEbsmon, fencedFor} from '../helpers/firewall';
import {HELPER, Proc, ebsmon, ebsmonOnce, reporterIn, tcpTry} from '../helpers/proc';
import {LoopVolume, createNetRig, isRoot, processState, requireRoot, sh, waitFor} from '../helpers/rig';
import type {NetRig} from '../helpers/rig';
import {useScratch} from '../helpers/suite';

/**
 * The kernel's word wins at every stop: a port whose deadline has run out in
 * the kernel is never opened again by a monitor that stops (SIGTERM), wakes
 * from a SIGSTOP with heartbeats waiting in its FIFO, or both at once.
 */
const PORT = 7401;
const SHARED = 7402;
const OWN = 7403;

type Seen = Array<{state: string, t: number}>;
const seen = (proc: Proc): Seen => proc.stdout.split('\n').filter(Boolean).map(line => JSON.parse(line) as {state: string, t: number});
/** Every connection the watcher saw accepted after `from` (wall ms): a reopening, when the disk is still frozen. */
const acceptedSince = (proc: Proc, from: number) => seen(proc).filter(s => s.state === 'ok' && s.t >= from);

for (const backend of BACKENDS) {
  describe(`${backend}: a stop never opens a port whose deadline has run out`, {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
    let rig: NetRig;
    let volume: LoopVolume;
    const scratch = useScratch(async ({dir, teardown, track, first}) => {
      rig = createNetRig(teardown);
      volume = LoopVolume.create(dir, teardown);
      first(() => volume.thaw());
      sh(['mkdir', path.join(volume.mountpoint, 'db')]);
      const server = track(new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, HELPER('server.mjs'), String(PORT), String(SHARED), String(OWN)], {stdio: ['ignore', 'pipe', 'pipe']})));
      await waitFor('the server', () => server.stdout.includes('listening'));
    });
    const {track} = scratch;
    beforeEach(() => {
      if (rig !== undefined)
        clearEbsmon(rig.srv);
    });
    const dirs = (name: string) => {
      const stateDir = path.join(scratch.dir, `${backend}-${name}`);
      return {stateDir, fifo: path.join(stateDir, 'ebsmon.fifo')};
    };
    const monitor = (stateDir: string) => track(ebsmon(['monitor', `--firewall=${backend}`, `--fifo=${path.join(stateDir, 'ebsmon.fifo')}`, `--state-dir=${stateDir}`, '--timeout=2', '--recover=2', '--log-level=debug'], {ns: rig.srv}));
    const ready = (proc: Proc) => waitFor('the monitor', () => proc.logs().some(l => l.message === 'monitor running'));
    const reporter = (fifo: string) => track(ebsmon(['report', `--monitor=${path.join(volume.mountpoint, 'db')}`, `--ports=${PORT}`, `--fifo=${fifo}`, '--interval=0.2', '--probe-timeout=0.5']));
    const watcher = () => track(new Proc(spawn('ip', ['netns', 'exec', rig.cli, process.execPath, HELPER('watcher.mjs'), rig.srvV4, String(PORT)], {stdio: ['ignore', 'pipe', 'pipe']})));
    const stateOf = (stateDir: string) => reporterIn(stateDir, 'db')?.state;
    const refused = (watch: Proc) => seen(watch).at(-1)?.state === 'refused';
    const accepting = (watch: Proc) => seen(watch).at(-1)?.state === 'ok';

    it('SIGTERM the moment the port refuses, 10 times: it still refuses after the monitor has gone, and the next monitor lifts it only once the disk answers', {timeout: 240_000}, async (t: TestContext) => {
      requireRoot(t);
      const {stateDir, fifo} = dirs('sigterm');
      const report = reporter(fifo);
      const watch = watcher();
      const reopenings: Array<string> = [];
      const untrue: Array<string> = [];
      for (let cycle = 1; cycle <= 10; cycle++) {
        const mon = monitor(stateDir);
        await ready(mon);
        await waitFor(`cycle ${cycle}: healthy`, () => stateOf(stateDir) === 'healthy' && accepting(watch));
        volume.freeze();
        try {
          await waitFor(`cycle ${cycle}: the port refused`, () => refused(watch), 15_000, 5);
          mon.kill('SIGTERM');
          const stoppedAt = Date.now();
          await mon.exited;
          assert.equal(mon.exitCode, 0, mon.stderr.slice(-2000));
          // Half a second past the stop and past the monitor's exit, the disk still frozen.
          const until = Math.max(Date.now(), stoppedAt + 500);
          await waitFor('half a second', () => Date.now() > until, 5_000, 20);
          const after = acceptedSince(watch, stoppedAt);
          if (after.length > 0 || !refused(watch))
            reopenings.push(`cycle ${cycle}: accepted ${after.length} time(s) after the stop`);
          if (stateOf(stateDir) !== 'fenced')
            untrue.push(`cycle ${cycle}: the last snapshot says ${stateOf(stateDir)}`);
          if (!/db: left fenced: its deadline ran out at /.test(mon.stderr))
            untrue.push(`cycle ${cycle}: no "left fenced" in its log`);
        } finally {
          volume.thaw();
        }
      }
      assert.deepEqual(reopenings, [], 'zero reopenings');
      assert.deepEqual(untrue, [], 'the snapshot and the log say what the kernel holds');
      const last = monitor(stateDir);
      await ready(last);
      await waitFor('healthy again under a new monitor', () => stateOf(stateDir) === 'healthy' && accepting(watch));
      await last.stop();
      assert.match(last.stderr, /db: left open without a deadline/);
      await report.stop();
      await watch.stop();
    });

    // The kernel's deadline and the FIFO backlog are nftables' (iptables fences only while the monitor runs).
    if (backend === 'nftables') {
      it('SIGSTOP, heartbeats pile up in the FIFO, the disk freezes, the kernel fences; SIGCONT: never accepted while frozen', {timeout: 120_000}, async (t: TestContext) => {
        requireRoot(t);
        const {stateDir, fifo} = dirs('backlog');
        const mon = monitor(stateDir);
        await ready(mon);
        const report = reporter(fifo);
        const watch = watcher();
        const reopenings: Array<string> = [];
        for (let round = 1; round <= 3; round++) {
          await waitFor(`round ${round}: healthy`, () => stateOf(stateDir) === 'healthy' && accepting(watch));
          mon.kill('SIGSTOP');
          await waitFor('the monitor stopped', () => processState(mon.pid) === 'T');
          // Heartbeats the reporter proves meanwhile wait in the FIFO: the backlog.
          const proven = Date.now() + 600;
          await waitFor('a backlog of heartbeats', () => Date.now() > proven, 5_000, 20);
          volume.freeze();
          try {
            await waitFor(`round ${round}: the kernel fences`, () => refused(watch), 15_000, 5);
            const contAt = Date.now();
            mon.kill('SIGCONT');
            const until = contAt + 4_000;
            await waitFor('4 s after SIGCONT', () => Date.now() > until, 10_000, 20);
            const after = acceptedSince(watch, contAt);
            if (after.length > 0)
              reopenings.push(`round ${round}: accepted ${after.length} time(s) after SIGCONT`);
            assert.equal(stateOf(stateDir), 'fenced', `round ${round}: the monitor agrees with the kernel`);
            const status = await ebsmonOnce(['status', `--state-dir=${stateDir}`, '--nagios']);
            assert.equal(status.code, 2, status.stdout);
          } finally {
            mon.kill('SIGCONT');
            volume.thaw();
          }
          await waitFor(`round ${round}: healthy after the thaw`, () => stateOf(stateDir) === 'healthy' && accepting(watch));
        }
        assert.deepEqual(reopenings, [], 'zero reopenings');
        assert.ok(mon.logs().some(l => /sent before its fence began/.test(String(l.message))), 'the backlog was read, and refused as proof');
        await report.stop();
        await watch.stop();
        await mon.stop();
      });

      it('SIGSTOP with a backlog, the kernel fences, then SIGCONT and SIGTERM together: left fenced', {timeout: 120_000}, async (t: TestContext) => {
        requireRoot(t);
        const {stateDir, fifo} = dirs('backlog-term');
        const report = reporter(fifo);
        const watch = watcher();
        const reopenings: Array<string> = [];
        for (let round = 1; round <= 3; round++) {
          const mon = monitor(stateDir);
          await ready(mon);
          await waitFor(`round ${round}: healthy`, () => stateOf(stateDir) === 'healthy' && accepting(watch));
          mon.kill('SIGSTOP');
          await waitFor('the monitor stopped', () => processState(mon.pid) === 'T');
          const proven = Date.now() + 600;
          await waitFor('a backlog of heartbeats', () => Date.now() > proven, 5_000, 20);
          volume.freeze();
          try {
            await waitFor(`round ${round}: the kernel fences`, () => refused(watch), 15_000, 5);
            const contAt = Date.now();
            mon.kill('SIGTERM');
            mon.kill('SIGCONT');
            await mon.exited;
            assert.equal(mon.exitCode, 0, mon.stderr.slice(-2000));
            const until = Math.max(Date.now(), contAt + 500);
            await waitFor('half a second', () => Date.now() > until, 5_000, 20);
            if (acceptedSince(watch, contAt).length > 0 || !refused(watch))
              reopenings.push(`round ${round}: accepted after the stop`);
            assert.equal(stateOf(stateDir), 'fenced');
          } finally {
            mon.kill('SIGCONT');
            volume.thaw();
          }
        }
        assert.deepEqual(reopenings, [], 'zero reopenings');
        const last = monitor(stateDir);
        await ready(last);
        await waitFor('healthy again under a new monitor', () => stateOf(stateDir) === 'healthy' && accepting(watch));
        await last.stop();
        await report.stop();
        await watch.stop();
      });

      it('a monitor that finds no snapshot keeps every fence the kernel holds, under the name the kernel records, until the disk answers', {timeout: 120_000}, async (t: TestContext) => {
        requireRoot(t);
        const {stateDir, fifo} = dirs('lost-snapshot');
        const first = monitor(stateDir);
        await ready(first);
        const report = reporter(fifo);
        const watch = watcher();
        await waitFor('healthy', () => stateOf(stateDir) === 'healthy' && accepting(watch));
        volume.freeze();
        try {
          await waitFor('fenced', () => stateOf(stateDir) === 'fenced' && refused(watch));
          first.kill('SIGKILL');
          await first.exited;
          sh(['rm', '-f', path.join(stateDir, 'state.json')]);
          const from = Date.now();
          const second = monitor(stateDir);
          await ready(second);
          assert.match(second.stderr, /port\(s\) 7401 in the firewall have no reporter in the previous snapshot: adopted as the kernel holds them/);
          assert.equal(stateOf(stateDir), 'fenced');
          const until = Date.now() + 1_000;
          await waitFor('a second under the new monitor', () => Date.now() > until, 5_000, 20);
          assert.deepEqual(acceptedSince(watch, from), [], 'never opened while frozen');
          volume.thaw();
          await waitFor('healthy once the disk answers', () => stateOf(stateDir) === 'healthy' && accepting(watch));
          await second.stop();
        } finally {
          volume.thaw();
        }
        await report.stop();
        await watch.stop();
      });

      it('unblock with no monitor opens the named reporter\'s own ports, and a shared one only once every reporter guarding it is overridden', {timeout: 120_000}, async (t: TestContext) => {
        requireRoot(t);
        const {stateDir, fifo} = dirs('unblock-shared');
        const mon = monitor(stateDir);
        await ready(mon);
        const beat = (name: string, ports: string) => track(new Proc(spawn(process.execPath, [HELPER('heartbeater.mjs'), fifo, name, ports, '200'], {stdio: ['ignore', 'pipe', 'pipe']})));
        const a = beat('a', String(SHARED));
        const b = beat('b', `${SHARED},${OWN}`);
        await waitFor('both healthy', () => reporterIn(stateDir, 'a')?.state === 'healthy' && reporterIn(stateDir, 'b')?.state === 'healthy');
        await b.stop();
        await waitFor('b fenced', () => reporterIn(stateDir, 'b')?.state === 'fenced' && fencedFor('nftables', rig.srv, 'b', OWN));
        // The monitor dies while a is healthy; then a stops too: its deadline runs out in the kernel alone.
        mon.kill('SIGKILL');
        await mon.exited;
        await a.stop();
        await waitFor('the kernel fences the shared port', async () => await tcpTry(rig.cli, rig.srvV4, SHARED) === 'refused');
        assert.equal(reporterIn(stateDir, 'a')?.state, 'healthy', 'the last snapshot still calls a healthy');
        const unblock = (name: string) => ebsmonOnce(['unblock', `--reporter=${name}`, `--fifo=${fifo}`, `--state-dir=${stateDir}`], {ns: rig.srv});
        const one = await unblock('b');
        assert.equal(one.code, 0, one.stderr);
        assert.equal(one.stdout, `no monitor running: opened b's port(s) ${OWN} in table inet ebsmon (no deadline until the next monitor re-arms them)\n`
          + `left port(s) ${SHARED} as the kernel holds them: other reporters guard them too, and with no monitor nothing has proven their disks (unblock those too, or start the monitor)\n`);
        assert.equal(await tcpTry(rig.cli, rig.srvV4, OWN), 'ok');
        assert.equal(await tcpTry(rig.cli, rig.srvV4, SHARED), 'refused');
        const two = await unblock('a');
        assert.equal(two.code, 0, two.stderr);
        assert.equal(two.stdout, `no monitor running: opened a's port(s) ${SHARED} in table inet ebsmon (no deadline until the next monitor re-arms them)\n`);
        assert.equal(await tcpTry(rig.cli, rig.srvV4, SHARED), 'ok');
        assert.deepEqual([reporterIn(stateDir, 'a')?.state, reporterIn(stateDir, 'b')?.state], ['overridden', 'overridden']);
      });
    }
  });
}

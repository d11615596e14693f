import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {after, before, describe, it} from 'node:test';
import type {TestContext} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {countLogged, listen, logged} from '../helpers/listen';
import {ebsmon} from '../helpers/proc';
import type {Proc} from '../helpers/proc';
import {LoopVolume, Teardown, descendants, isRoot, requireRoot, sh, waitFor} from '../helpers/rig';

/** Probe children below the reporter (they are its spawn helper's children): perl processes in its tree. */
const probeChildren = (pid: number) => descendants(pid).filter(child => {
  try {
    return fs.readFileSync(`/proc/${child}/comm`, 'utf8').trim() === 'perl';
  } catch {
    return false;
  }
}).length;

describe('ebsmon report on a real loop-mounted ext4 volume', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let dir: string;
  let cleanupDir: () => Promise<void>;
  let teardown: Teardown;
  let volume: LoopVolume;
  const procs: Array<Proc> = [];

  before(async () => {
    ({path: dir, cleanup: cleanupDir} = await tmpDir({unsafeCleanup: true}));
    teardown = new Teardown(dir);
    volume = LoopVolume.create(dir, teardown);
    sh(['mkdir', path.join(volume.mountpoint, 'mysql')]);
  });

  after(async () => {
    volume?.thaw();
    for (const proc of procs)
      await proc.stop();
    teardown?.dispose();
    await cleanupDir?.();
  });

  const report = (fifo: string, extra: Array<string> = []) => {
    const proc = ebsmon(['report', `--monitor=${path.join(volume.mountpoint, 'mysql')}`, '--ports=3306', `--fifo=${fifo}`, '--interval=0.2', '--probe-timeout=1', '--log-level=debug', ...extra]);
    procs.push(proc);
    return proc;
  };

  it('heartbeats at the interval, stops while frozen with one probe process at most, and resumes after thaw', async (t: TestContext) => {
    requireRoot(t);
    const fifo = path.join(dir, 'hang.fifo');
    const monitor = listen(fifo);
    const reporter = report(fifo);
    try {
      await waitFor('3 heartbeats', () => monitor.beats().length >= 3);
      const seqs = monitor.beats().map(b => b.seq);
      assert.ok(seqs.every((s, i) => i === 0 || s === seqs[i - 1]! + 1), `sequence increases: ${seqs.join(',')}`);
      assert.equal(monitor.beats()[0]!.name, 'mysql');
      assert.deepEqual(monitor.beats()[0]!.ports, [3306]);

      volume.freeze();
      try {
        await waitFor('the probe to time out', () => logged(reporter, /^failing: probe of \S+\/mysql timed out after 1\.0 s/)).catch(e => { console.error(reporter.stderr.slice(-3000)); throw e; });
        const stoppedAt = monitor.beats().length;
        // Twenty more ticks (an interval each) with the probe stuck: each one logs that it starts no other.
        const ticks = () => countLogged(reporter, /^previous probe process still exists/);
        const ticked = ticks();
        let most = 0;
        await waitFor('twenty ticks with the probe stuck', () => {
          most = Math.max(most, probeChildren(reporter.pid));
          return ticks() >= ticked + 20;
        }, 30_000, 100);
        assert.equal(monitor.beats().length, stoppedAt, 'no heartbeat while frozen');
        assert.equal(most, 1, 'exactly one probe process, stuck, for the whole freeze');
        assert.ok(reporter.running);
      } finally {
        volume.thaw();
      }
      const resumedFrom = monitor.beats().length;
      await waitFor('heartbeats after thaw', () => monitor.beats().length >= resumedFrom + 2);
      assert.ok(logged(reporter, /^healthy again: heartbeats resume/));
    } finally {
      await reporter.stop();
      monitor.close();
    }
  });

  it('stops on a read-only remount, names EROFS, and resumes on rw', async (t: TestContext) => {
    requireRoot(t);
    const fifo = path.join(dir, 'ro.fifo');
    const monitor = listen(fifo);
    const reporter = report(fifo);
    try {
      await waitFor('a heartbeat', () => monitor.beats().length >= 1);
      volume.remount('ro');
      try {
        await waitFor('EROFS in the log', () => logged(reporter, /EROFS: read-only file system/));
        const count = monitor.beats().length;
        await waitFor('two more failed probes', () => reporter.logs().filter(l => /^still failing: probe of \S+\/mysql failed: open: EROFS/.test(String(l.message))).length >= 2);
        assert.equal(monitor.beats().length, count);
        assert.ok(reporter.running);
      } finally {
        volume.remount('rw');
      }
      const count = monitor.beats().length;
      await waitFor('heartbeats after rw', () => monitor.beats().length >= count + 2);
    } finally {
      await reporter.stop();
      monitor.close();
    }
  });

  it('SIGTERM while frozen: exits (reaped) within 2 s and sends no goodbye', async (t: TestContext) => {
    requireRoot(t);
    const fifo = path.join(dir, 'term.fifo');
    const monitor = listen(fifo);
    const reporter = report(fifo);
    try {
      await waitFor('a heartbeat', () => monitor.beats().length >= 1);
      volume.freeze();
      try {
        await waitFor('the probe to time out', () => logged(reporter, /^failing: probe of/));
        const started = Date.now();
        reporter.kill('SIGTERM');
        await Promise.race([reporter.exited, new Promise(resolve => setTimeout(resolve, 2000))]);
        assert.equal(reporter.running, false, `exited within 2 s (took ${Date.now() - started} ms)`);
        assert.equal(reporter.exitCode, 0);
        assert.equal(sh(['ps', '-o', 'stat=', '-p', String(reporter.pid)], {allowFail: true}).trim(), '', 'no zombie left');
        assert.ok(!monitor.messages.some(m => m.kind === 'goodbye'), 'no goodbye from a failing reporter');
      } finally {
        volume.thaw();
      }
    } finally {
      monitor.close();
    }
  });

  it('SIGTERM while healthy sends a goodbye', async (t: TestContext) => {
    requireRoot(t);
    const fifo = path.join(dir, 'bye.fifo');
    const monitor = listen(fifo);
    const reporter = report(fifo);
    try {
      await waitFor('a heartbeat', () => monitor.beats().length >= 1);
      reporter.kill('SIGTERM');
      await reporter.exited;
      assert.equal(reporter.exitCode, 0);
      await waitFor('the goodbye', () => monitor.messages.find(m => m.kind === 'goodbye'));
      assert.deepEqual(monitor.messages.find(m => m.kind === 'goodbye'), {v: 1, kind: 'goodbye', name: 'mysql', pid: reporter.pid});
    } finally {
      monitor.close();
    }
  });

  it('keeps probing with no monitor, and delivers once one appears', async (t: TestContext) => {
    requireRoot(t);
    const fifo = path.join(dir, 'late', 'ebsmon.fifo');
    const reporter = report(fifo);
    try {
      await waitFor('the no-monitor warning', () => logged(reporter, /heartbeat dropped: .*does not exist/));
      sh(['mkdir', '-p', path.dirname(fifo)]);
      const monitor = listen(fifo);
      try {
        await waitFor('heartbeats to arrive', () => monitor.beats().length >= 2);
        assert.ok(logged(reporter, /monitor reachable again/));
      } finally {
        monitor.close();
      }
    } finally {
      await reporter.stop();
    }
  });

  it('exits 1 with a clear message when --monitor is missing or not a directory', async () => {
    const missing = ebsmon(['report', '--monitor=/nonexistent/ebsmon-test', '--ports=80']);
    await missing.exited;
    assert.equal(missing.exitCode, 1);
    assert.match(missing.stderr, /--monitor=\/nonexistent\/ebsmon-test: no such directory/);
    const file = ebsmon(['report', '--monitor=/etc/hostname', '--ports=80']);
    await file.exited;
    assert.equal(file.exitCode, 1);
    assert.match(file.stderr, /not a directory/);
  });
});

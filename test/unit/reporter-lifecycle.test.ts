import assert from 'node:assert/strict';
import {describe, it} from 'node:test';

import {initialLife, step} from '../../src/reporter';
import type {Effect, Finding, Life, LifeEvent} from '../../src/reporter';

/**
 * The reporter's decisions with a clock the test moves and probers the test
 * plays: every probe result, exit and tick is an event the test writes, and
 * every decision is an effect it reads.
 */
class Run {
  life: Life;
  now = 0;
  effects: Array<Effect> = [];

  constructor(rejoin: 'auto' | 'manual' | 'program' = 'auto') {
    this.life = initialLife({name: 'mysql', reminderMs: 60_000, rejoin});
  }

  on(event: LifeEvent, at = this.now): Array<Effect> {
    this.now = at;
    const next = step(this.life, event, at);
    this.life = next.life;
    this.effects.push(...next.effects);
    return next.effects;
  }

  tick(at: number, fields: Partial<Extract<LifeEvent, {type: 'tick'}>> = {}): Array<Effect> {
    return this.on({type: 'tick', mounts: new Map(), ...fields}, at);
  }

  /** The prober of `path` answers its request in flight. */
  answer(path: string, at: number, outcome: {ok: true, ms?: number} | {ok: false, code: string, reason: string}, extra: {finding?: Finding, mount?: {code: 'EMOUNTGONE', reason: string}} = {}): Array<Effect> {
    const prober = this.life.paths.get(path)!.prober;
    assert.equal(prober.state, 'probing', `${path} has a request in flight`);
    const id = prober.state === 'probing' ? prober.id : 0;
    return this.on({type: 'probe-result', path, prober: id, outcome: outcome.ok ? {ok: true, ms: outcome.ms ?? 1.5} : {...outcome, ms: 1}, ...extra}, at);
  }
}

const kinds = (effects: Array<Effect>) => effects.filter(e => e.type !== 'log').map(e => e.type === 'probe' ? `probe ${e.path}` : e.type === 'start-prober' ? `start ${e.path}` : e.type === 'run-check' ? `check ${e.text}` : e.type);
const logs = (effects: Array<Effect>, level?: string) => effects.flatMap(e => (e.type === 'log' && (level === undefined || e.level === level) ? [e.message] : []));
const said = (effects: Array<Effect>) => effects.flatMap(e => (e.type === 'failing' ? [e.reason] : []));
const beats = (effects: Array<Effect>) => effects.flatMap(e => (e.type === 'heartbeat' ? [e.seq] : []));

/** Two watched paths and a check, started and proven once. */
function healthy(rejoin: 'auto' | 'manual' | 'program' = 'auto'): Run {
  const run = new Run(rejoin);
  run.on({type: 'watch', path: '/var/lib/mysql', dir: '/var/lib/mysql'});
  run.on({type: 'watch', path: '/var/lib/binlog', dir: '/srv/binlog'});
  run.on({type: 'add-check', text: 'mysqladmin ping'});
  assert.deepEqual(kinds(run.tick(0)), ['start /var/lib/mysql', 'probe /var/lib/mysql', 'start /var/lib/binlog', 'probe /var/lib/binlog', 'check mysqladmin ping']);
  run.answer('/var/lib/mysql', 3, {ok: true, ms: 2});
  run.answer('/var/lib/binlog', 4, {ok: true, ms: 3.333});
  const last = run.on({type: 'check-result', text: 'mysqladmin ping', outcome: {ok: true, ms: 9}}, 10);
  run.on({type: 'check-exited', text: 'mysqladmin ping'}, 10);
  assert.deepEqual(run.effects.filter(e => e.type === 'heartbeat'), [{type: 'heartbeat', seq: 1, probeMs: 3.33}]);
  assert.deepEqual(logs(last, 'info'), ['healthy: sending heartbeats']);
  return run;
}

const frozen: Finding = {head: 'probe of /var/lib/mysql timed out after 3.0 s', evidence: 'nvme1n1 idle: no requests in flight, none completed for 3.0 s: the filesystem is blocking writes above the device (frozen?)', key: 'probe of /var/lib/mysql timed out after 3.0 s|idle'};

describe('the reporter\'s lifecycle: one pure step', () => {
  it('healthy: one heartbeat a round, only once every path and the check passed with a run started after the last one; probers stay resident', () => {
    const run = healthy();
    assert.equal(run.life.health.state, 'healthy');
    const round = run.tick(1000);
    assert.deepEqual(kinds(round), ['probe /var/lib/mysql', 'probe /var/lib/binlog', 'check mysqladmin ping'], 'no new prober: the same ones are asked again');
    assert.deepEqual(beats(run.answer('/var/lib/mysql', 1002, {ok: true})), []);
    assert.deepEqual(beats(run.answer('/var/lib/binlog', 1003, {ok: true})), [], 'the check of this round has not answered yet');
    assert.deepEqual(beats(run.on({type: 'check-result', text: 'mysqladmin ping', outcome: {ok: true, ms: 5}}, 1009)), [2]);
    assert.equal(logs(run.effects, 'debug').filter(m => m === 'probe passed').length, 4);
  });

  it('failing, with the reason: said once as an error, once a tick as a word to the monitor, no heartbeat; healthy again when it passes', () => {
    const run = healthy();
    run.tick(1000);
    run.on({type: 'check-result', text: 'mysqladmin ping', outcome: {ok: true, ms: 5}}, 1001);
    run.on({type: 'check-exited', text: 'mysqladmin ping'}, 1001);
    run.answer('/var/lib/binlog', 1002, {ok: true});
    const eio: Finding = {head: 'probe of /var/lib/mysql failed: write: EIO: input/output error', evidence: 'nvme1n1 answered with an error: 0 requests in flight, 3 completed in the last 5.0 s', key: 'probe of /var/lib/mysql failed: write: EIO: input/output error|errors'};
    const first = run.answer('/var/lib/mysql', 1003, {ok: false, code: 'EIO', reason: 'write: EIO: input/output error'}, {finding: eio});
    const reason = 'probe of /var/lib/mysql failed: write: EIO: input/output error; nvme1n1 answered with an error: 0 requests in flight, 3 completed in the last 5.0 s';
    assert.deepEqual(said(first), [reason]);
    assert.deepEqual(logs(first, 'error'), [`failing: ${reason}; no heartbeat until it passes`]);
    assert.deepEqual(beats(first), []);

    const from = run.effects.length;
    run.tick(2000);
    // The first answer of the round finds the path still failing: the word goes then, once.
    assert.deepEqual(said(run.answer('/var/lib/binlog', 2001, {ok: true})), [reason]);
    const again = run.answer('/var/lib/mysql', 2002, {ok: false, code: 'EIO', reason: 'write: EIO: input/output error'}, {finding: eio});
    assert.deepEqual(logs(again, 'error'), [], 'the same thing wrong is not an error again');
    assert.deepEqual(logs(again, 'debug'), [`still failing: ${reason}`]);
    assert.deepEqual(logs(run.on({type: 'check-result', text: 'mysqladmin ping', outcome: {ok: true, ms: 5}}, 2003), 'debug'), ['check passed', `still failing: ${reason}`]);
    assert.deepEqual(said(run.effects.slice(from)), [reason], 'never twice in one tick for the same reason');

    run.on({type: 'check-exited', text: 'mysqladmin ping'}, 2003);
    run.tick(3000);
    run.on({type: 'check-result', text: 'mysqladmin ping', outcome: {ok: true, ms: 5}}, 3001);
    run.answer('/var/lib/binlog', 3001, {ok: true});
    const back = run.answer('/var/lib/mysql', 3002, {ok: true});
    assert.deepEqual(beats(back), [2]);
    assert.deepEqual(logs(back, 'info'), ['healthy again: heartbeats resume']);
    assert.deepEqual(back.find(e => e.type === 'log' && e.level === 'info'), {type: 'log', level: 'info', message: 'healthy again: heartbeats resume', fields: {name: 'mysql', probeMs: 1.5, failedForSeconds: 2}});
  });

  it('still failing is a warning at most once per reminder interval, with how many were left out', () => {
    const run = new Run();
    run.on({type: 'watch', path: '/data', dir: '/data'});
    const ro = {ok: false as const, code: 'EROFS', reason: 'open: EROFS: read-only file system'};
    const warnings: Array<Effect> = [];
    for (let s = 0; s <= 120; s++) {
      run.tick(s * 1000);
      warnings.push(...run.answer('/data', s * 1000 + 1, ro).filter(e => e.type === 'log' && e.level === 'warn'));
    }
    assert.deepEqual(warnings, [
      {type: 'log', level: 'warn', message: 'still failing: probe of /data failed: open: EROFS: read-only file system', fields: {name: 'mysql', failingForSeconds: 60, suppressed: 59}},
      {type: 'log', level: 'warn', message: 'still failing: probe of /data failed: open: EROFS: read-only file system', fields: {name: 'mysql', failingForSeconds: 120, suppressed: 59}},
    ]);
  });

  it('a stuck probe: abandoned at its deadline, never asked again nor stacked on, its reason said again each tick with fresh evidence; replaced once it has exited', () => {
    const run = healthy();
    run.tick(1000);
    run.answer('/var/lib/binlog', 1001, {ok: true});
    run.on({type: 'check-result', text: 'mysqladmin ping', outcome: {ok: true, ms: 5}}, 1001);
    run.on({type: 'check-exited', text: 'mysqladmin ping'}, 1001);
    const timeout = run.answer('/var/lib/mysql', 4000, {ok: false, code: 'ETIMEDOUT', reason: 'timed out after 3.0 s'}, {finding: frozen});
    assert.deepEqual(timeout.filter(e => e.type === 'abandon-prober'), [{type: 'abandon-prober', path: '/var/lib/mysql', prober: 1}]);
    assert.deepEqual(said(timeout), ['probe of /var/lib/mysql timed out after 3.0 s; nvme1n1 idle: no requests in flight, none completed for 3.0 s: the filesystem is blocking writes above the device (frozen?)']);

    const later: Finding = {...frozen, evidence: 'nvme1n1 idle: no requests in flight, none completed for 5.0 s: the filesystem is blocking writes above the device (frozen?)'};
    const tick = run.tick(5000, {restated: new Map([['/var/lib/mysql', later]]), pids: new Map([['/var/lib/mysql', 4242]])});
    assert.deepEqual(kinds(tick).filter(k => k.includes('mysql') && !k.includes('ping')), [], 'no request, no new prober for the stuck path');
    assert.ok(tick.some(e => e.type === 'log' && e.message === 'previous probe process still exists (stuck in the kernel?); not starting another' && e.fields.pid === 4242));
    assert.deepEqual(said(tick), ['probe of /var/lib/mysql timed out after 3.0 s; nvme1n1 idle: no requests in flight, none completed for 5.0 s: the filesystem is blocking writes above the device (frozen?)'], 'the word goes out with this tick\'s counters');
    assert.deepEqual(beats(run.answer('/var/lib/binlog', 5001, {ok: true})), []);
    assert.deepEqual(kinds(run.tick(6000)).filter(k => k.includes('/var/lib/mysql')), []);

    run.on({type: 'prober-exited', path: '/var/lib/mysql', prober: 1, code: 137}, 6500);
    assert.deepEqual(logs(run.effects.slice(-1), 'warn'), [], 'an abandoned prober\'s exit is expected');
    const replaced = run.tick(7000);
    assert.deepEqual(replaced.filter(e => e.type === 'start-prober' || (e.type === 'probe' && e.path === '/var/lib/mysql')), [
      {type: 'start-prober', path: '/var/lib/mysql', prober: 3},
      {type: 'probe', path: '/var/lib/mysql', prober: 3, seq: 2, method: 'direct'},
    ]);
    // A late answer of the old prober is not this one's.
    assert.deepEqual(run.on({type: 'probe-result', path: '/var/lib/mysql', prober: 1, outcome: {ok: true, ms: 3100}}, 7001), []);
  });

  it('a prober that dies is replaced at the next tick (said as a warning)', () => {
    const run = healthy();
    const exit = run.on({type: 'prober-exited', path: '/var/lib/binlog', prober: 2, code: 137}, 500);
    assert.deepEqual(logs(exit, 'warn'), ['the prober of /var/lib/binlog exited (137); a new one starts at the next tick']);
    assert.deepEqual(kinds(run.tick(1000)), ['probe /var/lib/mysql', 'start /var/lib/binlog', 'probe /var/lib/binlog', 'check mysqladmin ping']);
  });

  it('a path gone or replaced fails without being probed, and a probe that passed while its mount went does not count', () => {
    const run = healthy();
    const gone = {code: 'EMOUNTGONE' as const, reason: 'mount gone: /dev/loop3 (7:3) is no longer mounted at /var/lib/mysql; it is now on /dev/vda1 (ext4) mounted at /'};
    const tick = run.tick(1000, {mounts: new Map([['/var/lib/mysql', gone]])});
    assert.deepEqual(kinds(tick).filter(k => k.startsWith('probe')), ['probe /var/lib/binlog'], 'the path on the wrong disk is never probed');
    assert.deepEqual(said(tick), [`probe of /var/lib/mysql: ${gone.reason}`]);

    const replaced = {code: 'EMOUNTREPLACED' as const, reason: 'mount replaced: it is now on /dev/loop4 (ext4) mounted at /srv/binlog, not the pinned /dev/loop2 (ext4) mounted at /srv/binlog (7:2)'};
    run.tick(2000);
    const passed = run.on({type: 'probe-result', path: '/var/lib/mysql', prober: 1, outcome: {ok: true, ms: 1}, mount: {code: 'EMOUNTGONE', reason: replaced.reason}}, 2001);
    assert.deepEqual(beats(passed), []);
    assert.ok(said(passed)[0]!.startsWith(`probe of /var/lib/mysql: ${replaced.reason}`));
  });

  it('a check failing holds heartbeats back with its own words; one still running is not started again', () => {
    const run = healthy();
    run.tick(1000);
    run.answer('/var/lib/mysql', 1001, {ok: true});
    run.answer('/var/lib/binlog', 1001, {ok: true});
    const failed = run.on({type: 'check-result', text: 'mysqladmin ping', outcome: {ok: false, ms: 3000, code: 'ETIMEDOUT', status: 'timeout', reason: 'check `mysqladmin ping` timed out after 3.0 s (killed with its process group)'}}, 4000);
    assert.deepEqual(said(failed), ['check `mysqladmin ping` timed out after 3.0 s (killed with its process group)']);
    const tick = run.tick(5000);
    assert.deepEqual(kinds(tick).filter(k => k.startsWith('check')), [], 'its process is still there: not started again');
    assert.deepEqual(logs(tick, 'debug').filter(m => m.startsWith('previous check')), ['previous check still running; not starting another']);
    run.on({type: 'check-exited', text: 'mysqladmin ping'}, 5500);
    assert.deepEqual(kinds(run.tick(6000)).filter(k => k.startsWith('check')), ['check mysqladmin ping']);
  });

  it('O_DIRECT refused by the first answer: O_DSYNC from then on, said once', () => {
    const run = new Run();
    run.on({type: 'watch', path: '/tmpfs', dir: '/tmpfs'});
    run.tick(0);
    const first = run.answer('/tmpfs', 1, {ok: false, code: 'EINVAL', reason: 'open: EINVAL: invalid argument'});
    assert.deepEqual(logs(first, 'info'), ['probe method: O_DIRECT refused (EINVAL): O_DSYNC write, read-back']);
    assert.deepEqual(run.tick(1000).filter(e => e.type === 'probe'), [{type: 'probe', path: '/tmpfs', prober: 1, seq: 1, method: 'dsync'}]);
    assert.deepEqual(logs(run.answer('/tmpfs', 1001, {ok: true}), 'info'), ['healthy again: heartbeats resume']);
  });

  it('watched paths come and go: a new one holds the next heartbeat until it is proven; one dropped closes its prober and no longer counts', () => {
    const run = healthy();
    run.on({type: 'watch', path: '/var/lib/redo', dir: '/var/lib/redo'}, 500);
    const tick = run.tick(1000);
    assert.deepEqual(kinds(tick).filter(k => k.endsWith('/var/lib/redo')), ['start /var/lib/redo', 'probe /var/lib/redo']);
    run.answer('/var/lib/mysql', 1001, {ok: true});
    run.answer('/var/lib/binlog', 1001, {ok: true});
    assert.deepEqual(beats(run.on({type: 'check-result', text: 'mysqladmin ping', outcome: {ok: true, ms: 5}}, 1002)), [], 'the new path is not proven yet');
    run.on({type: 'check-exited', text: 'mysqladmin ping'}, 1002);
    const failing = run.answer('/var/lib/redo', 1003, {ok: false, code: 'EROFS', reason: 'open: EROFS: read-only file system'});
    assert.deepEqual(said(failing), ['probe of /var/lib/redo failed: open: EROFS: read-only file system']);

    run.tick(2000);
    run.answer('/var/lib/mysql', 2001, {ok: true});
    run.answer('/var/lib/binlog', 2001, {ok: true});
    run.on({type: 'check-result', text: 'mysqladmin ping', outcome: {ok: true, ms: 5}}, 2002);
    const dropped = run.on({type: 'unwatch', path: '/var/lib/redo'}, 2003);
    assert.deepEqual(dropped.filter(e => e.type === 'close-prober' || e.type === 'heartbeat'), [{type: 'close-prober', path: '/var/lib/redo', prober: 3}, {type: 'heartbeat', seq: 2, probeMs: 1.5}]);
    assert.deepEqual(logs(dropped, 'info'), ['healthy again: heartbeats resume']);
  });

  it('checks come and go the same way', () => {
    const run = healthy();
    run.on({type: 'remove-check', text: 'mysqladmin ping'}, 500);
    run.on({type: 'add-check', text: 'curl -fsS http://localhost/health'}, 500);
    assert.deepEqual(kinds(run.tick(1000)), ['probe /var/lib/mysql', 'probe /var/lib/binlog', 'check curl -fsS http://localhost/health']);
  });

  describe('stopping: a goodbye only from a clean stop while healthy', () => {
    it('healthy with nothing in flight: goodbye at once', () => {
      const run = healthy();
      assert.deepEqual(run.on({type: 'stop'}, 500), [{type: 'finish', goodbye: true, reason: ''}]);
      assert.deepEqual(run.tick(1000), [], 'nothing after the finish');
    });

    it('a request in flight is waited for; no heartbeat is sent, and the goodbye follows if it passed', () => {
      const run = healthy();
      run.tick(1000);
      run.on({type: 'check-result', text: 'mysqladmin ping', outcome: {ok: true, ms: 5}}, 1001);
      run.on({type: 'check-exited', text: 'mysqladmin ping'}, 1001);
      run.answer('/var/lib/binlog', 1001, {ok: true});
      assert.deepEqual(run.on({type: 'stop'}, 1001), []);
      assert.deepEqual(run.answer('/var/lib/mysql', 1002, {ok: true}).filter(e => e.type !== 'log'), [{type: 'finish', goodbye: true, reason: ''}]);
    });

    it('failing: no goodbye, so the fence stays; no failing word while stopping', () => {
      const run = healthy();
      run.tick(1000);
      run.answer('/var/lib/mysql', 1001, {ok: false, code: 'EROFS', reason: 'open: EROFS: read-only file system'});
      run.on({type: 'stop'}, 1002);
      const last = run.answer('/var/lib/binlog', 1003, {ok: false, code: 'EROFS', reason: 'open: EROFS: read-only file system'});
      assert.deepEqual(said(last), []);
      run.on({type: 'check-result', text: 'mysqladmin ping', outcome: {ok: true, ms: 5}}, 1004);
      assert.deepEqual(run.effects.at(-1), {type: 'finish', goodbye: false, reason: 'probe of /var/lib/mysql failed: open: EROFS: read-only file system'});
    });

    it('a probe stuck past the wait: no goodbye, whatever the health said before', () => {
      const run = healthy();
      run.tick(1000);
      run.on({type: 'stop'}, 1001);
      assert.deepEqual(run.on({type: 'stop-timeout'}, 2201), [{type: 'finish', goodbye: false, reason: ''}]);
    });
  });

  describe('the rejoin program (--rejoin=PROGRAM)', () => {
    const since = 1_700_000_000_000;
    /** One more round: probes and the check pass. */
    const round = (run: Run, at: number, fencedSince: number | null) => {
      const tick = run.tick(at, {fencedSince});
      run.answer('/var/lib/mysql', at + 1, {ok: true});
      run.answer('/var/lib/binlog', at + 2, {ok: true});
      const last = run.on({type: 'check-result', text: 'mysqladmin ping', outcome: {ok: true, ms: 5}}, at + 3);
      run.on({type: 'check-exited', text: 'mysqladmin ping'}, at + 3);
      return {tick, beat: last.find(e => e.type === 'heartbeat')};
    };

    it('runs only while the monitor says fenced and the disks pass, one run at a time; its latest answer rides on each heartbeat', () => {
      const run = healthy('program');
      assert.deepEqual(round(run, 1000, null).tick.filter(e => e.type === 'run-rejoin'), [], 'not fenced: it does not run');
      const first = round(run, 2000, since);
      assert.deepEqual(first.tick.filter(e => e.type === 'run-rejoin'), [{type: 'run-rejoin', fencedSince: since}]);
      assert.deepEqual(first.beat, {type: 'heartbeat', seq: 3, probeMs: 1.5}, 'no answer yet: the heartbeat says nothing of it');
      assert.deepEqual(round(run, 3000, since).tick.filter(e => e.type === 'run-rejoin'), [], 'still running: never stacked');

      const answered = run.on({type: 'rejoin-result', answer: 'voice', reason: 'voice: a replica now', startedAt: since + 2000}, 3500);
      assert.deepEqual(logs(answered, 'warn'), ['rejoin program: the coordinator may be reached again, clients not yet: voice: a replica now']);
      assert.deepEqual(round(run, 4000, since).tick.filter(e => e.type === 'run-rejoin'), [], 'its process not gone yet: not started again');
      run.on({type: 'rejoin-exited'}, 4100);
      const next = round(run, 5000, since);
      assert.deepEqual(next.tick.filter(e => e.type === 'run-rejoin'), [{type: 'run-rejoin', fencedSince: since}]);
      assert.deepEqual(next.beat, {type: 'heartbeat', seq: 6, probeMs: 1.5, rejoin: {answer: 'voice', startedAt: since + 2000, reason: 'voice: a replica now'}});

      run.on({type: 'rejoin-result', answer: 'clients', reason: 'clients: streaming from the leader', startedAt: since + 5000}, 5500);
      run.on({type: 'rejoin-exited'}, 5500);
      assert.deepEqual(round(run, 6000, since).beat, {type: 'heartbeat', seq: 7, probeMs: 1.5, rejoin: {answer: 'clients', startedAt: since + 5000, reason: 'clients: streaming from the leader'}});

      // Lifted: the answer is forgotten; a later fence starts from nothing.
      const lifted = round(run, 8000, null);
      assert.deepEqual(lifted.beat, {type: 'heartbeat', seq: 8, probeMs: 1.5});
      assert.deepEqual(logs(lifted.tick, 'info'), ['the monitor lifted the fence: the rejoin program rests']);
      assert.equal(run.life.rejoin.latest, null);
    });

    it('an answer from a run started before the fence began counts for nothing', () => {
      const run = healthy('program');
      round(run, 1000, since);
      run.on({type: 'rejoin-result', answer: 'clients', reason: 'clients: stale', startedAt: since - 1}, 1500);
      run.on({type: 'rejoin-exited'}, 1500);
      assert.deepEqual(round(run, 2000, since).beat, {type: 'heartbeat', seq: 3, probeMs: 1.5});
    });

    it('a disk still failing: the program does not run', () => {
      const run = healthy('program');
      run.tick(1000, {fencedSince: null});
      run.answer('/var/lib/mysql', 1001, {ok: false, code: 'EIO', reason: 'write: EIO: input/output error'});
      assert.equal(run.life.health.state, 'failing');
      assert.deepEqual(run.tick(2000, {fencedSince: since}).filter(e => e.type === 'run-rejoin'), []);
    });

    it('auto and manual never run a program, whatever the monitor says', () => {
      for (const mode of ['auto', 'manual'] as const) {
        const run = healthy(mode);
        assert.deepEqual(round(run, 1000, since).tick.filter(e => e.type === 'run-rejoin'), []);
      }
    });
  });
});

import assert from 'node:assert/strict';
import {beforeEach, describe, it} from 'node:test';

import type {KernelView} from '../../src/fencing';
import type {DeviceStats, Failing, Heartbeat} from '../../src/heartbeat';
import {Registry} from '../../src/monitor';
import type {Transition, Urgency} from '../../src/monitor';
import {HISTORY_MAX} from '../../src/state';
import type {ReporterSnapshot} from '../../src/state';
import {FakeClock} from '../helpers/clock';

describe('Registry: reporters, deadlines and what the firewall should hold', () => {
  let clock: FakeClock;
  let transitions: Array<Transition>;
  let changes: Array<Urgency>;
  let refusals: Array<string>;
  let registry: Registry;

  beforeEach(() => {
    clock = new FakeClock();
    transitions = [];
    changes = [];
    refusals = [];
    registry = new Registry({timeoutMs: 10_000, recover: 3, protectPorts: new Set([22]), maxReporters: 5}, {
      changed: urgency => changes.push(urgency),
      transition: t => transitions.push(t),
      log: () => {},
      refuse: (_key, message) => refusals.push(message),
    }, clock);
  });

  const beat = (name: string, extra: Partial<Heartbeat> = {}): Heartbeat => ({v: 1, kind: 'heartbeat', name, pid: 100, ports: [3306], interval: 1, probeTimeout: 3, seq: 1, sentAt: clock.wall(), probeMs: 1, ...extra});
  const states = () => Object.fromEntries([...registry.reporters.values()].map(r => [r.name, r.life.state]));
  const arm = (name: string) => registry.desired().find(d => d.name === name)?.arm;

  it('keeps the written-but-not-watched volumes of the last heartbeat (none when it says none), in the snapshot and across a restart', () => {
    const binlog = {file: '/binlog/mysql-bin.000042', device: '7:3', source: '/dev/loop3'};
    registry.heartbeat(beat('mysql', {unwatched: [binlog]}));
    assert.deepEqual(registry.snapshot()[0]!.unwatched, [binlog]);
    const successor = new Registry({timeoutMs: 10_000, recover: 3, protectPorts: new Set([22]), maxReporters: 5}, {changed: () => {}, transition: () => {}, log: () => {}, refuse: () => {}}, clock);
    successor.adopt(registry.snapshot(), null, false);
    assert.deepEqual(successor.snapshot()[0]!.unwatched, [binlog]);
    registry.heartbeat(beat('mysql', {seq: 2}));
    assert.equal(registry.snapshot()[0]!.unwatched, undefined);
  });

  it('fences at the deadline, not before, and the firewall is told at once', () => {
    registry.heartbeat(beat('mysql'));
    assert.deepEqual(arm('mysql'), {state: 'armed', until: 10_000});
    clock.advance(9_999);
    assert.deepEqual(states(), {mysql: 'healthy'});
    changes.length = 0;
    clock.advance(1);
    assert.deepEqual(states(), {mysql: 'fenced'});
    assert.deepEqual(arm('mysql'), {state: 'fenced'});
    assert.deepEqual(changes, ['now']);
    assert.equal(registry.reporters.get('mysql')?.fenceCount, 1);
    assert.deepEqual(transitions.map(t => `${t.name} ${t.state}`), ['mysql fenced']);
  });

  it('the deadline runs from the heartbeat\'s sentAt, and a re-arm is a batched change', () => {
    registry.heartbeat(beat('mysql'));
    clock.advance(2_000);
    changes.length = 0;
    registry.heartbeat(beat('mysql', {sentAt: clock.wall() - 300}));
    assert.deepEqual(arm('mysql'), {state: 'armed', until: 11_700});
    assert.deepEqual(changes, ['rearm']);
  });

  it('a heartbeat older than --timeout (it waited in the FIFO) re-arms nothing and opens nothing', () => {
    registry.heartbeat(beat('mysql'));
    clock.advance(10_000);
    assert.deepEqual(states(), {mysql: 'fenced'});
    for (let i = 0; i < 5; i++)
      registry.heartbeat(beat('mysql', {sentAt: clock.wall() - 10_000 - i}));
    assert.deepEqual(states(), {mysql: 'fenced'});
    assert.equal(registry.heartbeatsStale, 5);
    assert.match(refusals.join('\n'), /older than --timeout/);
  });

  it('a deadline that passed while the loop was stopped fences before the next heartbeat counts', () => {
    registry.heartbeat(beat('mysql'));
    // The monitor was SIGSTOPped: time passes without its timers running.
    clock.time += 15_000;
    registry.heartbeat(beat('mysql'));
    assert.deepEqual(states(), {mysql: 'fenced'}, 'one fresh heartbeat is not --recover of them');
    assert.deepEqual(transitions.map(t => t.state), ['fenced']);
    // Fenced as of its deadline, not as of when the monitor woke and noticed.
    assert.match(transitions[0]!.reason, /^no heartbeat for 10\.0 s$/);
    assert.equal(registry.snapshot()[0]!.fencedSince, clock.wall() - 5_000);
  });

  it('lifts a fence only after --recover consecutive heartbeats, counting a flap', () => {
    registry.heartbeat(beat('mysql'));
    clock.advance(20_000);
    registry.heartbeat(beat('mysql'));
    clock.advance(1_000);
    registry.heartbeat(beat('mysql'));
    assert.deepEqual(states(), {mysql: 'fenced'});
    assert.deepEqual(arm('mysql'), {state: 'fenced'}, 'not re-armed while recovering');
    clock.advance(1_000);
    registry.heartbeat(beat('mysql'));
    assert.deepEqual(states(), {mysql: 'healthy'});
    assert.deepEqual(arm('mysql'), {state: 'armed', until: 32_000});
    assert.equal(registry.reporters.get('mysql')?.flapCount, 1);
  });

  it('never fences a protected port, and says so', () => {
    registry.heartbeat(beat('evil', {ports: [22, 8080]}));
    clock.advance(10_000);
    assert.deepEqual(registry.desired(), [{name: 'evil', ports: [8080], arm: {state: 'fenced'}, isolate: [], voice: {state: 'fenced'}}]);
    assert.match(refusals[0] ?? '', /protected port\(s\) 22/);
  });

  it('ports that change are a change for the firewall now, also while fenced', () => {
    registry.heartbeat(beat('web', {ports: [80]}));
    clock.advance(10_000);
    changes.length = 0;
    registry.heartbeat(beat('web', {ports: [80, 443]}));
    assert.deepEqual(registry.desired(), [{name: 'web', ports: [80, 443], arm: {state: 'fenced'}, isolate: [], voice: {state: 'fenced'}}]);
    assert.deepEqual(changes, ['now']);
  });

  it('goodbye forgets a healthy reporter, never lifts a fence, and needs the right pid', () => {
    registry.heartbeat(beat('a'));
    registry.goodbye({v: 1, kind: 'goodbye', name: 'a', pid: 999});
    assert.deepEqual(states(), {a: 'healthy'});
    registry.goodbye({v: 1, kind: 'goodbye', name: 'a', pid: 100});
    assert.deepEqual(states(), {});
    assert.deepEqual(registry.desired(), []);
    clock.advance(20_000);
    assert.deepEqual(transitions.map(t => t.state), ['forgotten']);

    registry.heartbeat(beat('b'));
    clock.advance(10_000);
    registry.goodbye({v: 1, kind: 'goodbye', name: 'b', pid: 100});
    assert.deepEqual(states(), {b: 'fenced'});
  });

  it('unblock overrides (open, no deadline) until the next heartbeat, which makes it healthy at once', () => {
    registry.heartbeat(beat('mysql'));
    clock.advance(10_000);
    assert.deepEqual(registry.unblock({v: 1, kind: 'unblock', name: 'mysql', pid: 5, user: 'root'}), ['mysql']);
    assert.deepEqual(states(), {mysql: 'overridden'});
    assert.deepEqual(arm('mysql'), {state: 'open'});
    clock.advance(3_600_000);
    assert.deepEqual(states(), {mysql: 'overridden'});
    registry.heartbeat(beat('mysql'));
    assert.deepEqual(states(), {mysql: 'healthy'});
    clock.advance(10_000);
    assert.deepEqual(states(), {mysql: 'fenced'});
    assert.equal(registry.reporters.get('mysql')?.flapCount, 0, 'an operator override is not a flap');
  });

  it('unblock --all lifts every fence', () => {
    registry.heartbeat(beat('a'));
    registry.heartbeat(beat('b'));
    clock.advance(10_000);
    assert.deepEqual(registry.unblock({v: 1, kind: 'unblock', all: true, pid: 5, user: 'root'}).sort(), ['a', 'b']);
    assert.ok(registry.desired().every(d => d.arm.state === 'open'));
  });

  it('refuses new reporters beyond --max-reporters', () => {
    for (const name of ['a', 'b', 'c', 'd', 'e', 'f'])
      registry.heartbeat(beat(name));
    assert.deepEqual(Object.keys(states()), ['a', 'b', 'c', 'd', 'e']);
    assert.match(refusals.join('\n'), /--max-reporters/);
  });

  it('stopping releases healthy reporters\' ports, never one a fenced reporter guards too', () => {
    registry.heartbeat(beat('up', {ports: [3306, 8008]}));
    registry.heartbeat(beat('down', {ports: [80, 8008]}));
    clock.advance(5_000);
    registry.heartbeat(beat('up', {ports: [3306, 8008]}));
    clock.advance(5_000);
    registry.settleAll();
    assert.deepEqual(states(), {up: 'healthy', down: 'fenced'});
    assert.deepEqual(registry.releasable(), {clients: [3306], voice: []});
  });

  it('the kernel\'s deadline wins: once the one it holds has run out, the reporter is fenced as of then, whatever heartbeats the registry read since', () => {
    registry.heartbeat(beat('db'));
    registry.desired();
    registry.acknowledged(20);
    // The monitor stops (SIGSTOP) after reading a heartbeat it never writes to the kernel.
    clock.advance(2_000);
    registry.heartbeat(beat('db'));
    clock.advance(7_990);
    assert.deepEqual(states(), {db: 'fenced'}, 'at the kernel\'s deadline (10 s - 20 ms early), not the registry\'s (12 s)');
    assert.equal(registry.reporters.get('db')!.life.state === 'fenced' && (registry.reporters.get('db')!.life as {since: number}).since, clock.wall() - 10);
    // Heartbeats that waited in the FIFO, sent before the kernel fenced, prove nothing since.
    for (let i = 0; i < 5; i++)
      registry.heartbeat(beat('db', {sentAt: clock.wall() - 500 + i * 50}));
    assert.deepEqual(states(), {db: 'fenced'});
    assert.match(refusals.join('\n'), /sent before its fence began/);
    for (let i = 0; i < 3; i++) {
      clock.advance(1_000);
      registry.heartbeat(beat('db'));
    }
    assert.deepEqual(states(), {db: 'healthy'}, 'fresh heartbeats recover as ever');
    clock.advance(9_999);
    assert.deepEqual(states(), {db: 'healthy'}, 'and the old kernel deadline no longer counts');
  });

  it('what the firewall should hold never re-arms a deadline that ran out while the monitor was stopped, before its timer has run', () => {
    registry.heartbeat(beat('db'));
    registry.desired();
    registry.acknowledged(20);
    clock.time += 1_000;
    registry.heartbeat(beat('db'));
    // SIGSTOP: time passes, no timer runs; on SIGCONT the apply loop's batch timer may run first.
    clock.time += 9_000;
    assert.deepEqual(registry.desired().map(d => d.arm), [{state: 'fenced'}]);
    assert.deepEqual(states(), {db: 'fenced'});
  });

  it('at a stop, a reporter that missed its heartbeat with its deadline an interval away is left fenced; one between heartbeats is not', () => {
    registry.heartbeat(beat('late', {ports: [1]}));
    registry.heartbeat(beat('fine', {ports: [2]}));
    clock.advance(8_000);
    registry.heartbeat(beat('fine', {ports: [2]}));
    clock.advance(950);
    registry.fenceDueAtStop(120);
    assert.deepEqual(states(), {late: 'fenced', fine: 'healthy'});

    const tight = new Registry({timeoutMs: 2_000, recover: 3, protectPorts: new Set(), maxReporters: 5}, {changed: () => {}, transition: () => {}, log: () => {}, refuse: () => {}}, clock);
    tight.heartbeat(beat('tight'));
    clock.advance(990);
    tight.fenceDueAtStop(120);
    assert.equal(tight.reporters.get('tight')!.life.state, 'healthy', 'a tight --timeout: 1 s left, but it is not late');
  });

  it('a stop that finds a port run out in the kernel fences its reporter', () => {
    registry.heartbeat(beat('a', {ports: [1]}));
    registry.heartbeat(beat('b', {ports: [2]}));
    registry.expiredInKernel([2]);
    assert.deepEqual(states(), {a: 'healthy', b: 'fenced'});
  });

  const snap = (name: string, ports: Array<number>, state: ReporterSnapshot['state']): ReporterSnapshot => ({
    name, pid: 1, ports, state, lastHeartbeatAt: clock.wall() - 1_000, fencedSince: state === 'fenced' ? 1 : null, overriddenAt: state === 'overridden' ? 2 : null, overriddenBy: state === 'overridden' ? 'root' : null,
    fenceCount: 0, flapCount: 0, heartbeats: 5, lastProbeMs: 1, interval: 1, probeTimeout: 3, reason: 'x',
  });
  const kernel = (entries: Array<[number, 'fenced' | number | null]>): KernelView => ({ports: new Map(entries.map(([port, left]) => [port, {owners: [], alive: left === 'fenced' ? 'fenced' : {leftMs: left}}])), isolated: new Map()});

  it('adoption with kernel deadlines: the time left is kept, never extended; an expired element was a fence', () => {
    registry.adopt([snap('kept', [80, 81], 'healthy'), snap('expired', [82], 'healthy'), snap('stopped', [83], 'healthy'), snap('down', [84], 'fenced'), snap('over', [85], 'overridden')],
      kernel([[80, 4_000], [81, 3_000], [82, 'fenced'], [83, null], [84, 9_000], [85, null]]), true);
    assert.deepEqual(registry.desired().map(d => [d.name, d.arm]), [
      ['kept', {state: 'armed', until: 3_000}],
      ['expired', {state: 'fenced'}],
      ['stopped', {state: 'armed', until: 10_000}],
      ['down', {state: 'fenced'}],
      ['over', {state: 'open'}],
    ]);
    assert.deepEqual(transitions.map(t => `${t.name} ${t.state}`), ['expired fenced']);
    assert.match(transitions[0]!.reason, /while no monitor was running/);
    assert.equal(registry.reporters.get('expired')?.fenceCount, 1);
    clock.advance(3_000);
    assert.equal(states().kept, 'fenced');
  });

  it('a reporter that names its coordinator: its voice is cut with its clients, given back by its rejoin program first, then its clients', () => {
    const program = (answer: 'none' | 'voice' | 'clients', reason: string) => ({mode: 'program' as const, answer, startedAt: clock.wall() - 100, reason});
    registry.heartbeat(beat('pg', {ports: [5432, 8008], isolate: [2379], rejoin: {mode: 'program'}}));
    assert.deepEqual(registry.desired().map(d => [d.isolate, d.voice]), [[[2379], {state: 'armed', until: 10_000}]], 'healthy: the voice holds the same deadline');
    clock.advance(10_000);
    assert.deepEqual(registry.desired().map(d => [d.arm, d.voice]), [[{state: 'fenced'}, {state: 'fenced'}]], 'fenced: both cut at once');
    assert.deepEqual(snapOf('pg').rejoin, {mode: 'program', stage: 'fenced', waiting: 'disks'});
    for (let i = 0; i < 3; i++) {
      clock.advance(1_000);
      registry.heartbeat(beat('pg', {ports: [5432, 8008], isolate: [2379], rejoin: program('none', 'still the leader')}));
    }
    assert.deepEqual(snapOf('pg').rejoin, {mode: 'program', stage: 'fenced', waiting: 'program', reason: 'still the leader'});
    assert.deepEqual(registry.desired().map(d => d.voice), [{state: 'fenced'}]);
    clock.advance(1_000);
    registry.heartbeat(beat('pg', {ports: [5432, 8008], isolate: [2379], rejoin: program('voice', 'a replica now')}));
    assert.deepEqual(registry.desired().map(d => [d.arm, d.voice]), [[{state: 'fenced'}, {state: 'armed', until: clock.time + 10_000}]]);
    assert.equal(snapOf('pg').state, 'fenced');
    assert.equal(snapOf('pg').fenceCount, 1, 'the voice given back is no new fence');
    assert.deepEqual(snapOf('pg').rejoin?.stage, 'voice');
    assert.match(transitions.at(-1)!.reason, /^coordinator reachable again, clients still fenced: rejoin program: voice: a replica now$/);
    // Its heartbeats stop: the voice is cut again at their deadline.
    clock.advance(10_000);
    assert.deepEqual(registry.desired().map(d => d.voice), [{state: 'fenced'}]);
    assert.match(transitions.at(-1)!.reason, /^coordinator cut again: no heartbeat for 10\.0 s$/);
    for (let i = 0; i < 4; i++) {
      clock.advance(1_000);
      registry.heartbeat(beat('pg', {ports: [5432, 8008], isolate: [2379], rejoin: program(i < 3 ? 'voice' : 'clients', 'streaming')}));
    }
    assert.equal(snapOf('pg').state, 'healthy');
    assert.deepEqual(snapOf('pg').rejoin, {mode: 'program'}, 'nothing to say of a healthy reporter but its mode');
  });

  it('a manual rejoin waits for an operator once the disks are proven', () => {
    registry.heartbeat(beat('db', {rejoin: {mode: 'manual'}}));
    clock.advance(10_000);
    for (let i = 0; i < 5; i++) {
      clock.advance(1_000);
      registry.heartbeat(beat('db', {rejoin: {mode: 'manual'}}));
    }
    assert.equal(snapOf('db').state, 'fenced');
    assert.deepEqual(snapOf('db').rejoin, {mode: 'manual', stage: 'fenced', waiting: 'operator'});
    registry.unblock({v: 1, kind: 'unblock', name: 'db', pid: 5, user: 'root'});
    assert.equal(snapOf('db').state, 'overridden');
    assert.deepEqual(registry.desired().map(d => [d.arm, d.voice]), [[{state: 'open'}, {state: 'open'}]]);
  });

  it('adoption of what the kernel holds but the snapshot does not know: each port stays as the kernel holds it, under the name it records', () => {
    const view: KernelView = {ports: new Map([
      [80, {owners: ['web'], alive: 'fenced'}],
      [81, {owners: ['web'], alive: {leftMs: 4_000}}],
      [90, {owners: ['db', 'known'], alive: {leftMs: 2_000}}],
      [91, {owners: [], alive: 'fenced'}],
      [92, {owners: ['no way!'], alive: {leftMs: null}}],
    ]), isolated: new Map()};
    registry.adopt([snap('known', [90], 'healthy')], view, true);
    assert.deepEqual(registry.desired().map(d => [d.name, d.ports, d.arm]), [
      ['known', [90], {state: 'armed', until: 2_000}],
      ['web', [80, 81], {state: 'fenced'}],
      ['port-91', [91], {state: 'fenced'}],
      ['port-92', [92], {state: 'armed', until: 10_000}],
    ]);
    assert.equal(snapOf('web').pid, 0, 'no pid until it heartbeats: no goodbye can match it');
    assert.match(snapOf('web').reason, /found fenced in the kernel/);
    registry.goodbye({v: 1, kind: 'goodbye', name: 'port-92', pid: 1});
    assert.ok(registry.reporters.has('port-92'), 'a goodbye with any pid is refused');
  });

  it('adoption when the kernel cannot be read: known reporters stay fenced (the kernel may have fenced them), never opened unproven', () => {
    registry.adopt([snap('a', [80], 'healthy'), snap('b', [81], 'overridden')], 'unreadable', true);
    assert.deepEqual(registry.desired().map(d => [d.name, d.arm.state]), [['a', 'fenced'], ['b', 'open']]);
    assert.match(snapOf('a').reason, /could not be read at start-up/);
  });

  it('adoption without kernel deadlines (iptables): healthy reporters get a fresh --timeout', () => {
    registry.adopt([snap('old', [80], 'fenced'), snap('fine', [81], 'healthy')], kernel([[80, 'fenced']]), false);
    clock.advance(9_999);
    assert.deepEqual(states(), {old: 'fenced', fine: 'healthy'});
    clock.advance(1);
    assert.deepEqual(states(), {old: 'fenced', fine: 'fenced'});
  });

  it('keeps one timer per healthy reporter however many heartbeats arrive', () => {
    registry.heartbeat(beat('a'));
    for (let i = 0; i < 100; i++) {
      clock.advance(100);
      registry.heartbeat(beat('a'));
    }
    assert.equal(clock.pending, 1);
    clock.advance(10_000);
    assert.equal(clock.pending, 0);
    assert.deepEqual(states(), {a: 'fenced'});
  });

  // Issue 16: what reporters say, and the history of what happened.
  const say = (name: string, reason: string, extra: Partial<Failing> = {}): Failing => ({v: 1, kind: 'failing', name, pid: 100, sentAt: clock.wall(), reason, ...extra});
  const record = (name: string) => registry.reporters.get(name)!;
  const snapOf = (name: string) => registry.snapshot().find(r => r.name === name)!;
  const stuck = 'probe of /var/lib/mysql timed out after 3.0 s; nvme1n1: 14 requests in flight, none completed for 4.0 s';
  const disk: DeviceStats = {device: '259:1', name: 'nvme1n1', inflight: 14, ios: 5000, windowMs: 1000, done: 0, busyMs: 1000, quietMs: 4000};

  it('the reporter\'s words after its last heartbeat become the fence\'s reason; they move no deadline', () => {
    registry.heartbeat(beat('mysql'));
    clock.advance(4_000);
    registry.failing(say('mysql', stuck, {devices: [disk]}));
    assert.equal(record('mysql').life.state, 'healthy');
    assert.deepEqual(registry.desired()[0]!.arm, {state: 'armed', until: 10_000}, 'the deadline is the heartbeat\'s');
    clock.advance(6_000);
    assert.deepEqual(transitions.map(t => [t.state, t.reason]), [['fenced', `no heartbeat for 10.0 s: ${stuck}`]]);
    assert.deepEqual(snapOf('mysql').failure, {reason: stuck, at: clock.wall() - 6_000});
    assert.deepEqual(snapOf('mysql').devices, [disk]);
  });

  it('words older than the last heartbeat explain nothing; an unknown reporter\'s are ignored', () => {
    registry.heartbeat(beat('mysql'));
    registry.failing(say('mysql', 'old trouble', {sentAt: clock.wall() - 500}));
    registry.failing(say('ghost', 'who?'));
    clock.advance(10_000);
    assert.deepEqual(transitions.map(t => t.reason), ['no heartbeat for 10.0 s']);
    assert.equal(registry.reporters.has('ghost'), false);
    assert.deepEqual(refusals, []);
  });

  it('a restarted reporter (another pid) that cannot heartbeat is heard too', () => {
    registry.heartbeat(beat('mysql'));
    clock.advance(5_000);
    registry.failing(say('mysql', stuck, {pid: 999}));
    clock.advance(5_000);
    assert.deepEqual(transitions.map(t => t.reason), [`no heartbeat for 10.0 s: ${stuck}`]);
  });

  it('a heartbeat after the words clears them', () => {
    registry.heartbeat(beat('mysql'));
    clock.advance(1_000);
    registry.failing(say('mysql', stuck));
    clock.advance(1_000);
    registry.heartbeat(beat('mysql'));
    assert.equal(snapOf('mysql').failure, undefined);
    clock.advance(10_000);
    assert.equal(transitions[0]!.reason, 'no heartbeat for 10.0 s');
  });

  it('records each transition with its time, the previous state\'s duration and the reason; fence durations as a histogram', () => {
    registry.heartbeat(beat('mysql'));
    clock.advance(3_000);
    registry.failing(say('mysql', stuck));
    clock.advance(7_000);
    // Fenced at 10 s; three heartbeats lift it at 102 s.
    clock.advance(90_000);
    for (let i = 0; i < 3; i++) {
      registry.heartbeat(beat('mysql'));
      clock.advance(i < 2 ? 1_000 : 5_000);
    }
    registry.heartbeat(beat('mysql'));
    clock.advance(10_000);
    registry.unblock({v: 1, kind: 'unblock', name: 'mysql', pid: 5, user: 'root'});
    const start = clock.wall() - clock.time;
    assert.deepEqual(snapOf('mysql').history, [
      {at: start + 10_000, from: 'healthy', state: 'fenced', previousSeconds: 10, reason: `no heartbeat for 10.0 s: ${stuck}`},
      {at: start + 102_000, from: 'fenced', state: 'healthy', previousSeconds: 92, reason: '3 consecutive heartbeats'},
      {at: start + 117_000, from: 'healthy', state: 'fenced', previousSeconds: 15, reason: 'no heartbeat for 10.0 s'},
      {at: start + 117_000, from: 'fenced', state: 'overridden', previousSeconds: 0, reason: 'unblock by root (pid 5)'},
    ]);
    assert.equal(snapOf('mysql').stateSince, start + 117_000);
    const fences = snapOf('mysql').fenceDurations!;
    assert.deepEqual({...fences, buckets: undefined}, {count: 2, sumSeconds: 92, lastSeconds: 0, buckets: undefined});
    assert.deepEqual(fences.buckets, [1, 0, 0, 0, 0, 1, 0, 0, 0, 0], 'one within 1 s, one within 300 s');
  });

  it('keeps the last 20 transitions, oldest first, and a successor adopts them', () => {
    registry.heartbeat(beat('flappy'));
    for (let i = 0; i < 15; i++) {
      clock.advance(10_000);
      registry.heartbeat(beat('flappy'));
      for (let j = 0; j < 2; j++) {
        clock.advance(1_000);
        registry.heartbeat(beat('flappy'));
      }
    }
    const history = snapOf('flappy').history!;
    assert.equal(history.length, HISTORY_MAX);
    assert.ok(history.every((h, i) => i === 0 || h.at >= history[i - 1]!.at), 'ordered by time');
    assert.deepEqual(history.map(h => h.state).slice(-2), ['fenced', 'healthy'], 'the newest last');
    // 30 transitions (15 fences, 15 recoveries): the oldest 10 are gone, so the 6th fence comes first.
    assert.deepEqual([history[0]!.state, history[0]!.at], ['fenced', clock.wall() - clock.time + 6 * 12_000 - 2_000]);
    assert.equal(snapOf('flappy').fenceDurations?.count, 15);

    const successor = new Registry({timeoutMs: 10_000, recover: 3, protectPorts: new Set(), maxReporters: 5}, {changed: () => {}, transition: () => {}, log: () => {}, refuse: () => {}}, clock);
    successor.adopt(registry.snapshot(), null, false);
    const adopted = successor.snapshot()[0]!;
    assert.deepEqual(adopted.history, history);
    assert.deepEqual(adopted.fenceDurations, snapOf('flappy').fenceDurations);
    clock.advance(10_000);
    const after = successor.snapshot()[0]!.history!;
    assert.equal(after.length, HISTORY_MAX);
    assert.deepEqual([after.at(-1)!.from, after.at(-1)!.state, after.at(-1)!.previousSeconds], ['healthy', 'fenced', 10]);
  });
});

import assert from 'node:assert/strict';
import {beforeEach, describe, it} from 'node:test';

import type {Heartbeat} from '../../src/heartbeat';
import {Registry} from '../../src/monitor';
import type {Clock, Transition} from '../../src/monitor';

class FakeClock implements Clock {
  time = 0;
  private timers = new Map<number, {at: number, ms: number, fn: () => void}>();
  private next = 1;
  mono = () => this.time;
  wall = () => 1_700_000_000_000 + this.time;
  setTimer = (fn: () => void, ms: number) => {
    const id = this.next++;
    this.timers.set(id, {at: this.time + ms, ms, fn});
    return id;
  };
  refreshTimer = (id: unknown) => {
    const timer = this.timers.get(id as number);
    if (timer !== undefined)
      timer.at = this.time + timer.ms;
  };
  clearTimer = (id: unknown) => {
    this.timers.delete(id as number);
  };
  advance(ms: number) {
    const end = this.time + ms;
    for (;;) {
      const due = [...this.timers].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (due === undefined)
        break;
      this.timers.delete(due[0]);
      this.time = due[1].at;
      due[1].fn();
    }
    this.time = end;
  }
}

const beat = (name: string, extra: Partial<Heartbeat> = {}): Heartbeat => ({v: 1, kind: 'heartbeat', name, pid: 100, ports: [3306], interval: 1, probeTimeout: 3, seq: 1, sentAt: 0, probeMs: 1, ...extra});

describe('Registry state machine', () => {
  let clock: FakeClock;
  let fenced: Map<string, ReadonlyArray<number>>;
  let transitions: Array<Transition>;
  let refusals: Array<string>;
  let registry: Registry;

  beforeEach(() => {
    clock = new FakeClock();
    fenced = new Map();
    transitions = [];
    refusals = [];
    registry = new Registry({timeoutMs: 10_000, recover: 3, protectPorts: new Set([22]), maxReporters: 2}, {
      fence: (name, ports) => fenced.set(name, ports),
      unfence: name => fenced.delete(name),
      transition: t => transitions.push(t),
      log: () => {},
      refuse: (_key, message) => refusals.push(message),
    }, clock);
  });

  const states = () => Object.fromEntries([...registry.reporters.values()].map(r => [r.name, r.state]));

  it('fences at the deadline, not before', () => {
    registry.heartbeat(beat('mysql'));
    clock.advance(9_999);
    assert.deepEqual(states(), {mysql: 'healthy'});
    clock.advance(1);
    assert.deepEqual(states(), {mysql: 'fenced'});
    assert.deepEqual(fenced.get('mysql'), [3306]);
    assert.equal(registry.reporters.get('mysql')?.fenceCount, 1);
  });

  it('each heartbeat pushes the deadline back', () => {
    registry.heartbeat(beat('mysql'));
    for (let i = 0; i < 5; i++) {
      clock.advance(9_000);
      registry.heartbeat(beat('mysql'));
    }
    assert.deepEqual(states(), {mysql: 'healthy'});
  });

  it('lifts a fence only after --recover consecutive heartbeats', () => {
    registry.heartbeat(beat('mysql'));
    clock.advance(20_000);
    registry.heartbeat(beat('mysql'));
    clock.advance(1_000);
    registry.heartbeat(beat('mysql'));
    assert.deepEqual(states(), {mysql: 'fenced'});
    clock.advance(1_000);
    registry.heartbeat(beat('mysql'));
    assert.deepEqual(states(), {mysql: 'healthy'});
    assert.equal(fenced.size, 0);
    assert.equal(registry.reporters.get('mysql')?.flapCount, 1);
  });

  it('a gap longer than --timeout restarts the recovery count', () => {
    registry.heartbeat(beat('mysql'));
    clock.advance(10_000);
    registry.heartbeat(beat('mysql'));
    registry.heartbeat(beat('mysql'));
    clock.advance(10_001);
    registry.heartbeat(beat('mysql'));
    assert.deepEqual(states(), {mysql: 'fenced'});
    registry.heartbeat(beat('mysql'));
    registry.heartbeat(beat('mysql'));
    assert.deepEqual(states(), {mysql: 'healthy'});
  });

  it('never fences a protected port, and says so', () => {
    registry.heartbeat(beat('evil', {ports: [22, 8080]}));
    clock.advance(10_000);
    assert.deepEqual(fenced.get('evil'), [8080]);
    assert.match(refusals[0] ?? '', /protected port\(s\) 22/);
  });

  it('goodbye forgets a healthy reporter, never lifts a fence, and needs the right pid', () => {
    registry.heartbeat(beat('a'));
    registry.goodbye({v: 1, kind: 'goodbye', name: 'a', pid: 999});
    assert.deepEqual(states(), {a: 'healthy'});
    registry.goodbye({v: 1, kind: 'goodbye', name: 'a', pid: 100});
    assert.deepEqual(states(), {});
    clock.advance(20_000);
    assert.equal(fenced.size, 0);

    registry.heartbeat(beat('b'));
    clock.advance(10_000);
    registry.goodbye({v: 1, kind: 'goodbye', name: 'b', pid: 100});
    assert.deepEqual(states(), {b: 'fenced'});
    assert.ok(fenced.has('b'));
  });

  it('unblock overrides until the next heartbeat, which makes it healthy at once', () => {
    registry.heartbeat(beat('mysql'));
    clock.advance(10_000);
    assert.deepEqual(registry.unblock({v: 1, kind: 'unblock', name: 'mysql', pid: 5, user: 'root'}), ['mysql']);
    assert.deepEqual(states(), {mysql: 'overridden'});
    assert.equal(fenced.size, 0);
    clock.advance(3_600_000);
    assert.deepEqual(states(), {mysql: 'overridden'});
    registry.heartbeat(beat('mysql'));
    assert.deepEqual(states(), {mysql: 'healthy'});
    clock.advance(10_000);
    assert.deepEqual(states(), {mysql: 'fenced'});
  });

  it('unblock --all lifts every fence', () => {
    registry.heartbeat(beat('a'));
    registry.heartbeat(beat('b'));
    clock.advance(10_000);
    assert.deepEqual(registry.unblock({v: 1, kind: 'unblock', all: true, pid: 5, user: 'root'}).sort(), ['a', 'b']);
    assert.equal(fenced.size, 0);
  });

  it('refuses new reporters beyond --max-reporters', () => {
    registry.heartbeat(beat('a'));
    registry.heartbeat(beat('b'));
    registry.heartbeat(beat('c'));
    assert.deepEqual(Object.keys(states()), ['a', 'b']);
    assert.match(refusals.join('\n'), /--max-reporters/);
  });

  it('adopts a previous snapshot: fences kept, healthy ones get a fresh timeout', () => {
    registry.adopt([
      {...registry.snapshot()[0], name: 'old', pid: 1, ports: [80], state: 'fenced', lastHeartbeatAt: 0, fencedSince: 0, overriddenAt: null, overriddenBy: null, fenceCount: 1, flapCount: 0, heartbeats: 5, lastProbeMs: 1, interval: 1, probeTimeout: 3, reason: 'x'},
      {name: 'fine', pid: 2, ports: [81], state: 'healthy', lastHeartbeatAt: 0, fencedSince: null, overriddenAt: null, overriddenBy: null, fenceCount: 0, flapCount: 0, heartbeats: 5, lastProbeMs: 1, interval: 1, probeTimeout: 3, reason: 'x'},
    ]);
    assert.deepEqual(fenced.get('old'), [80]);
    clock.advance(9_999);
    assert.deepEqual(states(), {old: 'fenced', fine: 'healthy'});
    clock.advance(1);
    assert.deepEqual(states(), {old: 'fenced', fine: 'fenced'});
    assert.equal(transitions.filter(t => t.state === 'fenced').length, 1);
  });
});

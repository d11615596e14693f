import assert from 'node:assert/strict';
import {describe, it} from 'node:test';

import {step} from '../../src/monitor/lifecycle';
import type {Rejoin} from '../../src/heartbeat';
import type {Life, LifeEvent, Step} from '../../src/monitor/lifecycle';

const config = {timeoutMs: 10_000, recover: 3};
const healthy = (until: number): Life => ({state: 'healthy', until});
const fenced = (streak = 0, lastSentAt: number | null = null, voiceUntil: number | null = null): Life => ({state: 'fenced', since: 5, streak, lastSentAt, voiceUntil});
const overridden: Life = {state: 'overridden', at: 7, by: 'root (pid 1)'};
const beat = (now: number, sentAt: number, until: number, rejoin: Rejoin = {mode: 'auto'}): LifeEvent => ({type: 'heartbeat', now, sentAt, until, rejoin});

type Row = [string, Life, LifeEvent, Partial<Step>];

// One row per (state, event): what the reporter becomes, and what an operator would see change.
const table: Array<Row> = [
  ['healthy + heartbeat moves the deadline', healthy(10_000), beat(1_000, 1_000, 11_000), {life: healthy(11_000), change: null}],
  ['healthy + an older heartbeat never shortens it', healthy(12_000), beat(1_000, 1_000, 11_000), {life: healthy(12_000), change: null}],
  ['healthy + stale heartbeat (sat in the FIFO) is ignored', healthy(10_000), beat(20_000, 5_000, 15_000), {life: healthy(10_000), change: null, note: 'stale'}],
  ['healthy + deadline not yet due', healthy(10_000), {type: 'deadline', now: 9_999, wall: 1, silentMs: 9_999}, {life: healthy(10_000), change: null, note: 'not-due'}],
  ['healthy + deadline due fences', healthy(10_000), {type: 'deadline', now: 10_000, wall: 42, silentMs: 10_000}, {life: {state: 'fenced', since: 42, streak: 0, lastSentAt: null, voiceUntil: null}, change: {to: 'fenced', reason: 'no heartbeat for 10.0 s'}}],
  ['healthy + deadline due, with the reporter\'s own words: they are the reason', healthy(10_000), {type: 'deadline', now: 10_000, wall: 42, silentMs: 10_000, said: 'probe of /var/lib/mysql timed out after 3.0 s; nvme1n1: 14 requests in flight, none completed for 4.0 s'},
    {life: {state: 'fenced', since: 42, streak: 0, lastSentAt: null, voiceUntil: null}, change: {to: 'fenced', reason: 'no heartbeat for 10.0 s: probe of /var/lib/mysql timed out after 3.0 s; nvme1n1: 14 requests in flight, none completed for 4.0 s'}}],
  ['healthy + unblock: nothing to lift', healthy(10_000), {type: 'unblock', wall: 1, by: 'root'}, {life: healthy(10_000), change: null, note: 'nothing-to-lift'}],
  ['fenced + first fresh heartbeat starts recovery', fenced(), beat(30_000, 30_000, 40_000), {life: fenced(1, 30_000), change: null, note: 'recovering'}],
  ['fenced + consecutive heartbeat counts', fenced(1, 30_000), beat(31_000, 31_000, 41_000), {life: fenced(2, 31_000), change: null, note: 'recovering'}],
  ['fenced + the --recover-th heartbeat lifts the fence', fenced(2, 31_000), beat(32_000, 32_000, 42_000), {life: healthy(42_000), change: {to: 'healthy', reason: '3 consecutive heartbeats'}}],
  ['fenced + a gap over --timeout restarts the count', fenced(2, 31_000), beat(50_000, 41_001, 51_001), {life: fenced(1, 41_001), change: null, note: 'recovering'}],
  ['fenced + a replayed heartbeat does not count twice', fenced(1, 31_000), beat(31_500, 31_000, 41_000), {life: fenced(1, 31_000), change: null, note: 'recovering'}],
  ['fenced + stale heartbeat never opens', fenced(2, 31_000), beat(60_000, 32_000, 42_000), {life: fenced(2, 31_000), change: null, note: 'stale'}],
  ['fenced + a heartbeat sent before the fence began (it waited in the FIFO) counts for nothing', fenced(), beat(9_000, 4, 10_004), {life: fenced(), change: null, note: 'before-fence'}],
  ['healthy + the deadline the kernel holds ran out first: fenced, though the registry\'s is later', healthy(12_000), {type: 'deadline', now: 10_000, wall: 42, silentMs: 10_000, held: 9_980}, {life: {state: 'fenced', since: 42, streak: 0, lastSentAt: null, voiceUntil: null}, change: {to: 'fenced', reason: 'no heartbeat for 10.0 s'}}],
  ['healthy + the kernel\'s deadline not yet due either', healthy(12_000), {type: 'deadline', now: 9_000, wall: 42, silentMs: 9_000, held: 9_980}, {life: healthy(12_000), change: null, note: 'not-due'}],
  // Rejoin conditions (config.recover = 3): once the disks are proven, the condition decides.
  ['fenced, manual: disks proven, still fenced: waiting for an operator', fenced(2, 31_000), beat(32_000, 32_000, 42_000, {mode: 'manual'}), {life: fenced(3, 32_000), change: null, note: 'waiting-operator'}],
  ['fenced, program: disks proven, the program says not yet', fenced(2, 31_000), beat(32_000, 32_000, 42_000, {mode: 'program', answer: 'none', startedAt: 31_900, reason: 'still a primary'}), {life: fenced(3, 32_000), change: null, note: 'waiting-program'}],
  ['fenced, program: an answer from a run that began before the fence counts for nothing', fenced(2, 31_000), beat(32_000, 32_000, 42_000, {mode: 'program', answer: 'clients', startedAt: 4, reason: 'ok'}), {life: fenced(3, 32_000), change: null, note: 'waiting-program'}],
  ['fenced, program: voice gives the coordinator back, clients stay fenced', fenced(2, 31_000), beat(32_000, 32_000, 42_000, {mode: 'program', answer: 'voice', startedAt: 31_900, reason: 'demoted'}),
    {life: fenced(3, 32_000, 42_000), change: {to: 'fenced', reason: 'coordinator reachable again, clients still fenced: rejoin program: voice: demoted'}}],
  ['fenced with its voice + voice again: the voice\'s deadline moves', fenced(3, 32_000, 42_000), beat(33_000, 33_000, 43_000, {mode: 'program', answer: 'voice', startedAt: 32_900}), {life: fenced(4, 33_000, 43_000), change: null, note: 'waiting-program'}],
  ['fenced with its voice + clients: healthy', fenced(3, 32_000, 42_000), beat(33_000, 33_000, 43_000, {mode: 'program', answer: 'clients', startedAt: 32_900, reason: 'streaming from pg2'}), {life: healthy(43_000), change: {to: 'healthy', reason: 'rejoin program: clients: streaming from pg2'}}],
  ['fenced with its voice + none: the voice is cut again', fenced(3, 32_000, 42_000), beat(33_000, 33_000, 43_000, {mode: 'program', answer: 'none', startedAt: 32_900, reason: 'primary again?'}), {life: fenced(4, 33_000), change: {to: 'fenced', reason: 'coordinator cut again: rejoin program: none: primary again?'}}],
  ['fenced with its voice + its heartbeats stop: the voice is cut at their deadline', fenced(3, 32_000, 42_000), {type: 'deadline', now: 42_000, wall: 50, silentMs: 10_000}, {life: fenced(0, null), change: {to: 'fenced', reason: 'coordinator cut again: no heartbeat for 10.0 s'}}],
  ['fenced + deadline: stays fenced', fenced(), {type: 'deadline', now: 1e9, wall: 1, silentMs: 1}, {life: fenced(), change: null, note: 'not-due'}],
  ['fenced + unblock overrides', fenced(), {type: 'unblock', wall: 99, by: 'root (pid 5)'}, {life: {state: 'overridden', at: 99, by: 'root (pid 5)'}, change: {to: 'overridden', reason: 'unblock by root (pid 5)'}}],
  ['overridden + heartbeat is healthy at once', overridden, beat(1_000, 1_000, 11_000), {life: healthy(11_000), change: {to: 'healthy', reason: 'heartbeat after override'}}],
  ['overridden + stale heartbeat is ignored', overridden, beat(20_000, 1_000, 11_000), {life: overridden, change: null, note: 'stale'}],
  ['overridden + deadline: no expiry', overridden, {type: 'deadline', now: 1e12, wall: 1, silentMs: 1e12}, {life: overridden, change: null, note: 'not-due'}],
  ['overridden + unblock: nothing to lift', overridden, {type: 'unblock', wall: 1, by: 'x'}, {life: overridden, change: null, note: 'nothing-to-lift'}],
];

describe('reporter lifecycle: one transition function', () => {
  for (const [name, life, event, expected] of table) {
    it(name, () => {
      const result = step(life, event, config);
      assert.deepEqual(result.life, expected.life);
      assert.deepEqual(result.change, expected.change);
      if ('note' in expected)
        assert.equal(result.note, expected.note);
    });
  }

  it('--recover=1 lifts on the first fresh heartbeat', () => {
    assert.deepEqual(step(fenced(), beat(10, 10, 10_010), {timeoutMs: 10_000, recover: 1}).change, {to: 'healthy', reason: '1 consecutive heartbeat'});
  });
});

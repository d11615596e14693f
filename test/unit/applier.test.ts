import assert from 'node:assert/strict';
import {beforeEach, describe, it} from 'node:test';

import type {ApplyResult, DesiredReporter, Firewall, KernelView, ReleaseResult} from '../../src/fencing';
import {Applier} from '../../src/monitor/applier';
import {FakeClock} from '../helpers/clock';

/** Records every call; answers what the test tells it to. */
class FakeFirewall implements Firewall {
  readonly name = 'nftables' as const;
  readonly holdsDeadlines = true;
  calls: Array<string> = [];
  applied: Array<ReadonlyArray<DesiredReporter>> = [];
  failNext = 0;
  checkOk = true;
  inFlight = 0;
  maxInFlight = 0;
  gates: Array<() => void> = [];
  hold = false;

  async inspect(): Promise<KernelView | null> {
    return {ports: new Map(), isolated: new Map()};
  }

  private async enter(): Promise<void> {
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    if (this.hold)
      await new Promise<void>(resolve => this.gates.push(resolve));
  }

  async apply(desired: ReadonlyArray<DesiredReporter>): Promise<ApplyResult> {
    this.calls.push('apply');
    await this.enter();
    this.inFlight -= 1;
    if (this.failNext > 0) {
      this.failNext -= 1;
      return {ok: false, detail: 'broken'};
    }
    this.applied.push(desired);
    return {ok: true, newlyFenced: [], earlyMs: 0};
  }

  async release(ports: {clients: ReadonlyArray<number>, voice: ReadonlyArray<number>}): Promise<ReleaseResult> {
    return {opened: [...ports.clients], expired: [], voiceOpened: [...ports.voice], voiceExpired: []};
  }

  async check(): Promise<boolean> {
    this.calls.push('check');
    await this.enter();
    this.inFlight -= 1;
    return this.checkOk;
  }

  onDrift(): void {}

  async close(): Promise<void> {}
}

/** Lets promise callbacks run between fake-clock steps. */
const flush = () => new Promise(resolve => setImmediate(resolve));

describe('Applier: the one serial loop that owns the firewall', () => {
  let clock: FakeClock;
  let firewall: FakeFirewall;
  let desired: Array<DesiredReporter>;
  let results: Array<ApplyResult>;
  let applier: Applier;

  beforeEach(() => {
    clock = new FakeClock();
    firewall = new FakeFirewall();
    desired = [{name: 'a', ports: [80], arm: {state: 'armed', until: 10_000}, isolate: [], voice: {state: 'armed', until: 10_000}}];
    results = [];
    applier = new Applier({firewall, desired: () => desired, clock, reconcileMs: 10_000, onApplied: r => results.push(r)});
  });

  const step = async (ms: number) => {
    clock.advance(ms);
    await flush();
    await flush();
  };

  it('a fence or unfence goes at once; a burst of them is one apply', async () => {
    applier.schedule('now');
    applier.schedule('now');
    applier.schedule('now');
    await step(0);
    assert.deepEqual(firewall.calls, ['apply']);
  });

  it('re-arms wait at most 100 ms to share one transaction', async () => {
    applier.schedule('rearm');
    await step(50);
    applier.schedule('rearm');
    await step(49);
    assert.deepEqual(firewall.calls, []);
    await step(1);
    assert.deepEqual(firewall.calls, ['apply']);
    applier.schedule('rearm');
    applier.schedule('now');
    await step(0);
    assert.deepEqual(firewall.calls, ['apply', 'apply'], 'an urgent change takes pending re-arms along');
  });

  it('never runs two applies, or an apply and a read-back, at once', async () => {
    firewall.hold = true;
    applier.schedule('now');
    await step(0);
    applier.schedule('now');
    clock.advance(10_000);
    await flush();
    assert.equal(firewall.inFlight, 1);
    firewall.hold = false;
    for (const release of firewall.gates.splice(0))
      release();
    await step(0);
    await step(0);
    assert.equal(firewall.maxInFlight, 1);
    assert.deepEqual(firewall.calls.slice(0, 2), ['apply', 'apply']);
  });

  it('retries a failed apply with backoff, then succeeds', async () => {
    firewall.failNext = 3;
    applier.schedule('now');
    await step(0);
    assert.equal(firewall.calls.length, 1);
    await step(249);
    assert.equal(firewall.calls.length, 1);
    await step(1);
    assert.equal(firewall.calls.length, 2);
    await step(500);
    assert.equal(firewall.calls.length, 3);
    await step(1_000);
    assert.equal(firewall.calls.length, 4);
    assert.deepEqual(results.map(r => r.ok), [false, false, false, true]);
    await step(60_000);
    assert.equal(firewall.calls.filter(c => c === 'apply').length, 4, 'no apply without a change');
  });

  it('checkSoon() reads back at once, skipping the backoff (a new writer is ready, or the table was deleted)', async () => {
    firewall.failNext = 2;
    applier.schedule('now');
    await step(0);
    await step(250);
    assert.equal(firewall.calls.length, 2);
    firewall.checkOk = false;
    applier.checkSoon();
    await step(0);
    assert.deepEqual(firewall.calls, ['apply', 'apply', 'check', 'apply']);
  });

  it('reads the kernel back on its cadence; drift means an apply', async () => {
    applier.startReconciling();
    await step(10_000);
    assert.deepEqual(firewall.calls, ['check']);
    firewall.checkOk = false;
    await step(10_000);
    assert.deepEqual(firewall.calls, ['check', 'check', 'apply']);
  });

  it('stop waits for the apply in flight, writes the final state once, and schedules nothing after', async () => {
    firewall.hold = true;
    applier.schedule('now');
    await step(0);
    const final: Array<DesiredReporter> = [{name: 'a', ports: [80], arm: {state: 'open'}, isolate: [], voice: {state: 'open'}}];
    const stopped = applier.stop(final);
    firewall.hold = false;
    for (const release of firewall.gates.splice(0))
      release();
    assert.deepEqual(await stopped, {ok: true, newlyFenced: [], earlyMs: 0});
    assert.equal(firewall.applied.at(-1), final);
    applier.schedule('now');
    await step(1_000);
    assert.equal(firewall.calls.length, 2);
  });
});

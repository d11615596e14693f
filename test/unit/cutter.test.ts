import assert from 'node:assert/strict';
import {describe, it} from 'node:test';

import {MonotonicNs, SocketCutter, cutterArgv, formatCommand, parseCutterLine} from '../../src/fencing';
import type {CutReport} from '../../src/fencing';
import type {StreamChild} from '../../src/spawn';

/** A child that records what is written to it and says what the test tells it to. */
function fakeChild() {
  const writes: Array<string> = [];
  const listeners: Array<(chunk: Buffer) => void> = [];
  let exit!: (code: number | null) => void;
  const exited = new Promise<number | null>(resolve => {
    exit = resolve;
  });
  let killed = false;
  const child: StreamChild = {
    id: 1,
    ready: Promise.resolve(),
    exited,
    pid: () => 4242,
    write: text => {
      writes.push(text);
    },
    onData: listener => {
      listeners.push(listener);
    },
    kill: () => {
      killed = true;
    },
  };
  return {child, writes, say: (text: string) => listeners.forEach(l => l(Buffer.from(text))), exit, killed: () => killed};
}

const turn = () => new Promise(resolve => setImmediate(resolve));

describe('socket cutter: commands and output lines', () => {
  it('formats each command as one line, deadlines in nanoseconds', () => {
    assert.equal(formatCommand({op: 'arm', kind: 'in', port: 5432, atNs: 1234567890123456789n}), 'in 5432 1234567890123456789\n');
    assert.equal(formatCommand({op: 'arm', kind: 'out', port: 2379, atNs: 0n}), 'out 2379 0\n');
    assert.equal(formatCommand({op: 'arm', kind: 'in', port: 1, atNs: -5n}), 'in 1 0\n');
    assert.equal(formatCommand({op: 'clear', kind: 'out', port: 65535}), 'clear out 65535\n');
    assert.equal(formatCommand({op: 'quit'}), 'quit\n');
  });

  it('refuses what is not a TCP port', () => {
    for (const port of [0, 65536, 1.5, Number.NaN, -80])
      assert.throws(() => formatCommand({op: 'clear', kind: 'in', port}), /not a TCP port/);
  });

  it('parses every line the script prints', () => {
    assert.deepEqual(parseCutterLine('ready destroy=ok'), {type: 'ready', destroy: {ok: true}});
    assert.deepEqual(parseCutterLine('ready destroy=unsupported Operation not supported'), {type: 'ready', destroy: {ok: false, detail: 'Operation not supported'}});
    assert.deepEqual(parseCutterLine('cut in 3306 12'), {type: 'cut', kind: 'in', port: 3306, sockets: 12});
    assert.deepEqual(parseCutterLine('cut out 2379 0'), {type: 'cut', kind: 'out', port: 2379, sockets: 0});
    assert.deepEqual(parseCutterLine('error destroy: Operation not permitted (3 sockets)'), {type: 'error', text: 'destroy: Operation not permitted (3 sockets)'});
    assert.deepEqual(parseCutterLine('cut sideways 1 1'), {type: 'unknown', text: 'cut sideways 1 1'});
  });

  it('runs perl with the syscall numbers of the architecture, then errno and flag numbers, then the handover name', () => {
    const x64 = cutterArgv('x64', 'ebsmon-cutter')!;
    assert.deepEqual([x64[0], x64[1], ...x64.slice(3)], ['perl', '-e', '--', '151', '228', '2', '116', '11', '98', '2048', 'ebsmon-cutter']);
    assert.deepEqual(cutterArgv('arm64', 'x')!.slice(4, 6), ['230', '113']);
    assert.equal(cutterArgv('ia32', 'x'), null);
  });

  it('loads no perl module: nothing is read from disk after start-up', () => {
    const script = cutterArgv('x64', 'x')![2]!;
    assert.doesNotMatch(script, /^\s*(use|require|do)\b/m);
    assert.doesNotMatch(script, /\b(use|require) [A-Z]/);
  });

  it('converts performance.now() milliseconds to CLOCK_MONOTONIC nanoseconds from one reading', () => {
    const clock = new MonotonicNs(5_000_000_000n, 1000);
    assert.equal(clock.at(1000), 5_000_000_000n);
    assert.equal(clock.at(2500.25), 6_500_250_000n);
    assert.equal(clock.at(999), 4_999_000_000n);
  });

  it('reads the clock the script reads: hrtime and performance.now() agree', () => {
    const clock = MonotonicNs.sample();
    const ns = process.hrtime.bigint();
    const ms = performance.now();
    const drift = Number(clock.at(ms) - ns) / 1e6;
    assert.ok(Math.abs(drift) < 5, `drift ${drift} ms`);
  });
});

describe('SocketCutter: one write per turn, the last command per port wins', () => {
  it('coalesces a turn of commands into one write, each port once, as last given', async () => {
    const fake = fakeChild();
    const cutter = new SocketCutter(fake.child, new MonotonicNs(1_000_000_000n, 0));
    fake.say('ready destroy=ok\n');
    await cutter.ready;
    cutter.arm('in', 80, 100);
    cutter.arm('in', 443, 100);
    cutter.arm('in', 80, 200);
    cutter.clear('out', 2379);
    cutter.cutNow('in', 443);
    assert.deepEqual(fake.writes, [], 'nothing until the turn ends');
    await turn();
    assert.deepEqual(fake.writes, ['in 80 1200000000\nclear out 2379\nin 443 0\n']);
    await turn();
    assert.equal(fake.writes.length, 1, 'no empty writes');
  });

  it('quit goes at once and drops what was pending; later commands are dropped', async () => {
    const fake = fakeChild();
    const cutter = new SocketCutter(fake.child, new MonotonicNs(0n, 0));
    fake.say('ready destroy=ok\n');
    cutter.arm('in', 80, 5);
    cutter.quit();
    cutter.arm('in', 81, 5);
    assert.deepEqual(fake.writes, ['quit\n']);
    await turn();
    assert.deepEqual(fake.writes, ['quit\n']);
  });

  it('reports readiness, warnings before it, cuts and errors after it, from lines split anywhere', async () => {
    const fake = fakeChild();
    const cutter = new SocketCutter(fake.child);
    const cuts: Array<CutReport> = [];
    const errors: Array<string> = [];
    cutter.onCut(cut => cuts.push(cut));
    cutter.onError(text => errors.push(text));
    fake.say('error mlockall: Operation not permitted\nready destroy=unsupp');
    fake.say('orted Operation not supported\ncut in 80 3\ncut o');
    fake.say('ut 2379 1\nerror IPv6 dump: Address family not supported by protocol (1 sockets)\n');
    await cutter.ready;
    assert.equal(cutter.supported, false);
    assert.equal(cutter.unsupportedDetail, 'Operation not supported');
    assert.deepEqual(cutter.warnings, ['mlockall: Operation not permitted']);
    assert.deepEqual(cuts, [{kind: 'in', port: 80, sockets: 3}, {kind: 'out', port: 2379, sockets: 1}]);
    assert.deepEqual(errors, ['IPv6 dump: Address family not supported by protocol (1 sockets)']);
  });

  it('says when it is gone, and why it never became ready', async () => {
    const fake = fakeChild();
    const cutter = new SocketCutter(fake.child);
    const exits: Array<number | null> = [];
    cutter.onExit(code => exits.push(code));
    fake.say('error handover bind: Permission denied\n');
    fake.exit(1);
    await assert.rejects(cutter.ready, /exited \(1\) before it was ready: handover bind: Permission denied/);
    assert.deepEqual(exits, [1]);
    assert.equal(cutter.running, false);
    cutter.arm('in', 80, 0);
    await turn();
    assert.deepEqual(fake.writes, []);
  });

  it('is supported when the warm-up destroyed its own socket', async () => {
    const fake = fakeChild();
    const cutter = new SocketCutter(fake.child);
    fake.say('ready destroy=ok\n');
    await cutter.ready;
    assert.equal(cutter.supported, true);
    assert.equal(cutter.unsupportedDetail, null);
    assert.equal(cutter.pid, 4242);
    cutter.kill();
    assert.equal(fake.killed(), true);
  });
});

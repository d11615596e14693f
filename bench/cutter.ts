// The socket cutter's figures: deadline -> a waiting client's reset, 1000
// ports with 10 waiting clients each cut at one deadline, and what holding
// 1000 re-armed deadlines costs. Everything runs in the bench's own
// namespaces. Callable from bench/run.ts as a step, or alone:
//   node --import tsx bench/cutter.ts
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {Driver, Waiters, cutters, gone, inMs, ms} from '../test/helpers/cutter';
import {HELPER, Proc} from '../test/helpers/proc';
import {Teardown, createNetRig, inNs, waitFor} from '../test/helpers/rig';

import {cpuTicks, fmt, line, results, rssKb, stat} from './stats';

const PORT = 7700;
const MANY_FIRST = 21_000;
const MANY_PORTS = 1000;
const PER_PORT = 10;

const sleep = (msToWait: number) => new Promise(resolve => setTimeout(resolve, msToWait));

function silent(ns: string, first: number, count: number): Proc {
  const argv = inNs(ns, [process.execPath, HELPER('silent.mjs'), String(first), String(count)]);
  return new Proc(spawn(argv[0]!, argv.slice(1), {stdio: ['ignore', 'pipe', 'pipe']}));
}

export async function cutterFigures(dir: string, teardown: Teardown, {runs = 15, holdSeconds = 20}: {runs?: number, holdSeconds?: number} = {}): Promise<void> {
  const rig = createNetRig(teardown);
  const procs: Array<Proc> = [];
  const track = <T extends Proc>(proc: T): T => {
    procs.push(proc);
    return proc;
  };
  try {
    const servers = [track(silent(rig.srv, PORT, 1)), track(silent(rig.srv, MANY_FIRST, MANY_PORTS))];
    await waitFor('the silent servers', () => servers.every(s => s.stdout.includes('listening')), 60_000);
    const driver = Driver.start(rig.srv, path.join(dir, 'cutter-spawn'));
    track(driver.proc);
    const {pid} = await driver.ready();

    // One remote client waiting on one port, cut at a deadline 500 ms ahead.
    const after: Array<number> = [];
    for (let run = 0; run < runs; run++) {
      const waiting = Waiters.start(rig.cli, rig.srvV4, PORT);
      track(waiting.proc);
      await waiting.connected();
      const deadline = inMs(500);
      await driver.arm('in', PORT, deadline);
      const [end] = await waitFor('the reset', () => waiting.ends().length > 0 && waiting.ends(), 10_000);
      after.push(ms(end!.ns - deadline));
      await waiting.proc.exited;
    }
    const one = stat(after);
    line('cutter: deadline -> waiting client reset', fmt(one, 'ms', 2));
    results.cutterResetAfterDeadlineMs = one;

    // 1000 ports, 10 clients each, one deadline: when each client saw its reset.
    const many = Waiters.start(rig.cli, rig.srvV4, MANY_FIRST, {ports: MANY_PORTS, perPort: PER_PORT});
    track(many.proc);
    await many.connected(180_000);
    const ticks0 = cpuTicks(pid);
    const deadline = inMs(2_000);
    await driver.send({armMany: 'in', port: MANY_FIRST, count: MANY_PORTS, atNs: String(deadline)});
    const total = MANY_PORTS * PER_PORT;
    const ends = await waitFor('every client reset', () => many.ends().length >= total && many.ends(), 120_000);
    const cuts = await waitFor('every cut line', () => {
      const found = driver.events().filter(e => e.cut !== undefined && e.cut.port >= MANY_FIRST && e.cut.port < MANY_FIRST + MANY_PORTS);
      return found.length === MANY_PORTS && found;
    }, 30_000);
    const sweepTicks = cpuTicks(pid) - ticks0;
    const resets = ends.filter(e => e.word === 'reset').map(e => ms(e.ns - deadline));
    const r = stat(resets);
    line(`cutter: ${MANY_PORTS} ports x ${PER_PORT} clients at once`, `resets ${resets.length}/${total}, first ${r.min.toFixed(1)} ms, median ${r.median.toFixed(1)} ms, last ${r.max.toFixed(1)} ms after the deadline; spread ${(r.max - r.min).toFixed(1)} ms`);
    const lastLine = Math.max(...cuts.map(e => ms(BigInt(e.at!) - deadline)));
    const destroyed = cuts.reduce((n, e) => n + e.cut!.sockets, 0);
    line('  cutter finished (last cut line read)', `${lastLine.toFixed(1)} ms after the deadline, ${destroyed} sockets destroyed, ${sweepTicks * 10} ms CPU`);
    results.cutterMany = {ports: MANY_PORTS, perPort: PER_PORT, resetsMs: r, resets: resets.length, lastLineMs: lastLine, destroyed, cpuMs: sweepTicks * 10};
    await many.proc.stop();

    // The same, with the ports' deadlines spread over a second (reporters' heartbeats are): each reset against its own port's deadline.
    const spread = Waiters.start(rig.cli, rig.srvV4, MANY_FIRST, {ports: MANY_PORTS, perPort: PER_PORT});
    track(spread.proc);
    await spread.connected(180_000);
    const spreadTicks0 = cpuTicks(pid);
    const first = inMs(2_000);
    await driver.send({armMany: 'in', port: MANY_FIRST, count: MANY_PORTS, atNs: String(first), spreadMs: 1000});
    const spreadEnds = await waitFor('every client reset', () => spread.ends().length >= total && spread.ends(), 120_000);
    // Both rounds' cut lines: the first round's 1000 and this one's.
    const spreadLines = await waitFor('every cut line', () => {
      const found = driver.events().filter(e => e.cut !== undefined && e.cut.port >= MANY_FIRST && e.cut.port < MANY_FIRST + MANY_PORTS);
      return found.length === 2 * MANY_PORTS && found.slice(MANY_PORTS);
    }, 30_000);
    const spreadCpu = cpuTicks(pid) - spreadTicks0;
    const own = spreadEnds.filter(e => e.word === 'reset').map(e => ms(e.ns - first) - (e.port - MANY_FIRST) * (1000 / MANY_PORTS));
    const o = stat(own);
    const lines = stat(spreadLines.map(e => ms(BigInt(e.at!) - first) - (e.cut!.port - MANY_FIRST) * (1000 / MANY_PORTS)));
    line(`cutter: ${MANY_PORTS} ports x ${PER_PORT}, deadlines over 1 s`, `reset after its own deadline: ${fmt(o, 'ms', 1)}`);
    line('  its cut line read, after its own deadline', `${fmt(lines, 'ms', 1)}; ${spreadCpu * 10} ms CPU`);
    results.cutterSpread = {ports: MANY_PORTS, perPort: PER_PORT, spreadMs: 1000, resetAfterOwnDeadlineMs: o, cutLineAfterOwnDeadlineMs: lines, cpuMs: spreadCpu * 10};
    await spread.proc.stop();

    // 1000 deadlines re-armed every second, 10 ports every 10 ms (reporters' heartbeats spread over the second).
    const holdTicks0 = cpuTicks(pid);
    const started = performance.now();
    let next = 0;
    while (performance.now() - started < holdSeconds * 1000) {
      driver.proc.child.stdin!.write(`${JSON.stringify({armMany: 'in', port: MANY_FIRST + next, count: 10, atNs: String(inMs(10_000))})}\n`);
      next = (next + 10) % MANY_PORTS;
      await sleep(10);
    }
    const elapsed = (performance.now() - started) / 1000;
    const holdCpu = (cpuTicks(pid) - holdTicks0) / elapsed;
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const locked = Number(/^VmLck:\s+(\d+)/m.exec(status)?.[1]);
    line(`cutter: holding ${MANY_PORTS} deadlines re-armed at 1 Hz`, `${holdCpu.toFixed(2)} % of a core, RSS ${(rssKb(pid) / 1024).toFixed(1)} MB (VmLck ${(locked / 1024).toFixed(1)} MB)`);
    results.cutterHold = {ports: MANY_PORTS, cpuPercent: holdCpu, rssKb: rssKb(pid), vmLckKb: locked};
    await driver.send({quit: true});
    await waitFor('the cutter gone', () => gone(pid), 10_000);
  } finally {
    for (const proc of procs.reverse())
      await proc.stop();
    for (const pid of cutters)
      if (!gone(pid))
        process.kill(pid, 'SIGKILL');
  }
}

if (require.main === module) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ebsmon-bench-cutter-'));
  const teardown = new Teardown(dir);
  process.stdout.write(`ebsmon cutter benchmark, ${results.machine as string}\n`);
  void cutterFigures(dir, teardown).finally(() => {
    teardown.dispose();
    fs.rmSync(dir, {recursive: true, force: true});
    process.stdout.write(`${JSON.stringify({cutterResetAfterDeadlineMs: results.cutterResetAfterDeadlineMs, cutterMany: results.cutterMany, cutterSpread: results.cutterSpread, cutterHold: results.cutterHold})}\n`);
  });
}

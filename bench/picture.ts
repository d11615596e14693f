// make bench (BENCH_ONLY=picture): one fence cycle recorded in namespaces, as
// bench/cycles.ts runs them, written as bench/fence-cycle.json and drawn as
// bench/fence-cycle.svg (the README's picture). The reporter's debug log gives
// each heartbeat and its probe latency, the monitor's log the fence going up
// and coming down, watcher.mjs a remote client's outcomes.
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import {HELPER, Proc, ebsmon, reporterIn} from '../test/helpers/proc';
import {createNetRig, waitFor} from '../test/helpers/rig';
import type {LoopVolume, Teardown} from '../test/helpers/rig';

import {line, results} from './stats';
import {renderCycle} from './svg';
import type {CycleRecording} from './svg';

const TIMEOUT = 2;
const RECOVER = 2;
const INTERVAL = 0.5;
const PROBE_TIMEOUT = 0.5;
const PORT = 7700;
/** Healthy time shown before the freeze and after the fence is lifted. */
const MARGIN_MS = 2500;

export const PICTURE = {json: path.join(__dirname, 'fence-cycle.json'), svg: path.join(__dirname, 'fence-cycle.svg')};

const wall = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));
const at = (entry: Record<string, unknown>) => Date.parse(String(entry.timestamp));

export async function recordCycle(volume: LoopVolume, dir: string, teardown: Teardown): Promise<void> {
  const rig = createNetRig(teardown);
  const stateDir = path.join(dir, 'picture');
  const fifo = path.join(stateDir, 'ebsmon.fifo');
  const watched = path.join(volume.mountpoint, 'picture');
  fs.mkdirSync(watched, {recursive: true});
  const procs: Array<Proc> = [];
  try {
    const server = new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, HELPER('server.mjs'), String(PORT)], {stdio: ['ignore', 'pipe', 'pipe']}));
    procs.push(server);
    await waitFor('the server', () => server.stdout.includes('listening'));
    const monitor = ebsmon(['monitor', '--firewall=nftables', `--fifo=${fifo}`, `--state-dir=${stateDir}`, `--timeout=${TIMEOUT}`, `--recover=${RECOVER}`, '--log-format=json'], {ns: rig.srv});
    procs.push(monitor);
    await waitFor('the monitor', () => monitor.logs().some(l => l.message === 'monitor running'));
    const reporter = ebsmon(['report', `--monitor=${watched}`, `--ports=${PORT}`, `--fifo=${fifo}`, `--interval=${INTERVAL}`, `--probe-timeout=${PROBE_TIMEOUT}`, '--log-level=debug', '--log-format=json']);
    procs.push(reporter);
    await waitFor('healthy', () => reporterIn(stateDir, 'picture')?.state === 'healthy');
    const watcher = new Proc(spawn('ip', ['netns', 'exec', rig.cli, process.execPath, HELPER('watcher.mjs'), rig.srvV4, String(PORT)], {stdio: ['ignore', 'pipe', 'pipe']}));
    procs.push(watcher);
    const changes = () => watcher.stdout.split('\n').filter(Boolean).map(l => JSON.parse(l) as {state: string, t: number});
    await waitFor('the watcher connecting', () => changes().at(-1)?.state === 'ok');

    const start = wall();
    await sleep(MARGIN_MS);
    const frozenAt = wall();
    volume.freeze();
    let thawedAt: number;
    try {
      await waitFor('refused', () => changes().some(c => c.t >= frozenAt && c.state === 'refused'), 30_000, 5);
      await sleep(1500);
    } finally {
      thawedAt = wall();
      volume.thaw();
    }
    await waitFor('ok again', () => changes().some(c => c.t >= thawedAt && c.state === 'ok'), 30_000, 5);
    const lifted = await waitFor('the lift logged', () => monitor.logs().find(l => /fence lifted/.test(String(l.message)) && at(l) >= Math.floor(thawedAt)));
    await sleep(MARGIN_MS);
    const end = wall();

    const fenced = monitor.logs().find(l => /fencing ports/.test(String(l.message)) && at(l) >= Math.floor(frozenAt));
    if (fenced === undefined)
      throw new Error(`the monitor did not log the fence: ${monitor.stderr.slice(-2000)}`);
    const rel = (t: number) => Math.round((t - start) * 10) / 10;
    const inWindow = (t: number) => t >= start && t <= end;
    const client = changes();
    // The outcome when the window opens, then every change inside it.
    const before = client.filter(c => c.t < start).at(-1);
    const recording: CycleRecording = {
      recorded: new Date(start).toISOString().slice(0, 10),
      machine: String(results.machine),
      settings: {backend: 'nftables', interval: INTERVAL, timeout: TIMEOUT, recover: RECOVER, probeTimeout: PROBE_TIMEOUT},
      durationMs: rel(end),
      heartbeats: reporter.logs().filter(l => l.message === 'heartbeat sent' && inWindow(at(l))).map(l => ({t: rel(at(l)), probeMs: Number(l.probeMs)})),
      client: [...(before === undefined ? [] : [{t: 0, state: before.state}]), ...client.filter(c => inWindow(c.t)).map(c => ({t: rel(c.t), state: c.state}))],
      probeFailures: reporter.logs().filter(l => /^probe failed/.test(String(l.message)) && inWindow(at(l))).map(l => ({t: rel(at(l))})),
      events: {freeze: rel(frozenAt), fence: rel(at(fenced)), thaw: rel(thawedAt), unfence: rel(at(lifted))},
    };
    fs.writeFileSync(PICTURE.json, `${JSON.stringify(recording, null, 1)}\n`);
    fs.writeFileSync(PICTURE.svg, renderCycle(recording));
    const e = recording.events;
    line('picture: one fence cycle', `freeze ${e.freeze} ms, fence ${e.fence} ms, thaw ${e.thaw} ms, unfence ${e.unfence} ms; ${recording.heartbeats.length} heartbeats; wrote ${path.relative(process.cwd(), PICTURE.svg)}`);
    results.picture = {events: e, heartbeats: recording.heartbeats.length};
  } finally {
    volume.thaw();
    for (const proc of procs.reverse())
      await proc.stop();
  }
}

// Freeze -> fenced and thaw -> unfenced, seen from a remote client, over
// repeated cycles with a real reporter, monitor, loop volume and namespaces.
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import {HELPER, Proc, ebsmon, reporterIn} from '../test/helpers/proc';
import {createNetRig, waitFor} from '../test/helpers/rig';
import type {LoopVolume, Teardown} from '../test/helpers/rig';

import {fmt, line, results, stat} from './stats';

const TIMEOUT = 2;
const RECOVER = 2;
const INTERVAL = 0.5;
const PORT = 7100;

type Change = {state: string, t: number};

export async function freezeThawCycles(volume: LoopVolume, dir: string, teardown: Teardown, cycles = 10): Promise<void> {
  const rig = createNetRig(teardown);
  const stateDir = path.join(dir, 'cycles');
  const fifo = path.join(stateDir, 'ebsmon.fifo');
  const watched = path.join(volume.mountpoint, 'cycles');
  fs.mkdirSync(watched, {recursive: true});
  const procs: Array<Proc> = [];
  const server = new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, HELPER('server.mjs'), String(PORT)], {stdio: ['ignore', 'pipe', 'pipe']}));
  procs.push(server);
  const monitor = ebsmon(['monitor', `--fifo=${fifo}`, `--state-dir=${stateDir}`, `--timeout=${TIMEOUT}`, `--recover=${RECOVER}`, '--log-level=info'], {ns: rig.srv});
  procs.push(monitor);
  const lastHeartbeatAt = () => reporterIn(stateDir, 'cycles')?.lastHeartbeatAt ?? NaN;
  const stateOf = () => reporterIn(stateDir, 'cycles')?.state;
  try {
    await waitFor('the server', () => server.stdout.includes('listening'));
    await waitFor('the monitor', () => fs.existsSync(path.join(stateDir, 'state.json')));
    const reporter = ebsmon(['report', `--monitor=${watched}`, `--ports=${PORT}`, `--fifo=${fifo}`, `--interval=${INTERVAL}`, '--probe-timeout=1']);
    procs.push(reporter);
    await waitFor('healthy', () => stateOf() === 'healthy');
    const watcher = new Proc(spawn('ip', ['netns', 'exec', rig.cli, process.execPath, HELPER('watcher.mjs'), rig.srvV4, String(PORT)], {stdio: ['ignore', 'pipe', 'pipe']}));
    procs.push(watcher);
    const changes = () => watcher.stdout.split('\n').filter(Boolean).map(l => JSON.parse(l) as Change);
    const firstSince = (state: string, t: number) => changes().find(c => c.t >= t && c.state === state);
    await waitFor('the watcher connecting', () => changes().at(-1)?.state === 'ok');

    const freezeToRefused: Array<number> = [];
    const heartbeatToRefused: Array<number> = [];
    const thawToOk: Array<number> = [];
    const liftToOk: Array<number> = [];
    for (let cycle = 0; cycle < cycles; cycle++) {
      const frozenAt = performance.timeOrigin + performance.now();
      volume.freeze();
      try {
        const refused = await waitFor('refused', () => firstSince('refused', frozenAt), 30_000, 2);
        freezeToRefused.push(refused.t - frozenAt - TIMEOUT * 1000);
        heartbeatToRefused.push(refused.t - lastHeartbeatAt() - TIMEOUT * 1000);
      } finally {
        volume.thaw();
      }
      const thawedAt = performance.timeOrigin + performance.now();
      const ok = await waitFor('ok', () => firstSince('ok', thawedAt), 30_000, 2);
      // When the monitor decided to lift: its log line's timestamp (ms).
      const lifted = await waitFor('the lift logged', () => monitor.logs().find(l => /fence lifted/.test(String(l.message)) && Date.parse(String(l.timestamp)) >= Math.floor(thawedAt)));
      liftToOk.push(ok.t - Date.parse(String(lifted.timestamp)));
      thawToOk.push(ok.t - thawedAt - RECOVER * INTERVAL * 1000);
      await waitFor('healthy', () => stateOf() === 'healthy');
    }
    const s1 = stat(freezeToRefused);
    const s2 = stat(heartbeatToRefused);
    const s3 = stat(thawToOk);
    const s4 = stat(liftToOk);
    line(`freeze -> remote refused, minus --timeout=${TIMEOUT}`, fmt(s1, 'ms'));
    line('  last heartbeat -> refused, minus --timeout', fmt(s2, 'ms'));
    line(`thaw -> remote ok, minus --recover x --interval`, fmt(s3, 'ms'));
    line('  lift decided (monitor log, ms) -> remote ok', fmt(s4, 'ms'));
    results.cycles = {cycles, timeout: TIMEOUT, recover: RECOVER, interval: INTERVAL, freezeToRefusedMinusTimeoutMs: s1, lastHeartbeatToRefusedMinusTimeoutMs: s2, thawToOkMinusRecoverMs: s3, liftDecidedToOkMs: s4};
  } finally {
    volume.thaw();
    for (const proc of procs.reverse())
      await proc.stop();
  }
}

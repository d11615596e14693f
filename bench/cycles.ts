// Freeze -> fenced and thaw -> unfenced, seen from a remote client, over
// repeated cycles with a real reporter, monitor, loop volume and namespaces.
import {spawn, spawnSync} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import {parseTable} from '../src/fencing';
import {Waiters, ms, nowNs} from '../test/helpers/cutter';
import {HELPER, Proc, ebsmon, reporterIn} from '../test/helpers/proc';
import {createContainerRig, createNetRig, waitFor} from '../test/helpers/rig';
import type {LoopVolume, Teardown} from '../test/helpers/rig';

import {fmt, line, results, stat} from './stats';

const TIMEOUT = 2;
const RECOVER = 2;
const INTERVAL = 0.5;
const PORT = 7100;

type Change = {state: string, t: number};

export type CycleOptions = {
  backend: 'nftables' | 'iptables';
  /** SIGSTOP the monitor before each freeze: only the kernel can fence (nftables). */
  stopMonitor?: boolean;
  /** The service in a "container" namespace behind a published port (DNAT, then the forward hook). */
  forwarded?: boolean;
  cycles?: number;
};

/** The kernel's own deadline for a port, as `nft list set` shows it: epoch ms, or NaN. */
export function kernelDeadline(ns: string, port: number): number {
  const listing = spawnSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'set', 'inet', 'ebsmon', 'alive'], {encoding: 'utf8'}).stdout;
  // nft reads the kernel at the end of its run, after its start-up: time it from when it returned.
  const at = performance.timeOrigin + performance.now();
  const element = parseTable(`table inet ebsmon {\n${listing.split('\n').slice(1).join('\n')}`)?.alive.get(port);
  return element?.expiresMs === null || element === undefined ? NaN : at + element.expiresMs;
}

export async function freezeThawCycles(volume: LoopVolume, dir: string, teardown: Teardown, {backend, stopMonitor = false, forwarded = false, cycles = 10}: CycleOptions): Promise<void> {
  const label = `${backend}${stopMonitor ? ', monitor SIGSTOPped' : ''}${forwarded ? ', published container port' : ''}`;
  const key = `cycles_${backend}${stopMonitor ? '_stopped' : ''}${forwarded ? '_forwarded' : ''}`;
  const rig = createNetRig(teardown);
  const ctr = forwarded ? createContainerRig(teardown, rig) : null;
  if (ctr !== null)
    spawnSync('ip', ['netns', 'exec', rig.srv, 'nft', `add table ip nat; add chain ip nat pre { type nat hook prerouting priority dstnat; }; add rule ip nat pre tcp dport ${PORT} dnat to ${ctr.v4}:${PORT}`]);
  const stateDir = path.join(dir, key);
  const fifo = path.join(stateDir, 'ebsmon.fifo');
  const watched = path.join(volume.mountpoint, 'cycles');
  fs.mkdirSync(watched, {recursive: true});
  const procs: Array<Proc> = [];
  const server = new Proc(spawn('ip', ['netns', 'exec', ctr?.ns ?? rig.srv, process.execPath, HELPER('server.mjs'), String(PORT)], {stdio: ['ignore', 'pipe', 'pipe']}));
  procs.push(server);
  // A service that accepts a query and never answers, on the same reporter: its waiting clients are the socket cutter's.
  const silent = forwarded ? null : new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, HELPER('silent.mjs'), String(PORT + 1)], {stdio: ['ignore', 'pipe', 'pipe']}));
  if (silent !== null)
    procs.push(silent);
  const monitor = ebsmon(['monitor', `--firewall=${backend}`, `--fifo=${fifo}`, `--state-dir=${stateDir}`, `--timeout=${TIMEOUT}`, `--recover=${RECOVER}`, '--log-level=info'], {ns: rig.srv});
  procs.push(monitor);
  const lastHeartbeatAt = () => reporterIn(stateDir, 'cycles')?.lastHeartbeatAt ?? NaN;
  const stateOf = () => reporterIn(stateDir, 'cycles')?.state;
  try {
    await waitFor('the server', () => server.stdout.includes('listening') && (silent === null || silent.stdout.includes('listening')));
    await waitFor('the monitor', () => fs.existsSync(path.join(stateDir, 'state.json')));
    const reporter = ebsmon(['report', `--monitor=${watched}`, `--ports=${silent === null ? PORT : `${PORT},${PORT + 1}`}`, `--fifo=${fifo}`, `--interval=${INTERVAL}`, '--probe-timeout=1']);
    procs.push(reporter);
    await waitFor('healthy', () => stateOf() === 'healthy');
    const watcher = new Proc(spawn('ip', ['netns', 'exec', rig.cli, process.execPath, HELPER('watcher.mjs'), rig.srvV4, String(PORT)], {stdio: ['ignore', 'pipe', 'pipe']}));
    procs.push(watcher);
    const changes = () => watcher.stdout.split('\n').filter(Boolean).map(l => JSON.parse(l) as Change);
    const firstSince = (state: string, t: number) => changes().find(c => c.t >= t && c.state === state);
    await waitFor('the watcher connecting', () => changes().at(-1)?.state === 'ok');

    const freezeToRefused: Array<number> = [];
    const heartbeatToRefused: Array<number> = [];
    const deadlineToRefused: Array<number> = [];
    const thawToOk: Array<number> = [];
    const liftToOk: Array<number> = [];
    const freezeToReset: Array<number> = [];
    for (let cycle = 0; cycle < cycles; cycle++) {
      const waiting = silent === null ? null : Waiters.start(rig.cli, rig.srvV4, PORT + 1);
      if (waiting !== null) {
        procs.push(waiting.proc);
        await waiting.connected();
      }
      if (stopMonitor)
        monitor.kill('SIGSTOP');
      const frozenAt = performance.timeOrigin + performance.now();
      const frozenNs = nowNs();
      volume.freeze();
      try {
        // The kernel says when the deadline is (the monitor's snapshot is stale while it is stopped),
        // once the last heartbeat before the freeze has been re-armed: within a batch (0.1 s).
        await new Promise(resolve => setTimeout(resolve, 500));
        const deadline = backend === 'nftables' ? kernelDeadline(rig.srv, PORT) : NaN;
        if (waiting !== null) {
          const reset = await waitFor('the waiting client reset', () => waiting.ends()[0], 30_000, 2);
          freezeToReset.push(ms(reset.ns - frozenNs) - TIMEOUT * 1000);
        }
        const refused = await waitFor('refused', () => firstSince('refused', frozenAt), 30_000, 2);
        freezeToRefused.push(refused.t - frozenAt - TIMEOUT * 1000);
        if (!stopMonitor)
          heartbeatToRefused.push(refused.t - lastHeartbeatAt() - TIMEOUT * 1000);
        if (!Number.isNaN(deadline))
          deadlineToRefused.push(refused.t - deadline);
      } finally {
        monitor.kill('SIGCONT');
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
    const s3 = stat(thawToOk);
    const s4 = stat(liftToOk);
    line(`[${label}] freeze -> remote refused, minus --timeout=${TIMEOUT}`, fmt(s1, 'ms'));
    const out: Record<string, unknown> = {cycles, timeout: TIMEOUT, recover: RECOVER, interval: INTERVAL, freezeToRefusedMinusTimeoutMs: s1, thawToOkMinusRecoverMs: s3, liftDecidedToOkMs: s4};
    if (heartbeatToRefused.length > 0) {
      out.lastHeartbeatToRefusedMinusTimeoutMs = stat(heartbeatToRefused);
      line('  last heartbeat -> refused, minus --timeout', fmt(stat(heartbeatToRefused), 'ms'));
    }
    if (deadlineToRefused.length > 0) {
      out.kernelDeadlineToRefusedMs = stat(deadlineToRefused);
      line('  kernel deadline (nft expires) -> refused', fmt(stat(deadlineToRefused), 'ms'));
    }
    if (freezeToReset.length > 0) {
      out.freezeToWaitingResetMinusTimeoutMs = stat(freezeToReset);
      line('  freeze -> a waiting client reset, minus --timeout', fmt(stat(freezeToReset), 'ms'));
    }
    line(`  thaw -> remote ok, minus --recover x --interval`, fmt(s3, 'ms'));
    line('  lift decided (monitor log, ms) -> remote ok', fmt(s4, 'ms'));
    results[key] = out;
  } finally {
    volume.thaw();
    for (const proc of procs.reverse())
      await proc.stop();
  }
}

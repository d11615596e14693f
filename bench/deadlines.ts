// Issue 13's figures: kernel-held deadlines with every disk hung, 1000
// reporters fenced at once, the monitor's footprint while re-arming, and what
// the table costs a packet. Firewall changes happen only in the bench's own
// namespaces.
import {spawn, spawnSync} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import {parseDuration} from '../src/fencing';
import {encodeMessage} from '../src/heartbeat';
import {FifoWriter} from '../src/transport';
import {ebsmonTable} from '../test/helpers/firewall';
import {Waiters, ms, nowNs} from '../test/helpers/cutter';
import {HungDisk, copyIntoUsrOverlay} from '../test/helpers/hang';
import {HELPER, Proc, ebsmon, reporterIn, scrubbedEnv} from '../test/helpers/proc';
import {EBSMON, createNetRig, descendants, sh, waitFor} from '../test/helpers/rig';
import type {NetRig, Teardown} from '../test/helpers/rig';

import {kernelDeadline} from './cycles';
import {cpuTicks, fmt, line, privateKb, results, rssKb, stat} from './stats';

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));
type Change = {state: string, t: number};
const changes = (proc: Proc) => proc.stdout.split('\n').filter(Boolean).map(l => JSON.parse(l) as Change);

function watcher(rig: NetRig, port: number): Proc {
  return new Proc(spawn('ip', ['netns', 'exec', rig.cli, process.execPath, HELPER('watcher.mjs'), rig.srvV4, String(port)], {stdio: ['ignore', 'pipe', 'pipe']}));
}

function server(rig: NetRig, ports: Array<number>): Proc {
  return new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, HELPER('server.mjs'), ...ports.map(String)], {stdio: ['ignore', 'pipe', 'pipe']}));
}

/**
 * The monitor's node, nft, bash and libraries, /etc and its log on a disk
 * that stops answering (as the hung-root test sets it up): kernel deadline
 * -> remote refused, and hang -> refused minus --timeout, over several hangs;
 * and a client that sent its query to a service that never answers: hang ->
 * its reset minus --timeout, with the monitor running (on the hung disk) and
 * SIGSTOPped, cycles alternating.
 */
export async function hungDiskCycles(dir: string, teardown: Teardown, cycles = 6): Promise<void> {
  const TIMEOUT = 2;
  const rig = createNetRig(teardown);
  const disk = await HungDisk.create(path.join(dir, 'hung'), teardown);
  const d = disk.mountpoint;
  for (const sub of ['usr-up', 'usr-work', 'etc-up', 'etc-work', 'data/www', 'log'])
    fs.mkdirSync(path.join(d, sub), {recursive: true});
  copyIntoUsrOverlay(path.join(d, 'usr-up'), ['/usr/bin/node', '/usr/bin/perl', '/usr/sbin/nft', '/usr/bin/bash', '/usr/bin/setsid', '/usr/bin/mkfifo', '/usr/bin/ss', '/usr/bin/env']);
  sh(['cp', '-a', '/etc/.', path.join(d, 'etc-up')]);
  fs.copyFileSync(EBSMON, path.join(d, 'ebsmon'));
  const run = path.join(dir, 'hung', 'run');
  fs.mkdirSync(run);
  sh(['mount', '-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', run]);
  teardown.add(['umount', '-l', run]);
  const PORT = 7400;
  const SILENT = PORT + 1;
  const procs: Array<Proc> = [server(rig, [PORT]), new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, HELPER('silent.mjs'), String(SILENT)], {stdio: ['ignore', 'pipe', 'pipe']}))];
  try {
    await waitFor('the server', () => procs[0]!.stdout.includes('listening') && procs[1]!.stdout.includes('listening'));
    const script = [
      `mount -t overlay overlay -o lowerdir=/usr,upperdir=${d}/usr-up,workdir=${d}/usr-work /usr`,
      `mount -t overlay overlay -o lowerdir=/etc,upperdir=${d}/etc-up,workdir=${d}/etc-work /etc`,
      `exec /usr/bin/node --max-semi-space-size=2 ${d}/ebsmon monitor --firewall=nftables --fifo=${run}/ebsmon.fifo --state-dir=${run} --timeout=${TIMEOUT} --recover=2 --logfile=${d}/log/monitor.log`,
    ].join(' && ');
    const monitor = new Proc(spawn('ip', ['netns', 'exec', rig.srv, 'unshare', '--mount', '--propagation', 'private', '--', 'bash', '--norc', '-c', script], {stdio: 'ignore', env: scrubbedEnv()}));
    procs.push(monitor);
    await waitFor('the monitor', () => fs.existsSync(path.join(run, 'state.json')), 30_000);
    procs.push(ebsmon(['report', `--monitor=${d}/data/www`, `--ports=${PORT},${SILENT}`, `--fifo=${run}/ebsmon.fifo`, '--interval=0.2', '--probe-timeout=0.5']));
    await waitFor('healthy', () => reporterIn(run, 'www')?.state === 'healthy', 30_000);
    const watch = watcher(rig, PORT);
    procs.push(watch);
    await waitFor('the watcher connecting', () => changes(watch).at(-1)?.state === 'ok');
    const hangToRefused: Array<number> = [];
    const deadlineToRefused: Array<number> = [];
    const hangToReset: Record<'running' | 'stopped', Array<number>> = {running: [], stopped: []};
    for (let cycle = 0; cycle < cycles; cycle++) {
      const mode = cycle % 2 === 0 ? 'running' : 'stopped';
      const waiting = Waiters.start(rig.cli, rig.srvV4, SILENT);
      procs.push(waiting.proc);
      await waiting.connected();
      const hungAt = now();
      const hungNs = nowNs();
      disk.hang();
      if (mode === 'stopped')
        monitor.kill('SIGSTOP');
      try {
        // The kernel says when the deadline is, once the last heartbeat before the hang has been re-armed (within a batch).
        let deadline = NaN;
        if (mode === 'running') {
          await sleep(500);
          deadline = kernelDeadline(rig.srv, PORT);
        }
        const reset = await waitFor('the waiting client reset', () => waiting.ends()[0], 30_000, 2);
        hangToReset[mode].push(ms(reset.ns - hungNs) - TIMEOUT * 1000);
        if (mode === 'running') {
          const refused = await waitFor('refused', () => changes(watch).find(c => c.t >= hungAt && c.state === 'refused'), 30_000, 2);
          hangToRefused.push(refused.t - hungAt - TIMEOUT * 1000);
          deadlineToRefused.push(refused.t - deadline);
        }
      } finally {
        if (mode === 'stopped')
          monitor.kill('SIGCONT');
        disk.resume();
      }
      const resumedAt = now();
      await waitFor('ok', () => changes(watch).find(c => c.t >= resumedAt && c.state === 'ok'), 30_000, 5);
      await waitFor('healthy', () => reporterIn(run, 'www')?.state === 'healthy', 30_000);
    }
    const [a, b] = [stat(hangToRefused), stat(deadlineToRefused)];
    line(`[every disk hung] hang -> refused, minus --timeout=${TIMEOUT}`, fmt(a, 'ms'));
    line('  kernel deadline (nft expires) -> refused', fmt(b, 'ms'));
    const [c, e] = [stat(hangToReset.running), stat(hangToReset.stopped)];
    line('[every disk hung] hang -> waiting client reset, minus --timeout', fmt(c, 'ms'));
    line('  the same, the monitor SIGSTOPped at the hang', fmt(e, 'ms'));
    results.hungDisk = {cycles, timeout: TIMEOUT, hangToRefusedMinusTimeoutMs: a, kernelDeadlineToRefusedMs: b, hangToWaitingResetMinusTimeoutMs: c, stoppedMonitorHangToWaitingResetMinusTimeoutMs: e};
  } finally {
    disk.resume();
    for (const proc of procs.reverse())
      await proc.stop();
  }
}

export const beat = (name: string, port: number, sentAt = Date.now()) => encodeMessage({v: 1, kind: 'heartbeat', name, pid: 1000, ports: [port], interval: 1, probeTimeout: 0.3, seq: 1, sentAt, probeMs: 1});

export async function send(writer: FifoWriter, line: Buffer): Promise<void> {
  while (!writer.send(line).ok)
    await new Promise(resolve => setImmediate(resolve));
}

/**
 * 1000 reporters whose last heartbeats were sent in the same millisecond, as
 * when one volume under all of them hangs: the spread of their deadlines in
 * the kernel, and of the refusals seen by clients on a sample of their ports.
 */
export async function manyAtOnce(dir: string, teardown: Teardown, n = 1000, runs = 3): Promise<void> {
  const TIMEOUT = 3;
  const rig = createNetRig(teardown);
  const base = 41000;
  const sample = Array.from({length: 10}, (_, i) => base + Math.floor(i * (n - 1) / 9));
  const procs: Array<Proc> = [server(rig, sample)];
  const stateDir = tmpfs(path.join(dir, 'many'), teardown);
  const kernelSpread: Array<number> = [];
  const clientSpread: Array<number> = [];
  const deadlineToLast: Array<number> = [];
  try {
    await waitFor('the server', () => procs[0]!.stdout.includes('listening'));
    const monitor = ebsmon(['monitor', '--firewall=nftables', `--fifo=${stateDir}/ebsmon.fifo`, `--state-dir=${stateDir}`, `--timeout=${TIMEOUT}`, '--recover=1', `--max-reporters=${n + 10}`, '--log-level=warn', '--protect-ports='], {ns: rig.srv});
    procs.push(monitor);
    await waitFor('the monitor', () => fs.existsSync(path.join(stateDir, 'state.json')));
    const writer = new FifoWriter(`${stateDir}/ebsmon.fifo`);
    for (let run = 0; run < runs; run++) {
      const sentAt = Date.now();
      for (let i = 0; i < n; i++)
        await send(writer, beat(`many${i}`, base + i, sentAt));
      await waitFor('all armed', () => (ebsmonTable(rig.srv)?.alive.size ?? 0) >= n, 30_000, 50);
      // One process watches the sampled ports (ten busy processes would measure the scheduler).
      const watch = new Proc(spawn('ip', ['netns', 'exec', rig.cli, process.execPath, HELPER('watcher.mjs'), rig.srvV4, sample.join(',')], {stdio: ['ignore', 'pipe', 'pipe']}));
      procs.push(watch);
      const seen = () => changes(watch) as Array<Change & {port: number}>;
      await waitFor('the watcher connecting', () => sample.every(port => seen().some(c => c.port === port && c.state === 'ok')), 30_000);
      const listing = spawnSync('ip', ['netns', 'exec', rig.srv, 'nft', 'list', 'set', 'inet', 'ebsmon', 'alive'], {encoding: 'utf8'}).stdout;
      const expires = [...listing.matchAll(/(\d+) timeout [\dsmhd]+ expires ([\dsmhd]+)/g)].filter(m => Number(m[1]) >= base).map(m => parseDuration(m[2]!) ?? NaN);
      kernelSpread.push(Math.max(...expires) - Math.min(...expires));
      const refused = await waitFor('all sampled refused', () => {
        const firsts = sample.map(port => seen().find(c => c.port === port && c.state === 'refused'));
        return firsts.every(Boolean) ? firsts.map(c => c!.t) : null;
      }, 30_000, 5);
      clientSpread.push(Math.max(...refused) - Math.min(...refused));
      deadlineToLast.push(Math.max(...refused) - (sentAt + TIMEOUT * 1000));
      await watch.stop();
      // Back to healthy for the next run: one fresh heartbeat each (--recover=1).
      for (let i = 0; i < n; i++)
        await send(writer, beat(`many${i}`, base + i));
      await waitFor('all healthy', () => (ebsmonTable(rig.srv)?.alive.size ?? 0) >= n, 30_000, 50);
      await sleep(500);
    }
    writer.close();
  } finally {
    for (const proc of procs.reverse())
      await proc.stop();
  }
  const [k, c, l] = [stat(kernelSpread), stat(clientSpread), stat(deadlineToLast)];
  line(`${n} reporters hung at once: spread of kernel deadlines`, fmt(k, 'ms'));
  line('  spread of refusals on 10 sampled ports (one client)', fmt(c, 'ms'));
  line('  deadline -> last sampled port refused', fmt(l, 'ms'));
  results.manyAtOnce = {reporters: n, kernelDeadlineSpreadMs: k, clientRefusalSpreadMs: c, deadlineToLastRefusedMs: l};
}

/** A tmpfs for a monitor's state directory, as /run is. */
export function tmpfs(dir: string, teardown: Teardown): string {
  fs.mkdirSync(dir, {recursive: true});
  sh(['mount', '-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', dir]);
  teardown.add(['umount', '-l', dir]);
  return dir;
}

/** CPU ticks of a process and everything below it (nft -i, nft monitor, the helper), reaped children included. */
export function treeTicks(pid: number): number {
  return [pid, ...descendants(pid)].reduce((sum, p) => {
    try {
      return sum + cpuTicks(p, {children: true});
    } catch {
      return sum;
    }
  }, 0);
}

const treeRssKb = (pid: number) => [pid, ...descendants(pid)].reduce((sum, p) => {
  try {
    return sum + rssKb(p);
  } catch {
    return sum;
  }
}, 0);

/**
 * n reporters heartbeating at 1 Hz, spread over each second as real ones are,
 * into a fresh monitor that re-arms every one of them in the kernel: CPU of
 * the monitor and its nft children, RSS of the monitor alone and with them.
 */
export async function monitorFootprint(dir: string, teardown: Teardown, seconds: number): Promise<void> {
  const rig = createNetRig(teardown);
  const base = tmpfs(path.join(dir, 'footprint'), teardown);
  // aligned: as ebsmon reporters send them (each on the wall-clock second); spread: evenly over each second.
  const runs: Array<[string, 'nftables' | 'iptables', number, 'aligned' | 'spread']> = [
    ['nftables', 'nftables', 10, 'aligned'], ['nftables', 'nftables', 1000, 'aligned'], ['nftables', 'nftables', 1000, 'spread'],
    ['iptables', 'iptables', 10, 'aligned'], ['iptables', 'iptables', 1000, 'aligned'],
  ];
  for (const [label, backend, n, pattern] of runs) {
    const stateDir = path.join(base, `${backend}-${n}-${pattern}`);
    const monitor = ebsmon(['monitor', `--firewall=${backend}`, `--fifo=${stateDir}/ebsmon.fifo`, `--state-dir=${stateDir}`, '--timeout=10', '--log-level=warn', `--max-reporters=${n + 10}`, '--protect-ports='], {ns: rig.srv});
    await waitFor('the monitor', () => fs.existsSync(path.join(stateDir, 'state.json')));
    const writer = new FifoWriter(`${stateDir}/ebsmon.fifo`);
    const slots = pattern === 'aligned' ? 1 : 10;
    const second = async () => {
      await sleep(1000 - Date.now() % 1000);
      for (let slot = 0; slot < slots; slot++) {
        const start = performance.now();
        for (let i = slot; i < n; i += slots)
          await send(writer, beat(`fp${i}`, 42000 + i));
        if (slots > 1)
          await sleep(Math.max(0, 1000 / slots - (performance.now() - start)));
      }
    };
    // A warm-up registers everyone; then measure.
    for (let s = 0; s < 3; s++)
      await second();
    const c0 = treeTicks(monitor.pid);
    const own0 = cpuTicks(monitor.pid);
    const rss: Array<number> = [];
    const tree: Array<number> = [];
    const priv: Array<number> = [];
    for (let s = 0; s < seconds; s++) {
      await second();
      rss.push(rssKb(monitor.pid) / 1024);
      priv.push(privateKb(monitor.pid) / 1024);
      tree.push(treeRssKb(monitor.pid) / 1024);
    }
    const cpu = (treeTicks(monitor.pid) - c0) / seconds;
    const own = (cpuTicks(monitor.pid) - own0) / seconds;
    line(`[${label}] monitor, ${n} reporters at 1 Hz (${pattern}), ${seconds} s`, `CPU ${cpu.toFixed(2)} % of a core with its children (${own.toFixed(2)} % itself); RSS max ${Math.max(...rss).toFixed(1)} MB (private ${Math.max(...priv).toFixed(1)} MB), with children ${Math.max(...tree).toFixed(1)} MB`);
    results[`footprint_${backend}_${n}_${pattern}`] = {seconds, cpuPercentWithChildren: cpu, cpuPercentMonitor: own, rssMaxMb: Math.max(...rss), privateMaxMb: Math.max(...priv), rssWithChildrenMaxMb: Math.max(...tree)};
    writer.close();
    await monitor.stop();
  }
}

/**
 * What the table costs every packet: a remote client's connect + one echo +
 * close to a healthy port, with 1 reporter registered and with 1000. The
 * sets are hash lookups: the rule count does not grow with reporters.
 */
export async function packetPathLatency(dir: string, teardown: Teardown, samples = 3000): Promise<void> {
  const rig = createNetRig(teardown);
  const PORT = 43999;
  const procs: Array<Proc> = [server(rig, [PORT])];
  const medians: Record<number, Array<number>> = {1: [], 1000: []};
  try {
    await waitFor('the server', () => procs[0]!.stdout.includes('listening'));
    const stateDir = path.join(dir, 'latency');
    const monitor = ebsmon(['monitor', '--firewall=nftables', `--fifo=${stateDir}/ebsmon.fifo`, `--state-dir=${stateDir}`, '--timeout=60', '--log-level=warn', '--max-reporters=2000', '--protect-ports='], {ns: rig.srv});
    procs.push(monitor);
    await waitFor('the monitor', () => fs.existsSync(path.join(stateDir, 'state.json')));
    const writer = new FifoWriter(`${stateDir}/ebsmon.fifo`);
    await send(writer, beat('target', PORT));
    const measure = () => {
      const out = spawnSync('ip', ['netns', 'exec', rig.cli, process.execPath, HELPER('pingpong.mjs'), rig.srvV4, String(PORT), String(samples)], {encoding: 'utf8'}).stdout;
      return JSON.parse(out) as {medianMs: number};
    };
    for (let round = 0; round < 3; round++) {
      for (const n of [1, 1000]) {
        if (n === 1000) {
          for (let i = 0; i < 999; i++)
            await send(writer, beat(`other${i}`, 44000 + i));
          await waitFor('1000 guarded', () => (ebsmonTable(rig.srv)?.guarded.size ?? 0) >= 1000, 30_000, 50);
        }
        medians[n]!.push(measure().medianMs);
        if (n === 1000) {
          for (let i = 0; i < 999; i++)
            await send(writer, encodeMessage({v: 1, kind: 'goodbye', name: `other${i}`, pid: 1000}));
          await waitFor('1 guarded', () => (ebsmonTable(rig.srv)?.guarded.size ?? 0) === 1, 30_000, 50);
        }
        await send(writer, beat('target', PORT));
      }
    }
    writer.close();
  } finally {
    for (const proc of procs.reverse())
      await proc.stop();
  }
  const [one, many] = [stat(medians[1]!), stat(medians[1000]!)];
  line(`remote connect + echo, 1 reporter (${samples} each)`, fmt(one, 'ms', 3));
  line('  with 1000 reporters registered', fmt(many, 'ms', 3));
  line('  ratio 1000 / 1', (many.median / one.median).toFixed(3));
  results.packetPath = {samples, oneReporterMs: one, thousandReportersMs: many, ratio: many.median / one.median};
}

// make soak: false fences under load. Reporters with a tight deadline
// (--probe-timeout=0.6 against the monitor's --timeout=2; SOAK_PROBE_TIMEOUT and SOAK_TIMEOUT) on a volume that
// fsync writers keep saturated, for SOAK_SECONDS (default 600; the README
// quotes 3600). Prints fences, failing episodes by what the device was doing,
// probe latency and the device evidence the reporters sent. The volume has
// an EBS gp3 volume's baseline ceiling unless SOAK_LIMIT=none (or IOPS:BPS);
// SOAK_CHECKPOINTERS=1 adds a writer that flushes 256 MiB bursts at once.
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import {readSnapshot} from '../src/state';
import type {ReporterSnapshot} from '../src/state';
import {Proc, ebsmon, reporterIn} from '../test/helpers/proc';
import {LoopVolume, createNetRig, sh, waitFor} from '../test/helpers/rig';
import type {Teardown} from '../test/helpers/rig';

import {line, results, stat} from './stats';
import type {Stat} from './stats';

/** `limit`: the volume's own ceiling (I/Os and bytes a second, each way), as a cloud volume has one; null: the raw device. */
export type SoakOptions = {
  seconds: number;
  /** log writers: 1 MiB writes, fdatasync after each */
  writers: number;
  /** checkpointers: bursts of `burstMiB` buffered, then one fdatasync */
  checkpointers: number;
  burstMiB: number;
  reporters: number;
  interval: number;
  /** the monitor's --timeout and the reporters' --probe-timeout: 2 and 0.6 (the issue's), SOAK_TIMEOUT=10 SOAK_PROBE_TIMEOUT=3 for the defaults */
  timeout: number;
  probeTimeout: number;
  limit: {iops: number, bps: number} | null;
};

/** An EBS gp3 volume at its baseline: 3000 IOPS, 125 MiB/s. */
const GP3 = {iops: 3000, bps: 125 * 2 ** 20};

export function soakOptions(env: NodeJS.ProcessEnv = process.env): SoakOptions {
  const number = (name: string, fallback: number) => (env[name] === undefined || env[name] === '' ? fallback : Number(env[name]));
  const limitText = env.SOAK_LIMIT ?? 'gp3';
  const custom = /^(\d+):(\d+)$/.exec(limitText);
  const limit = limitText === 'none' ? null : custom === null ? GP3 : {iops: Number(custom[1]), bps: Number(custom[2])};
  return {seconds: number('SOAK_SECONDS', 600), writers: number('SOAK_WRITERS', 4), checkpointers: number('SOAK_CHECKPOINTERS', 0), burstMiB: number('SOAK_BURST_MIB', 256),
    reporters: number('SOAK_REPORTERS', 2), interval: number('SOAK_INTERVAL', 0.5), timeout: number('SOAK_TIMEOUT', 2), probeTimeout: number('SOAK_PROBE_TIMEOUT', 0.6), limit};
}

/**
 * A ceiling, with the block layer's own throttle (cgroup v1 blkio, the root
 * group: every process's I/O to this one device, the loop worker's and the
 * flusher's too). Only a loop device of the bench's own; the teardown (and its
 * crash watchdog) lifts it before the device goes.
 */
function limitDevice(device: string, limit: {iops: number, bps: number}, teardown: Teardown): string | null {
  const root = '/sys/fs/cgroup/blkio';
  if (!fs.existsSync(path.join(root, 'blkio.throttle.write_iops_device')))
    return null;
  const numbers = sh(['lsblk', '-dno', 'MAJ:MIN', device]).trim();
  const rules: Array<[string, number]> = [['read_iops_device', limit.iops], ['write_iops_device', limit.iops], ['read_bps_device', limit.bps], ['write_bps_device', limit.bps]];
  for (const [file, value] of rules) {
    teardown.add(['bash', '-c', `echo "${numbers} 0" > ${root}/blkio.throttle.${file}`]);
    fs.writeFileSync(path.join(root, `blkio.throttle.${file}`), `${numbers} ${value}\n`);
  }
  return numbers;
}

const PORT = 7200;

/** The verdict a failing reason names (see verdict() in src/probe/device.ts), or what else failed. */
function failureKind(message: string): string {
  const verdict = /; \S+ (busy|idle|answers reads|answers|answered with an error)\b/.exec(message)?.[1] ?? (/requests? in flight, none completed/.test(message) ? 'stuck' : undefined);
  if (verdict !== undefined)
    return verdict === 'answers reads' ? 'writes-held' : verdict === 'answers' ? 'answering' : verdict;
  return /timed out/.test(message) ? 'timeout (no device evidence)' : 'error';
}

const fmtStat = (s: Stat, unit: string, digits = 1) => {
  const u = unit === '' || unit === '%' ? unit : ` ${unit}`;
  return `p50 ${s.median.toFixed(digits)}${u}, p99 ${s.p99!.toFixed(digits)}${u}, max ${s.max.toFixed(digits)}${u}`;
};

export async function soak(dir: string, teardown: Teardown, options: SoakOptions = soakOptions()): Promise<void> {
  const {seconds, writers, checkpointers, burstMiB, reporters, interval, timeout, probeTimeout} = options;
  // The watched volume is a loop device (direct I/O: every write and flush goes down) whose backing file lives on a
  // second loop device with the ceiling. Bios wait at the throttle below the volume, so the wait shows as the volume's
  // own requests in flight and its await, as it does on a capped EBS volume; a throttle on the volume itself would
  // hold bios before they count.
  const under = LoopVolume.create(path.join(dir, 'soak'), teardown, 1200, {name: 'under'});
  const limited = options.limit === null ? null : limitDevice(under.device, options.limit, teardown);
  const volume = LoopVolume.create(under.mountpoint, teardown, 1024, {directIo: true});
  const ceiling = options.limit === null ? 'no ceiling' : limited === null ? 'no ceiling (no cgroup v1 blkio throttle here)' : `a ceiling of ${options.limit.iops} IOPS and ${(options.limit.bps / 2 ** 20).toFixed(0)} MiB/s each way below it (blkio throttle on ${limited})`;
  const stateDir = path.join(dir, 'soak', 'run');
  const fifo = path.join(stateDir, 'ebsmon.fifo');
  const procs: Array<Proc> = [];
  const names = Array.from({length: reporters}, (_, i) => `soak${i}`);
  try {
    // Its firewall changes stay inside a namespace of the bench's own.
    const rig = createNetRig(teardown);
    const monitor = ebsmon(['monitor', `--fifo=${fifo}`, `--state-dir=${stateDir}`, `--timeout=${timeout}`, '--log-level=warn', '--protect-ports='], {ns: rig.srv});
    procs.push(monitor);
    await waitFor('the monitor', () => readSnapshot(stateDir) !== null);
    const reporterProcs = names.map((name, i) => {
      const watched = path.join(volume.mountpoint, name);
      fs.mkdirSync(watched);
      const proc = ebsmon(['report', `--monitor=${watched}`, `--ports=${PORT + i}`, `--fifo=${fifo}`, `--interval=${interval}`, `--probe-timeout=${probeTimeout}`, '--log-level=debug']);
      procs.push(proc);
      return proc;
    });
    await waitFor('every reporter healthy', () => names.every(name => reporterIn(stateDir, name)?.state === 'healthy'));
    const load = (file: string, args: Array<string>) => new Proc(spawn(process.execPath, [path.join(__dirname, 'loadgen.mjs'), path.join(volume.mountpoint, file), ...args], {stdio: ['ignore', 'pipe', 'pipe']}));
    const loads = [...Array.from({length: writers}, (_, i) => load(`log${i}`, [])), ...Array.from({length: checkpointers}, (_, i) => load(`checkpoint${i}`, [String(burstMiB)]))];
    procs.push(...loads);
    line(`soak: ${seconds} s, ${writers} + ${checkpointers} fsync writers, ${reporters} reporters`, `--interval=${interval} --probe-timeout=${probeTimeout}, monitor --timeout=${timeout}; a direct-I/O loop volume with ${ceiling}`);

    const startedAt = Date.now();
    let notHealthy = 0;
    const devices: Array<NonNullable<ReporterSnapshot['devices']>[number]> = [];
    let lastDevicesAt = 0;
    let nextReport = startedAt + 60_000;
    while (Date.now() - startedAt < seconds * 1000) {
      const records = names.map(name => reporterIn(stateDir, name));
      notHealthy += records.filter(r => r?.state !== 'healthy').length;
      // The evidence the first reporter sent with its last heartbeat (or failing word): one sample a window.
      const first = records[0];
      if (first?.devices?.[0] !== undefined && first.devicesAt !== undefined && first.devicesAt !== lastDevicesAt) {
        lastDevicesAt = first.devicesAt;
        devices.push(first.devices[0]);
      }
      if (Date.now() >= nextReport) {
        nextReport += 60_000;
        const fences = records.reduce((n, r) => n + (r?.fenceCount ?? 0), 0);
        process.stdout.write(`  ${Math.round((Date.now() - startedAt) / 1000)} s: ${fences} fences so far\n`);
      }
      await new Promise(resolve => setTimeout(resolve, 250));
    }
    for (const load of loads)
      await load.stop(30_000);
    const written = loads.map(l => JSON.parse(l.stdout) as {bytes: number, seconds: number});
    const mbPerSecond = written.reduce((n, w) => n + w.bytes / w.seconds, 0) / 2 ** 20;

    const records = names.map(name => reporterIn(stateDir, name)!);
    const fences = records.reduce((n, r) => n + r.fenceCount, 0);
    const fenceReasons = records.flatMap(r => (r.history ?? []).filter(h => h.state === 'fenced').map(h => `${r.name}: ${h.reason}`));
    const logs = reporterProcs.flatMap(p => p.logs());
    const probeMs = logs.filter(l => l.message === 'probe passed').map(l => Number(l.probeMs));
    const failures = logs.filter(l => /^failing: /.test(String(l.message))).map(l => failureKind(String(l.message)));
    const byKind = Object.entries(failures.reduce<Record<string, number>>((acc, kind) => ({...acc, [kind]: (acc[kind] ?? 0) + 1}), {}));
    const p = stat(probeMs);

    line('  load', `${mbPerSecond.toFixed(1)} MB/s written: ${writers} writers of 1 MiB + fdatasync, ${checkpointers} of ${burstMiB} MiB bursts + fdatasync`);
    line('  fences', `${fences}${fenceReasons.length > 0 ? `: ${fenceReasons.join(' | ')}` : ''}`);
    line('  failing episodes (by what the device was doing)', `${failures.length}${byKind.length > 0 ? ` (${byKind.map(([k, n]) => `${k} ${n}`).join(', ')})` : ''}; ${notHealthy} non-healthy samples of ${names.length} reporters every 0.25 s`);
    line('  probe latency (probes that passed)', `${fmtStat(p, 'ms')} (n=${p.n}; --probe-timeout=${probeTimeout * 1000} ms)`);
    const summary: Record<string, unknown> = {};
    if (devices.length > 0) {
      const name = devices[0]!.name;
      const inflight = stat(devices.map(d => d.inflight));
      const awaits = devices.filter(d => d.awaitMs !== undefined).map(d => d.awaitMs!);
      const a = stat(awaits.length > 0 ? awaits : [NaN]);
      const iops = stat(devices.filter(d => d.windowMs > 0).map(d => (d.done * 1000) / d.windowMs));
      const util = stat(devices.filter(d => d.windowMs > 0).map(d => Math.min(100, (100 * d.busyMs) / d.windowMs)));
      line(`  device evidence (${name}, from the heartbeats)`, `in flight ${fmtStat(inflight, '', 0)}; await ${fmtStat(a, 'ms')}; ${iops.median.toFixed(0)} I/Os/s median; utilised ${fmtStat(util, '%', 0)} (n=${devices.length} windows)`);
      Object.assign(summary, {device: name, inflight, awaitMs: a, iops, utilPercent: util});
    }
    results.soak = {...options, ceiling, loadMBps: mbPerSecond, fences, fenceReasons, failedProbes: failures.length, failuresByKind: Object.fromEntries(byKind), nonHealthySamples: notHealthy, probeMs: p, ...summary};
  } finally {
    for (const proc of procs.reverse())
      await proc.stop();
  }
}

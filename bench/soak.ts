// False fences under heavy healthy load: a reporter and monitor with their
// default settings while load generators write and fsync on the same volume.
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import {readSnapshot} from '../src/state';
import {Proc, ebsmon, reporterIn} from '../test/helpers/proc';
import {LoopVolume, createNetRig, waitFor} from '../test/helpers/rig';
import type {Teardown} from '../test/helpers/rig';

import {line, results, stat} from './stats';

const WRITERS = 2;

export async function falseFenceSoak(dir: string, teardown: Teardown, seconds: number): Promise<void> {
  // Direct I/O on the loop device: the load's fsyncs reach this machine's disk.
  const volume = LoopVolume.create(path.join(dir, 'soak'), teardown, 512, {directIo: true});
  const watched = path.join(volume.mountpoint, 'data');
  fs.mkdirSync(watched);
  const stateDir = path.join(dir, 'soak', 'run');
  const fifo = path.join(stateDir, 'ebsmon.fifo');
  const procs: Array<Proc> = [];
  try {
    // Defaults for both: --timeout=10 --recover=3, --interval=1 --probe-timeout=3.
    // Its firewall changes stay inside a namespace of the bench's own.
    const rig = createNetRig(teardown);
    const monitor = ebsmon(['monitor', `--fifo=${fifo}`, `--state-dir=${stateDir}`, '--log-level=warn', '--protect-ports='], {ns: rig.srv});
    procs.push(monitor);
    await waitFor('the monitor', () => readSnapshot(stateDir) !== null);
    const reporter = ebsmon(['report', `--monitor=${watched}`, '--ports=7200', `--fifo=${fifo}`, '--log-level=debug']);
    procs.push(reporter);
    const record = () => reporterIn(stateDir, 'data');
    await waitFor('healthy', () => record()?.state === 'healthy');
    const loads = Array.from({length: WRITERS}, (_, i) => new Proc(spawn(process.execPath, [path.join(__dirname, 'loadgen.mjs'), path.join(watched, `load${i}`)], {stdio: ['ignore', 'pipe', 'pipe']})));
    procs.push(...loads);
    const startedAt = Date.now();
    let notHealthy = 0;
    while (Date.now() - startedAt < seconds * 1000) {
      if (record()?.state !== 'healthy')
        notHealthy += 1;
      await new Promise(resolve => setTimeout(resolve, 250));
    }
    for (const load of loads)
      await load.stop(30_000);
    const written = loads.map(l => JSON.parse(l.stdout) as {bytes: number, seconds: number});
    const mbPerSecond = written.reduce((n, w) => n + w.bytes / w.seconds, 0) / 2 ** 20;
    const fences = record()?.fenceCount ?? NaN;
    const probeMs = reporter.logs().filter(l => l.message === 'heartbeat sent').map(l => Number(l.probeMs));
    const failures = reporter.logs().filter(l => /^failing: /.test(String(l.message))).length;
    const p = stat(probeMs);
    line(`false fences, ${seconds} s of ${WRITERS} fsync writers (defaults)`, `${fences} fences, ${failures} failed probes, ${notHealthy} non-healthy samples; load ${mbPerSecond.toFixed(1)} MB/s`);
    line('  probe latency under that load', `p50 ${p.median.toFixed(1)} ms, p99 ${p.p99!.toFixed(1)} ms, max ${p.max.toFixed(1)} ms (n=${p.n}; --probe-timeout=3 s)`);
    results.soak = {seconds, writers: WRITERS, loadMBps: mbPerSecond, falseFences: fences, failedProbes: failures, nonHealthySamples: notHealthy, probeMs: p};
  } finally {
    for (const proc of procs.reverse())
      await proc.stop();
  }
}

// make bench: prints figures (medians with min/max) and writes bench/results.json.
// Not a test: nothing here passes or fails on a number.
import {spawn, spawnSync} from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {LineDecoder, encodeMessage} from '../src/heartbeat';
import {readMountTable} from '../src/mounts';
import {DeviceWatch, Prober, deviceNode, pinPath} from '../src/probe';
import {PROBE_SCRIPT} from '../src/probe/script';
import {SpawnHelper} from '../src/spawn';
import {FifoWriter, ensureFifo, openFifoReader} from '../src/transport';
import {STANDALONE} from '../test/helpers/nonode';
import {HELPER, Proc, ebsmon} from '../test/helpers/proc';
import {EBSMON, LoopVolume, Teardown, createNetRig, sh, waitFor} from '../test/helpers/rig';

import {cutterFigures} from './cutter';
import {freezeThawCycles} from './cycles';
import {discoveryCost} from './discovery';
import {besidePeer, hostOfFive} from './light';
import {hungDiskCycles, manyAtOnce, monitorFootprint, packetPathLatency} from './deadlines';
import {galeraHangs} from './galera';
import {mariadbTimeToError} from './mariadb';
import {patroniControls} from './patroni';
import {recordCycle} from './picture';
import {soak, soakOptions} from './soak';
import {standaloneFigures} from './standalone';
import {CpuGroup, cpuNs, cpuTicks, fmt, line, privateKb, results, rssKb, stat} from './stats';

const heartbeat = (name: string, port: number) => encodeMessage({v: 1, kind: 'heartbeat', name, pid: 1000, ports: [port], interval: 1, probeTimeout: 0.3, seq: 1, sentAt: Date.now(), probeMs: 1});

/**
 * Heartbeats decoded per second through a real FIFO, timed from the first
 * decoded line to the last (writer start-up excluded). One line per write is
 * what reporters do; 25 lines per write (within PIPE_BUF) leaves the reader as
 * the bottleneck, which is the monitor's capacity.
 */
async function decodeThroughput(dir: string): Promise<void> {
  for (const [writers, batch] of [[4, 1], [1, 25]] as const) {
    const runs: Array<number> = [];
    const cpuPer1000: Array<number> = [];
    for (let run = 0; run < 5; run++) {
      const fifo = path.join(dir, `bench-${writers}-${batch}-${run}.fifo`);
      ensureFifo(fifo);
      let decoded = 0;
      let first = 0;
      let last = 0;
      let cpu0 = process.cpuUsage();
      const decoder = new LineDecoder({onMessage: () => {
        if (decoded === 0) {
          first = performance.now();
          cpu0 = process.cpuUsage();
        }
        decoded += 1;
        last = performance.now();
      }, onReject: () => {}});
      const reader = openFifoReader(fifo, chunk => decoder.push(chunk));
      const procs = Array.from({length: writers}, (_, i) => new Proc(spawn(process.execPath, ['--import', 'tsx', HELPER('writer.ts'), fifo, `bench-${i}`, String(400_000 / writers), String(batch)], {stdio: ['ignore', 'pipe', 'pipe']})));
      await Promise.all(procs.map(w => w.exited));
      const sent = procs.reduce((n, w) => n + (JSON.parse(w.stdout) as {sent: number}).sent, 0);
      await waitFor('all decoded', () => decoded >= sent, 60_000, 5);
      const cpu = process.cpuUsage(cpu0);
      reader.close();
      runs.push((decoded - 1) / ((last - first) / 1000));
      cpuPer1000.push((cpu.user + cpu.system) / 1000 / (decoded / 1000));
    }
    const s = stat(runs);
    const label = batch === 1 ? `${writers} writers, 1 line per write` : `${writers} writer, ${batch} lines per write`;
    line(`heartbeats decoded per second (${label})`, `${fmt(s, '/s', 0)}`);
    const c = stat(cpuPer1000);
    line('  reader CPU per 1000 heartbeats', `${fmt(c, 'ms', 2)}`);
    results[`decode_${writers}x${batch}`] = {perSecond: s, cpuMsPer1000: c};
  }
}

/** The resident prober through a spawn helper, as the reporter runs it: wall time per request, and its CPU per request. */
async function probeCost(volume: LoopVolume, dir: string): Promise<void> {
  fs.mkdirSync(path.join(volume.mountpoint, 'bench'), {recursive: true});
  const pin = pinPath(path.join(volume.mountpoint, 'bench'), readMountTable());
  const helper = SpawnHelper.start(path.join(dir, 'probe-spawn'));
  const script = path.join(dir, 'probe.pl');
  fs.writeFileSync(script, PROBE_SCRIPT);
  const prober = new Prober({dir: pin.dir, name: 'bench', dev: pin.dev, ino: pin.ino}, 3000, argv => helper.stream(argv), script);
  prober.start(() => {});
  try {
    const times: Array<number> = [];
    for (let i = 0; i < 200; i++) {
      const outcome = await prober.probe(i, 'direct');
      if (outcome.ok)
        times.push(outcome.ms);
    }
    const s = stat(times);
    line('probe wall time (resident prober: O_DIRECT write + read, loop ext4)', fmt(s, 'ms', 2));
    results.probeMs = s;
    const cpu0 = cpuNs(prober.pid!);
    for (let i = 0; i < 1000; i++)
      await prober.probe(i, 'direct');
    const perProbeUs = (cpuNs(prober.pid!) - cpu0) / 1000 / 1000;
    line('  the prober\'s CPU per request (1000 in a row)', `${perProbeUs.toFixed(0)} µs`);
    results.proberCpuUsPerProbe = perProbeUs;
  } finally {
    prober.abandon();
    helper.close();
  }
}

/** A reporter heartbeating into a FIFO the bench reads: its memory over time, its own CPU, and the CPU of all it starts (a cgroup of its own). */
async function reporterRun(monitors: Array<string>, dir: string, interval: number, seconds: number, sample: (pid: number) => void = () => {}, extra: Array<string> = []): Promise<{beats: number, ownTicks: number, treeMs: number}> {
  const fifo = path.join(dir, `rep-${interval}-${monitors.length}.fifo`);
  ensureFifo(fifo);
  let beats = 0;
  const decoder = new LineDecoder({onMessage: () => {
    beats += 1;
  }, onReject: () => {}});
  const reader = openFifoReader(fifo, chunk => decoder.push(chunk));
  for (const monitor of monitors)
    fs.mkdirSync(monitor, {recursive: true});
  const group = CpuGroup.create(`ebsmon-bench-${process.pid}-${Date.now()}`);
  const proc = ebsmon(['report', ...monitors.map(m => `--monitor=${m}`), '--ports=80', `--fifo=${fifo}`, `--interval=${interval}`, ...extra], {bin: [...group.prefix, EBSMON]});
  await waitFor('heartbeats', () => beats > 2);
  const beats0 = beats;
  const own0 = cpuTicks(proc.pid);
  const tree0 = group.ms();
  const until = Date.now() + seconds * 1000;
  while (Date.now() < until) {
    sample(proc.pid);
    await new Promise(resolve => setTimeout(resolve, 1000));
  }
  const result = {beats: beats - beats0, ownTicks: cpuTicks(proc.pid) - own0, treeMs: group.ms() - tree0};
  await proc.stop();
  reader.close();
  await waitFor('its prober gone', () => group.pids().length === 0, 10_000);
  group.remove();
  return result;
}

async function reporterFootprint(volume: LoopVolume, dir: string, seconds: number): Promise<void> {
  const rss: Array<number> = [];
  const own: Array<number> = [];
  const bench = [path.join(volume.mountpoint, 'bench')];
  const fast = await reporterRun(bench, dir, 0.1, seconds, pid => {
    rss.push(rssKb(pid) / 1024);
    own.push(privateKb(pid) / 1024);
  });
  // Growth: the last minute against the first full minute.
  const minute = (from: number) => Math.max(...rss.slice(from, from + 60));
  const growth = minute(Math.max(0, rss.length - 60)) - minute(Math.min(60, Math.max(0, rss.length - 60)));
  line(`reporter RSS at --interval=0.1 over ${seconds} s`, `first ${rss[0]!.toFixed(1)} MB, last ${rss.at(-1)!.toFixed(1)} MB, max ${Math.max(...rss).toFixed(1)} MB, last minute vs second minute ${growth >= 0 ? '+' : ''}${growth.toFixed(1)} MB (private max ${Math.max(...own).toFixed(1)} MB)`);
  // For scale: node itself with an empty event loop, with the bundle's shebang flag (the reporter adds its own at start: src/daemon/v8.ts).
  const idle = new Proc(spawn(process.execPath, ['--max-semi-space-size=2', '-e', 'setInterval(() => {}, 1000)'], {stdio: 'ignore'}));
  await new Promise(resolve => setTimeout(resolve, 2000));
  const idleRss = rssKb(idle.pid) / 1024;
  const idlePrivate = privateKb(idle.pid) / 1024;
  await idle.stop();
  line('  for scale: node with an empty event loop', `RSS ${idleRss.toFixed(1)} MB (private ${idlePrivate.toFixed(1)} MB)`);
  const perProbeMs = fast.treeMs / fast.beats;
  line('reporter CPU per probe (reporter + helper + prober)', `${perProbeMs.toFixed(2)} ms (${fast.beats} probes at --interval=0.1)`);
  line('reporter CPU at --interval=0.1', `${(fast.ownTicks / seconds).toFixed(2)} % of a core own, ${(fast.treeMs / 10 / seconds).toFixed(2)} % with its helper and prober`);
  const slow = await reporterRun(bench, dir, 1, 60);
  line('reporter CPU at the default --interval=1, 60 s', `${(slow.ownTicks / 60).toFixed(2)} % of a core own, ${(slow.treeMs / 10 / 60).toFixed(2)} % with its helper and prober`);
  results.reporter = {seconds, rssFirstMb: rss[0], rssLastMb: rss.at(-1), rssMaxMb: Math.max(...rss), rssGrowthLastMinuteMb: growth, privateMaxMb: Math.max(...own),
    cpuMsPerProbe: perProbeMs, cpuPercentAt10Hz: fast.ownTicks / seconds, cpuPercentAt10HzTree: fast.treeMs / 10 / seconds,
    cpuPercentAt1Hz: slow.ownTicks / 60, cpuPercentAt1HzTree: slow.treeMs / 10 / 60, idleNodeRssMb: idleRss, idleNodePrivateMb: idlePrivate};
}

/** CPU (user + system) of `runs` children started one after another, per child, in ms: from this process's reaped-children times. */
function childCpuMs(runs: number, once: () => void): number {
  const before = cpuTicks(process.pid, {children: true}) - cpuTicks(process.pid);
  for (let i = 0; i < runs; i++)
    once();
  return ((cpuTicks(process.pid, {children: true}) - cpuTicks(process.pid)) - before) * 10 / runs;
}

/**
 * What one probe costs the process tree: a request to the resident prober
 * (its checks, O_DIRECT write and read-back), against what each probe started
 * before: a perl (start-up alone) or the two dd runs before that. Then the
 * reporter with 1, 2 and 4 watched paths (each on a volume of its own) at
 * --interval=0.1: CPU per interval and per probe, everything it starts included.
 */
async function pathsCost(dir: string, teardown: Teardown): Promise<void> {
  const volumes = [1, 2, 3, 4].map(i => LoopVolume.create(dir, teardown, 32, {name: `paths${i}`}));
  const monitors = volumes.map(v => path.join(v.mountpoint, 'db'));
  for (const monitor of monitors)
    fs.mkdirSync(monitor, {recursive: true});

  const ddFile = path.join(monitors[0]!, 'dd-probe');
  const block = Buffer.alloc(4096, 0x2e);
  const perlRuns: Array<number> = [];
  const ddRuns: Array<number> = [];
  for (let run = 0; run < 5; run++) {
    perlRuns.push(childCpuMs(100, () => spawnSync('perl', ['-e', '1'], {env: {PATH: process.env.PATH, LC_ALL: 'C'}})));
    ddRuns.push(childCpuMs(100, () => {
      spawnSync('dd', [`of=${ddFile}`, 'bs=4096', 'count=1', 'iflag=fullblock', 'oflag=direct,dsync', 'conv=notrunc', 'status=none'], {input: block});
      spawnSync('dd', [`if=${ddFile}`, 'bs=4096', 'count=1', 'iflag=direct', 'status=none'], {encoding: 'buffer'});
    }));
  }
  const [perlStat, ddStat] = [stat(perlRuns), stat(ddRuns)];
  line('a perl started (what each probe cost before it was resident)', fmt(perlStat, 'ms', 2));
  line('  the two dd runs before that (write, read back)', fmt(ddStat, 'ms', 2));
  results.probeChildCpuMs = {perlStart: perlStat, dd: ddStat};

  const seconds = Number(process.env.BENCH_PATHS_SECONDS ?? 10);
  for (const n of [1, 2, 4]) {
    const perInterval: Array<number> = [];
    const perProbe: Array<number> = [];
    const ownPerInterval: Array<number> = [];
    for (let run = 0; run < 5; run++) {
      const r = await reporterRun(monitors.slice(0, n), dir, 0.1, seconds);
      // Every heartbeat needs one fresh probe of every path.
      perInterval.push(r.treeMs / r.beats);
      perProbe.push(r.treeMs / (r.beats * n));
      ownPerInterval.push(r.ownTicks * 10 / r.beats);
    }
    const [i, p, o] = [stat(perInterval), stat(perProbe), stat(ownPerInterval)];
    line(`reporter with ${n} path(s): CPU per interval`, `${fmt(i, 'ms', 2)}; reporter alone ${o.median.toFixed(2)} ms`);
    line(`  CPU per probe (reporter + prober)`, fmt(p, 'ms', 2));
    line(`  at the default --interval=1`, `${(i.median / 10).toFixed(2)} % of a core`);
    results[`reporterPaths${n}`] = {seconds, interval: 0.1, cpuMsPerInterval: i, cpuMsPerProbe: p, reporterOwnCpuMsPerInterval: o};
  }
}

/**
 * What the reporter's evidence and checks cost: a device's sysfs counters read once (what each reporter
 * does per device per interval), and a reporter with one --check against none
 * at --interval=0.1 (the check is /bin/true: the cost is starting it), medians
 * of 5 runs, CPU of the reporter and everything it starts.
 */
async function verdictsCost(volume: LoopVolume, dir: string): Promise<void> {
  const node = deviceNode(sh(['lsblk', '-dno', 'MAJ:MIN', volume.device]).trim());
  if (node !== null) {
    const watch = new DeviceWatch(node);
    const runs: Array<number> = [];
    for (let run = 0; run < 5; run++) {
      const cpu0 = process.cpuUsage();
      for (let i = 0; i < 10_000; i++)
        watch.tick();
      const cpu = process.cpuUsage(cpu0);
      runs.push((cpu.user + cpu.system) / 10_000);
    }
    watch.close();
    const s = stat(runs);
    line('sysfs counters of one device, read once (stat + inflight)', fmt(s, 'µs CPU', 1));
    results.sysfsSampleCpuUs = s;
  }
  const seconds = Number(process.env.BENCH_CHECK_SECONDS ?? 10);
  const watched = [path.join(volume.mountpoint, 'bench')];
  const perInterval = async (extra: Array<string>) => {
    const runs: Array<number> = [];
    for (let run = 0; run < 5; run++) {
      const r = await reporterRun(watched, dir, 0.1, seconds, () => {}, extra);
      runs.push(r.treeMs / r.beats);
    }
    return stat(runs);
  };
  const none = await perInterval([]);
  const one = await perInterval(['--check=/bin/true']);
  line('reporter, 1 path: CPU per interval, no --check', fmt(none, 'ms', 2));
  line('  with --check=/bin/true', `${fmt(one, 'ms', 2)}; the check ${(one.median - none.median).toFixed(2)} ms a run`);
  results.checkCost = {seconds, interval: 0.1, cpuMsPerIntervalNoCheck: none, cpuMsPerIntervalOneCheck: one};
}

async function fencing(dir: string, teardown: Teardown): Promise<void> {
  const rig = createNetRig(teardown);
  const fifo = path.join(dir, 'mon', 'ebsmon.fifo');
  const stateDir = path.join(dir, 'mon');
  // The iptables fallback: the monitor's own deadline, then iptables-restore.
  const monitor = ebsmon(['monitor', '--firewall=iptables', `--fifo=${fifo}`, `--state-dir=${stateDir}`, '--timeout=1', '--recover=1', '--max-reporters=10000', '--log-level=warn', '--protect-ports='], {ns: rig.srv});
  await waitFor('the monitor', () => fs.existsSync(path.join(stateDir, 'state.json')));
  const writer = new FifoWriter(fifo);
  const count = () => {
    const out = spawnSync('ip', ['netns', 'exec', rig.srv, 'iptables', '-S', 'EBSMON'], {encoding: 'utf8'}).stdout;
    return out.split('\n').filter(l => l.includes('ebsmon:')).length;
  };

  // Deadline -> rule in kernel: the monitor's deadline is 1 s after it read the heartbeat.
  const latencies: Array<number> = [];
  for (let i = 0; i < 20; i++) {
    const name = `lat${i}`;
    const sentAt = performance.now();
    writer.send(heartbeat(name, 20000 + i));
    for (;;) {
      const r = spawnSync('ip', ['netns', 'exec', rig.srv, 'iptables', '-C', 'EBSMON', '!', '-i', 'lo', '-p', 'tcp', '-m', 'tcp', '--dport', String(20000 + i), '-m', 'comment', '--comment', `ebsmon:${name}`, '-j', 'REJECT', '--reject-with', 'tcp-reset'], {stdio: 'ignore'});
      if (r.status === 0)
        break;
    }
    latencies.push(performance.now() - sentAt - 1000);
    writer.send(encodeMessage({v: 1, kind: 'unblock', all: true, pid: 1, user: 'bench'}));
    await waitFor('cleared', () => count() === 0, 10_000, 5);
  }
  const s = stat(latencies);
  line('[iptables] deadline -> rule in kernel (IPv4, 20 fences)', fmt(s, 'ms'));
  results.fenceLatencyMs = s;

  for (const n of [100, 1000]) {
    const times: Array<number> = [];
    for (let run = 0; run < 3; run++) {
      const t0 = performance.now();
      for (let i = 0; i < n; i++) {
        while (!writer.send(heartbeat(`many${n}-${run}-${i}`, 30000 + i)).ok)
          await new Promise(resolve => setImmediate(resolve));
      }
      await waitFor(`${n} rules`, () => count() >= n, 30_000, 10);
      times.push(performance.now() - t0 - 1000);
      writer.send(encodeMessage({v: 1, kind: 'unblock', all: true, pid: 1, user: 'bench'}));
      await waitFor('cleared', () => count() === 0, 30_000, 20);
    }
    const t = stat(times);
    line(`[iptables] fence ${n} reporters at once: deadline -> all rules in`, fmt(t, 'ms', 0));
    results[`fence${n}Ms`] = t;
  }

  writer.close();
  await monitor.stop();
}

/** BENCH_ONLY=cycles,soak runs some steps; by default all of them, in this order. The soak's settings: see soakOptions (SOAK_SECONDS...). */
async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ebsmon-bench-'));
  const teardown = new Teardown(dir);
  const only = (process.env.BENCH_ONLY ?? '').split(',').filter(Boolean);
  const seconds = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
  try {
    process.stdout.write(`ebsmon benchmarks, ${results.machine as string}\n`);
    const volume = LoopVolume.create(dir, teardown);
    const steps: Array<[string, () => Promise<void>]> = [
      ['decode', () => decodeThroughput(dir)],
      ['probe', () => probeCost(volume, dir)],
      ['paths', () => pathsCost(dir, teardown)],
      ['discovery', () => discoveryCost(volume, dir)],
      // BENCH_LIGHT_SECONDS (30) after BENCH_LIGHT_WARMUP (20), BENCH_LIGHT_RUNS (3) runs; the standalone executable too once make release built it;
      // BENCH_LIGHT_BIN=FILE: another build of the bundle first, the same way (a before beside the after).
      ['light', async () => {
        const light = {seconds: seconds('BENCH_LIGHT_SECONDS', 30), warmup: seconds('BENCH_LIGHT_WARMUP', 20), runs: seconds('BENCH_LIGHT_RUNS', 3)};
        if (process.env.BENCH_LIGHT_BIN !== undefined && light.runs > 0)
          await besidePeer(dir, teardown, {...light, bin: process.env.BENCH_LIGHT_BIN, label: 'BENCH_LIGHT_BIN'});
        if (light.runs > 0)
          await besidePeer(dir, teardown, light);
        if (light.runs > 0 && fs.existsSync(STANDALONE))
          await besidePeer(dir, teardown, {...light, bin: STANDALONE, label: 'standalone'});
        await hostOfFive(dir, teardown, light);
      }],
      ['reporter', () => reporterFootprint(volume, dir, seconds('BENCH_REPORTER_SECONDS', 600))],
      ['fencing', () => fencing(dir, teardown)],
      ['cycles', async () => {
        await freezeThawCycles(volume, dir, teardown, {backend: 'nftables'});
        await freezeThawCycles(volume, dir, teardown, {backend: 'nftables', stopMonitor: true});
        await freezeThawCycles(volume, dir, teardown, {backend: 'nftables', forwarded: true});
        await freezeThawCycles(volume, dir, teardown, {backend: 'iptables', forwarded: true});
        await freezeThawCycles(volume, dir, teardown, {backend: 'iptables'});
      }],
      ['hung', () => hungDiskCycles(dir, teardown)],
      ['cutter', () => cutterFigures(dir, teardown)],
      ['many', () => manyAtOnce(dir, teardown)],
      ['footprint', () => monitorFootprint(dir, teardown, seconds('BENCH_STEADY_SECONDS', 60))],
      ['latency', () => packetPathLatency(dir, teardown)],
      ['mariadb', () => mariadbTimeToError(dir, teardown)],
      // BENCH_PATRONI_HANG (60 s), BENCH_PATRONI_RUNS (1; about 95 s a run, 18 runs by default), BENCH_PATRONI_CASES (abcdefghi: g-i are ebsmon), BENCH_PATRONI_ROUTE (patroni), BENCH_PATRONI_VERSIONS (system,unstable).
      ['patroni', () => patroniControls(dir)],
      // BENCH_GALERA_HANG (30 s), BENCH_GALERA_RUNS (2 a mode), BENCH_GALERA_MODES (none,ebsmon).
      ['galera', () => galeraHangs(dir)],
      ['verdicts', () => verdictsCost(volume, dir)],
      // make soak (BENCH_ONLY=soak) runs SOAK_SECONDS, 600 by default; a whole make bench, 300 unless SOAK_SECONDS says.
      ['soak', () => soak(dir, teardown, soakOptions(only.length === 0 ? {SOAK_SECONDS: '300', ...process.env} : process.env))],
      ['standalone', () => standaloneFigures(dir, teardown, seconds('BENCH_STANDALONE_SECONDS', 60))],
      ['picture', () => recordCycle(volume, dir, teardown)],
    ];
    for (const [name, step] of steps) {
      if (only.length === 0 || only.includes(name))
        await step();
    }
  } finally {
    teardown.dispose();
    fs.rmSync(dir, {recursive: true, force: true});
  }
  const file = path.join(__dirname, only.length === 0 ? 'results.json' : 'results.partial.json');
  fs.writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`wrote ${path.relative(process.cwd(), file)}\n`);
}

void main();

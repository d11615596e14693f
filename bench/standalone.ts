// Issue 17's figures: the npm bundle (node + dist/ebsmon, its shebang's V8
// flag) against the standalone executable (dist/ebsmon-linux-x64, with the
// NODE_OPTIONS its systemd unit gives it): start-up time and memory of the
// monitor and the reporter, what a host with five services pays, and the
// reporter's memory under each V8 setting tried for it.
import {spawn, spawnSync} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import {LineDecoder} from '../src/heartbeat';
import {FifoWriter, ensureFifo, openFifoReader} from '../src/transport';
import {STANDALONE} from '../test/helpers/nonode';
import {HELPER, Proc, ebsmon, scrubbedEnv} from '../test/helpers/proc';
import {EBSMON, createNetRig, descendants, waitFor} from '../test/helpers/rig';
import type {NetRig, Teardown} from '../test/helpers/rig';

import {beat, send, tmpfs} from './deadlines';
import {anonKb, cpuTicks, exeKb, fmt, line, privateKb, pssKb, results, rssKb, stat} from './stats';

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

/** How a role is started: the bundle as npm installs it, or the standalone executable as its unit runs it. */
type Build = {label: string, bin: Array<string>, nodeOptions?: string};
const MONITOR_UNIT_OPTIONS = '--max-semi-space-size=2';
const REPORTER_UNIT_OPTIONS = '--jitless --max-semi-space-size=1';
const bundle: Build = {label: 'bundle', bin: [EBSMON]};
const standalone = (nodeOptions?: string): Build => ({label: nodeOptions === undefined ? 'standalone' : `standalone, NODE_OPTIONS=${nodeOptions || '(none)'}`, bin: [STANDALONE], nodeOptions});
const envOf = (build: Build, extra: Record<string, string> = {}) => scrubbedEnv({...(build.nodeOptions === undefined || build.nodeOptions === '' ? {} : {NODE_OPTIONS: build.nodeOptions}), ...extra});

/** A FIFO this process reads, counting heartbeats: the reporter's monitor, without a firewall. */
function heartbeatSink(fifo: string): {beats: () => number, firstAt: () => number, close: () => void} {
  ensureFifo(fifo);
  let beats = 0;
  let first = NaN;
  const decoder = new LineDecoder({onMessage: () => {
    if (beats === 0)
      first = performance.now();
    beats += 1;
  }, onReject: () => {}});
  const reader = openFifoReader(fifo, chunk => decoder.push(chunk));
  return {beats: () => beats, firstAt: () => first, close: () => reader.close()};
}

/**
 * How much of an executable is resident depends on the page cache: the kernel maps
 * up to 16 pages around each fault when they are cached, so a freshly built file
 * (all of it cached) shows up to 15 MB more RSS than the same code read from disk
 * on demand. Each measured process starts with both executables out of the page
 * cache (pages other processes map stay; nothing else is touched).
 */
function coldStart(): void {
  for (const file of [fs.realpathSync(process.execPath), STANDALONE])
    spawnSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
}

type Memory = {rssMb: number, pssMb: number, privateMb: number, anonMb: number, exeMb: number};
/** Anonymous memory of a process's children (the spawn helper's bash, the monitor's nft), which may come and go. */
const childrenAnonKb = (pid: number) => descendants(pid).reduce((sum, child) => {
  try {
    return sum + anonKb(child);
  } catch {
    return sum;
  }
}, 0);
const memory = (pid: number): Memory => ({rssMb: rssKb(pid) / 1024, pssMb: pssKb(pid) / 1024, privateMb: privateKb(pid) / 1024, anonMb: anonKb(pid) / 1024, exeMb: exeKb(pid) / 1024});
const median = (values: Array<number>) => stat(values).median;
const medianMemory = (samples: Array<Memory>): Memory => ({
  rssMb: median(samples.map(s => s.rssMb)), pssMb: median(samples.map(s => s.pssMb)), privateMb: median(samples.map(s => s.privateMb)),
  anonMb: median(samples.map(s => s.anonMb)), exeMb: median(samples.map(s => s.exeMb)),
});
const mb = (m: Memory) => `RSS ${m.rssMb.toFixed(1)} MB (executable's pages ${m.exeMb.toFixed(1)}, anonymous ${m.anonMb.toFixed(1)}), PSS ${m.pssMb.toFixed(1)} MB`;

/** `ebsmon --version`, the two builds in turn so that drift hits both: wall ms per run. */
function versionStartup(runs: number): Record<string, number> {
  const times: Record<string, Array<number>> = {bundle: [], standalone: []};
  for (let i = 0; i < runs + 2; i++) {
    for (const [label, argv] of [['bundle', [EBSMON]], ['standalone', [STANDALONE]]] as const) {
      const t0 = performance.now();
      const result = spawnSync(argv[0], ['--version'], {env: scrubbedEnv(), encoding: 'utf8'});
      const ms = performance.now() - t0;
      if (result.status !== 0)
        throw new Error(`${argv[0]} --version: ${result.stderr}`);
      // The first two rounds warm the page cache.
      if (i >= 2)
        times[label]!.push(ms);
    }
  }
  const out: Record<string, number> = {};
  for (const [label, values] of Object.entries(times)) {
    const s = stat(values);
    line(`ebsmon --version, ${label}: wall time`, fmt(s, 'ms'));
    out[label] = s.median;
  }
  line('  standalone / bundle', (out.standalone! / out.bundle!).toFixed(2));
  return out;
}

/** Spawn -> "monitor running" (nft writer started and warmed, table written, FIFO open). */
async function monitorStartup(rig: NetRig, base: string, build: Build, runs: number): Promise<number> {
  const times: Array<number> = [];
  for (let run = 0; run < runs; run++) {
    const stateDir = path.join(base, `start-${build.bin.length}-${build.nodeOptions ?? 'none'}-${run}`.replace(/[^\w-]/g, '_'));
    const t0 = performance.now();
    const monitor = ebsmon(['monitor', `--fifo=${stateDir}/ebsmon.fifo`, `--state-dir=${stateDir}`, '--log-format=json'], {ns: rig.srv, bin: build.bin, env: envOf(build)});
    await waitFor('the monitor', () => monitor.logs().some(l => l.message === 'monitor running'), 30_000, 2);
    times.push(performance.now() - t0);
    await monitor.stop();
  }
  const s = stat(times);
  line(`monitor start-up (spawn -> running), ${build.label}`, fmt(s, 'ms'));
  return s.median;
}

/** Spawn -> its first heartbeat read from the FIFO (one probe included). */
async function reporterStartup(base: string, build: Build, runs: number): Promise<number> {
  const times: Array<number> = [];
  const watched = path.join(base, 'watched');
  fs.mkdirSync(watched, {recursive: true});
  for (let run = 0; run < runs; run++) {
    const sink = heartbeatSink(path.join(base, `start-${run}.fifo`));
    const t0 = performance.now();
    const reporter = ebsmon(['report', `--monitor=${watched}`, '--ports=80', `--fifo=${base}/start-${run}.fifo`, '--log-level=error'], {bin: build.bin, env: envOf(build)});
    await waitFor('a heartbeat', () => sink.beats() > 0, 30_000, 2);
    times.push(sink.firstAt() - t0);
    await reporter.stop();
    sink.close();
  }
  const s = stat(times);
  line(`reporter start-up (spawn -> first heartbeat), ${build.label}`, fmt(s, 'ms'));
  return s.median;
}

/** A reporter at `interval` for `seconds`: its memory (median of one sample a second after the first 5), CPU, and V8's heap at exit. */
async function reporterMemory(base: string, build: Build, seconds: number, interval = 1): Promise<Record<string, unknown>> {
  const watched = path.join(base, 'watched');
  fs.mkdirSync(watched, {recursive: true});
  const fifo = path.join(base, `mem-${Math.random().toString(36).slice(2)}.fifo`);
  const heapOut = `${fifo}.heap.json`;
  const sink = heartbeatSink(fifo);
  const withHeap: Build = {...build, nodeOptions: `${build.nodeOptions ?? ''} --require ${HELPER('heap-at-exit.cjs')}`.trim()};
  // The bundle's flags stay its shebang's: only the preload goes in NODE_OPTIONS.
  coldStart();
  const reporter = ebsmon(['report', `--monitor=${watched}`, '--ports=80', `--fifo=${fifo}`, `--interval=${interval}`, '--log-level=error'], {bin: build.bin, env: envOf(withHeap, {EBSMON_HEAP_OUT: heapOut})});
  await waitFor('heartbeats', () => sink.beats() > 1);
  await sleep(5000);
  const samples: Array<Memory> = [];
  const helpers: Array<number> = [];
  const cpu0 = cpuTicks(reporter.pid);
  for (let s = 0; s < seconds; s++) {
    samples.push(memory(reporter.pid));
    helpers.push(childrenAnonKb(reporter.pid) / 1024);
    await sleep(1000);
  }
  const cpuPercent = (cpuTicks(reporter.pid) - cpu0) / seconds;
  await reporter.stop();
  sink.close();
  const heap = fs.existsSync(heapOut) ? JSON.parse(fs.readFileSync(heapOut, 'utf8')) as {totalPhysical: number, used: number, spaces: Record<string, number>} : null;
  const m = medianMemory(samples);
  const heapText = heap === null ? '' : `; V8 heap ${(heap.totalPhysical / 2 ** 20).toFixed(1)} MB committed, ${(heap.used / 2 ** 20).toFixed(1)} MB used, young generation ${((heap.spaces.new_space ?? 0) / 2 ** 20).toFixed(1)} MB`;
  const helpersMb = median(helpers);
  line(`  reporter, ${build.label}${interval === 1 ? '' : `, --interval=${interval}`}`, `${mb(m)}; CPU ${cpuPercent.toFixed(2)} % of a core${heapText}; its spawn helper's anonymous memory ${helpersMb.toFixed(1)} MB`);
  return {...m, helpersAnonMb: helpersMb, cpuPercent, interval, seconds, heapCommittedMb: heap === null ? null : heap.totalPhysical / 2 ** 20, heapUsedMb: heap === null ? null : heap.used / 2 ** 20, youngGenerationMb: heap === null ? null : (heap.spaces.new_space ?? 0) / 2 ** 20};
}

/**
 * A monitor and five reporters, as their units run them, for `seconds`: the sum of
 * their RSS (what top adds up), and what the host pays: their anonymous memory,
 * plus the executable's resident pages once (every process of it shares them).
 */
async function fiveServices(rig: NetRig, base: string, monitorBuild: Build, reporterBuild: Build, seconds: number): Promise<Record<string, number>> {
  const stateDir = path.join(base, `five-${reporterBuild.bin.length}-${Math.random().toString(36).slice(2)}`);
  const procs: Array<Proc> = [];
  coldStart();
  try {
    const monitor = ebsmon(['monitor', `--fifo=${stateDir}/ebsmon.fifo`, `--state-dir=${stateDir}`, '--log-level=warn', '--log-format=json'], {ns: rig.srv, bin: monitorBuild.bin, env: envOf(monitorBuild)});
    procs.push(monitor);
    await waitFor('the monitor', () => fs.existsSync(path.join(stateDir, 'state.json')));
    for (let i = 0; i < 5; i++) {
      const watched = path.join(base, `svc${i}`);
      fs.mkdirSync(watched, {recursive: true});
      procs.push(ebsmon(['report', `--monitor=${watched}`, `--ports=${7600 + i}`, `--fifo=${stateDir}/ebsmon.fifo`, '--log-level=error'], {bin: reporterBuild.bin, env: envOf(reporterBuild)}));
    }
    await sleep(5000);
    const rss: Array<number> = [];
    const host: Array<number> = [];
    for (let s = 0; s < seconds; s++) {
      rss.push(procs.reduce((sum, p) => sum + rssKb(p.pid), 0) / 1024);
      host.push((procs.reduce((sum, p) => sum + anonKb(p.pid) + childrenAnonKb(p.pid), 0) + Math.max(...procs.map(p => exeKb(p.pid)))) / 1024);
      await sleep(1000);
    }
    const out = {rssSumMb: median(rss), hostMb: median(host)};
    line(`  monitor + 5 reporters, ${reporterBuild.bin[0] === STANDALONE ? 'standalone' : 'bundle'}`, `sum of RSS ${out.rssSumMb.toFixed(1)} MB; the host pays ${out.hostMb.toFixed(1)} MB (anonymous memory with their helpers', and the executable once)`);
    return out;
  } finally {
    for (const proc of procs.reverse())
      await proc.stop();
  }
}

/** The monitor with 1000 reporters at 1 Hz: RSS and anonymous memory at most, to see the V8 flag act in the standalone. */
async function busyMonitor(rig: NetRig, base: string, build: Build, seconds: number): Promise<{rssMaxMb: number, anonMaxMb: number}> {
  const n = 1000;
  const stateDir = path.join(base, `busy-${(build.nodeOptions ?? 'bundle').replace(/\W/g, '_')}`);
  coldStart();
  const monitor = ebsmon(['monitor', `--fifo=${stateDir}/ebsmon.fifo`, `--state-dir=${stateDir}`, '--timeout=10', '--log-level=warn', `--max-reporters=${n + 10}`, '--protect-ports='], {ns: rig.srv, bin: build.bin, env: envOf(build)});
  try {
    await waitFor('the monitor', () => fs.existsSync(path.join(stateDir, 'state.json')));
    const writer = new FifoWriter(`${stateDir}/ebsmon.fifo`);
    const rss: Array<number> = [];
    const anon: Array<number> = [];
    for (let s = 0; s < seconds + 3; s++) {
      await sleep(1000 - Date.now() % 1000);
      for (let i = 0; i < n; i++)
        await send(writer, beat(`busy${i}`, 44000 + i));
      if (s >= 3) {
        rss.push(rssKb(monitor.pid) / 1024);
        anon.push(anonKb(monitor.pid) / 1024);
      }
    }
    writer.close();
    const out = {rssMaxMb: Math.max(...rss), anonMaxMb: Math.max(...anon)};
    line(`  monitor, 1000 reporters at 1 Hz for ${seconds} s, ${build.label}`, `RSS max ${out.rssMaxMb.toFixed(1)} MB, anonymous max ${out.anonMaxMb.toFixed(1)} MB`);
    return out;
  } finally {
    await monitor.stop();
  }
}

export async function standaloneFigures(dir: string, teardown: Teardown, seconds: number): Promise<void> {
  if (!fs.existsSync(STANDALONE))
    throw new Error(`${STANDALONE} is missing: make bench builds it (make release)`);
  const rig = createNetRig(teardown);
  const base = tmpfs(path.join(dir, 'standalone'), teardown);
  // The reporters' watched directories: on a disk, not on the tmpfs.
  const disk = path.join(dir, 'standalone-disk');
  fs.mkdirSync(disk, {recursive: true});
  const out: Record<string, unknown> = {};
  out.versionMs = versionStartup(20);
  out.monitorStartupMs = {bundle: await monitorStartup(rig, base, bundle, 5), standalone: await monitorStartup(rig, base, standalone(MONITOR_UNIT_OPTIONS), 5)};
  out.reporterStartupMs = {bundle: await reporterStartup(disk, bundle, 5), standalone: await reporterStartup(disk, standalone(REPORTER_UNIT_OPTIONS), 5)};

  line(`reporter memory at --interval=1 over ${seconds} s (medians of one sample a second)`, '');
  const settings = ['', '--max-semi-space-size=2', '--max-semi-space-size=1', '--jitless', REPORTER_UNIT_OPTIONS];
  const reporter: Record<string, unknown> = {bundle: await reporterMemory(disk, bundle, seconds)};
  for (const setting of settings)
    reporter[`standalone ${setting || '(no flags)'}`] = await reporterMemory(disk, standalone(setting), seconds);
  reporter[`standalone ${REPORTER_UNIT_OPTIONS}, --interval=0.1`] = await reporterMemory(disk, standalone(REPORTER_UNIT_OPTIONS), seconds, 0.1);
  reporter['bundle, --interval=0.1'] = await reporterMemory(disk, bundle, seconds, 0.1);
  // For scale: an empty event loop in node.
  coldStart();
  const idle = new Proc(spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], {stdio: 'ignore'}));
  await sleep(3000);
  const idleMemory = memory(idle.pid);
  await idle.stop();
  line('  for scale: node with an empty event loop', mb(idleMemory));
  reporter.idleNode = idleMemory;
  out.reporterMemory = reporter;

  out.fiveServices = {
    bundle: await fiveServices(rig, base, bundle, bundle, Math.min(seconds, 30)),
    standalone: await fiveServices(rig, base, standalone(MONITOR_UNIT_OPTIONS), standalone(REPORTER_UNIT_OPTIONS), Math.min(seconds, 30)),
  };
  out.busyMonitorRssMaxMb = {
    bundle: await busyMonitor(rig, base, bundle, seconds),
    standaloneUnitFlags: await busyMonitor(rig, base, standalone(MONITOR_UNIT_OPTIONS), seconds),
    standaloneNoFlags: await busyMonitor(rig, base, standalone(''), seconds),
  };
  results.standalone = out;
}

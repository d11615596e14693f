// make bench, step `light`: the reporter beside the script it replaces.
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import {ensureFifo, openFifoReader} from '../src/transport';
import {Proc, ebsmon} from '../test/helpers/proc';
import {EBSMON, LoopVolume, Teardown, createNetRig, waitFor} from '../test/helpers/rig';

import {tmpfs} from './deadlines';
import {CpuGroup, fmt, line, pssKb, results, rssKb, stat} from './stats';

/**
 * The peer: what the 2013 Ruby reporter did, as one resident perl (one
 * process, as Ruby was; a shell loop would fork `touch` each time): every
 * interval, touch a file in each watched directory (utime, no I/O reaches the
 * device: this is what ebsmon's probe replaced) and write a heartbeat line to
 * a FIFO, opened without blocking for each line.
 * perl PEER INTERVAL FIFO O_WRONLY|O_NONBLOCK DIR...
 */
const PEER_SCRIPT = String.raw`
my ($interval, $fifo, $wflags, @dirs) = @ARGV;
my $seq = 0;
while (1) {
  for my $d (@dirs) {
    my $f = "$d/.peer-touch";
    open(my $t, '>>', $f) and close $t;
    utime(undef, undef, $f);
  }
  $seq++;
  if (sysopen(my $w, $fifo, $wflags + 0)) {
    syswrite($w, qq({"v":1,"kind":"heartbeat","name":"peer","pid":$$,"ports":[3306],"interval":$interval,"probeTimeout":3,"seq":$seq,"sentAt":) . time() * 1000 . qq(,"probeMs":0}\n));
    close $w;
  }
  select(undef, undef, undef, $interval);
}
`;

/** One side of a run: a command in a cgroup of its own, heartbeat lines counted on its FIFO. */
class Side {
  private lines = 0;
  private readonly reader: {close: () => void};

  private constructor(readonly proc: Proc, readonly group: CpuGroup, fifo: string) {
    this.reader = openFifoReader(fifo, chunk => {
      for (const byte of chunk)
        this.lines += byte === 0x0a ? 1 : 0;
    });
  }

  static start(label: string, fifo: string, argv: Array<string>): Side {
    ensureFifo(fifo);
    const group = CpuGroup.create(`ebsmon-bench-${label}-${process.pid}-${Date.now()}`);
    const full = [...group.prefix, ...argv];
    return new Side(new Proc(spawn(full[0]!, full.slice(1), {stdio: ['ignore', 'ignore', 'pipe']})), group, fifo);
  }

  get beats(): number {
    return this.lines;
  }

  /** Every process of its tree, Pss summed: shared pages divided among all who map them. */
  pssKb(): number {
    return this.group.pids().reduce((sum, pid) => sum + safe(() => pssKb(pid)), 0);
  }

  async stop(): Promise<void> {
    await this.proc.stop();
    await waitFor('its tree gone', () => this.group.pids().length === 0, 10_000);
    this.group.remove();
    this.reader.close();
  }
}

const safe = (read: () => number) => {
  try {
    return read();
  } catch {
    return 0;
  }
};
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

type Window = {cpuMsPerTick: number, rssMb: number, pssMb: number, beats: number};

/** After a warm-up (start-up's compiling and first collections are not what a reporter costs for years), CPU and memory over a window. */
async function measure(sides: Array<Side>, warmupS: number, seconds: number): Promise<Array<Window>> {
  await waitFor('first heartbeats', () => sides.every(s => s.beats >= 2), 30_000);
  await sleep(warmupS * 1000);
  const start = sides.map(s => ({ms: s.group.ms(), beats: s.beats}));
  await sleep(seconds * 1000);
  return sides.map((s, i) => {
    const beats = s.beats - start[i]!.beats;
    return {beats, cpuMsPerTick: (s.group.ms() - start[i]!.ms) / beats, rssMb: rssKb(s.proc.pid) / 1024, pssMb: s.pssKb() / 1024};
  });
}

/**
 * `ebsmon report` and the peer on the same loop volume, at --interval=1, for
 * the same window, side by side, for 1, 2 and 4 watched paths: CPU per tick
 * of each one's whole process tree (its cgroup: the reporter's spawn helper
 * and probers too), RSS of the process started by hand (no NODE_OPTIONS), and
 * the ratio ebsmon/peer. Medians of BENCH_LIGHT_RUNS runs.
 */
export async function besidePeer(dir: string, teardown: Teardown, {seconds, warmup, runs, bin = EBSMON, label = 'bundle'}: {seconds: number, warmup: number, runs: number, bin?: string, label?: string}): Promise<void> {
  const volume = LoopVolume.create(dir, teardown, 64, {name: `light-${label}`});
  const script = path.join(dir, 'peer.pl');
  fs.writeFileSync(script, PEER_SCRIPT);
  const wflags = String(fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  for (const n of [1, 2, 4]) {
    const dirs = Array.from({length: n}, (_, i) => path.join(volume.mountpoint, `db${i}`));
    for (const d of dirs)
      fs.mkdirSync(d, {recursive: true});
    const ours: Array<Window> = [];
    const peers: Array<Window> = [];
    for (let run = 0; run < runs; run++) {
      const reporter = Side.start('light', path.join(dir, `light-${label}-${n}.fifo`), [bin, 'report', ...dirs.map(d => `--monitor=${d}`), '--ports=3306', `--fifo=${path.join(dir, `light-${label}-${n}.fifo`)}`, '--interval=1', '--log-level=warn']);
      const peer = Side.start('peer', path.join(dir, `peer-${n}.fifo`), ['env', '-i', 'perl', script, '1', path.join(dir, `peer-${n}.fifo`), wflags, ...dirs]);
      try {
        const [a, b] = await measure([reporter, peer], warmup, seconds);
        ours.push(a!);
        peers.push(b!);
      } finally {
        await reporter.stop();
        await peer.stop();
      }
    }
    const [cpu, peerCpu, rss, peerRss] = [stat(ours.map(w => w.cpuMsPerTick)), stat(peers.map(w => w.cpuMsPerTick)), stat(ours.map(w => w.rssMb)), stat(peers.map(w => w.rssMb))];
    const ratio = stat(ours.map((w, i) => w.cpuMsPerTick / peers[i]!.cpuMsPerTick));
    line(`[${label}] ${n} path(s), --interval=1: ebsmon CPU per tick`, `${fmt(cpu, 'ms', 3)}; ${(cpu.median / n).toFixed(3)} ms a path`);
    line('  the peer (touch + FIFO line, one perl)', fmt(peerCpu, 'ms', 3));
    line('  ratio ebsmon/peer (CPU per tick)', fmt(ratio, 'x', 1));
    line('  RSS, ebsmon started by hand / the peer', `${fmt(rss, 'MB', 1)} / ${peerRss.median.toFixed(1)} MB`);
    results[`light_${label}_${n}`] = {interval: 1, seconds, warmup, runs, cpuMsPerTick: cpu, cpuMsPerTickPerPath: cpu.median / n, peerCpuMsPerTick: peerCpu, ratio, rssMb: rss, peerRssMb: peerRss};
  }
}

/**
 * What a host pays: one monitor (nftables, in a namespace of its own) and
 * five reporters at --interval=1, one path each, against five peers. Memory
 * as Pss summed over every process of each tree (the executable's pages,
 * shared by all six, counted once), CPU per second of all of them.
 */
export async function hostOfFive(dir: string, teardown: Teardown, {seconds, warmup, bin = EBSMON, label = 'bundle'}: {seconds: number, warmup: number, bin?: string, label?: string}): Promise<void> {
  const rig = createNetRig(teardown);
  const volume = LoopVolume.create(dir, teardown, 64, {name: `host-${label}`});
  const stateDir = tmpfs(path.join(dir, `host-${label}`), teardown);
  const fifo = path.join(stateDir, 'ebsmon.fifo');
  const group = CpuGroup.create(`ebsmon-bench-host-${process.pid}-${Date.now()}`);
  const monitor = ebsmon(['monitor', '--firewall=nftables', `--fifo=${fifo}`, `--state-dir=${stateDir}`, '--timeout=5', '--log-level=warn', '--protect-ports='],
    // Into the group before ip netns exec, which mounts a /sys of the namespace's own.
    {bin: [...group.prefix, 'ip', 'netns', 'exec', rig.srv, bin]});
  const script = path.join(dir, 'peer.pl');
  fs.writeFileSync(script, PEER_SCRIPT);
  const wflags = String(fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  const sides: Array<Side> = [];
  try {
    await waitFor('the monitor', () => fs.existsSync(path.join(stateDir, 'state.json')), 10_000).catch((error: Error) => {
      throw new Error(`${error.message}: ${monitor.stderr.slice(-2000)}`);
    });
    for (let i = 0; i < 5; i++) {
      const d = path.join(volume.mountpoint, `svc${i}`);
      fs.mkdirSync(d, {recursive: true});
      // The peers write to FIFOs of their own (counted); the reporters to the monitor's.
      sides.push(Side.start(`host${i}`, path.join(dir, `host-peer-${i}.fifo`), ['env', '-i', 'perl', script, '1', path.join(dir, `host-peer-${i}.fifo`), wflags, d]));
    }
    const reporters = Array.from({length: 5}, (_, i) => {
      const d = path.join(volume.mountpoint, `svc${i}`);
      const g = CpuGroup.create(`ebsmon-bench-hostrep${i}-${process.pid}-${Date.now()}`);
      return {group: g, proc: ebsmon(['report', `--monitor=${d}`, `--ports=${45000 + i}`, `--fifo=${fifo}`, '--interval=1', '--log-level=warn'], {bin: [...g.prefix, bin]})};
    });
    try {
      await waitFor('peers heartbeating', () => sides.every(s => s.beats >= 2), 30_000);
      await sleep(warmup * 1000);
      const cpu0 = [group.ms(), ...reporters.map(r => r.group.ms())];
      const peer0 = sides.map(s => s.group.ms());
      await sleep(seconds * 1000);
      const ebsmonCpu = ([group.ms(), ...reporters.map(r => r.group.ms())].reduce((a, b) => a + b, 0) - cpu0.reduce((a, b) => a + b, 0)) / seconds;
      const peerCpu = (sides.reduce((a, s) => a + s.group.ms(), 0) - peer0.reduce((a, b) => a + b, 0)) / seconds;
      const pss = (g: CpuGroup) => g.pids().reduce((sum, pid) => sum + safe(() => pssKb(pid)), 0) / 1024;
      const monitorPss = pss(group);
      const reportersPss = reporters.reduce((sum, r) => sum + pss(r.group), 0);
      const peersPss = sides.reduce((sum, s) => sum + s.pssKb(), 0) / 1024;
      line(`[${label}] a host: 1 monitor + 5 reporters at 1 Hz`, `Pss ${(monitorPss + reportersPss).toFixed(1)} MB (monitor ${monitorPss.toFixed(1)}, reporters ${reportersPss.toFixed(1)}); CPU ${ebsmonCpu.toFixed(2)} ms a second`);
      line('  5 peers', `Pss ${peersPss.toFixed(1)} MB; CPU ${peerCpu.toFixed(2)} ms a second`);
      results[`light_host_${label}`] = {seconds, warmup, pssMb: monitorPss + reportersPss, monitorPssMb: monitorPss, reportersPssMb: reportersPss, cpuMsPerSecond: ebsmonCpu, peersPssMb: peersPss, peersCpuMsPerSecond: peerCpu};
    } finally {
      for (const r of reporters) {
        await r.proc.stop();
        await waitFor('its tree gone', () => r.group.pids().length === 0, 10_000);
        r.group.remove();
      }
    }
  } finally {
    for (const s of sides)
      await s.stop();
    await monitor.stop();
    await waitFor('the monitor gone', () => group.pids().length === 0, 10_000);
    group.remove();
  }
}

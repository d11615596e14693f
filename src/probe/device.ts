import fs from 'node:fs';
import path from 'node:path';

import {DEVICE_NAME_MAX} from '../heartbeat/schema';
import type {DeviceStats} from '../heartbeat/schema';
import {deviceNumbers} from '../mounts';
import type {MountEntry} from '../mounts';

/**
 * A block device's own counters, from sysfs: `stat` (Documentation/block/stat.rst)
 * and `inflight`. sysfs is kernel memory: reading it never touches the device,
 * so it answers while the device hangs. Times are milliseconds.
 */
export type DeviceCounters = {
  /** completed I/Os: reads, writes, and discards plus flushes */
  reads: number;
  writes: number;
  others: number;
  /** milliseconds spent on the completed I/Os (the four *_ticks fields) */
  ticks: number;
  /** milliseconds the device had I/O in flight (io_ticks) */
  ioTicks: number;
  inflightReads: number;
  inflightWrites: number;
};

export type DeviceSample = DeviceCounters & {at: number};

/** The fields of `stat` (11 before Linux 4.18, 15 with discards, 17 with flushes); null if it is not one. */
export function parseStat(stat: string, inflight: string): DeviceCounters | null {
  const f = stat.trim().split(/\s+/).map(Number);
  const inf = inflight.trim().split(/\s+/).map(Number);
  if (f.length < 11 || f.some(n => !Number.isFinite(n)))
    return null;
  const at = (i: number) => f[i] ?? 0;
  const [inflightReads, inflightWrites] = inf.length === 2 && inf.every(Number.isFinite) ? [inf[0]!, inf[1]!] : [at(8), 0];
  return {
    reads: at(0),
    writes: at(4),
    others: at(11) + at(15),
    ticks: at(3) + at(7) + at(14) + at(16),
    ioTicks: at(9),
    inflightReads,
    inflightWrites,
  };
}

/** The sysfs node of a block device: whole disk, partition, loop or dm device, each with counters of its own. */
export type DeviceNode = {
  /** major:minor */
  device: string;
  /** the kernel's name: nvme1n1, nvme1n1p2, loop3, dm-0 */
  name: string;
  /** for the start-up log: what else sysfs says about it */
  detail: string;
  dir: string;
};

const SYS_DEV_BLOCK = '/sys/dev/block';
/** How far back an I/O error's evidence looks: the error itself takes a millisecond. */
export const LOOKBACK_MS = 5_000;

function readSmall(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
}

/** Start-up only: resolves a node by major:minor, or returns null when there is none (no block device behind it). */
export function deviceNode(device: string, sys = SYS_DEV_BLOCK): DeviceNode | null {
  let dir: string;
  try {
    dir = fs.realpathSync(path.join(sys, device));
  } catch {
    return null;
  }
  if (!fs.existsSync(path.join(dir, 'stat')))
    return null;
  const name = path.basename(dir).slice(0, DEVICE_NAME_MAX);
  const details: Array<string> = [];
  const dm = readSmall(path.join(dir, 'dm', 'name'));
  if (dm !== null && dm !== '')
    details.push(`device-mapper ${dm}`);
  const backing = readSmall(path.join(dir, 'loop', 'backing_file'));
  if (backing !== null && backing !== '')
    details.push(`loop device backed by ${backing}`);
  if (fs.existsSync(path.join(dir, 'partition')))
    details.push(`partition ${readSmall(path.join(dir, 'partition')) ?? '?'} of ${path.basename(path.dirname(dir))}; its own counters`);
  const slaves = (() => {
    try {
      return fs.readdirSync(path.join(dir, 'slaves'));
    } catch {
      return [];
    }
  })();
  if (slaves.length > 0)
    details.push(`on ${slaves.join(', ')}`);
  return {device, name, detail: details.join('; '), dir};
}

export type Resolved = {node: DeviceNode, via: string} | {node: null, why: string};

/**
 * The block device under a mount, found at start-up. The superblock's
 * device first (whole disk, partition, loop, dm); filesystems that give
 * their superblock an anonymous device (btrfs: 0:N) are found through the
 * block device their mount names as its source. tmpfs, NFS, FUSE and
 * overlay have none: no evidence, said once.
 */
export function resolveDevice(mount: MountEntry, dirDevice: string, sys = SYS_DEV_BLOCK, statSource: (file: string) => fs.Stats | null = statOrNull): Resolved {
  for (const device of new Set([mount.device, dirDevice])) {
    const node = deviceNode(device, sys);
    if (node !== null)
      return {node, via: device};
  }
  if (mount.source.startsWith('/')) {
    const st = statSource(mount.source);
    if (st !== null && st.isBlockDevice()) {
      const node = deviceNode(deviceNumbers(BigInt(st.rdev)), sys);
      if (node !== null)
        return {node, via: mount.source};
    }
  }
  return {node: null, why: `${mount.fstype} on ${mount.source} (${mount.device}) has no block device in ${sys}`};
}

function statOrNull(file: string): fs.Stats | null {
  try {
    return fs.statSync(file);
  } catch {
    return null;
  }
}

/**
 * One device's counters, read every interval through descriptors opened at
 * start-up (pread at offset 0 makes sysfs render the attribute afresh): no
 * path lookup after start-up, about 20 µs a read.
 */
export class DeviceWatch {
  private readonly statFd: number;
  private readonly inflightFd: number | null;
  private readonly buffer = Buffer.alloc(512);
  private last: DeviceSample | null = null;
  /** when a sample first showed the current completion count */
  private progressAt = 0;
  /** the sample that opens the current window (the previous tick's) */
  private windowStart: DeviceSample | null = null;
  /** the ticks' samples of the last LOOKBACK_MS, oldest first */
  private readonly recent: Array<DeviceSample> = [];
  latest: DeviceStats | null = null;

  constructor(readonly node: DeviceNode) {
    this.statFd = fs.openSync(path.join(node.dir, 'stat'), 'r');
    try {
      this.inflightFd = fs.openSync(path.join(node.dir, 'inflight'), 'r');
    } catch {
      this.inflightFd = null;
    }
  }

  private readFd(fd: number): string {
    const n = fs.readSync(fd, this.buffer, 0, this.buffer.length, 0);
    return this.buffer.toString('latin1', 0, n);
  }

  /** Reads the counters now; null when they cannot be read (the device was removed). */
  sample(now = performance.now()): DeviceSample | null {
    let counters: DeviceCounters | null;
    try {
      const stat = this.readFd(this.statFd);
      // `inflight` splits stat's in_flight (field 9) into reads and writes: with none in flight there is nothing to split.
      const idle = /^\s*(?:\d+\s+){8}0\s/.test(stat);
      counters = parseStat(stat, this.inflightFd === null || idle ? '' : this.readFd(this.inflightFd));
    } catch {
      counters = null;
    }
    if (counters === null)
      return null;
    const sample = {...counters, at: now};
    if (this.last === null || completed(sample) !== completed(this.last))
      this.progressAt = now;
    this.last = sample;
    return sample;
  }

  /** The latest sample taken (every tick takes one), or null before the first. */
  current(): DeviceSample | null {
    return this.last;
  }

  /** Since when no I/O has completed, as far as the samples show (a lower bound: they are an interval apart). */
  quietSince(): number {
    return this.progressAt;
  }

  /** Every interval: a sample, and the window since the previous one as the heartbeat carries it. */
  tick(now = performance.now()): DeviceSample | null {
    const sample = this.sample(now);
    if (sample === null) {
      this.latest = null;
      return null;
    }
    const from = this.windowStart ?? sample;
    this.latest = statsOf(this.node, from, sample, this.progressAt);
    this.windowStart = sample;
    this.recent.push(sample);
    while (this.recent.length > 1 && sample.at - this.recent[0]!.at > LOOKBACK_MS)
      this.recent.shift();
    return sample;
  }

  /** The oldest tick sample of the last LOOKBACK_MS: a window long enough to say whether the device does anything. */
  lookback(): DeviceSample | null {
    return this.recent[0] ?? null;
  }

  close(): void {
    for (const fd of [this.statFd, this.inflightFd]) {
      if (fd !== null) {
        try {
          fs.closeSync(fd);
        } catch {}
      }
    }
  }
}

export function completed(c: DeviceCounters): number {
  return c.reads + c.writes + c.others;
}

export function statsOf(node: {device: string, name: string}, from: DeviceSample, to: DeviceSample, progressAt: number): DeviceStats {
  const done = Math.max(0, completed(to) - completed(from));
  const ticks = Math.max(0, to.ticks - from.ticks);
  const stats: DeviceStats = {
    device: node.device,
    name: node.name,
    inflight: to.inflightReads + to.inflightWrites,
    ios: completed(to),
    windowMs: round(to.at - from.at),
    done,
    busyMs: Math.max(0, to.ioTicks - from.ioTicks),
    quietMs: round(Math.max(0, to.at - progressAt)),
  };
  if (done > 0)
    stats.awaitMs = round(ticks / done);
  return stats;
}

/** What a device did between two samples: the facts a diagnosis is made of. */
export type Window = {
  name: string;
  ms: number;
  inflight: number;
  inflightWrites: number;
  done: number;
  doneReads: number;
  doneWrites: number;
  /** average per completed I/O; null when none completed */
  awaitMs: number | null;
  busyPercent: number;
  /** since the completion count last moved */
  quietMs: number;
};

export function windowOf(name: string, from: DeviceSample, to: DeviceSample, progressAt: number): Window {
  const done = Math.max(0, completed(to) - completed(from));
  const ms = Math.max(0, to.at - from.at);
  return {
    name,
    ms,
    inflight: to.inflightReads + to.inflightWrites,
    inflightWrites: to.inflightWrites,
    done,
    doneReads: Math.max(0, to.reads - from.reads),
    doneWrites: Math.max(0, to.writes - from.writes),
    awaitMs: done > 0 ? Math.max(0, to.ticks - from.ticks) / done : null,
    busyPercent: ms > 0 ? Math.min(100, Math.round((100 * Math.max(0, to.ioTicks - from.ioTicks)) / ms)) : 0,
    quietMs: Math.max(0, to.at - progressAt),
  };
}

export type Diagnosis = 'stuck' | 'idle' | 'writes-held' | 'busy' | 'answering' | 'errors';

/** A device this busy, or this slow per I/O, is queueing: saturated. */
const SATURATED_PERCENT = 80;
const SATURATED_AWAIT_MS = 100;

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const duration = (ms: number) => (ms < 1000 ? `${ms.toFixed(ms < 10 ? 1 : 0)} ms` : `${(ms / 1000).toFixed(1)} s`);
const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/**
 * What the device was doing while a probe timed out (or failed), in words
 * an operator can act on. "Recently" is the second half of the probe's
 * window: completions only at its start (a freeze's own last writes, say)
 * are not a device at work.
 *  - stuck: requests in flight and none completed recently: the device (or
 *    what is under it: the network, the EBS server, a backing file) does not answer;
 *  - idle: nothing in flight, nothing completed recently: the I/O never reached
 *    the device, the filesystem holds it (fsfreeze, a snapshot tool);
 *  - writes-held: reads complete but no write is in flight or completes: a
 *    frozen filesystem still serves reads;
 *  - busy: I/Os complete, slowly (>= 80% utilised or >= 100 ms each): saturated, not hung;
 *  - answering: I/Os complete quickly: the probe is held up above the device.
 * After an I/O error the device did answer, with an error: only the facts.
 */
export function diagnose(w: Window, failure: 'timeout' | 'error'): {diagnosis: Diagnosis, text: string} {
  if (failure === 'error')
    return {diagnosis: 'errors', text: `${w.name} answered with an error: ${plural(w.inflight, 'request')} in flight, ${w.done} completed in the last ${seconds(w.ms)}`};
  const quiet = w.done === 0 || w.quietMs >= w.ms / 2;
  if (quiet && w.inflight > 0)
    return {diagnosis: 'stuck', text: `${w.name}: ${plural(w.inflight, 'request')} in flight, none completed for ${seconds(w.quietMs)}`};
  if (quiet)
    return {diagnosis: 'idle', text: `${w.name} idle: no requests in flight, none completed for ${seconds(w.quietMs)}: the filesystem is blocking writes above the device (frozen?)`};
  const facts = `${plural(w.done, 'I/O')} completed in the last ${seconds(w.ms)}, await ${duration(w.awaitMs ?? 0)}, ${w.busyPercent}% utilised`;
  if (w.busyPercent >= SATURATED_PERCENT || (w.awaitMs ?? 0) >= SATURATED_AWAIT_MS)
    return {diagnosis: 'busy', text: `${w.name} busy: ${facts} (saturated, not hung)`};
  if (w.doneWrites === 0 && w.inflightWrites === 0)
    return {diagnosis: 'writes-held', text: `${w.name} answers reads (${facts}) but no write reached it: the filesystem is blocking writes above the device (frozen?)`};
  return {diagnosis: 'answering', text: `${w.name} answers: ${facts}; the probe is held up above the device`};
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

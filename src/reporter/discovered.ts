import fs from 'node:fs';
import path from 'node:path';

import {PIN_SCRIPT, SCAN_SCRIPT, Scanner, describeTarget, discoveryStep, initialDiscovery} from '../discovery';
import type {Discovery, DiscoveryConfig, DiscoveryEffect, DiscoveryEvent, FoundVolume, ScanTarget, Unwatched} from '../discovery';
import type {MountEntry} from '../mounts';
import {deviceNumbers} from '../mounts';
import type {PathPin} from '../probe';
import type {ProcessStarter} from '../spawn';

export type DiscoveredDeps = {
  target: ScanTarget;
  config: DiscoveryConfig;
  scanFile: string;
  pinFile: string;
  timeoutMs: number;
  startProcess: ProcessStarter;
  /** the reporter's own mount table (procfs) */
  mounts: () => ReadonlyArray<MountEntry>;
  watch: (pin: PathPin) => void;
  unwatch: (path: string) => void;
  unwatched: (list: Array<Unwatched>) => void;
  log: (level: 'debug' | 'info' | 'warn', message: string, fields: Record<string, unknown>) => void;
};

/**
 * Discovery carried out: a scan on each call of `scan()` (one at a time),
 * its answer stepped through the tracker (discovery/tracker.ts), and each
 * new volume's probe directory pinned by a child (stat on a disk that hangs
 * must not stall this loop) before the reporter watches it.
 */
export class Discovered {
  private life: Discovery;
  private readonly scanner: Scanner;
  private stopped = false;
  /** probe directories made and pinned, until the tracker says to watch them */
  private readonly made = new Map<string, PathPin>();
  /** a probe directory's pin still running (a disk that hangs keeps it in the kernel), and why the last one failed */
  private readonly making = new Map<string, string>();

  constructor(private readonly deps: DiscoveredDeps) {
    this.life = initialDiscovery(deps.config);
    this.scanner = new Scanner(deps.target, deps.scanFile, deps.timeoutMs, deps.startProcess);
  }

  scan(): void {
    const pending = this.scanner.scan();
    if (pending === null) {
      this.dispatch({type: 'scan-failed', reason: `the previous scan of ${describeTarget(this.deps.target)} is still stuck (a process in the kernel?)`});
      return;
    }
    void pending.then(outcome => {
      if (!outcome.ok) {
        this.dispatch({type: 'scan-failed', reason: outcome.reason});
        return;
      }
      this.deps.log('debug', 'discovery: scan done', {processes: outcome.processes, volumes: outcome.volumes.map(v => v.device).join(',')});
      const table = this.deps.mounts();
      const volumes: Array<FoundVolume> = outcome.volumes.map(volume => {
        // The same filesystem in this namespace: its whole root if mounted so, else any bind of it.
        const here = table.find(e => e.device === volume.device && e.root === '/') ?? table.find(e => e.device === volume.device);
        return here === undefined ? volume : {...volume, here};
      });
      this.dispatch({type: 'scanned', volumes, processes: outcome.processes, what: describeTarget(this.deps.target)});
    });
  }

  stop(): void {
    this.stopped = true;
  }

  private dispatch(event: DiscoveryEvent): void {
    if (this.stopped)
      return;
    const next = discoveryStep(this.life, event);
    this.life = next.life;
    for (const effect of next.effects)
      this.perform(effect);
  }

  private perform(effect: DiscoveryEffect): void {
    switch (effect.type) {
      case 'pin':
        return this.pin(effect.device, effect.path, effect.volume);
      case 'watch': {
        const pin = this.made.get(effect.path);
        this.made.delete(effect.path);
        return pin === undefined ? undefined : this.deps.watch(pin);
      }
      case 'unwatch':
        return this.deps.unwatch(effect.path);
      case 'unwatched':
        return this.deps.unwatched(effect.list);
      case 'log':
        return this.deps.log(effect.level, effect.message, effect.fields);
    }
  }

  private pin(device: string, dir: string, volume: FoundVolume): void {
    const stuck = this.making.get(dir);
    if (stuck !== undefined) {
      // One at a time: the previous attempt is still stuck in the kernel; its failure stands.
      queueMicrotask(() => this.dispatch({type: 'pin-failed', device, why: stuck}));
      return;
    }
    this.making.set(dir, 'no answer yet');
    const running = this.deps.startProcess(['env', '-i', `PATH=${process.env.PATH ?? '/usr/bin:/bin'}`, 'LC_ALL=C', 'perl', this.deps.pinFile, dir], {timeoutMs: this.deps.timeoutMs});
    void running.exited.then(() => this.making.delete(dir));
    void running.result.then(result => {
      if (this.stopped)
        return;
      const match = /^(\d+) (\d+)$/m.exec(result.stdout);
      if (result.timedOut || result.code !== 0 || match === null) {
        const why = result.timedOut ? `no answer within ${(this.deps.timeoutMs / 1000).toFixed(1)} s (does the disk hang?)` : result.stderr.trim().slice(0, 200) || `exit ${result.code ?? result.signal}`;
        if (this.making.has(dir))
          this.making.set(dir, why);
        this.dispatch({type: 'pin-failed', device, why});
        return;
      }
      const dev = BigInt(match[1]!);
      const ino = BigInt(match[2]!);
      if (deviceNumbers(dev) !== device) {
        this.dispatch({type: 'pin-failed', device, why: `${dir} is on device ${deviceNumbers(dev)}, not the written filesystem's ${device}`});
        return;
      }
      this.made.set(dir, {path: dir, dir, mount: volume.here!, dev, ino, device, warnings: [], unmounted: []});
      this.dispatch({type: 'pinned', device, path: dir});
    });
  }
}

export type DiscoveryWiring = {
  target: ScanTarget;
  intervalSec: number;
  /** where the scanner's and the pin's scripts are written (the reporter's private tmpfs directory) */
  runtimeDir: string;
  /** the --monitor paths: none means discovery watches what it finds, else it names what they do not cover */
  pins: ReadonlyArray<PathPin>;
  graceScans: number;
  maxPaths: number;
  timeoutMs: number;
} & Pick<DiscoveredDeps, 'startProcess' | 'mounts' | 'watch' | 'unwatch' | 'unwatched' | 'log'>;

/** Discovery started: its scripts written, a scan now and every `intervalSec`; `stop()` ends it. */
export function startDiscovery(wiring: DiscoveryWiring, info: (message: string, fields: Record<string, unknown>) => void): {stop: () => void} {
  const scanFile = path.join(wiring.runtimeDir, 'scan.pl');
  fs.writeFileSync(scanFile, SCAN_SCRIPT, {mode: 0o600});
  const pinFile = path.join(wiring.runtimeDir, 'pin.pl');
  fs.writeFileSync(pinFile, PIN_SCRIPT, {mode: 0o600});
  const {target, pins} = wiring;
  const discovered = new Discovered({
    target,
    config: {mode: pins.length === 0 ? 'watch' : 'warn', graceScans: wiring.graceScans, maxPaths: wiring.maxPaths, covered: new Set(pins.map(pin => pin.mount.device))},
    scanFile, pinFile, timeoutMs: wiring.timeoutMs,
    startProcess: wiring.startProcess, mounts: wiring.mounts, watch: wiring.watch, unwatch: wiring.unwatch, unwatched: wiring.unwatched, log: wiring.log,
  });
  const whose = target.kind === 'unit' ? `the processes of ${target.unit}` : target.kind === 'pid' ? `pid ${target.pid} and its descendants` : `the pid in ${target.file} and its descendants`;
  info(`discovery: every ${wiring.intervalSec} s, the volumes ${whose} hold files open for writing on are ${pins.length === 0 ? 'watched' : 'checked against the --monitor paths'}`, {discoverInterval: wiring.intervalSec});
  discovered.scan();
  const timer = setInterval(() => discovered.scan(), wiring.intervalSec * 1000);
  return {
    stop: () => {
      clearInterval(timer);
      discovered.stop();
    },
  };
}

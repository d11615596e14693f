import fs from 'node:fs';

import type {ProcessStarter} from '../spawn';
import {parseScan, writtenVolumes} from './scan';
import type {WrittenVolume} from './scan';

/** Whose files are scanned: a pid and its descendants (given, or read from a pid file each scan), or a systemd unit's cgroup. */
export type ScanTarget =
  | {kind: 'pid', pid: number}
  | {kind: 'pid-file', file: string}
  | {kind: 'unit', unit: string};

export const CGROUP_ROOT = '/sys/fs/cgroup';

/** In words, for the log. */
export function describeTarget(target: ScanTarget): string {
  return target.kind === 'pid' ? `pid ${target.pid}` : target.kind === 'pid-file' ? `the pid in ${target.file}` : target.unit;
}

/**
 * A unit's cgroup: under system.slice on the unified hierarchy (cgroup v2),
 * or under the named systemd hierarchy on a v1 host.
 */
export function unitCgroup(unit: string, exists: (dir: string) => boolean = fs.existsSync): string | null {
  const candidates = [`${CGROUP_ROOT}/system.slice/${unit}`, `${CGROUP_ROOT}/unified/system.slice/${unit}`, `${CGROUP_ROOT}/systemd/system.slice/${unit}`];
  return candidates.find(dir => exists(dir)) ?? null;
}

export type ScanOutcome =
  | {ok: true, volumes: Array<WrittenVolume>, processes: number}
  | {ok: false, reason: string};

/**
 * Runs the scanner (script.ts) through the spawn helper, one at a time:
 * while a scan's process still exists (killed at its deadline, stuck in the
 * kernel) no other is started, so a service in D state costs one process.
 */
export class Scanner {
  private busy = false;

  constructor(private readonly target: ScanTarget, private readonly scriptFile: string, private readonly timeoutMs: number, private readonly startProcess: ProcessStarter) {
  }

  /** null: the previous scan's process is still there (nothing started). */
  scan(): Promise<ScanOutcome> | null {
    if (this.busy)
      return null;
    this.busy = true;
    const running = this.startProcess(['env', '-i', `PATH=${process.env.PATH ?? '/usr/bin:/bin'}`, 'LC_ALL=C', 'perl', this.scriptFile, ...this.args()], {timeoutMs: this.timeoutMs, maxOutputBytes: 4 << 20});
    void running.exited.then(() => {
      this.busy = false;
    });
    return running.result.then(result => {
      if (result.timedOut)
        return {ok: false, reason: `a scan of ${describeTarget(this.target)} took longer than ${(this.timeoutMs / 1000).toFixed(1)} s (a process stuck in the kernel?)`};
      const report = parseScan(result.stdout);
      if (result.code !== 0 || !report.complete)
        return {ok: false, reason: `the scanner failed (${result.spawnError ?? `exit ${result.code ?? result.signal}`}): ${result.stderr.trim().slice(0, 300)}`};
      return {ok: true, volumes: writtenVolumes(report), processes: report.processes.length};
    });
  }

  /** A pid file without a pid, or a unit without a cgroup (stopped), scans no process: its volumes age out as the service stays away. */
  private args(): Array<string> {
    const {target} = this;
    switch (target.kind) {
      case 'pid':
        return ['pid', String(target.pid)];
      case 'pid-file':
        return ['pidfile', target.file];
      case 'unit': {
        const dir = unitCgroup(target.unit);
        return dir === null ? ['pid', '0'] : ['cgroup', dir];
      }
    }
  }
}

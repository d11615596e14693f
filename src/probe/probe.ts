import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {start} from '../spawn';
import type {Runner} from './check';
import {OneAtATime} from './flight';
import {PROBE_SCRIPT} from './script';

export type ProbeMethod = 'direct' | 'dsync';

/** What the probe child found at the probe name and did about it. */
export type FileEvent =
  /** found: not this reporter's file (planted); stale: a regular file of ours left by an earlier run */
  | {kind: 'found' | 'stale', uid: number, links: number, inode: string, what: string}
  /** the file this reporter created is gone (someone removed it) */
  | {kind: 'missing'}
  /** a directory at the probe name that was not empty, renamed to this name */
  | {kind: 'moved', to: string};

export type ProbeOutcome =
  | {ok: true, ms: number, events?: Array<FileEvent>}
  | {ok: false, reason: string, code: string, ms: number, events?: Array<FileEvent>};

/** Where the probe writes, pinned at start-up: the directory's own st_dev and inode. */
export type ProbeTarget = {
  /** absolute, symlinks resolved at start-up */
  dir: string;
  name: string;
  dev: bigint;
  ino: bigint;
};

const BLOCK = 4096;

/** The probe child gets nothing from this environment but PATH: no PERL5LIB/PERL5OPT, and C-locale error text. */
export const PROBE_ENV: Record<string, string> = {PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C'};

/** Without a spawn helper: a direct child with nothing but PROBE_ENV. */
export const directRunner: Runner = (argv, options) => start(argv, {...options, env: PROBE_ENV});

const ERRNO_NAMES = new Map(Object.entries(os.constants.errno).map(([name, number]) => [number, name]));

export function probeFile(dir: string, name: string): string {
  return path.join(dir, `.ebsmon-probe-${name}`);
}

/** The first line of the probe block; the child pads it to 4 KiB. */
export function probeHead(name: string, pid: number, seq: number): string {
  return `ebsmon probe name=${name} pid=${pid} seq=${seq}`;
}

export function openFlags(method: ProbeMethod): number {
  const c = fs.constants;
  // O_NONBLOCK: opening a planted FIFO must not wait for a writer (fifo(7)).
  return c.O_RDWR | c.O_NOFOLLOW | c.O_NONBLOCK | c.O_NOCTTY | c.O_DSYNC | (method === 'direct' ? c.O_DIRECT : 0);
}

/**
 * `fileInode` is '0' until this reporter has created its file. `scriptFile`:
 * PROBE_SCRIPT written to a private tmpfs file at start-up, so each request to
 * the spawn helper (which reads it a byte at a time) carries 200 bytes, not 4 KB.
 */
export function probeArgv(target: ProbeTarget, fileInode: string, method: ProbeMethod, head: string, scriptFile?: string): Array<string> {
  const {errno} = os.constants;
  return ['perl', ...(scriptFile === undefined ? ['-e', PROBE_SCRIPT] : [scriptFile]), target.dir, path.basename(probeFile(target.dir, target.name)), String(target.dev), String(target.ino), fileInode, head,
    String(openFlags(method)), String(fs.constants.O_CREAT | fs.constants.O_EXCL), String(errno.ENOENT), String(errno.EEXIST)];
}

export type ProbeReport = {
  events: Array<FileEvent>;
  created?: string;
  ok: boolean;
  failure?: {stage: string, code: string, text: string};
};

/** Reads the child's lines (see script.ts); unknown lines are ignored. */
export function parseProbeOutput(stdout: string): ProbeReport {
  const report: ProbeReport = {events: [], ok: false};
  for (const line of stdout.split('\n')) {
    const [word, ...rest] = line.split(' ');
    if ((word === 'found' || word === 'stale') && rest.length >= 4)
      report.events.push({kind: word, uid: Number(rest[0]), links: Number(rest[1]), inode: rest[2]!, what: rest.slice(3).join(' ')});
    else if (word === 'missing')
      report.events.push({kind: 'missing'});
    else if (word === 'moved' && rest.length >= 1)
      report.events.push({kind: 'moved', to: rest.join(' ')});
    else if (word === 'created' && rest.length === 1)
      report.created = rest[0];
    else if (word === 'ok')
      report.ok = true;
    else if (word === 'fail' && rest.length >= 2)
      report.failure = {stage: rest[0]!, code: rest[1]!, text: rest.slice(2).join(' ')};
  }
  return report;
}

/** An errno number from the child becomes its name (EIO), which is what an operator searches for. */
export function failureReason(failure: {stage: string, code: string, text: string}): {code: string, reason: string} {
  if (/^\d+$/.test(failure.code)) {
    const name = ERRNO_NAMES.get(Number(failure.code)) ?? `errno ${failure.code}`;
    return {code: name, reason: `${failure.stage}: ${name}: ${failure.text.toLowerCase()}`};
  }
  return {code: failure.code, reason: `${failure.stage}: ${failure.text}`};
}

/**
 * Proves the directory's device completes I/O: a block written with
 * O_DIRECT|O_DSYNC (or O_DSYNC alone) and read back, in a child process so a
 * hung device leaves only a stuck child in D state, never this process.
 */
export class Prober {
  private readonly flight = new OneAtATime();
  /** The inode of the probe file this reporter created; '0' until then. */
  fileInode = '0';

  constructor(
    readonly target: ProbeTarget,
    public method: ProbeMethod,
    readonly timeoutMs: number,
    /** The reporter passes its spawn helper (no exec on its loop), started with PROBE_ENV's bare environment. */
    private readonly runner: Runner = directRunner,
    private readonly scriptFile?: string,
  ) {
  }

  get file(): string {
    return probeFile(this.target.dir, this.target.name);
  }

  /** True while a probe process (possibly abandoned after its deadline) still exists. */
  get busy(): boolean {
    return this.flight.busy;
  }

  get busyPid(): number | undefined {
    return this.flight.busyPid;
  }

  async probe(seq: number): Promise<ProbeOutcome> {
    const argv = probeArgv(this.target, this.fileInode, this.method, probeHead(this.target.name, process.pid, seq), this.scriptFile);
    const {result, ms} = await this.flight.run(() => this.runner(argv, {timeoutMs: this.timeoutMs, maxOutputBytes: BLOCK}));
    if (result.timedOut)
      return {ok: false, reason: `timed out after ${(this.timeoutMs / 1000).toFixed(1)} s`, code: 'ETIMEDOUT', ms};
    if (result.spawnError !== undefined)
      return {ok: false, reason: `cannot run perl: ${result.spawnError}`, code: 'ESPAWN', ms};

    const report = parseProbeOutput(result.stdout);
    if (report.created !== undefined)
      this.fileInode = report.created;
    const events = report.events.length > 0 ? report.events : undefined;
    if (report.ok && result.code === 0) {
      if (ms > this.timeoutMs)
        return {ok: false, reason: `timed out after ${(this.timeoutMs / 1000).toFixed(1)} s`, code: 'ETIMEDOUT', ms, events};
      return {ok: true, ms, events};
    }
    const failure = report.failure ?? {stage: 'probe', code: 'EUNKNOWN', text: `perl exited ${result.code ?? result.signal}: ${result.stderr.trim().slice(0, 200)}`};
    return {ok: false, ms, events, ...failureReason(failure)};
  }
}

/**
 * O_DIRECT is refused with EINVAL by tmpfs (before 6.6) and some network
 * filesystems (open(2)); fall back to O_DSYNC writes there. Decided once, with
 * the same prober, so a hung first probe still counts as the one probe in flight.
 */
export async function chooseMethod(prober: Prober): Promise<{method: ProbeMethod, detail: string, first: ProbeOutcome}> {
  prober.method = 'direct';
  const first = await prober.probe(0);
  if (!first.ok && first.code === 'EINVAL') {
    prober.method = 'dsync';
    return {method: 'dsync', detail: 'O_DIRECT refused (EINVAL): O_DSYNC write, read-back', first};
  }
  if (first.ok)
    return {method: 'direct', detail: 'O_DIRECT|O_DSYNC write, O_DIRECT read-back', first};
  return {method: 'direct', detail: `undecided, first probe failed (${first.reason}): assuming O_DIRECT`, first};
}

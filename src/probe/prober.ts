import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import type {StreamChild} from '../spawn';

export type ProbeMethod = 'direct' | 'dsync';

/** What the prober found at the probe name and did about it. */
export type FileEvent =
  /** found: not this reporter's file (planted); stale: a regular file of ours left by an earlier run */
  | {kind: 'found' | 'stale', uid: number, links: number, inode: string, what: string}
  /** the file this reporter created is gone (someone removed it) */
  | {kind: 'missing'}
  /** a directory at the probe name that was not empty, renamed to this name */
  | {kind: 'moved', to: string};

/** `mountsChanged`: a mount or unmount happened just before or during the probe (the table must be read again). */
export type ProbeOutcome =
  | {ok: true, ms: number, events?: Array<FileEvent>, mountsChanged?: true}
  | {ok: false, reason: string, code: string, ms: number, events?: Array<FileEvent>, mountsChanged?: true};

/** Where the probe writes, pinned at start-up: the directory's own st_dev and inode. */
export type ProbeTarget = {
  /** absolute, symlinks resolved at start-up */
  dir: string;
  name: string;
  dev: bigint;
  ino: bigint;
};

/** Starts a long-lived child on FIFOs: the reporter's spawn helper's `stream`, so its loop never waits for an exec. */
export type StreamStarter = (argv: ReadonlyArray<string>) => StreamChild;

const ERRNO_NAMES = new Map(Object.entries(os.constants.errno).map(([name, number]) => [number, name]));

export function probeFile(dir: string, name: string): string {
  return path.join(dir, `.ebsmon-probe-${name}`);
}

export function openFlags(method: ProbeMethod): number {
  const c = fs.constants;
  // O_NONBLOCK: opening a planted FIFO must not wait for a writer (fifo(7)).
  return c.O_RDWR | c.O_NOFOLLOW | c.O_NONBLOCK | c.O_NOCTTY | c.O_DSYNC | (method === 'direct' ? c.O_DIRECT : 0);
}

/**
 * The prober's command line (see script.ts): perl with nothing of this
 * environment but PATH (no PERL5LIB or PERL5OPT) and C-locale error text.
 * `fileInode` is '0' until this reporter has created its file.
 */
export function proberArgv(target: ProbeTarget, scriptFile: string, fileInode: string, reporterPid: number, searchPath: string): Array<string> {
  const {errno} = os.constants;
  return ['env', '-i', `PATH=${searchPath}`, 'LC_ALL=C', 'perl', scriptFile, target.dir, path.basename(probeFile(target.dir, target.name)), String(target.dev), String(target.ino), fileInode,
    `ebsmon probe name=${target.name} pid=${reporterPid}`, String(fs.constants.O_CREAT | fs.constants.O_EXCL), String(errno.ENOENT), String(errno.EEXIST)];
}

/** One request: the probe's sequence number (written into the block) and how to open the file. */
export function probeRequest(seq: number, method: ProbeMethod): string {
  return `${seq} ${openFlags(method)}\n`;
}

export type ProbeAnswer = {
  events: Array<FileEvent>;
  created?: string;
  mountsChanged?: true;
  ok: boolean;
  failure?: {stage: string, code: string, text: string};
};

/** Reads one answer's lines (see script.ts); unknown lines are ignored. */
export function parseProbeAnswer(text: string): ProbeAnswer {
  const answer: ProbeAnswer = {events: [], ok: false};
  for (const line of text.split('\n')) {
    const [word, ...rest] = line.split(' ');
    if ((word === 'found' || word === 'stale') && rest.length >= 4)
      answer.events.push({kind: word, uid: Number(rest[0]), links: Number(rest[1]), inode: rest[2]!, what: rest.slice(3).join(' ')});
    else if (word === 'missing')
      answer.events.push({kind: 'missing'});
    else if (word === 'moved' && rest.length >= 1)
      answer.events.push({kind: 'moved', to: rest.join(' ')});
    else if (word === 'created' && rest.length === 1)
      answer.created = rest[0];
    else if (word === 'mounts')
      answer.mountsChanged = true;
    else if (word === 'ok')
      answer.ok = true;
    else if (word === 'fail' && rest.length >= 2)
      answer.failure = {stage: rest[0]!, code: rest[1]!, text: rest.slice(2).join(' ')};
  }
  return answer;
}

/** An errno number from the prober becomes its name (EIO), which is what an operator searches for. */
export function failureReason(failure: {stage: string, code: string, text: string}): {code: string, reason: string} {
  if (/^\d+$/.test(failure.code)) {
    const name = ERRNO_NAMES.get(Number(failure.code)) ?? `errno ${failure.code}`;
    return {code: name, reason: `${failure.stage}: ${name}: ${failure.text.toLowerCase()}`};
  }
  return {code: failure.code, reason: `${failure.stage}: ${failure.text}`};
}

/** The line that ends an answer. */
const ANSWER_END = /^(ok|fail .*)$/m;
/** Output that is not an answer (perl's own complaints) kept for the reason if it dies. */
const NOISE_MAX = 400;

type Pending = {seq: number, startedAt: number, text: string, timer: NodeJS.Timeout, resolve: (outcome: ProbeOutcome) => void};

/**
 * Proves a directory's device completes I/O: a block written with
 * O_DIRECT|O_DSYNC (or O_DSYNC alone) and read back by a resident perl, so a
 * hung device leaves only a stuck prober in D state, never this process.
 * One request at a time; an answer later than `timeoutMs` is a timeout. What
 * happens to a prober that missed its deadline is its owner's decision
 * (abandon(): killed, never asked again).
 */
export class Prober {
  /** The inode of the probe file this reporter created; '0' until then. */
  fileInode: string;
  private child: StreamChild | null = null;
  private noise = '';
  private pending: Pending | null = null;
  private abandoned = false;
  private exitCode: number | null | undefined;
  private readonly searchPath: string;

  constructor(
    readonly target: ProbeTarget,
    readonly timeoutMs: number,
    private readonly startStream: StreamStarter,
    private readonly scriptFile: string,
    {fileInode = '0', searchPath = process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}: {fileInode?: string, searchPath?: string} = {},
  ) {
    this.fileInode = fileInode;
    this.searchPath = searchPath;
  }

  get file(): string {
    return probeFile(this.target.dir, this.target.name);
  }

  get pid(): number | undefined {
    return this.child?.pid();
  }

  /** True while a request is unanswered and within its deadline. */
  get probing(): boolean {
    return this.pending !== null;
  }

  /** Starts the process (once). `onExit` is told when it has exited and been reaped. */
  start(onExit: (code: number | null) => void): void {
    if (this.child !== null)
      throw new Error('the prober is started already');
    const child = this.startStream(proberArgv(this.target, this.scriptFile, this.fileInode, process.pid, this.searchPath));
    this.child = child;
    child.onData(chunk => this.onOutput(chunk.toString('utf8')));
    void child.exited.then(code => {
      this.exitCode = code;
      this.settle({ok: false, code: 'EUNKNOWN', reason: `probe: perl exited ${code ?? 'with its spawn helper'}${this.noise === '' ? '' : `: ${this.noise.trim()}`}`});
      onExit(code);
    });
  }

  /** Sends one request; the outcome at the answer, the deadline, or the prober's exit. */
  probe(seq: number, method: ProbeMethod): Promise<ProbeOutcome> {
    const child = this.child;
    if (child === null || this.abandoned || this.exitCode !== undefined)
      return Promise.resolve({ok: false, code: 'ESPAWN', reason: 'cannot run perl: the prober is gone', ms: 0});
    if (this.pending !== null)
      throw new Error('a probe is already in flight');
    const startedAt = performance.now();
    return new Promise(resolve => {
      const timer = setTimeout(() => this.settle({ok: false, reason: `timed out after ${(this.timeoutMs / 1000).toFixed(1)} s`, code: 'ETIMEDOUT'}), this.timeoutMs);
      this.pending = {seq, startedAt, text: '', timer, resolve};
      // Written once the FIFOs exist (at once, but for the first request); the deadline runs from now, exec included.
      child.ready.then(() => {
        if (this.pending?.seq === seq)
          child.write(probeRequest(seq, method));
      }, (error: Error) => {
        if (this.pending?.seq === seq)
          this.settle({ok: false, code: 'ESPAWN', reason: `cannot run perl: ${error.message}`});
      });
    });
  }

  /** Missed its deadline: killed with its process group (one stuck in the kernel dies when its I/O ends), never asked again. */
  abandon(): void {
    this.abandoned = true;
    this.child?.kill();
  }

  private onOutput(text: string): void {
    if (this.abandoned)
      return;
    if (this.pending === null) {
      this.noise = (this.noise + text).slice(-NOISE_MAX);
      return;
    }
    this.pending.text += text;
    if (!ANSWER_END.test(this.pending.text))
      return;
    const answer = parseProbeAnswer(this.pending.text);
    if (answer.created !== undefined)
      this.fileInode = answer.created;
    const events = {...(answer.events.length > 0 ? {events: answer.events} : {}), ...(answer.mountsChanged ? {mountsChanged: true as const} : {})};
    if (answer.ok)
      this.settle({ok: true, ...events});
    else
      this.settle({ok: false, ...events, ...failureReason(answer.failure ?? {stage: 'probe', code: 'EUNKNOWN', text: this.pending.text.trim().slice(0, 200)})});
  }

  private settle(outcome: Omit<ProbeOutcome & {ok: true}, 'ms'> | Omit<ProbeOutcome & {ok: false}, 'ms'>): void {
    const pending = this.pending;
    if (pending === null)
      return;
    this.pending = null;
    clearTimeout(pending.timer);
    pending.resolve({...outcome, ms: performance.now() - pending.startedAt});
  }
}

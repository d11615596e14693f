import path from 'node:path';

import {start} from '../spawn';
import type {Running} from '../spawn';

export type ProbeMethod = 'direct' | 'fsync';

export type ProbeOutcome =
  | {ok: true, ms: number}
  | {ok: false, reason: string, code: string, ms: number};

const BLOCK = 4096;

/** dd prints strerror(3) text; map it back to the errno an operator searches for. */
const STRERROR: ReadonlyArray<[RegExp, string]> = [
  [/Read-only file system/i, 'EROFS'],
  [/Input\/output error/i, 'EIO'],
  [/No space left on device/i, 'ENOSPC'],
  [/Disk quota exceeded/i, 'EDQUOT'],
  [/Permission denied/i, 'EACCES'],
  [/Operation not permitted/i, 'EPERM'],
  [/No such file or directory/i, 'ENOENT'],
  [/Invalid argument/i, 'EINVAL'],
  [/Stale file handle/i, 'ESTALE'],
  [/Transport endpoint is not connected/i, 'ENOTCONN'],
];

export function errnoFromDd(stderr: string): {code: string, text: string} {
  const line = stderr.trim().split('\n').find(l => l.startsWith('dd:')) ?? stderr.trim();
  for (const [pattern, code] of STRERROR) {
    const match = pattern.exec(line);
    if (match !== null)
      return {code, text: `${code}: ${match[0].toLowerCase()}`};
  }
  return {code: 'EUNKNOWN', text: line === '' ? 'dd failed without a message' : line.slice(0, 200)};
}

export function probeFile(dir: string, name: string): string {
  return path.join(dir, `.ebsmon-probe-${name}`);
}

export function writeArgv(file: string, method: ProbeMethod): Array<string> {
  // conv=notrunc keeps the same block: no allocation churn, no truncate to journal.
  const flags = method === 'direct'
    ? ['oflag=direct,dsync', 'conv=notrunc']
    : ['conv=notrunc,fsync'];
  return ['dd', `of=${file}`, `bs=${BLOCK}`, 'count=1', 'iflag=fullblock', ...flags, 'status=none'];
}

export function readArgv(file: string, method: ProbeMethod): Array<string> {
  return ['dd', `if=${file}`, `bs=${BLOCK}`, 'count=1', ...(method === 'direct' ? ['iflag=direct'] : []), 'status=none'];
}

export function probeBlock(name: string, pid: number, seq: number): Buffer {
  const block = Buffer.alloc(BLOCK, 0x2e);
  block.write(`ebsmon probe name=${name} pid=${pid} seq=${seq}\n`);
  block[BLOCK - 1] = 0x0a;
  return block;
}

/**
 * Proves the directory's device completes I/O: a block written with
 * O_DIRECT|O_DSYNC (or write+fsync) and read back, in child processes so a
 * hung device leaves only a stuck `dd` in D state, never this process.
 */
export class Prober {
  private current: Running | null = null;

  constructor(
    readonly dir: string,
    readonly name: string,
    public method: ProbeMethod,
    readonly timeoutMs: number,
  ) {
  }

  get file(): string {
    return probeFile(this.dir, this.name);
  }

  /** True while a probe process (possibly abandoned after its deadline) still exists. */
  get busy(): boolean {
    return this.current !== null;
  }

  get busyPid(): number | undefined {
    return this.current?.pid;
  }

  async probe(seq: number): Promise<ProbeOutcome> {
    if (this.current !== null)
      throw new Error('a probe is already in flight');

    const started = performance.now();
    const deadline = started + this.timeoutMs;
    const block = probeBlock(this.name, process.pid, seq);

    const step = async (argv: Array<string>, input?: Buffer) => {
      const running = start(argv, {input, timeoutMs: Math.max(1, deadline - performance.now()), maxOutputBytes: BLOCK * 2});
      this.current = running;
      void running.exited.then(() => {
        if (this.current === running)
          this.current = null;
      });
      return running.result;
    };

    const elapsed = () => performance.now() - started;
    const timedOut = (): ProbeOutcome => ({ok: false, reason: `timed out after ${(this.timeoutMs / 1000).toFixed(1)} s`, code: 'ETIMEDOUT', ms: elapsed()});

    const written = await step(writeArgv(this.file, this.method), block);
    if (written.timedOut)
      return timedOut();
    if (written.spawnError !== undefined)
      return {ok: false, reason: `cannot run dd: ${written.spawnError}`, code: 'ESPAWN', ms: elapsed()};
    if (written.code !== 0) {
      const {code, text} = errnoFromDd(written.stderr);
      return {ok: false, reason: `write: ${text}`, code, ms: elapsed()};
    }

    const read = await step(readArgv(this.file, this.method));
    if (read.timedOut)
      return timedOut();
    if (read.code !== 0) {
      const {code, text} = errnoFromDd(read.stderr);
      return {ok: false, reason: `read back: ${text}`, code, ms: elapsed()};
    }
    if (read.stdout !== block.toString('utf8'))
      return {ok: false, reason: 'content mismatch: the block read back is not the block written', code: 'EMISMATCH', ms: elapsed()};

    const ms = elapsed();
    if (ms > this.timeoutMs)
      return timedOut();
    return {ok: true, ms};
  }
}

/**
 * O_DIRECT is refused with EINVAL by tmpfs (before 6.6) and some network
 * filesystems (open(2)); fall back to write+fsync there. Decided once, with the
 * same prober, so a hung first probe still counts as the one probe in flight.
 */
export async function chooseMethod(prober: Prober): Promise<{method: ProbeMethod, detail: string, first: ProbeOutcome}> {
  prober.method = 'direct';
  const first = await prober.probe(0);
  if (!first.ok && first.code === 'EINVAL') {
    prober.method = 'fsync';
    return {method: 'fsync', detail: 'O_DIRECT refused (EINVAL): write + fsync, read-back', first};
  }
  if (first.ok)
    return {method: 'direct', detail: 'O_DIRECT|O_DSYNC write, O_DIRECT read-back', first};
  return {method: 'direct', detail: `undecided, first probe failed (${first.reason}): assuming O_DIRECT`, first};
}

import fs from 'node:fs';
import os from 'node:os';

import type {SpawnHelper, StreamChild} from '../spawn';
import {CUTTER_SCRIPT} from './cutter-script';

/** `in`: this host's service on PORT (local port); `out`: this host's connections to PORT elsewhere (remote port). */
export type CutKind = 'in' | 'out';

export type CutterCommand =
  | {op: 'arm', kind: CutKind, port: number, atNs: bigint}
  | {op: 'clear', kind: CutKind, port: number}
  | {op: 'takeover'}
  | {op: 'quit'};

export type CutReport = {kind: CutKind, port: number, sockets: number};

export type CutterLine =
  | {type: 'ready', destroy: {ok: true} | {ok: false, detail: string}}
  | ({type: 'cut'} & CutReport)
  | {type: 'error', text: string}
  | {type: 'unknown', text: string};

/**
 * mlockall and clock_gettime by architecture, from the kernel's tables
 * (arch/x86/entry/syscalls/syscall_64.tbl; arm64 uses
 * include/uapi/asm-generic/unistd.h).
 */
const SYSCALLS: Record<string, {mlockall: number, clockGettime: number}> = {
  x64: {mlockall: 151, clockGettime: 228},
  arm64: {mlockall: 230, clockGettime: 113},
};

/** One abstract unix socket name per network namespace: a new cutter makes its predecessor exit. */
export const CUTTER_HANDOVER = 'ebsmon-cutter';

const ERRNO = os.constants.errno;

/** The cutter's command line, or null on an architecture whose syscall numbers we do not carry. */
export function cutterArgv(arch: string, handover: string): Array<string> | null {
  const calls = SYSCALLS[arch];
  if (calls === undefined)
    return null;
  const numbers = [calls.mlockall, calls.clockGettime, ERRNO.ENOENT, ERRNO.ESTALE, ERRNO.EAGAIN, ERRNO.EADDRINUSE, fs.constants.O_NONBLOCK];
  // `--`: perl reads switches after -e SCRIPT until it.
  return ['perl', '-e', CUTTER_SCRIPT, '--', ...numbers.map(String), handover];
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new Error(`not a TCP port: ${port}`);
}

export function formatCommand(command: CutterCommand): string {
  switch (command.op) {
    case 'arm':
      checkPort(command.port);
      return `${command.kind} ${command.port} ${command.atNs < 0n ? 0n : command.atNs}\n`;
    case 'clear':
      checkPort(command.port);
      return `clear ${command.kind} ${command.port}\n`;
    case 'takeover':
      return 'takeover\n';
    case 'quit':
      return 'quit\n';
  }
}

export function parseCutterLine(line: string): CutterLine {
  if (line === 'ready destroy=ok')
    return {type: 'ready', destroy: {ok: true}};
  const unsupported = /^ready destroy=unsupported (.*)$/.exec(line);
  if (unsupported !== null)
    return {type: 'ready', destroy: {ok: false, detail: unsupported[1]!}};
  const cut = /^cut (in|out) (\d+) (\d+)$/.exec(line);
  if (cut !== null)
    return {type: 'cut', kind: cut[1] as CutKind, port: Number(cut[2]), sockets: Number(cut[3])};
  if (line.startsWith('error '))
    return {type: 'error', text: line.slice('error '.length)};
  return {type: 'unknown', text: line};
}

/**
 * performance.now() milliseconds as CLOCK_MONOTONIC nanoseconds, from one
 * reading of both: process.hrtime.bigint() and performance.now() read the same
 * clock (libuv's uv_hrtime), which is the cutter's.
 */
export class MonotonicNs {
  constructor(readonly originNs: bigint, readonly originMs: number) {
  }

  static sample(): MonotonicNs {
    return new MonotonicNs(process.hrtime.bigint(), performance.now());
  }

  at(ms: number): bigint {
    return this.originNs + BigInt(Math.round((ms - this.originMs) * 1e6));
  }
}

export type CutterStart = {ok: true, cutter: SocketCutter} | {ok: false, detail: string};

export type CutterOptions = {
  helper: SpawnHelper;
  handover?: string;
  startDeadlineMs?: number;
  arch?: string;
};

const START_DEADLINE_MS = 10_000;

/**
 * The resident socket cutter: a perl child (src/fencing/cutter-script.ts)
 * that holds a deadline per port and destroys the port's remote connections
 * at it by itself, with no exec and no file, whether this process is running,
 * frozen or dead. Started through the spawn helper, as a child that outlives
 * it.
 *
 * Commands are coalesced per port and written once per event-loop turn; the
 * last one for a port wins, as it does in the cutter.
 */
export class SocketCutter {
  private buffered = '';
  private readonly pending = new Map<string, string>();
  private flushScheduled = false;
  private ended = false;
  private readiness: CutterLine & {type: 'ready'} | null = null;
  /** `error` lines before `ready` (mlockall refused), for the start-up log. */
  readonly warnings: Array<string> = [];
  private readonly cutListeners: Array<(cut: CutReport) => void> = [];
  private readonly errorListeners: Array<(text: string) => void> = [];
  private readonly exitListeners: Array<(code: number | null) => void> = [];
  readonly ready: Promise<void>;

  constructor(private readonly child: StreamChild, private readonly clock: MonotonicNs = MonotonicNs.sample()) {
    let resolveReady!: () => void;
    let rejectReady!: (error: Error) => void;
    this.ready = new Promise<void>((resolve, reject) => {
      resolveReady = resolve;
      rejectReady = reject;
    });
    this.ready.catch(() => {});
    child.onData(chunk => {
      this.buffered += chunk.toString('utf8');
      let newline: number;
      while ((newline = this.buffered.indexOf('\n')) !== -1) {
        const line = parseCutterLine(this.buffered.slice(0, newline));
        this.buffered = this.buffered.slice(newline + 1);
        if (line.type === 'ready') {
          this.readiness ??= line;
          resolveReady();
        } else if (line.type === 'cut') {
          for (const listener of this.cutListeners)
            listener({kind: line.kind, port: line.port, sockets: line.sockets});
        } else {
          const text = line.text;
          if (this.readiness === null)
            this.warnings.push(text);
          else
            for (const listener of this.errorListeners)
              listener(text);
        }
      }
    });
    void child.exited.then(code => {
      this.ended = true;
      this.pending.clear();
      rejectReady(new Error(`exited (${code ?? 'spawn helper gone'}) before it was ready${this.warnings.length > 0 ? `: ${this.warnings.join('; ')}` : ''}`));
      for (const listener of this.exitListeners)
        listener(code);
    });
  }

  /** Start-up: a cutter that has warmed up and said whether this kernel destroys sockets, or why there is none. */
  static async start(options: CutterOptions): Promise<CutterStart> {
    const argv = cutterArgv(options.arch ?? process.arch, options.handover ?? CUTTER_HANDOVER);
    if (argv === null)
      return {ok: false, detail: `no syscall numbers for architecture ${options.arch ?? process.arch}`};
    // C messages: strerror() in another locale reads message catalogues from disk.
    const child = options.helper.stream(argv, {env: {LC_ALL: 'C'}, outlivesHelper: true});
    const cutter = new SocketCutter(child);
    const deadlineMs = options.startDeadlineMs ?? START_DEADLINE_MS;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>(resolve => {
      timer = setTimeout(() => resolve('late'), deadlineMs);
    });
    try {
      if (await Promise.race([cutter.ready.then(() => 'ready' as const), late]) === 'late') {
        child.kill();
        return {ok: false, detail: `the socket cutter did not warm up within ${deadlineMs} ms`};
      }
    } catch (error) {
      return {ok: false, detail: `the socket cutter ${(error as Error).message}`};
    } finally {
      clearTimeout(timer);
    }
    return {ok: true, cutter};
  }

  /** Whether this kernel destroyed the warm-up's own socket. */
  get supported(): boolean {
    return this.readiness?.destroy.ok === true;
  }

  /** Why it cannot destroy sockets (the kernel's answer), when it cannot. */
  get unsupportedDetail(): string | null {
    const destroy = this.readiness?.destroy;
    return destroy === undefined || destroy.ok ? null : destroy.detail;
  }

  get pid(): number | undefined {
    return this.child.pid();
  }

  get running(): boolean {
    return !this.ended;
  }

  /** Cut `port` at `untilMs` (performance.now() milliseconds) unless armed again or cleared before. */
  arm(kind: CutKind, port: number, untilMs: number): void {
    this.queue(kind, port, formatCommand({op: 'arm', kind, port, atNs: this.clock.at(untilMs)}));
  }

  cutNow(kind: CutKind, port: number): void {
    this.queue(kind, port, formatCommand({op: 'arm', kind, port, atNs: 0n}));
  }

  clear(kind: CutKind, port: number): void {
    this.queue(kind, port, formatCommand({op: 'clear', kind, port}));
  }

  /**
   * Make a predecessor (a dead or old monitor's cutter) exit, once this one
   * holds every deadline: written after every command given so far.
   */
  takeOver(): void {
    this.pending.delete('takeover');
    this.pending.set('takeover', formatCommand({op: 'takeover'}));
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Exit now, pending deadlines dropped (a clean stop). */
  quit(): void {
    this.pending.clear();
    this.pending.set('quit', formatCommand({op: 'quit'}));
    this.flush();
    this.ended = true;
  }

  /** Kill it (a stop that cannot wait for it to read `quit`). */
  kill(): void {
    this.ended = true;
    this.child.kill();
  }

  onCut(listener: (cut: CutReport) => void): void {
    this.cutListeners.push(listener);
  }

  /** `error` lines after start-up: a failed dump, a destroy refused. */
  onError(listener: (text: string) => void): void {
    this.errorListeners.push(listener);
  }

  /** The cutter is gone (code null: the spawn helper died first): the monitor starts another and arms it again. */
  onExit(listener: (code: number | null) => void): void {
    this.exitListeners.push(listener);
  }

  private queue(kind: CutKind, port: number, line: string): void {
    if (this.ended)
      return;
    const key = `${kind} ${port}`;
    // Moved to the end: a write lists the commands in the order they were last given.
    this.pending.delete(key);
    this.pending.set(key, line);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.pending.size === 0)
      return;
    const text = [...this.pending.values()].join('');
    this.pending.clear();
    this.child.write(text);
  }
}

import {spawn} from 'node:child_process';
import type {ChildProcess} from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import type {RunOptions, Running, RunResult} from './direct';

/**
 * A long-lived bash that starts processes for the monitor after start-up.
 *
 * child_process.spawn() blocks the event loop until the child has exec'd:
 * libuv reads the exec result from a CLOEXEC pipe (uv_spawn in
 * src/unix/process.c). When the disk holding a program hangs, so does that
 * exec, and with it every timer, the pulse and the FIFO. The helper forks
 * instead (bash forks without touching a disk; only the grandchild's exec can
 * hang), so the monitor's loop only ever writes a request to a pipe.
 *
 * Each child runs under setsid, in a process group of its own, so the monitor
 * can kill it and everything it started with one kill(-pid). Deadlines are the
 * monitor's: it kills by process group; the helper only reports.
 *
 * A `resident` child is a stream child the helper leaves running when it
 * goes: one that must outlive a dead monitor (the socket cutter).
 *
 * Requests (NUL-separated): `run|stream|resident ID ENVC ENV... ARGC ARGV...`.
 * Replies (lines): `fifos ID` (stream FIFOs exist), `started ID PID`, `exit ID CODE`.
 * A one-shot child reads ID.in if the monitor wrote one, and writes ID.out and
 * ID.err (capped by ulimit -f); a stream child reads the FIFO ID.in and writes
 * stdout and stderr, in order, to the FIFO ID.out.
 */
const SCRIPT = [
  'set -u',
  'dir=$1',
  // Its own tools found once, now: every child is a fork of this shell and inherits the table, so a
  // disk early in PATH that hangs later (it holds a program a child runs) cannot stall the lookup of mkfifo or setsid.
  'hash mkfifo setsid 2>/dev/null',
  // The monitor closed our stdin (it stopped or died): take every child with us.
  'trap "kill -TERM 0 2>/dev/null" EXIT',
  'while IFS= read -r -d "" op && IFS= read -r -d "" id && IFS= read -r -d "" n; do',
  '  envs=()',
  '  for ((i = 0; i < n; i++)); do IFS= read -r -d "" v || exit; envs+=("$v"); done',
  '  IFS= read -r -d "" n || exit',
  '  argv=()',
  '  for ((i = 0; i < n; i++)); do IFS= read -r -d "" v || exit; argv+=("$v"); done',
  '  (',
  // The children's output has its own files and FIFOs; bash's own "Killed" notices would only be noise.
  '    exec 2>/dev/null',
  '    c=',
  '    trap \'[[ -n $c && $op != resident ]] && kill -KILL -- "-$c" "$c" 2>/dev/null; exit 143\' TERM',
  '    for v in "${envs[@]}"; do export "$v"; done',
  '    if [[ $op == stream || $op == resident ]]; then',
  '      mkfifo -m 600 "$dir/$id.in" "$dir/$id.out" || { printf "exit %s 127\\n" "$id"; exit; }',
  '      printf "fifos %s\\n" "$id"',
  '      setsid "${argv[@]}" <"$dir/$id.in" >"$dir/$id.out" 2>&1 &',
  '    else',
  '      ulimit -f 16384',
  '      in=/dev/null; [[ -e $dir/$id.in ]] && in=$dir/$id.in',
  '      setsid "${argv[@]}" <"$in" >"$dir/$id.out" 2>"$dir/$id.err" &',
  '    fi',
  '    c=$!',
  '    printf "started %s %s\\n" "$id" "$c"',
  '    wait "$c"',
  '    printf "exit %s %s\\n" "$id" "$?"',
  '  ) &',
  'done',
].join('\n');

/** A long-lived child whose stdin and (stdout+stderr) are FIFOs on tmpfs. */
export type StreamChild = {
  readonly id: number;
  /** Resolves once the FIFOs are open on this side; rejects if the child could not be started. */
  readonly ready: Promise<void>;
  /** Settles when the child has exited (or the helper died). */
  readonly exited: Promise<number | null>;
  pid(): number | undefined;
  write(text: string): void;
  onData(listener: (chunk: Buffer) => void): void;
  kill(): void;
};

type Waiter = {
  onFifos?: () => void;
  onStarted: (pid: number) => void;
  onExit: (code: number | null) => void;
};

const DEFAULT_MAX_OUTPUT = 1 << 20;
const STREAM_READ_BYTES = 64 * 1024;
const SIGNALS = os.constants.signals as Record<string, number>;

function signalName(code: number): NodeJS.Signals | null {
  const number = code - 128;
  for (const [name, value] of Object.entries(SIGNALS))
    if (value === number)
      return name as NodeJS.Signals;
  return null;
}

/** kill(2) of a process group and its leader: no exec, no disk, never blocks. */
export function killGroup(pid: number | undefined): void {
  if (pid === undefined)
    return;
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // Gone already, or not yet a group leader (still exec'ing setsid).
    }
  }
}

function readCapped(file: string, max: number): string {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return '';
  }
  try {
    const buffer = Buffer.alloc(Math.min(max, Math.max(0, fs.fstatSync(fd).size)));
    const n = fs.readSync(fd, buffer, 0, buffer.length, 0);
    return buffer.subarray(0, n).toString('utf8');
  } finally {
    fs.closeSync(fd);
  }
}

export class SpawnHelper {
  private child: ChildProcess | null = null;
  private nextId = 1;
  private readonly waiters = new Map<number, Waiter>();
  private buffered = '';
  private closed = false;
  /** Why the helper is gone, once it is. */
  private gone: string | null = null;

  private constructor(readonly dir: string, private readonly onError: (message: string) => void, private readonly baseEnv: NodeJS.ProcessEnv) {
  }

  /**
   * Start-up only: the helper itself is the one exec the loop waits for.
   * `dir` is a private directory on tmpfs for the children's files (in a
   * directory only this user can write: it is removed and made again).
   * `env`: the environment every child starts from (default: this process's).
   */
  static start(dir: string, onError: (message: string) => void = () => {}, {env = process.env}: {env?: NodeJS.ProcessEnv} = {}): SpawnHelper {
    fs.rmSync(dir, {recursive: true, force: true});
    fs.mkdirSync(dir, {recursive: true, mode: 0o700});
    const helper = new SpawnHelper(dir, onError, env);
    helper.launch();
    return helper;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  private launch(): void {
    // --norc: bash reads ~/.bashrc even non-interactively when its stdin is a socket (it takes us for rshd), and Node's pipes are socketpairs.
    // detached: a session of its own, so `kill -TERM 0` in its EXIT trap reaches only its own.
    const child = spawn('bash', ['--norc', '--noprofile', '-c', SCRIPT, 'ebsmon-spawn-helper', this.dir], {
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
      env: {...this.baseEnv, LC_ALL: 'C', BASH_ENV: ''},
    });
    this.child = child;
    this.gone = null;
    child.stdin?.on('error', () => {});
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => this.onOutput(chunk));
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => this.onError(`spawn helper: ${chunk.trim().slice(0, 500)}`));
    child.on('error', error => this.lost(`cannot run bash: ${error.message}`));
    child.on('exit', (code, signal) => this.lost(`exited (${code ?? signal})`));
  }

  private lost(why: string): void {
    if (this.gone !== null)
      return;
    this.gone = why;
    this.child = null;
    const waiters = [...this.waiters.values()];
    this.waiters.clear();
    for (const waiter of waiters)
      waiter.onExit(null);
    if (!this.closed)
      this.onError(`spawn helper ${why}; children it was running are abandoned`);
  }

  private onOutput(chunk: string): void {
    this.buffered += chunk;
    let newline: number;
    while ((newline = this.buffered.indexOf('\n')) !== -1) {
      const line = this.buffered.slice(0, newline);
      this.buffered = this.buffered.slice(newline + 1);
      const [what, idText, value] = line.split(' ');
      const id = Number(idText);
      const waiter = this.waiters.get(id);
      if (waiter === undefined)
        continue;
      if (what === 'fifos') {
        waiter.onFifos?.();
      } else if (what === 'started') {
        waiter.onStarted(Number(value));
      } else if (what === 'exit') {
        this.waiters.delete(id);
        waiter.onExit(Number(value));
      }
    }
  }

  /** Restarts a dead helper. This one exec can block the loop: it happens only after the helper died. */
  private ensure(): boolean {
    if (this.closed)
      return false;
    if (this.child === null) {
      this.onError('restarting the spawn helper');
      this.launch();
    }
    return this.child !== null;
  }

  private send(kind: 'run' | 'stream' | 'resident', id: number, argv: ReadonlyArray<string>, env: NodeJS.ProcessEnv): boolean {
    if (!this.ensure())
      return false;
    const entries = Object.entries(env).flatMap(([key, value]) => (value === undefined ? [] : [`${key}=${value}`]));
    const fields = [kind, String(id), String(entries.length), ...entries, String(argv.length), ...argv];
    if (fields.some(field => field.includes('\0')))
      throw new Error('a NUL byte cannot be passed to a process');
    this.child!.stdin!.write(`${fields.join('\0')}\0`);
    return true;
  }

  path(id: number, suffix: 'in' | 'out' | 'err'): string {
    return path.join(this.dir, `${id}.${suffix}`);
  }

  /** A one-shot process: the same result shape as spawn's start(), never blocking the loop. */
  run(argv: ReadonlyArray<string>, options: RunOptions): Running {
    const id = this.nextId++;
    const max = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
    let pid: number | undefined;
    let settled = false;
    let abandoned = false;
    let resolveResult!: (result: RunResult) => void;
    let resolveExited!: () => void;
    const result = new Promise<RunResult>(resolve => {
      resolveResult = resolve;
    });
    const exited = new Promise<void>(resolve => {
      resolveExited = resolve;
    });
    const cleanup = () => {
      for (const suffix of ['in', 'out', 'err'] as const)
        fs.rmSync(this.path(id, suffix), {force: true});
    };
    const settle = (value: RunResult) => {
      if (settled)
        return;
      settled = true;
      clearTimeout(timer);
      resolveResult(value);
    };
    const timer = setTimeout(() => {
      abandoned = true;
      killGroup(pid);
      settle({code: null, signal: null, stdout: '', stderr: '', timedOut: true});
    }, options.timeoutMs);

    if (options.input !== undefined)
      fs.writeFileSync(this.path(id, 'in'), options.input, {mode: 0o600});
    this.waiters.set(id, {
      onStarted: started => {
        pid = started;
        if (abandoned)
          killGroup(pid);
      },
      onExit: code => {
        if (code === null) {
          settle({code: null, signal: null, stdout: '', stderr: '', timedOut: false, spawnError: `spawn helper ${this.gone ?? 'gone'}`});
        } else if (code === 127 && pid === undefined) {
          settle({code: null, signal: null, stdout: '', stderr: '', timedOut: false, spawnError: 'could not start'});
        } else {
          const stderr = readCapped(this.path(id, 'err'), max);
          // bash reports 127 for a program it could not find or exec.
          const spawnError = code === 127 && /No such file or directory|command not found|Permission denied/.test(stderr) ? stderr.trim().split('\n').pop() : undefined;
          settle(code > 128 && code < 160
            ? {code: null, signal: signalName(code), stdout: readCapped(this.path(id, 'out'), max), stderr, timedOut: false}
            : {code, signal: null, stdout: readCapped(this.path(id, 'out'), max), stderr, timedOut: false, ...(spawnError === undefined ? {} : {spawnError})});
        }
        cleanup();
        resolveExited();
      },
    });
    if (!this.send('run', id, argv, options.env ?? {})) {
      this.waiters.delete(id);
      cleanup();
      settle({code: null, signal: null, stdout: '', stderr: '', timedOut: false, spawnError: 'spawn helper closed'});
      resolveExited();
    }
    return {get pid() {
      return pid;
    }, result, exited};
  }

  /**
   * A long-lived child (nft -i, nft monitor, a prober, the socket cutter) wired to FIFOs this process reads and writes without blocking.
   * `outlivesHelper`: when the helper goes (the monitor stopped or died), this child is left running; it sees EOF on its stdin.
   */
  stream(argv: ReadonlyArray<string>, options: Pick<RunOptions, 'env'> & {outlivesHelper?: boolean} = {}): StreamChild {
    const id = this.nextId++;
    let pid: number | undefined;
    let input: net.Socket | null = null;
    let output: net.Socket | null = null;
    const listeners: Array<(chunk: Buffer) => void> = [];
    let killed = false;
    let resolveReady!: () => void;
    let rejectReady!: (error: Error) => void;
    let resolveExited!: (code: number | null) => void;
    const ready = new Promise<void>((resolve, reject) => {
      resolveReady = resolve;
      rejectReady = reject;
    });
    ready.catch(() => {});
    const exited = new Promise<number | null>(resolve => {
      resolveExited = resolve;
    });
    let opened = false;
    let started = false;
    const maybeReady = () => {
      if (opened && started)
        resolveReady();
    };
    const close = () => {
      input?.destroy();
      output?.destroy();
      input = null;
      output = null;
      fs.rmSync(this.path(id, 'in'), {force: true});
      fs.rmSync(this.path(id, 'out'), {force: true});
    };
    this.waiters.set(id, {
      onFifos: () => {
        try {
          // O_RDWR: never blocks on open, and never sees EOF or EPIPE when the child goes (fifo(7)).
          const flags = fs.constants.O_RDWR | fs.constants.O_NONBLOCK;
          input = new net.Socket({fd: fs.openSync(this.path(id, 'in'), flags), readable: false, writable: true});
          // onread (net.Socket's option since Node 12.1; @types/node 20 lists it for connect() only): each
          // read lands in one buffer handed to the listeners, past the Readable machinery, as a resident
          // prober answers every interval.
          const onread = {buffer: Buffer.alloc(STREAM_READ_BYTES), callback: (bytes: number, buffer: Uint8Array) => {
            const chunk = Buffer.from(buffer.subarray(0, bytes));
            for (const listener of listeners)
              listener(chunk);
            return true;
          }};
          output = new net.Socket({fd: fs.openSync(this.path(id, 'out'), flags), readable: true, writable: false, onread} as net.SocketConstructorOpts);
          input.on('error', () => {});
          output.on('error', () => {});
          opened = true;
          maybeReady();
        } catch (error) {
          rejectReady(error as Error);
        }
      },
      onStarted: started_ => {
        pid = started_;
        started = true;
        if (killed)
          killGroup(pid);
        maybeReady();
      },
      onExit: code => {
        close();
        rejectReady(new Error(code === null ? `spawn helper ${this.gone ?? 'gone'}` : `exited (${code}) before it was ready`));
        resolveExited(code);
      },
    });
    if (!this.send(options.outlivesHelper === true ? 'resident' : 'stream', id, argv, options.env ?? {})) {
      this.waiters.delete(id);
      rejectReady(new Error('spawn helper closed'));
      resolveExited(null);
    }
    return {
      id,
      ready,
      exited,
      pid: () => pid,
      write: text => {
        input?.write(text);
      },
      onData: listener => {
        listeners.push(listener);
      },
      kill: () => {
        killed = true;
        killGroup(pid);
      },
    };
  }

  /** Ends the helper; its EXIT trap kills every child still running. Its directory goes too. */
  close(): void {
    this.closed = true;
    const child = this.child;
    if (child !== null) {
      child.stdin?.end();
      child.stdout?.removeAllListeners('data');
      child.stderr?.removeAllListeners('data');
      child.unref();
      (child.stdout as net.Socket | null)?.unref?.();
      (child.stderr as net.Socket | null)?.unref?.();
    }
    fs.rmSync(this.dir, {recursive: true, force: true});
  }
}

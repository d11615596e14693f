import {spawn, spawnSync} from 'node:child_process';

import {errnoCode} from '../errors';

/**
 * The one module that starts processes. Always argument arrays, never a shell:
 * a reporter name or a port can never become a command.
 */

export type RunResult = {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** spawn itself failed (ENOENT: the tool is missing) */
  spawnError?: string;
};

/** How a one-shot process is started, directly (start) or through a spawn helper (SpawnHelper.run). */
export type RunOptions = {
  /** Killed (by process group, through a helper) and reported as timed out after this long. */
  timeoutMs: number;
  input?: string | Buffer;
  /** Added to the starter's own environment (this process's, or the helper's). */
  env?: NodeJS.ProcessEnv;
  /** Largest stdout/stderr kept, so a chatty tool cannot grow the heap. */
  maxOutputBytes?: number;
};

export type Running = {
  pid: number | undefined;
  /** Settles at exit, or at the deadline (the process then lingers, abandoned). */
  result: Promise<RunResult>;
  /** Settles when the process has really exited and been reaped. */
  exited: Promise<void>;
};

/** Starts a one-shot process: `start` below, or a spawn helper's `run`. */
export type ProcessStarter = (argv: ReadonlyArray<string>, options: RunOptions) => Running;

const DEFAULT_MAX_OUTPUT = 1 << 20;

export function start(argv: ReadonlyArray<string>, options: RunOptions): Running {
  const [file, ...args] = argv;
  if (file === undefined)
    throw new Error('start() needs a program');
  const maxOutput = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;

  const child = spawn(file, args, {
    stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    env: options.env === undefined ? process.env : {...process.env, ...options.env},
  });

  const out: Array<Buffer> = [];
  const err: Array<Buffer> = [];
  let outBytes = 0;
  let errBytes = 0;
  child.stdout?.on('data', (chunk: Buffer) => {
    if (outBytes < maxOutput) {
      out.push(chunk);
      outBytes += chunk.length;
    }
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    if (errBytes < maxOutput) {
      err.push(chunk);
      errBytes += chunk.length;
    }
  });
  if (options.input !== undefined) {
    child.stdin?.on('error', () => {});
    child.stdin?.end(options.input);
  }

  let resolveExited!: () => void;
  const exited = new Promise<void>(resolve => {
    resolveExited = resolve;
  });

  const result = new Promise<RunResult>(resolve => {
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const settle = (value: Omit<RunResult, 'stdout' | 'stderr'>) => {
      if (settled)
        return;
      settled = true;
      if (timer !== undefined)
        clearTimeout(timer);
      resolve({...value, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8')});
    };

    child.on('error', error => {
      settle({code: null, signal: null, timedOut: false, spawnError: error.message});
      resolveExited();
    });
    child.on('close', (code, signal) => {
      settle({code, signal, timedOut: false});
      resolveExited();
    });

    timer = setTimeout(() => {
      // A process in D state ignores even SIGKILL until its I/O ends: send it
      // anyway, then stop waiting and stop holding the event loop open for it.
      child.kill('SIGKILL');
      abandon(child);
      settle({code: null, signal: null, timedOut: true});
    }, options.timeoutMs);
  });

  return {pid: child.pid, result, exited};
}

function abandon(child: ReturnType<typeof spawn>): void {
  child.stdin?.destroy();
  child.stdout?.destroy();
  child.stderr?.destroy();
  child.unref();
}

export function run(argv: ReadonlyArray<string>, options: RunOptions): Promise<RunResult> {
  return start(argv, options).result;
}

/** Start-up only (before the event loop has work to keep alive). */
export function runSync(argv: ReadonlyArray<string>, options: {timeoutMs?: number, input?: string} = {}): RunResult {
  const [file, ...args] = argv;
  if (file === undefined)
    throw new Error('runSync() needs a program');
  const result = spawnSync(file, args, {encoding: 'utf8', timeout: options.timeoutMs, input: options.input});
  return {
    code: result.status,
    signal: result.signal,
    stdout: result.stdout ?? '',
    stderr: result.stderr ?? '',
    timedOut: errnoCode(result.error) === 'ETIMEDOUT',
    spawnError: result.error?.message,
  };
}

export type DetachedOptions = {
  env?: NodeJS.ProcessEnv;
  stdio: Array<'ignore' | 'pipe' | number>;
};

/** A daemon child: its own session, not waited for by this process. */
export function spawnDetached(argv: ReadonlyArray<string>, options: DetachedOptions) {
  const [file, ...args] = argv;
  if (file === undefined)
    throw new Error('spawnDetached() needs a program');
  return spawn(file, args, {detached: true, stdio: options.stdio, env: options.env ?? process.env});
}

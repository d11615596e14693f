import {spawn} from 'node:child_process';
import type {ChildProcess} from 'node:child_process';
import path from 'node:path';

import {readSnapshot} from '../../src/state';
import type {ReporterSnapshot} from '../../src/state';
import {EBSMON, ROOT, inNs, registerChild} from './rig';

/** A process the test started, with its stderr kept for assertions. */
export class Proc {
  stderr = '';
  stdout = '';
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  readonly exited: Promise<void>;

  constructor(readonly child: ChildProcess) {
    registerChild(child.pid);
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString('utf8');
    });
    child.stdout?.on('data', (chunk: Buffer) => {
      this.stdout += chunk.toString('utf8');
    });
    this.exited = new Promise(resolve => {
      child.on('exit', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        resolve();
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.exitCode === null && this.exitSignal === null;
  }

  /** JSON log lines written so far. */
  logs(): Array<Record<string, unknown>> {
    return this.stderr.split('\n').filter(line => line.startsWith('{')).map(line => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        return {};
      }
    });
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.running)
      this.child.kill(signal);
  }

  async stop(graceMs = 5000): Promise<void> {
    this.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.exited, new Promise(resolve => {
      timer = setTimeout(resolve, graceMs);
    })]);
    clearTimeout(timer);
    this.kill('SIGKILL');
  }
}

/** A scrubbed environment: what a service manager would give ebsmon. */
export function scrubbedEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', ...extra};
}

/**
 * `user`: run as nobody, from a copy of the bundle it can read (a clone may sit in a private directory).
 * `bin`: the command to run instead of the bundle (the standalone executable, maybe wrapped).
 */
type RunAs = {ns?: string, env?: NodeJS.ProcessEnv, user?: {name: 'nobody', bundle: string}, bin?: ReadonlyArray<string>};

export function ebsmon(args: Array<string>, {ns, env, user, bin}: RunAs = {}): Proc {
  // Run as an operator does: the bundle itself, so its shebang's node flags apply.
  const own = [...(bin ?? [user?.bundle ?? EBSMON]), ...args];
  const argv = user === undefined ? own : ['setpriv', `--reuid=${user.name}`, '--regid=nogroup', '--clear-groups', '--', ...own];
  const full = ns === undefined ? argv : inNs(ns, argv);
  return new Proc(spawn(full[0]!, full.slice(1), {stdio: ['ignore', 'pipe', 'pipe'], env: env ?? scrubbedEnv()}));
}

export async function ebsmonOnce(args: Array<string>, opts: RunAs = {}): Promise<{code: number | null, stdout: string, stderr: string}> {
  const proc = ebsmon(args, opts);
  await proc.exited;
  return {code: proc.exitCode, stdout: proc.stdout, stderr: proc.stderr};
}

export const HELPER = (name: string) => path.join(ROOT, 'test', 'helpers', name);

/** Runs the TCP client helper in a namespace; returns what it saw. */
export async function tcpTry(ns: string, host: string, port: number, mode: 'connect' | 'hold' = 'connect'): Promise<string> {
  const proc = new Proc(spawn('ip', ['netns', 'exec', ns, process.execPath, HELPER('client.mjs'), host, String(port), mode], {stdio: ['ignore', 'pipe', 'pipe']}));
  await proc.exited;
  return proc.stdout.trim();
}

/** A reporter's record in the monitor's snapshot; undefined while there is no snapshot or no such reporter. */
export function reporterIn(stateDir: string, name: string): ReporterSnapshot | undefined {
  try {
    return readSnapshot(stateDir)?.reporters.find(r => r.name === name);
  } catch {
    return undefined;
  }
}

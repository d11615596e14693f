import fs from 'node:fs';
import {isSea} from 'node:sea';

import {EbsmonError} from '../errors';
import {spawnDetached} from '../spawn';

/** Set in the daemon child: the descriptor on which it reports "ready" or its start-up error. */
export const READY_FD_ENV = 'EBSMON_READY_FD';

export class DaemonStartError extends EbsmonError {
  override name = 'DaemonStartError' as const;
}

export function isDaemonChild(): boolean {
  return process.env[READY_FD_ENV] !== undefined;
}

/**
 * Starts this same command again, detached (new session, stdio closed), and
 * resolves with its pid once it says it is running; rejects with its error.
 */
export async function daemonize(args: ReadonlyArray<string>, {logfile}: {logfile?: string}): Promise<number> {
  const script = process.argv[1];
  if (script === undefined)
    throw new DaemonStartError('cannot find the ebsmon script to re-run');
  const childArgs = args.filter(arg => arg !== '--daemonize');
  const out = logfile === undefined ? 'ignore' : fs.openSync(logfile, 'a', 0o640);
  // The bundle: node, the V8 flags of its shebang line (a small young generation), the script.
  // The standalone executable is the program itself (its argv[1] is only how it was called);
  // its V8 flags come from NODE_OPTIONS, which the environment carries over.
  const argv = isSea() ? [process.execPath, ...childArgs] : [process.execPath, ...process.execArgv, script, ...childArgs];
  const child = spawnDetached(argv, {
    stdio: ['ignore', out, out, 'pipe'],
    env: {...process.env, [READY_FD_ENV]: '3'},
  });
  if (typeof out === 'number')
    fs.closeSync(out);

  const pipe = child.stdio[3] as NodeJS.ReadableStream | null;
  const message = await new Promise<string>(resolve => {
    let text = '';
    pipe?.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
    });
    pipe?.on('end', () => resolve(text));
    pipe?.on('error', () => resolve(text));
    child.on('exit', code => resolve(text === '' ? `error: exited with code ${code} before it was running` : text));
  });
  child.unref();
  (pipe as {destroy?: () => void} | null)?.destroy?.();

  if (message.startsWith('ready'))
    return child.pid ?? 0;
  throw new DaemonStartError(message.replace(/^error: /, '').trim() || 'the daemon exited before it was running');
}

function writeReadyFd(text: string): void {
  const fd = Number(process.env[READY_FD_ENV]);
  if (!Number.isInteger(fd))
    return;
  delete process.env[READY_FD_ENV];
  try {
    fs.writeSync(fd, text);
    fs.closeSync(fd);
  } catch {
    // The parent is gone: nobody to tell.
  }
}

export function reportReady(): void {
  writeReadyFd('ready\n');
}

export function reportStartFailure(error: unknown): void {
  writeReadyFd(`error: ${error instanceof Error ? error.message : String(error)}\n`);
}

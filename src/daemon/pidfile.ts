import fs from 'node:fs';

import {PidfileError, errnoCode} from '../errors';
import {writeAtomic} from '../state';

/** When the process started, in epoch ms, from /proc (proc(5): stat field 22, btime). */
export function processStartMs(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const startTicks = Number(fields[19]);
    const btime = Number(/^btime (\d+)$/m.exec(fs.readFileSync('/proc/stat', 'utf8'))?.[1]);
    // USER_HZ is 100 on every Linux architecture Node supports (sysconf(_SC_CLK_TCK)).
    return btime * 1000 + startTicks * 10;
  } catch {
    return null;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return errnoCode(error) === 'EPERM';
  }
}

export type PidfileStatus =
  | {state: 'absent'}
  | {state: 'held', pid: number}
  | {state: 'stale', pid: number | null, why: string};

/**
 * A pid is only a holder if it is alive and was already running when the file
 * was written; a younger process with the same pid is a recycled pid.
 */
export function inspectPidfile(file: string): PidfileStatus {
  let text: string;
  let mtimeMs: number;
  try {
    text = fs.readFileSync(file, 'utf8');
    mtimeMs = fs.statSync(file).mtimeMs;
  } catch (error) {
    if (errnoCode(error) === 'ENOENT')
      return {state: 'absent'};
    throw new PidfileError(`cannot read the pidfile ${file}: ${(error as Error).message}`);
  }
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 0)
    return {state: 'stale', pid: null, why: 'no pid in it'};
  if (pid === process.pid)
    return {state: 'stale', pid, why: 'it names this process'};
  if (!isAlive(pid))
    return {state: 'stale', pid, why: `process ${pid} is gone`};
  const started = processStartMs(pid);
  if (started !== null && started > mtimeMs + 1000)
    return {state: 'stale', pid, why: `pid ${pid} was reused by a process started after the file was written`};
  return {state: 'held', pid};
}

export type Pidfile = {release: () => void};

export function acquirePidfile(file: string, onStale: (message: string) => void = () => {}): Pidfile {
  const status = inspectPidfile(file);
  if (status.state === 'held')
    throw new PidfileError(`${file} is held by running process ${status.pid}; is another ebsmon already running?`);
  if (status.state === 'stale')
    onStale(`replacing stale pidfile ${file} (${status.why})`);
  writeAtomic(file, `${process.pid}\n`);
  return {
    release: () => {
      try {
        if (fs.readFileSync(file, 'utf8').trim() === String(process.pid))
          fs.unlinkSync(file);
      } catch {
        // Already gone: nothing to release.
      }
    },
  };
}

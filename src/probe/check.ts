import fs from 'node:fs';
import path from 'node:path';

import type {ProcessStarter} from '../spawn';
import {OneAtATime} from './flight';

/** How much of a check's output goes into the failure reason. */
export const CHECK_OUTPUT_MAX = 4096;

/**
 * A --check command line split into words as a shell would split them, but
 * nothing is expanded: single quotes keep everything, double quotes and
 * backslashes escape; no variables, globs, pipes, redirections or `~`. The
 * words are then run as they are, without a shell.
 */
export function splitCommandLine(text: string): Array<string> {
  const words: Array<string> = [];
  let word = '';
  let inWord = false;
  let quote: '\'' | '"' | null = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote === '\'') {
      if (c === '\'')
        quote = null;
      else
        word += c;
    } else if (quote === '"') {
      if (c === '"') {
        quote = null;
      } else if (c === '\\' && i + 1 < text.length && '"\\$`'.includes(text[i + 1]!)) {
        word += text[++i];
      } else {
        word += c;
      }
    } else if (c === '\'' || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === '\\') {
      if (i + 1 >= text.length)
        throw new Error('ends with a lone backslash');
      word += text[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord)
        words.push(word);
      word = '';
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quote !== null)
    throw new Error(`a ${quote === '"' ? 'double' : 'single'} quote is not closed`);
  if (inWord)
    words.push(word);
  if (words.length === 0)
    throw new Error('no program given');
  return words;
}

function executableFile(file: string): string | null {
  try {
    if (!fs.statSync(file).isFile())
      return `${file} is not a regular file`;
    fs.accessSync(file, fs.constants.X_OK);
    return null;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? `${file} does not exist` : code === 'EACCES' ? `${file} is not executable` : `${file}: ${(error as Error).message}`;
  }
}

export type CheckSpec = {
  /** the command line as given, for reasons and logs */
  text: string;
  /** the program resolved to an absolute path at start-up, then its arguments */
  argv: Array<string>;
};

/**
 * Start-up: the check's command line split and its program found (in PATH
 * when it has no slash) and executable, so a typo is an error now rather
 * than a fence later. Returns why not, or the spec.
 */
export function resolveCheck(text: string, searchPath = process.env.PATH ?? ''): CheckSpec | {error: string} {
  let words: Array<string>;
  try {
    words = splitCommandLine(text);
  } catch (error) {
    return {error: (error as Error).message};
  }
  const program = words[0]!;
  if (program.includes('/')) {
    const file = path.resolve(program);
    const problem = executableFile(file);
    return problem === null ? {text, argv: [file, ...words.slice(1)]} : {error: problem};
  }
  for (const dir of searchPath.split(':').filter(d => d.startsWith('/'))) {
    const file = path.join(dir, program);
    if (executableFile(file) === null)
      return {text, argv: [file, ...words.slice(1)]};
  }
  return {error: `${program} is not an executable in PATH (${searchPath})`};
}

export type CheckOutcome =
  | {ok: true, ms: number}
  /** status: what happened, without the output (which may differ each run): "exit 1", "timeout", "SIGSEGV", "spawn" */
  | {ok: false, ms: number, reason: string, code: string, status: string};

/** Output for a reason: both streams, whitespace folded, at most CHECK_OUTPUT_MAX bytes of UTF-8. */
export function foldOutput(stdout: string, stderr: string, max = CHECK_OUTPUT_MAX): string {
  const text = [stdout, stderr].map(s => s.replace(/\s+/g, ' ').trim()).filter(Boolean).join(' / ');
  const bytes = Buffer.from(text);
  if (bytes.length <= max)
    return text;
  // Cut on a character boundary: a decoder replaces a split one with U+FFFD.
  return `${bytes.subarray(0, max - 3).toString('utf8').replace(/\uFFFD$/, '')}\u2026`;
}

/**
 * A --check: the service answers, not only its disk. One run at a time
 * (never stacked), in its own process group, killed with that group at the
 * deadline; exit 0 is healthy.
 */
export class Checker {
  private readonly flight = new OneAtATime();
  runs = 0;

  /** `startProcess`: the reporter's spawn helper's `run`; `env` is added to the helper's environment. */
  constructor(readonly spec: CheckSpec, readonly timeoutMs: number, private readonly startProcess: ProcessStarter, private readonly env: Record<string, string> = {}) {
  }

  /** True while a run (possibly killed at its deadline and not yet gone) still exists. */
  get busy(): boolean {
    return this.flight.busy;
  }

  get busyPid(): number | undefined {
    return this.flight.busyPid;
  }

  /** Settles once the run in flight (if any) is gone: it may outlive its result (killed at the deadline, stuck in the kernel). */
  gone(): Promise<void> {
    return this.flight.gone();
  }

  async run(): Promise<CheckOutcome> {
    this.runs += 1;
    // One byte more than a reason keeps: then foldOutput knows there was more, and says so.
    const {result, ms} = await this.flight.run(() => this.startProcess(this.spec.argv, {timeoutMs: this.timeoutMs, maxOutputBytes: CHECK_OUTPUT_MAX + 1, env: this.env}));
    const what = `check \`${this.spec.text}\``;
    if (result.timedOut)
      return {ok: false, ms, code: 'ETIMEDOUT', status: 'timeout', reason: `${what} timed out after ${(this.timeoutMs / 1000).toFixed(1)} s (killed with its process group)`};
    if (result.spawnError !== undefined)
      return {ok: false, ms, code: 'ESPAWN', status: 'spawn', reason: `${what} could not start: ${result.spawnError}`};
    const output = foldOutput(result.stdout, result.stderr);
    const said = output === '' ? ' (no output)' : `: ${output}`;
    if (result.code === 0) {
      if (ms > this.timeoutMs)
        return {ok: false, ms, code: 'ETIMEDOUT', status: 'timeout', reason: `${what} timed out after ${(this.timeoutMs / 1000).toFixed(1)} s`};
      return {ok: true, ms};
    }
    if (result.code === null)
      return {ok: false, ms, code: 'ESIGNAL', status: result.signal ?? 'signal', reason: `${what} was killed by ${result.signal ?? 'a signal'}${said}`};
    return {ok: false, ms, code: 'EXIT', status: `exit ${result.code}`, reason: `${what} exited ${result.code}${said}`};
  }
}

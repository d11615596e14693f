import type {RejoinAnswer} from '../heartbeat';
import {foldOutput} from '../probe';
import type {CheckSpec} from '../probe';
import {OneAtATime} from '../probe/flight';
import type {ProcessStarter} from '../spawn';
import type {LifeEvent} from './lifecycle';

/** Exit codes of a rejoin program: 0 clients may come back, 10 the coordinator may be reached again; anything else: not yet. */
export const REJOIN_EXIT = {clients: 0, voice: 10} as const;
/** A rejoin program asks a cluster (an API, a database): more time than a probe, and it runs only while fenced. */
export const REJOIN_TIMEOUT_MS = 10_000;
/** The longest reason a heartbeat carries from it (start-up sizes the heartbeat for this many bytes, each a quote). */
export const REJOIN_REASON_BYTES = 480;

/** What one run said: its exit code as an answer, its output (or how it ended) as the reason. */
export function rejoinAnswer(result: {code: number | null, signal: string | null, stdout: string, stderr: string, timedOut: boolean, spawnError?: string}, timeoutMs: number): {answer: RejoinAnswer, reason: string} {
  // Control characters would cost six bytes each in JSON: the reason must fit the heartbeat as sized at start-up.
  const output = foldOutput(result.stdout, result.stderr, REJOIN_REASON_BYTES).replace(/[\u0000-\u001f\u007f]/g, '?');
  if (result.timedOut)
    return {answer: 'none', reason: `timed out after ${(timeoutMs / 1000).toFixed(1)} s (killed with its process group)`};
  if (result.spawnError !== undefined)
    return {answer: 'none', reason: `could not start: ${result.spawnError}`};
  const said = output === '' ? '(no output)' : output;
  if (result.code === REJOIN_EXIT.clients)
    return {answer: 'clients', reason: said};
  if (result.code === REJOIN_EXIT.voice)
    return {answer: 'voice', reason: said};
  return {answer: 'none', reason: result.code === null ? `killed by ${result.signal ?? 'a signal'}: ${said}` : `exit ${result.code}: ${said}`};
}

/**
 * The --rejoin program, run as the lifecycle says: one run at a time, in a
 * process group of its own through the spawn helper, with EBSMON_REPORTER and
 * EBSMON_FENCED_SINCE (epoch ms) in its environment.
 */
export class RejoinRuns {
  private readonly flight = new OneAtATime();

  constructor(private readonly spec: CheckSpec, private readonly name: string, private readonly startProcess: ProcessStarter, private readonly dispatch: (event: LifeEvent) => void, private readonly timeoutMs = REJOIN_TIMEOUT_MS) {
  }

  get busyPid(): number | undefined {
    return this.flight.busyPid;
  }

  run(fencedSince: number): void {
    const startedAt = Date.now();
    const env = {EBSMON_REPORTER: this.name, EBSMON_FENCED_SINCE: String(Math.round(fencedSince))};
    void this.flight.run(() => this.startProcess(this.spec.argv, {timeoutMs: this.timeoutMs, maxOutputBytes: 4096, env})).then(({result}) => {
      this.dispatch({type: 'rejoin-result', ...rejoinAnswer(result, this.timeoutMs), startedAt});
    });
    void this.flight.gone().then(() => this.dispatch({type: 'rejoin-exited'}));
  }
}

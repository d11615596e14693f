import {run} from '../spawn';
import type {RunResult} from '../spawn';

/**
 * What one reporter asks of the firewall right now:
 * - armed: its ports pass until `until` (monotonic ms, performance.now()); a
 *   backend that holds deadlines hands the kernel the time left, so the fence
 *   lands at `until` even if the monitor never runs again;
 * - open: its ports pass with no deadline (overridden, or the monitor stopping);
 * - fenced: its ports are rejected.
 */
export type Arm =
  | {state: 'armed', until: number}
  | {state: 'open'}
  | {state: 'fenced'};

export type DesiredReporter = {
  name: string;
  /** Its service's ports: clients are refused while `arm` does not pass them. */
  ports: ReadonlyArray<number>;
  arm: Arm;
  /** Destination ports this host must not reach while `voice` does not pass them (its cluster's coordinator, its peers). */
  isolate: ReadonlyArray<number>;
  voice: Arm;
};

export type BackendName = 'nftables' | 'iptables';

export type KernelPort = {owners: Array<string>, alive: 'fenced' | {leftMs: number | null}};

/** What the kernel holds at start-up (what a previous monitor left), per port. */
export type KernelView = {
  /** Which reporters guard the port (as the kernel records it), and whether it passes and for how long (null: no deadline). */
  ports: Map<number, KernelPort>;
  /** The same for isolated destination ports (a backend without isolation holds none). */
  isolated: Map<number, KernelPort>;
};

/** What the kernel holds for a port after a write: fenced, open with no deadline, or passing until `until` (monotonic ms). */
export type HeldPort = {alive: {kind: 'armed' | 'open' | 'fenced', until?: number}};

/** Per port, for the service's ports (clients) and the isolated destinations (voice). */
export type Held = {clients: ReadonlyMap<number, HeldPort>, voice: ReadonlyMap<number, HeldPort>};

export type ApplyResult =
  /**
   * `earlyMs`: how much before its deadline an element written now may run
   * out (a backend that holds deadlines; else 0). `held`: what the kernel
   * holds now, when this apply wrote anything.
   */
  | {ok: true, newlyFenced: Array<number>, earlyMs: number, held?: Held}
  | {ok: false, detail: string};

/** What a stop did with the ports it was asked to leave open: the ones whose deadline had already run out stay fenced. */
export type ReleaseResult = {opened: Array<number>, expired: Array<number>, voiceOpened: Array<number>, voiceExpired: Array<number>} | {failed: string};

/**
 * A firewall backend. The monitor's apply loop is its only caller and never
 * calls it concurrently: apply() returns before the next apply or check starts.
 */
export interface Firewall {
  readonly name: BackendName;
  /** True when the kernel itself fences at a deadline (nftables). */
  readonly holdsDeadlines: boolean;
  /** Start-up: what is in the kernel now, for adoption. Null when it cannot be read. */
  inspect(): Promise<KernelView | null>;
  /** Makes the kernel hold `desired`. Never throws; a failure is retried by the caller. */
  apply(desired: ReadonlyArray<DesiredReporter>): Promise<ApplyResult>;
  /**
   * A clean stop: these armed ports pass with no deadline from now on, but
   * only those the kernel still holds alive when it commits; a port whose
   * deadline has run out stays fenced (the kernel's word wins over the
   * registry's). Called after the last apply, never concurrently with one.
   */
  release(ports: {clients: ReadonlyArray<number>, voice: ReadonlyArray<number>}): Promise<ReleaseResult>;
  /** Reads the kernel back; false when it no longer holds what was applied (the next apply repairs it). */
  check(): Promise<boolean>;
  /** The kernel may have changed behind our back (a table deleted, a new writer ready): check() it now. */
  onDrift(listener: () => void): void;
  close(): Promise<void>;
}

export type RunnerOptions = {
  timeoutMs: number;
  input?: string | Buffer;
  /** Added to the caller's own environment. */
  env?: Record<string, string>;
  maxOutputBytes?: number;
};

/** How a backend runs a one-shot tool: through the spawn helper in the monitor, directly in a CLI. */
export type Runner = (argv: ReadonlyArray<string>, options: RunnerOptions) => Promise<RunResult>;

/** For short-lived commands (unblock, status): a direct spawn; their loop has nothing else to keep alive. */
export const directRunner: Runner = (argv, options) => run(argv, {
  timeoutMs: options.timeoutMs,
  input: options.input,
  maxOutputBytes: options.maxOutputBytes,
  env: options.env === undefined ? undefined : {...process.env, ...options.env},
});

export function describeRun(result: RunResult, deadlineMs: number): string {
  if (result.spawnError !== undefined)
    return result.spawnError;
  if (result.timedOut)
    return `no answer within ${deadlineMs} ms`;
  const stderr = result.stderr.trim().split('\n').slice(0, 3).join(' | ');
  return `exit ${result.code ?? result.signal}${stderr === '' ? '' : `: ${stderr}`}`;
}

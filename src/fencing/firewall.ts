import os from 'node:os';

import type {Logger} from '../log';
import {RateLimitedLog} from '../log';
import {run} from '../spawn';
import type {RunResult} from '../spawn';
import {FAMILIES, fencesByName, killSocketsArgv, matchesDesired, parseSave, removeAllText, restoreArgv, restoreText, saveArgv} from './rules';
import type {ChainState, Family, Fence} from './rules';

/** A firewall tool that takes longer than this is treated as failed and retried. */
export const TOOL_DEADLINE_MS = 8_000;

export type ToolFailure = {family: Family, what: string, detail: string};

function describe(result: RunResult): string {
  if (result.spawnError !== undefined)
    return result.spawnError;
  if (result.timedOut)
    return `no answer within ${TOOL_DEADLINE_MS} ms`;
  const stderr = result.stderr.trim().split('\n').slice(0, 3).join(' | ');
  return `exit ${result.code ?? result.signal}${stderr === '' ? '' : `: ${stderr}`}`;
}

export async function readChain(family: Family): Promise<ChainState | ToolFailure> {
  const result = await run(saveArgv(family), {timeoutMs: TOOL_DEADLINE_MS});
  if (result.code !== 0)
    return {family, what: saveArgv(family)[0]!, detail: describe(result)};
  return parseSave(result.stdout);
}

export async function restore(family: Family, text: string): Promise<ToolFailure | null> {
  const argv = restoreArgv(family);
  const result = await run(argv, {timeoutMs: TOOL_DEADLINE_MS, input: text});
  if (result.code !== 0)
    return {family, what: argv[0]!, detail: describe(result)};
  return null;
}

export function isFailure(value: ChainState | ToolFailure): value is ToolFailure {
  return 'detail' in value;
}

/** Every address of this host, so `ss -K` spares local peers (read from netlink, not disk). */
export function localAddresses(): Array<string> {
  const out: Array<string> = [];
  for (const list of Object.values(os.networkInterfaces()))
    for (const entry of list ?? [])
      out.push(entry.address.replace(/%.*$/, ''));
  return out;
}

export type FencerOptions = {
  families?: ReadonlyArray<Family>;
  /** Re-read the kernel's rules and restore ours at least this often. */
  reconcileMs?: number;
  /** Called after each attempt to apply the desired rules. */
  onApplied?: (ok: boolean) => void;
};

/**
 * Holds the desired set of fences and makes the kernel match it. Changes are
 * coalesced: while one iptables-restore runs, later changes wait and go in
 * together, so fencing 1000 reporters at once costs a few calls, not 1000.
 */
export class Fencer {
  private desired = new Map<string, ReadonlyArray<number>>();
  private known = new Map<Family, ChainState | null>();
  private running: Promise<void> | null = null;
  private dirty = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryDelayMs = 0;
  private reconcileTimer: NodeJS.Timeout | null = null;
  private socketKillUnsupportedLogged = false;
  private readonly families: ReadonlyArray<Family>;
  private readonly limited: RateLimitedLog;
  private closed = false;
  /** Fences whose rules are in the kernel of every family after the last successful apply. */
  readonly applied = new Map<string, ReadonlyArray<number>>();

  constructor(private readonly logger: Logger, private readonly options: FencerOptions = {}) {
    this.families = options.families ?? FAMILIES;
    this.limited = new RateLimitedLog(logger, 30_000);
    for (const family of this.families)
      this.known.set(family, null);
  }

  /** Reads what is in the kernel now, grouped by reporter (start-up adoption). */
  async inspect(): Promise<Map<Family, ChainState | ToolFailure>> {
    const states = new Map<Family, ChainState | ToolFailure>();
    await Promise.all(this.families.map(async family => {
      const state = await readChain(family);
      states.set(family, state);
      this.known.set(family, isFailure(state) ? null : state);
    }));
    return states;
  }

  startReconciling(): void {
    const period = this.options.reconcileMs ?? 5_000;
    this.reconcileTimer = setInterval(() => {
      void this.reconcile();
    }, period);
  }

  fences(): Array<Fence> {
    return [...this.desired].map(([name, ports]) => ({name, ports}));
  }

  set(name: string, ports: ReadonlyArray<number>): Promise<void> {
    this.desired.set(name, [...ports]);
    return this.sync();
  }

  remove(name: string): Promise<void> {
    if (!this.desired.has(name))
      return Promise.resolve();
    this.desired.delete(name);
    return this.sync();
  }

  /** Resolves when the apply in progress (which includes every change made so far) has ended; starts none. */
  settled(): Promise<void> {
    return this.running ?? Promise.resolve();
  }

  /**
   * Applies the desired state; resolves once an apply that includes this
   * call's change has ended (a running loop goes round again while dirty).
   */
  sync(): Promise<void> {
    if (this.running !== null) {
      this.dirty = true;
      return this.running;
    }
    this.running = this.applyLoop().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async applyLoop(): Promise<void> {
    do {
      this.dirty = false;
      await this.applyOnce();
    } while (this.dirty && !this.closed);
  }

  private async applyOnce(): Promise<void> {
    const fences = this.fences();
    const failures = (await Promise.all(this.families.map(async family => {
      const text = restoreText(fences, this.known.get(family) ?? null);
      const failure = await restore(family, text);
      if (failure === null) {
        this.known.set(family, {chainExists: true, jumpPositions: [0], fences: fences.flatMap(f => f.ports.map(port => ({name: f.name, port}))), strangers: 0});
      } else {
        // Unknown kernel state after a failure: read it again before the next try.
        this.known.set(family, null);
      }
      return failure;
    }))).filter((f): f is ToolFailure => f !== null);

    if (failures.length === 0) {
      if (this.retryDelayMs > 0)
        this.logger.info('firewall updated again after earlier failures', {fences: fences.length});
      this.retryDelayMs = 0;
      const newlyFenced = new Set<number>();
      for (const fence of fences) {
        const before = this.applied.get(fence.name);
        for (const port of fence.ports)
          if (before === undefined || !before.includes(port))
            newlyFenced.add(port);
      }
      this.applied.clear();
      for (const fence of fences)
        this.applied.set(fence.name, fence.ports);
      this.options.onApplied?.(true);
      if (newlyFenced.size > 0)
        void this.killEstablished([...newlyFenced]);
      return;
    }

    for (const failure of failures)
      this.limited.log('error', `fail:${failure.family}`, `firewall update failed (${failure.what}): ${failure.detail}; retrying`, {family: failure.family});
    this.options.onApplied?.(false);
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.retryTimer !== null || this.closed)
      return;
    this.retryDelayMs = Math.min(Math.max(this.retryDelayMs * 2, 250), 5_000);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void (async () => {
        for (const family of this.families)
          if (this.known.get(family) === null) {
            const state = await readChain(family);
            this.known.set(family, isFailure(state) ? null : state);
          }
        await this.sync();
      })();
    }, this.retryDelayMs);
  }

  /** Re-reads the kernel and puts back whatever was removed or changed behind ebsmon's back. */
  async reconcile(): Promise<void> {
    if (this.running !== null || this.closed)
      return;
    const fences = this.fences();
    let drifted = false;
    for (const [family, state] of await this.inspect()) {
      if (isFailure(state)) {
        this.limited.log('warn', `read:${family}`, `cannot read the firewall (${state.what}): ${state.detail}`);
        drifted = true;
        continue;
      }
      if (!matchesDesired(state, fences)) {
        drifted = true;
        this.logger.warn('ebsmon rules were changed behind its back; restoring them', {family, expectedRules: fences.reduce((n, f) => n + f.ports.length, 0), foundRules: state.fences.length, jumpAtTop: state.jumpPositions[0] === 0});
      }
    }
    if (drifted)
      await this.sync();
  }

  private async killEstablished(ports: Array<number>): Promise<void> {
    const argv = killSocketsArgv(ports, localAddresses());
    if (argv === null)
      return;
    const result = await run(argv, {timeoutMs: TOOL_DEADLINE_MS});
    if (result.code !== 0 || /not supported|Operation not permitted/i.test(result.stderr)) {
      if (!this.socketKillUnsupportedLogged) {
        this.socketKillUnsupportedLogged = true;
        this.logger.warn(`ss -K could not close idle connections (${describe(result)}); they end on their next packet instead`, {ports: ports.join(',')});
      }
    } else {
      const closed = result.stdout.split('\n').filter(line => /^\S/.test(line) && !line.startsWith('State') && !line.startsWith('Recv-Q')).length;
      if (closed > 0)
        this.logger.info('closed established connections to fenced ports', {ports: ports.join(','), closed});
    }
  }

  /** Stops timers; rules stay in the kernel (a successor monitor adopts them). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer !== null)
      clearTimeout(this.retryTimer);
    if (this.reconcileTimer !== null)
      clearInterval(this.reconcileTimer);
    await this.running;
  }
}

/** For `unblock` with no monitor running: edit only ebsmon's rules, in every family. */
export async function removeWithoutMonitor(name: string | null, families: ReadonlyArray<Family> = FAMILIES): Promise<{removed: Map<Family, number>, failures: Array<ToolFailure>}> {
  const removed = new Map<Family, number>();
  const failures: Array<ToolFailure> = [];
  for (const family of families) {
    const state = await readChain(family);
    if (isFailure(state)) {
      failures.push(state);
      continue;
    }
    let text: string | null;
    let count: number;
    if (name === null) {
      count = state.fences.length;
      text = state.chainExists || state.jumpPositions.length > 0 ? removeAllText(state) : null;
    } else {
      const keep = fencesByName(state);
      keep.delete(name);
      count = state.fences.length - [...keep.values()].reduce((n, ports) => n + ports.length, 0);
      text = count > 0 ? restoreText([...keep].map(([n, ports]) => ({name: n, ports})), state) : null;
    }
    if (text !== null) {
      const failure = await restore(family, text);
      if (failure !== null) {
        failures.push(failure);
        continue;
      }
    }
    removed.set(family, count);
  }
  return {removed, failures};
}

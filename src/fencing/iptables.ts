import type {Logger} from '../log';
import {describeRun} from './firewall';
import type {ApplyResult, DesiredReporter, Firewall, HeldPort, KernelView, ReleaseResult, Runner} from './firewall';
import {FAMILIES, fencesByName, jumpIsInPlace, matchesDesired, parseSave, removeAllText, restoreArgv, restoreText, saveArgv} from './rules';
import type {ChainState, Family, Fence, HookState} from './rules';

const OPEN_PORT: HeldPort = Object.freeze({alive: Object.freeze({kind: 'open' as const})});
const FENCED_PORT: HeldPort = Object.freeze({alive: Object.freeze({kind: 'fenced' as const})});

/** A firewall tool that takes longer than this is treated as failed and retried. */
export const TOOL_DEADLINE_MS = 8_000;

export type ToolFailure = {family: Family, what: string, detail: string};

export async function readChain(run: Runner, family: Family): Promise<ChainState | ToolFailure> {
  const argv = saveArgv(family);
  const result = await run(argv, {timeoutMs: TOOL_DEADLINE_MS});
  if (result.code !== 0)
    return {family, what: argv[0]!, detail: describeRun(result, TOOL_DEADLINE_MS)};
  return parseSave(result.stdout);
}

export async function restore(run: Runner, family: Family, text: string): Promise<ToolFailure | null> {
  const argv = restoreArgv(family);
  const result = await run(argv, {timeoutMs: TOOL_DEADLINE_MS, input: text});
  if (result.code !== 0)
    return {family, what: argv[0]!, detail: describeRun(result, TOOL_DEADLINE_MS)};
  return null;
}

export function isFailure(value: ChainState | ToolFailure): value is ToolFailure {
  return 'detail' in value;
}

function sameFences(a: ReadonlyArray<Fence>, b: ReadonlyArray<Fence>): boolean {
  const key = (fences: ReadonlyArray<Fence>) => fences.map(f => `${f.name}:${[...f.ports].sort((x, y) => x - y).join(',')}`).sort().join(' ');
  return key(a) === key(b);
}

/**
 * The iptables fallback (hosts without nftables): chains EBSMON (jumped to
 * from position 1 of INPUT) and EBSMON_FWD (from position 1 of FORWARD, for
 * published container ports) in the filter table of iptables and ip6tables,
 * both rewritten with iptables-restore --noflush in one COMMIT per change.
 * The monitor decides every fence itself: there is no kernel-held deadline,
 * and each change needs an exec, so a hung root disk delays it.
 */
export class IptablesFirewall implements Firewall {
  readonly name = 'iptables' as const;
  readonly holdsDeadlines = false;
  private readonly known = new Map<Family, ChainState | null>();
  /** The fences every family held after the last successful apply; null until one succeeds. */
  private applied: Array<Fence> | null = null;

  constructor(private readonly run: Runner, private readonly families: ReadonlyArray<Family> = FAMILIES, private readonly logger?: Logger) {
    for (const family of families)
      this.known.set(family, null);
  }

  async inspect(): Promise<KernelView | null> {
    const view: KernelView = {ports: new Map(), isolated: new Map()};
    let failed = false;
    for (const family of this.families) {
      const state = await readChain(this.run, family);
      if (isFailure(state)) {
        failed = true;
        continue;
      }
      this.known.set(family, state);
      for (const [name, ports] of fencesByName(state))
        for (const port of ports) {
          const entry = view.ports.get(port) ?? {owners: [], alive: 'fenced' as const};
          if (!entry.owners.includes(name))
            entry.owners.push(name);
          view.ports.set(port, entry);
        }
    }
    return failed ? null : view;
  }

  async apply(desired: ReadonlyArray<DesiredReporter>): Promise<ApplyResult> {
    const fences: Array<Fence> = desired.filter(r => r.arm.state === 'fenced' || (r.arm.state === 'armed' && r.arm.until <= performance.now())).map(r => ({name: r.name, ports: r.ports}));
    const inPlace = this.families.every(family => {
      const state = this.known.get(family);
      return state !== null && state !== undefined && jumpIsInPlace(state);
    });
    if (this.applied !== null && inPlace && sameFences(this.applied, fences))
      return {ok: true, newlyFenced: [], earlyMs: 0};

    const failures: Array<ToolFailure> = [];
    for (const family of this.families) {
      const failure = await restore(this.run, family, restoreText(fences, this.known.get(family) ?? null));
      if (failure === null) {
        // Both chains now hold the same fences, each behind its one jump at position 1.
        const rules = fences.flatMap(f => f.ports.map(port => ({name: f.name, port})));
        const written = (): HookState => ({chainExists: true, jumpPositions: [0], fences: [...rules], strangers: 0});
        this.known.set(family, {...written(), forward: written()});
      } else {
        // Unknown kernel state after a failure: read it again before the next try.
        failures.push(failure);
        const state = await readChain(this.run, family);
        this.known.set(family, isFailure(state) ? null : state);
      }
    }
    if (failures.length > 0) {
      this.applied = null;
      return {ok: false, detail: failures.map(f => `${f.what}: ${f.detail}`).join('; ')};
    }
    const before = new Set((this.applied ?? []).flatMap(f => f.ports));
    this.applied = fences;
    // No deadline is the kernel's here: a port is fenced by a rule, or open.
    const clients = new Map<number, HeldPort>(desired.flatMap(r => r.ports.map(port => [port, OPEN_PORT] as const)));
    for (const fence of fences)
      for (const port of fence.ports)
        clients.set(port, FENCED_PORT);
    return {ok: true, newlyFenced: [...new Set(fences.flatMap(f => f.ports))].filter(port => !before.has(port)), earlyMs: 0, held: {clients, voice: new Map()}};
  }

  /**
   * No rule is a deadline here: a port is fenced only by a rule this monitor
   * wrote, and the last apply (after the registry settled every deadline that
   * had passed) wrote every fence there is.
   */
  async release(ports: {clients: ReadonlyArray<number>, voice: ReadonlyArray<number>}): Promise<ReleaseResult> {
    return {opened: [...ports.clients], expired: [], voiceOpened: [...ports.voice], voiceExpired: []};
  }

  async check(): Promise<boolean> {
    let ok = true;
    for (const family of this.families) {
      const state = await readChain(this.run, family);
      if (isFailure(state)) {
        this.logger?.warn(`cannot read the firewall (${state.what}): ${state.detail}`, {family});
      } else if (this.applied !== null && !matchesDesired(state, this.applied)) {
        const expectedRules = this.applied.reduce((n, f) => n + f.ports.length, 0);
        this.logger?.warn('ebsmon rules were changed behind its back; restoring them', {family, expectedRules, foundRules: state.fences.length, jumpAtTop: state.jumpPositions[0] === 0});
      } else {
        this.known.set(family, state);
        continue;
      }
      ok = false;
      this.applied = null;
      this.known.set(family, isFailure(state) ? null : state);
    }
    return ok;
  }

  onDrift(): void {
    // iptables has no event stream: drift is found by check().
  }

  async close(): Promise<void> {
  }
}

/** For `unblock` with no monitor running: edit only ebsmon's rules, in every family. */
export async function removeIptablesWithoutMonitor(run: Runner, name: string | null, families: ReadonlyArray<Family> = FAMILIES): Promise<{removed: number, present: boolean, failures: Array<ToolFailure>}> {
  let removed = 0;
  let present = false;
  const failures: Array<ToolFailure> = [];
  for (const family of families) {
    const state = await readChain(run, family);
    if (isFailure(state)) {
      failures.push(state);
      continue;
    }
    const ours = [state, state.forward].some(hook => hook.chainExists || hook.jumpPositions.length > 0);
    present ||= ours;
    let text: string | null;
    let count: number;
    if (name === null) {
      count = state.fences.length;
      text = ours ? removeAllText(state) : null;
    } else {
      const keep = fencesByName(state);
      keep.delete(name);
      count = state.fences.length - [...keep.values()].reduce((n, ports) => n + ports.length, 0);
      text = count > 0 ? restoreText([...keep].map(([n, ports]) => ({name: n, ports})), state) : null;
    }
    if (text !== null) {
      const failure = await restore(run, family, text);
      if (failure !== null) {
        failures.push(failure);
        continue;
      }
    }
    removed += count;
  }
  return {removed, present, failures};
}

/**
 * Pure builders and parsers for ebsmon's firewall rules. Nothing here runs a
 * process: the text goes to iptables-restore through src/fencing/firewall.ts.
 */

export const CHAIN = 'EBSMON';
export const JUMP_COMMENT = 'ebsmon:jump';
export const COMMENT_PREFIX = 'ebsmon:';

export type Family = 'ipv4' | 'ipv6';
export const FAMILIES: ReadonlyArray<Family> = ['ipv4', 'ipv6'];

export const TOOLS: Record<Family, {save: string, restore: string, cli: string}> = {
  ipv4: {save: 'iptables-save', restore: 'iptables-restore', cli: 'iptables'},
  ipv6: {save: 'ip6tables-save', restore: 'ip6tables-restore', cli: 'ip6tables'},
};

export type Fence = {name: string, ports: ReadonlyArray<number>};

/** Seconds to wait for the xtables lock (`-w`); the spawn deadline is longer. */
export const XTABLES_WAIT_SECONDS = 5;

export function restoreArgv(family: Family): Array<string> {
  return [TOOLS[family].restore, '-w', String(XTABLES_WAIT_SECONDS), '--noflush'];
}

export function saveArgv(family: Family): Array<string> {
  return [TOOLS[family].save, '-t', 'filter'];
}

/**
 * One rule per fenced port. Remote traffic only (`! -i lo`), every packet (not
 * just SYN, so established connections are cut too), rejected with a TCP reset:
 * a DROP leaves clients retrying for minutes, ICMP unreachables are rate-limited.
 */
export function fenceRule(name: string, port: number): string {
  return `-A ${CHAIN} ! -i lo -p tcp -m tcp --dport ${port} -m comment --comment ${COMMENT_PREFIX}${name} -j REJECT --reject-with tcp-reset`;
}

export const FORWARD_CHAIN = 'EBSMON_FWD';

/**
 * The same for a published container port (Docker, Podman: DNAT in
 * prerouting, then FORWARD): matched by the port the client dialled, which
 * conntrack keeps as the original destination; the clients' direction only
 * (not the container's replies), and the host's own addresses as source spared.
 */
export function forwardRule(name: string, port: number): string {
  return `-A ${FORWARD_CHAIN} -p tcp -m addrtype ! --src-type LOCAL -m conntrack --ctdir ORIGINAL --ctproto tcp --ctorigdstport ${port} -m comment --comment ${COMMENT_PREFIX}${name} -j REJECT --reject-with tcp-reset`;
}

/** The two places ebsmon hooks into: a chain of its own each, jumped to from position 1. */
export const HOOKS = [
  {key: 'input', parent: 'INPUT', chain: CHAIN, rule: fenceRule, port: /--dport (\d+)/},
  {key: 'forward', parent: 'FORWARD', chain: FORWARD_CHAIN, rule: forwardRule, port: /--ctorigdstport (\d+)/},
] as const;
type Hook = typeof HOOKS[number];

const jumpSpec = (hook: Hook) => `-m comment --comment ${JUMP_COMMENT} -j ${hook.chain}`;

export type HookState = {
  chainExists: boolean;
  /** 0-based positions of ebsmon's jump among the parent chain's rules */
  jumpPositions: Array<number>;
  /** rules found in ebsmon's chain, as (name, port) */
  fences: Array<{name: string, port: number}>;
  /** rules in ebsmon's chain that are not ebsmon fence rules (someone edited the chain) */
  strangers: number;
};

/** INPUT's hook at the top level (as before FORWARD was fenced), FORWARD's beside it. */
export type ChainState = HookState & {forward: HookState};

const emptyHook = (): HookState => ({chainExists: false, jumpPositions: [], fences: [], strangers: 0});
const hookOf = (state: ChainState, hook: Hook): HookState => (hook.key === 'input' ? state : state.forward);

function hookInPlace(state: HookState): boolean {
  return state.chainExists && state.jumpPositions.length === 1 && state.jumpPositions[0] === 0;
}

export function jumpIsInPlace(state: ChainState): boolean {
  return HOOKS.every(hook => hookInPlace(hookOf(state, hook)));
}

/**
 * Both chains, rewritten in one iptables-restore transaction: a chain line
 * flushes its chain under --noflush, so the result is exactly `fences`, on
 * both hooks. Other chains are not named, so they are not touched.
 */
export function restoreText(fences: ReadonlyArray<Fence>, current: ChainState | null): string {
  const lines = ['*filter'];
  for (const hook of HOOKS)
    lines.push(`:${hook.chain} - [0:0]`);
  for (const hook of HOOKS)
    lines.push(`-F ${hook.chain}`);
  for (const hook of HOOKS)
    for (const fence of sortFences(fences))
      for (const port of [...fence.ports].sort((a, b) => a - b))
        lines.push(hook.rule(fence.name, port));
  for (const hook of HOOKS) {
    const state = current === null ? null : hookOf(current, hook);
    if (state === null || !hookInPlace(state)) {
      for (let i = 0; i < (state?.jumpPositions.length ?? 0); i++)
        lines.push(`-D ${hook.parent} ${jumpSpec(hook)}`);
      // Position 1, ahead of any "accept established" rule that would keep a stuck connection alive.
      lines.push(`-I ${hook.parent} 1 ${jumpSpec(hook)}`);
    }
  }
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** Removes the jumps and the chains: what `unblock --all` does with no monitor running. */
export function removeAllText(current: ChainState): string {
  const lines = ['*filter'];
  for (const hook of HOOKS) {
    const state = hookOf(current, hook);
    for (let i = 0; i < state.jumpPositions.length; i++)
      lines.push(`-D ${hook.parent} ${jumpSpec(hook)}`);
    if (state.chainExists)
      lines.push(`-F ${hook.chain}`, `-X ${hook.chain}`);
  }
  lines.push('COMMIT', '');
  return lines.join('\n');
}

function sortFences(fences: ReadonlyArray<Fence>): Array<Fence> {
  return [...fences].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

const COMMENT_RE = /--comment (?:"([^"]*)"|(\S+))/;

/** Reads `iptables-save -t filter` output. */
export function parseSave(text: string): ChainState {
  const state: ChainState = {...emptyHook(), forward: emptyHook()};
  const index: Record<string, number> = {INPUT: 0, FORWARD: 0};
  let inFilter = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) {
      inFilter = line === '*filter';
      continue;
    }
    if (!inFilter)
      continue;
    for (const hook of HOOKS) {
      const mine = hookOf(state, hook);
      if (line.startsWith(`:${hook.chain} `)) {
        mine.chainExists = true;
      } else if (line.startsWith(`-A ${hook.parent} `)) {
        if (line.includes(`-j ${hook.chain}`) && commentOf(line) === JUMP_COMMENT)
          mine.jumpPositions.push(index[hook.parent]!);
        index[hook.parent]! += 1;
      } else if (line.startsWith(`-A ${hook.chain} `)) {
        const comment = commentOf(line);
        const port = hook.port.exec(line)?.[1];
        if (comment?.startsWith(COMMENT_PREFIX) && port !== undefined && line.includes('tcp-reset'))
          mine.fences.push({name: comment.slice(COMMENT_PREFIX.length), port: Number(port)});
        else
          mine.strangers += 1;
      }
    }
  }
  return state;
}

function commentOf(line: string): string | undefined {
  const match = COMMENT_RE.exec(line);
  return match?.[1] ?? match?.[2];
}

/** Groups rules found in the kernel by reporter name (both hooks hold the same fences). */
export function fencesByName(state: HookState): Map<string, Array<number>> {
  const byName = new Map<string, Array<number>>();
  for (const {name, port} of state.fences) {
    const ports = byName.get(name) ?? [];
    if (!ports.includes(port))
      ports.push(port);
    byName.set(name, ports);
  }
  return byName;
}

/** True when the kernel holds exactly the desired rules on both hooks, jumps in place. */
export function matchesDesired(state: ChainState, desired: ReadonlyArray<Fence>): boolean {
  if (!jumpIsInPlace(state))
    return false;
  const want = new Set<string>();
  for (const fence of desired)
    for (const port of fence.ports)
      want.add(`${fence.name}:${port}`);
  return HOOKS.every(hook => {
    const mine = hookOf(state, hook);
    if (mine.strangers > 0)
      return false;
    const have = new Set(mine.fences.map(f => `${f.name}:${f.port}`));
    return have.size === mine.fences.length && have.size === want.size && [...want].every(key => have.has(key));
  });
}

/** argv for `ss -K`: close idle established connections to fenced ports from remote peers. */
export function killSocketsArgv(ports: ReadonlyArray<number>, localAddresses: ReadonlyArray<string>): Array<string> | null {
  if (ports.length === 0)
    return null;
  const sport: Array<string> = ['('];
  ports.forEach((port, i) => {
    if (i > 0)
      sport.push('or');
    sport.push('sport', '=', `:${port}`);
  });
  sport.push(')');
  const exclude: Array<string> = ['and', 'not', 'dst', '127.0.0.0/8', 'and', 'not', 'dst', '::ffff:127.0.0.0/104'];
  for (const address of localAddresses) {
    const isV6 = address.includes(':');
    exclude.push('and', 'not', 'dst', isV6 ? `[${address}]` : address);
    if (!isV6)
      exclude.push('and', 'not', 'dst', `[::ffff:${address}]`);
  }
  return ['ss', '-K', '-t', '-n', 'state', 'connected', ...sport, ...exclude];
}

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

export const JUMP_RULE_SPEC = `-m comment --comment ${JUMP_COMMENT} -j ${CHAIN}`;

export type ChainState = {
  chainExists: boolean;
  /** 0-based positions of ebsmon's jump among INPUT's rules */
  jumpPositions: Array<number>;
  /** rules found in EBSMON, as (name, port) */
  fences: Array<{name: string, port: number}>;
  /** EBSMON rules that are not ebsmon fence rules (someone edited the chain) */
  strangers: number;
};

export function jumpIsInPlace(state: ChainState): boolean {
  return state.chainExists && state.jumpPositions.length === 1 && state.jumpPositions[0] === 0;
}

/**
 * The whole EBSMON chain, rewritten in one iptables-restore transaction: the
 * chain line flushes it under --noflush, so the result is exactly `fences`.
 * Other chains are not named, so they are not touched.
 */
export function restoreText(fences: ReadonlyArray<Fence>, current: ChainState | null): string {
  const lines = ['*filter', `:${CHAIN} - [0:0]`, `-F ${CHAIN}`];
  for (const fence of sortFences(fences))
    for (const port of [...fence.ports].sort((a, b) => a - b))
      lines.push(fenceRule(fence.name, port));

  if (current === null || !jumpIsInPlace(current)) {
    for (let i = 0; i < (current?.jumpPositions.length ?? 0); i++)
      lines.push(`-D INPUT ${JUMP_RULE_SPEC}`);
    // Position 1, ahead of any "accept established" rule that would keep a stuck connection alive.
    lines.push(`-I INPUT 1 ${JUMP_RULE_SPEC}`);
  }
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** Removes the jump and the chain: what `unblock --all` does with no monitor running. */
export function removeAllText(current: ChainState): string {
  const lines = ['*filter'];
  for (let i = 0; i < current.jumpPositions.length; i++)
    lines.push(`-D INPUT ${JUMP_RULE_SPEC}`);
  if (current.chainExists)
    lines.push(`-F ${CHAIN}`, `-X ${CHAIN}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

function sortFences(fences: ReadonlyArray<Fence>): Array<Fence> {
  return [...fences].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

const COMMENT_RE = /--comment (?:"([^"]*)"|(\S+))/;
const DPORT_RE = /--dport (\d+)/;

/** Reads `iptables-save -t filter` output. */
export function parseSave(text: string): ChainState {
  const state: ChainState = {chainExists: false, jumpPositions: [], fences: [], strangers: 0};
  let inputIndex = 0;
  let inFilter = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) {
      inFilter = line === '*filter';
      continue;
    }
    if (!inFilter)
      continue;
    if (line.startsWith(`:${CHAIN} `)) {
      state.chainExists = true;
    } else if (line.startsWith('-A INPUT ')) {
      if (line.includes(`-j ${CHAIN}`) && commentOf(line) === JUMP_COMMENT)
        state.jumpPositions.push(inputIndex);
      inputIndex += 1;
    } else if (line.startsWith(`-A ${CHAIN} `)) {
      const comment = commentOf(line);
      const port = DPORT_RE.exec(line)?.[1];
      if (comment?.startsWith(COMMENT_PREFIX) && port !== undefined && line.includes('tcp-reset'))
        state.fences.push({name: comment.slice(COMMENT_PREFIX.length), port: Number(port)});
      else
        state.strangers += 1;
    }
  }
  return state;
}

function commentOf(line: string): string | undefined {
  const match = COMMENT_RE.exec(line);
  return match?.[1] ?? match?.[2];
}

/** Groups rules found in the kernel by reporter name. */
export function fencesByName(state: ChainState): Map<string, Array<number>> {
  const byName = new Map<string, Array<number>>();
  for (const {name, port} of state.fences) {
    const ports = byName.get(name) ?? [];
    ports.push(port);
    byName.set(name, ports);
  }
  return byName;
}

/** True when the kernel holds exactly the desired rules, jump in place. */
export function matchesDesired(state: ChainState, desired: ReadonlyArray<Fence>): boolean {
  if (!jumpIsInPlace(state) || state.strangers > 0)
    return false;
  const want = new Set<string>();
  for (const fence of desired)
    for (const port of fence.ports)
      want.add(`${fence.name}:${port}`);
  const have = new Set(state.fences.map(f => `${f.name}:${f.port}`));
  if (have.size !== state.fences.length || have.size !== want.size)
    return false;
  for (const key of want)
    if (!have.has(key))
      return false;
  return true;
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

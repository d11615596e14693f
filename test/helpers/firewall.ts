import {spawnSync} from 'node:child_process';

import {inNs, sh} from './rig';

export type Backend = 'nftables' | 'iptables';
export const BACKENDS: ReadonlyArray<Backend> = ['nftables', 'iptables'];
export type Family = 'ipv4' | 'ipv6';
export const FAMILIES: ReadonlyArray<Family> = ['ipv4', 'ipv6'];
/** The traffic a fence is for: to a port of this host (input), or forwarded to a container's (forward). */
export type Traffic = 'input' | 'forward';

/** Port -> the reporters it is fenced for. */
export type Fences = Map<number, Array<string>>;

/**
 * Everything here reads the kernel with the tools' own output and parsers of
 * the tests' own (never the project's parseTable/parseSave, which are what is
 * under test): nft's JSON listing and iptables-save's lines.
 */

type NftElement = number | {elem: {val: number, comment?: string, timeout?: number, expires?: number}};
type NftJson = {nftables: Array<{set?: {name: string, elem?: Array<NftElement>}}>};

/** ebsmon's rule in each of its chains, as `nft list` prints it. */
const RULES: Record<Traffic, string> = {
  input: 'iifname != "lo" meta l4proto tcp ct direction original ct original proto-dst @guarded ct original proto-dst != @alive reject with tcp reset comment "ebsmon"',
  forward: 'meta l4proto tcp ct direction original ct original proto-dst @guarded ct original proto-dst != @alive fib saddr type != local reject with tcp reset comment "ebsmon"',
};

/**
 * table inet ebsmon as `nft -j` lists it, or null when there is none. nft's
 * JSON gives timeouts in whole seconds (rounded down): assert with that grain.
 */
export type NftTable = {
  guarded: Map<number, {comment: string | null}>;
  alive: Map<number, {timeoutS: number | null, expiresS: number | null}>;
  /** The coordinator ports a fenced reporter may not reach (isolated and not reachable). */
  isolated: Map<number, {comment: string | null}>;
  reachable: Map<number, {timeoutS: number | null, expiresS: number | null}>;
  /** The chains (input, forward) that hold ebsmon's rule, exactly. */
  ruleIn: Set<Traffic>;
};

export function ebsmonTable(ns: string): NftTable | null {
  const sets = nftSets(sh(inNs(ns, ['nft', '-j', 'list', 'table', 'inet', 'ebsmon']), {allowFail: true}));
  if (sets === null)
    return null;
  const ruleIn = new Set<Traffic>();
  // The rules as text (JSON spells a rule as a tree of expressions), one chain at a time.
  for (const traffic of ['input', 'forward'] as const) {
    const chain = sh(inNs(ns, ['nft', 'list', 'chain', 'inet', 'ebsmon', traffic]), {allowFail: true});
    if (chain.split('\n').some(line => line.trim() === RULES[traffic]))
      ruleIn.add(traffic);
  }
  return {...sets, ruleIn};
}

/** The sets of `nft -j list table inet ebsmon`; null for no output (no table). */
export function nftSets(json: string): Omit<NftTable, 'ruleIn'> | null {
  if (json.trim() === '')
    return null;
  const sets: Omit<NftTable, 'ruleIn'> = {guarded: new Map(), alive: new Map(), isolated: new Map(), reachable: new Map()};
  for (const item of (JSON.parse(json) as NftJson).nftables) {
    for (const element of item.set?.elem ?? []) {
      const {val, comment, timeout, expires} = typeof element === 'number' ? {val: element} : element.elem;
      const name = item.set!.name;
      if (name === 'guarded' || name === 'isolated')
        sets[name].set(val, {comment: comment ?? null});
      else if (name === 'alive' || name === 'reachable')
        sets[name].set(val, {timeoutS: timeout ?? null, expiresS: expires ?? null});
    }
  }
  return sets;
}

/** nftables: guarded and not alive, for both families at once (an inet table), behind the chain's rule. */
function nftFences(ns: string, traffic: Traffic): Fences {
  const out: Fences = new Map();
  const table = ebsmonTable(ns);
  if (table === null || !table.ruleIn.has(traffic))
    return out;
  for (const [port, {comment}] of table.guarded)
    if (!table.alive.has(port))
      out.set(port, (comment ?? '').split(','));
  return out;
}

/**
 * iptables: one family's rules in EBSMON (input) or EBSMON_FWD (forward), counted
 * only while the jump to that chain is in INPUT or FORWARD.
 */
function iptablesFences(ns: string, family: Family, traffic: Traffic): Fences {
  const out: Fences = new Map();
  const save = sh(inNs(ns, [family === 'ipv4' ? 'iptables-save' : 'ip6tables-save', '-t', 'filter'])).split('\n');
  const [from, chain, port] = traffic === 'input' ? ['INPUT', 'EBSMON', '--dport'] : ['FORWARD', 'EBSMON_FWD', '--ctorigdstport'];
  if (!save.some(line => new RegExp(`^-A ${from} .*--comment "?ebsmon:jump"? -j ${chain}$`).test(line)))
    return out;
  for (const line of save) {
    const match = new RegExp(`^-A ${chain} .*${port} (\\d+) .*--comment "?ebsmon:([^" ]+)"? -j REJECT --reject-with tcp-reset$`).exec(line);
    if (match !== null)
      out.set(Number(match[1]), [...(out.get(Number(match[1])) ?? []), match[2]!]);
  }
  return out;
}

/** What each family rejects in a namespace, each read on its own. */
export function kernelFences(backend: Backend, ns: string, traffic: Traffic = 'input'): Record<Family, Fences> {
  if (backend === 'nftables') {
    const both = nftFences(ns, traffic);
    return {ipv4: both, ipv6: both};
  }
  return {ipv4: iptablesFences(ns, 'ipv4', traffic), ipv6: iptablesFences(ns, 'ipv6', traffic)};
}

/** Fenced for this reporter in IPv4 and in IPv6. */
export function fencedFor(backend: Backend, ns: string, name: string, port: number, traffic: Traffic = 'input'): boolean {
  const fences = kernelFences(backend, ns, traffic);
  return FAMILIES.every(family => fences[family].get(port)?.includes(name) === true);
}

/** Fenced in neither family, for no reporter: confirm with a real connect over each (tcpTry). */
export function unfenced(backend: Backend, ns: string, port: number, traffic: Traffic = 'input'): boolean {
  const fences = kernelFences(backend, ns, traffic);
  return FAMILIES.every(family => !fences[family].has(port));
}

/**
 * Every rule that is not ebsmon's: iptables-save of both families (ebsmon's
 * chain and jump left out for the iptables backend) and, for nftables, the
 * whole ruleset outside table inet ebsmon. Counters are zeroed: traffic moves them.
 */
export function foreignRules(backend: Backend, ns: string): string {
  const strip = (text: string) => text.split('\n')
    .filter(line => !line.startsWith('#') && (backend === 'nftables' || !/EBSMON|ebsmon:/.test(line)))
    .map(line => line.replace(/\[\d+:\d+\]/g, '[0:0]'))
    .join('\n');
  const saved = `${strip(sh(inNs(ns, ['iptables-save'])))}\n---\n${strip(sh(inNs(ns, ['ip6tables-save'])))}`;
  if (backend === 'iptables')
    return saved;
  const ruleset = sh(inNs(ns, ['nft', 'list', 'ruleset']))
    .replace(/^table inet ebsmon \{\n[\s\S]*?\n\}\n?/m, '')
    .replace(/packets \d+ bytes \d+/g, 'packets 0 bytes 0');
  return `${saved}\n---\n${ruleset}`;
}

/**
 * Between tests that share a namespace: nothing of an earlier test's monitor
 * left in the firewall. A monitor adopts every ebsmon entry the kernel holds
 * (a fenced port stays fenced), so one test's leftovers would be the next
 * test's reporters.
 */
export function clearEbsmon(ns: string): void {
  sh(inNs(ns, ['nft', 'delete', 'table', 'inet', 'ebsmon']), {allowFail: true});
  for (const tool of ['iptables', 'ip6tables']) {
    for (const [parent, chain] of [['INPUT', 'EBSMON'], ['FORWARD', 'EBSMON_FWD']] as const) {
      for (let i = 0; i < 10 && spawnSync('ip', ['netns', 'exec', ns, tool, '-D', parent, '-m', 'comment', '--comment', 'ebsmon:jump', '-j', chain], {stdio: 'ignore'}).status === 0; i++);
      sh(inNs(ns, [tool, '-F', chain]), {allowFail: true});
      sh(inNs(ns, [tool, '-X', chain]), {allowFail: true});
    }
  }
}

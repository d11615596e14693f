import {spawnSync} from 'node:child_process';

import {parseSave, parseTable} from '../../src/fencing';
import {inNs, sh} from './rig';

export type Backend = 'nftables' | 'iptables';
export const BACKENDS: ReadonlyArray<Backend> = ['nftables', 'iptables'];

/**
 * What the kernel rejects in a namespace, read with the tools an operator
 * uses: port -> the reporters it is fenced for. nftables: guarded and not
 * alive; iptables: a rule in EBSMON, in both families.
 */
export function kernelFences(backend: Backend, ns: string): Map<number, Array<string>> {
  const out = new Map<number, Array<string>>();
  if (backend === 'nftables') {
    const table = parseTable(sh(inNs(ns, ['nft', 'list', 'table', 'inet', 'ebsmon']), {allowFail: true}));
    for (const [port, element] of table?.guarded ?? [])
      if (!table!.alive.has(port))
        out.set(port, (element.comment ?? '').split(','));
    return out;
  }
  const v4 = parseSave(sh(inNs(ns, ['iptables-save', '-t', 'filter'])));
  const v6 = parseSave(sh(inNs(ns, ['ip6tables-save', '-t', 'filter'])));
  for (const {name, port} of v4.fences)
    if (v6.fences.some(f => f.name === name && f.port === port))
      out.set(port, [...(out.get(port) ?? []), name]);
  return out;
}

export const fencedFor = (backend: Backend, ns: string, name: string, port: number) => kernelFences(backend, ns).get(port)?.includes(name) === true;

/** nft's listing of table inet ebsmon, for assertions on deadlines. */
export function ebsmonTable(ns: string) {
  return parseTable(sh(inNs(ns, ['nft', 'list', 'table', 'inet', 'ebsmon']), {allowFail: true}));
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

/**
 * Pure builders and parsers for ebsmon's nftables table. Nothing here runs a
 * process: the text goes to a long-lived `nft -i` (src/fencing/nftables.ts).
 *
 * One table, `inet ebsmon` (IPv4 and IPv6 at once), with a constant number of
 * rules whatever the number of reporters:
 *   set guarded    every reporter's ports (element comment: who guards it)
 *   set alive      the armed ports, each with a timeout: the kernel's deadline
 *   set isolated   destinations (ports) a fenced reporter's host must not reach: its voice in a cluster
 *   set reachable  the isolated ports still reachable, each with a timeout: the same deadline
 *   chain input    a guarded port that is not alive is rejected; replies from
 *                  an isolated destination that is not reachable are dropped
 *   chain output   this host's connections to an isolated destination that is
 *                  not reachable are reset; replies from a guarded port that
 *                  is not alive are held (dropped), the fence's own resets aside
 *   chain forward  the same for published container ports (DNAT, then FORWARD)
 * When a reporter's heartbeats stop being re-armed, its elements expire and the
 * kernel fences at the deadline by itself, whatever happens to the monitor.
 */

export const TABLE = 'inet ebsmon';
/** Not a port anyone can fence (ports are 1-65535): used to learn whether the kernel updates timeouts. */
export const CAPABILITY_PORT = 0;
/** nft keeps at most 128 bytes of an element comment. */
const COMMENT_MAX = 128;

/**
 * Every packet a client sends to a guarded port that is not alive, from
 * anywhere but loopback, gets a TCP reset: established connections break on
 * their next packet, new ones are refused at once. `ct original proto-dst`
 * matches the port the client dialled, also when it was redirected; `ct
 * direction original` keeps it to the clients' side (the replies to this
 * host's own connections out to port 3306 elsewhere carry it too). A reject
 * in a base chain is final: a foreign `accept` in another chain cannot bypass it.
 */
export const FENCE_RULE = 'iifname != "lo" meta l4proto tcp ct direction original ct original proto-dst @guarded ct original proto-dst != @alive reject with tcp reset comment "ebsmon"';

/**
 * Docker and Podman publish a port with DNAT in prerouting: the packet then
 * takes the forward hook with the container's address and port, and conntrack
 * keeps the port the client dialled as the original destination. The host's
 * own addresses as source are spared (the forward path never sees loopback).
 */
export const FORWARD_RULE = 'meta l4proto tcp ct direction original ct original proto-dst @guarded ct original proto-dst != @alive fib saddr type != local reject with tcp reset comment "ebsmon"';

/**
 * A node's voice in its cluster (its lease at etcd, Consul or ZooKeeper, its
 * Galera peers) is its OUTBOUND link: at the deadline, its connections to an
 * isolated destination port are reset on their next packet and new ones
 * refused, so a hung primary cannot renew its lock, and a resumed one cannot
 * take it back. Loopback is spared (a local member speaks for itself).
 */
export const ISOLATE_RULE = 'oifname != "lo" meta l4proto tcp ct direction original ct original proto-dst @isolated ct original proto-dst != @reachable reject with tcp reset comment "ebsmon"';

/** What the isolated destination still sends (a lease granted late) is dropped too. */
export const ISOLATE_REPLY_RULE = 'iifname != "lo" meta l4proto tcp ct direction reply ct original proto-dst @isolated ct original proto-dst != @reachable drop comment "ebsmon"';

/**
 * Nothing late leaves a fenced port: a reply the service completes after the
 * deadline (a commit that was waiting on the disk) never reaches the client,
 * who would take it as acknowledged while the cluster has moved on. The
 * fence's own resets (the input rule's, a destroyed socket's) still leave.
 * `tcp flags` first: it implies the protocol the port match needs, and nft
 * lists the rule as written.
 */
export const HOLD_RULE = 'oifname != "lo" tcp flags ! rst ct direction reply ct original proto-dst @guarded ct original proto-dst != @alive drop comment "ebsmon"';

/** The same for a published container port's replies, the host's own peers aside. */
export const FORWARD_HOLD_RULE = 'tcp flags ! rst ct direction reply ct original proto-dst @guarded ct original proto-dst != @alive fib daddr type != local drop comment "ebsmon"';

const CHAINS = [
  {name: 'input', hook: 'input', rules: [FENCE_RULE, ISOLATE_REPLY_RULE]},
  {name: 'output', hook: 'output', rules: [ISOLATE_RULE, HOLD_RULE]},
  {name: 'forward', hook: 'forward', rules: [FORWARD_RULE, FORWARD_HOLD_RULE]},
] as const;

/** A set of guarded ports and the set of those that pass, with their deadlines. */
export type SetPair = {guard: 'guarded', live: 'alive'} | {guard: 'isolated', live: 'reachable'};
/** Clients' connections to the reporter's ports. */
export const CLIENTS: SetPair = {guard: 'guarded', live: 'alive'};
/** The host's own connections to the reporter's cluster peers and coordinator. */
export const VOICE: SetPair = {guard: 'isolated', live: 'reachable'};
const PAIRS = [CLIENTS, VOICE] as const;
type SetName = SetPair['guard'] | SetPair['live'];

export type PortAlive =
  | {kind: 'armed', ms: number}
  | {kind: 'open'}
  | {kind: 'fenced'};

export type PortPlan = {port: number, comment: string, alive: PortAlive};

export function commentFor(owners: ReadonlyArray<string>): string {
  const text = owners.join(',');
  return text.length <= COMMENT_MAX ? text : `${text.slice(0, COMMENT_MAX - 3)}...`;
}

const quote = (text: string) => `"${text.replace(/["\\]/g, '')}"`;
const join = (items: ReadonlyArray<string>) => items.join(', ');

function element(port: number, alive: PortAlive): string {
  return alive.kind === 'armed' ? `${port} timeout ${Math.max(1, Math.floor(alive.ms))}ms` : String(port);
}

function schema(): Array<string> {
  return [
    ...PAIRS.flatMap(pair => [
      `add set ${TABLE} ${pair.guard} { type inet_service; }`,
      `add set ${TABLE} ${pair.live} { type inet_service; flags timeout; }`,
    ]),
    ...CHAINS.flatMap(chain => [
      `add chain ${TABLE} ${chain.name} { type filter hook ${chain.hook} priority filter; policy accept; }`,
      ...chain.rules.map(rule => `add rule ${TABLE} ${chain.name} ${rule}`),
    ]),
  ];
}

/**
 * The whole table in one transaction: created if missing, replaced if present,
 * atomically (the packet path sees the old table or the new one, never none).
 * Every deadline is written as the time left to it, so a replace never
 * extends one.
 */
export function replaceTransaction(clients: ReadonlyArray<PortPlan>, voice: ReadonlyArray<PortPlan> = []): string {
  const commands = [`add table ${TABLE}`, `delete table ${TABLE}`, `add table ${TABLE}`, ...schema()];
  for (const [pair, plan] of [[CLIENTS, clients], [VOICE, voice]] as const) {
    if (plan.length > 0)
      commands.push(`add element ${TABLE} ${pair.guard} { ${join(plan.map(p => (p.comment === '' ? String(p.port) : `${p.port} comment ${quote(p.comment)}`)))} }`);
    const alive = plan.filter(p => p.alive.kind !== 'fenced');
    if (alive.length > 0)
      commands.push(`add element ${TABLE} ${pair.live} { ${join(alive.map(p => element(p.port, p.alive)))} }`);
  }
  return commands.join('; ');
}

export function deleteTableTransaction(): string {
  return `add table ${TABLE}; delete table ${TABLE}`;
}

export type Changes = {
  guardedAdd: Array<{port: number, comment: string}>;
  guardedDelete: Array<number>;
  /** add, delete, add: sets the deadline whether the element exists, has expired, or never was. */
  arm: Array<{port: number, ms: number}>;
  /** A plain add: on kernels that update an element's timeout when it differs. */
  rearm: Array<{port: number, ms: number}>;
  /** An element without a timeout: open until told otherwise. */
  open: Array<number>;
  /** add, delete: gone whether it existed or not. */
  close: Array<number>;
};

export function emptyChanges(): Changes {
  return {guardedAdd: [], guardedDelete: [], arm: [], rearm: [], open: [], close: []};
}

export function isEmpty(changes: Changes): boolean {
  return Object.values(changes).every(list => list.length === 0);
}

/** One transaction for any number of ports of one pair of sets ('' when nothing changes). Never flushes a set. */
export function changesTransaction(changes: Changes, pair: SetPair = CLIENTS): string {
  const commands: Array<string> = [];
  const aliveElement = (port: number, ms?: number) => element(port, ms === undefined ? {kind: 'open'} : {kind: 'armed', ms});
  const first = [...changes.arm.map(a => aliveElement(a.port, a.ms)), ...changes.open.map(p => aliveElement(p)), ...changes.close.map(p => aliveElement(p))];
  const removed = [...changes.arm.map(a => String(a.port)), ...changes.open.map(String), ...changes.close.map(String)];
  const last = [...changes.arm.map(a => aliveElement(a.port, a.ms)), ...changes.rearm.map(a => aliveElement(a.port, a.ms)), ...changes.open.map(p => aliveElement(p))];
  if (changes.guardedDelete.length > 0)
    commands.push(`delete element ${TABLE} ${pair.guard} { ${join(changes.guardedDelete.map(String))} }`);
  if (changes.guardedAdd.length > 0)
    commands.push(`add element ${TABLE} ${pair.guard} { ${join(changes.guardedAdd.map(g => (g.comment === '' ? String(g.port) : `${g.port} comment ${quote(g.comment)}`)))} }`);
  if (first.length > 0)
    commands.push(`add element ${TABLE} ${pair.live} { ${join(first)} }`);
  if (removed.length > 0)
    commands.push(`delete element ${TABLE} ${pair.live} { ${join(removed)} }`);
  if (last.length > 0)
    commands.push(`add element ${TABLE} ${pair.live} { ${join(last)} }`);
  return commands.join('; ');
}

/**
 * Gives alive elements no timeout, atomically and only if every one of them
 * is still alive when the kernel commits: the delete fails (ENOENT) for an
 * element that has run out, and with it the whole transaction.
 */
export function releaseTransaction(ports: ReadonlyArray<number>, pair: SetPair = CLIENTS): string {
  const list = join(ports.map(String));
  return `delete element ${TABLE} ${pair.live} { ${list} }; add element ${TABLE} ${pair.live} { ${list} }`;
}

export const LIST_TABLE = `list table ${TABLE}`;

/** Element deadlines and comments as `nft list table` prints them. */
export type ListedElement = {port: number, timeoutMs: number | null, expiresMs: number | null, comment: string | null};

export type ListedTable = {
  guarded: Map<number, ListedElement>;
  alive: Map<number, ListedElement>;
  isolated: Map<number, ListedElement>;
  reachable: Map<number, ListedElement>;
  /** Every chain holds exactly its rules (whitespace aside). */
  ruleInPlace: boolean;
  /** Sets or chains other than ours, or our sets with other definitions. */
  unexpected: Array<string>;
};

const UNIT_MS: Record<string, number> = {d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000, ms: 1};

/** `1h2m3s45ms` -> milliseconds; null when it is not an nft duration. */
export function parseDuration(text: string): number | null {
  const re = /(\d+)(ms|d|h|m|s)/y;
  let total = 0;
  let at = 0;
  while (at < text.length) {
    re.lastIndex = at;
    const match = re.exec(text);
    if (match === null)
      return null;
    total += Number(match[1]) * UNIT_MS[match[2]!]!;
    at = re.lastIndex;
  }
  return at === 0 ? null : total;
}

function parseElements(body: string): Map<number, ListedElement> {
  const out = new Map<number, ListedElement>();
  // Elements are comma-separated; a comment may itself hold commas, so split outside quotes.
  const items: Array<string> = [];
  let current = '';
  let quoted = false;
  for (const ch of body) {
    if (ch === '"')
      quoted = !quoted;
    if (ch === ',' && !quoted) {
      items.push(current);
      current = '';
    } else {
      current += ch;
    }
  }
  items.push(current);
  for (const raw of items) {
    const item = raw.trim();
    const match = /^(\d+)(?:\s+timeout\s+(\S+))?(?:\s+expires\s+(\S+))?(?:\s+comment\s+"([^"]*)")?$/.exec(item);
    if (match === null)
      continue;
    const port = Number(match[1]);
    out.set(port, {
      port,
      timeoutMs: match[2] === undefined ? null : parseDuration(match[2]),
      expiresMs: match[3] === undefined ? null : parseDuration(match[3]),
      comment: match[4] ?? null,
    });
  }
  return out;
}

/** Splits `list table` output into its top-level blocks: `set NAME {...}`, `chain NAME {...}`. */
function blocks(text: string): Array<{kind: string, name: string, body: string}> {
  const out: Array<{kind: string, name: string, body: string}> = [];
  const re = /^\t(set|chain|map|flowtable|counter|quota|ct helper|limit|secmark|synproxy)\s+(\S+)\s+\{\n([\s\S]*?)\n\t\}$/gm;
  for (const match of text.matchAll(re))
    out.push({kind: match[1]!, name: match[2]!, body: match[3]!});
  return out;
}

const squash = (text: string) => text.replace(/\s+/g, ' ').trim();

/** Reads `nft list table inet ebsmon`; null when the text is not a listing of it. */
export function parseTable(text: string): ListedTable | null {
  if (!/^table inet ebsmon \{$/m.test(text))
    return null;
  const table: ListedTable = {guarded: new Map(), alive: new Map(), isolated: new Map(), reachable: new Map(), ruleInPlace: false, unexpected: []};
  const setsOk = new Set<string>();
  const chainsOk = new Set<string>();
  const heads = new Map<string, string>(PAIRS.flatMap(pair => [[pair.guard, 'type inet_service'], [pair.live, 'type inet_service flags timeout']]));
  for (const block of blocks(text)) {
    const elements = /elements = \{([\s\S]*?)\}\s*$/.exec(block.body);
    const head = squash(block.body.replace(/elements = \{[\s\S]*?\}\s*$/, ''));
    if (block.kind === 'set' && heads.get(block.name) === head) {
      setsOk.add(block.name);
      table[block.name as SetName] = elements === null ? new Map() : parseElements(elements[1]!);
    } else if (block.kind === 'chain' && CHAINS.some(c => c.name === block.name)) {
      const chain = CHAINS.find(c => c.name === block.name)!;
      const lines = block.body.split('\n').map(squash).filter(Boolean);
      if (lines.length === chain.rules.length + 1 && lines[0] === `type filter hook ${chain.hook} priority filter; policy accept;` && chain.rules.every((rule, i) => lines[i + 1] === rule))
        chainsOk.add(chain.name);
    } else {
      table.unexpected.push(`${block.kind} ${block.name}`);
    }
  }
  table.ruleInPlace = chainsOk.size === CHAINS.length;
  for (const name of heads.keys())
    if (!setsOk.has(name))
      table.unexpected.push(`set ${name} (missing or changed)`);
  return table;
}

/** True when an error from nft says the table (or something in it) does not exist. */
export function isMissing(output: string): boolean {
  return /No such file or directory/.test(output);
}

/** The deletion of our table, as `nft monitor tables` prints it. */
export function isTableDeletion(line: string): boolean {
  return line.trim() === `delete table ${TABLE}`;
}

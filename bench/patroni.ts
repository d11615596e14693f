// A Patroni cluster whose primary's disk hangs, then resumes: the control
// cases (no fencing, and the hand-made nftables fence that ebsmon automates:
// inbound reset, outbound to etcd cut, replies held; lifted in two stages by
// patroni-rejoin.sh) beside ebsmon itself on every node (its own fence,
// lifted in two stages by contrib/patroni/ebsmon-rejoin-patroni). A fresh
// cluster per run; a table per Patroni version.
import {spawn, spawnSync} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import {API_PORT, DCS, ETCD_PORT, PG_PORT, PatroniCluster, keyHistory, patroniVersion} from '../test/helpers/patroni';
import type {HangOptions, NodeEbsmon, NodeName, PatroniCommand} from '../test/helpers/patroni';
import {HELPER} from '../test/helpers/proc';
import {inNs, waitFor} from '../test/helpers/rig';

import {line, results} from './stats';

/**
 * none: no fencing. inbound: remote connections to 5432 and 8008 reset (what a
 * port fence does alone), lifted at the resume. staged: the operator's rules
 * (also: outbound to etcd cut, replies from 5432 held), lifted in two stages.
 * ebsmon: ebsmon's monitor and reporter on every node (see startEbsmon), its
 * Patroni rejoin program deciding both stages.
 */
type Fence = 'none' | 'inbound' | 'staged' | 'ebsmon';
type Case = {key: string, label: string, hang: HangOptions, fence: Fence};

export const CASES: ReadonlyArray<Case> = [
  {key: 'a', label: 'no fencing, page cache warm', hang: {dropCache: false}, fence: 'none'},
  {key: 'b', label: 'no fencing, page cache dropped', hang: {dropCache: true}, fence: 'none'},
  {key: 'c', label: 'no fencing, Patroni\'s loop stalled', hang: {dropCache: false, stallPatroni: true}, fence: 'none'},
  {key: 'd', label: 'hand-made nft fence, cache warm', hang: {dropCache: false}, fence: 'staged'},
  {key: 'e', label: 'inbound-only fence, cache dropped', hang: {dropCache: true}, fence: 'inbound'},
  {key: 'f', label: 'hand-made nft fence, cache dropped', hang: {dropCache: true}, fence: 'staged'},
  {key: 'g', label: 'ebsmon, page cache warm', hang: {dropCache: false}, fence: 'ebsmon'},
  {key: 'h', label: 'ebsmon, page cache dropped', hang: {dropCache: true}, fence: 'ebsmon'},
  {key: 'i', label: 'ebsmon, Patroni\'s loop stalled', hang: {dropCache: false, stallPatroni: true}, fence: 'ebsmon'},
];

/** When the hand-made fence goes in, after the hang began (as the operator did it). */
const FENCE_AFTER_MS = 5_000;

export type Run = {
  version: string;
  case: string;
  hangSeconds: number;
  failover: boolean;
  /** From the hang to the first commit acknowledged by the other node; null without one. */
  firstNewCommitMs: number | null;
  /** The old primary held the leader key again after the other node had held it. */
  reclaimed: boolean;
  /** Who held the leader key from the hang on (null: nobody), and since when (ms after the hang; the first entry: at the hang). */
  key: Array<{holder: string | null, ms: number}>;
  acked: number;
  lost: number;
  /** Commits the old primary acknowledged while its disk hung, and after the resume while the other node had taken over. */
  oldAcksDuringHang: number;
  oldAcksSplit: number;
  /** From the resume to one leader with a streaming replica. */
  healthyAfterResumeMs: number | null;
  /** ebsmon: from the hang to the fence (the monitor's record of when it began). */
  fencedMs?: number | null;
  /** The fenced cases: from the resume to each stage's lift. */
  etcdLiftedMs?: number | null;
  clientsLiftedMs?: number | null;
  finalPrimary: string;
  /** Patroni's log of the old primary said it demoted itself. */
  demoted: boolean;
};

/**
 * The operator's rules, in the old primary's namespace. Two tables so each
 * stage lifts by deleting one: a packet must pass every table's chains.
 * Loopback is spared (Patroni talks to its own PostgreSQL and the rejoin
 * check asks both locally).
 */
const FENCE_ETCD = `table inet fence_etcd {
  chain output {
    type filter hook output priority 0; policy accept;
    oifname != "lo" tcp dport ${ETCD_PORT} reject with tcp reset
  }
}
`;
const FENCE_INBOUND = `
  chain input {
    type filter hook input priority 0; policy accept;
    iifname != "lo" tcp dport { ${PG_PORT}, ${API_PORT} } reject with tcp reset
  }`;
const FENCE_CLIENTS = `table inet fence_clients {${FENCE_INBOUND}
  chain output {
    type filter hook output priority 0; policy accept;
    oifname != "lo" tcp sport ${PG_PORT} tcp flags rst accept
    oifname != "lo" tcp sport ${PG_PORT} drop
  }
}
`;

const nft = (ns: string, input: string) => {
  const r = spawnSync('ip', inNs(ns, ['nft', '-f', '-']).slice(1), {input, encoding: 'utf8'});
  if (r.status !== 0)
    throw new Error(`nft failed: ${r.stderr}`);
};

/** patroni-rejoin.sh in the node's namespace: its exit code (0, 10 or 1) and what it saw. */
function rejoinCheck(cluster: PatroniCluster, name: NodeName): Promise<{code: number, said: string}> {
  const node = cluster.node(name);
  const argv = inNs(node.ns, ['bash', HELPER('patroni-rejoin.sh'), `http://${node.ip}:${node.apiPort}`, node.runDir, String(node.pgPort)]);
  return new Promise(resolve => {
    const child = spawn(argv[0]!, argv.slice(1), {stdio: ['ignore', 'pipe', 'ignore']});
    let said = '';
    child.stdout.on('data', (chunk: Buffer) => {
      said += chunk.toString('utf8');
    });
    child.on('exit', code => resolve({code: code ?? 1, said: said.trim()}));
  });
}

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

/**
 * The fenced case's lifting, what ebsmon's rejoin program will drive: the
 * etcd cut goes when the node says it demoted itself (exit 10, or 0), the
 * client fence when it streams as a replica (exit 0). Returns each lift's time.
 */
async function liftInStages(cluster: PatroniCluster, name: NodeName, until: number): Promise<{etcd: number | null, clients: number | null, said: Array<string>}> {
  const ns = cluster.node(name).ns;
  let etcd: number | null = null;
  const said: Array<string> = [];
  let last = '';
  while (Date.now() < until) {
    const {code, said: text} = await rejoinCheck(cluster, name);
    if (`${code} ${text}` !== last) {
      last = `${code} ${text}`;
      said.push(`${new Date().toISOString()} ${last}`);
    }
    if ((code === 10 || code === 0) && etcd === null) {
      nft(ns, 'delete table inet fence_etcd\n');
      etcd = Date.now();
    }
    if (code === 0) {
      nft(ns, 'delete table inet fence_clients\n');
      return {etcd, clients: Date.now(), said};
    }
    await sleep(500);
  }
  return {etcd, clients: null, said};
}

type Lifts = {etcd: number | null, clients: number | null, said: Array<string>};

/**
 * ebsmon's stages on the old primary, as its monitor records them: when the
 * fence began, when the voice came back (stage voice), when the clients did
 * (healthy again). Polls until the clients are back or `until`.
 */
async function watchEbsmon(guard: NodeEbsmon, hangAt: number, until: () => number): Promise<Lifts & {fenced: number | null}> {
  let fenced: number | null = null;
  let etcd: number | null = null;
  const said: Array<string> = [];
  while (Date.now() < until()) {
    const r = guard.record();
    if (r?.state === 'fenced') {
      fenced ??= r.fencedSince;
      if (r.rejoin?.stage === 'voice')
        etcd ??= Date.now();
      const words = `${r.rejoin?.stage ?? ''} ${r.rejoin?.reason ?? ''}`;
      if (said.at(-1)?.endsWith(words) !== true)
        said.push(`${new Date().toISOString()} ${words}`);
    } else if (r?.state === 'healthy' && fenced !== null && Date.now() > hangAt) {
      const clients = Date.now();
      return {fenced, etcd: etcd ?? clients, clients, said};
    }
    await sleep(200);
  }
  return {fenced, etcd, clients: null, said};
}

export async function patroniRun(dir: string, patroni: PatroniCommand, version: string, c: Case, hangSeconds: number, route: 'patroni' | 'libpq'): Promise<Run> {
  const cluster = await PatroniCluster.start(dir, {patroni});
  try {
    const guards = new Map<NodeName, NodeEbsmon>();
    if (c.fence === 'ebsmon') {
      for (const n of cluster.nodes)
        guards.set(n.name, await cluster.startEbsmon(n.name));
    }
    const writer = cluster.startWriter({route});
    await waitFor('the writer writing', () => writer.acks().length >= 100, 60_000, 100);
    const old = cluster.healthy() ?? 'pg1';
    const other = cluster.other(old).name;
    const hangAt = cluster.hang(old, c.hang);
    let lifting: Promise<Lifts & {fenced?: number | null}> | undefined;
    let resumedAt = 0;
    if (c.fence === 'ebsmon')
      lifting = watchEbsmon(guards.get(old)!, hangAt, () => (resumedAt === 0 ? Infinity : resumedAt + 300_000));
    try {
      if (c.fence === 'inbound' || c.fence === 'staged') {
        await sleep(FENCE_AFTER_MS);
        if (c.fence === 'staged') {
          nft(cluster.node(old).ns, FENCE_ETCD + FENCE_CLIENTS);
          lifting = liftInStages(cluster, old, hangAt + hangSeconds * 1000 + 300_000);
        } else {
          nft(cluster.node(old).ns, `table inet fence_clients {${FENCE_INBOUND}\n}\n`);
        }
      }
      // The hang's length is the scenario itself, not a wait for a condition.
      await sleep(Math.max(0, hangAt + hangSeconds * 1000 - Date.now()));
    } finally {
      cluster.resume(old);
      resumedAt = Date.now();
    }
    if (c.fence === 'inbound')
      nft(cluster.node(old).ns, 'delete table inet fence_clients\n');
    const lifts = await lifting;
    let healthyAt: number | null = null;
    try {
      await cluster.waitHealthy(240_000);
      healthyAt = Date.now();
      // Some commits on the healthy cluster, so a stuck application shows.
      const since = Date.now();
      await waitFor('commits on the healthy cluster', () => writer.acks(since).length >= 50, 60_000, 100);
    } catch (error) {
      process.stderr.write(`patroni ${version} case ${c.key}: ${(error as Error).message}\n${cluster.logTail()}\n`);
    }
    await writer.proc.stop();
    const verdict = cluster.verify(writer, {hangAt, oldPrimary: old});
    const key = keyHistory(cluster.observations(), hangAt);
    const tookOver = key.findIndex(k => k.holder === other);
    const firstNew = writer.acks(hangAt).find(e => e.node === other);
    const run: Run = {
      version,
      case: c.key,
      hangSeconds,
      failover: tookOver >= 0,
      firstNewCommitMs: firstNew === undefined ? null : firstNew.t - hangAt,
      reclaimed: tookOver >= 0 && key.slice(tookOver).some(k => k.holder === old),
      key: key.map(k => ({holder: k.holder, ms: k.t - hangAt})),
      acked: verdict.acked,
      lost: verdict.lost.length,
      oldAcksDuringHang: writer.acks(hangAt).filter(e => e.node === old && e.t < resumedAt).length,
      oldAcksSplit: tookOver < 0 ? 0 : writer.acks(Math.max(resumedAt, key[tookOver]!.t)).filter(e => e.node === old).length,
      healthyAfterResumeMs: healthyAt === null ? null : healthyAt - resumedAt,
      ...(c.fence === 'ebsmon' ? {fencedMs: lifts?.fenced == null ? null : lifts.fenced - hangAt} : {}),
      ...(c.fence === 'staged' || c.fence === 'ebsmon' ? {etcdLiftedMs: lifts?.etcd == null ? null : lifts.etcd - resumedAt, clientsLiftedMs: lifts?.clients == null ? null : lifts.clients - resumedAt} : {}),
      finalPrimary: verdict.finalPrimary,
      demoted: /demoting self because DCS is not accessible/.test(cluster.patroniLog(old)),
    };
    if (process.env.BENCH_PATRONI_KEEP_LOGS !== undefined) {
      const keep = path.join(process.env.BENCH_PATRONI_KEEP_LOGS, `${version}-${c.key}-${hangAt}`);
      fs.mkdirSync(keep, {recursive: true});
      fs.writeFileSync(path.join(keep, 'run.json'), JSON.stringify({run, lifts}, null, 2));
      for (const n of cluster.nodes)
        fs.cpSync(n.logDir, path.join(keep, n.name), {recursive: true});
      for (const f of fs.readdirSync(cluster.dir).filter(f => f.endsWith('.ndjson') || f.endsWith('.log')))
        fs.copyFileSync(path.join(cluster.dir, f), path.join(keep, f));
    }
    return run;
  } finally {
    await cluster.stop();
  }
}

const APT_DIR = '/var/cache/ebsmon-bench/apt';
const UNPACKED = '/var/cache/ebsmon-bench/patroni-unstable';

/**
 * Debian unstable's Patroni, downloaded once with an APT configuration of
 * our own (the system's sources and lists untouched) and unpacked (never
 * installed): its PYTHONPATH. Run by /usr/bin/python3 with Debian 12's modules.
 */
export function unstablePatroni(): PatroniCommand {
  const pythonPath = (version: string) => path.join(UNPACKED, version, 'usr', 'lib', 'python3', 'dist-packages');
  const cached = fs.existsSync(UNPACKED) ? fs.readdirSync(UNPACKED).filter(v => fs.existsSync(pythonPath(v))).sort() : [];
  if (cached.length > 0)
    return {pythonPath: pythonPath(cached.at(-1)!)};
  fs.mkdirSync(path.join(APT_DIR, 'lists', 'partial'), {recursive: true});
  fs.mkdirSync(path.join(APT_DIR, 'archives', 'partial'), {recursive: true});
  const sources = path.join(APT_DIR, 'sources.list');
  fs.writeFileSync(sources, 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian unstable main\n');
  const apt = ['-q', '-o', `Dir::Etc::SourceList=${sources}`, '-o', 'Dir::Etc::SourceParts=/nonexistent', '-o', `Dir::State::Lists=${path.join(APT_DIR, 'lists')}`, '-o', `Dir::Cache=${APT_DIR}`];
  const run = (argv: Array<string>, cwd = APT_DIR) => {
    const r = spawnSync(argv[0]!, argv.slice(1), {cwd, encoding: 'utf8', timeout: 300_000});
    if (r.status !== 0)
      throw new Error(`${argv.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  run(['apt-get', ...apt, 'update']);
  const download = path.join(APT_DIR, 'download');
  fs.rmSync(download, {recursive: true, force: true});
  fs.mkdirSync(download);
  run(['apt-get', ...apt, 'download', 'patroni/unstable'], download);
  const deb = fs.readdirSync(download).find(f => f.endsWith('.deb'))!;
  const version = /^patroni_([^_]+)_/.exec(deb)![1]!;
  const target = path.join(UNPACKED, version);
  fs.mkdirSync(target, {recursive: true});
  run(['dpkg-deb', '-x', path.join(download, deb), target]);
  // Its Depends beyond Debian 12's modules are optional here: python3-ydiff (patronictl falls back to
  // cdiff), python3-systemd (only under a NOTIFY_SOCKET), python3-consul (the consul DCS). What the rig runs must import.
  const check = spawnSync('/usr/bin/python3', ['-c', 'import patroni.__main__, patroni.daemon, patroni.postgresql, patroni.ha, patroni.api, patroni.dcs.etcd3'], {encoding: 'utf8', env: {PYTHONPATH: pythonPath(version)}});
  if (check.status !== 0) {
    fs.rmSync(target, {recursive: true, force: true});
    throw new Error(`Patroni ${version} does not run on this system's Python modules: ${check.stderr}`);
  }
  return {pythonPath: pythonPath(version)};
}

const cell = (v: number | null | undefined, unit = ' s') => (v === null || v === undefined ? '-' : `${(v / 1000).toFixed(1)}${unit}`);

export async function patroniControls(dir: string): Promise<void> {
  const hangSeconds = Number(process.env.BENCH_PATRONI_HANG ?? 60);
  const runs = Number(process.env.BENCH_PATRONI_RUNS ?? 1);
  const only = (process.env.BENCH_PATRONI_CASES ?? 'abcdefghi').split('');
  const versions = (process.env.BENCH_PATRONI_VERSIONS ?? 'system,unstable').split(',');
  // How the application finds the primary: Patroni's REST API (as HAProxy does) or libpq's read-write check.
  const route = process.env.BENCH_PATRONI_ROUTE === 'libpq' ? 'libpq' : 'patroni';
  const all: Array<Run> = [];
  for (const which of versions) {
    const command = which === 'system' ? {} : unstablePatroni();
    const version = patroniVersion(command);
    line(`Patroni ${version}: hang ${hangSeconds} s, then resume`, `ttl ${DCS.ttl}, loop_wait ${DCS.loop_wait}, retry_timeout ${DCS.retry_timeout}, use_pg_rewind; the application routes by ${route === 'patroni' ? 'GET /primary' : 'libpq read-write'}; ${runs} run(s) a case`);
    process.stdout.write(`  ${'case'.padEnd(44)} failover  first commit on new  reclaimed  lost  old acks: hang, split  healthy after resume\n`);
    for (const c of CASES.filter(k => only.includes(k.key))) {
      for (let i = 0; i < runs; i++) {
        const r = await patroniRun(path.join(dir, `patroni-${version}-${c.key}-${i}`), command, version, c, hangSeconds, route);
        all.push(r);
        const fenced = c.fence === 'ebsmon' ? `; fenced ${cell(r.fencedMs ?? null)} after the hang` : '';
        const lifts = c.fence === 'staged' || c.fence === 'ebsmon' ? `${fenced}; etcd cut lifted ${cell(r.etcdLiftedMs)}, clients ${cell(r.clientsLiftedMs)} after the resume` : '';
        const holders = r.key.map((k, i) => `${k.holder ?? 'none'}${i === 0 ? '' : ` +${(k.ms / 1000).toFixed(1)}`}`).join(' -> ');
        process.stdout.write(`  ${`(${c.key}) ${c.label}`.padEnd(44)} ${(r.failover ? 'yes' : 'no').padEnd(9)} ${cell(r.firstNewCommitMs).padEnd(20)} ${(r.reclaimed ? 'yes' : 'no').padEnd(10)} ${String(r.lost).padEnd(5)} ${`${r.oldAcksDuringHang}, ${r.oldAcksSplit}`.padEnd(21)} ${cell(r.healthyAfterResumeMs)}\n`);
        process.stdout.write(`      leader key: ${holders}${lifts}\n`);
      }
    }
  }
  results.patroni = {hangSeconds, route, fenceAfterMs: FENCE_AFTER_MS, runs: all};
}

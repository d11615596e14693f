import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import {HungDisk} from './hang';
import {HELPER, Proc, ebsmon, reporterIn} from './proc';
import {ROOT, Teardown, inNs, sh, waitFor} from './rig';
import {buildAndBoot, createSwitchedNet, letServiceUsersIn} from './switch';

/**
 * A three-node MariaDB Galera cluster in network namespaces, started by the
 * test as processes (never as system services): a switch (a bridge in a
 * namespace of its own) joins the namespaces `g1`, `g2`, `g3` (one mariadbd
 * each, its datadir on a disk that can hang for reads and writes, see
 * HungDisk) and `client` (the applications). Error logs, sockets and pid
 * files stay off the hung disks, one directory per node: the namespaces
 * share the filesystem.
 *
 * g1 bootstraps the cluster (--wsrep-new-cluster); g2 and g3 join it by
 * rsync SST. The provider's options are Galera's defaults (evs.suspect_timeout
 * 5 s, evs.inactive_timeout 15 s, gcs.fc_limit 16) but for a smaller gcache,
 * which, as by default, is the file galera.cache in the datadir.
 */

export const MYSQL_PORT = 3306;
/** Galera's group communication. */
export const GCOMM_PORT = 4567;
/** Incremental state transfer (a joiner listens). */
export const IST_PORT = 4568;
/** State snapshot transfer (the rsync daemon of a joiner). */
export const SST_PORT = 4444;
export const APP_USER = 'app';
export const APP_PASSWORD = 'rig-secret';
const PYTHON = '/usr/bin/python3';
const PROVIDER = '/usr/lib/galera/libgalera_smm.so';

/**
 * Small enough for a loop volume and a 2-core machine. A temporary directory per node, off the
 * hung disk: in the shared /tmp, mariadb-install-db once lost its temporary table while other tests ran.
 */
const serverOptions = (node: GaleraNode) => ['--innodb-log-file-size=16M', '--innodb-buffer-pool-size=32M', `--tmpdir=${path.join(node.runDir, 'tmp')}`];

export type GaleraNodeName = 'g1' | 'g2' | 'g3';

export type GaleraNode = {
  name: GaleraNodeName;
  ns: string;
  ip: string;
  /** The volume's mount root (a probe writes here); the datadir is a subdirectory of it. */
  mount: string;
  datadir: string;
  /** Off the volume: the socket, the pid file and the temporary directory (tmp). */
  runDir: string;
  socket: string;
  /** Off the volume: the error log. */
  errorLog: string;
  disk: HungDisk;
};

export type GaleraEvent = {ev: 'connected' | 'ack' | 'error', t: number, node: GaleraNodeName, id?: number, op?: 'connect' | 'query', kind?: 'timeout' | 'reset' | 'refused' | 'other', code?: number | null, msg?: string};

/** The application (galerawriter.py) in the client namespace, writing to one node. */
export class GaleraWriter {
  constructor(readonly proc: Proc, readonly file: string, readonly node: GaleraNodeName) {
  }

  events(): Array<GaleraEvent> {
    if (!fs.existsSync(this.file))
      return [];
    return fs.readFileSync(this.file, 'utf8').split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l) as GaleraEvent);
  }

  acks(since = 0): Array<GaleraEvent> {
    return this.events().filter(e => e.ev === 'ack' && e.t >= since);
  }

  /** The first error at or after `since`. */
  firstError(since: number): GaleraEvent | undefined {
    return this.events().find(e => e.ev === 'error' && e.t >= since);
  }
}

/**
 * The longest pause between two commits of these writers taken together, from
 * `since` to the last commit (or `until`, when given and later): when the last
 * commit before it was acknowledged, and when the first one after it was.
 */
export function longestStall(writers: ReadonlyArray<GaleraWriter>, since: number, until?: number): {from: number, to: number} {
  const times = [since, ...writers.flatMap(w => w.acks(since).map(e => e.t)).sort((a, b) => a - b)];
  if (until !== undefined && until > times.at(-1)!)
    times.push(until);
  let best = {from: since, to: since};
  for (let i = 1; i < times.length; i++) {
    if (times[i]! - times[i - 1]! > best.to - best.from)
      best = {from: times[i - 1]!, to: times[i]!};
  }
  return best;
}

export type Verdict = {
  acked: number;
  /** Acknowledged ids missing from the table of the node it is read on. */
  lost: Array<number>;
};

/** The ports ebsmon fences on a Galera node, and the one its node may not reach while fenced. */
export const FENCED_PORTS = [MYSQL_PORT, GCOMM_PORT, IST_PORT, SST_PORT];
export const ISOLATED_PORT = GCOMM_PORT;
export const CHECK = path.join(ROOT, 'contrib', 'galera', 'ebsmon-check-galera');

export type EbsmonOnNode = {monitor: Proc, reporter: Proc, stateDir: string, state: () => string | undefined, failure: () => string | undefined};

/**
 * ebsmon on one node, as contrib/galera deploys it: its monitor and its
 * reporter (named galera, proving the datadir, with ebsmon-check-galera) in
 * the node's namespace, their FIFO and state in `stateDir`. Returns once the
 * reporter is healthy; the caller stops both.
 */
export async function startEbsmon(node: GaleraNode, stateDir: string, {timeout = 2, stalled = 1}: {timeout?: number, stalled?: number} = {}): Promise<EbsmonOnNode> {
  fs.mkdirSync(stateDir, {recursive: true});
  const fifo = path.join(stateDir, 'ebsmon.fifo');
  const monitor = ebsmon(['monitor', `--fifo=${fifo}`, `--state-dir=${stateDir}`, `--timeout=${timeout}`, '--recover=2'], {ns: node.ns});
  const check = `${CHECK} --socket=${node.socket} --state=${path.join(stateDir, 'galera-check.json')} --timeout=0.8 --stalled=${stalled}`;
  const reporter = ebsmon(['report', `--monitor=${node.datadir}`, `--ports=${FENCED_PORTS.join(',')}`, `--isolate=${ISOLATED_PORT}`, '--rejoin=auto',
    '--name=galera', `--fifo=${fifo}`, `--state-dir=${stateDir}`, '--interval=0.5', '--probe-timeout=1', `--check=${check}`], {ns: node.ns});
  const on: EbsmonOnNode = {monitor, reporter, stateDir, state: () => reporterIn(stateDir, 'galera')?.state, failure: () => reporterIn(stateDir, 'galera')?.failure?.reason};
  try {
    await waitFor('the monitor', () => monitor.logs().some(l => l.message === 'monitor running'));
    await waitFor('the reporter healthy', () => on.state() === 'healthy');
  } catch (error) {
    await reporter.stop();
    await monitor.stop();
    throw error;
  }
  return on;
}

let clusterCounter = 0;

export class GaleraCluster {
  private readonly procs: Array<Proc> = [];
  private readonly servers = new Map<GaleraNodeName, Proc>();
  private writers = 0;

  private constructor(
    readonly dir: string,
    readonly teardown: Teardown,
    readonly switchNs: string,
    readonly client: {ns: string, ip: string},
    readonly nodes: ReadonlyArray<GaleraNode>,
  ) {
  }

  /**
   * Makes the namespaces and the disks, bootstraps g1, joins g2 then g3, and
   * returns once all three say Synced in a Primary component of 3 and the
   * application's table exists. The cluster has a Teardown of its own (with
   * its crash watchdog); stop() ends everything, in the one safe order.
   */
  static async start(dir: string, {diskMb = 512}: {diskMb?: number} = {}): Promise<GaleraCluster> {
    clusterCounter += 1;
    const tag = `${process.pid % 100000}${clusterCounter}`;
    fs.mkdirSync(dir, {recursive: true});
    // mariadbd runs as mysql: as root, the rsync SST daemon it starts would write as nobody.
    letServiceUsersIn(dir);
    return buildAndBoot(dir, teardown => GaleraCluster.build(dir, teardown, tag, diskMb), cluster => cluster.boot());
  }

  private static async build(dir: string, teardown: Teardown, tag: string, diskMb: number): Promise<GaleraCluster> {
    const {switchNs, hosts} = createSwitchedNet(teardown, {prefix: 'gal', letter: 'g', tag,
      hosts: [{role: 'g1', ip: '10.218.0.11'}, {role: 'g2', ip: '10.218.0.12'}, {role: 'g3', ip: '10.218.0.13'}, {role: 'client', ip: '10.218.0.20'}]});
    const clientNet = hosts[3]!;
    const nodes: Array<GaleraNode> = [];
    for (const m of hosts.slice(0, 3)) {
      const nodeDir = path.join(dir, m.role);
      fs.mkdirSync(nodeDir, {mode: 0o755});
      const disk = await HungDisk.create(nodeDir, teardown, diskMb);
      const runDir = path.join(nodeDir, 'run');
      fs.mkdirSync(runDir);
      sh(['chown', 'mysql:mysql', runDir]);
      fs.mkdirSync(path.join(runDir, 'tmp'));
      sh(['chown', 'mysql:mysql', path.join(runDir, 'tmp')]);
      const node: GaleraNode = {name: m.role as GaleraNodeName, ns: m.ns, ip: m.ip, mount: disk.mountpoint, datadir: path.join(disk.mountpoint, 'mysql'),
        runDir, socket: path.join(runDir, 'mysqld.sock'), errorLog: path.join(runDir, 'mysqld.err'), disk};
      // If this process dies, the watchdog continues the disk (registered last by HungDisk, so first) and ends mariadbd from its pid file.
      const pidFile = path.join(runDir, 'mysqld.pid');
      teardown.add(['bash', '-c', `kill -CONT ${disk.daemonPid}; pid=$(cat '${pidFile}' 2>/dev/null) || exit 0; kill -TERM "$pid" || exit 0;`
        + ` for i in $(seq 300); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done; kill -KILL "$pid"`]);
      nodes.push(node);
    }
    return new GaleraCluster(dir, teardown, switchNs, {ns: clientNet.ns, ip: clientNet.ip}, nodes);
  }

  private track(proc: Proc): Proc {
    this.procs.push(proc);
    return proc;
  }

  private async boot(): Promise<void> {
    for (const node of this.nodes) {
      fs.mkdirSync(node.datadir);
      sh(['chown', 'mysql:mysql', node.datadir]);
      sh(['mariadb-install-db', '--no-defaults', `--datadir=${node.datadir}`, '--user=mysql', '--auth-root-authentication-method=socket', '--skip-test-db', ...serverOptions(node)]);
    }
    const [g1, g2, g3] = this.nodes as [GaleraNode, GaleraNode, GaleraNode];
    this.startServer(g1, {bootstrap: true});
    await this.waitSynced(g1, 1, 60_000);
    this.sql(g1, `CREATE DATABASE app; CREATE USER '${APP_USER}'@'%' IDENTIFIED BY '${APP_PASSWORD}'; GRANT ALL ON app.* TO '${APP_USER}'@'%';`
      + ' CREATE TABLE app.t (id BIGINT PRIMARY KEY, at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)) ENGINE=InnoDB');
    // One joiner at a time: g1 donates to each in turn.
    this.startServer(g2);
    await this.waitSynced(g2, 2, 120_000);
    this.startServer(g3);
    await this.waitSynced(g3, 3, 120_000);
  }

  /** Waits until the node says Synced in a Primary component of `size`; throws at once if its mariadbd exited. */
  async waitSynced(node: GaleraNode, size = 3, timeoutMs = 120_000): Promise<void> {
    await waitFor(`${node.name} Synced in a Primary component of ${size}`, () => {
      const server = this.servers.get(node.name);
      if (server !== undefined && !server.running)
        throw new Error(`mariadbd of ${node.name} exited (${server.exitCode ?? server.exitSignal})`);
      const s = this.status(node);
      return s.wsrep_local_state_comment === 'Synced' && s.wsrep_cluster_status === 'Primary' && s.wsrep_cluster_size === String(size);
    }, timeoutMs, 250);
  }

  private startServer(node: GaleraNode, {bootstrap = false} = {}): void {
    const address = `gcomm://${this.nodes.map(n => n.ip).join(',')}`;
    const argv = inNs(node.ns, ['mariadbd', '--no-defaults', `--datadir=${node.datadir}`, '--user=mysql',
      `--socket=${node.socket}`, `--pid-file=${path.join(node.runDir, 'mysqld.pid')}`, `--log-error=${node.errorLog}`,
      `--port=${MYSQL_PORT}`, `--bind-address=${node.ip}`, '--skip-name-resolve', ...serverOptions(node),
      '--binlog-format=ROW', '--innodb-autoinc-lock-mode=2', '--default-storage-engine=InnoDB',
      '--wsrep-on=ON', `--wsrep-provider=${PROVIDER}`, `--wsrep-cluster-address=${address}`, '--wsrep-cluster-name=ebsmon',
      `--wsrep-node-name=${node.name}`, `--wsrep-node-address=${node.ip}`, '--wsrep-sst-method=rsync',
      '--wsrep-provider-options=gcache.size=64M', ...(bootstrap ? ['--wsrep-new-cluster'] : [])]);
    // The SST script runs beside mariadbd and finds rsync, ss and mariadbd's helpers on PATH.
    const proc = this.track(new Proc(spawn(argv[0]!, argv.slice(1), {stdio: ['ignore', 'ignore', 'pipe'],
      env: {PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', HOME: node.runDir}})));
    this.servers.set(node.name, proc);
  }

  node(name: GaleraNodeName): GaleraNode {
    return this.nodes.find(n => n.name === name)!;
  }

  server(name: GaleraNodeName): Proc {
    return this.servers.get(name)!;
  }

  /** As root over the node's local socket, in its namespace; tab-separated rows. Throws if MariaDB does not answer in `timeoutS`. */
  sql(node: GaleraNode, query: string, timeoutS = 5): string {
    return sh(inNs(node.ns, ['timeout', '-s', 'KILL', String(timeoutS), 'mariadb', `--socket=${node.socket}`, '--batch', '--skip-column-names',
      `--connect-timeout=${timeoutS}`, '-e', query]));
  }

  /** The node's wsrep_% status variables; empty when it does not answer within 3 s. */
  status(node: GaleraNode): Record<string, string> {
    try {
      const rows = this.sql(node, `SHOW GLOBAL STATUS LIKE 'wsrep\\_%'`, 3).split('\n').filter(Boolean);
      return Object.fromEntries(rows.map(r => r.split('\t') as [string, string]));
    } catch {
      return {};
    }
  }

  /** The application on one node, writing from the client namespace; its events go to a file of its own. */
  startWriter(name: GaleraNodeName, {firstId = 1, timeout = 3, pause = 0.01}: {firstId?: number, timeout?: number, pause?: number} = {}): GaleraWriter {
    this.writers += 1;
    const file = path.join(this.dir, `writer${this.writers}-${name}.ndjson`);
    const node = this.node(name);
    const proc = this.track(new Proc(spawn('ip', inNs(this.client.ns, [PYTHON, HELPER('galerawriter.py'), '--node', `${name}=${node.ip}`,
      '--port', String(MYSQL_PORT), '--user', APP_USER, '--password', APP_PASSWORD, '--first-id', String(firstId),
      '--timeout', String(timeout), '--pause', String(pause), '--out', file]).slice(1), {stdio: ['ignore', 'ignore', 'pipe']})));
    return new GaleraWriter(proc, file, name);
  }

  /**
   * The disk stops answering (its FUSE daemon is stopped), the page cache
   * dropped unless told otherwise. Returns when the disk stopped.
   */
  hang(name: GaleraNodeName, {dropCache = true}: {dropCache?: boolean} = {}): number {
    return this.node(name).disk.hang({dropCache});
  }

  resume(name: GaleraNodeName): void {
    this.node(name).disk.resume();
  }

  /** Every acknowledged id of these writers checked against one node's table. */
  verify(writers: ReadonlyArray<GaleraWriter>, on: GaleraNodeName): Verdict {
    // Acknowledgements first: a row acknowledged after the table was read would count as lost.
    const acks = writers.flatMap(w => w.acks());
    const present = new Set(this.sql(this.node(on), 'SELECT id FROM app.t', 30).split('\n').filter(Boolean).map(Number));
    return {acked: acks.length, lost: acks.map(e => e.id!).filter(id => !present.has(id))};
  }

  errorLog(name: GaleraNodeName): string {
    const file = this.node(name).errorLog;
    return fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  }

  /** The last lines of every error log, for a failure's message. */
  logTail(lines = 15): string {
    return this.nodes.map(n => `--- ${n.name}\n${this.errorLog(n.name).split('\n').slice(-lines).join('\n')}`).join('\n');
  }

  /**
   * Disks continued first (a process waiting on a stopped disk cannot even be
   * killed), then the applications, then each mariadbd (SIGTERM, a clean
   * shutdown); the namespaces, mounts and loop devices last.
   */
  async stop(): Promise<void> {
    for (const node of this.nodes)
      this.resume(node.name);
    const servers = new Set(this.servers.values());
    await Promise.all(this.procs.filter(p => !servers.has(p)).map(p => p.stop()));
    await Promise.all([...servers].map(p => p.stop(60_000)));
    this.teardown.dispose();
    const mounts = fs.readFileSync('/proc/self/mounts', 'utf8');
    if (!mounts.includes(` ${this.dir}/`))
      fs.rmSync(this.dir, {recursive: true, force: true});
  }
}

import {spawn, spawnSync} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import type {ReporterSnapshot} from '../../src/state';
import {HungDisk} from './hang';
import {HELPER, Proc, ebsmon, ebsmonOnce, reporterIn} from './proc';
import {ROOT, Teardown, inNs, sh, waitFor} from './rig';
import {buildAndBoot, createSwitchedNet, letServiceUsersIn} from './switch';

/**
 * A Patroni + etcd + PostgreSQL 15 cluster in network namespaces, started by
 * the test as processes (never as system services): a switch (a bridge in a
 * namespace of its own) joins the namespaces `etcd` (one etcd 3.4 member),
 * `pg1` and `pg2` (Patroni and PostgreSQL each, PGDATA on a disk that can hang
 * for reads and writes, see HungDisk) and `client` (the application and an
 * observer). Logs, sockets and pid files stay off the hung disks.
 *
 * ebsmon runs inside each node's namespace (its nft table is per namespace,
 * and the rejoin program talks to that node's Patroni and PostgreSQL), with a
 * state directory and FIFO of the node's own: namespaces share the filesystem.
 */

export const SUBNET = '10.217.0.0/24';
export const PG_PORT = 5432;
export const API_PORT = 8008;
export const ETCD_PORT = 2379;
const SCOPE = 'ebsmon';
/** Patroni's leader key in etcd (its etcd3 client keeps the v2 layout: namespace/scope/leader). */
export const LEADER_KEY = `/service/${SCOPE}/leader`;
export const PASSWORD = 'rig-secret';
const PG_BIN = '/usr/lib/postgresql/15/bin';
const PYTHON = '/usr/bin/python3';

/** The settings the operator ran with (Patroni validates ttl >= loop_wait + 2 * retry_timeout). */
export const DCS = {ttl: 15, loop_wait: 5, retry_timeout: 5};

/**
 * Which Patroni runs: Debian 12's (3.0.2, from dist-packages) or another
 * version's unpacked package, found first through PYTHONPATH, still on
 * /usr/bin/python3 and Debian's own modules.
 */
export type PatroniCommand = {pythonPath?: string};

export type NodeName = 'pg1' | 'pg2';

export type PgNode = {
  name: NodeName;
  ns: string;
  ip: string;
  pgPort: number;
  apiPort: number;
  /** The volume's mount root (a probe writes here); PGDATA is a subdirectory of it. */
  mount: string;
  pgdata: string;
  /** Off the volume: PostgreSQL's socket and pid file, Patroni's config and pgpass. */
  runDir: string;
  /** Off the volume: patroni.log (its stdout and stderr) and postgresql.log. */
  logDir: string;
  disk: HungDisk;
};

/** The rejoin program for a node under Patroni (contrib/): exit 10 once it is no primary, 0 once it streams from the leader. */
export const REJOIN_PATRONI = path.join(ROOT, 'contrib', 'patroni', 'ebsmon-rejoin-patroni');

/**
 * ebsmon's settings in the rig. The monitor fences 5 s after the last
 * heartbeat (a heartbeat a second): with the disk's first failed probe that is
 * about 6 s after the hang, well inside Patroni's ttl of 15 s, so the node
 * loses its voice before its leader key can expire and another node takes it.
 */
export const MONITOR_FLAGS = ['--firewall=nftables', '--timeout=5', '--recover=2'] as const;
/** A probe slower than 1.5 s is a missed heartbeat, not yet a fence: under a third of the monitor's --timeout, as the monitor advises. */
export const REPORTER_FLAGS = ['--interval=1', '--probe-timeout=1.5'] as const;

export type EbsmonOptions = {
  /** --isolate=2379: the node may not reach etcd while fenced (default true; false is the broken case a test must catch). */
  isolate?: boolean;
  /** --rejoin: the Patroni program (default), or auto (lifted by heartbeats alone). */
  rejoin?: 'program' | 'auto';
};

/** One node's ebsmon: its monitor and its reporter, both in the node's namespace. */
export class NodeEbsmon {
  constructor(readonly node: PgNode, readonly stateDir: string, readonly monitor: Proc, readonly reporter: Proc) {
  }

  /** The reporter's record in the monitor's snapshot (named after the node). */
  record(): ReporterSnapshot | undefined {
    return reporterIn(this.stateDir, this.node.name);
  }

  /** What `ebsmon status` prints for this node (without colours: not a TTY). */
  async status(): Promise<string> {
    const {stdout, stderr} = await ebsmonOnce(['status', `--state-dir=${this.stateDir}`], {ns: this.node.ns});
    return `${stdout}${stderr}`;
  }

  /** The last lines of both processes' logs. */
  logTail(lines = 15): string {
    const tail = (text: string) => text.split('\n').slice(-lines).join('\n');
    return `--- ebsmon monitor in ${this.node.name}\n${tail(this.monitor.stderr)}\n--- ebsmon report in ${this.node.name}\n${tail(this.reporter.stderr)}`;
  }
}

export type HangOptions = {
  /** Drop the page cache too: reads of the disk hang unless a process has them mapped (default true). */
  dropCache?: boolean;
  /** SIGSTOP Patroni as well: its loop stops whether or not it touches the disk (default false). */
  stallPatroni?: boolean;
};

/** The version Patroni reports, e.g. '3.0.2'. */
export function patroniVersion(command: PatroniCommand = {}): string {
  const result = spawnSync(PYTHON, ['-m', 'patroni', '--version'], {encoding: 'utf8', env: patroniEnv(command)});
  const version = /(\d+\.\d+\.\d+)/.exec(`${result.stdout}${result.stderr}`)?.[1];
  if (version === undefined)
    throw new Error(`patroni --version said: ${result.stdout}${result.stderr}`);
  return version;
}

function patroniEnv(command: PatroniCommand, home = '/'): NodeJS.ProcessEnv {
  return {PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', HOME: home, ...(command.pythonPath === undefined ? {} : {PYTHONPATH: command.pythonPath})};
}

let clusterCounter = 0;

export type WriterOptions = {
  firstId?: number;
  /** Seconds for one connect or one statement: the application's own timeout. */
  timeout?: number;
  /** Seconds between two inserts. */
  pause?: number;
  /** How the application finds the primary (see pgwriter.py). */
  route?: 'patroni' | 'libpq';
};

export type WriterEvent = {ev: 'connected' | 'ack' | 'error', t: number, id?: number, node?: NodeName, op?: 'route' | 'connect' | 'query', kind?: string, msg?: string};
export type ObserverEvent = {src: 'etcd' | NodeName, t: number, leader?: string | null, role?: string, state?: string, timeline?: number, error?: string};

const readLines = <T>(file: string): Array<T> => {
  if (!fs.existsSync(file))
    return [];
  return fs.readFileSync(file, 'utf8').split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l) as T);
};

/** The leader key's holders from `since` on: the one at `since`, then each change (the observer's failed reads skipped). */
export function keyHistory(observations: Array<ObserverEvent>, since: number): Array<{holder: string | null, t: number}> {
  const reads = observations.filter(o => o.src === 'etcd' && o.leader !== undefined);
  const before = reads.filter(o => o.t < since).at(-1);
  const history = before === undefined ? [] : [{holder: before.leader!, t: since}];
  for (const o of reads.filter(r => r.t >= since)) {
    if (history.at(-1)?.holder !== o.leader)
      history.push({holder: o.leader!, t: o.t});
  }
  return history;
}

/** The application (pgwriter.py) in the client namespace. */
export class PgWriter {
  constructor(readonly proc: Proc, readonly file: string) {
  }

  events(): Array<WriterEvent> {
    return readLines<WriterEvent>(this.file);
  }

  acks(since = 0): Array<WriterEvent> {
    return this.events().filter(e => e.ev === 'ack' && e.t >= since);
  }
}

export type Verdict = {
  /** The leader at the end, whose table is the truth. */
  finalPrimary: string;
  acked: number;
  /** Acknowledged ids missing from the final primary's table. */
  lost: Array<number>;
  /** Acknowledged by the node that was primary when the hang began, at or after it began. */
  oldAcksAfterHang: Array<number>;
};

export class PatroniCluster {
  private readonly procs: Array<Proc> = [];
  private readonly patroni = new Map<NodeName, Proc>();
  private readonly stalled = new Set<NodeName>();
  private readonly ebsmon = new Map<NodeName, NodeEbsmon>();
  private writers = 0;

  private constructor(
    readonly dir: string,
    readonly teardown: Teardown,
    readonly switchNs: string,
    readonly client: {ns: string, ip: string},
    readonly etcd: {ns: string, ip: string, port: number},
    readonly nodes: ReadonlyArray<PgNode>,
    readonly command: PatroniCommand,
  ) {
  }

  /**
   * Makes the namespaces, the disks and etcd, bootstraps pg1 as the leader,
   * then pg2 as its replica, and returns once pg2 streams from pg1 and the
   * application's table exists. The cluster has a Teardown of its own (with
   * its crash watchdog); stop() ends everything, in the one safe order.
   */
  static async start(dir: string, {patroni = {}, diskMb = 512}: {patroni?: PatroniCommand, diskMb?: number} = {}): Promise<PatroniCluster> {
    clusterCounter += 1;
    const tag = `${process.pid % 100000}${clusterCounter}`;
    fs.mkdirSync(dir, {recursive: true});
    // Patroni and PostgreSQL run as postgres.
    letServiceUsersIn(dir);
    return buildAndBoot(dir, teardown => PatroniCluster.build(dir, teardown, tag, patroni, diskMb), cluster => cluster.boot());
  }

  /** The namespaces, the disks and etcd's tmpfs. */
  private static async build(dir: string, teardown: Teardown, tag: string, patroni: PatroniCommand, diskMb: number): Promise<PatroniCluster> {
    const {switchNs, hosts: net} = createSwitchedNet(teardown, {prefix: 'pg', letter: 'p', tag,
      hosts: ['etcd', 'pg1', 'pg2', 'client'].map((role, i) => ({role, ip: `10.217.0.${[10, 11, 12, 20][i]!}`}))});
    const [etcdNet, pg1Net, pg2Net, clientNet] = net as [typeof net[0], typeof net[0], typeof net[0], typeof net[0]];

    const nodes: Array<PgNode> = [];
    for (const m of [pg1Net, pg2Net]) {
      const nodeDir = path.join(dir, m.role);
      fs.mkdirSync(nodeDir, {mode: 0o755});
      const disk = await HungDisk.create(nodeDir, teardown, diskMb);
      const node: PgNode = {name: m.role as NodeName, ns: m.ns, ip: m.ip, pgPort: PG_PORT, apiPort: API_PORT, mount: disk.mountpoint,
        pgdata: path.join(disk.mountpoint, 'pgdata'), runDir: path.join(nodeDir, 'run'), logDir: path.join(nodeDir, 'log'), disk};
      for (const [d, mode] of [[node.pgdata, 0o700], [node.runDir, 0o755], [node.logDir, 0o755]] as const) {
        fs.mkdirSync(d, {mode});
        fs.chmodSync(d, mode);
        sh(['chown', 'postgres:postgres', d]);
      }
      // Patroni starts the postmaster detached (setsid, its parent exits), so no pid of ours holds it: if this
      // process dies, the watchdog continues the disk and ends the postmaster from its pid file, off the volume.
      const pidFile = path.join(node.runDir, 'postmaster.pid');
      teardown.add(['bash', '-c', `kill -CONT ${disk.daemonPid}; pid=$(head -n1 '${pidFile}' 2>/dev/null) || exit 0; kill -QUIT "$pid" || exit 0;`
        + ` for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done; kill -KILL "$pid"`]);
      nodes.push(node);
    }

    const etcdData = path.join(dir, 'etcd');
    fs.mkdirSync(etcdData, {mode: 0o700});
    // On tmpfs: etcd's fsyncs then wait for no other test's disk.
    sh(['mount', '-t', 'tmpfs', '-o', 'size=256m,mode=0700', 'tmpfs', etcdData]);
    teardown.add(['umount', '-l', etcdData]);

    return new PatroniCluster(dir, teardown, switchNs, {ns: clientNet.ns, ip: clientNet.ip},
      {ns: etcdNet.ns, ip: etcdNet.ip, port: ETCD_PORT}, nodes, patroni);
  }

  private track(proc: Proc): Proc {
    this.procs.push(proc);
    return proc;
  }

  private async boot(): Promise<void> {
    const {ns, ip, port} = this.etcd;
    const etcdData = path.join(this.dir, 'etcd');
    const etcdLog = fs.openSync(path.join(this.dir, 'etcd.log'), 'a');
    this.track(new Proc(spawn('ip', inNs(ns, ['etcd', '--name', 'etcd', '--data-dir', etcdData,
      '--listen-client-urls', `http://${ip}:${port}`, '--advertise-client-urls', `http://${ip}:${port}`,
      '--listen-peer-urls', 'http://127.0.0.1:2380', '--initial-advertise-peer-urls', 'http://127.0.0.1:2380',
      '--initial-cluster', 'etcd=http://127.0.0.1:2380', '--initial-cluster-state', 'new']).slice(1), {stdio: ['ignore', etcdLog, etcdLog]})));
    fs.closeSync(etcdLog);
    await waitFor('etcd healthy', () => this.curl(this.client.ns, `http://${ip}:${port}/health`).body.includes('"true"'), 30_000, 200);

    const observerFile = path.join(this.dir, 'observer.ndjson');
    this.track(new Proc(spawn('ip', inNs(this.client.ns, [PYTHON, HELPER('pgobserver.py'), '--etcd', `${ip}:${port}`, '--key', LEADER_KEY,
      ...this.nodes.flatMap(n => ['--node', `${n.name}=${n.ip}:${n.apiPort}`]), '--out', observerFile]).slice(1), {stdio: 'ignore'})));

    const [pg1, pg2] = this.nodes as [PgNode, PgNode];
    this.startPatroni(pg1);
    await waitFor('pg1 bootstrapped as the leader', () => this.running() && this.leader() === 'pg1' && this.api(pg1, '/primary').code === 200, 120_000, 250);
    this.startPatroni(pg2);
    await waitFor('pg2 streaming from pg1', () => this.running() && this.streamingTo(pg1).includes('pg2'), 120_000, 250);
    this.sql(pg1, 'CREATE TABLE t (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())');
  }

  /** Throws if a Patroni this cluster started has exited: a wait for it would only time out. */
  private running(): true {
    for (const [name, proc] of this.patroni) {
      if (!proc.running)
        throw new Error(`Patroni of ${name} exited (${proc.exitCode ?? proc.exitSignal})`);
    }
    return true;
  }

  /** Patroni's configuration (JSON is YAML); only the node's addresses and directories differ between nodes. */
  private config(node: PgNode): Record<string, unknown> {
    return {
      scope: SCOPE,
      name: node.name,
      log: {level: 'INFO'},
      restapi: {listen: `${node.ip}:${node.apiPort}`, connect_address: `${node.ip}:${node.apiPort}`},
      // etcd 3.4 serves the v3 API only (v2 is off by default).
      etcd3: {hosts: `${this.etcd.ip}:${this.etcd.port}`},
      bootstrap: {
        dcs: {...DCS, maximum_lag_on_failover: 1048576, synchronous_mode: false,
          postgresql: {use_pg_rewind: true, use_slots: true, parameters: {
            // Small enough for the loop volume and a 2-core machine.
            max_connections: 40, shared_buffers: '32MB', max_wal_size: '96MB', min_wal_size: '32MB', wal_keep_size: '64MB',
            max_wal_senders: 5, max_replication_slots: 5}}},
        initdb: [{encoding: 'UTF8'}, {locale: 'C.UTF-8'}],
      },
      postgresql: {
        listen: `${node.ip}:${node.pgPort}`,
        connect_address: `${node.ip}:${node.pgPort}`,
        data_dir: node.pgdata,
        bin_dir: PG_BIN,
        // Patroni writes it; postgres must be able to.
        pgpass: path.join(node.runDir, 'pgpass'),
        use_unix_socket: true,
        authentication: {
          superuser: {username: 'postgres', password: PASSWORD},
          replication: {username: 'replicator', password: PASSWORD},
        },
        parameters: {
          // Namespaces share the filesystem: a socket directory per node.
          unix_socket_directories: node.runDir,
          external_pid_file: path.join(node.runDir, 'postmaster.pid'),
          logging_collector: 'on',
          log_directory: node.logDir,
          log_filename: 'postgresql.log',
          log_line_prefix: '%m [%p] ',
        },
        pg_hba: [
          'local all all trust',
          `host replication replicator ${SUBNET} scram-sha-256`,
          `host all all ${SUBNET} scram-sha-256`,
        ],
      },
      watchdog: {mode: 'off'},
    };
  }

  private startPatroni(node: PgNode): void {
    const config = path.join(node.runDir, 'patroni.yml');
    fs.writeFileSync(config, `${JSON.stringify(this.config(node), null, 2)}\n`);
    const log = fs.openSync(path.join(node.logDir, 'patroni.log'), 'a');
    const argv = inNs(node.ns, ['setpriv', '--reuid=postgres', '--regid=postgres', '--init-groups', '--', PYTHON, '-m', 'patroni', config]);
    // setpriv and ip netns exec both exec: the pid is Patroni's own, the one to stall and to stop.
    const proc = this.track(new Proc(spawn(argv[0]!, argv.slice(1), {stdio: ['ignore', log, log], env: patroniEnv(this.command, node.runDir)})));
    fs.closeSync(log);
    this.patroni.set(node.name, proc);
  }

  /**
   * ebsmon on one node: a monitor (nftables) and a reporter proving the
   * volume's mount root (not PGDATA: the probe's file belongs at the root of
   * what hangs), fencing 5432 and 8008, isolating etcd's 2379, rejoining
   * through the Patroni program. Returns once the reporter is healthy and its
   * ports and etcd's port are armed in the node's table.
   */
  async startEbsmon(name: NodeName, {isolate = true, rejoin = 'program'}: EbsmonOptions = {}): Promise<NodeEbsmon> {
    const node = this.node(name);
    const stateDir = path.join(path.dirname(node.runDir), 'ebsmon');
    fs.mkdirSync(stateDir, {recursive: true, mode: 0o755});
    // As in production: the monitor's state on tmpfs, so its pulse never waits on a disk.
    sh(['mount', '-t', 'tmpfs', '-o', 'size=16m,mode=0755', 'tmpfs', stateDir]);
    this.teardown.add(['umount', '-l', stateDir]);
    const fifo = path.join(stateDir, 'ebsmon.fifo');
    const monitor = this.track(ebsmon(['monitor', ...MONITOR_FLAGS, `--fifo=${fifo}`, `--state-dir=${stateDir}`, '--log-format=json'], {ns: node.ns}));
    await waitFor(`the monitor in ${name}`, () => {
      if (!monitor.running)
        throw new Error(`the monitor in ${name} exited: ${monitor.stderr}`);
      return monitor.logs().some(l => l.message === 'monitor running');
    }, 30_000, 100);
    const program = [REJOIN_PATRONI, `--api=http://${node.ip}:${node.apiPort}`, `--host=${node.runDir}`, `--port=${node.pgPort}`, '--user=postgres', '--dbname=postgres', '--timeout=3'].join(' ');
    const reporter = this.track(ebsmon(['report', `--name=${name}`, `--monitor=${node.mount}`, `--ports=${node.pgPort},${node.apiPort}`,
      ...(isolate ? [`--isolate=${ETCD_PORT}`] : []), `--rejoin=${rejoin === 'program' ? program : 'auto'}`,
      `--state-dir=${stateDir}`, `--fifo=${fifo}`, ...REPORTER_FLAGS, '--log-format=json'], {ns: node.ns}));
    const started = new NodeEbsmon(node, stateDir, monitor, reporter);
    this.ebsmon.set(name, started);
    await waitFor(`the reporter in ${name} healthy`, () => {
      if (!reporter.running)
        throw new Error(`the reporter in ${name} exited: ${reporter.stderr}`);
      return started.record()?.state === 'healthy';
    }, 30_000, 100);
    return started;
  }

  node(name: NodeName): PgNode {
    return this.nodes.find(n => n.name === name)!;
  }

  other(name: NodeName): PgNode {
    return this.nodes.find(n => n.name !== name)!;
  }

  /** An HTTP GET (or POST with a body) from a namespace; code 0 when nothing answered in time. */
  curl(ns: string, url: string, body?: string): {code: number, body: string} {
    const out = sh(inNs(ns, ['curl', '-s', '--max-time', '2', '-w', '\n%{http_code}', ...(body === undefined ? [] : ['-X', 'POST', '-d', body]), url]), {allowFail: true});
    const cut = out.lastIndexOf('\n');
    return {code: Number(out.slice(cut + 1)) || 0, body: out.slice(0, Math.max(cut, 0))};
  }

  /** Patroni's REST API, asked from the client namespace. */
  api(node: PgNode, route: string): {code: number, body: string} {
    return this.curl(this.client.ns, `http://${node.ip}:${node.apiPort}${route}`);
  }

  /** The leader key's holder, read from etcd itself; null when there is no key (or etcd did not answer). */
  leader(): NodeName | null {
    const key = Buffer.from(LEADER_KEY).toString('base64');
    const {body} = this.curl(this.client.ns, `http://${this.etcd.ip}:${this.etcd.port}/v3/kv/range`, JSON.stringify({key}));
    try {
      const value = (JSON.parse(body) as {kvs?: Array<{value: string}>}).kvs?.[0]?.value;
      return value === undefined ? null : Buffer.from(value, 'base64').toString('utf8') as NodeName;
    } catch {
      return null;
    }
  }

  /** As root over the node's local socket, in its namespace; rows of |-separated fields. Throws if PostgreSQL does not answer in 5 s. */
  sql(node: PgNode, query: string): string {
    return sh(inNs(node.ns, ['timeout', '5', 'psql', '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-h', node.runDir, '-p', String(node.pgPort), '-U', 'postgres', '-d', 'postgres', '-c', query]));
  }

  /** Application names streaming from this node (its pg_stat_replication); empty when it does not answer. */
  streamingTo(node: PgNode): Array<string> {
    try {
      return this.sql(node, `SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'`).split('\n').filter(Boolean);
    } catch {
      return [];
    }
  }

  /**
   * One leader in etcd whose Patroni says primary, and the other node streaming
   * from it: what the cluster looks like when nothing is wrong. Returns the leader.
   */
  healthy(): NodeName | null {
    const leader = this.leader();
    if (leader === null)
      return null;
    const node = this.node(leader);
    const replica = this.other(leader);
    const ok = this.api(node, '/primary').code === 200 && this.api(replica, '/replica').code === 200 && this.streamingTo(node).includes(replica.name);
    return ok ? leader : null;
  }

  async waitHealthy(timeoutMs = 180_000): Promise<NodeName> {
    return waitFor('one leader and a streaming replica', () => this.healthy(), timeoutMs, 500);
  }

  /**
   * The disk stops answering (the FUSE daemon is stopped); optionally Patroni
   * stops too. Returns when the disk stopped: the hang's start (the sync
   * before it can take seconds on a busy machine, while commits go on).
   */
  hang(name: NodeName, {dropCache = true, stallPatroni = false}: HangOptions = {}): number {
    // Written back now, so that the sync inside the disk's hang is short and Patroni stops just before it.
    sh(['sync']);
    if (stallPatroni) {
      // Stopped first, so it cannot react to its own disk between the two.
      this.patroni.get(name)!.kill('SIGSTOP');
      this.stalled.add(name);
    }
    return this.node(name).disk.hang({dropCache});
  }

  resume(name: NodeName): void {
    this.node(name).disk.resume();
    if (this.stalled.delete(name))
      this.patroni.get(name)!.kill('SIGCONT');
  }

  /** Patroni's log (its stdout and stderr) of one node. */
  patroniLog(name: NodeName): string {
    const file = path.join(this.node(name).logDir, 'patroni.log');
    return fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  }

  observations(): Array<ObserverEvent> {
    return readLines<ObserverEvent>(path.join(this.dir, 'observer.ndjson'));
  }

  /** The application, writing from the client namespace; its events go to a file of its own. */
  startWriter({firstId = 1, timeout = 3, pause = 0.01, route = 'patroni'}: WriterOptions = {}): PgWriter {
    this.writers += 1;
    const file = path.join(this.dir, `writer${this.writers}.ndjson`);
    const proc = this.track(new Proc(spawn('ip', inNs(this.client.ns, [PYTHON, HELPER('pgwriter.py'),
      ...this.nodes.flatMap(n => ['--node', `${n.name}=${n.ip}`]), '--port', String(PG_PORT), '--api-port', String(API_PORT),
      '--password', PASSWORD, '--first-id', String(firstId), '--timeout', String(timeout), '--pause', String(pause), '--route', route, '--out', file]).slice(1),
    {stdio: ['ignore', 'ignore', 'pipe']})));
    return new PgWriter(proc, file);
  }

  /** Every acknowledged id checked against the final primary's table. */
  verify(writer: PgWriter, {hangAt, oldPrimary}: {hangAt: number, oldPrimary: NodeName}): Verdict {
    // Acknowledgements first: a row acknowledged after the table was read would count as lost.
    const acks = writer.acks();
    const finalPrimary = this.leader();
    if (finalPrimary === null)
      throw new Error('no leader to verify against');
    const present = new Set(this.sql(this.node(finalPrimary), 'SELECT id FROM t').split('\n').filter(Boolean).map(Number));
    return {
      finalPrimary,
      acked: acks.length,
      lost: acks.map(e => e.id!).filter(id => !present.has(id)),
      oldAcksAfterHang: acks.filter(e => e.node === oldPrimary && e.t >= hangAt).map(e => e.id!),
    };
  }

  /** The last lines of every log, for a failure's message. */
  logTail(): string {
    const tail = (file: string) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').slice(-15).join('\n') : '(none)');
    return [[path.join(this.dir, 'etcd.log'), ...this.nodes.flatMap(n => [path.join(n.logDir, 'patroni.log'), path.join(n.logDir, 'postgresql.log')])]
      .map(file => `--- ${path.relative(this.dir, file)}\n${tail(file)}`).join('\n'), ...[...this.ebsmon.values()].map(e => e.logTail())].join('\n');
  }

  /**
   * Disks and Patroni continued first (a process waiting on a stopped disk
   * cannot even be killed), then the application and the observer, then each
   * Patroni (SIGTERM: it stops its PostgreSQL), then any postmaster left (from
   * its pid file), then etcd; the namespaces, mounts and loop devices last.
   */
  async stop(): Promise<void> {
    for (const node of this.nodes)
      this.resume(node.name);
    const [etcd, ...rest] = this.procs;
    const patroni = new Set(this.patroni.values());
    await Promise.all(rest.filter(p => !patroni.has(p)).map(p => p.stop()));
    await Promise.all([...patroni].map(p => p.stop(60_000)));
    await etcd?.stop();
    this.teardown.dispose();
    const mounts = fs.readFileSync('/proc/self/mounts', 'utf8');
    if (!mounts.includes(` ${this.dir}/`))
      fs.rmSync(this.dir, {recursive: true, force: true});
  }
}

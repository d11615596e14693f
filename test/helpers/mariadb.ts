import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import {HELPER, Proc} from './proc';
import {inNs, sh, waitFor} from './rig';
import type {LoopVolume} from './rig';

export const MARIADB_PORT = 3306;
/** The application's own query timeout: what its users wait without ebsmon. */
export const APP_TIMEOUT_MS = 10_000;

/** Small enough for a 256 MB loop volume and a 2-core machine. */
const SERVER_OPTIONS = ['--innodb-log-file-size=16M', '--innodb-buffer-pool-size=32M'];

/**
 * Debian's MariaDB, started by the test (not as a system service) in the
 * server namespace, its datadir on the test's loop volume. Socket, pid file
 * and error log stay off the volume so they can be read while it is frozen.
 */
export class MariaDb {
  private constructor(readonly proc: Proc, readonly datadir: string, readonly socket: string, readonly errorLog: string) {
  }

  /** `extra`: more server options (a binlog on a volume of its own, a tmpdir). */
  static async start(volume: LoopVolume, runDir: string, ns: string, extra: ReadonlyArray<string> = []): Promise<MariaDb> {
    const datadir = path.join(volume.mountpoint, 'mysql');
    const socket = path.join(runDir, 'mysqld.sock');
    const errorLog = path.join(runDir, 'mysqld.err');
    fs.mkdirSync(runDir, {recursive: true});
    fs.mkdirSync(datadir);
    sh(['mariadb-install-db', '--no-defaults', `--datadir=${datadir}`, '--user=root', '--auth-root-authentication-method=socket', '--skip-test-db', ...SERVER_OPTIONS]);
    const proc = new Proc(spawn('ip', ['netns', 'exec', ns, 'mariadbd', '--no-defaults', `--datadir=${datadir}`, '--user=root',
      `--socket=${socket}`, `--pid-file=${path.join(runDir, 'mysqld.pid')}`, `--log-error=${errorLog}`,
      `--port=${MARIADB_PORT}`, '--bind-address=::', '--skip-name-resolve', ...SERVER_OPTIONS, ...extra], {stdio: ['ignore', 'pipe', 'pipe']}));
    const db = new MariaDb(proc, datadir, socket, errorLog);
    await waitFor('MariaDB ready for connections', () => !proc.running || /ready for connections/.test(db.log()), 60_000);
    if (!proc.running)
      throw new Error(`mariadbd exited at start-up: ${db.log()}`);
    db.sql(`CREATE DATABASE app; CREATE USER 'app'@'%' IDENTIFIED BY 'app'; GRANT ALL ON app.* TO 'app'@'%'; CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB`);
    return db;
  }

  log(): string {
    return fs.existsSync(this.errorLog) ? fs.readFileSync(this.errorLog, 'utf8') : '';
  }

  /** As root over the Unix socket; tab-separated rows, no headers. */
  sql(query: string): string {
    return sh(['mariadb', `--socket=${this.socket}`, '--batch', '--skip-column-names', '-e', query]);
  }

  /** Row ids present in app.t. */
  rows(): Set<number> {
    return new Set(this.sql('SELECT id FROM app.t').split('\n').filter(Boolean).map(Number));
  }

  /** SIGTERM and a clean shutdown (the volume must be thawed). */
  async stop(): Promise<void> {
    await this.proc.stop(60_000);
  }
}

export type SqlEvent = {ev: 'connected' | 'ack' | 'error', t: number, id?: number, op?: 'connect' | 'query', code?: string};

/** The writer (sqlclient.mjs) in the client namespace. */
export class SqlClient {
  readonly proc: Proc;

  constructor(ns: string, host: string, timeoutMs: number, firstId: number) {
    this.proc = new Proc(spawn('ip', inNs(ns, [process.execPath, HELPER('sqlclient.mjs'), host, String(MARIADB_PORT), String(timeoutMs), String(firstId)]).slice(1), {stdio: ['ignore', 'pipe', 'pipe']}));
  }

  events(): Array<SqlEvent> {
    return this.proc.stdout.split('\n').filter(line => line.startsWith('{')).map(line => JSON.parse(line) as SqlEvent);
  }

  acked(): Array<number> {
    return this.events().filter(e => e.ev === 'ack').map(e => e.id!);
  }

  acksSince(t: number): number {
    return this.events().filter(e => e.ev === 'ack' && e.t >= t).length;
  }

  /** The first error the application saw at or after t. */
  firstErrorSince(t: number): SqlEvent | undefined {
    return this.events().find(e => e.ev === 'error' && e.t >= t);
  }
}

/** Waits for `count` acknowledged commits at or after `since`; on timeout, says what the client saw. */
export async function writes(sql: SqlClient, since: number, what: string, count = 20): Promise<void> {
  try {
    await waitFor(what, () => sql.acksSince(since) >= count, 60_000);
  } catch (error) {
    throw new Error(`${(error as Error).message}; the client said: ${sql.proc.stdout.slice(-500)}${sql.proc.stderr.slice(-1000)}`);
  }
}

/**
 * The user's story once: the client is writing, the volume freezes, the client
 * sees its first error; `whileFrozen` runs before the thaw (always done); then
 * writes resume and the client is stopped.
 */
export async function freezeUnderWrites(volume: LoopVolume, sql: SqlClient, whileFrozen: (error: SqlEvent, frozenAt: number) => Promise<void> = async () => {}): Promise<{error: SqlEvent, frozenAt: number}> {
  await writes(sql, 0, 'the client writing');
  const frozenAt = Date.now();
  volume.freeze();
  let error: SqlEvent;
  try {
    error = await waitFor('the client\'s first error', () => sql.firstErrorSince(frozenAt), 60_000, 5);
    await whileFrozen(error, frozenAt);
  } finally {
    volume.thaw();
  }
  await writes(sql, Date.now(), 'writes after the thaw');
  await sql.proc.stop();
  return {error, frozenAt};
}

import assert from 'node:assert/strict';
import path from 'node:path';
import {after, before, describe, it} from 'node:test';
import type {TestContext} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {APP_TIMEOUT_MS, MARIADB_PORT, MariaDb, SqlClient, freezeUnderWrites} from '../helpers/mariadb';
import {Proc, ebsmon, reporterIn, tcpTry} from '../helpers/proc';
import {LoopVolume, Teardown, createNetRig, isRoot, requireRoot, waitFor} from '../helpers/rig';
import type {NetRig} from '../helpers/rig';

const TIMEOUT = 2;

/** Errors that mean the connection was cut under the client (not its own timeout). */
const CUT = /^(ECONNRESET|PROTOCOL_CONNECTION_LOST|EPIPE)$/;

describe('MariaDB on a frozen volume, end to end', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let cleanupDir: () => Promise<void>;
  let dir: string;
  let teardown: Teardown;
  let rig: NetRig;
  let volume: LoopVolume;
  let db: MariaDb;
  const procs: Array<Proc> = [];

  before(async () => {
    ({path: dir, cleanup: cleanupDir} = await tmpDir({unsafeCleanup: true}));
    teardown = new Teardown(dir);
    rig = createNetRig(teardown);
    volume = LoopVolume.create(dir, teardown, 256);
    db = await MariaDb.start(volume, path.join(dir, 'mysqld'), rig.srv);
    procs.push(db.proc);
  });

  after(async () => {
    volume?.thaw();
    for (const proc of procs.reverse())
      await proc.stop(60_000);
    teardown?.dispose();
    await cleanupDir?.();
  });

  const client = (firstId: number) => {
    // MariaDB 10.11 listens IPv6-only (IPV6_V6ONLY) with bind-address=::, so the application speaks IPv6.
    const sql = new SqlClient(rig.cli, rig.srvV6, APP_TIMEOUT_MS, firstId);
    procs.push(sql.proc);
    return sql;
  };
  const nothingLost = (sql: SqlClient) => {
    const present = db.rows();
    const lost = sql.acked().filter(id => !present.has(id));
    assert.deepEqual(lost, [], 'every acknowledged commit is in the table');
  };

  it('control run without ebsmon: every commit hangs until the client\'s own timeout while MariaDB keeps accepting connections', async (t: TestContext) => {
    requireRoot(t);
    const sql = client(1);
    await freezeUnderWrites(volume, sql, async (error, frozenAt) => {
      assert.equal(error.op, 'query');
      assert.equal(error.code, 'PROTOCOL_SEQUENCE_TIMEOUT', 'the commit hung until the application gave up');
      assert.equal(await tcpTry(rig.cli, rig.srvV6, MARIADB_PORT), 'ok', 'new clients still connect, only to hang');
      t.diagnostic(`without ebsmon: first error ${error.t - frozenAt} ms after the freeze (client timeout ${APP_TIMEOUT_MS} ms)`);
    });
    nothingLost(sql);
  });

  it('with ebsmon: within --timeout the open connection is cut and new ones refused; after the thaw writes resume and nothing acknowledged is lost', async (t: TestContext) => {
    requireRoot(t);
    const stateDir = path.join(dir, 'ebsmon');
    const fifo = path.join(stateDir, 'ebsmon.fifo');
    const monitor = ebsmon(['monitor', `--fifo=${fifo}`, `--state-dir=${stateDir}`, `--timeout=${TIMEOUT}`, '--recover=2'], {ns: rig.srv});
    procs.push(monitor);
    await waitFor('the monitor', () => monitor.logs().some(l => l.message === 'monitor running'));
    const reporter = ebsmon(['report', `--monitor=${db.datadir}`, `--ports=${MARIADB_PORT}`, '--name=mariadb', `--fifo=${fifo}`, '--interval=0.5', '--probe-timeout=1']);
    procs.push(reporter);
    const stateOf = () => reporterIn(stateDir, 'mariadb')?.state;
    await waitFor('the reporter healthy', () => stateOf() === 'healthy');

    const sql = client(1_000_000);
    await freezeUnderWrites(volume, sql, async (error, frozenAt) => {
      assert.equal(error.op, 'query');
      assert.match(error.code ?? '', CUT, 'the hung commit was cut by the fence, not left to the client\'s timeout');
      assert.equal(stateOf(), 'fenced');
      assert.equal(await tcpTry(rig.cli, rig.srvV6, MARIADB_PORT), 'refused');
      const refused = await waitFor('the client\'s reconnect refused', () => sql.events().find(e => e.t >= frozenAt && e.op === 'connect'));
      assert.equal(refused.code, 'ECONNREFUSED', 'the application fails fast');
      t.diagnostic(`with ebsmon --timeout=${TIMEOUT}: first error ${error.t - frozenAt} ms after the freeze (${error.code})`);
    });
    assert.equal(stateOf(), 'healthy', 'writes resumed, so the fence was lifted');
    nothingLost(sql);
    await reporter.stop();
    await monitor.stop();
    assert.equal(monitor.exitCode, 0);
  });

  it('MariaDB shuts down cleanly afterwards, with no crash in its error log', async (t: TestContext) => {
    requireRoot(t);
    await db.stop();
    assert.equal(db.proc.exitCode, 0, db.log());
    const log = db.log();
    assert.match(log, /mariadbd: Shutdown complete/);
    assert.doesNotMatch(log, /\[ERROR\]|crash|Assertion failure|got signal/i);
  });
});

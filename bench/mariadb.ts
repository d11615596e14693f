// The MariaDB client's time from freeze to its first error, without ebsmon
// (the application's own timeout) and with it, side by side in one run.
import path from 'node:path';

import {readSnapshot} from '../src/state';
import {APP_TIMEOUT_MS, MARIADB_PORT, MariaDb, SqlClient, freezeUnderWrites} from '../test/helpers/mariadb';
import {ebsmon, reporterIn} from '../test/helpers/proc';
import type {Proc} from '../test/helpers/proc';
import {LoopVolume, createNetRig, waitFor} from '../test/helpers/rig';
import type {Teardown} from '../test/helpers/rig';

import {fmt, line, results, stat} from './stats';

const TIMEOUT = 2;

export async function mariadbTimeToError(dir: string, teardown: Teardown, runs = 3): Promise<void> {
  const rig = createNetRig(teardown);
  const volume = LoopVolume.create(path.join(dir, 'mariadb'), teardown, 256);
  const procs: Array<Proc> = [];
  let nextId = 1;
  try {
    const db = await MariaDb.start(volume, path.join(dir, 'mariadb', 'run'), rig.srv);
    procs.push(db.proc);
    // One freeze with a writing client: ms from the freeze to the client's first error.
    const once = async (): Promise<{ms: number, code: string}> => {
      const sql = new SqlClient(rig.cli, rig.srvV6, APP_TIMEOUT_MS, nextId);
      nextId += 1_000_000;
      procs.push(sql.proc);
      const {error, frozenAt} = await freezeUnderWrites(volume, sql);
      return {ms: error.t - frozenAt, code: error.code ?? ''};
    };

    const control: Array<number> = [];
    for (let run = 0; run < runs; run++)
      control.push((await once()).ms);

    const stateDir = path.join(dir, 'mariadb', 'ebsmon');
    const fifo = path.join(stateDir, 'ebsmon.fifo');
    const monitor = ebsmon(['monitor', `--fifo=${fifo}`, `--state-dir=${stateDir}`, `--timeout=${TIMEOUT}`, '--recover=2', '--log-level=warn'], {ns: rig.srv});
    procs.push(monitor);
    await waitFor('the monitor', () => readSnapshot(stateDir) !== null);
    const reporter = ebsmon(['report', `--monitor=${db.datadir}`, `--ports=${MARIADB_PORT}`, '--name=mariadb', `--fifo=${fifo}`, '--interval=0.5', '--probe-timeout=1']);
    procs.push(reporter);
    const healthy = () => reporterIn(stateDir, 'mariadb')?.state === 'healthy';
    const withEbsmon: Array<number> = [];
    const codes = new Set<string>();
    for (let run = 0; run < runs; run++) {
      await waitFor('healthy', healthy, 60_000);
      const outcome = await once();
      withEbsmon.push(outcome.ms);
      codes.add(outcome.code);
    }
    const c = stat(control);
    const e = stat(withEbsmon);
    line(`MariaDB client: freeze -> first error, no ebsmon`, `${fmt(c, 'ms', 0)} (app timeout ${APP_TIMEOUT_MS} ms)`);
    line(`MariaDB client: freeze -> first error, ebsmon`, `${fmt(e, 'ms', 0)} (--timeout=${TIMEOUT}; ${[...codes].join(', ')})`);
    line('  ratio with/without (medians)', `${(e.median / c.median).toFixed(3)} (${(c.median / e.median).toFixed(1)}x sooner)`);
    results.mariadb = {appTimeoutMs: APP_TIMEOUT_MS, timeout: TIMEOUT, controlMs: c, ebsmonMs: e, ratio: e.median / c.median, errorCodes: [...codes]};
  } finally {
    volume.thaw();
    for (const proc of procs.reverse())
      await proc.stop(60_000);
  }
}

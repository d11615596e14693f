import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {after, before, describe, it} from 'node:test';
import type {TestContext} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {HungDisk} from '../helpers/hang';
import {MariaDb} from '../helpers/mariadb';
import {countLogged, listen, logged} from '../helpers/listen';
import {ebsmon, ebsmonOnce, reporterIn} from '../helpers/proc';
import type {Proc} from '../helpers/proc';
import {LoopVolume, Teardown, createNetRig, descendants, isRoot, processState, registerChild, requireRoot, sh, waitFor} from '../helpers/rig';
import type {NetRig} from '../helpers/rig';

/** The source of a mount as /proc/self/mounts (read by the test, not by ebsmon's parser) names it. */
function deviceNumber(device: string): string {
  const rdev = fs.statSync(device).rdev;
  return `${Math.floor(rdev / 256)}:${rdev % 256}`;
}

/** A stand-in service: a process that holds `writes` open for appending and `reads` for reading, and a child (sleep) that holds `childWrites`. */
function startService(writes: Array<string>, reads: Array<string>, childWrites: Array<string>): {pid: number, child: () => number | undefined, stop: () => void} {
  const q = (f: string) => `'${f.replace(/'/g, `'\\''`)}'`;
  let n = 3;
  const script = [
    ...writes.map(f => `exec ${n++}>>${q(f)}`),
    ...reads.map(f => `exec ${n++}<${q(f)}`),
    `sleep 600 ${childWrites.map(f => `${n++}>>${q(f)}`).join(' ')} &`,
    // exec keeps the pid, and the child stays its child.
    'exec sleep 600',
  ].join('\n');
  const service = spawn('bash', ['-c', script], {stdio: 'ignore', detached: true});
  registerChild(service.pid);
  const pid = service.pid!;
  return {
    pid,
    child: () => descendants(pid)[0],
    stop: () => {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {}
    },
  };
}

describe('ebsmon report finds the volumes a service writes to', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let dir: string;
  let cleanupDir: () => Promise<void>;
  let teardown: Teardown;
  let data: LoopVolume;
  let binlog: LoopVolume;
  let readOnly: LoopVolume;
  const procs: Array<Proc> = [];
  const services: Array<{stop: () => void}> = [];

  before(async () => {
    ({path: dir, cleanup: cleanupDir} = await tmpDir({unsafeCleanup: true}));
    teardown = new Teardown(dir);
    data = LoopVolume.create(dir, teardown, 32, {name: 'data'});
    binlog = LoopVolume.create(dir, teardown, 32, {name: 'binlog'});
    readOnly = LoopVolume.create(dir, teardown, 32, {name: 'ro'});
    fs.writeFileSync(path.join(readOnly.mountpoint, 'readonly'), 'x');
  });

  after(async () => {
    for (const volume of [data, binlog, readOnly])
      volume?.thaw();
    for (const service of services)
      service.stop();
    for (const proc of procs)
      await proc.stop();
    teardown?.dispose();
    await cleanupDir?.();
  });

  const report = (fifo: string, extra: Array<string>) => {
    const proc = ebsmon(['report', '--name=svc', '--ports=3306', `--fifo=${fifo}`, '--interval=0.2', '--probe-timeout=1', '--discover-interval=0.5', ...extra]);
    procs.push(proc);
    return proc;
  };

  it('--pid-file alone: watches each written volume (a child\'s too), not one only read; a freeze of one fails naming it; a volume no longer written is dropped after 3 scans', async (t: TestContext) => {
    requireRoot(t);
    const binlogFile = path.join(binlog.mountpoint, 'mysql-bin.000042');
    const service = startService([path.join(data.mountpoint, 'ibdata1')], [path.join(readOnly.mountpoint, 'readonly')], [binlogFile]);
    services.push(service);
    const pidFile = path.join(dir, 'svc.pid');
    fs.writeFileSync(pidFile, `${service.pid}\n`);
    const fifo = path.join(dir, 'pidfile.fifo');
    const monitor = listen(fifo);
    const reporter = report(fifo, [`--pid-file=${pidFile}`]);
    try {
      const dataDir = data.mountpoint;
      const binlogDir = binlog.mountpoint;
      await waitFor('a heartbeat proving both volumes', () => monitor.beats().some(b => (b.paths ?? []).length === 2)).catch(e => { console.error(reporter.stderr.slice(-3000)); throw e; });
      const beat = monitor.beats().find(b => (b.paths ?? []).length === 2)!;
      assert.deepEqual(beat.paths!.map(p => [p.path, p.device, p.source]).sort(), [
        [binlogDir, deviceNumber(binlog.device), binlog.device],
        [dataDir, deviceNumber(data.device), data.device],
      ]);
      assert.ok(logged(reporter, new RegExp(`^discovery: ${binlogFile} is written on ${binlog.mountpoint} \\(${binlog.device}, ext4, ${deviceNumber(binlog.device)}\\): watching it in ${binlogDir}$`)));
      // Probed at the root of the mount: the probe file, and no directory of ebsmon's own among the service's files.
      const st = fs.lstatSync(`${binlogDir}/.ebsmon-probe-svc`);
      assert.deepEqual([st.isFile(), st.uid], [true, 0]);
      assert.deepEqual(fs.readdirSync(binlogDir).sort(), ['.ebsmon-probe-svc', 'lost+found', 'mysql-bin.000042']);
      assert.ok(!reporter.logs().some(l => String(l.message).includes(readOnly.mountpoint)), 'a volume only read is not watched');

      binlog.freeze();
      try {
        const count = monitor.beats().length;
        await waitFor('failing, naming the binlog volume', () => monitor.messages.find(m => m.kind === 'failing' && m.reason.includes(`probe of ${binlogDir} timed out`)));
        assert.ok(!monitor.messages.some(m => m.kind === 'failing' && m.reason.includes(`probe of ${dataDir} `)), 'the data volume is not blamed');
        await waitFor('no heartbeat for 2 s', async () => {
          await new Promise(resolve => setTimeout(resolve, 2000));
          return true;
        });
        assert.ok(monitor.beats().length <= count + 1, 'at most the heartbeat already in flight');
      } finally {
        binlog.thaw();
      }
      const resumed = monitor.beats().length;
      await waitFor('heartbeats again', () => monitor.beats().length >= resumed + 2);

      // The service closes the binlog (its child holding it ends): dropped after 3 scans, not at once.
      const child = service.child();
      assert.ok(child !== undefined);
      process.kill(child, 'SIGKILL');
      await waitFor('the binlog volume dropped', () => logged(reporter, new RegExp(`^discovery: ${binlog.mountpoint} .* no longer written by the pid in ${pidFile} \\(3 scans\\): no longer watched$`)), 15_000);
      await waitFor('a heartbeat with the data volume alone', () => monitor.beats().slice(-1).some(b => b.paths?.length === 1 && b.paths[0]!.path === dataDir)).catch(e => { console.error(reporter.stderr.slice(-4000)); throw e; });
    } finally {
      await reporter.stop();
      monitor.close();
      service.stop();
    }
  });

  it('--monitor beside --pid: a written volume no --monitor covers is named, with its file, in the log and in every heartbeat', async (t: TestContext) => {
    requireRoot(t);
    const binlogFile = path.join(binlog.mountpoint, 'mysql-bin.000043');
    fs.rmSync(`${binlog.mountpoint}/.ebsmon-probe-svc`, {force: true});
    const service = startService([path.join(data.mountpoint, 'ibdata1'), binlogFile], [], []);
    services.push(service);
    const fifo = path.join(dir, 'warn.fifo');
    const monitor = listen(fifo);
    const reporter = report(fifo, [`--monitor=${data.mountpoint}`, `--pid=${service.pid}`]);
    try {
      await waitFor('a heartbeat naming the binlog as not watched', () => monitor.beats().some(b => b.unwatched !== undefined)).catch(e => { console.error(reporter.stderr.slice(-3000)); throw e; });
      const beat = monitor.beats().find(b => b.unwatched !== undefined)!;
      assert.deepEqual(beat.unwatched, [{file: binlogFile, device: deviceNumber(binlog.device), source: binlog.device}]);
      assert.deepEqual(beat.paths!.map(p => p.path), [data.mountpoint], 'discovery adds no path of its own beside --monitor');
      assert.ok(logged(reporter, new RegExp(`^${binlogFile} on ${binlog.device}, not watched: no --monitor is on it$`)));
      assert.ok(!fs.existsSync(`${binlog.mountpoint}/.ebsmon-probe-svc`), 'no probe where nothing is watched');
    } finally {
      await reporter.stop();
      monitor.close();
      service.stop();
    }
  });

  it('--unit: every process of the unit\'s cgroup and the cgroups under it, parent or not', async (t: TestContext) => {
    requireRoot(t);
    // A unit's cgroup as systemd makes it (no systemd here, and no service of the host): on the unified hierarchy, removed after.
    const root = fs.existsSync('/sys/fs/cgroup/unified/cgroup.procs') ? '/sys/fs/cgroup/unified' : '/sys/fs/cgroup';
    const slice = path.join(root, 'system.slice');
    const unit = `ebsmon-test-${process.pid}.service`;
    const cgroup = path.join(slice, unit);
    const sub = path.join(cgroup, 'worker');
    const madeSlice = !fs.existsSync(slice);
    fs.mkdirSync(sub, {recursive: true});
    const first = startService([path.join(data.mountpoint, 'ibdata1')], [], []);
    const second = startService([path.join(binlog.mountpoint, 'mysql-bin.000044')], [], []);
    services.push(first, second);
    const fifo = path.join(dir, 'unit.fifo');
    const monitor = listen(fifo);
    let reporter: Proc | undefined;
    try {
      // Two processes unrelated to each other: one in the unit's cgroup, one in a cgroup under it.
      fs.writeFileSync(path.join(cgroup, 'cgroup.procs'), String(first.pid));
      fs.writeFileSync(path.join(sub, 'cgroup.procs'), String(second.pid));
      reporter = report(fifo, [`--unit=${unit}`]);
      await waitFor('a heartbeat proving both volumes', () => monitor.beats().some(b => (b.paths ?? []).length === 2)).catch(e => { console.error(reporter!.stderr.slice(-3000)); throw e; });
      const beat = monitor.beats().find(b => (b.paths ?? []).length === 2)!;
      assert.deepEqual(beat.paths!.map(p => p.path).sort(), [binlog.mountpoint, data.mountpoint]);
    } finally {
      await reporter?.stop();
      monitor.close();
      first.stop();
      second.stop();
      await waitFor('the unit\'s cgroups empty', () => fs.readFileSync(path.join(cgroup, 'cgroup.procs'), 'utf8') === '' && fs.readFileSync(path.join(sub, 'cgroup.procs'), 'utf8') === '', 10_000);
      fs.rmdirSync(sub);
      fs.rmdirSync(cgroup);
      if (madeSlice)
        fs.rmdirSync(slice);
    }
  });

  it('a service stuck in D state on a hung disk: its scan still completes, names the hung disk\'s file, and heartbeats go on', async (t: TestContext) => {
    requireRoot(t);
    const disk = await HungDisk.create(path.join(dir, 'hung'), teardown, 64);
    const journal = path.join(disk.mountpoint, 'journal');
    fs.writeFileSync(journal, 'x'.repeat(1 << 20));
    const go = path.join(dir, 'go.fifo');
    sh(['mkfifo', go]);
    // One process: holds the data volume and the hung disk's journal for writing, waits for the word, then reads the journal (as itself: exec keeps the pid).
    const q = (f: string) => `'${f}'`;
    const service = spawn('bash', ['-c', `exec 3>>${q(path.join(data.mountpoint, 'ibdata1'))} 4>>${q(journal)}; read -r _ <${q(go)}; exec cat ${q(journal)} >/dev/null`], {stdio: 'ignore', detached: true});
    registerChild(service.pid);
    const pid = service.pid!;
    services.push({stop: () => {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {}
    }});
    const fifo = path.join(dir, 'hung.fifo');
    const monitor = listen(fifo);
    const reporter = report(fifo, [`--monitor=${data.mountpoint}`, `--pid=${pid}`, '--log-level=debug']);
    try {
      await waitFor('a heartbeat', () => monitor.beats().length >= 1);
      disk.hang();
      fs.writeFileSync(go, 'go\n');
      await waitFor('the service stuck in D state', () => processState(pid) === 'D', 10_000);
      const scans = () => countLogged(reporter, /^discovery: scan done$/);
      const scanned = scans();
      await waitFor('three scans done with the service in D state', () => scans() >= scanned + 3, 20_000).catch(e => { console.error(reporter.stderr.slice(-3000)); throw e; });
      assert.equal(processState(pid), 'D', 'still stuck after it was scanned');
      assert.ok(monitor.beats().slice(-1).some(b => b.unwatched?.some(u => u.file === journal)), 'the hung disk\'s journal is named as not watched');
      // The reporter's loop still runs: heartbeats of the data volume keep coming.
      const later = monitor.beats().length;
      await waitFor('more heartbeats', () => monitor.beats().length >= later + 5, 10_000);
      assert.ok(!logged(reporter, /^discovery: .*took longer/), 'no scan timed out');
    } finally {
      disk.resume();
      await reporter.stop();
      monitor.close();
    }
  });
});

describe('MariaDB with its binlog on a second volume, found from its pid file', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let dir: string;
  let cleanupDir: () => Promise<void>;
  let teardown: Teardown;
  let rig: NetRig;
  let data: LoopVolume;
  let binlog: LoopVolume;
  let runDir: string;
  let db: MariaDb;
  let stateDir: string;
  let fifo: string;
  const procs: Array<Proc> = [];

  before(async () => {
    ({path: dir, cleanup: cleanupDir} = await tmpDir({unsafeCleanup: true}));
    teardown = new Teardown(dir);
    rig = createNetRig(teardown);
    data = LoopVolume.create(dir, teardown, 256, {name: 'data'});
    binlog = LoopVolume.create(dir, teardown, 64, {name: 'binlog'});
    // Socket, pid file, error log and temporary files on a tmpfs of the test's own: a volume discovery skips (memory).
    runDir = path.join(dir, 'run');
    fs.mkdirSync(runDir);
    sh(['mount', '-t', 'tmpfs', '-o', 'size=64m,mode=0755', 'ebsmon-test-run', runDir]);
    teardown.add(['umount', '-l', runDir]);
    db = await MariaDb.start(data, runDir, rig.srv, [`--log-bin=${binlog.mountpoint}/mysql-bin`, `--tmpdir=${runDir}`]);
    procs.push(db.proc);
    stateDir = path.join(dir, 'ebsmon');
    fifo = path.join(stateDir, 'ebsmon.fifo');
    const monitor = ebsmon(['monitor', `--fifo=${fifo}`, `--state-dir=${stateDir}`, '--timeout=2', '--recover=2'], {ns: rig.srv});
    procs.push(monitor);
    await waitFor('the monitor', () => monitor.logs().some(l => l.message === 'monitor running'));
  });

  after(async () => {
    for (const volume of [data, binlog])
      volume?.thaw();
    for (const proc of procs.reverse())
      await proc.stop(60_000);
    teardown?.dispose();
    await cleanupDir?.();
  });

  const pidFile = () => path.join(runDir, 'mysqld.pid');

  it('--pid-file alone: both volumes are proven; a freeze of the binlog volume alone fences, the reason naming it', async (t: TestContext) => {
    requireRoot(t);
    const reporter = ebsmon(['report', `--pid-file=${pidFile()}`, '--ports=3306', '--name=mariadb', `--fifo=${fifo}`, '--interval=0.5', '--probe-timeout=1', '--discover-interval=1']);
    procs.push(reporter);
    const binlogDir = binlog.mountpoint;
    try {
      await waitFor('the reporter healthy, proving the data and binlog volumes', () => {
        const r = reporterIn(stateDir, 'mariadb');
        return r?.state === 'healthy' && (r.paths ?? []).map(p => p.path).sort().join(' ') === `${binlogDir} ${data.mountpoint}`;
      }, 60_000).catch(e => { console.error(reporter.stderr.slice(-3000), JSON.stringify(reporterIn(stateDir, 'mariadb'))); throw e; });
      binlog.freeze();
      try {
        await waitFor('fenced', () => reporterIn(stateDir, 'mariadb')?.state === 'fenced', 30_000);
        await waitFor('the reporter\'s word naming the binlog volume', () => reporterIn(stateDir, 'mariadb')?.failure?.reason.includes(`probe of ${binlogDir} timed out`), 10_000)
          .catch(e => { console.error(JSON.stringify(reporterIn(stateDir, 'mariadb'))); throw e; });
        assert.ok(!reporterIn(stateDir, 'mariadb')!.failure!.reason.includes(`probe of ${data.mountpoint} `), 'the data volume is not blamed');
      } finally {
        binlog.thaw();
      }
      await waitFor('healthy again after the thaw', () => reporterIn(stateDir, 'mariadb')?.state === 'healthy', 30_000);
    } finally {
      await reporter.stop();
    }
  });

  it('--monitor=datadir beside --pid-file: the binlog volume, not watched, is a warning in ebsmon status and --nagios within a re-scan', async (t: TestContext) => {
    requireRoot(t);
    const reporter = ebsmon(['report', `--monitor=${db.datadir}`, `--pid-file=${pidFile()}`, '--ports=3306', '--name=mariadb', `--fifo=${fifo}`, '--interval=0.5', '--probe-timeout=1', '--discover-interval=1']);
    procs.push(reporter);
    try {
      const line = new RegExp(`^ {2}${binlog.mountpoint}/mysql-bin\\.(\\d{6}|index) on ${binlog.device} \\(${deviceNumber(binlog.device)}\\), not watched$`, 'm');
      const status = await waitFor('the binlog volume named in ebsmon status', async () => {
        const out = await ebsmonOnce(['status', `--state-dir=${stateDir}`]);
        return line.test(out.stdout) ? out.stdout : null;
      }, 20_000).catch(async e => { console.error(reporter.stderr.slice(-3000), (await ebsmonOnce(['status', `--state-dir=${stateDir}`])).stdout); throw e; });
      assert.match(status, /^mariadb +healthy /m, 'the data volume still proven: healthy, with a warning');
      const nagios = await ebsmonOnce(['status', `--state-dir=${stateDir}`, '--nagios']);
      assert.equal(nagios.code, 1, nagios.stdout);
      assert.match(nagios.stdout, new RegExp(`^WARNING: a volume written but not watched: mariadb: ${binlog.mountpoint}/mysql-bin`));
    } finally {
      await reporter.stop();
    }
  });
});

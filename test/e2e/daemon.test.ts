import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {after, before, describe, it} from 'node:test';
import type {TestContext} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {ebsmon, ebsmonOnce} from '../helpers/proc';
import {EBSMON, ROOT, Teardown, alive, isRoot, registerChild, requireRoot, sh, waitFor} from '../helpers/rig';

describe('operating ebsmon: daemon mode, pidfile, log reopen, units, package', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let dir: string;
  let cleanupDir: () => Promise<void>;
  let teardown: Teardown;
  let ns: string;

  before(async () => {
    ({path: dir, cleanup: cleanupDir} = await tmpDir({unsafeCleanup: true}));
    teardown = new Teardown(dir);
    ns = `ebsmon-daemon-${process.pid}`;
    sh(['ip', 'netns', 'add', ns]);
    teardown.add(['ip', 'netns', 'del', ns]);
  });

  after(async () => {
    teardown?.dispose();
    await cleanupDir?.();
  });

  it('daemonizes, refuses a double start, reopens its log on SIGHUP, and removes its pidfile on SIGTERM', async (t: TestContext) => {
    requireRoot(t);
    const pidfile = path.join(dir, 'monitor.pid');
    const logfile = path.join(dir, 'monitor.log');
    const args = ['monitor', '--daemonize', `--pidfile=${pidfile}`, `--logfile=${logfile}`, `--fifo=${dir}/run/fifo`, `--state-dir=${dir}/run`];
    const started = await ebsmonOnce(args, {ns});
    assert.equal(started.code, 0, started.stderr);
    const pid = Number(/pid (\d+)/.exec(started.stdout)?.[1]);
    registerChild(pid);
    assert.equal(fs.readFileSync(pidfile, 'utf8'), `${pid}\n`);
    assert.ok(alive(pid));
    try {
      const twice = await ebsmonOnce(args, {ns});
      assert.equal(twice.code, 1);
      assert.match(twice.stderr, new RegExp(`${pidfile} is held by running process ${pid}`));

      await waitFor('the log', () => fs.existsSync(logfile) && fs.readFileSync(logfile, 'utf8').includes('monitor running'));
      fs.renameSync(logfile, `${logfile}.1`);
      process.kill(pid, 'SIGHUP');
      await waitFor('a new log file', () => fs.existsSync(logfile) && fs.readFileSync(logfile, 'utf8').includes('log file reopened'));
    } finally {
      process.kill(pid, 'SIGTERM');
    }
    await waitFor('the daemon to exit', () => !alive(pid));
    assert.equal(fs.existsSync(pidfile), false);
  });

  it('a reporter reopens its log file on SIGHUP (logrotate\'s postrotate), and goes on logging there', async (t: TestContext) => {
    requireRoot(t);
    const watched = path.join(dir, 'watched');
    fs.mkdirSync(watched);
    const logfile = path.join(dir, 'reporter.log');
    // No monitor: the reporter probes and logs that its heartbeats go nowhere, which is all this needs.
    const reporter = ebsmon(['report', `--monitor=${watched}`, '--name=rotated', '--ports=3306', `--fifo=${dir}/nomonitor/fifo`, '--interval=0.2', `--logfile=${logfile}`, '--log-format=json', '--log-level=debug']);
    try {
      const text = (file: string) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '');
      await waitFor('the reporter logging to its file', () => text(logfile).includes('"reporter starting"'));
      fs.renameSync(logfile, `${logfile}.1`);
      reporter.kill('SIGHUP');
      await waitFor('a new log file', () => text(logfile).includes('log file reopened'));
      assert.ok(reporter.running, 'SIGHUP does not stop it');
      const lines = () => text(logfile).split('\n').filter(Boolean).length;
      const after = lines();
      await waitFor('more lines in the new file', () => lines() > after);
      assert.doesNotMatch(text(`${logfile}.1`), /log file reopened/, 'the rotated file got nothing after the SIGHUP');
    } finally {
      await reporter.stop();
    }
    assert.equal(reporter.exitCode, 0);
  });

  it('replaces a stale pidfile', async (t: TestContext) => {
    requireRoot(t);
    const pidfile = path.join(dir, 'stale.pid');
    fs.writeFileSync(pidfile, '4194000\n');
    const started = await ebsmonOnce(['monitor', '--daemonize', `--pidfile=${pidfile}`, `--fifo=${dir}/run2/fifo`, `--state-dir=${dir}/run2`], {ns});
    assert.equal(started.code, 0, started.stderr);
    const pid = Number(/pid (\d+)/.exec(started.stdout)?.[1]);
    registerChild(pid);
    assert.equal(fs.readFileSync(pidfile, 'utf8'), `${pid}\n`);
    process.kill(pid, 'SIGTERM');
    await waitFor('the daemon to exit', () => !alive(pid));
  });

  it('a daemon that cannot start says why and exits 1', async () => {
    const result = await ebsmonOnce(['report', '--daemonize', '--monitor=/nonexistent/x', '--ports=80', `--fifo=${dir}/f`]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /--monitor=\/nonexistent\/x: no such directory/);
  });

  it('ships systemd units that verify', async (t: TestContext) => {
    requireRoot(t);
    const units = path.join(dir, 'units');
    fs.mkdirSync(units);
    for (const unit of ['ebsmon-monitor.service', 'ebsmon-report@.service'])
      fs.writeFileSync(path.join(units, unit), fs.readFileSync(path.join(ROOT, 'contrib', 'systemd', unit), 'utf8').replaceAll('/usr/bin/ebsmon', EBSMON).replaceAll('/etc/ebsmon', units));
    fs.writeFileSync(path.join(units, 'report-mysql.env'), 'MONITOR=/var/lib/mysql\nPORTS=3306\n');
    fs.copyFileSync(path.join(units, 'ebsmon-report@.service'), path.join(units, 'ebsmon-report@mysql.service'));
    // Both streams (systemd-analyze warns on stderr and may still exit 0), less what a host may lack for the monitor's ordering.
    const result = sh(['bash', '-c', `systemd-analyze verify --man=no ${units}/ebsmon-monitor.service ${units}/ebsmon-report@mysql.service 2>&1; echo "rc=$?"`]);
    assert.equal(result.replace(/.*(Failed to load|Cannot add dependency|not found).*ebsmon-monitor.service.*\n?/g, ''), 'rc=0\n');
  });

  it('packs into a self-contained tarball: a global install with no network at all gives a working ebsmon and nothing else', async (t: TestContext) => {
    requireRoot(t);
    const pack = path.join(dir, 'pack');
    const prefix = path.join(dir, 'prefix');
    fs.mkdirSync(pack);
    const name = sh(['npm', 'pack', '--silent', '--pack-destination', pack], {}).trim().split('\n').pop()!;
    // A network namespace of its own (only a loopback that is down) and an empty cache:
    // a package that needed anything from the registry could not install.
    sh(['unshare', '--net', 'npm', 'install', '-g', '--silent', '--no-audit', '--no-fund', '--no-update-notifier',
      '--registry=http://127.0.0.1:9/', '--fetch-retries=0', `--cache=${path.join(dir, 'npm-cache')}`, '--prefix', prefix, path.join(pack, name)]);
    const installed = path.join(prefix, 'lib', 'node_modules');
    assert.deepEqual(fs.readdirSync(installed), ['ebsmon']);
    assert.equal(fs.existsSync(path.join(installed, 'ebsmon', 'node_modules')), false, 'no dependency is installed: the bundle has them all');
    const bin = path.join(prefix, 'bin', 'ebsmon');
    assert.match(sh([bin, '--version']), /^\d+\.\d+\.\d+\n$/);
    assert.match(sh([bin, 'status', '--help']), /ebsmon status/);
  });
});

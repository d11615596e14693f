import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {after, before, describe, it} from 'node:test';
import type {TestContext} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {countLogged, listen, logged} from '../helpers/listen';
import {HELPER, Proc, ebsmon, ebsmonOnce, reporterIn, tcpTry} from '../helpers/proc';
import {EBSMON, LoopVolume, ROOT, Teardown, createNetRig, isRoot, requireRoot, sh, waitFor} from '../helpers/rig';

/** Issue 15: the probe proves the right disk, does no harm as root, and covers every volume a service needs. */
describe('ebsmon report: planted files, mount pinning, several paths', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let dir: string;
  let cleanupDir: () => Promise<void>;
  let teardown: Teardown;
  const procs: Array<Proc> = [];
  const volumes: Array<LoopVolume> = [];

  before(async () => {
    ({path: dir, cleanup: cleanupDir} = await tmpDir({unsafeCleanup: true}));
    teardown = new Teardown(dir);
  });

  after(async () => {
    for (const volume of volumes)
      volume.thaw();
    for (const proc of procs)
      await proc.stop();
    teardown?.dispose();
    await cleanupDir?.();
  });

  const volume = (name: string) => {
    const created = LoopVolume.create(dir, teardown, 32, {name});
    volumes.push(created);
    return created;
  };
  /** A volume taken off its mount point, with a directory db made there on the root disk: what a watched path is without its volume. */
  const unmounted = (name: string) => {
    const vol = volume(name);
    sh(['umount', vol.mountpoint]);
    const data = path.join(vol.mountpoint, 'db');
    fs.mkdirSync(data);
    return {vol, data};
  };
  const report = (monitors: Array<string>, fifo: string, extra: Array<string> = []) => {
    const proc = ebsmon(['report', ...monitors.map(m => `--monitor=${m}`), '--ports=3306', `--fifo=${fifo}`, '--interval=0.1', '--probe-timeout=1', '--log-level=debug', ...extra]);
    procs.push(proc);
    return proc;
  };
  const asNobody = (argv: Array<string>) => sh(['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '--', ...argv]);
  /** A reporter on `monitors` heartbeating into a FIFO the test reads; stopped whatever the body does. */
  const withReporter = async (tag: string, monitors: Array<string>, body: (reporter: Proc, monitor: ReturnType<typeof listen>) => Promise<void>, extra: Array<string> = []) => {
    const monitor = listen(path.join(dir, `${tag}.fifo`));
    const reporter = report(monitors, path.join(dir, `${tag}.fifo`), extra);
    try {
      await body(reporter, monitor);
    } finally {
      await reporter.stop();
      monitor.close();
    }
  };
  const beatsAfter = async (monitor: ReturnType<typeof listen>, more: number, what: string) => {
    const from = monitor.beats().length;
    await waitFor(what, () => monitor.beats().length >= from + more);
  };

  it('never writes through a symlink, FIFO, hard link, socket or directory planted at the probe name, before start or swapped in while running', async (t: TestContext) => {
    requireRoot(t);
    const vol = volume('plant');
    // The user must reach its directory (tmp-promise makes the test's own 0700).
    fs.chmodSync(dir, 0o755);
    // The service's user owns its data directory, as mysql owns /var/lib/mysql.
    const data = path.join(vol.mountpoint, 'db');
    fs.mkdirSync(data);
    sh(['chown', 'nobody:nogroup', data]);
    const probe = path.join(data, '.ebsmon-probe-db');
    const staged = path.join(data, 'staged');
    // A root file outside the volume (what a symlink would aim at, as /etc/shadow) and a file of the user's own on the volume (for a hard link).
    const secret = path.join(dir, 'secret');
    fs.writeFileSync(secret, 'root:$6$not-a-real-hash:19000:0:99999:7:::\n'.repeat(200), {mode: 0o600});
    const theirs = path.join(vol.mountpoint, 'theirs');
    fs.writeFileSync(theirs, 'the user\'s own data\n'.repeat(300));
    sh(['chown', 'nobody:nogroup', theirs]);
    const original = [fs.readFileSync(secret), fs.readFileSync(theirs)];

    asNobody(['ln', '-s', secret, probe]);
    await withReporter('plant', [data], async (reporter, monitor) => {
      await waitFor('the symlink planted before start reported', () => logged(reporter, /found a symlink \(owner uid 65534, 1 link, inode \d+\) that this reporter did not create; removed it without following it \(its target is untouched\)/));
      await waitFor('heartbeats', () => monitor.beats().length >= 2);

      // Each staged under another name, then renamed over the probe file in one step (rename(2)), as an attacker racing the probe would.
      const plants: Array<[string, Array<string>, RegExp]> = [
        ['symlink', ['ln', '-s', secret, staged], /found a symlink/],
        ['fifo', ['mkfifo', staged], /found a fifo/],
        ['hard link', ['ln', theirs, staged], /found a regular file \(owner uid 65534, 2 links/],
        ['socket', ['perl', '-MSocket', '-e', 'socket(S, PF_UNIX, SOCK_STREAM, 0) or die "$!"; bind(S, pack_sockaddr_un($ARGV[0])) or die "$!"', staged], /found a socket/],
      ];
      for (const [kind, make, message] of plants) {
        const seen = countLogged(reporter, message);
        asNobody(make);
        asNobody(['mv', '-Tf', staged, probe]);
        await waitFor(`the ${kind} reported`, () => countLogged(reporter, message) > seen);
        await beatsAfter(monitor, 2, `heartbeats after the ${kind}`);
      }
      // A directory cannot be renamed over a file: moved in whenever the name is free. Not empty, it is renamed aside, never entered.
      const seen = countLogged(reporter, /found a directory/);
      asNobody(['bash', '-c', 'mkdir "$2" && touch "$2/inside" && for i in $(seq 1000); do rm -f "$1"; mv -T "$2" "$1" 2>/dev/null && exit 0; done; exit 1', 'plant', probe, staged]);
      await waitFor('the directory reported', () => countLogged(reporter, /found a directory/) > seen);
      await waitFor('the directory renamed aside', () => logged(reporter, /a directory that is not empty was at the probe name; renamed it to \.ebsmon-probe-db\.planted\.\d+/));
      await beatsAfter(monitor, 2, 'heartbeats after the directory');

      // Racing: a symlink swapped in as fast as the user can, against a probe every 0.1 s, until
      // the reporter has found (and removed) five of them.
      const before = countLogged(reporter, /found a symlink/);
      const racer = new Proc(spawn('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', '--', 'bash', '-c', 'while :; do ln -sfn "$1" "$2" 2>/dev/null; done', 'race', secret, probe], {stdio: 'ignore'}));
      procs.push(racer);
      await waitFor('five swapped-in symlinks seen and removed', () => countLogged(reporter, /found a symlink/) >= before + 5);
      await racer.stop();
      sh(['rm', '-f', probe]);
      await beatsAfter(monitor, 3, 'heartbeats after the race');

      assert.deepEqual([fs.readFileSync(secret), fs.readFileSync(theirs)], original, 'the outside files are byte-identical');
      const stat = fs.lstatSync(probe);
      assert.ok(stat.isFile() && stat.uid === 0 && stat.nlink === 1 && (stat.mode & 0o777) === 0o600, 'the probe file is the reporter\'s own again');
      assert.match(fs.readFileSync(probe, 'utf8'), /^ebsmon probe name=db pid=\d+ seq=\d+\n?/);
      assert.ok(reporter.running);
    });
  });

  it('two paths, one frozen: no heartbeat, the reason names the frozen path, and the other path is still probed', async (t: TestContext) => {
    requireRoot(t);
    const [a, b] = [volume('data'), volume('binlog')];
    const [dataDir, logDir] = [path.join(a.mountpoint, 'mysql'), path.join(b.mountpoint, 'binlog')];
    fs.mkdirSync(dataDir);
    fs.mkdirSync(logDir);
    await withReporter('two', [dataDir, logDir], async (reporter, monitor) => {
      await waitFor('heartbeats', () => monitor.beats().length >= 2);
      const first = monitor.beats()[0]!;
      assert.equal(first.name, 'mysql', 'named after the first --monitor');
      const devices = [a, b].map(v => sh(['lsblk', '-no', 'MAJ:MIN', v.device]).trim());
      assert.deepEqual(first.paths, [
        {path: dataDir, device: devices[0], source: a.device, fstype: 'ext4', mountPoint: a.mountpoint},
        {path: logDir, device: devices[1], source: b.device, fstype: 'ext4', mountPoint: b.mountpoint},
      ]);
      for (const [p, v] of [[dataDir, a], [logDir, b]] as const)
        assert.ok(logged(reporter, new RegExp(`^watching ${p} on ${v.device} \\(ext4\\) mounted at ${v.mountpoint}$`)));

      a.freeze();
      try {
        await waitFor('the frozen path to fail', () => logged(reporter, new RegExp(`^failing: probe of ${dataDir} timed out after 1\\.0 s; loop\\d+ idle: .*; no heartbeat`)));
        const stopped = monitor.beats().length;
        const probeFile = path.join(logDir, '.ebsmon-probe-mysql');
        const passed = countLogged(reporter, /^probe passed$/, logDir);
        const content = fs.readFileSync(probeFile, 'utf8');
        // The other path's probes go on: more passes logged, and its probe file rewritten with a new sequence number.
        await waitFor('the other path probed 10 more times', () => countLogged(reporter, /^probe passed$/, logDir) >= passed + 10);
        assert.notEqual(fs.readFileSync(probeFile, 'utf8'), content);
        assert.equal(monitor.beats().length, stopped, 'no heartbeat while one path is frozen');
        // Each heartbeat needs a fresh proof of every path: never more heartbeats than probes of the first path.
        assert.ok(stopped <= countLogged(reporter, /^probe passed$/, dataDir), `${stopped} heartbeats, ${countLogged(reporter, /^probe passed$/, dataDir)} probes of ${dataDir}`);
        const failures = reporter.logs().filter(l => /^(still )?failing: /.test(String(l.message)));
        assert.ok(failures.every(l => String(l.message).includes(dataDir) && !String(l.message).includes(logDir)), 'only the frozen path is named');
      } finally {
        a.thaw();
      }
      await beatsAfter(monitor, 2, 'heartbeats after the thaw');
      assert.ok(logged(reporter, /^healthy again/));
    });
  });

  it('a volume mounted over the watched one fails with "mount replaced"; unmounting it again recovers', async (t: TestContext) => {
    requireRoot(t);
    const [base, other] = [volume('base'), volume('other')];
    const data = path.join(base.mountpoint, 'db');
    fs.mkdirSync(data);
    fs.mkdirSync(path.join(other.mountpoint, 'db'));
    await withReporter('replaced', [data], async (reporter, monitor) => {
      await waitFor('heartbeats', () => monitor.beats().length >= 2);
      sh(['mount', other.device, base.mountpoint]);
      teardown.add(['umount', base.mountpoint]);
      try {
        await waitFor('mount replaced', () => logged(reporter, new RegExp(`^failing: probe of ${data}: mount replaced: it is now on ${other.device} \\(ext4\\) mounted at ${base.mountpoint}, not the pinned ${base.device} \\(ext4\\) mounted at ${base.mountpoint}`)));
        const stopped = monitor.beats().length;
        await waitFor('two more ticks', () => countLogged(reporter, /^still failing: .*mount replaced/) >= 2);
        assert.equal(monitor.beats().length, stopped);
        assert.deepEqual(fs.readdirSync(path.join(base.mountpoint, 'db')), [], 'nothing written on the other volume');
      } finally {
        sh(['umount', base.mountpoint]);
      }
      await beatsAfter(monitor, 2, 'heartbeats once the pinned volume is visible again');
    });
  });

  it('a path with no volume mounted: a warning, --require-mount exits 1; a volume mounted later is "mount replaced"; a log file there is warned about', async (t: TestContext) => {
    requireRoot(t);
    const {vol: late, data} = unmounted('late');

    const refused = await ebsmonOnce(['report', `--monitor=${data}`, '--ports=3306', `--fifo=${dir}/none.fifo`, '--require-mount']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, new RegExp(`${data}: no separate volume is mounted there: it is on / \\(\\S+, \\w+\\), so the probe proves the root disk \\(--require-mount: refusing to start\\)`));
    assert.deepEqual(fs.readdirSync(data), [], 'refused before any probe');

    // On the root disk too, beside the mount point (not under it: the volume mounted later would hide it).
    const logfile = path.join(dir, 'late.log');
    const logs = () => (fs.existsSync(logfile) ? fs.readFileSync(logfile, 'utf8') : '');
    await withReporter('late', [data], async (_reporter, monitor) => {
      await waitFor('the warning', () => logs().includes(`${data}: no separate volume is mounted there: it is on /`));
      await waitFor('the log file warning', () => logs().includes(`--logfile=${logfile} is on the same device as ${data}`));
      await waitFor('heartbeats, from the root disk as warned', () => monitor.beats().length >= 1);
      sh(['mount', late.device, late.mountpoint]);
      fs.mkdirSync(data);
      await waitFor('mount replaced', () => /mount replaced: it is now on \/dev\/loop\d+ \(ext4\) mounted at .*; the reporter started before this volume was mounted: restart it to watch the volume/.test(logs()));
    }, [`--logfile=${logfile}`]);
  });

  it('refuses the same directory twice, and more than 8 directories', async () => {
    const twice = await ebsmonOnce(['report', `--monitor=${dir}`, `--monitor=${dir}/.`, '--ports=80', `--fifo=${dir}/x.fifo`]);
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /--monitor=.*\/\. is the same directory as --monitor=/);
    const many = await ebsmonOnce(['report', ...Array.from({length: 9}, () => `--monitor=${dir}`), '--ports=80']);
    assert.equal(many.code, 2);
    assert.match(many.stderr, /--monitor given 9 times; at most 8 directories per reporter/);
  });

  it('lazy unmount: "mount gone", no heartbeat while gone, the shadowed directory untouched, and the monitor fences by --timeout plus one interval', async (t: TestContext) => {
    requireRoot(t);
    // The directory the volume hides, on the root disk under the mount point: what a probe by path would find after the unmount.
    const {vol, data} = unmounted('lazy');
    sh(['mount', vol.device, vol.mountpoint]);
    fs.mkdirSync(data);

    const rig = createNetRig(teardown);
    const port = 7100;
    const server = new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, HELPER('server.mjs'), String(port)], {stdio: ['ignore', 'pipe', 'pipe']}));
    procs.push(server);
    await waitFor('the server', () => server.stdout.includes('listening'));
    const stateDir = path.join(dir, 'lazy-run');
    const fifo = path.join(stateDir, 'ebsmon.fifo');
    const [timeout, interval] = [2, 0.2];
    const monitor = ebsmon(['monitor', `--fifo=${fifo}`, `--state-dir=${stateDir}`, `--timeout=${timeout}`, '--recover=2'], {ns: rig.srv});
    procs.push(monitor);
    await waitFor('the monitor', () => logged(monitor, /^monitor running$/));
    const reporter = ebsmon(['report', `--monitor=${data}`, `--ports=${port}`, `--fifo=${fifo}`, `--interval=${interval}`, '--probe-timeout=0.5', '--log-level=debug']);
    procs.push(reporter);
    const stateOf = () => reporterIn(stateDir, 'db')?.state;
    await waitFor('healthy', () => stateOf() === 'healthy');
    assert.equal(await tcpTry(rig.cli, rig.srvV4, port), 'ok');

    const goneAt = Date.now();
    sh(['umount', '-l', vol.mountpoint]);
    await waitFor('mount gone', () => logged(reporter, new RegExp(`^failing: probe of ${data}: mount gone: ${vol.device} \\(\\d+:\\d+\\) is no longer mounted at ${vol.mountpoint}; it is now on \\S+ \\(\\w+\\) mounted at /`)));
    await waitFor('the fence', () => stateOf() === 'fenced');
    const fencedSince = reporterIn(stateDir, 'db')!.fencedSince!;
    // The deadline runs from the last heartbeat, sent at most one interval before the unmount; the rest is slack for a loaded machine.
    assert.ok(fencedSince - goneAt <= (timeout + interval) * 1000 + 1500, `fenced ${fencedSince - goneAt} ms after the unmount`);
    assert.equal(await tcpTry(rig.cli, rig.srvV4, port), 'refused');
    await waitFor('more failed ticks', () => countLogged(reporter, /^still failing: .*mount gone/) >= 3);
    const lines = reporter.logs().map(l => String(l.message));
    const goneLine = lines.findIndex(m => /mount gone/.test(m));
    assert.deepEqual(lines.slice(goneLine).filter(m => m === 'heartbeat sent'), [], 'no heartbeat while the mount is gone');
    assert.deepEqual(fs.readdirSync(data), [], 'the shadowed directory on the root disk was never probed');
    await reporter.stop();
    await monitor.stop();
  });

  it('ships a reporter unit and a RequiresMountsFor= drop-in that systemd-analyze verifies', async (t: TestContext) => {
    requireRoot(t);
    const units = path.join(dir, 'units');
    const dropins = path.join(units, 'ebsmon-report@mysql.service.d');
    fs.mkdirSync(dropins, {recursive: true});
    const unit = fs.readFileSync(path.join(ROOT, 'contrib', 'systemd', 'ebsmon-report@.service'), 'utf8').replaceAll('/usr/bin/ebsmon', EBSMON).replaceAll('/etc/ebsmon', units);
    fs.writeFileSync(path.join(units, 'ebsmon-report@mysql.service'), unit);
    fs.writeFileSync(path.join(units, 'report-mysql.env'), 'MONITOR=/var/lib/mysql\nPORTS=3306\nARGS=--monitor=/var/lib/mysql-binlog --require-mount\n');
    const dropin = path.join(dropins, 'mounts.conf');
    fs.copyFileSync(path.join(ROOT, 'contrib', 'systemd', 'ebsmon-report@mysql.service.d', 'mounts.conf'), dropin);
    const verify = () => sh(['bash', '-c', `systemd-analyze verify --man=no "$1" 2>&1; echo "rc=$?"`, 'verify', path.join(units, 'ebsmon-report@mysql.service')]);
    const clean = verify();
    assert.match(clean, /rc=0\s*$/, clean);
    assert.doesNotMatch(clean, /mounts\.conf|Unknown|invalid|error/i, clean);
    // The drop-in is read: a bad key in it is reported (so the clean run above did check it).
    fs.appendFileSync(dropin, 'RequiresMountsFr=/x\n');
    assert.match(verify(), /mounts\.conf:\d+: Unknown key 'RequiresMountsFr'/);
  });
});

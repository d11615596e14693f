import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {after, before, describe, it} from 'node:test';
import type {TestContext} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {fencedFor} from '../helpers/firewall';
import {NoNode, STANDALONE} from '../helpers/nonode';
import {HELPER, Proc, ebsmon, ebsmonOnce, reporterIn, scrubbedEnv, tcpTry} from '../helpers/proc';
import {LoopVolume, ROOT, Teardown, alive, createNetRig, isRoot, registerChild, requireRoot, sh, waitFor} from '../helpers/rig';
import type {NetRig} from '../helpers/rig';

const PORT = 7300;
const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {version: string}).version;

describe('the standalone executable (make release) on a host without Node', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let dir: string;
  let cleanupDir: () => Promise<void>;
  let teardown: Teardown;
  let noNode: NoNode;
  let rig: NetRig;
  let volume: LoopVolume;

  before(async () => {
    assert.ok(fs.existsSync(STANDALONE), `${STANDALONE} is built by make release (make test builds it)`);
    ({path: dir, cleanup: cleanupDir} = await tmpDir({unsafeCleanup: true}));
    teardown = new Teardown(dir);
    noNode = new NoNode(dir);
    rig = createNetRig(teardown);
    volume = LoopVolume.create(dir, teardown);
    fs.mkdirSync(path.join(volume.mountpoint, 'db'));
  });

  // The teardown thaws the volume before anything else; each test stops what it started.
  after(async () => {
    teardown?.dispose();
    await cleanupDir?.();
  });

  const bin = () => noNode.wrap([STANDALONE]);

  it('is one ELF executable that runs with every node masked', async (t: TestContext) => {
    requireRoot(t);
    assert.deepEqual([...fs.readFileSync(STANDALONE).subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46]);
    // The mask works: node itself cannot run in there.
    assert.match(sh(noNode.wrap(['bash', '-c', 'node --version; echo "rc=$?"'])), /rc=127/);
    const version = await ebsmonOnce(['--version'], {bin: bin()});
    assert.equal(version.code, 0, version.stderr);
    assert.equal(version.stdout, `${VERSION}\n`);
    assert.equal(version.stderr, '');
    const help = await ebsmonOnce(['report', '--help'], {bin: bin()});
    assert.match(help.stdout, /\$ ebsmon report/);
    const usage = await ebsmonOnce(['report', '--ports=nope', '--monitor=/tmp'], {bin: bin()});
    assert.equal(usage.code, 2, 'bad usage still exits 2');
    assert.match(noNode.called(), /^\S*\/node --version\n$/, 'only our own check called node');
  });

  it('fences a frozen volume and lifts the fence: monitor and reporter both standalone, node masked', async (t: TestContext) => {
    requireRoot(t);
    const calledBefore = noNode.called();
    const stateDir = path.join(dir, 'run');
    const fifo = path.join(stateDir, 'ebsmon.fifo');
    const server = new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, HELPER('server.mjs'), String(PORT)], {stdio: ['ignore', 'pipe', 'pipe']}));
    const monitor = ebsmon(['monitor', `--fifo=${fifo}`, `--state-dir=${stateDir}`, '--timeout=2', '--recover=2', '--log-format=json'], {ns: rig.srv, bin: bin()});
    let reporter: Proc | undefined;
    try {
      await waitFor('the server', () => server.stdout.includes('listening'));
      await waitFor('the monitor', () => monitor.logs().some(l => l.message === 'monitor running'));
      assert.ok(monitor.logs().some(l => /firewall: nftables/.test(String(l.message))), monitor.stderr);
      reporter = ebsmon(['report', `--monitor=${path.join(volume.mountpoint, 'db')}`, `--ports=${PORT}`, `--fifo=${fifo}`, '--interval=0.2', '--probe-timeout=0.5'], {bin: bin()});
      await waitFor('healthy', () => reporterIn(stateDir, 'db')?.state === 'healthy');
      assert.equal(await tcpTry(rig.cli, rig.srvV4, PORT), 'ok');

      volume.freeze();
      try {
        await waitFor('the fence in the kernel', () => fencedFor('nftables', rig.srv, 'db', PORT));
        assert.equal(await tcpTry(rig.cli, rig.srvV4, PORT), 'refused');
      } finally {
        volume.thaw();
      }
      await waitFor('healthy again', () => reporterIn(stateDir, 'db')?.state === 'healthy');
      await waitFor('the port open again', async () => await tcpTry(rig.cli, rig.srvV4, PORT) === 'ok');
    } finally {
      await reporter?.stop();
      await monitor.stop();
      await server.stop();
    }
    assert.equal(monitor.exitCode, 0, monitor.stderr);
    assert.equal(noNode.called(), calledBefore, 'nothing called node');
  });

  it('daemonizes by running itself again, not node', async (t: TestContext) => {
    requireRoot(t);
    const calledBefore = noNode.called();
    const pidfile = path.join(dir, 'standalone.pid');
    const started = await ebsmonOnce(['monitor', '--daemonize', `--pidfile=${pidfile}`, `--logfile=${dir}/standalone.log`, `--fifo=${dir}/run2/fifo`, `--state-dir=${dir}/run2`], {ns: rig.srv, bin: bin()});
    assert.equal(started.code, 0, started.stderr);
    const pid = Number(/pid (\d+)/.exec(started.stdout)?.[1]);
    registerChild(pid);
    try {
      assert.equal(fs.readFileSync(pidfile, 'utf8'), `${pid}\n`);
      assert.equal(fs.readlinkSync(`/proc/${pid}/exe`), STANDALONE);
      assert.deepEqual(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).slice(1, 2), ['monitor']);
      await waitFor('its snapshot', () => fs.existsSync(`${dir}/run2/state.json`));
    } finally {
      process.kill(pid, 'SIGTERM');
    }
    await waitFor('the daemon to exit', () => !alive(pid));
    assert.equal(fs.existsSync(pidfile), false);
    assert.equal(noNode.called(), calledBefore, 'nothing called node');
  });

  it('takes the units\' V8 flags from NODE_OPTIONS (the monitor\'s 2 MB semi-space) and has a code cache for each unit and for none', async (t: TestContext) => {
    requireRoot(t);
    const probe = (nodeOptions: string) => {
      const out = path.join(dir, `probe-${nodeOptions.length}.json`);
      sh(['env', '-i', `PATH=${scrubbedEnv().PATH}`, `EBSMON_SEA_PROBE=${out}`, `NODE_OPTIONS=${nodeOptions} --require ${HELPER('sea-probe.cjs')}`, STANDALONE, '--version']);
      return JSON.parse(fs.readFileSync(out, 'utf8')) as {cache: {bytes: number, rejected: boolean}, newSpaceBytes: number};
    };
    const plain = probe('');
    const monitor = probe('--max-semi-space-size=2');
    const reporter = probe('--jitless --max-semi-space-size=1');
    for (const seen of [plain, monitor, reporter])
      assert.ok(seen.cache.bytes > 100_000 && !seen.cache.rejected, JSON.stringify(seen));
    // new_space is two semi-spaces: at most 2 x 2 MB with the flag; V8 grows it to 32 MB without.
    assert.ok(monitor.newSpaceBytes <= 4 * 2 ** 20, JSON.stringify(monitor));
    assert.ok(plain.newSpaceBytes >= 16 * 2 ** 20, JSON.stringify(plain));
    // The flags the units pass are the ones the caches were made for.
    for (const [unit, flags] of [['ebsmon-monitor.service', '--max-semi-space-size=2'], ['ebsmon-report@.service', '--jitless --max-semi-space-size=1']] as const)
      assert.match(fs.readFileSync(path.join(ROOT, 'contrib', 'systemd', unit), 'utf8'), new RegExp(`^Environment="?NODE_OPTIONS=${flags}"?$`, 'm'), unit);
  });
});

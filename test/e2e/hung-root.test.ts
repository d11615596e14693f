import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {describe, it} from 'node:test';
import type {TestContext} from 'node:test';

import {readSnapshot} from '../../src/state';
import {foreignRules} from '../helpers/firewall';
import {HungDisk, copyIntoUsrOverlay} from '../helpers/hang';
import {HELPER, Proc, ebsmon, ebsmonOnce, reporterIn, scrubbedEnv} from '../helpers/proc';
import {EBSMON, createNetRig, descendants, inNs, isRoot, processState, requireRoot, sh, waitFor} from '../helpers/rig';
import type {NetRig} from '../helpers/rig';
import {useScratch} from '../helpers/suite';

const PORT = 7000;
/** What the monitor runs or loads after start-up: all of it comes from the hung disk. */
const PROGRAMS = ['/usr/bin/node', '/usr/sbin/nft', '/usr/bin/bash', '/usr/bin/setsid', '/usr/bin/mkfifo', '/usr/bin/ss', '/usr/bin/env', '/usr/bin/cat'];

/**
 * The AWS truth: the root disk is EBS too. Here the monitor's node binary,
 * nft, bash, their libraries, /etc and its log file all live on a disk that
 * stops answering reads and writes (ext4 on a loop device on a stopped FUSE
 * daemon, page cache dropped), seen through overlays over /usr and /etc in a
 * private mount namespace; its stderr is a pipe nobody reads. The service's
 * data directory is on that disk too.
 */
describe('every disk hung: the monitor\'s programs, libraries, /etc and log on a disk that stops answering', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let rig: NetRig;
  let disk: HungDisk;
  let run: string;
  const scratch = useScratch(async ({dir, teardown, track, first}) => {
    rig = createNetRig(teardown);
    disk = await HungDisk.create(dir, teardown);
    first(() => disk.resume());
    const d = disk.mountpoint;
    for (const sub of ['usr-up', 'usr-work', 'etc-up', 'etc-work', 'data/www', 'log'])
      fs.mkdirSync(path.join(d, sub), {recursive: true});
    copyIntoUsrOverlay(path.join(d, 'usr-up'), PROGRAMS);
    sh(['cp', '-a', '/etc/.', path.join(d, 'etc-up')]);
    fs.copyFileSync(EBSMON, path.join(d, 'ebsmon'));
    // The state directory is tmpfs, as /run is: the one place the pulse may be written.
    run = path.join(dir, 'run');
    fs.mkdirSync(run);
    sh(['mount', '-t', 'tmpfs', '-o', 'size=16m,mode=0755', 'tmpfs', run]);
    teardown.add(['umount', '-l', run]);
    // Foreign rules of both kinds, to prove they are never touched.
    sh(inNs(rig.srv, ['iptables', '-A', 'INPUT', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT']));
    sh(inNs(rig.srv, ['nft', 'add table inet foreign; add chain inet foreign early { type filter hook input priority -100; policy accept; }; add rule inet foreign early tcp dport 7000 accept']));
    const server = track(new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, HELPER('server.mjs'), String(PORT)], {stdio: ['ignore', 'pipe', 'pipe']})));
    await waitFor('the server', () => server.stdout.includes('listening'));
  });
  const {track} = scratch;

  it('the kernel fences, the pulse never stops, status says fenced, foreign rules are untouched, and it recovers when the disk does', async (t: TestContext) => {
    requireRoot(t);
    const d = disk.mountpoint;
    const fifo = path.join(run, 'ebsmon.fifo');
    const stderrFifo = path.join(scratch.dir, 'stderr.fifo');
    sh(['mkfifo', stderrFifo]);
    const unread = fs.openSync(stderrFifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    t.after(() => fs.closeSync(unread));
    const overlays = [
      `mount -t overlay overlay -o lowerdir=/usr,upperdir=${d}/usr-up,workdir=${d}/usr-work /usr`,
      `mount -t overlay overlay -o lowerdir=/etc,upperdir=${d}/etc-up,workdir=${d}/etc-work /etc`,
      // stderr: a pipe whose reader (this test) never reads, as a journald stuck on the same disk.
      `exec 2>${stderrFifo}`,
      `exec /usr/bin/node --max-semi-space-size=2 ${d}/ebsmon monitor --firewall=nftables --fifo=${fifo} --state-dir=${run} --timeout=2 --recover=2 --log-level=debug --logfile=${d}/log/monitor.log`,
    ].join(' && ');
    const monitor = track(new Proc(spawn('ip', ['netns', 'exec', rig.srv, 'unshare', '--mount', '--propagation', 'private', '--', 'bash', '--norc', '-c', overlays], {stdio: ['ignore', 'ignore', 'ignore'], env: scrubbedEnv()})));
    const logged = () => (fs.existsSync(path.join(d, 'log/monitor.log')) ? fs.readFileSync(path.join(d, 'log/monitor.log'), 'utf8') : '');
    await waitFor('the monitor running', () => logged().includes('"monitor running"'), 30_000);
    const nodeMap = fs.readFileSync(`/proc/${monitor.pid}/maps`, 'utf8').split('\n').find(line => line.endsWith('/usr/bin/node'));
    assert.notEqual(Number(nodeMap?.split(/\s+/)[4]), fs.statSync('/usr/bin/node').ino, 'the monitor\'s node is the copy on the hung disk');
    const reporter = track(ebsmon(['report', `--monitor=${d}/data/www`, `--ports=${PORT}`, `--fifo=${fifo}`, '--interval=0.2', '--probe-timeout=0.5']));
    await waitFor('healthy', () => reporterIn(run, 'www')?.state === 'healthy');
    const watch = track(new Proc(spawn('ip', ['netns', 'exec', rig.cli, process.execPath, HELPER('watcher.mjs'), rig.srvV4, String(PORT)], {stdio: ['ignore', 'pipe', 'pipe']})));
    const last = () => watch.stdout.trim().split('\n').filter(Boolean).map(l => JSON.parse(l) as {state: string}).at(-1)?.state;
    await waitFor('the remote client connecting', () => last() === 'ok');
    const before0 = foreignRules('nftables', rig.srv);

    let worstPulse = 0;
    const pulse = setInterval(() => {
      try {
        worstPulse = Math.max(worstPulse, Date.now() - (readSnapshot(run)?.monitor.writtenAt ?? 0));
      } catch {
        worstPulse = Infinity;
      }
    }, 100);
    disk.hang();
    try {
      assert.ok(await disk.provesHung(path.join(d, 'etc-up', 'services')), 'an uncached read of the disk hangs (the rig works)');
      await waitFor('the remote client refused', () => last() === 'refused', 30_000);
      await waitFor('the monitor\'s own verdict, on tmpfs', () => reporterIn(run, 'www')?.state === 'fenced', 30_000);
      const status = await ebsmonOnce(['status', `--state-dir=${run}`, '--nagios']);
      assert.equal(status.code, 2);
      assert.match(status.stdout, /^CRITICAL: 1 of 1 reporters fenced \(www\), monitor pulse \d\.\ds ago/);
      assert.equal(foreignRules('nftables', rig.srv), before0, 'foreign rules untouched during the fence');
      // Its loop runs on; what it execs after the fence (ss -K) is what hangs.
      const stuck = () => descendants(monitor.pid).filter(pid => processState(pid) === 'D');
      await waitFor('an exec of the monitor\'s stuck on the disk (not the monitor)', () => stuck().length > 0, 15_000);
      const until = Date.now() + 3_000;
      await waitFor('three more seconds of hang', () => Date.now() > until, 10_000, 100);
      assert.notEqual(processState(monitor.pid), 'D', 'the monitor itself is not stuck');
      assert.ok(worstPulse < 3_000, `the pulse never went stale (worst age ${worstPulse} ms)`);
      assert.equal(last(), 'refused');
    } finally {
      disk.resume();
      clearInterval(pulse);
    }
    await waitFor('healthy after the disk answers again', () => reporterIn(run, 'www')?.state === 'healthy', 30_000);
    await waitFor('the remote client back', () => last() === 'ok', 30_000);
    assert.equal(foreignRules('nftables', rig.srv), before0, 'foreign rules untouched after');
    await reporter.stop();
    await monitor.stop();
    assert.equal(monitor.exitCode, 0);
  });
});

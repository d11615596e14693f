import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {before, describe, it} from 'node:test';
import type {TestContext} from 'node:test';

import type {ReporterSnapshot} from '../../src/state';
import {FailingDisk} from '../helpers/failing';
import {HungDisk} from '../helpers/hang';
import {logged} from '../helpers/listen';
import {promtoolProblems, sampleOf} from '../helpers/metrics';
import {HELPER, Proc, ebsmon, reporterIn, scrubbedEnv, tcpTry} from '../helpers/proc';
import {LoopVolume, alive, createNetRig, descendants, isRoot, requireRoot, sh, waitFor} from '../helpers/rig';
import type {NetRig} from '../helpers/rig';
import {useScratch} from '../helpers/suite';

const PORTS = {frozen: 7301, hung: 7302, readonly: 7303, full: 7304, eio: 7305, unmounted: 7306, programs: 7307} as const;
type Kind = keyof typeof PORTS;

/**
 * Issue 16: every kind of failure a volume has, each fenced, each said in
 * words at the monitor, each lifted when the volume answers again. One
 * monitor in a network namespace of the test's own (--timeout=2
 * --recover=2); each reporter probes every 0.2 s with a 0.6 s deadline; a
 * client in the other namespace is refused while fenced and answered after.
 */
describe('every kind of failure: fenced, with the reason an operator reads, and lifted', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  const suite = useScratch();
  let rig: NetRig;
  let stateDir: string;
  let fifo: string;

  before(async () => {
    if (!isRoot)
      return;
    rig = createNetRig(suite.teardown);
    const server = new Proc(spawn('ip', ['netns', 'exec', rig.srv, process.execPath, HELPER('server.mjs'), ...Object.values(PORTS).map(String)], {stdio: ['ignore', 'pipe', 'pipe']}));
    suite.track(server);
    await waitFor('the server', () => server.stdout.includes('listening'));
    stateDir = path.join(suite.dir, 'run');
    fifo = path.join(stateDir, 'ebsmon.fifo');
    const monitor = ebsmon(['monitor', `--fifo=${fifo}`, `--state-dir=${stateDir}`, '--timeout=2', '--recover=2', '--protect-ports='], {ns: rig.srv});
    suite.track(monitor);
    await waitFor('the monitor', () => logged(monitor, /^monitor running$/));
  });

  const record = (name: string): ReporterSnapshot | undefined => reporterIn(stateDir, name);

  /**
   * A reporter on `watched` until healthy and answered remotely; then `fail`
   * until the monitor fences (the reason must match), then `repair` (also if
   * anything above threw) until healthy and answered again. Returns the
   * fence's reason and the reporter.
   */
  const scenario = async (t: TestContext, kind: Kind, watched: string, fail: (reporter: Proc) => Promise<void> | void, repair: () => Promise<void> | void, reason: RegExp) => {
    const name = `fail-${kind}`;
    const port = PORTS[kind];
    const reporter = ebsmon(['report', `--monitor=${watched}`, `--name=${name}`, `--ports=${port}`, `--fifo=${fifo}`, '--interval=0.2', '--probe-timeout=0.6', '--log-level=debug']);
    suite.track(reporter);
    await waitFor(`${name} healthy`, () => record(name)?.state === 'healthy');
    assert.equal(await tcpTry(rig.cli, rig.srvV4, port), 'ok');
    let fenced: ReporterSnapshot;
    try {
      await fail(reporter);
      fenced = await waitFor(`${name} fenced`, () => {
        const r = record(name);
        return r?.state === 'fenced' ? r : undefined;
      });
      assert.match(fenced.reason, reason);
      assert.equal(await tcpTry(rig.cli, rig.srvV4, port), 'refused');
      assert.deepEqual(fenced.history?.map(h => [h.from, h.state, h.reason]).at(-1), ['healthy', 'fenced', fenced.reason], 'the history has the fence with its reason');
    } finally {
      await repair();
    }
    const recovered = await waitFor(`${name} healthy again`, () => {
      const r = record(name);
      return r?.state === 'healthy' ? r : undefined;
    });
    assert.equal(await tcpTry(rig.cli, rig.srvV4, port), 'ok');
    assert.deepEqual(recovered.history?.map(h => [h.from, h.state, h.reason]).slice(-2), [['healthy', 'fenced', fenced.reason], ['fenced', 'healthy', '2 consecutive heartbeats']]);
    assert.equal(recovered.fenceDurations?.count, 1);
    await waitFor('the reporter healthy again', () => logged(reporter, /^healthy again: heartbeats resume/));
    // The exact words, in the test report: the README's table quotes them.
    t.diagnostic(`fence reason: ${fenced.reason}`);
    return {reason: fenced.reason, reporter};
  };

  const volume = (name: string) => {
    const vol = LoopVolume.create(suite.dir, suite.teardown, 32, {name});
    suite.first(() => vol.thaw());
    const data = path.join(vol.mountpoint, 'db');
    fs.mkdirSync(data);
    return {vol, data};
  };
  const deviceName = (device: string) => path.basename(device);
  /** A process with its working directory, or a descriptor, under `dir`. */
  const holdsOn = (pid: number, dir: string) => {
    const under = (link: string) => {
      try {
        return fs.readlinkSync(link).startsWith(`${dir}/`);
      } catch {
        return false;
      }
    };
    try {
      return under(`/proc/${pid}/cwd`) || fs.readdirSync(`/proc/${pid}/fd`).some(fd => under(`/proc/${pid}/fd/${fd}`));
    } catch {
      return false;
    }
  };
  const commOf = (pid: number) => {
    try {
      return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      return null;
    }
  };

  it('fsfreeze (writes hang above the device): "idle ... (frozen?)"', async (t: TestContext) => {
    requireRoot(t);
    const {vol, data} = volume('frozen');
    const loop = deviceName(vol.device);
    await scenario(t, 'frozen', data, () => vol.freeze(), () => vol.thaw(),
      new RegExp(`^no heartbeat for \\d+\\.\\d s: probe of ${data} timed out after 0\\.6 s; ${loop} idle: no requests in flight, none completed for \\d+\\.\\d s: the filesystem is blocking writes above the device \\(frozen\\?\\)$`));
  });

  it('reads and writes hang below the filesystem (the FUSE daemon under the loop device stopped, page cache dropped): "requests in flight, none completed"', async (t: TestContext) => {
    requireRoot(t);
    const disk = await HungDisk.create(suite.dir, suite.teardown, 64);
    suite.first(() => disk.resume());
    const data = path.join(disk.mountpoint, 'db');
    fs.mkdirSync(data);
    const loop = deviceName(disk.device);
    await scenario(t, 'hung', data, () => {
      disk.hang();
    }, () => disk.resume(),
      new RegExp(`^no heartbeat for \\d+\\.\\d s: probe of ${data} timed out after 0\\.6 s; ${loop}: \\d+ requests? in flight, none completed for \\d+\\.\\d s$`));
  });

  it('read-only remount: "open: EROFS"', async (t: TestContext) => {
    requireRoot(t);
    const {vol, data} = volume('readonly');
    suite.first(() => sh(['mount', '-o', 'remount,rw', vol.mountpoint], {allowFail: true}));
    // A probe holding its file open for writing at that instant makes the remount EBUSY: try again.
    const remount = (mode: 'ro' | 'rw') => waitFor(`remount ${mode}`, () => sh(['mount', '-o', `remount,${mode}`, vol.mountpoint], {allowFail: true}) !== null && fs.readFileSync('/proc/self/mounts', 'utf8').includes(` ${vol.mountpoint} ext4 ${mode},`));
    await scenario(t, 'readonly', data, async () => {
      await remount('ro');
    }, async () => {
      await remount('rw');
    }, new RegExp(`^no heartbeat for \\d+\\.\\d s: probe of ${data} failed: open: EROFS: read-only file system$`));
  });

  it('a full volume: no fence while the probe file has its block; ENOSPC once it must allocate one, lifted when space is freed', async (t: TestContext) => {
    requireRoot(t);
    const {vol, data} = volume('full');
    // Buffered writes stop short of the blocks ext4 keeps for allocations that must not fail; O_DIRECT
    // writes (the probe's) may still take those, so the filler takes them the same way, a block at a time.
    const fill = (file: string) => {
      sh(['dd', 'if=/dev/zero', `of=${path.join(vol.mountpoint, `${file}-buffered`)}`, 'bs=64k', 'status=none'], {allowFail: true});
      sh(['dd', 'if=/dev/zero', `of=${path.join(vol.mountpoint, `${file}-direct`)}`, 'bs=1k', 'oflag=direct', 'status=none'], {allowFail: true});
    };
    const free = () => {
      sh(['bash', '-c', 'rm -f "$1"/fill* && sync', 'free', vol.mountpoint]);
    };
    suite.first(() => sh(['bash', '-c', 'rm -f "$1"/fill*', 'free', vol.mountpoint], {allowFail: true}));
    await scenario(t, 'full', data, async reporter => {
      // As root, into the blocks ext4 reserves for root too: nothing is left for the probe either.
      fill('fill1');
      sh(['sync']);
      assert.match(sh(['df', '--output=avail', vol.mountpoint]), /\n\s*0\n$/, 'the volume is full');
      const beats = record('fail-full')!.heartbeats;
      await waitFor('heartbeats go on, the probe rewriting its own block', () => record('fail-full')!.heartbeats >= beats + 10);
      assert.equal(record('fail-full')!.state, 'healthy');
      assert.equal(await tcpTry(rig.cli, rig.srvV4, PORTS.full), 'ok', 'a full volume is not fenced');
      // Now the probe file goes (as a clean-up of dot files would), and its block with it. With the
      // reporter paused, no probe can take the freed block before the filler does (ext4 frees it at its next commit).
      process.kill(reporter.pid, 'SIGSTOP');
      try {
        // The prober is resident: none in flight is one with nothing open, and no working directory, on the volume.
        await waitFor('no probe in flight', () => !descendants(reporter.pid).some(pid => holdsOn(pid, vol.mountpoint)));
        fs.rmSync(path.join(data, '.ebsmon-probe-fail-full'));
        sh(['sync']);
        fill('fill2');
        sh(['sync']);
      } finally {
        process.kill(reporter.pid, 'SIGCONT');
      }
    }, free, new RegExp(`^no heartbeat for \\d+\\.\\d s: probe of ${data} failed: write: ENOSPC: no space left on device \\(the volume is full and the probe file has no block of its own yet; free some space\\)$`));
  });

  it('an I/O error from the device (a FUSE layer under the loop device failing every request): "EIO", and what the device completed', async (t: TestContext) => {
    requireRoot(t);
    const disk = await FailingDisk.create(suite.dir, suite.teardown);
    suite.first(() => disk.heal());
    const data = path.join(disk.mountpoint, 'db');
    fs.mkdirSync(data);
    const loop = deviceName(disk.device);
    await scenario(t, 'eio', data, () => disk.fail(), () => disk.heal(),
      new RegExp(`^no heartbeat for \\d+\\.\\d s: probe of ${data} failed: (write|read): EIO: input/output error; ${loop} answered with an error: \\d+ requests? in flight, \\d+ completed in the last \\d+\\.\\d s$`));
  });

  it('the volume unmounted (lazily, under the service): "mount gone"; mounted again at the same place, the same volume is healthy', async (t: TestContext) => {
    requireRoot(t);
    const {vol, data} = volume('unmounted');
    const devices = sh(['lsblk', '-no', 'MAJ:MIN', vol.device]).trim();
    await scenario(t, 'unmounted', data, () => {
      sh(['umount', '-l', vol.mountpoint]);
    }, () => {
      sh(['mount', vol.device, vol.mountpoint]);
    }, new RegExp(`^no heartbeat for \\d+\\.\\d s: probe of ${data}: mount gone: ${vol.device} \\(${devices}\\) is no longer mounted at ${vol.mountpoint}; it is now on \\S+ \\(\\w+\\) mounted at /`));
  });

  it('the disk holding perl hangs (on AWS, the root disk): the reporter\'s loop goes on, it says the probe never started, it stops on SIGTERM; a new reporter lifts the fence once the disk answers', async (t: TestContext) => {
    requireRoot(t);
    const {data} = volume('programs');
    // perl for the probes comes from a disk that will stop answering, first in the reporter's PATH.
    // A directory of its own: the read+write hang test has its HungDisk at the fixed names in `dir`.
    const disk = await HungDisk.create(path.join(suite.dir, 'programs-disk'), suite.teardown, 64);
    suite.first(() => disk.resume());
    const bin = path.join(disk.mountpoint, 'bin');
    fs.mkdirSync(bin);
    fs.copyFileSync('/usr/bin/perl', path.join(bin, 'perl'));
    fs.chmodSync(path.join(bin, 'perl'), 0o755);
    const name = 'fail-programs';
    const port = PORTS.programs;
    const args = ['report', `--monitor=${data}`, `--name=${name}`, `--ports=${port}`, `--fifo=${fifo}`, '--interval=0.2', '--probe-timeout=0.6', '--log-level=debug'];
    const reporter = ebsmon(args, {env: scrubbedEnv({PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`})});
    suite.track(reporter);
    await waitFor(`${name} healthy`, () => record(name)?.state === 'healthy');
    assert.equal(await tcpTry(rig.cli, rig.srvV4, port), 'ok');
    disk.hang();
    try {
      // The resident prober's own pages stay in memory: it goes on proving the watched volume, which answers.
      const beats = record(name)!.heartbeats;
      await waitFor('heartbeats go on while only the disk holding perl hangs', () => record(name)!.heartbeats >= beats + 3);
      // A prober that must start now execs perl from that disk: the one running dies (as an OOM kill would), its
      // pages leave the page cache (as under the pressure that killed it), and its replacement cannot start.
      const probers = descendants(reporter.pid).filter(child => commOf(child) === 'perl');
      assert.equal(probers.length, 1, 'one resident prober');
      process.kill(probers[0]!, 'SIGKILL');
      await waitFor('the prober gone', () => !alive(probers[0]!));
      fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
      const fenced = await waitFor(`${name} fenced`, () => {
        const r = record(name);
        return r?.state === 'fenced' ? r : undefined;
      });
      t.diagnostic(`fence reason: ${fenced.reason}`);
      assert.match(fenced.reason, new RegExp(`^no heartbeat for \\d+\\.\\d s: probe of ${data} timed out after 0\\.6 s before perl started \\(its exec is stuck: does the disk holding perl, often the root disk, answer\\?\\)$`));
      assert.equal(await tcpTry(rig.cli, rig.srvV4, port), 'refused');
      // Its loop runs: a failing word every interval reaches the monitor, a tick is logged each interval.
      const word = record(name)!.failure!.at;
      const ticks = reporter.logs().length;
      await waitFor('newer failing words', () => (record(name)?.failure?.at ?? 0) > word + 1000);
      await waitFor('more ticks logged', () => reporter.logs().length > ticks + 5);
      const started = Date.now();
      reporter.kill('SIGTERM');
      await Promise.race([reporter.exited, new Promise(resolve => setTimeout(resolve, 2000))]);
      assert.equal(reporter.running, false, `exited within 2 s of SIGTERM (took ${Date.now() - started} ms)`);
      assert.equal(reporter.exitCode, 0);
    } finally {
      disk.resume();
    }
    const again = ebsmon(args, {env: scrubbedEnv({PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`})});
    suite.track(again);
    await waitFor(`${name} healthy again`, () => record(name)?.state === 'healthy');
    assert.equal(await tcpTry(rig.cli, rig.srvV4, port), 'ok');
  });

  it('metrics.prom has each device\'s counters and the fence-duration histograms, and promtool finds nothing wrong', async (t: TestContext) => {
    requireRoot(t);
    const text = fs.readFileSync(path.join(stateDir, 'metrics.prom'), 'utf8');
    assert.equal(promtoolProblems(text), null);
    for (const kind of Object.keys(PORTS)) {
      if (record(`fail-${kind}`) === undefined)
        continue;
      assert.equal(sampleOf(text, `ebsmon_reporter_fence_duration_seconds_count{reporter="fail-${kind}"}`), 1, kind);
    }
    assert.match(text, /^ebsmon_device_inflight_requests\{reporter="fail-\w+",device="7:\d+",name="loop\d+"\} \d+$/m);
    assert.match(text, /^ebsmon_device_ios_completed_total\{reporter="fail-\w+",device="7:\d+",name="loop\d+"\} \d+$/m);
  });
});

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {after, before, describe, it} from 'node:test';
import type {TestContext} from 'node:test';
import {dir as tmpDir} from 'tmp-promise';

import {listen, countLogged} from '../helpers/listen';
import {STANDALONE} from '../helpers/nonode';
import {HELPER, ebsmon, scrubbedEnv} from '../helpers/proc';
import {EBSMON, LoopVolume, Teardown, descendants, isRoot, requireRoot, sh, waitFor} from '../helpers/rig';

/**
 * A reporter started by hand sets its own V8 flags (src/daemon/v8.ts): seen
 * from outside as the young generation V8 lets grow under allocation, which
 * test/helpers/sea-probe.cjs measures at exit (preloaded with --require, which
 * the standalone executable takes from NODE_OPTIONS only).
 */
describe('a reporter started by hand gets its V8 settings without NODE_OPTIONS', {skip: !isRoot && (process.env.CI ?? '') === '' ? 'needs root' : false}, () => {
  let dir: string;
  let cleanupDir: () => Promise<void>;
  let teardown: Teardown;

  before(async () => {
    ({path: dir, cleanup: cleanupDir} = await tmpDir({unsafeCleanup: true}));
    teardown = new Teardown(dir);
  });

  after(async () => {
    teardown?.dispose();
    await cleanupDir?.();
  });

  /** new_space's size after short-lived garbage, for `ebsmon ARGS` run as `program`. */
  const youngGeneration = (program: Array<string>, args: Array<string>, nodeOptions = ''): number => {
    const out = path.join(dir, `young-${Date.now()}-${Math.random()}.json`);
    sh(['env', '-i', `PATH=${scrubbedEnv().PATH}`, `EBSMON_SEA_PROBE=${out}`, `NODE_OPTIONS=${nodeOptions}`, ...program, ...args]);
    return (JSON.parse(fs.readFileSync(out, 'utf8')) as {newSpaceBytes: number}).newSpaceBytes;
  };

  it('keeps its young generation small, from the bundle and from the standalone executable', (t: TestContext) => {
    requireRoot(t);
    assert.ok(fs.existsSync(STANDALONE), `${STANDALONE} is built by make release (make test builds it)`);
    // The bundle under a plain node (not its shebang's flag), the probe preloaded.
    const bundle = [process.execPath, '--require', HELPER('sea-probe.cjs'), EBSMON];
    const standalone = [STANDALONE];
    const preload = `--require ${HELPER('sea-probe.cjs')}`;
    const reporter = youngGeneration(bundle, ['report', '--help']);
    const status = youngGeneration(bundle, ['status', '--help']);
    const seaReporter = youngGeneration(standalone, ['report', '--help'], preload);
    const seaStatus = youngGeneration(standalone, ['status', '--help'], preload);
    const sizes = JSON.stringify({reporter, status, seaReporter, seaStatus});
    // V8 starts new_space at 1 MB a semi-space and doubles it up to 16 MB without the reporter's flags.
    assert.ok(reporter <= 2 * 2 ** 20 && seaReporter <= 2 * 2 ** 20, sizes);
    assert.ok(status >= 16 * 2 ** 20 && seaStatus >= 16 * 2 ** 20, sizes);
  });

  it('sets them in its own process, once: no second process, no node below it', async (t: TestContext) => {
    requireRoot(t);
    const volume = LoopVolume.create(dir, teardown);
    fs.mkdirSync(path.join(volume.mountpoint, 'db'));
    const fifo = path.join(dir, 'light.fifo');
    const monitor = listen(fifo);
    const argv = ['report', `--monitor=${path.join(volume.mountpoint, 'db')}`, '--ports=3306', `--fifo=${fifo}`, '--interval=0.2', '--log-level=debug'];
    const reporter = ebsmon(argv);
    try {
      await waitFor('3 heartbeats', () => monitor.beats().length >= 3);
      assert.equal(countLogged(reporter, /^V8 flags set at start: --semi-space-growth-factor=1 --no-turbofan --no-sparkplug --no-maglev\b/), 1, reporter.stderr.slice(0, 2000));
      // The process we started is the reporter: node, the bundle's shebang flag, the bundle, our arguments.
      assert.deepEqual(fs.readFileSync(`/proc/${reporter.pid}/cmdline`, 'utf8').split('\0').filter(Boolean).slice(1), ['--max-semi-space-size=2', EBSMON, ...argv]);
      const below = descendants(reporter.pid).map(pid => fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim());
      assert.ok(!below.includes('node'), `below the reporter: ${below.join(', ')}`);
      assert.equal(monitor.beats().every(b => b.pid === reporter.pid), true, 'the heartbeats name the process we started');
    } finally {
      await reporter.stop();
      monitor.close();
    }
  });
});
